//! [`GuardedApplier`]: the health-gated apply behind the daemon loop's [`SnapshotApplier`]
//! seam, in its two halves ([`start_guarded`], then [`finish_guarded`] once the loop has the
//! health report), with the commit history loaded once and kept, and the outcome translated
//! into the loop's typed [`ApplyOutcome`].

use std::sync::Arc;

use super::{
    finish_guarded, start_guarded, CommitHistory, Deferral, GuardedError, GuardedOutcome,
    HistoryError, PendingVerdict, Progress,
};
use crate::health::{report_summary, HealthReport};
use crate::reconcile::{ApplyOutcome, Applying, Disposition, Permit, SnapshotApplier, Target};
use crate::runner::CommandRunner;
use crate::snapshot::Snapshot;

/// The daemon's health-gated applier.
#[derive(Default)]
pub struct GuardedApplier {
    history: Option<CommitHistory>,
    /// The apply waiting for its health verdict, if any.
    pending: Option<PendingVerdict>,
}

impl GuardedApplier {
    /// An applier whose history is loaded at the first apply. The caller runs the health
    /// waits ([`Applying::AwaitingHealth`]).
    pub fn new() -> Self {
        Self::default()
    }
}

/// The loop's view of a guarded apply (pure apart from logging a kept unhealthy commit).
fn outcome(o: &GuardedOutcome) -> ApplyOutcome {
    match o {
        GuardedOutcome::Applied { applied, .. } | GuardedOutcome::Healthy { applied, .. } => {
            ApplyOutcome::kept(applied)
        }
        GuardedOutcome::Kept {
            commit,
            applied,
            why,
            report,
            ..
        } => {
            let summary = report_summary(report);
            tracing::warn!("commit {commit} is unhealthy and kept ({why:?}): {summary}");
            let mut out = ApplyOutcome::kept(applied);
            out.disposition = Disposition::Kept {
                unhealthy: Some(summary),
            };
            out
        }
        GuardedOutcome::RolledBack {
            to,
            applied,
            report,
            revert,
            ..
        } => {
            let mut out = ApplyOutcome::kept(revert);
            out.changed_paths
                .extend(applied.changed_paths.iter().cloned());
            out.effect_failures += applied.effects.failures;
            out.disposition = Disposition::RolledBack {
                to: to.clone(),
                health: report_summary(report),
            };
            out.loaded = None;
            out
        }
        GuardedOutcome::Deferred {
            deferral, loaded, ..
        } => ApplyOutcome {
            changed_paths: Vec::new(),
            desired_paths: Vec::new(),
            effect_failures: 0,
            disposition: Disposition::Deferred {
                restart: match deferral {
                    Deferral::RestartK3s { unit, fingerprint } => {
                        Some((unit.clone(), fingerprint.clone()))
                    }
                    Deferral::Wave => None,
                },
            },
            loaded: Some(loaded.clone()),
        },
        GuardedOutcome::Refused { bad, revert, .. } => {
            let (changed_paths, desired_paths, effect_failures) = match revert {
                Some(r) => (
                    r.changed_paths.clone(),
                    r.desired_paths.clone(),
                    r.effects.failures,
                ),
                None => Default::default(),
            };
            ApplyOutcome {
                changed_paths,
                desired_paths,
                effect_failures,
                disposition: Disposition::Refused {
                    reason: bad.reason.clone(),
                },
                loaded: None,
            }
        }
    }
}

impl GuardedApplier {
    /// The loaded history (loaded from the state dir on first use). Reads disk.
    fn history(&mut self, target: &Target) -> Result<CommitHistory, HistoryError> {
        match self.history.take() {
            Some(h) => Ok(h),
            None => CommitHistory::load(&target.state_dir),
        }
    }
}

impl SnapshotApplier for GuardedApplier {
    type Error = GuardedError;

    /// Applies with a health gate up to the verdict (see [`start_guarded`]). Writes under the
    /// root and state dir, runs effects, may complete an unfinished revert.
    async fn apply(
        &mut self,
        snapshot: &Snapshot,
        target: &Target,
        runner: Arc<dyn CommandRunner>,
        permit: Permit,
    ) -> Result<Applying, GuardedError> {
        if self.pending.is_some() {
            return Err(GuardedError::Task(
                "an apply was started while another waits for its health verdict (a bug)".into(),
            ));
        }
        let mut history = self.history(target)?;
        // The apply (file I/O, fsync, effect commands such as a slow `systemctl restart k3s`)
        // blocks; run it on a blocking thread so the daemon's single runtime thread keeps
        // serving metrics and watchdog pings.
        let (snapshot, target) = (snapshot.clone(), target.clone());
        let handle = tokio::runtime::Handle::current();
        let (history, result) = tokio::task::spawn_blocking(move || {
            let r = handle.block_on(start_guarded(
                &snapshot,
                &target,
                runner.as_ref(),
                &mut history,
                permit,
            ));
            (history, r)
        })
        .await
        .map_err(|e| GuardedError::Task(e.to_string()))?;
        self.history = Some(history);
        match result? {
            Progress::Done(o) => Ok(Applying::Done(outcome(&o))),
            Progress::AwaitingHealth(p) => {
                let trial = p.trial.clone();
                self.pending = Some(p);
                Ok(Applying::AwaitingHealth(trial))
            }
        }
    }

    /// Records the verdict and, when unhealthy, reverts (see [`finish_guarded`]). Writes the
    /// history; a revert writes under the root and runs effects.
    async fn judge(
        &mut self,
        report: HealthReport,
        target: &Target,
        runner: Arc<dyn CommandRunner>,
    ) -> Result<ApplyOutcome, GuardedError> {
        let pending = self.pending.take().ok_or_else(|| {
            GuardedError::Task("a verdict came without an apply waiting for one (a bug)".into())
        })?;
        let mut history = self.history(target)?;
        let target = target.clone();
        let handle = tokio::runtime::Handle::current();
        let (history, result) = tokio::task::spawn_blocking(move || {
            let r = handle.block_on(finish_guarded(
                pending,
                report,
                &target,
                runner.as_ref(),
                &mut history,
            ));
            (history, r)
        })
        .await
        .map_err(|e| GuardedError::Task(e.to_string()))?;
        self.history = Some(history);
        Ok(outcome(&result?))
    }
}
