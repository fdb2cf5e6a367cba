//! bosun's Kubernetes client (`bosun::kube`) and Lease semaphore against the stand-in API
//! server (support/kube.rs: a real HTTPS server on 127.0.0.1 standing in for kube-apiserver,
//! which cannot run here, and itself checked with the real kubectl in tests/kubectl.rs).

use std::sync::Arc;
use std::time::Duration;

use bosun::kube::{Client, KubeError, Lease, LeaseSpec, NodePatch, Preconditions};
use bosun::rollout::lease_lock::{LeaseSemaphore, Take};
use bosun::testing::ManualClock;

use crate::support::kube::{Auth, KubeApi, Owner};

const NS: &str = "kube-system";

/// A client from a kubeconfig written under a fresh root, as a node reads it.
fn client(api: &KubeApi, token: Option<&str>) -> Client {
    let root = tempfile::tempdir().unwrap();
    let path = root.path().join("etc/bosun/kubeconfig");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, api.kubeconfig(token)).unwrap();
    Client::load(root.path(), "/etc/bosun/kubeconfig").unwrap()
}

fn lease(name: &str, holder: &str) -> Lease {
    Lease::new(
        NS,
        name,
        LeaseSpec {
            holder_identity: Some(holder.into()),
            ..LeaseSpec::default()
        },
    )
}

#[tokio::test]
async fn leases_have_resource_versions_conflicts_and_create_races() {
    let api = KubeApi::start(Auth::ClientCert).await;
    let c = client(&api, None);
    let created = c.create_lease(&lease("l1", "n1")).await.unwrap();
    let rv1 = created.metadata.resource_version.clone().unwrap();
    assert_eq!(created.holder(), Some("n1"));
    let e = c.create_lease(&lease("l1", "n2")).await.unwrap_err();
    assert!(matches!(e, KubeError::AlreadyExists { .. }), "{e}");

    // Two nodes create the same Lease at once: exactly one wins.
    let (la, lb) = (lease("race", "a"), lease("race", "b"));
    let (a, b) = tokio::join!(c.create_lease(&la), c.create_lease(&lb));
    assert_eq!(a.is_ok() as u8 + b.is_ok() as u8, 1, "{a:?} {b:?}");
    assert!(matches!(
        a.err().or(b.err()),
        Some(KubeError::AlreadyExists { .. })
    ));

    // Update with the current resourceVersion: accepted, the version moves on.
    let mut next = c.get_lease(NS, "l1").await.unwrap();
    next.spec.holder_identity = Some("n1-renewed".into());
    let updated = c.update_lease(&next).await.unwrap();
    let rv2 = updated.metadata.resource_version.clone().unwrap();
    assert_ne!(rv1, rv2);
    // The stale one: 409 Conflict.
    let e = c.update_lease(&next).await.unwrap_err();
    assert!(
        matches!(&e, KubeError::Conflict { message, .. } if message.contains("has been modified")),
        "{e}"
    );

    // Delete with stale preconditions: 409; with current ones: gone.
    let stale = Preconditions {
        uid: updated.metadata.uid.clone(),
        resource_version: Some(rv1),
    };
    let e = c.delete_lease(NS, "l1", &stale).await.unwrap_err();
    assert!(matches!(e, KubeError::Conflict { .. }), "{e}");
    let current = Preconditions {
        uid: updated.metadata.uid.clone(),
        resource_version: Some(rv2),
    };
    c.delete_lease(NS, "l1", &current).await.unwrap();
    assert!(c.get_lease(NS, "l1").await.unwrap_err().is_not_found());
    assert!(c
        .delete_lease(NS, "l1", &current)
        .await
        .unwrap_err()
        .is_not_found());
}

