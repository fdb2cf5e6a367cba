//! A stand-in Kubernetes API server for the fleet tests. It STANDS IN FOR kube-apiserver
//! (K3s and kube-apiserver cannot run here): a real HTTPS server (axum over tokio-rustls with
//! rcgen certificates) on 127.0.0.1 and a random port, speaking the same endpoints with the
//! same semantics for what bosun and `kubectl get/cordon/drain` use:
//!
//! - discovery (`/api`, `/apis`, `/api/v1`, `/apis/<group>/<version>`, `/version`) in the
//!   legacy formats that kubectl 1.20 reads and that kubectl 1.32 falls back to when the
//!   server does not answer aggregated discovery;
//! - Nodes: list (label selector), get, patch (JSON merge patch and strategic merge patch of
//!   labels, annotations and `spec.unschedulable`);
//! - Pods: list in all namespaces or one (field selector `spec.nodeName`), get; mirror pods
//!   (annotation `kubernetes.io/config.mirror`) and DaemonSet-owned pods are ordinary pods
//!   with those markers, as on a real cluster; DaemonSets can be got (kubectl drain checks
//!   them);
//! - `policy/v1` Evictions: 429 with the real message while a PodDisruptionBudget would be
//!   violated, else the pod is marked for deletion and disappears after a configurable delay
//!   (or at once); 404 for a missing pod;
//! - Leases: create (409 AlreadyExists when the name is taken, so create races have one
//!   winner), get, list, update (409 Conflict on a stale resourceVersion), delete (with uid /
//!   resourceVersion preconditions, 409 when they fail); one global resourceVersion counter
//!   increments on every write;
//! - tables (`Accept: application/json;as=Table;g=meta.k8s.io;v=v1`) for `kubectl get`, and
//!   plain lists otherwise;
//! - authentication by client certificate (the TLS layer requires one signed by the test CA)
//!   or by bearer token (401 without a known one; read-only tokens get 403 on writes);
//! - a request log (time, user, method, path, query, status, and how many nodes were
//!   unschedulable after the request), from which the fleet tests check that no more than
//!   `max_unavailable` nodes were ever cordoned at once.
//!
//! What kubectl asks (seen in the request log of tests/kubectl.rs): both 1.20 and 1.32 read
//! legacy discovery (`/api`, `/apis`, `/api/v1`, `/apis/{apps,coordination.k8s.io,policy}/v1`,
//! cached in `--cache-dir`; 1.32 also `/version`), `get` lists with `limit=500` and a Table
//! `Accept`, `cordon` sends a strategic merge patch of `spec.unschedulable`, `drain` lists
//! pods by `spec.nodeName`, gets each DaemonSet owner, posts `policy/v1` Evictions (retrying
//! a 429 after 5 s) and polls each pod until it is 404.
//!
//! Everything is in memory behind one mutex; nothing listens on anything but 127.0.0.1.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use base64::Engine as _;
use serde_json::{json, Value};

use super::tls::{serve_https, server_config, CertKey, TestCa, TestServer};

/// How clients authenticate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// A client certificate signed by the server's CA (K3s's admin kubeconfig).
    ClientCert,
    /// Bearer tokens: (token, user name, may write).
    Tokens(Vec<(String, String, bool)>),
}

/// One logged request.
#[derive(Debug, Clone)]
pub struct Logged {
    pub at: Instant,
    /// The token's user name, or `cert`.
    pub user: String,
    pub method: String,
    pub path: String,
    pub query: String,
    pub status: u16,
    /// The client asked for a Table (`kubectl get`).
    pub table: bool,
    /// Nodes with `spec.unschedulable` after this request.
    pub unschedulable_after: usize,
    /// Their names (sorted).
    pub unschedulable_nodes: Vec<String>,
}

/// A PodDisruptionBudget: pods in `namespace` with all of `match_labels` must keep at least
/// `min_available` pods not being deleted.
#[derive(Debug, Clone)]
pub struct Pdb {
    pub namespace: String,
    pub name: String,
    pub match_labels: BTreeMap<String, String>,
    pub min_available: usize,
}

/// The cluster's objects and switches.
#[derive(Debug, Default)]
pub struct Cluster {
    rv: u64,
    /// Cluster-scoped and namespaced objects by kind, keyed `ns/name` (`/name` for nodes).
    objects: BTreeMap<&'static str, BTreeMap<String, Value>>,
    /// Pods being deleted: key → when they disappear.
    deleting: BTreeMap<String, Instant>,
    pub pdbs: Vec<Pdb>,
    /// How long an evicted pod stays (terminating) before it disappears.
    pub eviction_delay: Duration,
    pub log: Vec<Logged>,
}

