//! Fixture-driven tests of the config model: `tests/fixtures/config/valid/*.yaml` must load and
//! match the hand-written expectations in the sibling `.expect` file; every
//! `tests/fixtures/config/invalid/*.yaml` must be rejected with the exact file:line:col and field
//! given in its `# expect:` header.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bosun::config::{
    self, ConvertOptions, IdOrName, KeySource, LoadOptions, NodeConfig, OwnerGroup,
};
use sha2::Digest;

fn fixtures(kind: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/config")
        .join(kind);
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    v.sort();
    v
}

fn list(v: &[String]) -> String {
    format!("[{}]", v.join(", "))
}

fn map(m: &BTreeMap<String, String>) -> String {
    let parts: Vec<String> = m.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{{{}}}", parts.join(", "))
}

fn id(i: &IdOrName) -> String {
    match i {
        IdOrName::Id(n) => format!("#{n}"),
        IdOrName::Name(s) => s.clone(),
    }
}

/// Flattens a NodeConfig into `key → value` strings that `.expect` files are written against.
fn describe(cfg: &NodeConfig, warnings: usize) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    let mut put = |k: &str, v: String| {
        m.insert(k.to_string(), v);
    };
    put("hostname", cfg.hostname.clone().unwrap_or("-".into()));
    let keys: Vec<String> = cfg
        .ssh_authorized_keys
        .iter()
        .map(|k| match &k.source {
            KeySource::Literal(s) => format!("literal {s}"),
            KeySource::GitHub(u) => format!("github {u}"),
            KeySource::GitLab(u) => format!("gitlab {u}"),
            KeySource::Url(u) => format!("url {u}"),
        })
        .collect();
    put("ssh_authorized_keys", list(&keys));
    put("write_files", cfg.write_files.len().to_string());
    for wf in &cfg.write_files {
        let p = format!("write_files[{}]", wf.path);
        if let Ok(s) = std::str::from_utf8(&wf.content) {
            put(&format!("{p}.content"), serde_json::to_string(s).unwrap());
        }
        put(
            &format!("{p}.sha256"),
            hex::encode(sha2::Sha256::digest(&wf.content)),
        );
        put(&format!("{p}.len"), wf.content.len().to_string());
        put(&format!("{p}.mode"), format!("{:04o}", wf.mode));
        let owner = match &wf.owner.group {
            OwnerGroup::Named(g) => format!("{}:{}", id(&wf.owner.user), id(g)),
            OwnerGroup::Login => format!("{}:", id(&wf.owner.user)),
            OwnerGroup::Unchanged => id(&wf.owner.user),
        };
        put(&format!("{p}.owner"), owner);
        put(&format!("{p}.encoding"), format!("{:?}", wf.encoding));
    }
    put("init_cmd", list(&cfg.init_cmd));
    put("boot_cmd", list(&cfg.boot_cmd));
    put("run_cmd", list(&cfg.run_cmd));
    let k = &cfg.k3os;
    put("k3os.data_sources", list(&k.data_sources));
    let modules: Vec<String> = k.modules.iter().map(ToString::to_string).collect();
    put("k3os.modules", list(&modules));
    put("k3os.sysctls", map(&k.sysctls));
    put("k3os.dns_nameservers", list(&k.dns_nameservers));
    put("k3os.ntp_servers", list(&k.ntp_servers));
    let wifi: Vec<String> = k
        .wifi
        .iter()
        .map(|w| format!("{}/{}", w.name, w.passphrase.expose()))
        .collect();
    put("k3os.wifi", list(&wifi));
    put(
        "k3os.password",
        k.password
            .as_ref()
            .map_or("-".into(), |p| p.expose().to_string()),
    );
    put(
        "k3os.token",
        k.token
            .as_ref()
            .map_or("-".into(), |p| p.expose().to_string()),
    );
    put(
        "k3os.server_url",
        k.server_url.clone().unwrap_or("-".into()),
    );
    put("k3os.labels", map(&k.labels));
    put("k3os.k3s_args", list(&k.k3s_args));
    put("k3os.environment", map(&k.environment));
    put("k3os.taints", list(&k.taints));
    put(
        "k3os.install",
        if k.install_present {
            "present"
        } else {
            "absent"
        }
        .into(),
    );
    match &cfg.upgrade {
        None => put("upgrade", "-".into()),
        Some(u) => {
            put("upgrade", "present".into());
            put("upgrade.version", u.version.clone());
            put("upgrade.image", u.image.clone());
            put("upgrade.sha256", hex::encode(u.sha256));
            put("upgrade.size", u.size.map_or("-".into(), |s| s.to_string()));
            put(
                "upgrade.compression",
                format!("{:?}", u.compression.unwrap_or(config::Compression::None)),
            );
            put("upgrade.tries", u.tries.to_string());
        }
    }
    let h = &cfg.health;
    put("health.timeout", format!("{}s", h.timeout.as_secs()));
    put("health.interval", format!("{}s", h.interval.as_secs()));
    put("health.successes", h.successes.to_string());
    put("health.gate", format!("{:?}", h.gate));
    put("health.checks", format!("{:?}", h.checks));
    put("warnings", warnings.to_string());
    m
}

