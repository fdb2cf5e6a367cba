//! K3s health checking: decides whether a node is healthy enough to keep a config apply or to
//! commit an A/B upgrade.
//!
//! Owns:
//! - the default check set per [`K3sRole`] ([`default_checks`]); the role itself is chosen by
//!   [`crate::config::K3os::k3s_role`], the rule rendering uses too;
//! - the checks themselves ([`checks`]): kubelet healthz, apiserver readyz, node Ready,
//!   plain HTTP(S), commands and systemd units, each producing a [`CheckOutcome`];
//! - kubeconfig reading ([`kubeconfig`]);
//! - the pure gate state machine ([`gate::Gate`]): consecutive successes per check, deadline;
//! - the async driver ([`wait_healthy`]) that runs rounds until healthy or timed out, with the
//!   clock behind [`Clock`] so tests never sleep for real;
//! - the one-shot report behind `bosun health` ([`check_once`], [`run_health_command`]).
//!
//! Invariants: a check never panics or returns an error - every problem (unreachable,
//! unreadable kubeconfig, bad certificate) is a failed [`CheckOutcome`] whose detail says what
//! and where; secrets (tokens, keys) never appear in details; every node path is resolved under
//! [`HealthContext::root`]; commands only run through [`HealthContext::runner`].

pub mod checks;
pub mod gate;
pub mod kubeconfig;
pub mod wait;

use std::fmt;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, SystemClock};
use crate::config::{HealthCheck, HealthConfig};
use crate::runner::{display_argv, CommandRunner};

pub use crate::config::K3sRole;
pub use checks::{run_check, run_checks, CheckOutcome};
pub use gate::{Gate, Verdict};
pub use kubeconfig::{Kubeconfig, KubeconfigError, KubeconfigRefs};
pub use wait::{wait_healthy, CheckStatus, HealthReport};

/// Default kubelet health endpoint.
pub const KUBELET_HEALTHZ: &str = "http://127.0.0.1:10248/healthz";
/// Kubeconfig K3s writes on servers.
pub const K3S_KUBECONFIG: &str = "/etc/rancher/k3s/k3s.yaml";

/// The checks used when `health.checks` is empty: the role's unit is active, the kubelet
/// answers healthz, and on servers the apiserver answers readyz (via K3s's kubeconfig).
pub fn default_checks(role: K3sRole) -> Vec<HealthCheck> {
    let mut checks = vec![
        HealthCheck::Unit {
            name: role.unit().to_string(),
        },
        HealthCheck::Kubelet {
            url: KUBELET_HEALTHZ.to_string(),
        },
    ];
    if role == K3sRole::Server {
        checks.push(HealthCheck::Apiserver {
            kubeconfig: K3S_KUBECONFIG.to_string(),
            url: None,
        });
    }
    checks
}

/// `cfg.checks`, or [`default_checks`] for `role` when the config lists none.
pub fn effective_checks(cfg: &HealthConfig, role: K3sRole) -> Vec<HealthCheck> {
    if cfg.checks.is_empty() {
        default_checks(role)
    } else {
        cfg.checks.clone()
    }
}

/// One-line description of a check for logs and reports (never contains secrets).
pub fn describe(check: &HealthCheck) -> String {
    match check {
        HealthCheck::Unit { name } => format!("unit {name} active"),
        HealthCheck::Kubelet { url } => format!("kubelet {url}"),
        HealthCheck::Apiserver { kubeconfig, url } => match url {
            Some(u) => format!("apiserver {u}/readyz (credentials from {kubeconfig})"),
            None => format!("apiserver readyz (via {kubeconfig})"),
        },
        HealthCheck::NodeReady { kubeconfig, node } => match node {
            Some(n) => format!("node {n} Ready (via {kubeconfig})"),
            None => format!("this node Ready (via {kubeconfig})"),
        },
        HealthCheck::Http { url, status, .. } => format!("http {url} -> {status}"),
        HealthCheck::Command { argv } => format!("command `{}`", display_argv(argv)),
    }
}

/// Everything the checks need from the outside world.
#[derive(Clone)]
pub struct HealthContext {
    /// bosun's `--root`: every node path (kubeconfig, CA files, token files) is read under it.
    pub root: PathBuf,
    /// This node's hostname: the default node name of [`HealthCheck::NodeReady`].
    pub hostname: String,
    /// Runs [`HealthCheck::Command`] and [`HealthCheck::Unit`].
    pub runner: Arc<dyn CommandRunner>,
    /// Time source of [`wait_healthy`].
    pub clock: Arc<dyn Clock>,
    /// TCP + TLS connect timeout of each HTTP check.
    pub connect_timeout: Duration,
    /// Whole-request timeout of each HTTP check (connect, send, read the body).
    pub request_timeout: Duration,
    /// Largest response body read; a longer body fails the check.
    pub max_body_bytes: usize,
}

