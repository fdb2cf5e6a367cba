//! The typed, validated node configuration: what one node should look like after all layers
//! are merged. Values here are already decoded and checked; nothing downstream re-validates
//! syntax. Produced by [`crate::config::load`], consumed by rendering.
//!
//! [`K3sRole`] and its rule ([`K3os::k3s_role`]) live here, below both rendering and health, so
//! the two cannot choose different roles for the same config.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// Where a value came from: a layer file and a 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default, serde::Serialize)]
pub struct Origin {
    /// The layer file, as messages name it (repo-relative, e.g. `nodes/edge-1.yaml`).
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
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
    /// The secret text, for the code that must write it (shadow hash, env file, keyfile); never for
    /// messages or logs.
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
    /// `hostname`: /etc/hostname and the `127.0.1.1` line of /etc/hosts; also the node name health
    /// checks default to.
    pub hostname: Option<String>,
    /// `ssh_authorized_keys`: key sources for the ssh user's `authorized_keys`, in order.
    pub ssh_authorized_keys: Vec<AuthorizedKey>,
    /// `write_files`, merged by `path` across layers, in order.
    pub write_files: Vec<WriteFile>,
    /// Shell command lines (run with `sh -c`), as k3os ran them.
    pub init_cmd: Vec<String>,
    /// `boot_cmd`: shell command lines run once per boot, before the first apply (after
    /// `init_cmd`).
    pub boot_cmd: Vec<String>,
    /// `run_cmd`: shell command lines run once per boot, after the first successful apply.
    pub run_cmd: Vec<String>,
    /// The `k3os:` block.
    pub k3os: K3os,
    /// bosun's `upgrade:` block; `None`: the node stays on the OS it runs.
    pub upgrade: Option<UpgradeConfig>,
    /// bosun's `health:` block (defaults when absent).
    pub health: HealthConfig,
    /// bosun: the fleet rollout policy (`rollout:`).
    pub rollout: super::rollout::RolloutConfig,
}

/// One `ssh_authorized_keys` entry with the place it was configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizedKey {
    /// Where the keys come from.
    pub source: KeySource,
    /// The entry's position, for messages (a failed fetch names it).
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
    /// No `encoding` (or `""`): the content as written.
    Plain,
    /// `b64` / `base64`.
    Base64,
    /// `gz` / `gzip` on a plain string: the string's bytes are gunzipped.
    Gzip,
    /// `gz+base64`, `gzip+base64`, `gz+b64`, `gzip+b64`: base64 of gzip.
    GzipBase64,
    /// A `!!binary` YAML scalar.
    YamlBinary,
}

/// A user or group given by number or by name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum IdOrName {
    /// A numeric id, used as is.
    Id(u32),
    /// A name, resolved through the node's own passwd/group.
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

/// `owner:` of a write_files entry, with the meaning GNU `chown OWNER` gives it (k3os ran
/// `chown OWNER` on the new file, which root had created): `user`, `user:`, `user:group`,
/// `:group`, numbers for ids.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OwnerSpec {
    /// `root` when the spec names only a group (`:group`: chown leaves the user).
    pub user: IdOrName,
    /// The owning group: unchanged (root for a new file), the login group, or named.
    pub group: OwnerGroup,
}

/// The group part of an [`OwnerSpec`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum OwnerGroup {
    /// `user` alone: chown leaves the group, root (0) for the file written.
    Unchanged,
    /// `user:` (a colon, no group): the user's login group (its passwd gid).
    Login,
    /// `user:group` or `:group`.
    Named(IdOrName),
}

impl Default for OwnerSpec {
    fn default() -> Self {
        OwnerSpec {
            user: IdOrName::Name("root".into()),
            group: OwnerGroup::Unchanged,
        }
    }
}

impl fmt::Display for OwnerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.group {
            OwnerGroup::Unchanged => write!(f, "{}", self.user),
            OwnerGroup::Login => write!(f, "{}:", self.user),
            OwnerGroup::Named(g) => write!(f, "{}:{g}", self.user),
        }
    }
}

/// One `write_files` entry, decoded and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteFile {
    /// Absolute, normalised path (no `..`, no `//`, not under /proc, /sys, /dev).
    pub path: String,
    /// Decoded bytes.
    pub content: Vec<u8>,
    /// Permission bits (0o7777 at most). Default 0o644.
    pub mode: u32,
    /// `owner:`, resolved through the node's passwd/group at render time. Default `root`.
    pub owner: OwnerSpec,
    /// How the content was encoded in the YAML (informational: `content` is already decoded).
    pub encoding: Encoding,
    /// The entry's position (its `path:`), for messages.
    pub origin: Origin,
}

/// One `k3os.wifi` entry: a NetworkManager keyfile `bosun-<name>.nmconnection`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wifi {
    /// The SSID.
    pub name: String,
    /// The WPA passphrase (`passphrase`, `pass` or `password`); written only into the 0600 keyfile.
    pub passphrase: Secret,
}

