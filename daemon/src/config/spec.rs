//! The declared shape of `config.yaml`: every key, its accepted spellings, and the kind of value
//! it takes. One table drives key recognition (k3os spellings), shape coercion, unknown-key
//! warnings and the JSON Schema in `schemas/config.schema.json`, so the schema cannot drift from
//! what the parser accepts.
//!
//! k3os accepted keys "fuzzily": snake_case, camelCase, all-lowercase, and singular or plural
//! (`sysctl`/`sysctls`, `k3s_arg`, `label`, `runcmd`, `datasource`). A key matches a field when it
//! equals the field's name, or when, lower-cased and with `_`/`-` removed, it equals the field's
//! name so folded, with or without a trailing `s`.

use serde_json::{json, Map, Value};

/// The kind of value a key takes: drives coercion in `layers` and the key's JSON Schema.
#[derive(Debug, Clone, Copy)]
pub enum Shape {
    /// Any scalar, read as text.
    Str,
    /// A scalar holding a secret (never printed).
    Secret,
    /// A list of scalars; a lone scalar becomes a one-element list.
    StrList,
    /// A mapping of scalars (values become strings); also accepted as a list of `KEY=VALUE`
    /// strings or a single `KEY=VALUE` scalar.
    StrMap,
    /// A non-negative integer.
    Int,
    /// Seconds as an integer, or a string like `90s`, `5m`, `1h30m`.
    Duration,
    /// File mode: an octal string (`'0644'`, `'644'`) or a YAML integer read as the octal
    /// digits written (`0644`, `644`).
    Permissions,
    /// write_files content: a string, or a `!!binary` scalar.
    Content,
    /// One of a fixed set of words.
    Enum(&'static [&'static str]),
    /// A mapping with these fields (unknown keys warned, or refused with `--strict`).
    Object(&'static [Field]),
    /// A list of objects; a lone object becomes a one-element list.
    ObjList(&'static [Field]),
    /// Accepted and ignored (k3os keys that do not apply to bosun).
    Any,
}

/// One key of the config: its canonical name, extra spellings, shape and description.
#[derive(Debug)]
pub struct Field {
    /// Canonical snake_case name.
    pub name: &'static str,
    /// Extra spellings beyond the fuzzy rule (e.g. wifi `pass`).
    pub aliases: &'static [&'static str],
    /// The kind of value it takes.
    pub shape: Shape,
    /// One-line description, the key's `description` in the JSON Schema.
    pub doc: &'static str,
}

const fn f(name: &'static str, shape: Shape, doc: &'static str) -> Field {
    Field {
        name,
        aliases: &[],
        shape,
        doc,
    }
}

/// The accepted `write_files[].encoding` values (`""` is plain text).
pub const ENCODINGS: &[&str] = &[
    "",
    "b64",
    "base64",
    "gz",
    "gzip",
    "gz+base64",
    "gzip+base64",
    "gz+b64",
    "gzip+b64",
];

/// The fields of one `write_files` entry.
pub const WRITE_FILE: &[Field] = &[
    f("path", Shape::Str, "Absolute path of the file on the node."),
    f("content", Shape::Content, "File content, encoded as `encoding` says; `!!binary` scalars are decoded to bytes."),
    f("encoding", Shape::Enum(ENCODINGS), "How `content` is encoded: \"\" (plain), b64/base64, gz/gzip, or gzip+base64 (any spelling)."),
    f("owner", Shape::Str, "`user`, `user:`, `user:group`, `:group` or `uid:gid`, resolved through the node's own passwd/group as chown reads it (`user` alone leaves the group root; `user:` is the login group). Default root:root."),
    f("permissions", Shape::Permissions, "Octal mode such as '0644'. Default 0644."),
];

/// The fields of one `k3os.wifi` entry.
pub const WIFI: &[Field] = &[
    f("name", Shape::Str, "SSID."),
    Field {
        name: "passphrase",
        aliases: &["pass", "password"],
        shape: Shape::Secret,
        doc: "WPA passphrase (secret).",
    },
];

