//! Health checks against real HTTP(S) servers on 127.0.0.1.
//!
//! K3s itself cannot run in the test environment, so the servers here are STAND-INS for the
//! K3s endpoints the checks talk to, speaking the same protocol: the kubelet's plain-HTTP
//! `/healthz` (answers `ok`), the apiserver's `/readyz` (answers `ok`, or 500 with the failed
//! checks) and `/api/v1/nodes/<name>` (a Node object with `status.conditions`). The apiserver
//! stand-ins use TLS with certificates made here by rcgen, and either require a client
//! certificate signed by the test CA (as K3s does for `k3s.yaml`'s admin certificate) or a
//! bearer token in the `Authorization` header.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::Path as UrlPath;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::Router;
use base64::Engine as _;

use bosun::config::{HealthCheck, HealthConfig};
use bosun::health::{check_once, run_check, wait_healthy, HealthContext, Verdict};
use bosun::runner::{CommandOutput, CommandRunner, SystemRunner};
use bosun::testing::{ManualClock, RecordingRunner};

use crate::support::tls::{serve_http, serve_https, server_config, TestCa, TestServer};

const KUBECONFIG: &str = "/etc/rancher/k3s/k3s.yaml";
const TOKEN: &str = "K10abc::server:s3cret-token";

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// Writes `content` at node path `path` under `root`.
fn write_node_file(root: &Path, path: &str, content: &str) {
    let p = root.join(path.trim_start_matches('/'));
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, content).unwrap();
}

/// A kubeconfig laid out like K3s's `k3s.yaml`; `cluster` and `user` are extra YAML lines
/// (already indented) for the cluster and user blocks.
fn kubeconfig(server: &str, cluster: &[String], user: &[String]) -> String {
    let mut s = String::from("apiVersion: v1\nclusters:\n- cluster:\n");
    for l in cluster {
        s.push_str(&format!("    {l}\n"));
    }
    s.push_str(&format!("    server: {server}\n  name: default\n"));
    s.push_str("contexts:\n- context:\n    cluster: default\n    user: default\n  name: default\n");
    s.push_str("current-context: default\nkind: Config\npreferences: {}\nusers:\n- name: default\n  user:\n");
    if user.is_empty() {
        s.push_str("    {}\n");
    }
    for l in user {
        s.push_str(&format!("    {l}\n"));
    }
    s
}

/// Kubeconfig with inline CA and client certificate data, as K3s writes it.
fn cert_kubeconfig(server: &str, ca_pem: &str, client: &crate::support::tls::CertKey) -> String {
    kubeconfig(
        server,
        &[format!("certificate-authority-data: {}", b64(ca_pem))],
        &[
            format!("client-certificate-data: {}", b64(&client.cert_pem)),
            format!("client-key-data: {}", b64(&client.key_pem)),
        ],
    )
}

fn ctx(root: &Path, runner: Arc<dyn CommandRunner>) -> HealthContext {
    let mut ctx = HealthContext::new(root, "edge-1", runner);
    ctx.connect_timeout = Duration::from_secs(2);
    ctx.request_timeout = Duration::from_secs(5);
    ctx
}

fn recording_ctx(root: &Path) -> HealthContext {
    ctx(root, Arc::new(RecordingRunner::new()))
}

fn node_json(name: &str, ready: &str) -> String {
    serde_json::json!({
        "kind": "Node",
        "apiVersion": "v1",
        "metadata": { "name": name },
        "status": {
            "conditions": [
                { "type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory" },
                {
                    "type": "Ready",
                    "status": ready,
                    "reason": if ready == "True" { "KubeletReady" } else { "KubeletNotReady" },
                    "message": if ready == "True" { "kubelet is posting ready status" } else { "container runtime network not ready: cni plugin not initialized" }
                }
            ]
        }
    })
    .to_string()
}

