//! Health-gated config applies with automatic rollback ("try mode", like
//! `talosctl apply-config --mode try`, but the verdict comes from K3s health, not a person).
//!
//! Owns:
//! - [`CommitHistory`]: the last good commit (id AND its snapshot files, so a revert needs
//!   neither the network nor the git cache), the bad commits (reason, time), the commit whose
//!   apply was last started, and `config_rollbacks_total`. Persisted as one JSON state file
//!   (`commit-history.json`, mode 0600 because config files carry tokens) written with
//!   [`statefile::write_atomic`];
//! - [`gate_reason`]: the pure decision whether an apply is gated (`health.gate`);
//! - [`apply_guarded`]: the driver: refuse bad commits, prepare + apply, wait for health, and
//!   on a timeout revert to the last good snapshot through the same transactional apply.
//!
//! Invariants:
//! - a commit in the bad set is never applied again; newer commits are tried normally;
//! - a commit is recorded bad (and the history saved) *before* the revert runs, so a crash
//!   during the revert never re-applies it; the next call finishes the revert (see below);
//! - the commit whose apply starts is saved first ("applied"). While the commit on disk was
//!   never verified healthy (bosun died before the verdict, or it failed and was kept), the
//!   next apply is gated even if its plan is empty or leaves k3s alone — unless
//!   `health.gate` is `none`. So "last good" always means "verified" under a gate;
//! - a commit cannot loosen its own gate: the gate is the stricter of its `health.gate` and the
//!   last good commit's ([`effective_gate`]). Loosening takes effect from the next commit, so
//!   a broken commit that also says `gate: none` is still caught;
//! - the rollback counter only counts completed reverts;
//! - the history is written only when it changed (no flash wear on every poll).
//!
//! What happens without a previous good commit (the very first commit bosun applies on a node,
//! or a fresh state dir): the commit's files stay on disk, the commit is recorded bad with the
//! health summary and [`GuardedOutcome::Kept`] is returned. There is nothing bosun-made to go
//! back to: the files that were there before bosun are not snapshotted. The node keeps running
//! that config; a newer commit is tried normally (and, if healthy, becomes the first good one).
//!
//! When the unhealthy commit *is* the last good one (re-applied to repair drift), it is not
//! marked bad and nothing is reverted: the commit is our only known-good state.
//!
//! The revert itself is not health-gated: it returns to a config that was healthy before and
//! there is nothing older to fall back to. `bosun health` shows the state after it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;

use crate::config::HealthGate;
use crate::desired::Effect;
use crate::health::{effective_checks, wait_healthy, HealthContext, HealthReport, K3sRole};
use crate::plan::Plan;
use crate::reconcile::{self, Applied, ReconcileError, Target};
use crate::runner::CommandRunner;
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
    #[error("commit history {path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("commit history {path}: {message}; move it away to start a fresh history (bad-commit marks are lost)")]
    Corrupt { path: PathBuf, message: String },
    #[error("state dir {path}: cannot create: {source}")]
    StateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Write(#[from] StateFileError),
}

/// Errors of [`apply_guarded`]. Each names the commit.
#[derive(Debug, thiserror::Error)]
pub enum GuardedError {
    #[error("the snapshot has no commit id; health-gated applies track commits, so they need a snapshot from git")]
    NoCommit,
    #[error("commit {commit}: {source}")]
    Apply {
        commit: String,
        #[source]
        source: ReconcileError,
    },
    #[error("commit {commit} failed its health gate and is recorded bad, but reverting to the last good commit {to} failed (retried on the next apply): {source}")]
    Revert {
        commit: String,
        to: String,
        #[source]
        source: ReconcileError,
    },
    #[error(transparent)]
    History(#[from] HistoryError),
    #[error("the apply task failed: {0}")]
    Task(String),
}

/// The last commit that was applied and stayed healthy (or was not gated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoodCommit {
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
    pub commit: String,
    /// Health report summary (never secrets: check details never carry them).
    pub reason: String,
    /// Unix seconds when it was recorded bad.
    pub at: u64,
}

