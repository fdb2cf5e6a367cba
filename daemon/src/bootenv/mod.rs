//! Boot environment: which A/B slot the bootloader boots next, and how bosun changes that.
//!
//! This module owns the contract between bosun and the bootloader. It has three parts:
//!
//! * Pure codecs that do no I/O: [`grub`] (the 1024-byte GRUB environment block), [`uboot`]
//!   (U-Boot environment copies and `fw_env.config`) and [`gpt`] (GPT headers, entry arrays and
//!   ChromeOS/gptprio attribute bits).
//! * The pure model: [`Slot`], [`BootState`] and its transitions ([`BootState::with_trial`],
//!   [`BootState::committed`], [`BootState::marked_bad`]).
//! * The [`BootEnv`] trait with three backends that do the I/O: [`GrubEnv`], [`UbootEnv`] and
//!   [`GptPrio`].
//!
//! # The contract
//!
//! A [`BootState`] says: the *primary* slot (booted normally, always known good in any state bosun
//! writes), an optional *trial* slot with a count of boot attempts left, and which slots are known
//! good. On every boot the bootloader does:
//!
//! 1. If a trial slot is set and its tries are > 0: decrement the tries, persist that, then boot
//!    the trial slot. If persisting fails, boot the primary instead (never loop on a trial).
//! 2. Otherwise boot the primary slot.
//! 3. If the chosen kernel cannot be loaded, try the other slot if it is marked good; if that
//!    fails too, reboot (never sit at a prompt on an unattended node).
//!
//! The booted kernel gets `bosun.slot=a|b` on its command line. The daemon then either commits
//! the trial ([`BootEnv::mark_good`]: it becomes primary) or rolls back ([`BootEnv::mark_bad`]:
//! the slot is marked bad and the other slot becomes primary). A trial whose tries reached 0
//! stays visible as `trial: Some(Trial { tries_left: 0, .. })` so the daemon can see that the
//! bootloader fell back.
//!
//! ## GRUB and U-Boot variables
//!
//! Both environment backends use the same variables (all strings):
//!
//! | variable | values | default when absent |
//! |---|---|---|
//! | `bosun_primary` | `a` or `b` | `a` |
//! | `bosun_trial` | `a`, `b` or empty (no trial) | empty |
//! | `bosun_tries` | decimal `0`..=`15`: boot attempts left for the trial slot | `0` |
//! | `bosun_good_a`, `bosun_good_b` | `1` (known good) or `0` | `1` for the primary slot, else `0` |
//!
//! So an environment without any `bosun_*` variable means "boot slot a". Every other variable in
//! the environment is preserved on writes. `boot/grub.cfg` and `boot/boot.scr.txt` implement the
//! bootloader side of this contract.
//!
//! ## GPT attributes (ChromeOS / gptprio)
//!
//! Each slot partition carries priority (bits 48–51), tries (52–55) and successful (56). bosun
//! writes: trial slot priority 3, `successful=0`, tries = tries left; primary priority 2,
//! `successful=1`; the other slot priority 1 with `successful=1` if it is good, otherwise
//! priority 0 and `successful=0`. A gptprio bootloader (highest priority among partitions that
//! are successful or have tries left, decrementing tries of unsuccessful ones) then implements
//! the same contract. Other attribute bits are preserved.
//!
//! # Invariants
//!
//! * bosun never writes a state whose primary slot is not marked good ([`BootState::check`]).
//! * Every write is power-cut safe where the medium allows: GRUB replaces the file atomically,
//!   a redundant U-Boot environment writes the inactive copy only, GPT writes the backup table
//!   before the primary one. A single-copy U-Boot environment cannot be (documented in
//!   [`UbootEnv`]).

pub mod gpt;
pub mod grub;
pub mod uboot;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

pub use gpt::GptPrio;
pub use grub::GrubEnv;
pub use uboot::UbootEnv;

/// The largest tries count the contract allows (the GPT tries field has 4 bits).
pub const MAX_TRIES: u8 = 15;

/// One of the two A/B slots. Serialized as `"a"` / `"b"`, like [`fmt::Display`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Slot {
    /// Slot a: `a` in the boot environment and in `bosun.slot=a`.
    A,
    /// Slot b: `b` in the boot environment and in `bosun.slot=b`.
    B,
}

