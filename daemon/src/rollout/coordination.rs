//! The `coordination:` section of the local agent config: where the node's rollout locks live
//! and how the node reaches its cluster. Credentials never come from Git: this is the agent
//! config (`/etc/bosun/agent.yaml`), next to the other trust roots.
//!
//! ```yaml
//! coordination:
//!   backend: kubernetes        # kubernetes | fleetlock | none (default)
//!   kubeconfig: /etc/bosun/kubeconfig   # kubernetes: Leases, drains, Node labels;
//!                                       # fleetlock: optional, for drains and labels
//!   namespace: kube-system     # where the Leases live
//!   fleetlock_url: https://airlock.example:3333/prefix
//!   fleetlock_ca: /etc/bosun/fleetlock-ca.pem
//!   id: edge-01                # FleetLock id; default the node name
//! ```

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Where the rollout locks live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// No lock: waves and windows still gate, nothing is locked or drained.
    #[default]
    None,
    /// `coordination.k8s.io/v1` Leases in the node's own cluster.
    Kubernetes,
    /// A FleetLock server (airlock, poseidon/fleetlock, heathcliff26/fleetlock).
    Fleetlock,
}

/// The section as written (every key optional; later files override earlier ones key by key).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CoordinationSection {
    /// `kubernetes`, `fleetlock` or `none` (default).
    pub backend: Option<BackendKind>,
    /// Kubeconfig of the node's cluster (node path). Required with `kubernetes`; with
    /// `fleetlock` it enables drains, failure marks and Node labels.
    pub kubeconfig: Option<String>,
    /// Namespace of the Leases. Default `kube-system`.
    pub namespace: Option<String>,
    /// FleetLock server base URL (its path is kept). Required with `fleetlock`.
    pub fleetlock_url: Option<String>,
    /// PEM CA bundle for the FleetLock server (node path). Default: the system roots.
    pub fleetlock_ca: Option<PathBuf>,
    /// FleetLock client id. Default: the node name.
    pub id: Option<String>,
}

impl CoordinationSection {
    /// `later` overrides this section key by key (pure).
    pub fn merge(&mut self, later: CoordinationSection) {
        macro_rules! take {
            ($($f:ident),*) => { $( if later.$f.is_some() { self.$f = later.$f; } )* };
        }
        take!(
            backend,
            kubeconfig,
            namespace,
            fleetlock_url,
            fleetlock_ca,
            id
        );
    }
}

/// Default namespace of the Leases.
pub const DEFAULT_NAMESPACE: &str = "kube-system";

/// The validated section.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CoordinationConfig {
    /// Where the locks live.
    pub backend: BackendKind,
    /// Kubeconfig (node path), when the cluster is reachable.
    pub kubeconfig: Option<String>,
    /// Namespace of the Leases.
    pub namespace: String,
    /// FleetLock base URL (with `fleetlock`).
    pub fleetlock_url: Option<String>,
    /// FleetLock CA bundle.
    pub fleetlock_ca: Option<PathBuf>,
    /// FleetLock id.
    pub id: String,
}

/// Validates `s` for node `node_name` (pure); the error names the key and says what was
/// expected.
pub fn validate(
    s: &CoordinationSection,
    node_name: &str,
) -> Result<CoordinationConfig, (&'static str, String)> {
    let backend = s.backend.unwrap_or_default();
    match backend {
        BackendKind::Kubernetes if s.kubeconfig.is_none() => {
            return Err((
                "coordination.kubeconfig",
                "required with backend kubernetes (the k3s admin kubeconfig /etc/rancher/k3s/k3s.yaml works on servers)".into(),
            ))
        }
        BackendKind::Fleetlock => match &s.fleetlock_url {
            None => {
                return Err((
                    "coordination.fleetlock_url",
                    "required with backend fleetlock".into(),
                ))
            }
            Some(u) => {
                let ok = url::Url::parse(u)
                    .ok()
                    .is_some_and(|p| crate::netpolicy::transport_allowed(&p));
                if !ok {
                    return Err((
                        "coordination.fleetlock_url",
                        format!("{u:?}: expected an https:// URL (http:// only to a loopback host)"),
                    ));
                }
            }
        },
        _ => {}
    }
    let namespace = s
        .namespace
        .clone()
        .unwrap_or_else(|| DEFAULT_NAMESPACE.into());
    if crate::kube::check_name("namespace", &namespace).is_err() {
        return Err((
            "coordination.namespace",
            format!("{namespace:?}: expected a Kubernetes name (lowercase letters, digits, '-')"),
        ));
    }
    Ok(CoordinationConfig {
        backend,
        kubeconfig: s.kubeconfig.clone(),
        namespace,
        fleetlock_url: s.fleetlock_url.clone(),
        fleetlock_ca: s.fleetlock_ca.clone(),
        id: s.id.clone().unwrap_or_else(|| node_name.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_backend_needs_its_endpoint() {
        let none = validate(&CoordinationSection::default(), "n").unwrap();
        assert_eq!(none.backend, BackendKind::None);
        assert_eq!(none.namespace, "kube-system");
        assert_eq!(none.id, "n");
        let k = CoordinationSection {
            backend: Some(BackendKind::Kubernetes),
            ..Default::default()
        };
        assert_eq!(validate(&k, "n").unwrap_err().0, "coordination.kubeconfig");
        let f = CoordinationSection {
            backend: Some(BackendKind::Fleetlock),
            ..Default::default()
        };
        assert_eq!(
            validate(&f, "n").unwrap_err().0,
            "coordination.fleetlock_url"
        );
        let cleartext = CoordinationSection {
            fleetlock_url: Some("http://airlock.example/".into()),
            ..f.clone()
        };
        assert!(validate(&cleartext, "n")
            .unwrap_err()
            .1
            .contains("https://"));
        let local = CoordinationSection {
            fleetlock_url: Some("http://127.0.0.1:3333/x".into()),
            id: Some("box-7".into()),
            ..f
        };
        assert_eq!(validate(&local, "n").unwrap().id, "box-7");
        let bad_ns = CoordinationSection {
            namespace: Some("Kube System".into()),
            ..Default::default()
        };
        assert_eq!(
            validate(&bad_ns, "n").unwrap_err().0,
            "coordination.namespace"
        );
    }

    #[test]
    fn later_files_override_key_by_key() {
        let mut a = CoordinationSection {
            backend: Some(BackendKind::Kubernetes),
            kubeconfig: Some("/a".into()),
            ..Default::default()
        };
        a.merge(CoordinationSection {
            kubeconfig: Some("/b".into()),
            ..Default::default()
        });
        assert_eq!(a.backend, Some(BackendKind::Kubernetes));
        assert_eq!(a.kubeconfig.as_deref(), Some("/b"));
    }
}
