//! A FleetLock client: the reboot-slot protocol zincati speaks to airlock and friends
//! (`POST <base>/v1/pre-reboot` takes a slot, `POST <base>/v1/steady-state` gives it back).
//!
//! Every request carries the header `fleet-lock-protocol: true` and the body
//! `{"client_params":{"id":ID,"group":GROUP}}`. Only `200 OK` means yes: the known servers
//! answer "not now" in different ways (airlock 500 with kind `failed_lock` when the group is
//! full, poseidon/fleetlock 423, heathcliff26/fleetlock 202 while it drains the node and 423
//! when full), so every other answer is [`Answer::NotYet`], with the server's
//! `{"kind","value"}` error body when it sent one. Taking a slot already held and releasing a
//! slot not held both answer 200 on these servers, so both calls are idempotent.
//!
//! Invariants: the base URL's path is kept (`https://h/prefix` + `/v1/pre-reboot` =
//! `https://h/prefix/v1/pre-reboot`); every request has [`CONNECT_TIMEOUT`] and
//! [`REQUEST_TIMEOUT`]; at most [`MAX_BODY_BYTES`] of an answer is read.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error_chain::error_chain;

/// Connect timeout of every request.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Whole-request timeout. airlock answers after one etcd transaction (its own timeout is
/// 3 s by default); longer means a sick server and the caller asks again at its next tick.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest answer read (error bodies are one line of JSON).
pub const MAX_BODY_BYTES: usize = 64 << 10;

/// Path of the "take a slot" call, relative to the base URL.
pub const PRE_REBOOT: &str = "/v1/pre-reboot";
/// Path of the "give the slot back" call, relative to the base URL.
pub const STEADY_STATE: &str = "/v1/steady-state";

/// A FleetLock problem that is not an answer: bad settings or no answer at all.
#[derive(Debug, thiserror::Error)]
pub enum FleetLockError {
    /// The base URL is unusable.
    #[error("fleetlock_url {url:?}: {reason}")]
    Url {
        /// The URL as configured.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `id` or `group` is empty.
    #[error("FleetLock client: {0} must not be empty")]
    Identity(&'static str),
    /// The CA bundle is not usable PEM.
    #[error("FleetLock CA: {0}")]
    Ca(String),
    /// No answer (connection refused, TLS, timeout).
    #[error("POST {url}: {message}")]
    Transport {
        /// The request URL.
        url: String,
        /// The cause.
        message: String,
    },
}

/// What the server answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// 200: the slot is taken (pre-reboot) or given back (steady-state).
    Granted,
    /// Anything else: not now; ask again later.
    NotYet(Refusal),
}

/// A "not now" answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The HTTP status.
    pub status: u16,
    /// `kind` of a FleetLock error body (`failed_lock`), when the body was one.
    pub kind: Option<String>,
    /// `value` of the error body, else the start of the body.
    pub message: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "status {}", self.status)?;
        if let Some(k) = &self.kind {
            write!(f, " ({k})")?;
        }
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        Ok(())
    }
}

#[derive(Serialize)]
struct Body<'a> {
    client_params: ClientParams<'a>,
}

#[derive(Serialize)]
struct ClientParams<'a> {
    id: &'a str,
    group: &'a str,
}

#[derive(Deserialize)]
struct ErrorBody {
    kind: String,
    value: String,
}

/// A FleetLock client for one node in one group.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    pre_reboot: String,
    steady_state: String,
    body: Vec<u8>,
}