impl HealthContext {
    /// Default [`Self::connect_timeout`]. A check that cannot connect in time fails that round;
    /// the gate's next round tries again.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
    /// Default [`Self::request_timeout`]. A check whose answer takes longer fails that round.
    pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
    /// Node objects carry image lists; 4 MiB is far above a real node and far below 1 GB RAM.
    pub const DEFAULT_MAX_BODY_BYTES: usize = 4 << 20;

    /// A context with the real clock and default timeouts.
    pub fn new(
        root: impl Into<PathBuf>,
        hostname: impl Into<String>,
        runner: Arc<dyn CommandRunner>,
    ) -> Self {
        HealthContext {
            root: root.into(),
            hostname: hostname.into(),
            runner,
            clock: Arc::new(SystemClock),
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            request_timeout: Self::DEFAULT_REQUEST_TIMEOUT,
            max_body_bytes: Self::DEFAULT_MAX_BODY_BYTES,
        }
    }

    /// Replaces the clock (builder style).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }
}

impl fmt::Debug for HealthContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HealthContext")
            .field("root", &self.root)
            .field("hostname", &self.hostname)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("max_body_bytes", &self.max_body_bytes)
            .finish_non_exhaustive()
    }
}

/// The result of one check in a one-shot run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    /// The check that ran.
    pub check: HealthCheck,
    /// Whether it passed, and the detail.
    pub outcome: CheckOutcome,
}

/// Runs every check once, concurrently. Side effects: HTTP requests, commands via the runner.
pub async fn check_once(checks: &[HealthCheck], ctx: &HealthContext) -> Vec<CheckResult> {
    let outcomes = run_checks(checks, ctx).await;
    checks
        .iter()
        .cloned()
        .zip(outcomes)
        .map(|(check, outcome)| CheckResult { check, outcome })
        .collect()
}

/// `bosun health`: runs the effective checks for `role` once and writes a readable report
/// to `out`. Returns whether every check passed (exit 0) or not (exit 1).
/// Side effects: HTTP requests, commands via the runner, writes to `out`.
pub async fn run_health_command(
    cfg: &HealthConfig,
    role: K3sRole,
    ctx: &HealthContext,
    out: &mut dyn Write,
) -> std::io::Result<bool> {
    run_health_command_at(cfg, role, ctx, true, out).await
}

/// Whether a check asks the live system (systemd, or a program on this machine's `PATH`)
/// rather than an endpoint: such checks say nothing about a `--root` other than `/`.
pub fn checks_live_system(check: &HealthCheck) -> bool {
    matches!(
        check,
        HealthCheck::Unit { .. } | HealthCheck::Command { .. }
    )
}

/// [`run_health_command`] for any root: when `live` is false (`--root` is not `/`), unit and
/// command checks are not run and are reported as `skipped (not the live root)` — never as
/// passed; the verdict is over the checks that ran. Returns whether every check that ran passed.
/// Side effects: HTTP requests, commands via the runner (only when `live`), writes to `out`.
pub async fn run_health_command_at(
    cfg: &HealthConfig,
    role: K3sRole,
    ctx: &HealthContext,
    live: bool,
    out: &mut dyn Write,
) -> std::io::Result<bool> {
    let (skipped, checks): (Vec<HealthCheck>, Vec<HealthCheck>) = effective_checks(cfg, role)
        .into_iter()
        .partition(|c| !live && checks_live_system(c));
    let results = check_once(&checks, ctx).await;
    let source = if cfg.checks.is_empty() {
        format!("default checks for a K3s {role}")
    } else {
        "checks from health.checks".to_string()
    };
    if live {
        writeln!(out, "bosun health: {} ({source})", ctx.hostname)?;
    } else {
        writeln!(
            out,
            "bosun health: {} ({source}; root {})",
            ctx.hostname,
            ctx.root.display()
        )?;
    }
    for r in &results {
        writeln!(
            out,
            "  [{}] {}: {}",
            if r.outcome.ok { " ok " } else { "FAIL" },
            describe(&r.check),
            r.outcome.detail
        )?;
    }
    for c in &skipped {
        writeln!(out, "  [skip] {}: skipped (not the live root)", describe(c))?;
    }
    let failed = results.iter().filter(|r| !r.outcome.ok).count();
    let (ran, skip_note) = match (live, skipped.len()) {
        (true, _) => ("", String::new()),
        (false, 0) => (" that ran", String::new()),
        (false, n) => (" that ran", format!(", {n} skipped")),
    };
    if failed == 0 {
        writeln!(
            out,
            "healthy: all {} checks{ran} passed{skip_note}",
            results.len()
        )?;
    } else {
        writeln!(
            out,
            "unhealthy: {failed} of {} checks failed{skip_note}",
            results.len()
        )?;
    }
    Ok(failed == 0)
}

