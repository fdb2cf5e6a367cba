//! Start-up of the daemon: the state dir, stale git locks, recovery of an interrupted apply,
//! the upgrade actor, the persisted status (the anti-rollback baseline) and the last applied
//! commit's files from the git cache; and the metrics endpoint.

use tracing::{info, warn};

use std::path::PathBuf;

use super::{Daemon, LastGood};
use crate::apply;
use crate::apply::ApplyError;
use crate::drift::DriftError;
use crate::fsroot::FsError;
use crate::fsroot::Root;
use crate::metrics;
use crate::node::{BootEnvSpec, UpgradeWiring};
use crate::reconcile::SnapshotApplier;
use crate::rollout::coordination::BackendKind;
use crate::snapshot::Snapshot;
use crate::source::SourceError;
use crate::source::{self, Oid};
use crate::status;
use crate::status::StatusError;

/// Why the daemon stopped or could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The state directory cannot be created, or the interrupted-apply recovery task failed.
    #[error("state dir {}: {source}", path.display())]
    StateDir {
        /// The state directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Reading or writing `status.json` failed.
    #[error(transparent)]
    Status(#[from] StatusError),
    /// Recovering an interrupted apply at start-up failed.
    #[error("recovering an interrupted apply: {0}")]
    Recover(#[from] ApplyError),
    /// The root cannot be opened.
    #[error(transparent)]
    Root(#[from] FsError),
    /// The Git source failed in a way that stops the daemon (cleaning stale locks in the cache at
    /// start-up).
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The metrics endpoint cannot listen on its address.
    #[error("metrics: cannot listen on {addr}: {source}")]
    Metrics {
        /// The configured listen address.
        addr: std::net::SocketAddr,
        /// The bind error.
        #[source]
        source: std::io::Error,
    },
    /// Installing the SIGTERM/SIGINT/SIGHUP handlers failed.
    #[error("installing signal handlers: {0}")]
    Signals(#[source] std::io::Error),
    /// The drift watcher cannot be started.
    #[error(transparent)]
    Drift(#[from] DriftError),
    /// `status.json` records a last applied commit that is not a commit id; bosun will not guess
    /// its anti-rollback baseline.
    #[error("status file {}: anti-rollback baseline {commit:?} is not a commit id", path.display())]
    BadBaseline {
        /// The status file.
        path: PathBuf,
        /// The recorded value.
        commit: String,
    },
    /// The upgrade actor cannot be built from the agent config (an unreadable `fw_env.config`, bad
    /// GPT partitions, …).
    #[error("upgrade: {0}")]
    Upgrade(String),
    /// The rollout driver's state or coordination config could not be loaded.
    #[error(transparent)]
    Rollout(#[from] crate::rollout::driver::RolloutError),
}

impl<A: SnapshotApplier> Daemon<A> {
    /// Start-up: creates the state dir, clears stale git locks, recovers an interrupted apply,
    /// reads the persisted status. Writes to disk.
    pub(super) async fn start(&mut self) -> Result<(), DaemonError> {
        let sd = self.cfg.state_dir.clone();
        std::fs::create_dir_all(&sd).map_err(|source| DaemonError::StateDir {
            path: sd.clone(),
            source,
        })?;
        for lock in source::Cache::clear_stale_locks(&self.cfg.source.cache_dir)? {
            warn!("removed stale git cache lock {}", lock.display());
        }
        let (root, state) = (self.cfg.root.clone(), sd.clone());
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
        if let Some(wiring) = UpgradeWiring::from_agent(&self.cfg) {
            let actor = self
                .node
                .upgrade_actor(&wiring)
                .map_err(|e| match &wiring.boot_env {
                    Some(BootEnvSpec::Uboot(p)) => DaemonError::Upgrade(format!(
                        "upgrade.uboot_env_config {}: {e}",
                        p.display()
                    )),
                    _ => DaemonError::Upgrade(e.to_string()),
                })?;
            self.upgrade = Some(actor);
        }
        match crate::guarded_apply::CommitHistory::load(&sd) {
            Ok(h) => self
                .ledger
                .metrics
                .seed_config_rollbacks(h.config_rollbacks_total()),
            Err(e) => warn!("commit history: {e}"),
        }
        if let Some(tx) = &report.rolled_back {
            warn!("undid the uncommitted apply {tx} (rolled back)");
        }
        if let Some(previous) = status::read(&sd)? {
            if let Some(c) = &previous.last_applied_commit {
                let oid = Oid::from_str(c).map_err(|_| DaemonError::BadBaseline {
                    path: status::path(&sd),
                    commit: c.clone(),
                })?;
                self.last_applied = Some(oid);
                let committed_at = self.cached_commit_time(oid).await;
                self.last_good = self.cached_snapshot(oid).await.map(|snapshot| LastGood {
                    snapshot,
                    committed_at,
                    loaded: None,
                });
            }
            self.ledger.restore(previous);
        }
        self.start_rollout().await?;
        info!(
            "bosun daemon: node {} following {} ({}) every {:?}; root {}, state {}; last applied {}",
            self.cfg.node_name,
            self.cfg.source.url,
            self.cfg.source.reference,
            self.cfg.interval,
            self.cfg.root.display(),
            sd.display(),
            self.ledger.status.last_applied_commit.as_deref().unwrap_or("none"),
        );
        Ok(())
    }

    /// The committer time of `commit` from the git cache, when it is there.
    async fn cached_commit_time(&self, commit: Oid) -> Option<i64> {
        let dir = self.cfg.source.cache_dir.clone();
        tokio::task::spawn_blocking(move || source::Cache::open(&dir)?.commit_time(commit))
            .await
            .ok()?
            .ok()
    }

    /// Loads the rollout driver (its state file, the coordination kubeconfig) and confirms a
    /// slot held before a restart or a trial reboot. Network with a lock backend.
    async fn start_rollout(&mut self) -> Result<(), DaemonError> {
        self.rollout = crate::rollout::driver::Rollout::load(
            &self.cfg.node_name,
            &self.cfg.root,
            &self.cfg.state_dir,
            self.cfg.coordination.clone(),
            self.node.clock.clone(),
        )?;
        if let Some(Ok(l)) = self.last_good_config() {
            self.note_policy(&l);
        }
        let cfg = self.policy.clone().unwrap_or_default();
        if self.rollout.busy() || self.cfg.coordination.backend != BackendKind::None {
            self.rollout.recover(&cfg).await;
        }
        self.rollout_report().await;
        Ok(())
    }

    /// The files of the last applied commit from the git cache (no network), so drift is
    /// corrected even before the remote answers. `None` (logged) when the cache lacks it.
    async fn cached_snapshot(&self, commit: Oid) -> Option<Snapshot> {
        let dir = self.cfg.source.cache_dir.clone();
        let subdir = self.cfg.source.subdir.clone();
        let host = self.node.target.hostname.clone();
        let read = tokio::task::spawn_blocking(move || {
            let cache = source::Cache::open(&dir)?;
            source::snapshot(&cache, commit, subdir.as_deref(), &host)
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

    /// Serves `/metrics` until `stop` fires, when the agent config asks for it.
    pub(super) async fn serve_metrics(
        &self,
        stop: tokio::sync::oneshot::Receiver<()>,
    ) -> Result<Option<tokio::task::JoinHandle<std::io::Result<()>>>, DaemonError> {
        let Some(addr) = self.cfg.metrics_listen else {
            return Ok(None);
        };
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| DaemonError::Metrics { addr, source })?;
        // The bound address: with port 0 the kernel picked one.
        let bound = listener.local_addr().unwrap_or(addr);
        info!("metrics on http://{bound}/metrics");
        let m = self.ledger.metrics.clone();
        Ok(Some(tokio::spawn(metrics::serve(listener, m, async {
            let _ = stop.await;
        }))))
    }
}
