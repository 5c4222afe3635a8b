//! systemd's sd_notify protocol: READY, STATUS, WATCHDOG, STOPPING.
//!
//! Every call is a no-op unless systemd (or a test) set `NOTIFY_SOCKET`.

use std::time::{Duration, Instant};

use sd_notify::NotifyState;

pub struct Notifier {
    /// Ping interval: half of `WatchdogSec`, as systemd recommends.
    watchdog_every: Option<Duration>,
    last_ping: Option<Instant>,
    last_status: String,
}

impl Notifier {
    pub fn from_env() -> Self {
        let watchdog_every = sd_notify::watchdog_enabled().map(|timeout| timeout / 2);
        if let Some(every) = watchdog_every {
            tracing::info!(
                "systemd watchdog enabled: pinging every {} ms",
                every.as_millis()
            );
        }
        Self {
            watchdog_every,
            last_ping: None,
            last_status: String::new(),
        }
    }

    pub fn ready(&self) {
        send(&[NotifyState::Ready]);
    }

    pub fn stopping(&self) {
        send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    }

    /// Sends STATUS= when the text changed.
    pub fn status(&mut self, text: &str) {
        if text != self.last_status {
            send(&[NotifyState::Status(text)]);
            self.last_status = text.to_string();
        }
    }

    /// Pings the watchdog when due. Called from the supervisor's loop, so a
    /// hung loop stops the pings and systemd restarts the appliance.
    pub fn tick(&mut self, now: Instant) {
        let Some(every) = self.watchdog_every else {
            return;
        };
        if self
            .last_ping
            .is_none_or(|last| now.duration_since(last) >= every)
        {
            send(&[NotifyState::Watchdog]);
            self.last_ping = Some(now);
        }
    }
}

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!("sd_notify failed: {e}");
    }
}
