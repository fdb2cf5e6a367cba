//! The Kubernetes objects bosun reads and writes, with only the fields it uses (serde).
//! Unknown fields are ignored when reading, so a newer API server's extra fields cost nothing.
//!
//! Invariant: a [`Lease`] written back with `PUT` carries everything bosun put into it; bosun
//! owns its `bosun-*` Leases, so dropping fields it does not model loses nothing.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// `metadata` of an object (the fields bosun uses).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ObjectMeta {
    /// Object name.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Namespace (namespaced objects only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Server-assigned unique id (changes when an object is deleted and re-created).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// Optimistic-concurrency token: an update carrying an older one answers 409.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    /// Labels.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Owners (a pod's ReplicaSet or DaemonSet).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub owner_references: Vec<OwnerReference>,
}

/// One `metadata.ownerReferences` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct OwnerReference {
    /// API version of the owner (`apps/v1`).
    pub api_version: String,
    /// Kind of the owner (`DaemonSet`, `ReplicaSet`).
    pub kind: String,
    /// Name of the owner.
    pub name: String,
    /// Owner uid.
    pub uid: String,
    /// Whether this owner is the managing controller.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub controller: Option<bool>,
}

/// A `coordination.k8s.io/v1` Lease: one slot of bosun's per-group semaphore.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Lease {
    /// Always `coordination.k8s.io/v1` when sent.
    pub api_version: String,
    /// Always `Lease` when sent.
    pub kind: String,
    /// Name, namespace, uid, resourceVersion.
    pub metadata: ObjectMeta,
    /// Holder and times.
    pub spec: LeaseSpec,
}

/// `spec` of a [`Lease`]. Times are informational for people (`kubectl get lease -o yaml`);
/// bosun never compares a remote time with its own clock.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LeaseSpec {
    /// The node holding the slot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub holder_identity: Option<String>,
    /// How long the holder may go without renewing before others may break the slot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_duration_seconds: Option<i64>,
    /// RFC 3339 time with microseconds ([`micro_time`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acquire_time: Option<String>,
    /// RFC 3339 time with microseconds ([`micro_time`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub renew_time: Option<String>,
    /// How many times the slot changed holder.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_transitions: Option<i64>,
}

impl Lease {
    /// A new Lease `name` in `namespace` (no resourceVersion: for create).
    pub fn new(namespace: &str, name: &str, spec: LeaseSpec) -> Lease {
        Lease {
            api_version: "coordination.k8s.io/v1".into(),
            kind: "Lease".into(),
            metadata: ObjectMeta {
                name: name.into(),
                namespace: Some(namespace.into()),
                ..ObjectMeta::default()
            },
            spec,
        }
    }

    /// The holder, when the lease names one (an empty holder means free).
    pub fn holder(&self) -> Option<&str> {
        self.spec
            .holder_identity
            .as_deref()
            .filter(|h| !h.is_empty())
    }
}

/// A Node (the fields bosun uses: labels, annotations, `spec.unschedulable`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Node {
    /// Name, labels, annotations.
    pub metadata: ObjectMeta,
    /// `spec.unschedulable`.
    pub spec: NodeSpec,
}

/// `spec` of a [`Node`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct NodeSpec {
    /// Cordoned.
    pub unschedulable: bool,
}

/// A JSON merge patch of a Node: labels and annotations to set (`Some`) or remove (`None`),
/// and the cordon flag. Keys not named are left alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodePatch {
    /// Labels to set or (with `None`) remove.
    pub labels: BTreeMap<String, Option<String>>,
    /// Annotations to set or (with `None`) remove.
    pub annotations: BTreeMap<String, Option<String>>,
    /// `spec.unschedulable`, when it should change.
    pub unschedulable: Option<bool>,
}

impl NodePatch {
    /// A patch that only cordons (`true`) or uncordons (`false`).
    pub fn unschedulable(value: bool) -> NodePatch {
        NodePatch {
            unschedulable: Some(value),
            ..NodePatch::default()
        }
    }

    /// The `application/merge-patch+json` document (RFC 7386: `null` removes a key). Pure.
    pub fn to_json(&self) -> serde_json::Value {
        let mut metadata = serde_json::Map::new();
        for (field, map) in [("labels", &self.labels), ("annotations", &self.annotations)] {
            if !map.is_empty() {
                metadata.insert(field.into(), serde_json::to_value(map).unwrap_or_default());
            }
        }
        let mut doc = serde_json::Map::new();
        if !metadata.is_empty() {
            doc.insert("metadata".into(), metadata.into());
        }
        if let Some(u) = self.unschedulable {
            doc.insert("spec".into(), serde_json::json!({ "unschedulable": u }));
        }
        doc.into()
    }
}

