//! Rendering: the pure function from a merged, validated [`NodeConfig`] to the node's
//! [`DesiredState`] (every managed file's exact bytes, mode and owner, plus the effects those
//! files trigger).
//!
//! Owns the mapping of every k3os key to its systemd-era target (table and decisions in
//! `docs/rendering.md`).
//!
//! Invariants:
//! - **Pure.** No I/O, no clock, no randomness: the caller reads the files bosun edits in place
//!   (passwd, group, shadow, hosts, environment) under `--root` and passes their content in
//!   [`RenderEnv`], together with already-resolved ssh keys ([`crate::keys`]) and a salt for
//!   password hashing. Same inputs → same bytes.
//! - **Edit in place, preserve the rest.** For the files bosun edits in place every line it does
//!   not own is kept byte for byte.
//! - **k3os order.** `write_files` is laid down first; keys k3os applied later win over it. A
//!   `write_files` entry for a file bosun edits in place (e.g. `/etc/hosts`) becomes the base that
//!   the edit starts from; one for a file bosun generates whole (e.g. `/etc/hostname`) is replaced,
//!   with a warning.
//! - **Owners resolve through the root's account files** (after the ssh user is ensured), never
//!   through the host's NSS.
//! - **Directories are implied.** [`DesiredState`] holds files only; the apply layer creates
//!   missing parent directories. `~/.ssh` should be 0700 and owned by the ssh user (see
//!   [`ssh`]).
//! - Secrets (token, password hashes, wifi passphrases, non-world-readable files) are marked
//!   `secret` and never appear in errors or warnings.

pub mod accounts;
pub mod commands;
pub mod files;
pub mod k3s;
pub mod network;
pub mod ssh;
pub mod system;

use std::collections::BTreeMap;

use crate::config::{NodeConfig, Origin};
use crate::desired::{DesiredFile, DesiredState, EffectRule, FileSource};

pub use crate::config::K3sRole;
pub use k3s::{k3s_invocation, k3s_role, K3sInvocation, TokenKind, K3S_CONFIG_DIR};

/// Files bosun edits in place. Their current content comes in through [`RenderEnv`].
pub const PASSWD: &str = "/etc/passwd";
/// Edited in place (the ssh user's primary group); content in [`RenderEnv::group`].
pub const GROUP: &str = "/etc/group";
/// Edited in place (the ssh user's password hash); content in [`RenderEnv::shadow`].
pub const SHADOW: &str = "/etc/shadow";
/// Edited in place (the `127.0.1.1` line); content in [`RenderEnv::hosts`].
pub const HOSTS: &str = "/etc/hosts";
/// Edited in place (the `k3os.environment` variables); content in
/// [`RenderEnv::environment`].
pub const ENVIRONMENT: &str = "/etc/environment";

/// Node-local settings that are not part of the fleet config (they come from the agent config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderSettings {
    /// The login user that receives `ssh_authorized_keys` and `k3os.password`. Never `root`.
    pub ssh_user: String,
    /// Lowest uid given when the user has to be created (the lowest free one from here up).
    pub ssh_uid: u32,
    /// Lowest gid for the user's primary group when it has to be created.
    pub ssh_gid: u32,
    /// Home directory used when the user has to be created.
    pub ssh_home: String,
    /// Login shell used when the user has to be created.
    pub ssh_shell: String,
    /// The k3s binary the unit drop-in executes.
    pub k3s_bin: String,
}

impl RenderSettings {
    /// Defaults for another ssh user name: home `/home/<name>`.
    pub fn for_user(name: &str) -> Self {
        RenderSettings {
            ssh_user: name.to_string(),
            ssh_home: format!("/home/{name}"),
            ..RenderSettings::default()
        }
    }
}

impl Default for RenderSettings {
    fn default() -> Self {
        RenderSettings {
            ssh_user: "rancher".into(),
            ssh_uid: 1000,
            ssh_gid: 1000,
            ssh_home: "/home/rancher".into(),
            ssh_shell: "/bin/sh".into(),
            k3s_bin: "/usr/local/bin/k3s".into(),
        }
    }
}

