//! `write_files`: each entry becomes a file with its decoded bytes, mode and owner.
//!
//! Invariants:
//! - Owners resolve through the root's account files (after the ssh user is ensured), never the
//!   host's, with GNU chown's meaning (k3os ran `chown OWNER` on the file it had just created as
//!   root): `root` is always 0:0; a user alone leaves the group root (gid 0); `user:` takes the
//!   user's login group (its passwd gid; for a numeric uid, that of the passwd entry with it,
//!   else the same number); `:group` leaves the user root; numeric ids pass through. An
//!   unknown name is an error naming the entry's origin and the known names.
//! - A file whose mode is not world-readable is secret (never printed).
//! - Later entries for the same path win (the config merge already dedups by path; this keeps
//!   the last one if duplicates slip through).

use super::accounts::AccountDb;
use super::{Builder, RenderError, UnknownOwner};
use crate::config::{IdOrName, NodeConfig, OwnerGroup, WriteFile};
use crate::desired::{DesiredFile, FileSource};

pub(crate) fn render_write_files(
    cfg: &NodeConfig,
    db: &AccountDb,
    b: &mut Builder,
) -> Result<(), RenderError> {
    for wf in &cfg.write_files {
        let (uid, gid) = resolve_owner(wf, db)?;
        b.files.insert(
            wf.path.clone(),
            DesiredFile {
                path: wf.path.clone(),
                content: wf.content.clone(),
                mode: wf.mode & 0o7777,
                uid,
                gid,
                secret: crate::config::secrets::mode_is_secret(wf.mode),
                source: FileSource {
                    key: "write_files".into(),
                    origin: Some(wf.origin.to_string()),
                },
            },
        );
    }
    Ok(())
}

