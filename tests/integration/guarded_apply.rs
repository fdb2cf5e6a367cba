//! Health-gated config applies with automatic rollback (`bosun::guarded_apply`) and the
//! `bosun health` command.
//!
//! K3s itself cannot run in the test environment, so real HTTPS servers on 127.0.0.1 (axum over
//! rustls, certificates made here with rcgen) STAND IN for the K3s endpoints the health checks
//! talk to: the kubelet's plain-HTTP `/healthz`, the apiserver's `/readyz` and
//! `/api/v1/nodes/<name>` (requiring a client certificate from the test CA, as K3s does for the
//! admin certificate in `k3s.yaml`), plus an HTTPS endpoint for a custom `http` check. A
//! kubeconfig laid out like K3s's is written into the test root. Unit restarts go to a
//! `RecordingRunner`, which records every `systemctl restart k3s.service`.
//!
//! How a commit breaks the stand-in: like a bad k3s flag would, through its own content. A
//! "bad" commit writes a marker file (e.g. `/etc/standin/apiserver-broken`) with `write_files`;
//! while that file exists in the root, the stand-in answers unhealthy. A revert deletes the
//! marker (bosun prunes files it created that the good commit does not want), so the stand-in
//! recovers exactly when the rollback really restored the files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Path as UrlPath;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use base64::Engine as _;
use sha2::Digest;

use bosun::guarded_apply::{apply_guarded, CommitHistory, GateReason, GuardedOutcome, KeptReason};
use bosun::health::{HealthContext, Verdict};
use bosun::reconcile::{self, Target};
use bosun::snapshot::Snapshot;
use bosun::testing::RecordingRunner;

use crate::config_cli::bosun;
use crate::support::tls::{serve_http, serve_https, server_config, TestCa, TestServer};
use crate::support::tree;

const HOST: &str = "edge-1";
const DROPIN: &str = "/etc/systemd/system/k3s.service.d/90-bosun.conf";
const APISERVER_BROKEN: &str = "/etc/standin/apiserver-broken";
const NODE_NOT_READY: &str = "/etc/standin/node-notready";
const FLAPPING: &str = "/etc/standin/flapping";
const STANDIN_CA: &str = "/etc/standin/ca.pem";