impl Client {
    /// A client for the server at `base` (`http(s)://host[:port][/prefix]`), as node `id` in
    /// `group`. `ca_pem`: trust only this CA bundle instead of the system roots. Pure apart
    /// from parsing PEM data.
    pub fn new(
        base: &str,
        id: &str,
        group: &str,
        ca_pem: Option<&[u8]>,
    ) -> Result<Client, FleetLockError> {
        if id.is_empty() {
            return Err(FleetLockError::Identity("id"));
        }
        if group.is_empty() {
            return Err(FleetLockError::Identity("group"));
        }
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .user_agent(concat!("bosun/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| FleetLockError::Ca(format!("not a PEM certificate bundle: {e}")))?;
            if certs.is_empty() {
                return Err(FleetLockError::Ca("no certificate found".into()));
            }
            builder = builder.tls_built_in_root_certs(false);
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        let http = builder
            .build()
            .map_err(|e| FleetLockError::Ca(e.to_string()))?;
        let body = serde_json::to_vec(&Body {
            client_params: ClientParams { id, group },
        })
        .unwrap_or_default();
        Ok(Client {
            http,
            pre_reboot: endpoint(base, PRE_REBOOT)?,
            steady_state: endpoint(base, STEADY_STATE)?,
            body,
        })
    }

    /// Asks for a reboot slot (`/v1/pre-reboot`). Network: one request.
    pub async fn pre_reboot(&self) -> Result<Answer, FleetLockError> {
        self.post(&self.pre_reboot).await
    }

    /// Gives the slot back (`/v1/steady-state`). Network: one request.
    pub async fn steady_state(&self) -> Result<Answer, FleetLockError> {
        self.post(&self.steady_state).await
    }

    /// The full URLs of the two calls (pre-reboot, steady-state).
    pub fn urls(&self) -> (&str, &str) {
        (&self.pre_reboot, &self.steady_state)
    }

    async fn post(&self, url: &str) -> Result<Answer, FleetLockError> {
        let transport = |e: reqwest::Error| FleetLockError::Transport {
            url: url.to_string(),
            message: if e.is_timeout() {
                format!("timed out (connect {CONNECT_TIMEOUT:?}, request {REQUEST_TIMEOUT:?})")
            } else {
                error_chain(&e)
            },
        };
        let mut resp = self
            .http
            .post(url)
            .header("fleet-lock-protocol", "true")
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(self.body.clone())
            .send()
            .await
            .map_err(transport)?;
        let status = resp.status().as_u16();
        let mut bytes = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(transport)? {
            let room = MAX_BODY_BYTES.saturating_sub(bytes.len());
            bytes.extend_from_slice(&chunk[..chunk.len().min(room)]);
        }
        Ok(answer(status, &bytes))
    }
}

/// The answer a status and body mean. Pure.
pub fn answer(status: u16, body: &[u8]) -> Answer {
    if status == 200 {
        return Answer::Granted;
    }
    let (kind, message) = match serde_json::from_slice::<ErrorBody>(body) {
        Ok(e) => (Some(e.kind), e.value),
        Err(_) => (
            None,
            String::from_utf8_lossy(body)
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .chars()
                .take(300)
                .collect(),
        ),
    };
    Answer::NotYet(Refusal {
        status,
        kind,
        message,
    })
}

/// `base` with `path` appended to its own path (never replacing its last segment, as a
/// relative URL join would). Pure.
pub fn endpoint(base: &str, path: &str) -> Result<String, FleetLockError> {
    let bad = |reason: &str| FleetLockError::Url {
        url: base.to_string(),
        reason: reason.to_string(),
    };
    let url = url::Url::parse(base).map_err(|e| bad(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("expected an http:// or https:// URL"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad(
            "a query or fragment cannot be combined with the FleetLock paths",
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("credentials in the URL are not supported"));
    }
    let mut joined = url;
    let prefix = joined.path().trim_end_matches('/').to_string();
    joined.set_path(&format!("{prefix}{path}"));
    Ok(joined.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_keeps_the_base_path() {
        let e = |b| endpoint(b, PRE_REBOOT).unwrap();
        assert_eq!(e("https://h"), "https://h/v1/pre-reboot");
        assert_eq!(e("https://h/"), "https://h/v1/pre-reboot");
        assert_eq!(e("https://h/prefix"), "https://h/prefix/v1/pre-reboot");
        assert_eq!(e("https://h:8443/a/b/"), "https://h:8443/a/b/v1/pre-reboot");
        assert_eq!(
            endpoint("http://127.0.0.1:3333/x", STEADY_STATE).unwrap(),
            "http://127.0.0.1:3333/x/v1/steady-state"
        );
        for bad in ["h/prefix", "ftp://h", "https://h/?a=1", "https://u:p@h", ""] {
            assert!(
                matches!(endpoint(bad, PRE_REBOOT), Err(FleetLockError::Url { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn only_200_is_granted_and_error_bodies_are_parsed() {
        assert_eq!(answer(200, b""), Answer::Granted);
        let Answer::NotYet(r) = answer(
            500,
            b"{\"kind\":\"failed_lock\",\"value\":\"all 1 semaphore slots currently locked\"}\n",
        ) else {
            panic!("500 granted")
        };
        assert_eq!(r.kind.as_deref(), Some("failed_lock"));
        assert_eq!(
            r.to_string(),
            "status 500 (failed_lock): all 1 semaphore slots currently locked"
        );
        for status in [201, 202, 204, 423, 503] {
            assert!(matches!(answer(status, b""), Answer::NotYet(_)), "{status}");
        }
        let Answer::NotYet(r) = answer(423, b"Locked\n  by n2") else {
            panic!()
        };
        assert_eq!((r.kind, r.message.as_str()), (None, "Locked by n2"));
    }

    #[test]
    fn identity_must_be_set() {
        assert!(matches!(
            Client::new("https://h", "", "g", None),
            Err(FleetLockError::Identity("id"))
        ));
        assert!(matches!(
            Client::new("https://h", "n", "", None),
            Err(FleetLockError::Identity("group"))
        ));
        let c = Client::new("https://h/p", "n", "g", None).unwrap();
        assert_eq!(
            c.urls(),
            ("https://h/p/v1/pre-reboot", "https://h/p/v1/steady-state")
        );
        assert_eq!(c.body, br#"{"client_params":{"id":"n","group":"g"}}"#);
    }
}
