//! The async driver of the health gate: runs every check once per round, feeds the results to
//! the pure [`Gate`], and sleeps `interval` between rounds until the gate says healthy or the
//! timeout passes. All time comes from [`HealthContext::clock`].
//!
//! Invariants: a round is counted at the time it started (observations begun before the
//! deadline count); no round starts at or after the deadline; sleeps never overshoot the
//! deadline; the returned verdict is never [`Verdict::Pending`].

use std::fmt;
use std::time::Duration;

use super::checks::{run_checks, CheckOutcome};
use super::gate::{Gate, Verdict};
use super::{describe, HealthContext};
use crate::config::{HealthCheck, HealthConfig};

/// Where one check stood when the driver finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckStatus {
    /// The check.
    pub check: HealthCheck,
    /// The last outcome; `None` when no round ran.
    pub last: Option<CheckOutcome>,
    /// Consecutive successes at the end.
    pub streak: u32,
    /// Whether the streak reached the required count.
    pub passed: bool,
}

/// The result of [`wait_healthy`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthReport {
    /// `Healthy` or `TimedOut`.
    pub verdict: Verdict,
    /// Rounds of checks run.
    pub rounds: u32,
    /// Clock time from the start to the verdict.
    pub elapsed: Duration,
    /// Consecutive successes each check needed.
    pub required: u32,
    /// Where each check stood, in configuration order.
    pub checks: Vec<CheckStatus>,
}

impl HealthReport {
    /// Whether the verdict is healthy.
    pub fn healthy(&self) -> bool {
        self.verdict == Verdict::Healthy
    }
}

impl fmt::Display for HealthReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = match self.verdict {
            Verdict::Healthy => "healthy",
            Verdict::TimedOut => "timed out",
            Verdict::Pending => "pending",
        };
        writeln!(
            f,
            "{verdict} after {} rounds in {:.1?} ({} consecutive successes required)",
            self.rounds, self.elapsed, self.required
        )?;
        for c in &self.checks {
            let detail = c.last.as_ref().map_or("not run", |o| o.detail.as_str());
            writeln!(
                f,
                "  [{}] {} (streak {}): {detail}",
                if c.passed { "pass" } else { "FAIL" },
                describe(&c.check),
                c.streak
            )?;
        }
        Ok(())
    }
}

/// Runs rounds of `checks` every `cfg.interval` until each has `cfg.successes` consecutive
/// successes at once, or `cfg.timeout` passes. `checks` is the effective list (see
/// [`super::effective_checks`]); `cfg.checks` is not consulted.
/// Side effects: HTTP requests and commands of the checks, sleeping on `ctx.clock`.
pub async fn wait_healthy(
    checks: &[HealthCheck],
    cfg: &HealthConfig,
    ctx: &HealthContext,
) -> HealthReport {
    let clock = &ctx.clock;
    let started = clock.now();
    let mut gate = Gate::new(checks.len(), cfg.successes, started, cfg.timeout);
    let mut last: Vec<Option<CheckOutcome>> = vec![None; checks.len()];

    loop {
        let round_start = clock.now();
        if gate.poll(round_start) != Verdict::Pending {
            break;
        }
        let outcomes = run_checks(checks, ctx).await;
        let results: Vec<bool> = outcomes.iter().map(|o| o.ok).collect();
        for (check, outcome) in checks.iter().zip(&outcomes) {
            if outcome.ok {
                tracing::debug!(check = %describe(check), detail = %outcome.detail, "health check passed");
            } else {
                tracing::info!(check = %describe(check), detail = %outcome.detail, "health check failed");
            }
        }
        last = outcomes.into_iter().map(Some).collect();
        if gate.record_round(&results, round_start) != Verdict::Pending {
            break;
        }
        let pause = cfg.interval.min(gate.remaining(clock.now()));
        clock.sleep(pause).await;
    }

    let report = HealthReport {
        verdict: gate.verdict(),
        rounds: gate.rounds(),
        elapsed: clock.now().saturating_duration_since(started),
        required: gate.required(),
        checks: checks
            .iter()
            .zip(last)
            .enumerate()
            .map(|(i, (check, last))| CheckStatus {
                check: check.clone(),
                last,
                streak: gate.streak(i),
                passed: gate.passed(i),
            })
            .collect(),
    };
    match report.verdict {
        Verdict::Healthy => tracing::info!(rounds = report.rounds, "health gate passed"),
        _ => tracing::warn!(rounds = report.rounds, "health gate timed out"),
    }
    report
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::runner::CommandOutput;
    use crate::testing::{ManualClock, RecordingRunner, Scripted};

    fn cfg(successes: u32, interval: u64, timeout: u64) -> HealthConfig {
        HealthConfig {
            successes,
            interval: Duration::from_secs(interval),
            timeout: Duration::from_secs(timeout),
            ..HealthConfig::default()
        }
    }

    fn cmd(word: &str) -> HealthCheck {
        HealthCheck::Command {
            argv: vec![word.to_string()],
        }
    }

    fn ctx(runner: Arc<RecordingRunner>, clock: Arc<ManualClock>) -> HealthContext {
        HealthContext::new("/nonexistent", "node1", runner).with_clock(clock)
    }

    #[tokio::test]
    async fn becomes_healthy_after_required_streak_on_virtual_time() {
        let runner = Arc::new(RecordingRunner::new());
        // One check: fail, fail, then successes.
        runner.push(Scripted::Output(CommandOutput::exit(1)));
        runner.push(Scripted::Output(CommandOutput::exit(1)));
        let clock = Arc::new(ManualClock::new());
        let report = wait_healthy(
            &[cmd("probe")],
            &cfg(3, 5, 300),
            &ctx(runner.clone(), clock.clone()),
        )
        .await;
        assert_eq!(report.verdict, Verdict::Healthy, "{report}");
        assert_eq!(report.rounds, 5);
        assert_eq!(runner.calls().len(), 5);
        // Four pauses of 5 s between five rounds; no sleep after the verdict.
        assert_eq!(clock.elapsed(), Duration::from_secs(20));
        assert_eq!(report.checks[0].streak, 3);
    }

    #[tokio::test]
    async fn times_out_when_a_check_keeps_failing() {
        let runner = Arc::new(
            RecordingRunner::new().on(&["broken"], CommandOutput::exit(2).with_stderr("nope")),
        );
        let clock = Arc::new(ManualClock::new());
        let report = wait_healthy(
            &[cmd("fine"), cmd("broken")],
            &cfg(1, 5, 12),
            &ctx(runner, clock.clone()),
        )
        .await;
        assert_eq!(report.verdict, Verdict::TimedOut);
        // Rounds at t = 0, 5, 10; the next would start at 12 (the deadline).
        assert_eq!(report.rounds, 3);
        assert_eq!(clock.elapsed(), Duration::from_secs(12));
        assert!(report.checks[0].passed);
        assert!(!report.checks[1].passed);
        let text = report.to_string();
        assert!(text.contains("timed out after 3 rounds"), "{text}");
        assert!(
            text.contains("`broken` failed: exit status 2; stderr: nope"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn zero_timeout_runs_no_round() {
        let runner = Arc::new(RecordingRunner::new());
        let clock = Arc::new(ManualClock::new());
        let report = wait_healthy(&[cmd("x")], &cfg(1, 5, 0), &ctx(runner.clone(), clock)).await;
        assert_eq!(report.verdict, Verdict::TimedOut);
        assert_eq!(report.rounds, 0);
        assert!(runner.calls().is_empty());
        assert!(report.to_string().contains("not run"));
    }
}