/// Stand-in apiserver routes: `/readyz` answers `readyz_status`; nodes `edge-1` (Ready) and
/// `edge-2` (NotReady) exist. With `token`, every request needs `Authorization: Bearer TOKEN`.
fn apiserver_router(readyz_status: StatusCode, token: Option<&'static str>) -> Router {
    let authorized = move |h: &HeaderMap| match token {
        None => true,
        Some(t) => h
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v == format!("Bearer {t}")),
    };
    Router::new()
        .route(
            "/readyz",
            get(move |h: HeaderMap| async move {
                if !authorized(&h) {
                    return (StatusCode::UNAUTHORIZED, "Unauthorized".to_string());
                }
                if readyz_status == StatusCode::OK {
                    (StatusCode::OK, "ok".to_string())
                } else {
                    (
                        readyz_status,
                        "[+]ping ok\n[-]etcd failed: reason withheld\nreadyz check failed\n"
                            .to_string(),
                    )
                }
            }),
        )
        .route(
            "/api/v1/nodes/{name}",
            get(
                move |UrlPath(name): UrlPath<String>, h: HeaderMap| async move {
                    if !authorized(&h) {
                        return (StatusCode::UNAUTHORIZED, "Unauthorized".to_string());
                    }
                    match name.as_str() {
                        "edge-1" => (StatusCode::OK, node_json("edge-1", "True")),
                        "edge-2" => (StatusCode::OK, node_json("edge-2", "False")),
                        _ => (StatusCode::NOT_FOUND, format!("nodes \"{name}\" not found")),
                    }
                },
            ),
        )
}

/// An apiserver stand-in over TLS that requires a client certificate from `ca`.
async fn mtls_apiserver(ca: &TestCa, readyz: StatusCode) -> TestServer {
    serve_https(
        server_config(&ca.server_cert(), Some(ca)),
        apiserver_router(readyz, None),
    )
    .await
}

fn apiserver_check() -> HealthCheck {
    HealthCheck::Apiserver {
        kubeconfig: KUBECONFIG.into(),
        url: None,
    }
}

fn node_check(node: Option<&str>) -> HealthCheck {
    HealthCheck::NodeReady {
        kubeconfig: KUBECONFIG.into(),
        node: node.map(String::from),
    }
}

#[tokio::test]
async fn kubelet_healthz_ok_passes_and_failing_healthz_fails() {
    // Stand-in for the kubelet's plain-HTTP healthz port (10248 on a real node).
    let ok = serve_http(Router::new().route("/healthz", get(|| async { "ok" }))).await;
    let bad = serve_http(Router::new().route(
        "/healthz",
        get(|| async {
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "[-]syncloop failed: reason withheld\nhealthz check failed",
            )
        }),
    ))
    .await;
    let not_ok_body =
        serve_http(Router::new().route("/healthz", get(|| async { "starting" }))).await;
    let root = tempfile::tempdir().unwrap();
    let ctx = recording_ctx(root.path());

    let pass = run_check(
        &HealthCheck::Kubelet {
            url: ok.url("/healthz"),
        },
        &ctx,
    )
    .await;
    assert!(pass.ok, "{pass:?}");

    let url = bad.url("/healthz");
    let fail = run_check(&HealthCheck::Kubelet { url: url.clone() }, &ctx).await;
    assert!(!fail.ok);
    assert!(
        fail.detail.contains(&url) && fail.detail.contains("status 500: [-]syncloop failed"),
        "{fail:?}"
    );

    let fail = run_check(
        &HealthCheck::Kubelet {
            url: not_ok_body.url("/healthz"),
        },
        &ctx,
    )
    .await;
    assert!(!fail.ok);
    assert!(
        fail.detail.contains("body is not \"ok\": starting"),
        "{fail:?}"
    );

    // Nothing listening: connection refused is a failed check, not an error.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let refused = run_check(
        &HealthCheck::Kubelet {
            url: format!("http://127.0.0.1:{port}/healthz"),
        },
        &ctx,
    )
    .await;
    assert!(!refused.ok);
    assert!(refused.detail.contains("cannot connect"), "{refused:?}");
}

