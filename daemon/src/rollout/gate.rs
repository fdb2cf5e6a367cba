//! The rollout gates as one pure decision, in the shape of `upgrade::machine::decide`: given
//! the persisted [`Phase`] and what the node observes now ([`Inputs`]), [`decide`] returns what
//! the node is waiting for ([`Status`]) and the ordered [`Step`]s to perform. A small driver
//! executes the steps in order, stops at the first one that fails or is refused (a refused
//! [`Step::TakeLock`] means "waiting for a slot"), and decides again with fresh observations.
//!
//! ```text
//! Idle ─wave─halt─window─lock─► Draining{since} ─pods gone─► Disrupting ─healthy─► Idle
//!                                     │ timeout                 │ rolled back
//!                                     ▼                         ▼
//!                           Backoff{until} ──► Idle     Idle (marked failed) / HoldingFailed
//! ```
//!
//! Gates, in order, before a disruption starts: the wave ([`super::wave`]), the canary halt
//! (enough nodes marked failed for this commit), the maintenance window ([`crate::config::window`]),
//! the lock (a slot of the group's semaphore), then the drain (reboots always; k3s restarts
//! with `drain_on_restart`).
//!
//! # Invariants (each has a test that cuts the power after every step)
//! * Whether the node was unschedulable before bosun cordoned it is persisted **before** the
//!   cordon, so a crash cannot turn bosun's own cordon into "it was cordoned already", and a
//!   node cordoned by someone else is never uncordoned by bosun.
//! * The intent to disrupt is persisted before [`Step::Proceed`], and the slot is held across
//!   the disruption (the trial reboot) until its verdict: it is released only after the trial
//!   committed or the restart passed its health gate (or the rollback finished).
//! * Uncordon comes before releasing the slot (after a disruption and on a drain timeout),
//!   so the next node never starts while this one is still cordoned.
//! * Windows gate starting only: a node past the lock gate finishes whatever the clock says.
//! * A slot held while the phase is `Idle` or `Backoff` (a crash after taking or before
//!   releasing it) is released.

use serde::{Deserialize, Serialize};

use super::wave;
use crate::config::rollout::RolloutConfig;
use crate::config::window;

/// The disruption a change needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DisruptionKind {
    /// A reboot (A/B trial or rollback): always drained.
    Reboot,
    /// A k3s restart for a config change: drained with `drain_on_restart`.
    RestartK3s,
}

/// Where the node's rollout stands; persisted atomically by the driver ([`Step::Persist`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Phase {
    /// No disruption in flight.
    Idle,
    /// Cordoned (or about to be) and evicting pods since `since` (unix seconds).
    Draining {
        /// The commit that introduced the change.
        commit: String,
        /// What the change needs.
        kind: DisruptionKind,
        /// When the drain started.
        since: i64,
        /// The node was unschedulable before bosun cordoned it: never uncordon it.
        was_unschedulable: bool,
    },
    /// The disruption was (or is being) performed; waiting for its health verdict.
    Disrupting {
        /// The commit that introduced the change.
        commit: String,
        /// What the change needs.
        kind: DisruptionKind,
        /// bosun cordoned the node for it.
        cordoned: bool,
        /// The node was unschedulable before bosun cordoned it.
        was_unschedulable: bool,
    },
    /// The drain timed out; not before `until` (unix seconds) is it tried again.
    Backoff {
        /// The commit whose drain timed out.
        commit: String,
        /// Retry from this time on.
        until: i64,
    },
    /// FleetLock: this node failed `commit` and keeps its slot so the group stops, until the
    /// node follows a newer commit.
    HoldingFailed {
        /// The failed commit.
        commit: String,
    },
}

/// A change that needs a disruption.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pending<'a> {
    /// The commit that introduced the change (full id).
    pub commit: &'a str,
    /// Its committer time (unix seconds): the wave clock starts here.
    pub committed_at: i64,
    /// What it needs.
    pub kind: DisruptionKind,
}

/// The health verdict of the disruption in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The trial committed, or the restart passed its health gate.
    Healthy,
    /// The health gate failed and the change was rolled back (the rollback finished).
    RolledBack(String),
}

