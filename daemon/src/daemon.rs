//! `bosun daemon`: the long-running GitOps loop of a node, and nothing else.
//!
//! One task drives everything, one step at a time (a step is a poll, a drift correction or a
//! resync), so two applies never overlap:
//!
//! - **start**: clear stale git cache locks, [`apply::recover`] an interrupted transaction, read
//!   the persisted [`Status`] (the last applied commit is the anti-rollback baseline), and
//!   re-apply that commit's files from the git cache (no network) so drift is corrected even
//!   while the remote is unreachable.
//! - **poll** (every `interval` + jitter, or on SIGHUP): [`source::poll`] in `spawn_blocking`
//!   (fetch → verify → anti-rollback → snapshot), then the [`SnapshotApplier`] when the commit
//!   is new, then one pass of the A/B upgrade lifecycle ([`crate::upgrade::pass`]). A refused
//!   commit keeps the node on its last good commit (counted by reason, logged once per
//!   commit). A failing remote keeps the last good commit applied and backs off exponentially
//!   ([`backoff`]: 5 s doubling to 5 min), retrying forever.
//! - **drift** (a managed file changed, see [`crate::drift`]) and **resync** (every
//!   `drift.resync_interval`): re-apply the last good snapshot; a re-plan without changes is a
//!   no-op, so bosun's own writes never count as drift.
//! - **SIGTERM/SIGINT**: signals are only looked at between steps, so the current step finishes;
//!   then the loop exits and the process exits 0.
//!
//! systemd ([`Systemd`]): `READY=1` after the first poll's decision (applied, no-op, refused,
//! or "remote unreachable, keeping the last good commit"), `STATUS=` after each step,
//! `WATCHDOG=1` every half `WATCHDOG_USEC`, also while a step runs ([`Systemd::guard`]).
//!
//! What the loop did is recorded in the [`Ledger`] (status file and metrics together). The
//! node's capabilities (runners, boot env, upgrade actor) come from [`crate::node`].
//!
//! [`apply::recover`]: crate::apply::recover

mod ab;
mod gates;
mod report;
mod schedule;
mod startup;
mod wait;

pub use startup::DaemonError;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use tokio::time::Instant;
use tracing::{debug, info};

use crate::agent::AgentConfig;
use crate::config;
use crate::drift::{DriftStreak, DriftWatcher};
use crate::metrics::{Metrics, ReconcileResult};
use crate::node::Node;
use crate::reconcile::{ApplyOutcome, Applying, Disposition, Permit, SnapshotApplier};
use crate::rollout::driver::Rollout;
use crate::service::Systemd;
use crate::snapshot::Snapshot;
use crate::source::{self, Oid, SourceError, TransferCounters, Verdict};
use crate::status::{short, Ledger, Status};
use crate::upgrade::actor::UpgradeActor;

pub use schedule::{backoff, jittered, BACKOFF_BASE, BACKOFF_CAP};
use schedule::{now_unix, random_u64};

/// Why the last good commit is re-applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Correction {
    /// Before the first poll of the process.
    Startup,
    /// A watched managed path changed.
    Drift,
    /// The periodic full re-plan.
    Resync,
}

impl std::fmt::Display for Correction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Correction::Startup => "startup",
            Correction::Drift => "drift",
            Correction::Resync => "resync",
        })
    }
}

/// The files of the last applied commit (re-applied on drift) and its config, derived once.
#[derive(Clone)]
struct LastGood {
    snapshot: Snapshot,
    loaded: Option<Arc<config::Loaded>>,
    /// The commit's committer time (the wave clock of an upgrade it names).
    committed_at: Option<i64>,
}

/// A new commit from a poll, on its way to being applied.
struct Arrival {
    commit: Oid,
    /// Committer time (unix seconds): the wave clock.
    committed_at: i64,
    signer: Option<String>,
    snapshot: Snapshot,
}

