//! Accounts: the ssh user in the root's `/etc/passwd`, `/etc/group` and `/etc/shadow`, and
//! `k3os.password` as that user's shadow hash.
//!
//! Invariants:
//! - Accounts are touched only when something needs the ssh user ([`ssh_user_needed`]):
//!   `ssh_authorized_keys`, `k3os.password`, or a `write_files` owner naming it. A config
//!   without those never reads, creates or rewrites an account, so it cannot fail on one.
//! - Every existing line is kept byte for byte; bosun only appends the user's lines when they are
//!   missing and only rewrites the password field of the user's shadow line.
//! - An existing user keeps its uid, gid and home; settings apply only when creating it.
//! - A new user gets ids as `useradd` gives them: the lowest number at or above the first id
//!   (1000, Debian's `UID_MIN`/`GID_MIN`) that is free as both uid and gid, so an installed
//!   system's first user (who holds 1000) never blocks it; a group already named like the user
//!   is reused as its primary group (with the lowest free uid). `/etc/login.defs` is not read.
//! - `root` is never touched: k3os kept root locked and never gave it a password or keys. If the
//!   root's shadow gives root a usable password, bosun leaves it (it does not own that line) and
//!   warns.
//! - Plaintext passwords become SHA-512 crypt (`$6$`, 5000 rounds) with the caller's salt; if the
//!   current hash already verifies against the plaintext it is kept, so renders are stable.
//!   Values starting with `$` are taken verbatim (as k3os's `chpasswd -e`).
//! - No configured password leaves the current hash alone (k3os did nothing either).

use super::{lines_with_ends, push_line, root_file, Builder, RenderError, RenderSettings};
use super::{GROUP, PASSWD, SHADOW};
use crate::config::{IdOrName, NodeConfig, OwnerGroup, Secret};

/// One parsed `/etc/passwd` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdEntry {
    /// Login name.
    pub name: String,
    /// Numeric user id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Home directory (where `.ssh/authorized_keys` goes for the ssh user).
    pub home: String,
}

/// One parsed `/etc/group` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEntry {
    /// Group name.
    pub name: String,
    /// Numeric group id.
    pub gid: u32,
}

/// The root's users and groups, for owner resolution. Malformed lines are ignored here (and
/// preserved in the files).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountDb {
    /// The users, in file order.
    pub users: Vec<PasswdEntry>,
    /// The groups, in file order.
    pub groups: Vec<GroupEntry>,
}

impl AccountDb {
    /// Parses the text of passwd and group (pure); malformed lines are skipped.
    pub fn parse(passwd: &str, group: &str) -> AccountDb {
        let users = passwd
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                if f.len() < 7 || f[0].is_empty() || f[0].starts_with(['+', '-', '#']) {
                    return None;
                }
                Some(PasswdEntry {
                    name: f[0].to_string(),
                    uid: f[2].parse().ok()?,
                    gid: f[3].parse().ok()?,
                    home: f[5].to_string(),
                })
            })
            .collect();
        let groups = group
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                if f.len() < 3 || f[0].is_empty() || f[0].starts_with(['+', '-', '#']) {
                    return None;
                }
                Some(GroupEntry {
                    name: f[0].to_string(),
                    gid: f[2].parse().ok()?,
                })
            })
            .collect();
        AccountDb { users, groups }
    }

    /// The first user named `name`.
    pub fn user(&self, name: &str) -> Option<&PasswdEntry> {
        self.users.iter().find(|u| u.name == name)
    }

    /// The first user with `uid`.
    pub fn user_by_uid(&self, uid: u32) -> Option<&PasswdEntry> {
        self.users.iter().find(|u| u.uid == uid)
    }

    /// The first group named `name`.
    pub fn group(&self, name: &str) -> Option<&GroupEntry> {
        self.groups.iter().find(|g| g.name == name)
    }

    /// The first group with `gid`.
    pub fn group_by_gid(&self, gid: u32) -> Option<&GroupEntry> {
        self.groups.iter().find(|g| g.gid == gid)
    }

    /// Every user name, in file order (for "known users" in messages).
    pub fn user_names(&self) -> Vec<String> {
        self.users.iter().map(|u| u.name.clone()).collect()
    }

    /// Every group name, in file order (for "known groups" in messages).
    pub fn group_names(&self) -> Vec<String> {
        self.groups.iter().map(|g| g.name.clone()).collect()
    }
}

