//! Turns a merged, canonical config tree into a typed [`NodeConfig`], validating every value.
//!
//! All problems are collected (not just the first), each naming the file, line, column and field
//! of the offending value and saying what was expected. Nothing here does I/O; decoding (base64,
//! gzip, `!!binary`) happens here, with a size cap, so a bad or hostile file is refused before
//! anything could be written.

use std::collections::BTreeMap;
use std::io::Read;
use std::time::Duration;

use base64::Engine;

use super::diag::Diagnostic;
use super::model::*;
use super::yaml::{Kind, Node, Pos, Scalar, BINARY_TAG};

/// Limits and switches for validation.
#[derive(Debug, Clone)]
pub struct ConvertOptions {
    /// Largest decoded write_files content accepted, in bytes. Default 64 MiB.
    pub max_file_size: u64,
}

impl Default for ConvertOptions {
    fn default() -> Self {
        ConvertOptions {
            max_file_size: 64 << 20,
        }
    }
}

struct Cx<'a> {
    diags: &'a mut Vec<Diagnostic>,
    opts: &'a ConvertOptions,
}

impl Cx<'_> {
    fn err(&mut self, pos: &Pos, field: &str, msg: impl Into<String>) {
        self.diags.push(Diagnostic::error(pos.clone(), field, msg));
    }
    fn warn(&mut self, pos: &Pos, field: &str, msg: impl Into<String>) {
        self.diags
            .push(Diagnostic::warning(pos.clone(), field, msg));
    }
}

fn scalar(n: &Node) -> Option<&Scalar> {
    match &n.kind {
        Kind::Scalar(s) => Some(s),
        _ => None,
    }
}

fn text(n: &Node) -> Option<String> {
    scalar(n).map(|s| s.value.clone())
}

fn list(n: Option<&Node>) -> Vec<(String, Pos)> {
    match n.map(|n| &n.kind) {
        Some(Kind::Seq(items)) => items
            .iter()
            .filter_map(|it| text(it).map(|t| (t, it.pos.clone())))
            .collect(),
        _ => Vec::new(),
    }
}