const NODES: &str = "nodes";
const PODS: &str = "pods";
const LEASES: &str = "leases";
const DAEMONSETS: &str = "daemonsets";

fn key(ns: &str, name: &str) -> String {
    format!("{ns}/{name}")
}

fn rfc3339(t: SystemTime) -> String {
    // Seconds precision, as metav1.Time.
    let micro = bosun::kube::types::micro_time(t);
    format!("{}Z", &micro[..19])
}

impl Cluster {
    fn next_rv(&mut self) -> String {
        self.rv += 1;
        self.rv.to_string()
    }

    fn store(&mut self, kind: &'static str) -> &mut BTreeMap<String, Value> {
        self.objects.entry(kind).or_default()
    }

    fn get(&self, kind: &str, k: &str) -> Option<&Value> {
        self.objects.get(kind).and_then(|m| m.get(k))
    }

    /// Stamps uid, resourceVersion and creationTimestamp and stores `obj` under `k`.
    fn insert(&mut self, kind: &'static str, k: String, mut obj: Value) -> Value {
        let rv = self.next_rv();
        let meta = obj["metadata"].as_object_mut().expect("metadata");
        meta.insert("uid".into(), json!(format!("uid-{kind}-{rv}")));
        meta.insert("resourceVersion".into(), json!(rv));
        meta.insert(
            "creationTimestamp".into(),
            json!(rfc3339(SystemTime::now())),
        );
        self.store(kind).insert(k, obj.clone());
        obj
    }

    /// Replaces `k` keeping its uid and creation time; bumps the resourceVersion.
    fn replace(&mut self, kind: &'static str, k: &str, mut obj: Value) -> Value {
        let old = self.get(kind, k).cloned().unwrap_or(Value::Null);
        let rv = self.next_rv();
        let meta = obj["metadata"].as_object_mut().expect("metadata");
        meta.insert("uid".into(), old["metadata"]["uid"].clone());
        meta.insert(
            "creationTimestamp".into(),
            old["metadata"]["creationTimestamp"].clone(),
        );
        meta.insert("resourceVersion".into(), json!(rv));
        self.store(kind).insert(k.to_string(), obj.clone());
        obj
    }

    /// Removes pods whose deletion delay has passed.
    fn purge(&mut self, now: Instant) {
        let gone: Vec<String> = self
            .deleting
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for k in gone {
            self.deleting.remove(&k);
            self.store(PODS).remove(&k);
        }
    }

    /// Nodes currently unschedulable.
    pub fn unschedulable(&self) -> usize {
        self.unschedulable_nodes().len()
    }

    /// Names of the nodes currently unschedulable (sorted).
    pub fn unschedulable_nodes(&self) -> Vec<String> {
        self.objects.get(NODES).map_or(Vec::new(), |m| {
            m.values()
                .filter(|n| n["spec"]["unschedulable"] == json!(true))
                .filter_map(|n| n["metadata"]["name"].as_str().map(str::to_string))
                .collect()
        })
    }

    /// Node `name`, as stored.
    pub fn node(&self, name: &str) -> Option<Value> {
        self.get(NODES, &key("", name)).cloned()
    }

    /// Pod names still on node `node` (including terminating ones).
    pub fn pods_on(&self, node: &str) -> Vec<String> {
        self.objects.get(PODS).map_or(Vec::new(), |m| {
            m.values()
                .filter(|p| p["spec"]["nodeName"] == json!(node))
                .map(|p| {
                    p["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string()
                })
                .collect()
        })
    }

    /// Lease `ns/name`, as stored.
    pub fn lease(&self, ns: &str, name: &str) -> Option<Value> {
        self.get(LEASES, &key(ns, name)).cloned()
    }
}

/// Who owns a test pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    ReplicaSet,
    DaemonSet,
    /// A static pod's mirror (annotation `kubernetes.io/config.mirror`, owned by the Node).
    Mirror,
}

/// A running stand-in API server.
pub struct KubeApi {
    pub server: TestServer,
    pub ca: TestCa,
    pub cluster: Arc<Mutex<Cluster>>,
    auth: Auth,
    _rt: Option<tokio::runtime::Runtime>,
}

