//! When the loop polls next (pure): the poll interval with jitter, and the backoff after
//! failures.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// First retry delay after a failure.
pub const BACKOFF_BASE: Duration = Duration::from_secs(5);
/// Longest retry delay.
pub const BACKOFF_CAP: Duration = Duration::from_secs(300);

/// Retry delay after `failures` consecutive failures (pure): 5 s, 10 s, 20 s, … capped at 5 min.
pub fn backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    BACKOFF_BASE.saturating_mul(1u32 << exp).min(BACKOFF_CAP)
}

/// The poll delay: `interval` plus up to `jitter_percent` of it, picked by `random` (pure).
pub fn jittered(interval: Duration, jitter_percent: u32, random: u64) -> Duration {
    let span = interval.as_millis() as u64 * u64::from(jitter_percent) / 100;
    if span == 0 {
        return interval;
    }
    interval + Duration::from_millis(random % (span + 1))
}

/// Now, in Unix seconds.
pub(super) fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A random number from the OS (0 if it has none).
pub(super) fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    u64::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_five_seconds_and_caps_at_five_minutes() {
        let got: Vec<u64> = (1..=9).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(got, vec![5, 10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(backoff(u32::MAX), BACKOFF_CAP);
    }

    #[test]
    fn jitter_stays_within_the_percentage() {
        let i = Duration::from_secs(60);
        assert_eq!(jittered(i, 10, 0), i);
        assert_eq!(jittered(i, 10, 6000), Duration::from_secs(66));
        assert_eq!(jittered(i, 10, 6001), i);
        assert_eq!(jittered(i, 0, 12345), i);
        for r in [1u64, 999, 123_456_789, u64::MAX] {
            let d = jittered(i, 10, r);
            assert!(d >= i && d <= Duration::from_secs(66), "{d:?}");
        }
    }
}
