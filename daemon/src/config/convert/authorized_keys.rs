//! `ssh_authorized_keys`: each entry is a literal OpenSSH public key, `github:USER`,
//! `gitlab:USER` or an https URL. Fetching keys is not done here; only the syntax is checked.
//! A literal entry that is not a public key (a truncated sample, a `<key>` placeholder) is a
//! lenient warning: skipped and never written, the other entries kept, as k3os kept them.

use super::syntax::check_url;
use super::tree::list;
use super::Cx;
use crate::config::model::{AuthorizedKey, KeySource};
use crate::config::yaml::{Node, Pos};

/// The valid entries of `ssh_authorized_keys`; each bad one is reported.
pub(super) fn authorized_keys(cx: &mut Cx, root: &Node) -> Vec<AuthorizedKey> {
    let mut out = Vec::new();
    for (i, (line, pos)) in list(root.get("ssh_authorized_keys"))
        .into_iter()
        .enumerate()
    {
        if let Some(source) = key_source(cx, &line, &pos, &format!("ssh_authorized_keys[{i}]")) {
            out.push(AuthorizedKey {
                source,
                origin: pos.origin(),
            });
        }
    }
    out
}

/// Where one entry's keys come from, or `None` (reported) when the entry is none of the forms.
/// A control character inside the entry (after trimming) is always an error: a line break
/// would write a second `authorized_keys` line of the author's choosing.
fn key_source(cx: &mut Cx, line: &str, pos: &Pos, field: &str) -> Option<KeySource> {
    let line = line.trim();
    if let Some(e) = control_character(line) {
        cx.err(pos, field, e);
        return None;
    }
    let user_ok = |u: &str| {
        !u.is_empty()
            && u.len() <= 255
            && u.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    };
    if let Some(u) = line.strip_prefix("github:") {
        if user_ok(u) {
            return Some(KeySource::GitHub(u.to_string()));
        }
        cx.err(
            pos,
            field,
            format!("{u:?} is not a GitHub user name; expected github:USER"),
        );
        return None;
    }
    if let Some(u) = line.strip_prefix("gitlab:") {
        if user_ok(u) {
            return Some(KeySource::GitLab(u.to_string()));
        }
        cx.err(
            pos,
            field,
            format!("{u:?} is not a GitLab user name; expected gitlab:USER"),
        );
        return None;
    }
    if line.starts_with("https://") || line.starts_with("http://") {
        return match check_url(line) {
            Ok(()) => Some(KeySource::Url(line.to_string())),
            Err(e) => {
                cx.err(pos, field, e);
                None
            }
        };
    }
    if ssh_key::PublicKey::from_openssh(line).is_ok() {
        return Some(KeySource::Literal(line.to_string()));
    }
    // k3os appended a literal entry unparsed (sshd ignores a bad line) and kept the others.
    let msg = format!(
        "{}; skipped, never written (k3os appended it as it is and sshd ignored it)",
        not_a_key(line)
    );
    cx.lenient(pos, field, msg);
    None
}

/// Why `line` is not an OpenSSH public key, in the user's terms; `(placeholder?)` when it
/// looks like one (`<key>`, `AAAAB3N...`), as published sample configs often have.
fn not_a_key(line: &str) -> String {
    let placeholder = ["<", ">", "...", "…"].iter().any(|p| line.contains(p));
    let hint = if placeholder { " (placeholder?)" } else { "" };
    let words: Vec<&str> = line.split_whitespace().collect();
    let why = match words.as_slice() {
        [] => "the entry is empty".to_string(),
        [_] => "one word".to_string(),
        [ty, data, ..] => {
            let known = ssh_key::Algorithm::new(ty)
                .is_ok_and(|a| !matches!(a, ssh_key::Algorithm::Other(_)));
            let not_base64 = data
                .chars()
                .find(|c| !(c.is_ascii_alphanumeric() || "+/=".contains(*c)));
            match not_base64 {
                _ if !known => format!("unknown key type {ty:?}"),
                Some(c) => format!("the key data contains {c:?}, which is not base64"),
                None => format!("the key data is truncated or not a {ty} key"),
            }
        }
    };
    format!("not an ssh public key{hint}: {why}; expected `TYPE BASE64 [comment]`, github:USER, gitlab:USER or an https URL")
}

/// The error for the first control character in `entry` (a tab, which separates fields in
/// `authorized_keys`, is allowed), or `None`.
pub fn control_character(entry: &str) -> Option<String> {
    super::syntax::control_character(entry, &['\t'])
        .map(|e| format!("{e}; expected one key entry on one line"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_say_why_in_the_users_terms() {
        let cases = [
            ("<key>", "not an ssh public key (placeholder?): one word"),
            (
                "ssh-rsa AAAAB3NzaC1yc2EAAAADAQAB...",
                "(placeholder?): the key data contains '.', which is not base64",
            ),
            (
                "ssh-rsa AAAAB3N",
                "not an ssh public key: the key data is truncated",
            ),
            ("rsa AAAA", "unknown key type \"rsa\""),
            ("", "the entry is empty"),
        ];
        for (line, want) in cases {
            let got = not_a_key(line);
            assert!(got.contains(want), "{line}: {got}");
            assert!(!got.contains("encoding"), "{line}: {got}");
        }
    }
}