/// Highest uid or gid given to a new ssh user: `useradd`'s default `UID_MAX`/`GID_MAX`
/// (above it Debian reserves ids, e.g. 65534 for `nobody`).
pub const LAST_ID: u32 = 60000;

/// Whether rendering must ensure the ssh user `name`: keys go to its home, a password to its
/// shadow line, or a `write_files` owner names it (k3os always had `rancher`, and configs
/// written for it say `owner: rancher`). Pure.
pub fn ssh_user_needed(cfg: &NodeConfig, name: &str) -> bool {
    let names_user = |o: &IdOrName| matches!(o, IdOrName::Name(n) if n == name);
    !cfg.ssh_authorized_keys.is_empty()
        || cfg.k3os.password.is_some()
        || cfg.write_files.iter().any(|w| {
            names_user(&w.owner.user)
                || matches!(&w.owner.group, OwnerGroup::Named(g) if names_user(g))
        })
}

/// The account files after the ssh user is ensured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accounts {
    /// The full new `/etc/passwd` text (other lines byte for byte).
    pub passwd: String,
    /// The full new `/etc/group` text.
    pub group: String,
    /// The full new `/etc/shadow` text (secret: holds password hashes).
    pub shadow: String,
    /// The ssh user as it ends up in `passwd`.
    pub user: PasswdEntry,
    /// gid of the `shadow` group, 0 when there is none.
    pub shadow_gid: u32,
    /// The parsed accounts after the edit, for resolving `write_files` owners.
    pub db: AccountDb,
}

impl Accounts {
    /// Adds `/etc/passwd` (0644), `/etc/group` (0644) and `/etc/shadow` (0640 root:shadow, or
    /// root:root when there is no shadow group; secret).
    pub(crate) fn emit(&self, b: &mut Builder) {
        b.put(root_file(
            PASSWD,
            self.passwd.clone().into_bytes(),
            0o644,
            "accounts",
        ));
        b.put(root_file(
            GROUP,
            self.group.clone().into_bytes(),
            0o644,
            "accounts",
        ));
        let mut shadow = root_file(SHADOW, self.shadow.clone().into_bytes(), 0o640, "accounts");
        shadow.gid = self.shadow_gid;
        shadow.secret = true;
        b.put(shadow);
    }
}

fn valid_user_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
        && name.len() <= 32
}

