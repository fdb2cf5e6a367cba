//! Reading a [`Snapshot`] out of a commit's tree in the object database (no worktree, no
//! checkout).
//!
//! Invariants: only regular files (mode 100644/100755) named `config.yaml`, `groups/*.y(a)ml`
//! and `nodes/*.y(a)ml` under the subdir are read; each blob's size is checked against
//! [`MAX_CONFIG_FILE`] from the object header before its content is loaded.

use std::collections::BTreeMap;

use git2::{ObjectType, Tree};

use super::{Cache, Oid, SourceError};
use crate::snapshot::{Snapshot, MAX_CONFIG_FILE};

/// Validates a repo subdirectory: relative, `/`-separated, no `.`/`..` components. Returns it
/// without leading/trailing slashes (`None` for the repo root).
fn normalize_subdir(subdir: Option<&str>) -> Result<Option<String>, String> {
    let Some(raw) = subdir else { return Ok(None) };
    if raw.starts_with('/') {
        return Err(format!(
            "subdir {raw:?} must be relative to the repository root"
        ));
    }
    let parts: Vec<&str> = raw.split('/').filter(|p| !p.is_empty()).collect();
    if parts.iter().any(|p| *p == "." || *p == "..") {
        return Err(format!("subdir {raw:?} must not contain '.' or '..'"));
    }
    if parts.is_empty() {
        Ok(None)
    } else {
        Ok(Some(parts.join("/")))
    }
}

fn is_layer_file(name: &str) -> bool {
    name.ends_with(".yaml") || name.ends_with(".yml")
}

fn is_regular_file(filemode: i32) -> bool {
    filemode == 0o100644 || filemode == 0o100755
}

/// Reads the layer files of `commit` (under `subdir`) from the cache's object database.
/// Reads the cache only.
pub fn snapshot(cache: &Cache, commit: Oid, subdir: Option<&str>) -> Result<Snapshot, SourceError> {
    let fail = |path: &str, reason: String| SourceError::Snapshot {
        commit,
        path: path.to_string(),
        reason,
    };
    let subdir = normalize_subdir(subdir).map_err(|r| fail(subdir.unwrap_or(""), r))?;
    let shown = |rel: &str| match &subdir {
        Some(s) => format!("{s}/{rel}"),
        None => rel.to_string(),
    };
    let repo = &cache.repo;
    let c = repo
        .find_commit(commit)
        .map_err(|e| fail("", format!("commit not in the cache: {e}")))?;
    let root = c
        .tree()
        .map_err(|e| fail("", format!("reading tree: {e}")))?;
    let base: Tree<'_> = match &subdir {
        None => root,
        Some(s) => {
            let entry = root
                .get_path(std::path::Path::new(s))
                .map_err(|_| fail(s, "no such directory in this commit".to_string()))?;
            if entry.kind() != Some(ObjectType::Tree) {
                return Err(fail(s, "is not a directory".to_string()));
            }
            repo.find_tree(entry.id())
                .map_err(|e| fail(s, format!("reading tree: {e}")))?
        }
    };
    let odb = repo
        .odb()
        .map_err(|e| cache.err("open object database", e))?;
    let read_blob = |rel: &str, id: Oid| -> Result<Vec<u8>, SourceError> {
        let (size, kind) = odb
            .read_header(id)
            .map_err(|e| fail(&shown(rel), format!("reading object {id}: {e}")))?;
        if kind != ObjectType::Blob {
            return Err(fail(&shown(rel), format!("is a {kind}, expected a file")));
        }
        if size as u64 > MAX_CONFIG_FILE {
            return Err(fail(
                &shown(rel),
                format!(
                    "{size} bytes is larger than the {MAX_CONFIG_FILE} byte limit for config files"
                ),
            ));
        }
        let blob = repo
            .find_blob(id)
            .map_err(|e| fail(&shown(rel), format!("reading blob {id}: {e}")))?;
        Ok(blob.content().to_vec())
    };

    let mut files = BTreeMap::new();
    match base.get_name("config.yaml") {
        Some(entry) if is_regular_file(entry.filemode()) => {
            files.insert(
                "config.yaml".to_string(),
                read_blob("config.yaml", entry.id())?,
            );
        }
        Some(_) => {
            return Err(fail(
                &shown("config.yaml"),
                "is not a regular file (symlinks and directories are not followed)".to_string(),
            ))
        }
        None => {
            return Err(fail(
                &shown("config.yaml"),
                "missing (is this a bosun config repo, and is `subdir` right?)".to_string(),
            ))
        }
    }
    for dir in ["groups", "nodes"] {
        let Some(entry) = base.get_name(dir) else {
            continue;
        };
        if entry.kind() != Some(ObjectType::Tree) {
            return Err(fail(&shown(dir), "is not a directory".to_string()));
        }
        let tree = repo
            .find_tree(entry.id())
            .map_err(|e| fail(&shown(dir), format!("reading tree: {e}")))?;
        for child in tree.iter() {
            let Some(name) = child.name() else { continue };
            if !is_layer_file(name) || child.kind() != Some(ObjectType::Blob) {
                continue;
            }
            let rel = format!("{dir}/{name}");
            if !is_regular_file(child.filemode()) {
                return Err(fail(
                    &shown(&rel),
                    "is not a regular file (symlinks are not followed)".to_string(),
                ));
            }
            let content = read_blob(&rel, child.id())?;
            files.insert(rel, content);
        }
    }
    Ok(Snapshot::from_files(Some(commit.to_string()), files))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subdirs_are_normalized_and_escapes_refused() {
        assert_eq!(normalize_subdir(None), Ok(None));
        assert_eq!(normalize_subdir(Some("")), Ok(None));
        assert_eq!(normalize_subdir(Some("fleet/")), Ok(Some("fleet".into())));
        assert_eq!(normalize_subdir(Some("a//b")), Ok(Some("a/b".into())));
        assert!(normalize_subdir(Some("/etc")).is_err());
        assert!(normalize_subdir(Some("a/../b")).is_err());
        assert!(normalize_subdir(Some("./a")).is_err());
    }

    #[test]
    fn only_yaml_names_are_layer_files() {
        assert!(is_layer_file("edge-1.yaml"));
        assert!(is_layer_file("edge-1.yml"));
        assert!(!is_layer_file("README.md"));
        assert!(!is_layer_file("yaml"));
    }
}
