//! The persisted A/B upgrade state and its lifecycle: which image each slot holds, the
//! lifecycle with its checked transitions, quarantine, counters, and the metrics derived from
//! them. Pure; [`super::decide`] decides on it.

use crate::bootenv::Slot;
use crate::config::model::UpgradeConfig;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Version of the state file format.
pub const STATE_FORMAT: u32 = 1;

/// Failed installs of one image before bosun gives up on it (until the config names another).
pub const MAX_INSTALL_ATTEMPTS: u32 = 5;

/// An OS image as the config names it: version and SHA-256 (hex). Two images are the same
/// when both match.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ImageId {
    /// The `upgrade.version` the config gives (also the `IMAGE_VERSION` the image reports once
    /// booted).
    pub version: String,
    /// Lowercase hex SHA-256 of the image as downloaded.
    pub sha256: String,
}

impl ImageId {
    /// The identity of the image named by an `upgrade:` block.
    pub fn of(cfg: &UpgradeConfig) -> ImageId {
        ImageId {
            version: cfg.version.clone(),
            sha256: hex::encode(cfg.sha256),
        }
    }
}

impl fmt::Display for ImageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let short = self.sha256.get(..12).unwrap_or(&self.sha256);
        write!(f, "{} (sha256 {short}…)", self.version)
    }
}

/// Why an upgrade was rolled back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "detail", rename_all = "snake_case")]
pub enum RollbackReason {
    /// The health gate failed or timed out on the trial boot.
    Unhealthy(String),
    /// The bootloader used up the trial's tries and booted the old slot.
    Fallback,
    /// `bosun upgrade rollback`.
    Manual,
}

impl fmt::Display for RollbackReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RollbackReason::Unhealthy(why) => write!(f, "unhealthy: {why}"),
            RollbackReason::Fallback => {
                f.write_str("bootloader fallback: the trial slot never confirmed its boot")
            }
            RollbackReason::Manual => f.write_str("manual rollback"),
        }
    }
}

/// Where the upgrade stands. Persisted as part of [`UpgradeState`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Lifecycle {
    /// Nothing to do yet.
    Idle,
    /// Writing `target` into `slot` (resumable: an interrupted write starts again). `attempts`
    /// counts started installs of this target.
    Downloading {
        /// The image being written.
        target: ImageId,
        /// The inactive slot it is written into.
        slot: Slot,
        /// Installs of this target started so far (at most [`MAX_INSTALL_ATTEMPTS`]).
        attempts: u32,
        /// The error of the last failed attempt, for `bosun upgrade status`.
        last_error: Option<String>,
    },
    /// `slot` holds `target`, fully written and synced; the trial is (being) scheduled.
    Staged {
        /// The image the slot holds.
        target: ImageId,
        /// The slot holding it.
        slot: Slot,
    },
    /// Booted `slot` on trial (unix seconds `since`), waiting for the health verdict.
    Trial {
        /// The image on trial.
        target: ImageId,
        /// The slot booted on trial.
        slot: Slot,
        /// When the trial began (Unix seconds); the trial timeout counts from here.
        since: u64,
    },
    /// `slot` was marked bad (or is being); waiting to boot the other slot.
    RollingBack {
        /// The image being rolled back, when bosun knows which it is (quarantined once the other
        /// slot booted).
        target: Option<ImageId>,
        /// The slot being left.
        slot: Slot,
        /// Why.
        reason: RollbackReason,
    },
    /// `version` runs from `slot`, committed as good.
    Committed {
        /// The committed image.
        image: ImageId,
        /// The slot it runs from.
        slot: Slot,
    },
    /// The upgrade to `target` in `slot` was rolled back; `target` is quarantined.
    RolledBack {
        /// The image that was rolled back (quarantined), when known.
        target: Option<ImageId>,
        /// The slot it was in (marked bad).
        slot: Slot,
        /// Why it was rolled back.
        reason: RollbackReason,
    },
    /// Installing `target` failed [`MAX_INSTALL_ATTEMPTS`] times; not retried until the config
    /// names another image.
    Failed {
        /// The image that could not be installed.
        target: ImageId,
        /// The slot the installs wrote to.
        slot: Slot,
        /// The last install error.
        error: String,
    },
}