/// Ensures the ssh user exists in the account files and carries the configured password.
/// Pure: takes the current contents, returns the new ones. Missing files are seeded with a
/// locked root entry (and a warning), never left without root.
#[allow(clippy::too_many_arguments)]
pub fn ensure_user(
    passwd: Option<&str>,
    group: Option<&str>,
    shadow: Option<&str>,
    settings: &RenderSettings,
    password: Option<&Secret>,
    salt: &str,
    warnings: &mut Vec<String>,
) -> Result<Accounts, RenderError> {
    let name = settings.ssh_user.as_str();
    if name == "root" {
        return Err(RenderError::SshUserIsRoot);
    }
    if !valid_user_name(name) {
        return Err(RenderError::InvalidValue {
            key: "ssh user".into(),
            reason: format!("'{name}' is not a valid user name (expected [a-z_][a-z0-9_-]*)"),
        });
    }
    let mut seeded = |file: &str, text: Option<&str>, seed: &str| -> String {
        match text {
            Some(t) => t.to_string(),
            None => {
                warnings.push(format!(
                    "{file} is missing under the root; starting from a locked root entry"
                ));
                seed.to_string()
            }
        }
    };
    let mut passwd = seeded(PASSWD, passwd, "root:x:0:0:root:/root:/bin/sh\n");
    let mut group = seeded(GROUP, group, "root:x:0:\n");
    let shadow = seeded(SHADOW, shadow, "root:*:::::::\n");

    let db = AccountDb::parse(&passwd, &group);
    if db.user(name).is_none() {
        let (uid, gid) = new_user_ids(&db, name, settings.ssh_uid, settings.ssh_gid)?;
        if db.group(name).is_none() {
            push_line(&mut group, &format!("{name}:x:{gid}:"));
        }
        push_line(
            &mut passwd,
            &format!(
                "{name}:x:{uid}:{gid}::{}:{}",
                settings.ssh_home, settings.ssh_shell
            ),
        );
    }
    let db = AccountDb::parse(&passwd, &group);
    let user = db
        .user(name)
        .cloned()
        .expect("ssh user was just ensured in passwd");
    if !user.home.starts_with('/') {
        return Err(RenderError::InvalidValue {
            key: "ssh user".into(),
            reason: format!(
                "'{name}' has home directory '{}' in the root's /etc/passwd; expected an \
                 absolute path (authorized_keys lives there)",
                user.home
            ),
        });
    }

    let shadow = ensure_shadow(&shadow, name, password, salt, warnings)?;
    let shadow_gid = db.group("shadow").map(|g| g.gid).unwrap_or(0);
    Ok(Accounts {
        passwd,
        group,
        shadow,
        user,
        shadow_gid,
        db,
    })
}

/// The uid and primary gid for a new user `name` (pure): with a group named `name`, its gid and
/// the lowest free uid from `first_uid` (`useradd -g`); otherwise the lowest number from
/// `first_uid`/`first_gid` up to [`LAST_ID`] free as both (`useradd -U`); failing that, the
/// lowest free uid and the lowest free gid apart.
fn new_user_ids(
    db: &AccountDb,
    name: &str,
    first_uid: u32,
    first_gid: u32,
) -> Result<(u32, u32), RenderError> {
    let uid_free = |id: u32| db.user_by_uid(id).is_none();
    let gid_free = |id: u32| db.group_by_gid(id).is_none();
    let lowest = |first: u32, free: &dyn Fn(u32) -> bool, kind: &'static str| {
        (first..=LAST_ID)
            .find(|&id| free(id))
            .ok_or(RenderError::NoFreeId {
                user: name.into(),
                kind,
                first,
                last: LAST_ID,
            })
    };
    if let Some(g) = db.group(name) {
        return Ok((lowest(first_uid, &uid_free, "uid")?, g.gid));
    }
    let both = (first_uid.max(first_gid)..=LAST_ID).find(|&id| uid_free(id) && gid_free(id));
    match both {
        Some(id) => Ok((id, id)),
        None => Ok((
            lowest(first_uid, &uid_free, "uid")?,
            lowest(first_gid, &gid_free, "gid")?,
        )),
    }
}

/// Rewrites the password field of `user`'s shadow line (adding the line if missing); every other
/// line is kept byte for byte.
fn ensure_shadow(
    shadow: &str,
    user: &str,
    password: Option<&Secret>,
    salt: &str,
    warnings: &mut Vec<String>,
) -> Result<String, RenderError> {
    let mut out = String::with_capacity(shadow.len() + 128);
    let mut found = false;
    for line in lines_with_ends(shadow) {
        let body = line.trim_end_matches('\n');
        let mut fields = body.splitn(3, ':');
        let name = fields.next().unwrap_or("");
        let field = fields.next();
        if name == "root" {
            if let Some(f) = field {
                if f.is_empty() {
                    warnings.push(
                        "/etc/shadow: root has an EMPTY password (anyone can log in as root); \
                         bosun leaves root's entry alone — lock it with `passwd -l root`"
                            .into(),
                    );
                } else if !f.starts_with(['!', '*']) {
                    warnings.push(
                        "/etc/shadow: root has a usable password; k3os kept root locked. bosun \
                         leaves root's entry alone"
                            .into(),
                    );
                }
            }
        }
        if name != user || found {
            out.push_str(line);
            continue;
        }
        found = true;
        let (Some(current), Some(rest)) = (field, fields.next()) else {
            // Malformed line for our user (fewer than 3 fields): rebuild it.
            let hash = desired_hash(None, password, salt)?.unwrap_or_else(|| "*".into());
            out.push_str(&format!("{user}:{hash}:::::::"));
            out.push_str(if line.ends_with('\n') { "\n" } else { "" });
            continue;
        };
        match desired_hash(Some(current), password, salt)? {
            Some(hash) if hash != current => {
                out.push_str(&format!("{user}:{hash}:{rest}"));
                out.push_str(if line.ends_with('\n') { "\n" } else { "" });
            }
            _ => out.push_str(line),
        }
    }
    if !found {
        let hash = desired_hash(None, password, salt)?.unwrap_or_else(|| "*".into());
        push_line(&mut out, &format!("{user}:{hash}:::::::"));
    }
    Ok(out)
}

