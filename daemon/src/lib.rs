//! bosun: a GitOps node daemon for K3s fleets.
//!
//! The crate is organised along the data flow described in `docs/ARCHITECTURE.md`:
//! source → snapshot → layers → config → desired state → plan → apply → effects → health.
//! Pure parts (config merge, rendering, plan, the upgrade state machine, boot-env codecs)
//! do no I/O; every side effect sits behind a small trait.

pub mod agent;
pub mod apply;
pub mod bootenv;
pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod desired;
pub mod disruption;
pub mod drift;
pub mod error_chain;
pub mod fleetlock;
pub mod fsroot;
pub mod glob;
pub mod guarded_apply;
pub mod health;
pub mod image;
pub mod init;
pub mod keys;
pub mod kube;
pub mod memory;
pub mod metrics;
pub mod netpolicy;
pub mod node;
pub mod plan;
pub mod reconcile;
pub mod render;
pub mod repo_check;
pub mod rollout;
pub mod runner;
pub mod service;
pub mod snapshot;
pub mod source;
pub mod stamps;
pub mod statefile;
pub mod status;
pub mod testing;
pub mod upgrade;
