//! Health waits that do not stop the loop. A gated apply (a new commit, or a correction under
//! `health.gate: all` or of an unverified config) and a trial boot of an A/B upgrade both wait
//! up to `health.timeout` for a verdict. The wait is a future the loop polls next to its other
//! arms, so meanwhile:
//!
//! - the status file and systemd's `STATUS=` say what is judged and how long is left (every
//!   [`STATUS_EVERY`], and at the start, so `bosun status` works during a first apply);
//! - drift is reverted to the files being judged (the commit under trial, or for a trial boot
//!   the last good config), re-applied as they are, without a second gate;
//! - polls pause; a SIGHUP is remembered and polls as soon as the wait ends;
//! - SIGTERM stops the daemon at once. The next start re-asserts the last good commit (health
//!   gated, because the commit on disk was never verified) and the interrupted commit is tried
//!   again with a fresh wait on the next poll; an interrupted trial boot is judged again (its
//!   trial was recorded before the wait, and the upgrade's own trial timeout still counts).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tracing::info;

use super::gates::holding;
use super::schedule::now_unix;
use super::{Arrival, Correction, Daemon};
use crate::health::{wait_healthy, HealthReport};
use crate::reconcile::{self, HealthTrial, SnapshotApplier, Target};
use crate::status::short;
use crate::upgrade::pass::{finish, Judging, Pass};

/// How often the status is rewritten during a wait.
pub(super) const STATUS_EVERY: Duration = Duration::from_secs(5);

/// Who started a gated apply.
pub(super) enum Caller {
    /// A poll's apply of a new commit.
    Poll(Arrival),
    /// A correction of the last good commit.
    Correction { why: Correction, seen: String },
}

/// What a wait judges.
// At most one exists at a time, moved once: boxing a variant buys nothing.
#[allow(clippy::large_enum_variant)]
pub(super) enum Origin {
    /// A gated apply, and what it must check.
    Apply(Caller, HealthTrial),
    /// A trial boot of an A/B upgrade.
    Upgrade(Judging),
}

/// A health wait in progress.
pub(super) struct Wait {
    origin: Origin,
    /// What is judged, for status lines.
    what: String,
    /// Unix seconds when the gate gives up.
    deadline: u64,
    future: Pin<Box<dyn Future<Output = HealthReport>>>,
}

/// The report of the wait in progress; never resolves without one.
pub(super) async fn report(wait: &mut Option<Wait>) -> HealthReport {
    match wait {
        Some(w) => w.future.as_mut().await,
        None => std::future::pending().await,
    }
}

impl<A: SnapshotApplier> Daemon<A> {
    /// Starts waiting for the health verdict of `origin`: the wait runs next to the loop's
    /// other arms. Writes the status file.
    pub(super) fn start_wait(&mut self, origin: Origin) {
        let (what, checks, health) = match &origin {
            Origin::Apply(_, t) => (
                format!("commit {}", short(&t.commit)),
                t.checks.clone(),
                t.config.clone(),
            ),
            Origin::Upgrade(j) => (
                "the trial boot".to_string(),
                j.checks.clone(),
                j.health.clone(),
            ),
        };
        if let Origin::Apply(_, t) = &origin {
            self.watch(&t.desired_paths);
        }
        let ctx = self.node.health_context();
        let timeout = health.timeout;
        let future = Box::pin(async move { wait_healthy(&checks, &health, &ctx).await });
        let deadline = now_unix() + timeout.as_secs();
        info!(
            "waiting for K3s health of {what} (up to {}s)",
            timeout.as_secs()
        );
        self.wait = Some(Wait {
            origin,
            what,
            deadline,
            future,
        });
        self.waiting_status();
        if !self.ready {
            self.ready = true;
            self.systemd.ready("waiting for K3s health");
        }
    }

