//! Real k3os configs (`tests/fixtures/k3os/*/config.yaml`, each from a public source) applied
//! by the real binary into a throwaway root with k3os's own accounts, and compared with what
//! their manifest (`expected.yaml`, format in `tests/fixtures/k3os/README.md`) says k3os did
//! and bosun must do: every file's bytes, mode and owner, the k3s command line and
//! environment, the effects (modprobe, once-per-boot commands), the warnings and errors with
//! their `file:line:col`, and no file the manifest does not explain.
//!
//! The manifest is also checked against itself: bosun's files must be k3os's bytes, modes and
//! owners, and its k3s command line k3os's after the documented changes (no `k3os.io/version`
//! or `k3os.io/mode` label, `--node-taint` for `--kubelet-arg register-with-taints=`, the role
//! named first), except where a listed difference names the file.
//!
//! `github:USER` keys come from a loopback HTTP server standing in for github.com
//! (`--github-base`), serving one fixed ed25519 key per user.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::config_cli::bosun;
use crate::support_k3os::{exec_start_argv, K3OS_GROUP, K3OS_PASSWD, K3OS_SHADOW};

const HEADER: &str = "# Managed by bosun from the node config; local edits are overwritten.\n";

/// The key the stand-in github.com serves for `user`: an ed25519 key whose bytes derive from
/// the name, so every user has its own.
fn github_key(user: &str) -> String {
    let mut bytes = [0u8; 32];
    for (i, b) in user.bytes().enumerate() {
        bytes[i % 32] ^= b.wrapping_add(i as u8);
    }
    bytes[31] = 0x42;
    ssh_key::PublicKey::new(
        ssh_key::public::KeyData::Ed25519(ssh_key::public::Ed25519PublicKey(bytes)),
        user,
    )
    .to_openssh()
    .unwrap()
}

/// One fixture directory.
struct Fixture {
    name: String,
    dir: PathBuf,
    manifest: Value,
}

fn fixtures() -> Vec<Fixture> {
    let root = crate::config_cli::workspace().join("tests/fixtures/k3os");
    let mut out: Vec<Fixture> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("config.yaml").exists())
        .map(|dir| {
            let text = std::fs::read_to_string(dir.join("expected.yaml")).unwrap();
            let manifest: Value = serde_saphyr::from_str(&text)
                .unwrap_or_else(|e| panic!("{}: expected.yaml: {e}", dir.display()));
            Fixture {
                name: dir.file_name().unwrap().to_string_lossy().into_owned(),
                dir,
                manifest,
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Problems found in one fixture.
#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.0.push(what());
        }
    }

    fn eq<T: PartialEq + std::fmt::Debug>(&mut self, what: &str, got: T, want: T) {
        self.check(got == want, || {
            format!("{what}:\n      got  {got:?}\n      want {want:?}")
        });
    }
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().map(text_of).collect())
        .unwrap_or_default()
}

/// A scalar of the manifest as text (numbers as written).
fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn map_of(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), text_of(v))).collect())
        .unwrap_or_default()
}

fn mode_of(v: &Value) -> u32 {
    u32::from_str_radix(&text_of(v), 8).unwrap()
}

/// Every regular file under `dir` (relative, with a leading `/`), recursively.
fn files_under(dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(format!("/{}", p.strip_prefix(dir).unwrap().display()));
            }
        }
    }
    out
}

/// How `runner::display_argv` prints one word (for "would run:" lines).
fn shown(word: &str) -> String {
    if word.is_empty() || word.contains(|c: char| c.is_whitespace() || c == '\'' || c == '"') {
        format!("'{}'", word.replace('\'', "'\\''"))
    } else {
        word.to_string()
    }
}

/// The node after `bosun apply` of one fixture.
struct Applied {
    root: PathBuf,
    stdout: String,
    stderr: String,
    code: Option<i32>,
}

impl Applied {
    fn path(&self, p: &str) -> PathBuf {
        self.root.join(p.trim_start_matches('/'))
    }

