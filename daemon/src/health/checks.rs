//! The individual health checks. Each one runs once and yields a [`CheckOutcome`]; none of
//! them returns an error or panics - a problem is a failed outcome with a detail that says
//! what failed and where (URL, kubeconfig, unit, command).
//!
//! HTTP checks use reqwest with rustls, explicit connect and request timeouts
//! ([`HealthContext::connect_timeout`], [`HealthContext::request_timeout`]), no proxy, no
//! redirects, and read at most [`HealthContext::max_body_bytes`] of a body. When a CA is
//! given (kubeconfig or `ca:`), only that CA is trusted. Kubeconfigs and CA files are re-read
//! on every run, so rotated certificates are picked up.

use std::sync::Arc;

use serde::Deserialize;

use super::kubeconfig::{resolve_under_root, Kubeconfig};
use super::HealthContext;
use crate::config::{HealthCheck, Secret};
use crate::error_chain::error_chain;
use crate::runner::display_argv;

/// The result of running one check once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckOutcome {
    /// Whether the check passed.
    pub ok: bool,
    /// What was observed: a short confirmation on success, the reason on failure.
    pub detail: String,
}

impl CheckOutcome {
    /// A passing outcome with `detail`.
    pub fn pass(detail: impl Into<String>) -> Self {
        CheckOutcome {
            ok: true,
            detail: detail.into(),
        }
    }

    /// A failing outcome with `detail` (what failed and where).
    pub fn fail(detail: impl Into<String>) -> Self {
        CheckOutcome {
            ok: false,
            detail: detail.into(),
        }
    }
}

/// Runs one check once. Side effects: HTTP requests, or a command through `ctx.runner`;
/// reads kubeconfig/CA/token files under `ctx.root`.
pub async fn run_check(check: &HealthCheck, ctx: &HealthContext) -> CheckOutcome {
    match check {
        HealthCheck::Unit { name } => unit(name, ctx).await,
        HealthCheck::Kubelet { url } => kubelet(url, ctx).await,
        HealthCheck::Apiserver { kubeconfig, url } => {
            apiserver(kubeconfig, url.as_deref(), ctx).await
        }
        HealthCheck::NodeReady { kubeconfig, node } => {
            node_ready(kubeconfig, node.as_deref(), ctx).await
        }
        HealthCheck::Http {
            url,
            ca,
            status,
            body,
        } => http(url, ca.as_deref(), *status, body.as_deref(), ctx).await,
        HealthCheck::Command { argv } => command(argv, ctx).await,
    }
}

/// Runs all checks once, concurrently; outcomes are in the order of `checks`.
pub async fn run_checks(checks: &[HealthCheck], ctx: &HealthContext) -> Vec<CheckOutcome> {
    futures_util::future::join_all(checks.iter().map(|c| run_check(c, ctx))).await
}

async fn unit(name: &str, ctx: &HealthContext) -> CheckOutcome {
    let argv = vec![
        "systemctl".to_string(),
        "is-active".into(),
        "--quiet".into(),
        name.to_string(),
    ];
    match run_command(argv, ctx).await {
        Ok(out) if out.success() => CheckOutcome::pass(format!("unit {name} is active")),
        Ok(out) => CheckOutcome::fail(format!(
            "unit {name} is not active (systemctl is-active: {})",
            out.status_text()
        )),
        Err(e) => CheckOutcome::fail(format!("unit {name}: {e}")),
    }
}

async fn command(argv: &[String], ctx: &HealthContext) -> CheckOutcome {
    let shown = display_argv(argv);
    match run_command(argv.to_vec(), ctx).await {
        Ok(out) if out.success() => CheckOutcome::pass(format!("`{shown}` exited with status 0")),
        Ok(out) => {
            let stderr = snippet(&out.stderr);
            let mut detail = format!("`{shown}` failed: {}", out.status_text());
            if !stderr.is_empty() {
                detail.push_str(&format!("; stderr: {stderr}"));
            }
            CheckOutcome::fail(detail)
        }
        Err(e) => CheckOutcome::fail(e),
    }
}

