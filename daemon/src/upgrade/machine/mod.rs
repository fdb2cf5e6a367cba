//! The A/B upgrade lifecycle as a pure state machine (no I/O).
//!
//! [`UpgradeState`] is what bosun persists in its state dir (JSON, replaced atomically by the
//! actor): the [`Lifecycle`] of the current upgrade, which image each slot holds, the quarantine
//! list and the metrics counters. [`decide`] maps the persisted state plus the observed
//! [`Inputs`] (desired image from config, booted slot, boot environment, health verdict) to an
//! ordered list of [`Step`]s; the actor in [`super::actor`] executes them in that order.
//!
//! ```text
//! Idle/Committed/RolledBack/Failed ──config names a new image──► Downloading{attempts}
//! Downloading ──installed──► Staged ──(trial set, reboot)──► boot new slot ──► Trial{since}
//! Trial ──healthy──► Committed
//! Trial ──unhealthy/timeout──► RollingBack ──(marked bad, reboot)──► boot old slot ──► RolledBack
//! Staged/Trial, booted the old slot (tries exhausted) ──► RolledBack{fallback}
//! ```
//!
//! Transitions are methods of [`Lifecycle`] that assert their source state and return a typed
//! [`TransitionError`] otherwise. Counters live inside the variants (`attempts`).
//!
//! # Invariants
//!
//! * The ordering of every decision is power-cut safe (see [`super::actor`] for why): the
//!   state that records an intent is persisted before the boot environment or a slot changes;
//!   a slot is marked not-good in the boot environment before a single byte of it is
//!   overwritten; a trial is scheduled only after the slot is fully written and synced; a
//!   reboot is requested only after the boot environment change it depends on.
//! * A quarantined image (version + sha256) is never installed again; an image that differs
//!   in either is.
//! * [`decide`] is idempotent: re-running it after any prefix of its steps was performed (a
//!   crash) leads to the same end state.

use std::fmt;

use crate::bootenv::{BootState, Slot};
use crate::config::model::UpgradeConfig;

mod state;

pub use state::*;

/// The health verdict the daemon gives for the current boot.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum HealthInput {
    /// No verdict yet (checks still running or not started).
    #[default]
    Pending,
    /// The health gate passed for this boot.
    Healthy,
    /// The health gate failed or timed out; the text becomes the rollback reason.
    Unhealthy(String),
}

/// What bosun observed this step. All of it is read by the actor; none of it is stored.
#[derive(Debug, Clone)]
pub struct Inputs<'a> {
    /// The image the config names (`upgrade:`), if any.
    pub desired: Option<&'a UpgradeConfig>,
    /// `bosun.slot=` from the kernel command line; `None` on overlay installs.
    pub booted: Option<Slot>,
    /// The boot environment; `None` when no slots/boot environment are configured.
    pub env: Option<BootState>,
    /// The health verdict for the current boot (only read while a trial is on).
    pub health: HealthInput,
    /// Unix seconds.
    pub now: u64,
    /// A trial without a healthy verdict this long after it began is unhealthy (covers a
    /// daemon that keeps restarting). Wall-clock based: nodes without RTC may jump.
    pub trial_timeout: Option<u64>,
    /// The version the booted OS reports (`IMAGE_VERSION` of os-release). Lets bosun adopt a
    /// slot it never installed (the factory image) instead of reinstalling the same version.
    pub booted_image_version: Option<String>,
    /// The rollout gates allow the trial reboot (wave, window, lock, drain passed; always true
    /// without coordination). Without it a staged image waits: no trial is scheduled, nothing
    /// reboots. Rollback reboots never wait.
    pub trial_permitted: bool,
}

/// One effect, in the order [`decide`] returns them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Persist this state (atomically) before the steps after it.
    Persist(Box<UpgradeState>),
    /// Boot env: mark `slot` not good and end any trial of it (it is about to be
    /// overwritten, or the trial is cancelled/over). The other slot becomes primary.
    MarkBad(Slot),
    /// Write the desired image into `slot`, verify it, sync it.
    Install {
        /// The inactive slot to write (already marked bad when needed).
        slot: Slot,
        /// The image to write.
        image: ImageId,
    },
    /// Boot env: schedule a trial of `slot` with `tries` attempts.
    SetTrial {
        /// The freshly written slot.
        slot: Slot,
        /// Boot attempts the bootloader makes before falling back.
        tries: u8,
    },
    /// Boot env: commit `slot` as the good primary.
    MarkGood(Slot),
    /// Reboot the node (last step of a decision).
    Reboot,
}

/// Something worth telling the operator that needs no step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// No slots / boot env / `bosun.slot=`: upgrades are not possible on this install.
    Unsupported(String),
    /// The config names a quarantined image.
    Refused(ImageId),
    /// Cannot start an upgrade safely right now.
    Blocked(String),
    /// Waiting for the health verdict of a trial boot.
    AwaitingHealth {
        /// The slot on trial.
        slot: Slot,
    },
    /// Waiting for the reboot that was requested.
    AwaitingReboot,
    /// Installs of this image failed too often; not retried.
    GivenUp(ImageId),
    /// The image is staged; its trial reboot waits for the rollout gates.
    AwaitingPermit(ImageId),
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Note::Unsupported(why) => write!(f, "A/B upgrades unsupported: {why}"),
            Note::Refused(i) => write!(
                f,
                "refusing image {i}: it was rolled back before (quarantined until the config names another image)"
            ),
            Note::Blocked(why) => write!(f, "upgrade blocked: {why}"),
            Note::AwaitingHealth { slot } => {
                write!(f, "slot {slot} on trial: waiting for the health verdict")
            }
            Note::AwaitingReboot => f.write_str("waiting for the requested reboot"),
            Note::AwaitingPermit(i) => write!(
                f,
                "image {i} is staged; its trial reboot waits for the rollout gates"
            ),
            Note::GivenUp(i) => write!(
                f,
                "image {i} failed to install {MAX_INSTALL_ATTEMPTS} times; not retried until the config names another image"
            ),
        }
    }
}

