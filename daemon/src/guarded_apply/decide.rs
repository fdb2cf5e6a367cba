//! The pure decisions of a health-gated apply: whether an apply is gated ([`gate_reason`],
//! [`effective_gate`]) and the ordered steps of the apply, its verdict and its rollback
//! ([`decide`]), in the shape of [`crate::upgrade::machine::decide`]. The driver in
//! [`super::apply_guarded`] only executes what [`decide`] returns.

use crate::config::HealthGate;
use crate::desired::Effect;
use crate::plan::Plan;
use crate::reconcile::Permit;

/// Why an apply is health-gated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GateReason {
    /// `health.gate: all`.
    All,
    /// The plan creates, updates or deletes k3s configuration files.
    K3sConfigChanged {
        /// The k3s configuration paths the plan touches.
        paths: Vec<String>,
    },
    /// The plan restarts the k3s unit.
    K3sRestarted {
        /// The unit restarted (`k3s.service` or `k3s-agent.service`).
        unit: String,
    },
    /// The config on disk (commit `commit`) was never verified healthy: its trial was
    /// interrupted (bosun stopped before the verdict) or it failed and was kept.
    UnverifiedOnDisk {
        /// The commit on disk.
        commit: String,
    },
}

impl std::fmt::Display for GateReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GateReason::All => f.write_str("health.gate is all"),
            GateReason::K3sConfigChanged { paths } => {
                write!(f, "k3s configuration changed ({})", paths.join(", "))
            }
            GateReason::K3sRestarted { unit } => write!(f, "{unit} is restarted"),
            GateReason::UnverifiedOnDisk { commit } => {
                write!(
                    f,
                    "the config on disk (commit {commit}) was never verified healthy"
                )
            }
        }
    }
}

/// Whether `path` is k3s configuration: either role's unit drop-in, or anything in k3s's
/// configuration directory (bosun's environment file, and `config.yaml`, `config.yaml.d/`,
/// `registries.yaml` from `write_files`) (pure).
pub fn is_k3s_config_path(path: &str) -> bool {
    crate::plan::is_under(path, crate::render::K3S_CONFIG_DIR)
        || path == crate::render::K3sRole::Server.dropin_path()
        || path == crate::render::K3sRole::Agent.dropin_path()
}

pub(super) fn is_k3s_unit(unit: &str) -> bool {
    matches!(unit.trim_end_matches(".service"), "k3s" | "k3s-agent")
}

/// The gate an apply runs under: the commit's own `health.gate`, never looser than the last
/// good commit's (`none` < `k3s` < `all`). Pure.
pub fn effective_gate(own: HealthGate, last_good: Option<HealthGate>) -> HealthGate {
    let rank = |g: HealthGate| match g {
        HealthGate::None => 0,
        HealthGate::K3s => 1,
        HealthGate::All => 2,
    };
    match last_good {
        Some(previous) if rank(previous) > rank(own) => previous,
        _ => own,
    }
}
/// Decides whether applying `plan` is health-gated (pure). `gate`: `none` never, `all`
/// always, `k3s` when the plan changes a k3s config file or restarts the k3s unit, or when
/// `unverified_on_disk` names the commit on disk that was never verified healthy.
pub fn gate_reason(
    gate: HealthGate,
    plan: &Plan,
    unverified_on_disk: Option<&str>,
) -> Option<GateReason> {
    match gate {
        HealthGate::None => None,
        HealthGate::All => Some(GateReason::All),
        HealthGate::K3s => {
            let paths: Vec<String> = plan
                .changed_paths()
                .into_iter()
                .filter(|p| is_k3s_config_path(p))
                .map(str::to_string)
                .collect();
            if !paths.is_empty() {
                return Some(GateReason::K3sConfigChanged { paths });
            }
            let restart = plan.effects.iter().find_map(|e| match e {
                Effect::RestartUnit { unit } if is_k3s_unit(unit) => Some(unit.clone()),
                _ => None,
            });
            if let Some(unit) = restart {
                return Some(GateReason::K3sRestarted { unit });
            }
            unverified_on_disk.map(|c| GateReason::UnverifiedOnDisk {
                commit: c.to_string(),
            })
        }
    }
}

/// Why an unhealthy commit was kept on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeptReason {
    /// No good commit recorded yet: nothing to revert to. The commit is recorded bad.
    NoPreviousGood,
    /// The commit is the last good one (re-applied to repair drift); it is not marked bad.
    IsLastGood,
}

/// Why a planned apply waits for the rollout gates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deferral {
    /// The plan restarts `unit` (a disruptive action) and the node holds no permit for it.
    /// `fingerprint` identifies the k3s configuration it brings (SHA-256 of the desired
    /// k3s config files), so a later commit that leaves it alone is the same change.
    RestartK3s {
        /// The k3s unit the plan restarts.
        unit: String,
        /// SHA-256 (hex) of the desired k3s config files.
        fingerprint: String,
    },
    /// The plan changes files, `rollout.waves_for_all` is on and the node's wave has not
    /// started.
    Wave,
}

