//! Reading one node's [`Snapshot`] out of a commit's tree in the object database (no
//! worktree, no checkout).
//!
//! Invariants:
//! - Only `config.yaml`, `groups/*.y(a)ml` and `nodes/<hostname>.y(a)ml` under the subdir are
//!   read: the `nodes/` tree is searched for the node's two possible names, and no other node's
//!   blob is ever loaded, so a node's cost does not grow with the fleet ([`ReadCount`] says
//!   what was read).
//! - A layer file must be a regular file (mode 100644/100755); each blob's size is checked
//!   against [`MAX_CONFIG_FILE`] from the object header before its content is loaded.

use std::collections::BTreeMap;

use git2::{ObjectType, Odb, Repository, Tree};

use super::{Cache, Oid, SourceError};
use crate::snapshot::{is_layer_file, node_file_names, Snapshot, MAX_CONFIG_FILE};

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

fn is_regular_file(filemode: i32) -> bool {
    filemode == 0o100644 || filemode == 0o100755
}

/// How many objects a snapshot read took from the object database.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadCount {
    /// Blobs loaded (their content, not just their header).
    pub blobs: usize,
    /// Tree objects loaded (the commit's root tree included).
    pub trees: usize,
}

/// Reads node `hostname`'s layer files of `commit` (under `subdir`) from the cache's object
/// database: `config.yaml`, the groups and `nodes/<hostname>.y(a)ml`. Reads the cache only.
pub fn snapshot(
    cache: &Cache,
    commit: Oid,
    subdir: Option<&str>,
    hostname: &str,
) -> Result<Snapshot, SourceError> {
    snapshot_counted(cache, commit, subdir, hostname).map(|(s, _)| s)
}

/// [`snapshot`], also saying how many objects it read (for tests and benchmarks).
pub fn snapshot_counted(
    cache: &Cache,
    commit: Oid,
    subdir: Option<&str>,
    hostname: &str,
) -> Result<(Snapshot, ReadCount), SourceError> {
    let subdir =
        normalize_subdir(subdir).map_err(|r| snapshot_error(commit, subdir.unwrap_or(""), r))?;
    let node_files = node_file_names(hostname).map_err(|r| snapshot_error(commit, "nodes", r))?;
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
        count: std::cell::Cell::new(ReadCount { blobs: 0, trees: 1 }),
    };
    let mut files = BTreeMap::new();
    reader.config(&base, &mut files)?;
    if let Some(groups) = reader.dir_tree(&base, "groups")? {
        for child in groups.iter() {
            let Ok(name) = child.name() else { continue };
            if is_layer_file(name) && child.kind() == Some(ObjectType::Blob) {
                reader.layer_file("groups", name, &child, &mut files)?;
            }
        }
    }
    if let Some(nodes) = reader.dir_tree(&base, "nodes")? {
        for name in &node_files {
            if let Some(child) = nodes.get_name(name) {
                if child.kind() == Some(ObjectType::Blob) {
                    reader.layer_file("nodes", name, &child, &mut files)?;
                }
            }
        }
    }
    let count = reader.count.get();
    Ok((Snapshot::from_files(Some(commit.to_string()), files), count))
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
    /// What was read so far.
    count: std::cell::Cell<ReadCount>,
}

impl<'r> LayerReader<'r> {
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
        self.bump(|c| c.blobs += 1);
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

    /// The tree of directory `dir` of `base`, if it exists. Reads the cache.
    fn dir_tree<'t>(&self, base: &Tree<'t>, dir: &str) -> Result<Option<Tree<'t>>, SourceError>
    where
        'r: 't,
    {
        let Some(entry) = base.get_name(dir) else {
            return Ok(None);
        };
        if entry.kind() != Some(ObjectType::Tree) {
            return Err(self.fail(dir, "is not a directory".to_string()));
        }
        let tree = self
            .repo
            .find_tree(entry.id())
            .map_err(|e| self.fail(dir, format!("reading tree: {e}")))?;
        self.bump(|c| c.trees += 1);
        Ok(Some(tree))
    }

    /// Reads the layer file `dir/name` (a blob entry of that directory) into `files`; it must
    /// be a regular file. Reads the cache.
    fn layer_file(
        &self,
        dir: &str,
        name: &str,
        entry: &git2::TreeEntry<'_>,
        files: &mut BTreeMap<String, Vec<u8>>,
    ) -> Result<(), SourceError> {
        let rel = format!("{dir}/{name}");
        if !is_regular_file(entry.filemode()) {
            return Err(self.fail(
                &rel,
                "is not a regular file (symlinks are not followed)".to_string(),
            ));
        }
        let content = self.blob(&rel, entry.id())?;
        files.insert(rel, content);
        Ok(())
    }

    fn bump(&self, f: impl FnOnce(&mut ReadCount)) {
        let mut c = self.count.get();
        f(&mut c);
        self.count.set(c);
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
}