/// The `k3os:` block.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct K3os {
    /// Accepted for compatibility; not applicable to bosun (warned).
    pub data_sources: Vec<String>,
    /// Kernel modules in order, each once (an entry repeated with the same parameters is kept
    /// once; with different ones it is refused).
    pub modules: Vec<KernelModule>,
    /// Sysctl keys and values: /etc/sysctl.d/90-bosun.conf, loaded when it changes.
    pub sysctls: BTreeMap<String, String>,
    /// IP addresses: systemd-resolved's `FallbackDNS=` (fallback servers, as k3os meant).
    pub dns_nameservers: Vec<String>,
    /// systemd-timesyncd's `FallbackNTP=`.
    pub ntp_servers: Vec<String>,
    /// Wi-Fi networks, one NetworkManager keyfile each.
    pub wifi: Vec<Wifi>,
    /// Plaintext or a `$…` crypt hash.
    pub password: Option<Secret>,
    /// K3s server to join; set and non-empty, the node defaults to the agent role.
    pub server_url: Option<String>,
    /// `K10…` node token or cluster secret, passed to k3s as `K3S_TOKEN` in a 0600 env file.
    pub token: Option<Secret>,
    /// Node labels, each passed as `--kubelet-arg node-labels=<k>=<v>`, sorted.
    pub labels: BTreeMap<String, String>,
    /// k3os semantics: exec-style; the first element `server`, `agent` or a flag (then the
    /// role comes from [`K3os::k3s_role`]).
    pub k3s_args: Vec<String>,
    /// Variables for /etc/environment (merged) and the k3s service's env file.
    pub environment: BTreeMap<String, String>,
    /// Taints `key[=value]:Effect`, each passed as `--kubelet-arg register-with-taints=<taint>`, in
    /// order.
    pub taints: Vec<String>,
    /// Whether an `install:` block was present (accepted, not applicable).
    pub install_present: bool,
}

/// One `k3os.modules` entry, `name [param=value …]` as k3os read it (`strings.Split` on spaces,
/// the first word the module).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelModule {
    /// Letters, digits, `_` and `-`.
    pub name: String,
    /// `param=value` words in the order written; no blanks, quotes or shell metacharacters.
    pub params: Vec<String>,
}

impl KernelModule {
    /// A module without parameters.
    pub fn named(name: &str) -> KernelModule {
        KernelModule {
            name: name.to_string(),
            params: Vec::new(),
        }
    }
}

impl fmt::Display for KernelModule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        for p in &self.params {
            write!(f, " {p}")?;
        }
        Ok(())
    }
}

/// Whether this node runs the K3s server (control plane) or only the agent. Rendering writes
/// the role's unit drop-in; health checks the role's unit (and the apiserver on servers).
/// Chosen by [`K3os::k3s_role`], the one rule both use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum K3sRole {
    /// `k3s server`: the control plane (unit `k3s`).
    Server,
    /// `k3s agent`: joins `server_url` (unit `k3s-agent`).
    Agent,
}

impl K3sRole {
    /// The k3s subcommand (`server` or `agent`).
    pub fn command(self) -> &'static str {
        match self {
            K3sRole::Server => "server",
            K3sRole::Agent => "agent",
        }
    }

    /// The systemd unit name (without `.service`), as the k3s install script names it:
    /// `k3s` or `k3s-agent`.
    pub fn unit(self) -> &'static str {
        match self {
            K3sRole::Server => "k3s",
            K3sRole::Agent => "k3s-agent",
        }
    }

    /// Path of bosun's drop-in for this role's unit.
    pub fn dropin_path(self) -> String {
        format!(
            "/etc/systemd/system/{}.service.d/90-bosun.conf",
            self.unit()
        )
    }

    /// The role for health checks: [`K3os::k3s_role`]. Health only runs on a config that
    /// loaded and rendered, and both refuse an unknown first `k3s_args` command, so the
    /// fallback for that case (the role without a command: agent when `server_url` is set,
    /// else server, which is what health chose before the rule was shared) is never reached
    /// on a node.
    pub fn from_k3os(k3os: &K3os) -> K3sRole {
        k3os.k3s_role()
            .unwrap_or_else(|_| k3os.role_without_command())
    }
}

impl fmt::Display for K3sRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.command())
    }
}

/// `k3s_args` starts with a command other than `server` or `agent`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownK3sCommand {
    /// The first element of `k3s_args`.
    pub first: String,
}

impl K3os {
    /// The role k3s runs in. The one rule, used by rendering and by health:
    /// - `k3s_args[0]` when it is `server` or `agent`;
    /// - an error when it is any other word (k3os would have run `k3s <word>`);
    /// - otherwise (no args, or the args start with a flag) agent when `server_url` is set,
    ///   else server, as the k3s install script chooses.
    pub fn k3s_role(&self) -> Result<K3sRole, UnknownK3sCommand> {
        match self.k3s_args.first().map(String::as_str) {
            Some("server") => Ok(K3sRole::Server),
            Some("agent") => Ok(K3sRole::Agent),
            Some(first) if !first.starts_with('-') => Err(UnknownK3sCommand {
                first: first.to_string(),
            }),
            _ => Ok(self.role_without_command()),
        }
    }

