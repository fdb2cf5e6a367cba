//! `bosun daemon`: the long-running GitOps loop of a node.
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
//!   is new. A refused commit keeps the node on its last good commit (counted by reason, logged
//!   once per commit). A failing remote keeps the last good commit applied and backs off
//!   exponentially ([`backoff`]: 5 s doubling to 5 min), retrying forever.
//! - **drift** (a managed file changed, see [`crate::drift`]) and **resync** (every
//!   `drift.resync_interval`): re-apply the last good snapshot; a re-plan without changes is a
//!   no-op, so bosun's own writes never count as drift.
//! - **SIGTERM/SIGINT**: signals are only looked at between steps, so the current step finishes;
//!   then the loop exits and the process exits 0.
//!
//! systemd: `READY=1` after the first poll's decision (applied, no-op, refused, or "remote
//! unreachable, keeping the last good commit"), `STATUS=` after each step, `WATCHDOG=1` every
//! half `WATCHDOG_USEC`, also while a step runs ([`Systemd::guard`]).
//!
//! The "apply this snapshot" step is the [`SnapshotApplier`] trait so a health-gated applier
//! (apply, check K3s health, roll back) can replace [`PlanApplier`] without touching the loop.

use std::collections::BTreeSet;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::signal::unix::{signal, SignalKind};
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use crate::agent::AgentConfig;
use crate::apply::{self, ApplyError};
use crate::config::LoadOptions;
use crate::drift::{DriftError, DriftWatcher};
use crate::fsroot::{FsError, Root};
use crate::keys::KeyFetcherConfig;
use crate::metrics::{self, Metrics, ReconcileResult};
use crate::reconcile::{self, ReconcileError, Target};
use crate::render::RenderSettings;
use crate::runner::{CommandOutput, CommandRunner, RunError, SystemRunner};
use crate::snapshot::Snapshot;
use crate::source::{self, Oid, Refusal, SourceError, TransferCounters, Verdict};
use crate::status::{self, Status, StatusError};
use crate::upgrade::actor::UpgradeActor;
use crate::upgrade::machine::{HealthInput, Lifecycle};

/// First retry delay after a failure.
pub const BACKOFF_BASE: Duration = Duration::from_secs(5);
/// Longest retry delay.
pub const BACKOFF_CAP: Duration = Duration::from_secs(300);

/// Corrections closer together than this continue a drift streak.
pub const DRIFT_STREAK_WINDOW: Duration = Duration::from_secs(10);
/// Corrections in one streak before drift events are held back.
pub const DRIFT_STREAK_LIMIT: u32 = 10;

/// How long to hold drift events after `streak` back-to-back corrections (pure): nothing up to
/// [`DRIFT_STREAK_LIMIT`], then 2 s doubling up to 5 min. Something that keeps rewriting a
/// managed file (another agent, a file the plan can never satisfy) must not turn bosun into a
/// busy loop; the periodic resync and new commits still apply.
pub fn drift_hold(streak: u32) -> Option<Duration> {
    let over = streak.checked_sub(DRIFT_STREAK_LIMIT)?;
    Some(
        Duration::from_secs(2)
            .saturating_mul(1u32 << over.min(16))
            .min(BACKOFF_CAP),
    )
}

/// What applying one snapshot did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyOutcome {
    /// Node paths created, updated or deleted.
    pub changed_paths: Vec<String>,
    /// Node paths of every desired file (watched for drift).
    pub desired_paths: Vec<String>,
    /// Effect commands that failed (logged by the applier).
    pub effect_failures: usize,
    /// The snapshot was not kept: refused (it failed its health gate before) or rolled back
    /// to the last good commit. The node stays on what it had; the text says why.
    pub rejected: Option<String>,
    /// This apply ended in an automatic rollback of a config change.
    pub rolled_back: bool,
}

/// The "apply this snapshot" step of the loop. [`PlanApplier`] plans and applies; a
/// health-gated applier (apply, wait for K3s health, roll back on failure) implements the same
/// trait. Called for new commits and, with the last good snapshot, for drift corrections and
/// resyncs.
pub trait SnapshotApplier {
    type Error: std::error::Error + Send + Sync + 'static;

    /// Makes the node match `snapshot`. Writes under the target's root and state dir; runs
    /// effects through `runner`.
    fn apply(
        &mut self,
        snapshot: &Snapshot,
        target: &Target,
        runner: Arc<dyn CommandRunner>,
    ) -> impl Future<Output = Result<ApplyOutcome, Self::Error>>;
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

/// The plain applier: [`reconcile::prepare`] then [`reconcile::apply_prepared`] (in
/// `spawn_blocking`). After the first apply of the process, a plan without any change is not
/// applied at all (nothing to write, no effect to run).
#[derive(Debug, Default)]
pub struct PlanApplier {
    applied_once: bool,
}

impl SnapshotApplier for PlanApplier {
    type Error = ReconcileError;