/// One line: the verdict and each failing check with its last detail (pure).
pub fn report_summary(report: &HealthReport) -> String {
    let mut s = report
        .to_string()
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    for c in report.checks.iter().filter(|c| !c.passed) {
        let detail = c.last.as_ref().map_or("not run", |o| o.detail.as_str());
        s.push_str(&format!("; {}: {detail}", describe(&c.check)));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::K3os;
    use crate::runner::CommandOutput;
    use crate::testing::RecordingRunner;

    #[test]
    fn default_checks_per_role() {
        assert_eq!(
            default_checks(K3sRole::Server),
            vec![
                HealthCheck::Unit { name: "k3s".into() },
                HealthCheck::Kubelet {
                    url: "http://127.0.0.1:10248/healthz".into()
                },
                HealthCheck::Apiserver {
                    kubeconfig: "/etc/rancher/k3s/k3s.yaml".into(),
                    url: None
                },
            ]
        );
        assert_eq!(
            default_checks(K3sRole::Agent),
            vec![
                HealthCheck::Unit {
                    name: "k3s-agent".into()
                },
                HealthCheck::Kubelet {
                    url: "http://127.0.0.1:10248/healthz".into()
                },
            ]
        );
    }

    #[test]
    fn effective_checks_prefers_configured_checks() {
        let mut cfg = HealthConfig::default();
        assert_eq!(
            effective_checks(&cfg, K3sRole::Agent),
            default_checks(K3sRole::Agent)
        );
        cfg.checks = vec![HealthCheck::Command {
            argv: vec!["true".into()],
        }];
        assert_eq!(effective_checks(&cfg, K3sRole::Server), cfg.checks);
    }

    #[test]
    fn role_from_k3os_follows_k3os_rules() {
        let mut k = K3os::default();
        assert_eq!(K3sRole::from_k3os(&k), K3sRole::Server);
        k.server_url = Some("https://10.0.0.1:6443".into());
        assert_eq!(K3sRole::from_k3os(&k), K3sRole::Agent);
        k.k3s_args = vec!["server".into(), "--disable=traefik".into()];
        assert_eq!(K3sRole::from_k3os(&k), K3sRole::Server);
        k.server_url = None;
        k.k3s_args = vec!["agent".into()];
        assert_eq!(K3sRole::from_k3os(&k), K3sRole::Agent);
    }

    #[tokio::test]
    async fn health_command_reports_each_check_and_overall_result() {
        let runner = Arc::new(
            RecordingRunner::new()
                .on(&["systemctl", "is-active"], CommandOutput::exit(3))
                .on(&["false"], CommandOutput::exit(1)),
        );
        let ctx = HealthContext::new("/nonexistent-root", "node1", runner.clone());
        let cfg = HealthConfig {
            checks: vec![
                HealthCheck::Command {
                    argv: vec!["true".into()],
                },
                HealthCheck::Unit { name: "k3s".into() },
            ],
            ..HealthConfig::default()
        };
        let mut out = Vec::new();
        let ok = run_health_command(&cfg, K3sRole::Server, &ctx, &mut out)
            .await
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(!ok, "{text}");
        assert!(text.contains("[ ok ] command `true`"), "{text}");
        assert!(text.contains("[FAIL] unit k3s active"), "{text}");
        assert!(text.contains("unhealthy: 1 of 2 checks failed"), "{text}");
        // Checks run concurrently, so the call order is not fixed.
        let calls = runner.calls();
        assert_eq!(calls.len(), 2);
        assert!(calls.contains(&vec![
            "systemctl".to_string(),
            "is-active".into(),
            "--quiet".into(),
            "k3s".into()
        ]));
    }
}