fn node_path(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn node_json(name: &str, ready: bool) -> String {
    serde_json::json!({
        "kind": "Node",
        "apiVersion": "v1",
        "metadata": { "name": name },
        "status": { "conditions": [{
            "type": "Ready",
            "status": if ready { "True" } else { "False" },
            "reason": if ready { "KubeletReady" } else { "KubeletNotReady" },
            "message": if ready { "kubelet is posting ready status" } else { "container runtime network not ready" }
        }]}
    })
    .to_string()
}

/// The K3s stand-ins for one test root.
struct StandIn {
    kubelet: TestServer,
    /// Held to keep the server running (the kubeconfig in the root points at it).
    _apiserver: TestServer,
    /// HTTPS without client certificates, for a custom `http` check.
    probe: TestServer,
    /// Answers of `/flap` while flapping: (200s, 500s).
    flap_ok: Arc<AtomicUsize>,
    flap_fail: Arc<AtomicUsize>,
}

impl StandIn {
    /// Starts the servers and writes the kubeconfig and the probe CA into `root`.
    async fn start(root: &Path) -> StandIn {
        let ca = TestCa::new("k3s-server-ca (test)");
        let kubelet = serve_http(Router::new().route("/healthz", get(|| async { "ok" }))).await;

        let r1 = root.to_path_buf();
        let r2 = root.to_path_buf();
        let api = Router::new()
            .route(
                "/readyz",
                get(move || {
                    let broken = node_path(&r1, APISERVER_BROKEN).exists();
                    async move {
                        if broken {
                            (
                                StatusCode::INTERNAL_SERVER_ERROR,
                                "[+]ping ok\n[-]etcd failed: reason withheld\nreadyz check failed\n",
                            )
                        } else {
                            (StatusCode::OK, "ok")
                        }
                    }
                }),
            )
            .route(
                "/api/v1/nodes/{name}",
                get(move |UrlPath(name): UrlPath<String>| {
                    let ready = !node_path(&r2, NODE_NOT_READY).exists();
                    async move {
                        if name == HOST {
                            (StatusCode::OK, node_json(&name, ready))
                        } else {
                            (StatusCode::NOT_FOUND, format!("nodes \"{name}\" not found"))
                        }
                    }
                }),
            );
        let apiserver = serve_https(server_config(&ca.server_cert(), Some(&ca)), api).await;

        let flap_ok = Arc::new(AtomicUsize::new(0));
        let flap_fail = Arc::new(AtomicUsize::new(0));
        let (ok, fail, r3) = (flap_ok.clone(), flap_fail.clone(), root.to_path_buf());
        let turn = Arc::new(AtomicUsize::new(0));
        let probe_router = Router::new().route(
            "/flap",
            get(move || {
                let flapping = node_path(&r3, FLAPPING).exists();
                let status = if !flapping {
                    StatusCode::OK
                } else if turn.fetch_add(1, Ordering::SeqCst).is_multiple_of(2) {
                    ok.fetch_add(1, Ordering::SeqCst);
                    StatusCode::OK
                } else {
                    fail.fetch_add(1, Ordering::SeqCst);
                    StatusCode::INTERNAL_SERVER_ERROR
                };
                async move { (status, "flap") }
            }),
        );
        let probe = serve_https(server_config(&ca.server_cert(), None), probe_router).await;

        // What K3s writes to /etc/rancher/k3s/k3s.yaml, pointing at the stand-in.
        let client = ca.client_cert("system:admin");
        let kubeconfig = format!(
            "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: {}\n    server: {}\n  name: default\n\
             contexts:\n- context:\n    cluster: default\n    user: default\n  name: default\n\
             current-context: default\nkind: Config\npreferences: {{}}\nusers:\n- name: default\n  user:\n    \
             client-certificate-data: {}\n    client-key-data: {}\n",
            b64(&ca.pem),
            apiserver.base(),
            b64(&client.cert_pem),
            b64(&client.key_pem)
        );
        write_node_file(root, "/etc/rancher/k3s/k3s.yaml", &kubeconfig);
        write_node_file(root, STANDIN_CA, &ca.pem);
        StandIn {
            kubelet,
            _apiserver: apiserver,
            probe,
            flap_ok,
            flap_fail,
        }
    }

    /// `health.checks` entries (YAML, indented for the list) for a named check set.
    fn checks(&self, set: Checks) -> String {
        let kubelet = format!(
            "  - type: kubelet\n    url: {}\n",
            self.kubelet.url("/healthz")
        );
        match set {
            Checks::Apiserver => {
                format!("{kubelet}  - type: apiserver\n  - type: unit\n    name: k3s\n")
            }
            Checks::NodeReady => format!("{kubelet}  - type: node_ready\n"),
            Checks::Flap => format!(
                "  - type: http\n    url: {}\n    ca: {STANDIN_CA}\n",
                self.probe.url("/flap")
            ),
        }
    }
}

#[derive(Clone, Copy)]
enum Checks {
    Apiserver,
    NodeReady,
    Flap,
}

fn write_node_file(root: &Path, path: &str, content: &str) {
    let p = node_path(root, path);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, content).unwrap();
}

/// One commit's config.yaml: a motd, the k3s label `tier`, marker files, and a health block
/// with a short timeout and interval.
struct Spec<'a> {
    tier: &'a str,
    motd: &'a str,
    markers: &'a [&'a str],
    checks: Checks,
}

fn config_yaml(standin: &StandIn, s: &Spec) -> String {
    let mut y = format!(
        "hostname: {HOST}\nwrite_files:\n- path: /etc/motd\n  content: \"{}\\n\"\n",
        s.motd
    );
    for m in s.markers {
        y.push_str(&format!("- path: {m}\n  content: \"break\\n\"\n"));
    }
    y.push_str(&format!(
        "k3os:\n  labels:\n    tier: \"{}\"\nhealth:\n  gate: k3s\n  timeout: 1500ms\n  interval: 100ms\n  successes: 3\n  checks:\n{}",
        s.tier,
        standin.checks(s.checks)
    ));
    y
}

/// A test node: a root, a state dir outside it, the stand-ins and a recording runner.
struct Node {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    state: PathBuf,
    target: Target,
    runner: Arc<RecordingRunner>,
    ctx: HealthContext,
    standin: StandIn,
}

