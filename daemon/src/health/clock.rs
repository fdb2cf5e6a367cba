//! The time seam of the health driver: "now" and "sleep" behind [`Clock`], so the driver can
//! be run in tests on a [`ManualClock`] that advances instantly instead of sleeping.
//!
//! Invariant: `now()` is monotonic for both implementations.

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A monotonic clock with an async sleep.
pub trait Clock: Send + Sync {
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

/// Virtual time: starts at the moment it is created, and only moves when [`ManualClock::advance`]
/// or `sleep` is called (sleep returns at once after advancing).
#[derive(Debug)]
pub struct ManualClock {
    start: Instant,
    elapsed: Mutex<Duration>,
}

impl ManualClock {
    pub fn new() -> Self {
        ManualClock {
            start: Instant::now(),
            elapsed: Mutex::new(Duration::ZERO),
        }
    }

    /// Moves virtual time forward by `d`.
    pub fn advance(&self, d: Duration) {
        *self.elapsed.lock().unwrap_or_else(|e| e.into_inner()) += d;
    }

    /// Virtual time passed since creation.
    pub fn elapsed(&self) -> Duration {
        *self.elapsed.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.start + self.elapsed()
    }

    fn sleep(&self, d: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        self.advance(d);
        Box::pin(std::future::ready(()))
    }
}