impl Slot {
    /// The other slot.
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    /// `"a"` or `"b"`, as written to boot environments and the kernel command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Slot::A => "a",
            Slot::B => "b",
        }
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error parsing a [`Slot`]: the text was not `a` or `b`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid slot {0:?}: expected \"a\" or \"b\"")]
pub struct ParseSlotError(pub String);

impl FromStr for Slot {
    type Err = ParseSlotError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            // Exactly as the bootloader scripts compare: lowercase only.
            "a" => Ok(Slot::A),
            "b" => Ok(Slot::B),
            other => Err(ParseSlotError(other.to_string())),
        }
    }
}

/// A pending (or exhausted, when `tries_left == 0`) trial boot of a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Trial {
    /// The slot on trial (never the primary).
    pub slot: Slot,
    /// Boot attempts the bootloader will still make. 0 means the trial is exhausted and the
    /// bootloader boots the primary slot.
    pub tries_left: u8,
}

/// Which slots are known good (booted and committed, not since marked bad or overwritten).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GoodSlots {
    /// Slot a is known good.
    pub a: bool,
    /// Slot b is known good.
    pub b: bool,
}

impl GoodSlots {
    /// Whether `slot` is known good.
    pub fn get(&self, slot: Slot) -> bool {
        match slot {
            Slot::A => self.a,
            Slot::B => self.b,
        }
    }

    fn set(&mut self, slot: Slot, good: bool) {
        match slot {
            Slot::A => self.a = good,
            Slot::B => self.b = good,
        }
    }
}

/// What the bootloader will do, as stored in a boot environment. See the module docs for the
/// contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BootState {
    /// Slot booted when no trial is pending. Known good in every state bosun writes.
    pub primary: Slot,
    /// A trial boot of the other slot, pending (`tries_left > 0`) or exhausted.
    pub trial: Option<Trial>,
    /// Which slots are known good; the primary always is in a written state.
    pub good: GoodSlots,
}

/// A transition that would break the contract; nothing was written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    /// A trial's tries are 0 or above [`MAX_TRIES`].
    #[error("tries must be 1..={MAX_TRIES}, got {0}")]
    TriesOutOfRange(u8),
    /// A trial was asked for the primary slot; only the other slot can be tried.
    #[error("slot {0} is the primary slot; a trial is only for the other slot")]
    TrialOfPrimary(Slot),
    /// The primary slot is not marked good, so a trial would have no fallback (or the state may not
    /// be written).
    #[error("primary slot {0} is not marked good, so there is no safe fallback for a trial")]
    PrimaryNotGood(Slot),
    /// Marking `slot` bad was refused: the other slot is not good, so nothing bootable would
    /// remain.
    #[error("refusing to mark slot {slot} bad: slot {other} is not marked good, no bootable slot would remain")]
    NoGoodFallback {
        /// The slot to mark bad.
        slot: Slot,
        /// The slot that would become primary, not good.
        other: Slot,
    },
}

impl BootState {
    /// The state of an unprovisioned environment: boot slot a, which is good.
    pub fn initial() -> BootState {
        BootState {
            primary: Slot::A,
            trial: None,
            good: GoodSlots { a: true, b: false },
        }
    }

    /// The slot the bootloader boots next (before any load failure fallback).
    pub fn next_boot(&self) -> Slot {
        match self.trial {
            Some(t) if t.tries_left > 0 => t.slot,
            _ => self.primary,
        }
    }

    /// Whether `slot` is known good.
    pub fn is_good(&self, slot: Slot) -> bool {
        self.good.get(slot)
    }

    /// Checks the invariants every written state satisfies: the primary slot is good, a trial
    /// is for the other slot and within [`MAX_TRIES`].
    pub fn check(&self) -> Result<(), TransitionError> {
        if !self.is_good(self.primary) {
            return Err(TransitionError::PrimaryNotGood(self.primary));
        }
        if let Some(t) = self.trial {
            if t.slot == self.primary {
                return Err(TransitionError::TrialOfPrimary(t.slot));
            }
            if t.tries_left > MAX_TRIES {
                return Err(TransitionError::TriesOutOfRange(t.tries_left));
            }
        }
        Ok(())
    }