impl Node {
    async fn new() -> Node {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        let state = tmp.path().join("state");
        std::fs::create_dir_all(&root).unwrap();
        let standin = StandIn::start(&root).await;
        let target = Target {
            hostname: HOST.into(),
            root: root.clone(),
            state_dir: state.clone(),
            load: Default::default(),
            render: bosun::render::RenderSettings::for_user("rancher"),
            keys: bosun::keys::KeyFetcherConfig::new(&state),
            durability: Default::default(),
        };
        let runner = Arc::new(RecordingRunner::new());
        let mut ctx = HealthContext::new(&root, HOST, runner.clone());
        ctx.connect_timeout = Duration::from_secs(1);
        ctx.request_timeout = Duration::from_secs(2);
        Node {
            _tmp: tmp,
            root,
            state,
            target,
            runner,
            ctx,
            standin,
        }
    }

    /// A snapshot of one commit; the id is derived from the content, like a git commit's.
    fn commit(&self, spec: &Spec) -> Snapshot {
        self.commit_yaml(config_yaml(&self.standin, spec))
    }

    fn commit_yaml(&self, yaml: String) -> Snapshot {
        let id = hex::encode(&sha2::Sha256::digest(yaml.as_bytes())[..20]);
        Snapshot::from_files(
            Some(id),
            [("config.yaml".to_string(), yaml.into_bytes())].into(),
        )
    }

    async fn apply(&self, snap: &Snapshot, history: &mut CommitHistory) -> GuardedOutcome {
        apply_guarded(snap, &self.target, self.runner.as_ref(), &self.ctx, history)
            .await
            .unwrap_or_else(|e| panic!("apply_guarded: {e}"))
    }

    /// Commit `a` applied healthy, then a broken commit `b` applied the way `apply_guarded`
    /// does it up to its health wait (begun, files on disk, no verdict), as if bosun died
    /// there. Returns `(a, b, the tree of a, the history)`.
    async fn good_then_broken_applied_without_verdict(
        &self,
    ) -> (Snapshot, Snapshot, BTreeMap<String, String>, CommitHistory) {
        let mut history = CommitHistory::load(&self.state).unwrap();
        let a = self.commit(&Spec {
            tier: "edge",
            motd: "good",
            markers: &[],
            checks: Checks::Apiserver,
        });
        expect_healthy(&self.apply(&a, &mut history).await);
        let good_tree = tree(&self.root);
        let b = self.commit(&Spec {
            tier: "broken",
            motd: "bad",
            markers: &[APISERVER_BROKEN],
            checks: Checks::Apiserver,
        });
        history.begin(&id(&b));
        history.save().unwrap();
        let prepared = reconcile::prepare(&b, &self.target).await.unwrap();
        reconcile::apply_prepared(&prepared, &self.target, self.runner.as_ref()).unwrap();
        (a, b, good_tree, history)
    }

    /// `systemctl restart k3s…` calls recorded so far.
    fn k3s_restarts(&self) -> usize {
        self.runner
            .calls()
            .iter()
            .filter(|c| {
                c.len() == 3 && c[0] == "systemctl" && c[1] == "restart" && c[2].starts_with("k3s")
            })
            .count()
    }

    fn read(&self, path: &str) -> String {
        std::fs::read_to_string(node_path(&self.root, path)).unwrap()
    }
}

fn id(s: &Snapshot) -> String {
    s.commit.clone().unwrap()
}

#[track_caller]
fn expect_healthy(o: &GuardedOutcome) -> &GateReason {
    match o {
        GuardedOutcome::Healthy { gate, report, .. } => {
            assert_eq!(report.verdict, Verdict::Healthy, "{report}");
            gate
        }
        other => panic!("expected Healthy, got {other:#?}"),
    }
}

#[track_caller]
fn expect_rolled_back(o: &GuardedOutcome, to: &str) -> String {
    match o {
        GuardedOutcome::RolledBack {
            to: got, report, ..
        } => {
            assert_eq!(got, to);
            assert_eq!(report.verdict, Verdict::TimedOut, "{report}");
            report.to_string()
        }
        other => panic!("expected RolledBack, got {other:#?}"),
    }
}

