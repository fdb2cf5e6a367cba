//! One `health.checks` entry: its `type` decides which keys it takes (a key of another type is
//! an error, not ignored) and which of them are required.
//!
//! | type         | keys                           | required |
//! |--------------|--------------------------------|----------|
//! | `unit`       | `name`                         | `name`   |
//! | `kubelet`    | `url`                          |          |
//! | `apiserver`  | `kubeconfig`, `url`            |          |
//! | `node_ready` | `kubeconfig`, `node`           |          |
//! | `http`       | `url`, `ca`, `status`, `body`  | `url`    |
//! | `command`    | `argv`                         | `argv`   |

use super::tree::{join, list, parse_uint, text};
use super::{Cx, Reported};
use crate::config::model::HealthCheck;
use crate::config::yaml::Node;

/// Kubelet health endpoint a `kubelet` check uses without `url`.
const DEFAULT_KUBELET_URL: &str = "http://127.0.0.1:10248/healthz";
/// Kubeconfig `apiserver` and `node_ready` checks use without `kubeconfig`.
const DEFAULT_KUBECONFIG: &str = "/etc/rancher/k3s/k3s.yaml";
const TYPES: &str = "unit, kubelet, apiserver, node_ready, http, command";

/// Converts check `it` (field name `field`, e.g. `health.checks[0]`). Every problem is
/// reported, including keys of another check type, before the check is left out.
pub(super) fn check(cx: &mut Cx, it: &Node, field: &str) -> Option<HealthCheck> {
    let Some(tn) = it.get("type") else {
        cx.err(
            &it.pos,
            &join(field, "type"),
            format!("missing; expected one of {TYPES}"),
        );
        return None;
    };
    let ty = text(tn).unwrap_or_default();
    let Some(allowed) = keys_of(&ty) else {
        let msg = format!("{ty:?}; expected one of {TYPES}");
        cx.err(&tn.pos, &join(field, "type"), msg);
        return None;
    };
    let keys = only_keys(cx, it, field, &ty, allowed);
    let built = build(cx, it, field, &ty);
    keys.ok().and(built.ok())
}

/// The keys (besides `type`) a check of type `ty` takes; `None` for an unknown type.
fn keys_of(ty: &str) -> Option<&'static [&'static str]> {
    Some(match ty {
        "unit" => &["name"],
        "kubelet" => &["url"],
        "apiserver" => &["kubeconfig", "url"],
        "node_ready" => &["kubeconfig", "node"],
        "http" => &["url", "ca", "status", "body"],
        "command" => &["argv"],
        _ => return None,
    })
}

/// Reports every key of `it` that a `ty` check does not take.
fn only_keys(
    cx: &mut Cx,
    it: &Node,
    field: &str,
    ty: &str,
    allowed: &[&str],
) -> Result<(), Reported> {
    let mut ok = Ok(());
    for e in it.as_map().unwrap_or_default() {
        if e.key != "type" && !allowed.contains(&e.key.as_str()) {
            cx.err(
                &e.key_pos,
                &join(field, &e.key),
                format!(
                    "does not apply to a {ty} check; it takes: {}",
                    allowed.join(", ")
                ),
            );
            ok = Err(Reported);
        }
    }
    ok
}

/// The check of known type `ty` from its keys.
fn build(cx: &mut Cx, it: &Node, field: &str, ty: &str) -> Result<HealthCheck, Reported> {
    let s = |k: &str| it.get(k).and_then(text);
    let kubeconfig = s("kubeconfig").unwrap_or_else(|| DEFAULT_KUBECONFIG.into());
    Ok(match ty {
        "unit" => match s("name") {
            Some(name) if name.contains(char::is_control) => {
                let msg = format!("{name:?} contains a control character; expected a unit name");
                cx.err(&it.pos, &join(field, "name"), msg);
                return Err(Reported);
            }
            Some(name) if !name.is_empty() => HealthCheck::Unit { name },
            _ => {
                cx.err(
                    &it.pos,
                    &join(field, "name"),
                    "missing; a unit check needs the unit name",
                );
                return Err(Reported);
            }
        },
        "kubelet" => HealthCheck::Kubelet {
            url: url(cx, it, field)?.unwrap_or_else(|| DEFAULT_KUBELET_URL.into()),
        },
        "apiserver" => HealthCheck::Apiserver {
            kubeconfig,
            url: url(cx, it, field)?,
        },
        "node_ready" => HealthCheck::NodeReady {
            kubeconfig,
            node: s("node"),
        },
        "http" => http(cx, it, field)?,
        _ => command(cx, it, field)?,
    })
}

/// The check's `url`, if given: an http(s) URL (any host: checks may probe remote endpoints).
fn url(cx: &mut Cx, it: &Node, field: &str) -> Result<Option<String>, Reported> {
    let Some(n) = it.get("url") else {
        return Ok(None);
    };
    let u = text(n).unwrap_or_default();
    match reqwest::Url::parse(&u) {
        Ok(p) if matches!(p.scheme(), "http" | "https") && !u.contains(char::is_control) => {
            Ok(Some(u))
        }
        _ => {
            let msg = format!("{u:?} is not an http(s) URL");
            cx.err(&n.pos, &join(field, "url"), msg);
            Err(Reported)
        }
    }
}

/// An `http` check: `url` required, `status` 100 to 599 (default 200), optional `ca` and `body`.
/// Both a bad url and a bad status are reported.
fn http(cx: &mut Cx, it: &Node, field: &str) -> Result<HealthCheck, Reported> {
    let url = match url(cx, it, field) {
        Ok(Some(u)) => Ok(u),
        Ok(None) => {
            let msg = "missing; a http check needs a url";
            cx.err(&it.pos, &join(field, "url"), msg);
            Err(Reported)
        }
        Err(r) => Err(r),
    };
    let status = match it.get("status") {
        None => Ok(200),
        Some(n) => match parse_uint(n) {
            Ok(v @ 100..=599) => Ok(v as u16),
            _ => {
                cx.err(
                    &n.pos,
                    &join(field, "status"),
                    "expected an HTTP status code from 100 to 599",
                );
                Err(Reported)
            }
        },
    };
    Ok(HealthCheck::Http {
        url: url?,
        ca: it.get("ca").and_then(text),
        status: status?,
        body: it.get("body").and_then(text),
    })
}

/// A `command` check: `argv` is a non-empty list, the program first.
fn command(cx: &mut Cx, it: &Node, field: &str) -> Result<HealthCheck, Reported> {
    let argv: Vec<String> = list(it.get("argv")).into_iter().map(|(a, _)| a).collect();
    if argv.is_empty() {
        cx.err(
            &it.pos,
            &join(field, "argv"),
            "missing; a command check needs argv: [program, args…]",
        );
        return Err(Reported);
    }
    if argv.iter().any(|a| a.contains('\0')) {
        let msg = "an argument contains a NUL byte, which no command line can carry";
        cx.err(&it.pos, &join(field, "argv"), msg);
        return Err(Reported);
    }
    Ok(HealthCheck::Command { argv })
}
