//! The I/O driver of the rollout gates: it observes what [`super::gate::decide`] needs (the
//! lock, the Node's schedulability, the pods left, the nodes marked failed), runs the decision
//! and performs its steps in order (persist the phase, take the lock, cordon, evict, proceed,
//! mark failed, uncordon, release), and publishes the node's rollout state on its Node object.
//!
//! The daemon asks [`Rollout::request`] before a disruptive action (a k3s restart for a config
//! change, the trial reboot of an A/B upgrade) and performs the action only once it says
//! "proceed"; after the health verdict it calls [`Rollout::settle`], which uncordons and
//! releases the slot (or marks the node failed). The slot is therefore held across the trial
//! reboot: the phase is persisted in `rollout.json` in the state dir, and after the reboot
//! [`Rollout::recover`] confirms the slot.
//!
//! Requests to the cluster are made only when needed: none while nothing is pending, except
//! lease renewals while a slot is held and a Node patch when the published state changes.
//! Waves and windows are judged locally before anything is asked: a node waiting for its
//! wave or its window asks nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::coordination::{BackendKind, CoordinationConfig};
use super::gate::{self, Capabilities, DisruptionKind, Inputs, Pending, Phase, Status, Step};
use super::lease_lock::LeaseSemaphore;
use super::lock::{FleetLockSlot, LockError, SlotLock, Taken};
use super::wave;
use crate::clock::Clock;
use crate::config::rollout::RolloutConfig;
use crate::kube::{self, KubeError, NodePatch};
use crate::statefile;

/// The driver's state file in the state dir.
pub const STATE_FILE: &str = "rollout.json";
/// Node label: the commit the node follows (short id).
pub const LABEL_COMMIT: &str = "bosun.dev/commit";
/// Node label: the rollout state (`idle`, `waiting-wave`, …, `halted`).
pub const LABEL_STATE: &str = "bosun.dev/state";
/// Node label: the short id of the commit whose health gate failed on this node.
pub const LABEL_FAILED: &str = "bosun.dev/failed";
/// Node annotation: why it failed.
pub const ANNOTATION_FAILED_REASON: &str = "bosun.dev/failed-reason";
/// Node annotation: the OS version the node runs.
pub const ANNOTATION_OS_VERSION: &str = "bosun.dev/os-version";
/// Node annotation: the last rollout or apply error.
pub const ANNOTATION_LAST_ERROR: &str = "bosun.dev/last-error";
/// Decisions per request: enough for take lock → cordon → evict → proceed, bounded so a
/// confused backend cannot spin.
const MAX_ROUNDS: usize = 6;
/// Longest annotation value written (reasons and errors are cut).
const MAX_ANNOTATION: usize = 1024;
/// Evictions are asked again (a PodDisruptionBudget answered 429) at most this often, as
/// `kubectl drain` does, however often the gates are asked.
pub const EVICTION_RETRY: Duration = Duration::from_secs(5);

/// A change that needs a disruption, as first seen by this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// What it needs.
    pub kind: DisruptionKind,
    /// The commit that introduced it (the first this node saw bring it).
    pub commit: String,
    /// Its committer time (unix seconds): the wave clock.
    pub committed_at: i64,
    /// What the change is (the k3s config it brings, or the image): a later commit with the
    /// same fingerprint is the same change and keeps the first commit's wave clock.
    pub fingerprint: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Record {
    phase: Phase,
    change: Option<Change>,
}

impl Default for Record {
    fn default() -> Self {
        Record {
            phase: Phase::Idle,
            change: None,
        }
    }
}

