//! Generated fleet repos for the scale tests: `example-repo`'s `config.yaml` and groups plus N
//! node files `nodes/edge-NNNNN.yaml`, as a directory and as a bare Git repo with one commit
//! (built by `git fast-import`, which writes 20,000 blobs in well under a second).
//!
//! Each size is generated once per test process ([`fleet`] keeps it in a `OnceLock`), under
//! the test target's tmp dir, and removed again by the next process that generates it.
//! Node `edge-NNNNN`'s file only depends on its number, so the same node has the same file in
//! every size.
#![allow(dead_code)] // Shared by several test modules; not each uses every helper.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::git::git_stdin;

/// One generated fleet repo.
#[derive(Debug)]
pub struct Fleet {
    /// Number of node files.
    pub nodes: usize,
    /// The repo as a directory (config.yaml, groups/, nodes/).
    pub dir: PathBuf,
    /// The same files as one commit in a bare Git repo.
    pub git: PathBuf,
    /// That commit's id.
    pub commit: String,
}

/// The hostname of node `i`.
pub fn node_name(i: usize) -> String {
    format!("edge-{i:05}")
}

/// The file of node `i`.
pub fn node_file(i: usize) -> String {
    format!(
        "hostname: {name}\nk3os:\n  labels:\n    site: store-{i:05}\nwrite_files:\n- path: /etc/edge/id\n  content: \"{name}\\n\"\n",
        name = node_name(i)
    )
}

/// The files every node shares: example-repo's `config.yaml` and groups.
pub fn shared_files() -> BTreeMap<String, Vec<u8>> {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../example-repo");
    let mut files = BTreeMap::new();
    files.insert(
        "config.yaml".to_string(),
        std::fs::read(example.join("config.yaml")).unwrap(),
    );
    for e in std::fs::read_dir(example.join("groups")).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        files.insert(format!("groups/{name}"), std::fs::read(e.path()).unwrap());
    }
    files
}

/// The fleet with `nodes` node files, generated on first use in this process.
pub fn fleet(nodes: usize) -> &'static Fleet {
    static SMALL: OnceLock<Fleet> = OnceLock::new();
    static LARGE: OnceLock<Fleet> = OnceLock::new();
    let cell = match nodes {
        10 => &SMALL,
        20_000 => &LARGE,
        _ => panic!("no fixture for {nodes} nodes (add a OnceLock)"),
    };
    cell.get_or_init(|| generate(nodes))
}

fn generate(nodes: usize) -> Fleet {
    let top = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("fleet-{nodes}"));
    let base = top.join(std::process::id().to_string());
    if let Ok(old) = std::fs::read_dir(&top) {
        // Earlier test processes' copies (a process cannot clean up after its statics).
        for e in old.flatten() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
    let dir = base.join("repo");
    let git = base.join("repo.git");
    std::fs::create_dir_all(dir.join("nodes")).unwrap();
    std::fs::create_dir_all(dir.join("groups")).unwrap();
    let mut files = shared_files();
    for i in 0..nodes {
        files.insert(
            format!("nodes/{}.yaml", node_name(i)),
            node_file(i).into_bytes(),
        );
    }
    for (path, bytes) in &files {
        std::fs::write(dir.join(path), bytes).unwrap();
    }
    std::fs::create_dir_all(&git).unwrap();
    super::git::git(&git, &["init", "-q", "--bare", "-b", "main"]);
    git_stdin(
        &git,
        &["fast-import", "--quiet"],
        &fast_import_stream(&files),
    );
    let commit = super::git::git(&git, &["rev-parse", "refs/heads/main"]);
    Fleet {
        nodes,
        dir,
        git,
        commit,
    }
}

/// A `git fast-import` stream of one commit on `refs/heads/main` holding `files`.
fn fast_import_stream(files: &BTreeMap<String, Vec<u8>>) -> Vec<u8> {
    let mut s = Vec::new();
    for (mark, bytes) in files.values().enumerate() {
        s.extend_from_slice(format!("blob\nmark :{}\ndata {}\n", mark + 1, bytes.len()).as_bytes());
        s.extend_from_slice(bytes);
        s.push(b'\n');
    }
    s.extend_from_slice(
        b"commit refs/heads/main\ncommitter Bosun Test <test@example.invalid> 1700000000 +0000\ndata 6\nfleet\n",
    );
    for (mark, path) in files.keys().enumerate() {
        s.extend_from_slice(format!("M 100644 :{} {path}\n", mark + 1).as_bytes());
    }
    s.extend_from_slice(b"done\n");
    s
}