    fn read(&self, p: &str) -> Option<Vec<u8>> {
        std::fs::read(self.path(p)).ok()
    }

    fn text(&self, p: &str) -> Option<String> {
        self.read(p)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    }

    fn meta(&self, p: &str) -> Option<(u32, u32, u32)> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(self.path(p)).ok()?;
        Some((m.mode() & 0o7777, m.uid(), m.gid()))
    }
}

fn apply(fx: &Fixture, tmp: &Path, github: &str) -> Applied {
    let repo = tmp.join("repo");
    let root = tmp.join("root");
    std::fs::create_dir_all(&repo).unwrap();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::copy(fx.dir.join("config.yaml"), repo.join("config.yaml")).unwrap();
    std::fs::write(root.join("etc/passwd"), K3OS_PASSWD).unwrap();
    std::fs::write(root.join("etc/group"), K3OS_GROUP).unwrap();
    std::fs::write(root.join("etc/shadow"), K3OS_SHADOW).unwrap();
    let node = text_of(&fx.manifest["node"]);
    let out = bosun()
        .args([
            "apply",
            "--hostname",
            &node,
            "--github-base",
            github,
            "--repo",
        ])
        .arg(&repo)
        .arg("--root")
        .arg(&root)
        .output()
        .unwrap();
    Applied {
        root,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        code: out.status.code(),
    }
}

/// `errors` / `warnings` of the manifest: each must be printed as
/// `config.yaml:AT: [warning: ]FIELD: …CONTAINS…` (CONTAINS case-insensitive); and every
/// config warning printed must be listed.
fn check_diagnostics(p: &mut Problems, b: &Value, a: &Applied) {
    for (kind, prefix) in [("errors", ""), ("warnings", "warning: ")] {
        for d in b[kind].as_array().into_iter().flatten() {
            let start = format!(
                "config.yaml:{}: {prefix}{}: ",
                text_of(&d["at"]),
                text_of(&d["field"])
            );
            let needle = text_of(&d["contains"]).to_lowercase();
            p.check(
                a.stderr
                    .lines()
                    .any(|l| l.starts_with(&start) && l.to_lowercase().contains(&needle)),
                || format!("{kind}: no line {start}…{needle}…"),
            );
        }
    }
    let listed: Vec<String> = b["warnings"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| format!("config.yaml:{}: warning: ", text_of(&d["at"])))
        .collect();
    for l in a.stderr.lines().filter(|l| l.contains(": warning: ")) {
        if l.starts_with("config.yaml:") {
            p.check(listed.iter().any(|w| l.starts_with(w)), || {
                format!("warning not in the manifest: {l}")
            });
        }
    }
}

/// `write_files`: bytes, mode and owner of each file.
fn check_write_files(p: &mut Problems, fx: &Fixture, b: &Value, a: &Applied) {
    for f in b["write_files"].as_array().into_iter().flatten() {
        let path = text_of(&f["path"]);
        let want = std::fs::read(fx.dir.join(text_of(&f["content"]))).unwrap();
        p.check(a.read(&path).as_deref() == Some(&want[..]), || {
            format!("{path}: content differs from {}", text_of(&f["content"]))
        });
        let meta = (
            mode_of(&f["mode"]),
            f["uid"].as_u64().unwrap() as u32,
            f["gid"].as_u64().unwrap() as u32,
        );
        p.eq(
            &format!("{path}: mode, uid, gid"),
            a.meta(&path),
            Some(meta),
        );
    }
}

