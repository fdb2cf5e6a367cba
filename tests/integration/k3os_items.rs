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