    /// Schedules a trial boot of `slot` (normally the freshly written, inactive one) with
    /// `tries` attempts. The slot stops being "good" until committed.
    pub fn with_trial(&self, slot: Slot, tries: u8) -> Result<BootState, TransitionError> {
        if tries == 0 || tries > MAX_TRIES {
            return Err(TransitionError::TriesOutOfRange(tries));
        }
        if slot == self.primary {
            return Err(TransitionError::TrialOfPrimary(slot));
        }
        if !self.is_good(self.primary) {
            return Err(TransitionError::PrimaryNotGood(self.primary));
        }
        let mut next = *self;
        next.trial = Some(Trial {
            slot,
            tries_left: tries,
        });
        next.good.set(slot, false);
        Ok(next)
    }

    /// Commits `slot`: it becomes the good primary; a trial of that slot ends.
    pub fn committed(&self, slot: Slot) -> BootState {
        let mut next = *self;
        next.primary = slot;
        next.good.set(slot, true);
        if matches!(next.trial, Some(t) if t.slot == slot) {
            next.trial = None;
        }
        next
    }

    /// Marks `slot` bad, makes the other slot primary and ends any trial. Refused when the other
    /// slot is not good, because no bootable slot would remain.
    pub fn marked_bad(&self, slot: Slot) -> Result<BootState, TransitionError> {
        let other = slot.other();
        if !self.is_good(other) {
            return Err(TransitionError::NoGoodFallback { slot, other });
        }
        let mut next = *self;
        next.good.set(slot, false);
        next.primary = other;
        // A trial is always of one of the two slots: of `slot` it is over, of `other` it is
        // moot now that `other` is primary.
        next.trial = None;
        Ok(next)
    }
}

impl fmt::Display for BootState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "primary={}", self.primary)?;
        match self.trial {
            Some(t) => write!(f, " trial={} tries={}", t.slot, t.tries_left)?,
            None => f.write_str(" trial=none")?,
        }
        write!(
            f,
            " good_a={} good_b={}",
            u8::from(self.good.a),
            u8::from(self.good.b)
        )
    }
}

/// A boot environment bosun can read and change. Implementations do the I/O; the transitions
/// are the pure methods of [`BootState`].
pub trait BootEnv {
    /// Reads the current state (reads the device/file, writes nothing).
    fn read(&self) -> Result<BootState, BootEnvError>;

    /// Persists `state` (writes to disk, crash-safely where the medium allows). Refuses states
    /// that fail [`BootState::check`] before writing anything.
    fn write(&self, state: &BootState) -> Result<(), BootEnvError>;

    /// Schedules a trial boot of `slot` with `tries` attempts (reads, then writes to disk).
    fn set_trial(&self, slot: Slot, tries: u8) -> Result<BootState, BootEnvError> {
        let next = self.read()?.with_trial(slot, tries)?;
        self.write(&next)?;
        Ok(next)
    }

    /// Commits `slot` as the good primary (reads, then writes to disk).
    fn mark_good(&self, slot: Slot) -> Result<BootState, BootEnvError> {
        let next = self.read()?.committed(slot);
        self.write(&next)?;
        Ok(next)
    }

    /// Marks `slot` bad and makes the other slot primary (reads, then writes to disk).
    fn mark_bad(&self, slot: Slot) -> Result<BootState, BootEnvError> {
        let next = self.read()?.marked_bad(slot)?;
        self.write(&next)?;
        Ok(next)
    }
}