impl KubeApi {
    /// Starts the server on the current tokio runtime.
    pub async fn start(auth: Auth) -> KubeApi {
        let ca = TestCa::new("stand-in-kube-apiserver-ca");
        let cluster = Arc::new(Mutex::new(Cluster::default()));
        let shared = Arc::new(Shared {
            cluster: cluster.clone(),
            auth: auth.clone(),
        });
        let router = axum::Router::new().fallback(handle).with_state(shared);
        let client_ca = matches!(auth, Auth::ClientCert).then_some(&ca);
        let server = serve_https(server_config(&ca.server_cert(), client_ca), router).await;
        KubeApi {
            server,
            ca,
            cluster,
            auth,
            _rt: None,
        }
    }

    /// Starts the server on its own runtime thread (for tests that block on processes).
    pub fn start_background(auth: Auth) -> KubeApi {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let mut api = rt.block_on(KubeApi::start(auth));
        api._rt = Some(rt);
        api
    }

    /// A kubeconfig for this server: a client certificate signed by the CA (ClientCert), or
    /// `token`.
    pub fn kubeconfig(&self, token: Option<&str>) -> String {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let user = match token {
            Some(t) => format!("    token: {t}\n"),
            None => {
                let c: CertKey = self.ca.client_cert("system:admin");
                format!(
                    "    client-certificate-data: {}\n    client-key-data: {}\n",
                    b64(&c.cert_pem),
                    b64(&c.key_pem)
                )
            }
        };
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: default\n  cluster:\n    certificate-authority-data: {}\n    server: {}\ncontexts:\n- name: default\n  context:\n    cluster: default\n    user: default\ncurrent-context: default\npreferences: {{}}\nusers:\n- name: default\n  user:\n{user}",
            b64(&self.ca.pem),
            self.server.base()
        )
    }

    fn with<T>(&self, f: impl FnOnce(&mut Cluster) -> T) -> T {
        f(&mut self.cluster.lock().unwrap())
    }

    /// Adds a Ready node.
    pub fn add_node(&self, name: &str) {
        let node = json!({
            "kind": "Node", "apiVersion": "v1",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}},
            "spec": {},
            "status": {
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status"}],
                "nodeInfo": {"kubeletVersion": "v1.32.4+k3s1", "osImage": "bosun test", "containerRuntimeVersion": "containerd://1.7"}
            }
        });
        self.with(|c| c.insert(NODES, key("", name), node));
    }

    /// Adds DaemonSet `ns/name` (kubectl drain looks owners up).
    pub fn add_daemonset(&self, ns: &str, name: &str) {
        let ds = json!({"kind": "DaemonSet", "apiVersion": "apps/v1", "metadata": {"name": name, "namespace": ns}, "spec": {}});
        self.with(|c| c.insert(DAEMONSETS, key(ns, name), ds));
    }

    /// Adds running pod `ns/name` on `node`, owned as `owner`, with `labels`.
    pub fn add_pod(&self, ns: &str, name: &str, node: &str, owner: Owner, labels: &[(&str, &str)]) {
        let labels: BTreeMap<_, _> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut meta = json!({"name": name, "namespace": ns, "labels": labels});
        let (kind, api, owner_name) = match owner {
            Owner::ReplicaSet => ("ReplicaSet", "apps/v1", format!("{name}-rs")),
            Owner::DaemonSet => ("DaemonSet", "apps/v1", format!("{name}-ds")),
            Owner::Mirror => ("Node", "v1", node.to_string()),
        };
        meta["ownerReferences"] = json!([{"apiVersion": api, "kind": kind, "name": owner_name, "uid": format!("uid-owner-{owner_name}"), "controller": true}]);
        if owner == Owner::Mirror {
            meta["annotations"] = json!({"kubernetes.io/config.mirror": "mirror-hash", "kubernetes.io/config.source": "file"});
        }
        if owner == Owner::DaemonSet {
            self.add_daemonset(ns, &owner_name);
        }
        let pod = json!({
            "kind": "Pod", "apiVersion": "v1", "metadata": meta,
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "registry.invalid/c:1"}]},
            "status": {"phase": "Running"}
        });
        self.with(|c| c.insert(PODS, key(ns, name), pod));
    }

    /// Adds Lease `ns/name` held by `holder` (as another node would have created it).
    pub fn add_lease(&self, ns: &str, name: &str, holder: &str) {
        let lease = json!({
            "kind": "Lease", "apiVersion": "coordination.k8s.io/v1",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 3600}
        });
        self.with(|c| c.insert(LEASES, key(ns, name), lease));
    }

    /// Deletes Lease `ns/name` (as its holder would release it).
    pub fn delete_lease(&self, ns: &str, name: &str) {
        self.with(|c| c.store(LEASES).remove(&key(ns, name)));
    }

    /// Sets a PodDisruptionBudget (replacing one of the same name).
    pub fn set_pdb(
        &self,
        ns: &str,
        name: &str,
        match_labels: &[(&str, &str)],
        min_available: usize,
    ) {
        let pdb = Pdb {
            namespace: ns.into(),
            name: name.into(),
            match_labels: match_labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            min_available,
        };
        self.with(|c| {
            c.pdbs.retain(|p| !(p.namespace == ns && p.name == name));
            c.pdbs.push(pdb);
        });
    }

    /// How long an evicted pod terminates before it disappears.
    pub fn set_eviction_delay(&self, d: Duration) {
        self.with(|c| c.eviction_delay = d);
    }

    /// Lease `ns/name` (panics when missing).
    pub fn with_lease(&self, ns: &str, name: &str) -> Value {
        self.lease(ns, name).expect("lease exists")
    }

    /// Lease `ns/name`, if it exists.
    pub fn lease(&self, ns: &str, name: &str) -> Option<Value> {
        self.with(|c| c.lease(ns, name))
    }

    /// The request log so far.
    pub fn log(&self) -> Vec<Logged> {
        self.with(|c| c.log.clone())
    }

    /// Node `name`.
    pub fn node(&self, name: &str) -> Value {
        self.with(|c| c.node(name)).expect("node exists")
    }

    /// Pods still on `node`.
    pub fn pods_on(&self, node: &str) -> Vec<String> {
        self.with(|c| {
            c.purge(Instant::now());
            c.pods_on(node)
        })
    }

    /// The most nodes that were unschedulable at once, over the whole log.
    pub fn max_unschedulable(&self) -> usize {
        self.with(|c| {
            c.log
                .iter()
                .map(|l| l.unschedulable_after)
                .max()
                .unwrap_or(0)
        })
    }

    /// Nodes unschedulable now.
    pub fn unschedulable_now(&self) -> usize {
        self.with(|c| c.unschedulable())
    }
}

