//! Tests of [`super::decide`]: each gate, and power cuts after every step of a whole rollout
//! (a small simulated world executes the steps as the driver would).

use std::time::Duration;

use super::*;
use crate::config::rollout::Wave;
use crate::config::window::{Timezone, Weekday, Window};

const X: &str = "1111111111111111111111111111111111111111";
const Y: &str = "2222222222222222222222222222222222222222";
/// Saturday 2024-06-01 00:00 UTC.
const T0: i64 = 1_717_200_000;

fn cfg() -> RolloutConfig {
    RolloutConfig {
        drain_timeout: Duration::from_secs(600),
        ..RolloutConfig::default()
    }
}

const KUBE: Capabilities = Capabilities {
    lock: true,
    kube: true,
    keep_slot_on_failure: false,
};
const FLEETLOCK: Capabilities = Capabilities {
    lock: true,
    kube: false,
    keep_slot_on_failure: true,
};

fn pending(commit: &str, kind: DisruptionKind) -> Option<Pending<'_>> {
    Some(Pending {
        commit,
        committed_at: T0,
        kind,
    })
}

fn inputs(cfg: &RolloutConfig) -> Inputs<'_> {
    Inputs {
        config: cfg,
        caps: KUBE,
        now: T0,
        position: 0.5,
        head: Some(X),
        pending: pending(X, DisruptionKind::Reboot),
        lock_held: false,
        unschedulable: false,
        pods_left: 0,
        failures: 0,
        verdict: None,
    }
}

#[test]
fn nothing_pending_is_idle_and_a_stale_slot_is_released() {
    let c = cfg();
    let mut i = inputs(&c);
    i.pending = None;
    assert_eq!(
        decide(&Phase::Idle, &i),
        Decision {
            status: Status::Idle,
            steps: vec![]
        }
    );
    i.lock_held = true;
    assert_eq!(decide(&Phase::Idle, &i).steps, vec![Step::ReleaseLock]);
}

#[test]
fn gates_in_order_wave_halt_window_lock() {
    let mut c = cfg();
    c.waves = vec![
        Wave {
            after: Duration::from_secs(60),
            percent: 50.0,
        },
        Wave {
            after: Duration::from_secs(3600),
            percent: 100.0,
        },
    ];
    c.windows = vec![Window {
        days: vec![Weekday::Sun],
        start_minute: 0,
        length: Duration::from_secs(3600),
        timezone: Timezone::Utc,
    }];
    let mut i = inputs(&c);
    i.position = 0.7; // second wave
    i.failures = 1;
    // Wave first: even with a failure recorded, the node reports its wave.
    let d = decide(&Phase::Idle, &i);
    assert_eq!(
        d.status,
        Status::WaitingWave {
            starts_at: T0 + 3600
        }
    );
    assert!(d.steps.is_empty());
    // A later wave does not start one second early.
    i.now = T0 + 3599;
    assert_eq!(decide(&Phase::Idle, &i).status.label(), "waiting-wave");
    // Wave open: the halt.
    i.now = T0 + 3600;
    assert_eq!(
        decide(&Phase::Idle, &i).status,
        Status::Halted { failures: 1 }
    );
    // halt_after_failures 0 never halts; 2 needs two failures.
    c.halt_after_failures = 2;
    let mut i = Inputs {
        failures: 1,
        now: T0 + 3600,
        position: 0.7,
        ..inputs(&c)
    };
    // Window next: Saturday 01:00 is outside Sunday's window.
    assert_eq!(
        decide(&Phase::Idle, &i).status,
        Status::WaitingWindow {
            opens_at: T0 + 86_400
        }
    );
    // In the window: the lock.
    i.now = T0 + 86_400 + 60;
    assert_eq!(
        decide(&Phase::Idle, &i),
        Decision {
            status: Status::WaitingLock,
            steps: vec![Step::TakeLock]
        }
    );
    // A canary ignores the waves.
    let canary = RolloutConfig {
        canary: true,
        windows: vec![],
        ..c.clone()
    };
    let i = Inputs {
        position: 0.99,
        ..inputs(&canary)
    };
    assert_eq!(decide(&Phase::Idle, &i).status, Status::WaitingLock);
}