/// What to do this step: `steps` in order, plus notes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision {
    /// Effects to perform, in order; stop at the first failure.
    pub steps: Vec<Step>,
    /// Messages for the log and `bosun upgrade status`.
    pub notes: Vec<Note>,
}

impl Decision {
    fn note(note: Note) -> Decision {
        Decision {
            steps: Vec::new(),
            notes: vec![note],
        }
    }

    fn steps(steps: Vec<Step>) -> Decision {
        Decision {
            steps,
            notes: Vec::new(),
        }
    }
}

/// Decides the next steps (pure). See the module docs for the lifecycle and ordering rules.
/// An error means the persisted state contradicts itself (a transition was not allowed).
pub fn decide(state: &UpgradeState, inputs: &Inputs) -> Result<Decision, TransitionError> {
    let (booted, env) = match ab_install(inputs) {
        Ok(both) => both,
        Err(unsupported) => return Ok(unsupported),
    };
    let desired = inputs.desired.map(|d| (ImageId::of(d), d.tries));
    let booted_version = inputs.booted_image_version.as_deref();

    match &state.lifecycle {
        Lifecycle::Trial { slot, target, .. } if booted != *slot => {
            // Booted the old slot while the state says the new one is on trial: the
            // bootloader fell back (tries used up, or the trial slot stopped loading).
            fallback(state, &env, *slot, target)
        }
        Lifecycle::Staged { slot, target }
            if booted != *slot
                && env
                    .trial
                    .is_some_and(|t| t.slot == *slot && t.tries_left == 0) =>
        {
            // The trial was scheduled and its tries are used up, but bosun never ran in the
            // staged slot: the bootloader fell back.
            fallback(state, &env, *slot, target)
        }
        Lifecycle::Staged { .. } => staged_steps(state, &env, booted, desired.as_ref(), inputs),
        Lifecycle::Trial { slot, since, .. } => trial_steps(state, &env, *slot, *since, inputs),
        Lifecycle::RollingBack { slot, target, .. } => {
            rolling_back_steps(state, &env, booted, *slot, target.as_ref())
        }
        Lifecycle::Downloading { target, slot, .. } => match desired {
            Some((want, _)) if want == *target && *slot == booted.other() => {
                // Resume: an interrupted install starts again from the beginning.
                start_install(state, &env, booted, want)
            }
            other => superseded(state, &env, booted, *slot, other.map(|d| d.0)),
        },
        Lifecycle::Idle
        | Lifecycle::Committed { .. }
        | Lifecycle::RolledBack { .. }
        | Lifecycle::Failed { .. } => {
            if let Some(adopted) = adopt_booted(state, booted, desired.as_ref(), booted_version) {
                return Ok(adopted);
            }
            settled_or_new(state, &env, booted, desired.map(|d| d.0))
        }
    }
}

/// Whether upgrades are possible on this install: the booted slot and the boot environment,
/// or else the decision to return instead (a [`Note::Unsupported`] when the config asks for
/// an image, nothing otherwise). Pure.
fn ab_install(inputs: &Inputs) -> Result<(Slot, BootState), Decision> {
    match (inputs.booted, inputs.env) {
        (Some(b), Some(e)) => Ok((b, e)),
        (None, _) => Err(match inputs.desired {
            Some(_) => Decision::note(Note::Unsupported(
                "the kernel command line has no bosun.slot= (not an A/B install)".into(),
            )),
            None => Decision::default(),
        }),
        (_, None) => Err(match inputs.desired {
            Some(_) => Decision::note(Note::Unsupported(
                "no slot devices or boot environment are configured".into(),
            )),
            None => Decision::default(),
        }),
    }
}

/// Booted into `slot` on trial (since unix second `since`): finish a commit whose state write
/// was lost, roll back when the env no longer selects the slot, else judge the health
/// verdict (healthy: commit; unhealthy or past the trial timeout: roll back; pending: wait).
/// Pure.
fn trial_steps(
    state: &UpgradeState,
    env: &BootState,
    slot: Slot,
    since: u64,
    inputs: &Inputs,
) -> Result<Decision, TransitionError> {
    if env.primary == slot && env.is_good(slot) && env.trial.is_none() {
        // The env commit landed but the state write did not (crash): finish it.
        return Ok(Decision::steps(vec![Step::Persist(Box::new(commit(
            state,
        )?))]));
    }
    if env.primary != slot && !env.is_good(slot) && env.trial.is_none() {
        // The env no longer selects the trial slot (marked bad by someone): roll back.
        let next = state.with(state.lifecycle.rolling_back(RollbackReason::Unhealthy(
            "the boot environment no longer selects the trial slot".into(),
        ))?);
        return Ok(Decision::steps(vec![
            Step::Persist(Box::new(next)),
            Step::Reboot,
        ]));
    }
    let timed_out = inputs
        .trial_timeout
        .is_some_and(|t| inputs.now >= since.saturating_add(t));
    match &inputs.health {
        HealthInput::Healthy => Ok(Decision::steps(vec![
            Step::MarkGood(slot),
            Step::Persist(Box::new(commit(state)?)),
        ])),
        HealthInput::Unhealthy(why) => Ok(rollback_steps(state, why.clone())?),
        HealthInput::Pending if timed_out => Ok(rollback_steps(
            state,
            format!(
                "no healthy verdict within {}s of the trial boot",
                inputs.trial_timeout.unwrap_or_default()
            ),
        )?),
        HealthInput::Pending => Ok(Decision::note(Note::AwaitingHealth { slot })),
    }
}

