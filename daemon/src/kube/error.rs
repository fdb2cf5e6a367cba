//! Typed errors of the Kubernetes client: the answers bosun decides on (not found, already
//! exists, conflict, too many requests) are variants of their own; any other failure status
//! keeps the API server's `Status` message. Every error names the request (method and path,
//! never a token).

use serde::Deserialize;

use crate::health::KubeconfigError;

/// A failed Kubernetes API call.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// The kubeconfig could not be read or is unusable.
    #[error(transparent)]
    Kubeconfig(#[from] KubeconfigError),
    /// The HTTPS client could not be set up from the kubeconfig.
    #[error("kubeconfig {path}: cannot set up the HTTPS client: {message}")]
    Client {
        /// The kubeconfig path.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// A name that would change the request path (not a DNS subdomain).
    #[error("{what} {name:?} is not a valid Kubernetes object name")]
    InvalidName {
        /// What the name is of (`node`, `lease`, `namespace`, `pod`).
        what: &'static str,
        /// The refused name.
        name: String,
    },
    /// No answer: connection refused, TLS failure, timeout, cut body.
    #[error("{request}: {message}")]
    Transport {
        /// `METHOD /path`.
        request: String,
        /// The cause, with the timeouts when it timed out.
        message: String,
    },
    /// 404: the object does not exist.
    #[error("{request}: not found: {message}")]
    NotFound {
        /// `METHOD /path`.
        request: String,
        /// The server's `Status` message.
        message: String,
    },
    /// 409 with reason `AlreadyExists`: a create lost to an existing object.
    #[error("{request}: already exists: {message}")]
    AlreadyExists {
        /// `METHOD /path`.
        request: String,
        /// The server's `Status` message.
        message: String,
    },
    /// 409 otherwise: the object changed since the `resourceVersion` sent (or a precondition
    /// failed).
    #[error("{request}: conflict: {message}")]
    Conflict {
        /// `METHOD /path`.
        request: String,
        /// The server's `Status` message.
        message: String,
    },
    /// 429: refused for now; for an eviction, a PodDisruptionBudget forbids it.
    #[error("{request}: too many requests: {message}")]
    TooManyRequests {
        /// `METHOD /path`.
        request: String,
        /// The server's `Status` message (names the budget for evictions).
        message: String,
    },
    /// 401: the credentials were not accepted.
    #[error("{request}: unauthorized (check the kubeconfig credentials): {message}")]
    Unauthorized {
        /// `METHOD /path`.
        request: String,
        /// The server's `Status` message.
        message: String,
    },
    /// 403: the credentials lack a permission (see `deploy/rbac.yaml`).
    #[error(
        "{request}: forbidden (see deploy/rbac.yaml for the permissions bosun needs): {message}"
    )]
    Forbidden {
        /// `METHOD /path`.
        request: String,
        /// The server's `Status` message.
        message: String,
    },
    /// Any other failure status.
    #[error("{request}: status {code}{}: {message}", reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default())]
    Status {
        /// `METHOD /path`.
        request: String,
        /// The HTTP status code.
        code: u16,
        /// `Status.reason`, when the body was a `Status`.
        reason: Option<String>,
        /// `Status.message`, else the start of the body.
        message: String,
    },
    /// A success answer whose body is not the expected object, or is too large.
    #[error("{request}: unexpected response: {message}")]
    Decode {
        /// `METHOD /path`.
        request: String,
        /// What did not match.
        message: String,
    },
}

impl KubeError {
    /// Whether this is a 404.
    pub fn is_not_found(&self) -> bool {
        matches!(self, KubeError::NotFound { .. })
    }
}

/// The `metav1.Status` body of a failure answer (only the fields bosun reads).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Status {
    kind: String,
    message: String,
    reason: String,
}

/// Maps a failure answer (`code` not 2xx) to its [`KubeError`]. Pure.
pub(super) fn from_status(request: String, code: u16, body: &[u8]) -> KubeError {
    let status: Option<Status> = serde_json::from_slice::<Status>(body)
        .ok()
        .filter(|s| s.kind == "Status");
    let (reason, message) = match status {
        Some(s) => ((!s.reason.is_empty()).then_some(s.reason), s.message),
        None => (None, snippet(body)),
    };
    match (code, reason.as_deref()) {
        (404, _) => KubeError::NotFound { request, message },
        (409, Some("AlreadyExists")) => KubeError::AlreadyExists { request, message },
        (409, _) => KubeError::Conflict { request, message },
        (429, _) => KubeError::TooManyRequests { request, message },
        (401, _) => KubeError::Unauthorized { request, message },
        (403, _) => KubeError::Forbidden { request, message },
        _ => KubeError::Status {
            request,
            code,
            reason,
            message,
        },
    }
}

/// At most 300 characters of `bytes` on one line, for messages.
fn snippet(bytes: &[u8]) -> String {
    const MAX: usize = 300;
    let text = String::from_utf8_lossy(bytes);
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() > MAX {
        format!("{}...", line.chars().take(MAX).collect::<String>())
    } else {
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16, reason: &str, message: &str) -> Vec<u8> {
        serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn status_answers_map_to_their_variants() {
        let r = || "POST /x".to_string();
        let e = from_status(
            r(),
            409,
            &status(409, "AlreadyExists", "leases \"a\" already exists"),
        );
        assert!(
            matches!(&e, KubeError::AlreadyExists { message, .. } if message.contains("already exists")),
            "{e}"
        );
        let e = from_status(
            r(),
            409,
            &status(409, "Conflict", "the object has been modified"),
        );
        assert!(matches!(e, KubeError::Conflict { .. }), "{e}");
        let e = from_status(
            r(),
            429,
            &status(
                429,
                "TooManyRequests",
                "Cannot evict pod as it would violate the pod's disruption budget.",
            ),
        );
        assert!(
            matches!(&e, KubeError::TooManyRequests { message, .. } if message.contains("disruption budget")),
            "{e}"
        );
        assert!(from_status(r(), 404, &status(404, "NotFound", "x")).is_not_found());
        assert!(matches!(
            from_status(r(), 401, b"Unauthorized"),
            KubeError::Unauthorized { .. }
        ));
        assert!(matches!(
            from_status(r(), 403, &status(403, "Forbidden", "no")),
            KubeError::Forbidden { .. }
        ));
        let e = from_status(
            r(),
            422,
            &status(422, "Invalid", "spec.holderIdentity: Invalid value"),
        );
        assert_eq!(
            e.to_string(),
            "POST /x: status 422 (Invalid): spec.holderIdentity: Invalid value"
        );
        // Not a Status body: the start of the body is the message.
        let e = from_status(r(), 500, b"<html>\n  oops\n</html>");
        assert_eq!(e.to_string(), "POST /x: status 500: <html> oops </html>");
    }
}
