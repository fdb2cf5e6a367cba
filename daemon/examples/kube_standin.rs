//! The fleet tests' stand-in Kubernetes API server (`tests/integration/support/kube.rs`, the
//! same code) as a program, for `bench/fleet/run.sh`. It STANDS IN FOR kube-apiserver (K3s
//! cannot run here): HTTPS on 127.0.0.1 and a random port, client-certificate auth, Leases,
//! Nodes, Pods and Evictions with the semantics the fleet tests rely on (resourceVersion, 409,
//! 429 under a PodDisruptionBudget), itself checked against `kubectl` in the kubectl test.
//!
//! ```text
//! kube_standin DIR NODES
//! ```
//!
//! writes `DIR/kubeconfig` (client certificate, CA, server URL), adds Nodes `node-0` …
//! `node-<NODES-1>`, each with one evictable pod and one DaemonSet pod, then appends every
//! request it serves to `DIR/requests.log`, one line each:
//! `<unix ms> <method> <path> <status> <unschedulable nodes after it>`. Runs until killed.

use std::io::Write;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

// The test support modules, at the crate root (`kube` names its sibling as `super::tls`).
#[path = "../../tests/integration/support/kube.rs"]
mod kube;
#[path = "../../tests/integration/support/tls.rs"]
mod tls;

use kube::{Auth, KubeApi, Owner};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(dir), Some(nodes)) = (
        args.get(1),
        args.get(2).and_then(|n| n.parse::<usize>().ok()),
    ) else {
        eprintln!("usage: kube_standin DIR NODES");
        std::process::exit(2);
    };
    let dir = std::path::PathBuf::from(dir);
    let api = KubeApi::start_background(Auth::ClientCert);
    api.add_daemonset("kube-system", "svclb");
    for i in 0..nodes {
        let name = format!("node-{i}");
        api.add_node(&name);
        let web = format!("web-{i}");
        api.add_pod("default", &web, &name, Owner::ReplicaSet, &[("app", "web")]);
        let svclb = format!("svclb-{i}");
        api.add_pod("kube-system", &svclb, &name, Owner::DaemonSet, &[]);
    }
    let tmp = dir.join("kubeconfig.tmp");
    std::fs::write(&tmp, api.kubeconfig(None)).expect("write the kubeconfig");
    std::fs::rename(&tmp, dir.join("kubeconfig")).expect("publish the kubeconfig");
    let (t0, unix0) = (Instant::now(), SystemTime::now());
    let unix0_ms = unix0.duration_since(UNIX_EPOCH).unwrap().as_millis();
    let mut out = std::fs::File::create(dir.join("requests.log")).expect("requests.log");
    let mut written = 0;
    loop {
        let log = api.log();
        for l in &log[written..] {
            let ms = unix0_ms + l.at.saturating_duration_since(t0).as_millis();
            let line = format!(
                "{ms} {} {} {} {}\n",
                l.method, l.path, l.status, l.unschedulable_after
            );
            out.write_all(line.as_bytes()).expect("write requests.log");
        }
        written = log.len();
        out.flush().expect("flush requests.log");
        std::thread::sleep(Duration::from_millis(100));
    }
}
