//! The time seam: "now" and "sleep" behind [`Clock`], so drivers that wait (the health gate)
//! can be run in tests on a virtual clock (`crate::testing::ManualClock`) that advances
//! instantly instead of sleeping.
//!
//! Invariant: `now()` is monotonic for both implementations.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

/// A monotonic clock with an async sleep.
pub trait Clock: Send + Sync {
    /// The current instant (monotonic).
    fn now(&self) -> Instant;
    /// Waits `d` (real or virtual time, depending on the clock).
    fn sleep(&self, d: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

/// The real clock: [`Instant::now`] and `tokio::time::sleep`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn sleep(&self, d: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(tokio::time::sleep(d))
    }
}