fn options_for(text: &str) -> LoadOptions {
    let mut opts = LoadOptions::default();
    for line in text.lines().take_while(|l| l.starts_with('#')) {
        if line.trim() == "# strict" {
            opts.strict = true;
        }
        if let Some(n) = line.strip_prefix("# max-file-size: ") {
            opts.convert = ConvertOptions {
                max_file_size: n.trim().parse().unwrap(),
                ..Default::default()
            };
        }
    }
    opts
}

#[test]
fn valid_fixtures_load_and_match_their_expectations() {
    let files = fixtures("valid");
    assert!(
        files.len() >= 15,
        "need at least 15 valid fixtures, have {}",
        files.len()
    );
    let mut failures = Vec::new();
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let bytes = std::fs::read(path).unwrap();
        let opts = options_for(&String::from_utf8_lossy(&bytes));
        let loaded = match config::load_file(&name, &bytes, &opts) {
            Ok(l) => l,
            Err(e) => {
                failures.push(format!("{name}: rejected:\n{e}"));
                continue;
            }
        };
        let got = describe(&loaded.config, loaded.warnings.len());
        let expect = std::fs::read_to_string(path.with_extension("expect"))
            .unwrap_or_else(|_| panic!("{name}: missing .expect file"));
        for line in expect.lines().filter(|l| !l.trim().is_empty()) {
            let (k, v) = line
                .split_once(" = ")
                .unwrap_or_else(|| panic!("{name}: bad expect line {line:?}"));
            match got.get(k) {
                Some(actual) if actual == v => {}
                Some(actual) => {
                    failures.push(format!("{name}: {k}\n  expected {v}\n  got      {actual}"))
                }
                None => failures.push(format!("{name}: {k} is not produced (typo in .expect?)")),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn invalid_fixtures_are_rejected_at_the_exact_place() {
    let files = fixtures("invalid");
    assert!(
        files.len() >= 30,
        "need at least 30 invalid fixtures, have {}",
        files.len()
    );
    let mut failures = Vec::new();
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let bytes = std::fs::read(path).unwrap();
        let text = String::from_utf8_lossy(&bytes).to_string();
        let opts = options_for(&text);
        let expects: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# expect: "))
            .collect();
        assert!(!expects.is_empty(), "{name}: no `# expect:` line");
        let err = match config::load_file(&name, &bytes, &opts) {
            Ok(_) => {
                failures.push(format!("{name}: accepted, expected a rejection"));
                continue;
            }
            Err(e) => e,
        };
        for exp in expects {
            // "L:C FIELD: message substring" — FIELD may be empty.
            let (loc, rest) = exp.split_once(' ').unwrap();
            let (field, msg) = rest.split_once(": ").unwrap();
            let (line, col) = loc.split_once(':').unwrap();
            let (line, col): (usize, usize) = (line.parse().unwrap(), col.parse().unwrap());
            let hit = err.errors().any(|d| {
                &*d.pos.file == name.as_str()
                    && d.pos.line == line
                    && d.pos.col == col
                    && d.field == field
                    && d.message.contains(msg)
            });
            if !hit {
                failures.push(format!(
                    "{name}: wanted {exp}\n  got:\n    {}",
                    err.to_string().replace('\n', "\n    ")
                ));
            }
            // The Display form is what a person sees: file:line:col: field: message.
            let shown = err.to_string();
            let prefix = if field.is_empty() {
                format!("{name}:{line}:{col}: ")
            } else {
                format!("{name}:{line}:{col}: {field}: ")
            };
            if hit && !shown.contains(&prefix) {
                failures.push(format!("{name}: display lacks {prefix:?}: {shown}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn secrets_never_appear_in_rejection_messages() {
    let src =
        "k3os:\n  token: \"has a space-SECRET1\"\n  wifi:\n  - name: x\n    passphrase: SECRET2\n";
    let err = config::load_file("s.yaml", src.as_bytes(), &LoadOptions::default()).unwrap_err();
    let shown = err.to_string();
    assert!(shown.contains("k3os.token"), "{shown}");
    assert!(shown.contains("k3os.wifi[0].passphrase"), "{shown}");
    assert!(
        !shown.contains("SECRET1") && !shown.contains("SECRET2"),
        "{shown}"
    );
}

#[test]
fn a_real_elf_binary_round_trips_byte_for_byte_through_binary_tag() {
    let elf = std::fs::read("/bin/true").expect("/bin/true");
    assert_eq!(&elf[..4], b"\x7fELF");
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&elf);
    let mut yaml = String::from(
        "write_files:\n- path: /usr/local/bin/true\n  permissions: 0755\n  content: !!binary |\n",
    );
    for chunk in b64.as_bytes().chunks(76) {
        yaml.push_str("    ");
        yaml.push_str(std::str::from_utf8(chunk).unwrap());
        yaml.push('\n');
    }
    let loaded = config::load_file("elf.yaml", yaml.as_bytes(), &LoadOptions::default()).unwrap();
    let wf = &loaded.config.write_files[0];
    assert_eq!(wf.content.len(), elf.len());
    assert!(wf.content == elf, "decoded bytes differ from /bin/true");
    assert_eq!(wf.mode, 0o755);
}
