//! Fleet simulation: several `bosun daemon` processes (own roots and node names) follow one
//! repo served by `git daemon` on 127.0.0.1 and coordinate through one stand-in Kubernetes API
//! server (`support::kube`: K3s and kube-apiserver cannot run here; the stand-in has real
//! Lease, Node, Pod and Eviction semantics and is checked against `kubectl` in kubectl.rs).
//! Each node's kubelet is a stand-in HTTP endpoint that fails while the node's root holds
//! the marker file a broken commit writes. Effects (k3s restarts) are recorded, not run (the
//! roots are not `/`); reboots are done by the test, which kills the daemon, lets the GRUB
//! simulator of `support::upgrade` pick the slot, and starts the daemon again.
//!
//! One test uses the fake FleetLock server of `support::fleetlock` (airlock's answers, a
//! real semaphore) instead of Leases.
//!
//! What is checked comes from the servers' own request logs: how many nodes were cordoned
//! at any moment, when each node was cordoned and uncordoned relative to the commit, when a
//! dead holder's Lease was last renewed and taken over, which evictions were refused.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config_cli::bosun;
use crate::support::fleetlock::{Dialect, FleetLockServer};
use crate::support::git::{GitDaemon, WorkRepo};
use crate::support::kube::{Auth, KubeApi, Logged, Owner};
use crate::support::tls::{serve_http, TestServer};

const GROUP: &str = "fleet";
const BROKEN: &str = "etc/standin/kubelet-broken";
const DROPIN: &str = "etc/systemd/system/k3s.service.d/90-bosun.conf";

/// One node of the fleet: its directory, root, state and agent config.
struct FleetNode {
    name: String,
    root: PathBuf,
    state: PathBuf,
    config: PathBuf,
    daemon: Option<Daemon>,
}

/// A running `bosun daemon` with its stderr collected.
struct Daemon {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl FleetNode {
    /// `extra`: agent config lines (the `coordination:` section among them).
    fn new(base: &Path, name: &str, url: &str, kubeconfig: &str, extra: &str) -> FleetNode {
        let dir = base.join(name);
        let root = dir.join("root");
        let state = dir.join("state");
        std::fs::create_dir_all(root.join("etc/bosun")).unwrap();
        std::fs::write(root.join("etc/bosun/kubeconfig"), kubeconfig).unwrap();
        let config = dir.join("agent.yaml");
        std::fs::write(
            &config,
            format!(
                "source:\n  url: {url}\n  ref: main\ninterval: 1s\njitter_percent: 0\n\
                 node_name: {name}\nroot: {root}\nstate_dir: {state}\n\
                 metrics:\n  listen: 127.0.0.1:0\ndrift:\n  enabled: false\n{extra}",
                root = root.display(),
                state = state.display(),
            ),
        )
        .unwrap();
        FleetNode {
            name: name.to_string(),
            root,
            state,
            config,
            daemon: None,
        }
    }

    fn start(&mut self) {
        let mut child = bosun()
            .args(["daemon", "--config"])
            .arg(&self.config)
            .env_remove("NOTIFY_SOCKET")
            .env_remove("JOURNAL_STREAM")
            .env("BOSUN_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn bosun daemon");
        let log = Arc::new(Mutex::new(String::new()));
        let sink = log.clone();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        self.daemon = Some(Daemon { child, log });
    }

    fn log(&self) -> String {
        self.daemon
            .as_ref()
            .map(|d| d.log.lock().unwrap().clone())
            .unwrap_or_default()
    }

    /// SIGKILL, as a power cut or an OOM kill.
    fn kill(&mut self) {
        self.daemon = None;
    }

    fn status(&self) -> serde_json::Value {
        std::fs::read(self.state.join("status.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(serde_json::Value::Null)
    }

    fn applied(&self) -> Option<String> {
        self.status()["last_applied_commit"]
            .as_str()
            .map(str::to_string)
    }

    /// The value of metric series `series` (labels included), if the daemon serves it.
    fn metric(&self, series: &str) -> Option<f64> {
        // The daemon listens on a port the kernel picked (port 0) and logs it.
        let log = self.log();
        let (_, rest) = log.split_once("metrics on http://127.0.0.1:")?;
        let port: u16 = rest.split('/').next()?.parse().ok()?;
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .ok()?;
        let mut body = String::new();
        s.read_to_string(&mut body).ok()?;
        body.lines().find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
                .and_then(|v| v.trim().parse().ok())
        })
    }