/// What the node can reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Capabilities {
    /// A lock backend is configured (`kubernetes` or `fleetlock`); without one the lock gate
    /// is open.
    pub lock: bool,
    /// The node's Kubernetes API is reachable: drains, failure marks and the canary halt.
    pub kube: bool,
    /// FleetLock: a node that failed keeps its slot until a newer commit.
    pub keep_slot_on_failure: bool,
}

/// What the node observes now.
#[derive(Debug, Clone)]
pub struct Inputs<'a> {
    /// The `rollout:` policy.
    pub config: &'a RolloutConfig,
    /// What the node can reach.
    pub caps: Capabilities,
    /// Wall-clock unix seconds (waves, windows, drain timeout, backoff).
    pub now: i64,
    /// The node's position in [0, 1) ([`wave::position`]).
    pub position: f64,
    /// The commit the node follows now (lifts a [`Phase::HoldingFailed`]).
    pub head: Option<&'a str>,
    /// The change waiting for a disruption, if any.
    pub pending: Option<Pending<'a>>,
    /// This node holds a slot of its group's semaphore.
    pub lock_held: bool,
    /// The Node is unschedulable now.
    pub unschedulable: bool,
    /// Pods still on the node that a drain evicts (not mirror, not DaemonSet pods).
    pub pods_left: usize,
    /// Nodes marked failed for `pending.commit` (the driver may pass 0 while the wave has
    /// not started: the halt is only looked at after the wave gate).
    pub failures: u32,
    /// The verdict of the disruption in flight, once known.
    pub verdict: Option<Verdict>,
}

/// What the node is doing or waiting for (the `bosun.dev/state` label).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Nothing to do.
    Idle,
    /// The node's wave starts at this time.
    WaitingWave {
        /// Unix seconds.
        starts_at: i64,
    },
    /// Outside every maintenance window; the next opens at this time.
    WaitingWindow {
        /// Unix seconds.
        opens_at: i64,
    },
    /// Every slot of the group is taken.
    WaitingLock,
    /// Evicting pods.
    Draining {
        /// Unix seconds.
        since: i64,
        /// Pods still to go.
        pods_left: usize,
    },
    /// Disrupting (restart or trial boot), waiting for the health verdict.
    Trial,
    /// Enough nodes failed this commit: holding.
    Halted {
        /// Nodes marked failed for the commit.
        failures: u32,
    },
    /// This node failed the commit and keeps its FleetLock slot.
    HoldingFailed,
    /// The drain timed out; retrying from this time on.
    Backoff {
        /// Unix seconds.
        until: i64,
    },
}

impl Status {
    /// The `bosun.dev/state` label value.
    pub fn label(&self) -> &'static str {
        match self {
            Status::Idle => "idle",
            Status::WaitingWave { .. } => "waiting-wave",
            Status::WaitingWindow { .. } => "waiting-window",
            Status::WaitingLock => "waiting-lock",
            Status::Draining { .. } => "draining",
            Status::Trial => "trial",
            Status::Halted { .. } | Status::HoldingFailed => "halted",
            Status::Backoff { .. } => "backoff",
        }
    }
}

/// One effect, in the order [`decide`] returns them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Persist this phase (atomically) before the steps after it.
    Persist(Phase),
    /// Take a slot; refused (all taken) stops the list: the node waits at the lock.
    TakeLock,
    /// Set `spec.unschedulable` (idempotent).
    Cordon,
    /// Ask once to evict every pod still to go (a 429 is retried at the next decision).
    Evict,
    /// Perform the disruption now (the caller's restart or reboot).
    Proceed,
    /// Mark the Node failed for `commit` (label `bosun.dev/failed` + annotation with `reason`).
    MarkFailed {
        /// The failed commit.
        commit: String,
        /// The health gate's reason.
        reason: String,
    },
    /// Remove this node's failure mark (it passed a newer commit).
    ClearFailed,
    /// Clear `spec.unschedulable`.
    Uncordon,
    /// Give the slot back.
    ReleaseLock,
}

/// The status and the steps for now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// What the node is doing or waiting for.
    pub status: Status,
    /// What to do now, in order (may be empty).
    pub steps: Vec<Step>,
}

