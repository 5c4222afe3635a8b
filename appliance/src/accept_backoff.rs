//! Pacing an accept loop after `accept` fails.
//!
//! When the process is out of file descriptors (EMFILE, ENFILE) or the
//! kernel of memory (ENOBUFS, ENOMEM), the pending connection stays in the
//! backlog and `accept` fails again at once: retrying without a pause spins
//! a core and, logging each failure, fills the disk. Each listener's loop
//! keeps one of these: it sleeps [`FIRST_PAUSE`] after a failure, doubling
//! up to [`LONGEST_PAUSE`], and logs once per episode (the first failure,
//! then one line when accepting works again).

use std::time::Duration;

/// The pause after the first failed accept of an episode.
pub const FIRST_PAUSE: Duration = Duration::from_millis(100);
/// The longest pause between retries: how long a listener may stay deaf
/// after descriptors come free again.
pub const LONGEST_PAUSE: Duration = Duration::from_secs(1);

/// One listener's accept-failure state.
#[derive(Debug)]
pub struct AcceptBackoff {
    /// Named in log lines ("NBD", "NVMe/TCP", "JSON-RPC").
    listener: &'static str,
    /// The next pause, while an episode lasts.
    next_pause: Option<Duration>,
    /// Failures in this episode, for the recovery line.
    failures: u64,
}

impl AcceptBackoff {
    pub fn new(listener: &'static str) -> Self {
        Self {
            listener,
            next_pause: None,
            failures: 0,
        }
    }

    /// `accept` failed with `error`: logs if this starts an episode, then
    /// sleeps the episode's current pause.
    pub async fn failed(&mut self, error: &std::io::Error) {
        tokio::time::sleep(self.record_failure(error)).await;
    }

    /// `accept` succeeded: ends an episode, if any, with one log line.
    pub fn succeeded(&mut self) {
        if self.next_pause.take().is_some() {
            tracing::info!(
                "{} accepting again after {} failed attempts",
                self.listener,
                self.failures
            );
            self.failures = 0;
        }
    }

    /// Counts a failure and says how long to pause before the next try.
    fn record_failure(&mut self, error: &std::io::Error) -> Duration {
        self.failures += 1;
        let pause = match self.next_pause {
            None => {
                tracing::warn!(
                    "{} accept failed: {error}; retrying with backoff up to {LONGEST_PAUSE:?} (logged once until it works again)",
                    self.listener
                );
                FIRST_PAUSE
            }
            Some(pause) => pause,
        };
        self.next_pause = Some((pause * 2).min(LONGEST_PAUSE));
        pause
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_to_the_cap_and_reset_after_success() {
        let mut backoff = AcceptBackoff::new("test");
        let error = std::io::Error::from_raw_os_error(24); // EMFILE
        let pauses: Vec<Duration> = (0..6).map(|_| backoff.record_failure(&error)).collect();
        assert_eq!(
            pauses,
            [100, 200, 400, 800, 1000, 1000].map(Duration::from_millis)
        );
        backoff.succeeded();
        assert_eq!(backoff.record_failure(&error), FIRST_PAUSE);
    }
}