    async fn apply(
        &mut self,
        snapshot: &Snapshot,
        target: &Target,
        runner: Arc<dyn CommandRunner>,
    ) -> Result<ApplyOutcome, ReconcileError> {
        let prepared = reconcile::prepare(snapshot, target).await?;
        // Warnings repeat on every re-plan; show them loudly only when something changes.
        for w in &prepared.warnings {
            if prepared.plan.has_file_changes() {
                warn!("{w}");
            } else {
                debug!("{w}");
            }
        }
        let mut outcome = ApplyOutcome {
            changed_paths: prepared.changed_paths(),
            desired_paths: prepared.desired_paths(),
            ..ApplyOutcome::default()
        };
        let nothing_to_do = !prepared.plan.has_file_changes()
            && prepared.plan.effects.is_empty()
            && !prepared.pending_recovery;
        if nothing_to_do && self.applied_once {
            return Ok(outcome);
        }
        let t = target.clone();
        let applied = tokio::task::spawn_blocking(move || {
            reconcile::apply_prepared(&prepared, &t, runner.as_ref())
        })
        .await
        .map_err(|e| ReconcileError::State {
            path: target.state_dir.clone(),
            message: format!("apply task failed: {e}"),
        })??;
        if target.live() {
            for line in &applied.effects.lines {
                info!("effect {line}");
            }
        }
        outcome.effect_failures = applied.effects.failures;
        self.applied_once = true;
        Ok(outcome)
    }
}

/// Runs nothing: with a root other than `/`, effects are logged, not run.
#[derive(Debug, Default)]
pub struct LoggingRunner;

impl CommandRunner for LoggingRunner {
    fn run(&self, argv: &[String]) -> Result<CommandOutput, RunError> {
        info!(
            "not run (root is not /): {}",
            crate::runner::display_argv(argv)
        );
        Ok(CommandOutput::ok())
    }
}

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

/// The reconcile target an agent config describes (pure).
pub fn target(cfg: &AgentConfig) -> Target {
    let mut keys = KeyFetcherConfig::new(&cfg.state_dir);
    keys.github_base = cfg.github_base.clone();
    keys.gitlab_base = cfg.gitlab_base.clone();
    Target {
        hostname: cfg.node_name.clone(),
        root: cfg.root.clone(),
        state_dir: cfg.state_dir.clone(),
        load: LoadOptions::default(),
        render: RenderSettings::for_user(&cfg.ssh_user),
        keys,
        durability: Default::default(),
    }
}

/// Retry delay after `failures` consecutive failures (pure): 5 s, 10 s, 20 s, … capped at 5 min.
pub fn backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    BACKOFF_BASE.saturating_mul(1u32 << exp).min(BACKOFF_CAP)
}

/// The poll delay: `interval` plus up to `jitter_percent` of it, picked by `random` (pure).
pub fn jittered(interval: Duration, jitter_percent: u32, random: u64) -> Duration {
    let span = interval.as_millis() as u64 * u64::from(jitter_percent) / 100;
    if span == 0 {
        return interval;
    }
    interval + Duration::from_millis(random % (span + 1))
}

/// The `reason` label of `bosun_source_refused_total` (pure).
pub fn refusal_label(r: &Refusal) -> &'static str {
    match r {
        Refusal::Unsigned => "unsigned",
        Refusal::UnknownKey { .. } => "unknown_key",
        Refusal::BadSignature { .. } => "bad_signature",
        Refusal::WrongNamespace { .. } => "wrong_namespace",
        Refusal::NotDescendant { .. } => "not_descendant",
    }
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    u64::from_le_bytes(b)
}

fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

/// The service manager connection: `NOTIFY_SOCKET` and the watchdog period.
#[derive(Debug, Clone, Copy, Default)]
pub struct Systemd {
    notify: bool,
    /// Half of `WATCHDOG_USEC`, when the watchdog is on for this process.
    ping_every: Option<Duration>,
}

