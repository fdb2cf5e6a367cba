//! k3s: `k3os.server_url`, `token`, `labels`, `taints`, `k3s_args` and `environment` become the
//! exact k3s command line and environment k3os produced, rendered as a systemd drop-in for the
//! role's unit plus a secret environment file. The role is [`crate::config::K3os::k3s_role`],
//! the rule health checks use too; an unknown first `k3s_args` command is a render error.
//!
//! What k3os did (`pkg/cc/funcs.go` `ApplyK3S`, archived HEAD `8cdfdf2`): it ran the k3s install
//! script with
//! - args = `k3s_args` as given (exec-style); if empty, `server` when `server_url` is empty, else
//!   `agent`. When the args start with a flag, the install script chose `agent` if `K3S_URL` was
//!   set and `server` otherwise (k3os itself never looked at `k3s_args[0]`);
//! - `K3S_URL=<server_url>` when set;
//! - `K3S_TOKEN=<token>` when the token starts with `K10` (a node token), else
//!   `K3S_CLUSTER_SECRET=<token>`;
//! - one `--node-label <k>=<v>` pair per label, sorted as `k=v` strings, appended after the args
//!   (plus `k3os.io/mode` and `k3os.io/version`); k3os before 0.9 passed
//!   `--kubelet-arg node-labels=<k>=<v>` instead;
//! - one `--kubelet-arg register-with-taints=<taint>` pair per taint, in order;
//! - `k3os.environment` reached k3s through `/etc/environment`, which the k3s service sourced
//!   before its own env file (so K3S_URL/K3S_TOKEN win over it).
//!
//! How k3s combines these flags (k3s `pkg/daemons/agent/agent_linux.go` `kubeletArgs`, merged by
//! `pkg/daemons/config/types.go` `GetArgs` in the versions k3os shipped, `pkg/util/args.go`
//! `GetArgs` today): k3s builds the kubelet's arguments as a map, `node-labels` = every
//! `--node-label` joined by `,` and `register-with-taints` = every `--node-taint` joined by `,`,
//! then merges each `--kubelet-arg key=value` into that map, the later value winning (today's
//! k3s deletes its own value and passes the repeated extra values in order, but the kubelet's
//! `--register-with-taints` keeps only the last occurrence). So several `--kubelet-arg
//! register-with-taints=` register only the last taint, which is a k3os bug (`taints: [A, B]`
//! registered only `B`), and a `--kubelet-arg node-labels=` would drop the `--node-label` list.
//! The k3s agent also applies every `--node-label` to an already registered Node at each start
//! (`pkg/agent/run.go` `updateMutableLabels`); kubelet flags act only at registration.
//!
//! Differences, on purpose:
//! - Taints are passed as one `--node-taint <taint>` pair per taint: k3s joins them into one
//!   `register-with-taints`, so every taint registers (the fix of k3os's bug above). A
//!   `--kubelet-arg register-with-taints=…` or `node-labels=…` in `k3s_args` still overrides
//!   them, as in k3s.
//! - `K3S_CLUSTER_SECRET` was removed from k3s; the cluster secret is spelled `--token` /
//!   `K3S_TOKEN` since, which accepts both forms. bosun passes every token as `K3S_TOKEN` and
//!   records the kind in [`K3sInvocation::token_kind`].
//! - k3os also added the labels `k3os.io/mode=<mode>` (live/local/…) and
//!   `k3os.io/version=<release>`; they describe k3os itself and are not added.
//! - k3os before v0.19.2 put literal quotes and a newline into K3S_URL/K3S_TOKEN
//!   (`K3S_URL="%s"\n`), relying on the install script's shell to strip them; bosun (like later
//!   k3os) passes the plain values.
//!
//! Files: `/etc/systemd/system/<unit>.service.d/90-bosun.conf` (0644) resets `ExecStart=` to the
//! effective command line and adds `EnvironmentFile=/etc/rancher/k3s/bosun.env` (0600, secret,
//! only when there is an environment). Unit `k3s` for a server, `k3s-agent` for an agent; both
//! unit files must exist on the image (as the k3s install script creates them). Effects: daemon
//! reload when the drop-in changes, then a restart of that unit when the drop-in or env file
//! changes — never otherwise.

use std::collections::BTreeMap;
use std::fmt;

