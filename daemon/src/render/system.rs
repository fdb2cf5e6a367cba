//! Host-level keys: `hostname` (/etc/hostname + the `127.0.1.1` line of /etc/hosts),
//! `k3os.sysctl` (/etc/sysctl.d/90-bosun.conf), `k3os.modules` (/etc/modules-load.d/bosun.conf,
//! parameters in /etc/modprobe.d/bosun.conf) and `k3os.environment` (/etc/environment).
//!
//! Invariants:
//! - /etc/hosts and /etc/environment are edited in place: lines bosun does not own are kept
//!   byte for byte (k3os rewrote them, dropping comments and indentation; bosun does not).
//! - As in k3os every `127.0.1.1` line of /etc/hosts becomes `127.0.1.1 <hostname>`; when there
//!   is none, one is added after the first `127.0.0.1` line (or at the end).
//! - /etc/environment: each configured key replaces the first line assigning it (with or without
//!   `export`), later duplicates of that key are dropped, new keys are appended in key order.
//!   Values are written `KEY="value"` as k3os did (Go `strconv.Quote` for printable text).
//! - Empty maps/lists render nothing (k3os did nothing either).

use super::{push_line, root_file, Builder, RenderEnv, RenderError, ENVIRONMENT, HOSTS};
use crate::config::convert::{check_module_param, valid_module_name};
use crate::config::{KernelModule, NodeConfig};
use crate::desired::{Effect, EffectRule, Trigger};

/// Written whole from `hostname`; a change triggers sethostname.
pub const HOSTNAME: &str = "/etc/hostname";
/// Written from `k3os.sysctls`; a change reloads sysctl.
pub const SYSCTL_CONF: &str = "/etc/sysctl.d/90-bosun.conf";
/// Written from `k3os.modules`; a change modprobes each module.
pub const MODULES_CONF: &str = "/etc/modules-load.d/bosun.conf";
/// `options NAME PARAMS…` for the `k3os.modules` entries that have parameters.
pub const MODPROBE_CONF: &str = "/etc/modprobe.d/bosun.conf";

const HEADER: &str = "# Managed by bosun from the node config; local edits are overwritten.\n";

fn invalid(key: &str, reason: String) -> RenderError {
    RenderError::InvalidValue {
        key: key.into(),
        reason,
    }
}

fn valid_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 64
        && h.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-')
        })
}

pub(crate) fn render_hostname(
    cfg: &NodeConfig,
    env: &RenderEnv,
    b: &mut Builder,
) -> Result<(), RenderError> {
    let Some(h) = cfg.hostname.as_deref() else {
        return Ok(());
    };
    if !valid_hostname(h) {
        return Err(invalid(
            "hostname",
            format!("'{h}' is not a valid host name (letters, digits, '-' and '.', at most 64)"),
        ));
    }
    if !env.node_hostname.is_empty() && env.node_hostname != h {
        b.warnings.push(format!(
            "hostname: '{h}' differs from this node's identity '{}' (the name its layers were \
             selected by)",
            env.node_hostname
        ));
    }
    b.put(root_file(
        HOSTNAME,
        format!("{h}\n").into_bytes(),
        0o644,
        "hostname",
    ));
    let hosts = hosts_with(b.base(HOSTS, &env.hosts), h);
    b.put(root_file(HOSTS, hosts.into_bytes(), 0o644, "hostname"));
    b.effects.push(EffectRule {
        effect: Effect::SetHostname {
            hostname: h.to_string(),
        },
        trigger: Trigger::Changed(vec![HOSTNAME.into()]),
    });
    Ok(())
}

