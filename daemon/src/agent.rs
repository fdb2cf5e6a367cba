//! The local agent config: `/etc/bosun/agent.yaml` plus drop-ins `/etc/bosun/agent.d/*.yaml`.
//!
//! It holds the node's trust roots (repo URL and ref, allowed signers, OpenPGP keys), the poll
//! timing, where state lives and what the daemon exposes. It is never taken from Git.
//!
//! Three stages, as in zincati:
//! 1. Each file is parsed on its own into [`AgentFile`] (every field optional, unknown keys
//!    refused) so a typo is reported with the file name and line.
//! 2. The files are merged ([`AgentFile::merge`]): the main file first, then drop-ins in file
//!    name order; a later file wins key by key (sections merge field by field, scalars and
//!    lists replace). The merge is typed, so YAML 1.1 spellings such as `off` stay strings.
//! 3. The merged fragment is turned into [`AgentConfig`], whose types rule out bad values
//!    (durations parsed, URL scheme checked, metrics address loopback unless allowed).
//!
//! Parsing ([`parse_files`]) takes text, not paths; only [`load`] reads the disk.
//! `schemas/agent.schema.json` is generated from [`AgentFile`] ([`schema_text`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::source::{SignersSource, SourceConfig, VerifyConfig, VerifyMode};

/// Main file, relative to the root.
pub const AGENT_FILE: &str = "etc/bosun/agent.yaml";
/// Drop-in directory, relative to the root.
pub const DROP_IN_DIR: &str = "etc/bosun/agent.d";

/// One agent config file as written (stage 1). Every field is optional so a drop-in can set
/// just one key.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "bosun agent config (/etc/bosun/agent.yaml, agent.d/*.yaml)")]
pub struct AgentFile {
    /// Where config commits come from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceSection>,
    /// Poll interval: seconds as an integer, or a duration like `60s`, `5m`, `1h`. Default 60s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<DurationValue>,
    /// Random spread added to each interval, in percent of it (0–50). Default 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter_percent: Option<u32>,
    /// Node name selecting `groups/` and `nodes/<name>.yaml`. Default: the system hostname.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// bosun's state (journal, managed set, git cache, status). Default `/var/lib/bosun`
    /// (under `root`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_dir: Option<PathBuf>,
    /// Every node path is resolved under this directory. Default `/`. Effects (restarts,
    /// sysctl) only run when it is `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<PathBuf>,
    /// Commit signature checks and anti-rollback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<VerificationSection>,
    /// The login user receiving `ssh_authorized_keys` and `k3os.password`. Default `rancher`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_user: Option<String>,
    /// Key servers for `github:USER` / `gitlab:USER` sources.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<KeysSection>,
    /// Prometheus metrics endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MetricsSection>,
    /// Drift detection: revert manual edits of managed files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<DriftSection>,
    /// A/B OS upgrade devices and bootloader (used by the upgrade actor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade: Option<UpgradeSection>,
    /// Where fleet rollout locks live (Kubernetes Leases or a FleetLock server) and how the
    /// node reaches its cluster (drains, Node labels). Never from Git.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coordination: Option<crate::rollout::coordination::CoordinationSection>,
}

/// `source:`: the Git repository config commits come from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceSection {
    /// `https://`, `ssh://` (or `user@host:path`), `git://` or `file://` URL. Required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Branch, tag or full commit id. Default `main`.
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// Directory of the config repo inside the Git repo.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subdir: Option<String>,
    /// Shallow fetch depth (network transports only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depth: Option<u32>,
    /// Private key for `ssh://` remotes (no passphrase).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_key_file: Option<PathBuf>,
    /// OpenSSH known_hosts file pinning the SSH server's host key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_known_hosts: Option<PathBuf>,
    /// File holding an HTTPS token (read at every fetch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// Username sent with the token. Default `x-access-token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_username: Option<String>,
    /// PEM bundle of CA certificates trusted for an `https://` source, on top of the Mozilla
    /// roots built into bosun.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// The most one fetch may download (bytes, or `64MiB`, `1GiB`); a commit that needs more
    /// is refused before it can exhaust memory. At least 1 MiB. Default `128MiB`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_fetch_bytes: Option<SizeValue>,
}

/// Signature verification mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ModeValue {
    /// Apply unsigned commits (anti-rollback still applies).
    Off,
    /// The head commit must be signed by a trusted key.
    Head,
}

/// `verification:`: which commits are trusted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VerificationSection {
    /// `off` (default) or `head`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<ModeValue>,
    /// git `allowed_signers` file trusting SSH keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_signers: Option<PathBuf>,
    /// Files holding armored OpenPGP public keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub openpgp_keys: Option<Vec<PathBuf>>,
    /// Accept commits that do not descend from the last applied one. Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_history_rewrite: Option<bool>,
}

/// `keys:`: where `github:USER` and `gitlab:USER` ssh key sources are fetched.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KeysSection {
    /// Base URL of `github:USER` (`<base>/USER.keys`). Default `https://github.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub github_base: Option<String>,
    /// Base URL of `gitlab:USER`. Default `https://gitlab.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gitlab_base: Option<String>,
}

