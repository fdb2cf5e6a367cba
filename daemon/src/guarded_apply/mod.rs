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
//! - [`decide()`]: the pure ordered steps of an apply, its verdict and its rollback;
//! - [`apply_guarded`]: the driver that executes them: refuse bad commits, prepare + apply,
//!   wait for health, and on a timeout revert to the last good snapshot through the same
//!   transactional apply;
//! - [`GuardedApplier`]: the driver behind the daemon loop's [`SnapshotApplier`] seam.
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
//!
//! [`statefile::write_atomic`]: crate::statefile::write_atomic
//! [`SnapshotApplier`]: crate::reconcile::SnapshotApplier

mod applier;
mod decide;
mod history;

use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::HealthGate;
use crate::desired::Effect;
use crate::disruption::{about_to_disrupt, Disruption};
use crate::health::{effective_checks, report_summary, wait_healthy, HealthContext, HealthReport};
use crate::reconcile::{self, Applied, HealthTrial, Permit, Prepared, ReconcileError, Target};
use crate::runner::CommandRunner;
use crate::snapshot::Snapshot;

pub use applier::GuardedApplier;
pub use decide::{
    decide, deferral, effective_gate, gate_reason, is_k3s_config_path, Conclusion, Deferral, Facts,
    GateReason, KeptReason, Stage, Step,
};
pub use history::{
    BadCommit, CommitHistory, GoodCommit, HistoryError, HISTORY_FILE, MAX_BAD_COMMITS,
};