    /// `bosun status` of this node, as text.
    fn status_text(&self) -> String {
        let out = bosun()
            .args(["status", "--state-dir"])
            .arg(&self.state)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The gate the node says it waits at, the same in its status file, `bosun status`, its
    /// metrics and its Node's `bosun.dev/state` label (`None` while they disagree).
    fn says(&self, api: &KubeApi) -> Option<String> {
        let state = self.status()["rollout_state"].as_str()?.to_string();
        let text = self
            .status_text()
            .contains(&format!("rollout:         {state} "));
        let metric = self.metric(&format!("bosun_rollout_state{{state=\"{state}\"}}")) == Some(1.0);
        let label = api.node(&self.name)["metadata"]["labels"]["bosun.dev/state"] == state.as_str();
        (text && metric && label).then_some(state)
    }

    fn dropin(&self) -> String {
        std::fs::read_to_string(self.root.join(DROPIN)).unwrap_or_default()
    }
}

/// A stand-in kubelet `/healthz` per node: 500 while `<root>/etc/standin/kubelet-broken`
/// exists, else 200. On its own runtime (the test is synchronous).
struct Kubelets {
    server: TestServer,
    _rt: tokio::runtime::Runtime,
}

impl Kubelets {
    fn start(roots: BTreeMap<String, PathBuf>) -> Kubelets {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let roots = Arc::new(roots);
        let router = axum::Router::new().route(
            "/{node}/healthz",
            axum::routing::get(
                move |axum::extract::Path(node): axum::extract::Path<String>| {
                    let roots = roots.clone();
                    async move {
                        match roots.get(&node) {
                            Some(r) if !r.join(BROKEN).exists() => {
                                (axum::http::StatusCode::OK, "ok")
                            }
                            _ => (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "broken"),
                        }
                    }
                },
            ),
        );
        let server = rt.block_on(serve_http(router));
        Kubelets { server, _rt: rt }
    }
}

/// The fleet: repo, git daemon, API server, kubelets, nodes.
struct Fleet {
    _tmp: tempfile::TempDir,
    repo: WorkRepo,
    _git: GitDaemon,
    api: KubeApi,
    kubelets: Kubelets,
    nodes: Vec<FleetNode>,
}

impl Fleet {
    /// `n` nodes named `node-0`…, coordinating through the stand-in API server (Leases);
    /// each with one evictable pod and one DaemonSet pod. `extra_agent`: more agent config.
    fn new(n: usize, extra_agent: impl Fn(&Path) -> String) -> Fleet {
        let kube = "coordination:\n  backend: kubernetes\n  kubeconfig: /etc/bosun/kubeconfig\n";
        Fleet::with_coordination(n, |dir| format!("{kube}{}", extra_agent(dir)))
    }

    /// `n` nodes with the agent config lines `agent` (which name the coordination backend).
    fn with_coordination(n: usize, agent: impl Fn(&Path) -> String) -> Fleet {
        let tmp = tempfile::tempdir().unwrap();
        let repo = WorkRepo::init(&tmp.path().join("fleet"));
        let git = GitDaemon::start(tmp.path());
        let api = KubeApi::start_background(Auth::ClientCert);
        let kubeconfig = api.kubeconfig(None);
        api.add_daemonset("kube-system", "svclb");
        let mut nodes = Vec::new();
        for i in 0..n {
            let name = format!("node-{i}");
            api.add_node(&name);
            api.add_pod(
                "default",
                &format!("web-{i}"),
                &name,
                Owner::ReplicaSet,
                &[("app", "web")],
            );
            api.add_pod(
                "kube-system",
                &format!("svclb-{i}"),
                &name,
                Owner::DaemonSet,
                &[],
            );
            let dir = tmp.path().join(&name);
            let extra = agent(&dir);
            nodes.push(FleetNode::new(
                tmp.path(),
                &name,
                &git.url("fleet"),
                &kubeconfig,
                &extra,
            ));
        }
        let roots = nodes
            .iter()
            .map(|n| (n.name.clone(), n.root.clone()))
            .collect();
        let kubelets = Kubelets::start(roots);
        let fleet = Fleet {
            _tmp: tmp,
            repo,
            _git: git,
            api,
            kubelets,
            nodes,
        };
        for n in &fleet.nodes {
            fleet.repo.write(
                &format!("nodes/{}.yaml", n.name),
                &format!(
                    "health:\n  checks:\n  - type: kubelet\n    url: {}\n",
                    fleet.kubelets.server.url(&format!("/{}/healthz", n.name))
                ),
            );
        }
        fleet.repo.write(
            "groups/canary.yaml",
            "match: [node-0]\nrollout:\n  canary: true\n",
        );
        fleet
    }

    /// The base config: label `tier`, the health gate, the rollout policy `rollout` (YAML
    /// lines under `rollout:`), and optionally the marker that breaks the kubelet.
    fn base(&self, tier: &str, rollout: &str, broken: bool) -> String {
        let mut y = format!(
            "k3os:\n  labels:\n    tier: \"{tier}\"\nhealth:\n  gate: k3s\n  timeout: 3s\n  \
             interval: 200ms\n  successes: 1\nrollout:\n  group: {GROUP}\n{rollout}"
        );
        if broken {
            y.push_str(&format!(
                "write_files:\n- path: /{BROKEN}\n  content: \"broken\\n\"\n"
            ));
        }
        y
    }

    fn start_all(&mut self) {
        for n in &mut self.nodes {
            n.start();
        }
    }

    /// Waits until every node's status says it applied `commit` (or `timeout`).
    fn wait_applied(&self, commit: &str, timeout: Duration) {
        let ok = wait_until(timeout, || {
            self.nodes
                .iter()
                .all(|n| n.applied().as_deref() == Some(commit))
        });
        if !ok {
            let mut report = String::new();
            for n in &self.nodes {
                report.push_str(&format!(
                    "--- {} applied {:?} rollout {:?}\n{}\n",
                    n.name,
                    n.applied(),
                    n.status()["rollout_state"],
                    tail(&n.log(), 25)
                ));
            }
            panic!("not every node applied {commit} within {timeout:?}:\n{report}");
        }
    }

    /// The node's label `key` on its Node object.
    fn label(&self, node: &str, key: &str) -> Option<String> {
        self.api.node(node)["metadata"]["labels"][key]
            .as_str()
            .map(str::to_string)
    }