/// A mapping of scalars as (key, value, position of the key, position of the value).
fn map(n: Option<&Node>) -> Vec<(String, String, Pos, Pos)> {
    match n.map(|n| &n.kind) {
        Some(Kind::Map(entries)) => entries
            .iter()
            .filter_map(|e| {
                text(&e.value).map(|t| (e.key.clone(), t, e.key_pos.clone(), e.value.pos.clone()))
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Position of `key` itself within a mapping node.
fn key_pos<'a>(n: &'a Node, key: &str) -> Option<&'a Pos> {
    n.as_map()?
        .iter()
        .find(|e| e.key == key)
        .map(|e| &e.key_pos)
}

fn join(a: &str, b: &str) -> String {
    format!("{a}.{b}")
}

/// Converts the merged tree. `hostname` is the node name (default for node_ready checks).
pub fn convert(root: &Node, opts: &ConvertOptions, diags: &mut Vec<Diagnostic>) -> NodeConfig {
    let mut cx = Cx { diags, opts };
    let mut cfg = NodeConfig::default();

    if let Some(n) = root.get("hostname") {
        if let Some(h) = text(n) {
            if valid_hostname(&h) {
                cfg.hostname = Some(h);
            } else {
                cx.err(&n.pos, "hostname", format!("{h:?} is not a valid hostname; expected letters, digits and '-' in dot-separated labels of at most 63 characters"));
            }
        }
    }
    for (i, (line, pos)) in list(root.get("ssh_authorized_keys"))
        .into_iter()
        .enumerate()
    {
        if let Some(source) = key_source(&mut cx, &line, &pos, &format!("ssh_authorized_keys[{i}]"))
        {
            cfg.ssh_authorized_keys.push(AuthorizedKey {
                source,
                origin: pos.origin(),
            });
        }
    }
    if let Some(Kind::Seq(items)) = root.get("write_files").map(|n| &n.kind) {
        let mut seen: BTreeMap<String, Pos> = BTreeMap::new();
        for (i, item) in items.iter().enumerate() {
            if let Some(wf) = write_file(&mut cx, item, i) {
                if let Some(prev) = seen.get(&wf.path) {
                    let field = format!("write_files[{}]", wf.path);
                    let msg =
                        format!("path written twice in one layer (also at {prev}); keep one entry");
                    cx.err(&item.pos, &field, msg);
                    continue;
                }
                seen.insert(wf.path.clone(), item.pos.clone());
                cfg.write_files.push(wf);
            }
        }
    }
    cfg.init_cmd = commands(&mut cx, root.get("init_cmd"), "init_cmd");
    cfg.boot_cmd = commands(&mut cx, root.get("boot_cmd"), "boot_cmd");
    cfg.run_cmd = commands(&mut cx, root.get("run_cmd"), "run_cmd");
    if let Some(k) = root.get("k3os") {
        cfg.k3os = k3os(&mut cx, k);
    }
    if let Some(u) = root.get("upgrade") {
        cfg.upgrade = upgrade(&mut cx, u);
    }
    if let Some(h) = root.get("health") {
        cfg.health = health(&mut cx, h);
    }
    cfg
}

fn commands(cx: &mut Cx, n: Option<&Node>, field: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, (c, pos)) in list(n).into_iter().enumerate() {
        if c.trim().is_empty() {
            cx.err(
                &pos,
                &format!("{field}[{i}]"),
                "empty command; expected a shell command line",
            );
        } else {
            out.push(c);
        }
    }
    out
}

pub fn valid_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// Checks a URL: https anywhere, http only to loopback (test servers). Returns an error text.
fn check_url(s: &str) -> Result<(), String> {
    let u = reqwest::Url::parse(s).map_err(|e| format!("{s:?} is not a valid URL ({e})"))?;
    match u.scheme() {
        "https" if u.host().is_some() => Ok(()),
        "http" if crate::netpolicy::is_loopback_host(&u) => Ok(()),
        "http" => Err(format!(
            "{s:?} uses plain http; expected https (http is allowed only to loopback)"
        )),
        other => Err(format!("{s:?} has scheme {other:?}; expected https")),
    }
}

fn key_source(cx: &mut Cx, line: &str, pos: &Pos, field: &str) -> Option<KeySource> {
    let line = line.trim();
    let user_ok = |u: &str| {
        !u.is_empty()
            && u.len() <= 255
            && u.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    };
    if let Some(u) = line.strip_prefix("github:") {
        if user_ok(u) {
            return Some(KeySource::GitHub(u.to_string()));
        }
        cx.err(
            pos,
            field,
            format!("{u:?} is not a GitHub user name; expected github:USER"),
        );
        return None;
    }
    if let Some(u) = line.strip_prefix("gitlab:") {
        if user_ok(u) {
            return Some(KeySource::GitLab(u.to_string()));
        }
        cx.err(
            pos,
            field,
            format!("{u:?} is not a GitLab user name; expected gitlab:USER"),
        );
        return None;
    }
    if line.starts_with("https://") || line.starts_with("http://") {
        return match check_url(line) {
            Ok(()) => Some(KeySource::Url(line.to_string())),
            Err(e) => {
                cx.err(pos, field, e);
                None
            }
        };
    }
    match ssh_key::PublicKey::from_openssh(line) {
        Ok(_) => Some(KeySource::Literal(line.to_string())),
        Err(e) => {
            cx.err(pos, field, format!("not an SSH public key ({e}); expected `TYPE BASE64 [comment]`, github:USER, gitlab:USER or an https URL"));
            None
        }
    }
}

/// Normalises an absolute path: rejects relative paths, `..`, `.`, empty components, NUL and
/// the kernel's virtual filesystems.
pub fn check_path(p: &str) -> Result<String, String> {
    if !p.starts_with('/') {
        return Err(format!(
            "{p:?} is not absolute; expected a path starting with /"
        ));
    }
    if p.contains('\0') {
        return Err("path contains a NUL byte".into());
    }
    let parts: Vec<&str> = p[1..].split('/').collect();
    if parts.iter().any(|c| *c == ".." || *c == ".") {
        return Err(format!(
            "{p:?} contains `.` or `..`; expected a normalised absolute path"
        ));
    }
    if parts.iter().any(|c| c.is_empty()) {
        return Err(format!(
            "{p:?} has an empty component or trailing /; expected a normalised file path"
        ));
    }
    for bad in ["proc", "sys", "dev"] {
        if parts.first() == Some(&bad) {
            return Err(format!(
                "{p:?} is under /{bad}, a kernel filesystem; bosun writes only regular files"
            ));
        }
    }
    Ok(p.to_string())
}

fn write_file(cx: &mut Cx, item: &Node, i: usize) -> Option<WriteFile> {
    let base = format!("write_files[{i}]");
    let Some(pnode) = item.get("path") else {
        cx.err(
            &item.pos,
            &base,
            "missing `path`; expected an absolute file path",
        );
        return None;
    };
    let raw = text(pnode).unwrap_or_default();
    let path = match check_path(raw.trim()) {
        Ok(p) => p,
        Err(e) => {
            cx.err(&pnode.pos, &join(&base, "path"), e);
            return None;
        }
    };
    let field = format!("write_files[{path}]");
    let mut ok = true;

    let encoding_text = item.get("encoding").and_then(text).unwrap_or_default();
    let (b64, gz) = match encoding_text.trim().to_ascii_lowercase().as_str() {
        "" => (false, false),
        "b64" | "base64" => (true, false),
        "gz" | "gzip" => (false, true),
        "gz+base64" | "gzip+base64" | "gz+b64" | "gzip+b64" => (true, true),
        other => {
            let pos = &item.get("encoding").unwrap_or(item).pos;
            cx.err(pos, &join(&field, "encoding"), format!("unsupported encoding {other:?}; expected one of \"\", b64, base64, gz, gzip, gz+base64, gzip+base64, gz+b64, gzip+b64"));
            return None;
        }
    };

    let cnode = item.get("content");
    let (mut bytes, binary) = match cnode.and_then(scalar) {
        None => (Vec::new(), false),
        Some(s) if s.tag.as_deref() == Some(BINARY_TAG) => match decode_b64(&s.value) {
            Ok(b) => (b, true),
            Err(e) => {
                cx.err(
                    &cnode.unwrap().pos,
                    &join(&field, "content"),
                    format!("invalid !!binary base64: {e}"),
                );
                return None;
            }
        },
        Some(s) => (s.value.clone().into_bytes(), false),
    };
    let cpos = cnode.map(|n| n.pos.clone()).unwrap_or(item.pos.clone());
    if b64 {
        match std::str::from_utf8(&bytes)
            .map_err(|e| e.to_string())
            .and_then(decode_b64)
        {
            Ok(b) => bytes = b,
            Err(e) => {
                cx.err(
                    &cpos,
                    &join(&field, "content"),
                    format!("invalid base64 (encoding {encoding_text:?}): {e}"),
                );
                return None;
            }
        }
    }
    if gz {
        match gunzip(&bytes, cx.opts.max_file_size) {
            Ok(b) => bytes = b,
            Err(e) => {
                cx.err(
                    &cpos,
                    &join(&field, "content"),
                    format!("invalid gzip (encoding {encoding_text:?}): {e}"),
                );
                return None;
            }
        }
    }
    if bytes.len() as u64 > cx.opts.max_file_size {
        cx.err(
            &cpos,
            &join(&field, "content"),
            format!(
                "content is {} bytes; the limit is {} bytes per file",
                bytes.len(),
                cx.opts.max_file_size
            ),
        );
        ok = false;
    }
    let encoding = match (binary, b64, gz) {
        (true, _, _) => Encoding::YamlBinary,
        (false, true, true) => Encoding::GzipBase64,
        (false, true, false) => Encoding::Base64,
        (false, false, true) => Encoding::Gzip,
        (false, false, false) => Encoding::Plain,
    };

    let mode = match item.get("permissions") {
        None => 0o644,
        Some(n) => match scalar(n).map(|s| parse_mode(&s.value)) {
            Some(Ok(m)) => m,
            Some(Err(e)) => {
                cx.err(&n.pos, &join(&field, "permissions"), e);
                ok = false;
                0
            }
            None => 0,
        },
    };
    let owner = match item.get("owner") {
        None => OwnerSpec::default(),
        Some(n) => match parse_owner(&text(n).unwrap_or_default()) {
            Ok(o) => o,
            Err(e) => {
                cx.err(&n.pos, &join(&field, "owner"), e);
                ok = false;
                OwnerSpec::default()
            }
        },
    };
    ok.then(|| WriteFile {
        path,
        content: bytes,
        mode,
        owner,
        encoding,
        origin: item.pos.origin(),
    })
}

fn decode_b64(s: &str) -> Result<Vec<u8>, String> {
    let compact: String = s.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact.as_bytes())
        .map_err(|e| e.to_string())
}