/// Runs argv on a blocking thread through the context's runner.
async fn run_command(
    argv: Vec<String>,
    ctx: &HealthContext,
) -> Result<crate::runner::CommandOutput, String> {
    let runner = Arc::clone(&ctx.runner);
    let shown = display_argv(&argv);
    match tokio::task::spawn_blocking(move || runner.run(&argv)).await {
        Ok(Ok(out)) => Ok(out),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(format!("`{shown}`: runner thread failed: {e}")),
    }
}

async fn kubelet(url: &str, ctx: &HealthContext) -> CheckOutcome {
    let client = match build_client(ctx, &Tls::default()) {
        Ok(c) => c,
        Err(e) => return CheckOutcome::fail(e),
    };
    match get(&client, url, None, ctx).await {
        Ok(resp) => expect_ok_body(url, &resp),
        Err(e) => CheckOutcome::fail(e),
    }
}

async fn apiserver(kubeconfig: &str, url: Option<&str>, ctx: &HealthContext) -> CheckOutcome {
    let kc = match Kubeconfig::load(&ctx.root, kubeconfig) {
        Ok(kc) => kc,
        Err(e) => return CheckOutcome::fail(e.to_string()),
    };
    let base = url.map(|u| u.trim_end_matches('/')).unwrap_or(&kc.server);
    let target = format!("{base}/readyz");
    let client = match build_client(ctx, &Tls::from_kubeconfig(&kc)) {
        Ok(c) => c,
        Err(e) => return CheckOutcome::fail(e),
    };
    match get(&client, &target, kc.token.as_ref(), ctx).await {
        Ok(resp) => expect_ok_body(&target, &resp),
        Err(e) => CheckOutcome::fail(e),
    }
}

#[derive(Deserialize)]
struct Node {
    #[serde(default)]
    status: NodeStatus,
}

#[derive(Deserialize, Default)]
struct NodeStatus {
    #[serde(default)]
    conditions: Vec<NodeCondition>,
}