/// /etc/hosts with its `127.0.1.1` line(s) naming `hostname`.
pub fn hosts_with(current: Option<String>, hostname: &str) -> String {
    let wanted = format!("127.0.1.1 {hostname}");
    let Some(current) = current else {
        return format!("127.0.0.1 localhost\n{wanted}\n");
    };
    let mut out = String::with_capacity(current.len() + wanted.len() + 1);
    let mut replaced = false;
    let mut insert_after: Option<usize> = None;
    for line in current.split_inclusive('\n') {
        let first = line.split_whitespace().next();
        if first == Some("127.0.1.1") {
            out.push_str(&wanted);
            out.push_str(if line.ends_with('\n') { "\n" } else { "" });
            replaced = true;
            continue;
        }
        out.push_str(line);
        if first == Some("127.0.0.1") && insert_after.is_none() {
            if !line.ends_with('\n') {
                out.push('\n');
            }
            insert_after = Some(out.len());
        }
    }
    if !replaced {
        match insert_after {
            Some(at) => out.insert_str(at, &format!("{wanted}\n")),
            None => push_line(&mut out, &wanted),
        }
    }
    out
}

pub(crate) fn render_sysctl(cfg: &NodeConfig, b: &mut Builder) -> Result<(), RenderError> {
    if cfg.k3os.sysctls.is_empty() {
        return Ok(());
    }
    let mut text = String::from(HEADER);
    for (k, v) in &cfg.k3os.sysctls {
        let key_ok = !k.is_empty()
            && k.bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"._-/*".contains(&c));
        if !key_ok {
            return Err(invalid(
                "k3os.sysctl",
                format!("'{k}' is not a sysctl name (letters, digits, '.', '_', '-', '/')"),
            ));
        }
        if v.contains(['\n', '\r']) {
            return Err(invalid(
                "k3os.sysctl",
                format!("value of '{k}' contains a line break"),
            ));
        }
        text.push_str(&format!("{k} = {}\n", v.trim()));
    }
    b.put(root_file(
        SYSCTL_CONF,
        text.into_bytes(),
        0o644,
        "k3os.sysctl",
    ));
    b.effects.push(EffectRule {
        effect: Effect::SysctlLoad {
            file: SYSCTL_CONF.into(),
        },
        trigger: Trigger::Changed(vec![SYSCTL_CONF.into()]),
    });
    Ok(())
}

/// `k3os.modules`: every name in [`MODULES_CONF`] (loaded at boot by systemd-modules-load),
/// the parameters of each module that has some as an `options` line in [`MODPROBE_CONF`]
/// (read by every later `modprobe`, including the one at boot), and a `modprobe NAME PARAMS…`
/// per module when either file changes. A module that is already loaded keeps its parameters
/// until it is reloaded or the node reboots (as with k3os, whose `finit_module` ignored EEXIST).
pub(crate) fn render_modules(cfg: &NodeConfig, b: &mut Builder) -> Result<(), RenderError> {
    if cfg.k3os.modules.is_empty() {
        return Ok(());
    }
    let mut names = String::from(HEADER);
    let mut options = String::from(HEADER);
    let mut seen: Vec<&KernelModule> = Vec::new();
    for m in &cfg.k3os.modules {
        check_module(m)?;
        match seen.iter().find(|s| s.name == m.name) {
            Some(s) if s.params == m.params => continue,
            Some(_) => {
                return Err(invalid(
                    "k3os.modules",
                    format!(
                        "module {} is listed twice with different parameters",
                        m.name
                    ),
                ))
            }
            None => seen.push(m),
        }
        names.push_str(&m.name);
        names.push('\n');
        if !m.params.is_empty() {
            options.push_str(&format!("options {} {}\n", m.name, m.params.join(" ")));
        }
    }
    b.put(root_file(
        MODULES_CONF,
        names.into_bytes(),
        0o644,
        "k3os.modules",
    ));
    let mut watched = vec![MODULES_CONF.to_string()];
    if seen.iter().any(|m| !m.params.is_empty()) {
        b.put(root_file(
            MODPROBE_CONF,
            options.into_bytes(),
            0o644,
            "k3os.modules",
        ));
        watched.push(MODPROBE_CONF.into());
    }
    for m in seen {
        b.effects.push(EffectRule {
            effect: Effect::Modprobe {
                module: m.name.clone(),
                params: m.params.clone(),
            },
            trigger: Trigger::Changed(watched.clone()),
        });
    }
    Ok(())
}