fn gunzip(data: &[u8], cap: u64) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut dec = flate2::read::GzDecoder::new(data).take(cap + 1);
    dec.read_to_end(&mut out).map_err(|e| e.to_string())?;
    if out.len() as u64 > cap {
        return Err(format!(
            "decompresses to more than the {cap} byte limit per file (a gzip bomb?)"
        ));
    }
    Ok(out)
}

/// `'0644'`, `'644'`, `0644`, `644`, `0o644` → 0o644. The digits are always read as octal.
pub fn parse_mode(s: &str) -> Result<u32, String> {
    let t = s.trim();
    let digits = t.strip_prefix("0o").unwrap_or(t);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "{t:?} is not an octal mode; expected octal digits such as '0644'"
        ));
    }
    if let Some(b) = digits.bytes().find(|b| *b == b'8' || *b == b'9') {
        return Err(format!(
            "{t:?} contains the digit {}; expected octal digits 0-7 such as '0644'",
            b as char
        ));
    }
    let v = u32::from_str_radix(digits, 8).map_err(|e| e.to_string())?;
    if v > 0o7777 {
        return Err(format!(
            "{t:?} is larger than 07777; expected a file mode such as '0644'"
        ));
    }
    Ok(v)
}

fn id_or_name(s: &str) -> Result<IdOrName, String> {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse::<u32>()
            .map(IdOrName::Id)
            .map_err(|_| format!("{s:?} is not a valid numeric id"));
    }
    let valid = !s.is_empty()
        && s.len() <= 32
        && s.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-$".contains(&b));
    if valid {
        Ok(IdOrName::Name(s.to_string()))
    } else {
        Err(format!("{s:?} is not a user or group name"))
    }
}