#[test]
fn a_gate_that_closes_releases_a_slot_held_while_idle() {
    let mut c = cfg();
    c.halt_after_failures = 1;
    let i = Inputs {
        failures: 3,
        lock_held: true,
        ..inputs(&c)
    };
    let d = decide(&Phase::Idle, &i);
    assert_eq!(d.status, Status::Halted { failures: 3 });
    assert_eq!(d.steps, vec![Step::ReleaseLock]);
}

#[test]
fn no_lock_backend_means_no_lock_gate_and_no_kube_means_no_drain_or_halt() {
    let c = cfg();
    let i = Inputs {
        caps: Capabilities::default(),
        failures: 5,
        ..inputs(&c)
    };
    let d = decide(&Phase::Idle, &i);
    assert_eq!(d.status, Status::Trial);
    assert_eq!(d.steps.last(), Some(&Step::Proceed));
    assert!(matches!(
        &d.steps[0],
        Step::Persist(Phase::Disrupting {
            cordoned: false,
            ..
        })
    ));
}

#[test]
fn restarts_drain_only_with_drain_on_restart() {
    let plain = cfg();
    let i = Inputs {
        lock_held: true,
        pending: pending(X, DisruptionKind::RestartK3s),
        ..inputs(&plain)
    };
    assert_eq!(decide(&Phase::Idle, &i).status, Status::Trial);
    let drained = RolloutConfig {
        drain_on_restart: true,
        ..cfg()
    };
    let i = Inputs {
        config: &drained,
        ..i
    };
    assert_eq!(decide(&Phase::Idle, &i).status.label(), "draining");
}

#[test]
fn drain_records_prior_schedulability_before_cordoning() {
    let c = cfg();
    let i = Inputs {
        lock_held: true,
        unschedulable: true,
        pods_left: 2,
        ..inputs(&c)
    };
    let d = decide(&Phase::Idle, &i);
    assert_eq!(
        d.steps,
        vec![
            Step::Persist(Phase::Draining {
                commit: X.into(),
                kind: DisruptionKind::Reboot,
                since: T0,
                was_unschedulable: true
            }),
            Step::Cordon,
            Step::Evict
        ]
    );
}

fn draining(was: bool) -> Phase {
    Phase::Draining {
        commit: X.into(),
        kind: DisruptionKind::Reboot,
        since: T0,
        was_unschedulable: was,
    }
}

#[test]
fn drain_timeout_uncordons_then_backs_off_then_releases() {
    let c = cfg();
    let i = Inputs {
        lock_held: true,
        unschedulable: true,
        pods_left: 1,
        now: T0 + 599,
        ..inputs(&c)
    };
    assert_eq!(
        decide(&draining(false), &i).steps,
        vec![Step::Cordon, Step::Evict]
    );
    let i = Inputs { now: T0 + 600, ..i };
    let d = decide(&draining(false), &i);
    let until = T0 + 1200;
    assert_eq!(d.status, Status::Backoff { until });
    assert_eq!(
        d.steps,
        vec![
            Step::Uncordon,
            Step::Persist(Phase::Backoff {
                commit: X.into(),
                until
            }),
            Step::ReleaseLock
        ]
    );
    // A node that was cordoned before is left cordoned.
    assert_eq!(
        decide(&draining(true), &i).steps[0],
        Step::Persist(Phase::Backoff {
            commit: X.into(),
            until
        })
    );
    // In backoff: wait, then start over at the gates.
    let b = Phase::Backoff {
        commit: X.into(),
        until,
    };
    let i = Inputs {
        lock_held: false,
        unschedulable: false,
        now: until - 1,
        ..i
    };
    assert_eq!(decide(&b, &i), Decision::wait(Status::Backoff { until }));
    let i = Inputs { now: until, ..i };
    assert_eq!(decide(&b, &i).steps, vec![Step::Persist(Phase::Idle)]);
}