/// Errors of [`apply_guarded`]. Each names the commit.
#[derive(Debug, thiserror::Error)]
pub enum GuardedError {
    /// The snapshot was read from a directory, not a commit; commit history needs commit ids.
    #[error("the snapshot has no commit id; health-gated applies track commits, so they need a snapshot from git")]
    NoCommit,
    /// Loading, rendering, planning or applying the commit failed (a failed apply leaves the
    /// previous files, see [`crate::apply`]).
    #[error("commit {commit}: {source}")]
    Apply {
        /// The commit being applied.
        commit: String,
        /// What failed.
        #[source]
        source: ReconcileError,
    },
    /// The commit failed its health gate and was recorded bad, but applying the last good snapshot
    /// failed; the next apply retries the revert.
    #[error("commit {commit} failed its health gate and is recorded bad, but reverting to the last good commit {to} failed (retried on the next apply): {source}")]
    Revert {
        /// The unhealthy commit.
        commit: String,
        /// The last good commit the revert was to.
        to: String,
        /// What failed.
        #[source]
        source: ReconcileError,
    },
    /// Reading or writing the commit history state file failed.
    #[error(transparent)]
    History(#[from] HistoryError),
    /// The blocking apply task of [`GuardedApplier`] panicked or was cancelled.
    #[error("the apply task failed: {0}")]
    Task(String),
}

/// What [`apply_guarded`] did.
#[derive(Debug)]
// One value per apply, moved once: boxing the large variants buys nothing.
#[allow(clippy::large_enum_variant)]
pub enum GuardedOutcome {
    /// Applied without a health gate; recorded good.
    Applied {
        /// The applied commit.
        commit: String,
        /// What the apply did.
        applied: Applied,
    },
    /// Applied, gated, healthy before the timeout; recorded good.
    Healthy {
        /// The applied commit.
        commit: String,
        /// What the apply did.
        applied: Applied,
        /// Why the apply was gated.
        gate: GateReason,
        /// The health checks' final report.
        report: HealthReport,
    },
    /// Applied, gated, not healthy before the timeout: recorded bad and reverted to `to`.
    RolledBack {
        /// The unhealthy commit, now recorded bad.
        commit: String,
        /// The last good commit reverted to.
        to: String,
        /// What applying the unhealthy commit did.
        applied: Applied,
        /// Why the apply was gated.
        gate: GateReason,
        /// The health checks' report at the timeout.
        report: HealthReport,
        /// What applying the last good snapshot did.
        revert: Applied,
    },
    /// Applied, gated, not healthy, and not reverted (see [`KeptReason`]).
    Kept {
        /// The unhealthy commit.
        commit: String,
        /// What the apply did.
        applied: Applied,
        /// Why the apply was gated.
        gate: GateReason,
        /// The health checks' report at the timeout.
        report: HealthReport,
        /// Why nothing was reverted.
        why: KeptReason,
    },
    /// Held: the rollout gates have not allowed what the plan needs (see [`Deferral`]);
    /// nothing was written.
    Deferred {
        /// The held commit.
        commit: String,
        /// What the plan needs that the gates have not allowed.
        deferral: Deferral,
        /// The commit's config (its `rollout:` policy judges the deferral).
        loaded: std::sync::Arc<crate::config::Loaded>,
    },
    /// Refused: the commit failed its health gate before. Nothing was applied for it;
    /// `revert` is set when an unfinished revert to the last good commit was completed now.
    Refused {
        /// The refused commit.
        commit: String,
        /// When and why it was recorded bad.
        bad: BadCommit,
        /// The revert to the last good commit that was completed now, if one was pending.
        revert: Option<Applied>,
    },
}

impl GuardedOutcome {
    /// The commit the outcome is about (the new one, not a revert target).
    pub fn commit(&self) -> &str {
        match self {
            GuardedOutcome::Applied { commit, .. }
            | GuardedOutcome::Healthy { commit, .. }
            | GuardedOutcome::RolledBack { commit, .. }
            | GuardedOutcome::Kept { commit, .. }
            | GuardedOutcome::Refused { commit, .. }
            | GuardedOutcome::Deferred { commit, .. } => commit,
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The k3s unit a plan restarts, if any (pure).
fn k3s_restart(prepared: &Prepared) -> Option<&str> {
    prepared.plan.effects.iter().find_map(|e| match e {
        Effect::RestartUnit { unit } if decide::is_k3s_unit(unit) => Some(unit.as_str()),
        _ => None,
    })
}

/// SHA-256 (hex) over the desired k3s configuration files (path and content) of a plan: the
/// identity of the k3s configuration a commit brings (pure).
fn k3s_fingerprint(prepared: &Prepared) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for (path, f) in &prepared.rendered.state.files {
        if is_k3s_config_path(path) {
            h.update(path.as_bytes());
            h.update([0]);
            h.update((f.content.len() as u64).to_le_bytes());
            h.update(&f.content);
        }
    }
    hex::encode(h.finalize())
}

/// Applies a prepared plan of `commit`, announcing the k3s restart it causes first. Writes
/// under the root and state dir; runs effects.
fn apply_plan(
    prepared: &Prepared,
    commit: &str,
    target: &Target,
    runner: &dyn CommandRunner,
) -> Result<Applied, ReconcileError> {
    if let Some(unit) = k3s_restart(prepared) {
        about_to_disrupt(&Disruption::RestartK3s { unit, commit });
    }
    reconcile::apply_prepared(prepared, target, runner)
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
    let applied = apply_plan(&prepared, &good.commit, target, runner)?;
    Ok(Some((good.commit.clone(), applied)))
}

/// The `health.gate` of the last good commit. `None` when the last good commit is `commit`
/// itself (a drift or resync re-apply: its own gate is the one already loaded) or its config
/// no longer loads. Each last good commit's config is parsed at most once: the history
/// remembers its gate.
fn last_good_gate(
    history: &mut CommitHistory,
    target: &Target,
    commit: &str,
) -> Option<HealthGate> {
    let good = history.last_good().filter(|g| g.commit != commit)?;
    if let Some(gate) = history.remembered_gate(&good.commit) {
        return Some(gate);
    }
    let good_commit = good.commit.clone();
    match crate::config::load(&good.snapshot(), &target.hostname, &target.load) {
        Ok(loaded) => {
            history.remember_gate(&good_commit, loaded.config.health.gate);
            Some(loaded.config.health.gate)
        }
        Err(e) => {
            tracing::warn!(commit = %good_commit, "cannot read the last good commit's health.gate ({e}); using the new commit's");
            None
        }
    }
}

/// What the driver has done so far for one commit; turned into a [`GuardedOutcome`] at the
/// end.
struct Run {
    commit: String,
    new: Snapshot,
    prepared: Option<Prepared>,
    gate: Option<GateReason>,
    applied: Option<Applied>,
    report: Option<HealthReport>,
    /// The revert to the last good commit: its id and what it applied.
    revert: Option<(String, Applied)>,
    /// Why the apply waits for the rollout gates, when it does.
    held: Option<Deferral>,
    /// What the rollout gates allow.
    permit: Permit,
}

impl Run {
    fn apply_err(&self, source: ReconcileError) -> GuardedError {
        GuardedError::Apply {
            commit: self.commit.clone(),
            source,
        }
    }

    /// Plans the new commit; the next stage says whether the apply is held (`permit`) or
    /// gated. Reads the root.
    async fn plan(
        &mut self,
        target: &Target,
        history: &mut CommitHistory,
        permit: Permit,
    ) -> Result<Stage, GuardedError> {
        let prepared = reconcile::prepare(&self.new, target)
            .await
            .map_err(|e| self.apply_err(e))?;
        if let Some(d) = deferral(&prepared.plan, permit, || k3s_fingerprint(&prepared)) {
            self.prepared = Some(prepared);
            return Ok(Stage::Held(d));
        }
        let own = prepared.loaded.config.health.gate;
        let policy = effective_gate(own, last_good_gate(history, target, &self.commit));
        if policy != own {
            tracing::info!(commit = %self.commit, own = ?own, applied = ?policy, "health.gate is loosened only from the next commit on");
        }
        let gate = gate_reason(policy, &prepared.plan, history.unverified_on_disk());
        self.gate = gate.clone();
        self.prepared = Some(prepared);
        Ok(Stage::Planned { gate })
    }

    /// What the health gate must check for the applied commit (pure): its checks (or the
    /// role's defaults) and its `health:` settings. Logs that the wait starts.
    fn trial(&self) -> HealthTrial {
        let loaded = &self.prepared.as_ref().expect("planned before").loaded;
        let cfg = &loaded.config;
        if let Some(gate) = &self.gate {
            tracing::info!(commit = %self.commit, reason = %gate, timeout = ?cfg.health.timeout, "applied; waiting for K3s health");
        }
        let role = crate::health::K3sRole::from_k3os(&cfg.k3os);
        HealthTrial {
            commit: self.commit.clone(),
            checks: effective_checks(&cfg.health, role),
            config: cfg.health.clone(),
            desired_paths: self
                .applied
                .as_ref()
                .map(|a| a.desired_paths.clone())
                .unwrap_or_default(),
        }
    }

    /// Reverts to the last good commit. Writes under the root and state dir; runs effects.
    async fn revert(
        &mut self,
        target: &Target,
        runner: &dyn CommandRunner,
        history: &CommitHistory,
    ) -> Result<(), GuardedError> {
        let to = history.last_good().map(|g| g.commit.clone());
        match revert_to_last_good(target, runner, history).await {
            Ok(Some(done)) => {
                self.revert = Some(done);
                Ok(())
            }
            // Only asked for when a last good commit exists, and nothing removes it meanwhile.
            Ok(None) => Err(HistoryError::Corrupt {
                path: history.path().to_path_buf(),
                message: "the last good commit vanished during the revert".into(),
            }
            .into()),
            Err(source) => {
                let to = to.unwrap_or_default();
                tracing::error!(commit = %self.commit, %to, error = %source, "revert to the last good commit failed");
                Err(GuardedError::Revert {
                    commit: self.commit.clone(),
                    to,
                    source,
                })
            }
        }
    }

    fn summary(&self) -> String {
        self.report.as_ref().map(report_summary).unwrap_or_default()
    }

    /// The typed outcome of the run, logged.
    fn conclude(self, how: Conclusion, history: &CommitHistory) -> GuardedOutcome {
        let summary = self.summary();
        let commit = self.commit;
        let (applied, gate, report) = (self.applied, self.gate, self.report);
        let missing = "the driver executes decide's steps in order";
        match how {
            Conclusion::Refused => {
                let bad = history.bad(&commit).cloned().expect(missing);
                if let Some((to, _)) = &self.revert {
                    tracing::warn!(%commit, %to, "finished an interrupted revert to the last good commit");
                }
                // Asked again on every poll while the branch points at it: the caller reports it.
                tracing::debug!(%commit, reason = %bad.reason, "refusing a commit that failed its health gate before");
                GuardedOutcome::Refused {
                    commit,
                    bad,
                    revert: self.revert.map(|(_, a)| a),
                }
            }
            Conclusion::Deferred => {
                let deferral = self.held.expect(missing);
                let loaded = self.prepared.expect(missing).loaded;
                tracing::debug!(%commit, ?deferral, "held for the rollout gates; nothing written");
                GuardedOutcome::Deferred {
                    commit,
                    deferral,
                    loaded,
                }
            }
            Conclusion::Applied => {
                tracing::info!(%commit, "applied (not health-gated)");
                GuardedOutcome::Applied {
                    commit,
                    applied: applied.expect(missing),
                }
            }
            Conclusion::Healthy => {
                let report = report.expect(missing);
                tracing::info!(%commit, rounds = report.rounds, "healthy; recorded as the last good commit");
                GuardedOutcome::Healthy {
                    commit,
                    applied: applied.expect(missing),
                    gate: gate.expect(missing),
                    report,
                }
            }
            Conclusion::Kept(why) => {
                match why {
                    KeptReason::IsLastGood => {
                        tracing::warn!(%commit, health = %summary, "the last good commit is unhealthy after re-applying it; keeping it (nothing to revert to)")
                    }
                    KeptReason::NoPreviousGood => {
                        tracing::warn!(%commit, health = %summary, "commit is unhealthy and there is no earlier good commit to revert to; keeping its files, recorded bad")
                    }
                }
                GuardedOutcome::Kept {
                    commit,
                    applied: applied.expect(missing),
                    gate: gate.expect(missing),
                    report: report.expect(missing),
                    why,
                }
            }
            Conclusion::RolledBack => {
                let (to, revert) = self.revert.expect(missing);
                tracing::warn!(
                    %commit,
                    %to,
                    health = %summary,
                    config_rollbacks_total = history.config_rollbacks_total(),
                    "commit failed its health gate; rolled back to the last good commit"
                );
                GuardedOutcome::RolledBack {
                    commit,
                    to,
                    applied: applied.expect(missing),
                    gate: gate.expect(missing),
                    report: report.expect(missing),
                    revert,
                }
            }
        }
    }
}

/// A gated apply whose files are on disk and whose health verdict is awaited: what to check,
/// and the driver's state to finish it with [`finish_guarded`].
pub struct PendingVerdict {
    run: Run,
    /// What the health gate checks.
    pub trial: HealthTrial,
}

/// How far [`start_guarded`] got.
// One value per apply, moved once: boxing the large variant buys nothing.
#[allow(clippy::large_enum_variant)]
pub enum Progress {
    /// The apply ended (not gated, refused, or failed before applying).
    Done(GuardedOutcome),
    /// The commit is applied and gated: wait for health (e.g. with [`wait_healthy`]), then
    /// call [`finish_guarded`] with the report.
    AwaitingHealth(PendingVerdict),
}

/// Executes [`decide`]'s steps from `stage` until the apply concludes or waits for health.
async fn drive(
    mut run: Run,
    mut stage: Stage,
    target: &Target,
    runner: &dyn CommandRunner,
    history: &mut CommitHistory,
) -> Result<Progress, GuardedError> {
    loop {
        let steps = decide(&history.facts(&run.commit), &run.commit, &stage);
        for step in steps {
            match step {
                Step::Plan => {
                    stage = run.plan(target, history, run.permit).await?;
                    if let Stage::Held(d) = &stage {
                        run.held = Some(d.clone());
                    }
                }
                Step::Begin => history.begin(&run.commit),
                Step::Apply => {
                    let prepared = run.prepared.as_ref().expect("planned before applying");
                    let applied = apply_plan(prepared, &run.commit, target, runner)
                        .map_err(|e| run.apply_err(e))?;
                    run.applied = Some(applied);
                }
                Step::AwaitHealth => {
                    let trial = run.trial();
                    return Ok(Progress::AwaitingHealth(PendingVerdict { run, trial }));
                }
                Step::RecordGood => {
                    history.record_good(&run.commit, &run.new, unix_now());
                    if let Some(p) = &run.prepared {
                        history.remember_gate(&run.commit, p.loaded.config.health.gate);
                    }
                }
                Step::RecordBad => history.record_bad(&run.commit, &run.summary(), unix_now()),
                Step::RevertToLastGood => run.revert(target, runner, history).await?,
                Step::RecordRollback => history.record_rollback(),
                Step::Save => history.save()?,
                Step::Conclude(how) => return Ok(Progress::Done(run.conclude(how, history))),
            }
        }
    }
}

/// The first half of a health-gated apply: refuse a bad commit, plan, apply, and stop where
/// the health verdict is needed (see the module docs and [`apply_guarded`]).
///
/// Side effects: writes under the root and the state dir (files, journal, the history), runs
/// effects through `runner` (k3s restarts), fetches ssh keys as `prepare` does.
pub async fn start_guarded(
    new: &Snapshot,
    target: &Target,
    runner: &dyn CommandRunner,
    history: &mut CommitHistory,
    permit: Permit,
) -> Result<Progress, GuardedError> {
    let commit = new.commit.clone().ok_or(GuardedError::NoCommit)?;
    let run = Run {
        commit,
        new: new.clone(),
        prepared: None,
        gate: None,
        applied: None,
        report: None,
        revert: None,
        held: None,
        permit,
    };
    drive(run, Stage::Arrived, target, runner, history).await
}

/// The second half: records the verdict of `report` and, when unhealthy, reverts to the last
/// good commit. Writes the history; a revert writes under the root and runs effects.
pub async fn finish_guarded(
    pending: PendingVerdict,
    report: HealthReport,
    target: &Target,
    runner: &dyn CommandRunner,
    history: &mut CommitHistory,
) -> Result<GuardedOutcome, GuardedError> {
    let mut run = pending.run;
    let healthy = report.healthy();
    run.report = Some(report);
    match drive(run, Stage::Judged { healthy }, target, runner, history).await? {
        Progress::Done(outcome) => Ok(outcome),
        // decide never asks for a second wait after a verdict.
        Progress::AwaitingHealth(p) => Err(GuardedError::Task(format!(
            "commit {}: a second health wait was asked for after the verdict (a bug)",
            p.trial.commit
        ))),
    }
}

/// Applies `new` with a health gate and automatic rollback (see the module docs):
/// [`start_guarded`], the health wait, [`finish_guarded`]; each half a loop that asks
/// [`decide`] for the next steps and executes them in order.
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
    match start_guarded(new, target, runner, history, Permit::ALL).await? {
        Progress::Done(outcome) => Ok(outcome),
        Progress::AwaitingHealth(pending) => {
            let t = &pending.trial;
            let report = wait_healthy(&t.checks, &t.config, health).await;
            finish_guarded(pending, report, target, runner, history).await
        }
    }
}
