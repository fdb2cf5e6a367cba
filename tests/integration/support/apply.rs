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

/// Observes what the plan needs as recovery will leave it ([`apply::RecoveredView`]) and plans
/// against the managed set after recovery, as `reconcile::prepare` does. Returns the plan and
/// the interrupted transaction it counts as rolled forward. Reads only.
pub fn plan_with_basis(root: &Root, state_dir: &Path, d: &DesiredState) -> (Plan, Option<String>) {
    let view = apply::RecoveredView::open(root, state_dir).expect("read the state dir");
    let paths = plan::paths_to_observe(d, view.managed());
    let observed = view
        .observe(paths.iter().map(String::as_str))
        .expect("observe");
    let p = plan::plan(d, &observed, view.managed()).expect("plan");
    (p, view.planned_over().map(str::to_string))
}

/// [`plan_with_basis`], for a state dir without an interrupted apply.
pub fn plan_for(root: &Root, state_dir: &Path, d: &DesiredState) -> Plan {
    plan_with_basis(root, state_dir, d).0
}

/// observe → plan → apply, as the daemon does (recovery inside the apply). Writes to disk.
pub fn converge(
    root: &Root,
    state_dir: &Path,
    d: &DesiredState,
    opts: ApplyOptions,
) -> (Plan, ApplyReport) {
    let (p, planned_over) = plan_with_basis(root, state_dir, d);
    let opts = ApplyOptions {
        planned_over,
        ..opts
    };
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
