//! The I/O driver of the upgrade lifecycle: reads the booted slot and the boot environment,
//! runs [`machine::decide`], and performs its steps in order (state file, boot environment,
//! slot write, reboot). All effects sit behind seams: [`StateStore`], [`BootEnv`],
//! [`Installer`] and [`CommandRunner`].
//!
//! # Power-cut safety: the ordering and why a good slot always remains
//!
//! Slots are `B` (booted, good, primary) and `N` (the other one, about to get the new image).
//!
//! 1. **Persist `Downloading`** (state file, atomic). The slot record of `N` is cleared first.
//! 2. **Mark `N` bad in the boot env** (only if it was good, had a trial, or was primary).
//!    From here on the bootloader never picks `N`: not primary, not good, no trial.
//! 3. **Write the image into `N`**, verify its SHA-256, fsync. A cut here leaves a torn `N`
//!    that nothing boots; the next step finds `Downloading` and starts the write again.
//! 4. **Persist `Staged`** (image fully on disk and synced before this).
//! 5. **Schedule the trial of `N`** in the boot env (`tries` from config). Only now may the
//!    bootloader boot `N`, and only `tries` times; `B` stays the good primary. A cut between
//!    4 and 5 leaves `Staged` without a trial: the next step schedules it.
//! 6. **Reboot.** A cut before it is the same as a pending reboot: the next step sees the
//!    scheduled trial and asks again.
//! 7. Booted `N`: **persist `Trial`**. Healthy: **commit `N` in the env, then persist
//!    `Committed`** (a cut in between: the env already says committed, the next step
//!    finishes). Unhealthy: **persist `RollingBack`, then mark `N` bad** (making `B` primary),
//!    **then reboot**; a cut before the env write boots `N` again (tries permitting) or `B`,
//!    and both finish the rollback from `RollingBack`.
//! 8. Booted `B` with `Staged` (tries exhausted) or `Trial`: the bootloader fell back;
//!    `RolledBack` and the image is quarantined.
//!
//! At every point the boot env's primary is `B` or a committed `N`, which is good; each
//! backend's env write is itself crash-safe (see [`crate::bootenv`]), so a cut during 2, 5 or
//! 7 leaves the old or the new env, both with a good primary.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::machine::{
    self, Decision, HealthInput, ImageId, Inputs, Lifecycle, Note, Step, TransitionError,
    UpgradeState,
};
use crate::bootenv::{BootEnv, BootEnvError, BootState, Slot};
use crate::config::model::{Compression, UpgradeConfig};
use crate::runner::{display_argv, CommandRunner, RunError};
use crate::statefile::{self, StateFileError};

/// Name of the state file in the state dir.
pub const STATE_FILE: &str = "upgrade.json";