struct Shared {
    cluster: Arc<Mutex<Cluster>>,
    auth: Auth,
}

/// A JSON answer.
fn reply(status: StatusCode, body: &Value) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

/// A `metav1.Status` failure answer, as kube-apiserver writes it.
fn status(code: StatusCode, reason: &str, message: &str, details: Value) -> Response {
    reply(
        code,
        &json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "details": details, "code": code.as_u16()
        }),
    )
}

fn not_found(resource: &str, name: &str) -> Response {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!("{resource} \"{name}\" not found"),
        json!({"name": name, "kind": resource.split('.').next().unwrap_or(resource)}),
    )
}

/// The request as the handlers see it.
struct Req {
    method: Method,
    segs: Vec<String>,
    query: BTreeMap<String, String>,
    table: bool,
    content_type: String,
    body: Bytes,
    can_write: bool,
}

async fn handle(
    State(st): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |h: &str| {
        headers
            .get(h)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let (user, can_write) = match &st.auth {
        Auth::ClientCert => ("cert".to_string(), true),
        Auth::Tokens(tokens) => {
            let got = header("authorization");
            match tokens.iter().find(|(t, _, _)| got == format!("Bearer {t}")) {
                Some((_, user, write)) => (user.clone(), *write),
                None => {
                    let r = status(
                        StatusCode::UNAUTHORIZED,
                        "Unauthorized",
                        "Unauthorized",
                        json!({}),
                    );
                    let mut c = st.cluster.lock().unwrap();
                    log(&mut c, "anonymous", &method, &uri, false, 401);
                    return r;
                }
            }
        }
    };
    let req = Req {
        method: method.clone(),
        segs: uri
            .path()
            .split('/')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        query: url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
            .into_owned()
            .collect(),
        table: header("accept").contains("as=Table"),
        content_type: header("content-type"),
        body,
        can_write,
    };
    // Routed and logged under one lock, so the log sees every state the cluster was in.
    let mut c = st.cluster.lock().unwrap();
    c.purge(Instant::now());
    let resp = route(&mut c, &req, &st.auth);
    log(
        &mut c,
        &user,
        &method,
        &uri,
        req.table,
        resp.status().as_u16(),
    );
    resp
}

fn log(c: &mut Cluster, user: &str, method: &Method, uri: &Uri, table: bool, code: u16) {
    let unschedulable_nodes = c.unschedulable_nodes();
    let unschedulable_after = unschedulable_nodes.len();
    c.log.push(Logged {
        at: Instant::now(),
        user: user.to_string(),
        method: method.to_string(),
        path: uri.path().to_string(),
        query: uri.query().unwrap_or_default().to_string(),
        status: code,
        table,
        unschedulable_after,
        unschedulable_nodes,
    });
}

fn route(c: &mut Cluster, r: &Req, auth: &Auth) -> Response {
    let segs: Vec<&str> = r.segs.iter().map(String::as_str).collect();
    if r.method != Method::GET && !r.can_write {
        return status(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "this token may only read",
            json!({}),
        );
    }
    let _ = auth;
    match (&r.method, segs.as_slice()) {
        (&Method::GET, ["version"]) => reply(
            StatusCode::OK,
            &json!({"major": "1", "minor": "32", "gitVersion": "v1.32.4+k3s1", "platform": "linux/amd64"}),
        ),
        (&Method::GET, ["api"]) => reply(
            StatusCode::OK,
            &json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:6443"}]}),
        ),
        (&Method::GET, ["apis"]) => reply(StatusCode::OK, &api_groups()),
        (&Method::GET, ["api", "v1"]) => reply(StatusCode::OK, &core_resources()),
        (&Method::GET, ["apis", group, version]) => match group_resources(group, version) {
            Some(v) => reply(StatusCode::OK, &v),
            None => status(
                StatusCode::NOT_FOUND,
                "NotFound",
                "the server could not find the requested resource",
                json!({}),
            ),
        },
        (_, ["api", "v1", "nodes", rest @ ..]) => nodes(c, r, rest),
        (&Method::GET, ["api", "v1", "pods"]) => list_pods(c, r, None),
        (&Method::GET, ["api", "v1", "namespaces", ns, "pods"]) => list_pods(c, r, Some(ns)),
        (&Method::GET, ["api", "v1", "namespaces", ns, "pods", name]) => {
            match c.get(PODS, &key(ns, name)) {
                Some(p) => reply(StatusCode::OK, p),
                None => not_found("pods", name),
            }
        }
        (&Method::POST, ["api", "v1", "namespaces", ns, "pods", name, "eviction"]) => {
            evict(c, r, ns, name)
        }
        (&Method::GET, ["apis", "apps", "v1", "namespaces", ns, "daemonsets", name]) => {
            match c.get(DAEMONSETS, &key(ns, name)) {
                Some(d) => reply(StatusCode::OK, d),
                None => not_found("daemonsets.apps", name),
            }
        }
        (_, ["apis", "coordination.k8s.io", "v1", "namespaces", ns, "leases", rest @ ..]) => {
            leases(c, r, ns, rest)
        }
        (&Method::GET, ["apis", "coordination.k8s.io", "v1", "leases"]) => {
            list(c, r, LEASES, |_| true, lease_table)
        }
        _ => status(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource",
            json!({}),
        ),
    }
}

fn api_groups() -> Value {
    let group = |name: &str| {
        let gv = format!("{name}/v1");
        json!({"name": name, "versions": [{"groupVersion": gv, "version": "v1"}], "preferredVersion": {"groupVersion": gv, "version": "v1"}})
    };
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [group("apps"), group("coordination.k8s.io"), group("policy")]})
}

