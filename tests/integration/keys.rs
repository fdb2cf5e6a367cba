//! ssh key sources against a real HTTP server (axum on 127.0.0.1) standing in for GitHub,
//! GitLab and arbitrary key URLs: success, 404, 500, timeout, oversized bodies, garbage, and
//! the cache of the last good fetch surviving every kind of failure.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bosun::config::{AuthorizedKey, KeySource, Origin};
use bosun::keys::{FetchError, KeyFetcher, KeyFetcherConfig, SourceOutcome};

const OK: u8 = 0;
const FAIL_500: u8 = 1;
const GARBAGE: u8 = 2;
const SLOW: u8 = 3;
const OTHER_KEYS: u8 = 4;
const NOT_FOUND: u8 = 5;

fn key(n: u8, comment: &str) -> String {
    ssh_key::PublicKey::new(
        ssh_key::public::KeyData::Ed25519(ssh_key::public::Ed25519PublicKey([n; 32])),
        comment,
    )
    .to_openssh()
    .unwrap()
}

#[derive(Clone)]
struct Server {
    /// Behaviour of `/alice.keys`.
    mode: Arc<AtomicU8>,
}

async fn alice(State(s): State<Server>) -> Response {
    match s.mode.load(Ordering::SeqCst) {
        OK => format!("{}\n{}\n", key(1, "alice@laptop"), key(2, "alice@phone")).into_response(),
        OTHER_KEYS => format!("{}\n", key(3, "alice@new")).into_response(),
        FAIL_500 => (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response(),
        NOT_FOUND => StatusCode::NOT_FOUND.into_response(),
        GARBAGE => "<html><body>Sign in to the Wi-Fi</body></html>\n".into_response(),
        SLOW => {
            tokio::time::sleep(Duration::from_secs(10)).await;
            key(1, "late").into_response()
        }
        _ => unreachable!(),
    }
}

async fn slow() -> Response {
    tokio::time::sleep(Duration::from_secs(10)).await;
    key(1, "late").into_response()
}

async fn big() -> Response {
    // Valid keys, just too many bytes: only the size can make this fail.
    let line = format!("{}\n", key(9, "x"));
    line.repeat(100 * 1024 / line.len() + 1).into_response()
}

async fn big_chunked() -> Response {
    // No Content-Length: the cap must be enforced while streaming.
    let line = format!("{}\n", key(9, "x"));
    let chunks: Vec<Result<String, std::io::Error>> = (0..2000).map(|_| Ok(line.clone())).collect();
    Response::builder()
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from_stream(futures_util::stream::iter(chunks)))
        .unwrap()
}

async fn empty() -> Response {
    "".into_response()
}

async fn redirect_out() -> Response {
    // A redirect to plain http off loopback must be refused (it is never contacted).
    (
        StatusCode::FOUND,
        [(header::LOCATION, "http://192.0.2.1/alice.keys")],
    )
        .into_response()
}

async fn redirect_in() -> Response {
    (StatusCode::FOUND, [(header::LOCATION, "/alice.keys")]).into_response()
}

struct Fixture {
    base: String,
    mode: Arc<AtomicU8>,
    state: tempfile::TempDir,
}

impl Fixture {
    async fn start() -> Fixture {
        let mode = Arc::new(AtomicU8::new(OK));
        let app = Router::new()
            .route("/alice.keys", get(alice))
            .route("/gl/alice.keys", get(alice))
            .route("/slow.keys", get(slow))
            .route("/big.keys", get(big))
            .route("/big-chunked.keys", get(big_chunked))
            .route("/empty.keys", get(empty))
            .route("/redirect-out.keys", get(redirect_out))
            .route("/redirect-in.keys", get(redirect_in))
            .with_state(Server { mode: mode.clone() });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Fixture {
            base: format!("http://{addr}"),
            mode,
            state: tempfile::tempdir().unwrap(),
        }
    }

    /// A fetcher with a generous limit: a loaded CI machine must not turn other failures into
    /// timeouts. The timeout test uses [`Fixture::fetcher_with_timeout`].
    fn fetcher(&self) -> KeyFetcher {
        self.fetcher_with_timeout(Duration::from_secs(5))
    }

