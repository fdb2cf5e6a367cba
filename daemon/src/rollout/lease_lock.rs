//! The group's counting semaphore over `coordination.k8s.io/v1` Leases: `max_unavailable`
//! Leases named `bosun-<group>-<i>` in one namespace, each a slot.
//!
//! - take = create a Lease (`409 AlreadyExists` = that slot is taken, try the next);
//! - renew = update the held Lease with its resourceVersion (every third of the TTL; `409`
//!   or `404` = the slot was lost);
//! - release = delete the held Lease with a uid + resourceVersion precondition (so a slot
//!   that another node broke and took is never deleted);
//! - break = when every slot is taken, a holder whose Lease did not change for `lock_ttl`
//!   **as measured on this node's monotonic clock** is replaced, by an update carrying the
//!   resourceVersion this node observed (so two breakers cannot both win).
//!
//! Expiry follows client-go's leader election: the remote `renewTime` is never compared with
//! the local clock (clocks across a fleet disagree); instead this node records when it first
//! saw each resourceVersion ([`Observer`]) and only a version unchanged for the TTL since then
//! counts as expired. A node that just started has seen nothing yet, so it waits a full TTL
//! before breaking anything. The TTL used is the larger of `lock_ttl` and the Lease's own
//! `leaseDurationSeconds`, so a holder with a longer TTL (a config rolling out) is not broken
//! early.
//!
//! A node that boots holding a slot (a trial reboot) finds it again with [`LeaseSemaphore::recover`]
//! (its holder identity is the node name).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::clock::Clock;
use crate::kube::types::micro_time;
use crate::kube::{Client, KubeError, Lease, LeaseSpec, Preconditions};

/// The Lease name of slot `i` of `group`.
pub fn lease_name(group: &str, i: u32) -> String {
    format!("bosun-{group}-{i}")
}

/// When this node saw each Lease's resourceVersion change (local monotonic clock). Pure.
#[derive(Debug, Default, Clone)]
pub struct Observer {
    seen: HashMap<String, (String, Instant)>,
}

impl Observer {
    /// Records that Lease `name` has resourceVersion `rv` at `now`; returns how long it has
    /// been unchanged (zero when it just changed or was never seen).
    pub fn observe(&mut self, name: &str, rv: &str, now: Instant) -> Duration {
        match self.seen.get(name) {
            Some((seen_rv, at)) if seen_rv == rv => now.saturating_duration_since(*at),
            _ => {
                self.seen.insert(name.to_string(), (rv.to_string(), now));
                Duration::ZERO
            }
        }
    }

    /// Forgets Lease `name` (deleted, or taken by this node).
    pub fn forget(&mut self, name: &str) {
        self.seen.remove(name);
    }
}

/// The result of [`LeaseSemaphore::take`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Take {
    /// This node holds slot `slot` now (newly taken, adopted, or broken free).
    Held {
        /// Slot index.
        slot: u32,
        /// It was taken from a holder that stopped renewing (that holder's name).
        broke: Option<String>,
    },
    /// Every slot is held by another node (their names).
    AllTaken(Vec<String>),
}

/// The slot this node holds.
#[derive(Debug, Clone)]
struct Held {
    slot: u32,
    lease: Lease,
    renewed_at: Instant,
}

/// One node's view of its group's semaphore.
pub struct LeaseSemaphore {
    client: Client,
    namespace: String,
    group: String,
    slots: u32,
    identity: String,
    ttl: Duration,
    clock: Arc<dyn Clock>,
    observer: Observer,
    held: Option<Held>,
}

impl std::fmt::Debug for LeaseSemaphore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseSemaphore")
            .field("namespace", &self.namespace)
            .field("group", &self.group)
            .field("slots", &self.slots)
            .field("identity", &self.identity)
            .field("held", &self.held.as_ref().map(|h| h.slot))
            .finish_non_exhaustive()
    }
}