/// `user`, `user:group`, `uid:gid`.
pub fn parse_owner(s: &str) -> Result<OwnerSpec, String> {
    let t = s.trim();
    let expected = "expected `user`, `user:group` or `uid:gid`";
    let mut parts = t.split(':');
    let user = parts.next().unwrap_or_default();
    let group = parts.next();
    if parts.next().is_some() {
        return Err(format!("{t:?} has more than one ':'; {expected}"));
    }
    let user = id_or_name(user).map_err(|e| format!("{e}; {expected}"))?;
    let group = match group {
        None => None,
        Some(g) => Some(id_or_name(g).map_err(|e| format!("{e}; {expected}"))?),
    };
    Ok(OwnerSpec { user, group })
}

fn k3os(cx: &mut Cx, k: &Node) -> K3os {
    let mut out = K3os::default();
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
    for (m, pos) in list(k.get("modules")) {
        if !m.is_empty()
            && m.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            out.modules.push(m);
        } else {
            cx.err(
                &pos,
                "k3os.modules",
                format!("{m:?} is not a kernel module name; expected letters, digits, '_' and '-'"),
            );
        }
    }
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
        } else if val.contains('\n') {
            cx.err(
                &pos,
                &field,
                "value contains a newline; expected a single-line value",
            );
        } else {
            out.sysctls.insert(key, val);
        }
    }
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
        if !s.is_empty() && !s.contains(char::is_whitespace) {
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
            let field = format!("k3os.wifi[{i}]");
            let name = it.get("name").and_then(text).unwrap_or_default();
            let pass = it.get("passphrase").and_then(text);
            if name.is_empty() || name.len() > 32 {
                cx.err(
                    &it.pos,
                    &join(&field, "name"),
                    "expected an SSID of 1 to 32 characters",
                );
                continue;
            }
            match pass {
                Some(p)
                    if (8..=63).contains(&p.len())
                        || (p.len() == 64 && p.bytes().all(|b| b.is_ascii_hexdigit())) =>
                {
                    out.wifi.push(Wifi {
                        name,
                        passphrase: Secret(p),
                    });
                }
                Some(_) => {
                    let pos = &it.get("passphrase").unwrap_or(it).pos;
                    cx.err(
                        pos,
                        &join(&field, "passphrase"),
                        "expected a WPA passphrase of 8 to 63 characters (or 64 hex digits)",
                    );
                }
                None => cx.err(
                    &it.pos,
                    &join(&field, "passphrase"),
                    "missing; expected a WPA passphrase",
                ),
            }
        }
    }
    if let Some(n) = k.get("password") {
        match text(n) {
            Some(p) if !p.is_empty() => out.password = Some(Secret(p)),
            _ => cx.err(
                &n.pos,
                "k3os.password",
                "empty; expected a password or a `$…` crypt hash",
            ),
        }
    }
    if let Some(n) = k.get("server_url") {
        let u = text(n).unwrap_or_default();
        match reqwest::Url::parse(&u) {
            Ok(url) if url.scheme() == "https" && url.host().is_some() => out.server_url = Some(u),
            _ => cx.err(
                &n.pos,
                "k3os.server_url",
                format!("{u:?} is not a K3s server URL; expected https://HOST:6443"),
            ),
        }
    }
    if let Some(n) = k.get("token") {
        match text(n) {
            Some(t) if !t.is_empty() && !t.contains(char::is_whitespace) => {
                out.token = Some(Secret(t))
            }
            _ => cx.err(
                &n.pos,
                "k3os.token",
                "expected a non-empty token without spaces",
            ),
        }
    }
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
    let args = list(k.get("k3s_args"));
    if let Some((first, pos)) = args.first() {
        if first != "server" && first != "agent" {
            cx.err(pos, "k3os.k3s_args[0]", format!("{first:?}: the first element must be `server` or `agent` (k3s_args are exec-style, one argument per element)"));
        }
    }
    out.k3s_args = args.into_iter().map(|(s, _)| s).collect();
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
        } else if val.contains('\n') {
            cx.err(
                &pos,
                &field,
                "value contains a newline; expected a single line",
            );
        } else {
            out.environment.insert(key, val);
        }
    }
    for (t, pos) in list(k.get("taints")) {
        let ok = t.rsplit_once(':').is_some_and(|(kv, effect)| {
            matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute")
                && valid_label_key(kv.split_once('=').map_or(kv, |(k, _)| k))
        });
        if ok {
            out.taints.push(t);
        } else {
            cx.err(&pos, "k3os.taints", format!("{t:?} is not a taint; expected key[=value]:NoSchedule|PreferNoSchedule|NoExecute"));
        }
    }
    out
}

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

