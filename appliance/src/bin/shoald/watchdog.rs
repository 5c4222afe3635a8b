//! Telling a stuck child from a starved one before killing it for a silent
//! heartbeat.
//!
//! A heartbeat that stops says only that the child did not run its
//! heartbeat (or that its work loops did not come round). That is a bug
//! when the child had the CPU and did not use it to make progress (a
//! reactor spinning in a poller, a deadlock), but not when it never got
//! the CPU: on a two-core machine a busy neighbour can keep a healthy
//! dataplane off the CPU for seconds, and killing it then only turns a
//! slow cluster into a dead one. Nor is it when an operator or debugger
//! stopped it (SIGSTOP, ptrace).
//!
//! So while a heartbeat is late, the supervisor samples the child's
//! threads from `/proc/<pid>/task/*/{stat,schedstat}` every tick and
//! excuses an interval between two samples in which
//! - a thread was stopped (state `T` or `t`), or
//! - a thread was runnable (state `R`) at both ends of the interval but
//!   ran for less than half of it ([`STARVED_RUN_SHARE`]): it wanted a
//!   CPU and did not get one.
//!
//! The stall that counts is the time since the later of the last heartbeat
//! and the last excused interval: a child is killed once it has spent
//! `heartbeat_timeout` unexcused without a heartbeat — with the CPU in
//! hand, or blocked — and in any case once its heartbeat is older than
//! `stall_hard_limit` (a child stopped or starved that long is as good as
//! dead to the I/O waiting on it). Where `/proc` cannot be read nothing is
//! excused: the watchdog then behaves as a plain heartbeat timeout.

use std::time::{Duration, Instant};

/// A runnable thread that ran less than this share of an interval (in
/// 1/N: here a half) was kept off the CPU. A thread spinning on an
/// uncontended CPU runs the whole interval; one sharing a CPU with one
/// busy neighbour still gets about half of it under CFS.
pub const STARVED_RUN_SHARE: u32 = 2;

/// What one thread was doing at a sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThreadSample {
    pub tid: i32,
    /// The state letter of `/proc/<pid>/task/<tid>/stat`.
    pub state: char,
    /// Nanoseconds it has run on a CPU (first field of `schedstat`).
    pub run_ns: u64,
}

/// The threads of one child at one instant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sample {
    pub threads: Vec<ThreadSample>,
}

/// Why an interval without a heartbeat does not count against the child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Excuse {
    /// A thread is stopped by a signal or a tracer.
    Stopped,
    /// Thread `tid` was runnable but ran only `ran` of the interval.
    Starved { tid: i32, ran: Duration },
}

impl std::fmt::Display for Excuse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Excuse::Stopped => f.write_str("stopped by a signal"),
            Excuse::Starved { tid, ran } => write!(
                f,
                "starved of CPU (thread {tid} runnable but ran {} ms)",
                ran.as_millis()
            ),
        }
    }
}

/// Whether the interval of length `interval` from `before` to `after` is
/// excused (see the module documentation).
pub fn excuse(before: &Sample, after: &Sample, interval: Duration) -> Option<Excuse> {
    if after.threads.iter().any(|t| matches!(t.state, 'T' | 't')) {
        return Some(Excuse::Stopped);
    }
    let starved_below = interval / STARVED_RUN_SHARE;
    after.threads.iter().find_map(|now| {
        let then = before.threads.iter().find(|t| t.tid == now.tid)?;
        let ran = Duration::from_nanos(now.run_ns.saturating_sub(then.run_ns));
        (then.state == 'R' && now.state == 'R' && ran < starved_below)
            .then_some(Excuse::Starved { tid: now.tid, ran })
    })
}

/// The watchdog's verdict at one tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Heartbeat fresh enough, or late for less than the timeout.
    Alive,
    /// Late beyond the timeout, but stopped or starved meanwhile.
    Excused(Excuse),
    /// Kill it, for this reason.
    Kill(String),
}

/// Per-child watchdog state across ticks.
#[derive(Debug)]
pub struct Watchdog {
    /// A heartbeat older than this is late: sampling starts.
    late_after: Duration,
    timeout: Duration,
    hard_limit: Duration,
    previous: Option<(Instant, Sample)>,
    excused: Option<(Instant, Excuse)>,
}

impl Watchdog {
    pub fn new(heartbeat_interval: Duration, timeout: Duration, hard_limit: Duration) -> Self {
        Self {
            late_after: (2 * heartbeat_interval).min(timeout),
            timeout,
            hard_limit: hard_limit.max(timeout),
            previous: None,
            excused: None,
        }
    }

    /// A heartbeat older than this is late.
    pub fn late_after(&self) -> Duration {
        self.late_after
    }

