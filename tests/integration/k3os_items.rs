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