#[test]
fn a_superseded_drain_is_undone() {
    let c = cfg();
    let i = Inputs {
        lock_held: true,
        unschedulable: true,
        pods_left: 1,
        pending: pending(Y, DisruptionKind::Reboot),
        ..inputs(&c)
    };
    assert_eq!(
        decide(&draining(false), &i).steps,
        vec![
            Step::Uncordon,
            Step::Persist(Phase::Idle),
            Step::ReleaseLock
        ]
    );
    // The slot was broken by another node: undo, and wait for a slot again.
    let i = Inputs {
        lock_held: false,
        pending: pending(X, DisruptionKind::Reboot),
        ..i
    };
    assert_eq!(
        decide(&draining(false), &i).steps,
        vec![Step::Uncordon, Step::Persist(Phase::Idle)]
    );
}

fn disrupting(cordoned: bool, was: bool) -> Phase {
    Phase::Disrupting {
        commit: X.into(),
        kind: DisruptionKind::Reboot,
        cordoned,
        was_unschedulable: was,
    }
}

#[test]
fn the_slot_is_held_across_the_trial_and_released_after_the_verdict() {
    let c = cfg();
    // Waiting for the verdict (after the reboot): nothing to do, the slot stays.
    let i = Inputs {
        lock_held: true,
        unschedulable: true,
        pending: None,
        ..inputs(&c)
    };
    assert_eq!(
        decide(&disrupting(true, false), &i),
        Decision::wait(Status::Trial)
    );
    // A repeated request for the same commit (the rollback reboot) goes ahead in the slot.
    let again = Inputs {
        pending: pending(X, DisruptionKind::Reboot),
        ..i.clone()
    };
    assert_eq!(
        decide(&disrupting(true, false), &again).steps,
        vec![Step::Proceed]
    );
    // Healthy: uncordon, persist, release, in that order.
    let healthy = Inputs {
        verdict: Some(Verdict::Healthy),
        ..i.clone()
    };
    assert_eq!(
        decide(&disrupting(true, false), &healthy).steps,
        vec![
            Step::ClearFailed,
            Step::Uncordon,
            Step::Persist(Phase::Idle),
            Step::ReleaseLock
        ]
    );
    // Cordoned by someone else before: stays cordoned.
    assert!(!decide(&disrupting(true, true), &healthy)
        .steps
        .contains(&Step::Uncordon));
    // Rolled back: marked failed, then the same.
    let failed = Inputs {
        verdict: Some(Verdict::RolledBack("apiserver readyz 500".into())),
        ..i
    };
    assert_eq!(
        decide(&disrupting(true, false), &failed).steps,
        vec![
            Step::MarkFailed {
                commit: X.into(),
                reason: "apiserver readyz 500".into()
            },
            Step::Uncordon,
            Step::Persist(Phase::Idle),
            Step::ReleaseLock
        ]
    );
}

#[test]
fn a_reboot_after_an_undrained_restart_of_the_same_commit_drains_first() {
    let c = cfg();
    let phase = Phase::Disrupting {
        commit: X.into(),
        kind: DisruptionKind::RestartK3s,
        cordoned: false,
        was_unschedulable: false,
    };
    let i = Inputs {
        lock_held: true,
        pods_left: 1,
        ..inputs(&c)
    };
    let d = decide(&phase, &i);
    assert_eq!(d.status.label(), "draining");
    assert_eq!(d.steps[1..], [Step::Cordon, Step::Evict]);
}