impl Lifecycle {
    /// Short name of the variant (`idle`, `downloading`, …), as in the state file.
    pub fn name(&self) -> &'static str {
        match self {
            Lifecycle::Idle => "idle",
            Lifecycle::Downloading { .. } => "downloading",
            Lifecycle::Staged { .. } => "staged",
            Lifecycle::Trial { .. } => "trial",
            Lifecycle::RollingBack { .. } => "rolling_back",
            Lifecycle::Committed { .. } => "committed",
            Lifecycle::RolledBack { .. } => "rolled_back",
            Lifecycle::Failed { .. } => "failed",
        }
    }

    /// Whether no upgrade is in flight (a new one may start).
    pub fn is_settled(&self) -> bool {
        matches!(
            self,
            Lifecycle::Idle
                | Lifecycle::Committed { .. }
                | Lifecycle::RolledBack { .. }
                | Lifecycle::Failed { .. }
        )
    }

    fn refuse(&self, transition: &'static str) -> TransitionError {
        TransitionError {
            transition,
            from: self.name(),
        }
    }

    /// Settled, `Downloading` of another image or `Staged` (superseded) → `Downloading`
    /// of `target` into `slot`, attempt 1 (or the next attempt when resuming the same target).
    pub fn start_download(
        &self,
        target: ImageId,
        slot: Slot,
    ) -> Result<Lifecycle, TransitionError> {
        let attempts = match self {
            Lifecycle::Downloading {
                target: t,
                slot: s,
                attempts,
                ..
            } if *t == target && *s == slot => attempts + 1,
            Lifecycle::Downloading { .. } | Lifecycle::Staged { .. } => 1,
            s if s.is_settled() => 1,
            s => return Err(s.refuse("start_download")),
        };
        Ok(Lifecycle::Downloading {
            target,
            slot,
            attempts,
            last_error: None,
        })
    }

    /// `Downloading` → `Staged`: the slot is fully written and synced.
    pub fn installed(&self) -> Result<Lifecycle, TransitionError> {
        match self {
            Lifecycle::Downloading { target, slot, .. } => Ok(Lifecycle::Staged {
                target: target.clone(),
                slot: *slot,
            }),
            s => Err(s.refuse("installed")),
        }
    }

    /// `Downloading` → `Downloading` with the error recorded, or `Failed` after
    /// [`MAX_INSTALL_ATTEMPTS`].
    pub fn install_failed(&self, error: &str) -> Result<Lifecycle, TransitionError> {
        match self {
            Lifecycle::Downloading {
                target,
                slot,
                attempts,
                ..
            } => Ok(if *attempts >= MAX_INSTALL_ATTEMPTS {
                Lifecycle::Failed {
                    target: target.clone(),
                    slot: *slot,
                    error: error.to_string(),
                }
            } else {
                Lifecycle::Downloading {
                    target: target.clone(),
                    slot: *slot,
                    attempts: *attempts,
                    last_error: Some(error.to_string()),
                }
            }),
            s => Err(s.refuse("install_failed")),
        }
    }

    /// `Downloading` or `Staged` → `Idle`: the config no longer names an image.
    pub fn cancelled(&self) -> Result<Lifecycle, TransitionError> {
        match self {
            Lifecycle::Downloading { .. } | Lifecycle::Staged { .. } => Ok(Lifecycle::Idle),
            s => Err(s.refuse("cancelled")),
        }
    }

    /// `Staged` → `Trial`: booted the staged slot at unix time `now`.
    pub fn booted_trial(&self, now: u64) -> Result<Lifecycle, TransitionError> {
        match self {
            Lifecycle::Staged { target, slot } => Ok(Lifecycle::Trial {
                target: target.clone(),
                slot: *slot,
                since: now,
            }),
            s => Err(s.refuse("booted_trial")),
        }
    }

    /// `Trial` → `Committed`: the trial slot is healthy.
    pub fn committed(&self) -> Result<Lifecycle, TransitionError> {
        match self {
            Lifecycle::Trial { target, slot, .. } => Ok(Lifecycle::Committed {
                image: target.clone(),
                slot: *slot,
            }),
            s => Err(s.refuse("committed")),
        }
    }

    /// `Trial` → `RollingBack`: the trial slot is unhealthy.
    pub fn rolling_back(&self, reason: RollbackReason) -> Result<Lifecycle, TransitionError> {
        match self {
            Lifecycle::Trial { target, slot, .. } => Ok(Lifecycle::RollingBack {
                target: Some(target.clone()),
                slot: *slot,
                reason,
            }),
            s => Err(s.refuse("rolling_back")),
        }
    }

    /// `RollingBack` → `RolledBack`: booted the other slot.
    pub fn rolled_back(&self) -> Result<Lifecycle, TransitionError> {
        match self {
            Lifecycle::RollingBack {
                target,
                slot,
                reason,
            } => Ok(Lifecycle::RolledBack {
                target: target.clone(),
                slot: *slot,
                reason: reason.clone(),
            }),
            s => Err(s.refuse("rolled_back")),
        }
    }

    /// `Staged` or `Trial` → `RolledBack{Fallback}`: the bootloader booted the old slot
    /// because the trial's tries ran out.
    pub fn fell_back(&self) -> Result<Lifecycle, TransitionError> {
        match self {
            Lifecycle::Staged { target, slot } | Lifecycle::Trial { target, slot, .. } => {
                Ok(Lifecycle::RolledBack {
                    target: Some(target.clone()),
                    slot: *slot,
                    reason: RollbackReason::Fallback,
                })
            }
            s => Err(s.refuse("fell_back")),
        }
    }
}

