//! The typed, validated node configuration: what one node should look like after all layers
//! are merged. Values here are already decoded and checked; nothing downstream re-validates
//! syntax. Produced by [`crate::config::load`], consumed by rendering.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// Where a value came from: a layer file and a 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default, serde::Serialize)]
pub struct Origin {
    pub file: String,
    pub line: usize,
    pub col: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.col)
    }
}

/// A string that must never be printed: tokens, passwords, passphrases.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(pub String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// The merged, validated configuration of one node.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeConfig {
    pub hostname: Option<String>,
    pub ssh_authorized_keys: Vec<AuthorizedKey>,
    pub write_files: Vec<WriteFile>,
    /// Shell command lines (run with `sh -c`), as k3os ran them.
    pub init_cmd: Vec<String>,
    pub boot_cmd: Vec<String>,
    pub run_cmd: Vec<String>,
    pub k3os: K3os,
    pub upgrade: Option<UpgradeConfig>,
    pub health: HealthConfig,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizedKey {
    pub source: KeySource,
    pub origin: Origin,
}

/// One `ssh_authorized_keys` entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeySource {
    /// A literal `authorized_keys` line (options are not allowed, as in k3os).
    Literal(String),
    /// `github:USER` → `<github_base>/USER.keys`.
    GitHub(String),
    /// `gitlab:USER` → `<gitlab_base>/USER.keys`.
    GitLab(String),
    /// An `https://` URL returning authorized_keys lines.
    Url(String),
}

/// How a `write_files` entry's content was encoded in YAML.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Plain,
    Base64,
    Gzip,
    GzipBase64,
    /// A `!!binary` YAML scalar.
    YamlBinary,
}

/// A user or group given by number or by name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum IdOrName {
    Id(u32),
    Name(String),
}

impl fmt::Display for IdOrName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdOrName::Id(n) => write!(f, "{n}"),
            IdOrName::Name(s) => f.write_str(s),
        }
    }
}

/// `owner:` of a write_files entry: `user`, `user:group`, `uid:gid`.
/// With no group, the user's primary group is used.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OwnerSpec {
    pub user: IdOrName,
    pub group: Option<IdOrName>,
}

impl Default for OwnerSpec {
    fn default() -> Self {
        OwnerSpec {
            user: IdOrName::Name("root".into()),
            group: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteFile {
    /// Absolute, normalised path (no `..`, no `//`, not under /proc, /sys, /dev).
    pub path: String,
    /// Decoded bytes.
    pub content: Vec<u8>,
    /// Permission bits (0o7777 at most). Default 0o644.
    pub mode: u32,
    pub owner: OwnerSpec,
    pub encoding: Encoding,
    pub origin: Origin,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wifi {
    pub name: String,
    pub passphrase: Secret,
}

/// The `k3os:` block.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct K3os {
    /// Accepted for compatibility; not applicable to bosun (warned).
    pub data_sources: Vec<String>,
    pub modules: Vec<String>,
    pub sysctls: BTreeMap<String, String>,
    pub dns_nameservers: Vec<String>,
    pub ntp_servers: Vec<String>,
    pub wifi: Vec<Wifi>,
    /// Plaintext or a `$…` crypt hash.
    pub password: Option<Secret>,
    pub server_url: Option<String>,
    pub token: Option<Secret>,
    pub labels: BTreeMap<String, String>,
    /// k3os semantics: exec-style, first element `server` or `agent`.
    pub k3s_args: Vec<String>,
    pub environment: BTreeMap<String, String>,
    pub taints: Vec<String>,
    /// Whether an `install:` block was present (accepted, not applicable).
    pub install_present: bool,
}

/// Compression of an upgrade image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// bosun's `upgrade:` block: the OS image this node should run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpgradeConfig {
    pub version: String,
    /// `https://…`, `http://…` (loopback only in tests) or an absolute local path.
    pub image: String,
    /// SHA-256 of the image as downloaded (before decompression).
    pub sha256: [u8; 32],
    /// Size in bytes of the download, when known.
    pub size: Option<u64>,
    /// `None` means: from the image name's suffix (`.zst`, `.gz`), else uncompressed.
    pub compression: Option<Compression>,
    /// Boot attempts the bootloader grants the trial slot. Default 3.
    pub tries: u8,
}

/// Which applies are gated by health checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthGate {
    /// Only applies that changed the k3s configuration (default).
    #[default]
    K3s,
    /// Every apply.
    All,
    /// Never gate config applies (upgrades are still gated).
    None,
}

/// bosun's `health:` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthConfig {
    /// How long checks may take to pass before the change is rolled back. Default 300 s.
    pub timeout: Duration,
    /// Pause between rounds. Default 5 s.
    pub interval: Duration,
    /// Consecutive successes each check needs. Default 3.
    pub successes: u32,
    pub gate: HealthGate,
    /// Empty means the defaults for the node's role (unit active, kubelet, apiserver on servers).
    pub checks: Vec<HealthCheck>,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            timeout: Duration::from_secs(300),
            interval: Duration::from_secs(5),
            successes: 3,
            gate: HealthGate::K3s,
            checks: Vec::new(),
        }
    }
}

/// One health check. Paths are absolute paths on the node (resolved under `--root`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthCheck {
    /// `systemctl is-active UNIT` succeeds.
    Unit { name: String },
    /// GET `url` (default `http://127.0.0.1:10248/healthz`) returns 200 with body `ok`.
    Kubelet { url: String },
    /// GET `<server>/readyz` using the kubeconfig's server, CA and credentials
    /// (default kubeconfig `/etc/rancher/k3s/k3s.yaml`, server overridable by `url`).
    Apiserver {
        kubeconfig: String,
        url: Option<String>,
    },
    /// GET `/api/v1/nodes/<node>` with the kubeconfig and require condition Ready=True.
    /// `node` defaults to the node's hostname.
    NodeReady {
        kubeconfig: String,
        node: Option<String>,
    },
    /// GET `url`; expect `status` (default 200) and, if set, a body containing `body`.
    Http {
        url: String,
        ca: Option<String>,
        status: u16,
        body: Option<String>,
    },
    /// Run argv; exit status 0 passes.
    Command { argv: Vec<String> },
}
