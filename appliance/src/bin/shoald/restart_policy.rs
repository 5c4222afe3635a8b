//! When to restart a failed child, and when to give up on it.
//!
//! Restarts back off exponentially from `restart_backoff_initial_ms` to
//! `restart_backoff_max_ms`. A child that ran for [`STABLE_RUN`] before
//! failing starts again at the initial delay. More than `crash_loop_limit`
//! failures within `crash_loop_window_s` mark the cluster failed: restarting
//! a binary that cannot start only burns the CPU the healthy clusters need.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use shoal_appliance::config::SupervisorConfig;

/// A child that ran this long before failing is considered to have been
/// healthy: its next restart uses the initial backoff again.
pub const STABLE_RUN: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Start again after this delay.
    RestartAfter(Duration),
    /// Too many failures in the window; stop restarting.
    GiveUp,
}

#[derive(Debug, Clone)]
pub struct RestartPolicy {
    initial: Duration,
    max: Duration,
    limit: u32,
    window: Duration,
    failures: VecDeque<Instant>,
    consecutive: u32,
}

impl RestartPolicy {
    pub fn new(config: &SupervisorConfig) -> Self {
        Self {
            initial: Duration::from_millis(config.restart_backoff_initial_ms),
            max: Duration::from_millis(config.restart_backoff_max_ms),
            limit: config.crash_loop_limit,
            window: Duration::from_secs(config.crash_loop_window_s),
            failures: VecDeque::new(),
            consecutive: 0,
        }
    }

    /// Records a failure at `now` of a child that had run for `ran_for`.
    pub fn on_failure(&mut self, now: Instant, ran_for: Duration) -> Verdict {
        if ran_for >= STABLE_RUN {
            self.consecutive = 0;
        }
        self.failures.push_back(now);
        while let Some(&oldest) = self.failures.front() {
            if now.duration_since(oldest) > self.window {
                self.failures.pop_front();
            } else {
                break;
            }
        }
        if self.failures.len() > self.limit as usize {
            return Verdict::GiveUp;
        }
        let delay = self
            .initial
            .checked_mul(1u32 << self.consecutive.min(20))
            .unwrap_or(self.max)
            .min(self.max);
        self.consecutive += 1;
        Verdict::RestartAfter(delay)
    }

    /// Forgets past failures (an operator asked for a restart).
    pub fn reset(&mut self) {
        self.failures.clear();
        self.consecutive = 0;
    }

    /// Failures inside the current window.
    pub fn recent_failures(&self) -> usize {
        self.failures.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(limit: u32) -> RestartPolicy {
        RestartPolicy::new(&SupervisorConfig {
            restart_backoff_initial_ms: 100,
            restart_backoff_max_ms: 1000,
            crash_loop_limit: limit,
            crash_loop_window_s: 60,
            ..Default::default()
        })
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let mut p = policy(100);
        let now = Instant::now();
        let delays: Vec<_> = (0..6)
            .map(|_| match p.on_failure(now, Duration::ZERO) {
                Verdict::RestartAfter(d) => d.as_millis(),
                Verdict::GiveUp => panic!("limit not reached"),
            })
            .collect();
        assert_eq!(delays, vec![100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn crash_loop_gives_up_after_the_limit() {
        let mut p = policy(3);
        let now = Instant::now();
        for _ in 0..3 {
            assert!(matches!(
                p.on_failure(now, Duration::ZERO),
                Verdict::RestartAfter(_)
            ));
        }
        assert_eq!(p.on_failure(now, Duration::ZERO), Verdict::GiveUp);
        p.reset();
        assert!(matches!(
            p.on_failure(now, Duration::ZERO),
            Verdict::RestartAfter(_)
        ));
    }

    #[test]
    fn failures_outside_the_window_are_forgotten() {
        let mut p = policy(2);
        let start = Instant::now();
        p.on_failure(start, Duration::ZERO);
        p.on_failure(start, Duration::ZERO);
        let later = start + Duration::from_secs(61);
        assert!(matches!(
            p.on_failure(later, Duration::ZERO),
            Verdict::RestartAfter(_)
        ));
        assert_eq!(p.recent_failures(), 1);
    }

    #[test]
    fn a_stable_run_resets_the_backoff() {
        let mut p = policy(100);
        let now = Instant::now();
        p.on_failure(now, Duration::ZERO);
        p.on_failure(now, Duration::ZERO);
        assert_eq!(
            p.on_failure(now, STABLE_RUN),
            Verdict::RestartAfter(Duration::from_millis(100))
        );
    }
}
