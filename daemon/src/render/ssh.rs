//! `ssh_authorized_keys` → `<home>/.ssh/authorized_keys` of the ssh user, 0600, owned by the
//! user.
//!
//! Invariants:
//! - Declarative: the file holds exactly the resolved keys ([`super::RenderEnv::ssh_keys`]),
//!   one per line, duplicates dropped (first occurrence wins), so stale keys disappear.
//! - Managed only when the caller passes `Some(keys)`; `None` (nothing configured, or every
//!   fetch failed with nothing cached) leaves the file alone rather than locking the node out.
//! - Never root's: the ssh user cannot be root (checked by accounts).
//! - The home comes from the user's passwd entry. The `.ssh` directory is implied: the apply
//!   layer must create it 0700 owned by the user (DesiredState holds files only).

use std::collections::BTreeSet;

use super::accounts::Accounts;
use super::{Builder, RenderEnv};
use crate::config::NodeConfig;
use crate::desired::{DesiredFile, FileSource};

/// The path of the ssh user's `authorized_keys`.
pub fn authorized_keys_path(home: &str) -> String {
    format!("{}/.ssh/authorized_keys", home.trim_end_matches('/'))
}

pub(crate) fn render_authorized_keys(
    cfg: &NodeConfig,
    env: &RenderEnv,
    accounts: &Accounts,
    b: &mut Builder,
) {
    let Some(keys) = &env.ssh_keys else {
        if !cfg.ssh_authorized_keys.is_empty() {
            b.warnings.push(format!(
                "ssh_authorized_keys: no keys could be resolved; {} is left as it is",
                authorized_keys_path(&accounts.user.home)
            ));
        }
        return;
    };
    let mut seen = BTreeSet::new();
    let mut content = String::new();
    for k in keys {
        let k = k.trim();
        if k.is_empty() || !seen.insert(k) {
            continue;
        }
        content.push_str(k);
        content.push('\n');
    }
    let path = authorized_keys_path(&accounts.user.home);
    b.put(DesiredFile {
        path,
        content: content.into_bytes(),
        mode: 0o600,
        uid: accounts.user.uid,
        gid: accounts.user.gid,
        // Public keys are not secret; the mode is about sshd's StrictModes.
        secret: false,
        source: FileSource {
            key: "ssh_authorized_keys".into(),
            origin: cfg
                .ssh_authorized_keys
                .first()
                .map(|k| k.origin.to_string()),
        },
    });
}

#[cfg(test)]
mod tests {
    use super::super::render;
    use super::super::test_support::*;
    use crate::config::{AuthorizedKey, KeySource, NodeConfig, Origin};

    const K1: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB7Hc7aPnRu7mZGnTj0JYkLSP3JIe2ZjFvdRvyAa3xyz a@b";
    const K2: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIC0bYD3EVn1Q1kb8Mq1Q2DjU5qy7n1lq8l6N2qtRabcd";

    fn cfg_with_keys() -> NodeConfig {
        NodeConfig {
            ssh_authorized_keys: vec![AuthorizedKey {
                source: KeySource::GitHub("alice".into()),
                origin: Origin {
                    file: "config.yaml".into(),
                    line: 3,
                    col: 3,
                },
            }],
            ..Default::default()
        }
    }

    #[test]
    fn exactly_the_resolved_keys_0600_owned_by_the_user() {
        let mut e = env();
        e.ssh_keys = Some(vec![K1.into(), format!("  {K2}  "), K1.into()]);
        let r = render(&cfg_with_keys(), &e).unwrap();
        let f = file(&r, "/home/rancher/.ssh/authorized_keys");
        assert_eq!(f.content, format!("{K1}\n{K2}\n").into_bytes());
        assert_eq!((f.mode, f.uid, f.gid), (0o600, 1000, 1000));
        assert_eq!(f.source.origin.as_deref(), Some("config.yaml:3:3"));
        assert!(!r.state.files.contains_key("/root/.ssh/authorized_keys"));
    }

    #[test]
    fn empty_resolution_renders_an_empty_file_declaratively() {
        let mut e = env();
        e.ssh_keys = Some(vec![]);
        let r = render(&cfg_with_keys(), &e).unwrap();
        assert!(file(&r, "/home/rancher/.ssh/authorized_keys")
            .content
            .is_empty());
    }

    #[test]
    fn unresolved_keys_leave_the_file_alone_with_a_warning() {
        let r = render(&cfg_with_keys(), &env()).unwrap();
        assert!(!r
            .state
            .files
            .contains_key("/home/rancher/.ssh/authorized_keys"));
        assert!(r.warnings[0].contains("left as it is"));
    }

    #[test]
    fn configurable_user_is_created_with_its_own_home() {
        let mut e = env();
        e.settings = crate::render::RenderSettings::for_user("core");
        e.ssh_keys = Some(vec![K1.into()]);
        let r = render(&cfg_with_keys(), &e).unwrap();
        let f = file(&r, "/home/core/.ssh/authorized_keys");
        assert_eq!((f.uid, f.gid), (1000, 1000));
        assert!(text(&r, "/etc/passwd").ends_with("core:x:1000:1000::/home/core:/bin/sh\n"));
        assert!(!r
            .state
            .files
            .contains_key("/home/rancher/.ssh/authorized_keys"));
    }

    #[test]
    fn existing_user_home_and_ids_are_used() {
        let mut e = env();
        e.passwd = Some(format!("{PASSWD_TXT}ops:x:1200:1300::/var/ops/:/bin/sh\n"));
        e.settings.ssh_user = "ops".into();
        e.ssh_keys = Some(vec![K1.into()]);
        let r = render(&cfg_with_keys(), &e).unwrap();
        let f = file(&r, "/var/ops/.ssh/authorized_keys");
        assert_eq!((f.uid, f.gid), (1200, 1300));
    }
}
