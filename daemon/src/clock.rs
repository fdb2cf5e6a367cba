//! The time seam: "now" and "sleep" behind [`Clock`], so drivers that wait (the health gate)
//! can be run in tests on a virtual clock (`crate::testing::ManualClock`) that advances
//! instantly instead of sleeping.
//!
//! Invariant: `now()` is monotonic for both implementations.
//!
//! Also how wall-clock times are shown: [`utc_rfc3339`] (no date crate for one format).

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

/// Unix seconds as an RFC 3339 UTC timestamp, `YYYY-MM-DDTHH:MM:SSZ` (proleptic Gregorian
/// calendar, the days-from-civil algorithm of H. Hinnant). Pure.
pub fn utc_rfc3339(unix: u64) -> String {
    let (days, secs) = (unix / 86_400, unix % 86_400);
    // Shift the epoch to 0000-03-01, so leap days end each 400-year era's years.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3_600,
        secs % 3_600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::utc_rfc3339;

    #[test]
    fn rfc3339_over_leap_days_and_centuries() {
        for (t, want) in [
            (0, "1970-01-01T00:00:00Z"),
            (951_782_400, "2000-02-29T00:00:00Z"),
            (951_868_799, "2000-02-29T23:59:59Z"),
            (1_709_210_096, "2024-02-29T12:34:56Z"),
            (4_107_542_399, "2100-02-28T23:59:59Z"),
            (4_107_542_400, "2100-03-01T00:00:00Z"),
            (253_402_300_799, "9999-12-31T23:59:59Z"),
        ] {
            assert_eq!(utc_rfc3339(t), want, "{t}");
        }
    }
}