/// Errors of the upgrade actor. Each names the file, device or command.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    /// Reading or writing the upgrade state file failed.
    #[error(transparent)]
    StateFile(#[from] StateFileError),
    /// The upgrade state file is not valid upgrade-state JSON (hand-edited or corrupt).
    #[error("upgrade state file {path}: {source}; expected bosun's upgrade state JSON (remove it to start over)")]
    StateParse {
        /// The state file.
        path: PathBuf,
        /// The JSON error, with line and column.
        #[source]
        source: serde_json::Error,
    },
    /// The state file declares a format other than [`machine::STATE_FORMAT`]. Not returned today:
    /// [`FileStateStore`] does not check `format` when it loads.
    #[error(
        "upgrade state file {path}: format {found}, this bosun reads format {}",
        machine::STATE_FORMAT
    )]
    StateFormat {
        /// The state file.
        path: PathBuf,
        /// The format it declares.
        found: u32,
    },
    /// The kernel command line could not be read, or its `bosun.slot=` is neither `a` nor `b`.
    #[error("kernel command line {path}: {detail}")]
    Cmdline {
        /// The command line file (`<root>/proc/cmdline`).
        path: PathBuf,
        /// The I/O error or the bad parameter.
        detail: String,
    },
    /// Reading or writing the boot environment failed.
    #[error("boot environment: {0}")]
    BootEnv(#[from] BootEnvError),
    /// The persisted state does not allow the transition (a hand-edited state file, or a bug).
    #[error(transparent)]
    Transition(#[from] TransitionError),
    /// The reboot command ran but exited unsuccessfully.
    #[error("reboot command `{command}`: {detail}")]
    Reboot {
        /// The reboot command line.
        command: String,
        /// Its exit status and stderr.
        detail: String,
    },
    /// The reboot command could not be started or timed out.
    #[error("reboot command `{command}`: {source}")]
    RebootRun {
        /// The reboot command line.
        command: String,
        /// The runner's error.
        #[source]
        source: RunError,
    },
    /// No slots, boot environment or `bosun.slot=` on this node, so A/B upgrades cannot run (an
    /// overlay install).
    #[error("A/B upgrades unsupported here: {0}")]
    Unsupported(String),
    /// `bosun upgrade rollback` was refused: the other slot is not marked good in the boot
    /// environment.
    #[error("{0}")]
    Refused(String),
    /// [`machine::decide`] did not settle within this many rounds in one step (a bug in the state
    /// machine).
    #[error("the upgrade decision did not settle after {0} rounds (a bug)")]
    NoFixpoint(usize),
    /// The decision asks to install an image the config no longer names (the config changed under
    /// the step; nothing was written).
    #[error("the decision asks to install {wanted}, but the config names {named}")]
    InstallMismatch {
        /// The image the decision wanted.
        wanted: String,
        /// The image the config names (`no image` when none).
        named: String,
    },
}

/// Why writing an image into a slot failed; the slot holds garbage and is not bootable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("installing into {slot}: {reason}")]
pub struct InstallFailure {
    /// The slot device or file that was written.
    pub slot: PathBuf,
    /// Why the install failed (the installer's error chain).
    pub reason: String,
}

/// Writes an OS image into a slot device (the seam in front of the streaming installer).
pub trait Installer {
    /// Writes `image` into `slot` (writes to the device), verifies the SHA-256 of the
    /// downloaded bytes, and syncs the device before returning `Ok`.
    fn install(&self, image: &UpgradeConfig, slot: &Path) -> Result<(), InstallFailure>;
}

/// Installs images given as absolute local paths: copies (decompressing gzip/zstd) into the
/// slot while hashing, checks the SHA-256, fsyncs. Remote images need the streaming installer.
#[derive(Debug, Clone, Default)]
pub struct LocalCopyInstaller;

/// Compression of `image`: explicit, else from the file name suffix (pure).
pub fn compression_of(image: &UpgradeConfig) -> Compression {
    image.compression.unwrap_or_else(|| {
        if image.image.ends_with(".zst") {
            Compression::Zstd
        } else if image.image.ends_with(".gz") {
            Compression::Gzip
        } else {
            Compression::None
        }
    })
}

struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

impl Installer for LocalCopyInstaller {
    /// Reads the image file, writes the slot from offset 0 (writes to disk), fsyncs it.
    fn install(&self, image: &UpgradeConfig, slot: &Path) -> Result<(), InstallFailure> {
        let fail = |reason: String| InstallFailure {
            slot: slot.to_path_buf(),
            reason,
        };
        if !image.image.starts_with('/') {
            return Err(fail(format!(
                "image {} is not a local absolute path; this build's installer copies local files only",
                image.image
            )));
        }
        let src = std::fs::File::open(&image.image)
            .map_err(|e| fail(format!("open image {}: {e}", image.image)))?;
        let mut hashing = HashingReader {
            inner: std::io::BufReader::new(src),
            hasher: Sha256::new(),
            bytes: 0,
        };
        let mut dst = std::fs::OpenOptions::new()
            .write(true)
            .open(slot)
            .map_err(|e| fail(format!("open slot for writing: {e}")))?;
        let copied = match compression_of(image) {
            Compression::None => std::io::copy(&mut hashing, &mut dst),
            Compression::Gzip => {
                std::io::copy(&mut flate2::read::GzDecoder::new(&mut hashing), &mut dst)
            }
            Compression::Zstd => zstd::stream::read::Decoder::new(&mut hashing)
                .and_then(|mut d| std::io::copy(&mut d, &mut dst)),
        };
        copied.map_err(|e| fail(format!("copy {} into the slot: {e}", image.image)))?;
        // Drain what a decoder left unread so the hash covers the whole file.
        std::io::copy(&mut hashing, &mut std::io::sink())
            .map_err(|e| fail(format!("read image {}: {e}", image.image)))?;
        if let Some(size) = image.size {
            if hashing.bytes != size {
                return Err(fail(format!(
                    "image {} is {} bytes, the config says {size}",
                    image.image, hashing.bytes
                )));
            }
        }
        let got: [u8; 32] = hashing.hasher.finalize().into();
        if got != image.sha256 {
            return Err(fail(format!(
                "image {} has sha256 {}, the config says {}",
                image.image,
                hex::encode(got),
                hex::encode(image.sha256)
            )));
        }
        dst.flush()
            .and_then(|_| dst.sync_all())
            .map_err(|e| fail(format!("fsync slot: {e}")))
    }
}

/// Where the upgrade state lives (the seam in front of the state file).
pub trait StateStore {
    /// Reads the state; `None` when there is none yet (reads the disk).
    fn load(&self) -> Result<Option<UpgradeState>, UpgradeError>;
    /// Replaces the state atomically and durably (writes to disk).
    fn save(&self, state: &UpgradeState) -> Result<(), UpgradeError>;
}

/// The state as JSON in `<state dir>/upgrade.json`, replaced with [`statefile::write_atomic`].
#[derive(Debug, Clone)]
pub struct FileStateStore {
    /// The state file (`<state dir>/upgrade.json`).
    pub path: PathBuf,
}

impl FileStateStore {
    /// The store for `<state_dir>/upgrade.json`. Touches nothing.
    pub fn in_dir(state_dir: &Path) -> FileStateStore {
        FileStateStore {
            path: state_dir.join(STATE_FILE),
        }
    }
}

impl StateStore for FileStateStore {
    fn load(&self) -> Result<Option<UpgradeState>, UpgradeError> {
        match statefile::read_optional(&self.path)? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|source| {
                UpgradeError::StateParse {
                    path: self.path.clone(),
                    source,
                }
            }),
        }
    }

    /// Creates the state dir if needed, then writes the file atomically (writes to disk).
    fn save(&self, state: &UpgradeState) -> Result<(), UpgradeError> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| StateFileError {
                path: dir.to_path_buf(),
                op: "create state directory",
                source,
            })?;
        }
        let mut bytes = serde_json::to_vec_pretty(state).expect("state serializes");
        bytes.push(b'\n');
        statefile::write_atomic(&self.path, &bytes, 0o644)?;
        Ok(())
    }
}