fn resource(name: &str, kind: &str, namespaced: bool, verbs: &[&str], short: &[&str]) -> Value {
    json!({"name": name, "singularName": kind.to_ascii_lowercase(), "namespaced": namespaced, "kind": kind, "verbs": verbs, "shortNames": short})
}

fn core_resources() -> Value {
    let mut eviction = resource("pods/eviction", "Eviction", true, &["create"], &[]);
    eviction["group"] = json!("policy");
    eviction["version"] = json!("v1");
    eviction["singularName"] = json!("");
    json!({"kind": "APIResourceList", "groupVersion": "v1", "resources": [
        resource("nodes", "Node", false, &["get", "list", "patch"], &["no"]),
        resource("pods", "Pod", true, &["get", "list"], &["po"]),
        eviction,
    ]})
}

fn group_resources(group: &str, version: &str) -> Option<Value> {
    if version != "v1" {
        return None;
    }
    let resources = match group {
        "coordination.k8s.io" => vec![resource(
            "leases",
            "Lease",
            true,
            &["create", "delete", "get", "list", "update"],
            &[],
        )],
        "policy" => vec![resource(
            "poddisruptionbudgets",
            "PodDisruptionBudget",
            true,
            &["get", "list"],
            &["pdb"],
        )],
        "apps" => vec![resource("daemonsets", "DaemonSet", true, &["get"], &["ds"])],
        _ => return None,
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": format!("{group}/v1"), "resources": resources}),
    )
}

