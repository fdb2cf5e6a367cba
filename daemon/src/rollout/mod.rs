//! Fleet-safe rollouts: the gates a node passes before a disruptive action (a k3s restart for
//! a config change, an A/B reboot) so that one commit never disrupts the whole fleet at once.
//!
//! - [`config`]: the `rollout:` block of the Git config (typed, with a parser that reports
//!   file:line:column and field);
//! - [`wave`]: the node's position (SHA-256 of group and name) and its wave's start time
//!   (committer time of the commit + `after`; canaries first);
//! - [`window`]: weekly maintenance windows (UTC or fixed offsets);
//! - [`gate`]: the pure decision over wave, halt, window, lock and drain, returning ordered
//!   steps (power-cut safe, unit-tested like `upgrade::machine::decide`);
//! - [`lease_lock`]: the counting semaphore over `coordination.k8s.io/v1` Leases (I/O through
//!   [`crate::kube::Client`]; expiry judged on the local clock only);
//! - [`lock`]: the lock backends behind one trait (Leases, FleetLock).
//!
//! Everything but `lease_lock` and `lock` is pure.

pub mod config;
pub mod gate;
pub mod lease_lock;
pub mod lock;
pub mod wave;
pub mod window;

pub use config::RolloutConfig;
pub use gate::{
    decide, Capabilities, Decision, DisruptionKind, Inputs, Pending, Phase, Status, Step, Verdict,
};