/// `metrics:`: the Prometheus endpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    /// Serve `/metrics`. Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// `ADDRESS:PORT` (`localhost:PORT` is 127.0.0.1). Default `127.0.0.1:9101`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// Allow a non-loopback listen address (metrics have no authentication). Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_non_loopback: Option<bool>,
}

/// `drift:`: reverting manual edits of managed files.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DriftSection {
    /// Watch managed files and revert manual changes. Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Full re-plan of the last applied commit this often. Default 10m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resync_interval: Option<DurationValue>,
}

/// Bootloader kinds of the A/B upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum BootloaderKind {
    /// A GRUB environment block (`grubenv`) with `boot/grub.cfg`.
    Grub,
    /// A U-Boot environment described by `fw_env.config`, with bosun's `boot/boot.scr.txt` script.
    Uboot,
    /// ChromeOS/gptprio attribute bits on the slot partitions.
    Gpt,
}

/// A/B upgrade settings. Accepted and validated here; consumed by the upgrade actor.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpgradeSection {
    /// Slot devices (block devices, or files in tests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slots: Option<SlotsSection>,
    /// Which boot environment holds the A/B state: `grub`, `uboot` or `gpt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootloader: Option<BootloaderKind>,
    /// GRUB environment block file (bootloader `grub`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grubenv: Option<PathBuf>,
    /// `fw_env.config` describing the U-Boot environment (bootloader `uboot`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uboot_env_config: Option<PathBuf>,
    /// Disk holding the GPT with the slot partitions (bootloader `gpt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpt_disk: Option<PathBuf>,
    /// Kernel command line file the booted slot is read from. Default `/proc/cmdline`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmdline: Option<PathBuf>,
    /// Partition numbers of slots a and b on `gpt_disk` (bootloader `gpt`), e.g. `[2, 3]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpt_partitions: Option<Vec<u32>>,
    /// Command that reboots the node. Default `systemctl reboot`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reboot_command: Option<Vec<String>>,
}

/// The two slot devices of an A/B upgrade.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SlotsSection {
    /// Slot a device (or file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub a: Option<PathBuf>,
    /// Slot b device (or file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub b: Option<PathBuf>,
}

/// A duration: whole seconds, or a number with a unit `ms`, `s`, `m`, `h` (`90s`, `5m`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum DurationValue {
    /// Whole seconds.
    Seconds(u64),
    /// A number with a unit: `250ms`, `30s`, `5m`, `1h`.
    Text(String),
}

impl DurationValue {
    /// Parses the value (pure).
    pub fn to_duration(&self) -> Result<Duration, String> {
        match self {
            DurationValue::Seconds(s) => Ok(Duration::from_secs(*s)),
            DurationValue::Text(t) => parse_duration(t),
        }
    }
}

/// Parses `250ms`, `30s`, `5m`, `1h` or a bare number of seconds (pure).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (expected e.g. 30s, 5m, 1h, 500ms)"))?;
    let d = match unit.trim() {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        other => {
            return Err(format!(
                "{text:?}: unknown unit {other:?} (expected ms, s, m or h)"
            ))
        }
    };
    Ok(d)
}

/// A size: bytes, or a number with a unit `KiB`, `MiB`, `GiB` (`K`, `M`, `G` mean the same).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum SizeValue {
    /// A plain number of bytes.
    Bytes(u64),
    /// A number with a unit, e.g. `128MiB`.
    Text(String),
}

impl SizeValue {
    /// Parses the value (pure).
    pub fn to_bytes(&self) -> Result<u64, String> {
        match self {
            SizeValue::Bytes(n) => Ok(*n),
            SizeValue::Text(t) => parse_size(t),
        }
    }
}

