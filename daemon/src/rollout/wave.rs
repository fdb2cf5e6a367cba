//! Waves: when a node may start a change, decided by the node alone. A node's position is
//! SHA-256(group, node name) mapped to [0, 1), so it is stable across restarts and machines
//! and spread evenly over the fleet; its wave is the first whose cumulative percentage exceeds
//! its position, and the wave's clock starts at the committer time of the (signed) commit
//! that introduced the change. Canaries start at the commit time, before every wave. Pure.

use sha2::{Digest, Sha256};

use crate::config::rollout::RolloutConfig;

/// The node's position in [0, 1): the first 53 bits of SHA-256(group ‖ 0 ‖ node) as a
/// fraction. Pure.
pub fn position(group: &str, node: &str) -> f64 {
    let mut h = Sha256::new();
    h.update(group.as_bytes());
    h.update([0u8]);
    h.update(node.as_bytes());
    let d = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&d[..8]);
    (u64::from_be_bytes(first) >> 11) as f64 / (1u64 << 53) as f64
}

/// Unix seconds at which a node at `position` may start the change of a commit made at
/// `committed_at`. Pure.
pub fn start(cfg: &RolloutConfig, committed_at: i64, position: f64) -> i64 {
    if cfg.canary {
        return committed_at;
    }
    let after = cfg
        .waves
        .iter()
        .find(|w| position < w.percent / 100.0)
        .or(cfg.waves.last())
        .map_or(0, |w| w.after.as_secs() as i64);
    committed_at.saturating_add(after)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::rollout::Wave;
    use std::time::Duration;

    fn waves() -> RolloutConfig {
        RolloutConfig {
            waves: vec![
                Wave {
                    after: Duration::ZERO,
                    percent: 5.0,
                },
                Wave {
                    after: Duration::from_secs(1800),
                    percent: 25.0,
                },
                Wave {
                    after: Duration::from_secs(7200),
                    percent: 100.0,
                },
            ],
            ..RolloutConfig::default()
        }
    }

    #[test]
    fn position_is_stable_and_depends_on_group_and_name() {
        let p = position("default", "edge-01");
        assert_eq!(p, position("default", "edge-01"));
        assert!((0.0..1.0).contains(&p));
        assert_ne!(p, position("default", "edge-02"));
        assert_ne!(p, position("other", "edge-01"));
        // The separator keeps ("ab", "c") and ("a", "bc") apart.
        assert_ne!(position("ab", "c"), position("a", "bc"));
        // Known value: a change of the hash input or mapping would move every node.
        let d = Sha256::digest(b"default\0edge-01");
        let want = (u64::from_be_bytes(d[..8].try_into().unwrap()) >> 11) as f64 / 2f64.powi(53);
        assert_eq!(p, want);
    }

    #[test]
    fn positions_spread_evenly() {
        let n = 10_000;
        let below = (0..n)
            .filter(|i| position("default", &format!("node-{i}")) < 0.25)
            .count();
        // 25% ± 2% of 10,000 (the binomial standard deviation is 0.43%).
        assert!((2300..2700).contains(&below), "{below}");
    }

    #[test]
    fn wave_start_follows_cumulative_percentages() {
        let cfg = waves();
        let t = 1_700_000_000;
        assert_eq!(start(&cfg, t, 0.0), t);
        assert_eq!(start(&cfg, t, 0.049), t);
        assert_eq!(start(&cfg, t, 0.05), t + 1800);
        assert_eq!(start(&cfg, t, 0.2499), t + 1800);
        assert_eq!(start(&cfg, t, 0.25), t + 7200);
        assert_eq!(start(&cfg, t, 0.9999), t + 7200);
        // Canaries go at the commit time, whatever their position.
        let canary = RolloutConfig {
            canary: true,
            ..cfg
        };
        assert_eq!(start(&canary, t, 0.99), t);
        // No waves: everyone at the commit time.
        assert_eq!(start(&RolloutConfig::default(), t, 0.7), t);
    }
}
