//! The lock backends behind one trait, so the rollout driver does not care where the slots
//! live: [`LeaseSemaphore`] (Kubernetes Leases in the node's own cluster) or a FleetLock
//! server ([`FleetLockSlot`], airlock and friends).
//!
//! Every method is idempotent: taking a held slot keeps it, releasing an unheld one does
//! nothing, so a driver that crashed between a step and its record simply repeats it.

use std::future::Future;
use std::pin::Pin;

use crate::fleetlock::{self, Answer, FleetLockError};
use crate::kube::KubeError;

use super::lease_lock::{LeaseSemaphore, Take};

/// A boxed future of a lock call.
pub type LockFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, LockError>> + Send + 'a>>;

/// A lock backend failed to answer (not a refusal: those are [`Taken::No`]).
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// The Kubernetes API failed.
    #[error(transparent)]
    Kube(#[from] KubeError),
    /// The FleetLock server could not be reached.
    #[error(transparent)]
    FleetLock(#[from] FleetLockError),
    /// The FleetLock server did not accept the release (answered other than 200).
    #[error("FleetLock steady-state refused: {0}")]
    NotReleased(String),
}

/// The answer to a take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Taken {
    /// This node holds a slot now.
    Yes,
    /// Every slot is taken; why, for the status.
    No(String),
}

/// A slot of the group's semaphore.
pub trait SlotLock: Send {
    /// Takes a slot (or keeps the one held). Network.
    fn take(&mut self) -> LockFuture<'_, Taken>;
    /// Keeps a held slot alive when a renewal is due; `false` when it was lost. Network only
    /// when due.
    fn keep_alive(&mut self) -> LockFuture<'_, bool>;
    /// Gives the slot back. Network.
    fn release(&mut self) -> LockFuture<'_, ()>;
    /// At start-up: whether this node holds a slot. `believed_held` is what the persisted
    /// rollout phase says; backends that can look it up (Leases) do, others confirm the
    /// belief idempotently. Network.
    fn recover(&mut self, believed_held: bool) -> LockFuture<'_, bool>;
}

impl SlotLock for LeaseSemaphore {
    fn take(&mut self) -> LockFuture<'_, Taken> {
        Box::pin(async move {
            Ok(match LeaseSemaphore::take(self).await? {
                Take::Held { .. } => Taken::Yes,
                Take::AllTaken(holders) => {
                    Taken::No(format!("every slot is held (by {})", holders.join(", ")))
                }
            })
        })
    }

    fn keep_alive(&mut self) -> LockFuture<'_, bool> {
        Box::pin(async move {
            if self.held().is_none() {
                return Ok(false);
            }
            if !self.renew_due() {
                return Ok(true);
            }
            Ok(self.renew().await?)
        })
    }

    fn release(&mut self) -> LockFuture<'_, ()> {
        Box::pin(async move { Ok(LeaseSemaphore::release(self).await?) })
    }

    fn recover(&mut self, _believed_held: bool) -> LockFuture<'_, bool> {
        Box::pin(async move { Ok(LeaseSemaphore::recover(self).await?.is_some()) })
    }
}

/// A FleetLock slot. FleetLock has no TTL: a slot is held until steady-state, so nothing is
/// renewed and no request is made while idle.
#[derive(Debug)]
pub struct FleetLockSlot {
    client: fleetlock::Client,
    held: bool,
}

impl FleetLockSlot {
    /// A slot through `client`.
    pub fn new(client: fleetlock::Client) -> FleetLockSlot {
        FleetLockSlot {
            client,
            held: false,
        }
    }
}

impl SlotLock for FleetLockSlot {
    fn take(&mut self) -> LockFuture<'_, Taken> {
        Box::pin(async move {
            Ok(match self.client.pre_reboot().await? {
                Answer::Granted => {
                    self.held = true;
                    Taken::Yes
                }
                Answer::NotYet(r) => Taken::No(format!("FleetLock pre-reboot: {r}")),
            })
        })
    }

    fn keep_alive(&mut self) -> LockFuture<'_, bool> {
        let held = self.held;
        Box::pin(async move { Ok(held) })
    }

    fn release(&mut self) -> LockFuture<'_, ()> {
        Box::pin(async move {
            match self.client.steady_state().await? {
                Answer::Granted => {
                    self.held = false;
                    Ok(())
                }
                Answer::NotYet(r) => Err(LockError::NotReleased(r.to_string())),
            }
        })
    }

    fn recover(&mut self, believed_held: bool) -> LockFuture<'_, bool> {
        Box::pin(async move {
            // Asking without believing it held would take a slot; re-locking a held one is
            // answered 200 by the servers (idempotent).
            if !believed_held {
                self.held = false;
                return Ok(false);
            }
            self.held = matches!(self.client.pre_reboot().await?, Answer::Granted);
            Ok(self.held)
        })
    }
}