/// Errors of the boot environment backends. Each names the file or device involved.
#[derive(Debug, thiserror::Error)]
pub enum BootEnvError {
    /// Opening, reading, writing, syncing or renaming the environment file or device failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// The operation that failed (`open for writing`, `fsync`, …).
        op: &'static str,
        /// The file or device.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The GRUB environment block is malformed (size, header, line syntax) or the new one does not
    /// fit in 1024 bytes.
    #[error("GRUB environment block {path}: {source}")]
    Grub {
        /// The `grubenv` file.
        path: PathBuf,
        /// What is wrong with the block.
        #[source]
        source: grub::GrubEnvError,
    },
    /// No valid U-Boot environment copy (CRC, size), or the new environment does not fit.
    #[error("U-Boot environment {path}: {source}")]
    Uboot {
        /// The environment device or file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: uboot::UbootEnvError,
    },
    /// `fw_env.config` cannot be used (syntax, an unsupported layout).
    #[error("U-Boot environment config {path}: {source}")]
    UbootConfig {
        /// The `fw_env.config` file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: uboot::ConfigError,
    },
    /// The GPT cannot be read or updated (bad headers or CRCs, the slot partitions not found).
    #[error("GPT on {path}: {source}")]
    Gpt {
        /// The disk device or image.
        path: PathBuf,
        /// What is wrong with the table.
        #[source]
        source: gpt::GptError,
    },
    /// A `bosun_*` variable has a value outside the contract (hand-edited or written by something
    /// else).
    #[error("boot environment {path}: variable {name}={value:?} is invalid: expected {expected}")]
    Var {
        /// The environment file or device.
        path: PathBuf,
        /// The variable (`bosun_tries`, …).
        name: &'static str,
        /// Its value.
        value: String,
        /// What the contract allows.
        expected: &'static str,
    },
    /// The change would break the contract (no good fallback, trial of the primary, tries out of
    /// range); nothing was written.
    #[error("boot state transition refused: {0}")]
    Transition(#[from] TransitionError),
}

impl BootEnvError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        BootEnvError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

/// Names of the environment variables of the contract (GRUB and U-Boot).
pub mod vars {
    /// The slot booted when no trial is pending: `a` or `b` (default `a`).
    pub const PRIMARY: &str = "bosun_primary";
    /// The slot to try on the next boots, empty for none.
    pub const TRIAL: &str = "bosun_trial";
    /// Boot attempts left for the trial slot, canonical decimal `0`..=`15`.
    pub const TRIES: &str = "bosun_tries";
    /// Whether slot a is known good: `1` or `0` (default: whether it is primary).
    pub const GOOD_A: &str = "bosun_good_a";
    /// Whether slot b is known good: `1` or `0` (default: whether it is primary).
    pub const GOOD_B: &str = "bosun_good_b";
}

/// An invalid contract variable (pure; backends add the path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VarError {
    pub name: &'static str,
    pub value: String,
    pub expected: &'static str,
}

impl VarError {
    pub(crate) fn at(self, path: impl Into<PathBuf>) -> BootEnvError {
        BootEnvError::Var {
            path: path.into(),
            name: self.name,
            value: self.value,
            expected: self.expected,
        }
    }
}

/// Decodes a [`BootState`] from environment variables (pure). `get` returns a variable's value.
pub(crate) fn state_from_vars<'a>(
    get: impl Fn(&str) -> Option<&'a str>,
) -> Result<BootState, VarError> {
    let bad = |name: &'static str, value: &str, expected: &'static str| VarError {
        name,
        value: value.to_string(),
        expected,
    };
    let primary = match get(vars::PRIMARY) {
        None => Slot::A,
        Some(v) => v
            .parse()
            .map_err(|_| bad(vars::PRIMARY, v, "\"a\" or \"b\""))?,
    };
    let tries = match get(vars::TRIES) {
        None | Some("") => 0,
        Some(v) => match v.parse::<u8>() {
            // Canonical form only ("3", not "03" or "+3"): the bootloader scripts compare
            // strings, and must see the same number bosun does.
            Ok(n) if n <= MAX_TRIES && n.to_string() == v => n,
            _ => {
                return Err(bad(
                    vars::TRIES,
                    v,
                    "a decimal number 0..=15 without leading zeros",
                ))
            }
        },
    };
    let trial = match get(vars::TRIAL) {
        None | Some("") => None,
        Some(v) => Some(Trial {
            slot: v
                .parse()
                .map_err(|_| bad(vars::TRIAL, v, "\"a\", \"b\" or empty"))?,
            tries_left: tries,
        }),
    };
    let good = |slot: Slot, name: &'static str| match get(name) {
        None => Ok(slot == primary),
        Some("1") => Ok(true),
        Some("0") => Ok(false),
        Some(v) => Err(bad(name, v, "\"0\" or \"1\"")),
    };
    Ok(BootState {
        primary,
        trial,
        good: GoodSlots {
            a: good(Slot::A, vars::GOOD_A)?,
            b: good(Slot::B, vars::GOOD_B)?,
        },
    })
}