/// Whether `obj`'s labels match a label selector `k=v,k2=v2` (equality only, `k` = exists).
fn labels_match(obj: &Value, selector: &str) -> bool {
    selector.split(',').filter(|s| !s.is_empty()).all(|term| {
        let labels = &obj["metadata"]["labels"];
        match term.split_once('=') {
            Some((k, v)) => labels[k.trim_end_matches('=')] == json!(v),
            None => !labels[term].is_null(),
        }
    })
}

/// Whether `obj` matches a field selector (only `spec.nodeName=` and `metadata.name=`).
fn fields_match(obj: &Value, selector: &str) -> Result<bool, String> {
    let mut ok = true;
    for term in selector.split(',').filter(|s| !s.is_empty()) {
        let (field, want) = term
            .split_once('=')
            .ok_or_else(|| format!("invalid selector {term:?}"))?;
        let want = want.trim_start_matches('=');
        let got = match field {
            "spec.nodeName" => &obj["spec"]["nodeName"],
            "metadata.name" => &obj["metadata"]["name"],
            "metadata.namespace" => &obj["metadata"]["namespace"],
            other => return Err(format!("field label not supported: {other}")),
        };
        ok &= got == &json!(want);
    }
    Ok(ok)
}

type TableOf = fn(&Value) -> (Vec<Value>, Vec<Value>);

/// A list (or table) of `kind`'s objects passing `keep` and the request's selectors.
fn list(
    c: &Cluster,
    r: &Req,
    kind: &str,
    keep: impl Fn(&Value) -> bool,
    table: TableOf,
) -> Response {
    let label_sel = r.query.get("labelSelector").cloned().unwrap_or_default();
    let field_sel = r.query.get("fieldSelector").cloned().unwrap_or_default();
    let mut items = Vec::new();
    for obj in c.objects.get(kind).into_iter().flat_map(|m| m.values()) {
        match fields_match(obj, &field_sel) {
            Ok(true) if keep(obj) && labels_match(obj, &label_sel) => items.push(obj.clone()),
            Ok(_) => {}
            Err(e) => return status(StatusCode::BAD_REQUEST, "BadRequest", &e, json!({})),
        }
    }
    let rv = c.rv.to_string();
    if r.table {
        let (columns, _) = table(&Value::Null);
        let rows: Vec<Value> = items
            .iter()
            .map(|o| {
                let (_, cells) = table(o);
                json!({"cells": cells, "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]}})
            })
            .collect();
        return reply(
            StatusCode::OK,
            &json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": rv}, "columnDefinitions": columns, "rows": rows}),
        );
    }
    let list_kind = match kind {
        NODES => "NodeList",
        PODS => "PodList",
        _ => "LeaseList",
    };
    reply(
        StatusCode::OK,
        &json!({"kind": list_kind, "apiVersion": "v1", "metadata": {"resourceVersion": rv}, "items": items}),
    )
}

fn column(name: &str, format: &str) -> Value {
    json!({"name": name, "type": "string", "format": format, "description": name, "priority": 0})
}

/// The Age cell: the stand-in does not track object ages (kube-apiserver prints
/// `<unknown>` for objects without a creation time as well).
fn age(_o: &Value) -> Value {
    json!("<unknown>")
}

fn node_table(o: &Value) -> (Vec<Value>, Vec<Value>) {
    let cols = vec![
        column("Name", "name"),
        column("Status", ""),
        column("Roles", ""),
        column("Age", ""),
        column("Version", ""),
    ];
    let mut st = "Ready".to_string();
    if o["spec"]["unschedulable"] == json!(true) {
        st.push_str(",SchedulingDisabled");
    }
    let cells = vec![
        o["metadata"]["name"].clone(),
        json!(st),
        json!("<none>"),
        age(o),
        o["status"]["nodeInfo"]["kubeletVersion"].clone(),
    ];
    (cols, cells)
}

fn pod_table(o: &Value) -> (Vec<Value>, Vec<Value>) {
    let cols = vec![
        column("Name", "name"),
        column("Ready", ""),
        column("Status", ""),
        column("Restarts", ""),
        column("Age", ""),
    ];
    let phase = if o["metadata"]["deletionTimestamp"].is_null() {
        o["status"]["phase"].clone()
    } else {
        json!("Terminating")
    };
    (
        cols,
        vec![
            o["metadata"]["name"].clone(),
            json!("1/1"),
            phase,
            json!(0),
            age(o),
        ],
    )
}

fn lease_table(o: &Value) -> (Vec<Value>, Vec<Value>) {
    let cols = vec![
        column("Name", "name"),
        column("Holder", ""),
        column("Age", ""),
    ];
    let holder = o["spec"]["holderIdentity"]
        .as_str()
        .unwrap_or("")
        .to_string();
    (
        cols,
        vec![o["metadata"]["name"].clone(), json!(holder), age(o)],
    )
}

fn list_pods(c: &Cluster, r: &Req, ns: Option<&str>) -> Response {
    list(
        c,
        r,
        PODS,
        |p| ns.is_none_or(|n| p["metadata"]["namespace"] == json!(n)),
        pod_table,
    )
}

fn nodes(c: &mut Cluster, r: &Req, rest: &[&str]) -> Response {
    match (&r.method, rest) {
        (&Method::GET, []) => list(c, r, NODES, |_| true, node_table),
        (&Method::GET, [name]) => match c.node(name) {
            Some(n) => reply(StatusCode::OK, &n),
            None => not_found("nodes", name),
        },
        (&Method::PATCH, [name]) => {
            let Some(mut node) = c.node(name) else {
                return not_found("nodes", name);
            };
            let ct = r.content_type.split(';').next().unwrap_or_default();
            if !matches!(
                ct,
                "application/merge-patch+json" | "application/strategic-merge-patch+json"
            ) {
                return status(StatusCode::UNSUPPORTED_MEDIA_TYPE, "UnsupportedMediaType", &format!("the body of the request was in an unknown format - accepted media types include: application/merge-patch+json, application/strategic-merge-patch+json (got {ct:?})"), json!({}));
            }
            let Ok(patch) = serde_json::from_slice::<Value>(&r.body) else {
                return status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "the patch is not JSON",
                    json!({}),
                );
            };
            merge_patch(&mut node, &patch);
            let stored = c.replace(NODES, &key("", name), node);
            reply(StatusCode::OK, &stored)
        }
        _ => status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
            json!({}),
        ),
    }
}

