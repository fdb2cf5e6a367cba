//! `write_files`: each entry's path, content (via [`super::decoding`]), permissions and owner.
//! Layers merge entries by path (the later layer wins), so a path that still appears twice here
//! was written twice in one layer, which is an error.

use std::collections::BTreeMap;

use super::decoding::decode_content;
use super::syntax::check_file_path;
use super::tree::{join, scalar, text};
use super::{Cx, Reported};
use crate::config::model::{IdOrName, OwnerGroup, OwnerSpec, WriteFile};
use crate::config::yaml::{Kind, Node, Pos};

/// The valid entries of `write_files`, in order; a bad entry or a second entry for the same
/// path is reported and left out.
pub(super) fn write_files(cx: &mut Cx, root: &Node) -> Vec<WriteFile> {
    let mut out = Vec::new();
    let Some(Kind::Seq(items)) = root.get("write_files").map(|n| &n.kind) else {
        return out;
    };
    let mut seen: BTreeMap<String, Pos> = BTreeMap::new();
    for (i, item) in items.iter().enumerate() {
        if let Some(wf) = write_file(cx, item, i) {
            if let Some(prev) = seen.get(&wf.path) {
                let field = format!("write_files[{}]", wf.path);
                let msg =
                    format!("path written twice in one layer (also at {prev}); keep one entry");
                cx.err(&item.pos, &field, msg);
                continue;
            }
            seen.insert(wf.path.clone(), item.pos.clone());
            out.push(wf);
        }
    }
    out
}

/// Entry `i` of `write_files`. A bad path or undecodable content stops the entry at once;
/// size, permission and owner problems are all reported before the entry is left out.
fn write_file(cx: &mut Cx, item: &Node, i: usize) -> Option<WriteFile> {
    let path = file_path(cx, item, i).ok()?;
    let field = format!("write_files[{path}]");
    let content = decode_content(cx, item, &field).ok()?;
    let size = check_size(cx, content.bytes.len(), &content.pos, &field);
    let mode = file_mode(cx, item, &field);
    let owner = file_owner(cx, item, &field);
    let (Ok(()), Ok(mode), Ok(owner)) = (size, mode, owner) else {
        return None;
    };
    Some(WriteFile {
        path,
        content: content.bytes,
        mode,
        owner,
        encoding: content.encoding,
        origin: item.pos.origin(),
    })
}

/// The entry's `path`, normalised; errors name the entry by index (its path is not known yet).
/// A relative path is joined onto `/` with a lenient warning; `.`, `..` and the rest of
/// [`check_path`]'s rules still apply to the joined path.
fn file_path(cx: &mut Cx, item: &Node, i: usize) -> Result<String, Reported> {
    let base = format!("write_files[{i}]");
    let Some(pnode) = item.get("path") else {
        cx.err(
            &item.pos,
            &base,
            "missing `path`; expected an absolute file path",
        );
        return Err(Reported);
    };
    let raw = text(pnode).unwrap_or_default();
    let mut path = raw.trim().to_string();
    if !path.is_empty() && !path.starts_with('/') {
        // k3os wrote `path.Join("/", path)`: a relative path lands under /.
        path.insert(0, '/');
        let msg = format!("{:?} is relative; written to {path:?} (joined onto /, as k3os did); expected an absolute path", raw.trim());
        cx.lenient(&pnode.pos, &join(&base, "path"), msg);
    }
    check_file_path(&path, &cx.opts.state_dir).map_err(|e| {
        cx.err(&pnode.pos, &join(&base, "path"), e);
        Reported
    })
}

/// Refuses decoded content over [`super::ConvertOptions::max_file_size`].
fn check_size(cx: &mut Cx, len: usize, pos: &Pos, field: &str) -> Result<(), Reported> {
    let limit = cx.opts.max_file_size;
    if len as u64 <= limit {
        return Ok(());
    }
    let msg = format!("content is {len} bytes; the limit is {limit} bytes per file");
    cx.err(pos, &join(field, "content"), msg);
    Err(Reported)
}

/// `permissions`: 0o644 when absent; a non-scalar value reads as 0 (its shape is reported by
/// the layer parser).
fn file_mode(cx: &mut Cx, item: &Node, field: &str) -> Result<u32, Reported> {
    let Some(n) = item.get("permissions") else {
        return Ok(0o644);
    };
    match scalar(n).map(|s| parse_mode(&s.value)) {
        Some(Ok(m)) => Ok(m),
        Some(Err(e)) => {
            cx.err(&n.pos, &join(field, "permissions"), e);
            Err(Reported)
        }
        None => Ok(0),
    }
}