/// Errors loading or saving the driver's state.
#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    /// The state file exists but is not the driver's JSON.
    #[error("rollout state {path}: {message}; move it away to start over (a held lock is then released by its TTL)")]
    Corrupt {
        /// The state file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The state file could not be read.
    #[error("rollout state {path}: {source}")]
    Read {
        /// The state file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The state file could not be written.
    #[error(transparent)]
    Write(#[from] statefile::StateFileError),
    /// The kubeconfig could not be loaded.
    #[error("coordination: {0}")]
    Kube(#[from] KubeError),
    /// The FleetLock client could not be built.
    #[error("coordination: {0}")]
    FleetLock(#[from] crate::fleetlock::FleetLockError),
}

/// The lock's identity: a new one is built when the Git policy changes it (while not held).
#[derive(Debug, Clone, PartialEq)]
struct LockKey {
    group: String,
    slots: u32,
    ttl: Duration,
}

/// What the node publishes on its Node object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Published {
    /// Short id of the commit the node follows.
    pub commit: Option<String>,
    /// The rollout state label.
    pub state: String,
    /// The OS version the node runs.
    pub os_version: Option<String>,
    /// The last error, if any.
    pub last_error: Option<String>,
}

/// The rollout driver of one node.
pub struct Rollout {
    node: String,
    path: PathBuf,
    record: Record,
    coordination: CoordinationConfig,
    kube: Option<kube::Client>,
    lock: Option<(LockKey, Box<dyn SlotLock>)>,
    lock_held: bool,
    clock: Arc<dyn Clock>,
    status: Status,
    detail: Option<String>,
    published: Option<Published>,
    evictions: u64,
    /// When evictions were last asked (monotonic clock), for [`EVICTION_RETRY`].
    evicted_at: Option<std::time::Instant>,
}

impl std::fmt::Debug for Rollout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rollout")
            .field("node", &self.node)
            .field("phase", &self.record.phase)
            .field("lock_held", &self.lock_held)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

fn cut(s: &str) -> String {
    let mut end = s.len().min(MAX_ANNOTATION);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Rollout {
    /// The driver for node `node` with state in `state_dir`: loads `rollout.json` and the
    /// kubeconfig (under `root`). Reads files; no network.
    pub fn load(
        node: &str,
        root: &Path,
        state_dir: &Path,
        coordination: CoordinationConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Rollout, RolloutError> {
        let path = state_dir.join(STATE_FILE);
        let record = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| RolloutError::Corrupt {
                path: path.clone(),
                message: format!("not bosun's rollout state: {e}"),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Record::default(),
            Err(source) => return Err(RolloutError::Read { path, source }),
        };
        let kube = match &coordination.kubeconfig {
            Some(k) => Some(kube::Client::load(root, k)?),
            None => None,
        };
        Ok(Rollout {
            node: node.to_string(),
            path,
            record,
            coordination,
            kube,
            lock: None,
            lock_held: false,
            clock,
            status: Status::Idle,
            detail: None,
            published: None,
            evictions: 0,
            evicted_at: None,
        })
    }

    /// A driver with no coordination backend and a fresh state, until [`Self::load`] replaces
    /// it at start-up (pure).
    pub fn idle(node: &str, state_dir: &Path) -> Rollout {
        Rollout {
            node: node.to_string(),
            path: state_dir.join(STATE_FILE),
            record: Record::default(),
            coordination: CoordinationConfig::default(),
            kube: None,
            lock: None,
            lock_held: false,
            clock: Arc::new(crate::clock::SystemClock),
            status: Status::Idle,
            detail: None,
            published: None,
            evictions: 0,
            evicted_at: None,
        }
    }

    /// What the node can reach.
    fn caps(&self) -> Capabilities {
        Capabilities {
            lock: self.coordination.backend != BackendKind::None,
            kube: self.kube.is_some(),
            keep_slot_on_failure: self.coordination.backend == BackendKind::Fleetlock,
        }
    }

    /// Whether a slot is held.
    pub fn lock_held(&self) -> bool {
        self.lock_held
    }

    /// What the node is doing or waiting for.
    pub fn status(&self) -> &Status {
        &self.status
    }

    /// Why the node waits at the lock, or the last coordination error.
    pub fn detail(&self) -> Option<&str> {
        self.detail.as_deref()
    }

    /// Evictions requested so far by this process (`bosun_drain_evictions_total`).
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// The change pending, if any.
    pub fn change(&self) -> Option<&Change> {
        self.record.change.as_ref()
    }

    /// Whether a disruption of `kind` may happen now: the gates were passed for it and its
    /// verdict is not in yet (the slot, if any, is held).
    pub fn permits(&self, kind: DisruptionKind) -> bool {
        matches!(&self.record.phase, Phase::Disrupting { kind: k, .. } if *k == kind)
    }

    /// Whether anything is in flight (a pending change, a held slot, a phase other than idle).
    pub fn busy(&self) -> bool {
        self.record.change.is_some() || self.lock_held || self.record.phase != Phase::Idle
    }

    fn save(&self) -> Result<(), RolloutError> {
        let bytes = serde_json::to_vec_pretty(&self.record).unwrap_or_default();
        statefile::write_atomic(&self.path, &bytes, 0o600)?;
        Ok(())
    }

    /// The lock for `cfg`'s group, slots and TTL (built anew when they changed and no slot is
    /// held). `None` without a lock backend.
    fn lock_for(
        &mut self,
        cfg: &RolloutConfig,
    ) -> Result<Option<&mut Box<dyn SlotLock>>, RolloutError> {
        let key = LockKey {
            group: cfg.group.clone(),
            slots: cfg.max_unavailable,
            ttl: cfg.lock_ttl,
        };
        let stale = self.lock.as_ref().is_none_or(|(k, _)| *k != key);
        if stale && !(self.lock_held && self.lock.is_some()) {
            let lock: Option<Box<dyn SlotLock>> = match self.coordination.backend {
                BackendKind::None => None,
                BackendKind::Kubernetes => match &self.kube {
                    Some(client) => Some(Box::new(LeaseSemaphore::new(
                        client.clone(),
                        &self.coordination.namespace,
                        &key.group,
                        key.slots,
                        &self.node,
                        key.ttl,
                        self.clock.clone(),
                    ))),
                    None => None,
                },
                BackendKind::Fleetlock => {
                    let ca = match &self.coordination.fleetlock_ca {
                        Some(p) => Some(std::fs::read(p).map_err(|source| RolloutError::Read {
                            path: p.clone(),
                            source,
                        })?),
                        None => None,
                    };
                    let url = self.coordination.fleetlock_url.clone().unwrap_or_default();
                    let client = crate::fleetlock::Client::new(
                        &url,
                        &self.coordination.id,
                        &key.group,
                        ca.as_deref(),
                    )?;
                    Some(Box::new(FleetLockSlot::new(client)))
                }
            };
            self.lock = lock.map(|l| (key, l));
        }
        Ok(self.lock.as_mut().map(|(_, l)| l))
    }

    /// At start-up: confirms a slot held before a restart or a trial reboot (the phase says
    /// one is held). Network with a lock backend.
    pub async fn recover(&mut self, cfg: &RolloutConfig) {
        let believed = matches!(
            self.record.phase,
            Phase::Draining { .. } | Phase::Disrupting { .. } | Phase::HoldingFailed { .. }
        );
        let recovered = match self.lock_for(cfg) {
            Ok(Some(lock)) => lock.recover(believed).await.map_err(|e| e.to_string()),
            Ok(None) => Ok(false),
            Err(e) => Err(e.to_string()),
        };
        match recovered {
            Ok(held) => {
                self.lock_held = held;
                if held {
                    tracing::info!("rollout: holding a slot of group {} (recovered)", cfg.group);
                }
            }
            Err(e) => self.detail = Some(format!("recovering the rollout lock: {e}")),
        }
    }

    /// Notes that `change` wants a disruption and returns the change the gates judge: the
    /// first commit that brought the same change keeps its wave clock. While no disruption is
    /// in flight, a newer commit bringing the same change becomes the one judged (its failure
    /// marks count, an older commit's do not: a newer commit lifts a halt). Writes the state
    /// file when something changed.
    pub fn note(&mut self, change: Change) -> Change {
        let idle = self.record.phase == Phase::Idle;
        let next = match self.record.change.take() {
            Some(c) if c.kind == change.kind && c.fingerprint == change.fingerprint => {
                if idle && c.commit != change.commit {
                    Change {
                        commit: change.commit,
                        ..c
                    }
                } else {
                    c
                }
            }
            _ => change,
        };
        let changed = self.record.change.as_ref() != Some(&next);
        self.record.change = Some(next.clone());
        if changed {
            if let Err(e) = self.save() {
                tracing::error!("{e}");
            }
        }
        next
    }

    /// Whether the node's wave for a change committed at `committed_at` has started (for
    /// changes that need no disruption, with `waves_for_all`). While it has not, the status
    /// says `waiting-wave`; once it has, a wave wait ends. No I/O.
    pub fn wave_open(&mut self, cfg: &RolloutConfig, committed_at: i64) -> bool {
        let position = wave::position(&cfg.group, &self.node);
        let starts_at = wave::start(cfg, committed_at, position);
        let open = now_unix() >= starts_at;
        if !open {
            self.status = Status::WaitingWave { starts_at };
        } else if matches!(self.status, Status::WaitingWave { .. }) && !self.busy() {
            self.status = Status::Idle;
        }
        open
    }

    /// Runs the gates for the pending change: wave, halt, window, lock, drain. `true`: the
    /// disruption may happen now (the slot is held, the node drained); `false`: the node waits
    /// ([`Self::status`] says at which gate). Network as the gates need it; writes the state.
    pub async fn request(&mut self, cfg: &RolloutConfig) -> bool {
        for _ in 0..MAX_ROUNDS {
            let d = match self.decide_now(cfg, None).await {
                Ok(d) => d,
                Err(e) => return self.failed(e),
            };
            self.status = d.status;
            if d.steps.is_empty() {
                return false;
            }
            match self.perform(cfg, d.steps).await {
                Ok(Flow::Proceed) => return true,
                Ok(Flow::Again) => continue,
                Ok(Flow::Stop) => return false,
                Err(e) => return self.failed(e),
            }
        }
        false
    }

    /// The verdict of the disruption in flight: uncordon, release the slot, clear or set the
    /// node's failure mark. Network; writes the state.
    pub async fn settle(&mut self, cfg: &RolloutConfig, verdict: gate::Verdict) {
        if !matches!(self.record.phase, Phase::Disrupting { .. }) {
            return;
        }
        let d = match self.decide_now(cfg, Some(verdict)).await {
            Ok(d) => d,
            Err(e) => {
                self.failed(e);
                return;
            }
        };
        self.status = d.status;
        if let Err(e) = self.perform(cfg, d.steps).await {
            self.failed(e);
        }
        if self.record.phase == Phase::Idle {
            self.record.change = None;
            if let Err(e) = self.save() {
                tracing::error!("{e}");
            }
        }
    }

    /// Renews a held slot when a renewal is due; notes a lost one. Network only when due.
    pub async fn renew(&mut self, cfg: &RolloutConfig) {
        if !self.lock_held {
            return;
        }
        let alive = match self.lock_for(cfg) {
            Ok(Some(lock)) => lock.keep_alive().await,
            Ok(None) => Ok(false),
            Err(e) => {
                self.failed(e);
                return;
            }
        };
        match alive {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!("rollout: the slot was lost (broken by another node?)");
                self.lock_held = false;
            }
            Err(e) => {
                self.failed(e);
            }
        }
    }

    /// Periodic upkeep: renews a held slot when due, releases one held for nothing (a crash
    /// between taking and recording it), and lifts a FleetLock hold once the node follows a
    /// newer commit (`head`). Network only when due or needed.
    pub async fn tick(&mut self, cfg: &RolloutConfig, head: Option<&str>) {
        self.renew(cfg).await;
        let idle_with_slot = self.record.change.is_none() && self.lock_held;
        let holding = matches!(self.record.phase, Phase::HoldingFailed { .. });
        if idle_with_slot || holding {
            let phase = self.record.phase.clone();
            let inputs = self.inputs(cfg, head, None, (false, 0, 0));
            let d = gate::decide(&phase, &inputs);
            self.status = d.status;
            if let Err(e) = self.perform(cfg, d.steps).await {
                self.failed(e);
            }
        }
    }

    fn failed(&mut self, e: impl std::fmt::Display) -> bool {
        let msg = e.to_string();
        tracing::warn!("rollout: {msg}");
        self.detail = Some(msg);
        false
    }

    fn inputs<'a>(
        &'a self,
        cfg: &'a RolloutConfig,
        head: Option<&'a str>,
        verdict: Option<gate::Verdict>,
        (unschedulable, pods_left, failures): (bool, usize, u32),
    ) -> Inputs<'a> {
        Inputs {
            config: cfg,
            caps: self.caps(),
            now: now_unix(),
            position: wave::position(&cfg.group, &self.node),
            head,
            pending: self.record.change.as_ref().map(|c| Pending {
                commit: &c.commit,
                committed_at: c.committed_at,
                kind: c.kind,
            }),
            lock_held: self.lock_held,
            unschedulable,
            pods_left,
            failures,
            verdict,
        }
    }

    /// Observes what the current phase needs, then decides. Network only past the wave gate.
    async fn decide_now(
        &mut self,
        cfg: &RolloutConfig,
        verdict: Option<gate::Verdict>,
    ) -> Result<gate::Decision, LockError> {
        let phase = self.record.phase.clone();
        let wave_open = self.record.change.as_ref().is_some_and(|c| {
            let p = Pending {
                commit: &c.commit,
                committed_at: c.committed_at,
                kind: c.kind,
            };
            gate::wave_open(cfg, &p, wave::position(&cfg.group, &self.node), now_unix())
        });
        let mut observed = (false, 0usize, 0u32);
        if let (Some(client), Some(change)) = (&self.kube, &self.record.change) {
            let past_lock = self.lock_held || !self.caps().lock;
            // The halt is looked up only when it could matter now: past the wave, inside a
            // window (a node waiting for its window asks nothing).
            let window_open = crate::config::window::open(&cfg.windows, now_unix());
            if wave_open && window_open && cfg.halt_after_failures > 0 && phase == Phase::Idle {
                let selector = format!("{LABEL_FAILED}={}", short(&change.commit));
                let failed = client.list_nodes(&selector).await?;
                observed.2 = failed
                    .iter()
                    .filter(|n| n.metadata.name != self.node)
                    .count() as u32;
            }
            if past_lock || !matches!(phase, Phase::Idle) {
                let node = client.get_node(&self.node).await?;
                observed.0 = node.spec.unschedulable;
                let pods = client.pods_on_node(&self.node).await?;
                observed.1 = pods.iter().filter(|p| p.needs_eviction()).count();
            }
        }
        let inputs = self.inputs(cfg, None, verdict, observed);
        Ok(gate::decide(&phase, &inputs))
    }

    /// Performs `steps` in order. Network; writes the state.
    async fn perform(&mut self, cfg: &RolloutConfig, steps: Vec<Step>) -> Result<Flow, LockError> {
        let mut flow = Flow::Again;
        for step in steps {
            match step {
                Step::Persist(phase) => {
                    if matches!(phase, Phase::Draining { .. })
                        && !matches!(self.record.phase, Phase::Draining { .. })
                    {
                        // A new drain asks for its evictions at once.
                        self.evicted_at = None;
                    }
                    self.record.phase = phase;
                    if let Err(e) = self.save() {
                        tracing::error!("{e}");
                        return Ok(Flow::Stop);
                    }
                }
                Step::TakeLock => match self
                    .lock_for(cfg)
                    .map_err(|e| LockError::NotReleased(e.to_string()))?
                {
                    Some(lock) => match lock.take().await? {
                        Taken::Yes => {
                            self.lock_held = true;
                            self.detail = None;
                            tracing::info!("rollout: took a slot of group {}", cfg.group);
                        }
                        Taken::No(why) => {
                            self.detail = Some(why);
                            return Ok(Flow::Stop);
                        }
                    },
                    None => self.lock_held = true,
                },
                Step::Cordon => self.patch(NodePatch::unschedulable(true)).await?,
                Step::Uncordon => self.patch(NodePatch::unschedulable(false)).await?,
                Step::Evict => {
                    self.evict().await?;
                    flow = Flow::Stop;
                }
                Step::Proceed => return Ok(Flow::Proceed),
                Step::MarkFailed { commit, reason } => {
                    let mut p = NodePatch::default();
                    p.labels
                        .insert(LABEL_FAILED.into(), Some(short(&commit).to_string()));
                    p.annotations
                        .insert(ANNOTATION_FAILED_REASON.into(), Some(cut(&reason)));
                    self.patch(p).await?;
                }
                Step::ClearFailed => {
                    let mut p = NodePatch::default();
                    p.labels.insert(LABEL_FAILED.into(), None);
                    p.annotations.insert(ANNOTATION_FAILED_REASON.into(), None);
                    self.patch(p).await?;
                }
                Step::ReleaseLock => {
                    if let Some(lock) = self
                        .lock_for(cfg)
                        .map_err(|e| LockError::NotReleased(e.to_string()))?
                    {
                        lock.release().await?;
                    }
                    self.lock_held = false;
                    tracing::info!("rollout: released the slot of group {}", cfg.group);
                }
            }
        }
        Ok(flow)
    }

    async fn patch(&mut self, p: NodePatch) -> Result<(), LockError> {
        if let Some(client) = &self.kube {
            client.patch_node(&self.node, &p).await?;
        }
        Ok(())
    }

    /// Asks once to evict every pod that a drain evicts; a 429 (a PodDisruptionBudget) is
    /// retried at a later request, at most every [`EVICTION_RETRY`]. Network.
    async fn evict(&mut self) -> Result<(), LockError> {
        let Some(client) = &self.kube else {
            return Ok(());
        };
        let now = self.clock.now();
        if self
            .evicted_at
            .is_some_and(|at| now.saturating_duration_since(at) < EVICTION_RETRY)
        {
            return Ok(());
        }
        self.evicted_at = Some(now);
        for pod in client.pods_on_node(&self.node).await? {
            if !pod.needs_eviction() {
                continue;
            }
            let ns = pod.metadata.namespace.clone().unwrap_or_default();
            match client.evict(&ns, &pod.metadata.name).await {
                Ok(()) => self.evictions += 1,
                Err(KubeError::TooManyRequests { .. }) | Err(KubeError::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Publishes `p` on the Node (labels `bosun.dev/commit`, `bosun.dev/state`, annotations
    /// with the OS version and the last error) when it differs from what was published last.
    /// Network only on a change.
    pub async fn publish(&mut self, mut p: Published) {
        p.state = self.status.label().to_string();
        if self.published.as_ref() == Some(&p) || self.kube.is_none() {
            return;
        }
        let mut patch = NodePatch::default();
        let labels = [
            (
                LABEL_COMMIT,
                p.commit.as_deref().map(|c| short(c).to_string()),
            ),
            (LABEL_STATE, Some(p.state.clone())),
        ];
        for (k, v) in labels {
            patch.labels.insert(k.to_string(), v);
        }
        let annotations: BTreeMap<&str, Option<String>> = [
            (ANNOTATION_OS_VERSION, p.os_version.clone()),
            (ANNOTATION_LAST_ERROR, p.last_error.as_deref().map(cut)),
        ]
        .into();
        for (k, v) in annotations {
            patch.annotations.insert(k.to_string(), v);
        }
        match self.patch(patch).await {
            Ok(()) => self.published = Some(p),
            Err(e) => {
                self.failed(e);
            }
        }
    }
}

/// What performing a decision's steps led to.
enum Flow {
    /// Decide again (the phase or the lock changed).
    Again,
    /// Stop for now (waiting: refused lock, evictions asked).
    Stop,
    /// Perform the disruption.
    Proceed,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(commit: &str, at: i64, fingerprint: &str) -> Change {
        Change {
            kind: DisruptionKind::RestartK3s,
            commit: commit.into(),
            committed_at: at,
            fingerprint: fingerprint.into(),
        }
    }

    #[test]
    fn the_same_change_keeps_its_wave_clock_and_follows_the_newest_commit_while_idle() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Rollout::idle("n", dir.path());
        assert_eq!(r.note(change("c1", 100, "f")), change("c1", 100, "f"));
        // A newer commit with the same k3s config: the wave clock stays, the commit is new.
        assert_eq!(r.note(change("c2", 200, "f")), change("c2", 100, "f"));
        // Another change starts its own clock.
        assert_eq!(r.note(change("c3", 300, "g")), change("c3", 300, "g"));
        // Persisted: a restart finds it.
        let again = Rollout::load(
            "n",
            dir.path(),
            dir.path(),
            CoordinationConfig::default(),
            Arc::new(crate::clock::SystemClock),
        )
        .unwrap();
        assert_eq!(again.change(), Some(&change("c3", 300, "g")));
        // While a disruption of c3 is in flight, a newer commit does not change what it is for.
        r.record.phase = Phase::Disrupting {
            commit: "c3".into(),
            kind: DisruptionKind::RestartK3s,
            cordoned: false,
            was_unschedulable: false,
        };
        assert_eq!(r.note(change("c4", 400, "g")), change("c3", 300, "g"));
    }
}