/// RFC 7386 merge patch (strategic-merge directives `$…` are ignored: the fields bosun and
/// kubectl patch on Nodes are maps and scalars, where both patch kinds agree).
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let t = target.as_object_mut().unwrap();
    for (k, v) in p {
        if k.starts_with('$') {
            continue;
        }
        if v.is_null() {
            t.remove(k);
        } else {
            merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

fn evict(c: &mut Cluster, r: &Req, ns: &str, name: &str) -> Response {
    let Ok(body) = serde_json::from_slice::<Value>(&r.body) else {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the eviction is not JSON",
            json!({}),
        );
    };
    let api = body["apiVersion"].as_str().unwrap_or_default();
    if !matches!(api, "policy/v1" | "policy/v1beta1")
        || body["kind"] != json!("Eviction")
        || body["metadata"]["name"] != json!(name)
    {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!("expected a policy/v1 Eviction of pod {name}, got {body}"),
            json!({}),
        );
    }
    let k = key(ns, name);
    let Some(pod) = c.get(PODS, &k).cloned() else {
        return not_found("pods", name);
    };
    if c.deleting.contains_key(&k) {
        // Already terminating: kube-apiserver answers success again.
        return reply(
            StatusCode::CREATED,
            &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
        );
    }
    for pdb in c.pdbs.clone() {
        if pdb.namespace != ns
            || !pdb
                .match_labels
                .iter()
                .all(|(lk, lv)| pod["metadata"]["labels"][lk] == json!(lv))
        {
            continue;
        }
        let healthy = c.objects.get(PODS).map_or(0, |m| {
            m.iter()
                .filter(|(pk, p)| {
                    !c.deleting.contains_key(*pk)
                        && p["metadata"]["namespace"] == json!(ns)
                        && pdb
                            .match_labels
                            .iter()
                            .all(|(lk, lv)| p["metadata"]["labels"][lk] == json!(lv))
                })
                .count()
        });
        if healthy <= pdb.min_available {
            return status(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequests",
                "Cannot evict pod as it would violate the pod's disruption budget.",
                json!({"causes": [{"reason": "DisruptionBudget", "message": format!("The disruption budget {} needs {} healthy pods and has {} currently", pdb.name, pdb.min_available, healthy)}]}),
            );
        }
    }
    let rv = c.next_rv();
    if let Some(p) = c.store(PODS).get_mut(&k) {
        p["metadata"]["deletionTimestamp"] = json!(rfc3339(SystemTime::now()));
        p["metadata"]["resourceVersion"] = json!(rv);
    }
    let at = Instant::now() + c.eviction_delay;
    c.deleting.insert(k, at);
    c.purge(Instant::now());
    reply(
        StatusCode::CREATED,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    )
}