#[test]
fn fleetlock_failed_node_keeps_its_slot_until_a_newer_commit() {
    let c = cfg();
    let i = Inputs {
        caps: FLEETLOCK,
        lock_held: true,
        pending: None,
        verdict: Some(Verdict::RolledBack("unhealthy".into())),
        ..inputs(&c)
    };
    let d = decide(&disrupting(false, false), &i);
    assert_eq!(d.status, Status::HoldingFailed);
    assert_eq!(
        d.steps,
        vec![Step::Persist(Phase::HoldingFailed { commit: X.into() })]
    );
    let held = Phase::HoldingFailed { commit: X.into() };
    let i = Inputs { verdict: None, ..i };
    assert_eq!(decide(&held, &i), Decision::wait(Status::HoldingFailed));
    assert_eq!(decide(&held, &i).status.label(), "halted");
    let newer = Inputs { head: Some(Y), ..i };
    assert_eq!(
        decide(&held, &newer).steps,
        vec![Step::Persist(Phase::Idle), Step::ReleaseLock]
    );
}

/// A simulated node and cluster executing steps as the driver does.
#[derive(Debug, Clone)]
struct World {
    phase: Phase,
    lock_held: bool,
    /// Another node holds the only slot.
    slot_taken: bool,
    unschedulable: bool,
    pods: usize,
    /// A PodDisruptionBudget refuses every eviction.
    pdb_blocks: bool,
    proceeded: u32,
    now: i64,
    failed_mark: bool,
    /// Violations of the ordering invariants seen while executing.
    violations: Vec<String>,
    initially_unschedulable: bool,
}

impl World {
    fn new(unschedulable: bool, pods: usize) -> World {
        World {
            phase: Phase::Idle,
            lock_held: false,
            slot_taken: false,
            unschedulable,
            pods,
            pdb_blocks: false,
            proceeded: 0,
            now: T0,
            failed_mark: false,
            violations: Vec::new(),
            initially_unschedulable: unschedulable,
        }
    }

    /// Executes `s`; false when refused (the driver stops the list).
    fn exec(&mut self, s: &Step) -> bool {
        match s {
            Step::Persist(p) => self.phase = p.clone(),
            Step::TakeLock => {
                if self.slot_taken {
                    return false;
                }
                self.lock_held = true;
            }
            Step::Cordon => self.unschedulable = true,
            Step::Evict => {
                if !self.pdb_blocks {
                    self.pods = 0;
                }
            }
            Step::Proceed => {
                if !self.lock_held {
                    self.violations.push("disrupted without the slot".into());
                }
                if self.pods > 0 {
                    self.violations.push("disrupted with pods left".into());
                }
                self.proceeded += 1;
            }
            Step::MarkFailed { .. } => self.failed_mark = true,
            Step::ClearFailed => self.failed_mark = false,
            Step::Uncordon => {
                if self.initially_unschedulable {
                    self.violations
                        .push("uncordoned a node cordoned by someone else".into());
                }
                self.unschedulable = false;
            }
            Step::ReleaseLock => {
                if self.unschedulable != self.initially_unschedulable {
                    self.violations
                        .push("released the slot while still cordoned".into());
                }
                if matches!(self.phase, Phase::Disrupting { .. }) {
                    self.violations
                        .push("released the slot during the trial".into());
                }
                self.lock_held = false;
            }
        }
        true
    }
}

/// How the rollout ends once the disruption happened.
#[derive(Clone, Copy)]
enum Ending {
    Healthy,
    RolledBack,
}

/// Drives decide/exec until nothing is left to do. `crash_after`: the number of steps after
/// which the process dies (in-memory state lost, the world and the persisted phase stay).
/// Returns the steps executed.
fn drive(
    world: &mut World,
    c: &RolloutConfig,
    caps: Capabilities,
    ending: Ending,
    crash_after: Option<usize>,
) -> usize {
    let mut executed = 0;
    for _ in 0..100 {
        let verdict = (world.proceeded > 0).then(|| match ending {
            Ending::Healthy => Verdict::Healthy,
            Ending::RolledBack => Verdict::RolledBack("unhealthy".into()),
        });
        // Once the verdict is known, the change is applied (or quarantined): nothing pending.
        let pend = if verdict.is_some() {
            None
        } else {
            pending(X, DisruptionKind::Reboot)
        };
        let inp = Inputs {
            config: c,
            caps,
            now: world.now,
            position: 0.5,
            head: Some(X),
            pending: pend,
            lock_held: world.lock_held,
            unschedulable: world.unschedulable,
            pods_left: world.pods,
            failures: 0,
            verdict,
        };
        let d = decide(&world.phase, &inp);
        world.now += 1;
        if d.steps.is_empty() {
            return executed;
        }
        for s in &d.steps {
            if crash_after == Some(executed) {
                return executed;
            }
            executed += 1;
            if !world.exec(s) {
                break;
            }
        }
    }
    panic!("no convergence: {world:?}");
}