use super::system::{check_env, quote_env_value};
use super::{root_file, Builder, RenderError, RenderSettings};
use crate::config::{K3sRole, NodeConfig};
use crate::desired::{Effect, EffectRule, Trigger};

/// The k3s service's environment file (0600, secret: holds `K3S_TOKEN`), named by
/// `EnvironmentFile=` in the drop-in.
pub const K3S_ENV_FILE: &str = "/etc/rancher/k3s/bosun.env";

/// k3s's configuration directory: `config.yaml`, `config.yaml.d/`, `registries.yaml` are read
/// at start, so a change there (from `write_files`) restarts k3s like a change of the drop-in.
pub const K3S_CONFIG_DIR: &str = "/etc/rancher/k3s";

/// How k3os read `k3os.token`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// Starts with `K10`: a node token (k3os: `K3S_TOKEN`).
    NodeToken,
    /// Anything else: a cluster secret (k3os: `K3S_CLUSTER_SECRET`; now `K3S_TOKEN`).
    ClusterSecret,
}

/// The effective k3s invocation: `<k3s_bin> <args…>` with `env` added to the service
/// environment.
#[derive(Clone, PartialEq, Eq)]
pub struct K3sInvocation {
    /// Server or agent: which unit runs it.
    pub role: K3sRole,
    /// Everything after the binary, starting with `server` or `agent`.
    pub args: Vec<String>,
    /// Variables for the env file: `k3os.environment` plus `K3S_TOKEN` and `K3S_URL` when set.
    pub env: BTreeMap<String, String>,
    /// How k3os would have read `k3os.token`, when one is set.
    pub token_kind: Option<TokenKind>,
}

impl fmt::Debug for K3sInvocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let env: BTreeMap<&str, &str> = self
            .env
            .iter()
            .map(|(k, v)| {
                let v = if crate::config::secrets::env_name_is_secret(k) {
                    crate::config::secrets::REDACTED
                } else {
                    v
                };
                (k.as_str(), v)
            })
            .collect();
        f.debug_struct("K3sInvocation")
            .field("role", &self.role)
            .field("args", &self.args)
            .field("env", &env)
            .field("token_kind", &self.token_kind)
            .finish()
    }
}

/// The role k3s runs in ([`crate::config::K3os::k3s_role`]); an unknown first `k3s_args`
/// command is a render error.
pub fn k3s_role(cfg: &NodeConfig) -> Result<K3sRole, RenderError> {
    cfg.k3os
        .k3s_role()
        .map_err(|e| RenderError::K3sCommand { first: e.first })
}

/// The effective command line and environment k3os would have given k3s. Pure.
pub fn k3s_invocation(cfg: &NodeConfig) -> Result<K3sInvocation, RenderError> {
    let k = &cfg.k3os;
    let role = k3s_role(cfg)?;
    let mut args: Vec<String> = Vec::new();
    if k.k3s_args.first().map(String::as_str) != Some(role.command()) {
        args.push(role.command().to_string());
    }
    args.extend(k.k3s_args.iter().cloned());

    let mut labels: Vec<String> = k.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    labels.sort();
    for l in labels {
        args.push("--node-label".into());
        args.push(l);
    }
    for t in &k.taints {
        args.push("--node-taint".into());
        args.push(t.clone());
    }
    for a in &args {
        if a.chars().any(char::is_control) {
            return Err(RenderError::InvalidValue {
                key: "k3os.k3s_args".into(),
                reason: format!("argument {a:?} contains a control character or line break"),
            });
        }
    }

    let mut env = BTreeMap::new();
    for (name, value) in &k.environment {
        check_env("k3os.environment", name, value)?;
        env.insert(name.clone(), value.clone());
    }
    if let Some(url) = k.server_url.as_deref().filter(|u| !u.is_empty()) {
        check_env("k3os.server_url", "K3S_URL", url)?;
        env.insert("K3S_URL".into(), url.to_string());
    }
    let mut token_kind = None;
    if let Some(token) = k
        .token
        .as_ref()
        .map(|t| t.expose())
        .filter(|t| !t.is_empty())
    {
        if token.chars().any(char::is_control) {
            return Err(RenderError::InvalidValue {
                key: "k3os.token".into(),
                reason: "contains a control character or line break".into(),
            });
        }
        token_kind = Some(if token.starts_with("K10") {
            TokenKind::NodeToken
        } else {
            TokenKind::ClusterSecret
        });
        env.insert("K3S_TOKEN".into(), token.to_string());
    }
    Ok(K3sInvocation {
        role,
        args,
        env,
        token_kind,
    })
}