/// The module's name and parameters are what `config` accepts (they reach a file and argv).
fn check_module(m: &KernelModule) -> Result<(), RenderError> {
    if !valid_module_name(&m.name) {
        return Err(invalid(
            "k3os.modules",
            format!("'{}' is not a module name", m.name),
        ));
    }
    for p in &m.params {
        check_module_param(p)
            .map_err(|e| invalid("k3os.modules", format!("module {}: {e}", m.name)))?;
    }
    Ok(())
}

/// `KEY="value"` the way k3os wrote it (Go `strconv.Quote` on printable text).
pub(crate) fn quote_env_value(v: &str) -> String {
    let mut s = String::with_capacity(v.len() + 2);
    s.push('"');
    for c in v.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            c => s.push(c),
        }
    }
    s.push('"');
    s
}

/// Checks an environment variable name and value (shared with the k3s env file).
pub(crate) fn check_env(key: &str, name: &str, value: &str) -> Result<(), RenderError> {
    let mut chars = name.chars();
    let name_ok = matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !name_ok {
        return Err(invalid(
            key,
            format!("'{name}' is not a variable name ([A-Za-z_][A-Za-z0-9_]*)"),
        ));
    }
    if value.chars().any(|c| c.is_control()) {
        return Err(invalid(
            key,
            format!("value of '{name}' contains a control character or line break"),
        ));
    }
    Ok(())
}

/// The variable a `/etc/environment` line assigns, if any (`[export ]KEY=...`).
fn assigned_key(line: &str) -> Option<&str> {
    let t = line.trim();
    if t.starts_with('#') {
        return None;
    }
    let t = match t.strip_prefix("export") {
        Some(rest) if rest.starts_with([' ', '\t']) => rest.trim_start(),
        _ => t,
    };
    let (k, _) = t.split_once('=')?;
    Some(k.trim())
}