fn parse_uint(n: &Node) -> Result<u64, String> {
    let t = text(n).unwrap_or_default();
    t.trim()
        .parse::<u64>()
        .map_err(|_| format!("{t:?} is not a non-negative integer"))
}

/// `300`, `90s`, `5m`, `1h30m`, `250ms` → Duration.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let bad =
        || format!("{t:?} is not a duration; expected seconds or a value like 90s, 5m, 1h30m");
    if let Ok(secs) = t.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = t;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (Duration::from_millis(1), 2)
        } else if rest.starts_with('s') {
            (Duration::from_secs(1), 1)
        } else if rest.starts_with('m') {
            (Duration::from_secs(60), 1)
        } else if rest.starts_with('h') {
            (Duration::from_secs(3600), 1)
        } else {
            return Err(bad());
        };
        total += unit * u32::try_from(n).map_err(|_| bad())?;
        rest = &rest[len..];
    }
    Ok(total)
}

fn upgrade(cx: &mut Cx, u: &Node) -> Option<UpgradeConfig> {
    let mut ok = true;
    let mut req = |cx: &mut Cx, key: &str| -> Option<(String, Pos)> {
        match u.get(key) {
            Some(n) => Some((text(n).unwrap_or_default(), n.pos.clone())),
            None => {
                cx.err(
                    &u.pos,
                    &format!("upgrade.{key}"),
                    "missing; required in an upgrade block",
                );
                ok = false;
                None
            }
        }
    };
    let version = req(cx, "version");
    let image = req(cx, "image");
    let sha = req(cx, "sha256");
    let mut cfg = UpgradeConfig {
        version: String::new(),
        image: String::new(),
        sha256: [0; 32],
        size: None,
        compression: None,
        tries: 3,
    };
    if let Some((v, pos)) = version {
        if v.trim().is_empty() || v.contains(char::is_whitespace) {
            cx.err(
                &pos,
                "upgrade.version",
                "expected a version string without spaces",
            );
            ok = false;
        }
        cfg.version = v;
    }
    if let Some((img, pos)) = image {
        let r = if img.starts_with('/') {
            check_path(&img).map(|_| ())
        } else {
            check_url(&img)
        };
        if let Err(e) = r {
            cx.err(
                &pos,
                "upgrade.image",
                format!("{e}; expected an https URL or an absolute path"),
            );
            ok = false;
        }
        cfg.image = img;
    }
    if let Some((s, pos)) = sha {
        match hex::decode(s.trim()) {
            Ok(b) if b.len() == 32 => cfg.sha256.copy_from_slice(&b),
            _ => {
                cx.err(
                    &pos,
                    "upgrade.sha256",
                    "expected 64 hexadecimal digits (the SHA-256 of the image)",
                );
                ok = false;
            }
        }
    }
    if let Some(n) = u.get("size") {
        match parse_uint(n) {
            Ok(v) if v > 0 => cfg.size = Some(v),
            Ok(_) => {
                cx.err(
                    &n.pos,
                    "upgrade.size",
                    "expected a positive number of bytes",
                );
                ok = false;
            }
            Err(e) => {
                cx.err(
                    &n.pos,
                    "upgrade.size",
                    format!("{e}; expected a number of bytes"),
                );
                ok = false;
            }
        }
    }
    if let Some(n) = u.get("compression") {
        cfg.compression = match text(n).unwrap_or_default().as_str() {
            "none" => Some(Compression::None),
            "gzip" => Some(Compression::Gzip),
            "zstd" => Some(Compression::Zstd),
            other => {
                cx.err(
                    &n.pos,
                    "upgrade.compression",
                    format!("{other:?}; expected one of \"none\", \"gzip\", \"zstd\""),
                );
                ok = false;
                None
            }
        };
    }
    if let Some(n) = u.get("tries") {
        match parse_uint(n) {
            Ok(t @ 1..=15) => cfg.tries = t as u8,
            _ => {
                cx.err(
                    &n.pos,
                    "upgrade.tries",
                    "expected a number of boot attempts from 1 to 15",
                );
                ok = false;
            }
        }
    }
    ok.then_some(cfg)
}