/// The two slot devices (or files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotPaths {
    /// Device (or file) of slot A.
    pub a: PathBuf,
    /// Device (or file) of slot B.
    pub b: PathBuf,
}

impl SlotPaths {
    /// The device (or file) of `slot`.
    pub fn get(&self, slot: Slot) -> &Path {
        match slot {
            Slot::A => &self.a,
            Slot::B => &self.b,
        }
    }
}

/// Parses `bosun.slot=a|b` from a kernel command line (pure). `Ok(None)` when absent; the
/// last occurrence wins, as the kernel does for duplicate parameters.
pub fn parse_cmdline(text: &str) -> Result<Option<Slot>, String> {
    let mut slot = None;
    for word in text.split_ascii_whitespace() {
        if let Some(v) = word.strip_prefix("bosun.slot=") {
            slot =
                Some(v.parse::<Slot>().map_err(|_| {
                    format!("bosun.slot={v}: expected bosun.slot=a or bosun.slot=b")
                })?);
        }
    }
    Ok(slot)
}

/// What one [`UpgradeActor::step`] did.
#[derive(Debug, Clone)]
pub struct StepReport {
    /// The slot booted now (`bosun.slot=`), `None` when not an A/B boot.
    pub booted: Option<Slot>,
    /// The state after the step (as persisted).
    pub state: UpgradeState,
    /// Effects performed, in order (human-readable).
    pub performed: Vec<String>,
    /// What the operator should know (blocked, refused, awaiting health or reboot, …), without
    /// duplicates.
    pub notes: Vec<Note>,
    /// The last step performed was a reboot request (the node is going down).
    pub reboot_requested: bool,
    /// The install attempted this step failed (recorded in the state; retried next step).
    pub install_error: Option<String>,
}

