//! A `Snapshot` is the set of files of one config commit, held in memory. It comes from the
//! Git object database (never a worktree) or, for `validate`/`render`/`plan` on a laptop, from a
//! directory. Everything after this point reads config files only through a `Snapshot`, so a
//! half-fetched or half-written checkout can never be applied.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

/// Files of one commit, keyed by `/`-separated path relative to the repo (sub)directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The commit id, when the snapshot came from Git.
    pub commit: Option<String>,
    files: BTreeMap<String, Vec<u8>>,
}

/// Config files larger than this are refused when reading a directory snapshot.
pub const MAX_CONFIG_FILE: u64 = 16 << 20;

impl Snapshot {
    /// A snapshot of `files` (repo-relative paths), from commit `commit` when it came from Git.
    /// Pure.
    pub fn from_files(commit: Option<String>, files: BTreeMap<String, Vec<u8>>) -> Self {
        Snapshot { commit, files }
    }

    /// Reads the layer files (`config.yaml`, `groups/*.yaml`, `nodes/*.yaml`) of a directory.
    /// Reads the filesystem; nothing else.
    pub fn from_dir(dir: &Path) -> io::Result<Self> {
        let mut files = BTreeMap::new();
        let base = dir.join("config.yaml");
        if base.is_file() {
            files.insert("config.yaml".to_string(), read_capped(&base)?);
        } else {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "{}: no config.yaml (is this a bosun config repo?)",
                    dir.display()
                ),
            ));
        }
        for sub in ["groups", "nodes"] {
            let d = dir.join(sub);
            if !d.is_dir() {
                continue;
            }
            for entry in std::fs::read_dir(&d)? {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if !(name.ends_with(".yaml") || name.ends_with(".yml"))
                    || !entry.file_type()?.is_file()
                {
                    continue;
                }
                files.insert(format!("{sub}/{name}"), read_capped(&entry.path())?);
            }
        }
        Ok(Snapshot {
            commit: None,
            files,
        })
    }

    /// The content of the file at `path` (repo-relative), if the snapshot has it.
    pub fn get(&self, path: &str) -> Option<&[u8]> {
        self.files.get(path).map(Vec::as_slice)
    }

    /// Paths directly inside `dir` (e.g. `groups`), in name order.
    pub fn list(&self, dir: &str) -> impl Iterator<Item = (&str, &[u8])> {
        let prefix = format!("{dir}/");
        self.files
            .iter()
            .filter(move |(k, _)| k.starts_with(&prefix) && !k[prefix.len()..].contains('/'))
            .map(|(k, v)| (k.as_str(), v.as_slice()))
    }

    /// Every file, by repo-relative path.
    pub fn files(&self) -> &BTreeMap<String, Vec<u8>> {
        &self.files
    }
}

fn read_capped(path: &Path) -> io::Result<Vec<u8>> {
    let meta = std::fs::metadata(path)?;
    if meta.len() > MAX_CONFIG_FILE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{}: {} bytes is larger than the {} byte limit for config files",
                path.display(),
                meta.len(),
                MAX_CONFIG_FILE
            ),
        ));
    }
    std::fs::read(path)
}