    /// Judges a child whose heartbeat is `age` old at `now`; `sample`
    /// reads its threads (called only while the heartbeat is late).
    pub fn judge(
        &mut self,
        now: Instant,
        age: Duration,
        sample: impl FnOnce() -> Option<Sample>,
    ) -> Verdict {
        if age <= self.late_after {
            self.previous = None;
            self.excused = None;
            return Verdict::Alive;
        }
        match sample() {
            Some(current) => {
                if let Some((then, before)) = &self.previous
                    && let Some(why) = excuse(before, &current, now.duration_since(*then))
                {
                    self.excused = Some((now, why));
                }
                self.previous = Some((now, current));
            }
            None => self.previous = None,
        }
        if age > self.hard_limit {
            let why = match self.excused {
                Some((_, why)) => format!("; {why}"),
                None => String::new(),
            };
            return Verdict::Kill(format!(
                "no heartbeat for {} ms, beyond the hard limit of {} ms{why}",
                age.as_millis(),
                self.hard_limit.as_millis()
            ));
        }
        let counted = match self.excused {
            Some((at, _)) => age.min(now.duration_since(at)),
            None => age,
        };
        if counted > self.timeout {
            return Verdict::Kill(format!("heartbeat stalled for {} ms", age.as_millis()));
        }
        match self.excused {
            Some((_, why)) if age > self.timeout => Verdict::Excused(why),
            _ => Verdict::Alive,
        }
    }
}

/// Reads the threads of process `pid`; `None` if it is gone or `/proc`
/// does not say.
pub fn sample(pid: i32) -> Option<Sample> {
    let dir = format!("/proc/{pid}/task");
    let mut threads = Vec::new();
    for entry in std::fs::read_dir(&dir).ok()? {
        let Ok(entry) = entry else { continue };
        let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        // A thread that ended between the listing and the reads is skipped.
        let (Ok(stat), Ok(schedstat)) = (
            std::fs::read_to_string(entry.path().join("stat")),
            std::fs::read_to_string(entry.path().join("schedstat")),
        ) else {
            continue;
        };
        if let (Some(state), Some(run_ns)) = (state_of(&stat), run_ns_of(&schedstat)) {
            threads.push(ThreadSample { tid, state, run_ns });
        }
    }
    (!threads.is_empty()).then_some(Sample { threads })
}