/// The hash field the user should have, or `None` to leave it as it is.
fn desired_hash(
    current: Option<&str>,
    password: Option<&Secret>,
    salt: &str,
) -> Result<Option<String>, RenderError> {
    let Some(pw) = password else {
        return Ok(None);
    };
    let pw = pw.expose();
    if pw.contains([':', '\n', '\r']) {
        return Err(RenderError::InvalidValue {
            key: "k3os.password".into(),
            reason: "must not contain ':' or line breaks".into(),
        });
    }
    if pw.starts_with('$') {
        return Ok(Some(pw.to_string()));
    }
    if let Some(cur) = current {
        let verifies = (cur.starts_with("$6$") && sha_crypt::sha512_check(pw, cur).is_ok())
            || (cur.starts_with("$5$") && sha_crypt::sha256_check(pw, cur).is_ok());
        if verifies {
            return Ok(Some(cur.to_string()));
        }
    }
    Ok(Some(sha512_hash(pw, salt)?))
}

/// A fresh 16-character crypt salt for [`super::RenderEnv::password_salt`]. Not pure: reads the
/// OS random source (the caller's side of rendering, not rendering itself).
pub fn random_salt() -> Result<String, getrandom::Error> {
    const ALPHABET: &[u8; 64] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)?;
    Ok(bytes
        .iter()
        .map(|b| ALPHABET[(b & 63) as usize] as char)
        .collect())
}