/// Rolling back from `slot` (which held `target`): while still booted in it, make sure the
/// env no longer selects it and reboot; once booted elsewhere, quarantine `target` and
/// record `RolledBack`. Pure.
fn rolling_back_steps(
    state: &UpgradeState,
    env: &BootState,
    booted: Slot,
    slot: Slot,
    target: Option<&ImageId>,
) -> Result<Decision, TransitionError> {
    if booted == slot {
        let mut steps = Vec::new();
        if env.next_boot() == slot || env.primary == slot {
            steps.push(Step::MarkBad(slot));
        }
        steps.push(Step::Reboot);
        return Ok(Decision::steps(steps));
    }
    let mut next = state
        .with(state.lifecycle.rolled_back()?)
        .quarantined(target);
    next.counters.rolled_back += 1;
    let mut steps = Vec::new();
    if env.trial.is_some_and(|t| t.slot == slot) {
        steps.push(Step::MarkBad(slot));
    }
    steps.push(Step::Persist(Box::new(next)));
    Ok(Decision::steps(steps))
}

/// The booted slot holds no image bosun installed (a factory image, or a lost state file) but
/// its OS reports the version the config names: record it as running there rather than
/// download the same version into the other slot and reboot. The sha256 cannot be checked
/// (nothing was downloaded); the version is the OS's own claim.
fn adopt_booted(
    state: &UpgradeState,
    booted: Slot,
    desired: Option<&(ImageId, u8)>,
    booted_version: Option<&str>,
) -> Option<Decision> {
    let (want, _) = desired?;
    if state.running(booted).is_some() || booted_version != Some(want.version.as_str()) {
        return None;
    }
    let mut next = state.clone();
    next.slots.set(booted, Some(want.clone()));
    Some(Decision::steps(vec![Step::Persist(Box::new(next))]))
}

fn fallback(
    state: &UpgradeState,
    env: &BootState,
    slot: Slot,
    target: &ImageId,
) -> Result<Decision, TransitionError> {
    let mut next = state
        .with(state.lifecycle.fell_back()?)
        .quarantined(Some(target));
    next.counters.fallback += 1;
    let mut steps = Vec::new();
    // Clear the exhausted trial (and any good mark) so the env matches: slot bad.
    if env.trial.is_some_and(|t| t.slot == slot) || env.is_good(slot) {
        steps.push(Step::MarkBad(slot));
    }
    steps.push(Step::Persist(Box::new(next)));
    Ok(Decision::steps(steps))
}

/// An install in flight (`Downloading`/`Staged` into `slot`) whose image the config no
/// longer names: cancel it (the slot stays not-good) and decide afresh from `Idle`.
fn superseded(
    state: &UpgradeState,
    env: &BootState,
    booted: Slot,
    slot: Slot,
    desired: Option<ImageId>,
) -> Result<Decision, TransitionError> {
    let idle = state.with(state.lifecycle.cancelled()?);
    let mut d = settled_or_new(&idle, env, booted, desired)?;
    if !matches!(d.steps.first(), Some(Step::Persist(_))) {
        d.steps.insert(0, Step::Persist(Box::new(idle)));
    }
    if env.trial.is_some_and(|t| t.slot == slot) && !d.steps.contains(&Step::MarkBad(slot)) {
        // A scheduled trial of the cancelled image must not boot.
        d.steps.insert(0, Step::MarkBad(slot));
    }
    Ok(d)
}

fn commit(state: &UpgradeState) -> Result<UpgradeState, TransitionError> {
    let next_lc = state.lifecycle.committed()?;
    let mut next = state.with(next_lc);
    if let Lifecycle::Committed { image, slot } = &next.lifecycle {
        let (image, slot) = (image.clone(), *slot);
        next.slots.set(slot, Some(image));
    }
    next.counters.committed += 1;
    next.last_refused = None;
    Ok(next)
}

fn rollback_steps(state: &UpgradeState, why: String) -> Result<Decision, TransitionError> {
    let next = state.with(
        state
            .lifecycle
            .rolling_back(RollbackReason::Unhealthy(why))?,
    );
    let slot = match &next.lifecycle {
        Lifecycle::RollingBack { slot, .. } => *slot,
        _ => unreachable!("rolling_back returns RollingBack"),
    };
    // Intent first: if the env write is cut, the next boot (trial again, tries permitting,
    // or the old slot) finds RollingBack and finishes the rollback.
    Ok(Decision::steps(vec![
        Step::Persist(Box::new(next)),
        Step::MarkBad(slot),
        Step::Reboot,
    ]))
}