impl Systemd {
    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` (which, when set, must be this
    /// process, as `sd_watchdog_enabled` requires).
    pub fn from_env() -> Self {
        let notify = std::env::var_os("NOTIFY_SOCKET").is_some();
        let pid_ok = std::env::var("WATCHDOG_PID")
            .ok()
            .and_then(|p| p.parse::<u32>().ok())
            .is_none_or(|p| p == std::process::id());
        let ping_every = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|u| u.parse::<u64>().ok())
            .filter(|u| *u > 0 && pid_ok && notify)
            .map(|u| Duration::from_micros(u / 2));
        Systemd { notify, ping_every }
    }

    fn send(&self, states: &[sd_notify::NotifyState<'_>]) {
        if self.notify {
            if let Err(e) = sd_notify::notify(false, states) {
                debug!("sd_notify: {e}");
            }
        }
    }

    /// Sends `STATUS=`.
    pub fn status(&self, text: &str) {
        self.send(&[sd_notify::NotifyState::Status(text)]);
    }

    /// Awaits `fut`, sending `WATCHDOG=1` keepalives meanwhile (a step may take long, e.g. a
    /// slow fetch; it is bounded by the source's and runner's timeouts).
    pub async fn guard<F: Future>(self, fut: F) -> F::Output {
        let Some(every) = self.ping_every else {
            return fut.await;
        };
        tokio::pin!(fut);
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                out = &mut fut => return out,
                _ = tick.tick() => self.send(&[sd_notify::NotifyState::Watchdog]),
            }
        }
    }
}

/// The daemon loop's state.
pub struct Daemon<A: SnapshotApplier> {
    cfg: AgentConfig,
    target: Target,
    applier: A,
    runner: Arc<dyn CommandRunner>,
    metrics: Arc<Metrics>,
    status: Status,
    /// Files of the last applied commit (re-applied on drift).
    last_good: Option<Snapshot>,
    /// Anti-rollback baseline.
    last_applied: Option<Oid>,
    last_refused: Option<(Oid, &'static str)>,
    /// The commit the applier rejected last (failed its health gate), until something else
    /// happens: refusing it again on the next polls is logged once and keeps the first reason
    /// (e.g. the rollback) as the status's last error.
    last_rejected: Option<Oid>,
    /// An accepted commit went through the applier since start-up.
    applied_this_run: bool,
    /// Drift corrections that changed files, each within [`DRIFT_STREAK_WINDOW`] of the last.
    drift_streak: u32,
    last_drift_fix: Option<Instant>,
    /// Drift events are held (not acted on) until then; see [`drift_hold`].
    drift_hold_until: Option<Instant>,
    failures: u32,
    systemd: Systemd,
    ready: bool,
    drift: Option<DriftWatcher>,
    /// The A/B upgrade actor, when the agent config has an `upgrade:` section. Taken out while
    /// a step runs on a blocking thread.
    upgrade: Option<UpgradeActor>,
    /// Pages bosun's own code out after a burst of work (see [`crate::memory`]).
    code_pages: crate::memory::CodePages,
}

impl<A: SnapshotApplier> Daemon<A> {
    /// A daemon for `cfg` applying through `applier`. Effects run through [`SystemRunner`] when
    /// the root is `/`, else they are only logged.
    pub fn new(cfg: AgentConfig, applier: A) -> Self {
        let target = target(&cfg);
        let runner: Arc<dyn CommandRunner> = if target.live() {
            Arc::new(SystemRunner::new(Duration::from_secs(300)))
        } else {
            Arc::new(LoggingRunner)
        };
        let status = Status::new(&cfg.node_name, &cfg.source.url, &cfg.source.reference);
        Daemon {
            target,
            applier,
            runner,
            metrics: Arc::new(Metrics::new(Arc::new(TransferCounters::new()))),
            status,
            last_good: None,
            last_applied: None,
            last_refused: None,
            last_rejected: None,
            applied_this_run: false,
            drift_streak: 0,
            last_drift_fix: None,
            drift_hold_until: None,
            failures: 0,
            systemd: Systemd::from_env(),
            ready: false,
            drift: None,
            upgrade: None,
            code_pages: crate::memory::CodePages::default(),
            cfg,
        }
    }

    /// The metrics this daemon updates.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Start-up: creates the state dir, clears stale git locks, recovers an interrupted apply,
    /// reads the persisted status. Writes to disk.
    async fn start(&mut self) -> Result<(), DaemonError> {
        let sd = &self.cfg.state_dir;
        std::fs::create_dir_all(sd).map_err(|source| DaemonError::StateDir {
            path: sd.clone(),
            source,
        })?;
        for lock in source::Cache::clear_stale_locks(&self.cfg.source.cache_dir)? {
            warn!("removed stale git cache lock {}", lock.display());
        }
        let root = self.cfg.root.clone();
        let state = sd.clone();
        let report = tokio::task::spawn_blocking(move || {
            let root = Root::open(&root)?;
            apply::recover(&root, &state).map_err(DaemonError::from)
        })
        .await
        .map_err(|e| DaemonError::StateDir {
            path: sd.clone(),
            source: std::io::Error::other(e.to_string()),
        })??;
        if let Some(tx) = &report.rolled_forward {
            warn!("completed the interrupted apply {tx} (rolled forward)");
        }
        self.upgrade = upgrade_actor(&self.cfg)?;
        match crate::guarded_apply::CommitHistory::load(sd) {
            Ok(h) => self
                .metrics
                .seed_config_rollbacks(h.config_rollbacks_total()),
            Err(e) => warn!("commit history: {e}"),
        }
        if let Some(tx) = &report.rolled_back {
            warn!("undid the uncommitted apply {tx} (rolled back)");
        }
        if let Some(previous) = status::read(sd)? {
            if let Some(c) = &previous.last_applied_commit {
                let oid = Oid::from_str(c).map_err(|_| DaemonError::BadBaseline {
                    path: status::path(sd),
                    commit: c.clone(),
                })?;
                self.last_applied = Some(oid);
                self.metrics.set_applied_commit(c);
            }
            if let Some(oid) = self.last_applied {
                self.last_good = self.cached_snapshot(oid).await;
            }
            self.status.last_applied_commit = previous.last_applied_commit;
            self.status.signer = previous.signer;
            self.status.last_applied_at = previous.last_applied_at;
            self.status.refused_total = previous.refused_total;
            self.status.drift_corrections_total = previous.drift_corrections_total;
        }
        info!(
            "bosun daemon: node {} following {} ({}) every {:?}; root {}, state {}; last applied {}",
            self.cfg.node_name,
            self.cfg.source.url,
            self.cfg.source.reference,
            self.cfg.interval,
            self.cfg.root.display(),
            sd.display(),
            self.status.last_applied_commit.as_deref().unwrap_or("none"),
        );
        Ok(())
    }

    /// The files of the last applied commit from the git cache (no network), so drift is
    /// corrected even before the remote answers. `None` (logged) when the cache lacks it.
    async fn cached_snapshot(&self, commit: Oid) -> Option<Snapshot> {
        let dir = self.cfg.source.cache_dir.clone();
        let subdir = self.cfg.source.subdir.clone();
        let read = tokio::task::spawn_blocking(move || {
            let cache = source::Cache::open(&dir)?;
            source::snapshot(&cache, commit, subdir.as_deref())
        })
        .await;
        match read {
            Ok(Ok(snap)) => Some(snap),
            Ok(Err(e)) => {
                warn!("last applied commit {commit} not readable from the git cache ({e}); drift is corrected once the remote answers");
                None
            }
            Err(e) => {
                warn!("reading the git cache: {e}");
                None
            }
        }
    }

    /// Runs until SIGTERM or SIGINT. Polls, applies, corrects drift, serves metrics.
    pub async fn run(mut self) -> Result<(), DaemonError> {
        let mut term = signal(SignalKind::terminate()).map_err(DaemonError::Signals)?;
        let mut int = signal(SignalKind::interrupt()).map_err(DaemonError::Signals)?;
        let mut hup = signal(SignalKind::hangup()).map_err(DaemonError::Signals)?;
        self.start().await?;

        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = match self.cfg.metrics_listen {
            Some(addr) => {
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|source| DaemonError::Metrics { addr, source })?;
                info!("metrics on http://{addr}/metrics");
                let m = self.metrics.clone();
                Some(tokio::spawn(metrics::serve(listener, m, async {
                    let _ = stop_rx.await;
                })))
            }
            None => None,
        };

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
            self.upgrade_tick().await;
        }
        let resync_every = self.cfg.resync_interval;
        let mut pending_drift = false;
        let mut next_poll = Instant::now();
        let mut next_resync = Instant::now() + resync_every;
        let mut watchdog = tokio::time::interval(
            self.systemd
                .ping_every
                .unwrap_or(Duration::from_secs(86_400)),
        );
        watchdog.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

        loop {
            tokio::select! {
                biased;
                _ = term.recv() => { info!("SIGTERM: stopping after the current step"); break; }
                _ = int.recv() => { info!("SIGINT: stopping after the current step"); break; }
                _ = hup.recv() => {
                    info!("SIGHUP: polling now");
                    next_poll = Instant::now();
                }
                _ = watchdog.tick() => self.systemd.send(&[sd_notify::NotifyState::Watchdog]),
                Some(mut paths) = drift_rx.recv() => {
                    while let Ok(more) = drift_rx.try_recv() {
                        paths.extend(more);
                    }
                    let shown: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
                    if self.drift_hold_until.is_some_and(|t| Instant::now() < t) {
                        debug!("change seen on {} (held)", shown.join(", "));
                        pending_drift = true;
                    } else {
                        debug!("change seen on {}", shown.join(", "));
                        self.correct(Correction::Drift, &shown.join(", ")).await;
                    }
                }
                _ = tokio::time::sleep_until(self.drift_hold_until.unwrap_or(next_resync)), if pending_drift => {
                    pending_drift = false;
                    self.correct(Correction::Drift, "changes seen while held").await;
                }
                _ = tokio::time::sleep_until(next_resync), if self.cfg.drift_enabled => {
                    self.correct(Correction::Resync, "periodic re-plan").await;
                    next_resync = Instant::now() + resync_every;
                }
                _ = tokio::time::sleep_until(next_poll) => {
                    let delay = self.poll().await;
                    self.upgrade_tick().await;
                    next_poll = Instant::now() + delay;
                    self.status.next_poll_at = Some(now_unix() + delay.as_secs());
                    self.save_status();
                }
            }
            if let Some(bytes) = self.code_pages.after_step() {
                self.metrics.code_pages_released(bytes);
            }
        }
        self.systemd.send(&[sd_notify::NotifyState::Stopping]);
        drop(self.drift.take());
        let _ = stop_tx.send(());
        if let Some(s) = server {
            let _ = s.await;
        }
        info!("stopped");
        Ok(())
    }

    /// One pass of the A/B upgrade lifecycle against the last good config: judges a trial
    /// boot with the health checks, installs, sets trials, commits, rolls back (see
    /// [`crate::upgrade::actor`]). May write a slot and the boot env, and reboot.
    async fn upgrade_tick(&mut self) {
        let Some(mut actor) = self.upgrade.take() else {
            return;
        };
        let Some(snapshot) = self.last_good.clone() else {
            self.upgrade = Some(actor);
            return;
        };
        let cfg = match crate::config::load(&snapshot, &self.target.hostname, &self.target.load) {
            Ok(l) => l.config,
            Err(e) => {
                warn!("upgrade: the last good config does not load: {e}");
                self.upgrade = Some(actor);
                return;
            }
        };
        let desired = cfg.upgrade.clone();
        let health = match actor.status() {
            Ok(st) if on_trial(&st.state.lifecycle, st.booted) => {
                if matches!(st.state.lifecycle, Lifecycle::Staged { .. }) {
                    // Booted the staged slot: record the trial (and its start) before judging
                    // it, so `bosun upgrade status` says `trial` during the health wait and a
                    // restart meanwhile does not start the trial clock again.
                    let Some(a) = self
                        .step_upgrade(actor, desired.clone(), HealthInput::Pending)
                        .await
                    else {
                        return;
                    };
                    actor = a;
                }
                let role = crate::health::K3sRole::from_k3os(&cfg.k3os);
                let checks = crate::health::effective_checks(&cfg.health, role);
                let ctx = crate::health::HealthContext::new(
                    &self.target.root,
                    &self.target.hostname,
                    self.runner.clone(),
                );
                info!(
                    "upgrade: judging the trial boot with {} health check(s)",
                    checks.len()
                );
                let report = self
                    .systemd
                    .guard(crate::health::wait_healthy(&checks, &cfg.health, &ctx))
                    .await;
                if report.verdict == crate::health::gate::Verdict::Healthy {
                    HealthInput::Healthy
                } else {
                    HealthInput::Unhealthy(crate::guarded_apply::report_summary(&report))
                }
            }
            Ok(_) => HealthInput::Pending,
            Err(e) => {
                warn!("upgrade: {e}");
                self.upgrade = Some(actor);
                return;
            }
        };
        self.upgrade = self.step_upgrade(actor, desired, health).await;
    }

    /// Runs one [`UpgradeActor::step`] on a blocking thread and reports it (log, metrics).
    /// Returns the actor, or `None` when the task itself failed (upgrades stop until restart).
    async fn step_upgrade(
        &mut self,
        mut actor: UpgradeActor,
        desired: Option<crate::config::model::UpgradeConfig>,
        health: HealthInput,
    ) -> Option<UpgradeActor> {
        let joined = self
            .systemd
            .guard(tokio::task::spawn_blocking(move || {
                let r = actor.step(desired.as_ref(), health);
                (actor, r)
            }))
            .await;
        let (actor, result) = match joined {
            Ok(pair) => pair,
            Err(e) => {
                error!("upgrade step task failed: {e}; upgrades stop until restart");
                return None;
            }
        };
        match result {
            Ok(report) => {
                for p in &report.performed {
                    info!("upgrade: {p}");
                }
                for n in &report.notes {
                    debug!("upgrade: {n:?}");
                }
                info!("upgrade: {}", report.state.lifecycle.name());
                self.metrics
                    .set_upgrade_text(report.state.metrics(report.booted).render_prometheus());
            }
            Err(e) => warn!("upgrade: {e}"),
        }
        Some(actor)
    }

    fn save_status(&mut self) {
        let t = self.metrics.transfer.totals();
        self.status.polls = t.polls;
        self.status.pack_fetches = t.pack_fetches;
        self.status.fetch_bytes = t.received_bytes;
        if let Err(e) = status::write(&self.cfg.state_dir, &self.status) {
            error!("{e}");
        }
    }

    fn applied_text(&self) -> String {
        self.status
            .last_applied_commit
            .as_deref()
            .map(short)
            .unwrap_or("nothing")
            .to_string()
    }

    /// One poll and its decision; returns the delay until the next poll.
    async fn poll(&mut self) -> Duration {
        let cfg = self.cfg.source.clone();
        let verify = self.cfg.verify.clone();
        let last = self.last_applied;
        let counters = self.metrics.transfer.clone();
        let sd = self.systemd;
        let joined = sd
            .guard(tokio::task::spawn_blocking(move || {
                source::poll(&cfg, &verify, last, &counters)
            }))
            .await;
        let result = joined
            .unwrap_or_else(|e| Err(SourceError::InvalidConfig(format!("poll task failed: {e}"))));
        let (delay, line) = match result {
            Ok(accepted) => {
                let commit = accepted.commit();
                let signer = match &accepted.verdict {
                    Verdict::Verified { signer } => Some(signer.clone()),
                    Verdict::NotChecked => None,
                };
                self.decide(commit, signer, accepted.snapshot).await
            }
            Err(SourceError::Refused { commit, reason }) => self.refused(commit, &reason),
            Err(e) => self.failed(&format!("poll of {}: {e}", self.cfg.source.url)),
        };
        self.systemd.status(&line);
        if !self.ready {
            self.ready = true;
            self.systemd.send(&[
                sd_notify::NotifyState::Ready,
                sd_notify::NotifyState::Status(&line),
            ]);
        }
        delay
    }

    fn interval(&self) -> Duration {
        jittered(self.cfg.interval, self.cfg.jitter_percent, random_u64())
    }

    /// An accepted commit: apply it unless it is what is already applied.
    async fn decide(
        &mut self,
        commit: Oid,
        signer: Option<String>,
        snapshot: Snapshot,
    ) -> (Duration, String) {
        let c = commit.to_string();
        if self.last_applied == Some(commit) && self.last_good.is_some() && self.applied_this_run {
            debug!("commit {} unchanged", short(&c));
            self.metrics.reconcile(ReconcileResult::Noop, now_unix());
            self.succeeded();
            return (self.interval(), format!("up to date at {}", short(&c)));
        }
        let new_commit = self.last_applied != Some(commit);
        self.code_pages.note_work();
        let sd = self.systemd;
        let runner = self.runner.clone();
        let result = sd
            .guard(self.applier.apply(&snapshot, &self.target, runner))
            .await;
        match result {
            Ok(outcome) if outcome.rejected.is_some() => {
                let why = outcome.rejected.clone().unwrap_or_default();
                let again = self.last_rejected == Some(commit)
                    && !outcome.rolled_back
                    && outcome.changed_paths.is_empty();
                self.last_rejected = Some(commit);
                if again {
                    debug!("{why}; staying on {}", self.applied_text());
                    self.metrics.reconcile(ReconcileResult::Error, now_unix());
                    return (self.interval(), why);
                }
                warn!("{why}; staying on {}", self.applied_text());
                if outcome.rolled_back {
                    self.metrics.config_rolled_back();
                }
                self.metrics.reconcile(ReconcileResult::Error, now_unix());
                if !outcome.desired_paths.is_empty() {
                    self.watch(&outcome.desired_paths);
                }
                self.status.last_error = Some(why.clone());
                self.status.last_error_at = Some(now_unix());
                self.save_status();
                (self.interval(), why)
            }
            Ok(outcome) => {
                let signed = signer
                    .as_deref()
                    .map(|s| format!(" signed by {s}"))
                    .unwrap_or_default();
                if new_commit || !outcome.changed_paths.is_empty() {
                    info!(
                        "applied commit {c}{signed}: {} file(s) changed{}{}",
                        outcome.changed_paths.len(),
                        if outcome.changed_paths.is_empty() {
                            ""
                        } else {
                            ": "
                        },
                        outcome.changed_paths.join(", ")
                    );
                    self.metrics.reconcile(ReconcileResult::Success, now_unix());
                } else {
                    info!("commit {c}: files already match");
                    self.metrics.reconcile(ReconcileResult::Noop, now_unix());
                }
                if outcome.effect_failures > 0 {
                    warn!(
                        "commit {c}: {} effect command(s) failed (see above)",
                        outcome.effect_failures
                    );
                }
                if new_commit {
                    self.status.last_applied_at = Some(now_unix());
                    self.status.signer = signer;
                }
                self.status.last_applied_commit = Some(c.clone());
                self.metrics.set_applied_commit(&c);
                self.last_applied = Some(commit);
                self.last_good = Some(snapshot);
                self.applied_this_run = true;
                self.watch(&outcome.desired_paths);
                self.succeeded();
                // Persist the new baseline right away (anti-rollback survives a crash).
                self.save_status();
                (self.interval(), format!("applied {}", short(&c)))
            }
            Err(e) => self.failed(&format!(
                "commit {c}: not applied: {e}; keeping {}",
                self.applied_text()
            )),
        }
    }

    fn succeeded(&mut self) {
        self.failures = 0;
        self.last_rejected = None;
        self.status.last_success_at = Some(now_unix());
        self.status.last_error = None;
        self.status.last_error_at = None;
    }

    fn refused(&mut self, commit: Oid, reason: &Refusal) -> (Duration, String) {
        let label = refusal_label(reason);
        let line = format!(
            "refused commit {commit}: {reason}; staying on {}",
            self.applied_text()
        );
        if self.last_refused != Some((commit, label)) {
            warn!("{line}");
            self.last_refused = Some((commit, label));
            self.metrics.refused(label);
            self.status.refused_total += 1;
        } else {
            debug!("{line}");
        }
        self.status.last_refusal = Some(format!("{commit}: {reason}"));
        self.failures = 0;
        self.status.last_success_at = Some(now_unix());
        (self.interval(), line)
    }

    fn failed(&mut self, what: &str) -> (Duration, String) {
        self.failures = self.failures.saturating_add(1);
        self.last_rejected = None;
        let delay = backoff(self.failures);
        let line = format!(
            "{what}; last good commit {} stays applied; retrying in {}s (backoff, attempt {})",
            self.applied_text(),
            delay.as_secs(),
            self.failures
        );
        warn!("{line}");
        self.metrics.reconcile(ReconcileResult::Error, now_unix());
        self.status.last_error = Some(what.to_string());
        self.status.last_error_at = Some(now_unix());
        (delay, line)
    }

    fn watch(&mut self, desired: &[String]) {
        if let Some(w) = &mut self.drift {
            let root = &self.cfg.root;
            w.set_managed(
                desired
                    .iter()
                    .map(|p| root.join(p.trim_start_matches('/')))
                    .collect::<BTreeSet<_>>(),
            );
        }
    }

    /// Re-applies the last good snapshot (`why`: start-up, drift or resync).
    async fn correct(&mut self, why: Correction, seen: &str) {
        let Some(snapshot) = self.last_good.clone() else {
            return;
        };
        self.code_pages.note_work();
        // Drift and start-up re-plans must be quick and work offline: ssh keys from the cache
        // (a flaky link must not hold a revert back by a connect timeout). Resyncs fetch.
        let mut target = self.target.clone();
        target.keys.cache_first = why != Correction::Resync;
        let sd = self.systemd;
        let runner = self.runner.clone();
        let result = sd
            .guard(self.applier.apply(&snapshot, &target, runner))
            .await;
        match result {
            Ok(o) if o.changed_paths.is_empty() => {
                debug!("{why}: no drift ({seen})");
                self.watch(&o.desired_paths);
            }
            Ok(o) => {
                let n = o.changed_paths.len() as u64;
                warn!(
                    "{why}: reverted manual change of {} (back to commit {})",
                    o.changed_paths.join(", "),
                    self.applied_text()
                );
                self.metrics.drift_corrected(n);
                self.status.drift_corrections_total += n;
                if why == Correction::Drift {
                    let now = Instant::now();
                    let close = self
                        .last_drift_fix
                        .is_some_and(|t| now.duration_since(t) < DRIFT_STREAK_WINDOW);
                    self.drift_streak = if close { self.drift_streak + 1 } else { 1 };
                    self.last_drift_fix = Some(now);
                    self.drift_hold_until = drift_hold(self.drift_streak).map(|d| {
                        warn!(
                            "drift: {} corrections in a row; something keeps changing managed files; \
                             holding drift events for {}s",
                            self.drift_streak,
                            d.as_secs()
                        );
                        now + d
                    });
                }
                self.watch(&o.desired_paths);
                self.save_status();
                self.systemd.status(&format!(
                    "applied {}; reverted drift of {}",
                    self.applied_text(),
                    o.changed_paths.join(", ")
                ));
            }
            Err(e) => error!("{why}: re-applying {} failed: {e}", self.applied_text()),
        }
    }
}

/// Whether the node booted the slot whose image is staged or on trial (pure).
fn on_trial(lifecycle: &Lifecycle, booted: Option<crate::bootenv::Slot>) -> bool {
    match lifecycle {
        Lifecycle::Staged { slot, .. } | Lifecycle::Trial { slot, .. } => booted == Some(*slot),
        _ => false,
    }
}

/// The upgrade actor an agent config describes, or `None` without an `upgrade:` section.
/// Slot devices and boot-env files are host paths; the cmdline file defaults to
/// `<root>/proc/cmdline`. Reads the U-Boot config file.
pub fn upgrade_actor(cfg: &AgentConfig) -> Result<Option<UpgradeActor>, DaemonError> {
    use crate::agent::BootloaderKind;
    use crate::bootenv::{gpt::GptPrio, grub::GrubEnv, uboot::UbootEnv, BootEnv};
    let Some(u) = &cfg.upgrade else {
        return Ok(None);
    };
    let slots = u.slots.as_ref().and_then(|s| match (&s.a, &s.b) {
        (Some(a), Some(b)) => Some(crate::upgrade::actor::SlotPaths {
            a: a.clone(),
            b: b.clone(),
        }),
        _ => None,
    });
    let bootenv: Option<Box<dyn BootEnv + Send>> = match u.bootloader {
        Some(BootloaderKind::Grub) => u
            .grubenv
            .as_ref()
            .map(|p| Box::new(GrubEnv::new(p)) as Box<dyn BootEnv + Send>),
        Some(BootloaderKind::Uboot) => match &u.uboot_env_config {
            Some(p) => Some(Box::new(UbootEnv::from_config_file(p).map_err(|e| {
                DaemonError::Upgrade(format!("upgrade.uboot_env_config {}: {e}", p.display()))
            })?)),
            None => None,
        },
        Some(BootloaderKind::Gpt) => match (&u.gpt_disk, u.gpt_partitions.as_deref()) {
            (Some(d), Some([a, b])) => Some(Box::new(GptPrio::new(d, *a, *b))),
            _ => None,
        },
        None => None,
    };
    let runner: Arc<dyn CommandRunner> = if cfg.root == std::path::Path::new("/") {
        Arc::new(SystemRunner::new(Duration::from_secs(300)))
    } else {
        Arc::new(LoggingRunner)
    };
    let cmdline = u
        .cmdline
        .clone()
        .unwrap_or_else(|| cfg.root.join("proc/cmdline"));
    let mut actor = UpgradeActor::new(
        &cfg.state_dir,
        cmdline,
        slots,
        bootenv,
        Box::new(crate::upgrade::install::StreamingInstaller::new(
            &cfg.state_dir,
        )),
        runner,
    );
    if let Some(cmd) = &u.reboot_command {
        actor.reboot_argv = cmd.clone();
    }
    actor.os_release = Some(cfg.root.join("etc/os-release"));
    Ok(Some(actor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_five_seconds_and_caps_at_five_minutes() {
        let got: Vec<u64> = (1..=9).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(got, vec![5, 10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(backoff(u32::MAX), BACKOFF_CAP);
    }

    #[test]
    fn jitter_stays_within_the_percentage() {
        let i = Duration::from_secs(60);
        assert_eq!(jittered(i, 10, 0), i);
        assert_eq!(jittered(i, 10, 6000), Duration::from_secs(66));
        assert_eq!(jittered(i, 10, 6001), i);
        assert_eq!(jittered(i, 0, 12345), i);
        for r in [1u64, 999, 123_456_789, u64::MAX] {
            let d = jittered(i, 10, r);
            assert!(d >= i && d <= Duration::from_secs(66), "{d:?}");
        }
    }

    #[test]
    fn drift_is_held_only_after_a_long_streak_and_the_hold_is_capped() {
        assert_eq!(drift_hold(1), None);
        assert_eq!(drift_hold(DRIFT_STREAK_LIMIT - 1), None);
        assert_eq!(drift_hold(DRIFT_STREAK_LIMIT), Some(Duration::from_secs(2)));
        assert_eq!(
            drift_hold(DRIFT_STREAK_LIMIT + 2),
            Some(Duration::from_secs(8))
        );
        assert_eq!(drift_hold(u32::MAX), Some(BACKOFF_CAP));
    }

    #[test]
    fn refusal_labels_are_stable() {
        assert_eq!(refusal_label(&Refusal::Unsigned), "unsigned");
        assert_eq!(
            refusal_label(&Refusal::NotDescendant {
                last_applied: Oid::zero()
            }),
            "not_descendant"
        );
        assert_eq!(
            refusal_label(&Refusal::UnknownKey { key: "k".into() }),
            "unknown_key"
        );
    }
}