/// Persistent record of which commits were good or bad. Load with [`CommitHistory::load`];
/// [`apply_guarded`] updates and saves it.
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

/// Why an apply is health-gated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GateReason {
    /// `health.gate: all`.
    All,
    /// The plan creates, updates or deletes k3s configuration files.
    K3sConfigChanged { paths: Vec<String> },
    /// The plan restarts the k3s unit.
    K3sRestarted { unit: String },
    /// The config on disk (commit `commit`) was never verified healthy: its trial was
    /// interrupted (bosun stopped before the verdict) or it failed and was kept.
    UnverifiedOnDisk { commit: String },
}

impl std::fmt::Display for GateReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GateReason::All => f.write_str("health.gate is all"),
            GateReason::K3sConfigChanged { paths } => {
                write!(f, "k3s configuration changed ({})", paths.join(", "))
            }
            GateReason::K3sRestarted { unit } => write!(f, "{unit} is restarted"),
            GateReason::UnverifiedOnDisk { commit } => {
                write!(
                    f,
                    "the config on disk (commit {commit}) was never verified healthy"
                )
            }
        }
    }
}

/// Whether `path` is k3s configuration: either role's unit drop-in, or anything in k3s's
/// configuration directory (bosun's environment file, and `config.yaml`, `config.yaml.d/`,
/// `registries.yaml` from `write_files`) (pure).
pub fn is_k3s_config_path(path: &str) -> bool {
    crate::plan::is_under(path, crate::render::K3S_CONFIG_DIR)
        || path == crate::render::K3sRole::Server.dropin_path()
        || path == crate::render::K3sRole::Agent.dropin_path()
}

fn is_k3s_unit(unit: &str) -> bool {
    matches!(unit.trim_end_matches(".service"), "k3s" | "k3s-agent")
}

/// The gate an apply runs under: the commit's own `health.gate`, never looser than the last
/// good commit's (`none` < `k3s` < `all`). Pure.
pub fn effective_gate(own: HealthGate, last_good: Option<HealthGate>) -> HealthGate {
    let rank = |g: HealthGate| match g {
        HealthGate::None => 0,
        HealthGate::K3s => 1,
        HealthGate::All => 2,
    };
    match last_good {
        Some(previous) if rank(previous) > rank(own) => previous,
        _ => own,
    }
}

/// The `health.gate` of the last good commit, when its config still loads. `None` when the
/// last good commit is `commit` itself (a drift or resync re-apply): its own gate is the one
/// already loaded, so it is not parsed again.
fn last_good_gate(history: &CommitHistory, target: &Target, commit: &str) -> Option<HealthGate> {
    let good = history.last_good().filter(|g| g.commit != commit)?;
    match crate::config::load(&good.snapshot(), &target.hostname, &target.load) {
        Ok(loaded) => Some(loaded.config.health.gate),
        Err(e) => {
            tracing::warn!(commit = %good.commit, "cannot read the last good commit's health.gate ({e}); using the new commit's");
            None
        }
    }
}

/// Decides whether applying `plan` is health-gated (pure). `gate`: `none` never, `all`
/// always, `k3s` when the plan changes a k3s config file or restarts the k3s unit, or when
/// `unverified_on_disk` names the commit on disk that was never verified healthy.
pub fn gate_reason(
    gate: HealthGate,
    plan: &Plan,
    unverified_on_disk: Option<&str>,
) -> Option<GateReason> {
    match gate {
        HealthGate::None => None,
        HealthGate::All => Some(GateReason::All),
        HealthGate::K3s => {
            let paths: Vec<String> = plan
                .changed_paths()
                .into_iter()
                .filter(|p| is_k3s_config_path(p))
                .map(str::to_string)
                .collect();
            if !paths.is_empty() {
                return Some(GateReason::K3sConfigChanged { paths });
            }
            let restart = plan.effects.iter().find_map(|e| match e {
                Effect::RestartUnit { unit } if is_k3s_unit(unit) => Some(unit.clone()),
                _ => None,
            });
            if let Some(unit) = restart {
                return Some(GateReason::K3sRestarted { unit });
            }
            unverified_on_disk.map(|c| GateReason::UnverifiedOnDisk {
                commit: c.to_string(),
            })
        }
    }
}