/// Everything rendering needs besides the config. Filled by the caller (which does the I/O).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RenderEnv {
    /// Current content of `/etc/passwd` under the root (`None`: file missing).
    pub passwd: Option<String>,
    /// Current content of `/etc/group` under the root.
    pub group: Option<String>,
    /// Current content of `/etc/shadow` under the root.
    pub shadow: Option<String>,
    /// Current content of `/etc/hosts` under the root.
    pub hosts: Option<String>,
    /// Current content of `/etc/environment` under the root.
    pub environment: Option<String>,
    /// Resolved `authorized_keys` lines (see [`crate::keys::KeyResolution::for_render`]).
    /// `None`: do not manage `authorized_keys` this time (no keys configured, or every fetch
    /// failed with nothing cached — never lock the node out because of a network failure).
    pub ssh_keys: Option<Vec<String>>,
    /// Salt for SHA-512 crypt when a plaintext `k3os.password` must be (re)hashed: 1–16
    /// characters of `[./0-9A-Za-z]`, chosen randomly by the caller. Unused when the current
    /// hash already verifies against the plaintext.
    pub password_salt: String,
    /// The node identity the layers were selected by (used to warn when `hostname:` differs).
    pub node_hostname: String,
    /// Node-local settings from the agent config (ssh user, k3s binary).
    pub settings: RenderSettings,
}

/// The result of rendering: the desired state plus human-readable warnings (keys accepted for
/// compatibility but not applicable, overridden `write_files` entries, …). Warnings never
/// contain secrets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rendered {
    /// Every managed file and the effects it triggers.
    pub state: DesiredState,
    /// Human-readable warnings, free of secrets.
    pub warnings: Vec<String>,
}

/// Why a config could not be rendered for this node. Nothing is written; the config (or the node's
/// account files) must change.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RenderError {
    /// A `write_files` owner is not in the root's passwd/group.
    #[error("{0}")]
    UnknownOwner(Box<UnknownOwner>),
    /// The ssh user must be created but every id in its range is taken.
    #[error(
        "cannot create ssh user '{user}': every {kind} from {first} to {last} is taken in the \
         root's account files; configure an existing user as ssh_user"
    )]
    NoFreeId {
        /// The ssh user to create.
        user: String,
        /// `uid` or `gid`.
        kind: &'static str,
        /// The first id tried (the configured `ssh_uid`/`ssh_gid`).
        first: u32,
        /// The last id tried.
        last: u32,
    },
    /// The agent config names `root` as the ssh user.
    #[error("the ssh user must not be root (k3os never gave root keys or a password)")]
    SshUserIsRoot,
    /// A value cannot be written safely: a server address with spaces, a bad SSID or passphrase, a
    /// control character in `k3s_args` or the token, a bad ssh user name or home, a `:` or line
    /// break in the password, or a bad password salt.
    #[error("invalid value for {key}: {reason}")]
    InvalidValue {
        /// The config key (or `ssh user`, `password salt`).
        key: String,
        /// What is wrong and what is expected.
        reason: String,
    },
    /// `k3os.k3s_args` starts with a word that is neither `server` nor `agent`.
    #[error(
        "k3os.k3s_args: first element '{first}' is not a k3s command; expected 'server' or \
         'agent' (or a flag, to let server_url decide)"
    )]
    K3sCommand {
        /// That word.
        first: String,
    },
}

/// A `write_files` owner that the root's account files do not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{origin}: write_files entry {path}: unknown {kind} '{name}' in the root's {table}; \
     known {kind}s: {}",
    known.join(", ")
)]
pub struct UnknownOwner {
    /// Where the `write_files` entry is.
    pub origin: Origin,
    /// The file's path.
    pub path: String,
    /// `user` or `group`.
    pub kind: &'static str,
    /// The unknown user or group name.
    pub name: String,
    /// `/etc/passwd` or `/etc/group`.
    pub table: &'static str,
    /// Names that do exist in that table, for the message.
    pub known: Vec<String>,
}

/// Collects files and effects while rendering.
pub(crate) struct Builder {
    pub files: BTreeMap<String, DesiredFile>,
    pub effects: Vec<EffectRule>,
    pub warnings: Vec<String>,
}

impl Builder {
    /// Adds a generated file; a previous `write_files` entry for the same path is replaced and
    /// reported.
    pub fn put(&mut self, file: DesiredFile) {
        if let Some(old) = self.files.get(&file.path) {
            if old.source.key == "write_files" {
                self.warnings.push(format!(
                    "{}: write_files entry {} is replaced by what {} renders there",
                    old.source.origin.as_deref().unwrap_or("?"),
                    file.path,
                    file.source.key
                ));
            }
        }
        self.files.insert(file.path.clone(), file);
    }

