//! One pass of the A/B upgrade lifecycle as the daemon runs it after every poll: read where
//! the node stands, judge a trial boot with the K3s health checks, then step the actor
//! (install, schedule a trial, commit, roll back; see [`super::actor`]).
//!
//! A trial boot is judged here, once: when the node booted the slot that is staged or on
//! trial, the trial is first recorded (so `bosun upgrade status` says `trial` during the
//! health wait, and a restart meanwhile does not start the trial clock again), then the
//! health gate runs with the same checks as a config apply, and its verdict is the
//! [`HealthInput`] of the next step.

use super::actor::{StepReport, UpgradeActor};
use super::machine::{HealthInput, Lifecycle};
use crate::bootenv::Slot;
use crate::config::model::UpgradeConfig;
use crate::config::NodeConfig;
use crate::health::{effective_checks, report_summary, wait_healthy, HealthContext, K3sRole};

/// Whether the node booted the slot whose image is staged or on trial (pure).
pub fn on_trial(lifecycle: &Lifecycle, booted: Option<Slot>) -> bool {
    match lifecycle {
        Lifecycle::Staged { slot, .. } | Lifecycle::Trial { slot, .. } => booted == Some(*slot),
        _ => false,
    }
}

/// What a pass did: the actor back (`None` when a step's task failed: upgrades stop until
/// the daemon restarts) and the last step's report.
pub struct Pass {
    /// The actor for the next pass.
    pub actor: Option<UpgradeActor>,
    /// The report of the last step that ran.
    pub report: Option<StepReport>,
}

/// Runs the health gate on a trial boot: healthy, or unhealthy with the summary. HTTP
/// requests and commands of the checks; sleeps on the health clock.
pub async fn judge_trial(config: &NodeConfig, health: &HealthContext) -> HealthInput {
    let role = K3sRole::from_k3os(&config.k3os);
    let checks = effective_checks(&config.health, role);
    tracing::info!(
        "upgrade: judging the trial boot with {} health check(s)",
        checks.len()
    );
    let report = wait_healthy(&checks, &config.health, health).await;
    if report.healthy() {
        HealthInput::Healthy
    } else {
        HealthInput::Unhealthy(report_summary(&report))
    }
}

/// Runs one [`UpgradeActor::step`] on a blocking thread and logs it. May write a slot and
/// the boot env, and reboot.
async fn step(
    mut actor: UpgradeActor,
    desired: Option<UpgradeConfig>,
    health: HealthInput,
) -> Pass {
    let joined = tokio::task::spawn_blocking(move || {
        let r = actor.step(desired.as_ref(), health);
        (actor, r)
    })
    .await;
    let (actor, result) = match joined {
        Ok(pair) => pair,
        Err(e) => {
            tracing::error!("upgrade step task failed: {e}; upgrades stop until restart");
            return Pass {
                actor: None,
                report: None,
            };
        }
    };
    let report = match result {
        Ok(report) => {
            for p in &report.performed {
                tracing::info!("upgrade: {p}");
            }
            for n in &report.notes {
                tracing::debug!("upgrade: {n:?}");
            }
            tracing::info!("upgrade: {}", report.state.lifecycle.name());
            Some(report)
        }
        Err(e) => {
            tracing::warn!("upgrade: {e}");
            None
        }
    };
    Pass {
        actor: Some(actor),
        report,
    }
}

/// One pass of the lifecycle against `config` (the last good config): judges a trial boot
/// (see the module docs), then steps the actor. May write a slot and the boot env, and reboot.
pub async fn run(actor: UpgradeActor, config: &NodeConfig, health: &HealthContext) -> Pass {
    let desired = config.upgrade.clone();
    let status = match actor.status() {
        Ok(st) => st,
        Err(e) => {
            tracing::warn!("upgrade: {e}");
            return Pass {
                actor: Some(actor),
                report: None,
            };
        }
    };
    if !on_trial(&status.state.lifecycle, status.booted) {
        return step(actor, desired, HealthInput::Pending).await;
    }
    let mut actor = actor;
    let mut recorded = None;
    if matches!(status.state.lifecycle, Lifecycle::Staged { .. }) {
        // Record the trial (and its start) before judging it.
        let pass = step(actor, desired.clone(), HealthInput::Pending).await;
        let Some(a) = pass.actor else {
            return pass;
        };
        actor = a;
        recorded = pass.report;
    }
    let verdict = judge_trial(config, health).await;
    let pass = step(actor, desired, verdict).await;
    Pass {
        report: pass.report.or(recorded),
        ..pass
    }
}