/// The state letter of a `stat` line: the first field after the command
/// name, which is in parentheses and may itself contain ") ".
fn state_of(stat: &str) -> Option<char> {
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

fn run_ns_of(schedstat: &str) -> Option<u64> {
    schedstat.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn threads(list: &[(i32, char, u64)]) -> Sample {
        Sample {
            threads: list
                .iter()
                .map(|&(tid, state, run_ms)| ThreadSample {
                    tid,
                    state,
                    run_ns: run_ms * 1_000_000,
                })
                .collect(),
        }
    }

    #[test]
    fn a_stopped_thread_excuses_the_interval() {
        let before = threads(&[(1, 'S', 10), (2, 'S', 10)]);
        let after = threads(&[(1, 'T', 10), (2, 'T', 10)]);
        assert_eq!(excuse(&before, &after, 50 * MS), Some(Excuse::Stopped));
        let traced = threads(&[(1, 't', 10)]);
        assert_eq!(excuse(&before, &traced, 50 * MS), Some(Excuse::Stopped));
    }

    #[test]
    fn runnable_at_both_ends_and_ran_under_half_is_starved() {
        let before = threads(&[(1, 'S', 10), (2, 'R', 100)]);
        let after = threads(&[(1, 'S', 10), (2, 'R', 124)]);
        assert_eq!(
            excuse(&before, &after, 50 * MS),
            Some(Excuse::Starved {
                tid: 2,
                ran: 24 * MS
            })
        );
        // Half or more of the interval on a CPU: it had the CPU.
        let after = threads(&[(1, 'S', 10), (2, 'R', 125)]);
        assert_eq!(excuse(&before, &after, 50 * MS), None);
    }

    #[test]
    fn a_spinning_thread_a_blocked_one_and_a_just_woken_one_are_not_excused() {
        // Spinning: runnable and on the CPU the whole interval.
        let spin = (threads(&[(1, 'R', 0)]), threads(&[(1, 'R', 50)]));
        assert_eq!(excuse(&spin.0, &spin.1, 50 * MS), None);
        // Blocked (deadlock, a poller stuck in a syscall): no CPU, no wait.
        let blocked = (threads(&[(1, 'S', 5)]), threads(&[(1, 'D', 5)]));
        assert_eq!(excuse(&blocked.0, &blocked.1, 50 * MS), None);
        // Runnable at one end only: it woke up, it was not kept waiting.
        let woke = (threads(&[(1, 'S', 5)]), threads(&[(1, 'R', 5)]));
        assert_eq!(excuse(&woke.0, &woke.1, 50 * MS), None);
        // A thread new since the last sample has no interval to judge.
        let new = (
            threads(&[(1, 'S', 5)]),
            threads(&[(1, 'S', 5), (9, 'R', 0)]),
        );
        assert_eq!(excuse(&new.0, &new.1, 50 * MS), None);
    }

    /// Runs a watchdog (interval 50 ms, timeout 1 s, hard limit 5 s) over
    /// ticks of 25 ms with no heartbeat, each tick sampling `at(tick)`;
    /// returns the tick and verdict of the first kill.
    fn first_kill(at: impl Fn(u64) -> Option<Sample>) -> Option<(u64, String)> {
        let start = Instant::now();
        let mut dog = Watchdog::new(50 * MS, 1000 * MS, 5000 * MS);
        for tick in 0..400u64 {
            let age = 25 * MS * tick as u32;
            if let Verdict::Kill(why) = dog.judge(start + age, age, || at(tick)) {
                return Some((tick, why));
            }
        }
        None
    }

    #[test]
    fn a_silent_child_that_had_the_cpu_is_killed_at_the_timeout() {
        // Spinning without a heartbeat: 25 ms of CPU every 25 ms tick.
        let (tick, why) = first_kill(|t| Some(threads(&[(1, 'R', 25 * t)]))).unwrap();
        assert_eq!(tick, 41, "first tick past 1000 ms");
        assert_eq!(why, "heartbeat stalled for 1025 ms");
        // Blocked, and where /proc says nothing: the same.
        assert_eq!(first_kill(|_| Some(threads(&[(1, 'S', 3)]))).unwrap().0, 41);
        assert_eq!(first_kill(|_| None).unwrap().0, 41);
    }

    #[test]
    fn a_starved_or_stopped_child_is_killed_only_at_the_hard_limit() {
        let (tick, why) = first_kill(|t| Some(threads(&[(1, 'R', t)]))).unwrap();
        assert_eq!(tick, 201, "first tick past 5000 ms");
        assert_eq!(
            why,
            "no heartbeat for 5025 ms, beyond the hard limit of 5000 ms; \
             starved of CPU (thread 1 runnable but ran 1 ms)"
        );
        let (tick, why) = first_kill(|_| Some(threads(&[(1, 'T', 7)]))).unwrap();
        assert_eq!(tick, 201);
        assert!(why.ends_with("; stopped by a signal"), "{why}");
    }

    #[test]
    fn the_timeout_counts_from_the_last_excused_interval() {
        // Starved for 2 s (ticks 0..=80), then blocked: killed 1 s later,
        // not at once although the heartbeat is already 2 s old.
        let (tick, _) = first_kill(|t| {
            Some(if t <= 80 {
                threads(&[(1, 'R', t)])
            } else {
                threads(&[(1, 'S', 80)])
            })
        })
        .unwrap();
        assert_eq!(tick, 121);
    }

    #[test]
    fn an_excused_stall_is_reported_and_a_fresh_heartbeat_resets_it() {
        let start = Instant::now();
        let mut dog = Watchdog::new(50 * MS, 1000 * MS, 5000 * MS);
        let stopped = || Some(threads(&[(1, 'T', 0)]));
        for tick in 0..=60u32 {
            let age = 25 * MS * tick;
            let verdict = dog.judge(start + age, age, stopped);
            if age > 1000 * MS {
                assert_eq!(verdict, Verdict::Excused(Excuse::Stopped), "tick {tick}");
            } else {
                assert_eq!(verdict, Verdict::Alive, "tick {tick}");
            }
        }
        // It resumed and beat: the excuse is forgotten, a new stall of a
        // running process counts from zero.
        let resumed = start + 1525 * MS;
        assert_eq!(dog.judge(resumed, 10 * MS, || None), Verdict::Alive);
        assert!(dog.excused.is_none() && dog.previous.is_none());
        let late = resumed + 1100 * MS;
        assert!(matches!(
            dog.judge(late, 1100 * MS, || Some(threads(&[(1, 'S', 0)]))),
            Verdict::Kill(_)
        ));
    }

    #[test]
    fn proc_lines_parse_even_with_parentheses_in_the_name() {
        assert_eq!(state_of("42 (a) b) R 1 2 3"), Some('R'));
        assert_eq!(state_of("42 (shoal-dataplane) S 1"), Some('S'));
        assert_eq!(run_ns_of("194305885 19607049 393\n"), Some(194_305_885));
        let me = sample(std::process::id() as i32).expect("own threads");
        assert!(me.threads.iter().any(|t| t.state == 'R'), "{me:?}");
    }
}