#[tokio::test]
async fn nodes_are_read_patched_and_listed_by_label() {
    let api = KubeApi::start(Auth::ClientCert).await;
    api.add_node("n1");
    api.add_node("n2");
    let c = client(&api, None);
    let n = c.get_node("n1").await.unwrap();
    assert!(!n.spec.unschedulable);
    let mut p = NodePatch::unschedulable(true);
    p.labels
        .insert("bosun.dev/state".into(), Some("draining".into()));
    p.labels
        .insert("bosun.dev/failed".into(), Some("abc1234".into()));
    p.annotations
        .insert("bosun.dev/last-error".into(), Some("readyz: 500".into()));
    let n = c.patch_node("n1", &p).await.unwrap();
    assert!(n.spec.unschedulable);
    assert_eq!(n.metadata.labels["bosun.dev/state"], "draining");
    assert_eq!(
        n.metadata.annotations["bosun.dev/last-error"],
        "readyz: 500"
    );
    // Labels kubelet set are untouched by a merge patch.
    assert_eq!(n.metadata.labels["kubernetes.io/hostname"], "n1");
    let failed = c.list_nodes("bosun.dev/failed=abc1234").await.unwrap();
    assert_eq!(
        failed
            .iter()
            .map(|n| n.metadata.name.as_str())
            .collect::<Vec<_>>(),
        ["n1"]
    );
    // Remove the label and uncordon.
    let mut p = NodePatch::unschedulable(false);
    p.labels.insert("bosun.dev/failed".into(), None);
    let n = c.patch_node("n1", &p).await.unwrap();
    assert!(!n.spec.unschedulable && !n.metadata.labels.contains_key("bosun.dev/failed"));
    assert!(c
        .list_nodes("bosun.dev/failed=abc1234")
        .await
        .unwrap()
        .is_empty());
    assert_eq!(c.list_nodes("").await.unwrap().len(), 2);
    assert!(c.get_node("n3").await.unwrap_err().is_not_found());
}

#[tokio::test]
async fn pods_on_a_node_and_evictions_through_a_disruption_budget() {
    let api = KubeApi::start(Auth::ClientCert).await;
    api.add_node("n1");
    api.add_pod(
        "default",
        "web-1",
        "n1",
        Owner::ReplicaSet,
        &[("app", "web")],
    );
    api.add_pod(
        "default",
        "web-2",
        "n2",
        Owner::ReplicaSet,
        &[("app", "web")],
    );
    api.add_pod("kube-system", "svclb", "n1", Owner::DaemonSet, &[]);
    api.add_pod("kube-system", "etcd-static", "n1", Owner::Mirror, &[]);
    api.set_pdb("default", "web", &[("app", "web")], 2);
    let c = client(&api, None);
    let pods = c.pods_on_node("n1").await.unwrap();
    let mut names: Vec<_> = pods.iter().map(|p| p.metadata.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["etcd-static", "svclb", "web-1"]);
    let to_evict: Vec<_> = pods
        .iter()
        .filter(|p| p.needs_eviction())
        .map(|p| p.metadata.name.as_str())
        .collect();
    assert_eq!(to_evict, ["web-1"]);

    let e = c.evict("default", "web-1").await.unwrap_err();
    assert!(
        matches!(&e, KubeError::TooManyRequests { message, .. } if message.contains("disruption budget")),
        "{e}"
    );
    api.set_pdb("default", "web", &[("app", "web")], 1);
    c.evict("default", "web-1").await.unwrap();
    // Gone at once (no eviction delay set).
    assert!(c
        .pods_on_node("n1")
        .await
        .unwrap()
        .iter()
        .all(|p| p.metadata.name != "web-1"));
    let e = c.evict("default", "web-1").await.unwrap_err();
    assert!(e.is_not_found(), "{e}");
    // Only evictions were used: no plain delete.
    assert!(api.log().iter().all(|l| l.method != "DELETE"));
}

