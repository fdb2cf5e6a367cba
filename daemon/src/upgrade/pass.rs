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
use crate::config::{HealthCheck, HealthConfig, NodeConfig};
use crate::health::{
    effective_checks, report_summary, wait_healthy, HealthContext, HealthReport, K3sRole,
};

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
            // Every poll runs a pass: the lifecycle is news only when something was done.
            if report.performed.is_empty() {
                tracing::debug!("upgrade: {}", report.state.lifecycle.name());
            } else {
                tracing::info!("upgrade: {}", report.state.lifecycle.name());
            }
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

/// A trial boot waiting for its health verdict: the actor, the desired image, and what the
/// health gate must check. Finish it with [`finish`].
pub struct Judging {
    /// The actor, with the trial recorded.
    pub actor: UpgradeActor,
    desired: Option<UpgradeConfig>,
    /// The checks to run (the config's, or the role's defaults).
    pub checks: Vec<HealthCheck>,
    /// Timeout, interval and required successes.
    pub health: HealthConfig,
    /// The report of the step that recorded the trial, if one ran.
    recorded: Option<StepReport>,
}

/// How far [`begin`] got.
pub enum Begun {
    /// The pass is over.
    Done(Pass),
    /// The node booted the slot on trial: judge it with the health gate, then [`finish`].
    Judging(Judging),
}

/// The first half of a pass: when the node booted the slot that is staged or on trial,
/// records the trial and returns what to judge; otherwise steps the actor. May write a slot
/// and the boot env, and reboot.
pub async fn begin(actor: UpgradeActor, config: &NodeConfig) -> Begun {
    let desired = config.upgrade.clone();
    let status = match actor.status() {
        Ok(st) => st,
        Err(e) => {
            tracing::warn!("upgrade: {e}");
            return Begun::Done(Pass {
                actor: Some(actor),
                report: None,
            });
        }
    };
    if !on_trial(&status.state.lifecycle, status.booted) {
        return Begun::Done(step(actor, desired, HealthInput::Pending).await);
    }
    let mut actor = actor;
    let mut recorded = None;
    if matches!(status.state.lifecycle, Lifecycle::Staged { .. }) {
        // Record the trial (and its start) before judging it.
        let pass = step(actor, desired.clone(), HealthInput::Pending).await;
        let Some(a) = pass.actor else {
            return Begun::Done(pass);
        };
        actor = a;
        recorded = pass.report;
    }
    let role = K3sRole::from_k3os(&config.k3os);
    let checks = effective_checks(&config.health, role);
    tracing::info!(
        "upgrade: judging the trial boot with {} health check(s)",
        checks.len()
    );
    Begun::Judging(Judging {
        actor,
        desired,
        checks,
        health: config.health.clone(),
        recorded,
    })
}

/// The second half: steps the actor with the verdict of `report` (commit, or roll back and
/// reboot). May write the boot env and reboot.
pub async fn finish(judging: Judging, report: &HealthReport) -> Pass {
    let verdict = if report.healthy() {
        HealthInput::Healthy
    } else {
        HealthInput::Unhealthy(report_summary(report))
    };
    let pass = step(judging.actor, judging.desired, verdict).await;
    Pass {
        report: pass.report.or(judging.recorded),
        ..pass
    }
}

/// One whole pass against `config` (the last good config): [`begin`], the health wait on
/// `health`'s clock, [`finish`]. May write a slot and the boot env, and reboot.
pub async fn run(actor: UpgradeActor, config: &NodeConfig, health: &HealthContext) -> Pass {
    match begin(actor, config).await {
        Begun::Done(pass) => pass,
        Begun::Judging(j) => {
            let report = wait_healthy(&j.checks, &j.health, health).await;
            finish(j, &report).await
        }
    }
}