impl Decision {
    fn wait(status: Status) -> Decision {
        Decision {
            status,
            steps: Vec::new(),
        }
    }
}

/// Whether a drain comes before `kind` with these capabilities.
fn needs_drain(inp: &Inputs, kind: DisruptionKind) -> bool {
    inp.caps.kube && (kind == DisruptionKind::Reboot || inp.config.drain_on_restart)
}

/// Whether the wave of `pending` has started for this node. Pure.
pub fn wave_open(cfg: &RolloutConfig, pending: &Pending, position: f64, now: i64) -> bool {
    now >= wave::start(cfg, pending.committed_at, position)
}

/// The status and ordered steps for `phase` and `inp`. Pure and idempotent: re-running it
/// after any prefix of its steps was performed (a crash) leads to the same end state.
pub fn decide(phase: &Phase, inp: &Inputs) -> Decision {
    match phase {
        Phase::Idle => idle(inp),
        Phase::Draining {
            commit,
            kind,
            since,
            was_unschedulable,
        } => draining(inp, commit, *kind, *since, *was_unschedulable),
        Phase::Disrupting {
            commit,
            kind,
            cordoned,
            was_unschedulable,
        } => disrupting(inp, commit, *kind, *cordoned, *was_unschedulable),
        Phase::Backoff { commit, until } => {
            let mut steps = release_if_held(inp);
            let same = inp.pending.is_some_and(|p| p.commit == commit);
            if same && inp.now < *until {
                return Decision {
                    status: Status::Backoff { until: *until },
                    steps,
                };
            }
            steps.insert(0, Step::Persist(Phase::Idle));
            Decision {
                status: Status::Idle,
                steps,
            }
        }
        Phase::HoldingFailed { commit } => match inp.head {
            Some(h) if h != commit => Decision {
                status: Status::Idle,
                steps: vec![Step::Persist(Phase::Idle), Step::ReleaseLock],
            },
            _ => Decision::wait(Status::HoldingFailed),
        },
    }
}

fn release_if_held(inp: &Inputs) -> Vec<Step> {
    if inp.lock_held {
        vec![Step::ReleaseLock]
    } else {
        Vec::new()
    }
}

/// Phase `Idle`: the gates, then the drain or the disruption.
fn idle(inp: &Inputs) -> Decision {
    let Some(p) = inp.pending else {
        return Decision {
            status: Status::Idle,
            steps: release_if_held(inp),
        };
    };
    let cfg = inp.config;
    let blocked = |status| Decision {
        status,
        steps: release_if_held(inp),
    };
    let starts_at = wave::start(cfg, p.committed_at, inp.position);
    if inp.now < starts_at {
        return blocked(Status::WaitingWave { starts_at });
    }
    if inp.caps.kube && cfg.halt_after_failures > 0 && inp.failures >= cfg.halt_after_failures {
        return blocked(Status::Halted {
            failures: inp.failures,
        });
    }
    if !window::open(&cfg.windows, inp.now) {
        let opens_at = window::next_opening(&cfg.windows, inp.now).unwrap_or(inp.now);
        return blocked(Status::WaitingWindow { opens_at });
    }
    if inp.caps.lock && !inp.lock_held {
        return Decision {
            status: Status::WaitingLock,
            steps: vec![Step::TakeLock],
        };
    }
    start_disruption(inp, p)
}

/// Past every gate with the slot held: drain first when needed, else disrupt. The node's
/// schedulability now is what it was before bosun (bosun has not cordoned it for this).
fn start_disruption(inp: &Inputs, p: Pending) -> Decision {
    if needs_drain(inp, p.kind) {
        return Decision {
            status: Status::Draining {
                since: inp.now,
                pods_left: inp.pods_left,
            },
            steps: vec![
                Step::Persist(Phase::Draining {
                    commit: p.commit.to_string(),
                    kind: p.kind,
                    since: inp.now,
                    was_unschedulable: inp.unschedulable,
                }),
                Step::Cordon,
                Step::Evict,
            ],
        };
    }
    Decision {
        status: Status::Trial,
        steps: vec![
            Step::Persist(Phase::Disrupting {
                commit: p.commit.to_string(),
                kind: p.kind,
                cordoned: false,
                was_unschedulable: inp.unschedulable,
            }),
            Step::Proceed,
        ],
    }
}