    /// The content a file bosun edits in place starts from: the `write_files` entry for that
    /// path if there is one (k3os wrote files first), else what is on disk now.
    pub fn base(&self, path: &str, on_disk: &Option<String>) -> Option<String> {
        match self.files.get(path) {
            Some(f) if f.source.key == "write_files" => {
                Some(String::from_utf8_lossy(&f.content).into_owned())
            }
            _ => on_disk.clone(),
        }
    }
}

/// A root-owned file (uid 0, gid 0).
pub(crate) fn root_file(path: &str, content: Vec<u8>, mode: u32, key: &str) -> DesiredFile {
    DesiredFile {
        path: path.to_string(),
        content,
        mode,
        uid: 0,
        gid: 0,
        secret: crate::config::secrets::mode_is_secret(mode),
        source: FileSource {
            key: key.to_string(),
            origin: None,
        },
    }
}

/// Appends `line` to `text`, first adding a newline if `text` does not end with one.
pub(crate) fn push_line(text: &mut String, line: &str) {
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(line);
    text.push('\n');
}

/// Splits text into lines keeping each line's terminator, so a rebuild is byte-identical.
pub(crate) fn lines_with_ends(text: &str) -> impl Iterator<Item = &str> {
    text.split_inclusive('\n')
}

/// Renders the desired state of a node. Pure: no I/O.
///
/// Order of the produced effects: command phases are `OncePerBoot` rules; the others fire when
/// their files change, in the order hostname, sysctl, modules, network, k3s.
pub fn render(cfg: &NodeConfig, env: &RenderEnv) -> Result<Rendered, RenderError> {
    let mut b = Builder {
        files: BTreeMap::new(),
        effects: Vec::new(),
        warnings: Vec::new(),
    };

    // 1. Accounts first (owners of write_files may name the ssh user bosun creates), and only
    //    when something needs the ssh user.
    let passwd_base = base_of(cfg, PASSWD, &env.passwd);
    let group_base = base_of(cfg, GROUP, &env.group);
    let accounts = if accounts::ssh_user_needed(cfg, &env.settings.ssh_user) {
        Some(accounts::ensure_user(
            passwd_base.as_deref(),
            group_base.as_deref(),
            base_of(cfg, SHADOW, &env.shadow).as_deref(),
            &env.settings,
            cfg.k3os.password.as_ref(),
            &env.password_salt,
            &mut b.warnings,
        )?)
    } else {
        None
    };
    let db = match &accounts {
        Some(a) => a.db.clone(),
        None => accounts::AccountDb::parse(
            passwd_base.as_deref().unwrap_or_default(),
            group_base.as_deref().unwrap_or_default(),
        ),
    };

    // 2. write_files (k3os laid them down before everything else).
    files::render_write_files(cfg, &db, &mut b)?;

    // 3. Everything k3os applied after write_files.
    if let Some(accounts) = &accounts {
        accounts.emit(&mut b);
        ssh::render_authorized_keys(cfg, env, accounts, &mut b);
    }
    system::render_hostname(cfg, env, &mut b)?;
    system::render_sysctl(cfg, &mut b)?;
    system::render_modules(cfg, &mut b)?;
    system::render_environment(cfg, env, &mut b)?;
    network::render_dns_ntp(cfg, &mut b)?;
    network::render_wifi(cfg, &mut b)?;
    k3s::render_k3s(cfg, &env.settings, &mut b)?;
    commands::render_commands(cfg, &mut b);

    if !cfg.k3os.data_sources.is_empty() {
        b.warnings.push(format!(
            "k3os.data_sources ({}) is accepted but not applicable: bosun takes its config from \
             Git, not from cloud data sources",
            cfg.k3os.data_sources.join(", ")
        ));
    }
    if cfg.k3os.install_present {
        b.warnings.push(
            "k3os.install is accepted but not applicable: bosun does not install the OS; \
             images are written by the A/B upgrade (upgrade:)"
                .into(),
        );
    }

    Ok(Rendered {
        state: DesiredState {
            files: b.files,
            effects: b.effects,
        },
        warnings: b.warnings,
    })
}