pub(crate) fn render_environment(
    cfg: &NodeConfig,
    env: &RenderEnv,
    b: &mut Builder,
) -> Result<(), RenderError> {
    let vars = &cfg.k3os.environment;
    if vars.is_empty() {
        return Ok(());
    }
    for (k, v) in vars {
        check_env("k3os.environment", k, v)?;
    }
    let current = b.base(ENVIRONMENT, &env.environment).unwrap_or_default();
    let mut out = String::with_capacity(current.len() + 64);
    let mut written: Vec<&str> = Vec::new();
    for line in current.split_inclusive('\n') {
        match assigned_key(line).and_then(|k| vars.get_key_value(k)) {
            Some((k, v)) => {
                if written.contains(&k.as_str()) {
                    continue; // a later duplicate would override ours
                }
                written.push(k);
                out.push_str(&format!("{k}={}", quote_env_value(v)));
                out.push_str(if line.ends_with('\n') { "\n" } else { "" });
            }
            None => out.push_str(line),
        }
    }
    for (k, v) in vars {
        if !written.contains(&k.as_str()) {
            push_line(&mut out, &format!("{k}={}", quote_env_value(v)));
        }
    }
    // World-readable, as it must be; secret to plans when any variable's name says so.
    let secret = out
        .lines()
        .filter_map(assigned_key)
        .any(crate::config::secrets::env_name_is_secret);
    let mut f = root_file(ENVIRONMENT, out.into_bytes(), 0o644, "k3os.environment");
    f.secret = secret;
    b.put(f);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::super::{render, RenderError};
    use super::*;

    fn with_hostname(h: &str) -> NodeConfig {
        NodeConfig {
            hostname: Some(h.into()),
            ..Default::default()
        }
    }

    #[test]
    fn hostname_writes_etc_hostname_hosts_and_sethostname_on_change() {
        let mut e = env();
        e.node_hostname = "edge-1".into();
        e.hosts =
            Some("127.0.0.1 localhost\n# comment\n  127.0.1.1   old old.lan\n::1 ip6\n".into());
        let r = render(&with_hostname("edge-1"), &e).unwrap();
        assert_eq!(text(&r, "/etc/hostname"), "edge-1\n");
        assert_eq!(
            text(&r, "/etc/hosts"),
            "127.0.0.1 localhost\n# comment\n127.0.1.1 edge-1\n::1 ip6\n"
        );
        assert_eq!(file(&r, "/etc/hosts").mode, 0o644);
        assert_eq!(
            r.state.effects[0],
            EffectRule {
                effect: Effect::SetHostname {
                    hostname: "edge-1".into()
                },
                trigger: Trigger::Changed(vec!["/etc/hostname".into()])
            }
        );
        assert!(r.warnings.is_empty());
    }

    #[test]
    fn hosts_line_is_added_after_localhost_when_missing() {
        assert_eq!(
            hosts_with(Some("# x\n127.0.0.1\tlocalhost\n::1 localhost".into()), "n"),
            "# x\n127.0.0.1\tlocalhost\n127.0.1.1 n\n::1 localhost"
        );
        assert_eq!(
            hosts_with(Some("10.0.0.1 db".into()), "n"),
            "10.0.0.1 db\n127.0.1.1 n\n"
        );
        assert_eq!(hosts_with(None, "n"), "127.0.0.1 localhost\n127.0.1.1 n\n");
    }

    #[test]
    fn write_files_hosts_is_the_base_of_the_hostname_edit() {
        let mut cfg = with_hostname("n1");
        cfg.write_files.push(crate::config::WriteFile {
            path: "/etc/hosts".into(),
            content: b"127.0.0.1 localhost\n10.1.1.1 registry\n".to_vec(),
            mode: 0o644,
            owner: Default::default(),
            encoding: crate::config::Encoding::Plain,
            origin: Default::default(),
        });
        let mut e = env();
        e.node_hostname = "n1".into();
        let r = render(&cfg, &e).unwrap();
        assert_eq!(
            text(&r, "/etc/hosts"),
            "127.0.0.1 localhost\n127.0.1.1 n1\n10.1.1.1 registry\n"
        );
        assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
    }

    #[test]
    fn hostname_different_from_identity_is_warned_and_invalid_rejected() {
        let r = render(&with_hostname("other"), &env()).unwrap();
        assert!(r.warnings[0].contains("differs from this node's identity 'node1'"));
        assert!(matches!(
            render(&with_hostname("bad_name"), &env()).unwrap_err(),
            RenderError::InvalidValue { key, .. } if key == "hostname"
        ));
    }

    #[test]
    fn sysctl_file_sorted_with_load_effect() {
        let mut cfg = NodeConfig::default();
        cfg.k3os
            .sysctls
            .insert("net.ipv4.ip_forward".into(), "1".into());
        cfg.k3os
            .sysctls
            .insert("kernel.printk".into(), "4 4 1 7".into());
        let r = render(&cfg, &env()).unwrap();
        assert_eq!(
            text(&r, SYSCTL_CONF),
            format!("{HEADER}kernel.printk = 4 4 1 7\nnet.ipv4.ip_forward = 1\n")
        );
        assert!(r.state.effects.contains(&EffectRule {
            effect: Effect::SysctlLoad {
                file: SYSCTL_CONF.into()
            },
            trigger: Trigger::Changed(vec![SYSCTL_CONF.into()]),
        }));
        cfg.k3os.sysctls.insert("bad key".into(), "1".into());
        assert!(render(&cfg, &env()).is_err());
    }

    #[test]
    fn modules_file_and_one_modprobe_per_module() {
        let mut cfg = NodeConfig::default();
        cfg.k3os.modules = vec![
            KernelModule::named("kvm"),
            KernelModule::named("nvme"),
            KernelModule::named("kvm"),
        ];
        let r = render(&cfg, &env()).unwrap();
        assert_eq!(text(&r, MODULES_CONF), format!("{HEADER}kvm\nnvme\n"));
        assert!(!r.state.files.contains_key(MODPROBE_CONF));
        let probes: Vec<_> = r
            .state
            .effects
            .iter()
            .filter_map(|e| match &e.effect {
                Effect::Modprobe { module, params } => {
                    assert_eq!(e.trigger, Trigger::Changed(vec![MODULES_CONF.into()]));
                    assert!(params.is_empty());
                    Some(module.as_str())
                }
                _ => None,
            })
            .collect();
        assert_eq!(probes, ["kvm", "nvme"]);
        cfg.k3os.modules = vec![KernelModule::named("nvme poll_queues=2")];
        assert!(render(&cfg, &env()).is_err());
    }

    #[test]
    fn module_parameters_go_to_modprobe_d_and_to_modprobe() {
        let mut cfg = NodeConfig::default();
        let bonding = KernelModule {
            name: "bonding".into(),
            params: vec!["mode=4".into(), "miimon=100".into()],
        };
        cfg.k3os.modules = vec![KernelModule::named("kvm"), bonding.clone()];
        let r = render(&cfg, &env()).unwrap();
        assert_eq!(text(&r, MODULES_CONF), format!("{HEADER}kvm\nbonding\n"));
        assert_eq!(
            text(&r, MODPROBE_CONF),
            format!("{HEADER}options bonding mode=4 miimon=100\n")
        );
        let watched = Trigger::Changed(vec![MODULES_CONF.into(), MODPROBE_CONF.into()]);
        assert!(r.state.effects.contains(&EffectRule {
            effect: Effect::Modprobe {
                module: "bonding".into(),
                params: bonding.params.clone(),
            },
            trigger: watched,
        }));
        // Parameters that config would refuse are refused here too (they reach argv).
        cfg.k3os.modules = vec![KernelModule {
            name: "bonding".into(),
            params: vec!["mode=4;reboot".into()],
        }];
        assert!(render(&cfg, &env()).is_err());
        let other = KernelModule {
            name: "bonding".into(),
            params: vec!["mode=1".into()],
        };
        cfg.k3os.modules = vec![bonding, other];
        assert!(render(&cfg, &env()).is_err());
    }

    #[test]
    fn environment_merges_and_preserves_unrelated_lines() {
        let mut e = env();
        e.environment = Some(
            "# proxy settings\nPATH=\"/usr/bin:/bin\"\nexport http_proxy=old\nLANG=C\nhttp_proxy=dup\nexporter=1"
                .into(),
        );
        let mut cfg = NodeConfig::default();
        cfg.k3os
            .environment
            .insert("http_proxy".into(), "http://proxy:3128".into());
        cfg.k3os
            .environment
            .insert("NO_PROXY".into(), "a \"b\" \\c".into());
        cfg.k3os.environment.insert("exporter".into(), "2".into());
        let r = render(&cfg, &e).unwrap();
        assert_eq!(
            text(&r, "/etc/environment"),
            "# proxy settings\nPATH=\"/usr/bin:/bin\"\nhttp_proxy=\"http://proxy:3128\"\nLANG=C\n\
exporter=\"2\"\nNO_PROXY=\"a \\\"b\\\" \\\\c\"\n"
        );
    }

    #[test]
    fn environment_created_when_missing_and_untouched_when_not_configured() {
        let mut cfg = NodeConfig::default();
        assert!(!render(&cfg, &env())
            .unwrap()
            .state
            .files
            .contains_key("/etc/environment"));
        cfg.k3os.environment.insert("A".into(), "1".into());
        cfg.k3os.environment.insert("B".into(), "".into());
        let r = render(&cfg, &env()).unwrap();
        assert_eq!(text(&r, "/etc/environment"), "A=\"1\"\nB=\"\"\n");
        cfg.k3os.environment.insert("1BAD".into(), "".into());
        assert!(render(&cfg, &env()).is_err());
    }
}