fn staged_steps(
    state: &UpgradeState,
    env: &BootState,
    booted: Slot,
    desired: Option<&(ImageId, u8)>,
    inputs: &Inputs,
) -> Result<Decision, TransitionError> {
    let now = inputs.now;
    let Lifecycle::Staged { target, slot } = &state.lifecycle else {
        unreachable!("called for Staged only")
    };
    let slot = *slot;
    if booted == slot {
        // Booted the staged slot: the trial begins.
        return Ok(Decision::steps(vec![Step::Persist(Box::new(
            state.with(state.lifecycle.booted_trial(now)?),
        ))]));
    }
    match desired {
        Some((want, tries)) if want == target => {
            if env
                .trial
                .is_some_and(|t| t.slot == slot && t.tries_left > 0)
            {
                // The trial is scheduled; the reboot is pending (or was cut).
                return Ok(Decision {
                    steps: vec![Step::Reboot],
                    notes: vec![Note::AwaitingReboot],
                });
            }
            if !inputs.trial_permitted {
                return Ok(Decision::note(Note::AwaitingPermit(target.clone())));
            }
            if !env.is_good(booted) {
                return Ok(Decision::note(Note::Blocked(format!(
                    "booted slot {booted} is not marked good in the boot environment; run `bosun upgrade mark-good` if it is"
                ))));
            }
            let mut steps = Vec::new();
            if env.primary != booted {
                // with_trial needs the booted (good) slot as primary.
                steps.push(Step::MarkBad(slot));
            }
            steps.push(Step::SetTrial {
                slot,
                tries: (*tries).clamp(1, crate::bootenv::MAX_TRIES),
            });
            steps.push(Step::Reboot);
            Ok(Decision::steps(steps))
        }
        other => superseded(state, env, booted, slot, other.map(|d| d.0.clone())),
    }
}

/// Settled (or superseded) state with `desired`: start an install when it is new.
fn settled_or_new(
    state: &UpgradeState,
    env: &BootState,
    booted: Slot,
    desired: Option<ImageId>,
) -> Result<Decision, TransitionError> {
    let Some(want) = desired else {
        return Ok(Decision::default());
    };
    if state.running(booted) == Some(&want) {
        return Ok(Decision::default());
    }
    if state.is_quarantined(&want) {
        let mut d = Decision::note(Note::Refused(want.clone()));
        if state.last_refused.as_ref() != Some(&want) {
            let mut next = state.clone();
            next.counters.refused += 1;
            next.last_refused = Some(want);
            d.steps.push(Step::Persist(Box::new(next)));
        }
        return Ok(d);
    }
    if let Lifecycle::Failed { target, .. } = &state.lifecycle {
        if *target == want {
            return Ok(Decision::note(Note::GivenUp(want)));
        }
    }
    start_install(state, env, booted, want)
}