#[tokio::test]
async fn apiserver_readyz_with_client_certificate_200_passes_500_fails() {
    let ca = TestCa::new("k3s-server-ca");
    let client = ca.client_cert("system:admin");
    let healthy = mtls_apiserver(&ca, StatusCode::OK).await;
    let broken = mtls_apiserver(&ca, StatusCode::INTERNAL_SERVER_ERROR).await;
    let root = tempfile::tempdir().unwrap();
    let ctx = recording_ctx(root.path());

    write_node_file(
        root.path(),
        KUBECONFIG,
        &cert_kubeconfig(&healthy.base(), &ca.pem, &client),
    );
    let pass = run_check(&apiserver_check(), &ctx).await;
    assert!(pass.ok, "{pass:?}");
    assert!(pass.detail.contains("/readyz"), "{pass:?}");

    // Same kubeconfig credentials, server overridden by `url`.
    let url = broken.base();
    let fail = run_check(
        &HealthCheck::Apiserver {
            kubeconfig: KUBECONFIG.into(),
            url: Some(url.clone()),
        },
        &ctx,
    )
    .await;
    assert!(!fail.ok);
    assert!(
        fail.detail.contains(&format!("{url}/readyz"))
            && fail.detail.contains("status 500")
            && fail.detail.contains("[-]etcd failed"),
        "{fail:?}"
    );

    // A kubeconfig without the client certificate: the server refuses the handshake.
    write_node_file(
        root.path(),
        KUBECONFIG,
        &kubeconfig(
            &healthy.base(),
            &[format!("certificate-authority-data: {}", b64(&ca.pem))],
            &[],
        ),
    );
    let fail = run_check(&apiserver_check(), &ctx).await;
    assert!(!fail.ok);
    assert!(
        fail.detail.contains(&healthy.url("/readyz"))
            && fail
                .detail
                .contains("the server rejected our TLS client certificate"),
        "{fail:?}"
    );
}

#[tokio::test]
async fn apiserver_check_fails_clearly_when_kubeconfig_is_missing_or_broken() {
    let root = tempfile::tempdir().unwrap();
    let ctx = recording_ctx(root.path());
    let fail = run_check(&apiserver_check(), &ctx).await;
    assert!(!fail.ok);
    assert!(
        fail.detail.contains(KUBECONFIG) && fail.detail.contains("cannot read"),
        "{fail:?}"
    );

    write_node_file(
        root.path(),
        KUBECONFIG,
        &kubeconfig(
            "https://127.0.0.1:1",
            &["certificate-authority: /var/lib/rancher/k3s/server/tls/missing-ca.crt".into()],
            &[],
        ),
    );
    let fail = run_check(&apiserver_check(), &ctx).await;
    assert!(!fail.ok);
    assert!(
        fail.detail.contains(KUBECONFIG)
            && fail.detail.contains("missing-ca.crt")
            && fail.detail.contains("certificate-authority"),
        "{fail:?}"
    );
}

