//! The `k3os:` block, one group of keys per function: keys bosun ignores (with a warning), the
//! kernel (modules, sysctls), the network (DNS, NTP, Wi-Fi), the `rancher` account's password,
//! how k3s joins a cluster (server URL, token, args, environment) and how the node registers
//! (labels, taints).

use super::syntax::{control_character, valid_hostname};
use super::tree::{join, key_pos, list, map, text};
use super::Cx;
use crate::config::model::{K3os, K3sRole, Secret, Wifi};
use crate::config::yaml::{Kind, Node, Pos};

/// Converts the `k3os:` block `k`; bad values are reported and left out.
pub(super) fn k3os(cx: &mut Cx, k: &Node) -> K3os {
    let mut out = K3os::default();
    ignored_keys(cx, k, &mut out);
    kernel_keys(cx, k, &mut out);
    network_keys(cx, k, &mut out);
    if let Some(n) = k.get("password") {
        out.password = password(cx, n);
    }
    k3s_join_keys(cx, k, &mut out);
    registration_keys(cx, k, &mut out);
    out
}

/// `data_sources` and `install`: k3os features that do not apply to bosun. Kept (so `explain`
/// can show them) and warned about.
fn ignored_keys(cx: &mut Cx, k: &Node, out: &mut K3os) {
    if let Some(n) = k.get("data_sources") {
        out.data_sources = list(Some(n)).into_iter().map(|(s, _)| s).collect();
        cx.warn(
            key_pos(k, "data_sources").unwrap_or(&n.pos),
            "k3os.data_sources",
            "k3os cloud data sources do not apply to bosun (the config comes from Git); ignored",
        );
    }
    if let Some(n) = k.get("install") {
        out.install_present = true;
        cx.warn(
            key_pos(k, "install").unwrap_or(&n.pos),
            "k3os.install",
            "the k3os installer does not apply to bosun; ignored",
        );
    }
}

/// `modules` (names with optional parameters) and `sysctls` (dotted names, single-line values).
fn kernel_keys(cx: &mut Cx, k: &Node, out: &mut K3os) {
    out.modules = super::modules::modules(cx, k.get("modules"));
    for (key, val, kpos, pos) in map(k.get("sysctls")) {
        let field = format!("k3os.sysctls.{key}");
        if key.is_empty()
            || !key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_./-*".contains(&b))
        {
            cx.err(
                &kpos,
                &field,
                "invalid sysctl name; expected a dotted name such as net.ipv4.ip_forward",
            );
        } else if let Some(e) = control_character(&val, &['\t']) {
            cx.err(
                &pos,
                &field,
                format!("value {e}; expected a single-line value"),
            );
        } else {
            out.sysctls.insert(key, val);
        }
    }
}

/// `dns_nameservers` (IP addresses), `ntp_servers` (host names) and `wifi` networks.
fn network_keys(cx: &mut Cx, k: &Node, out: &mut K3os) {
    for (s, pos) in list(k.get("dns_nameservers")) {
        if s.parse::<std::net::IpAddr>().is_ok() {
            out.dns_nameservers.push(s);
        } else {
            cx.err(
                &pos,
                "k3os.dns_nameservers",
                format!("{s:?} is not an IP address; expected an IPv4 or IPv6 address"),
            );
        }
    }
    for (s, pos) in list(k.get("ntp_servers")) {
        if !s.is_empty() && !s.contains(char::is_whitespace) && !s.contains(char::is_control) {
            out.ntp_servers.push(s);
        } else {
            cx.err(
                &pos,
                "k3os.ntp_servers",
                format!("{s:?} is not a host name; expected a host name or address"),
            );
        }
    }
    if let Some(Kind::Seq(items)) = k.get("wifi").map(|n| &n.kind) {
        for (i, it) in items.iter().enumerate() {
            if let Some(w) = wifi(cx, it, &format!("k3os.wifi[{i}]")) {
                out.wifi.push(w);
            }
        }
    }
}

/// One `wifi` entry: an SSID of 1 to 32 characters and a WPA passphrase (8 to 63 characters,
/// or 64 hex digits).
fn wifi(cx: &mut Cx, it: &Node, field: &str) -> Option<Wifi> {
    let name = it.get("name").and_then(text).unwrap_or_default();
    if name.is_empty() || name.len() > 32 {
        cx.err(
            &it.pos,
            &join(field, "name"),
            "expected an SSID of 1 to 32 characters",
        );
        return None;
    }
    match it.get("passphrase").and_then(text) {
        Some(p)
            if ((8..=63).contains(&p.len()) && p.bytes().all(|b| (0x20..0x7f).contains(&b)))
                || (p.len() == 64 && p.bytes().all(|b| b.is_ascii_hexdigit())) =>
        {
            Some(Wifi {
                name,
                passphrase: Secret(p),
            })
        }
        Some(_) => {
            let pos = &it.get("passphrase").unwrap_or(it).pos;
            cx.err(
                pos,
                &join(field, "passphrase"),
                "expected a WPA passphrase of 8 to 63 characters of printable ASCII (or 64 hex digits)",
            );
            None
        }
        None => {
            cx.err(
                &it.pos,
                &join(field, "passphrase"),
                "missing; expected a WPA passphrase",
            );
            None
        }
    }
}

