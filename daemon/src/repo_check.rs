//! `bosun validate --repo DIR`: every node of a directory repo checked one node file at a
//! time, on up to two threads, with diagnostics streamed out in a fixed order.
//!
//! Order of the output: the shared files' own diagnostics (`config.yaml`, groups), then each
//! node in hostname order with its file's diagnostics and those of its merged config. A
//! diagnostic that points into a shared file is printed once, the first time a node hits it.
//!
//! Invariants:
//! - Memory does not grow with the number or size of node files: the listing holds names
//!   only ([`NodeFileList`]), at most [`WINDOW`] nodes are read or waiting to be printed, and
//!   each node's merged tree is dropped once checked.
//! - The output is the same for any number of threads (results are put back in order).

use std::collections::{BTreeMap, HashSet};
use std::io;
use std::path::Path;
use std::sync::{mpsc, Mutex};

use crate::config::{Diagnostic, LoadOptions, RepoCheck};
use crate::snapshot::{read_node_file, NodeFileList, Snapshot};

/// Nodes read, being checked or waiting to be printed, at most.
pub const WINDOW: usize = 64;
/// Threads checking nodes, at most (a 1 GB node or a CI runner has a few cores; validation is
/// CPU-bound parsing).
pub const MAX_THREADS: usize = 2;

/// What a whole-repo check found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Node files listed in `nodes/`.
    pub node_files: usize,
    /// Error diagnostics printed.
    pub errors: usize,
    /// Warning diagnostics printed.
    pub warnings: usize,
}

/// Checks the repo in `dir` and hands every diagnostic to `emit`, in the order described in
/// the module docs. Reads the repo's files; `emit` is called on this thread only. Errors when
/// the shared files or the `nodes/` listing cannot be read (an unreadable node file is a
/// diagnostic of that node).
pub fn check_dir(
    dir: &Path,
    opts: &LoadOptions,
    emit: &mut dyn FnMut(&Diagnostic),
) -> io::Result<Summary> {
    let check = RepoCheck::new(&Snapshot::shared_from_dir(dir)?, opts);
    let list = NodeFileList::list(dir)?;
    let mut out = Output {
        seen: HashSet::new(),
        summary: Summary {
            node_files: list.len(),
            ..Summary::default()
        },
        emit,
    };
    out.all(check.shared_diagnostics());
    if list.is_empty() {
        out.all(check.check_without_nodes());
        return Ok(out.summary);
    }
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, MAX_THREADS);
    let (work_tx, work_rx) = mpsc::sync_channel::<Work>(WINDOW);
    let work_rx = Mutex::new(work_rx);
    let (done_tx, done_rx) = mpsc::channel::<(usize, Vec<Diagnostic>)>();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            let (work_rx, done_tx, check) = (&work_rx, done_tx.clone(), &check);
            scope.spawn(move || loop {
                let next = work_rx.lock().map(|rx| rx.recv());
                let Ok(Ok(work)) = next else { return };
                let diags = check_node(dir, check, &work);
                if done_tx.send((work.index, diags)).is_err() {
                    return;
                }
            });
        }
        drop(done_tx);
        let mut order = InOrder::default();
        for (index, (host, files)) in list.nodes().enumerate() {
            while order.in_flight >= WINDOW {
                let Ok(done) = done_rx.recv() else { break };
                order.done(done, &mut out);
            }
            let work = Work {
                index,
                host: host.to_string(),
                files: files.iter().map(|f| f.to_string()).collect(),
            };
            if work_tx.send(work).is_err() {
                break;
            }
            order.in_flight += 1;
        }
        drop(work_tx);
        for done in done_rx {
            order.done(done, &mut out);
        }
    });
    Ok(out.summary)
}

/// One node to check: its hostname and file names in `nodes/`.
struct Work {
    index: usize,
    host: String,
    files: Vec<String>,
}

/// Reads one node's file(s) and checks them. Reads the files.
fn check_node(dir: &Path, check: &RepoCheck, work: &Work) -> Vec<Diagnostic> {
    let mut contents = Vec::with_capacity(work.files.len());
    for name in &work.files {
        let path = format!("nodes/{name}");
        match read_node_file(dir, name) {
            Ok(bytes) => contents.push((path, bytes)),
            Err(e) => {
                let pos = crate::config::yaml::Pos {
                    file: path.as_str().into(),
                    line: 1,
                    col: 1,
                };
                return vec![Diagnostic::error(pos, "", format!("cannot read: {e}"))];
            }
        }
    }
    let files: Vec<(&str, &[u8])> = contents
        .iter()
        .map(|(p, b)| (p.as_str(), b.as_slice()))
        .collect();
    check.check_node(&work.host, &files)
}

/// Puts the nodes' results back in listing order.
#[derive(Default)]
struct InOrder {
    next: usize,
    in_flight: usize,
    waiting: BTreeMap<usize, Vec<Diagnostic>>,
}

impl InOrder {
    /// Records a finished node and prints every node that is now next in line.
    fn done(&mut self, (index, diags): (usize, Vec<Diagnostic>), out: &mut Output<'_>) {
        self.in_flight -= 1;
        self.waiting.insert(index, diags);
        while let Some(diags) = self.waiting.remove(&self.next) {
            out.all(diags);
            self.next += 1;
        }
    }
}

/// The printing end: counts, and drops repeats of diagnostics in shared files.
struct Output<'e> {
    /// Diagnostics already printed that point outside `nodes/` (each node's own file is only
    /// ever checked once, so its diagnostics cannot repeat).
    seen: HashSet<String>,
    summary: Summary,
    emit: &'e mut dyn FnMut(&Diagnostic),
}

impl Output<'_> {
    fn all(&mut self, diags: Vec<Diagnostic>) {
        for d in diags {
            if !d.pos.file.starts_with("nodes/")
                && !self.seen.insert(format!("{:?} {d}", d.severity))
            {
                continue;
            }
            if d.is_error() {
                self.summary.errors += 1;
            } else {
                self.summary.warnings += 1;
            }
            (self.emit)(&d);
        }
    }
}