    /// Writes the status (and systemd's `STATUS=`) of the wait in progress.
    pub(super) fn waiting_status(&mut self) {
        let Some(w) = &self.wait else {
            return;
        };
        let left = w.deadline.saturating_sub(now_unix());
        self.systemd.status(&format!(
            "waiting for K3s health of {}, {left} s left",
            w.what
        ));
        self.ledger.status.health_wait = Some(w.what.clone());
        self.ledger.status.health_wait_until = Some(w.deadline);
        self.ledger.save();
    }

    /// The wait ended with `report`: conclude what waited (keep or revert the apply, commit
    /// or roll back the trial boot), then resume polling.
    pub(super) async fn concluded(&mut self, report: HealthReport) {
        let Some(w) = self.wait.take() else {
            return;
        };
        self.ledger.status.health_wait = None;
        self.ledger.status.health_wait_until = None;
        let (target, runner) = (self.node.target.clone(), self.node.effects.clone());
        match w.origin {
            Origin::Apply(caller, _) => {
                let (sd, policy) = (self.systemd, self.policy());
                let judged = self.applier.judge(report, &target, runner);
                let result = holding(&mut self.rollout, &policy, sd.guard(judged)).await;
                match caller {
                    Caller::Poll(arrival) => {
                        let (delay, line) = self.decided(arrival, result).await;
                        self.rollout_report().await;
                        self.systemd.status(&line);
                        self.upgrade_pass().await;
                        self.schedule_poll(delay);
                    }
                    Caller::Correction { why, seen } => {
                        self.corrected(why, &seen, result);
                        if why == Correction::Startup {
                            self.upgrade_pass().await;
                        }
                        self.ledger.save();
                    }
                }
            }
            Origin::Upgrade(j) => {
                let (sd, policy) = (self.systemd, self.policy());
                let pass = holding(&mut self.rollout, &policy, sd.guard(finish(j, &report))).await;
                self.upgrade_gates(&pass).await;
                self.upgrade_passed(pass);
                self.ledger.save();
            }
        }
    }

    /// Re-applies the files being judged, as they are (no gate, no history): the commit under
    /// trial, or the last good config during a trial boot. Writes, runs effects.
    pub(super) async fn correct_during_wait(&mut self, why: Correction, seen: &str, t: &Target) {
        let snapshot = match self.wait.as_ref().map(|w| &w.origin) {
            Some(Origin::Apply(Caller::Poll(a), _)) => a.snapshot.clone(),
            _ => match &self.last_good {
                Some(g) => g.snapshot.clone(),
                None => return,
            },
        };
        let runner = self.node.effects.clone();
        match reconcile::reapply(&snapshot, t, runner).await {
            Ok(applied) => self.drift_reverted(why, seen, &applied.changed_paths),
            Err(e) => tracing::error!("{why}: re-applying the files under trial failed: {e}"),
        }
    }

    /// SIGHUP: poll now, or as soon as a health wait ends.
    pub(super) fn hangup(&mut self) {
        if self.wait.is_some() {
            info!("SIGHUP: polling when the health wait ends");
            self.poll_asked = true;
        } else {
            info!("SIGHUP: polling now");
            self.next_poll = tokio::time::Instant::now();
        }
    }

    /// Schedules the next poll `delay` from now (at once when a SIGHUP asked for one) and
    /// records it in the status file.
    pub(super) fn schedule_poll(&mut self, delay: Duration) {
        let delay = if std::mem::take(&mut self.poll_asked) {
            Duration::ZERO
        } else {
            delay
        };
        self.next_poll = tokio::time::Instant::now() + delay;
        self.ledger.status.next_poll_at = Some(now_unix() + delay.as_secs());
        self.ledger.save();
    }

    /// Records an upgrade pass: the upgrade metrics, and the actor for the next pass.
    pub(super) fn upgrade_passed(&mut self, pass: Pass) {
        if let Some(r) = &pass.report {
            let m = r.state.metrics(r.booted);
            self.ledger.metrics.set_upgrade_text(m.render_prometheus());
            self.os_version = m.current_version;
        }
        self.upgrade = pass.actor;
    }
}