#[tokio::test]
async fn node_ready_with_client_certificate_auth() {
    let ca = TestCa::new("k3s-server-ca");
    let client = ca.client_cert("system:admin");
    let server = mtls_apiserver(&ca, StatusCode::OK).await;
    let root = tempfile::tempdir().unwrap();
    let ctx = recording_ctx(root.path());
    // CA and client certificate as files (relative paths are relative to the kubeconfig's
    // directory, as in kubectl), all resolved under the root.
    write_node_file(root.path(), "/etc/rancher/k3s/ca.crt", &ca.pem);
    write_node_file(root.path(), "/etc/rancher/k3s/admin.crt", &client.cert_pem);
    write_node_file(root.path(), "/var/lib/bosun/admin.key", &client.key_pem);
    write_node_file(
        root.path(),
        KUBECONFIG,
        &kubeconfig(
            &server.base(),
            &["certificate-authority: ca.crt".into()],
            &[
                "client-certificate: /etc/rancher/k3s/admin.crt".into(),
                "client-key: ../../../var/lib/bosun/admin.key".into(),
            ],
        ),
    );

    // Node name defaults to the context's hostname (edge-1, Ready=True).
    let pass = run_check(&node_check(None), &ctx).await;
    assert!(pass.ok, "{pass:?}");
    assert_eq!(pass.detail, "node edge-1 is Ready");

    let fail = run_check(&node_check(Some("edge-2")), &ctx).await;
    assert!(!fail.ok);
    assert!(
        fail.detail
            .contains("node edge-2 is not Ready (Ready=False, reason KubeletNotReady")
            && fail.detail.contains("cni plugin not initialized"),
        "{fail:?}"
    );

    let fail = run_check(&node_check(Some("ghost")), &ctx).await;
    assert!(!fail.ok);
    assert!(
        fail.detail.contains("node ghost is not registered"),
        "{fail:?}"
    );

    let fail = run_check(&node_check(Some("../../readyz")), &ctx).await;
    assert!(!fail.ok);
    assert!(
        fail.detail.contains("not a valid Kubernetes node name"),
        "{fail:?}"
    );
}

#[tokio::test]
async fn node_ready_with_bearer_token() {
    let ca = TestCa::new("k3s-server-ca");
    // TLS without client certificates; the stand-in checks the Authorization header.
    let server = serve_https(
        server_config(&ca.server_cert(), None),
        apiserver_router(StatusCode::OK, Some(TOKEN)),
    )
    .await;
    let root = tempfile::tempdir().unwrap();
    let ctx = recording_ctx(root.path());
    let ca_line = format!("certificate-authority-data: {}", b64(&ca.pem));

    // Token from a tokenFile (read under the root, trailing newline ignored).
    write_node_file(root.path(), "/var/lib/bosun/token", &format!("{TOKEN}\n"));
    write_node_file(
        root.path(),
        KUBECONFIG,
        &kubeconfig(
            &server.base(),
            std::slice::from_ref(&ca_line),
            &["tokenFile: /var/lib/bosun/token".into()],
        ),
    );
    let pass = run_check(&node_check(Some("edge-1")), &ctx).await;
    assert!(pass.ok, "{pass:?}");
    let fail = run_check(&node_check(Some("edge-2")), &ctx).await;
    assert!(!fail.ok && fail.detail.contains("Ready=False"), "{fail:?}");

    // Inline token.
    write_node_file(
        root.path(),
        KUBECONFIG,
        &kubeconfig(
            &server.base(),
            std::slice::from_ref(&ca_line),
            &[format!("token: \"{TOKEN}\"")],
        ),
    );
    let pass = run_check(&node_check(Some("edge-1")), &ctx).await;
    assert!(pass.ok, "{pass:?}");

    // Wrong token: 401, and the message points at the credentials without printing the token.
    write_node_file(
        root.path(),
        KUBECONFIG,
        &kubeconfig(
            &server.base(),
            std::slice::from_ref(&ca_line),
            &["token: wrong-token".into()],
        ),
    );
    let fail = run_check(&node_check(Some("edge-1")), &ctx).await;
    assert!(!fail.ok);
    assert!(
        fail.detail.contains("status 401") && fail.detail.contains("credentials"),
        "{fail:?}"
    );
    assert!(!fail.detail.contains("wrong-token"), "{fail:?}");
}