/// What [`UpgradeActor::step`] does after performing one step of a decision.
enum Flow {
    /// Go on with the next step of the same decision.
    Next,
    /// An install ran: decide again from the state it left.
    Redecide,
    /// The step is over (a reboot was requested or an install failed).
    Stop,
}

/// Drives the upgrade lifecycle on this node. `Send`, so the daemon can run [`Self::step`]
/// (blocking I/O) on a blocking thread; one actor per node.
pub struct UpgradeActor {
    /// Where the upgrade state is loaded from and persisted to.
    pub store: Box<dyn StateStore + Send>,
    /// Kernel command line file (`<root>/proc/cmdline`).
    pub cmdline: PathBuf,
    /// The booted OS's os-release (`<root>/etc/os-release`), whose `IMAGE_VERSION` lets a
    /// factory-installed slot be adopted; `None`: not read.
    pub os_release: Option<PathBuf>,
    /// `None`: no slots configured (overlay install); upgrades are reported unsupported.
    pub slots: Option<SlotPaths>,
    /// The boot environment backend (GRUB env, U-Boot env, GPT attributes); `None`: upgrades are
    /// reported unsupported.
    pub bootenv: Option<Box<dyn BootEnv + Send>>,
    /// Writes images into slots.
    pub installer: Box<dyn Installer + Send>,
    /// Runs the reboot command.
    pub runner: Arc<dyn CommandRunner>,
    /// Default `systemctl reboot`.
    pub reboot_argv: Vec<String>,
    /// A trial without a healthy verdict after this many seconds is rolled back.
    pub trial_timeout: Option<u64>,
    /// Unix seconds (a seam for tests).
    pub clock: Box<dyn Fn() -> u64 + Send>,
    /// The rollout gates allow a trial reboot now (default true: no coordination).
    pub trial_permitted: bool,
}

/// `IMAGE_VERSION` of an os-release file (reads it); `None` when absent or unreadable.
fn image_version(path: &Path) -> Option<String> {
    parse_image_version(&std::fs::read_to_string(path).ok()?)
}

/// `IMAGE_VERSION=` of os-release text, unquoted (os-release(5) shell-style values). Pure.
pub fn parse_image_version(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let value = line.trim().strip_prefix("IMAGE_VERSION=")?;
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
            .unwrap_or(value);
        (!value.is_empty()).then(|| value.to_string())
    })
}

/// The default reboot command.
pub fn default_reboot_argv() -> Vec<String> {
    vec!["systemctl".into(), "reboot".into()]
}

fn system_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// What `bosun upgrade status` shows.
#[derive(Debug, Clone, serde::Serialize)]
pub struct UpgradeStatus {
    /// The slot booted now (`bosun.slot=`), `None` when not an A/B boot.
    pub booted: Option<Slot>,
    /// The boot environment, rendered for humans; `None` without slots or boot env.
    pub boot_env: Option<String>,
    /// The persisted upgrade state.
    pub state: UpgradeState,
    /// Counters and the running version, as exported to Prometheus.
    pub metrics: machine::UpgradeMetrics,
}

impl UpgradeActor {
    /// An actor with the file state store in `state_dir`, `systemctl reboot`, no trial
    /// timeout and the system clock.
    pub fn new(
        state_dir: &Path,
        cmdline: PathBuf,
        slots: Option<SlotPaths>,
        bootenv: Option<Box<dyn BootEnv + Send>>,
        installer: Box<dyn Installer + Send>,
        runner: Arc<dyn CommandRunner>,
    ) -> UpgradeActor {
        UpgradeActor {
            store: Box::new(FileStateStore::in_dir(state_dir)),
            cmdline,
            os_release: None,
            slots,
            bootenv,
            installer,
            runner,
            reboot_argv: default_reboot_argv(),
            trial_timeout: None,
            clock: Box::new(system_now),
            trial_permitted: true,
        }
    }