/// `password` of the `rancher` account: any non-empty text (plain or a `$…` crypt hash)
/// without `:` or control characters, which the `/etc/shadow` line cannot hold. The value is
/// never echoed.
fn password(cx: &mut Cx, n: &Node) -> Option<Secret> {
    match text(n) {
        Some(p) if p.contains(':') || p.contains(char::is_control) => {
            let msg = "contains ':' or a control character (a line break…), which /etc/shadow \
                       cannot hold; expected a password or a `$…` crypt hash";
            cx.err(&n.pos, "k3os.password", msg);
            None
        }
        Some(p) if !p.is_empty() => Some(Secret(p)),
        _ => {
            cx.err(
                &n.pos,
                "k3os.password",
                "empty; expected a password or a `$…` crypt hash",
            );
            None
        }
    }
}

/// How k3s starts and joins: `server_url` (https), `token`, `k3s_args` (exec-style, starting
/// with `server`, `agent` or a flag) and `environment` (variables for the k3s service).
fn k3s_join_keys(cx: &mut Cx, k: &Node, out: &mut K3os) {
    if let Some(n) = k.get("server_url") {
        let u = text(n).unwrap_or_default();
        match reqwest::Url::parse(&u) {
            Ok(url)
                if url.scheme() == "https"
                    && url.host().is_some()
                    && !u.contains(char::is_control) =>
            {
                out.server_url = Some(u)
            }
            _ => cx.err(
                &n.pos,
                "k3os.server_url",
                format!("{u:?} is not a K3s server URL; expected https://HOST:6443"),
            ),
        }
    }
    if let Some(n) = k.get("token") {
        match text(n) {
            Some(t)
                if !t.is_empty()
                    && !t.contains(char::is_whitespace)
                    && !t.contains(char::is_control) =>
            {
                out.token = Some(Secret(t))
            }
            _ => cx.err(
                &n.pos,
                "k3os.token",
                "expected a non-empty token without spaces or control characters",
            ),
        }
    }
    let args = list(k.get("k3s_args"));
    out.k3s_args = args.iter().map(|(s, _)| s.clone()).collect();
    if let Some((first, pos)) = args.first() {
        k3s_command(cx, out, first, pos);
    }
    for (i, (a, pos)) in args.iter().enumerate() {
        if let Some(e) = control_character(a, &[]) {
            let msg = format!("{e}; expected one k3s argument per element");
            cx.err(pos, &format!("k3os.k3s_args[{i}]"), msg);
        }
    }
    environment(cx, k, out);
}

/// Checks `k3s_args[0]` (`first`, at `pos`) by the one role rule, [`K3os::k3s_role`]: another
/// word than `server` or `agent` is an error; a flag is a lenient warning naming the role the
/// k3s install script picks (k3os passed the args on and left the choice to it).
fn k3s_command(cx: &mut Cx, out: &K3os, first: &str, pos: &Pos) {
    let field = "k3os.k3s_args[0]";
    match out.k3s_role() {
        Err(e) => cx.err(pos, field, format!("{:?}: the first element must be `server`, `agent` or a flag (k3s_args are exec-style, one argument per element)", e.first)),
        Ok(role) if role.command() != first => {
            let why = if role == K3sRole::Agent {
                "server_url is set"
            } else {
                "server_url is not set"
            };
            let msg = format!("{first:?} is a flag, not `server` or `agent`; running `k3s {role}` as the k3s install script did for k3os ({why}); write `{role}` first to say so");
            cx.lenient(pos, field, msg);
        }
        Ok(_) => {}
    }
}

/// `environment`: variable names of letters, digits and `_`, single-line values.
fn environment(cx: &mut Cx, k: &Node, out: &mut K3os) {
    for (key, val, kpos, pos) in map(k.get("environment")) {
        let field = format!("k3os.environment.{key}");
        let name_ok = key
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
            && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !name_ok {
            cx.err(
                &kpos,
                &field,
                "invalid variable name; expected letters, digits and '_' not starting with a digit",
            );
        } else if let Some(e) = control_character(&val, &[]) {
            cx.err(&pos, &field, format!("value {e}; expected a single line"));
        } else {
            out.environment.insert(key, val);
        }
    }
}

/// How the node registers with Kubernetes: `labels` (Kubernetes label syntax) and `taints`
/// (`key[=value]:Effect`).
fn registration_keys(cx: &mut Cx, k: &Node, out: &mut K3os) {
    for (key, val, kpos, pos) in map(k.get("labels")) {
        let field = format!("k3os.labels.{key}");
        if !valid_label_key(&key) {
            cx.err(
                &kpos,
                &field,
                "invalid label key; expected [prefix/]name of letters, digits, '-', '_', '.'",
            );
        } else if val.len() > 63
            || !val
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            cx.err(&pos, &field, format!("invalid label value {val:?}; expected at most 63 letters, digits, '-', '_', '.'"));
        } else {
            out.labels.insert(key, val);
        }
    }
    for (t, pos) in list(k.get("taints")) {
        let ok = !t.contains(char::is_control)
            && t.rsplit_once(':').is_some_and(|(kv, effect)| {
                matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute")
                    && valid_label_key(kv.split_once('=').map_or(kv, |(k, _)| k))
            });
        if ok {
            out.taints.push(t);
        } else {
            cx.err(&pos, "k3os.taints", format!("{t:?} is not a taint; expected key[=value]:NoSchedule|PreferNoSchedule|NoExecute"));
        }
    }
}

/// A Kubernetes label key: `[prefix/]name`, the prefix a DNS name, the name at most 63
/// letters, digits, `-`, `_`, `.` starting with a letter or digit.
fn valid_label_key(key: &str) -> bool {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric());
    name_ok && prefix.is_none_or(valid_hostname)
}