/// Base content for an account file: a `write_files` entry for it wins over the disk.
fn base_of(cfg: &NodeConfig, path: &str, on_disk: &Option<String>) -> Option<String> {
    cfg.write_files
        .iter()
        .rev()
        .find(|w| w.path == path)
        .map(|w| String::from_utf8_lossy(&w.content).into_owned())
        .or_else(|| on_disk.clone())
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    /// A typical Debian-like root with a `pi`-less account set.
    pub const PASSWD_TXT: &str = "root:x:0:0:root:/root:/bin/bash\n\
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
messagebus:x:100:102::/nonexistent:/usr/sbin/nologin\n\
sshd:x:101:65534::/run/sshd:/usr/sbin/nologin\n";
    pub const GROUP_TXT: &str =
        "root:x:0:\ndaemon:x:1:\nshadow:x:42:\nmessagebus:x:102:\nwheel:x:10:\n";
    pub const SHADOW_TXT: &str = "root:*:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n\
messagebus:!:19000::::::\nsshd:!:19000::::::\n";

    pub fn env() -> RenderEnv {
        RenderEnv {
            passwd: Some(PASSWD_TXT.into()),
            group: Some(GROUP_TXT.into()),
            shadow: Some(SHADOW_TXT.into()),
            hosts: Some("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n".into()),
            environment: None,
            ssh_keys: None,
            password_salt: "saltsaltsaltsalt".into(),
            node_hostname: "node1".into(),
            settings: RenderSettings::default(),
        }
    }

    pub fn file<'a>(r: &'a Rendered, path: &str) -> &'a DesiredFile {
        r.state
            .files
            .get(path)
            .unwrap_or_else(|| panic!("{path} not rendered; have {:?}", r.state.files.keys()))
    }

    pub fn text(r: &Rendered, path: &str) -> String {
        String::from_utf8(file(r, path).content.clone()).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;
    use crate::desired::{CommandPhase, Effect, Trigger};

    #[test]
    fn empty_config_renders_k3s_server_only() {
        // No keys, password or owner need the ssh user: accounts are not touched.
        let r = render(&NodeConfig::default(), &env()).unwrap();
        let paths: Vec<&str> = r.state.files.keys().map(String::as_str).collect();
        assert_eq!(
            paths,
            vec!["/etc/systemd/system/k3s.service.d/90-bosun.conf"]
        );
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    }

    #[test]
    fn render_is_deterministic() {
        let mut cfg = NodeConfig {
            hostname: Some("edge-7".into()),
            ..Default::default()
        };
        cfg.k3os.password = Some(crate::config::Secret("pw".into()));
        cfg.k3os.labels.insert("b".into(), "2".into());
        cfg.k3os.labels.insert("a".into(), "1".into());
        let a = render(&cfg, &env()).unwrap();
        let b = render(&cfg, &env()).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn data_sources_and_install_are_warned_not_rendered() {
        let mut cfg = NodeConfig::default();
        cfg.k3os.data_sources = vec!["aws".into(), "cdrom".into()];
        cfg.k3os.install_present = true;
        let plain = render(&NodeConfig::default(), &env()).unwrap();
        let r = render(&cfg, &env()).unwrap();
        assert_eq!(r.state, plain.state, "nothing rendered for them");
        assert_eq!(r.warnings.len(), 2, "{:?}", r.warnings);
        assert!(r.warnings[0].contains("k3os.data_sources (aws, cdrom)"));
        assert!(r.warnings[1].contains("k3os.install"));
    }

    #[test]
    fn effects_come_in_documented_order() {
        let mut cfg = NodeConfig {
            hostname: Some("h".into()),
            ..Default::default()
        };
        cfg.k3os.sysctls.insert("vm.swappiness".into(), "1".into());
        cfg.run_cmd = vec!["echo run".into()];
        cfg.init_cmd = vec!["echo init".into()];
        let r = render(&cfg, &env()).unwrap();
        let kinds: Vec<&Effect> = r.state.effects.iter().map(|e| &e.effect).collect();
        assert!(matches!(kinds[0], Effect::SetHostname { .. }));
        assert!(matches!(kinds[1], Effect::SysctlLoad { .. }));
        assert!(matches!(kinds[2], Effect::DaemonReload));
        assert!(matches!(kinds[3], Effect::DisableUnit { .. }));
        assert!(matches!(kinds[4], Effect::EnableUnit { .. }));
        assert!(matches!(kinds[5], Effect::RestartUnit { .. }));
        assert!(matches!(kinds[6], Effect::RestartUnit { .. }));
        assert_eq!(
            r.state.effects[7],
            EffectRule {
                effect: Effect::RunCommands {
                    phase: CommandPhase::Init,
                    commands: vec!["echo init".into()]
                },
                trigger: Trigger::OncePerBoot
            }
        );
        assert_eq!(r.state.effects.len(), 9);
    }
}