#[tokio::test]
async fn write_files_change_is_not_gated_and_label_change_restarts_k3s_once_and_is_gated() {
    let node = Node::new().await;
    let mut history = CommitHistory::load(&node.state).unwrap();
    let spec = |tier, motd| Spec {
        tier,
        motd,
        markers: &[],
        checks: Checks::Apiserver,
    };

    let a = node.commit(&spec("edge", "v1"));
    let out = node.apply(&a, &mut history).await;
    assert_eq!(
        expect_healthy(&out),
        &GateReason::K3sConfigChanged {
            paths: vec![DROPIN.into()]
        }
    );
    assert_eq!(node.k3s_restarts(), 1);

    // Only a write_files entry changes: no k3s restart, no gate, recorded good at once.
    let b = node.commit(&spec("edge", "v2"));
    match node.apply(&b, &mut history).await {
        GuardedOutcome::Applied { commit, .. } => assert_eq!(commit, id(&b)),
        other => panic!("expected an ungated apply, got {other:#?}"),
    }
    assert_eq!(node.k3s_restarts(), 1);
    assert_eq!(node.read("/etc/motd"), "v2\n");
    assert_eq!(history.last_good().unwrap().commit, id(&b));

    // A k3os.labels change rewrites the drop-in: exactly one more restart, and gated.
    let c = node.commit(&spec("core", "v2"));
    let out = node.apply(&c, &mut history).await;
    assert_eq!(
        expect_healthy(&out),
        &GateReason::K3sConfigChanged {
            paths: vec![DROPIN.into()]
        }
    );
    assert_eq!(node.k3s_restarts(), 2);
    assert!(node.read(DROPIN).contains("--node-label \\\n    tier=core"));
    assert_eq!(history.last_good().unwrap().commit, id(&c));
    assert_eq!(history.config_rollbacks_total(), 0);
}

#[tokio::test]
async fn apiserver_500_after_a_commit_rolls_back_marks_it_bad_and_refuses_it() {
    let node = Node::new().await;
    let mut history = CommitHistory::load(&node.state).unwrap();
    let a = node.commit(&Spec {
        tier: "edge",
        motd: "good",
        markers: &[],
        checks: Checks::Apiserver,
    });
    expect_healthy(&node.apply(&a, &mut history).await);
    let good_tree = tree(&node.root);
    assert_eq!(node.k3s_restarts(), 1);

    let b = node.commit(&Spec {
        tier: "broken",
        motd: "bad",
        markers: &[APISERVER_BROKEN],
        checks: Checks::Apiserver,
    });
    let out = node.apply(&b, &mut history).await;
    let report = expect_rolled_back(&out, &id(&a));
    assert!(report.contains("status 500"), "{report}");
    // Every file is back, byte for byte, with its mode and owner; the marker is gone.
    assert_eq!(tree(&node.root), good_tree);
    assert!(node.read(DROPIN).contains("--node-label \\\n    tier=edge"));
    // The bad commit's restart and the revert's restart.
    assert_eq!(node.k3s_restarts(), 3);

    let bad = history.bad(&id(&b)).expect("commit recorded bad");
    assert!(
        bad.reason.contains("readyz") && bad.reason.contains("500"),
        "{}",
        bad.reason
    );
    assert!(bad.at > 0);
    assert_eq!(history.config_rollbacks_total(), 1);
    assert_eq!(history.last_good().unwrap().commit, id(&a));
    // Persisted: a restarted daemon sees the same history.
    let reloaded = CommitHistory::load(&node.state).unwrap();
    assert_eq!(reloaded.bad_commits(), history.bad_commits());
    assert_eq!(reloaded.config_rollbacks_total(), 1);
    assert_eq!(reloaded.last_good(), history.last_good());

    // The same commit again: refused, nothing touched, nothing run.
    let calls = node.runner.calls().len();
    let history_bytes = std::fs::read(history.path()).unwrap();
    match node.apply(&b, &mut history).await {
        GuardedOutcome::Refused { commit, revert, .. } => {
            assert_eq!(commit, id(&b));
            assert!(revert.is_none());
        }
        other => panic!("expected Refused, got {other:#?}"),
    }
    assert_eq!(tree(&node.root), good_tree);
    assert_eq!(node.runner.calls().len(), calls);
    assert_eq!(std::fs::read(history.path()).unwrap(), history_bytes);

    // A newer good commit is tried normally.
    let c = node.commit(&Spec {
        tier: "core",
        motd: "fixed",
        markers: &[],
        checks: Checks::Apiserver,
    });
    expect_healthy(&node.apply(&c, &mut history).await);
    assert_eq!(node.read("/etc/motd"), "fixed\n");
    assert_eq!(node.k3s_restarts(), 4);
    assert_eq!(history.last_good().unwrap().commit, id(&c));
}

