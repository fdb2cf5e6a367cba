//! A small hand-written Kubernetes API client for the calls bosun's fleet rollouts make:
//! Leases (create, get, update with resourceVersion, delete with preconditions), Nodes (get,
//! list by label selector, JSON merge patch), Pods on a node (list by the `spec.nodeName` field
//! selector) and `policy/v1` Evictions.
//!
//! It runs on the HTTP stack bosun already links (reqwest + rustls) and reads its settings from
//! a kubeconfig ([`crate::health::Kubeconfig`]): the server URL, the CA to trust (only that
//! one, as kubectl does), a client certificate and key or a bearer token. `kube` and
//! `k8s-openapi` are not used: they alone measured 7.5 MiB of idle RSS.
//!
//! Invariants:
//! - every request has a connect timeout ([`CONNECT_TIMEOUT`]) and a whole-request timeout
//!   ([`REQUEST_TIMEOUT`]), follows no redirect, uses no proxy, and reads at most
//!   [`MAX_BODY_BYTES`] of an answer;
//! - object names are checked before they become part of a path ([`KubeError::InvalidName`]);
//! - errors are typed ([`KubeError`]) and name the request, never the token.

mod error;
pub mod types;

use std::path::Path;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::config::Secret;
use crate::error_chain::error_chain;
use crate::health::Kubeconfig;

pub use error::KubeError;
pub use types::{Eviction, Lease, LeaseSpec, Node, NodePatch, ObjectMeta, Pod};

/// TCP + TLS connect timeout of every request: the API server is on the LAN or the node.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Whole-request timeout (connect, send, read the answer). None of the calls waits on the
/// server side, so a longer answer means a sick server; the caller retries at its next tick.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// Largest answer read. A pod list of one node (at most 110 pods by default) is far below;
/// a larger answer is refused rather than held in memory on a 1 GB node.
pub const MAX_BODY_BYTES: usize = 8 << 20;

/// The Lease API path prefix.
const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces";

/// A connection to one API server with one identity. Cheap to clone (the HTTP client is
/// shared).
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    server: String,
    token: Option<Secret>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("server", &self.server)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

/// Preconditions of a delete: the server answers 409 when the object no longer matches.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Preconditions {
    /// The uid the object must still have.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// The resourceVersion the object must still have.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
}

impl Client {
    /// A client for the kubeconfig at node path `path` under `root`. Reads the kubeconfig
    /// and the files it references.
    pub fn load(root: &Path, path: &str) -> Result<Client, KubeError> {
        Client::from_kubeconfig(&Kubeconfig::load(root, path)?)
    }

    /// A client for an already loaded kubeconfig. Pure apart from parsing PEM data.
    pub fn from_kubeconfig(kc: &Kubeconfig) -> Result<Client, KubeError> {
        let builder = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .user_agent(concat!("bosun/", env!("CARGO_PKG_VERSION")));
        let http = kc
            .apply_tls(builder)?
            .build()
            .map_err(|e| KubeError::Client {
                path: kc.path.clone(),
                message: error_chain(&e),
            })?;
        Ok(Client {
            http,
            server: kc.server.clone(),
            token: kc.token.clone(),
        })
    }

    /// The API server base URL.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// GETs Lease `namespace/name`. Network: one request.
    pub async fn get_lease(&self, namespace: &str, name: &str) -> Result<Lease, KubeError> {
        let path = lease_path(namespace, Some(name))?;
        self.call(reqwest::Method::GET, &path, &[], None).await
    }

    /// Creates `lease` in its namespace; [`KubeError::AlreadyExists`] when one with that name
    /// exists. Network: one request.
    pub async fn create_lease(&self, lease: &Lease) -> Result<Lease, KubeError> {
        let ns = lease.metadata.namespace.as_deref().unwrap_or_default();
        let path = lease_path(ns, None)?;
        check_name("lease", &lease.metadata.name)?;
        let body = Body::json(lease)?;
        self.call(reqwest::Method::POST, &path, &[], Some(body))
            .await
    }

    /// Replaces `lease` (PUT). It must carry the resourceVersion it was read with:
    /// [`KubeError::Conflict`] when the lease changed since. Network: one request.
    pub async fn update_lease(&self, lease: &Lease) -> Result<Lease, KubeError> {
        let ns = lease.metadata.namespace.as_deref().unwrap_or_default();
        let path = lease_path(ns, Some(&lease.metadata.name))?;
        if lease.metadata.resource_version.is_none() {
            return Err(KubeError::Decode {
                request: format!("PUT {path}"),
                message: "refusing an update without metadata.resourceVersion".into(),
            });
        }
        let body = Body::json(lease)?;
        self.call(reqwest::Method::PUT, &path, &[], Some(body))
            .await
    }

    /// Deletes Lease `namespace/name`, only if it still matches `pre`
    /// ([`KubeError::Conflict`] otherwise, [`KubeError::NotFound`] when gone). Network: one
    /// request.
    pub async fn delete_lease(
        &self,
        namespace: &str,
        name: &str,
        pre: &Preconditions,
    ) -> Result<(), KubeError> {
        let path = lease_path(namespace, Some(name))?;
        let options = serde_json::json!({
            "kind": "DeleteOptions", "apiVersion": "v1", "preconditions": pre
        });
        let body = Body::json(&options)?;
        self.call::<serde_json::Value>(reqwest::Method::DELETE, &path, &[], Some(body))
            .await
            .map(drop)
    }

    /// GETs Node `name`. Network: one request.
    pub async fn get_node(&self, name: &str) -> Result<Node, KubeError> {
        check_name("node", name)?;
        let path = format!("/api/v1/nodes/{name}");
        self.call(reqwest::Method::GET, &path, &[], None).await
    }