/// Parses `512`, `64KiB`, `128MiB`, `1GiB` (or `K`, `M`, `G`: powers of 1024) (pure).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{text:?} is not a size (expected bytes, or e.g. 64MiB, 1GiB)"))?;
    let shift = match unit.trim() {
        "" | "B" => 0,
        "K" | "KiB" => 10,
        "M" | "MiB" => 20,
        "G" | "GiB" => 30,
        other => {
            return Err(format!(
                "{text:?}: unknown unit {other:?} (expected KiB, MiB or GiB)"
            ))
        }
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// The validated agent config (stage 3).
#[derive(Debug, Clone, PartialEq)]
pub struct AgentConfig {
    /// Where config commits come from.
    pub source: SourceConfig,
    /// Signature checks and anti-rollback.
    pub verify: VerifyConfig,
    /// Time between polls (before jitter).
    pub interval: Duration,
    /// Random spread added to each interval, in percent of it (0–50).
    pub jitter_percent: u32,
    /// The node name: selects groups and `nodes/<name>.yaml`.
    pub node_name: String,
    /// bosun's state directory, as a host path (default `<root>/var/lib/bosun`).
    pub state_dir: PathBuf,
    /// Every node path is resolved under it; effects run only when it is `/`.
    pub root: PathBuf,
    /// The login user receiving keys and the password.
    pub ssh_user: String,
    /// Base URL of `github:USER` key sources.
    pub github_base: String,
    /// Base URL of `gitlab:USER` key sources.
    pub gitlab_base: String,
    /// `None`: metrics disabled.
    pub metrics_listen: Option<SocketAddr>,
    /// Watch managed files and revert manual changes.
    pub drift_enabled: bool,
    /// Time between full re-plans of the last applied commit.
    pub resync_interval: Duration,
    /// A/B upgrade settings, passed through to the upgrade actor; `None`: no A/B upgrades.
    pub upgrade: Option<UpgradeSection>,
    /// Fleet rollout coordination (locks, drains, Node labels).
    pub coordination: crate::rollout::coordination::CoordinationConfig,
    /// The files this config was read from, in merge order.
    pub files: Vec<PathBuf>,
}

/// Default poll interval.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
/// Default full re-plan interval.
pub const DEFAULT_RESYNC: Duration = Duration::from_secs(600);
/// Default metrics address: loopback only (the endpoint has no authentication).
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9101";

/// Why the agent config could not be loaded. Each names the file(s).
#[derive(Debug, thiserror::Error)]
pub enum AgentConfigError {
    /// A config file could not be read.
    #[error("agent config {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file is not valid YAML for the agent config (unknown key, wrong type), with line and
    /// column.
    #[error("agent config {}: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// The merged config has a bad value (missing URL, bad scheme, duration, address, jitter,
    /// bootloader settings).
    #[error("agent config ({files}): {field}: {message}")]
    Invalid {
        /// The files the config was merged from, comma-separated.
        files: String,
        /// The offending key (`source.url`, `metrics.listen`, …).
        field: &'static str,
        /// What is wrong and what is expected.
        message: String,
    },
}

/// Node-local facts the defaults depend on (passed in, so validation stays pure).
#[derive(Debug, Clone)]
pub struct Defaults {
    /// The `--root` the config was found under (default for `root`).
    pub root: PathBuf,
    /// The system hostname (default for `node_name`).
    pub hostname: String,
}

/// Parses and merges config files given as `(path, text)` in merge order, then validates
/// (pure: the paths only name the files in errors and resolve relative trust-root paths).
pub fn parse_files(
    files: &[(PathBuf, String)],
    defaults: &Defaults,
) -> Result<AgentConfig, AgentConfigError> {
    let mut merged = AgentFile::default();
    for (path, text) in files {
        if text.trim().is_empty() {
            continue;
        }
        let file: AgentFile =
            serde_saphyr::from_str(text).map_err(|e| AgentConfigError::Parse {
                path: path.clone(),
                message: e.to_string(),
            })?;
        merged.merge(file);
    }
    let names = files
        .iter()
        .map(|(p, _)| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    validate(
        merged,
        defaults,
        files.iter().map(|(p, _)| p.clone()).collect(),
        &names,
    )
}

/// `later` wins when it sets a value.
fn over<T>(base: &mut Option<T>, later: Option<T>) {
    if later.is_some() {
        *base = later;
    }
}

/// Sections merge field by field.
fn section<T: Default>(base: &mut Option<T>, later: Option<T>, merge: fn(&mut T, T)) {
    if let Some(l) = later {
        merge(base.get_or_insert_with(T::default), l);
    }
}

impl AgentFile {
    /// Merges a later file over this one (pure): maps merge key by key, a value set in
    /// `later` replaces this one's (lists replace as a whole).
    pub fn merge(&mut self, later: AgentFile) {
        section(&mut self.source, later.source, |b, l| {
            over(&mut b.url, l.url);
            over(&mut b.reference, l.reference);
            over(&mut b.subdir, l.subdir);
            over(&mut b.depth, l.depth);
            over(&mut b.ssh_key_file, l.ssh_key_file);
            over(&mut b.ssh_known_hosts, l.ssh_known_hosts);
            over(&mut b.token_file, l.token_file);
            over(&mut b.token_username, l.token_username);
            over(&mut b.ca_file, l.ca_file);
            over(&mut b.max_fetch_bytes, l.max_fetch_bytes);
        });
        over(&mut self.interval, later.interval);
        over(&mut self.jitter_percent, later.jitter_percent);
        over(&mut self.node_name, later.node_name);
        over(&mut self.state_dir, later.state_dir);
        over(&mut self.root, later.root);
        section(&mut self.verification, later.verification, |b, l| {
            over(&mut b.mode, l.mode);
            over(&mut b.allowed_signers, l.allowed_signers);
            over(&mut b.openpgp_keys, l.openpgp_keys);
            over(&mut b.allow_history_rewrite, l.allow_history_rewrite);
        });
        over(&mut self.ssh_user, later.ssh_user);
        section(&mut self.keys, later.keys, |b, l| {
            over(&mut b.github_base, l.github_base);
            over(&mut b.gitlab_base, l.gitlab_base);
        });
        section(&mut self.metrics, later.metrics, |b, l| {
            over(&mut b.enabled, l.enabled);
            over(&mut b.listen, l.listen);
            over(&mut b.allow_non_loopback, l.allow_non_loopback);
        });
        section(&mut self.drift, later.drift, |b, l| {
            over(&mut b.enabled, l.enabled);
            over(&mut b.resync_interval, l.resync_interval);
        });
        section(&mut self.coordination, later.coordination, |b, l| {
            b.merge(l)
        });
        section(&mut self.upgrade, later.upgrade, |b, l| {
            section(&mut b.slots, l.slots, |b, l| {
                over(&mut b.a, l.a);
                over(&mut b.b, l.b);
            });
            over(&mut b.bootloader, l.bootloader);
            over(&mut b.grubenv, l.grubenv);
            over(&mut b.uboot_env_config, l.uboot_env_config);
            over(&mut b.gpt_disk, l.gpt_disk);
            over(&mut b.cmdline, l.cmdline);
            over(&mut b.gpt_partitions, l.gpt_partitions);
            over(&mut b.reboot_command, l.reboot_command);
        });
    }
}

/// Builds [`AgentConfigError::Invalid`] errors naming the files the config was read from.
struct Invalid<'a> {
    files: &'a str,
}

impl Invalid<'_> {
    /// The error for `field`, saying what is wrong with it.
    fn at(&self, field: &'static str, message: impl Into<String>) -> AgentConfigError {
        AgentConfigError::Invalid {
            files: self.files.to_string(),
            field,
            message: message.into(),
        }
    }
}