/// Phase `Draining`.
fn draining(inp: &Inputs, commit: &str, kind: DisruptionKind, since: i64, was: bool) -> Decision {
    let uncordon = if was {
        Vec::new()
    } else {
        vec![Step::Uncordon]
    };
    let same = inp.pending.filter(|p| p.commit == commit);
    if same.is_none() || (inp.caps.lock && !inp.lock_held) {
        // Superseded, no longer needed, or the slot was lost: undo the cordon and start over.
        let mut steps = uncordon;
        steps.push(Step::Persist(Phase::Idle));
        steps.extend(release_if_held(inp));
        return Decision {
            status: Status::Idle,
            steps,
        };
    }
    let timeout = inp.config.drain_timeout.as_secs() as i64;
    if inp.now.saturating_sub(since) >= timeout && inp.pods_left > 0 {
        // Give up: uncordon first, then record the backoff, then give the slot to another.
        let until = inp.now.saturating_add(timeout);
        let mut steps = uncordon;
        steps.push(Step::Persist(Phase::Backoff {
            commit: commit.to_string(),
            until,
        }));
        steps.extend(release_if_held(inp));
        return Decision {
            status: Status::Backoff { until },
            steps,
        };
    }
    if inp.pods_left == 0 {
        return Decision {
            status: Status::Trial,
            steps: vec![
                Step::Persist(Phase::Disrupting {
                    commit: commit.to_string(),
                    kind,
                    cordoned: true,
                    was_unschedulable: was,
                }),
                Step::Proceed,
            ],
        };
    }
    Decision {
        status: Status::Draining {
            since,
            pods_left: inp.pods_left,
        },
        steps: vec![Step::Cordon, Step::Evict],
    }
}

/// Phase `Disrupting`.
fn disrupting(
    inp: &Inputs,
    commit: &str,
    kind: DisruptionKind,
    cordoned: bool,
    was: bool,
) -> Decision {
    let uncordon = if cordoned && !was {
        vec![Step::Uncordon]
    } else {
        Vec::new()
    };
    match &inp.verdict {
        None => match inp.pending.filter(|p| p.commit == commit) {
            // Another disruption of the same commit (the rollback reboot, the reboot after a
            // crash, or a reboot after a restart) goes ahead in the slot already held; one
            // that needs a drain the first did not have drains first.
            Some(p) if needs_drain(inp, p.kind) && !cordoned && p.kind != kind => {
                start_disruption(inp, p)
            }
            Some(p) => {
                let mut steps = Vec::new();
                if p.kind != kind {
                    steps.push(Step::Persist(Phase::Disrupting {
                        commit: commit.to_string(),
                        kind: p.kind,
                        cordoned,
                        was_unschedulable: was,
                    }));
                }
                steps.push(Step::Proceed);
                Decision {
                    status: Status::Trial,
                    steps,
                }
            }
            None => Decision::wait(Status::Trial),
        },
        Some(Verdict::Healthy) => {
            let mut steps = Vec::new();
            if inp.caps.kube {
                steps.push(Step::ClearFailed);
            }
            steps.extend(uncordon);
            steps.push(Step::Persist(Phase::Idle));
            steps.extend(release_if_held(inp));
            Decision {
                status: Status::Idle,
                steps,
            }
        }
        Some(Verdict::RolledBack(reason)) => {
            let mut steps = Vec::new();
            if inp.caps.kube {
                steps.push(Step::MarkFailed {
                    commit: commit.to_string(),
                    reason: reason.clone(),
                });
            }
            steps.extend(uncordon);
            if inp.caps.keep_slot_on_failure && inp.lock_held {
                steps.push(Step::Persist(Phase::HoldingFailed {
                    commit: commit.to_string(),
                }));
                return Decision {
                    status: Status::HoldingFailed,
                    steps,
                };
            }
            steps.push(Step::Persist(Phase::Idle));
            steps.extend(release_if_held(inp));
            Decision {
                status: Status::Idle,
                steps,
            }
        }
    }
}

#[cfg(test)]
#[path = "gate_tests.rs"]
mod tests;