#[tokio::test]
async fn wrong_ca_fails_with_certificate_verification_message() {
    let real_ca = TestCa::new("k3s-server-ca");
    let other_ca = TestCa::new("some-other-ca");
    let client = real_ca.client_cert("system:admin");
    let server = mtls_apiserver(&real_ca, StatusCode::OK).await;
    let root = tempfile::tempdir().unwrap();
    let ctx = recording_ctx(root.path());
    write_node_file(
        root.path(),
        KUBECONFIG,
        &cert_kubeconfig(&server.base(), &other_ca.pem, &client),
    );
    let fail = run_check(&apiserver_check(), &ctx).await;
    assert!(!fail.ok);
    assert!(
        fail.detail
            .contains("TLS server certificate verification failed")
            && fail.detail.contains(&server.url("/readyz")),
        "{fail:?}"
    );

    // The same for a plain HTTPS check with a `ca:` file.
    write_node_file(root.path(), "/etc/bosun/other-ca.pem", &other_ca.pem);
    let fail = run_check(
        &HealthCheck::Http {
            url: server.url("/readyz"),
            ca: Some("/etc/bosun/other-ca.pem".into()),
            status: 200,
            body: None,
        },
        &ctx,
    )
    .await;
    assert!(!fail.ok);
    assert!(
        fail.detail.contains("certificate verification failed"),
        "{fail:?}"
    );
}

#[tokio::test]
async fn http_check_with_ca_file_status_and_body() {
    let ca = TestCa::new("ingress-ca");
    let server = serve_https(
        server_config(&ca.server_cert(), None),
        Router::new()
            .route("/ping", get(|| async { "pong from ingress" }))
            .route(
                "/teapot",
                get(|| async { (StatusCode::IM_A_TEAPOT, "short and stout") }),
            ),
    )
    .await;
    let root = tempfile::tempdir().unwrap();
    let ctx = recording_ctx(root.path());
    write_node_file(root.path(), "/etc/bosun/ingress-ca.pem", &ca.pem);
    let http = |path: &str, status: u16, body: Option<&str>| HealthCheck::Http {
        url: server.url(path),
        ca: Some("/etc/bosun/ingress-ca.pem".into()),
        status,
        body: body.map(String::from),
    };

    assert!(run_check(&http("/ping", 200, Some("pong")), &ctx).await.ok);
    assert!(run_check(&http("/teapot", 418, None), &ctx).await.ok);

    let fail = run_check(&http("/ping", 200, Some("ping")), &ctx).await;
    assert!(!fail.ok);
    assert!(
        fail.detail.contains("does not contain \"ping\""),
        "{fail:?}"
    );
    let fail = run_check(&http("/teapot", 200, None), &ctx).await;
    assert!(!fail.ok);
    assert!(
        fail.detail.contains("expected status 200, got 418"),
        "{fail:?}"
    );
    // No CA given: the built-in web roots do not include the test CA.
    let fail = run_check(
        &HealthCheck::Http {
            url: server.url("/ping"),
            ca: None,
            status: 200,
            body: None,
        },
        &ctx,
    )
    .await;
    assert!(!fail.ok && fail.detail.contains("certificate"), "{fail:?}");
}

#[tokio::test]
async fn oversized_body_fails_instead_of_being_read_whole() {
    let big = "x".repeat(64 * 1024);
    let server = serve_http(Router::new().route(
        "/healthz",
        get(move || {
            let big = big.clone();
            async move { big }
        }),
    ))
    .await;
    let root = tempfile::tempdir().unwrap();
    let mut ctx = recording_ctx(root.path());
    ctx.max_body_bytes = 1024;
    let fail = run_check(
        &HealthCheck::Kubelet {
            url: server.url("/healthz"),
        },
        &ctx,
    )
    .await;
    assert!(!fail.ok);
    assert!(fail.detail.contains("exceeds 1024 bytes"), "{fail:?}");
}