/// `owner`: root when absent.
fn file_owner(cx: &mut Cx, item: &Node, field: &str) -> Result<OwnerSpec, Reported> {
    let Some(n) = item.get("owner") else {
        return Ok(OwnerSpec::default());
    };
    parse_owner(&text(n).unwrap_or_default()).map_err(|e| {
        cx.err(&n.pos, &join(field, "owner"), e);
        Reported
    })
}

/// `'0644'`, `'644'`, `0644`, `644`, `0o644` → 0o644. The digits are always read as octal.
pub fn parse_mode(s: &str) -> Result<u32, String> {
    let t = s.trim();
    let digits = t.strip_prefix("0o").unwrap_or(t);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "{t:?} is not an octal mode; expected octal digits such as '0644'"
        ));
    }
    if let Some(b) = digits.bytes().find(|b| *b == b'8' || *b == b'9') {
        return Err(format!(
            "{t:?} contains the digit {}; expected octal digits 0-7 such as '0644'",
            b as char
        ));
    }
    let v = u32::from_str_radix(digits, 8).map_err(|e| e.to_string())?;
    if v > 0o7777 {
        return Err(format!(
            "{t:?} is larger than 07777; expected a file mode such as '0644'"
        ));
    }
    Ok(v)
}

/// A user or group: all digits is a numeric id, else a POSIX-ish account name.
fn id_or_name(s: &str) -> Result<IdOrName, String> {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse::<u32>()
            .map(IdOrName::Id)
            .map_err(|_| format!("{s:?} is not a valid numeric id"));
    }
    let valid = !s.is_empty()
        && s.len() <= 32
        && s.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-$".contains(&b));
    if valid {
        Ok(IdOrName::Name(s.to_string()))
    } else {
        Err(format!("{s:?} is not a user or group name"))
    }
}

/// `user`, `user:`, `user:group`, `:group`, `uid:gid`, with GNU chown's meaning (see
/// [`OwnerSpec`]): `user` alone leaves the group (root), `user:` takes the user's login group.
pub fn parse_owner(s: &str) -> Result<OwnerSpec, String> {
    let t = s.trim();
    let expected = "expected `user`, `user:group`, `user:`, `:group` or `uid:gid`";
    let mut parts = t.split(':');
    let user = parts.next().unwrap_or_default();
    let group = parts.next();
    if parts.next().is_some() {
        return Err(format!("{t:?} has more than one ':'; {expected}"));
    }
    let named = |s: &str| id_or_name(s).map_err(|e| format!("{e}; {expected}"));
    Ok(match (user, group) {
        ("", Some(g)) if !g.is_empty() => OwnerSpec {
            user: IdOrName::Name("root".into()),
            group: OwnerGroup::Named(named(g)?),
        },
        (u, None) => OwnerSpec {
            user: named(u)?,
            group: OwnerGroup::Unchanged,
        },
        (u, Some("")) => OwnerSpec {
            user: named(u)?,
            group: OwnerGroup::Login,
        },
        (u, Some(g)) => OwnerSpec {
            user: named(u)?,
            group: OwnerGroup::Named(named(g)?),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        assert_eq!(parse_mode("0644"), Ok(0o644));
        assert_eq!(parse_mode("644"), Ok(0o644));
        assert_eq!(parse_mode("0o600"), Ok(0o600));
        assert_eq!(parse_mode("4755"), Ok(0o4755));
        assert!(parse_mode("0648").unwrap_err().contains("digit 8"));
        assert!(parse_mode("rw-r--r--").is_err());
        assert!(parse_mode("17777").is_err());
    }

    #[test]
    fn owners_read_as_gnu_chown_reads_them() {
        let name = |s: &str| IdOrName::Name(s.into());
        let cases = [
            ("rancher", name("rancher"), OwnerGroup::Unchanged),
            ("rancher:", name("rancher"), OwnerGroup::Login),
            (
                "rancher:users",
                name("rancher"),
                OwnerGroup::Named(name("users")),
            ),
            (":users", name("root"), OwnerGroup::Named(name("users"))),
            ("1000", IdOrName::Id(1000), OwnerGroup::Unchanged),
            (
                "1000:1000",
                IdOrName::Id(1000),
                OwnerGroup::Named(IdOrName::Id(1000)),
            ),
        ];
        for (text, user, group) in cases {
            let o = parse_owner(text).unwrap();
            assert_eq!(o, OwnerSpec { user, group }, "{text}");
            assert_eq!(
                o.to_string().trim_start_matches("root"),
                text.trim_start_matches("root")
            );
        }
        assert!(parse_owner("a:b:c").is_err());
        assert!(parse_owner("bad user").is_err());
        assert!(parse_owner("").is_err());
        assert!(parse_owner(":").is_err());
    }
}
