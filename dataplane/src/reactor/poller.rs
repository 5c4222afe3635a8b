//! Pollers: closures a reactor runs repeatedly, SPDK's `spdk_poller`.
//!
//! A timed poller runs every `period`. An untimed poller runs as often as
//! the reactor can while it reports [`PollStatus::Busy`]; while it reports
//! `Idle` it backs off (1 ms doubling to [`MAX_IDLE_BACKOFF`]) so an idle
//! reactor sleeps instead of spinning, and resumes at full rate on the
//! first busy poll. Event-driven work (sockets, io_uring completions) is not
//! polled at all: it wakes the reactor through epoll.

use std::time::Duration;

/// What one run of a poller did, as SPDK's `SPDK_POLLER_BUSY/IDLE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollStatus {
    Busy,
    Idle,
}

/// Longest sleep of an idle untimed poller.
pub const MAX_IDLE_BACKOFF: Duration = Duration::from_millis(64);

/// A registered poller; unregistered when dropped.
#[derive(Debug)]
pub struct Poller {
    name: &'static str,
    task: tokio::task::JoinHandle<()>,
}

impl Poller {
    /// Registers `poll` on the current reactor. Must be called on a reactor.
    pub fn register(
        name: &'static str,
        period: Option<Duration>,
        mut poll: impl FnMut() -> PollStatus + 'static,
    ) -> Self {
        let task = tokio::task::spawn_local(async move {
            match period {
                Some(period) => {
                    let mut ticker = tokio::time::interval(period);
                    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    loop {
                        ticker.tick().await;
                        poll();
                    }
                }
                None => {
                    let mut backoff = Duration::ZERO;
                    loop {
                        match poll() {
                            PollStatus::Busy => {
                                backoff = Duration::ZERO;
                                tokio::task::yield_now().await;
                            }
                            PollStatus::Idle => {
                                backoff =
                                    (backoff * 2).clamp(Duration::from_millis(1), MAX_IDLE_BACKOFF);
                                tokio::time::sleep(backoff).await;
                            }
                        }
                    }
                }
            }
        });
        Self { name, task }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;

    fn on_local<F: std::future::Future>(f: F) -> F::Output {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        tokio::task::LocalSet::new().block_on(&runtime, f)
    }

    #[test]
    fn timed_poller_runs_periodically_until_dropped() {
        on_local(async {
            let runs = Rc::new(Cell::new(0));
            let counter = Rc::clone(&runs);
            let poller = Poller::register("count", Some(Duration::from_millis(5)), move || {
                counter.set(counter.get() + 1);
                PollStatus::Idle
            });
            tokio::time::sleep(Duration::from_millis(60)).await;
            drop(poller);
            let after_drop = runs.get();
            assert!(after_drop >= 3, "ran {after_drop} times");
            tokio::time::sleep(Duration::from_millis(30)).await;
            assert_eq!(runs.get(), after_drop);
        });
    }

    #[test]
    fn untimed_poller_spins_while_busy_and_backs_off_when_idle() {
        on_local(async {
            let runs = Rc::new(Cell::new(0u32));
            let counter = Rc::clone(&runs);
            let _poller = Poller::register("work", None, move || {
                counter.set(counter.get() + 1);
                if counter.get() < 1000 {
                    PollStatus::Busy
                } else {
                    PollStatus::Idle
                }
            });
            tokio::time::sleep(Duration::from_millis(200)).await;
            // 1000 busy polls complete quickly; idle polls then back off to
            // a handful: far fewer than a spinning loop would make.
            let total = runs.get();
            assert!((1000..1100).contains(&total), "{total} polls");
        });
    }
}