/// The k3s drop-in's command line, the other role's drop-in absent, the env file.
fn check_k3s(p: &mut Problems, b: &Value, a: &Applied) {
    let k = &b["k3s"];
    let unit = text_of(&k["unit"]);
    let other = if unit == "k3s" { "k3s-agent" } else { "k3s" };
    let dropin = format!("/etc/systemd/system/{unit}.service.d/90-bosun.conf");
    match a.text(&dropin) {
        Some(t) => p.eq("k3s argv", exec_start_argv(&t), strs(&k["argv"])),
        None => p.0.push(format!("{dropin} missing")),
    }
    let other = format!("/etc/systemd/system/{other}.service.d/90-bosun.conf");
    p.check(a.read(&other).is_none(), || format!("{other} written"));
    let env = map_of(&k["env"]);
    let file = a.text("/etc/rancher/k3s/bosun.env");
    if env.is_empty() {
        p.check(file.is_none(), || "k3s env file written without env".into());
    } else {
        let got: BTreeMap<String, String> = file
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
            .collect();
        p.eq("k3s environment", got, env);
    }
}

/// `authorized_keys`: the literal entries named by index, then the fetched users' keys, in
/// the config's order; `managed: false` (or no keys at all) leaves no file.
fn check_keys(p: &mut Problems, fx: &Fixture, b: &Value, a: &Applied) {
    let path = "/home/rancher/.ssh/authorized_keys";
    let k = &b["authorized_keys"];
    if k.is_null() || k["managed"] == Value::Bool(false) {
        p.check(a.read(path).is_none(), || format!("{path} written"));
        return;
    }
    let config: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(fx.dir.join("config.yaml")).unwrap())
            .unwrap();
    let entries = strs(&config["ssh_authorized_keys"]);
    let literal: Vec<usize> = k["literal_entries"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| i.as_u64().unwrap() as usize)
        .collect();
    let fetch = strs(&k["fetch"]);
    let mut want = String::new();
    for (i, e) in entries.iter().enumerate() {
        let e = e.trim();
        if literal.contains(&i) {
            want.push_str(&format!("{e}\n"));
        } else if let Some(user) = e
            .strip_prefix("github:")
            .filter(|_| fetch.contains(&e.to_string()))
        {
            want.push_str(&format!("{}\n", github_key(user)));
        }
    }
    p.eq(path, a.text(path), Some(want));
    p.eq(
        &format!("{path}: mode, uid, gid"),
        a.meta(path),
        Some((0o600, 1000, 1000)),
    );
}

/// `modules`: modules-load.d names, modprobe.d options, and the recorded modprobe commands.
fn check_modules(p: &mut Problems, b: &Value, a: &Applied) {
    let m = &b["modules"];
    let load = strs(&m["modules_load"]);
    let conf = a.text("/etc/modules-load.d/bosun.conf");
    if load.is_empty() {
        p.check(conf.is_none(), || "modules-load.d written".into());
        return;
    }
    p.eq(
        "modules-load.d",
        conf,
        Some(format!("{HEADER}{}\n", load.join("\n"))),
    );
    let options: BTreeSet<String> = map_of(&m["modprobe_options"])
        .iter()
        .map(|(k, v)| format!("options {k} {v}"))
        .collect();
    let got: Option<BTreeSet<String>> = a.text("/etc/modprobe.d/bosun.conf").map(|t| {
        t.lines()
            .filter(|l| !l.starts_with('#'))
            .map(str::to_string)
            .collect()
    });
    p.eq(
        "modprobe.d options",
        got,
        (!options.is_empty()).then_some(options),
    );
    for argv in m["modprobe"].as_array().into_iter().flatten() {
        let line = format!("would run: modprobe {} (recorded", strs(argv).join(" "));
        p.check(a.stdout.contains(&line), || format!("no `{line}`"));
    }
}

