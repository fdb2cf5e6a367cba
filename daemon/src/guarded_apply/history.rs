//! The commit history of health-gated applies: the last good commit (id AND its snapshot
//! files, so a revert needs neither the network nor the git cache), the bad commits (reason,
//! time), the commit whose apply was last started, and `config_rollbacks_total`.
//!
//! Persisted as one JSON state file (`commit-history.json`, mode 0600 because config files
//! carry tokens) written with [`statefile::write_atomic`], only when it changed (no flash wear
//! on every poll). Every mutation is a pure method; [`CommitHistory::save`] is the one write.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;

use crate::config::HealthGate;
use crate::snapshot::Snapshot;
use crate::statefile::{self, StateFileError};

/// File name of the history in the state dir.
pub const HISTORY_FILE: &str = "commit-history.json";
/// Bad commits remembered; the oldest are forgotten first (anti-rollback keeps old commits
/// from coming back anyway).
pub const MAX_BAD_COMMITS: usize = 100;
/// Longest reason kept for a bad commit.
const MAX_REASON: usize = 2000;

/// Errors reading or writing the commit history.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The history file exists but cannot be read.
    #[error("commit history {path}: cannot read: {source}")]
    Read {
        /// The history file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The history file is not the expected JSON (or a stored snapshot file is not valid base64);
    /// nothing is guessed.
    #[error("commit history {path}: {message}; move it away to start a fresh history (bad-commit marks are lost)")]
    Corrupt {
        /// The history file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The state directory cannot be created before the first save.
    #[error("state dir {path}: cannot create: {source}")]
    StateDir {
        /// The state directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Writing the history atomically failed.
    #[error(transparent)]
    Write(#[from] StateFileError),
}

/// The last commit that was applied and stayed healthy (or was not gated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoodCommit {
    /// The commit id.
    pub commit: String,
    /// Unix seconds when it was recorded good.
    pub recorded_at: u64,
    /// The snapshot's files, to revert to without network or git cache.
    pub files: BTreeMap<String, Vec<u8>>,
}

impl GoodCommit {
    /// The commit's snapshot, rebuilt from the stored files (pure).
    pub fn snapshot(&self) -> Snapshot {
        Snapshot::from_files(Some(self.commit.clone()), self.files.clone())
    }
}

/// A commit that failed its health gate.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BadCommit {
    /// The commit id.
    pub commit: String,
    /// Health report summary (never secrets: check details never carry them).
    pub reason: String,
    /// Unix seconds when it was recorded bad.
    pub at: u64,
}

/// Persistent record of which commits were good or bad. Load with [`CommitHistory::load`];
/// [`apply_guarded`] updates and saves it.
///
/// [`apply_guarded`]: super::apply_guarded
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitHistory {
    path: PathBuf,
    applied: Option<String>,
    last_good: Option<GoodCommit>,
    /// Oldest first.
    bad: Vec<BadCommit>,
    rollbacks: u64,
    /// What is on disk, to skip writes that change nothing.
    saved: Option<Record>,
    /// The `health.gate` of a commit's config, once known (not persisted): the last good
    /// commit's config is parsed at most once per process.
    gate_of: Option<(String, HealthGate)>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct GoodRecord {
    commit: String,
    recorded_at: u64,
    /// Path → base64 of the bytes.
    files: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Record {
    version: u32,
    applied: Option<String>,
    last_good: Option<GoodRecord>,
    bad: Vec<BadCommit>,
    config_rollbacks_total: u64,
}

const RECORD_VERSION: u32 = 1;

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

impl CommitHistory {
    /// An empty history that will be saved at `state_dir/commit-history.json` (pure).
    pub fn empty(state_dir: &Path) -> Self {
        CommitHistory {
            path: state_dir.join(HISTORY_FILE),
            applied: None,
            last_good: None,
            bad: Vec::new(),
            rollbacks: 0,
            saved: None,
            gate_of: None,
        }
    }

    /// Reads the history from `state_dir`; an absent file is an empty history. Reads disk.
    pub fn load(state_dir: &Path) -> Result<Self, HistoryError> {
        let mut h = CommitHistory::empty(state_dir);
        let bytes = match std::fs::read(&h.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(h),
            Err(source) => {
                return Err(HistoryError::Read {
                    path: h.path,
                    source,
                })
            }
        };
        let corrupt = |message: String| HistoryError::Corrupt {
            path: state_dir.join(HISTORY_FILE),
            message,
        };
        let rec: Record = serde_json::from_slice(&bytes)
            .map_err(|e| corrupt(format!("not a commit history: {e}")))?;
        if rec.version != RECORD_VERSION {
            return Err(corrupt(format!(
                "version {} is not the supported version {RECORD_VERSION}",
                rec.version
            )));
        }
        h.last_good = match &rec.last_good {
            None => None,
            Some(g) => {
                let mut files = BTreeMap::new();
                for (p, v) in &g.files {
                    let bytes = b64().decode(v).map_err(|e| {
                        corrupt(format!("last good commit file {p}: not base64: {e}"))
                    })?;
                    files.insert(p.clone(), bytes);
                }
                Some(GoodCommit {
                    commit: g.commit.clone(),
                    recorded_at: g.recorded_at,
                    files,
                })
            }
        };
        h.applied = rec.applied.clone();
        h.bad = rec.bad.clone();
        h.rollbacks = rec.config_rollbacks_total;
        h.saved = Some(rec);
        Ok(h)
    }

    fn record(&self) -> Record {
        Record {
            version: RECORD_VERSION,
            applied: self.applied.clone(),
            last_good: self.last_good.as_ref().map(|g| GoodRecord {
                commit: g.commit.clone(),
                recorded_at: g.recorded_at,
                files: g
                    .files
                    .iter()
                    .map(|(p, b)| (p.clone(), b64().encode(b)))
                    .collect(),
            }),
            bad: self.bad.clone(),
            config_rollbacks_total: self.rollbacks,
        }
    }

    /// Writes the history atomically (0600) when it differs from what was last loaded or
    /// saved; creates the state dir if needed. Writes to disk.
    pub fn save(&mut self) -> Result<(), HistoryError> {
        let rec = self.record();
        if self.saved.as_ref() == Some(&rec) {
            return Ok(());
        }
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| HistoryError::StateDir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let bytes = serde_json::to_vec_pretty(&rec).unwrap_or_default();
        statefile::write_atomic(&self.path, &bytes, 0o600)?;
        self.saved = Some(rec);
        Ok(())
    }

    /// Where the history is stored.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The commit whose apply was last started (its files are on disk, or a journal will
    /// complete them).
    pub fn applied(&self) -> Option<&str> {
        self.applied.as_deref()
    }

    /// The last commit recorded good, with its files; `None` before the first good apply.
    pub fn last_good(&self) -> Option<&GoodCommit> {
        self.last_good.as_ref()
    }

    /// The record of `commit` if it is in the bad set.
    pub fn bad(&self, commit: &str) -> Option<&BadCommit> {
        self.bad.iter().find(|b| b.commit == commit)
    }

    /// All bad commits, oldest first.
    pub fn bad_commits(&self) -> &[BadCommit] {
        &self.bad
    }

    /// Completed reverts since the history was created (`config_rollbacks_total`).
    pub fn config_rollbacks_total(&self) -> u64 {
        self.rollbacks
    }

    /// A trial whose verdict never came: the last started apply is neither good nor bad.
    pub fn interrupted_trial(&self) -> Option<&str> {
        let a = self.applied.as_deref()?;
        let good = self.last_good.as_ref().is_some_and(|g| g.commit == a);
        (!good && self.bad(a).is_none()).then_some(a)
    }

    /// The commit on disk when it was never verified healthy: an interrupted trial, or a bad
    /// commit kept (no earlier good one) or whose revert did not finish.
    pub fn unverified_on_disk(&self) -> Option<&str> {
        let a = self.applied.as_deref()?;
        let good = self.last_good.as_ref().is_some_and(|g| g.commit == a);
        (!good).then_some(a)
    }

    /// A bad commit is still on disk although a good one exists: its revert did not finish.
    pub fn revert_pending(&self) -> Option<&str> {
        let a = self.applied.as_deref()?;
        let g = self.last_good.as_ref()?;
        (g.commit != a && self.bad(a).is_some()).then_some(a)
    }

    /// What the history says about `commit`, the input of [`super::decide()`] (pure).
    pub fn facts(&self, commit: &str) -> super::Facts<'_> {
        super::Facts {
            bad: self.bad(commit).is_some(),
            revert_pending: self.revert_pending().is_some(),
            last_good: self.last_good.as_ref().map(|g| g.commit.as_str()),
        }
    }

    /// Remembers the `health.gate` of `commit`'s config (pure; not persisted).
    pub fn remember_gate(&mut self, commit: &str, gate: HealthGate) {
        self.gate_of = Some((commit.to_string(), gate));
    }

    /// The remembered `health.gate` of `commit`'s config, if any.
    pub fn remembered_gate(&self, commit: &str) -> Option<HealthGate> {
        self.gate_of
            .as_ref()
            .filter(|(c, _)| c == commit)
            .map(|(_, g)| *g)
    }

    /// Notes that the apply of `commit` starts (pure).
    pub fn begin(&mut self, commit: &str) {
        self.applied = Some(commit.to_string());
    }

    /// Records `snapshot`'s commit as the last good one (pure). Keeps the older timestamp
    /// when the same commit is recorded again.
    pub fn record_good(&mut self, commit: &str, snapshot: &Snapshot, now: u64) {
        if self.last_good.as_ref().is_some_and(|g| g.commit == commit) {
            return;
        }
        self.last_good = Some(GoodCommit {
            commit: commit.to_string(),
            recorded_at: now,
            files: snapshot.files().clone(),
        });
    }

    /// Adds `commit` to the bad set (pure); forgets the oldest beyond [`MAX_BAD_COMMITS`].
    pub fn record_bad(&mut self, commit: &str, reason: &str, now: u64) {
        self.bad.retain(|b| b.commit != commit);
        let mut reason = reason.to_string();
        if reason.len() > MAX_REASON {
            let mut cut = MAX_REASON;
            while !reason.is_char_boundary(cut) {
                cut -= 1;
            }
            reason.truncate(cut);
            reason.push('…');
        }
        self.bad.push(BadCommit {
            commit: commit.to_string(),
            reason,
            at: now,
        });
        if self.bad.len() > MAX_BAD_COMMITS {
            let extra = self.bad.len() - MAX_BAD_COMMITS;
            self.bad.drain(..extra);
        }
    }

    /// Notes a completed revert to the last good commit (pure).
    pub fn record_rollback(&mut self) {
        if let Some(g) = &self.last_good {
            self.applied = Some(g.commit.clone());
        }
        self.rollbacks += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(commit: &str, body: &str) -> Snapshot {
        Snapshot::from_files(
            Some(commit.into()),
            [("config.yaml".to_string(), body.as_bytes().to_vec())].into(),
        )
    }

    #[test]
    fn history_states_trial_bad_and_pending_revert() {
        let dir = Path::new("/nonexistent-state");
        let mut h = CommitHistory::empty(dir);
        assert_eq!(h.interrupted_trial(), None);
        h.begin("a");
        assert_eq!(h.interrupted_trial(), Some("a"));
        h.record_good("a", &snap("a", "x: 1\n"), 10);
        assert_eq!(h.interrupted_trial(), None);
        assert_eq!(h.last_good().unwrap().snapshot(), snap("a", "x: 1\n"));

        h.begin("b");
        assert_eq!(h.interrupted_trial(), Some("b"));
        h.record_bad("b", "timed out", 20);
        assert_eq!(h.interrupted_trial(), None);
        assert_eq!(h.unverified_on_disk(), Some("b"));
        assert_eq!(h.revert_pending(), Some("b"));
        h.record_rollback();
        assert_eq!(h.revert_pending(), None);
        assert_eq!(h.unverified_on_disk(), None);
        assert_eq!(h.applied(), Some("a"));
        assert_eq!(h.config_rollbacks_total(), 1);
        assert_eq!(h.bad("b").unwrap().at, 20);
        // Recording the same good commit again keeps its first timestamp.
        h.record_good("a", &snap("a", "x: 1\n"), 99);
        assert_eq!(h.last_good().unwrap().recorded_at, 10);
    }

    #[test]
    fn bad_set_is_bounded_and_reasons_are_capped() {
        let mut h = CommitHistory::empty(Path::new("/x"));
        for i in 0..(MAX_BAD_COMMITS + 5) {
            h.record_bad(&format!("c{i}"), "r", i as u64);
        }
        assert_eq!(h.bad_commits().len(), MAX_BAD_COMMITS);
        assert!(h.bad("c0").is_none());
        assert!(h.bad(&format!("c{}", MAX_BAD_COMMITS + 4)).is_some());
        h.record_bad("long", &"é".repeat(MAX_REASON), 1);
        assert!(h.bad("long").unwrap().reason.len() <= MAX_REASON + '…'.len_utf8());
    }

    #[test]
    fn history_round_trips_through_the_state_file_and_skips_unchanged_writes() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = CommitHistory::empty(dir.path());
        let binary = Snapshot::from_files(
            Some("a".into()),
            [("config.yaml".to_string(), vec![0u8, 0xff, b'\n'])].into(),
        );
        h.begin("a");
        h.record_good("a", &binary, 5);
        h.record_bad("b", "apiserver readyz: status 500", 6);
        h.save().unwrap();
        let loaded = CommitHistory::load(dir.path()).unwrap();
        assert_eq!(loaded.last_good(), h.last_good());
        assert_eq!(loaded.bad_commits(), h.bad_commits());
        assert_eq!(loaded.applied(), Some("a"));
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(loaded.path()).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);

        // Unchanged: no write (the file we replace underneath stays as we left it).
        std::fs::write(loaded.path(), b"sentinel").unwrap();
        let mut again = h.clone();
        again.save().unwrap();
        assert_eq!(std::fs::read(loaded.path()).unwrap(), b"sentinel");
        let err = CommitHistory::load(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains(HISTORY_FILE) && err.contains("not a commit history"),
            "{err}"
        );
    }
}