/// Encodes a [`BootState`] as the contract's variables (pure; always all five).
pub(crate) fn state_to_vars(state: &BootState) -> [(&'static str, String); 5] {
    let flag = |b: bool| if b { "1" } else { "0" }.to_string();
    [
        (vars::PRIMARY, state.primary.to_string()),
        (
            vars::TRIAL,
            state.trial.map(|t| t.slot.to_string()).unwrap_or_default(),
        ),
        (
            vars::TRIES,
            state.trial.map(|t| t.tries_left).unwrap_or(0).to_string(),
        ),
        (vars::GOOD_A, flag(state.good.a)),
        (vars::GOOD_B, flag(state.good.b)),
    ]
}

/// Sets `name=value` in an ordered variable list, replacing the first occurrence and dropping
/// duplicates, or appending (pure).
pub(crate) fn set_var(list: &mut Vec<(String, String)>, name: &str, value: &str) {
    match list.iter().position(|(k, _)| k == name) {
        Some(i) => {
            list[i].1 = value.to_string();
            let mut seen = 0;
            list.retain(|(k, _)| {
                if k == name {
                    seen += 1;
                    seen == 1
                } else {
                    true
                }
            });
        }
        None => list.push((name.to_string(), value.to_string())),
    }
}

/// A write of `data` at byte `offset` of `path`: one step of a backend's ordered write plan.
/// Plans are exposed so crash tests can apply only a prefix of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskWrite {
    /// The file or device written.
    pub path: PathBuf,
    /// Byte offset of the write.
    pub offset: u64,
    /// The bytes written.
    pub data: Vec<u8>,
}

/// Applies `writes` in order, each followed by fsync (writes to disk; never truncates).
pub(crate) fn apply_writes(writes: &[DiskWrite]) -> Result<(), BootEnvError> {
    use std::io::{Seek, SeekFrom, Write};
    for w in writes {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&w.path)
            .map_err(|e| BootEnvError::io("open for writing", &w.path, e))?;
        f.seek(SeekFrom::Start(w.offset))
            .map_err(|e| BootEnvError::io("seek", &w.path, e))?;
        f.write_all(&w.data)
            .map_err(|e| BootEnvError::io("write", &w.path, e))?;
        f.sync_all()
            .map_err(|e| BootEnvError::io("fsync", &w.path, e))?;
    }
    Ok(())
}