    /// When each node was first cordoned after `since` (from the API server's log).
    fn cordons_since(&self, since: Instant) -> BTreeMap<String, Instant> {
        let mut out = BTreeMap::new();
        for (node, from, _) in cordon_spans(&self.api.log()) {
            if from >= since {
                out.entry(node).or_insert(from);
            }
        }
        out
    }
}

/// Every time a node was unschedulable: (node, cordoned at, uncordoned at), in the order of
/// the cordons, from the API server's own log (which records the unschedulable nodes after
/// each request, under the same lock as the request).
fn cordon_spans(log: &[Logged]) -> Vec<(String, Instant, Option<Instant>)> {
    let mut spans: Vec<(String, Instant, Option<Instant>)> = Vec::new();
    let mut before: Vec<String> = Vec::new();
    for l in log {
        for n in &l.unschedulable_nodes {
            if !before.contains(n) {
                spans.push((n.clone(), l.at, None));
            }
        }
        for n in &before {
            if !l.unschedulable_nodes.contains(n) {
                if let Some(s) = spans.iter_mut().rev().find(|s| &s.0 == n) {
                    s.2 = Some(l.at);
                }
            }
        }
        before = l.unschedulable_nodes.clone();
    }
    spans
}

/// The last `n` lines of a daemon's log, a line repeating the one before (timestamps aside)
/// left out.
fn tail(s: &str, n: usize) -> String {
    let message = |l: &str| l.split_once(' ').map_or(l, |(_, m)| m).to_string();
    let mut lines: Vec<&str> = Vec::new();
    for l in s.lines() {
        if lines.last().map(|p| message(p)) != Some(message(l)) {
            lines.push(l);
        }
    }
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The rollout policy lines of the k3s-change scenario.
fn policy(waves: &str) -> String {
    format!(
        "  max_unavailable: 2\n  drain_on_restart: true\n  drain:\n    timeout: 20s\n  \
         lock_ttl: 15s\n{waves}"
    )
}

#[test]
fn a_k3s_change_rolls_out_in_waves_two_at_a_time_and_a_failing_canary_halts_the_fleet() {
    let mut fleet = Fleet::new(8, |_| String::new());
    // v1: the first apply restarts k3s everywhere, through the lock (two at a time).
    fleet
        .repo
        .write("config.yaml", &fleet.base("v1", &policy(""), false));
    let v1 = fleet.repo.commit("v1");
    fleet.start_all();
    fleet.wait_applied(&v1, Duration::from_secs(180));
    assert!(
        fleet.api.max_unschedulable() <= 2,
        "more than 2 nodes cordoned at once"
    );

    // v2: a label change for all, in two waves after the canary: 50 % after 3 s, the rest
    // after 6 s (committer time).
    let waves = "  waves:\n  - {after: 3s, percent: 50}\n  - {after: 6s, percent: 100}\n";
    fleet
        .repo
        .write("config.yaml", &fleet.base("v2", &policy(waves), false));
    let before_commit = Instant::now();
    let v2 = fleet.repo.commit("v2: label tier v2, in waves");
    fleet.wait_applied(&v2, Duration::from_secs(180));
    for n in &fleet.nodes {
        assert!(n.dropin().contains("tier=v2"), "{}: {}", n.name, n.dropin());
    }
    let cordons = fleet.cordons_since(before_commit);
    assert_eq!(
        cordons.len(),
        8,
        "every node drains before its restart: {cordons:?}"
    );
    let first = cordons.iter().min_by_key(|(_, at)| **at).unwrap();
    assert_eq!(first.0, "node-0", "the canary goes first: {cordons:?}");
    // The committer time is whole seconds: a wave may open up to 1 s before `after`.
    for (node, at) in &cordons {
        let position = bosun::rollout::wave::position(GROUP, node);
        let after = match (node.as_str(), position < 0.5) {
            ("node-0", _) => 0,
            (_, true) => 3,
            (_, false) => 6,
        };
        let waited = at.saturating_duration_since(before_commit);
        assert!(
            waited + Duration::from_secs(1) >= Duration::from_secs(after),
            "{node} (position {position:.2}) started {waited:?} after the commit, before its wave at {after}s"
        );
    }
    assert!(
        fleet.api.max_unschedulable() <= 2,
        "more than 2 nodes cordoned at once"
    );

    // v3 breaks the kubelet. The canary tries it, fails its health gate, rolls back and marks
    // its Node; every other node reaches its wave (8 s), sees the mark and holds.
    let slow = "  waves:\n  - {after: 8s, percent: 100}\n";
    fleet
        .repo
        .write("config.yaml", &fleet.base("v3", &policy(slow), true));
    let before_v3 = Instant::now();
    let v3 = fleet.repo.commit("v3: breaks the kubelet");
    let short = &v3[..12];
    let halted = wait_until(Duration::from_secs(120), || {
        fleet.label("node-0", "bosun.dev/failed").as_deref() == Some(short)
            && fleet.nodes[1..]
                .iter()
                .all(|n| fleet.label(&n.name, "bosun.dev/state").as_deref() == Some("halted"))
    });
    assert!(
        halted,
        "the fleet did not halt behind the canary: {:?}",
        fleet.api.node("node-1")
    );
    let cordons = fleet.cordons_since(before_v3);
    assert_eq!(
        cordons.keys().collect::<Vec<_>>(),
        vec!["node-0"],
        "only the canary may disrupt for a commit that failed"
    );
    for n in &fleet.nodes {
        assert_eq!(
            n.applied().as_deref(),
            Some(v2.as_str()),
            "{} left v2",
            n.name
        );
        assert!(!n.root.join(BROKEN).exists(), "{} kept v3's files", n.name);
    }

    // v4, good again: the halt lifts and every node converges; the canary's mark is cleared.
    fleet
        .repo
        .write("config.yaml", &fleet.base("v4", &policy(""), false));
    let v4 = fleet.repo.commit("v4: fixed");
    fleet.wait_applied(&v4, Duration::from_secs(180));
    assert_eq!(fleet.label("node-0", "bosun.dev/failed"), None);
    assert!(
        fleet.api.max_unschedulable() <= 2,
        "more than 2 nodes cordoned at once"
    );
    for n in &fleet.nodes {
        assert!(n.dropin().contains("tier=v4"), "{}", n.name);
    }
    // The Nodes say so (each daemon patches its Node after the apply).
    let labelled = wait_until(Duration::from_secs(10), || {
        fleet.nodes.iter().all(|n| {
            fleet.label(&n.name, "bosun.dev/state").as_deref() == Some("idle")
                && fleet.label(&n.name, "bosun.dev/commit").as_deref() == Some(&v4[..12])
        })
    });
    assert!(labelled, "{:?}", fleet.api.node("node-7"));
    assert_eq!(fleet.api.unschedulable_now(), 0, "a node stayed cordoned");
}

/// The node's upgrade lifecycle name (`committed`, `staged`, …) from its state file.
fn lifecycle(n: &FleetNode) -> String {
    std::fs::read(n.state.join(bosun::upgrade::actor::STATE_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice::<bosun::upgrade::machine::UpgradeState>(&b).ok())
        .map(|s| s.lifecycle.name().to_string())
        .unwrap_or_default()
}

#[test]
fn an_upgrade_reboots_one_drained_node_at_a_time_holding_its_slot_across_the_reboot() {
    use crate::support_upgrade::{Backend, Node as AbNode};
    use bosun::bootenv::Slot;
    // Slot files and a GRUB env per node (the simulator of support::upgrade boots them).
    const N: usize = 8;
    let mut ab: Vec<AbNode> = (0..N).map(|_| AbNode::new(Backend::Grub, false)).collect();
    let grub = |n: &AbNode| match &n.medium {
        crate::support_upgrade::Medium::Grub(p) => p.clone(),
        _ => unreachable!(),
    };
    let agents: Vec<String> = ab
        .iter()
        .map(|n| {
            format!(
                "upgrade:\n  slots:\n    a: {}\n    b: {}\n  bootloader: grub\n  grubenv: {}\n  cmdline: {}\n",
                n.slots.a.display(),
                n.slots.b.display(),
                grub(n).display(),
                n.cmdline.display()
            )
        })
        .collect();
    let idx = std::cell::Cell::new(0);
    let mut fleet = Fleet::new(N, |_| {
        let i = idx.get();
        idx.set(i + 1);
        agents[i].clone()
    });
    // Each node's bootloader simulator knows the image (it boots a slot only when it holds
    // an image it recognises); the bytes are the same for all.
    let image = ab[0].image("v2");
    for n in &mut ab[1..] {
        assert_eq!(n.image("v2").bytes, image.bytes);
    }
    let one = "  max_unavailable: 1\n  lock_ttl: 15s\n";
    fleet
        .repo
        .write("config.yaml", &fleet.base("v1", one, false));
    let v1 = fleet.repo.commit("v1");
    fleet.start_all();
    fleet.wait_applied(&v1, Duration::from_secs(120));

    let upgrade = format!(
        "upgrade:\n  version: v2\n  image: {}\n  sha256: {}\n  tries: 3\n",
        image.path.display(),
        image.sha_hex()
    );
    let config = format!("{}{upgrade}", fleet.base("v1", one, false));
    fleet.repo.write("config.yaml", &config);
    let v2 = fleet.repo.commit("v2: upgrade to OS v2");
    // The test is the bootloader: when a daemon asks for a reboot, stop it, let GRUB pick a
    // slot, start it again. Meanwhile its Lease must stay held.
    let mut reboots = vec![0usize; N];
    let mut held_across = vec![false; N];
    let mut rebooted_at: Vec<Option<Instant>> = vec![None; N];
    let done = wait_until(Duration::from_secs(180), || {
        for (i, n) in fleet.nodes.iter_mut().enumerate() {
            let asked = n.log().matches("upgrade: reboot requested").count();
            if asked > 0 && n.daemon.is_some() {
                n.kill();
                rebooted_at[i] = Some(Instant::now());
                let holder = fleet.api.lease("kube-system", "bosun-fleet-0");
                held_across[i] |=
                    holder.is_some_and(|l| l["spec"]["holderIdentity"] == n.name.as_str());
                ab[i].boot();
                reboots[i] += 1;
                n.start();
            }
        }
        fleet.nodes.iter().all(|n| lifecycle(n) == "committed")
            && fleet
                .nodes
                .iter()
                .all(|n| n.status()["rollout_state"] == "idle")
    });
    if !done {
        let report: Vec<String> = fleet
            .nodes
            .iter()
            .map(|n| {
                format!(
                    "--- {} {} {}\n{}",
                    n.name,
                    lifecycle(n),
                    n.status()["rollout_state"],
                    tail(&n.log(), 200)
                )
            })
            .collect();
        panic!("the fleet did not commit v2:\n{}", report.join("\n"));
    }
    assert_eq!(reboots, vec![1; N], "one trial reboot per node");
    assert_eq!(
        held_across,
        vec![true; N],
        "the slot is held across the reboot"
    );
    for (i, n) in ab.iter().enumerate() {
        assert_eq!(n.boots.last(), Some(&Slot::B), "node-{i} runs slot b");
        assert_eq!(fleet.nodes[i].applied().as_deref(), Some(v2.as_str()));
    }
    assert!(
        fleet.api.max_unschedulable() <= 1,
        "more than one node drained at once"
    );
    // Each reboot happened while its node was cordoned (and the one cordon at a time).
    let spans = cordon_spans(&fleet.api.log());
    for (i, at) in rebooted_at.iter().enumerate() {
        let at = at.unwrap();
        let name = format!("node-{i}");
        assert!(
            spans
                .iter()
                .any(|(n, from, to)| *n == name && *from < at && to.is_some_and(|t| t > at)),
            "{name} rebooted outside a cordon: {spans:?}"
        );
    }
    for i in 0..N {
        assert!(
            fleet
                .api
                .pods_on(&format!("node-{i}"))
                .iter()
                .all(|p| p.starts_with("svclb")),
            "node-{i} was not drained before its reboot"
        );
    }
    assert_eq!(fleet.api.unschedulable_now(), 0, "a node stayed cordoned");
    assert!(
        fleet.api.lease("kube-system", "bosun-fleet-0").is_none(),
        "the slot was not released"
    );
}

#[test]
fn a_dead_holder_is_broken_after_the_ttl_and_a_drain_that_cannot_finish_gives_up() {
    let mut fleet = Fleet::new(3, |_| String::new());
    let policy =
        |waves_drain: &str| format!("  max_unavailable: 1\n  lock_ttl: 15s\n{waves_drain}");
    let drained = "  drain_on_restart: true\n  drain:\n    timeout: 8s\n";
    fleet
        .repo
        .write("config.yaml", &fleet.base("v1", &policy(drained), false));
    let v1 = fleet.repo.commit("v1");
    fleet.start_all();
    fleet.wait_applied(&v1, Duration::from_secs(120));

    // The v1 drains evicted every pod. node-1 gets a new one that a PodDisruptionBudget
    // never allows to evict: its drain times out, it uncordons, gives the slot back and backs
    // off; the others go ahead.
    fleet.api.add_pod(
        "default",
        "db-1",
        "node-1",
        Owner::ReplicaSet,
        &[("app", "db")],
    );
    fleet.api.set_pdb("default", "db", &[("app", "db")], 1);
    fleet
        .repo
        .write("config.yaml", &fleet.base("v2", &policy(drained), false));
    let before = Instant::now();
    let v2 = fleet.repo.commit("v2");
    let gave_up = |fleet: &Fleet| {
        cordon_spans(&fleet.api.log())
            .into_iter()
            .find(|(n, from, to)| n == "node-1" && *from >= before && to.is_some())
    };
    let others = wait_until(Duration::from_secs(120), || {
        gave_up(&fleet).is_some()
            && [0, 2]
                .iter()
                .all(|&i| fleet.nodes[i].applied().as_deref() == Some(v2.as_str()))
    });
    assert!(
        others,
        "node-1 did not give up, or the others did not get past its stuck drain: {:?}",
        cordon_spans(&fleet.api.log())
    );
    let (_, cordoned, uncordoned) = gave_up(&fleet).unwrap();
    let held = uncordoned.unwrap().saturating_duration_since(cordoned);
    // The drain clock counts whole seconds: it may give up up to 1 s before the 8 s.
    assert!(
        held >= Duration::from_secs(7),
        "node-1 gave up after {held:?}, before the drain timeout"
    );
    assert_ne!(
        fleet.nodes[1].applied().as_deref(),
        Some(v2.as_str()),
        "node-1 restarted without its drain"
    );
    assert!(fleet.api.pods_on("node-1").contains(&"db-1".to_string()));
    // The budget refused the eviction, and it was asked again every 5 s (not at every 1 s
    // poll) while the drain lasted; the slack is the requests' own latency.
    let refused: Vec<Instant> = fleet
        .api
        .log()
        .iter()
        .filter(|l| {
            l.at >= cordoned
                && l.at <= uncordoned.unwrap()
                && l.status == 429
                && l.path == "/api/v1/namespaces/default/pods/db-1/eviction"
        })
        .map(|l| l.at)
        .collect();
    assert!(refused.len() >= 2, "no eviction retried: {refused:?}");
    for pair in refused.windows(2) {
        let gap = pair[1].saturating_duration_since(pair[0]);
        assert!(
            gap >= Duration::from_millis(4500),
            "evictions retried {gap:?} apart"
        );
    }
    assert!(
        fleet.api.max_unschedulable() <= 1,
        "more than one node cordoned at once"
    );
    // The budget is relaxed: node-1 retries after its backoff, drains and converges.
    fleet.api.set_pdb("default", "db", &[("app", "db")], 0);
    fleet.wait_applied(&v2, Duration::from_secs(120));
    assert!(!fleet.api.pods_on("node-1").contains(&"db-1".to_string()));
    assert_eq!(fleet.api.unschedulable_now(), 0, "a node stayed cordoned");

    // v3, without drains and with a slower health gate: the first node that takes the slot is
    // killed while holding it. Nobody else may start before the TTL (15 s, judged on each
    // node's own clock) has passed; then the slot is broken and the rest converge.
    let slow_gate = fleet.base("v3", &policy(""), false).replace(
        "timeout: 3s\n  interval: 200ms\n  successes: 1",
        "timeout: 10s\n  interval: 1s\n  successes: 2",
    );
    fleet.repo.write("config.yaml", &slow_gate);
    let v3 = fleet.repo.commit("v3");
    let mut holder = None;
    assert!(wait_until(Duration::from_secs(60), || {
        holder = fleet
            .api
            .lease("kube-system", "bosun-fleet-0")
            .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_string));
        holder.is_some()
    }));
    let victim = holder.unwrap();
    let v = fleet.nodes.iter_mut().find(|n| n.name == victim).unwrap();
    v.kill();
    let killed_at = Instant::now();
    let lease_path = "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/bosun-fleet-0";
    let broken = wait_until(Duration::from_secs(120), || {
        fleet
            .api
            .lease("kube-system", "bosun-fleet-0")
            .is_some_and(|l| l["spec"]["holderIdentity"] != victim.as_str())
    });
    assert!(broken, "the dead holder's slot was never broken");
    // From the API server's log: the victim's last write of the Lease (its take or a renewal)
    // and the write that took it over. Nobody may break it before the TTL has passed since.
    let log = fleet.api.log();
    let writes: Vec<&Logged> = log
        .iter()
        .filter(|l| {
            (l.status == 200 || l.status == 201)
                && ((l.method == "PUT" && l.path == lease_path)
                    || (l.method == "POST"
                        && l.path == lease_path.trim_end_matches("/bosun-fleet-0")))
        })
        .collect();
    let last_renewal = writes.iter().rev().find(|l| l.at < killed_at).unwrap().at;
    let takeover = writes.iter().find(|l| l.at > killed_at).unwrap().at;
    let silent = takeover.saturating_duration_since(last_renewal);
    assert!(
        silent >= Duration::from_secs(15),
        "the slot of {victim} was broken {silent:?} after its last renewal, before its 15 s TTL"
    );
    let alive: Vec<usize> = (0..3).filter(|&i| fleet.nodes[i].name != victim).collect();
    assert!(wait_until(Duration::from_secs(120), || alive.iter().all(
        |&i| fleet.nodes[i].applied().as_deref() == Some(v3.as_str())
    )));
    // The victim comes back and converges too.
    fleet
        .nodes
        .iter_mut()
        .find(|n| n.name == victim)
        .unwrap()
        .start();
    fleet.wait_applied(&v3, Duration::from_secs(120));
}

/// `HH:MM` in UTC, `offset_h` hours from now.
fn utc_hhmm(offset_h: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let minute = (now + offset_h * 3600).rem_euclid(86_400) / 60;
    format!("{:02}:{:02}", minute / 60, minute % 60)
}

/// A `rollout.window` line open every day from `start` for `length`.
fn every_day(start: &str, length: &str) -> String {
    format!(
        "  window: {{days: [mon, tue, wed, thu, fri, sat, sun], start: \"{start}\", \
         length: {length}, timezone: UTC}}\n"
    )
}

#[test]
fn each_node_says_which_gate_it_waits_at_and_changes_without_disruption_are_not_locked() {
    let mut fleet = Fleet::new(3, |_| String::new());
    let policy = |extra: &str| format!("  max_unavailable: 1\n  lock_ttl: 15s\n{extra}");
    fleet
        .repo
        .write("config.yaml", &fleet.base("v1", &policy(""), false));
    let v1 = fleet.repo.commit("v1");
    fleet.start_all();
    fleet.wait_applied(&v1, Duration::from_secs(120));
    let all_say = |fleet: &Fleet, state: &str| {
        fleet
            .nodes
            .iter()
            .all(|n| n.says(&fleet.api).as_deref() == Some(state))
    };
    let report = |fleet: &Fleet| -> String {
        fleet
            .nodes
            .iter()
            .map(|n| format!("{}: {}", n.name, n.status_text()))
            .collect()
    };

    // v2 changes k3s for all, but the only window opens in 6 hours: every node waits at the
    // window, changes nothing, and says so in its status, `bosun status`, metrics and Node.
    let closed = every_day(&utc_hhmm(6), "1h");
    fleet
        .repo
        .write("config.yaml", &fleet.base("v2", &policy(&closed), false));
    fleet.repo.commit("v2: label tier v2, outside the window");
    let waiting = wait_until(Duration::from_secs(60), || {
        all_say(&fleet, "waiting-window")
    });
    assert!(waiting, "{}", report(&fleet));
    for n in &fleet.nodes {
        assert_eq!(n.applied().as_deref(), Some(v1.as_str()), "{}", n.name);
        assert!(n.dropin().contains("tier=v1"), "{}", n.name);
    }
    assert!(fleet.api.lease("kube-system", "bosun-fleet-0").is_none());
    // A node waiting for its window asks the cluster nothing (it would ask every 5 s and at
    // every 1 s poll otherwise).
    let asked = fleet.api.log().len();
    std::thread::sleep(Duration::from_secs(6));
    let later = fleet.api.log();
    assert_eq!(
        later.len(),
        asked,
        "requests while waiting for the window: {:?}",
        &later[asked..]
    );

    // Someone else holds the group's only slot (its Lease's 1 h duration outlasts the test,
    // so nobody breaks it). v3 opens the window: every node waits at the lock and names the
    // holder.
    fleet
        .api
        .add_lease("kube-system", "bosun-fleet-0", "operator");
    let open = every_day(&utc_hhmm(-1), "3h");
    fleet
        .repo
        .write("config.yaml", &fleet.base("v2", &policy(&open), false));
    let v3 = fleet.repo.commit("v3: inside the window");
    let waiting = wait_until(Duration::from_secs(60), || all_say(&fleet, "waiting-lock"));
    assert!(waiting, "{}", report(&fleet));
    for n in &fleet.nodes {
        let detail = n.status()["rollout_detail"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(detail.contains("operator"), "{}: {detail}", n.name);
        assert_eq!(n.metric("bosun_lock_held"), Some(0.0), "{}", n.name);
        assert!(n.dropin().contains("tier=v1"), "{}", n.name);
    }
    // The holder lets go: the nodes go through, one at a time.
    fleet.api.delete_lease("kube-system", "bosun-fleet-0");
    fleet.wait_applied(&v3, Duration::from_secs(120));
    assert!(wait_until(Duration::from_secs(60), || all_say(
        &fleet, "idle"
    )));
    for n in &fleet.nodes {
        assert!(n.dropin().contains("tier=v2"), "{}", n.name);
    }

    // A change that needs no disruption (a file) is neither locked nor drained: it lands
    // everywhere while the slot is held by someone else again.
    fleet
        .api
        .add_lease("kube-system", "bosun-fleet-0", "operator");
    let motd = |text: &str| format!("write_files:\n- path: /etc/motd\n  content: \"{text}\\n\"\n");
    let base = fleet.base("v2", &policy(&open), false);
    fleet
        .repo
        .write("config.yaml", &format!("{base}{}", motd("v4")));
    let v4 = fleet.repo.commit("v4: a file");
    fleet.wait_applied(&v4, Duration::from_secs(60));
    for n in &fleet.nodes {
        let got = std::fs::read_to_string(n.root.join("etc/motd")).unwrap();
        assert_eq!(got, "v4\n", "{}", n.name);
    }

    // With `waves_for_all`, such a change waits for the node's wave too (4 s after the
    // commit for all but the canary node-0), and the node says it waits for its wave.
    let waved = policy(&format!(
        "{open}  waves_for_all: true\n  waves:\n  - {{after: 4s, percent: 100}}\n"
    ));
    let base = fleet.base("v2", &waved, false);
    fleet
        .repo
        .write("config.yaml", &format!("{base}{}", motd("v5")));
    let v5 = fleet.repo.commit("v5: a file, in waves");
    let committed_at: u64 =
        crate::support::git::git(&fleet.repo.dir, &["log", "-1", "--format=%ct"])
            .trim()
            .parse()
            .unwrap();
    let mut seen_waiting = std::collections::BTreeSet::new();
    let converged = wait_until(Duration::from_secs(60), || {
        for n in &fleet.nodes {
            if n.status()["rollout_state"] == "waiting-wave" {
                seen_waiting.insert(n.name.clone());
            }
        }
        fleet
            .nodes
            .iter()
            .all(|n| n.applied().as_deref() == Some(v5.as_str()))
    });
    assert!(converged, "{}", report(&fleet));
    assert!(
        seen_waiting.contains("node-1") && seen_waiting.contains("node-2"),
        "the nodes did not say they waited for their wave: {seen_waiting:?}"
    );
    for n in &fleet.nodes[1..] {
        let at = n.status()["last_applied_at"].as_u64().unwrap();
        assert!(
            at >= committed_at + 4,
            "{} applied at {at}, before its wave at {}",
            n.name,
            committed_at + 4
        );
    }
    assert!(wait_until(Duration::from_secs(60), || all_say(
        &fleet, "idle"
    )));
    assert_eq!(
        fleet.api.lease("kube-system", "bosun-fleet-0").unwrap()["spec"]["holderIdentity"],
        "operator"
    );
}

#[test]
fn with_fleetlock_a_node_that_failed_keeps_its_slot_until_a_newer_commit() {
    // A fake airlock (support::fleetlock: a real semaphore, airlock's answers) with one slot.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let airlock = rt.block_on(FleetLockServer::start(
        Dialect::Airlock,
        1,
        &[GROUP],
        "/airlock",
        0,
    ));
    let url = airlock.base();
    let mut fleet = Fleet::with_coordination(3, |_| {
        format!("coordination:\n  backend: fleetlock\n  fleetlock_url: {url}\n")
    });
    let policy = "  max_unavailable: 1\n";
    fleet
        .repo
        .write("config.yaml", &fleet.base("v1", policy, false));
    let v1 = fleet.repo.commit("v1");
    fleet.start_all();
    fleet.wait_applied(&v1, Duration::from_secs(120));
    assert!(airlock.holders(GROUP).is_empty(), "a slot was kept");

