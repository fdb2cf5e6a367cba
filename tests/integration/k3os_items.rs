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