/// The daemon loop's state.
pub struct Daemon<A: SnapshotApplier> {
    cfg: AgentConfig,
    node: Node,
    applier: A,
    ledger: Ledger,
    last_good: Option<LastGood>,
    /// Anti-rollback baseline.
    last_applied: Option<Oid>,
    last_refused: Option<(Oid, &'static str)>,
    /// The commit the applier rejected last (failed its health gate), until something else
    /// happens: refusing it again on the next polls is logged once and keeps the first reason
    /// (e.g. the rollback) as the status's last error.
    last_rejected: Option<Oid>,
    /// An accepted commit went through the applier since start-up.
    applied_this_run: bool,
    drift_streak: DriftStreak,
    failures: u32,
    systemd: Systemd,
    ready: bool,
    drift: Option<DriftWatcher>,
    /// The A/B upgrade actor, when the agent config has an `upgrade:` section. Taken out while
    /// a pass runs.
    upgrade: Option<UpgradeActor>,
    /// Pages bosun's own code out after a burst of work (see [`crate::memory`]).
    code_pages: crate::memory::CodePages,
    /// A health wait in progress (a gated apply or a trial boot), see [`wait`].
    wait: Option<wait::Wait>,
    /// When the next poll is due (polls pause during a health wait).
    next_poll: Instant,
    /// SIGHUP arrived during a health wait: poll as soon as it ends.
    poll_asked: bool,
    /// The rollout gates before disruptive actions (see [`gates`]).
    rollout: Rollout,
    /// The `rollout:` policy of the newest config loaded.
    policy: Option<crate::config::rollout::RolloutConfig>,
    /// The commit the gates held last, and at which gate (logged once per change).
    last_deferred: Option<(Oid, &'static str)>,
    /// The OS version the node runs (from the upgrade state), published on its Node.
    os_version: Option<String>,
    /// The last accepted signature check (idle polls do not repeat it).
    verify_memo: Arc<std::sync::Mutex<source::VerifyMemo>>,
    /// The newest commit a poll accepted (applied or not): a newer one lifts a FleetLock hold.
    head: Option<Oid>,
}

impl<A: SnapshotApplier> Daemon<A> {
    /// A daemon for `cfg` on `node`, applying through `applier`.
    pub fn new(cfg: AgentConfig, node: Node, applier: A) -> Self {
        let status = Status::new(&cfg.node_name, &cfg.source.url, &cfg.source.reference);
        let metrics = Arc::new(Metrics::new(Arc::new(TransferCounters::new())));
        Daemon {
            ledger: Ledger::new(&cfg.state_dir, status, metrics),
            node,
            applier,
            last_good: None,
            last_applied: None,
            last_refused: None,
            last_rejected: None,
            applied_this_run: false,
            drift_streak: DriftStreak::default(),
            failures: 0,
            systemd: Systemd::from_env(),
            ready: false,
            drift: None,
            upgrade: None,
            code_pages: crate::memory::CodePages::default(),
            wait: None,
            next_poll: Instant::now(),
            poll_asked: false,
            rollout: Rollout::idle(&cfg.node_name, &cfg.state_dir),
            policy: None,
            last_deferred: None,
            os_version: None,
            verify_memo: Arc::default(),
            head: None,
            cfg,
        }
    }

    /// The metrics this daemon updates.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.ledger.metrics.clone()
    }

    /// Runs until SIGTERM or SIGINT. Polls, applies, corrects drift, serves metrics.
    pub async fn run(mut self) -> Result<(), DaemonError> {
        let mut term = signal(SignalKind::terminate()).map_err(DaemonError::Signals)?;
        let mut int = signal(SignalKind::interrupt()).map_err(DaemonError::Signals)?;
        let mut hup = signal(SignalKind::hangup()).map_err(DaemonError::Signals)?;
        self.start().await?;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = self.serve_metrics(stop_rx).await?;
        let (drift_tx, mut drift_rx) = tokio::sync::mpsc::unbounded_channel();
        if self.cfg.drift_enabled {
            self.drift = Some(DriftWatcher::start(drift_tx.clone())?);
        }
        if self.last_good.is_some() {
            // Re-assert the last applied commit before the first poll: a node that reboots
            // with its remote down still converges to its last good config.
            self.correct(Correction::Startup, "re-plan of the last applied commit")
                .await;
            // A trial boot or a bootloader fallback is judged before the network answers.
            if self.wait.is_none() {
                self.upgrade_pass().await;
            }
        }
        let resync_every = self.cfg.resync_interval;
        let mut pending_drift = false;
        let mut next_resync = Instant::now() + resync_every;
        let ping_every = self.systemd.ping_every();
        let mut watchdog = tokio::time::interval(ping_every.unwrap_or(Duration::from_secs(86_400)));
        watchdog.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut wait_status = tokio::time::interval(wait::STATUS_EVERY);
        let mut rollout_tick = tokio::time::interval(gates::TICK);
        loop {
            let hold_end = self.drift_streak.hold_until().map(Instant::from_std);
            let waiting = self.wait.is_some();
            // A code page-out the 5-minute gap held back (see `memory`); `after_step` does it.
            let release_at = self.code_pages.next_release().map(Instant::from_std);
            tokio::select! {
                biased;
                _ = term.recv() => { info!("SIGTERM: stopping after the current step"); break; }
                _ = int.recv() => { info!("SIGINT: stopping after the current step"); break; }
                _ = hup.recv() => self.hangup(),
                _ = watchdog.tick() => self.systemd.ping(),
                report = wait::report(&mut self.wait), if waiting => self.concluded(report).await,
                _ = wait_status.tick(), if waiting => self.waiting_status(),
                _ = rollout_tick.tick(), if self.rollout.busy() => self.rollout_tick().await,
                Some(mut paths) = drift_rx.recv() => {
                    while let Ok(more) = drift_rx.try_recv() {
                        paths.extend(more);
                    }
                    let shown: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
                    if self.drift_streak.holding(std::time::Instant::now()) {
                        debug!("change seen on {} (held)", shown.join(", "));
                        pending_drift = true;
                    } else {
                        debug!("change seen on {}", shown.join(", "));
                        self.correct(Correction::Drift, &shown.join(", ")).await;
                    }
                }
                _ = tokio::time::sleep_until(hold_end.unwrap_or(next_resync)), if pending_drift => {
                    pending_drift = false;
                    self.correct(Correction::Drift, "changes seen while held").await;
                }
                _ = tokio::time::sleep_until(next_resync), if self.cfg.drift_enabled => {
                    self.correct(Correction::Resync, "periodic re-plan").await;
                    next_resync = Instant::now() + resync_every;
                }
                _ = tokio::time::sleep_until(release_at.unwrap_or(self.next_poll)), if release_at.is_some() && !waiting => {}
                _ = tokio::time::sleep_until(self.next_poll), if !waiting => {
                    let delay = self.poll().await;
                    if self.wait.is_none() {
                        self.upgrade_pass().await;
                        self.schedule_poll(delay);
                    }
                }
            }
            // A health wait is part of the burst: its end runs judging and recording code, so
            // paging out before it would leave that code resident until the next gap ends.
            if self.wait.is_none() {
                if let Some(bytes) = self.code_pages.after_step() {
                    self.ledger.metrics.code_pages_released(bytes);
                }
            }
        }
        self.systemd.stopping();
        drop(self.drift.take());
        let _ = stop_tx.send(());
        if let Some(s) = server {
            let _ = s.await;
        }
        info!("stopped");
        Ok(())
    }

    /// One poll and its decision; returns the delay until the next poll.
    async fn poll(&mut self) -> Duration {
        let cfg = self.cfg.source.clone();
        let verify = self.cfg.verify.clone();
        let last = self.last_applied;
        let counters = self.ledger.metrics.transfer.clone();
        let host = self.node.target.hostname.clone();
        // The files of an applied commit are at hand: an idle poll reads no tree, and `decide`
        // finds the commit up to date by the missing files.
        let have = last.filter(|_| self.applied_this_run && self.last_good.is_some());
        let memo = self.verify_memo.clone();
        let joined = self
            .systemd
            .guard(tokio::task::spawn_blocking(move || {
                let mut memo = memo.lock().unwrap_or_else(|e| e.into_inner());
                source::poll(&cfg, &verify, last, &counters, &host, have, &mut memo)
            }))
            .await;
        let result = joined
            .unwrap_or_else(|e| Err(SourceError::InvalidConfig(format!("poll task failed: {e}"))));
        let (delay, line) = match result {
            Ok(accepted) => {
                self.head = Some(accepted.commit());
                let signer = match &accepted.verdict {
                    Verdict::Verified { signer } => Some(signer.clone()),
                    Verdict::NotChecked => None,
                };
                self.decide(accepted, signer).await
            }
            Err(SourceError::Refused { commit, reason }) => self.refused(commit, &reason),
            Err(e) => self.failed(&format!("poll of {}: {e}", self.cfg.source.url)),
        };
        // The Node's labels follow the applied commit (a patch only when something changed).
        self.rollout_report().await;
        self.systemd.status(&line);
        if !self.ready {
            self.ready = true;
            self.systemd.ready(&line);
        }
        delay
    }

    fn interval(&self) -> Duration {
        jittered(self.cfg.interval, self.cfg.jitter_percent, random_u64())
    }

    /// An accepted commit: apply it unless it is what is already applied (the poll then read
    /// no files: see `have` in `poll`).
    async fn decide(
        &mut self,
        accepted: source::Accepted,
        signer: Option<String>,
    ) -> (Duration, String) {
        let commit = accepted.commit();
        let c = commit.to_string();
        let Some(files) = accepted.files else {
            debug!("commit {} unchanged", short(&c));
            self.ledger.reconciled(ReconcileResult::Noop, now_unix());
            self.succeeded();
            return (self.interval(), format!("up to date at {}", short(&c)));
        };
        let arrival = Arrival {
            commit,
            committed_at: files.committed_at,
            signer,
            snapshot: files.snapshot,
        };
        self.code_pages.note_work();
        let result = self
            .apply_through_gates(commit, arrival.committed_at, &arrival.snapshot)
            .await;
        match result {
            Ok(Applying::Done(outcome)) => self.decided(arrival, Ok(outcome)).await,
            Ok(Applying::AwaitingHealth(trial)) => {
                let line = format!("commit {}: waiting for K3s health", short(&c));
                self.start_wait(wait::Origin::Apply(wait::Caller::Poll(arrival), trial));
                (Duration::ZERO, line)
            }
            Err(e) => self.decided(arrival, Err(e)).await,
        }
    }

    /// What an apply of `commit` ended in: recorded and logged; returns the next poll's delay
    /// and the status line.
    async fn decided(
        &mut self,
        arrival: Arrival,
        result: Result<ApplyOutcome, A::Error>,
    ) -> (Duration, String) {
        let commit = arrival.commit;
        let settled = result
            .as_ref()
            .map(Clone::clone)
            .map_err(ToString::to_string);
        self.settle_restart(&settled).await;
        if let Ok(o) = &result {
            if let Some(l) = &o.loaded {
                self.note_policy(l);
            }
        }
        match result {
            Ok(o) if matches!(o.disposition, Disposition::Deferred { .. }) => self.deferred(commit),
            Ok(outcome) if outcome.rejected() => self.rejected(commit, &outcome),
            Ok(outcome) => self.applied(arrival, outcome),
            Err(e) => self.failed(&format!(
                "commit {commit}: not applied: {e}; keeping {}",
                self.ledger.applied_text()
            )),
        }
    }

    fn watch(&mut self, desired: &[String]) {
        if let Some(w) = &mut self.drift {
            let root = &self.cfg.root;
            let paths = desired.iter().map(|p| root.join(p.trim_start_matches('/')));
            w.set_managed(paths.collect::<BTreeSet<_>>());
        }
    }

    /// Re-applies the last good snapshot (`why`: start-up, drift or resync). During a health
    /// wait, re-applies the files being judged as they are (see [`wait`]).
    async fn correct(&mut self, why: Correction, seen: &str) {
        self.code_pages.note_work();
        // Drift and start-up re-plans must be quick and work offline: ssh keys from the cache
        // (a flaky link must not hold a revert back by a connect timeout). Resyncs fetch.
        let mut target = self.node.target.clone();
        target.keys.cache_first = why != Correction::Resync;
        if self.wait.is_some() {
            return self.correct_during_wait(why, seen, &target).await;
        }
        let Some(good) = self.last_good.clone() else {
            return;
        };
        let runner = self.node.effects.clone();
        let result = self
            .systemd
            .guard(
                self.applier
                    .apply(&good.snapshot, &target, runner, Permit::ALL),
            )
            .await;
        match result {
            Ok(Applying::Done(o)) => self.corrected(why, seen, Ok(o)),
            Ok(Applying::AwaitingHealth(trial)) => {
                let seen = seen.to_string();
                let origin = wait::Caller::Correction { why, seen };
                self.start_wait(wait::Origin::Apply(origin, trial));
            }
            Err(e) => self.corrected(why, seen, Err(e)),
        }
    }
}