/// A transition called from a state it does not apply to (a bug in the caller, or a
/// hand-edited state file); nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("upgrade transition {transition} is not allowed from state {from}")]
pub struct TransitionError {
    /// The transition attempted (`installed`, `fell_back`, `manual_rollback`, …).
    pub transition: &'static str,
    /// The state it was attempted from ([`Lifecycle::name`]).
    pub from: &'static str,
}

/// Which image bosun last wrote to each slot (`None`: unknown or being overwritten).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotImages {
    /// Image in slot A.
    pub a: Option<ImageId>,
    /// Image in slot B.
    pub b: Option<ImageId>,
}

impl SlotImages {
    /// The image bosun last wrote to `slot`, if known.
    pub fn get(&self, slot: Slot) -> Option<&ImageId> {
        match slot {
            Slot::A => self.a.as_ref(),
            Slot::B => self.b.as_ref(),
        }
    }

    /// Records `image` as the content of `slot` (`None` while it is being overwritten).
    pub fn set(&mut self, slot: Slot, image: Option<ImageId>) {
        match slot {
            Slot::A => self.a = image,
            Slot::B => self.b = image,
        }
    }
}

/// `upgrades_total{result=…}` counters, persisted so they survive reboots.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeCounters {
    /// Trial boots that were healthy and committed (plus `mark-good` of a trial).
    pub committed: u64,
    /// Trials judged unhealthy (or timed out) and manual rollbacks, completed by booting the other
    /// slot.
    pub rolled_back: u64,
    /// Trials the bootloader gave up on (tries exhausted) and fell back from.
    pub fallback: u64,
    /// The config named a quarantined image (counted once per image in a row).
    pub refused: u64,
    /// Installs given up after [`MAX_INSTALL_ATTEMPTS`].
    pub failed: u64,
}

/// Everything bosun persists about upgrades (the state file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeState {
    /// State file format version ([`STATE_FORMAT`]).
    pub format: u32,
    /// The current upgrade's lifecycle.
    pub lifecycle: Lifecycle,
    /// Which image bosun last wrote to each slot.
    pub slots: SlotImages,
    /// Images that were rolled back; never installed again.
    pub quarantine: Vec<ImageId>,
    /// The `upgrades_total` counters.
    pub counters: UpgradeCounters,
    /// The last quarantined image the config named (so `refused` counts once).
    pub last_refused: Option<ImageId>,
}

impl Default for UpgradeState {
    fn default() -> Self {
        UpgradeState {
            format: STATE_FORMAT,
            lifecycle: Lifecycle::Idle,
            slots: SlotImages::default(),
            quarantine: Vec::new(),
            counters: UpgradeCounters::default(),
            last_refused: None,
        }
    }
}

impl UpgradeState {
    /// Whether `image` was rolled back before (same version and sha256): it is not installed again.
    pub fn is_quarantined(&self, image: &ImageId) -> bool {
        self.quarantine.contains(image)
    }

    /// The image running from `booted` as far as bosun knows.
    pub fn running(&self, booted: Slot) -> Option<&ImageId> {
        self.slots.get(booted)
    }

    /// This state with `lifecycle` (pure).
    pub(super) fn with(&self, lifecycle: Lifecycle) -> UpgradeState {
        let mut next = self.clone();
        next.lifecycle = lifecycle;
        next
    }

    /// This state with `image` quarantined (pure).
    pub(super) fn quarantined(mut self, image: Option<&ImageId>) -> UpgradeState {
        if let Some(i) = image {
            if !self.quarantine.contains(i) {
                self.quarantine.push(i.clone());
            }
        }
        self
    }