    /// The role when `k3s_args` names none: agent when `server_url` is set (and not empty),
    /// else server.
    fn role_without_command(&self) -> K3sRole {
        if self.server_url.as_deref().is_some_and(|u| !u.is_empty()) {
            K3sRole::Agent
        } else {
            K3sRole::Server
        }
    }
}

/// Compression of an upgrade image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Uncompressed: the download is the slot image.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

/// bosun's `upgrade:` block: the OS image this node should run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpgradeConfig {
    /// The OS version this node should run (compared with the booted image's `IMAGE_VERSION`).
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
    /// Which config applies wait for the health verdict. Default [`HealthGate::K3s`].
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
    Unit {
        /// The unit, as `systemctl is-active` takes it (`k3s`, `containerd.service`).
        name: String,
    },
    /// GET `url` (default `http://127.0.0.1:10248/healthz`) returns 200 with body `ok`.
    Kubelet {
        /// The kubelet healthz URL.
        url: String,
    },
    /// GET `<server>/readyz` using the kubeconfig's server, CA and credentials
    /// (default kubeconfig `/etc/rancher/k3s/k3s.yaml`, server overridable by `url`).
    Apiserver {
        /// Kubeconfig on the node giving the server, CA and credentials.
        kubeconfig: String,
        /// Server URL overriding the kubeconfig's.
        url: Option<String>,
    },
    /// GET `/api/v1/nodes/<node>` with the kubeconfig and require condition Ready=True.
    /// `node` defaults to the node's hostname.
    NodeReady {
        /// Kubeconfig on the node giving the server, CA and credentials.
        kubeconfig: String,
        /// The node name to look up; `None`: the node's hostname.
        node: Option<String>,
    },
    /// GET `url`; expect `status` (default 200) and, if set, a body containing `body`.
    Http {
        /// The URL to GET (`https://`, or `http://`).
        url: String,
        /// CA bundle on the node, the only CA trusted for this check; `None`: the built-in Mozilla
        /// roots (webpki-roots).
        ca: Option<String>,
        /// The status code that passes.
        status: u16,
        /// A substring the body must contain.
        body: Option<String>,
    },
    /// Run argv; exit status 0 passes.
    Command {
        /// The command and its arguments (not through a shell).
        argv: Vec<String>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k3os(args: &[&str], server_url: Option<&str>) -> K3os {
        K3os {
            k3s_args: args.iter().map(|s| s.to_string()).collect(),
            server_url: server_url.map(str::to_string),
            ..K3os::default()
        }
    }

    /// The one role rule, case by case; health's [`K3sRole::from_k3os`] gives the same role
    /// for every config the rule accepts.
    #[test]
    fn k3s_role_rule_and_health_agree() {
        let url = Some("https://s:6443");
        let cases = [
            (k3os(&[], None), K3sRole::Server),
            (k3os(&[], url), K3sRole::Agent),
            (k3os(&[], Some("")), K3sRole::Server),
            (k3os(&["server"], url), K3sRole::Server),
            (k3os(&["agent"], None), K3sRole::Agent),
            (k3os(&["--disable", "traefik"], None), K3sRole::Server),
            (k3os(&["--node-ip", "10.0.0.3"], url), K3sRole::Agent),
        ];
        for (k, role) in cases {
            assert_eq!(k.k3s_role(), Ok(role), "{:?}", k.k3s_args);
            assert_eq!(K3sRole::from_k3os(&k), role, "{:?}", k.k3s_args);
        }
    }

    /// An unknown first command is an error for the rule (so rendering refuses it); health,
    /// which never sees such a config on a node, falls back to the role without a command.
    #[test]
    fn unknown_k3s_command_is_refused_and_health_falls_back() {
        let k = k3os(&["etcd-snapshot", "save"], Some("https://s:6443"));
        assert_eq!(
            k.k3s_role(),
            Err(UnknownK3sCommand {
                first: "etcd-snapshot".into()
            })
        );
        assert_eq!(K3sRole::from_k3os(&k), K3sRole::Agent);
        assert_eq!(
            K3sRole::from_k3os(&k3os(&["etcd-snapshot"], None)),
            K3sRole::Server
        );
    }

    #[test]
    fn k3s_role_names() {
        assert_eq!(K3sRole::Server.to_string(), "server");
        assert_eq!(K3sRole::Agent.to_string(), "agent");
        assert_eq!(K3sRole::Agent.unit(), "k3s-agent");
        assert_eq!(
            K3sRole::Server.dropin_path(),
            "/etc/systemd/system/k3s.service.d/90-bosun.conf"
        );
        assert_eq!(serde_json::to_string(&K3sRole::Agent).unwrap(), "\"agent\"");
    }
}