fn health(cx: &mut Cx, h: &Node) -> HealthConfig {
    let mut cfg = HealthConfig::default();
    for (key, slot) in [
        ("timeout", &mut cfg.timeout),
        ("interval", &mut cfg.interval),
    ] {
        if let Some(n) = h.get(key) {
            match parse_duration(&text(n).unwrap_or_default()) {
                Ok(d) if !d.is_zero() => *slot = d,
                Ok(_) => cx.err(
                    &n.pos,
                    &format!("health.{key}"),
                    "expected a duration greater than zero",
                ),
                Err(e) => cx.err(&n.pos, &format!("health.{key}"), e),
            }
        }
    }
    if let Some(n) = h.get("successes") {
        match parse_uint(n) {
            Ok(v @ 1..=100) => cfg.successes = v as u32,
            _ => cx.err(
                &n.pos,
                "health.successes",
                "expected a number of consecutive successes from 1 to 100",
            ),
        }
    }
    if let Some(n) = h.get("gate") {
        cfg.gate = match text(n).unwrap_or_default().as_str() {
            "k3s" => HealthGate::K3s,
            "all" => HealthGate::All,
            "none" => HealthGate::None,
            other => {
                cx.err(
                    &n.pos,
                    "health.gate",
                    format!("{other:?}; expected one of \"k3s\", \"all\", \"none\""),
                );
                HealthGate::K3s
            }
        };
    }
    if let Some(Kind::Seq(items)) = h.get("checks").map(|n| &n.kind) {
        for (i, it) in items.iter().enumerate() {
            if let Some(c) = check(cx, it, &format!("health.checks[{i}]")) {
                cfg.checks.push(c);
            }
        }
    }
    cfg
}

