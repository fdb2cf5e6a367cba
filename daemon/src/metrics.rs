//! Prometheus metrics of the daemon: counters kept in memory for this process and rendered in
//! the text exposition format, served at `/metrics` on a loopback address (axum).
//!
//! Rendering ([`Metrics::render`]) is pure given the counters; [`serve`] is the only I/O.
//!
//! Invariants of the server (it shares the process, and its descriptors, with the poll loop):
//! - At most [`connection_cap`] connections are open at once: [`MAX_CONNECTIONS`], and never
//!   more than a sixteenth of the soft `RLIMIT_NOFILE`, so a flood can never take the
//!   descriptors the loop needs for git, the apply and its state files. Beyond the cap nothing
//!   is accepted: further clients wait in the kernel's listen queue, costing the process no
//!   descriptor and no memory.
//! - Every connection is closed [`CONNECTION_DEADLINE`] after it was accepted, whatever it is
//!   doing: a client that sends its request header slowly, never finishes it, idles on a
//!   keep-alive connection or reads the response slowly cannot hold its slot longer. A scrape
//!   takes milliseconds; a scraper that keeps connections alive simply reconnects.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::source::TransferCounters;

/// Most metrics connections open at once. A Prometheus server uses one; the rest is room for a
/// few `curl`s.
pub const MAX_CONNECTIONS: usize = 32;
/// Longest a metrics connection stays open after it was accepted.
pub const CONNECTION_DEADLINE: Duration = Duration::from_secs(5);

/// Outcome label of `bosun_reconcile_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReconcileResult {
    /// A commit was applied and changed files (`result="success"`).
    Success,
    /// The poll or the apply failed, or the commit was rejected (`result="error"`).
    Error,
    /// Nothing to change: the files already match (`result="noop"`).
    Noop,
}