/// k3s reads `/etc/rancher/k3s/{config.yaml,registries.yaml}` at start: a `write_files` entry
/// there restarts k3s and is health-gated like a drop-in change, and the revert (which prunes
/// the file) restarts k3s again.
#[tokio::test]
async fn write_files_into_the_k3s_config_dir_restart_k3s_and_are_gated() {
    const REGISTRIES: &str = "/etc/rancher/k3s/registries.yaml";
    let node = Node::new().await;
    let mut history = CommitHistory::load(&node.state).unwrap();
    let a = node.commit(&Spec {
        tier: "edge",
        motd: "good",
        markers: &[],
        checks: Checks::Apiserver,
    });
    expect_healthy(&node.apply(&a, &mut history).await);
    let good_tree = tree(&node.root);
    assert_eq!(node.k3s_restarts(), 1);

    // Same labels, so the drop-in is unchanged: only k3s's own file is new.
    let b = node.commit(&Spec {
        tier: "edge",
        motd: "good",
        markers: &[REGISTRIES, APISERVER_BROKEN],
        checks: Checks::Apiserver,
    });
    let out = node.apply(&b, &mut history).await;
    match &out {
        GuardedOutcome::RolledBack { gate, .. } => assert_eq!(
            gate,
            &GateReason::K3sConfigChanged {
                paths: vec![REGISTRIES.into()]
            }
        ),
        other => panic!("expected a rollback, got {other:#?}"),
    }
    expect_rolled_back(&out, &id(&a));
    assert_eq!(tree(&node.root), good_tree, "registries.yaml is gone again");
    // b's restart, then the revert's.
    assert_eq!(node.k3s_restarts(), 3);
}

/// `health.gate: none` in a broken commit does not disarm the gate that catches it; it takes
/// effect once a commit carrying it has been applied.
#[tokio::test]
async fn a_commit_cannot_switch_off_its_own_gate() {
    let node = Node::new().await;
    let mut history = CommitHistory::load(&node.state).unwrap();
    let spec = |tier, markers| Spec {
        tier,
        motd: "m",
        markers,
        checks: Checks::Apiserver,
    };
    let gate_none = |snap: String| {
        assert!(snap.contains("gate: k3s\n"));
        snap.replace("gate: k3s\n", "gate: none\n")
    };
    let a = node.commit(&spec("edge", &[]));
    expect_healthy(&node.apply(&a, &mut history).await);

    // Broken, and it says `gate: none`: judged under the last good commit's `k3s` gate.
    let b = node.commit_yaml(gate_none(config_yaml(
        &node.standin,
        &spec("broken", &[APISERVER_BROKEN]),
    )));
    expect_rolled_back(&node.apply(&b, &mut history).await, &id(&a));
    assert!(node.read(DROPIN).contains("--node-label \\\n    tier=edge"));

    // `gate: none` on its own (k3s untouched, so not gated) is applied and becomes last good...
    let c = node.commit_yaml(gate_none(config_yaml(&node.standin, &spec("edge", &[]))));
    match node.apply(&c, &mut history).await {
        GuardedOutcome::Applied { commit, .. } => assert_eq!(commit, id(&c)),
        other => panic!("expected an ungated apply, got {other:#?}"),
    }
    // ...and from then on the operator's choice holds: the next commit is not gated.
    let d = node.commit_yaml(gate_none(config_yaml(
        &node.standin,
        &spec("core", &[APISERVER_BROKEN]),
    )));
    match node.apply(&d, &mut history).await {
        GuardedOutcome::Applied { commit, .. } => assert_eq!(commit, id(&d)),
        other => panic!("expected an ungated apply, got {other:#?}"),
    }
    assert!(node.read(DROPIN).contains("--node-label \\\n    tier=core"));
}

#[tokio::test]
async fn node_not_ready_after_a_commit_rolls_back() {
    let node = Node::new().await;
    let mut history = CommitHistory::load(&node.state).unwrap();
    let a = node.commit(&Spec {
        tier: "edge",
        motd: "good",
        markers: &[],
        checks: Checks::NodeReady,
    });
    expect_healthy(&node.apply(&a, &mut history).await);
    let good_tree = tree(&node.root);

    let b = node.commit(&Spec {
        tier: "cni-broken",
        motd: "bad",
        markers: &[NODE_NOT_READY],
        checks: Checks::NodeReady,
    });
    let report = expect_rolled_back(&node.apply(&b, &mut history).await, &id(&a));
    assert!(
        report.contains("node edge-1 is not Ready (Ready=False"),
        "{report}"
    );
    assert_eq!(tree(&node.root), good_tree);
    assert_eq!(node.k3s_restarts(), 3);
    assert!(history.bad(&id(&b)).is_some());
}