/// Resolves a `write_files` owner to numeric ids through `db`.
pub fn resolve_owner(wf: &WriteFile, db: &AccountDb) -> Result<(u32, u32), RenderError> {
    let unknown_user = |name: &str| {
        RenderError::UnknownOwner(Box::new(UnknownOwner {
            origin: wf.origin.clone(),
            path: wf.path.clone(),
            kind: "user",
            name: name.to_string(),
            table: "/etc/passwd",
            known: db.user_names(),
        }))
    };
    let (uid, login_gid) = match &wf.owner.user {
        IdOrName::Name(n) if n == "root" => (0, 0),
        IdOrName::Name(n) => {
            let u = db.user(n).ok_or_else(|| unknown_user(n))?;
            (u.uid, u.gid)
        }
        IdOrName::Id(id) => (*id, db.user_by_uid(*id).map(|u| u.gid).unwrap_or(*id)),
    };
    let gid = match &wf.owner.group {
        OwnerGroup::Unchanged => 0,
        OwnerGroup::Login => login_gid,
        OwnerGroup::Named(IdOrName::Id(g)) => *g,
        OwnerGroup::Named(IdOrName::Name(g)) if g == "root" => 0,
        OwnerGroup::Named(IdOrName::Name(g)) => {
            db.group(g)
                .ok_or_else(|| {
                    RenderError::UnknownOwner(Box::new(UnknownOwner {
                        origin: wf.origin.clone(),
                        path: wf.path.clone(),
                        kind: "group",
                        name: g.clone(),
                        table: "/etc/group",
                        known: db.group_names(),
                    }))
                })?
                .gid
        }
    };
    Ok((uid, gid))
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::{render, RenderError};
    use crate::config::{Encoding, IdOrName, NodeConfig, Origin, OwnerGroup, OwnerSpec, WriteFile};

    fn wf(path: &str, user: IdOrName, group: OwnerGroup, mode: u32) -> WriteFile {
        WriteFile {
            path: path.into(),
            content: b"hello\n".to_vec(),
            mode,
            owner: OwnerSpec { user, group },
            encoding: Encoding::Plain,
            origin: Origin {
                file: "nodes/node1.yaml".into(),
                line: 12,
                col: 5,
            },
        }
    }

    fn name(s: &str) -> IdOrName {
        IdOrName::Name(s.into())
    }

    fn render_one(w: WriteFile) -> Result<(u32, u32, u32, bool), RenderError> {
        let path = w.path.clone();
        let cfg = NodeConfig {
            write_files: vec![w],
            ..Default::default()
        };
        let r = render(&cfg, &env())?;
        let f = file(&r, &path);
        assert_eq!(f.content, b"hello\n");
        assert_eq!(f.source.key, "write_files");
        assert_eq!(f.source.origin.as_deref(), Some("nodes/node1.yaml:12:5"));
        Ok((f.mode, f.uid, f.gid, f.secret))
    }

    #[test]
    fn owner_resolution_table() {
        use OwnerGroup::{Login, Named, Unchanged};
        // (owner user, group, expected uid, gid), as GNU chown sets them on a root-owned file.
        let cases = [
            (name("root"), Unchanged, 0, 0),
            (name("root"), Named(name("shadow")), 0, 42),
            (name("messagebus"), Unchanged, 100, 0), // `messagebus`: group left as root
            (name("messagebus"), Login, 100, 102),   // `messagebus:`: its login group
            (name("rancher"), Unchanged, 1000, 0),   // the ssh user bosun creates
            (name("rancher"), Login, 1000, 1000),
            (name("daemon"), Named(name("wheel")), 1, 10),
            (IdOrName::Id(4242), Named(IdOrName::Id(4343)), 4242, 4343),
            (IdOrName::Id(100), Unchanged, 100, 0),
            (IdOrName::Id(100), Login, 100, 102), // `100:` → that user's login gid
            (IdOrName::Id(5555), Login, 5555, 5555),
            (name("sshd"), Named(name("root")), 101, 0),
        ];
        for (u, g, uid, gid) in cases {
            let label = format!("{u}:{g:?}");
            let got = render_one(wf("/etc/x", u, g, 0o644)).unwrap();
            assert_eq!((got.1, got.2), (uid, gid), "{label}");
        }
    }

    #[test]
    fn mode_and_secret_flag() {
        assert_eq!(
            render_one(wf("/etc/a", name("root"), OwnerGroup::Unchanged, 0o644)).unwrap(),
            (0o644, 0, 0, false)
        );
        assert_eq!(
            render_one(wf("/etc/b", name("root"), OwnerGroup::Unchanged, 0o600)).unwrap(),
            (0o600, 0, 0, true)
        );
        assert_eq!(
            render_one(wf(
                "/usr/local/bin/c",
                name("root"),
                OwnerGroup::Unchanged,
                0o4755
            ))
            .unwrap(),
            (0o4755, 0, 0, false)
        );
    }

    #[test]
    fn unknown_user_error_names_origin_owner_and_known_users() {
        let err =
            render_one(wf("/etc/x", name("nobody2"), OwnerGroup::Unchanged, 0o644)).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("nodes/node1.yaml:12:5: write_files entry /etc/x"),
            "{msg}"
        );
        assert!(msg.contains("unknown user 'nobody2'"), "{msg}");
        assert!(
            // No key, password or owner needs the ssh user, so it was not added.
            msg.contains("known users: root, daemon, messagebus, sshd"),
            "{msg}"
        );
    }

    #[test]
    fn unknown_group_error_lists_known_groups() {
        let err = render_one(wf(
            "/etc/x",
            name("root"),
            OwnerGroup::Named(name("docker")),
            0o644,
        ))
        .unwrap_err();
        match &err {
            RenderError::UnknownOwner(u) => {
                assert_eq!((u.kind, u.name.as_str()), ("group", "docker"));
                assert_eq!(u.table, "/etc/group");
                assert_eq!(
                    u.known,
                    &["root", "daemon", "shadow", "messagebus", "wheel"]
                );
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn owners_never_come_from_the_host() {
        // The host running the tests certainly has a `nobody` user; the root here does not.
        let err =
            render_one(wf("/etc/x", name("nobody"), OwnerGroup::Unchanged, 0o644)).unwrap_err();
        assert!(matches!(err, RenderError::UnknownOwner(_)));
    }

    #[test]
    fn write_files_owner_can_name_a_user_added_by_a_write_files_passwd() {
        let mut cfg = NodeConfig::default();
        // A password needs the ssh user, so accounts edit the write_files passwd.
        cfg.k3os.password = Some(crate::config::Secret("pw".into()));
        let mut p = wf("/etc/passwd", name("root"), OwnerGroup::Unchanged, 0o644);
        p.content = format!("{PASSWD_TXT}svc:x:2000:2000::/srv:/bin/false\n").into_bytes();
        cfg.write_files.push(p);
        cfg.write_files.push(wf(
            "/srv/app.conf",
            name("svc"),
            OwnerGroup::Named(IdOrName::Id(7)),
            0o640,
        ));
        let r = render(&cfg, &env()).unwrap();
        let f = file(&r, "/srv/app.conf");
        assert_eq!((f.uid, f.gid, f.secret), (2000, 7, true));
        // passwd is still managed by accounts, based on the write_files content.
        assert!(text(&r, "/etc/passwd").contains("svc:x:2000"));
        assert!(text(&r, "/etc/passwd").ends_with("rancher:x:1000:1000::/home/rancher:/bin/sh\n"));
        assert!(r
            .warnings
            .iter()
            .any(|w| w.contains("write_files entry /etc/passwd")));
    }
}
