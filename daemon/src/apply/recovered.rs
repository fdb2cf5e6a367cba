//! The tree and managed set as [`super::recover`] will leave them, read without writing
//! anything: what every planner observes, so that no plan is computed against a state that
//! recovery is about to change.
//!
//! Why: a transaction killed past its commit point (journal in place) has renamed only some
//! of its files. A plan computed from that half-renamed tree and the old managed set sees the
//! already-renamed files as "present, not created by bosun" and leaves them out of the managed
//! set; applying it after recovery then drops them from the managed set for good and a later
//! config never prunes them. Planning through a [`RecoveredView`] sees what recovery will
//! produce instead, and [`super::apply_with`] refuses a plan that did not (see
//! [`super::ApplyError::PlanPredatesRecovery`]).
//!
//! Invariant: for every node path, [`RecoveredView::observe_one`] returns what
//! [`crate::fsroot::Root::observe_one`] will return after recovery, and
//! [`RecoveredView::managed`] the managed set recovery writes, provided nothing else changes
//! the tree in between. An uncommitted transaction (intent without journal) changes neither:
//! recovery only removes its temp files and the empty directories it created.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::journal::{self, Journal};
use super::{load_managed, ApplyError};
use crate::fsroot::{parent_node_path, Observation, Observed, Root};

/// What recovery will do with an interrupted transaction in the state dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PendingRecovery {
    /// A committed transaction (journal present): recovery renames its staged files into place
    /// and prunes its deletes.
    RollForward {
        /// The interrupted transaction.
        txid: String,
        /// Staged files recovery renames into place.
        renames: usize,
        /// Files recovery deletes.
        deletes: usize,
    },
    /// An uncommitted transaction (intent only): recovery removes its temp files; no managed
    /// file changes.
    RollBack {
        /// The interrupted transaction.
        txid: String,
    },
}

impl std::fmt::Display for PendingRecovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PendingRecovery::RollForward {
                txid,
                renames,
                deletes,
            } => write!(
                f,
                "transaction {txid} committed before it was interrupted; recovery completes it ({renames} file(s) put in place, {deletes} pruned)"
            ),
            PendingRecovery::RollBack { txid } => write!(
                f,
                "transaction {txid} was interrupted before its commit point; recovery removes its staged files and changes no managed file"
            ),
        }
    }
}

/// A read-only view of the root and state dir as they will be after recovery (see module
/// docs).
#[derive(Debug)]
pub struct RecoveredView<'r> {
    root: &'r Root,
    pending: Option<PendingRecovery>,
    /// Node path → staged temp file name of the pending committed transaction.
    staged: BTreeMap<String, String>,
    deleted: BTreeSet<String>,
    managed: BTreeSet<String>,
    txid: Option<String>,
    journal_path: PathBuf,
}

impl<'r> RecoveredView<'r> {
    /// Reads the journal, intent and managed set in `state_dir` (absent dir: nothing pending,
    /// empty managed set). Reads the filesystem only.
    pub fn open(root: &'r Root, state_dir: &Path) -> Result<Self, ApplyError> {
        let mut view = RecoveredView {
            root,
            pending: None,
            staged: BTreeMap::new(),
            deleted: BTreeSet::new(),
            managed: BTreeSet::new(),
            txid: None,
            journal_path: state_dir.join(journal::JOURNAL_FILE),
        };
        if let Some(j) = journal::read_journal(state_dir)? {
            view.overlay(j);
            return Ok(view);
        }
        view.managed = load_managed(state_dir)?;
        if let Some(intent) = journal::read_intent(state_dir)? {
            view.pending = Some(PendingRecovery::RollBack { txid: intent.txid });
        }
        Ok(view)
    }

    fn overlay(&mut self, j: Journal) {
        self.pending = Some(PendingRecovery::RollForward {
            txid: j.txid.clone(),
            renames: j.renames.len(),
            deletes: j.deletes.len(),
        });
        self.staged = j.renames.into_iter().map(|r| (r.path, r.temp)).collect();
        self.deleted = j.deletes.into_iter().collect();
        self.managed = j.managed_after;
        self.txid = Some(j.txid);
    }

    /// What recovery will do, if anything is pending.
    pub fn pending(&self) -> Option<&PendingRecovery> {
        self.pending.as_ref()
    }

    /// The txid of the committed transaction this view already counts as rolled forward: pass
    /// it as [`super::ApplyOptions::planned_over`] with a plan computed through this view.
    pub fn planned_over(&self) -> Option<&str> {
        self.txid.as_deref()
    }

    /// The managed set after recovery.
    pub fn managed(&self) -> &BTreeSet<String> {
        &self.managed
    }

    /// What will be at `path` after recovery. Reads the filesystem only.
    pub fn observe_one(&self, path: &str) -> Result<Option<Observed>, ApplyError> {
        if self.deleted.contains(path) {
            return Ok(None);
        }
        let Some(temp) = self.staged.get(path) else {
            return Ok(self.root.observe_one(path)?);
        };
        let dir = parent_node_path(path)?;
        let temp_path = if dir == "/" {
            format!("/{temp}")
        } else {
            format!("{dir}/{temp}")
        };
        if let Some(staged) = self.root.observe_one(&temp_path)? {
            return Ok(Some(staged));
        }
        // Renamed before the interruption: the target already holds the new file. Neither
        // there is what recovery itself will refuse.
        match self.root.observe_one(path)? {
            Some(done) => Ok(Some(done)),
            None => Err(ApplyError::StagedFileLost {
                path: path.to_string(),
                temp: temp.clone(),
                txid: self.txid.clone().unwrap_or_default(),
                root: self.root.path().to_path_buf(),
                journal: self.journal_path.clone(),
            }),
        }
    }

    /// [`Self::observe_one`] for each of `paths`. Reads the filesystem only.
    pub fn observe<'a>(
        &self,
        paths: impl IntoIterator<Item = &'a str>,
    ) -> Result<Observation, ApplyError> {
        self.observe_known(paths, &|_, _| false)
    }

    /// [`Self::observe`], where a regular file for which `known` is true (its stat vouches
    /// for the desired content, see [`crate::stamps`]) is not read. With nothing pending this
    /// is [`Root::observe_known`] (parents resolved once); with a recovery pending every path
    /// goes through [`Self::observe_one`] and is read (stamps predate the interruption).
    /// Reads the filesystem only.
    pub fn observe_known<'a>(
        &self,
        paths: impl IntoIterator<Item = &'a str>,
        known: &dyn Fn(&str, &rustix::fs::Stat) -> bool,
    ) -> Result<Observation, ApplyError> {
        if self.pending.is_none() {
            return Ok(self.root.observe_known(paths, known)?);
        }
        let mut obs = Observation::new();
        for p in paths {
            obs.insert(p, self.observe_one(p)?);
        }
        Ok(obs)
    }
}
