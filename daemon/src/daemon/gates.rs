//! How the loop runs the rollout gates ([`crate::rollout`]) before a disruptive action:
//!
//! - **config**: a new commit whose plan restarts k3s is held (nothing written,
//!   `Disposition::Deferred`) until [`Rollout::request`] says "proceed" (wave, halt, window,
//!   lock, drain passed); then it is applied with a permit, judged by its health gate, and
//!   [`Rollout::settle`] uncordons and releases the slot, or marks the node failed;
//! - **upgrade**: a staged image's trial reboot waits the same way (`Note::AwaitingPermit`);
//!   the slot is held across the reboot and settled when the trial commits or rolls back;
//! - **upkeep** ([`TICK`]): while a change is pending or a slot is held, the gates are asked
//!   again (a freed slot, a finished drain, an opened window) and a held Lease is renewed.
//!
//! Policy (`rollout:`) comes from the newest config the node has loaded; the coordination
//! backend from the agent config.

use std::time::Duration;

use tracing::{debug, info};

use super::schedule::now_unix;
use super::Daemon;
use crate::config::rollout::RolloutConfig;
use crate::config::{self, Loaded};
use crate::reconcile::{ApplyOutcome, Applying, Disposition, Permit, SnapshotApplier};
use crate::rollout::driver::{Change, Published, Rollout};
use crate::rollout::{DisruptionKind, Verdict};
use crate::snapshot::Snapshot;
use crate::source::Oid;
use crate::status::short;
use crate::upgrade::machine::{Lifecycle, Note};
use crate::upgrade::pass::Pass;

/// How often the gates are asked again while a change is pending or a slot is held, and how
/// often a held slot is renewed while a long step runs.
pub(super) const TICK: Duration = Duration::from_secs(5);

/// Awaits `fut` (a long step: an apply with a k3s restart, an image download), renewing a
/// held slot meanwhile so no other node breaks it. Network only when a renewal is due.
pub(super) async fn holding<F: std::future::Future>(
    rollout: &mut Rollout,
    cfg: &RolloutConfig,
    fut: F,
) -> F::Output {
    if !rollout.lock_held() {
        return fut.await;
    }
    tokio::pin!(fut);
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            out = &mut fut => return out,
            _ = tick.tick() => rollout.renew(cfg).await,
        }
    }
}

impl<A: SnapshotApplier> Daemon<A> {
    /// The rollout policy of the newest config the node loaded.
    pub(super) fn policy(&self) -> RolloutConfig {
        self.policy.clone().unwrap_or_default()
    }

    /// Remembers `loaded`'s `rollout:` policy as the current one.
    pub(super) fn note_policy(&mut self, loaded: &Loaded) {
        self.policy = Some(loaded.config.rollout.clone());
    }

    /// Applies a new commit: asks the gates first when its plan needs a disruption (or, with
    /// `waves_for_all`, any change), then applies with the permit they give. Writes, runs
    /// effects; network to the lock backend and the cluster as the gates need.
    pub(super) async fn apply_through_gates(
        &mut self,
        commit: Oid,
        committed_at: i64,
        snapshot: &Snapshot,
    ) -> Result<Applying, A::Error> {
        // The commit's own policy decides whether its waves hold files back (a commit that
        // turns `waves_for_all` on is already held by it); one config load, no network.
        let t = &self.node.target;
        let own = config::load(snapshot, &t.hostname, &t.load).map(|l| l.config.rollout);
        let policy = own.unwrap_or_else(|_| self.policy());
        let mut permit = Permit {
            restart_k3s: self.rollout.permits(DisruptionKind::RestartK3s),
            change: !policy.waves_for_all || self.rollout.wave_open(&policy, committed_at),
        };
        loop {
            let (target, runner) = (self.node.target.clone(), self.node.effects.clone());
            let (sd, policy) = (self.systemd, self.policy());
            let guarded = self.applier.apply(snapshot, &target, runner, permit);
            let applying = holding(&mut self.rollout, &policy, sd.guard(guarded)).await?;
            let Applying::Done(o) = &applying else {
                return Ok(applying);
            };
            let Disposition::Deferred { restart } = &o.disposition else {
                return Ok(applying);
            };
            let Some(loaded) = &o.loaded else {
                return Ok(applying);
            };
            self.note_policy(loaded);
            let cfg = loaded.config.rollout.clone();
            let before = permit;
            match restart {
                Some((_, fingerprint)) if !permit.restart_k3s => {
                    self.rollout.note(Change {
                        kind: DisruptionKind::RestartK3s,
                        commit: commit.to_string(),
                        committed_at,
                        fingerprint: fingerprint.clone(),
                    });
                    permit.restart_k3s = self.rollout.request(&cfg).await;
                }
                _ => {
                    permit.change =
                        !cfg.waves_for_all || self.rollout.wave_open(&cfg, committed_at);
                }
            }
            self.rollout_report().await;
            if permit == before {
                return Ok(applying);
            }
        }
    }