/// The fields of the `k3os:` block.
pub const K3OS: &[Field] = &[
    f(
        "data_sources",
        Shape::StrList,
        "k3os cloud data sources; accepted, not applicable to bosun (warned).",
    ),
    f(
        "modules",
        Shape::StrList,
        "Kernel modules to load at boot (modules-load.d) and now (modprobe), each `name [param=value …]`; parameters become an `options` line in modprobe.d.",
    ),
    f(
        "sysctls",
        Shape::StrMap,
        "Kernel parameters (sysctl.d), applied on change.",
    ),
    f(
        "dns_nameservers",
        Shape::StrList,
        "DNS servers (systemd-resolved drop-in).",
    ),
    f(
        "ntp_servers",
        Shape::StrList,
        "NTP servers (systemd-timesyncd drop-in).",
    ),
    f(
        "wifi",
        Shape::ObjList(WIFI),
        "Wi-Fi networks (NetworkManager keyfiles, mode 0600).",
    ),
    f(
        "password",
        Shape::Secret,
        "Password of the ssh user: plaintext (hashed with SHA-512 crypt) or a `$…` crypt hash.",
    ),
    f(
        "server_url",
        Shape::Str,
        "URL of the K3s server to join; makes the node an agent unless k3s_args says otherwise.",
    ),
    f(
        "token",
        Shape::Secret,
        "K3s token: a `K10…` node token or a cluster secret.",
    ),
    f("labels", Shape::StrMap, "Node labels (`--node-label`)."),
    f(
        "k3s_args",
        Shape::StrList,
        "K3s arguments, exec-style, one per element; the first is `server` or `agent` (a flag first is a warning: the role is agent when server_url is set, else server).",
    ),
    f(
        "environment",
        Shape::StrMap,
        "Variables for /etc/environment and the k3s service.",
    ),
    f("taints", Shape::StrList, "Node taints, `key=value:Effect`."),
    f(
        "install",
        Shape::Any,
        "k3os installer settings; accepted, not applicable to bosun (warned).",
    ),
];

/// The fields of bosun's `upgrade:` block.
pub const UPGRADE: &[Field] = &[
    f("version", Shape::Str, "OS version this node should run."),
    f(
        "image",
        Shape::Str,
        "Image location: https:// URL (http:// only to loopback) or an absolute local path.",
    ),
    f(
        "sha256",
        Shape::Str,
        "SHA-256 of the image as downloaded (64 hex digits).",
    ),
    f(
        "size",
        Shape::Int,
        "Size of the download in bytes (optional).",
    ),
    f(
        "compression",
        Shape::Enum(&["none", "gzip", "zstd"]),
        "Compression of the image; default from the name (.zst, .gz).",
    ),
    f(
        "tries",
        Shape::Int,
        "Boot attempts granted to the trial slot (1-15). Default 3.",
    ),
];

/// The keys of one `rollout.waves` entry.
pub const WAVE: &[Field] = &[
    f(
        "after",
        Shape::Duration,
        "Delay after the committer time of the commit that introduced the change.",
    ),
    f(
        "percent",
        Shape::Str,
        "Cumulative share of the fleet (by position) that may start by then; the last wave is 100.",
    ),
];

/// The keys of one `rollout.window` entry.
pub const WINDOW: &[Field] = &[
    f(
        "days",
        Shape::StrList,
        "Weekdays the window opens on: mon … sun.",
    ),
    f("start", Shape::Str, "Opening time, \"HH:MM\"."),
    f("length", Shape::Duration, "How long the window stays open."),
    f(
        "timezone",
        Shape::Str,
        "UTC (default) or a fixed offset such as +01:00.",
    ),
];

/// The keys of `rollout.drain`.
pub const DRAIN: &[Field] = &[f(
    "timeout",
    Shape::Duration,
    "Give up draining after this long: uncordon, release the slot, back off. Default 10m.",
)];

/// The keys of `rollout:` (fleet policy; see `config::rollout`).
pub const ROLLOUT: &[Field] = &[
    f(
        "waves",
        Shape::ObjList(WAVE),
        "Waves of the rollout, in order: [{after, percent}].",
    ),
    f(
        "canary",
        Shape::Str,
        "true: this node goes first (set in a group or node layer).",
    ),
    f(
        "window",
        Shape::ObjList(WINDOW),
        "Weekly maintenance windows that gate starting a disruption; none: always open.",
    ),
    f(
        "max_unavailable",
        Shape::Int,
        "Nodes of the group disrupted at once (slots of the lock). Default 1.",
    ),
    f(
        "group",
        Shape::Str,
        "Lock group (Lease names bosun-<group>-<i>, FleetLock group). Default default.",
    ),
    f(
        "drain_on_restart",
        Shape::Str,
        "true: drain before a k3s restart too (reboots always drain).",
    ),
    f("drain", Shape::Object(DRAIN), "Drain settings."),
    f(
        "halt_after_failures",
        Shape::Int,
        "Hold when this many nodes failed the commit; 0 never holds. Default 1.",
    ),
    f(
        "waves_for_all",
        Shape::Str,
        "true: non-disruptive changes wait for the node's wave too.",
    ),
    f(
        "lock_ttl",
        Shape::Duration,
        "A slot whose holder stopped renewing for this long (local clock) may be broken. Default 1h.",
    ),
];