    fn fetcher_with_timeout(&self, timeout: Duration) -> KeyFetcher {
        let mut cfg = KeyFetcherConfig::new(self.state.path());
        cfg.github_base = self.base.clone();
        cfg.gitlab_base = format!("{}/gl", self.base);
        cfg.connect_timeout = Duration::from_secs(2);
        cfg.timeout = timeout;
        KeyFetcher::new(cfg).unwrap()
    }

    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
    }
}

fn entry(source: KeySource) -> AuthorizedKey {
    AuthorizedKey {
        source,
        origin: Origin {
            file: "config.yaml".into(),
            line: 2,
            col: 3,
        },
    }
}

fn github(u: &str) -> AuthorizedKey {
    entry(KeySource::GitHub(u.into()))
}

#[tokio::test]
async fn success_for_github_gitlab_url_and_literal_deduplicated() {
    let fx = Fixture::start().await;
    let f = fx.fetcher();
    let literal = key(7, "ops@vault");
    let res = f
        .resolve(&[
            entry(KeySource::Literal(literal.clone())),
            github("alice"),
            entry(KeySource::GitLab("alice".into())),
            entry(KeySource::Url(format!("{}/alice.keys", fx.base))),
        ])
        .await;
    assert_eq!(
        res.keys,
        vec![literal, key(1, "alice@laptop"), key(2, "alice@phone")]
    );
    assert!(matches!(res.reports[0].outcome, SourceOutcome::Literal));
    for r in &res.reports[1..] {
        assert!(
            matches!(
                r.outcome,
                SourceOutcome::Fetched {
                    count: 2,
                    cache_error: None
                }
            ),
            "{r:?}"
        );
    }
    assert!(!res.any_failed());
    assert!(res.warnings().is_empty());
    assert_eq!(res.for_render(), Some(res.keys.clone()));
    // One cache file per fetched source, no temp files left behind.
    let names: Vec<String> = std::fs::read_dir(fx.state.path().join("ssh-keys"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(names.iter().all(|n| n.ends_with(".keys")), "{names:?}");
}

/// Drift and start-up re-plans take cached keys without asking the network; without a cache
/// entry they fetch as usual.
#[tokio::test]
async fn cache_first_uses_the_cache_without_fetching() {
    let fx = Fixture::start().await;
    let mut cfg = fx.fetcher().config().clone();
    cfg.cache_first = true;
    let cache_first = KeyFetcher::new(cfg).unwrap();

    // Nothing cached yet: fetched (and cached).
    let res = cache_first.resolve(&[github("alice")]).await;
    assert!(
        matches!(
            res.reports[0].outcome,
            SourceOutcome::Fetched { count: 2, .. }
        ),
        "{:?}",
        res.reports[0]
    );
    // The server now lists other keys, then fails: the cached list is used, no warning.
    for mode in [OTHER_KEYS, FAIL_500] {
        fx.set(mode);
        let res = cache_first.resolve(&[github("alice")]).await;
        assert_eq!(
            res.keys,
            vec![key(1, "alice@laptop"), key(2, "alice@phone")]
        );
        assert!(
            matches!(
                res.reports[0].outcome,
                SourceOutcome::FromCache { count: 2 }
            ),
            "{:?}",
            res.reports[0]
        );
        assert!(res.warnings().is_empty() && !res.any_failed());
    }
    // A normal fetcher sees the new keys.
    fx.set(OTHER_KEYS);
    let res = fx.fetcher().resolve(&[github("alice")]).await;
    assert_eq!(res.keys, vec![key(3, "alice@new")]);
}

#[tokio::test]
async fn status_404_and_500_fail_the_fetch() {
    let fx = Fixture::start().await;
    let f = fx.fetcher();
    fx.set(NOT_FOUND);
    let err = f
        .fetch_url(&format!("{}/alice.keys", fx.base))
        .await
        .unwrap_err();
    assert!(
        matches!(err, FetchError::Status { status: 404, .. }),
        "{err}"
    );
    fx.set(FAIL_500);
    let err = f
        .fetch_url(&format!("{}/alice.keys", fx.base))
        .await
        .unwrap_err();
    assert!(
        matches!(err, FetchError::Status { status: 500, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("/alice.keys: HTTP status 500"));
}

#[tokio::test]
async fn failure_with_nothing_cached_contributes_no_keys_and_warns() {
    let fx = Fixture::start().await;
    fx.set(FAIL_500);
    let res = fx.fetcher().resolve(&[github("alice")]).await;
    assert!(res.keys.is_empty());
    assert!(matches!(
        res.reports[0].outcome,
        SourceOutcome::Missing { .. }
    ));
    let w = res.warnings();
    assert_eq!(w.len(), 1);
    assert!(w[0].starts_with("config.yaml:2:3: ssh_authorized_keys github:alice: fetch failed ("));
    // Rendering must not wipe authorized_keys because of this.
    assert_eq!(res.for_render(), None);
    assert!(
        !fx.state.path().join("ssh-keys").exists() || {
            std::fs::read_dir(fx.state.path().join("ssh-keys"))
                .unwrap()
                .next()
                .is_none()
        }
    );
}

#[tokio::test]
async fn timeout_when_the_server_sleeps_past_the_client_limit() {
    let fx = Fixture::start().await;
    let err = fx
        .fetcher_with_timeout(Duration::from_millis(500))
        .fetch_url(&format!("{}/slow.keys", fx.base))
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::Timeout { .. }), "{err}");
}

#[tokio::test]
async fn oversized_bodies_are_refused_with_and_without_content_length() {
    let fx = Fixture::start().await;
    let f = fx.fetcher();
    for path in ["big.keys", "big-chunked.keys"] {
        let err = f
            .fetch_url(&format!("{}/{path}", fx.base))
            .await
            .unwrap_err();
        assert!(
            matches!(err, FetchError::TooLarge { limit: 65536, .. }),
            "{path}: {err}"
        );
    }
}

#[tokio::test]
async fn garbage_lines_fail_the_whole_fetch() {
    let fx = Fixture::start().await;
    fx.set(GARBAGE);
    let err = fx
        .fetcher()
        .fetch_url(&format!("{}/alice.keys", fx.base))
        .await
        .unwrap_err();
    match &err {
        FetchError::NotAKey { line, snippet, .. } => {
            assert_eq!(*line, 1);
            assert!(snippet.starts_with("<html>"));
        }
        other => panic!("unexpected {other}"),
    }
}

#[tokio::test]
async fn cached_keys_survive_every_kind_of_failure_and_a_restart() {
    let fx = Fixture::start().await;
    let good = vec![key(1, "alice@laptop"), key(2, "alice@phone")];
    let res = fx.fetcher().resolve(&[github("alice")]).await;
    assert_eq!(res.keys, good);

    for mode in [FAIL_500, NOT_FOUND, GARBAGE, SLOW] {
        fx.set(mode);
        // A fresh fetcher each time: the cache lives on disk, not in memory.
        let f = if mode == SLOW {
            fx.fetcher_with_timeout(Duration::from_millis(500))
        } else {
            fx.fetcher()
        };
        let res = f.resolve(&[github("alice")]).await;
        assert_eq!(res.keys, good, "mode {mode}");
        match &res.reports[0].outcome {
            SourceOutcome::Cached { count: 2, .. } => {}
            other => panic!("mode {mode}: {other:?}"),
        }
        let w = res.warnings();
        assert!(w[0].contains("using 2 cached key(s)"), "{w:?}");
        assert_eq!(res.for_render(), Some(good.clone()));
    }

    // A new good answer replaces the cache: stale keys are gone for good.
    fx.set(OTHER_KEYS);
    let res = fx.fetcher().resolve(&[github("alice")]).await;
    assert_eq!(res.keys, vec![key(3, "alice@new")]);
    fx.set(FAIL_500);
    let res = fx.fetcher().resolve(&[github("alice")]).await;
    assert_eq!(res.keys, vec![key(3, "alice@new")]);
}

#[tokio::test]
async fn a_failing_source_does_not_hide_the_others() {
    let fx = Fixture::start().await;
    fx.set(FAIL_500);
    let literal = key(7, "ops");
    let res = fx
        .fetcher()
        .resolve(&[github("alice"), entry(KeySource::Literal(literal.clone()))])
        .await;
    assert_eq!(res.keys, vec![literal.clone()]);
    assert!(res.any_failed());
    assert_eq!(res.for_render(), Some(vec![literal]));
}

#[tokio::test]
async fn empty_answer_is_valid_and_cached() {
    let fx = Fixture::start().await;
    let f = fx.fetcher();
    let src = entry(KeySource::Url(format!("{}/empty.keys", fx.base)));
    let res = f.resolve(std::slice::from_ref(&src)).await;
    assert!(res.keys.is_empty());
    assert_eq!(res.for_render(), Some(vec![]));
    assert!(res.warnings()[0].contains("lists no keys"));
    assert_eq!(f.cached(&src.source), Some(vec![]));
}

#[tokio::test]
async fn redirects_follow_the_same_transport_rule() {
    let fx = Fixture::start().await;
    let f = fx.fetcher();
    let keys = f
        .fetch_url(&format!("{}/redirect-in.keys", fx.base))
        .await
        .unwrap();
    assert_eq!(keys.len(), 2);
    let err = f
        .fetch_url(&format!("{}/redirect-out.keys", fx.base))
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::Transport { .. }), "{err}");
    assert!(
        err.to_string().contains("neither https nor loopback"),
        "{err}"
    );
}