/// Host keys: hostname, sysctl, DNS/NTP fallbacks, wifi keyfiles, /etc/environment.
fn check_host(p: &mut Problems, b: &Value, a: &Applied) {
    let hostname = b["hostname"].as_str().map(|h| format!("{h}\n"));
    p.eq("/etc/hostname", a.text("/etc/hostname"), hostname);
    let sysctl: Option<BTreeSet<String>> = b["sysctl"].as_object().map(|m| {
        m.iter()
            .map(|(k, v)| format!("{k} = {}", text_of(v)))
            .collect()
    });
    let got = a.text("/etc/sysctl.d/90-bosun.conf").map(|t| {
        t.lines()
            .filter(|l| !l.starts_with('#'))
            .map(str::to_string)
            .collect()
    });
    p.eq("sysctl.d", got, sysctl);
    for (key, path, section, setting) in [
        (
            "dns_nameservers",
            "/etc/systemd/resolved.conf.d/90-bosun.conf",
            "Resolve",
            "FallbackDNS",
        ),
        (
            "ntp_servers",
            "/etc/systemd/timesyncd.conf.d/90-bosun.conf",
            "Time",
            "FallbackNTP",
        ),
    ] {
        let want = b[key].as_array().map(|_| {
            format!(
                "{HEADER}[{section}]\n{setting}={}\n",
                strs(&b[key]).join(" ")
            )
        });
        p.eq(path, a.text(path), want);
    }
    for w in b["wifi"].as_array().into_iter().flatten() {
        let (name, psk) = (text_of(&w["name"]), text_of(&w["passphrase"]));
        let path = format!("/etc/NetworkManager/system-connections/bosun-{name}.nmconnection");
        let t = a.text(&path).unwrap_or_default();
        p.check(
            t.contains(&format!("\nssid={name}\n")) && t.contains(&format!("\npsk={psk}\n")),
            || format!("{path}: no ssid/psk for {name}:\n{t}"),
        );
        p.eq(
            &format!("{path}: mode"),
            a.meta(&path).map(|m| m.0),
            Some(0o600),
        );
    }
    let env = map_of(&b["environment"]);
    let got: BTreeMap<String, String> = a
        .text("/etc/environment")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
        .collect();
    p.eq("/etc/environment", got, env);
}

/// `password`: the ssh user's /etc/shadow hash verifies the plaintext, or is the given hash.
fn check_password(p: &mut Problems, b: &Value, a: &Applied) {
    let pw = &b["password"];
    if pw.is_null() {
        return;
    }
    let shadow = a.text("/etc/shadow").unwrap_or_default();
    let hash = shadow
        .lines()
        .find_map(|l| l.strip_prefix("rancher:"))
        .and_then(|rest| rest.split(':').next())
        .unwrap_or_default()
        .to_string();
    match pw["hash"].as_str() {
        Some(h) => p.eq("rancher's hash", hash.as_str(), h),
        None => {
            let plain = text_of(&pw["plaintext"]);
            p.check(sha_crypt::sha512_check(&plain, &hash).is_ok(), || {
                format!("rancher's hash {hash:?} does not verify {plain:?}")
            });
        }
    }
}

/// `init_cmd`, `boot_cmd`, `run_cmd`: each recorded as `sh -c CMD`.
fn check_commands(p: &mut Problems, b: &Value, a: &Applied) {
    for key in ["init_cmd", "boot_cmd", "run_cmd"] {
        for c in strs(&b[key]) {
            let line = format!("would run: sh -c {} (recorded", shown(&c));
            p.check(a.stdout.contains(&line), || format!("{key}: no `{line}`"));
        }
    }
}

