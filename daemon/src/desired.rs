//! The desired state of a node: every file bosun manages (exact bytes, mode, owner) plus the
//! effects to run when those files change. Produced by rendering (pure), consumed by planning.
//!
//! Paths are absolute paths on the node (`/etc/hostname`); they are resolved under `--root`
//! only by the filesystem layer.

use std::collections::BTreeMap;

/// Why a file is managed: which config key produced it. Shown in plans.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FileSource {
    /// The config key, e.g. `write_files`, `hostname`, `k3os.sysctl`.
    pub key: String,
    /// `file:line:col` of the value, when known.
    pub origin: Option<String>,
}

/// One managed file as it must be on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredFile {
    /// Absolute node path (`/etc/hostname`).
    pub path: String,
    /// The exact bytes.
    pub content: Vec<u8>,
    /// Permission bits only (no file type bits).
    pub mode: u32,
    /// Owner user id, resolved through the root's passwd.
    pub uid: u32,
    /// Owner group id, resolved through the root's group.
    pub gid: u32,
    /// Never print this file's content (token, passwords, wifi keys, non-world-readable files).
    pub secret: bool,
    /// The config key (and position) that produced it.
    pub source: FileSource,
}

/// A side effect on the live system. Run in order after files land; with a `--root` other than
/// `/` they are recorded, not run.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Effect {
    /// `hostname NAME`: sets the running kernel's hostname.
    SetHostname {
        /// The new hostname.
        hostname: String,
    },
    /// `sysctl --load FILE` (or `sysctl --system`).
    SysctlLoad {
        /// The sysctl file to load.
        file: String,
    },
    /// `modprobe MODULE PARAMS…` (argv, no shell).
    Modprobe {
        /// The kernel module.
        module: String,
        /// Its parameters (`name=value`), passed as arguments.
        params: Vec<String>,
    },
    /// `systemctl daemon-reload` (after a unit drop-in changed).
    DaemonReload,
    /// `systemctl restart UNIT`.
    RestartUnit {
        /// The unit.
        unit: String,
    },
    /// `systemctl reload UNIT`.
    ReloadUnit {
        /// The unit.
        unit: String,
    },
    /// `systemctl enable UNIT`: the unit starts at boot (k3s's role unit).
    EnableUnit {
        /// The unit.
        unit: String,
    },
    /// `systemctl disable --now UNIT`: stopped, and not started at boot (the k3s unit of the
    /// role a node left).
    DisableUnit {
        /// The unit.
        unit: String,
    },
    /// Shell command lines run once per boot, in a phase.
    RunCommands {
        /// Which of `init_cmd`, `boot_cmd`, `run_cmd` they come from.
        phase: CommandPhase,
        /// The command lines, each run with `sh -c`, in order.
        commands: Vec<String>,
    },
}

/// The phase of a boot in which `RunCommands` run (k3os's `init_cmd`, `boot_cmd`, `run_cmd`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandPhase {
    /// `init_cmd`: before the first apply of a boot.
    Init,
    /// `boot_cmd`: before the first apply of a boot, after init.
    Boot,
    /// `run_cmd`: after the first successful apply of a boot.
    Run,
}

/// When an effect fires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// When any of these paths is created, updated or deleted by the apply.
    Changed(Vec<String>),
    /// When any path below this directory (absolute, no trailing `/`) is created, updated or
    /// deleted by the apply, including files no longer managed (pruned).
    ChangedUnder(String),
    /// Once per boot (boot id) in the given phase.
    OncePerBoot,
}

/// An effect and when it fires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EffectRule {
    /// What to run.
    pub effect: Effect,
    /// When to run it.
    pub trigger: Trigger,
}

/// Everything rendering wants on the node: the files and the effects they trigger.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DesiredState {
    /// Keyed by absolute path.
    pub files: BTreeMap<String, DesiredFile>,
    /// In execution order.
    pub effects: Vec<EffectRule>,
}