/// Why an unhealthy commit was kept on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeptReason {
    /// No good commit recorded yet: nothing to revert to. The commit is recorded bad.
    NoPreviousGood,
    /// The commit is the last good one (re-applied to repair drift); it is not marked bad.
    IsLastGood,
}

/// What [`apply_guarded`] did.
#[derive(Debug)]
// One value per apply, moved once: boxing the large variants buys nothing.
#[allow(clippy::large_enum_variant)]
pub enum GuardedOutcome {
    /// Applied without a health gate; recorded good.
    Applied { commit: String, applied: Applied },
    /// Applied, gated, healthy before the timeout; recorded good.
    Healthy {
        commit: String,
        applied: Applied,
        gate: GateReason,
        report: HealthReport,
    },
    /// Applied, gated, not healthy before the timeout: recorded bad and reverted to `to`.
    RolledBack {
        commit: String,
        to: String,
        applied: Applied,
        gate: GateReason,
        report: HealthReport,
        revert: Applied,
    },
    /// Applied, gated, not healthy, and not reverted (see [`KeptReason`]).
    Kept {
        commit: String,
        applied: Applied,
        gate: GateReason,
        report: HealthReport,
        why: KeptReason,
    },
    /// Refused: the commit failed its health gate before. Nothing was applied for it;
    /// `revert` is set when an unfinished revert to the last good commit was completed now.
    Refused {
        commit: String,
        bad: BadCommit,
        revert: Option<Applied>,
    },
}

impl GuardedOutcome {
    pub fn commit(&self) -> &str {
        match self {
            GuardedOutcome::Applied { commit, .. }
            | GuardedOutcome::Healthy { commit, .. }
            | GuardedOutcome::RolledBack { commit, .. }
            | GuardedOutcome::Kept { commit, .. }
            | GuardedOutcome::Refused { commit, .. } => commit,
        }
    }
}