/// Quotes one word of a systemd `ExecStart=` line so systemd passes it through unchanged:
/// plain words stay bare, others are double-quoted with `\` and `"` escaped; `%` (specifiers)
/// and `$` (variable expansion) are doubled everywhere.
pub fn systemd_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"_./:=,@+-".contains(&c));
    if plain {
        return word.to_string();
    }
    let mut s = String::with_capacity(word.len() + 2);
    s.push('"');
    for c in word.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '%' => s.push_str("%%"),
            '$' => s.push_str("$$"),
            c => s.push(c),
        }
    }
    s.push('"');
    s
}

/// Whether any argument looks like it carries a credential (`--token`, `--agent-token`,
/// `--datastore-endpoint` with a password, `--etcd-s3-secret-key`, …). Conservative: a false
/// positive only hides the drop-in's content from plans.
pub fn args_carry_secret(args: &[String]) -> bool {
    crate::config::secrets::k3s_args_carry_secret(args)
}

pub(crate) fn render_k3s(
    cfg: &NodeConfig,
    settings: &RenderSettings,
    b: &mut Builder,
) -> Result<(), RenderError> {
    let inv = k3s_invocation(cfg)?;
    if inv.role == K3sRole::Agent && !inv.env.contains_key("K3S_TOKEN") {
        b.warnings.push(
            "k3s agent without k3os.token: k3s refuses to join a server without a token".into(),
        );
    }
    let dropin = inv.role.dropin_path();
    let mut text = String::from(
        "# Managed by bosun from k3os.server_url/token/labels/taints/k3s_args/environment;\n\
         # local edits are overwritten.\n[Service]\n",
    );
    let mut watched = vec![dropin.clone()];
    if !inv.env.is_empty() {
        text.push_str(&format!("EnvironmentFile={K3S_ENV_FILE}\n"));
        let mut env_text = String::from("# Managed by bosun (k3s environment); secret.\n");
        for (k, v) in &inv.env {
            env_text.push_str(&format!("{k}={}\n", quote_env_value(v)));
        }
        let mut f = root_file(K3S_ENV_FILE, env_text.into_bytes(), 0o600, "k3os.k3s");
        f.secret = true;
        b.put(f);
        watched.push(K3S_ENV_FILE.into());
    }
    text.push_str("ExecStart=\nExecStart=");
    text.push_str(&systemd_quote(&settings.k3s_bin));
    for a in &inv.args {
        text.push_str(" \\\n    ");
        text.push_str(&systemd_quote(a));
    }
    text.push('\n');
    // A credential passed in k3s_args (e.g. `--token=…`) makes the drop-in itself secret.
    let mode = if args_carry_secret(&inv.args) {
        0o600
    } else {
        0o644
    };
    b.put(root_file(&dropin, text.into_bytes(), mode, "k3os.k3s"));
    let unit = format!("{}.service", inv.role.unit());
    let other = match inv.role {
        K3sRole::Server => K3sRole::Agent,
        K3sRole::Agent => K3sRole::Server,
    };
    b.effects.push(EffectRule {
        effect: Effect::DaemonReload,
        trigger: Trigger::Changed(vec![dropin.clone(), other.dropin_path()]),
    });
    // A role switch prunes the other role's drop-in: that unit stops and stays off at boot.
    b.effects.push(EffectRule {
        effect: Effect::DisableUnit {
            unit: format!("{}.service", other.unit()),
        },
        trigger: Trigger::Changed(vec![other.dropin_path()]),
    });
    // The role's unit starts at boot once bosun configures it (k3os enabled it in its image).
    b.effects.push(EffectRule {
        effect: Effect::EnableUnit { unit: unit.clone() },
        trigger: Trigger::Changed(vec![dropin]),
    });
    b.effects.push(EffectRule {
        effect: Effect::RestartUnit { unit: unit.clone() },
        trigger: Trigger::Changed(watched),
    });
    b.effects.push(EffectRule {
        effect: Effect::RestartUnit { unit },
        trigger: Trigger::ChangedUnder(K3S_CONFIG_DIR.to_string()),
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::render;
    use super::super::test_support::*;
    use super::*;
    use crate::config::{K3os, Secret};

    fn cfg(k: K3os) -> NodeConfig {
        NodeConfig {
            k3os: k,
            ..Default::default()
        }
    }

    fn strs(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn env_of(v: &[(&str, &str)]) -> BTreeMap<String, String> {
        v.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const NODE_TOKEN: &str = "K1074ec55daebdf54ef48294b0ddf0ce1c3cb64ee7e3d0b9ec79fbc7baf1f7ddac6::node:77689533d0140c7019416603a05275d4";

    /// k3os configs → the effective command line and environment k3os's ApplyK3S produced.
    #[test]
    fn k3os_mapping_table() {
        struct Case {
            name: &'static str,
            k3os: K3os,
            role: K3sRole,
            args: Vec<String>,
            env: BTreeMap<String, String>,
            token: Option<TokenKind>,
        }
        let labels: BTreeMap<String, String> = [
            ("region", "us-west-1"),
            ("a", "1"),
            ("a.b", "2"),
            ("somekey", "somevalue"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let cases = vec![
            Case {
                name: "empty config: single server",
                k3os: K3os::default(),
                role: K3sRole::Server,
                args: strs(&["server"]),
                env: env_of(&[]),
                token: None,
            },
            Case {
                name: "server_url + node token: agent",
                k3os: K3os {
                    server_url: Some("https://myserver:6443".into()),
                    token: Some(Secret(NODE_TOKEN.into())),
                    ..Default::default()
                },
                role: K3sRole::Agent,
                args: strs(&["agent"]),
                env: env_of(&[
                    ("K3S_URL", "https://myserver:6443"),
                    ("K3S_TOKEN", NODE_TOKEN),
                ]),
                token: Some(TokenKind::NodeToken),
            },
            Case {
                name: "cluster secret on a server; labels sorted as k=v strings; every taint, in order",
                k3os: K3os {
                    token: Some(Secret("myclustersecret".into())),
                    labels: labels.clone(),
                    taints: strs(&["key1=value1:NoSchedule", "key1=value1:NoExecute"]),
                    ..Default::default()
                },
                role: K3sRole::Server,
                args: strs(&[
                    "server",
                    "--node-label",
                    "a.b=2",
                    "--node-label",
                    "a=1",
                    "--node-label",
                    "region=us-west-1",
                    "--node-label",
                    "somekey=somevalue",
                    "--node-taint",
                    "key1=value1:NoSchedule",
                    "--node-taint",
                    "key1=value1:NoExecute",
                ]),
                env: env_of(&[("K3S_TOKEN", "myclustersecret")]),
                token: Some(TokenKind::ClusterSecret),
            },
            Case {
                name: "explicit k3s_args kept exec-style, labels appended after",
                k3os: K3os {
                    k3s_args: strs(&[
                        "server",
                        "--cluster-cidr",
                        "10.107.0.0/23",
                        "--disable=traefik",
                    ]),
                    labels: [("zone".to_string(), "b".to_string())].into(),
                    ..Default::default()
                },
                role: K3sRole::Server,
                args: strs(&[
                    "server",
                    "--cluster-cidr",
                    "10.107.0.0/23",
                    "--disable=traefik",
                    "--node-label",
                    "zone=b",
                ]),
                env: env_of(&[]),
                token: None,
            },
            Case {
                name: "server_url with explicit server command: joining server (HA)",
                k3os: K3os {
                    server_url: Some("https://10.0.0.1:6443".into()),
                    token: Some(Secret("s3cret".into())),
                    k3s_args: strs(&["server", "--node-ip=10.0.0.2"]),
                    ..Default::default()
                },
                role: K3sRole::Server,
                args: strs(&["server", "--node-ip=10.0.0.2"]),
                env: env_of(&[
                    ("K3S_URL", "https://10.0.0.1:6443"),
                    ("K3S_TOKEN", "s3cret"),
                ]),
                token: Some(TokenKind::ClusterSecret),
            },
            Case {
                name: "flags only + server_url: install script picks agent",
                k3os: K3os {
                    server_url: Some("https://s:6443".into()),
                    token: Some(Secret(NODE_TOKEN.into())),
                    k3s_args: strs(&["--node-ip", "10.0.0.3"]),
                    ..Default::default()
                },
                role: K3sRole::Agent,
                args: strs(&["agent", "--node-ip", "10.0.0.3"]),
                env: env_of(&[("K3S_URL", "https://s:6443"), ("K3S_TOKEN", NODE_TOKEN)]),
                token: Some(TokenKind::NodeToken),
            },
            Case {
                name: "flags only without server_url: server",
                k3os: K3os {
                    k3s_args: strs(&["--disable", "traefik"]),
                    ..Default::default()
                },
                role: K3sRole::Server,
                args: strs(&["server", "--disable", "traefik"]),
                env: env_of(&[]),
                token: None,
            },
            Case {
                name: "explicit agent; environment reaches k3s; K3S_URL/K3S_TOKEN win over it",
                k3os: K3os {
                    server_url: Some("https://s:6443".into()),
                    token: Some(Secret("tok".into())),
                    k3s_args: strs(&["agent"]),
                    environment: [
                        ("http_proxy".to_string(), "http://proxy:3128".to_string()),
                        ("K3S_TOKEN".to_string(), "from-env".to_string()),
                    ]
                    .into(),
                    ..Default::default()
                },
                role: K3sRole::Agent,
                args: strs(&["agent"]),
                env: env_of(&[
                    ("K3S_TOKEN", "tok"),
                    ("K3S_URL", "https://s:6443"),
                    ("http_proxy", "http://proxy:3128"),
                ]),
                token: Some(TokenKind::ClusterSecret),
            },
            Case {
                name: "empty server_url and token count as unset",
                k3os: K3os {
                    server_url: Some(String::new()),
                    token: Some(Secret(String::new())),
                    ..Default::default()
                },
                role: K3sRole::Server,
                args: strs(&["server"]),
                env: env_of(&[]),
                token: None,
            },
        ];
        for c in cases {
            let inv = k3s_invocation(&cfg(c.k3os.clone())).unwrap();
            assert_eq!(inv.role, c.role, "{}", c.name);
            assert_eq!(inv.args, c.args, "{}", c.name);
            assert_eq!(inv.env, c.env, "{}", c.name);
            assert_eq!(inv.token_kind, c.token, "{}", c.name);
            assert_eq!(k3s_role(&cfg(c.k3os)).unwrap(), c.role, "{}", c.name);
        }
    }

    #[test]
    fn unknown_first_command_is_an_error() {
        let c = cfg(K3os {
            k3s_args: strs(&["etcd-snapshot", "save"]),
            ..Default::default()
        });
        let err = k3s_role(&c).unwrap_err();
        assert_eq!(
            err,
            RenderError::K3sCommand {
                first: "etcd-snapshot".into()
            }
        );
        assert!(render(&c, &env()).is_err());
    }

    #[test]
    fn debug_redacts_the_token() {
        let inv = k3s_invocation(&cfg(K3os {
            token: Some(Secret("topsecret".into())),
            ..Default::default()
        }))
        .unwrap();
        let dbg = format!("{inv:?}");
        assert!(!dbg.contains("topsecret"), "{dbg}");
        assert!(dbg.contains("<redacted>"));
    }

    #[test]
    fn agent_dropin_env_file_and_effects() {
        let c = cfg(K3os {
            server_url: Some("https://s:6443".into()),
            token: Some(Secret("tok$en".into())),
            labels: [("role".to_string(), "edge worker".to_string())].into(),
            ..Default::default()
        });
        let r = render(&c, &env()).unwrap();
        let dropin = "/etc/systemd/system/k3s-agent.service.d/90-bosun.conf";
        assert!(!r
            .state
            .files
            .contains_key("/etc/systemd/system/k3s.service.d/90-bosun.conf"));
        assert_eq!(
            text(&r, dropin),
            "# Managed by bosun from k3os.server_url/token/labels/taints/k3s_args/environment;\n\
             # local edits are overwritten.\n[Service]\n\
             EnvironmentFile=/etc/rancher/k3s/bosun.env\n\
             ExecStart=\nExecStart=/usr/local/bin/k3s \\\n    agent \\\n    --node-label \\\n    \
             \"role=edge worker\"\n"
        );
        let d = file(&r, dropin);
        assert_eq!((d.mode, d.secret), (0o644, false));
        let envf = file(&r, K3S_ENV_FILE);
        assert_eq!((envf.mode, envf.uid, envf.secret), (0o600, 0, true));
        assert_eq!(
            text(&r, K3S_ENV_FILE),
            "# Managed by bosun (k3s environment); secret.\nK3S_TOKEN=\"tok$en\"\n\
             K3S_URL=\"https://s:6443\"\n"
        );
        let k3s_effects: Vec<&EffectRule> = r
            .state
            .effects
            .iter()
            .filter(|e| {
                matches!(
                    e.effect,
                    Effect::DaemonReload
                        | Effect::RestartUnit { .. }
                        | Effect::EnableUnit { .. }
                        | Effect::DisableUnit { .. }
                )
            })
            .collect();
        let server_dropin = "/etc/systemd/system/k3s.service.d/90-bosun.conf";
        assert_eq!(
            k3s_effects,
            vec![
                &EffectRule {
                    effect: Effect::DaemonReload,
                    trigger: Trigger::Changed(vec![dropin.into(), server_dropin.into()]),
                },
                &EffectRule {
                    effect: Effect::DisableUnit {
                        unit: "k3s.service".into()
                    },
                    trigger: Trigger::Changed(vec![server_dropin.into()]),
                },
                &EffectRule {
                    effect: Effect::EnableUnit {
                        unit: "k3s-agent.service".into()
                    },
                    trigger: Trigger::Changed(vec![dropin.into()]),
                },
                &EffectRule {
                    effect: Effect::RestartUnit {
                        unit: "k3s-agent.service".into()
                    },
                    trigger: Trigger::Changed(vec![dropin.into(), K3S_ENV_FILE.into()]),
                },
                &EffectRule {
                    effect: Effect::RestartUnit {
                        unit: "k3s-agent.service".into()
                    },
                    trigger: Trigger::ChangedUnder("/etc/rancher/k3s".into()),
                },
            ]
        );
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    }

    #[test]
    fn agent_without_token_is_warned() {
        let c = cfg(K3os {
            server_url: Some("https://s:6443".into()),
            ..Default::default()
        });
        let r = render(&c, &env()).unwrap();
        assert!(r.warnings.iter().any(|w| w.contains("without k3os.token")));
    }

    #[test]
    fn server_without_env_has_no_env_file_and_custom_binary() {
        let mut e = env();
        e.settings.k3s_bin = "/opt/k3s bin/k3s".into();
        let r = render(&NodeConfig::default(), &e).unwrap();
        assert!(!r.state.files.contains_key(K3S_ENV_FILE));
        assert_eq!(
            text(&r, "/etc/systemd/system/k3s.service.d/90-bosun.conf"),
            "# Managed by bosun from k3os.server_url/token/labels/taints/k3s_args/environment;\n\
             # local edits are overwritten.\n[Service]\n\
             ExecStart=\nExecStart=\"/opt/k3s bin/k3s\" \\\n    server\n"
        );
    }

    #[test]
    fn credentials_in_k3s_args_make_the_dropin_secret() {
        let c = cfg(K3os {
            k3s_args: strs(&["server", "--agent-token", "abc"]),
            ..Default::default()
        });
        let r = render(&c, &env()).unwrap();
        let d = file(&r, "/etc/systemd/system/k3s.service.d/90-bosun.conf");
        assert_eq!((d.mode, d.secret), (0o600, true));
        assert!(!args_carry_secret(&strs(&[
            "server",
            "--disable=traefik",
            "--node-ip",
            "1.2.3.4"
        ])));
        assert!(args_carry_secret(&strs(&["agent", "-t", "x"])));
        assert!(args_carry_secret(&strs(&[
            "server",
            "--datastore-endpoint=mysql://u:p@h/db"
        ])));
    }

    #[test]
    fn systemd_quoting() {
        assert_eq!(systemd_quote("--node-ip=10.0.0.1"), "--node-ip=10.0.0.1");
        assert_eq!(systemd_quote(""), "\"\"");
        assert_eq!(systemd_quote("a b"), "\"a b\"");
        assert_eq!(systemd_quote("100%"), "\"100%%\"");
        assert_eq!(systemd_quote("$HOME"), "\"$$HOME\"");
        assert_eq!(systemd_quote("say \"hi\"\\"), "\"say \\\"hi\\\"\\\\\"");
        assert_eq!(systemd_quote("it's"), "\"it's\"");
    }

    #[test]
    fn control_characters_in_args_are_rejected() {
        let c = cfg(K3os {
            k3s_args: strs(&["server", "--x=a\nb"]),
            ..Default::default()
        });
        assert!(matches!(
            k3s_invocation(&c).unwrap_err(),
            RenderError::InvalidValue { key, .. } if key == "k3os.k3s_args"
        ));
    }
}
