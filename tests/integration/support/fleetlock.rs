//! A fake FleetLock server on 127.0.0.1 (plain HTTP, random port) that replays how the three
//! known servers answer, so the client is tested against each dialect:
//!
//! - airlock (coreos/airlock): `500 {"kind":"failed_lock",…}` when the group is full; `200`
//!   on a re-lock by the holder and on the unlock of a slot not held; `400` without the
//!   `fleet-lock-protocol: true` header or with an unknown group;
//! - poseidon/fleetlock: `423 {"kind":"locked",…}` when held by another node, `200` else;
//! - heathcliff26/fleetlock: `202` while it drains the node (the first `drain_polls` calls of
//!   a new holder), `423 {"kind":"all_slots_full",…}` when full, `200 {"kind":"success",…}`.
//!
//! The semaphore is real (a set of holders per group with `slots` places); the server can be
//! mounted under a path prefix, as behind a reverse proxy. Every request is logged.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use serde_json::{json, Value};

use super::tls::{serve_http, TestServer};

/// Which server's answers to replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Airlock,
    Poseidon,
    Heathcliff,
}

/// One logged request: (path, id, group, status).
pub type Logged = (String, String, String, u16);

#[derive(Debug, Default)]
struct Lock {
    holders: BTreeMap<String, Vec<String>>,
    /// Heathcliff: drain polls left per (group, id) before the slot is granted.
    draining: BTreeMap<(String, String), u32>,
    log: Vec<Logged>,
}

struct Config {
    dialect: Dialect,
    slots: usize,
    groups: Vec<String>,
    prefix: String,
    drain_polls: u32,
}

/// A running fake FleetLock server.
pub struct FleetLockServer {
    pub server: TestServer,
    state: Arc<(Config, Mutex<Lock>)>,
}

impl FleetLockServer {
    /// Starts a `dialect` server with `slots` per group for `groups`, under path `prefix`
    /// (`""` or `/something`). Heathcliff drains for `drain_polls` calls.
    pub async fn start(
        dialect: Dialect,
        slots: usize,
        groups: &[&str],
        prefix: &str,
        drain_polls: u32,
    ) -> FleetLockServer {
        let cfg = Config {
            dialect,
            slots,
            groups: groups.iter().map(|g| g.to_string()).collect(),
            prefix: prefix.to_string(),
            drain_polls,
        };
        let state = Arc::new((cfg, Mutex::new(Lock::default())));
        let router = axum::Router::new()
            .fallback(handle)
            .with_state(state.clone());
        FleetLockServer {
            server: serve_http(router).await,
            state,
        }
    }

    /// The base URL clients are configured with (including the prefix).
    pub fn base(&self) -> String {
        format!("{}{}", self.server.base(), self.state.0.prefix)
    }

    /// The holders of `group`.
    pub fn holders(&self, group: &str) -> Vec<String> {
        self.state
            .1
            .lock()
            .unwrap()
            .holders
            .get(group)
            .cloned()
            .unwrap_or_default()
    }

    /// Every request so far.
    pub fn log(&self) -> Vec<Logged> {
        self.state.1.lock().unwrap().log.clone()
    }
}

fn reply(status: StatusCode, kind: &str, value: &str) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(
            json!({"kind": kind, "value": value}).to_string() + "\n",
        ))
        .unwrap()
}

fn ok(dialect: Dialect) -> Response {
    match dialect {
        // airlock and poseidon answer 200 with an empty body.
        Dialect::Airlock | Dialect::Poseidon => Response::builder()
            .status(StatusCode::OK)
            .body(Body::empty())
            .unwrap(),
        Dialect::Heathcliff => reply(StatusCode::OK, "success", "The operation was succesfull"),
    }
}

async fn handle(
    State(st): State<Arc<(Config, Mutex<Lock>)>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (cfg, lock) = &*st;
    let path = uri
        .path()
        .strip_prefix(cfg.prefix.as_str())
        .unwrap_or("")
        .to_string();
    let params: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let id = params["client_params"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let group = params["client_params"]["group"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let resp = answer(
        cfg,
        &mut lock.lock().unwrap(),
        &method,
        &path,
        &headers,
        &params,
        &id,
        &group,
    );
    lock.lock()
        .unwrap()
        .log
        .push((path, id, group, resp.status().as_u16()));
    resp
}

#[allow(clippy::too_many_arguments)]
fn answer(
    cfg: &Config,
    st: &mut Lock,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    params: &Value,
    id: &str,
    group: &str,
) -> Response {
    let d = cfg.dialect;
    if path != "/v1/pre-reboot" && path != "/v1/steady-state" {
        return reply(
            StatusCode::NOT_FOUND,
            "not_found",
            "The requested url is not found on this server",
        );
    }
    if method != Method::POST {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "required method POST",
        );
    }
    if headers
        .get("fleet-lock-protocol")
        .and_then(|v| v.to_str().ok())
        != Some("true")
    {
        return reply(
            StatusCode::BAD_REQUEST,
            "invalid_client_identity",
            "failed to validate client identity: wrong 'fleet-lock-protocol' header",
        );
    }
    if params.is_null() || id.is_empty() || group.is_empty() {
        return reply(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "The request json could not be parsed",
        );
    }
    if d == Dialect::Airlock && !cfg.groups.iter().any(|g| g == group) {
        return reply(
            StatusCode::BAD_REQUEST,
            "unknown_group",
            &format!("unknown group {group:?}"),
        );
    }
    let holders = st.holders.entry(group.to_string()).or_default();
    if path == "/v1/steady-state" {
        holders.retain(|h| h != id);
        st.draining.remove(&(group.to_string(), id.to_string()));
        return ok(d);
    }
    if holders.iter().any(|h| h == id) {
        if d == Dialect::Heathcliff {
            let left = st
                .draining
                .entry((group.to_string(), id.to_string()))
                .or_insert(0);
            if *left > 0 {
                *left -= 1;
                return reply(StatusCode::ACCEPTED, "waiting", "The node is being drained");
            }
        }
        return ok(d);
    }
    if holders.len() >= cfg.slots {
        return match d {
            Dialect::Airlock => reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "failed_lock",
                &format!("all {} semaphore slots currently locked", cfg.slots),
            ),
            Dialect::Poseidon => reply(
                StatusCode::LOCKED,
                "locked",
                "fleetlock is held by another node",
            ),
            Dialect::Heathcliff => reply(
                StatusCode::LOCKED,
                "all_slots_full",
                "Could not reserve a slot as all slots in the group are currently locked already",
            ),
        };
    }
    holders.push(id.to_string());
    if d == Dialect::Heathcliff && cfg.drain_polls > 0 {
        st.draining
            .insert((group.to_string(), id.to_string()), cfg.drain_polls - 1);
        return reply(StatusCode::ACCEPTED, "waiting", "The node is being drained");
    }
    ok(d)
}