#[tokio::test]
async fn flapping_endpoint_never_reaches_three_consecutive_successes_and_rolls_back() {
    let node = Node::new().await;
    let mut history = CommitHistory::load(&node.state).unwrap();
    let a = node.commit(&Spec {
        tier: "edge",
        motd: "good",
        markers: &[],
        checks: Checks::Flap,
    });
    expect_healthy(&node.apply(&a, &mut history).await);
    let good_tree = tree(&node.root);

    let b = node.commit(&Spec {
        tier: "flappy",
        motd: "bad",
        markers: &[FLAPPING],
        checks: Checks::Flap,
    });
    let out = node.apply(&b, &mut history).await;
    expect_rolled_back(&out, &id(&a));
    let GuardedOutcome::RolledBack { report, .. } = &out else {
        unreachable!()
    };
    // The endpoint did answer 200 during the trial, just never three times in a row.
    let (ok, fail) = (
        node.standin.flap_ok.load(Ordering::SeqCst),
        node.standin.flap_fail.load(Ordering::SeqCst),
    );
    assert!(ok >= 2 && fail >= 2, "200s {ok}, 500s {fail}");
    assert!(report.checks[0].streak <= 1, "{report}");
    assert_eq!(tree(&node.root), good_tree);
    assert!(history.bad(&id(&b)).is_some());
}

#[tokio::test]
async fn unhealthy_first_commit_is_kept_and_marked_bad_then_a_newer_commit_is_tried() {
    let node = Node::new().await;
    let mut history = CommitHistory::load(&node.state).unwrap();
    let a = node.commit(&Spec {
        tier: "edge",
        motd: "first",
        markers: &[APISERVER_BROKEN],
        checks: Checks::Apiserver,
    });
    match node.apply(&a, &mut history).await {
        GuardedOutcome::Kept { why, report, .. } => {
            assert_eq!(why, KeptReason::NoPreviousGood);
            assert_eq!(report.verdict, Verdict::TimedOut);
        }
        other => panic!("expected Kept, got {other:#?}"),
    }
    // Nothing to revert to: the files stay, the commit is bad, nothing was rolled back.
    assert_eq!(node.read("/etc/motd"), "first\n");
    assert!(history.bad(&id(&a)).is_some());
    assert!(history.last_good().is_none());
    assert_eq!(history.config_rollbacks_total(), 0);
    assert_eq!(node.k3s_restarts(), 1);
    assert!(matches!(
        node.apply(&a, &mut history).await,
        GuardedOutcome::Refused { revert: None, .. }
    ));

    let b = node.commit(&Spec {
        tier: "edge",
        motd: "second",
        markers: &[],
        checks: Checks::Apiserver,
    });
    // It leaves k3s alone, but the config on disk was never healthy: gated anyway.
    assert_eq!(
        expect_healthy(&node.apply(&b, &mut history).await),
        &GateReason::UnverifiedOnDisk { commit: id(&a) }
    );
    assert!(!node_path(&node.root, APISERVER_BROKEN).exists());
    assert_eq!(history.last_good().unwrap().commit, id(&b));
}

/// Regression: bosun stopped after applying a commit but before its health verdict. On the
/// next run the plan is empty (the files are already there), yet the commit must still pass
/// its health gate, and roll back when it does not.
#[tokio::test]
async fn a_trial_interrupted_before_its_verdict_is_gated_again_after_restart() {
    let node = Node::new().await;
    // What apply_guarded does before its health wait, then the process "dies".
    let (_a, b, good_tree, history) = node.good_then_broken_applied_without_verdict().await;
    drop(history);

    let mut history = CommitHistory::load(&node.state).unwrap();
    assert_eq!(history.interrupted_trial(), Some(id(&b).as_str()));
    let out = node.apply(&b, &mut history).await;
    match &out {
        GuardedOutcome::RolledBack { gate, .. } => {
            assert_eq!(gate, &GateReason::UnverifiedOnDisk { commit: id(&b) })
        }
        other => panic!("expected RolledBack, got {other:#?}"),
    }
    assert_eq!(tree(&node.root), good_tree);
    assert_eq!(history.config_rollbacks_total(), 1);
}

