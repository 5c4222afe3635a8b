//! One supervised child: its lifecycle state, restart policy and status.

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;
use serde_json::{Value, json};
use shoal_appliance::clock::monotonic_ns;
use shoal_appliance::region::layout::{ParticipantSlot, SlotStatus};
use shoal_appliance::topology::Placement;

use crate::launch::{LaunchSpec, launch};
use crate::restart_policy::{RestartPolicy, Verdict};
use crate::watchdog::{self, Watchdog};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildKind {
    Management,
    Dataplane(u32),
}

impl std::fmt::Display for ChildKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChildKind::Management => f.write_str("management service"),
            ChildKind::Dataplane(i) => write!(f, "data cluster {i}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Spawned; waiting for the child to report running.
    Starting {
        pid: Pid,
        since: Instant,
    },
    /// Reported running and heartbeating.
    Running {
        pid: Pid,
        since: Instant,
    },
    /// Exited or could not start; restarts at `until`.
    Backoff {
        until: Instant,
    },
    /// Crash-looped; left down until an operator restarts it.
    Failed,
    /// Asked to stop; SIGKILL at `deadline` if still alive.
    Stopping {
        pid: Pid,
        deadline: Instant,
        killed: bool,
    },
    Stopped,
}

impl State {
    pub fn name(&self) -> &'static str {
        match self {
            State::Starting { .. } => "starting",
            State::Running { .. } => "running",
            State::Backoff { .. } => "restarting",
            State::Failed => "failed",
            State::Stopping { .. } => "stopping",
            State::Stopped => "stopped",
        }
    }

    pub fn pid(&self) -> Option<Pid> {
        match *self {
            State::Starting { pid, .. }
            | State::Running { pid, .. }
            | State::Stopping { pid, .. } => Some(pid),
            _ => None,
        }
    }
}

#[derive(Debug)]
pub struct Child {
    pub kind: ChildKind,
    pub launch: LaunchSpec,
    pub placement: Placement,
    pub state: State,
    policy: RestartPolicy,
    /// Times the supervisor started it again after the first start.
    pub restarts: u32,
    spawned_at: Option<Instant>,
    pub last_exit: Option<String>,
    /// An operator asked for a restart: the next exit is not a failure.
    restart_requested: bool,
    /// Why the supervisor killed it, reported with the exit.
    kill_reason: Option<String>,
    watchdog: Watchdog,
    /// The current late heartbeat was excused (logged once per stall).
    excusing: bool,
    /// Late heartbeats the watchdog excused (stopped or starved, not stuck).
    pub stalls_excused: u64,
    start_timeout: Duration,
}

/// Timeouts a child is judged by.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub heartbeat_interval: Duration,
    pub heartbeat: Duration,
    pub stall_hard_limit: Duration,
    pub start: Duration,
}

impl Child {
    pub fn new(
        kind: ChildKind,
        launch: LaunchSpec,
        placement: Placement,
        policy: RestartPolicy,
        timeouts: Timeouts,
    ) -> Self {
        Self {
            kind,
            launch,
            placement,
            state: State::Stopped,
            policy,
            restarts: 0,
            spawned_at: None,
            last_exit: None,
            restart_requested: false,
            kill_reason: None,
            watchdog: Watchdog::new(
                timeouts.heartbeat_interval,
                timeouts.heartbeat,
                timeouts.stall_hard_limit,
            ),
            excusing: false,
            stalls_excused: 0,
            start_timeout: timeouts.start,
        }
    }

    /// Starts the process into `slot`.
    pub fn spawn(&mut self, slot: &ParticipantSlot, now: Instant) {
        let generation = slot.prepare_spawn();
        match launch(&self.launch) {
            Ok(pid) => {
                tracing::info!(
                    pid = pid.as_raw(),
                    generation,
                    cpus = ?self.placement.cpus,
                    pinned = self.launch.cpus.is_some(),
                    "started {}",
                    self.kind
                );
                self.spawned_at = Some(now);
                self.state = State::Starting { pid, since: now };
            }
            Err(e) => {
                // No process will ever claim this life of the slot: say so,
                // or peers would take "spawned" for a cluster on its way up.
                slot.set_status(SlotStatus::Exited);
                tracing::error!(
                    "cannot start {} from {}: {e}",
                    self.kind,
                    self.launch.program.display()
                );
                self.last_exit = Some(format!("could not start: {e}"));
                self.spawned_at = None;
                self.on_failure(now);
            }
        }
    }

    /// The process exited with `status`.
    pub fn on_exit(&mut self, status: WaitStatus, now: Instant) {
        let description = describe_exit(status);
        let reason = self.kill_reason.take();
        let description = match reason {
            Some(reason) => format!("{description} ({reason})"),
            None => description,
        };
        self.last_exit = Some(description.clone());
        match self.state {
            State::Stopping { .. } => {
                tracing::info!("{} stopped: {description}", self.kind);
                self.state = State::Stopped;
            }
            _ if self.restart_requested => {
                tracing::info!(
                    "{} exited for the requested restart: {description}",
                    self.kind
                );
                self.restart_requested = false;
                self.policy.reset();
                self.state = State::Backoff { until: now };
            }
            _ => {
                tracing::warn!("{} exited unexpectedly: {description}", self.kind);
                self.on_failure(now);
            }
        }
    }

    fn on_failure(&mut self, now: Instant) {
        let ran_for = self
            .spawned_at
            .map_or(Duration::ZERO, |t| now.duration_since(t));
        match self.policy.on_failure(now, ran_for) {
            Verdict::RestartAfter(delay) => {
                tracing::info!("restarting {} in {} ms", self.kind, delay.as_millis());
                self.state = State::Backoff { until: now + delay };
            }
            Verdict::GiveUp => {
                tracing::error!(
                    "{} failed {} times within the crash-loop window: marked failed and left down \
                     (appliance_restart_cluster restarts it)",
                    self.kind,
                    self.policy.recent_failures()
                );
                self.state = State::Failed;
            }
        }
    }

