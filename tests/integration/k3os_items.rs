//! Issue 13, item by item, through the real binary (`bosun apply | plan | validate`) on
//! throwaway k3os-like roots: what k3os did with a config and where bosun deliberately differs.
//! The real-config fixtures are in `k3os_compat.rs`.

use crate::support_k3os::{strs, text, K3osNode};

/// Item 1 and 2: one `--node-label k=v` per label (sorted as `k=v`, as k3os ≥ 0.9), one
/// `--node-taint T` per taint in order (k3os's `--kubelet-arg register-with-taints=` kept only
/// the last one), after the user's `k3s_args`.
#[test]
fn labels_and_taints_become_node_label_and_node_taint_flags() {
    let node = K3osNode::new(
        "k3os:\n  k3s_args: [server, --disable=traefik]\n  labels:\n    zone: b\n    a.b: '2'\n    \
         a: '1'\n  taints:\n  - dedicated=edge:NoSchedule\n  - gpu:NoExecute\n",
    );
    node.apply_ok(&[]);
    assert_eq!(
        node.k3s_argv("k3s"),
        strs(&[
            "server",
            "--disable=traefik",
            "--node-label",
            "a.b=2",
            "--node-label",
            "a=1",
            "--node-label",
            "zone=b",
            "--node-taint",
            "dedicated=edge:NoSchedule",
            "--node-taint",
            "gpu:NoExecute",
        ])
    );
    let dropin = node.read("/etc/systemd/system/k3s.service.d/90-bosun.conf");
    assert!(!dropin.contains("kubelet-arg"), "{dropin}");
    assert!(!dropin.contains("k3os.io/"), "{dropin}");
    let again = node.run("plan", "node1", &[]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
}

/// Item 3: `name param=value…` (rancher/k3os#457) loads the module with its parameters: the
/// name in modules-load.d, an `options` line in modprobe.d, and `modprobe` with the parameters
/// as separate arguments (no shell).
#[test]
fn module_parameters_reach_modprobe_d_and_modprobe() {
    let node = K3osNode::new(
        "k3os:\n  modules:\n  - kvm\n  - bonding mode=4 miimon=100 lacp_rate=1\n  - kvm\n",
    );
    let out = node.apply_ok(&[]);
    let header = "# Managed by bosun from the node config; local edits are overwritten.\n";
    assert_eq!(
        node.read("/etc/modules-load.d/bosun.conf"),
        format!("{header}kvm\nbonding\n")
    );
    assert_eq!(
        node.read("/etc/modprobe.d/bosun.conf"),
        format!("{header}options bonding mode=4 miimon=100 lacp_rate=1\n")
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    for line in [
        "would run: modprobe kvm (recorded",
        "would run: modprobe bonding mode=4 miimon=100 lacp_rate=1 (recorded",
    ] {
        assert!(stdout.contains(line), "{line} missing:\n{stdout}");
    }
}

/// Item 3, rejections: a parameter without `=`, with a shell metacharacter or a quote, and one
/// module with two sets of parameters, each named with file:line:col; nothing is written.
#[test]
fn bad_module_parameters_are_refused_before_anything_is_written() {
    let cases = [
        ("bonding mode", "3:5", "has no '='"),
        ("bonding mode=4;reboot", "3:5", "';'"),
        ("bonding mode=$(id)", "3:5", "'$'"),
        ("bonding mode=\"4\"", "3:5", "'\"'"),
    ];
    for (entry, at, what) in cases {
        let node = K3osNode::new(&format!("k3os:\n  modules:\n  - {entry}\n"));
        let out = node.run("apply", "node1", &[]);
        assert_eq!(out.status.code(), Some(1), "{entry}: {}", text(&out));
        let all = text(&out);
        assert!(
            all.contains(&format!(
                "config.yaml:{at}: k3os.modules: module bonding: parameter"
            )),
            "{entry}: {all}"
        );
        assert!(all.contains(what), "{entry}: {all}");
        assert!(!node.path("/etc/modules-load.d").exists(), "{entry}");
        let v = node.validate(&[]);
        assert_eq!(v.status.code(), Some(1), "{entry}: {}", text(&v));
    }
    let node = K3osNode::new("k3os:\n  modules:\n  - bonding mode=4\n  - bonding mode=1\n");
    let out = node.run("plan", "node1", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains(
            "config.yaml:4:5: k3os.modules: module bonding is listed again with other parameters"
        ),
        "{}",
        text(&out)
    );
}

/// The three k3os leniencies of one config: `(field, message)` as printed.
const LENIENT: [(&str, &str); 3] = [
    (
        "config.yaml:2:3: warning: ssh_authorized_keys[0]",
        "not an ssh public key (placeholder?)",
    ),
    (
        "config.yaml:5:9: warning: write_files[0].path",
        "\"test2.txt\" is relative; written to \"/test2.txt\"",
    ),
    (
        "config.yaml:11:5: warning: k3os.k3s_args[0]",
        "\"--node-ip=10.0.0.2\" is a flag, not `server` or `agent`; running `k3s agent`",
    ),
];

const LENIENT_CONFIG: &str = "ssh_authorized_keys:\n- <key>\n- ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl admin\nwrite_files:\n- path: test2.txt\n  content: hi\nk3os:\n  server_url: https://10.0.0.1:6443\n  token: K10abc::node:def\n  k3s_args:\n  - --node-ip=10.0.0.2\n";

/// Item 4: where k3os degraded one item and kept the rest, bosun does the same with a warning
/// naming file:line:col: the placeholder key is skipped (never written) and the real one kept,
/// the relative path lands under /, and flag-first k3s_args run as the agent the install
/// script would have started (server_url is set).
#[test]
fn leniencies_apply_with_warnings() {
    let node = K3osNode::new(LENIENT_CONFIG);
    let out = node.apply_ok(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    for (at, what) in LENIENT {
        assert!(
            stderr.lines().any(|l| l.starts_with(at)
                && l.contains(what)
                && l.ends_with("(an error with --strict)")),
            "{at} {what} missing:\n{stderr}"
        );
    }
    assert_eq!(
        node.read("/home/rancher/.ssh/authorized_keys"),
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl admin\n"
    );
    assert_eq!(node.read("/test2.txt"), "hi");
    assert_eq!(
        node.k3s_argv("k3s-agent"),
        strs(&["agent", "--node-ip=10.0.0.2"])
    );
    assert!(!node.path("/etc/systemd/system/k3s.service.d").exists());

    let v = node.validate(&[]);
    assert_eq!(v.status.code(), Some(0), "{}", text(&v));
    assert!(text(&v).contains("valid (3 warning(s))"), "{}", text(&v));
    let json = node.validate(&["--format", "json"]);
    let diags: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let lenient: Vec<&serde_json::Value> = diags
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["lenient"] == true && d["severity"] == "warning")
        .collect();
    assert_eq!(lenient.len(), 3, "{diags}");
}

/// Item 4 under `--strict`: each leniency is an error in `validate`, `plan` and `apply`, and
/// nothing is written.
#[test]
fn leniencies_are_errors_with_strict() {
    let node = K3osNode::new(LENIENT_CONFIG);
    let before = crate::support::tree(&node.root);
    for cmd in ["plan", "apply"] {
        let out = node.run(cmd, "node1", &["--strict"]);
        assert_eq!(out.status.code(), Some(1), "{cmd}: {}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        for (at, what) in LENIENT {
            let at = at.replace("warning: ", "");
            assert!(
                stderr.lines().any(|l| l.starts_with(&at)
                    && l.contains(what)
                    && l.ends_with("(an error because of --strict)")),
                "{cmd}: {at} {what} missing:\n{stderr}"
            );
        }
        assert_eq!(crate::support::tree(&node.root), before, "{cmd} wrote");
    }
    let v = node.validate(&["--strict"]);
    assert_eq!(v.status.code(), Some(1), "{}", text(&v));
    assert!(text(&v).contains("invalid: 3 error(s)"), "{}", text(&v));
}

/// Item 5: `owner:` means what `chown OWNER` meant to k3os on the root-owned file it had just
/// written: a user alone leaves the group root, `user:` takes the login group, `:group` leaves
/// the user root (rancher/k3os#357 wrote `owner: rancher`).
#[test]
fn owners_mean_what_chown_made_of_them() {
    let cases = [
        ("rancher", (1000, 0)),
        ("rancher:", (1000, 1000)),
        ("rancher:rancher", (1000, 1000)),
        ("rancher:sudo", (1000, 101)),
        (":sudo", (0, 101)),
        ("1000", (1000, 0)),
        ("1000:", (1000, 1000)),
        ("root", (0, 0)),
    ];
    let mut config = String::from("write_files:\n");
    for (i, (owner, _)) in cases.iter().enumerate() {
        config.push_str(&format!(
            "- path: /o/{i}\n  owner: \"{owner}\"\n  content: x\n"
        ));
    }
    let node = K3osNode::new(&config);
    node.apply_ok(&[]);
    for (i, (owner, (uid, gid))) in cases.iter().enumerate() {
        assert_eq!(
            node.meta(&format!("/o/{i}")),
            (0o644, *uid, *gid),
            "owner {owner:?}"
        );
    }
    let again = node.run("plan", "node1", &[]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

fn b64(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// Item 6: a multi-member gzip stream (`cat a.gz b.gz`) decodes to every member, as Go's
/// reader in k3os did; bytes after a member that are not another member reject the config
/// with file:line:col, and nothing is written.
#[test]
fn gzip_reads_every_member_and_refuses_trailing_bytes() {
    let both = [gzip(b"hello "), gzip(b"world\n")].concat();
    let node = K3osNode::new(&format!(
        "write_files:\n- path: /etc/greeting\n  encoding: gz+b64\n  content: {}\n",
        b64(&both)
    ));
    node.apply_ok(&[]);
    assert_eq!(node.read("/etc/greeting"), "hello world\n");

    let first = gzip(b"hello ");
    let junk = [first.clone(), b"trailing".to_vec()].concat();
    let node = K3osNode::new(&format!(
        "write_files:\n- path: /etc/ok\n  content: fine\n- path: /etc/greeting\n  encoding: gzip+base64\n  content: {}\n",
        b64(&junk)
    ));
    let before = crate::support::tree(&node.root);
    let out = node.run("apply", "node1", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let want = format!(
        "config.yaml:6:12: write_files[/etc/greeting].content: invalid gzip (encoding \"gzip+base64\"): 8 byte(s) after gzip member 1 (from byte {} of the compressed data)",
        first.len()
    );
    assert!(text(&out).contains(&want), "{want}\n{}", text(&out));
    assert_eq!(crate::support::tree(&node.root), before);
}

/// Validates each YAML file given after the schema with python3-jsonschema (read by
/// python3-yaml; `!!binary` bytes and dates become strings, as a JSON document would hold
/// them). Prints one line per invalid value, then `checked N, invalid M`.
const CHECK_SCHEMA_PY: &str = r#"
import sys, json, yaml, jsonschema, datetime, base64
def plain(v):
    if isinstance(v, dict):
        return {str(k): plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [plain(x) for x in v]
    if isinstance(v, bytes):
        return base64.b64encode(v).decode()
    if isinstance(v, (datetime.date, datetime.datetime)):
        return v.isoformat()
    return v
validator = jsonschema.Draft202012Validator(json.load(open(sys.argv[1])))
bad = 0
for f in sys.argv[2:]:
    errors = list(validator.iter_errors(plain(yaml.safe_load(open(f, encoding="utf-8")))))
    for e in errors:
        print(f"{f}: {'/'.join(map(str, e.absolute_path))}: {e.message}")
    bad += bool(errors)
print(f"checked {len(sys.argv) - 2}, invalid {bad}")
"#;

fn check_schema(files: &[std::path::PathBuf]) -> String {
    let schema = crate::config_cli::workspace().join("schemas/config.schema.json");
    let out = std::process::Command::new("python3")
        .args(["-c", CHECK_SCHEMA_PY])
        .arg(schema)
        .args(files)
        .output()
        .expect("python3 with python3-yaml and python3-jsonschema (.ci/packages.txt)");
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Item 7: the committed JSON Schema, checked by an implementation that is not bosun's
/// (python3-jsonschema), accepts every layer of example-repo (whose nodes remove inherited
/// keys with `null`), every valid config fixture and every k3os fixture bosun applies, and
/// still refuses values of the wrong shape.
#[test]
fn committed_schema_accepts_nulls_and_every_valid_config() {
    let ws = crate::config_cli::workspace();
    let yaml_in = |dir: &std::path::Path| -> Vec<std::path::PathBuf> {
        let mut v: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
            .collect();
        v.sort();
        v
    };
    let mut files = vec![ws.join("example-repo/config.yaml")];
    files.extend(yaml_in(&ws.join("example-repo/groups")));
    files.extend(yaml_in(&ws.join("example-repo/nodes")));
    let nulls = files
        .iter()
        .filter(|f| std::fs::read_to_string(f).unwrap().contains(": null"))
        .count();
    assert!(nulls >= 2, "example-repo no longer removes keys with null");
    files.extend(yaml_in(&ws.join("tests/fixtures/config/valid")));
    let k3os = ws.join("tests/fixtures/k3os");
    for e in std::fs::read_dir(&k3os).unwrap() {
        let dir = e.unwrap().path();
        let expected = dir.join("expected.yaml");
        if expected.exists()
            && std::fs::read_to_string(&expected)
                .unwrap()
                .contains("\n  outcome: applies")
        {
            files.push(dir.join("config.yaml"));
        }
    }
    assert!(files.len() >= 40, "only {} files", files.len());
    let report = check_schema(&files);
    assert_eq!(
        report.trim(),
        format!("checked {}, invalid 0", files.len()),
        "{report}"
    );

    // The validator is not vacuous: wrong shapes are refused.
    let tmp = tempfile::tempdir().unwrap();
    let bad = [
        "hostname: [a, b]\n",
        "write_files:\n- path: /x\n  permissions: '0999'\n",
        "k3os:\n  labels: 5\n",
        "health:\n  gate: sometimes\n",
    ];
    let paths: Vec<_> = bad
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let p = tmp.path().join(format!("bad{i}.yaml"));
            std::fs::write(&p, t).unwrap();
            p
        })
        .collect();
    let report = check_schema(&paths);
    assert!(
        report
            .trim_end()
            .ends_with(&format!("checked {}, invalid {}", bad.len(), bad.len())),
        "{report}"
    );
}

/// Item 8: messages in the user's terms, through the binary. A bad base64 character is named
/// with its line and column in the file (a truncated `...` in a `!!binary` block, as in k3os's
/// README); a `<key>` placeholder says so; a key fetch that fails with nothing cached is a
/// plain warning (a loopback server stands in for github.com and answers 500).
#[test]
fn messages_name_the_character_the_placeholder_and_the_failed_fetch() {
    let node = K3osNode::new(
        "write_files:\n- path: /bin/arch\n  content: !!binary |\n    f0VMRgIBAQAAAAAAAAAAAAIAPgAB\n    AEAAHgAdAAYAAAAFAAAAQAAAAAAA\n    ...\n",
    );
    let out = node.run("apply", "node1", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let want = "config.yaml:3:12: write_files[/bin/arch].content: invalid !!binary base64: \
                '.' at line 6, column 5 is not a base64 character";
    assert!(text(&out).contains(want), "{want}\n{}", text(&out));

    let rt = tokio::runtime::Runtime::new().unwrap();
    let github = rt.block_on(crate::support::tls::serve_http(axum::Router::new().route(
        "/{user}",
        axum::routing::get(|| async { (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "down") }),
    )));
    let node = K3osNode::new("ssh_authorized_keys:\n- <key>\n- github:alice\n");
    let out = node.apply_ok(&["--github-base", &github.base()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "config.yaml:2:3: warning: ssh_authorized_keys[0]: not an ssh public key (placeholder?): one word"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("config.yaml:3:3: ssh_authorized_keys github:alice: fetch failed ("),
        "{stderr}"
    );
    assert!(stderr.contains("and nothing is cached"), "{stderr}");
    assert!(!stderr.contains("FETCH FAILED"), "{stderr}");
    assert!(!node.path("/home/rancher/.ssh/authorized_keys").exists());
}