fn check(cx: &mut Cx, it: &Node, field: &str) -> Option<HealthCheck> {
    let Some(tn) = it.get("type") else {
        cx.err(
            &it.pos,
            &join(field, "type"),
            "missing; expected one of unit, kubelet, apiserver, node_ready, http, command",
        );
        return None;
    };
    let ty = text(tn).unwrap_or_default();
    let allowed: &[&str] = match ty.as_str() {
        "unit" => &["name"],
        "kubelet" => &["url"],
        "apiserver" => &["kubeconfig", "url"],
        "node_ready" => &["kubeconfig", "node"],
        "http" => &["url", "ca", "status", "body"],
        "command" => &["argv"],
        other => {
            cx.err(&tn.pos, &join(field, "type"), format!("{other:?}; expected one of unit, kubelet, apiserver, node_ready, http, command"));
            return None;
        }
    };
    let mut ok = true;
    for e in it.as_map().unwrap_or_default() {
        if e.key != "type" && !allowed.contains(&e.key.as_str()) {
            cx.err(
                &e.key_pos,
                &join(field, &e.key),
                format!(
                    "does not apply to a {ty} check; it takes: {}",
                    allowed.join(", ")
                ),
            );
            ok = false;
        }
    }
    let s = |k: &str| it.get(k).and_then(text);
    let mut url_of = |cx: &mut Cx, default: Option<&str>| -> Option<String> {
        match it.get("url") {
            Some(n) => {
                let u = text(n).unwrap_or_default();
                match reqwest::Url::parse(&u) {
                    Ok(p) if matches!(p.scheme(), "http" | "https") => Some(u),
                    _ => {
                        cx.err(
                            &n.pos,
                            &join(field, "url"),
                            format!("{u:?} is not an http(s) URL"),
                        );
                        ok = false;
                        None
                    }
                }
            }
            None => {
                if default.is_none() {
                    cx.err(
                        &it.pos,
                        &join(field, "url"),
                        format!("missing; a {ty} check needs a url"),
                    );
                    ok = false;
                }
                default.map(str::to_string)
            }
        }
    };
    let kubeconfig = s("kubeconfig").unwrap_or_else(|| "/etc/rancher/k3s/k3s.yaml".into());
    let out = match ty.as_str() {
        "unit" => match s("name") {
            Some(name) if !name.is_empty() => HealthCheck::Unit { name },
            _ => {
                cx.err(
                    &it.pos,
                    &join(field, "name"),
                    "missing; a unit check needs the unit name",
                );
                return None;
            }
        },
        "kubelet" => HealthCheck::Kubelet {
            url: url_of(cx, Some("http://127.0.0.1:10248/healthz"))?,
        },
        "apiserver" => HealthCheck::Apiserver {
            kubeconfig,
            url: if it.get("url").is_some() {
                url_of(cx, None)
            } else {
                None
            },
        },
        "node_ready" => HealthCheck::NodeReady {
            kubeconfig,
            node: s("node"),
        },
        "http" => {
            let url = url_of(cx, None);
            let status = match it.get("status") {
                None => 200,
                Some(n) => match parse_uint(n) {
                    Ok(v @ 100..=599) => v as u16,
                    _ => {
                        cx.err(
                            &n.pos,
                            &join(field, "status"),
                            "expected an HTTP status code from 100 to 599",
                        );
                        ok = false;
                        0
                    }
                },
            };
            HealthCheck::Http {
                url: url?,
                ca: s("ca"),
                status,
                body: s("body"),
            }
        }
        _ => {
            let argv: Vec<String> = list(it.get("argv")).into_iter().map(|(a, _)| a).collect();
            if argv.is_empty() {
                cx.err(
                    &it.pos,
                    &join(field, "argv"),
                    "missing; a command check needs argv: [program, args…]",
                );
                return None;
            }
            HealthCheck::Command { argv }
        }
    };
    ok.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        assert_eq!(parse_mode("0644"), Ok(0o644));
        assert_eq!(parse_mode("644"), Ok(0o644));
        assert_eq!(parse_mode("0o600"), Ok(0o600));
        assert_eq!(parse_mode("4755"), Ok(0o4755));
        assert!(parse_mode("0648").unwrap_err().contains("digit 8"));
        assert!(parse_mode("rw-r--r--").is_err());
        assert!(parse_mode("17777").is_err());
    }

    #[test]
    fn owners() {
        assert_eq!(
            parse_owner("rancher:users").unwrap(),
            OwnerSpec {
                user: IdOrName::Name("rancher".into()),
                group: Some(IdOrName::Name("users".into()))
            }
        );
        assert_eq!(
            parse_owner("1000:1000").unwrap(),
            OwnerSpec {
                user: IdOrName::Id(1000),
                group: Some(IdOrName::Id(1000))
            }
        );
        assert!(parse_owner("a:b:c").is_err());
        assert!(parse_owner("bad user").is_err());
        assert!(parse_owner("").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("300"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("5 minutes").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn paths() {
        assert!(check_path("/etc/x").is_ok());
        assert!(check_path("etc/x").is_err());
        assert!(check_path("/etc/../x").is_err());
        assert!(check_path("/etc//x").is_err());
        assert!(check_path("/proc/sys/x").is_err());
        assert!(check_path("/etc/").is_err());
    }

    #[test]
    fn gzip_bomb_is_capped() {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(&vec![0u8; 2 << 20]).unwrap();
        let gz = enc.finish().unwrap();
        assert!(gunzip(&gz, 1 << 20).unwrap_err().contains("limit"));
        assert_eq!(gunzip(&gz, 4 << 20).unwrap().len(), 2 << 20);
    }
}