/// Stage 3: the merged fragment `f` → [`AgentConfig`], section by section, stopping at the
/// first bad value. Reads the OpenPGP key files named in `verification`; writes nothing.
fn validate(
    f: AgentFile,
    defaults: &Defaults,
    files: Vec<PathBuf>,
    names: &str,
) -> Result<AgentConfig, AgentConfigError> {
    let invalid = Invalid { files: names };
    let root = f.root.clone().unwrap_or_else(|| defaults.root.clone());
    if !root.is_absolute() {
        return Err(invalid.at("root", format!("{} is not absolute", root.display())));
    }
    let state_dir = f
        .state_dir
        .clone()
        .unwrap_or_else(|| root.join("var/lib/bosun"));
    let source = validate_source(f.source.clone().unwrap_or_default(), &state_dir, &invalid)?;
    let verify = validate_verification(f.verification.clone().unwrap_or_default(), &invalid)?;
    let (interval, jitter_percent) = validate_timing(&f, &invalid)?;
    let (node_name, ssh_user) = validate_identity(&f, defaults, &invalid)?;
    let (github_base, gitlab_base) = validate_keys(f.keys.clone().unwrap_or_default(), &invalid)?;
    let metrics_listen = validate_metrics(f.metrics.clone().unwrap_or_default(), &invalid)?;
    let d = f.drift.clone().unwrap_or_default();
    let resync_interval = validate_resync(&d, &invalid)?;
    if let Some(u) = &f.upgrade {
        validate_upgrade(u, &invalid)?;
    }
    let coordination = crate::rollout::coordination::validate(
        &f.coordination.clone().unwrap_or_default(),
        &node_name,
    )
    .map_err(|(field, message)| invalid.at(field, message))?;
    Ok(AgentConfig {
        source,
        verify,
        interval,
        jitter_percent,
        node_name,
        state_dir,
        root,
        ssh_user,
        github_base,
        gitlab_base,
        metrics_listen,
        drift_enabled: d.enabled.unwrap_or(true),
        resync_interval,
        upgrade: f.upgrade,
        coordination,
        files,
    })
}

/// `source`: `url` is required and must be a Git URL; `ref` defaults to `main`; `subdir` is
/// relative without `..`; `depth` is at least 1; `max_fetch_bytes` is a size of at least
/// 1 MiB. The Git cache lives under `state_dir`.
fn validate_source(
    src: SourceSection,
    state_dir: &Path,
    invalid: &Invalid,
) -> Result<SourceConfig, AgentConfigError> {
    let url = src
        .url
        .clone()
        .ok_or_else(|| invalid.at("source.url", "is required (the config repo to follow)"))?;
    check_url(&url).map_err(|m| invalid.at("source.url", m))?;
    let reference = src.reference.clone().unwrap_or_else(|| "main".into());
    if let Some(sub) = &src.subdir {
        if sub.starts_with('/') || sub.split('/').any(|c| c == "..") {
            return Err(invalid.at(
                "source.subdir",
                format!("{sub:?} must be a relative path without `..`"),
            ));
        }
    }
    if src.depth == Some(0) {
        return Err(invalid.at(
            "source.depth",
            "must be at least 1 (omit it for full history)",
        ));
    }
    let max_fetch_bytes = match &src.max_fetch_bytes {
        None => crate::source::DEFAULT_MAX_FETCH_BYTES,
        Some(v) => {
            let n = v
                .to_bytes()
                .map_err(|m| invalid.at("source.max_fetch_bytes", m))?;
            if n < 1 << 20 {
                return Err(invalid.at(
                    "source.max_fetch_bytes",
                    format!("{n} bytes is less than 1 MiB; even a small config repo needs more"),
                ));
            }
            n
        }
    };
    Ok(SourceConfig {
        url,
        reference,
        subdir: src.subdir,
        depth: src.depth,
        ssh_key_file: src.ssh_key_file,
        ssh_known_hosts: src.ssh_known_hosts,
        token_file: src.token_file,
        token_username: src.token_username,
        ca_file: src.ca_file,
        cache_dir: state_dir.join("git-cache"),
        max_fetch_bytes,
    })
}

