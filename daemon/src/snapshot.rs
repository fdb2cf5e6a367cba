//! A `Snapshot` is the set of layer files one node's config is made of, held in memory:
//! `config.yaml`, every `groups/*.yaml` and `nodes/<hostname>.yaml` (or `.yml`), nothing else.
//! It comes from the Git object database (never a worktree; see [`crate::source`]) or, for
//! `render`/`plan`/`apply` on a laptop, from a directory ([`Snapshot::node_from_dir`]).
//! Everything after this point reads config files only through a `Snapshot`, so a
//! half-fetched or half-written checkout can never be applied.
//!
//! Invariants:
//! - A node's snapshot never holds another node's file: reading one node costs the same in a
//!   10-node and a 50,000-node repo. Only `bosun validate` looks at every node file, one at a
//!   time ([`NodeFileList`], [`read_node_file`]).
//! - A node file is named `<hostname>.yaml` or `<hostname>.yml` with exactly one suffix
//!   ([`node_of_file`]): `edge-01.yaml.yaml` belongs to a node called `edge-01.yaml`. When both
//!   spellings exist, both are in the snapshot and the config loader refuses the pair.
//! - Every file is at most [`MAX_CONFIG_FILE`] bytes, checked before it is read.

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

/// The suffixes a layer file may have.
const LAYER_SUFFIXES: [&str; 2] = [".yaml", ".yml"];

/// Whether `name` (a file name or path) has a layer file suffix (`.yaml`, `.yml`). Pure.
pub fn is_layer_file(name: &str) -> bool {
    LAYER_SUFFIXES.iter().any(|s| name.ends_with(s))
}

/// The node a file directly in `nodes/` configures: its name without exactly one `.yaml` or
/// `.yml` suffix (`edge-01.yaml.yaml` → `edge-01.yaml`). `None` for other names. Pure.
pub fn node_of_file(name: &str) -> Option<&str> {
    LAYER_SUFFIXES
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .filter(|host| !host.is_empty())
}

/// The names (inside `nodes/`) a node's file may have: `<hostname>.yaml` and `<hostname>.yml`.
/// Errors when the hostname cannot be a file name (empty, `/` or NUL in it). Pure.
pub fn node_file_names(hostname: &str) -> Result<[String; 2], String> {
    if hostname.is_empty() || hostname.contains(['/', '\0']) {
        return Err(format!(
            "hostname {hostname:?} cannot name a node file (nodes/<hostname>.yaml): it is empty or holds '/' or NUL"
        ));
    }
    Ok(LAYER_SUFFIXES.map(|s| format!("{hostname}{s}")))
}

impl Snapshot {
    /// A snapshot of `files` (repo-relative paths), from commit `commit` when it came from Git.
    /// Pure.
    pub fn from_files(commit: Option<String>, files: BTreeMap<String, Vec<u8>>) -> Self {
        Snapshot { commit, files }
    }

    /// Reads the layer files of node `hostname` from a directory: `config.yaml`, every
    /// `groups/*.y(a)ml` and `nodes/<hostname>.y(a)ml`; other node files are never opened or
    /// listed. Reads the filesystem; nothing else.
    pub fn node_from_dir(dir: &Path, hostname: &str) -> io::Result<Self> {
        let names = node_file_names(hostname)
            .map_err(|m| io::Error::new(io::ErrorKind::InvalidInput, m))?;
        let mut files = Self::shared_from_dir(dir)?.files;
        let nodes = dir.join("nodes");
        for name in names {
            let path = nodes.join(&name);
            match std::fs::symlink_metadata(&path) {
                Ok(meta) if meta.is_file() => {
                    files.insert(format!("nodes/{name}"), read_capped(&path)?);
                }
                Ok(_) => {}
                Err(e) if is_absent(&e) => {}
                Err(e) => return Err(with_path(&path, e)),
            }
        }
        Ok(Snapshot {
            commit: None,
            files,
        })
    }