/// Regression: bosun stopped after recording a commit bad but before its revert finished.
/// The commit is refused from then on, and refusing it completes the revert to the last good
/// commit (nothing else would ever bring the node back).
#[tokio::test]
async fn refusing_a_bad_commit_finishes_an_unfinished_revert() {
    let node = Node::new().await;
    // What apply_guarded does up to the revert, then the process "dies".
    let (_a, b, good_tree, mut history) = node.good_then_broken_applied_without_verdict().await;
    history.record_bad(&id(&b), "health gate timed out", 1);
    history.save().unwrap();
    drop(history);
    assert_ne!(tree(&node.root), good_tree);

    let mut history = CommitHistory::load(&node.state).unwrap();
    assert_eq!(history.revert_pending(), Some(id(&b).as_str()));
    let restarts = node.k3s_restarts();
    match node.apply(&b, &mut history).await {
        GuardedOutcome::Refused { revert, .. } => assert!(revert.is_some()),
        other => panic!("expected Refused with a revert, got {other:#?}"),
    }
    assert_eq!(tree(&node.root), good_tree);
    assert_eq!(node.k3s_restarts(), restarts + 1);
    assert_eq!(history.revert_pending(), None);
    assert_eq!(history.config_rollbacks_total(), 1);
    // Done: refusing again changes nothing.
    let calls = node.runner.calls().len();
    assert!(matches!(
        node.apply(&b, &mut history).await,
        GuardedOutcome::Refused { revert: None, .. }
    ));
    assert_eq!(node.runner.calls().len(), calls);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_cli_exits_0_when_healthy_1_when_unhealthy_and_skips_units_off_the_live_root() {
    let node = Node::new().await;
    let repo = node._tmp.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    let spec = Spec {
        tier: "edge",
        motd: "m",
        markers: &[],
        checks: Checks::Apiserver,
    };
    std::fs::write(repo.join("config.yaml"), config_yaml(&node.standin, &spec)).unwrap();
    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || bosun().args(args).output().unwrap())
    };
    let base = vec![
        "health".to_string(),
        "--root".into(),
        node.root.display().to_string(),
        "--hostname".into(),
        HOST.into(),
    ];
    let with_repo = [
        base.clone(),
        vec!["--repo".into(), repo.display().to_string()],
    ]
    .concat();

    let ok = run(with_repo.clone()).await.unwrap();
    let text = String::from_utf8_lossy(&ok.stdout).into_owned();
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(text.contains("[ ok ] apiserver readyz"), "{text}");
    assert!(text.contains("[ ok ] kubelet"), "{text}");
    assert!(
        text.contains("[skip] unit k3s active: skipped (not the live root)"),
        "{text}"
    );
    assert!(!text.contains("[ ok ] unit"), "{text}");

    // The apiserver stand-in turns unhealthy.
    write_node_file(&node.root, APISERVER_BROKEN, "break\n");
    let bad = run(with_repo).await.unwrap();
    let text = String::from_utf8_lossy(&bad.stdout).into_owned();
    assert_eq!(bad.status.code(), Some(1), "{text}");
    assert!(text.contains("[FAIL] apiserver readyz"), "{text}");
    assert!(text.contains("status 500"), "{text}");
    std::fs::remove_file(node_path(&node.root, APISERVER_BROKEN)).unwrap();

    // Without --repo: the last good commit recorded by a guarded apply supplies `health:`.
    let state = ["--state-dir".to_string(), node.state.display().to_string()];
    let none = run([base.clone(), state.to_vec()].concat()).await.unwrap();
    assert_eq!(none.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&none.stderr).contains("no last good commit"),
        "{}",
        String::from_utf8_lossy(&none.stderr)
    );
    let mut history = CommitHistory::load(&node.state).unwrap();
    expect_healthy(&node.apply(&node.commit(&spec), &mut history).await);
    let from_state = run([base, state.to_vec()].concat()).await.unwrap();
    let text = String::from_utf8_lossy(&from_state.stdout).into_owned();
    assert_eq!(from_state.status.code(), Some(0), "{text}");
    assert!(text.contains("[ ok ] apiserver readyz"), "{text}");
}
