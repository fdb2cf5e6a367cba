//! Which config values and files are secret: the one rule every output uses (`bosun plan`'s
//! diffs, `bosun render` and `--explain`, warnings and logs). Pure.
//!
//! Secret are:
//! - a file that is not world-readable ([`mode_is_secret`]), whatever put it there (a
//!   `write_files` entry, a rendered file);
//! - an environment variable whose name says it holds a credential ([`env_name_is_secret`]);
//! - a credential in k3s's arguments ([`redact_k3s_args`], [`k3s_args_carry_secret`]);
//! - `k3os.token`, `k3os.password` and wifi passphrases (typed as [`super::Secret`]).
//!
//! Secret values are shown as [`REDACTED`] (or, in plans, as sha256 prefixes).

/// What is printed instead of a secret value.
pub const REDACTED: &str = "<redacted>";

/// A file with this mode is secret: it is not world-readable (`mode & 0o004 == 0`), so its
/// content must not reach output that anyone else could read.
pub fn mode_is_secret(mode: u32) -> bool {
    mode & 0o004 == 0
}

/// An environment variable whose name (case-insensitive) contains `TOKEN`, `SECRET` or
/// `PASSWORD`, or ends in `_KEY`, holds a credential (k3os users put `K3S_TOKEN` in
/// `k3os.environment`).
pub fn env_name_is_secret(name: &str) -> bool {
    let n = name.to_ascii_uppercase();
    ["TOKEN", "SECRET", "PASSWORD"]
        .iter()
        .any(|w| n.contains(w))
        || n.ends_with("_KEY")
}

/// Words that make a k3s argument (flag or value) a credential: `--token`, `--agent-token`,
/// `--etcd-s3-secret-key`, `--datastore-endpoint` (its URL may hold a password), ….
const K3S_CREDENTIAL_WORDS: &[&str] = &["token", "secret", "password", "datastore-endpoint"];

/// Whether `s` names a k3s credential: `-t` (short for `--token`) or any text containing one
/// of [`K3S_CREDENTIAL_WORDS`].
fn names_k3s_credential(s: &str) -> bool {
    let l = s.to_ascii_lowercase();
    l == "-t" || K3S_CREDENTIAL_WORDS.iter().any(|w| l.contains(w))
}

/// Whether any argument carries a credential (then a file holding the command line is secret).
/// Conservative: a false positive only hides content.
pub fn k3s_args_carry_secret(args: &[String]) -> bool {
    args.iter().any(|a| {
        names_k3s_credential(a.split_once('=').map_or(a, |(f, _)| f)) || names_k3s_credential(a)
    })
}

/// The arguments as they may be shown: the value of a credential flag (`--token=X` →
/// `--token=<redacted>`; `--token X` → `--token <redacted>`), and any other argument that
/// mentions a credential, replaced by [`REDACTED`]. Same length and order as `args`.
pub fn redact_k3s_args(args: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len());
    let mut value_follows = false;
    for a in args {
        if std::mem::take(&mut value_follows) {
            out.push(REDACTED.to_string());
            continue;
        }
        let shown = match a.split_once('=') {
            Some((flag, _)) if a.starts_with('-') && names_k3s_credential(flag) => {
                format!("{flag}={REDACTED}")
            }
            None if a.starts_with('-') && names_k3s_credential(a) => {
                value_follows = true;
                a.clone()
            }
            _ if names_k3s_credential(a) => REDACTED.to_string(),
            _ => a.clone(),
        };
        out.push(shown);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strs(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn modes() {
        assert!(mode_is_secret(0o600));
        assert!(mode_is_secret(0o640));
        assert!(mode_is_secret(0o400));
        assert!(!mode_is_secret(0o644));
        assert!(!mode_is_secret(0o604));
    }

    #[test]
    fn environment_names() {
        for n in [
            "K3S_TOKEN",
            "my_secret_x",
            "DB_PASSWORD",
            "SSH_KEY",
            "api_key",
            "Tokens",
        ] {
            assert!(env_name_is_secret(n), "{n}");
        }
        for n in ["HTTP_PROXY", "KEYBOARD", "KEY_ID", "LANG", "PASSWD_FILE"] {
            assert!(!env_name_is_secret(n), "{n}");
        }
    }

    #[test]
    fn k3s_arguments() {
        let args = strs(&[
            "server",
            "--token=abc",
            "-t",
            "def",
            "--datastore-endpoint=postgres://u:p@h/db",
            "--node-name",
            "n1",
            "--kubelet-arg=password=x",
        ]);
        assert_eq!(
            redact_k3s_args(&args),
            strs(&[
                "server",
                "--token=<redacted>",
                "-t",
                "<redacted>",
                "--datastore-endpoint=<redacted>",
                "--node-name",
                "n1",
                "<redacted>",
            ])
        );
        assert!(k3s_args_carry_secret(&args));
        assert!(k3s_args_carry_secret(&strs(&["agent", "-t=x"])));
        assert!(!k3s_args_carry_secret(&strs(&[
            "server",
            "--node-name",
            "n1"
        ])));
        // Whenever something is redacted, the arguments carry a secret (and vice versa).
        for a in [&args[..], &strs(&["agent", "-t=x"]), &strs(&["server"])] {
            assert_eq!(redact_k3s_args(a) != a, k3s_args_carry_secret(a), "{a:?}");
        }
    }
}