#[tokio::test]
async fn plain_http_off_loopback_is_refused_before_any_connection() {
    let fx = Fixture::start().await;
    let mut cfg = KeyFetcherConfig::new(fx.state.path());
    cfg.github_base = "http://192.0.2.1".into();
    let f = KeyFetcher::new(cfg).unwrap();
    let res = f.resolve(&[github("alice")]).await;
    match &res.reports[0].outcome {
        SourceOutcome::Missing {
            error: FetchError::Insecure { scheme, .. },
        } => assert_eq!(scheme, "http"),
        other => panic!("{other:?}"),
    }
}

/// Serves `app` over TLS on 127.0.0.1 with a certificate made here (rcgen) and returns the
/// base URL and the CA PEM that signs it.
async fn start_https(app: Router) -> (String, Vec<u8>) {
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let cert_pem = ck.cert.pem().into_bytes();
    let cert_der = ck.cert.der().clone();
    let key_der = rustls::pki_types::PrivatePkcs8KeyDer::from(ck.key_pair.serialize_der());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert_der], key_der.into())
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let app = app.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return; // the client rejected our certificate
                };
                let svc = hyper_util::service::TowerToHyperService::new(app);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (format!("https://127.0.0.1:{}", addr.port()), cert_pem)
}

#[tokio::test]
async fn https_with_a_trusted_ca_works_and_an_untrusted_certificate_falls_back_to_cache() {
    let mode = Arc::new(AtomicU8::new(OK));
    let app = Router::new()
        .route("/alice.keys", get(alice))
        .with_state(Server { mode: mode.clone() });
    let (base, ca_pem) = start_https(app).await;
    let state = tempfile::tempdir().unwrap();
    let config = |trust: bool| {
        let mut cfg = KeyFetcherConfig::new(state.path());
        cfg.github_base = base.clone();
        cfg.timeout = Duration::from_secs(5);
        if trust {
            cfg.extra_ca_pem = vec![ca_pem.clone()];
        }
        cfg
    };

    let trusted = KeyFetcher::new(config(true)).unwrap();
    let res = trusted.resolve(&[github("alice")]).await;
    assert_eq!(
        res.keys,
        vec![key(1, "alice@laptop"), key(2, "alice@phone")],
        "{:?}",
        res.reports
    );

    // Same server, but its CA is not trusted: a transport (certificate) failure, cache used.
    let untrusted = KeyFetcher::new(config(false)).unwrap();
    let err = untrusted
        .fetch_url(&format!("{base}/alice.keys"))
        .await
        .unwrap_err();
    assert!(matches!(err, FetchError::Transport { .. }), "{err}");
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "{err}"
    );
    let res = untrusted.resolve(&[github("alice")]).await;
    assert!(matches!(
        res.reports[0].outcome,
        SourceOutcome::Cached { count: 2, .. }
    ));
    assert_eq!(res.keys.len(), 2);
}
