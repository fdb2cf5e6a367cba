//! Prometheus metrics of the daemon: counters kept in memory for this process and rendered in
//! the text exposition format, served at `/metrics` on a loopback address (axum).
//!
//! Rendering ([`Metrics::render`]) is pure given the counters; [`serve`] is the only I/O.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::source::TransferCounters;

/// Outcome label of `bosun_reconcile_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReconcileResult {
    Success,
    Error,
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
    /// Releases of bosun's code pages after work (see `crate::memory`), and the bytes advised.
    code_page_releases: AtomicU64,
    code_page_release_bytes: AtomicU64,
    /// Upgrade metrics text from the upgrade actor's state (already Prometheus text).
    upgrade_text: Mutex<String>,
    applied_commit: Mutex<Option<String>>,
    /// Network totals of the git source.
    pub transfer: Arc<TransferCounters>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Metrics {
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

    pub fn drift_corrected(&self, files: u64) {
        self.drift_corrections.fetch_add(files, Ordering::Relaxed);
    }

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
        o.push_str(&lock(&self.upgrade_text));
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

/// Serves `GET /metrics` on `listener` until `shutdown` resolves. Network I/O only.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::routing::get;
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

#[cfg(test)]
mod tests {
    use super::*;

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
        ] {
            assert!(t.lines().any(|l| l == line), "missing {line:?} in\n{t}");
        }
    }
}