/// One line: the verdict and each failing check with its last detail (pure).
pub fn report_summary(report: &HealthReport) -> String {
    let mut s = report
        .to_string()
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    for c in report.checks.iter().filter(|c| !c.passed) {
        let detail = c.last.as_ref().map_or("not run", |o| o.detail.as_str());
        s.push_str(&format!(
            "; {}: {detail}",
            crate::health::describe(&c.check)
        ));
    }
    s
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Prepares and applies the last good snapshot. Writes under the root and state dir; runs
/// effects (which restart k3s when its config changes back).
async fn revert_to_last_good(
    target: &Target,
    runner: &dyn CommandRunner,
    history: &CommitHistory,
) -> Result<Option<(String, Applied)>, ReconcileError> {
    let Some(good) = history.last_good() else {
        return Ok(None);
    };
    let prepared = reconcile::prepare(&good.snapshot(), target).await?;
    let applied = reconcile::apply_prepared(&prepared, target, runner)?;
    Ok(Some((good.commit.clone(), applied)))
}

/// Applies `new` with a health gate and automatic rollback (see the module docs).
///
/// Side effects: writes under the root and the state dir (files, journal, the history),
/// runs effects through `runner` (k3s restarts), HTTP requests and commands of the health
/// checks through `health`, sleeps on `health.clock`, fetches ssh keys as `prepare` does.
pub async fn apply_guarded(
    new: &Snapshot,
    target: &Target,
    runner: &dyn CommandRunner,
    health: &HealthContext,
    history: &mut CommitHistory,
) -> Result<GuardedOutcome, GuardedError> {
    let commit = new.commit.clone().ok_or(GuardedError::NoCommit)?;

    if let Some(bad) = history.bad(&commit).cloned() {
        let mut revert = None;
        if history.revert_pending().is_some() {
            let done = revert_to_last_good(target, runner, history)
                .await
                .map_err(|source| GuardedError::Revert {
                    commit: commit.clone(),
                    to: history
                        .last_good()
                        .map(|g| g.commit.clone())
                        .unwrap_or_default(),
                    source,
                })?;
            if let Some((to, applied)) = done {
                history.record_rollback();
                history.save()?;
                tracing::warn!(%commit, %to, "finished an interrupted revert to the last good commit");
                revert = Some(applied);
            }
        }
        // Asked again on every poll while the branch points at it: the caller reports it.
        tracing::debug!(%commit, reason = %bad.reason, "refusing a commit that failed its health gate before");
        return Ok(GuardedOutcome::Refused {
            commit,
            bad,
            revert,
        });
    }

    let apply_err = |source| GuardedError::Apply {
        commit: commit.clone(),
        source,
    };
    let prepared = reconcile::prepare(new, target).await.map_err(apply_err)?;
    let cfg = &prepared.loaded.config;
    let gate_policy = effective_gate(cfg.health.gate, last_good_gate(history, target, &commit));
    if gate_policy != cfg.health.gate {
        tracing::info!(%commit, own = ?cfg.health.gate, applied = ?gate_policy, "health.gate is loosened only from the next commit on");
    }
    let gate = gate_reason(gate_policy, &prepared.plan, history.unverified_on_disk());
    history.begin(&commit);
    history.save()?;
    let applied = reconcile::apply_prepared(&prepared, target, runner).map_err(apply_err)?;

    let Some(gate) = gate else {
        history.record_good(&commit, new, unix_now());
        history.save()?;
        tracing::info!(%commit, "applied (not health-gated)");
        return Ok(GuardedOutcome::Applied { commit, applied });
    };

    tracing::info!(%commit, reason = %gate, timeout = ?cfg.health.timeout, "applied; waiting for K3s health");
    let role = K3sRole::from_k3os(&cfg.k3os);
    let checks = effective_checks(&cfg.health, role);
    let report = wait_healthy(&checks, &cfg.health, health).await;
    if report.healthy() {
        history.record_good(&commit, new, unix_now());
        history.save()?;
        tracing::info!(%commit, rounds = report.rounds, "healthy; recorded as the last good commit");
        return Ok(GuardedOutcome::Healthy {
            commit,
            applied,
            gate,
            report,
        });
    }

    let summary = report_summary(&report);
    let to = match history.last_good() {
        Some(g) if g.commit == commit => {
            tracing::warn!(%commit, health = %summary, "the last good commit is unhealthy after re-applying it; keeping it (nothing to revert to)");
            return Ok(GuardedOutcome::Kept {
                commit,
                applied,
                gate,
                report,
                why: KeptReason::IsLastGood,
            });
        }
        None => {
            history.record_bad(&commit, &summary, unix_now());
            history.save()?;
            tracing::warn!(%commit, health = %summary, "commit is unhealthy and there is no earlier good commit to revert to; keeping its files, recorded bad");
            return Ok(GuardedOutcome::Kept {
                commit,
                applied,
                gate,
                report,
                why: KeptReason::NoPreviousGood,
            });
        }
        Some(g) => g.commit.clone(),
    };

    // Bad first: a crash during the revert must never lead to applying this commit again.
    history.record_bad(&commit, &summary, unix_now());
    history.save()?;
    let revert = match revert_to_last_good(target, runner, history).await {
        Ok(Some((_, applied))) => applied,
        // The last good commit was checked above and nothing removed it since.
        Ok(None) => {
            return Err(HistoryError::Corrupt {
                path: history.path().to_path_buf(),
                message: "the last good commit vanished during the revert".into(),
            }
            .into())
        }
        Err(source) => {
            tracing::error!(%commit, %to, error = %source, "revert to the last good commit failed");
            return Err(GuardedError::Revert { commit, to, source });
        }
    };
    history.record_rollback();
    history.save()?;
    tracing::warn!(
        %commit,
        %to,
        health = %summary,
        config_rollbacks_total = history.config_rollbacks_total(),
        "commit failed its health gate; rolled back to the last good commit"
    );
    Ok(GuardedOutcome::RolledBack {
        commit,
        to,
        applied,
        gate,
        report,
        revert,
    })
}

/// The daemon's health-gated applier: [`apply_guarded`] behind the loop's
/// [`crate::daemon::SnapshotApplier`] seam, with the commit history loaded once and kept.
pub struct GuardedApplier {
    history: Option<CommitHistory>,
    /// Runs unit and command health checks (the live system only when the root is `/`).
    health_runner: Arc<dyn CommandRunner>,
}

impl GuardedApplier {
    pub fn new(health_runner: Arc<dyn CommandRunner>) -> Self {
        GuardedApplier {
            history: None,
            health_runner,
        }
    }
}

fn outcome_of(applied: &Applied) -> crate::daemon::ApplyOutcome {
    crate::daemon::ApplyOutcome {
        changed_paths: applied.changed_paths.clone(),
        desired_paths: applied.desired_paths.clone(),
        effect_failures: applied.effects.failures,
        rejected: None,
        rolled_back: false,
    }
}

impl crate::daemon::SnapshotApplier for GuardedApplier {
    type Error = GuardedError;

    /// Applies with a health gate (see [`apply_guarded`]). Writes under the root and state
    /// dir, runs effects and health checks, may revert.
    async fn apply(
        &mut self,
        snapshot: &Snapshot,
        target: &Target,
        runner: Arc<dyn CommandRunner>,
    ) -> Result<crate::daemon::ApplyOutcome, GuardedError> {
        let mut history = match self.history.take() {
            Some(h) => h,
            None => CommitHistory::load(&target.state_dir)?,
        };
        // The apply (file I/O, fsync, effect commands such as a slow `systemctl restart k3s`)
        // blocks; run it on a blocking thread so the daemon's single runtime thread keeps
        // serving metrics and watchdog pings. The health waits inside still use the runtime's
        // timers, which that thread drives while it awaits this task.
        let (snapshot, target) = (snapshot.clone(), target.clone());
        let health_runner = self.health_runner.clone();
        let handle = tokio::runtime::Handle::current();
        let (history, result) = tokio::task::spawn_blocking(move || {
            let ctx = HealthContext::new(&target.root, &target.hostname, health_runner);
            let r = handle.block_on(apply_guarded(
                &snapshot,
                &target,
                runner.as_ref(),
                &ctx,
                &mut history,
            ));
            (history, r)
        })
        .await
        .map_err(|e| GuardedError::Task(e.to_string()))?;
        self.history = Some(history);
        let outcome = result?;
        Ok(match &outcome {
            GuardedOutcome::Applied { applied, .. } | GuardedOutcome::Healthy { applied, .. } => {
                outcome_of(applied)
            }
            GuardedOutcome::Kept {
                applied,
                why,
                report,
                ..
            } => {
                tracing::warn!(
                    "commit {} is unhealthy and kept ({why:?}): {}",
                    outcome.commit(),
                    report_summary(report)
                );
                outcome_of(applied)
            }
            GuardedOutcome::RolledBack {
                commit,
                to,
                applied,
                report,
                revert,
                ..
            } => {
                let mut o = outcome_of(revert);
                o.changed_paths
                    .extend(applied.changed_paths.iter().cloned());
                o.effect_failures += applied.effects.failures;
                o.rejected = Some(format!(
                    "commit {commit} failed its health gate ({}); rolled back to {to}",
                    report_summary(report)
                ));
                o.rolled_back = true;
                o
            }
            GuardedOutcome::Refused {
                commit,
                bad,
                revert,
            } => {
                let mut o = revert.as_ref().map(outcome_of).unwrap_or_default();
                o.rejected = Some(format!(
                    "commit {commit} failed its health gate before ({}); not applied again",
                    bad.reason
                ));
                o
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::{DesiredFile, DesiredState, FileSource};
    use crate::fsroot::Observation;
    use crate::render::k3s::K3S_ENV_FILE;

    fn plan_creating(paths: &[&str], effects: Vec<Effect>) -> Plan {
        let files = paths
            .iter()
            .map(|p| {
                let f = DesiredFile {
                    path: p.to_string(),
                    content: b"x\n".to_vec(),
                    mode: 0o644,
                    uid: 0,
                    gid: 0,
                    secret: false,
                    source: FileSource {
                        key: "write_files".into(),
                        origin: None,
                    },
                };
                (p.to_string(), f)
            })
            .collect();
        let desired = DesiredState {
            files,
            effects: Vec::new(),
        };
        let mut obs = Observation::new();
        for p in paths {
            obs.insert(*p, None);
        }
        let mut plan = crate::plan::plan(&desired, &obs, &Default::default()).unwrap();
        plan.effects = effects;
        plan
    }

    const DROPIN: &str = "/etc/systemd/system/k3s.service.d/90-bosun.conf";
    const AGENT_DROPIN: &str = "/etc/systemd/system/k3s-agent.service.d/90-bosun.conf";

    #[test]
    fn k3s_gate_fires_on_k3s_files_or_restart_only() {
        let motd = plan_creating(&["/etc/motd"], vec![]);
        assert_eq!(gate_reason(HealthGate::K3s, &motd, None), None);
        // k3s's own files from write_files count like bosun's: k3s reads them at start.
        for path in [
            DROPIN,
            AGENT_DROPIN,
            K3S_ENV_FILE,
            "/etc/rancher/k3s/config.yaml",
            "/etc/rancher/k3s/config.yaml.d/10-labels.yaml",
            "/etc/rancher/k3s/registries.yaml",
        ] {
            let p = plan_creating(&["/etc/motd", path], vec![]);
            assert_eq!(
                gate_reason(HealthGate::K3s, &p, None),
                Some(GateReason::K3sConfigChanged {
                    paths: vec![path.to_string()]
                }),
                "{path}"
            );
        }
        let restart = plan_creating(
            &["/etc/motd"],
            vec![Effect::RestartUnit {
                unit: "k3s-agent.service".into(),
            }],
        );
        assert_eq!(
            gate_reason(HealthGate::K3s, &restart, None),
            Some(GateReason::K3sRestarted {
                unit: "k3s-agent.service".into()
            })
        );
        let other_restart = plan_creating(
            &[],
            vec![Effect::RestartUnit {
                unit: "systemd-resolved.service".into(),
            }],
        );
        assert_eq!(gate_reason(HealthGate::K3s, &other_restart, None), None);
        // A sibling directory with a common prefix is not k3s's.
        let lookalike = plan_creating(&["/etc/rancher/k3s-backup/config.yaml"], vec![]);
        assert_eq!(gate_reason(HealthGate::K3s, &lookalike, None), None);
    }

    #[test]
    fn a_commit_cannot_loosen_its_own_gate() {
        use HealthGate::*;
        assert_eq!(effective_gate(None, Option::None), None);
        assert_eq!(effective_gate(None, Some(K3s)), K3s);
        assert_eq!(effective_gate(K3s, Some(All)), All);
        assert_eq!(effective_gate(None, Some(None)), None);
        // Tightening takes effect at once.
        assert_eq!(effective_gate(All, Some(None)), All);
        assert_eq!(effective_gate(K3s, Some(None)), K3s);
    }

    #[test]
    fn all_and_none_override_the_plan() {
        let empty = Plan::default();
        let k3s = plan_creating(&[DROPIN], vec![]);
        assert_eq!(
            gate_reason(HealthGate::All, &empty, None),
            Some(GateReason::All)
        );
        assert_eq!(gate_reason(HealthGate::None, &k3s, Some("abc")), None);
    }

    #[test]
    fn unverified_config_on_disk_gates_an_empty_plan() {
        assert_eq!(
            gate_reason(HealthGate::K3s, &Plan::default(), Some("abc")),
            Some(GateReason::UnverifiedOnDisk {
                commit: "abc".into()
            })
        );
    }

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
