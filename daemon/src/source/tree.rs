//! Reading a [`Snapshot`] out of a commit's tree in the object database (no worktree, no
//! checkout).
//!
//! Invariants: only regular files (mode 100644/100755) named `config.yaml`, `groups/*.y(a)ml`
//! and `nodes/*.y(a)ml` under the subdir are read; each blob's size is checked against
//! [`MAX_CONFIG_FILE`] from the object header before its content is loaded.

use std::collections::BTreeMap;

use git2::{ObjectType, Odb, Repository, Tree};

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
    let subdir =
        normalize_subdir(subdir).map_err(|r| snapshot_error(commit, subdir.unwrap_or(""), r))?;
    let repo = &cache.repo;
    let base = base_tree(repo, commit, subdir.as_deref())?;
    let odb = repo
        .odb()
        .map_err(|e| cache.err("open object database", e))?;
    let reader = LayerReader {
        repo,
        odb,
        commit,
        subdir,
    };
    let mut files = BTreeMap::new();
    reader.config(&base, &mut files)?;
    for dir in ["groups", "nodes"] {
        reader.layer_dir(&base, dir, &mut files)?;
    }
    Ok(Snapshot::from_files(Some(commit.to_string()), files))
}

/// A [`SourceError::Snapshot`] about `path` (as it appears in the repository) in `commit`.
fn snapshot_error(commit: Oid, path: &str, reason: String) -> SourceError {
    SourceError::Snapshot {
        commit,
        path: path.to_string(),
        reason,
    }
}

/// The tree of `commit` at the (normalized) `subdir`, or its root tree. Reads the cache.
fn base_tree<'r>(
    repo: &'r Repository,
    commit: Oid,
    subdir: Option<&str>,
) -> Result<Tree<'r>, SourceError> {
    let fail = |path: &str, reason: String| snapshot_error(commit, path, reason);
    let c = repo
        .find_commit(commit)
        .map_err(|e| fail("", format!("commit not in the cache: {e}")))?;
    let root = c
        .tree()
        .map_err(|e| fail("", format!("reading tree: {e}")))?;
    match subdir {
        None => Ok(root),
        Some(s) => {
            let entry = root
                .get_path(std::path::Path::new(s))
                .map_err(|_| fail(s, "no such directory in this commit".to_string()))?;
            if entry.kind() != Some(ObjectType::Tree) {
                return Err(fail(s, "is not a directory".to_string()));
            }
            repo.find_tree(entry.id())
                .map_err(|e| fail(s, format!("reading tree: {e}")))
        }
    }
}

/// Reads the layer files of one commit under one subdir, blob by blob; its errors name each
/// path as it appears in the repository (subdir included).
struct LayerReader<'r> {
    repo: &'r Repository,
    odb: Odb<'r>,
    commit: Oid,
    subdir: Option<String>,
}

impl LayerReader<'_> {
    /// `rel` (relative to the subdir) as it appears in the repository.
    fn shown(&self, rel: &str) -> String {
        match &self.subdir {
            Some(s) => format!("{s}/{rel}"),
            None => rel.to_string(),
        }
    }

    /// An error about `rel` (relative to the subdir).
    fn fail(&self, rel: &str, reason: String) -> SourceError {
        snapshot_error(self.commit, &self.shown(rel), reason)
    }

    /// The content of blob `id` at `rel`, after checking from the object header that it is a
    /// blob of at most [`MAX_CONFIG_FILE`] bytes. Reads the cache.
    fn blob(&self, rel: &str, id: Oid) -> Result<Vec<u8>, SourceError> {
        let (size, kind) = self
            .odb
            .read_header(id)
            .map_err(|e| self.fail(rel, format!("reading object {id}: {e}")))?;
        if kind != ObjectType::Blob {
            return Err(self.fail(rel, format!("is a {kind}, expected a file")));
        }
        if size as u64 > MAX_CONFIG_FILE {
            return Err(self.fail(
                rel,
                format!(
                    "{size} bytes is larger than the {MAX_CONFIG_FILE} byte limit for config files"
                ),
            ));
        }
        let blob = self
            .repo
            .find_blob(id)
            .map_err(|e| self.fail(rel, format!("reading blob {id}: {e}")))?;
        Ok(blob.content().to_vec())
    }

    /// Reads `config.yaml` of `base` into `files`; it must exist and be a regular file.
    /// Reads the cache.
    fn config(
        &self,
        base: &Tree<'_>,
        files: &mut BTreeMap<String, Vec<u8>>,
    ) -> Result<(), SourceError> {
        match base.get_name("config.yaml") {
            Some(entry) if is_regular_file(entry.filemode()) => {
                files.insert(
                    "config.yaml".to_string(),
                    self.blob("config.yaml", entry.id())?,
                );
                Ok(())
            }
            Some(_) => Err(self.fail(
                "config.yaml",
                "is not a regular file (symlinks and directories are not followed)".to_string(),
            )),
            None => Err(self.fail(
                "config.yaml",
                "missing (is this a bosun config repo, and is `subdir` right?)".to_string(),
            )),
        }
    }

    /// Reads every layer file (`*.yaml`, `*.yml`) of directory `dir` of `base`, if it exists,
    /// into `files`; a layer file must be a regular file. Reads the cache.
    fn layer_dir(
        &self,
        base: &Tree<'_>,
        dir: &str,
        files: &mut BTreeMap<String, Vec<u8>>,
    ) -> Result<(), SourceError> {
        let Some(entry) = base.get_name(dir) else {
            return Ok(());
        };
        if entry.kind() != Some(ObjectType::Tree) {
            return Err(self.fail(dir, "is not a directory".to_string()));
        }
        let tree = self
            .repo
            .find_tree(entry.id())
            .map_err(|e| self.fail(dir, format!("reading tree: {e}")))?;
        for child in tree.iter() {
            // A name that is not UTF-8 cannot be a layer file name.
            let Ok(name) = child.name() else { continue };
            if !is_layer_file(name) || child.kind() != Some(ObjectType::Blob) {
                continue;
            }
            let rel = format!("{dir}/{name}");
            if !is_regular_file(child.filemode()) {
                return Err(self.fail(
                    &rel,
                    "is not a regular file (symlinks are not followed)".to_string(),
                ));
            }
            let content = self.blob(&rel, child.id())?;
            files.insert(rel, content);
        }
        Ok(())
    }
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