/// The daemon's counters. Shared between the loop and the HTTP server.
#[derive(Debug, Default)]
pub struct Metrics {
    success: AtomicU64,
    error: AtomicU64,
    noop: AtomicU64,
    drift_corrections: AtomicU64,
    last_success: AtomicU64,
    refused: Mutex<BTreeMap<String, u64>>,
    config_rollbacks: AtomicU64,
    /// Warnings in the applied config (a gauge).
    config_warnings: AtomicU64,
    /// Releases of bosun's code pages after work (see `crate::memory`), and the bytes advised.
    code_page_releases: AtomicU64,
    code_page_release_bytes: AtomicU64,
    /// Upgrade metrics text from the upgrade actor's state (already Prometheus text).
    upgrade_text: Mutex<String>,
    applied_commit: Mutex<Option<String>>,
    /// The rollout state label (`idle`, `waiting-wave`, …), a slot held, evictions asked.
    rollout: Mutex<(String, bool, u64)>,
    /// Network totals of the git source.
    pub transfer: Arc<TransferCounters>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Metrics {
    /// Counters at zero, sharing the git source's transfer counters.
    pub fn new(transfer: Arc<TransferCounters>) -> Self {
        Metrics {
            transfer,
            ..Default::default()
        }
    }

    /// Counts one reconcile decision; a success or no-op also stamps the last success time.
    pub fn reconcile(&self, result: ReconcileResult, now_unix: u64) {
        let c = match result {
            ReconcileResult::Success => &self.success,
            ReconcileResult::Error => &self.error,
            ReconcileResult::Noop => &self.noop,
        };
        c.fetch_add(1, Ordering::Relaxed);
        if result != ReconcileResult::Error {
            self.last_success.store(now_unix, Ordering::Relaxed);
        }
    }

    /// Counts a refused commit under `reason` (a [`crate::source::Refusal::label`]).
    pub fn refused(&self, reason: &str) {
        *lock(&self.refused).entry(reason.to_string()).or_default() += 1;
    }

    /// Counts a config change rolled back by the health gate.
    pub fn config_rolled_back(&self) {
        self.config_rollbacks.fetch_add(1, Ordering::Relaxed);
    }

    /// Starts the rollback counter from the persisted total (the commit history).
    pub fn seed_config_rollbacks(&self, total: u64) {
        self.config_rollbacks.store(total, Ordering::Relaxed);
    }

    /// Sets the rollout gauges: the state the node waits at, whether it holds a slot of its
    /// group, and the evictions it asked for so far.
    pub fn set_rollout(&self, state: &str, lock_held: bool, evictions: u64) {
        *lock(&self.rollout) = (state.to_string(), lock_held, evictions);
    }

    /// Sets the number of warnings in the applied config.
    pub fn set_config_warnings(&self, count: u64) {
        self.config_warnings.store(count, Ordering::Relaxed);
    }

    /// Replaces the upgrade section of the exposition (`bosun_upgrades_total`, version, slot).
    pub fn set_upgrade_text(&self, text: String) {
        *lock(&self.upgrade_text) = text;
    }

    /// Counts one release of bosun's code pages covering `bytes` of mappings.
    pub fn code_pages_released(&self, bytes: u64) {
        self.code_page_releases.fetch_add(1, Ordering::Relaxed);
        self.code_page_release_bytes
            .fetch_add(bytes, Ordering::Relaxed);
    }

    /// Counts `files` managed files reverted after a manual change.
    pub fn drift_corrected(&self, files: u64) {
        self.drift_corrections.fetch_add(files, Ordering::Relaxed);
    }

    /// Sets the commit of `bosun_applied_commit_info`.
    pub fn set_applied_commit(&self, commit: &str) {
        *lock(&self.applied_commit) = Some(commit.to_string());
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "# HELP bosun_reconcile_total Reconcile decisions by result.\n# TYPE bosun_reconcile_total counter"
        );
        for (label, c) in [
            ("success", &self.success),
            ("error", &self.error),
            ("noop", &self.noop),
        ] {
            let _ = writeln!(
                o,
                "bosun_reconcile_total{{result=\"{label}\"}} {}",
                c.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            o,
            "# HELP bosun_applied_commit_info The commit whose files are applied.\n# TYPE bosun_applied_commit_info gauge"
        );
        if let Some(c) = lock(&self.applied_commit).as_deref() {
            let _ = writeln!(o, "bosun_applied_commit_info{{commit=\"{}\"}} 1", escape(c));
        }
        let _ = writeln!(
            o,
            "# HELP bosun_last_success_timestamp_seconds Time of the last successful reconcile decision.\n# TYPE bosun_last_success_timestamp_seconds gauge\nbosun_last_success_timestamp_seconds {}",
            self.last_success.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            o,
            "# HELP bosun_drift_corrections_total Managed files reverted after a manual change.\n# TYPE bosun_drift_corrections_total counter\nbosun_drift_corrections_total {}",
            self.drift_corrections.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            o,
            "# HELP bosun_source_refused_total Commits refused by verification or anti-rollback.\n# TYPE bosun_source_refused_total counter"
        );
        for (reason, n) in lock(&self.refused).iter() {
            let _ = writeln!(
                o,
                "bosun_source_refused_total{{reason=\"{}\"}} {n}",
                escape(reason)
            );
        }
        let _ = writeln!(
            o,
            "# HELP bosun_code_page_releases_total Times bosun paged its own code out after an apply or re-plan.\n# TYPE bosun_code_page_releases_total counter\nbosun_code_page_releases_total {}\n# HELP bosun_code_page_release_bytes_total Bytes of executable mappings advised MADV_PAGEOUT.\n# TYPE bosun_code_page_release_bytes_total counter\nbosun_code_page_release_bytes_total {}",
            self.code_page_releases.load(Ordering::Relaxed),
            self.code_page_release_bytes.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            o,
            "# HELP bosun_config_rollbacks_total Config changes rolled back because K3s was unhealthy after them.\n# TYPE bosun_config_rollbacks_total counter\nbosun_config_rollbacks_total {}",
            self.config_rollbacks.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            o,
            "# HELP bosun_config_warnings Warnings in the applied config (unknown keys, k3os leniencies such as a skipped placeholder ssh key).\n# TYPE bosun_config_warnings gauge\nbosun_config_warnings {}",
            self.config_warnings.load(Ordering::Relaxed)
        );
        o.push_str(&lock(&self.upgrade_text));
        let (state, held, evictions) = lock(&self.rollout).clone();
        let state = if state.is_empty() {
            "idle".to_string()
        } else {
            state
        };
        let _ = writeln!(
            o,
            "# HELP bosun_rollout_state The rollout gate the node waits at (1 for the current state).\n# TYPE bosun_rollout_state gauge\nbosun_rollout_state{{state=\"{state}\"}} 1"
        );
        let _ = writeln!(
            o,
            "# HELP bosun_lock_held Whether the node holds a slot of its rollout group.\n# TYPE bosun_lock_held gauge\nbosun_lock_held {}",
            u8::from(held)
        );
        let _ = writeln!(
            o,
            "# HELP bosun_drain_evictions_total Pod evictions asked for by drains.\n# TYPE bosun_drain_evictions_total counter\nbosun_drain_evictions_total {evictions}"
        );
        let t = self.transfer.totals();
        let _ = writeln!(
            o,
            "# HELP bosun_polls_total Reads of the remote ref advertisement.\n# TYPE bosun_polls_total counter\nbosun_polls_total {}",
            t.polls
        );
        let _ = writeln!(
            o,
            "# HELP bosun_pack_fetches_total Fetches that negotiated a pack.\n# TYPE bosun_pack_fetches_total counter\nbosun_pack_fetches_total {}",
            t.pack_fetches
        );
        let _ = writeln!(
            o,
            "# HELP bosun_fetch_bytes_total Pack bytes received from the remote.\n# TYPE bosun_fetch_bytes_total counter\nbosun_fetch_bytes_total {}",
            t.received_bytes
        );
        o
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// How many metrics connections may be open at once given the soft `RLIMIT_NOFILE`
/// (`None`: unlimited): [`MAX_CONNECTIONS`], at most a sixteenth of the limit, at least 1. Pure.
pub fn connection_cap(soft_nofile: Option<u64>) -> usize {
    let share = soft_nofile.map_or(u64::MAX, |n| n / 16);
    usize::try_from(share).map_or(MAX_CONNECTIONS, |s| s.clamp(1, MAX_CONNECTIONS))
}

/// Serves `GET /metrics` on `listener` until `shutdown` resolves, with the connection cap and
/// deadline of the module docs (the cap is computed once, from the soft `RLIMIT_NOFILE` now).
/// Network I/O only.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::routing::get;
    let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
    let listener = BoundedListener {
        inner: listener,
        permits: Arc::new(Semaphore::new(connection_cap(soft))),
        deadline: CONNECTION_DEADLINE,
    };
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let m = metrics.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    m.render(),
                )
            }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// A listener that accepts only while a connection slot is free; each accepted connection
/// carries its slot and its deadline.
struct BoundedListener {
    inner: TcpListener,
    permits: Arc<Semaphore>,
    /// [`CONNECTION_DEADLINE`] (shorter in tests).
    deadline: Duration,
}

impl axum::serve::Listener for BoundedListener {
    type Io = BoundedConnection;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            // Wait for a free slot before accepting: queued clients hold no descriptor here.
            let Ok(slot) = self.permits.clone().acquire_owned().await else {
                unreachable!("the semaphore is never closed");
            };
            match self.inner.accept().await {
                Ok((stream, addr)) => {
                    let deadline = Box::pin(tokio::time::sleep(self.deadline));
                    return (
                        BoundedConnection {
                            stream,
                            deadline,
                            _slot: slot,
                        },
                        addr,
                    );
                }
                // The client gave up between connect and accept.
                Err(e) if is_connection_error(&e) => {}
                Err(e) => {
                    // Out of descriptors or memory: the cap should prevent it; wait, do not spin.
                    tracing::warn!("metrics: accept failed: {e}");
                    drop(slot);
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}

/// An accepted metrics connection: fails every read and write once its deadline has passed
/// (hyper then closes it), and frees its slot when dropped.
struct BoundedConnection {
    stream: TcpStream,
    deadline: Pin<Box<tokio::time::Sleep>>,
    _slot: OwnedSemaphorePermit,
}

impl BoundedConnection {
    /// `Err(TimedOut)` once the deadline has passed; otherwise registers the waker for it, so
    /// a connection waiting on a silent client is woken and closed at the deadline.
    fn check_deadline(&mut self, cx: &mut Context<'_>) -> std::io::Result<()> {
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "metrics connection deadline passed",
            )),
            Poll::Pending => Ok(()),
        }
    }
}