/// Whether `plan` may be applied now under `permit`, or why not (pure).
pub fn deferral(
    plan: &Plan,
    permit: Permit,
    fingerprint: impl FnOnce() -> String,
) -> Option<Deferral> {
    let restart = plan.effects.iter().find_map(|e| match e {
        Effect::RestartUnit { unit } if is_k3s_unit(unit) => Some(unit.clone()),
        _ => None,
    });
    if let Some(unit) = restart {
        if !permit.restart_k3s {
            return Some(Deferral::RestartK3s {
                unit,
                fingerprint: fingerprint(),
            });
        }
    }
    if !permit.change && (plan.has_file_changes() || !plan.effects.is_empty()) {
        return Some(Deferral::Wave);
    }
    None
}

/// What the history says about the commit being applied (the inputs of [`decide`] that
/// come from [`super::CommitHistory`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Facts<'a> {
    /// The commit failed its health gate before.
    pub bad: bool,
    /// A bad commit is on disk although a good one exists: its revert did not finish.
    pub revert_pending: bool,
    /// The last commit recorded good.
    pub last_good: Option<&'a str>,
}

/// Where a health-gated apply stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stage {
    /// The commit arrived; nothing was done for it yet.
    Arrived,
    /// Its plan is computed; `gate` says whether (and why) the apply is health-gated.
    Planned {
        /// Why the apply is gated; `None`: not gated.
        gate: Option<GateReason>,
    },
    /// It was applied under a gate and the health gate gave its verdict.
    Judged {
        /// Whether the health checks passed before the timeout.
        healthy: bool,
    },
    /// Its plan needs what the permit does not allow yet (see [`deferral`]): nothing is written.
    Held(Deferral),
}

/// One step of a health-gated apply, executed in order by the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Prepare and apply the last good commit's snapshot (runs effects: k3s restarts back).
    RevertToLastGood,
    /// Compute the new commit's plan (loads and validates its config; reads the root). Leads
    /// to [`Stage::Planned`].
    Plan,
    /// Note in the history that the apply of this commit starts.
    Begin,
    /// Apply the plan: the file transaction, then the effects. A k3s restart here is a
    /// disruptive action (see [`crate::disruption`]).
    Apply,
    /// Wait for the health gate's verdict. Leads to [`Stage::Judged`].
    AwaitHealth,
    /// Record the commit as the last good one.
    RecordGood,
    /// Add the commit to the bad set.
    RecordBad,
    /// Note a completed revert (the last good commit is on disk again; counts a rollback).
    RecordRollback,
    /// Write the history (atomically) before the steps after it.
    Save,
    /// Stop: the apply ended this way.
    Conclude(Conclusion),
}

/// How a health-gated apply ended (the typed outcome; the driver attaches what it applied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conclusion {
    /// Applied without a health gate; recorded good.
    Applied,
    /// Applied, gated, healthy; recorded good.
    Healthy,
    /// Applied, gated, unhealthy; recorded bad and reverted to the last good commit.
    RolledBack,
    /// Applied, gated, unhealthy, and left on disk.
    Kept(KeptReason),
    /// Not applied: the commit failed its health gate before.
    Refused,
    /// Not applied yet: the rollout gates have not allowed it (nothing was written).
    Deferred,
}

