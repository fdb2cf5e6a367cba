//! [`GuardedApplier`]: [`super::apply_guarded`] behind the daemon loop's [`SnapshotApplier`]
//! seam, with the commit history loaded once and kept, and the outcome translated into the
//! loop's typed [`ApplyOutcome`].

use std::sync::Arc;

use super::{apply_guarded, CommitHistory, GuardedError, GuardedOutcome};
use crate::health::{report_summary, HealthContext};
use crate::reconcile::{ApplyOutcome, Disposition, SnapshotApplier, Target};
use crate::runner::CommandRunner;
use crate::snapshot::Snapshot;

/// The daemon's health-gated applier.
pub struct GuardedApplier {
    history: Option<CommitHistory>,
    /// What the health checks need (runner, clock, root, node name).
    health: HealthContext,
}

impl GuardedApplier {
    /// An applier judging health through `health`. The history is loaded at the first apply.
    pub fn new(health: HealthContext) -> Self {
        GuardedApplier {
            history: None,
            health,
        }
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

impl SnapshotApplier for GuardedApplier {
    type Error = GuardedError;

    /// Applies with a health gate (see [`apply_guarded`]). Writes under the root and state
    /// dir, runs effects and health checks, may revert.
    async fn apply(
        &mut self,
        snapshot: &Snapshot,
        target: &Target,
        runner: Arc<dyn CommandRunner>,
    ) -> Result<ApplyOutcome, GuardedError> {
        let mut history = match self.history.take() {
            Some(h) => h,
            None => CommitHistory::load(&target.state_dir)?,
        };
        // The apply (file I/O, fsync, effect commands such as a slow `systemctl restart k3s`)
        // blocks; run it on a blocking thread so the daemon's single runtime thread keeps
        // serving metrics and watchdog pings. The health waits inside still use the runtime's
        // timers, which that thread drives while it awaits this task.
        let (snapshot, target) = (snapshot.clone(), target.clone());
        let ctx = self.health.clone();
        let handle = tokio::runtime::Handle::current();
        let (history, result) = tokio::task::spawn_blocking(move || {
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
        Ok(outcome(&result?))
    }
}
