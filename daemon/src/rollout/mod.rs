//! Fleet-safe rollouts: the gates a node passes before a disruptive action (a k3s restart for
//! a config change, an A/B reboot) so that one commit never disrupts the whole fleet at once.
//!
//! - the `rollout:` block of the Git config is typed and parsed in [`crate::config::rollout`]
//!   (policy lives in Git, next to the rest of the node's config), its weekly maintenance
//!   windows in [`crate::config::window`] (UTC or fixed offsets);
//! - [`wave`]: the node's position (SHA-256 of group and name) and its wave's start time
//!   (committer time of the commit + `after`; canaries first);
//! - [`gate`]: the pure decision over wave, halt, window, lock and drain, returning ordered
//!   steps (power-cut safe, unit-tested like `upgrade::machine::decide`);
//! - [`lease_lock`]: the counting semaphore over `coordination.k8s.io/v1` Leases (I/O through
//!   [`crate::kube::Client`]; expiry judged on the local clock only);
//! - [`lock`]: the lock backends behind one trait (Leases, FleetLock);
//! - [`coordination`]: the agent config's `coordination:` section (backend, kubeconfig);
//! - [`driver`]: performs the gates' steps, publishes the node's rollout state on its Node.
//!
//! Everything but `lease_lock` and `lock` is pure.

pub mod coordination;
pub mod driver;
pub mod gate;
pub mod lease_lock;
pub mod lock;
pub mod wave;

pub use gate::{
    decide, Capabilities, Decision, DisruptionKind, Inputs, Pending, Phase, Status, Step, Verdict,
};