impl LeaseSemaphore {
    /// A semaphore of `slots` Leases for `group` in `namespace`, held as `identity` (the node
    /// name), breaking holders silent for `ttl` on `clock`.
    pub fn new(
        client: Client,
        namespace: &str,
        group: &str,
        slots: u32,
        identity: &str,
        ttl: Duration,
        clock: Arc<dyn Clock>,
    ) -> LeaseSemaphore {
        LeaseSemaphore {
            client,
            namespace: namespace.to_string(),
            group: group.to_string(),
            slots: slots.max(1),
            identity: identity.to_string(),
            ttl,
            clock,
            observer: Observer::default(),
            held: None,
        }
    }

    /// The slot held, if any (as last seen; [`Self::renew`] checks it).
    pub fn held(&self) -> Option<u32> {
        self.held.as_ref().map(|h| h.slot)
    }

    /// Whether a renewal is due (a third of the TTL since the last one).
    pub fn renew_due(&self) -> bool {
        self.held.as_ref().is_some_and(|h| {
            self.clock.now().saturating_duration_since(h.renewed_at) >= self.ttl / 3
        })
    }

    fn spec(&self, transitions: i64) -> LeaseSpec {
        let now = micro_time(SystemTime::now());
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.ttl.as_secs() as i64),
            acquire_time: Some(now.clone()),
            renew_time: Some(now),
            lease_transitions: Some(transitions),
        }
    }

    fn adopt(&mut self, slot: u32, lease: Lease) {
        self.observer.forget(&lease.metadata.name);
        self.held = Some(Held {
            slot,
            lease,
            renewed_at: self.clock.now(),
        });
    }

    /// Looks for a slot this node already holds (after a restart or a trial reboot) and adopts
    /// it. Network: one GET per slot until found.
    pub async fn recover(&mut self) -> Result<Option<u32>, KubeError> {
        for slot in 0..self.slots {
            let name = lease_name(&self.group, slot);
            match self.client.get_lease(&self.namespace, &name).await {
                Ok(l) if l.holder() == Some(self.identity.as_str()) => {
                    self.adopt(slot, l);
                    return Ok(Some(slot));
                }
                Ok(_) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        self.held = None;
        Ok(None)
    }

    /// Takes a slot: create, else adopt one held by this node or left without a holder, else
    /// break one whose holder stopped renewing. Idempotent: with a slot held it renews it.
    /// Network: up to two requests per slot.
    pub async fn take(&mut self) -> Result<Take, KubeError> {
        if let Some(slot) = self.held() {
            if self.renew().await? {
                return Ok(Take::Held { slot, broke: None });
            }
        }
        let mut holders = Vec::new();
        for slot in 0..self.slots {
            let name = lease_name(&self.group, slot);
            let fresh = Lease::new(&self.namespace, &name, self.spec(0));
            match self.client.create_lease(&fresh).await {
                Ok(l) => {
                    self.adopt(slot, l);
                    return Ok(Take::Held { slot, broke: None });
                }
                Err(KubeError::AlreadyExists { .. }) => {}
                Err(e) => return Err(e),
            }
            let current = match self.client.get_lease(&self.namespace, &name).await {
                Ok(l) => l,
                // Released between our create and get: the next take tries it again.
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e),
            };
            if let Some(taken) = self.claim(slot, current, &mut holders).await? {
                return Ok(taken);
            }
        }
        Ok(Take::AllTaken(holders))
    }

    /// Claims existing Lease `current` of `slot` when it is this node's, has no holder, or its
    /// holder stopped renewing; otherwise records its holder in `holders`.
    async fn claim(
        &mut self,
        slot: u32,
        current: Lease,
        holders: &mut Vec<String>,
    ) -> Result<Option<Take>, KubeError> {
        let name = current.metadata.name.clone();
        let holder = current.holder().map(str::to_string);
        if holder.as_deref() == Some(self.identity.as_str()) {
            self.adopt(slot, current);
            return Ok(Some(Take::Held { slot, broke: None }));
        }
        let rv = current
            .metadata
            .resource_version
            .clone()
            .unwrap_or_default();
        let unchanged = self.observer.observe(&name, &rv, self.clock.now());
        let ttl = current.spec.lease_duration_seconds.map_or(self.ttl, |s| {
            self.ttl.max(Duration::from_secs(s.max(0) as u64))
        });
        if holder.is_some() && unchanged < ttl {
            holders.extend(holder);
            return Ok(None);
        }
        let mut next = current.clone();
        next.spec = self.spec(current.spec.lease_transitions.unwrap_or(0) + 1);
        match self.client.update_lease(&next).await {
            Ok(l) => {
                self.adopt(slot, l);
                Ok(Some(Take::Held {
                    slot,
                    broke: holder,
                }))
            }
            // Another node broke it first, or the holder renewed just now.
            Err(KubeError::Conflict { .. } | KubeError::NotFound { .. }) => {
                holders.extend(holder);
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Renews the held slot (update with its resourceVersion). `Ok(false)`: the slot was lost
    /// (broken by another node, or deleted) or none is held. Network: one request.
    pub async fn renew(&mut self) -> Result<bool, KubeError> {
        let Some(h) = self.held.as_ref() else {
            return Ok(false);
        };
        let mut next = h.lease.clone();
        next.spec.renew_time = Some(micro_time(SystemTime::now()));
        next.spec.lease_duration_seconds = Some(self.ttl.as_secs() as i64);
        match self.client.update_lease(&next).await {
            Ok(l) => {
                let slot = h.slot;
                self.held = Some(Held {
                    slot,
                    lease: l,
                    renewed_at: self.clock.now(),
                });
                Ok(true)
            }
            Err(KubeError::Conflict { .. } | KubeError::NotFound { .. }) => {
                self.held = None;
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Gives the held slot back: deletes the Lease unless it changed since this node last
    /// wrote it. Idempotent; without a known slot it first looks for one ([`Self::recover`]).
    /// Network: one request (plus the lookup).
    pub async fn release(&mut self) -> Result<(), KubeError> {
        if self.held.is_none() {
            self.recover().await?;
        }
        let Some(h) = self.held.take() else {
            return Ok(());
        };
        let pre = Preconditions {
            uid: h.lease.metadata.uid.clone(),
            resource_version: h.lease.metadata.resource_version.clone(),
        };
        match self
            .client
            .delete_lease(&self.namespace, &h.lease.metadata.name, &pre)
            .await
        {
            Ok(()) | Err(KubeError::NotFound { .. } | KubeError::Conflict { .. }) => Ok(()),
            Err(e) => {
                self.held = Some(h);
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observer_measures_unchanged_time_on_the_local_clock() {
        let t0 = Instant::now();
        let mut o = Observer::default();
        // First sight: unchanged for zero, whatever the remote renewTime says.
        assert_eq!(o.observe("l", "5", t0), Duration::ZERO);
        assert_eq!(
            o.observe("l", "5", t0 + Duration::from_secs(30)),
            Duration::from_secs(30)
        );
        // A renewal (new resourceVersion) restarts the count.
        assert_eq!(
            o.observe("l", "6", t0 + Duration::from_secs(40)),
            Duration::ZERO
        );
        assert_eq!(
            o.observe("l", "6", t0 + Duration::from_secs(100)),
            Duration::from_secs(60)
        );
        o.forget("l");
        assert_eq!(
            o.observe("l", "6", t0 + Duration::from_secs(200)),
            Duration::ZERO
        );
    }

    #[test]
    fn lease_names() {
        assert_eq!(lease_name("default", 0), "bosun-default-0");
        assert!(crate::kube::check_name("lease", &lease_name(&"g".repeat(63), 99)).is_ok());
    }
}
