//! Helpers for the apply/fsroot integration tests: building desired states and running the
//! observe → plan → apply pipeline the way the daemon does.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use bosun::apply::{self, ApplyOptions, ApplyReport};
use bosun::desired::{DesiredFile, DesiredState, FileSource};
use bosun::fsroot::Root;
use bosun::plan::{self, Plan};

pub fn file(path: &str, content: impl Into<Vec<u8>>, mode: u32, uid: u32, gid: u32) -> DesiredFile {
    DesiredFile {
        path: path.to_string(),
        content: content.into(),
        mode,
        uid,
        gid,
        secret: false,
        source: FileSource {
            key: "write_files".to_string(),
            origin: None,
        },
    }
}

pub fn desired(files: impl IntoIterator<Item = DesiredFile>) -> DesiredState {
    DesiredState {
        files: files.into_iter().map(|f| (f.path.clone(), f)).collect(),
        effects: Vec::new(),
    }
}

/// Observes what the plan needs and plans against the managed set in `state_dir`.
pub fn plan_for(root: &Root, state_dir: &Path, d: &DesiredState) -> Plan {
    let managed = apply::load_managed(state_dir).expect("load managed set");
    let paths = plan::paths_to_observe(d, &managed);
    let observed = root
        .observe(paths.iter().map(String::as_str))
        .expect("observe");
    plan::plan(d, &observed, &managed).expect("plan")
}

/// observe → plan → apply, as the daemon does. Writes to disk.
pub fn converge(
    root: &Root,
    state_dir: &Path,
    d: &DesiredState,
    opts: ApplyOptions,
) -> (Plan, ApplyReport) {
    let p = plan_for(root, state_dir, d);
    let report = apply::apply_with(root, state_dir, &p, opts).expect("apply");
    (p, report)
}

/// Every non-directory entry under `dir`, recursively (symlinks not followed).
pub fn all_entries(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd {
            let e = e.unwrap();
            let t = e.file_type().unwrap();
            if t.is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// Any staged temp file (`.bosun-tmp.*`) left anywhere under `dir`.
pub fn temp_files(dir: &Path) -> Vec<PathBuf> {
    all_entries(dir)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(apply::TEMP_PREFIX) || n.contains(".tmp."))
        })
        .collect()
}

pub fn set(paths: &[&str]) -> BTreeSet<String> {
    paths.iter().map(|p| p.to_string()).collect()
}