/// `verification`: mode `head` needs a trust root (allowed_signers or OpenPGP keys). Reads
/// each OpenPGP key file now: trust roots are read once at start-up, and a missing key file is
/// a config error.
fn validate_verification(
    v: VerificationSection,
    invalid: &Invalid,
) -> Result<VerifyConfig, AgentConfigError> {
    let mode = match v.mode.unwrap_or(ModeValue::Off) {
        ModeValue::Off => VerifyMode::Off,
        ModeValue::Head => VerifyMode::Head,
    };
    if mode == VerifyMode::Head
        && v.allowed_signers.is_none()
        && v.openpgp_keys.as_ref().is_none_or(Vec::is_empty)
    {
        return Err(invalid.at(
            "verification",
            "mode is head but neither allowed_signers nor openpgp_keys is set",
        ));
    }
    let mut openpgp_keys = Vec::new();
    for p in v.openpgp_keys.unwrap_or_default() {
        let text = std::fs::read_to_string(&p).map_err(|e| {
            invalid.at("verification.openpgp_keys", format!("{}: {e}", p.display()))
        })?;
        openpgp_keys.push(text);
    }
    Ok(VerifyConfig {
        mode,
        allowed_signers: v.allowed_signers.map(SignersSource::Path),
        openpgp_keys,
        allow_history_rewrite: v.allow_history_rewrite.unwrap_or(false),
    })
}

/// `interval` (greater than zero, default [`DEFAULT_INTERVAL`]) and `jitter_percent` (at most
/// 50, default 10).
fn validate_timing(f: &AgentFile, invalid: &Invalid) -> Result<(Duration, u32), AgentConfigError> {
    let interval = match &f.interval {
        Some(d) => d.to_duration().map_err(|m| invalid.at("interval", m))?,
        None => DEFAULT_INTERVAL,
    };
    if interval.is_zero() {
        return Err(invalid.at("interval", "must be greater than zero"));
    }
    let jitter_percent = f.jitter_percent.unwrap_or(10);
    if jitter_percent > 50 {
        return Err(invalid.at("jitter_percent", format!("{jitter_percent} is over 50")));
    }
    Ok((interval, jitter_percent))
}

/// `node_name` (default: the hostname) and `ssh_user` (default `rancher`; never root).
fn validate_identity(
    f: &AgentFile,
    defaults: &Defaults,
    invalid: &Invalid,
) -> Result<(String, String), AgentConfigError> {
    let node_name = f
        .node_name
        .clone()
        .unwrap_or_else(|| defaults.hostname.clone());
    if node_name.is_empty() || node_name.contains('/') {
        return Err(invalid.at("node_name", format!("{node_name:?} is not a host name")));
    }
    let ssh_user = f.ssh_user.clone().unwrap_or_else(|| "rancher".into());
    if ssh_user == "root" || ssh_user.is_empty() {
        return Err(invalid.at(
            "ssh_user",
            format!("{ssh_user:?}: bosun never manages root's keys"),
        ));
    }
    Ok((node_name, ssh_user))
}

/// `keys`: the GitHub and GitLab base URLs (http(s), trailing `/` dropped).
fn validate_keys(
    keys: KeysSection,
    invalid: &Invalid,
) -> Result<(String, String), AgentConfigError> {
    let base = |v: Option<String>, d: &str, field| -> Result<String, AgentConfigError> {
        let s = v.unwrap_or_else(|| d.to_string());
        if !(s.starts_with("https://") || s.starts_with("http://")) {
            return Err(invalid.at(field, format!("{s:?} is not an http(s) URL")));
        }
        Ok(s.trim_end_matches('/').to_string())
    };
    let github_base = base(keys.github_base, "https://github.com", "keys.github_base")?;
    let gitlab_base = base(keys.gitlab_base, "https://gitlab.com", "keys.gitlab_base")?;
    Ok((github_base, gitlab_base))
}

/// `metrics`: the listen address when enabled (`None` when disabled); loopback only unless
/// `allow_non_loopback`, since metrics have no authentication.
fn validate_metrics(
    m: MetricsSection,
    invalid: &Invalid,
) -> Result<Option<SocketAddr>, AgentConfigError> {
    if !m.enabled.unwrap_or(true) {
        return Ok(None);
    }
    let text = m
        .listen
        .clone()
        .unwrap_or_else(|| DEFAULT_METRICS_LISTEN.into());
    let addr = parse_listen(&text).ok_or_else(|| {
        invalid.at(
            "metrics.listen",
            format!("{text:?} is not ADDRESS:PORT (e.g. 127.0.0.1:9101 or localhost:9101)"),
        )
    })?;
    if !addr.ip().is_loopback() && !m.allow_non_loopback.unwrap_or(false) {
        return Err(invalid.at(
            "metrics.listen",
            format!(
                "{addr} is not a loopback address; metrics have no authentication \
                 (set metrics.allow_non_loopback: true to expose them anyway)"
            ),
        ));
    }
    Ok(Some(addr))
}