#[derive(Deserialize)]
struct NodeCondition {
    #[serde(rename = "type")]
    kind: String,
    status: String,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

async fn node_ready(kubeconfig: &str, node: Option<&str>, ctx: &HealthContext) -> CheckOutcome {
    let name = node.unwrap_or(&ctx.hostname);
    // Node names are DNS subdomains; refuse anything that would change the URL path.
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    {
        return CheckOutcome::fail(format!(
            "node name {name:?} is not a valid Kubernetes node name"
        ));
    }
    let kc = match Kubeconfig::load(&ctx.root, kubeconfig) {
        Ok(kc) => kc,
        Err(e) => return CheckOutcome::fail(e.to_string()),
    };
    let target = format!("{}/api/v1/nodes/{name}", kc.server);
    let client = match build_client(ctx, &Tls::from_kubeconfig(&kc)) {
        Ok(c) => c,
        Err(e) => return CheckOutcome::fail(e),
    };
    let resp = match get(&client, &target, kc.token.as_ref(), ctx).await {
        Ok(r) => r,
        Err(e) => return CheckOutcome::fail(e),
    };
    match resp.status {
        200 => {}
        404 => {
            return CheckOutcome::fail(format!(
                "node {name} is not registered (GET {target}: status 404)"
            ))
        }
        _ => return CheckOutcome::fail(status_detail(&target, &resp)),
    }
    let node: Node = match serde_json::from_slice(&resp.body) {
        Ok(n) => n,
        Err(e) => {
            return CheckOutcome::fail(format!("GET {target}: response is not a Node object: {e}"))
        }
    };
    match node.status.conditions.iter().find(|c| c.kind == "Ready") {
        None => CheckOutcome::fail(format!("node {name} has no Ready condition yet")),
        Some(c) if c.status == "True" => CheckOutcome::pass(format!("node {name} is Ready")),
        Some(c) => {
            let mut detail = format!("node {name} is not Ready (Ready={}", c.status);
            if let Some(r) = c.reason.as_deref().filter(|r| !r.is_empty()) {
                detail.push_str(&format!(", reason {r}"));
            }
            if let Some(m) = c.message.as_deref().filter(|m| !m.is_empty()) {
                detail.push_str(&format!(": {}", snippet(m.as_bytes())));
            }
            detail.push(')');
            CheckOutcome::fail(detail)
        }
    }
}

async fn http(
    url: &str,
    ca: Option<&str>,
    status: u16,
    body: Option<&str>,
    ctx: &HealthContext,
) -> CheckOutcome {
    let mut tls = Tls::default();
    if let Some(ca) = ca {
        let path = resolve_under_root(&ctx.root, std::path::Path::new("/"), ca);
        match std::fs::read(&path) {
            Ok(pem) => {
                tls.ca_pem = Some(pem);
                tls.ca_origin = format!("CA file {ca}");
            }
            Err(e) => {
                return CheckOutcome::fail(format!(
                    "cannot read CA file {ca} ({}): {e}",
                    path.display()
                ))
            }
        }
    }
    let client = match build_client(ctx, &tls) {
        Ok(c) => c,
        Err(e) => return CheckOutcome::fail(e),
    };
    let resp = match get(&client, url, None, ctx).await {
        Ok(r) => r,
        Err(e) => return CheckOutcome::fail(e),
    };
    if resp.status != status {
        return CheckOutcome::fail(format!(
            "GET {url}: expected status {status}, got {}",
            status_detail_suffix(&resp)
        ));
    }
    if let Some(want) = body {
        if !String::from_utf8_lossy(&resp.body).contains(want) {
            return CheckOutcome::fail(format!(
                "GET {url}: status {status} but the body does not contain {want:?} (body: {})",
                snippet(&resp.body)
            ));
        }
    }
    CheckOutcome::pass(format!("GET {url}: status {status}"))
}

/// TLS settings of one check's client.
#[derive(Default)]
struct Tls {
    ca_pem: Option<Vec<u8>>,
    /// Where the CA came from, for messages.
    ca_origin: String,
    identity_pem: Option<Vec<u8>>,
    identity_origin: String,
    insecure: bool,
}

impl Tls {
    fn from_kubeconfig(kc: &Kubeconfig) -> Tls {
        Tls {
            ca_pem: kc.ca_pem.clone(),
            ca_origin: format!("kubeconfig {} certificate-authority", kc.path),
            identity_pem: kc.identity.as_ref().map(|i| i.combined_pem()),
            identity_origin: format!("kubeconfig {} client certificate/key", kc.path),
            insecure: kc.insecure_skip_tls_verify,
        }
    }
}

fn build_client(ctx: &HealthContext, tls: &Tls) -> Result<reqwest::Client, String> {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .connect_timeout(ctx.connect_timeout)
        .timeout(ctx.request_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .user_agent(concat!("bosun-health/", env!("CARGO_PKG_VERSION")));
    if let Some(pem) = &tls.ca_pem {
        let certs = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|e| format!("{}: not a valid PEM certificate bundle: {e}", tls.ca_origin))?;
        if certs.is_empty() {
            return Err(format!("{}: no certificate found", tls.ca_origin));
        }
        // Trust exactly this CA, as kubectl does.
        b = b.tls_built_in_root_certs(false);
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    if let Some(pem) = &tls.identity_pem {
        let id = reqwest::Identity::from_pem(pem).map_err(|e| {
            format!(
                "{}: not a usable PEM certificate and key: {e}",
                tls.identity_origin
            )
        })?;
        b = b.identity(id);
    }
    if tls.insecure {
        b = b.danger_accept_invalid_certs(true);
    }
    b.build()
        .map_err(|e| format!("cannot set up the HTTPS client: {}", error_chain(&e)))
}

struct Response {
    status: u16,
    body: Vec<u8>,
}

/// GETs `url` and reads at most `ctx.max_body_bytes` of the body.
async fn get(
    client: &reqwest::Client,
    url: &str,
    bearer: Option<&Secret>,
    ctx: &HealthContext,
) -> Result<Response, String> {
    let mut req = client.get(url);
    if let Some(token) = bearer {
        req = req.bearer_auth(token.expose());
    }
    let mut resp = req.send().await.map_err(|e| request_error(url, &e, ctx))?;
    let status = resp.status().as_u16();
    let mut body = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > ctx.max_body_bytes {
                    return Err(format!(
                        "GET {url}: response body exceeds {} bytes",
                        ctx.max_body_bytes
                    ));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(e) => return Err(request_error(url, &e, ctx)),
        }
    }
    Ok(Response { status, body })
}

/// Turns a transport error into a message that names the URL and the likely cause.
fn request_error(url: &str, e: &reqwest::Error, ctx: &HealthContext) -> String {
    let chain = error_chain(e);
    let lower = chain.to_ascii_lowercase();
    if lower.contains("invalid peer certificate") || lower.contains("certificate verify failed") {
        format!("GET {url}: TLS server certificate verification failed (is the CA right?): {chain}")
    } else if lower.contains("alert") && lower.contains("certificate") {
        format!("GET {url}: the server rejected our TLS client certificate: {chain}")
    } else if e.is_timeout() {
        format!(
            "GET {url}: timed out (connect timeout {:?}, request timeout {:?}): {chain}",
            ctx.connect_timeout, ctx.request_timeout
        )
    } else if e.is_connect() {
        format!("GET {url}: cannot connect: {chain}")
    } else {
        format!("GET {url}: {chain}")
    }
}

/// 200 with body `ok` passes (kubelet healthz, apiserver readyz).
fn expect_ok_body(url: &str, resp: &Response) -> CheckOutcome {
    if resp.status == 200 && resp.body.trim_ascii() == b"ok" {
        CheckOutcome::pass(format!("GET {url}: 200 ok"))
    } else if resp.status == 200 {
        CheckOutcome::fail(format!(
            "GET {url}: status 200 but body is not \"ok\": {}",
            snippet(&resp.body)
        ))
    } else {
        CheckOutcome::fail(status_detail(url, resp))
    }
}

fn status_detail(url: &str, resp: &Response) -> String {
    let mut d = format!("GET {url}: status {}", status_detail_suffix(resp));
    if resp.status == 401 || resp.status == 403 {
        d.push_str(" (check the kubeconfig credentials)");
    }
    d
}

fn status_detail_suffix(resp: &Response) -> String {
    let body = snippet(&resp.body);
    if body.is_empty() {
        resp.status.to_string()
    } else {
        format!("{}: {body}", resp.status)
    }
}

/// At most 300 characters of `bytes` on one line, for messages.
fn snippet(bytes: &[u8]) -> String {
    const MAX: usize = 300;
    let text = String::from_utf8_lossy(bytes);
    let one_line = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    if one_line.chars().count() > MAX {
        let cut: String = one_line.chars().take(MAX).collect();
        format!("{cut}...")
    } else {
        one_line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snippet_is_one_bounded_line() {
        assert_eq!(
            snippet(b"[-]etcd failed\n\nreadyz check failed\n"),
            "[-]etcd failed; readyz check failed"
        );
        assert_eq!(snippet(&[b'x'; 1000]).len(), 303);
    }

    #[test]
    fn ok_body_requires_200_and_exactly_ok() {
        let r = |status, body: &[u8]| Response {
            status,
            body: body.to_vec(),
        };
        assert!(expect_ok_body("u", &r(200, b"ok")).ok);
        assert!(expect_ok_body("u", &r(200, b"ok\n")).ok);
        assert!(!expect_ok_body("u", &r(200, b"okay")).ok);
        let f = expect_ok_body("http://x/readyz", &r(500, b"[-]etcd failed"));
        assert!(!f.ok);
        assert_eq!(f.detail, "GET http://x/readyz: status 500: [-]etcd failed");
    }
}