#[tokio::test]
async fn evicted_pods_terminate_before_they_disappear() {
    let api = KubeApi::start(Auth::ClientCert).await;
    api.add_pod("default", "web-1", "n1", Owner::ReplicaSet, &[]);
    api.set_eviction_delay(Duration::from_millis(400));
    let c = client(&api, None);
    c.evict("default", "web-1").await.unwrap();
    assert_eq!(
        c.pods_on_node("n1").await.unwrap().len(),
        1,
        "still terminating"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(c.pods_on_node("n1").await.unwrap().is_empty());
}

#[tokio::test]
async fn tokens_are_checked_and_errors_are_typed() {
    let api = KubeApi::start(Auth::Tokens(vec![
        ("rw-token".into(), "node-a".into(), true),
        ("ro-token".into(), "viewer".into(), false),
    ]))
    .await;
    api.add_node("n1");
    let e = client(&api, Some("wrong"))
        .get_node("n1")
        .await
        .unwrap_err();
    assert!(matches!(e, KubeError::Unauthorized { .. }), "{e}");
    let ro = client(&api, Some("ro-token"));
    ro.get_node("n1").await.unwrap();
    let e = ro
        .patch_node("n1", &NodePatch::unschedulable(true))
        .await
        .unwrap_err();
    assert!(matches!(e, KubeError::Forbidden { .. }), "{e}");
    assert!(e.to_string().contains("deploy/rbac.yaml"), "{e}");
    client(&api, Some("rw-token"))
        .patch_node("n1", &NodePatch::unschedulable(true))
        .await
        .unwrap();
    assert_eq!(api.log().last().unwrap().user, "node-a");
    // The token is never part of an error.
    assert!(!e.to_string().contains("ro-token"));
    // A name that would change the path is refused before any request.
    let before = api.log().len();
    let e = ro.get_node("../secrets").await.unwrap_err();
    assert!(
        matches!(e, KubeError::InvalidName { what: "node", .. }),
        "{e}"
    );
    assert_eq!(api.log().len(), before);
}

#[tokio::test]
async fn a_server_certificate_from_another_ca_is_refused() {
    let api = KubeApi::start(Auth::ClientCert).await;
    let other = KubeApi::start(Auth::ClientCert).await;
    // The kubeconfig of `other` (its CA and client certificate) against `api`'s address.
    let text = other
        .kubeconfig(None)
        .replace(&other.server.base(), &api.server.base());
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("kc"), text).unwrap();
    let c = Client::load(root.path(), "/kc").unwrap();
    let e = c.get_node("n1").await.unwrap_err();
    assert!(
        matches!(&e, KubeError::Transport { message, .. } if message.to_lowercase().contains("certificate")),
        "{e}"
    );
    assert!(api.log().is_empty());
}

fn semaphore(api: &KubeApi, node: &str, clock: &Arc<ManualClock>) -> LeaseSemaphore {
    LeaseSemaphore::new(
        client(api, None),
        NS,
        "edge",
        2,
        node,
        Duration::from_secs(600),
        clock.clone(),
    )
}

#[tokio::test]
async fn lease_semaphore_takes_renews_breaks_silent_holders_on_the_local_clock_and_releases() {
    let api = KubeApi::start(Auth::ClientCert).await;
    let (ca, cb, cc) = (
        Arc::new(ManualClock::new()),
        Arc::new(ManualClock::new()),
        Arc::new(ManualClock::new()),
    );
    let (mut a, mut b, mut c) = (
        semaphore(&api, "a", &ca),
        semaphore(&api, "b", &cb),
        semaphore(&api, "c", &cc),
    );
    assert_eq!(
        a.take().await.unwrap(),
        Take::Held {
            slot: 0,
            broke: None
        }
    );
    assert_eq!(
        b.take().await.unwrap(),
        Take::Held {
            slot: 1,
            broke: None
        }
    );
    // Taking again is idempotent.
    assert_eq!(
        a.take().await.unwrap(),
        Take::Held {
            slot: 0,
            broke: None
        }
    );
    let Take::AllTaken(mut holders) = c.take().await.unwrap() else {
        panic!("c took a slot")
    };
    holders.sort();
    assert_eq!(holders, ["a", "b"]);

    // c's clock runs 9 minutes; a renews meanwhile, b does not.
    cc.advance(Duration::from_secs(540));
    ca.advance(Duration::from_secs(540));
    assert!(a.renew_due());
    assert!(a.renew().await.unwrap());
    assert!(
        matches!(c.take().await.unwrap(), Take::AllTaken(_)),
        "broken before the TTL"
    );
    // Two more minutes: b's Lease has not changed for 11 minutes on c's clock; a's for 2.
    cc.advance(Duration::from_secs(120));
    assert_eq!(
        c.take().await.unwrap(),
        Take::Held {
            slot: 1,
            broke: Some("b".into())
        }
    );
    assert_eq!(
        api.with_lease(NS, "bosun-edge-1")["spec"]["holderIdentity"],
        "c"
    );
    assert_eq!(
        api.with_lease(NS, "bosun-edge-1")["spec"]["leaseTransitions"],
        1
    );
    // b comes back: its renewal finds the slot lost, its release deletes nothing.
    assert!(!b.renew().await.unwrap());
    b.release().await.unwrap();
    assert_eq!(
        api.with_lease(NS, "bosun-edge-1")["spec"]["holderIdentity"],
        "c"
    );

    // c reboots holding the slot: a new instance finds it again.
    let mut c2 = semaphore(&api, "c", &cc);
    assert_eq!(c2.recover().await.unwrap(), Some(1));
    c2.release().await.unwrap();
    assert!(api.lease(NS, "bosun-edge-1").is_none());
    a.release().await.unwrap();
    assert!(api.lease(NS, "bosun-edge-0").is_none());
    // Releasing again is a no-op.
    a.release().await.unwrap();
}

