//! `ssh_authorized_keys`: each entry is a literal OpenSSH public key, `github:USER`,
//! `gitlab:USER` or an https URL. Fetching keys is not done here; only the syntax is checked.

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
    match ssh_key::PublicKey::from_openssh(line) {
        Ok(_) => Some(KeySource::Literal(line.to_string())),
        Err(e) => {
            cx.err(pos, field, format!("not an SSH public key ({e}); expected `TYPE BASE64 [comment]`, github:USER, gitlab:USER or an https URL"));
            None
        }
    }
}

/// The error for the first control character in `entry` (a tab, which separates fields in
/// `authorized_keys`, is allowed), or `None`.
pub fn control_character(entry: &str) -> Option<String> {
    super::syntax::control_character(entry, &['\t'])
        .map(|e| format!("{e}; expected one key entry on one line"))
}
