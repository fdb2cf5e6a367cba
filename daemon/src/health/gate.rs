//! The health gate as a pure state machine: no I/O, no clock - time is passed in.
//!
//! Rules:
//! - each check keeps a streak of consecutive successes; a failure resets it to 0;
//! - a check has *passed* while its streak is at least `required`;
//! - the verdict becomes [`Verdict::Healthy`] when every check has passed at the same time
//!   (so a check that passed and then failed must earn its streak again);
//! - a round observed at or after the deadline is not counted, and the verdict becomes
//!   [`Verdict::TimedOut`];
//! - `Healthy` and `TimedOut` are terminal: later rounds change nothing.
//!
//! With zero checks the gate is vacuously healthy on the first round; callers pass the
//! effective checks ([`super::effective_checks`]), which are never empty.

use std::time::{Duration, Instant};

/// Where the gate stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Not all checks have passed yet and the deadline has not passed.
    Pending,
    /// Every check reached the required consecutive successes before the deadline.
    Healthy,
    /// The deadline passed first.
    TimedOut,
}

/// Consecutive-success tracking for a fixed list of checks, with a deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gate {
    required: u32,
    deadline: Instant,
    streaks: Vec<u32>,
    rounds: u32,
    verdict: Verdict,
}

impl Gate {
    /// A gate for `checks` checks, each needing `required` consecutive successes (0 is taken as
    /// 1), that times out `timeout` after `started`.
    pub fn new(checks: usize, required: u32, started: Instant, timeout: Duration) -> Gate {
        Gate {
            required: required.max(1),
            deadline: started + timeout,
            streaks: vec![0; checks],
            rounds: 0,
            verdict: Verdict::Pending,
        }
    }

    /// Records one round of results (`results[i]` is check `i`) observed at `at`.
    /// Panics if `results` does not have one entry per check (a caller bug).
    pub fn record_round(&mut self, results: &[bool], at: Instant) -> Verdict {
        assert_eq!(
            results.len(),
            self.streaks.len(),
            "one result per check expected"
        );
        if self.poll(at) != Verdict::Pending {
            return self.verdict;
        }
        self.rounds += 1;
        for (streak, ok) in self.streaks.iter_mut().zip(results) {
            *streak = if *ok { streak.saturating_add(1) } else { 0 };
        }
        if self.streaks.iter().all(|s| *s >= self.required) {
            self.verdict = Verdict::Healthy;
        }
        self.verdict
    }

    /// The verdict at `now`: turns a pending gate into `TimedOut` once `now` reaches the
    /// deadline.
    pub fn poll(&mut self, now: Instant) -> Verdict {
        if self.verdict == Verdict::Pending && now >= self.deadline {
            self.verdict = Verdict::TimedOut;
        }
        self.verdict
    }

    /// The verdict as of the last [`Self::record_round`] or [`Self::poll`].
    pub fn verdict(&self) -> Verdict {
        self.verdict
    }

    /// Rounds counted so far.
    pub fn rounds(&self) -> u32 {
        self.rounds
    }

    /// Consecutive successes each check needs.
    pub fn required(&self) -> u32 {
        self.required
    }

    /// When the gate times out.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Time left before the deadline (zero once passed).
    pub fn remaining(&self, now: Instant) -> Duration {
        self.deadline.saturating_duration_since(now)
    }

    /// Current consecutive successes of check `i`.
    pub fn streak(&self, i: usize) -> u32 {
        self.streaks[i]
    }

    /// Whether check `i` currently has the required consecutive successes.
    pub fn passed(&self, i: usize) -> bool {
        self.streaks[i] >= self.required
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t0: Instant, secs: u64) -> Instant {
        t0 + Duration::from_secs(secs)
    }

    #[test]
    fn healthy_after_required_consecutive_successes_of_every_check() {
        let t0 = Instant::now();
        let mut g = Gate::new(2, 3, t0, Duration::from_secs(100));
        assert_eq!(g.record_round(&[true, false], at(t0, 0)), Verdict::Pending);
        assert_eq!(g.record_round(&[true, true], at(t0, 5)), Verdict::Pending);
        assert_eq!(g.record_round(&[true, true], at(t0, 10)), Verdict::Pending);
        assert!(g.passed(0));
        assert!(!g.passed(1));
        assert_eq!(g.streak(1), 2);
        assert_eq!(g.record_round(&[true, true], at(t0, 15)), Verdict::Healthy);
        assert_eq!(g.rounds(), 4);
    }

    #[test]
    fn a_failure_resets_the_streak_even_after_passing() {
        let t0 = Instant::now();
        let mut g = Gate::new(2, 2, t0, Duration::from_secs(100));
        g.record_round(&[true, false], at(t0, 0));
        g.record_round(&[true, false], at(t0, 1));
        assert!(g.passed(0));
        assert_eq!(g.record_round(&[false, true], at(t0, 2)), Verdict::Pending);
        assert_eq!(g.streak(0), 0);
        assert!(!g.passed(0));
        assert_eq!(g.record_round(&[true, true], at(t0, 3)), Verdict::Pending);
        assert_eq!(g.record_round(&[true, true], at(t0, 4)), Verdict::Healthy);
    }

    #[test]
    fn alternating_results_never_pass_when_two_or_more_are_required() {
        let t0 = Instant::now();
        let mut g = Gate::new(1, 2, t0, Duration::from_secs(1000));
        for i in 0..100 {
            assert_eq!(
                g.record_round(&[i % 2 == 0], at(t0, i)),
                Verdict::Pending,
                "round {i}"
            );
        }
    }

    #[test]
    fn times_out_at_the_deadline_and_ignores_late_rounds() {
        let t0 = Instant::now();
        let mut g = Gate::new(1, 2, t0, Duration::from_secs(10));
        assert_eq!(g.record_round(&[true], at(t0, 9)), Verdict::Pending);
        assert_eq!(g.poll(at(t0, 9)), Verdict::Pending);
        // Would make the streak 2, but it was observed at the deadline.
        assert_eq!(g.record_round(&[true], at(t0, 10)), Verdict::TimedOut);
        assert_eq!(g.streak(0), 1);
        assert_eq!(g.rounds(), 1);
        assert_eq!(g.remaining(at(t0, 12)), Duration::ZERO);
    }

    #[test]
    fn terminal_verdicts_stay() {
        let t0 = Instant::now();
        let mut g = Gate::new(1, 1, t0, Duration::from_secs(10));
        assert_eq!(g.record_round(&[true], at(t0, 1)), Verdict::Healthy);
        assert_eq!(g.record_round(&[false], at(t0, 2)), Verdict::Healthy);
        assert_eq!(g.poll(at(t0, 60)), Verdict::Healthy);

        let mut g = Gate::new(1, 1, t0, Duration::from_secs(10));
        assert_eq!(g.poll(at(t0, 11)), Verdict::TimedOut);
        assert_eq!(g.record_round(&[true], at(t0, 1)), Verdict::TimedOut);
    }

    #[test]
    fn zero_required_means_one() {
        let t0 = Instant::now();
        let mut g = Gate::new(1, 0, t0, Duration::from_secs(10));
        assert_eq!(g.required(), 1);
        assert_eq!(g.record_round(&[false], at(t0, 1)), Verdict::Pending);
        assert_eq!(g.record_round(&[true], at(t0, 2)), Verdict::Healthy);
    }
}
