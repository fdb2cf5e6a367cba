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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredFile {
    pub path: String,
    pub content: Vec<u8>,
    /// Permission bits only (no file type bits).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Never print this file's content (token, passwords, wifi keys, non-world-readable files).
    pub secret: bool,
    pub source: FileSource,
}

/// A side effect on the live system. Run in order after files land; with a `--root` other than
/// `/` they are recorded, not run.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Effect {
    SetHostname {
        hostname: String,
    },
    /// `sysctl --load FILE` (or `sysctl --system`).
    SysctlLoad {
        file: String,
    },
    /// `modprobe MODULE PARAMS…` (argv, no shell).
    Modprobe {
        module: String,
        params: Vec<String>,
    },
    DaemonReload,
    RestartUnit {
        unit: String,
    },
    ReloadUnit {
        unit: String,
    },
    /// `systemctl enable UNIT`: the unit starts at boot (k3s's role unit).
    EnableUnit {
        unit: String,
    },
    /// `systemctl disable --now UNIT`: stopped, and not started at boot (the k3s unit of the
    /// role a node left).
    DisableUnit {
        unit: String,
    },
    /// Shell command lines run once per boot, in a phase.
    RunCommands {
        phase: CommandPhase,
        commands: Vec<String>,
    },
}

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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EffectRule {
    pub effect: Effect,
    pub trigger: Trigger,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DesiredState {
    /// Keyed by absolute path.
    pub files: BTreeMap<String, DesiredFile>,
    /// In execution order.
    pub effects: Vec<EffectRule>,
}
