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

mod report;
mod schedule;
mod startup;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use crate::agent::AgentConfig;
use crate::apply::ApplyError;
use crate::config;
use crate::drift::{DriftError, DriftStreak, DriftWatcher};
use crate::fsroot::FsError;
use crate::metrics::{Metrics, ReconcileResult};
use crate::node::Node;
use crate::reconcile::SnapshotApplier;
use crate::service::Systemd;
use crate::snapshot::Snapshot;
use crate::source::{self, Oid, SourceError, TransferCounters, Verdict};
use crate::status::{short, Ledger, Status, StatusError};
use crate::upgrade::actor::UpgradeActor;

pub use schedule::{backoff, jittered, BACKOFF_BASE, BACKOFF_CAP};
use schedule::{now_unix, random_u64};

/// Why the daemon stopped or could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("state dir {}: {source}", path.display())]
    StateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Status(#[from] StatusError),
    #[error("recovering an interrupted apply: {0}")]
    Recover(#[from] ApplyError),
    #[error(transparent)]
    Root(#[from] FsError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("metrics: cannot listen on {addr}: {source}")]
    Metrics {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("installing signal handlers: {0}")]
    Signals(#[source] std::io::Error),
    #[error(transparent)]
    Drift(#[from] DriftError),
    #[error("status file {}: anti-rollback baseline {commit:?} is not a commit id", path.display())]
    BadBaseline { path: PathBuf, commit: String },
    #[error("upgrade: {0}")]
    Upgrade(String),
}

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
    /// The last accepted signature check (idle polls do not repeat it).
    verify_memo: Arc<std::sync::Mutex<source::VerifyMemo>>,
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
            verify_memo: Arc::default(),
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
            self.upgrade_pass().await;
        }
        let resync_every = self.cfg.resync_interval;
        let mut pending_drift = false;
        let mut next_poll = Instant::now();
        let mut next_resync = Instant::now() + resync_every;
        let ping_every = self.systemd.ping_every();
        let mut watchdog = tokio::time::interval(ping_every.unwrap_or(Duration::from_secs(86_400)));
        watchdog.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let hold_end = self.drift_streak.hold_until().map(Instant::from_std);
            // A code page-out the 5-minute gap held back (see `memory`); `after_step` does it.
            let release_at = self.code_pages.next_release().map(Instant::from_std);
            tokio::select! {
                biased;
                _ = term.recv() => { info!("SIGTERM: stopping after the current step"); break; }
                _ = int.recv() => { info!("SIGINT: stopping after the current step"); break; }
                _ = hup.recv() => {
                    info!("SIGHUP: polling now");
                    next_poll = Instant::now();
                }
                _ = watchdog.tick() => self.systemd.ping(),
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
                _ = tokio::time::sleep_until(release_at.unwrap_or(next_poll)), if release_at.is_some() => {}
                _ = tokio::time::sleep_until(next_poll) => {
                    let delay = self.poll().await;
                    self.upgrade_pass().await;
                    next_poll = Instant::now() + delay;
                    self.ledger.status.next_poll_at = Some(now_unix() + delay.as_secs());
                    self.ledger.save();
                }
            }
            if let Some(bytes) = self.code_pages.after_step() {
                self.ledger.metrics.code_pages_released(bytes);
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

    /// One pass of the A/B upgrade lifecycle against the last good config (see
    /// [`crate::upgrade::pass`]). May write a slot and the boot env, and reboot.
    async fn upgrade_pass(&mut self) {
        let Some(actor) = self.upgrade.take() else {
            return;
        };
        let loaded = match self.last_good_config() {
            Some(Ok(l)) => l,
            Some(Err(e)) => {
                warn!("upgrade: the last good config does not load: {e}");
                self.upgrade = Some(actor);
                return;
            }
            None => {
                self.upgrade = Some(actor);
                return;
            }
        };
        let ctx = self.node.health_context();
        let pass = self
            .systemd
            .guard(crate::upgrade::pass::run(actor, &loaded.config, &ctx))
            .await;
        if let Some(r) = &pass.report {
            let text = r.state.metrics(r.booted).render_prometheus();
            self.ledger.metrics.set_upgrade_text(text);
        }
        self.upgrade = pass.actor;
    }

    /// The last good commit's config, loaded at most once per commit.
    fn last_good_config(&mut self) -> Option<Result<Arc<config::Loaded>, config::ConfigError>> {
        let good = self.last_good.as_mut()?;
        if let Some(l) = &good.loaded {
            return Some(Ok(l.clone()));
        }
        let t = &self.node.target;
        Some(config::load(&good.snapshot, &t.hostname, &t.load).map(|l| {
            let l = Arc::new(l);
            good.loaded = Some(l.clone());
            l
        }))
    }

    /// One poll and its decision; returns the delay until the next poll.
    async fn poll(&mut self) -> Duration {
        let cfg = self.cfg.source.clone();
        let verify = self.cfg.verify.clone();
        let last = self.last_applied;
        let counters = self.ledger.metrics.transfer.clone();
        let host = self.node.target.hostname.clone();
        // The files of an applied commit are at hand: an idle poll reads no tree.
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
                let signer = match &accepted.verdict {
                    Verdict::Verified { signer } => Some(signer.clone()),
                    Verdict::NotChecked => None,
                };
                self.decide(accepted.commit(), signer, accepted.snapshot)
                    .await
            }
            Err(SourceError::Refused { commit, reason }) => self.refused(commit, &reason),
            Err(e) => self.failed(&format!("poll of {}: {e}", self.cfg.source.url)),
        };
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

    /// An accepted commit: apply it unless it is what is already applied (`snapshot` is
    /// `None` only then: the poll did not read the files of the applied commit again).
    async fn decide(
        &mut self,
        commit: Oid,
        signer: Option<String>,
        snapshot: Option<Snapshot>,
    ) -> (Duration, String) {
        let c = commit.to_string();
        if self.last_applied == Some(commit) && self.last_good.is_some() && self.applied_this_run {
            debug!("commit {} unchanged", short(&c));
            self.ledger.reconciled(ReconcileResult::Noop, now_unix());
            self.succeeded();
            return (self.interval(), format!("up to date at {}", short(&c)));
        }
        let good = self.last_good.as_ref().map(|g| g.snapshot.clone());
        let Some(snapshot) = snapshot.or(good) else {
            return self.failed(&format!("commit {c}: no files read"));
        };
        self.code_pages.note_work();
        let result = self
            .systemd
            .guard(
                self.applier
                    .apply(&snapshot, &self.node.target, self.node.effects.clone()),
            )
            .await;
        match result {
            Ok(outcome) if outcome.rejected() => self.rejected(commit, &outcome),
            Ok(outcome) => self.applied(commit, signer, snapshot, outcome),
            Err(e) => self.failed(&format!(
                "commit {c}: not applied: {e}; keeping {}",
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

    /// Re-applies the last good snapshot (`why`: start-up, drift or resync).
    async fn correct(&mut self, why: Correction, seen: &str) {
        let Some(good) = self.last_good.clone() else {
            return;
        };
        self.code_pages.note_work();
        // Drift and start-up re-plans must be quick and work offline: ssh keys from the cache
        // (a flaky link must not hold a revert back by a connect timeout). Resyncs fetch.
        let mut target = self.node.target.clone();
        target.keys.cache_first = why != Correction::Resync;
        let runner = self.node.effects.clone();
        let result = self
            .systemd
            .guard(self.applier.apply(&good.snapshot, &target, runner))
            .await;
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
        if o.changed_paths.is_empty() {
            return debug!("{why}: no drift ({seen})");
        }
        let changed = o.changed_paths.join(", ");
        let applied = self.ledger.applied_text();
        warn!("{why}: reverted manual change of {changed} (back to commit {applied})");
        self.ledger.drift_corrected(o.changed_paths.len() as u64);
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
            .status(&format!("applied {applied}; reverted drift of {changed}"));
    }
}