/// A listen address: `IP:PORT`, `[IPv6]:PORT` or `localhost:PORT` (127.0.0.1, never looked up
/// in DNS). An IPv4-mapped IPv6 address (`[::ffff:127.0.0.1]`) becomes its IPv4 address, so
/// loopback is recognised and the socket binds where the spelling says. Pure.
fn parse_listen(text: &str) -> Option<SocketAddr> {
    let addr = match text.rsplit_once(':') {
        Some((host, port)) if host.eq_ignore_ascii_case("localhost") => {
            SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, port.parse::<u16>().ok()?))
        }
        _ => text.parse().ok()?,
    };
    Some(match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::from((v4, v6.port())),
            None => addr,
        },
        v4 => v4,
    })
}

/// `drift.resync_interval`: greater than zero, default [`DEFAULT_RESYNC`].
fn validate_resync(d: &DriftSection, invalid: &Invalid) -> Result<Duration, AgentConfigError> {
    let resync_interval = match &d.resync_interval {
        Some(v) => v
            .to_duration()
            .map_err(|m| invalid.at("drift.resync_interval", m))?,
        None => DEFAULT_RESYNC,
    };
    if resync_interval.is_zero() {
        return Err(invalid.at("drift.resync_interval", "must be greater than zero"));
    }
    Ok(resync_interval)
}

/// `upgrade`: two different slot devices; each bootloader's required settings; a reboot
/// command that names a program. The section is kept as written.
fn validate_upgrade(u: &UpgradeSection, invalid: &Invalid) -> Result<(), AgentConfigError> {
    if let Some(slots) = &u.slots {
        if slots.a.is_some() != slots.b.is_some() || slots.a == slots.b {
            return Err(invalid.at("upgrade.slots", "needs two different devices a and b"));
        }
    }
    if u.bootloader == Some(BootloaderKind::Gpt)
        && (u.gpt_disk.is_none() || u.gpt_partitions.as_ref().is_none_or(|p| p.len() != 2))
    {
        return Err(invalid.at(
            "upgrade.gpt_partitions",
            "bootloader: gpt needs gpt_disk and two partition numbers [a, b]",
        ));
    }
    if u.bootloader == Some(BootloaderKind::Uboot) && u.uboot_env_config.is_none() {
        return Err(invalid.at(
            "upgrade.uboot_env_config",
            "is required with bootloader: uboot",
        ));
    }
    if u.reboot_command.as_ref().is_some_and(|c| c.is_empty()) {
        return Err(invalid.at("upgrade.reboot_command", "must name a program"));
    }
    if u.bootloader == Some(BootloaderKind::Grub) && u.grubenv.is_none() {
        return Err(invalid.at("upgrade.grubenv", "is required with bootloader: grub"));
    }
    Ok(())
}

fn check_url(url: &str) -> Result<(), String> {
    const SCHEMES: [&str; 5] = ["https://", "ssh://", "git://", "file://", "http://"];
    if SCHEMES.iter().any(|s| url.starts_with(s)) {
        return Ok(());
    }
    // scp-like `user@host:path`.
    if let Some((userhost, path)) = url.split_once(':') {
        if userhost.contains('@') && !userhost.contains('/') && !path.is_empty() {
            return Ok(());
        }
    }
    Err(format!(
        "{url:?}: expected an https://, ssh://, git:// or file:// URL (or user@host:path)"
    ))
}