#[test]
fn power_cut_after_every_step_of_a_drained_reboot() {
    for initially_cordoned in [false, true] {
        for ending in [Ending::Healthy, Ending::RolledBack] {
            let c = cfg();
            let mut clean = World::new(initially_cordoned, 3);
            let total = drive(&mut clean, &c, KUBE, ending, None);
            assert!(total >= 8, "{total}");
            assert_eq!(clean.proceeded, 1);
            for k in 0..total {
                let mut w = World::new(initially_cordoned, 3);
                drive(&mut w, &c, KUBE, ending, Some(k));
                // Restart: decide again from the persisted phase and the world as it is.
                drive(&mut w, &c, KUBE, ending, None);
                let label = format!("cordoned before: {initially_cordoned}, crash after step {k}");
                assert!(w.violations.is_empty(), "{label}: {:?}", w.violations);
                assert_eq!(w.phase, Phase::Idle, "{label}");
                assert!(!w.lock_held, "{label}: slot not released");
                assert_eq!(w.unschedulable, initially_cordoned, "{label}");
                assert!(w.proceeded >= 1, "{label}");
                assert_eq!(
                    w.failed_mark,
                    matches!(ending, Ending::RolledBack),
                    "{label}"
                );
            }
        }
    }
}

#[test]
fn power_cut_after_every_step_of_a_drain_that_times_out() {
    let c = cfg();
    let run = |mut crash: Option<usize>| {
        let mut w = World::new(false, 2);
        w.pdb_blocks = true;
        let mut steps = 0;
        // Drive until the node backs off (the PDB never allows the eviction).
        for _ in 0..2000 {
            let inp = Inputs {
                config: &c,
                caps: KUBE,
                now: w.now,
                position: 0.5,
                head: Some(X),
                pending: pending(X, DisruptionKind::Reboot),
                lock_held: w.lock_held,
                unschedulable: w.unschedulable,
                pods_left: w.pods,
                failures: 0,
                verdict: None,
            };
            let d = decide(&w.phase, &inp);
            w.now += 1;
            if matches!(d.status, Status::Backoff { .. }) && d.steps.is_empty() {
                return (w, steps);
            }
            for s in &d.steps {
                if crash == Some(steps) {
                    // Power cut: the rest of this list is lost; the next decision starts
                    // from the persisted phase and the world as it is.
                    crash = None;
                    break;
                }
                steps += 1;
                if !w.exec(s) {
                    break;
                }
            }
        }
        panic!("never backed off: {w:?}");
    };
    let (clean, total) = run(None);
    assert_eq!(clean.proceeded, 0);
    for k in 0..total {
        let (w, _) = run(Some(k));
        assert!(
            w.violations.is_empty(),
            "crash after {k}: {:?}",
            w.violations
        );
        assert!(!w.lock_held && !w.unschedulable, "crash after {k}: {w:?}");
        assert!(matches!(w.phase, Phase::Backoff { .. }));
    }
}

#[test]
fn a_node_waits_for_the_slot_while_another_holds_it() {
    let c = cfg();
    let mut w = World::new(false, 1);
    w.slot_taken = true;
    let inp = Inputs {
        lock_held: false,
        ..inputs(&c)
    };
    let d = decide(&w.phase, &inp);
    assert_eq!(d.status, Status::WaitingLock);
    assert!(!w.exec(&d.steps[0]));
    assert_eq!(w.phase, Phase::Idle);
    assert!(!w.unschedulable);
}