    /// A commit held by the gates: logged once per gate, the poll delay and status line.
    pub(super) fn deferred(&mut self, commit: Oid) -> (Duration, String) {
        let state = self.rollout.status().label();
        let line = format!(
            "commit {} waits for the rollout gates ({state}); staying on {}",
            short(&commit.to_string()),
            self.ledger.applied_text()
        );
        if self.last_deferred != Some((commit, state)) {
            info!("{line}");
            self.last_deferred = Some((commit, state));
        } else {
            debug!("{line}");
        }
        self.succeeded();
        (self.interval(), line)
    }

    /// After a config apply that was a permitted disruption: settles the gates with its
    /// verdict (uncordon, release, or mark failed). Network.
    pub(super) async fn settle_restart(&mut self, result: &Result<ApplyOutcome, String>) {
        if !self.rollout.permits(DisruptionKind::RestartK3s) {
            return;
        }
        let verdict = match result {
            Ok(o) => match &o.disposition {
                Disposition::Kept { unhealthy: None } => Verdict::Healthy,
                Disposition::Kept { unhealthy: Some(s) } => Verdict::RolledBack(s.clone()),
                Disposition::RolledBack { health, .. } => Verdict::RolledBack(health.clone()),
                Disposition::Refused { .. } | Disposition::Deferred { .. } => return,
            },
            Err(e) => Verdict::RolledBack(e.clone()),
        };
        let cfg = self.policy();
        self.rollout.settle(&cfg, verdict).await;
        self.rollout_report().await;
    }

    /// After an upgrade pass: a staged image waiting for a permit asks the gates (and, once
    /// they allow, the pass runs again); a trial that committed or rolled back settles them.
    /// Returns whether the pass should run again now. Network.
    pub(super) async fn upgrade_gates(&mut self, pass: &Pass) -> bool {
        let Some(r) = &pass.report else {
            return false;
        };
        let waiting = r.notes.iter().find_map(|n| match n {
            Note::AwaitingPermit(image) => Some(image.to_string()),
            _ => None,
        });
        let cfg = self.policy();
        if let Some(image) = waiting {
            let (commit, committed_at) = self.last_good_commit();
            self.rollout.note(Change {
                kind: DisruptionKind::Reboot,
                commit,
                committed_at,
                fingerprint: image,
            });
            let go = self.rollout.request(&cfg).await;
            self.rollout_report().await;
            return go;
        }
        if self.rollout.permits(DisruptionKind::Reboot) {
            let verdict = match &r.state.lifecycle {
                Lifecycle::Committed { .. } => Some(Verdict::Healthy),
                Lifecycle::RolledBack { reason, .. } => {
                    Some(Verdict::RolledBack(reason.to_string()))
                }
                _ => None,
            };
            if let Some(v) = verdict {
                self.rollout.settle(&cfg, v).await;
                self.rollout_report().await;
            }
        }
        false
    }

    /// The last applied commit and its committer time (for an upgrade's wave clock).
    fn last_good_commit(&self) -> (String, i64) {
        let commit = self
            .ledger
            .status
            .last_applied_commit
            .clone()
            .unwrap_or_default();
        let at = self
            .last_good
            .as_ref()
            .and_then(|g| g.committed_at)
            .unwrap_or_else(|| now_unix() as i64);
        (commit, at)
    }

    /// Upkeep while a change is pending or a slot is held: renew, re-ask the gates, and start
    /// the disruption they now allow (a poll for a config change, a pass for an upgrade).
    pub(super) async fn rollout_tick(&mut self) {
        let cfg = self.policy();
        // The commit the node follows is the newest a poll accepted, not the last applied
        // (a failed commit is rolled back, so the last applied is older than the failure).
        let head = self.head.map(|c| c.to_string());
        self.rollout.tick(&cfg, head.as_deref()).await;
        if let Some(change) = self.rollout.change().cloned() {
            let ready = self.rollout.permits(change.kind) || self.rollout.request(&cfg).await;
            if ready && self.wait.is_none() {
                match change.kind {
                    DisruptionKind::RestartK3s => self.next_poll = tokio::time::Instant::now(),
                    DisruptionKind::Reboot => self.upgrade_pass().await,
                }
            }
        }
        self.rollout_report().await;
    }

    /// Says where the rollout stands: status file, metrics, and the Node object.
    pub(super) async fn rollout_report(&mut self) {
        let state = self.rollout.status().label();
        let s = &mut self.ledger.status;
        s.rollout_state = Some(state.to_string());
        s.rollout_detail = self.rollout.detail().map(str::to_string);
        s.rollout_change = self.rollout.change().map(|c| {
            let what = match c.kind {
                DisruptionKind::RestartK3s => "k3s restart",
                DisruptionKind::Reboot => "reboot",
            };
            format!("{what} for commit {}", short(&c.commit))
        });
        self.ledger
            .metrics
            .set_rollout(state, self.rollout.lock_held(), self.rollout.evictions());
        let published = Published {
            commit: s.last_applied_commit.clone(),
            state: String::new(),
            os_version: self.os_version.clone(),
            last_error: s.last_error.clone(),
        };
        self.rollout.publish(published).await;
    }
}