/// The next steps of a health-gated apply of one commit (pure).
///
/// Power-cut ordering, which the unit tests pin:
/// - a bad commit is never planned or applied again; a revert left unfinished by a crash is
///   completed first;
/// - the start of an apply is saved ([`Step::Begin`], [`Step::Save`]) before its first write,
///   so an interrupted trial is known after a restart;
/// - an unhealthy commit is recorded bad and saved *before* the revert runs, so a crash
///   during the revert never re-applies it;
/// - the rollback is counted only after the revert completed.
pub fn decide(facts: &Facts<'_>, commit: &str, stage: &Stage) -> Vec<Step> {
    use Step::*;
    match stage {
        Stage::Arrived if facts.bad => {
            let mut steps = Vec::new();
            if facts.revert_pending {
                steps.extend([RevertToLastGood, RecordRollback, Save]);
            }
            steps.push(Conclude(Conclusion::Refused));
            steps
        }
        Stage::Arrived => vec![Plan],
        Stage::Planned { gate: None } => {
            vec![
                Begin,
                Save,
                Apply,
                RecordGood,
                Save,
                Conclude(Conclusion::Applied),
            ]
        }
        Stage::Planned { gate: Some(_) } => vec![Begin, Save, Apply, AwaitHealth],
        Stage::Held(_) => vec![Conclude(Conclusion::Deferred)],
        Stage::Judged { healthy: true } => vec![RecordGood, Save, Conclude(Conclusion::Healthy)],
        Stage::Judged { healthy: false } => match facts.last_good {
            Some(good) if good == commit => {
                vec![Conclude(Conclusion::Kept(KeptReason::IsLastGood))]
            }
            None => vec![
                RecordBad,
                Save,
                Conclude(Conclusion::Kept(KeptReason::NoPreviousGood)),
            ],
            Some(_) => vec![
                RecordBad,
                Save,
                RevertToLastGood,
                RecordRollback,
                Save,
                Conclude(Conclusion::RolledBack),
            ],
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::{DesiredFile, DesiredState, FileSource};
    use crate::fsroot::Observation;
    use crate::render::k3s::K3S_ENV_FILE;

    fn plan_creating(paths: &[&str], effects: Vec<Effect>) -> Plan {
        let files = paths
            .iter()
            .map(|p| {
                let f = DesiredFile {
                    path: p.to_string(),
                    content: b"x\n".to_vec(),
                    mode: 0o644,
                    uid: 0,
                    gid: 0,
                    secret: false,
                    source: FileSource {
                        key: "write_files".into(),
                        origin: None,
                    },
                };
                (p.to_string(), f)
            })
            .collect();
        let desired = DesiredState {
            files,
            effects: Vec::new(),
        };
        let mut obs = Observation::new();
        for p in paths {
            obs.insert(*p, None);
        }
        let mut plan = crate::plan::plan(&desired, &obs, &Default::default()).unwrap();
        plan.effects = effects;
        plan
    }

    const DROPIN: &str = "/etc/systemd/system/k3s.service.d/90-bosun.conf";
    const AGENT_DROPIN: &str = "/etc/systemd/system/k3s-agent.service.d/90-bosun.conf";

    #[test]
    fn k3s_gate_fires_on_k3s_files_or_restart_only() {
        let motd = plan_creating(&["/etc/motd"], vec![]);
        assert_eq!(gate_reason(HealthGate::K3s, &motd, None), None);
        // k3s's own files from write_files count like bosun's: k3s reads them at start.
        for path in [
            DROPIN,
            AGENT_DROPIN,
            K3S_ENV_FILE,
            "/etc/rancher/k3s/config.yaml",
            "/etc/rancher/k3s/config.yaml.d/10-labels.yaml",
            "/etc/rancher/k3s/registries.yaml",
        ] {
            let p = plan_creating(&["/etc/motd", path], vec![]);
            assert_eq!(
                gate_reason(HealthGate::K3s, &p, None),
                Some(GateReason::K3sConfigChanged {
                    paths: vec![path.to_string()]
                }),
                "{path}"
            );
        }
        let restart = plan_creating(
            &["/etc/motd"],
            vec![Effect::RestartUnit {
                unit: "k3s-agent.service".into(),
            }],
        );
        assert_eq!(
            gate_reason(HealthGate::K3s, &restart, None),
            Some(GateReason::K3sRestarted {
                unit: "k3s-agent.service".into()
            })
        );
        let other_restart = plan_creating(
            &[],
            vec![Effect::RestartUnit {
                unit: "systemd-resolved.service".into(),
            }],
        );
        assert_eq!(gate_reason(HealthGate::K3s, &other_restart, None), None);
        // A sibling directory with a common prefix is not k3s's.
        let lookalike = plan_creating(&["/etc/rancher/k3s-backup/config.yaml"], vec![]);
        assert_eq!(gate_reason(HealthGate::K3s, &lookalike, None), None);
    }

    #[test]
    fn a_commit_cannot_loosen_its_own_gate() {
        use HealthGate::*;
        assert_eq!(effective_gate(None, Option::None), None);
        assert_eq!(effective_gate(None, Some(K3s)), K3s);
        assert_eq!(effective_gate(K3s, Some(All)), All);
        assert_eq!(effective_gate(None, Some(None)), None);
        // Tightening takes effect at once.
        assert_eq!(effective_gate(All, Some(None)), All);
        assert_eq!(effective_gate(K3s, Some(None)), K3s);
    }

    #[test]
    fn all_and_none_override_the_plan() {
        let empty = Plan::default();
        let k3s = plan_creating(&[DROPIN], vec![]);
        assert_eq!(
            gate_reason(HealthGate::All, &empty, None),
            Some(GateReason::All)
        );
        assert_eq!(gate_reason(HealthGate::None, &k3s, Some("abc")), None);
    }

    #[test]
    fn unverified_config_on_disk_gates_an_empty_plan() {
        assert_eq!(
            gate_reason(HealthGate::K3s, &Plan::default(), Some("abc")),
            Some(GateReason::UnverifiedOnDisk {
                commit: "abc".into()
            })
        );
    }

    fn position(steps: &[Step], step: &Step) -> usize {
        steps
            .iter()
            .position(|s| s == step)
            .unwrap_or_else(|| panic!("{step:?} not in {steps:?}"))
    }

    #[test]
    fn a_bad_commit_is_refused_and_an_unfinished_revert_completed_first() {
        let bad = Facts {
            bad: true,
            last_good: Some("a"),
            ..Facts::default()
        };
        assert_eq!(
            decide(&bad, "b", &Stage::Arrived),
            vec![Step::Conclude(Conclusion::Refused)]
        );
        let pending = Facts {
            revert_pending: true,
            ..bad
        };
        assert_eq!(
            decide(&pending, "b", &Stage::Arrived),
            vec![
                Step::RevertToLastGood,
                Step::RecordRollback,
                Step::Save,
                Step::Conclude(Conclusion::Refused)
            ]
        );
        assert_eq!(
            decide(&Facts::default(), "b", &Stage::Arrived),
            vec![Step::Plan]
        );
    }

    #[test]
    fn the_start_is_saved_before_the_first_write_and_good_only_after_the_verdict() {
        for gate in [None, Some(GateReason::All)] {
            let gated = gate.is_some();
            let steps = decide(&Facts::default(), "b", &Stage::Planned { gate });
            assert!(position(&steps, &Step::Begin) < position(&steps, &Step::Save));
            assert!(position(&steps, &Step::Save) < position(&steps, &Step::Apply));
            assert_eq!(steps.contains(&Step::RecordGood), !gated, "{steps:?}");
            assert_eq!(steps.contains(&Step::AwaitHealth), gated, "{steps:?}");
        }
        assert_eq!(
            decide(&Facts::default(), "b", &Stage::Judged { healthy: true }),
            vec![
                Step::RecordGood,
                Step::Save,
                Step::Conclude(Conclusion::Healthy)
            ]
        );
    }

    #[test]
    fn an_unhealthy_commit_is_saved_bad_before_the_revert_and_counted_after_it() {
        let facts = Facts {
            last_good: Some("a"),
            ..Facts::default()
        };
        let steps = decide(&facts, "b", &Stage::Judged { healthy: false });
        let bad = position(&steps, &Step::RecordBad);
        let revert = position(&steps, &Step::RevertToLastGood);
        let first_save = position(&steps, &Step::Save);
        assert!(bad < first_save && first_save < revert, "{steps:?}");
        assert!(revert < position(&steps, &Step::RecordRollback));
        assert_eq!(steps.last(), Some(&Step::Conclude(Conclusion::RolledBack)));
        assert_eq!(steps[steps.len() - 2], Step::Save);
    }

    #[test]
    fn an_unhealthy_commit_without_an_older_good_one_is_kept() {
        assert_eq!(
            decide(&Facts::default(), "b", &Stage::Judged { healthy: false }),
            vec![
                Step::RecordBad,
                Step::Save,
                Step::Conclude(Conclusion::Kept(KeptReason::NoPreviousGood))
            ]
        );
        // The last good commit itself (a drift re-apply) is never marked bad nor reverted.
        let same = Facts {
            last_good: Some("a"),
            ..Facts::default()
        };
        assert_eq!(
            decide(&same, "a", &Stage::Judged { healthy: false }),
            vec![Step::Conclude(Conclusion::Kept(KeptReason::IsLastGood))]
        );
    }

    #[test]
    fn a_k3s_restart_waits_for_a_permit_and_other_changes_for_the_wave() {
        let restart = plan_creating(
            &[DROPIN],
            vec![Effect::RestartUnit {
                unit: "k3s.service".into(),
            }],
        );
        let fp = || "fp".to_string();
        assert_eq!(deferral(&restart, Permit::ALL, fp), None);
        let no_restart = Permit {
            restart_k3s: false,
            change: true,
        };
        assert_eq!(
            deferral(&restart, no_restart, fp),
            Some(Deferral::RestartK3s {
                unit: "k3s.service".into(),
                fingerprint: "fp".into()
            })
        );
        let motd = plan_creating(&["/etc/motd"], vec![]);
        assert_eq!(deferral(&motd, no_restart, fp), None);
        let no_change = Permit {
            restart_k3s: true,
            change: false,
        };
        assert_eq!(deferral(&motd, no_change, fp), Some(Deferral::Wave));
        assert_eq!(deferral(&Plan::default(), no_change, fp), None);
        // Nothing is written for a held commit.
        let held = decide(&Facts::default(), "b", &Stage::Held(Deferral::Wave));
        assert_eq!(held, vec![Step::Conclude(Conclusion::Deferred)]);
    }
}