fn conflict(name: &str, why: &str) -> Response {
    status(
        StatusCode::CONFLICT,
        "Conflict",
        &format!("Operation cannot be fulfilled on leases.coordination.k8s.io \"{name}\": {why}"),
        json!({"name": name, "group": "coordination.k8s.io", "kind": "leases"}),
    )
}

fn leases(c: &mut Cluster, r: &Req, ns: &str, rest: &[&str]) -> Response {
    let parse = || {
        serde_json::from_slice::<Value>(&r.body)
            .ok()
            .filter(|v| v["metadata"].is_object())
    };
    match (&r.method, rest) {
        (&Method::GET, []) => list(
            c,
            r,
            LEASES,
            |l| l["metadata"]["namespace"] == json!(ns),
            lease_table,
        ),
        (&Method::POST, []) => {
            let Some(mut lease) = parse() else {
                return status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "expected a Lease",
                    json!({}),
                );
            };
            let name = lease["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if name.is_empty() {
                return status(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", "Lease.coordination.k8s.io \"\" is invalid: metadata.name: Required value: name or generateName is required", json!({}));
            }
            if !lease["metadata"]["resourceVersion"].is_null() {
                return status(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalError",
                    "resourceVersion should not be set on objects to be created",
                    json!({}),
                );
            }
            if c.get(LEASES, &key(ns, &name)).is_some() {
                return status(
                    StatusCode::CONFLICT,
                    "AlreadyExists",
                    &format!("leases.coordination.k8s.io \"{name}\" already exists"),
                    json!({"name": name, "group": "coordination.k8s.io", "kind": "leases"}),
                );
            }
            lease["metadata"]["namespace"] = json!(ns);
            let stored = c.insert(LEASES, key(ns, &name), lease);
            reply(StatusCode::CREATED, &stored)
        }
        (&Method::GET, [name]) => match c.lease(ns, name) {
            Some(l) => reply(StatusCode::OK, &l),
            None => not_found("leases.coordination.k8s.io", name),
        },
        (&Method::PUT, [name]) => {
            let Some(mut lease) = parse() else {
                return status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "expected a Lease",
                    json!({}),
                );
            };
            let Some(current) = c.lease(ns, name) else {
                return not_found("leases.coordination.k8s.io", name);
            };
            let sent = &lease["metadata"]["resourceVersion"];
            if !sent.is_null() && sent != &current["metadata"]["resourceVersion"] {
                return conflict(name, "the object has been modified; please apply your changes to the latest version and try again");
            }
            lease["metadata"]["namespace"] = json!(ns);
            let stored = c.replace(LEASES, &key(ns, name), lease);
            reply(StatusCode::OK, &stored)
        }
        (&Method::DELETE, [name]) => {
            let Some(current) = c.lease(ns, name) else {
                return not_found("leases.coordination.k8s.io", name);
            };
            let options = serde_json::from_slice::<Value>(&r.body).unwrap_or(Value::Null);
            let pre = &options["preconditions"];
            for (field, label) in [("uid", "UID"), ("resourceVersion", "ResourceVersion")] {
                if !pre[field].is_null() && pre[field] != current["metadata"][field] {
                    return conflict(name, &format!("Precondition failed: {label} in precondition: {}, {label} in object meta: {}", pre[field], current["metadata"][field]));
                }
            }
            c.store(LEASES).remove(&key(ns, name));
            c.next_rv();
            reply(
                StatusCode::OK,
                &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": {"name": name, "group": "coordination.k8s.io", "kind": "leases", "uid": current["metadata"]["uid"]}}),
            )
        }
        _ => status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
            json!({}),
        ),
    }
}