/// Reads exactly `len` bytes at `offset` of `path` (reads the device/file).
pub(crate) fn read_at(
    path: &std::path::Path,
    offset: u64,
    len: usize,
) -> Result<Vec<u8>, BootEnvError> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path).map_err(|e| BootEnvError::io("open", path, e))?;
    f.seek(SeekFrom::Start(offset))
        .map_err(|e| BootEnvError::io("seek", path, e))?;
    let mut buf = vec![0u8; len];
    f.read_exact(&mut buf)
        .map_err(|e| BootEnvError::io("read", path, e))?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_states() -> Vec<BootState> {
        let mut out = Vec::new();
        for primary in [Slot::A, Slot::B] {
            for a in [false, true] {
                for b in [false, true] {
                    let good = GoodSlots { a, b };
                    out.push(BootState {
                        primary,
                        trial: None,
                        good,
                    });
                    for tries_left in [0, 1, 3, MAX_TRIES] {
                        out.push(BootState {
                            primary,
                            trial: Some(Trial {
                                slot: primary.other(),
                                tries_left,
                            }),
                            good,
                        });
                    }
                }
            }
        }
        out
    }

    #[test]
    fn slot_display_and_parse_round_trip() {
        for s in [Slot::A, Slot::B] {
            assert_eq!(s.to_string().parse::<Slot>().unwrap(), s);
        }
        assert_eq!(Slot::A.to_string(), "a");
        assert!("c".parse::<Slot>().is_err());
        assert!(
            "A".parse::<Slot>().is_err(),
            "scripts compare lowercase only"
        );
        assert_eq!(serde_json::to_string(&Slot::B).unwrap(), "\"b\"");
        assert_eq!(serde_json::from_str::<Slot>("\"a\"").unwrap(), Slot::A);
        assert!("".parse::<Slot>().is_err());
    }

    #[test]
    fn vars_round_trip_for_every_state() {
        for s in all_states() {
            let vars = state_to_vars(&s);
            let decoded =
                state_from_vars(|n| vars.iter().find(|(k, _)| *k == n).map(|(_, v)| v.as_str()))
                    .unwrap();
            assert_eq!(decoded, s);
        }
    }

    #[test]
    fn absent_vars_mean_initial_state() {
        assert_eq!(state_from_vars(|_| None).unwrap(), BootState::initial());
        let only_b = state_from_vars(|n| (n == vars::PRIMARY).then_some("b")).unwrap();
        assert_eq!(only_b.primary, Slot::B);
        assert_eq!(only_b.good, GoodSlots { a: false, b: true });
    }

    #[test]
    fn invalid_vars_are_named() {
        let e = state_from_vars(|n| (n == vars::TRIES).then_some("16")).unwrap_err();
        assert_eq!(e.name, vars::TRIES);
        for tries in ["+1", "01", " 1", "1.0", "-1"] {
            let e = state_from_vars(|n| (n == vars::TRIES).then_some(tries)).unwrap_err();
            assert_eq!(e.name, vars::TRIES, "{tries:?}");
        }
        let e = state_from_vars(|n| (n == vars::PRIMARY).then_some("c")).unwrap_err();
        assert_eq!(e.name, vars::PRIMARY);
        let e = state_from_vars(|n| (n == vars::GOOD_B).then_some("yes")).unwrap_err();
        assert_eq!(e.name, vars::GOOD_B);
    }

    #[test]
    fn upgrade_cycle_commit() {
        let s = BootState::initial();
        let t = s.with_trial(Slot::B, 3).unwrap();
        assert_eq!(t.next_boot(), Slot::B);
        assert!(!t.is_good(Slot::B));
        t.check().unwrap();
        let c = t.committed(Slot::B);
        assert_eq!(
            c,
            BootState {
                primary: Slot::B,
                trial: None,
                good: GoodSlots { a: true, b: true }
            }
        );
    }

    #[test]
    fn upgrade_cycle_rollback() {
        let t = BootState::initial().with_trial(Slot::B, 2).unwrap();
        let r = t.marked_bad(Slot::B).unwrap();
        assert_eq!(r, BootState::initial());
        assert_eq!(r.next_boot(), Slot::A);
    }

    #[test]
    fn exhausted_trial_boots_primary() {
        let mut t = BootState::initial().with_trial(Slot::B, 1).unwrap();
        t.trial.as_mut().unwrap().tries_left = 0;
        assert_eq!(t.next_boot(), Slot::A);
    }

    #[test]
    fn refused_transitions() {
        let s = BootState::initial();
        assert_eq!(
            s.with_trial(Slot::A, 3),
            Err(TransitionError::TrialOfPrimary(Slot::A))
        );
        assert_eq!(
            s.with_trial(Slot::B, 0),
            Err(TransitionError::TriesOutOfRange(0))
        );
        assert_eq!(
            s.with_trial(Slot::B, 16),
            Err(TransitionError::TriesOutOfRange(16))
        );
        assert_eq!(
            s.marked_bad(Slot::A),
            Err(TransitionError::NoGoodFallback {
                slot: Slot::A,
                other: Slot::B
            })
        );
        let t = s.with_trial(Slot::B, 3).unwrap();
        assert!(t.marked_bad(Slot::A).is_err());
    }

    #[test]
    fn transitions_preserve_invariants() {
        for s in all_states().into_iter().filter(|s| s.check().is_ok()) {
            for slot in [Slot::A, Slot::B] {
                if let Ok(n) = s.with_trial(slot, 2) {
                    n.check().unwrap();
                }
                if let Ok(n) = s.marked_bad(slot) {
                    n.check().unwrap();
                    assert!(!n.is_good(slot));
                }
                let c = s.committed(slot);
                c.check().unwrap();
                assert_eq!(c.primary, slot);
            }
        }
    }

    #[test]
    fn set_var_replaces_first_and_drops_duplicates() {
        let mut l = vec![
            ("x".to_string(), "1".to_string()),
            ("y".to_string(), "2".to_string()),
            ("x".to_string(), "3".to_string()),
        ];
        set_var(&mut l, "x", "9");
        assert_eq!(
            l,
            vec![
                ("x".to_string(), "9".to_string()),
                ("y".to_string(), "2".to_string())
            ]
        );
        set_var(&mut l, "z", "");
        assert_eq!(l.len(), 3);
    }
}
