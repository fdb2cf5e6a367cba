//! The one place where bosun is about to disrupt the node: restart k3s because a config change
//! touched its configuration, or reboot into (or out of) an A/B trial.
//!
//! [`about_to_disrupt`] is called right before either, by the health-gated config apply
//! ([`crate::guarded_apply`], before applying a plan that restarts k3s or reverting one) and
//! by the upgrade actor ([`crate::upgrade::actor`], before the reboot command). Today it
//! records the action in the log; fleet-wide coordination (waves, windows, locks, drains)
//! hooks in here.

use std::fmt;

/// A disruptive action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disruption<'a> {
    /// Restart the k3s unit because commit `commit` changed its configuration.
    RestartK3s {
        /// The unit to restart (`k3s.service` or `k3s-agent.service`).
        unit: &'a str,
        /// The commit whose apply restarts it.
        commit: &'a str,
    },
    /// Reboot the node (A/B trial, rollback or fallback), for the reason given.
    Reboot {
        /// The lifecycle state rebooted into or out of (`staged`, `rolling_back`, `manual
        /// rollback`, …).
        why: &'a str,
    },
}

impl fmt::Display for Disruption<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Disruption::RestartK3s { unit, commit } => {
                write!(f, "restart {unit} for commit {commit}")
            }
            Disruption::Reboot { why } => write!(f, "reboot ({why})"),
        }
    }
}

/// Called right before a disruptive action. Logs it.
pub fn about_to_disrupt(action: &Disruption<'_>) {
    tracing::info!("about to disrupt the node: {action}");
}