#[tokio::test]
async fn a_freshly_started_node_never_breaks_a_slot_at_once() {
    // Whatever the Lease's renewTime says (here: years ago), a node that just saw it waits a
    // full TTL on its own clock.
    let api = KubeApi::start(Auth::ClientCert).await;
    api.add_lease(NS, "bosun-edge-0", "x");
    api.add_lease(NS, "bosun-edge-1", "y");
    let clock = Arc::new(ManualClock::new());
    let mut n = semaphore(&api, "n", &clock);
    assert!(matches!(n.take().await.unwrap(), Take::AllTaken(_)));
    // The leases say 3600 s (longer than our 600 s TTL): the longer one counts.
    clock.advance(Duration::from_secs(601));
    assert!(matches!(n.take().await.unwrap(), Take::AllTaken(_)));
    clock.advance(Duration::from_secs(3000));
    assert!(matches!(
        n.take().await.unwrap(),
        Take::Held { broke: Some(_), .. }
    ));
}

/// One RBAC rule of deploy/rbac.yaml.
#[derive(serde::Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct Rule {
    api_groups: Vec<String>,
    resources: Vec<String>,
    verbs: Vec<String>,
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct RbacDoc {
    kind: String,
    rules: Vec<Rule>,
}

/// The (group/resource, verb) a request needs, from the stand-in's request log.
fn permission(method: &str, path: &str) -> (String, String) {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    // /api/v1/... or /apis/GROUP/v1/...
    let (group, rest) = match segs.as_slice() {
        ["api", "v1", rest @ ..] => ("", rest),
        ["apis", group, "v1", rest @ ..] => (*group, rest),
        _ => panic!("unexpected path {path}"),
    };
    let rest = match rest {
        ["namespaces", _, rest @ ..] => rest,
        rest => rest,
    };
    let (resource, named) = match rest {
        [r] => (r.to_string(), false),
        [r, _] => (r.to_string(), true),
        [r, _, sub] => (format!("{r}/{sub}"), true),
        _ => panic!("unexpected path {path}"),
    };
    let verb = match (method, named) {
        ("GET", true) => "get",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", _) => "delete",
        _ => panic!("unexpected method {method}"),
    };
    (format!("{group}/{resource}"), verb.to_string())
}

#[tokio::test]
async fn deploy_rbac_grants_exactly_the_verbs_the_client_uses() {
    // Every call the rollout makes, once, against the stand-in.
    let api = KubeApi::start(Auth::ClientCert).await;
    api.add_node("n1");
    api.add_pod("default", "web-1", "n1", Owner::ReplicaSet, &[]);
    let clock = Arc::new(ManualClock::new());
    let mut sem = semaphore(&api, "n1", &clock);
    assert!(matches!(sem.take().await.unwrap(), Take::Held { .. }));
    sem.renew().await.unwrap();
    sem.release().await.unwrap();
    api.add_lease(NS, "bosun-edge-0", "x");
    api.add_lease(NS, "bosun-edge-1", "y");
    assert!(matches!(sem.take().await.unwrap(), Take::AllTaken(_)));
    let c = client(&api, None);
    c.get_node("n1").await.unwrap();
    c.list_nodes("bosun.dev/failed=abc").await.unwrap();
    c.patch_node("n1", &NodePatch::unschedulable(true))
        .await
        .unwrap();
    c.pods_on_node("n1").await.unwrap();
    c.evict("default", "web-1").await.unwrap();
    let used: std::collections::BTreeSet<(String, String)> = api
        .log()
        .iter()
        .map(|l| permission(&l.method, &l.path))
        .collect();

    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/rbac.yaml"))
        .unwrap();
    let docs: Vec<RbacDoc> = serde_saphyr::from_str_multiple(&text).unwrap();
    let mut granted = std::collections::BTreeSet::new();
    for d in docs
        .iter()
        .filter(|d| d.kind == "ClusterRole" || d.kind == "Role")
    {
        for r in &d.rules {
            for g in &r.api_groups {
                for res in &r.resources {
                    for v in &r.verbs {
                        granted.insert((format!("{g}/{res}"), v.clone()));
                    }
                }
            }
        }
    }
    assert_eq!(
        granted, used,
        "deploy/rbac.yaml vs the requests the client made"
    );
}