impl AsyncRead for BoundedConnection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if let Err(e) = this.check_deadline(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for BoundedConnection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        if let Err(e) = this.check_deadline(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if let Err(e) = this.check_deadline(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_cap_stays_well_below_the_descriptor_limit() {
        assert_eq!(connection_cap(None), MAX_CONNECTIONS);
        assert_eq!(connection_cap(Some(65_536)), MAX_CONNECTIONS);
        assert_eq!(connection_cap(Some(1024)), MAX_CONNECTIONS);
        assert_eq!(connection_cap(Some(256)), 16);
        assert_eq!(connection_cap(Some(8)), 1);
    }

    /// A client that connects and says nothing is closed at the deadline, and a second client
    /// beyond a cap of one waits unaccepted until the first slot frees.
    #[tokio::test]
    async fn silent_connections_are_closed_at_the_deadline_and_slots_are_capped() {
        use tokio::io::AsyncReadExt;
        let inner = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = inner.local_addr().unwrap();
        let deadline = Duration::from_millis(100);
        let mut listener = BoundedListener {
            inner,
            permits: Arc::new(Semaphore::new(1)),
            deadline,
        };
        let mut first = TcpStream::connect(addr).await.unwrap();
        let (mut conn, _) = axum::serve::Listener::accept(&mut listener).await;
        let _second = TcpStream::connect(addr).await.unwrap();
        let second_accept =
            tokio::time::timeout(deadline * 3, axum::serve::Listener::accept(&mut listener));
        // The only slot is taken: nothing more is accepted however long we wait.
        let (second_accept, read) = tokio::join!(second_accept, async {
            let mut buf = [0u8; 1];
            tokio::io::AsyncReadExt::read(&mut conn, &mut buf).await
        });
        assert!(second_accept.is_err(), "accepted beyond the cap");
        let e = read.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
        drop(conn);
        let mut buf = [0u8; 1];
        assert_eq!(
            first.read(&mut buf).await.unwrap(),
            0,
            "closed by the server"
        );
        // With the slot free, the waiting client is accepted.
        let accepted = tokio::time::timeout(
            Duration::from_secs(10),
            axum::serve::Listener::accept(&mut listener),
        )
        .await;
        assert!(accepted.is_ok(), "the queued client was never accepted");
    }

    #[test]
    fn exposition_has_every_metric_with_labels() {
        let m = Metrics::new(Arc::new(TransferCounters::new()));
        m.reconcile(ReconcileResult::Success, 1700);
        m.reconcile(ReconcileResult::Noop, 1800);
        m.reconcile(ReconcileResult::Error, 1900);
        m.refused("unsigned");
        m.refused("unsigned");
        m.drift_corrected(2);
        m.code_pages_released(8192);
        m.set_applied_commit("abc");
        m.set_config_warnings(3);
        let t = m.render();
        for line in [
            "bosun_reconcile_total{result=\"success\"} 1",
            "bosun_reconcile_total{result=\"error\"} 1",
            "bosun_reconcile_total{result=\"noop\"} 1",
            "bosun_applied_commit_info{commit=\"abc\"} 1",
            "bosun_last_success_timestamp_seconds 1800",
            "bosun_drift_corrections_total 2",
            "bosun_code_page_releases_total 1",
            "bosun_code_page_release_bytes_total 8192",
            "bosun_source_refused_total{reason=\"unsigned\"} 2",
            "bosun_fetch_bytes_total 0",
            "bosun_config_warnings 3",
        ] {
            assert!(t.lines().any(|l| l == line), "missing {line:?} in\n{t}");
        }
    }
}