/// Every file under the root is one the manifest explains; passwd and group are k3os's, and
/// so is shadow unless a password is set.
fn check_nothing_else(p: &mut Problems, b: &Value, a: &Applied) {
    let mut explained: BTreeSet<String> = ["/etc/passwd", "/etc/group", "/etc/shadow"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for f in b["write_files"].as_array().into_iter().flatten() {
        explained.insert(text_of(&f["path"]));
    }
    let mut add = |cond: bool, paths: &[&str]| {
        if cond {
            explained.extend(paths.iter().map(|s| s.to_string()));
        }
    };
    add(!b["hostname"].is_null(), &["/etc/hostname", "/etc/hosts"]);
    add(!b["sysctl"].is_null(), &["/etc/sysctl.d/90-bosun.conf"]);
    add(!b["modules"].is_null(), &["/etc/modules-load.d/bosun.conf"]);
    add(
        !b["modules"]["modprobe_options"].is_null(),
        &["/etc/modprobe.d/bosun.conf"],
    );
    add(
        !b["dns_nameservers"].is_null(),
        &["/etc/systemd/resolved.conf.d/90-bosun.conf"],
    );
    add(
        !b["ntp_servers"].is_null(),
        &["/etc/systemd/timesyncd.conf.d/90-bosun.conf"],
    );
    add(
        !b["authorized_keys"].is_null() && b["authorized_keys"]["managed"] != Value::Bool(false),
        &["/home/rancher/.ssh/authorized_keys"],
    );
    add(!b["environment"].is_null(), &["/etc/environment"]);
    add(
        !map_of(&b["k3s"]["env"]).is_empty(),
        &["/etc/rancher/k3s/bosun.env"],
    );
    let unit = text_of(&b["k3s"]["unit"]);
    explained.insert(format!(
        "/etc/systemd/system/{unit}.service.d/90-bosun.conf"
    ));
    for w in b["wifi"].as_array().into_iter().flatten() {
        explained.insert(format!(
            "/etc/NetworkManager/system-connections/bosun-{}.nmconnection",
            text_of(&w["name"])
        ));
    }
    for f in files_under(&a.root) {
        if f.starts_with("/var/lib/bosun/") {
            continue;
        }
        p.check(explained.contains(&f), || format!("unexpected file {f}"));
    }
    p.eq(
        "/etc/passwd",
        a.text("/etc/passwd"),
        Some(K3OS_PASSWD.into()),
    );
    p.eq("/etc/group", a.text("/etc/group"), Some(K3OS_GROUP.into()));
    if b["password"].is_null() {
        p.eq(
            "/etc/shadow",
            a.text("/etc/shadow"),
            Some(K3OS_SHADOW.into()),
        );
    }
}

/// The manifest against itself: bosun's files are k3os's (bytes, mode, owner) unless a
/// difference names the path, and its k3s command line and environment are k3os's after the
/// documented changes.
fn check_against_k3os(p: &mut Problems, fx: &Fixture) {
    let (k, b) = (&fx.manifest["k3os"], &fx.manifest["bosun"]);
    if k["reads_config"] != Value::Bool(true) || b["outcome"] != "applies" {
        return;
    }
    let differences: Vec<String> = b["differences"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| text_of(&d["what"]))
        .collect();
    let explained = |path: &str| differences.iter().any(|w| w.contains(path));
    let k3os_files: BTreeMap<String, &Value> = k["write_files"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| (text_of(&f["path"]), f))
        .collect();
    for f in b["write_files"].as_array().into_iter().flatten() {
        let path = text_of(&f["path"]);
        let Some(kf) = k3os_files.get(&path) else {
            p.check(explained(&path), || {
                format!("{path}: k3os did not write it and no difference says why")
            });
            continue;
        };
        if explained(&path) {
            continue;
        }
        let bytes = |v: &Value| std::fs::read(fx.dir.join(text_of(&v["content"]))).unwrap();
        p.check(bytes(f) == bytes(kf), || {
            format!("{path}: bosun's bytes are not k3os's")
        });
        for field in ["mode", "uid", "gid"] {
            p.eq(
                &format!("{path}: {field} (bosun vs k3os)"),
                text_of(&f[field]),
                text_of(&kf[field]),
            );
        }
    }
    // k3s: k3os's install-script argv with its own labels dropped, taints as --node-taint,
    // and the role first.
    let args = strs(&k["k3s"]["install_script_args"]);
    let mut want = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let (a, next) = (&args[i], args.get(i + 1).cloned().unwrap_or_default());
        if a == "--node-label"
            && (next.starts_with("k3os.io/version=") || next.starts_with("k3os.io/mode="))
        {
            i += 2;
        } else if let (true, Some(t)) = (
            a == "--kubelet-arg",
            next.strip_prefix("register-with-taints="),
        ) {
            want.extend(["--node-taint".to_string(), t.to_string()]);
            i += 2;
        } else {
            want.push(a.clone());
            i += 1;
        }
    }
    if want.first().is_some_and(|a| a.starts_with('-')) {
        let role = if text_of(&b["k3s"]["unit"]) == "k3s" {
            "server"
        } else {
            "agent"
        };
        want.insert(0, role.to_string());
    }
    p.eq("bosun argv vs k3os's", strs(&b["k3s"]["argv"]), want);
    let mut env = map_of(&b["environment"]);
    for kv in strs(&k["k3s"]["env"]) {
        let (name, value) = kv.split_once('=').unwrap();
        let name = if name == "K3S_CLUSTER_SECRET" {
            "K3S_TOKEN"
        } else {
            name
        };
        env.insert(name.to_string(), value.to_string());
    }
    p.eq("bosun k3s env vs k3os's", map_of(&b["k3s"]["env"]), env);
}