/// The accepted `health.checks[].type` values.
pub const CHECK_TYPES: &[&str] = &[
    "unit",
    "kubelet",
    "apiserver",
    "node_ready",
    "http",
    "command",
];

/// The fields of one `health.checks` entry (which apply depends on `type`).
pub const CHECK: &[Field] = &[
    f("type", Shape::Enum(CHECK_TYPES), "Kind of check."),
    f(
        "name",
        Shape::Str,
        "unit: the systemd unit that must be active.",
    ),
    f(
        "url",
        Shape::Str,
        "kubelet/http: URL to GET; apiserver: overrides the kubeconfig's server.",
    ),
    f(
        "kubeconfig",
        Shape::Str,
        "apiserver/node_ready: kubeconfig path. Default /etc/rancher/k3s/k3s.yaml.",
    ),
    f(
        "node",
        Shape::Str,
        "node_ready: Node name. Default the hostname.",
    ),
    f("ca", Shape::Str, "http: CA bundle path for https URLs."),
    f("status", Shape::Int, "http: expected status. Default 200."),
    f("body", Shape::Str, "http: text the body must contain."),
    f(
        "argv",
        Shape::StrList,
        "command: program and arguments; exit status 0 passes.",
    ),
];

/// The fields of bosun's `health:` block.
pub const HEALTH: &[Field] = &[
    f(
        "timeout",
        Shape::Duration,
        "How long checks may take to pass before a change is rolled back. Default 300s.",
    ),
    f(
        "interval",
        Shape::Duration,
        "Pause between check rounds. Default 5s.",
    ),
    f(
        "successes",
        Shape::Int,
        "Consecutive successes each check needs. Default 3.",
    ),
    f(
        "gate",
        Shape::Enum(&["k3s", "all", "none"]),
        "Which config applies are health-gated: k3s (changes to k3s config, default), all, none.",
    ),
    f(
        "checks",
        Shape::ObjList(CHECK),
        "Checks to run. Default: k3s unit active, kubelet healthz, apiserver readyz on servers.",
    ),
];

/// The top-level keys of a layer file (`match` is handled apart: it is valid only in groups).
pub const TOP: &[Field] = &[
    f(
        "ssh_authorized_keys",
        Shape::StrList,
        "Keys for the ssh user: literal lines, `github:USER`, `gitlab:USER`, or an https URL.",
    ),
    f(
        "write_files",
        Shape::ObjList(WRITE_FILE),
        "Files to write. Later layers replace entries with the same path.",
    ),
    f(
        "hostname",
        Shape::Str,
        "Node hostname (/etc/hostname, /etc/hosts 127.0.1.1).",
    ),
    f(
        "init_cmd",
        Shape::StrList,
        "Commands run once per boot before the first apply.",
    ),
    f(
        "boot_cmd",
        Shape::StrList,
        "Commands run once per boot before the first apply, after init_cmd.",
    ),
    f(
        "run_cmd",
        Shape::StrList,
        "Commands run once per boot after the first successful apply.",
    ),
    f("k3os", Shape::Object(K3OS), "k3os settings."),
    f(
        "upgrade",
        Shape::Object(UPGRADE),
        "bosun: the OS image for A/B upgrades.",
    ),
    f(
        "health",
        Shape::Object(HEALTH),
        "bosun: K3s health checks that gate changes and upgrades.",
    ),
    f(
        "rollout",
        Shape::Object(ROLLOUT),
        "bosun: fleet rollout policy: waves, canary, maintenance windows, the lock's slots and group, drain, canary halt.",
    ),
    f(
        "match",
        Shape::StrList,
        "groups/*.yaml only: hostname globs this group applies to.",
    ),
];