/// Reads the main file (`config`, or `<root>/etc/bosun/agent.yaml`) and the drop-ins next to it
/// (`agent.d/*.yaml` in name order), then parses and validates. Reads the disk (and the OpenPGP
/// key files); writes nothing.
pub fn load(config: Option<&Path>, defaults: &Defaults) -> Result<AgentConfig, AgentConfigError> {
    let main = config
        .map(Path::to_path_buf)
        .unwrap_or_else(|| defaults.root.join(AGENT_FILE));
    let read = |p: &Path| {
        std::fs::read_to_string(p).map_err(|source| AgentConfigError::Read {
            path: p.to_path_buf(),
            source,
        })
    };
    let mut files = vec![(main.clone(), read(&main)?)];
    let drop_ins = main
        .parent()
        .map(|d| d.join("agent.d"))
        .unwrap_or_else(|| PathBuf::from("agent.d"));
    match std::fs::read_dir(&drop_ins) {
        Ok(rd) => {
            let mut names: Vec<PathBuf> = rd
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml") && p.is_file())
                .collect();
            names.sort();
            for p in names {
                let text = read(&p)?;
                files.push((p, text));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(AgentConfigError::Read {
                path: drop_ins,
                source,
            })
        }
    }
    parse_files(&files, defaults)
}

/// The JSON Schema of agent config files; `schemas/agent.schema.json` must equal it.
pub fn schema_text() -> String {
    let schema = schemars::schema_for!(AgentFile);
    serde_json::to_string_pretty(&schema).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Defaults {
        Defaults {
            root: PathBuf::from("/"),
            hostname: "edge-01".into(),
        }
    }

    fn parse(files: &[(&str, &str)]) -> Result<AgentConfig, AgentConfigError> {
        let files: Vec<(PathBuf, String)> = files
            .iter()
            .map(|(p, t)| (PathBuf::from(p), t.to_string()))
            .collect();
        parse_files(&files, &defaults())
    }

    #[test]
    fn minimal_config_gets_the_documented_defaults() {
        let c = parse(&[("agent.yaml", "source:\n  url: git://127.0.0.1/fleet\n")]).unwrap();
        assert_eq!(c.source.reference, "main");
        assert_eq!(c.interval, Duration::from_secs(60));
        assert_eq!(c.jitter_percent, 10);
        assert_eq!(c.node_name, "edge-01");
        assert_eq!(c.state_dir, PathBuf::from("/var/lib/bosun"));
        assert_eq!(
            c.source.cache_dir,
            PathBuf::from("/var/lib/bosun/git-cache")
        );
        assert_eq!(c.metrics_listen, Some("127.0.0.1:9101".parse().unwrap()));
        assert!(c.drift_enabled);
        assert_eq!(c.resync_interval, Duration::from_secs(600));
        assert_eq!(c.verify.mode, VerifyMode::Off);
        assert_eq!(c.source.max_fetch_bytes, 128 << 20);
    }

    #[test]
    fn max_fetch_bytes_takes_bytes_or_binary_units() {
        for (value, bytes) in [
            ("1048576", 1u64 << 20),
            ("64MiB", 64 << 20),
            ("64M", 64 << 20),
            ("2GiB", 2 << 30),
            ("'3072 KiB'", 3 << 20),
        ] {
            let text = format!("source:\n  url: git://h/f\n  max_fetch_bytes: {value}\n");
            let c = parse(&[("a.yaml", &text)]).unwrap();
            assert_eq!(c.source.max_fetch_bytes, bytes, "{value}");
        }
    }

    #[test]
    fn drop_ins_merge_maps_and_later_files_win() {
        let c = parse(&[
            (
                "agent.yaml",
                "source:\n  url: git://h/fleet\n  ref: main\ninterval: 30s\ndrift:\n  resync_interval: 5m\n",
            ),
            ("agent.d/10-ref.yaml", "source:\n  ref: stable\n"),
            ("agent.d/20-interval.yaml", "interval: 2\ndrift:\n  enabled: false\n"),
        ])
        .unwrap();
        assert_eq!(c.source.url, "git://h/fleet");
        assert_eq!(c.source.reference, "stable");
        assert_eq!(c.interval, Duration::from_secs(2));
        assert!(!c.drift_enabled);
        assert_eq!(c.resync_interval, Duration::from_secs(300));
    }

    #[test]
    fn unknown_key_is_refused_with_file_and_line() {
        let err = parse(&[(
            "/etc/bosun/agent.yaml",
            "source:\n  url: git://h/fleet\n  branch: main\n",
        )])
        .unwrap_err()
        .to_string();
        assert!(err.contains("/etc/bosun/agent.yaml"), "{err}");
        assert!(err.contains("branch"), "{err}");
        assert!(err.contains("line 3"), "{err}");
    }

    #[test]
    fn metrics_listen_spellings_of_loopback() {
        for (text, want) in [
            ("127.0.0.1:9101", "127.0.0.1:9101"),
            ("localhost:9101", "127.0.0.1:9101"),
            ("LOCALHOST:1", "127.0.0.1:1"),
            ("[::ffff:127.0.0.1]:9101", "127.0.0.1:9101"),
            ("[::1]:9101", "[::1]:9101"),
        ] {
            assert_eq!(parse_listen(text), Some(want.parse().unwrap()), "{text}");
        }
        for bad in [
            "localhost",
            "localhost:x",
            "localhost:70000",
            "example.org:1",
            "[::ffff:127.0.0.1]",
        ] {
            assert_eq!(parse_listen(bad), None, "{bad}");
        }
    }

    #[test]
    fn non_loopback_metrics_need_explicit_permission() {
        let base = "source:\n  url: git://h/f\nmetrics:\n  listen: 0.0.0.0:9101\n";
        let err = parse(&[("a.yaml", base)]).unwrap_err().to_string();
        assert!(err.contains("metrics.listen"), "{err}");
        let ok = format!("{base}  allow_non_loopback: true\n");
        assert!(parse(&[("a.yaml", &ok)]).is_ok());
    }

    #[test]
    fn bad_values_are_errors_naming_the_field() {
        let cases = [
            ("interval: 5x\nsource: {url: git://h/f}\n", "interval"),
            ("source: {url: ftp://h/f}\n", "source.url"),
            ("interval: 5\n", "source.url"),
            (
                "source: {url: git://h/f}\nverification: {mode: head}\n",
                "verification",
            ),
            ("source: {url: git://h/f}\nssh_user: root\n", "ssh_user"),
            (
                "source: {url: git://h/f}\njitter_percent: 80\n",
                "jitter_percent",
            ),
            (
                "source: {url: git://h/f}\nupgrade: {slots: {a: /dev/sda2}}\n",
                "upgrade.slots",
            ),
        ];
        for (text, field) in cases {
            let err = parse(&[("agent.yaml", text)]).unwrap_err().to_string();
            assert!(err.contains(field), "{text}: {err}");
        }
    }

    /// Every rejection of stage 3, one case per rule, with the field and the message it gives.
    #[test]
    fn each_section_rejection_names_field_and_reason() {
        let dir = tempfile::tempdir().unwrap();
        let missing_key = dir.path().join("missing.asc");
        let missing_key_case = format!(
            "source: {{url: git://h/f}}\nverification: {{mode: head, openpgp_keys: [{}]}}\n",
            missing_key.display()
        );
        let src = "source: {url: git://h/f}\n";
        let cases: Vec<(String, &str)> = vec![
            (format!("root: etc\n{src}"), "root: etc is not absolute"),
            (
                "source: {url: git://h/f, subdir: a/../b}\n".into(),
                "source.subdir: \"a/../b\" must be a relative path without `..`",
            ),
            (
                "source: {url: git://h/f, depth: 0}\n".into(),
                "source.depth: must be at least 1",
            ),
            (
                "source: {url: git://h/f, max_fetch_bytes: 64KiB}\n".into(),
                "source.max_fetch_bytes: 65536 bytes is less than 1 MiB",
            ),
            (
                "source: {url: git://h/f, max_fetch_bytes: 12 parsecs}\n".into(),
                "source.max_fetch_bytes: \"12 parsecs\": unknown unit \"parsecs\"",
            ),
            (missing_key_case, "verification.openpgp_keys: "),
            (
                format!("{src}interval: 0\n"),
                "interval: must be greater than zero",
            ),
            (
                format!("{src}node_name: a/b\n"),
                "node_name: \"a/b\" is not a host name",
            ),
            (
                format!("{src}keys: {{github_base: ftp://g}}\n"),
                "keys.github_base: \"ftp://g\" is not an http(s) URL",
            ),
            (
                format!("{src}keys: {{gitlab_base: gitlab.example}}\n"),
                "keys.gitlab_base: \"gitlab.example\" is not an http(s) URL",
            ),
            (
                format!("{src}metrics: {{listen: localhost}}\n"),
                "metrics.listen: \"localhost\" is not ADDRESS:PORT",
            ),
            (
                format!("{src}drift: {{resync_interval: 0}}\n"),
                "drift.resync_interval: must be greater than zero",
            ),
            (
                format!("{src}drift: {{resync_interval: 5x}}\n"),
                "drift.resync_interval: ",
            ),
            (
                format!("{src}upgrade: {{slots: {{a: /dev/x, b: /dev/x}}}}\n"),
                "upgrade.slots: needs two different devices a and b",
            ),
            (
                format!("{src}upgrade: {{bootloader: gpt, gpt_disk: /dev/sda}}\n"),
                "upgrade.gpt_partitions: bootloader: gpt needs gpt_disk",
            ),
            (
                format!("{src}upgrade: {{bootloader: uboot}}\n"),
                "upgrade.uboot_env_config: is required with bootloader: uboot",
            ),
            (
                format!("{src}upgrade: {{reboot_command: []}}\n"),
                "upgrade.reboot_command: must name a program",
            ),
            (
                format!("{src}upgrade: {{bootloader: grub}}\n"),
                "upgrade.grubenv: is required with bootloader: grub",
            ),
        ];
        for (text, expected) in cases {
            let err = parse(&[("agent.yaml", &text)]).unwrap_err().to_string();
            assert!(
                err.starts_with("agent config (agent.yaml): "),
                "{text}: {err}"
            );
            assert!(err.contains(expected), "{text}: {err}");
        }
    }

    #[test]
    fn verification_modes_and_upgrade_block_parse() {
        let c = parse(&[(
            "agent.yaml",
            "source: {url: 'git@example.invalid:fleet.git'}\nverification:\n  mode: head\n  \
             allowed_signers: /etc/bosun/allowed_signers\n  allow_history_rewrite: true\n\
             upgrade:\n  slots: {a: /dev/sda2, b: /dev/sda3}\n  bootloader: grub\n  \
             grubenv: /boot/grub/grubenv\n",
        )])
        .unwrap();
        assert_eq!(c.verify.mode, VerifyMode::Head);
        assert!(c.verify.allow_history_rewrite);
        let u = c.upgrade.unwrap();
        assert_eq!(u.bootloader, Some(BootloaderKind::Grub));
        assert_eq!(u.slots.unwrap().b, Some(PathBuf::from("/dev/sda3")));
        let off = parse(&[(
            "a.yaml",
            "source: {url: git://h/f}\nverification: {mode: off}\n",
        )])
        .unwrap();
        assert_eq!(off.verify.mode, VerifyMode::Off);
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("5d").is_err());
    }

    #[test]
    fn committed_schema_matches_the_types() {
        let committed = include_str!("../../schemas/agent.schema.json");
        assert_eq!(
            committed.trim_end(),
            schema_text(),
            "schemas/agent.schema.json is stale: regenerate with `bosun agent-schema > schemas/agent.schema.json`"
        );
    }
}