/// Every fixture: applied by the binary, compared with its manifest; a rejected one changes
/// nothing. `bosun validate FILE` agrees with the outcome.
#[test]
fn every_k3os_fixture_applies_as_its_manifest_says() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let github = rt.block_on(crate::support::tls::serve_http(axum::Router::new().route(
        "/{file}",
        axum::routing::get(
            |axum::extract::Path(file): axum::extract::Path<String>| async move {
                match file.strip_suffix(".keys") {
                    Some(user) => (
                        axum::http::StatusCode::OK,
                        format!("{}\n", github_key(user)),
                    ),
                    None => (axum::http::StatusCode::NOT_FOUND, String::new()),
                }
            },
        ),
    )));
    let all = fixtures();
    assert!(all.len() >= 24, "only {} fixtures", all.len());
    let mut failures = Vec::new();
    let mut applied = 0;
    for fx in &all {
        let tmp = tempfile::tempdir().unwrap();
        let b = &fx.manifest["bosun"];
        let mut p = Problems::default();
        check_against_k3os(&mut p, fx);
        let before = {
            let r = tmp.path().join("root");
            std::fs::create_dir_all(r.join("etc")).unwrap();
            std::fs::write(r.join("etc/passwd"), K3OS_PASSWD).unwrap();
            std::fs::write(r.join("etc/group"), K3OS_GROUP).unwrap();
            std::fs::write(r.join("etc/shadow"), K3OS_SHADOW).unwrap();
            crate::support::tree(&r)
        };
        let a = apply(fx, tmp.path(), &github.base());
        check_diagnostics(&mut p, b, &a);
        let validate = bosun()
            .arg("validate")
            .arg(fx.dir.join("config.yaml"))
            .output()
            .unwrap();
        match b["outcome"].as_str() {
            Some("applies") => {
                applied += 1;
                p.eq("apply exit code", a.code, Some(0));
                p.eq("validate exit code", validate.status.code(), Some(0));
                check_write_files(&mut p, fx, b, &a);
                check_k3s(&mut p, b, &a);
                check_keys(&mut p, fx, b, &a);
                check_modules(&mut p, b, &a);
                check_host(&mut p, b, &a);
                check_password(&mut p, b, &a);
                check_commands(&mut p, b, &a);
                check_nothing_else(&mut p, b, &a);
            }
            Some("rejected") => {
                p.eq("apply exit code", a.code, Some(1));
                p.eq("validate exit code", validate.status.code(), Some(1));
                p.check(crate::support::tree(&a.root) == before, || {
                    "a rejected config changed the root".into()
                });
            }
            other => p.0.push(format!("outcome {other:?}")),
        }
        if !p.0.is_empty() {
            failures.push(format!(
                "{}:\n  {}\n  --- stdout\n{}  --- stderr\n{}",
                fx.name,
                p.0.join("\n  "),
                a.stdout,
                a.stderr
            ));
        }
    }
    assert!(applied >= 20, "only {applied} fixtures apply");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