fn fold(s: &str) -> String {
    s.chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

fn singular_plural(folded: &str) -> [String; 2] {
    match folded.strip_suffix('s') {
        Some(stem) => [folded.to_string(), stem.to_string()],
        None => [folded.to_string(), format!("{folded}s")],
    }
}

impl Field {
    /// Does `key` (as written in YAML) name this field?
    pub fn matches(&self, key: &str) -> bool {
        if key == self.name || self.aliases.contains(&key) {
            return true;
        }
        let k = fold(key);
        let forms = singular_plural(&fold(self.name));
        forms.contains(&k) || self.aliases.iter().any(|a| fold(a) == k)
    }

    /// The spellings listed in the JSON Schema (all of them are accepted by [`Field::matches`]).
    pub fn spellings(&self) -> Vec<String> {
        let camel = to_camel(self.name);
        let lower = fold(self.name);
        let mut v = vec![self.name.to_string(), camel.clone(), lower.clone()];
        if matches!(
            self.shape,
            Shape::StrList | Shape::StrMap | Shape::ObjList(_)
        ) {
            for base in [self.name.to_string(), camel, lower] {
                let other = match base.strip_suffix('s') {
                    Some(stem) => stem.to_string(),
                    None => format!("{base}s"),
                };
                v.push(other);
            }
        }
        v.extend(self.aliases.iter().map(|s| s.to_string()));
        let mut seen = std::collections::BTreeSet::new();
        v.retain(|s| seen.insert(s.clone()));
        v
    }
}

fn to_camel(snake: &str) -> String {
    let mut out = String::new();
    let mut up = false;
    for c in snake.chars() {
        if c == '_' {
            up = true;
        } else if up {
            out.extend(c.to_uppercase());
            up = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// Finds the field a key names.
pub fn lookup<'a>(fields: &'a [Field], key: &str) -> Option<&'a Field> {
    fields
        .iter()
        .find(|f| key == f.name)
        .or_else(|| fields.iter().find(|f| f.matches(key)))
}

fn shape_schema(shape: Shape) -> Value {
    let scalar = json!({"type": ["string", "number", "boolean"]});
    match shape {
        Shape::Str | Shape::Secret => scalar,
        Shape::StrList => json!({"oneOf": [scalar, {"type": "array", "items": scalar}]}),
        Shape::StrMap => json!({"oneOf": [
            {"type": "object", "additionalProperties": scalar},
            {"type": "array", "items": {"type": "string", "pattern": "^[^=]+="}},
            {"type": "string", "pattern": "^[^=]+="}
        ]}),
        Shape::Int => json!({"type": "integer", "minimum": 0}),
        Shape::Duration => json!({"oneOf": [
            {"type": "integer", "minimum": 0},
            {"type": "string", "pattern": "^([0-9]+(ms|s|m|h))+$"}
        ]}),
        Shape::Permissions => json!({"oneOf": [
            {"type": "string", "pattern": "^(0o)?0*[0-7]{1,4}$"},
            {"type": "integer"}
        ]}),
        Shape::Content => json!({"type": "string"}),
        Shape::Enum(words) => json!({"enum": words}),
        Shape::Object(fields) => object_schema(fields),
        Shape::ObjList(fields) => {
            let o = object_schema(fields);
            json!({"oneOf": [o.clone(), {"type": "array", "items": o}]})
        }
        Shape::Any => json!({}),
    }
}

/// `schema` that also accepts `null`: a layer may write `key: null` for any key to remove
/// what an earlier layer set (the merge rule), so every property takes it.
fn nullable(mut schema: Value) -> Value {
    let Value::Object(m) = &mut schema else {
        return schema;
    };
    if let Some(Value::Array(alternatives)) = m.get_mut("oneOf") {
        alternatives.push(json!({"type": "null"}));
    } else if let Some(Value::Array(words)) = m.get_mut("enum") {
        words.push(Value::Null);
    } else if let Some(t) = m.get_mut("type") {
        let mut types = match t.take() {
            Value::Array(v) => v,
            one => vec![one],
        };
        if !types.contains(&json!("null")) {
            types.push(json!("null"));
        }
        *t = Value::Array(types);
    }
    schema
}

fn object_schema(fields: &[Field]) -> Value {
    let mut props = Map::new();
    for field in fields {
        let mut s = nullable(shape_schema(field.shape));
        if let Value::Object(m) = &mut s {
            m.insert("description".into(), Value::String(field.doc.into()));
        }
        for name in field.spellings() {
            props.insert(name, s.clone());
        }
    }
    json!({"type": ["object", "null"], "properties": props})
}

/// The JSON Schema (draft 2020-12) of a config layer file. Pure.
pub fn json_schema() -> Value {
    let mut root = object_schema(TOP);
    if let Value::Object(m) = &mut root {
        m.insert(
            "$schema".into(),
            "https://json-schema.org/draft/2020-12/schema".into(),
        );
        m.insert(
            "$id".into(),
            "https://bosun.dev/schemas/config.schema.json".into(),
        );
        m.insert("title".into(), "bosun / k3os config.yaml layer".into());
        m.insert(
            "description".into(),
            "A k3os-compatible config.yaml (fleet base, group or node layer) with bosun's upgrade and health keys. Unknown keys are warnings (errors with --strict); a null value removes the key inherited from an earlier layer."
                .into(),
        );
    }
    root
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn k3os_spellings_match() {
        let k = |key| lookup(K3OS, key).map(|f| f.name);
        assert_eq!(k("sysctl"), Some("sysctls"));
        assert_eq!(k("sysctls"), Some("sysctls"));
        assert_eq!(k("k3s_arg"), Some("k3s_args"));
        assert_eq!(k("k3sArgs"), Some("k3s_args"));
        assert_eq!(k("label"), Some("labels"));
        assert_eq!(k("dns_nameserver"), Some("dns_nameservers"));
        assert_eq!(k("dnsNameservers"), Some("dns_nameservers"));
        assert_eq!(k("datasource"), Some("data_sources"));
        assert_eq!(k("serverURL"), Some("server_url"));
        assert_eq!(k("nope"), None);
        let t = |key| lookup(TOP, key).map(|f| f.name);
        assert_eq!(t("runcmd"), Some("run_cmd"));
        assert_eq!(t("bootcmd"), Some("boot_cmd"));
        assert_eq!(t("initCmd"), Some("init_cmd"));
        assert_eq!(t("ssh_authorized_key"), Some("ssh_authorized_keys"));
        assert_eq!(t("writeFiles"), Some("write_files"));
        assert_eq!(lookup(WIFI, "pass").map(|f| f.name), Some("passphrase"));
        assert_eq!(lookup(WIFI, "password").map(|f| f.name), Some("passphrase"));
    }

    /// The merge rule "`key: null` removes an inherited key" holds for every key, so the
    /// schema lets every property be null (objects, lists, scalars, enums alike); `Any` takes
    /// everything already.
    #[test]
    fn every_property_accepts_null() {
        fn accepts_null(s: &Value) -> bool {
            s.as_object()
                .is_some_and(|m| m.keys().all(|k| k == "description"))
                || s["type"]
                    .as_array()
                    .is_some_and(|t| t.contains(&json!("null")))
                || s["enum"]
                    .as_array()
                    .is_some_and(|e| e.contains(&Value::Null))
                || s["oneOf"]
                    .as_array()
                    .is_some_and(|o| o.contains(&json!({"type": "null"})))
        }
        fn walk(schema: &Value, path: &str, count: &mut usize) {
            for (name, prop) in schema["properties"].as_object().into_iter().flatten() {
                *count += 1;
                assert!(accepts_null(prop), "{path}{name}: {prop}");
                let object = prop["oneOf"]
                    .as_array()
                    .and_then(|o| o.iter().find(|s| s.get("properties").is_some()))
                    .unwrap_or(prop);
                walk(object, &format!("{path}{name}."), count);
            }
        }
        let mut count = 0;
        walk(&json_schema(), "", &mut count);
        assert!(count > 100, "only {count} properties walked");
    }

    #[test]
    fn every_schema_spelling_is_accepted_for_its_field_only() {
        fn walk(fields: &'static [Field]) {
            for field in fields {
                for s in field.spellings() {
                    assert_eq!(lookup(fields, &s).map(|f| f.name), Some(field.name), "{s}");
                }
                match field.shape {
                    Shape::Object(sub) | Shape::ObjList(sub) => walk(sub),
                    _ => {}
                }
            }
        }
        walk(TOP);
    }
}