    /// The booted slot from the kernel command line (reads the file). A missing file or no
    /// `bosun.slot=` is `None`.
    pub fn booted(&self) -> Result<Option<Slot>, UpgradeError> {
        let text = match std::fs::read_to_string(&self.cmdline) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(UpgradeError::Cmdline {
                    path: self.cmdline.clone(),
                    detail: e.to_string(),
                })
            }
        };
        parse_cmdline(&text).map_err(|detail| UpgradeError::Cmdline {
            path: self.cmdline.clone(),
            detail,
        })
    }

    fn env(&self) -> Result<Option<BootState>, UpgradeError> {
        match (&self.slots, &self.bootenv) {
            (Some(_), Some(env)) => Ok(Some(env.read()?)),
            _ => Ok(None),
        }
    }

    fn env_backend(&self) -> Result<&dyn BootEnv, UpgradeError> {
        match (&self.slots, &self.bootenv) {
            (Some(_), Some(env)) => Ok(env.as_ref()),
            _ => Err(UpgradeError::Unsupported(
                "no slot devices or boot environment are configured".into(),
            )),
        }
    }

    /// The persisted state, or the initial one (reads the disk).
    pub fn load_state(&self) -> Result<UpgradeState, UpgradeError> {
        Ok(self.store.load()?.unwrap_or_default())
    }

    /// Reboots the node for `why` (the lifecycle state it reboots into or out of), announced
    /// first through [`crate::disruption::about_to_disrupt`]. Runs the reboot command.
    fn reboot(&self, why: &str) -> Result<(), UpgradeError> {
        crate::disruption::about_to_disrupt(&crate::disruption::Disruption::Reboot { why });
        let command = display_argv(&self.reboot_argv);
        let out = self
            .runner
            .run(&self.reboot_argv)
            .map_err(|source| UpgradeError::RebootRun {
                command: command.clone(),
                source,
            })?;
        if !out.success() {
            return Err(UpgradeError::Reboot {
                command,
                detail: format!(
                    "{}: {}",
                    out.status_text(),
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            });
        }
        Ok(())
    }

    /// One pass of the lifecycle: observes, decides, performs the steps in order until the
    /// decision settles, a reboot is requested, or an install ran. Side effects: writes the
    /// state file, the boot environment and a slot device; may reboot the node.
    pub fn step(
        &mut self,
        desired: Option<&UpgradeConfig>,
        health: HealthInput,
    ) -> Result<StepReport, UpgradeError> {
        const ROUNDS: usize = 8;
        let booted = self.booted()?;
        let mut state = self.load_state()?;
        let mut report = StepReport {
            booted,
            state: state.clone(),
            performed: Vec::new(),
            notes: Vec::new(),
            reboot_requested: false,
            install_error: None,
        };
        for _ in 0..ROUNDS {
            let inputs = Inputs {
                desired,
                booted,
                env: self.env()?,
                health: health.clone(),
                now: (self.clock)(),
                trial_timeout: self.trial_timeout,
                booted_image_version: self.os_release.as_deref().and_then(image_version),
                trial_permitted: self.trial_permitted,
            };
            let Decision { steps, notes } = machine::decide(&state, &inputs)?;
            for n in notes {
                if !report.notes.contains(&n) {
                    report.notes.push(n);
                }
            }
            if steps.is_empty() {
                report.state = state;
                return Ok(report);
            }
            for step in steps {
                match self.perform(step, desired, &mut state, &mut report)? {
                    Flow::Next => {}
                    Flow::Redecide => break,
                    Flow::Stop => {
                        report.state = state;
                        return Ok(report);
                    }
                }
            }
        }
        Err(UpgradeError::NoFixpoint(ROUNDS))
    }

    /// Performs one step of a decision and records it in `report`; `state` follows what was
    /// persisted. Side effects per step: writes the state file, the boot environment or a
    /// slot device ([`Self::install_step`]), or reboots the node ([`Self::reboot`]).
    fn perform(
        &mut self,
        step: Step,
        desired: Option<&UpgradeConfig>,
        state: &mut UpgradeState,
        report: &mut StepReport,
    ) -> Result<Flow, UpgradeError> {
        match step {
            Step::Persist(next) => {
                self.store.save(&next)?;
                report.performed.push(format!(
                    "state: {} → {}",
                    state.lifecycle.name(),
                    next.lifecycle.name()
                ));
                *state = *next;
            }
            Step::MarkBad(slot) => {
                let s = self.env_backend()?.mark_bad(slot)?;
                report
                    .performed
                    .push(format!("boot env: slot {slot} not bootable ({s})"));
            }
            Step::SetTrial { slot, tries } => {
                let s = self.env_backend()?.set_trial(slot, tries)?;
                report
                    .performed
                    .push(format!("boot env: trial of slot {slot} ({s})"));
            }
            Step::MarkGood(slot) => {
                let s = self.env_backend()?.mark_good(slot)?;
                report
                    .performed
                    .push(format!("boot env: slot {slot} committed ({s})"));
            }
            Step::Install { slot, image } => {
                return self.install_step(slot, &image, desired, state, report)
            }
            Step::Reboot => {
                self.reboot(state.lifecycle.name())?;
                report.performed.push(format!(
                    "reboot requested: {}",
                    display_argv(&self.reboot_argv)
                ));
                report.reboot_requested = true;
                return Ok(Flow::Stop);
            }
        }
        Ok(Flow::Next)
    }

    /// `Step::Install`: writes `image` (which must be the one `desired` names) into `slot`
    /// through the [`Installer`], then persists the outcome. Success re-decides with the new
    /// state; a failure is recorded in `report` (and, once given up, noted) and ends the step.
    /// Writes the slot device and the state file.
    fn install_step(
        &mut self,
        slot: Slot,
        image: &ImageId,
        desired: Option<&UpgradeConfig>,
        state: &mut UpgradeState,
        report: &mut StepReport,
    ) -> Result<Flow, UpgradeError> {
        let cfg = match desired {
            Some(d) if ImageId::of(d) == *image => d,
            _ => {
                return Err(UpgradeError::InstallMismatch {
                    wanted: image.to_string(),
                    named: desired
                        .map(|d| ImageId::of(d).to_string())
                        .unwrap_or_else(|| "no image".into()),
                })
            }
        };
        let path = self
            .slots
            .as_ref()
            .map(|s| s.get(slot).to_path_buf())
            .ok_or_else(|| UpgradeError::Unsupported("no slots".into()))?;
        let result = self.installer.install(cfg, &path);
        let error = result.as_ref().err().map(|e| e.to_string());
        let next = state.after_install(match &error {
            None => Ok(()),
            Some(e) => Err(e.as_str()),
        })?;
        self.store.save(&next)?;
        match &error {
            None => report.performed.push(format!(
                "slot {slot}: installed {image} into {}",
                path.display()
            )),
            Some(e) => report.performed.push(format!("slot {slot}: {e}")),
        }
        *state = next;
        let Some(e) = error else {
            return Ok(Flow::Redecide);
        };
        if let Lifecycle::Failed { target, .. } = &state.lifecycle {
            report.notes.push(Note::GivenUp(target.clone()));
        }
        report.install_error = Some(e);
        Ok(Flow::Stop)
    }

    /// `bosun upgrade mark-good`: commits the booted slot in the boot env, then records a
    /// trial of it as committed (writes the boot env and the state file).
    pub fn mark_good(&mut self) -> Result<StepReport, UpgradeError> {
        let booted = self.require_booted()?;
        let env = self.env_backend()?;
        let s = env.mark_good(booted)?;
        let state = self.load_state()?;
        let next = state.marked_good(booted);
        if next != state {
            self.store.save(&next)?;
        }
        Ok(StepReport {
            booted: Some(booted),
            state: next,
            performed: vec![format!("boot env: slot {booted} committed ({s})")],
            notes: Vec::new(),
            reboot_requested: false,
            install_error: None,
        })
    }

    /// `bosun upgrade rollback`: boots the other slot, if the boot env says it is good.
    /// Persists `RollingBack` first, then makes the other slot primary (ending any trial),
    /// then reboots. Writes the state file and the boot env; reboots.
    pub fn rollback(&mut self) -> Result<StepReport, UpgradeError> {
        let booted = self.require_booted()?;
        let env = self.env_backend()?;
        let current = env.read()?;
        let other = booted.other();
        if !current.is_good(other) {
            return Err(UpgradeError::Refused(format!(
                "slot {other} is not marked good in the boot environment ({current}); nothing to roll back to"
            )));
        }
        let state = self.load_state()?;
        let next = state.manual_rollback(booted)?;
        self.store.save(&next)?;
        let mut target = current;
        target.primary = other;
        target.trial = None;
        env.write(&target)?;
        self.reboot("manual rollback")?;
        Ok(StepReport {
            booted: Some(booted),
            state: next,
            performed: vec![
                format!("boot env: slot {other} primary ({target})"),
                format!("reboot requested: {}", display_argv(&self.reboot_argv)),
            ],
            notes: Vec::new(),
            reboot_requested: true,
            install_error: None,
        })
    }

    fn require_booted(&self) -> Result<Slot, UpgradeError> {
        self.booted()?.ok_or_else(|| {
            UpgradeError::Unsupported(format!(
                "{} has no bosun.slot= (not an A/B install)",
                self.cmdline.display()
            ))
        })
    }

    /// The status view (reads the state file, the cmdline and the boot env).
    pub fn status(&self) -> Result<UpgradeStatus, UpgradeError> {
        let booted = self.booted()?;
        let state = self.load_state()?;
        Ok(UpgradeStatus {
            booted,
            boot_env: self.env()?.map(|e| e.to_string()),
            metrics: state.metrics(booted),
            state,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_version_from_os_release() {
        let text = "NAME=\"edge OS\"\nVERSION_ID=12\nIMAGE_ID=edge\nIMAGE_VERSION=\"2026.11.1\"\n";
        assert_eq!(parse_image_version(text), Some("2026.11.1".into()));
        assert_eq!(parse_image_version("IMAGE_VERSION='3'\n"), Some("3".into()));
        assert_eq!(parse_image_version("IMAGE_VERSION=4"), Some("4".into()));
        assert_eq!(parse_image_version("VERSION_ID=12\nIMAGE_VERSION=\n"), None);
        assert_eq!(parse_image_version("# IMAGE_VERSION=5\n"), None);
    }

    #[test]
    fn actor_is_send() {
        fn send<T: Send>() {}
        send::<UpgradeActor>();
    }

    #[test]
    fn cmdline_parsing() {
        assert_eq!(
            parse_cmdline("root=LABEL=bosun-b bosun.slot=b panic=10\n"),
            Ok(Some(Slot::B))
        );
        assert_eq!(parse_cmdline("quiet"), Ok(None));
        assert_eq!(
            parse_cmdline("bosun.slot=a bosun.slot=b"),
            Ok(Some(Slot::B))
        );
        let e = parse_cmdline("bosun.slot=c").unwrap_err();
        assert!(e.contains("bosun.slot=c"), "{e}");
    }

    fn cfg(image: &Path, bytes: &[u8], compression: Option<Compression>) -> UpgradeConfig {
        UpgradeConfig {
            version: "1".into(),
            image: image.display().to_string(),
            sha256: Sha256::digest(bytes).into(),
            size: Some(bytes.len() as u64),
            compression,
            tries: 3,
        }
    }

    #[test]
    fn local_copy_installs_plain_and_zstd_and_rejects_bad_sha() {
        let dir = tempfile::tempdir().unwrap();
        let slot = dir.path().join("slot");
        std::fs::write(&slot, vec![0u8; 4096]).unwrap();
        let payload = b"bosun image payload".repeat(50);

        let plain = dir.path().join("img.raw");
        std::fs::write(&plain, &payload).unwrap();
        LocalCopyInstaller
            .install(&cfg(&plain, &payload, None), &slot)
            .unwrap();
        assert_eq!(
            &std::fs::read(&slot).unwrap()[..payload.len()],
            &payload[..]
        );

        let zst = dir.path().join("img.zst");
        let packed = zstd::encode_all(&payload[..], 3).unwrap();
        std::fs::write(&zst, &packed).unwrap();
        std::fs::write(&slot, vec![0u8; 4096]).unwrap();
        LocalCopyInstaller
            .install(&cfg(&zst, &packed, None), &slot)
            .unwrap();
        assert_eq!(
            &std::fs::read(&slot).unwrap()[..payload.len()],
            &payload[..]
        );

        let mut wrong = cfg(&plain, &payload, None);
        wrong.sha256[0] ^= 1;
        let e = LocalCopyInstaller.install(&wrong, &slot).unwrap_err();
        assert!(e.reason.contains("sha256"), "{e}");
        assert_eq!(e.slot, slot);

        let mut remote = cfg(&plain, &payload, None);
        remote.image = "https://127.0.0.1/img".into();
        assert!(LocalCopyInstaller.install(&remote, &slot).is_err());
    }
}