#[tokio::test]
async fn flapping_endpoint_never_passes_three_consecutive_while_steady_passes() {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let server = serve_http(
        Router::new()
            .route("/steady", get(|| async { "ok" }))
            .route(
                "/flapping",
                get(move || {
                    let n = counter.fetch_add(1, Ordering::SeqCst);
                    async move {
                        if n.is_multiple_of(2) {
                            (StatusCode::OK, "ok")
                        } else {
                            (StatusCode::INTERNAL_SERVER_ERROR, "[-]flap")
                        }
                    }
                }),
            ),
    )
    .await;
    let root = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new());
    let ctx = recording_ctx(root.path()).with_clock(clock.clone());
    let cfg = HealthConfig {
        successes: 3,
        interval: Duration::from_secs(1),
        timeout: Duration::from_secs(20),
        ..HealthConfig::default()
    };
    let checks = [
        HealthCheck::Kubelet {
            url: server.url("/steady"),
        },
        HealthCheck::Kubelet {
            url: server.url("/flapping"),
        },
    ];
    let report = wait_healthy(&checks, &cfg, &ctx).await;
    assert_eq!(report.verdict, Verdict::TimedOut, "{report}");
    // 20 virtual seconds at 1 s intervals: 20 real rounds against the server.
    assert_eq!(report.rounds, 20);
    assert_eq!(hits.load(Ordering::SeqCst), 20);
    assert!(report.checks[0].passed, "{report}");
    assert_eq!(report.checks[0].streak, 20);
    assert!(!report.checks[1].passed, "{report}");
    assert!(report.checks[1].streak <= 1, "{report}");

    // The steady endpoint alone passes after exactly 3 rounds.
    let report = wait_healthy(&checks[..1], &cfg, &ctx).await;
    assert_eq!(report.verdict, Verdict::Healthy, "{report}");
    assert_eq!(report.rounds, 3);
}

#[tokio::test]
async fn wait_healthy_times_out_on_failing_apiserver_with_real_clock() {
    let ca = TestCa::new("k3s-server-ca");
    let client = ca.client_cert("system:admin");
    let server = mtls_apiserver(&ca, StatusCode::INTERNAL_SERVER_ERROR).await;
    let root = tempfile::tempdir().unwrap();
    write_node_file(
        root.path(),
        KUBECONFIG,
        &cert_kubeconfig(&server.base(), &ca.pem, &client),
    );
    let ctx = recording_ctx(root.path());
    let cfg = HealthConfig {
        successes: 1,
        interval: Duration::from_millis(200),
        timeout: Duration::from_millis(1500),
        ..HealthConfig::default()
    };
    let started = Instant::now();
    let report = wait_healthy(&[apiserver_check()], &cfg, &ctx).await;
    assert_eq!(report.verdict, Verdict::TimedOut, "{report}");
    assert!(report.rounds >= 2, "{report}");
    // It really waited for the deadline (functional: it must not give up early).
    assert!(started.elapsed() >= Duration::from_millis(1500));
    let text = report.to_string();
    assert!(
        text.contains("timed out") && text.contains("status 500"),
        "{text}"
    );

    // And the same gate passes against a healthy stand-in.
    let healthy = mtls_apiserver(&ca, StatusCode::OK).await;
    write_node_file(
        root.path(),
        KUBECONFIG,
        &cert_kubeconfig(&healthy.base(), &ca.pem, &client),
    );
    let cfg = HealthConfig {
        successes: 2,
        ..cfg
    };
    let report = wait_healthy(&[apiserver_check()], &cfg, &ctx).await;
    assert_eq!(report.verdict, Verdict::Healthy, "{report}");
    // Two rounds when every request answers in time; a loaded machine may need a retry.
    assert!(report.rounds >= 2, "{report}");
}