    /// Applies the outcome of the install a `Downloading` state asked for (pure): `Staged`
    /// with the slot's image recorded, or the error recorded (`Failed` after
    /// [`MAX_INSTALL_ATTEMPTS`], counted in `failed`).
    pub fn after_install(&self, result: Result<(), &str>) -> Result<UpgradeState, TransitionError> {
        match result {
            Ok(()) => {
                let mut next = self.with(self.lifecycle.installed()?);
                if let Lifecycle::Staged { target, slot } = &next.lifecycle {
                    let (target, slot) = (target.clone(), *slot);
                    next.slots.set(slot, Some(target));
                }
                Ok(next)
            }
            Err(e) => {
                let mut next = self.with(self.lifecycle.install_failed(e)?);
                if matches!(next.lifecycle, Lifecycle::Failed { .. }) {
                    next.counters.failed += 1;
                }
                Ok(next)
            }
        }
    }

    /// `bosun upgrade mark-good` on `booted` (pure): a trial of that slot is committed; any
    /// other state is unchanged. The caller also commits the slot in the boot environment.
    pub fn marked_good(&self, booted: Slot) -> UpgradeState {
        match &self.lifecycle {
            Lifecycle::Trial { target, slot, .. } if *slot == booted => {
                let mut next = self.with(Lifecycle::Committed {
                    image: target.clone(),
                    slot: booted,
                });
                next.slots.set(booted, Some(target.clone()));
                next.counters.committed += 1;
                next
            }
            _ => self.clone(),
        }
    }

    /// `bosun upgrade rollback` from `booted` (pure): the image running there is rolled back
    /// (and quarantined once the other slot has booted). Refused while an install is in
    /// flight. The caller makes the other slot primary in the boot environment and reboots.
    pub fn manual_rollback(&self, booted: Slot) -> Result<UpgradeState, TransitionError> {
        if matches!(
            self.lifecycle,
            Lifecycle::Downloading { .. } | Lifecycle::Staged { .. }
        ) {
            return Err(self.lifecycle.refuse("manual_rollback"));
        }
        Ok(self.with(Lifecycle::RollingBack {
            target: self.slots.get(booted).cloned(),
            slot: booted,
            reason: RollbackReason::Manual,
        }))
    }
}

/// Metrics the daemon exports, derived from the persisted state and the booted slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UpgradeMetrics {
    /// The persisted outcome counters.
    pub counters: UpgradeCounters,
    /// The lifecycle state's name ([`Lifecycle::name`]).
    pub lifecycle: &'static str,
    /// The slot booted now (`bosun.slot=`), if any.
    pub booted_slot: Option<Slot>,
    /// The version running from the booted slot as far as bosun knows (it wrote or adopted it).
    pub current_version: Option<String>,
}

impl UpgradeMetrics {
    /// Prometheus text exposition (pure): `bosun_upgrades_total{result=…}` counters and a
    /// `bosun_upgrade_info{state,slot,version}` gauge of 1.
    pub fn render_prometheus(&self) -> String {
        let c = &self.counters;
        let mut out = String::from(
            "# HELP bosun_upgrades_total A/B upgrades by outcome.\n# TYPE bosun_upgrades_total counter\n",
        );
        for (result, n) in [
            ("committed", c.committed),
            ("rolled_back", c.rolled_back),
            ("fallback", c.fallback),
            ("refused", c.refused),
            ("failed", c.failed),
        ] {
            out.push_str(&format!(
                "bosun_upgrades_total{{result=\"{result}\"}} {n}\n"
            ));
        }
        let esc = |s: &str| {
            s.replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n")
        };
        out.push_str(
            "# HELP bosun_upgrade_info Upgrade lifecycle state, booted slot and running version.\n# TYPE bosun_upgrade_info gauge\n",
        );
        out.push_str(&format!(
            "bosun_upgrade_info{{state=\"{}\",slot=\"{}\",version=\"{}\"}} 1\n",
            self.lifecycle,
            self.booted_slot.map(|s| s.as_str()).unwrap_or(""),
            esc(self.current_version.as_deref().unwrap_or(""))
        ));
        out
    }
}

impl UpgradeState {
    /// The metrics view (pure).
    pub fn metrics(&self, booted: Option<Slot>) -> UpgradeMetrics {
        UpgradeMetrics {
            counters: self.counters.clone(),
            lifecycle: self.lifecycle.name(),
            booted_slot: booted,
            current_version: booted
                .and_then(|b| self.running(b))
                .map(|i| i.version.clone()),
        }
    }
}