    /// Lists the Nodes matching `label_selector` (e.g. `bosun.dev/failed=abc1234`). Network:
    /// one request.
    pub async fn list_nodes(&self, label_selector: &str) -> Result<Vec<Node>, KubeError> {
        let list: types::List<Node> = self
            .call(
                reqwest::Method::GET,
                "/api/v1/nodes",
                &[("labelSelector", label_selector)],
                None,
            )
            .await?;
        Ok(list.items)
    }

    /// Applies `patch` to Node `name` (JSON merge patch). Network: one request.
    pub async fn patch_node(&self, name: &str, patch: &NodePatch) -> Result<Node, KubeError> {
        check_name("node", name)?;
        let path = format!("/api/v1/nodes/{name}");
        let body = Body {
            content_type: "application/merge-patch+json",
            bytes: patch.to_json().to_string().into_bytes(),
        };
        self.call(reqwest::Method::PATCH, &path, &[], Some(body))
            .await
    }

    /// Lists every pod scheduled to node `node` (field selector `spec.nodeName`), in all
    /// namespaces. Network: one request.
    pub async fn pods_on_node(&self, node: &str) -> Result<Vec<Pod>, KubeError> {
        check_name("node", node)?;
        let selector = format!("spec.nodeName={node}");
        let list: types::List<Pod> = self
            .call(
                reqwest::Method::GET,
                "/api/v1/pods",
                &[("fieldSelector", &selector)],
                None,
            )
            .await?;
        Ok(list.items)
    }

    /// Asks to evict pod `namespace/name` (`policy/v1` Eviction, never a plain delete).
    /// [`KubeError::TooManyRequests`] while a PodDisruptionBudget forbids it,
    /// [`KubeError::NotFound`] when the pod is already gone. Network: one request.
    pub async fn evict(&self, namespace: &str, name: &str) -> Result<(), KubeError> {
        check_name("namespace", namespace)?;
        check_name("pod", name)?;
        let path = format!("/api/v1/namespaces/{namespace}/pods/{name}/eviction");
        let body = Body::json(&Eviction::of(namespace, name))?;
        self.call::<serde_json::Value>(reqwest::Method::POST, &path, &[], Some(body))
            .await
            .map(drop)
    }

    /// Sends one request and decodes a 2xx answer as `T`; any other status is a typed error.
    async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<Body>,
    ) -> Result<T, KubeError> {
        let request = format!("{method} {path}");
        let (code, bytes) = self.send(method, path, query, body, &request).await?;
        if !(200..300).contains(&code) {
            return Err(error::from_status(request, code, &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|e| KubeError::Decode {
            request,
            message: e.to_string(),
        })
    }

    /// Sends one request; returns the status and at most [`MAX_BODY_BYTES`] of the body.
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<Body>,
        request: &str,
    ) -> Result<(u16, Vec<u8>), KubeError> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.server))
            .header(reqwest::header::ACCEPT, "application/json");
        if !query.is_empty() {
            req = req.query(query);
        }
        if let Some(token) = &self.token {
            req = req.bearer_auth(token.expose());
        }
        if let Some(b) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, b.content_type)
                .body(b.bytes);
        }
        let transport = |e: reqwest::Error| KubeError::Transport {
            request: request.to_string(),
            message: if e.is_timeout() {
                format!(
                    "timed out (connect {CONNECT_TIMEOUT:?}, request {REQUEST_TIMEOUT:?}): {}",
                    error_chain(&e)
                )
            } else {
                error_chain(&e)
            },
        };
        let mut resp = req.send().await.map_err(transport)?;
        let code = resp.status().as_u16();
        let mut bytes = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(transport)? {
            if bytes.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(KubeError::Decode {
                    request: request.to_string(),
                    message: format!("the answer exceeds {MAX_BODY_BYTES} bytes"),
                });
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok((code, bytes))
    }
}

/// A request body and its content type.
struct Body {
    content_type: &'static str,
    bytes: Vec<u8>,
}

impl Body {
    fn json(value: &impl Serialize) -> Result<Body, KubeError> {
        let bytes = serde_json::to_vec(value).map_err(|e| KubeError::Decode {
            request: "encoding a request body".into(),
            message: e.to_string(),
        })?;
        Ok(Body {
            content_type: "application/json",
            bytes,
        })
    }
}

/// `/apis/coordination.k8s.io/v1/namespaces/NS/leases[/NAME]`, names checked.
fn lease_path(namespace: &str, name: Option<&str>) -> Result<String, KubeError> {
    check_name("namespace", namespace)?;
    Ok(match name {
        None => format!("{LEASES}/{namespace}/leases"),
        Some(n) => {
            check_name("lease", n)?;
            format!("{LEASES}/{namespace}/leases/{n}")
        }
    })
}

/// Accepts a DNS subdomain (RFC 1123: lowercase letters, digits, `-` and `.`, at most 253
/// characters, alphanumeric at both ends): nothing that could change a URL path.
pub fn check_name(what: &'static str, name: &str) -> Result<(), KubeError> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(KubeError::InvalidName {
            what,
            name: name.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_could_change_the_path_are_refused() {
        for ok in ["n1", "edge-01.example.org", "bosun-default-0", "a"] {
            assert!(check_name("node", ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "../x",
            "a/b",
            "A",
            "-a",
            "a-",
            "a?b",
            "a%2f",
            &"a".repeat(254),
        ] {
            let e = check_name("node", bad).unwrap_err();
            assert!(
                matches!(e, KubeError::InvalidName { what: "node", .. }),
                "{bad}"
            );
        }
    }

    #[test]
    fn lease_paths() {
        assert_eq!(
            lease_path("kube-system", Some("bosun-default-0")).unwrap(),
            "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/bosun-default-0"
        );
        assert!(lease_path("kube-system/../x", None).is_err());
    }
}
