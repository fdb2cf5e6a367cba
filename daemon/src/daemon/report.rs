//! How the loop records what a poll ended in: a commit applied (the new baseline), rejected
//! by its health gate, refused by verification, or a failure (backoff). Each updates the
//! [`Ledger`] (status and metrics), logs once, and returns the delay until the next poll with
//! the status line for systemd.
//!
//! [`Ledger`]: crate::status::Ledger

use std::time::Duration;

use tracing::{debug, error, info, warn};

use super::schedule::{backoff, now_unix};
use super::{Arrival, Correction, Daemon, LastGood};
use crate::metrics::ReconcileResult;
use crate::reconcile::{ApplyOutcome, Disposition, SnapshotApplier};
use crate::source::{Oid, Refusal};
use crate::status::short;

impl<A: SnapshotApplier> Daemon<A> {
    /// The applier kept `commit`: it is the new baseline and last good commit.
    pub(super) fn applied(
        &mut self,
        arrival: Arrival,
        outcome: ApplyOutcome,
    ) -> (Duration, String) {
        let Arrival {
            commit,
            committed_at,
            signer,
            snapshot,
        } = arrival;
        let c = commit.to_string();
        let new_commit = self.last_applied != Some(commit);
        let changed = &outcome.changed_paths;
        if new_commit || !changed.is_empty() {
            let signed = signer
                .as_deref()
                .map(|s| format!(" signed by {s}"))
                .unwrap_or_default();
            let list = if changed.is_empty() {
                String::new()
            } else {
                format!(": {}", changed.join(", "))
            };
            info!(
                "applied commit {c}{signed}: {} file(s) changed{list}",
                changed.len()
            );
            self.ledger.reconciled(ReconcileResult::Success, now_unix());
        } else {
            info!("commit {c}: files already match");
            self.ledger.reconciled(ReconcileResult::Noop, now_unix());
        }
        if outcome.effect_failures > 0 {
            let n = outcome.effect_failures;
            warn!("commit {c}: {n} effect command(s) failed (see above)");
        }
        if let Some(loaded) = &outcome.loaded {
            if new_commit {
                for w in &loaded.warnings {
                    warn!("commit {}: {w}", short(&c));
                }
            }
            self.ledger.config_warnings(loaded.warnings.len() as u64);
        }
        self.ledger.applied(&c, signer, new_commit, now_unix());
        self.last_applied = Some(commit);
        self.last_good = Some(LastGood {
            snapshot,
            committed_at: Some(committed_at),
            loaded: outcome.loaded.clone(),
        });
        self.applied_this_run = true;
        self.watch(&outcome.desired_paths);
        self.succeeded();
        // Persist the new baseline right away (anti-rollback survives a crash).
        self.ledger.save();
        (self.interval(), format!("applied {}", short(&c)))
    }

    /// The applier did not keep `commit` (rolled back, or refused as bad before).
    pub(super) fn rejected(&mut self, commit: Oid, outcome: &ApplyOutcome) -> (Duration, String) {
        let (why, rolled_back) = match &outcome.disposition {
            Disposition::RolledBack { to, health } => (
                format!("commit {commit} failed its health gate ({health}); rolled back to {to}"),
                true,
            ),
            Disposition::Refused { reason } => (
                format!(
                    "commit {commit} failed its health gate before ({reason}); not applied again"
                ),
                false,
            ),
            Disposition::Kept { .. } | Disposition::Deferred { .. } => {
                unreachable!("only rolled back and refused snapshots are rejected")
            }
        };
        let again =
            self.last_rejected == Some(commit) && !rolled_back && outcome.changed_paths.is_empty();
        self.last_rejected = Some(commit);
        if again {
            debug!("{why}; staying on {}", self.ledger.applied_text());
            self.ledger.reconciled(ReconcileResult::Error, now_unix());
            return (self.interval(), why);
        }
        warn!("{why}; staying on {}", self.ledger.applied_text());
        if rolled_back {
            self.ledger.metrics.config_rolled_back();
        }
        if !outcome.desired_paths.is_empty() {
            self.watch(&outcome.desired_paths);
        }
        self.ledger.error(&why, now_unix());
        self.ledger.save();
        (self.interval(), why)
    }

    pub(super) fn succeeded(&mut self) {
        self.failures = 0;
        self.last_rejected = None;
        self.ledger.succeeded(now_unix());
    }

    pub(super) fn refused(&mut self, commit: Oid, reason: &Refusal) -> (Duration, String) {
        let label = reason.label();
        let line = format!(
            "refused commit {commit}: {reason}; staying on {}",
            self.ledger.applied_text()
        );
        let first = self.last_refused != Some((commit, label));
        if first {
            warn!("{line}");
            self.last_refused = Some((commit, label));
        } else {
            debug!("{line}");
        }
        self.ledger
            .refused(label, format!("{commit}: {reason}"), first, now_unix());
        self.failures = 0;
        (self.interval(), line)
    }

    pub(super) fn failed(&mut self, what: &str) -> (Duration, String) {
        self.failures = self.failures.saturating_add(1);
        self.last_rejected = None;
        let delay = backoff(self.failures);
        let line = format!(
            "{what}; last good commit {} stays applied; retrying in {}s (backoff, attempt {})",
            self.ledger.applied_text(),
            delay.as_secs(),
            self.failures
        );
        warn!("{line}");
        self.ledger.error(what, now_unix());
        (delay, line)
    }

    /// Records what a correction did: drift reverted (counted, streak), or nothing.
    pub(super) fn corrected(
        &mut self,
        why: Correction,
        seen: &str,
        result: Result<ApplyOutcome, A::Error>,
    ) {
        let o = match result {
            Ok(o) => o,
            Err(e) => {
                return error!(
                    "{why}: re-applying {} failed: {e}",
                    self.ledger.applied_text()
                )
            }
        };
        if let (Some(g), Some(l)) = (&mut self.last_good, &o.loaded) {
            g.loaded.get_or_insert_with(|| l.clone());
        }
        self.watch(&o.desired_paths);
        self.drift_reverted(why, seen, &o.changed_paths);
    }

    /// Logs and counts `changed` paths reverted by a correction; extends the drift streak.
    pub(super) fn drift_reverted(&mut self, why: Correction, seen: &str, changed: &[String]) {
        if changed.is_empty() {
            return debug!("{why}: no drift ({seen})");
        }
        let list = changed.join(", ");
        let applied = self.ledger.applied_text();
        warn!("{why}: reverted manual change of {list} (back to commit {applied})");
        self.ledger.drift_corrected(changed.len() as u64);
        if why == Correction::Drift {
            if let Some(d) = self.drift_streak.corrected(std::time::Instant::now()) {
                warn!(
                    "drift: {} corrections in a row; something keeps changing managed files; \
                     holding drift events for {}s",
                    self.drift_streak.count(),
                    d.as_secs()
                );
            }
        }
        self.ledger.save();
        self.systemd
            .status(&format!("applied {applied}; reverted drift of {list}"));
    }
}