    // v2 breaks the kubelet: the first node through the lock fails its health gate, rolls
    // back and keeps the slot, so nobody else tries v2 (no cluster API: no failure marks).
    fleet
        .repo
        .write("config.yaml", &fleet.base("v2", policy, true));
    let v2 = fleet.repo.commit("v2: breaks the kubelet");
    let state = |n: &FleetNode| {
        n.status()["rollout_state"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let mut failed = None;
    let held = wait_until(Duration::from_secs(120), || {
        let halted: Vec<&FleetNode> = fleet
            .nodes
            .iter()
            .filter(|n| state(n) == "halted")
            .collect();
        failed = halted.first().map(|n| n.name.clone());
        halted.len() == 1
            && airlock.holders(GROUP) == vec![halted[0].name.clone()]
            && fleet
                .nodes
                .iter()
                .filter(|n| state(n) == "waiting-lock")
                .count()
                == 2
    });
    let failed = failed.unwrap_or_default();
    assert!(
        held,
        "the failed node did not keep the group stopped: holders {:?}, states {:?}",
        airlock.holders(GROUP),
        fleet.nodes.iter().map(state).collect::<Vec<_>>()
    );
    // It stays so across the failed node's polls of v2 (it polls every second; the slot
    // would be released at the first upkeep tick, 5 s, if the hold were lifted).
    let released_before = |log: &[crate::support::fleetlock::Logged]| {
        log.iter()
            .filter(|(path, id, _, status)| {
                path.ends_with("/v1/steady-state") && *id == failed && *status == 200
            })
            .count()
    };
    let releases = released_before(&airlock.log());
    std::thread::sleep(Duration::from_secs(7));
    assert_eq!(airlock.holders(GROUP), vec![failed.clone()]);
    assert_eq!(
        released_before(&airlock.log()),
        releases,
        "{failed} let go of its slot for the commit it failed"
    );
    let f = fleet.nodes.iter().find(|n| n.name == failed).unwrap();
    assert_eq!(state(f), "halted", "{}", tail(&f.log(), 40));
    for n in &fleet.nodes {
        assert_eq!(n.applied().as_deref(), Some(v1.as_str()), "{}", n.name);
        assert!(!n.root.join(BROKEN).exists(), "{} kept v2's files", n.name);
        assert!(n.dropin().contains("tier=v1"), "{}", n.name);
    }
    let _ = v2;

    // v3, good: the failed node gives the slot back and the group converges.
    fleet
        .repo
        .write("config.yaml", &fleet.base("v3", policy, false));
    let v3 = fleet.repo.commit("v3: fixed");
    fleet.wait_applied(&v3, Duration::from_secs(120));
    for n in &fleet.nodes {
        assert!(n.dropin().contains("tier=v3"), "{}", n.name);
    }
    assert!(wait_until(Duration::from_secs(60), || airlock
        .holders(GROUP)
        .is_empty()));
}

#[test]
fn a_holder_keeps_its_slot_through_a_health_wait_longer_than_the_ttl() {
    let mut fleet = Fleet::new(3, |_| String::new());
    // A 15 s TTL and a health gate that may take up to 60 s.
    let policy = "  max_unavailable: 1\n  lock_ttl: 15s\n";
    let slow = |fleet: &Fleet, tier: &str| {
        fleet.base(tier, policy, false).replace(
            "timeout: 3s\n  interval: 200ms",
            "timeout: 60s\n  interval: 500ms",
        )
    };
    fleet.repo.write("config.yaml", &slow(&fleet, "v1"));
    let v1 = fleet.repo.commit("v1");
    fleet.start_all();
    fleet.wait_applied(&v1, Duration::from_secs(120));

    // Every kubelet is unhealthy until the test says otherwise (the marker is not managed by
    // bosun, so no apply removes it).
    for n in &fleet.nodes {
        std::fs::create_dir_all(n.root.join(BROKEN).parent().unwrap()).unwrap();
        std::fs::write(n.root.join(BROKEN), "test\n").unwrap();
    }
    fleet.repo.write("config.yaml", &slow(&fleet, "v2"));
    let v2 = fleet.repo.commit("v2");
    let lease = "bosun-fleet-0";
    let mut holder = None;
    assert!(wait_until(Duration::from_secs(60), || {
        holder = fleet
            .api
            .lease("kube-system", lease)
            .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_string));
        holder.is_some()
    }));
    let holder = holder.unwrap();
    let took = Instant::now();
    // Its health wait outlasts the TTL (20 s > 15 s): the slot stays its own meanwhile,
    // renewed while it waits, and nobody else starts.
    std::thread::sleep(Duration::from_secs(20));
    let l = fleet.api.lease("kube-system", lease).unwrap();
    assert_eq!(l["spec"]["holderIdentity"], holder.as_str());
    let path = format!("/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/{lease}");
    let renewals = fleet
        .api
        .log()
        .iter()
        .filter(|l| l.at > took && l.method == "PUT" && l.path == path && l.status == 200)
        .count();
    assert!(renewals >= 2, "{renewals} renewals in 20 s with a 15 s TTL");
    for n in &fleet.nodes {
        if n.name != holder {
            assert_eq!(n.applied().as_deref(), Some(v1.as_str()), "{}", n.name);
            assert!(n.dropin().contains("tier=v1"), "{} started", n.name);
        }
    }
    // Healthy again: the holder commits v2 and releases, the others follow.
    for n in &fleet.nodes {
        std::fs::remove_file(n.root.join(BROKEN)).unwrap();
    }
    fleet.wait_applied(&v2, Duration::from_secs(120));
    assert!(fleet.api.lease("kube-system", lease).is_none());
}