    /// Reads the layer files every node shares from a directory: `config.yaml` (required) and
    /// every `groups/*.y(a)ml`. Reads the filesystem.
    pub fn shared_from_dir(dir: &Path) -> io::Result<Self> {
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
        let groups = dir.join("groups");
        if groups.is_dir() {
            for entry in std::fs::read_dir(&groups).map_err(|e| with_path(&groups, e))? {
                let entry = entry.map_err(|e| with_path(&groups, e))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if !is_layer_file(&name) || !entry.file_type()?.is_file() {
                    continue;
                }
                files.insert(format!("groups/{name}"), read_capped(&entry.path())?);
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

    /// The same snapshot without other nodes' files: what `hostname`'s config is made of
    /// (pure). Snapshots recorded before node-scoped reading held every node file.
    pub fn for_node(&self, hostname: &str) -> Snapshot {
        let names = node_file_names(hostname).unwrap_or_default();
        let files = self
            .files
            .iter()
            .filter(|(path, _)| match path.strip_prefix("nodes/") {
                Some(name) => names.iter().any(|n| n == name),
                None => true,
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Snapshot {
            commit: self.commit.clone(),
            files,
        }
    }
}

/// The layer files directly in a directory repo's `nodes/`, by name only (a few bytes each,
/// in one buffer), grouped by node in hostname order. `bosun validate` walks it and reads one
/// node at a time with [`read_node_file`], so its memory does not grow with the files' sizes.
#[derive(Debug, Default)]
pub struct NodeFileList {
    /// Every name, one after the other.
    names: String,
    /// `(start, end)` of each name in `names`, sorted by (hostname, name).
    spans: Vec<(u32, u32)>,
}

impl NodeFileList {
    /// Lists `dir/nodes/` (absent: empty). Only regular files whose name has a node (see
    /// [`node_of_file`]) are listed. Reads the directory, not the files.
    pub fn list(dir: &Path) -> io::Result<Self> {
        let nodes = dir.join("nodes");
        let mut out = NodeFileList::default();
        let entries = match std::fs::read_dir(&nodes) {
            Ok(e) => e,
            Err(e) if is_absent(&e) => return Ok(out),
            Err(e) => return Err(with_path(&nodes, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| with_path(&nodes, e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if node_of_file(name).is_none() || !entry.file_type()?.is_file() {
                continue;
            }
            let start = out.names.len();
            out.names.push_str(name);
            let (Ok(start), Ok(end)) = (u32::try_from(start), u32::try_from(out.names.len()))
            else {
                return Err(io::Error::other(format!(
                    "{}: too many node files",
                    nodes.display()
                )));
            };
            out.spans.push((start, end));
        }
        let names = &out.names;
        let key = |&(s, e): &(u32, u32)| {
            let name = &names[s as usize..e as usize];
            (node_of_file(name).unwrap_or(name), name)
        };
        out.spans.sort_unstable_by(|a, b| key(a).cmp(&key(b)));
        Ok(out)
    }

    /// How many node files there are.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether there are no node files.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Each node with its file names (one, or two when both spellings exist), in hostname
    /// order.
    pub fn nodes(&self) -> impl Iterator<Item = (&str, Vec<&str>)> {
        let mut i = 0;
        std::iter::from_fn(move || {
            let first = self.name(*self.spans.get(i)?);
            let host = node_of_file(first).unwrap_or(first);
            let mut files = vec![first];
            i += 1;
            while let Some(&span) = self.spans.get(i) {
                let next = self.name(span);
                if node_of_file(next) != Some(host) {
                    break;
                }
                files.push(next);
                i += 1;
            }
            Some((host, files))
        })
    }

    fn name(&self, (start, end): (u32, u32)) -> &str {
        &self.names[start as usize..end as usize]
    }
}

/// Reads `dir/nodes/<name>` (at most [`MAX_CONFIG_FILE`] bytes). Reads the filesystem.
pub fn read_node_file(dir: &Path, name: &str) -> io::Result<Vec<u8>> {
    read_capped(&dir.join("nodes").join(name))
}

fn is_absent(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

fn with_path(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

fn read_capped(path: &Path) -> io::Result<Vec<u8>> {
    let meta = std::fs::metadata(path).map_err(|e| with_path(path, e))?;
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
    std::fs::read(path).map_err(|e| with_path(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_file_loses_exactly_one_suffix() {
        assert_eq!(node_of_file("edge-01.yaml"), Some("edge-01"));
        assert_eq!(node_of_file("edge-01.yml"), Some("edge-01"));
        assert_eq!(node_of_file("edge-01.yaml.yaml"), Some("edge-01.yaml"));
        assert_eq!(node_of_file("edge-01.yml.yaml"), Some("edge-01.yml"));
        assert_eq!(node_of_file(".yaml"), None);
        assert_eq!(node_of_file("README.md"), None);
    }

    #[test]
    fn hostnames_that_cannot_name_a_file_are_refused() {
        assert_eq!(
            node_file_names("edge-01").unwrap(),
            ["edge-01.yaml".to_string(), "edge-01.yml".to_string()]
        );
        for bad in ["", "../x", "a/b", "a\0b"] {
            assert!(node_file_names(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_node_snapshot_holds_only_that_nodes_file() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("groups")).unwrap();
        std::fs::create_dir_all(d.join("nodes")).unwrap();
        std::fs::write(d.join("config.yaml"), "a: 1\n").unwrap();
        std::fs::write(d.join("groups/g.yaml"), "match: ['*']\n").unwrap();
        std::fs::write(d.join("groups/notes.txt"), "x").unwrap();
        for n in ["a.yaml", "b.yaml", "a.yaml.yaml", "c.yml"] {
            std::fs::write(d.join("nodes").join(n), "x: 1\n").unwrap();
        }
        let s = Snapshot::node_from_dir(d, "a").unwrap();
        let paths: Vec<&str> = s.files().keys().map(String::as_str).collect();
        assert_eq!(paths, ["config.yaml", "groups/g.yaml", "nodes/a.yaml"]);
        let s = Snapshot::node_from_dir(d, "c").unwrap();
        assert!(s.get("nodes/c.yml").is_some());
        assert!(Snapshot::node_from_dir(d, "../config").is_err());

        let list = NodeFileList::list(d).unwrap();
        assert_eq!(list.len(), 4);
        let nodes: Vec<(&str, Vec<&str>)> = list.nodes().collect();
        assert_eq!(
            nodes,
            [
                ("a", vec!["a.yaml"]),
                ("a.yaml", vec!["a.yaml.yaml"]),
                ("b", vec!["b.yaml"]),
                ("c", vec!["c.yml"]),
            ]
        );
        std::fs::write(d.join("nodes/b.yml"), "x: 2\n").unwrap();
        let list = NodeFileList::list(d).unwrap();
        let b: Vec<Vec<&str>> = list
            .nodes()
            .filter(|(h, _)| *h == "b")
            .map(|(_, f)| f)
            .collect();
        assert_eq!(b, [vec!["b.yaml", "b.yml"]]);
    }

    #[test]
    fn for_node_drops_other_nodes() {
        let files = [
            "config.yaml",
            "groups/g.yaml",
            "nodes/a.yaml",
            "nodes/b.yaml",
        ]
        .iter()
        .map(|p| (p.to_string(), b"x: 1\n".to_vec()))
        .collect();
        let s = Snapshot::from_files(Some("c1".into()), files).for_node("a");
        let paths: Vec<&str> = s.files().keys().map(String::as_str).collect();
        assert_eq!(paths, ["config.yaml", "groups/g.yaml", "nodes/a.yaml"]);
        assert_eq!(s.commit.as_deref(), Some("c1"));
    }
}