/// SHA-512 crypt (`$6$<salt>$<hash>`, default 5000 rounds) of `password` with `salt`.
pub fn sha512_hash(password: &str, salt: &str) -> Result<String, RenderError> {
    let salt_ok = !salt.is_empty()
        && salt.len() <= 16
        && salt
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'.' || c == b'/');
    if !salt_ok {
        return Err(RenderError::InvalidValue {
            key: "password salt".into(),
            reason: "expected 1-16 characters of [./0-9A-Za-z]".into(),
        });
    }
    let params = sha_crypt::Sha512Params::new(sha_crypt::ROUNDS_DEFAULT).map_err(|_| {
        RenderError::InvalidValue {
            key: "password salt".into(),
            reason: "sha-512 crypt parameters rejected".into(),
        }
    })?;
    let b64 = sha_crypt::sha512_crypt_b64(password.as_bytes(), salt.as_bytes(), &params).map_err(
        |_| RenderError::InvalidValue {
            key: "k3os.password".into(),
            reason: "sha-512 crypt failed".into(),
        },
    )?;
    Ok(format!("$6${salt}${b64}"))
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::{render, RenderError};
    use crate::config::{AuthorizedKey, KeySource, NodeConfig, Origin, Secret};

    /// A config that needs the ssh user (it has a key), and nothing else.
    fn keyed() -> NodeConfig {
        NodeConfig {
            ssh_authorized_keys: vec![AuthorizedKey {
                source: KeySource::Literal("ssh-ed25519 AAAA k".into()),
                origin: Origin {
                    file: "config.yaml".into(),
                    line: 1,
                    col: 1,
                },
            }],
            ..Default::default()
        }
    }

    fn shadow_field(shadow: &str, user: &str) -> String {
        shadow
            .lines()
            .find(|l| l.starts_with(&format!("{user}:")))
            .unwrap()
            .split(':')
            .nth(1)
            .unwrap()
            .to_string()
    }

    #[test]
    fn creates_rancher_and_preserves_existing_lines() {
        let r = render(&keyed(), &env()).unwrap();
        let passwd = text(&r, "/etc/passwd");
        assert_eq!(
            passwd,
            format!("{PASSWD_TXT}rancher:x:1000:1000::/home/rancher:/bin/sh\n")
        );
        assert_eq!(
            text(&r, "/etc/group"),
            format!("{GROUP_TXT}rancher:x:1000:\n")
        );
        assert_eq!(
            text(&r, "/etc/shadow"),
            format!("{SHADOW_TXT}rancher:*:::::::\n")
        );
        let sh = file(&r, "/etc/shadow");
        assert_eq!((sh.mode, sh.uid, sh.gid, sh.secret), (0o640, 0, 42, true));
        let pw = file(&r, "/etc/passwd");
        assert_eq!((pw.mode, pw.uid, pw.gid, pw.secret), (0o644, 0, 0, false));
    }

    #[test]
    fn existing_user_lines_are_kept_byte_for_byte_even_without_final_newline() {
        let mut e = env();
        let passwd = "root:x:0:0::/root:/bin/sh\nrancher:x:1001:1001:R:/var/rancher:/bin/ash";
        let group = "root:x:0:\nrancher:x:1001:";
        let shadow = "root:!:1::::::\nrancher:$6$abc$def:19000:0:99999:7:::";
        e.passwd = Some(passwd.into());
        e.group = Some(group.into());
        e.shadow = Some(shadow.into());
        let r = render(&keyed(), &e).unwrap();
        assert_eq!(text(&r, "/etc/passwd"), passwd);
        assert_eq!(text(&r, "/etc/group"), group);
        assert_eq!(text(&r, "/etc/shadow"), shadow);
        // No shadow group: root:root.
        assert_eq!(file(&r, "/etc/shadow").gid, 0);
    }

    #[test]
    fn plaintext_password_is_sha512_crypt_with_callers_salt_and_other_fields_kept() {
        let mut e = env();
        e.shadow = Some(format!("{SHADOW_TXT}rancher:!:19001:0:99999:7:::\n"));
        let mut cfg = NodeConfig::default();
        cfg.k3os.password = Some(Secret("supersecure".into()));
        let r = render(&cfg, &e).unwrap();
        let shadow = text(&r, "/etc/shadow");
        let hash = shadow_field(&shadow, "rancher");
        assert!(hash.starts_with("$6$saltsaltsaltsalt$"), "{hash}");
        sha_crypt::sha512_check("supersecure", &hash).expect("hash verifies");
        assert!(sha_crypt::sha512_check("wrong", &hash).is_err());
        assert!(shadow.ends_with(&format!("rancher:{hash}:19001:0:99999:7:::\n")));
        assert!(shadow.starts_with(SHADOW_TXT));
    }

    #[test]
    fn known_answer_sha512_crypt() {
        // Test vector from Drepper's SHA-crypt specification.
        let h = super::sha512_hash("Hello world!", "saltstring").unwrap();
        assert_eq!(
            h,
            "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1"
        );
    }

    #[test]
    fn existing_hash_that_verifies_is_kept_so_render_is_stable() {
        let existing = super::sha512_hash("pw", "othersalt").unwrap();
        let mut e = env();
        e.shadow = Some(format!("rancher:{existing}:1::::::\n"));
        let mut cfg = NodeConfig::default();
        cfg.k3os.password = Some(Secret("pw".into()));
        let r = render(&cfg, &e).unwrap();
        assert_eq!(shadow_field(&text(&r, "/etc/shadow"), "rancher"), existing);
        // A different plaintext is rehashed with the caller's salt.
        cfg.k3os.password = Some(Secret("pw2".into()));
        let r = render(&cfg, &e).unwrap();
        let h = shadow_field(&text(&r, "/etc/shadow"), "rancher");
        assert!(h.starts_with("$6$saltsaltsaltsalt$"));
    }

    #[test]
    fn crypt_value_is_kept_verbatim() {
        let mut cfg = NodeConfig::default();
        cfg.k3os.password = Some(Secret("$1$tYtghCfK$QHa51MS6MVAcfUKuOzNKt0".into()));
        let r = render(&cfg, &env()).unwrap();
        assert_eq!(
            shadow_field(&text(&r, "/etc/shadow"), "rancher"),
            "$1$tYtghCfK$QHa51MS6MVAcfUKuOzNKt0"
        );
    }

    #[test]
    fn root_entry_is_never_changed_and_a_usable_root_password_is_warned() {
        let mut e = env();
        e.shadow = Some("root:$6$x$y:1::::::\n".into());
        let mut cfg = NodeConfig::default();
        cfg.k3os.password = Some(Secret("pw".into()));
        let r = render(&cfg, &e).unwrap();
        assert!(text(&r, "/etc/shadow").starts_with("root:$6$x$y:1::::::\n"));
        assert!(r
            .warnings
            .iter()
            .any(|w| w.contains("root has a usable password")));
        assert!(
            !r.warnings.iter().any(|w| w.contains("$6$")),
            "no hash in warnings"
        );
    }

    #[test]
    fn ssh_user_root_is_refused() {
        let mut e = env();
        e.settings.ssh_user = "root".into();
        assert_eq!(
            render(&keyed(), &e).unwrap_err(),
            RenderError::SshUserIsRoot
        );
    }

    #[test]
    fn ids_taken_by_another_user_move_to_the_next_number_free_as_both() {
        let mut e = env();
        e.passwd = Some(format!(
            "{PASSWD_TXT}pi:x:1000:1000::/home/pi:/bin/bash\nsvc:x:1002:1002::/:/bin/false\n"
        ));
        e.group = Some(format!("{GROUP_TXT}pi:x:1000:\ndocker:x:1001:\n"));
        let r = render(&keyed(), &e).unwrap();
        // 1001 is a free uid but a taken gid; 1002 a taken uid; 1003 is free as both.
        assert!(text(&r, "/etc/passwd").ends_with("rancher:x:1003:1003::/home/rancher:/bin/sh\n"));
        assert!(text(&r, "/etc/group").ends_with("docker:x:1001:\nrancher:x:1003:\n"));
    }

    #[test]
    fn without_a_number_free_as_both_uid_and_gid_are_the_lowest_free_apart() {
        let mut e = env();
        let gids: String = (1000..=super::LAST_ID)
            .step_by(2)
            .map(|g| format!("g{g}:x:{g}:\n"))
            .collect();
        let uids: String = (1001..=super::LAST_ID)
            .step_by(2)
            .map(|u| format!("u{u}:x:{u}:0::/:/bin/false\n"))
            .collect();
        e.passwd = Some(format!("{PASSWD_TXT}{uids}"));
        e.group = Some(format!("{GROUP_TXT}{gids}"));
        let r = render(&keyed(), &e).unwrap();
        assert!(text(&r, "/etc/passwd").ends_with("rancher:x:1000:1001::/home/rancher:/bin/sh\n"));
    }

    #[test]
    fn every_id_taken_is_an_error_naming_the_range() {
        let mut e = env();
        let uids: String = (1000..=super::LAST_ID)
            .map(|u| format!("u{u}:x:{u}:0::/:/bin/false\n"))
            .collect();
        e.passwd = Some(format!("{PASSWD_TXT}{uids}"));
        let err = render(&keyed(), &e).unwrap_err();
        assert_eq!(
            err,
            RenderError::NoFreeId {
                user: "rancher".into(),
                kind: "uid",
                first: 1000,
                last: super::LAST_ID
            }
        );
        assert!(
            err.to_string().contains("every uid from 1000 to 60000"),
            "{err}"
        );
    }

    #[test]
    fn accounts_are_untouched_unless_the_ssh_user_is_needed() {
        use crate::config::{Encoding, IdOrName, OwnerGroup, OwnerSpec, WriteFile};
        let motd = |owner: &str| WriteFile {
            path: "/etc/motd".into(),
            content: b"hi\n".to_vec(),
            mode: 0o644,
            owner: OwnerSpec {
                user: IdOrName::Name(owner.into()),
                group: OwnerGroup::Unchanged,
            },
            encoding: Encoding::Plain,
            origin: Origin {
                file: "config.yaml".into(),
                line: 2,
                col: 3,
            },
        };
        let mut e = env();
        e.passwd = None;
        e.group = None;
        e.shadow = None;
        let cfg = NodeConfig {
            write_files: vec![motd("root")],
            ..Default::default()
        };
        let r = render(&cfg, &e).unwrap();
        for f in ["/etc/passwd", "/etc/group", "/etc/shadow"] {
            assert!(!r.state.files.contains_key(f), "{f} rendered");
        }
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
        // An owner naming the ssh user needs it (k3os configs say `owner: rancher`, which
        // leaves the group root, as chown does).
        let e = env();
        let cfg = NodeConfig {
            write_files: vec![motd("rancher")],
            ..Default::default()
        };
        let r = render(&cfg, &e).unwrap();
        assert_eq!(
            (file(&r, "/etc/motd").uid, file(&r, "/etc/motd").gid),
            (1000, 0)
        );
        assert!(text(&r, "/etc/passwd").contains("rancher:x:1000:1000:"));
        // So does a password.
        let mut cfg = NodeConfig::default();
        cfg.k3os.password = Some(Secret("pw".into()));
        assert!(render(&cfg, &e)
            .unwrap()
            .state
            .files
            .contains_key("/etc/shadow"));
    }

    #[test]
    fn existing_group_is_reused_as_primary_group() {
        let mut e = env();
        e.group = Some(format!("{GROUP_TXT}rancher:x:1005:\n"));
        let r = render(&keyed(), &e).unwrap();
        assert!(text(&r, "/etc/passwd").ends_with("rancher:x:1000:1005::/home/rancher:/bin/sh\n"));
        assert_eq!(
            text(&r, "/etc/group"),
            format!("{GROUP_TXT}rancher:x:1005:\n")
        );
    }

    #[test]
    fn missing_files_are_seeded_with_locked_root() {
        let mut e = env();
        e.passwd = None;
        e.group = None;
        e.shadow = None;
        e.ssh_keys = Some(Vec::new());
        let r = render(&keyed(), &e).unwrap();
        assert_eq!(
            text(&r, "/etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nrancher:x:1000:1000::/home/rancher:/bin/sh\n"
        );
        assert_eq!(text(&r, "/etc/shadow"), "root:*:::::::\nrancher:*:::::::\n");
        assert_eq!(r.warnings.len(), 3);
    }

    #[test]
    fn existing_user_without_absolute_home_is_an_error() {
        let mut e = env();
        e.passwd = Some(format!("{PASSWD_TXT}rancher:x:1000:1000:::/bin/sh\n"));
        let err = render(&keyed(), &e).unwrap_err();
        assert!(
            err.to_string().contains("expected an absolute path"),
            "{err}"
        );
    }

    #[test]
    fn random_salt_is_accepted_by_the_hasher() {
        let salt = super::random_salt().unwrap();
        assert_eq!(salt.len(), 16);
        let h = super::sha512_hash("pw", &salt).unwrap();
        assert!(h.starts_with(&format!("$6${salt}$")));
        sha_crypt::sha512_check("pw", &h).unwrap();
    }

    #[test]
    fn bad_salt_is_rejected() {
        let mut e = env();
        e.password_salt = "bad salt!".into();
        let mut cfg = NodeConfig::default();
        cfg.k3os.password = Some(Secret("pw".into()));
        assert!(matches!(
            render(&cfg, &e).unwrap_err(),
            RenderError::InvalidValue { key, .. } if key == "password salt"
        ));
    }
}