#[tokio::test]
async fn command_and_unit_checks_with_recording_runner() {
    let runner = Arc::new(
        RecordingRunner::new()
            .on(
                &["systemctl", "is-active", "--quiet", "k3s-agent"],
                CommandOutput::exit(3),
            )
            .on(
                &["check-disk"],
                CommandOutput::exit(1).with_stderr("disk full\n"),
            ),
    );
    let root = tempfile::tempdir().unwrap();
    let ctx = ctx(root.path(), runner.clone());
    let checks = [
        HealthCheck::Unit { name: "k3s".into() },
        HealthCheck::Unit {
            name: "k3s-agent".into(),
        },
        HealthCheck::Command {
            argv: vec!["check-disk".into(), "/var".into()],
        },
        HealthCheck::Command {
            argv: vec!["check-net".into()],
        },
    ];
    let results = check_once(&checks, &ctx).await;
    let oks: Vec<bool> = results.iter().map(|r| r.outcome.ok).collect();
    assert_eq!(oks, [true, false, false, true], "{results:?}");
    assert!(
        results[1]
            .outcome
            .detail
            .contains("unit k3s-agent is not active (systemctl is-active: exit status 3)"),
        "{results:?}"
    );
    assert_eq!(
        results[2].outcome.detail,
        "`check-disk /var` failed: exit status 1; stderr: disk full"
    );
    let mut calls = runner.calls();
    calls.sort();
    assert_eq!(
        calls,
        vec![
            vec!["check-disk".to_string(), "/var".into()],
            vec!["check-net".to_string()],
            vec![
                "systemctl".to_string(),
                "is-active".into(),
                "--quiet".into(),
                "k3s".into()
            ],
            vec![
                "systemctl".to_string(),
                "is-active".into(),
                "--quiet".into(),
                "k3s-agent".into()
            ],
        ]
    );
}

#[tokio::test]
async fn command_check_with_real_system_runner() {
    let root = tempfile::tempdir().unwrap();
    let ctx = ctx(
        root.path(),
        Arc::new(SystemRunner::new(Duration::from_secs(10))),
    );
    let cmd = |argv: &[&str]| HealthCheck::Command {
        argv: argv.iter().map(|s| s.to_string()).collect(),
    };
    let pass = run_check(&cmd(&["true"]), &ctx).await;
    assert!(pass.ok, "{pass:?}");
    let fail = run_check(&cmd(&["false"]), &ctx).await;
    assert!(!fail.ok);
    assert_eq!(fail.detail, "`false` failed: exit status 1");
    let fail = run_check(&cmd(&["sh", "-c", "echo broken >&2; exit 4"]), &ctx).await;
    assert!(!fail.ok);
    assert!(
        fail.detail.contains("exit status 4; stderr: broken"),
        "{fail:?}"
    );
    let fail = run_check(&cmd(&["/nonexistent/bosun-probe"]), &ctx).await;
    assert!(!fail.ok);
    assert!(
        fail.detail
            .contains("cannot start `/nonexistent/bosun-probe`"),
        "{fail:?}"
    );
}

/// Converts a PKCS#8 PEM key to the SEC1 `EC PRIVATE KEY` form K3s writes into `k3s.yaml`,
/// with the real `openssl` tool.
fn to_sec1_pem(pkcs8_pem: &str) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("openssl")
        .args(["pkey", "-traditional"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run openssl (see .ci/packages.txt)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(pkcs8_pem.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "openssl pkey failed");
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn apiserver_accepts_k3s_style_ec_private_key_and_certificate_chain() {
    let ca = TestCa::new("k3s-server-ca");
    let mut client = ca.client_cert("system:admin");
    client.key_pem = to_sec1_pem(&client.key_pem);
    assert!(client.key_pem.starts_with("-----BEGIN EC PRIVATE KEY-----"));
    // K3s puts the client certificate followed by its issuing CA in client-certificate-data.
    client.cert_pem = format!("{}{}", client.cert_pem, ca.pem);
    let server = mtls_apiserver(&ca, StatusCode::OK).await;
    let root = tempfile::tempdir().unwrap();
    write_node_file(
        root.path(),
        KUBECONFIG,
        &cert_kubeconfig(&server.base(), &ca.pem, &client),
    );
    let ctx = recording_ctx(root.path());
    let pass = run_check(&apiserver_check(), &ctx).await;
    assert!(pass.ok, "{pass:?}");
    let pass = run_check(&node_check(None), &ctx).await;
    assert!(pass.ok, "{pass:?}");
}