    /// Periodic check: restarts due children and judges heartbeats.
    pub fn on_tick(&mut self, slot: &ParticipantSlot, now: Instant) {
        match self.state {
            State::Backoff { until } if until <= now => {
                self.restarts += 1;
                self.spawn(slot, now);
            }
            State::Starting { pid, since } => {
                if slot.status() == Some(SlotStatus::Running) && slot.last_heartbeat_ns() != 0 {
                    tracing::info!(
                        pid = pid.as_raw(),
                        "{} running (ready {} ms after spawn)",
                        self.kind,
                        now.duration_since(since).as_millis()
                    );
                    self.state = State::Running { pid, since };
                } else if now.duration_since(since) > self.start_timeout
                    && self.kill_reason.is_none()
                {
                    self.kill(
                        pid,
                        format!(
                            "not running {} ms after spawn",
                            self.start_timeout.as_millis()
                        ),
                    );
                }
            }
            State::Running { pid, .. } if self.kill_reason.is_none() => {
                let age = heartbeat_age(slot);
                match self
                    .watchdog
                    .judge(now, age, || watchdog::sample(pid.as_raw()))
                {
                    watchdog::Verdict::Kill(reason) => {
                        self.excusing = false;
                        self.kill(pid, reason);
                    }
                    watchdog::Verdict::Excused(why) => {
                        if !self.excusing {
                            self.excusing = true;
                            self.stalls_excused += 1;
                            tracing::warn!(
                                pid = pid.as_raw(),
                                "{}: no heartbeat for {} ms, but it is {why}, not stuck: \
                                 not killed",
                                self.kind,
                                age.as_millis()
                            );
                        }
                    }
                    watchdog::Verdict::Alive => {
                        if self.excusing && age <= self.watchdog.late_after() {
                            self.excusing = false;
                            tracing::info!(pid = pid.as_raw(), "{} heartbeats again", self.kind);
                        }
                    }
                }
            }
            State::Stopping { .. } => self.enforce_stop_deadline(now),
            _ => {}
        }
    }

    /// SIGKILLs a stopping child whose grace period is over.
    pub fn enforce_stop_deadline(&mut self, now: Instant) {
        if let State::Stopping {
            pid,
            deadline,
            killed: false,
        } = self.state
            && now >= deadline
        {
            tracing::warn!("{} did not stop in time: SIGKILL", self.kind);
            let _ = killpg(pid, Signal::SIGKILL);
            self.state = State::Stopping {
                pid,
                deadline,
                killed: true,
            };
        }
    }

    fn kill(&mut self, pid: Pid, reason: String) {
        tracing::warn!(pid = pid.as_raw(), "{}: {reason}; killing it", self.kind);
        self.kill_reason = Some(format!("killed by shoald: {reason}"));
        // The whole group: anything the child started goes with it.
        let _ = killpg(pid, Signal::SIGKILL);
    }

    /// Begins a clean stop: SIGTERM now, SIGKILL after `grace`.
    pub fn begin_stop(&mut self, now: Instant, grace: Duration) {
        self.state = match self.state {
            State::Starting { pid, .. } | State::Running { pid, .. } => {
                tracing::info!(pid = pid.as_raw(), "stopping {}", self.kind);
                let _ = kill(pid, Signal::SIGTERM);
                State::Stopping {
                    pid,
                    deadline: now + grace,
                    killed: false,
                }
            }
            stopping @ State::Stopping { .. } => stopping,
            _ => State::Stopped,
        };
    }

    /// An operator asked for a restart: a running child is stopped cleanly
    /// and started again at once; a failed or waiting one starts now.
    pub fn request_restart(&mut self, now: Instant) {
        self.policy.reset();
        match self.state {
            State::Starting { pid, .. } | State::Running { pid, .. } => {
                self.restart_requested = true;
                let _ = kill(pid, Signal::SIGTERM);
            }
            State::Failed | State::Backoff { .. } | State::Stopped => {
                self.state = State::Backoff { until: now }
            }
            State::Stopping { .. } => {}
        }
    }

    pub fn is_settled(&self) -> bool {
        matches!(self.state, State::Running { .. } | State::Failed)
    }

    pub fn status(&self, slot: &ParticipantSlot) -> Value {
        let heartbeat_ns = slot.last_heartbeat_ns();
        json!({
            "state": self.state.name(),
            "pid": self.state.pid().map(|p| p.as_raw()),
            "cpus": self.placement.cpus,
            "cores": self.placement.cores,
            "pinned": self.launch.cpus.is_some(),
            "restarts": self.restarts,
            "recent_failures": self.policy.recent_failures(),
            "generation": slot.generation(),
            "heartbeats": slot.heartbeat_count(),
            "stalls_excused": self.stalls_excused,
            "heartbeat_age_ms": (heartbeat_ns != 0).then(|| heartbeat_age(slot).as_millis() as u64),
            "last_exit": self.last_exit,
        })
    }
}

fn heartbeat_age(slot: &ParticipantSlot) -> Duration {
    let last = slot.last_heartbeat_ns();
    Duration::from_nanos(monotonic_ns().saturating_sub(last))
}

fn describe_exit(status: WaitStatus) -> String {
    match status {
        WaitStatus::Exited(_, code) => format!("exit code {code}"),
        WaitStatus::Signaled(_, signal, core) => {
            format!(
                "killed by {signal}{}",
                if core { " (core dumped)" } else { "" }
            )
        }
        other => format!("{other:?}"),
    }
}
