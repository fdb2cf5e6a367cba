//! The stand-in Kubernetes API server (support/kube.rs, which stands in for kube-apiserver:
//! K3s cannot run here) checked against the real `kubectl`: if kubectl's own requests work
//! against it (`get nodes`, `cordon`, `drain --ignore-daemonsets` through a
//! PodDisruptionBudget that answers 429 first, `get lease`), its semantics are the real ones
//! where bosun relies on them.
//!
//! `kubectl` comes from Debian's `kubernetes-client` (1.20) or, where the Google Cloud SDK's
//! 1.32 is installed, that one (see .ci/packages.txt); `BOSUN_TEST_KUBECTL` names another
//! binary.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::support::kube::{Auth, KubeApi, Owner};

fn kubectl(dir: &Path, args: &[&str]) -> Output {
    let bin = std::env::var("BOSUN_TEST_KUBECTL").unwrap_or_else(|_| "kubectl".into());
    Command::new(&bin)
        .arg("--kubeconfig")
        .arg(dir.join("kubeconfig"))
        .arg("--cache-dir")
        .arg(dir.join("cache"))
        .args(args)
        .env("HOME", dir)
        .env_remove("KUBECONFIG")
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {bin} ({e}): install Debian's kubernetes-client (see .ci/packages.txt)"
            )
        })
}

/// Runs kubectl and returns stdout; panics with both streams when it fails.
fn ok(dir: &Path, args: &[&str]) -> String {
    let out = kubectl(dir, args);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "kubectl {args:?} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    format!("{stdout}{stderr}")
}

#[test]
fn kubectl_gets_cordons_and_drains_against_the_stand_in_api_server() {
    let api = KubeApi::start_background(Auth::ClientCert);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("kubeconfig"), api.kubeconfig(None)).unwrap();
    api.add_node("n1");
    api.add_node("n2");
    api.add_pod(
        "default",
        "web-1",
        "n1",
        Owner::ReplicaSet,
        &[("app", "web")],
    );
    api.add_pod(
        "default",
        "web-2",
        "n2",
        Owner::ReplicaSet,
        &[("app", "web")],
    );
    api.add_pod("kube-system", "svclb-1", "n1", Owner::DaemonSet, &[]);
    api.add_pod("kube-system", "static-1", "n1", Owner::Mirror, &[]);
    api.add_lease("kube-system", "bosun-default-0", "n2");
    // Two web pods, at least two must stay: evicting web-1 is refused (429).
    api.set_pdb("default", "web", &[("app", "web")], 2);
    api.set_eviction_delay(Duration::from_millis(300));

    let out = ok(dir.path(), &["get", "nodes"]);
    assert!(
        out.contains("n1") && out.contains("n2") && out.contains("Ready"),
        "{out}"
    );

    // Served as a table (server-side printing), as kube-apiserver does for kubectl get.
    assert!(
        api.log()
            .iter()
            .any(|l| l.path == "/api/v1/nodes" && l.table),
        "{:?}",
        api.log()
    );

    let out = ok(dir.path(), &["cordon", "n1"]);
    assert!(out.contains("node/n1 cordoned"), "{out}");
    assert_eq!(
        api.node("n1")["spec"]["unschedulable"],
        serde_json::json!(true)
    );
    let out = ok(dir.path(), &["get", "nodes"]);
    assert!(out.contains("SchedulingDisabled"), "{out}");

    // Drain in the background; once the API server has refused an eviction (429), the budget
    // is relaxed and kubectl's retry (every 5 s) succeeds.
    let drain_dir = dir.path().to_path_buf();
    let drain = std::thread::spawn(move || {
        kubectl(
            &drain_dir,
            &["drain", "n1", "--ignore-daemonsets", "--timeout=90s"],
        )
    });
    let start = Instant::now();
    while !api
        .log()
        .iter()
        .any(|l| l.path.ends_with("/web-1/eviction") && l.status == 429)
    {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no eviction was refused: {:?}",
            api.log()
        );
        assert!(
            !drain.is_finished(),
            "kubectl drain ended before any eviction was refused"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    api.set_pdb("default", "web", &[("app", "web")], 1);
    let out = drain.join().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "kubectl drain failed:\n{text}");
    // kubectl 1.32 ends with "drained", 1.20 with "evicted".
    assert!(
        text.contains("node/n1 drained") || text.contains("node/n1 evicted"),
        "{text}"
    );
    assert!(text.contains("disruption budget"), "{text}");
    // Only the evictable pod went; DaemonSet and mirror pods stay, as on a real node.
    let mut left = api.pods_on("n1");
    left.sort();
    assert_eq!(left, vec!["static-1".to_string(), "svclb-1".to_string()]);
    let evictions: Vec<_> = api
        .log()
        .into_iter()
        .filter(|l| l.path.ends_with("/eviction"))
        .map(|l| (l.path, l.status))
        .collect();
    assert_eq!(evictions.first().map(|e| e.1), Some(429), "{evictions:?}");
    assert_eq!(evictions.last().map(|e| e.1), Some(201), "{evictions:?}");
    // Never a plain delete.
    assert!(
        !api.log().iter().any(|l| l.method == "DELETE"),
        "{:?}",
        api.log()
    );

    // The request log tracks cordoned nodes over time (the fleet tests' safety check).
    assert_eq!(api.max_unschedulable(), 1);

    let out = ok(dir.path(), &["get", "lease", "-n", "kube-system"]);
    assert!(
        out.contains("bosun-default-0") && out.contains("n2"),
        "{out}"
    );

    let out = ok(dir.path(), &["uncordon", "n1"]);
    assert!(out.contains("node/n1 uncordoned"), "{out}");
    assert_eq!(
        api.node("n1")["spec"]["unschedulable"],
        serde_json::Value::Null
    );
}