fn start_install(
    state: &UpgradeState,
    env: &BootState,
    booted: Slot,
    want: ImageId,
) -> Result<Decision, TransitionError> {
    if !env.is_good(booted) {
        return Ok(Decision::note(Note::Blocked(format!(
            "booted slot {booted} is not marked good in the boot environment, so it cannot be the fallback of a trial; run `bosun upgrade mark-good` if it is"
        ))));
    }
    let slot = booted.other();
    let mut next = state.with(state.lifecycle.start_download(want.clone(), slot)?);
    next.slots.set(slot, None);
    next.last_refused = None;
    let mut steps = vec![Step::Persist(Box::new(next))];
    // Before the first byte is written, the target slot must not be bootable: not good, no
    // trial, and the booted slot primary.
    if env.is_good(slot) || env.trial.is_some() || env.primary != booted {
        steps.push(Step::MarkBad(slot));
    }
    steps.push(Step::Install { slot, image: want });
    Ok(Decision::steps(steps))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bootenv::{GoodSlots, Trial};

    fn img(v: &str) -> ImageId {
        ImageId {
            version: v.into(),
            sha256: format!("{:0>64}", v.len()),
        }
    }

    fn cfg(v: &str) -> UpgradeConfig {
        let mut sha = [0u8; 32];
        sha[31] = v.len() as u8;
        UpgradeConfig {
            version: v.into(),
            image: format!("/images/{v}.img"),
            sha256: sha,
            size: None,
            compression: None,
            tries: 3,
        }
    }

    fn id(c: &UpgradeConfig) -> ImageId {
        ImageId::of(c)
    }

    fn all_states() -> Vec<Lifecycle> {
        let t = img("2");
        vec![
            Lifecycle::Idle,
            Lifecycle::Downloading {
                target: t.clone(),
                slot: Slot::B,
                attempts: 1,
                last_error: None,
            },
            Lifecycle::Staged {
                target: t.clone(),
                slot: Slot::B,
            },
            Lifecycle::Trial {
                target: t.clone(),
                slot: Slot::B,
                since: 5,
            },
            Lifecycle::RollingBack {
                target: Some(t.clone()),
                slot: Slot::B,
                reason: RollbackReason::Fallback,
            },
            Lifecycle::Committed {
                image: t.clone(),
                slot: Slot::B,
            },
            Lifecycle::RolledBack {
                target: Some(t.clone()),
                slot: Slot::B,
                reason: RollbackReason::Manual,
            },
            Lifecycle::Failed {
                target: t,
                slot: Slot::B,
                error: "x".into(),
            },
        ]
    }

    type Transition = fn(&Lifecycle) -> Result<Lifecycle, TransitionError>;

    /// Every transition from every state: allowed exactly from its documented sources, and
    /// a typed error naming the transition and the state otherwise.
    #[test]
    fn transitions_assert_their_source_states() {
        let table: Vec<(&str, Transition, &[&str])> = vec![
            (
                "start_download",
                |s| s.start_download(img("3"), Slot::B),
                &[
                    "idle",
                    "downloading",
                    "staged",
                    "committed",
                    "rolled_back",
                    "failed",
                ],
            ),
            ("installed", |s| s.installed(), &["downloading"]),
            (
                "install_failed",
                |s| s.install_failed("e"),
                &["downloading"],
            ),
            ("cancelled", |s| s.cancelled(), &["downloading", "staged"]),
            ("booted_trial", |s| s.booted_trial(9), &["staged"]),
            ("committed", |s| s.committed(), &["trial"]),
            (
                "rolling_back",
                |s| s.rolling_back(RollbackReason::Unhealthy("x".into())),
                &["trial"],
            ),
            ("rolled_back", |s| s.rolled_back(), &["rolling_back"]),
            ("fell_back", |s| s.fell_back(), &["staged", "trial"]),
        ];
        for (name, f, allowed) in table {
            for s in all_states() {
                let r = f(&s);
                if allowed.contains(&s.name()) {
                    assert!(r.is_ok(), "{name} from {} refused: {r:?}", s.name());
                } else {
                    assert_eq!(
                        r,
                        Err(TransitionError {
                            transition: name,
                            from: s.name()
                        }),
                        "{name} from {}",
                        s.name()
                    );
                    assert!(r.unwrap_err().to_string().contains(s.name()));
                }
            }
        }
    }

    #[test]
    fn transition_results() {
        let t = img("2");
        let d = Lifecycle::Idle.start_download(t.clone(), Slot::B).unwrap();
        assert_eq!(
            d,
            Lifecycle::Downloading {
                target: t.clone(),
                slot: Slot::B,
                attempts: 1,
                last_error: None
            }
        );
        // Resuming the same target counts the attempt; another target starts over.
        let d2 = d.start_download(t.clone(), Slot::B).unwrap();
        assert!(matches!(d2, Lifecycle::Downloading { attempts: 2, .. }));
        assert!(matches!(
            d2.start_download(img("3"), Slot::B).unwrap(),
            Lifecycle::Downloading { attempts: 1, .. }
        ));
        let staged = d2.installed().unwrap();
        assert_eq!(
            staged,
            Lifecycle::Staged {
                target: t.clone(),
                slot: Slot::B
            }
        );
        let trial = staged.booted_trial(42).unwrap();
        assert_eq!(
            trial,
            Lifecycle::Trial {
                target: t.clone(),
                slot: Slot::B,
                since: 42
            }
        );
        assert_eq!(
            trial.committed().unwrap(),
            Lifecycle::Committed {
                image: t.clone(),
                slot: Slot::B
            }
        );
        let rb = trial
            .rolling_back(RollbackReason::Unhealthy("no node Ready".into()))
            .unwrap();
        assert_eq!(
            rb.rolled_back().unwrap(),
            Lifecycle::RolledBack {
                target: Some(t.clone()),
                slot: Slot::B,
                reason: RollbackReason::Unhealthy("no node Ready".into())
            }
        );
        assert!(matches!(
            staged.fell_back().unwrap(),
            Lifecycle::RolledBack {
                reason: RollbackReason::Fallback,
                ..
            }
        ));
    }

    #[test]
    fn install_failures_count_up_to_failed() {
        let mut s = UpgradeState {
            lifecycle: Lifecycle::Idle.start_download(img("2"), Slot::B).unwrap(),
            ..Default::default()
        };
        for attempt in 1..MAX_INSTALL_ATTEMPTS {
            s = s.after_install(Err("cut")).unwrap();
            assert!(
                matches!(&s.lifecycle, Lifecycle::Downloading { attempts, last_error: Some(e), .. } if *attempts == attempt && e == "cut")
            );
            s.lifecycle = s.lifecycle.start_download(img("2"), Slot::B).unwrap();
        }
        s = s.after_install(Err("sha mismatch")).unwrap();
        assert!(matches!(s.lifecycle, Lifecycle::Failed { .. }));
        assert_eq!(s.counters.failed, 1);
        assert!(s.after_install(Ok(())).is_err(), "not from Failed");
    }

    #[test]
    fn state_file_json_round_trips() {
        for lc in all_states() {
            let s = UpgradeState {
                lifecycle: lc,
                quarantine: vec![img("9")],
                ..Default::default()
            };
            let text = serde_json::to_string(&s).unwrap();
            assert_eq!(serde_json::from_str::<UpgradeState>(&text).unwrap(), s);
        }
        let text = serde_json::to_string(&Lifecycle::Staged {
            target: img("2"),
            slot: Slot::B,
        })
        .unwrap();
        assert!(
            text.contains(r#""state":"staged""#) && text.contains(r#""slot":"b""#),
            "{text}"
        );
    }

    // ---- decide ----

    fn env_initial() -> BootState {
        BootState::initial()
    }

    fn inputs<'a>(desired: Option<&'a UpgradeConfig>, booted: Slot, env: BootState) -> Inputs<'a> {
        Inputs {
            desired,
            booted: Some(booted),
            env: Some(env),
            health: HealthInput::Pending,
            now: 1000,
            trial_timeout: None,
            booted_image_version: None,
            trial_permitted: true,
        }
    }

    fn persisted(d: &Decision) -> &UpgradeState {
        d.steps
            .iter()
            .rev()
            .find_map(|s| match s {
                Step::Persist(p) => Some(p),
                _ => None,
            })
            .expect("a Persist step")
    }

    #[test]
    fn unsupported_without_slot_or_env() {
        let c = cfg("2");
        let s = UpgradeState::default();
        let mut i = inputs(Some(&c), Slot::A, env_initial());
        i.booted = None;
        let d = decide(&s, &i).unwrap();
        assert!(d.steps.is_empty());
        assert!(matches!(&d.notes[..], [Note::Unsupported(w)] if w.contains("bosun.slot")));
        let mut i = inputs(Some(&c), Slot::A, env_initial());
        i.env = None;
        let d = decide(&s, &i).unwrap();
        assert!(d.steps.is_empty());
        assert!(matches!(&d.notes[..], [Note::Unsupported(_)]));
        // Nothing to say when no upgrade is asked for.
        i.desired = None;
        assert_eq!(decide(&s, &i).unwrap(), Decision::default());
    }

    #[test]
    fn a_factory_slot_reporting_the_wanted_version_is_adopted_not_reinstalled() {
        let c = cfg("2");
        let s = UpgradeState::default();
        let mut i = inputs(Some(&c), Slot::A, env_initial());
        i.booted_image_version = Some("2".into());
        let d = decide(&s, &i).unwrap();
        assert_eq!(d.steps.len(), 1, "{d:?}");
        let adopted = persisted(&d);
        assert_eq!(adopted.running(Slot::A), Some(&ImageId::of(&c)));
        assert_eq!(adopted.lifecycle, Lifecycle::Idle);
        // Settled from then on.
        assert_eq!(decide(adopted, &i).unwrap(), Decision::default());

        // Another version on the booted OS: install as usual.
        i.booted_image_version = Some("1".into());
        let d = decide(&s, &i).unwrap();
        assert!(
            d.steps
                .iter()
                .any(|st| matches!(st, Step::Install { slot: Slot::B, .. })),
            "{d:?}"
        );
        // No os-release version: install as usual.
        i.booted_image_version = None;
        assert!(decide(&s, &i)
            .unwrap()
            .steps
            .iter()
            .any(|st| matches!(st, Step::Install { .. })));
        // A slot bosun installed is never re-labelled by os-release.
        let mut installed = UpgradeState::default();
        installed.slots.set(Slot::A, Some(ImageId::of(&cfg("1"))));
        i.booted_image_version = Some("2".into());
        let d = decide(&installed, &i).unwrap();
        assert!(
            d.steps
                .iter()
                .any(|st| matches!(st, Step::Install { slot: Slot::B, .. })),
            "{d:?}"
        );
    }

    #[test]
    fn new_image_starts_install_in_safe_order() {
        let c = cfg("2");
        let s = UpgradeState::default();
        // Slot b is good (an older image): it must be made unbootable before the write.
        let env = BootState {
            primary: Slot::A,
            trial: None,
            good: GoodSlots { a: true, b: true },
        };
        let d = decide(&s, &inputs(Some(&c), Slot::A, env)).unwrap();
        assert_eq!(d.steps.len(), 3, "{d:?}");
        let Step::Persist(p) = &d.steps[0] else {
            panic!("{d:?}")
        };
        assert!(matches!(
            &p.lifecycle,
            Lifecycle::Downloading {
                slot: Slot::B,
                attempts: 1,
                ..
            }
        ));
        assert_eq!(p.slots.b, None);
        assert_eq!(d.steps[1], Step::MarkBad(Slot::B));
        assert_eq!(
            d.steps[2],
            Step::Install {
                slot: Slot::B,
                image: id(&c)
            }
        );
        // With b already not good, no env write is needed.
        let d = decide(&s, &inputs(Some(&c), Slot::A, env_initial())).unwrap();
        assert!(matches!(
            &d.steps[..],
            [Step::Persist(_), Step::Install { slot: Slot::B, .. }]
        ));
    }

    #[test]
    fn running_image_needs_nothing() {
        let c = cfg("2");
        let mut s = UpgradeState::default();
        s.slots.b = Some(id(&c));
        s.lifecycle = Lifecycle::Committed {
            image: id(&c),
            slot: Slot::B,
        };
        let env = env_initial()
            .with_trial(Slot::B, 3)
            .unwrap()
            .committed(Slot::B);
        assert_eq!(
            decide(&s, &inputs(Some(&c), Slot::B, env)).unwrap(),
            Decision::default()
        );
        assert_eq!(
            decide(&s, &inputs(None, Slot::B, env)).unwrap(),
            Decision::default()
        );
    }

    #[test]
    fn blocked_when_booted_slot_is_not_good() {
        let c = cfg("2");
        let env = env_initial(); // primary a; booted b is not good
        let d = decide(&UpgradeState::default(), &inputs(Some(&c), Slot::B, env)).unwrap();
        assert!(d.steps.is_empty());
        assert!(matches!(&d.notes[..], [Note::Blocked(w)] if w.contains("mark-good")));
    }

    #[test]
    fn downloading_resumes_or_is_cancelled_or_superseded() {
        let c = cfg("2");
        let s = UpgradeState {
            lifecycle: Lifecycle::Idle.start_download(id(&c), Slot::B).unwrap(),
            ..Default::default()
        };
        let d = decide(&s, &inputs(Some(&c), Slot::A, env_initial())).unwrap();
        assert!(matches!(
            &persisted(&d).lifecycle,
            Lifecycle::Downloading { attempts: 2, .. }
        ));
        assert!(matches!(d.steps.last(), Some(Step::Install { .. })));
        // Config dropped the upgrade.
        let d = decide(&s, &inputs(None, Slot::A, env_initial())).unwrap();
        assert_eq!(
            d.steps,
            vec![Step::Persist(Box::new(s.with(Lifecycle::Idle)))]
        );
        // Config names another image: start over with it.
        let c3 = cfg("three");
        let d = decide(&s, &inputs(Some(&c3), Slot::A, env_initial())).unwrap();
        assert!(matches!(
            &persisted(&d).lifecycle,
            Lifecycle::Downloading { attempts: 1, target, .. } if *target == id(&c3)
        ));
    }

    fn staged(c: &UpgradeConfig) -> UpgradeState {
        let mut s = UpgradeState {
            lifecycle: Lifecycle::Idle.start_download(id(c), Slot::B).unwrap(),
            ..Default::default()
        };
        s = s.after_install(Ok(())).unwrap();
        assert_eq!(s.slots.b, Some(id(c)));
        s
    }

    #[test]
    fn staged_schedules_trial_then_reboots() {
        let c = cfg("2");
        let s = staged(&c);
        let d = decide(&s, &inputs(Some(&c), Slot::A, env_initial())).unwrap();
        assert_eq!(
            d.steps,
            vec![
                Step::SetTrial {
                    slot: Slot::B,
                    tries: 3
                },
                Step::Reboot
            ]
        );
        // Trial already scheduled (cut before the reboot): only reboot.
        let env = env_initial().with_trial(Slot::B, 3).unwrap();
        let d = decide(&s, &inputs(Some(&c), Slot::A, env)).unwrap();
        assert_eq!(d.steps, vec![Step::Reboot]);
        // Cancelled before the reboot: the scheduled trial is removed.
        let d = decide(&s, &inputs(None, Slot::A, env)).unwrap();
        assert_eq!(d.steps[0], Step::MarkBad(Slot::B));
        assert_eq!(persisted(&d).lifecycle, Lifecycle::Idle);
    }

    #[test]
    fn booting_the_staged_slot_starts_the_trial() {
        let c = cfg("2");
        let s = staged(&c);
        let mut env = env_initial().with_trial(Slot::B, 3).unwrap();
        env.trial.as_mut().unwrap().tries_left = 2; // the bootloader's decrement
        let d = decide(&s, &inputs(Some(&c), Slot::B, env)).unwrap();
        assert_eq!(
            persisted(&d).lifecycle,
            Lifecycle::Trial {
                target: id(&c),
                slot: Slot::B,
                since: 1000
            }
        );
        assert_eq!(d.steps.len(), 1);
    }

    fn trial(c: &UpgradeConfig) -> UpgradeState {
        let s = staged(c);
        s.with(s.lifecycle.booted_trial(1000).unwrap())
    }

    fn trial_env() -> BootState {
        let mut env = env_initial().with_trial(Slot::B, 3).unwrap();
        env.trial = Some(Trial {
            slot: Slot::B,
            tries_left: 2,
        });
        env
    }

    #[test]
    fn healthy_trial_commits_env_first() {
        let c = cfg("2");
        let s = trial(&c);
        let mut i = inputs(Some(&c), Slot::B, trial_env());
        assert_eq!(
            decide(&s, &i).unwrap().notes,
            vec![Note::AwaitingHealth { slot: Slot::B }]
        );
        i.health = HealthInput::Healthy;
        let d = decide(&s, &i).unwrap();
        assert_eq!(d.steps[0], Step::MarkGood(Slot::B));
        let p = persisted(&d);
        assert_eq!(
            p.lifecycle,
            Lifecycle::Committed {
                image: id(&c),
                slot: Slot::B
            }
        );
        assert_eq!(p.counters.committed, 1);
        assert_eq!(
            p.metrics(Some(Slot::B)).current_version.as_deref(),
            Some("2")
        );
        // Cut after the env commit: the next step only records it, whatever the verdict.
        let env = trial_env().committed(Slot::B);
        let d = decide(&s, &inputs(Some(&c), Slot::B, env)).unwrap();
        assert_eq!(d.steps, vec![Step::Persist(Box::new(p.clone()))]);
    }

    #[test]
    fn unhealthy_trial_persists_intent_marks_bad_and_reboots() {
        let c = cfg("2");
        let s = trial(&c);
        let mut i = inputs(Some(&c), Slot::B, trial_env());
        i.health = HealthInput::Unhealthy("apiserver readyz".into());
        let d = decide(&s, &i).unwrap();
        assert_eq!(d.steps.len(), 3);
        assert!(matches!(
            &d.steps[0],
            Step::Persist(p) if matches!(&p.lifecycle, Lifecycle::RollingBack { reason: RollbackReason::Unhealthy(w), .. } if w == "apiserver readyz")
        ));
        assert_eq!(d.steps[1], Step::MarkBad(Slot::B));
        assert_eq!(d.steps[2], Step::Reboot);
    }

    #[test]
    fn trial_timeout_rolls_back() {
        let c = cfg("2");
        let s = trial(&c);
        let mut i = inputs(Some(&c), Slot::B, trial_env());
        i.trial_timeout = Some(600);
        i.now = 1599;
        assert!(decide(&s, &i).unwrap().steps.is_empty());
        i.now = 1600;
        let d = decide(&s, &i).unwrap();
        assert!(matches!(
            &d.steps[0],
            Step::Persist(p) if matches!(&p.lifecycle, Lifecycle::RollingBack { reason: RollbackReason::Unhealthy(w), .. } if w.contains("600s"))
        ));
    }

    fn rolling_back(c: &UpgradeConfig) -> UpgradeState {
        let s = trial(c);
        s.with(
            s.lifecycle
                .rolling_back(RollbackReason::Unhealthy("x".into()))
                .unwrap(),
        )
    }

    #[test]
    fn rolling_back_finishes_on_either_slot() {
        let c = cfg("2");
        let s = rolling_back(&c);
        // Still on b, env not yet changed (cut before MarkBad): mark bad, reboot.
        let d = decide(&s, &inputs(Some(&c), Slot::B, trial_env())).unwrap();
        assert_eq!(d.steps, vec![Step::MarkBad(Slot::B), Step::Reboot]);
        // Still on b, env changed (cut before the reboot): only reboot.
        let env = trial_env().marked_bad(Slot::B).unwrap();
        let d = decide(&s, &inputs(Some(&c), Slot::B, env)).unwrap();
        assert_eq!(d.steps, vec![Step::Reboot]);
        // On a: rolled back, quarantined, counted; no retry of the same image afterwards.
        let d = decide(&s, &inputs(Some(&c), Slot::A, env)).unwrap();
        let p = persisted(&d).clone();
        assert!(matches!(p.lifecycle, Lifecycle::RolledBack { .. }));
        assert_eq!(p.quarantine, vec![id(&c)]);
        assert_eq!(p.counters.rolled_back, 1);
        let d = decide(&p, &inputs(Some(&c), Slot::A, env)).unwrap();
        assert_eq!(d.notes, vec![Note::Refused(id(&c))]);
        let p2 = persisted(&d).clone();
        assert_eq!(p2.counters.refused, 1);
        // Refusal counted once in a row.
        let d = decide(&p2, &inputs(Some(&c), Slot::A, env)).unwrap();
        assert!(d.steps.is_empty());
        assert_eq!(d.notes, vec![Note::Refused(id(&c))]);
        // Another image is tried.
        let c3 = cfg("three");
        let d = decide(&p2, &inputs(Some(&c3), Slot::A, env)).unwrap();
        assert!(matches!(d.steps.last(), Some(Step::Install { .. })));
        // Same version, different sha: also another image.
        let mut c2b = c.clone();
        c2b.sha256[0] = 7;
        let d = decide(&p2, &inputs(Some(&c2b), Slot::A, env)).unwrap();
        assert!(matches!(d.steps.last(), Some(Step::Install { .. })));
    }

    #[test]
    fn fallback_detected_from_trial_and_from_staged() {
        let c = cfg("2");
        // Trial on b recorded, but a booted: the bootloader gave up.
        let mut env = trial_env();
        env.trial.as_mut().unwrap().tries_left = 0;
        for s in [trial(&c), staged(&c)] {
            let d = decide(&s, &inputs(Some(&c), Slot::A, env)).unwrap();
            assert_eq!(d.steps[0], Step::MarkBad(Slot::B), "{}", s.lifecycle.name());
            let p = persisted(&d);
            assert!(matches!(
                p.lifecycle,
                Lifecycle::RolledBack {
                    reason: RollbackReason::Fallback,
                    slot: Slot::B,
                    ..
                }
            ));
            assert_eq!(p.quarantine, vec![id(&c)]);
            assert_eq!(p.counters.fallback, 1);
        }
        // Staged with tries left and a booted: the reboot has not happened yet.
        let d = decide(&staged(&c), &inputs(Some(&c), Slot::A, trial_env())).unwrap();
        assert_eq!(d.steps, vec![Step::Reboot]);
    }

    #[test]
    fn metrics_render_counters_and_info() {
        let mut s = UpgradeState::default();
        s.counters.rolled_back = 2;
        s.slots.a = Some(img("v\"1"));
        let text = s.metrics(Some(Slot::A)).render_prometheus();
        assert!(
            text.contains("bosun_upgrades_total{result=\"rolled_back\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("bosun_upgrades_total{result=\"committed\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("bosun_upgrade_info{state=\"idle\",slot=\"a\",version=\"v\\\"1\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn manual_operations() {
        let c = cfg("2");
        let s = trial(&c);
        let g = s.marked_good(Slot::B);
        assert!(matches!(g.lifecycle, Lifecycle::Committed { .. }));
        assert_eq!(g.counters.committed, 1);
        assert_eq!(s.marked_good(Slot::A), s, "not the trial slot: unchanged");

        let r = g.manual_rollback(Slot::B).unwrap();
        assert_eq!(
            r.lifecycle,
            Lifecycle::RollingBack {
                target: Some(id(&c)),
                slot: Slot::B,
                reason: RollbackReason::Manual
            }
        );
        assert_eq!(
            staged(&c).manual_rollback(Slot::A),
            Err(TransitionError {
                transition: "manual_rollback",
                from: "staged"
            })
        );
        // After the reboot into a: rolled back and quarantined; env keeps b good.
        let env = BootState {
            primary: Slot::A,
            trial: None,
            good: GoodSlots { a: true, b: true },
        };
        let d = decide(&r, &inputs(Some(&c), Slot::A, env)).unwrap();
        assert_eq!(d.steps.len(), 1, "no env write: {d:?}");
        assert_eq!(persisted(&d).quarantine, vec![id(&c)]);
    }

    #[test]
    fn decide_reaches_a_fixpoint_from_every_state() {
        // Applying the decision's Persist and env steps and deciding again (same boot) ends
        // with no steps or only a reboot within a few rounds.
        let c = cfg("2");
        for lc in all_states() {
            for booted in [Slot::A, Slot::B] {
                let mut s = UpgradeState {
                    lifecycle: lc.clone(),
                    ..Default::default()
                };
                let mut env = if booted == Slot::A {
                    env_initial()
                } else {
                    trial_env()
                };
                let mut settled = false;
                for _ in 0..6 {
                    let mut i = inputs(Some(&c), booted, env);
                    i.health = HealthInput::Healthy;
                    let d = decide(&s, &i).unwrap();
                    if d.steps.is_empty() || d.steps.last() == Some(&Step::Reboot) {
                        settled = true;
                        break;
                    }
                    for st in d.steps {
                        match st {
                            Step::Persist(p) => s = *p,
                            Step::MarkBad(x) => env = env.marked_bad(x).unwrap(),
                            Step::MarkGood(x) => env = env.committed(x),
                            Step::SetTrial { slot, tries } => {
                                env = env.with_trial(slot, tries).unwrap()
                            }
                            Step::Install { .. } => {
                                s = s.after_install(Ok(())).unwrap();
                                break;
                            }
                            Step::Reboot => unreachable!(),
                        }
                        env.check().unwrap();
                    }
                }
                assert!(settled, "{} on {booted}", lc.name());
            }
        }
    }
}