/// A list answer (`NodeList`, `PodList`): only the items.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct List<T> {
    /// The objects.
    pub items: Vec<T>,
}

/// A Pod (the fields a drain needs).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Pod {
    /// Name, namespace, uid, annotations, owners.
    pub metadata: ObjectMeta,
    /// `status.phase`.
    pub status: PodStatus,
}

/// `status` of a [`Pod`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PodStatus {
    /// `Pending`, `Running`, `Succeeded`, `Failed`, `Unknown`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub phase: String,
}

/// The annotation the kubelet puts on mirror pods of static manifests.
pub const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

impl Pod {
    /// A mirror pod (a static pod's API copy): evicting it does nothing, kubectl skips it.
    pub fn is_mirror(&self) -> bool {
        self.metadata.annotations.contains_key(MIRROR_ANNOTATION)
    }

    /// Managed by a DaemonSet: it would be re-created on the node at once, kubectl's
    /// `--ignore-daemonsets` skips it.
    pub fn is_daemonset_pod(&self) -> bool {
        self.metadata
            .owner_references
            .iter()
            .any(|o| o.kind == "DaemonSet" && o.controller == Some(true))
    }

    /// Whether a drain evicts this pod: everything but mirror and DaemonSet pods.
    pub fn needs_eviction(&self) -> bool {
        !self.is_mirror() && !self.is_daemonset_pod()
    }
}

/// A `policy/v1` Eviction of one pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Eviction {
    /// `policy/v1`.
    pub api_version: &'static str,
    /// `Eviction`.
    pub kind: &'static str,
    /// The pod's name and namespace.
    pub metadata: ObjectMeta,
}

impl Eviction {
    /// The eviction of pod `namespace/name`.
    pub fn of(namespace: &str, name: &str) -> Eviction {
        Eviction {
            api_version: "policy/v1",
            kind: "Eviction",
            metadata: ObjectMeta {
                name: name.into(),
                namespace: Some(namespace.into()),
                ..ObjectMeta::default()
            },
        }
    }
}

/// `metav1.MicroTime` text of `t`: RFC 3339 in UTC with six fractional digits
/// (`2024-05-01T02:03:04.000005Z`). Pure.
pub fn micro_time(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (y, m, day) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_micros()
    )
}

/// (year, month, day) of a day count since 1970-01-01 (proleptic Gregorian; H. Hinnant's
/// algorithm). Pure.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn micro_time_is_rfc3339_utc_with_microseconds() {
        assert_eq!(micro_time(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        let t = UNIX_EPOCH + Duration::from_micros(1_709_251_199_123_456);
        // 2024 is a leap year: 29 February exists.
        assert_eq!(micro_time(t), "2024-02-29T23:59:59.123456Z");
        assert_eq!(
            micro_time(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00.000000Z"
        );
    }

    #[test]
    fn node_patch_is_a_merge_patch_with_null_removals() {
        let mut p = NodePatch::unschedulable(true);
        p.labels
            .insert("bosun.dev/state".into(), Some("draining".into()));
        p.labels.insert("bosun.dev/failed".into(), None);
        assert_eq!(
            p.to_json(),
            serde_json::json!({
                "metadata": {"labels": {"bosun.dev/failed": null, "bosun.dev/state": "draining"}},
                "spec": {"unschedulable": true}
            })
        );
        assert_eq!(NodePatch::default().to_json(), serde_json::json!({}));
    }

    #[test]
    fn pods_skipped_by_a_drain() {
        let mut p: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-1", "namespace": "default", "uid": "u1",
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web", "uid": "r", "controller": true}]},
            "spec": {"nodeName": "n1", "containers": []},
            "status": {"phase": "Running"}
        }))
        .unwrap();
        assert!(p.needs_eviction());
        p.metadata.owner_references[0].kind = "DaemonSet".into();
        assert!(p.is_daemonset_pod() && !p.needs_eviction());
        p.metadata.owner_references.clear();
        p.metadata
            .annotations
            .insert(MIRROR_ANNOTATION.into(), "hash".into());
        assert!(p.is_mirror() && !p.needs_eviction());
    }

    #[test]
    fn lease_round_trips_and_skips_unset_fields() {
        let l = Lease::new(
            "kube-system",
            "bosun-default-0",
            LeaseSpec {
                holder_identity: Some("n1".into()),
                lease_duration_seconds: Some(3600),
                ..LeaseSpec::default()
            },
        );
        let v = serde_json::to_value(&l).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": "bosun-default-0", "namespace": "kube-system"},
                "spec": {"holderIdentity": "n1", "leaseDurationSeconds": 3600}
            })
        );
        let back: Lease = serde_json::from_value(v).unwrap();
        assert_eq!(back, l);
        assert_eq!(back.holder(), Some("n1"));
    }
}
