//! In-band authentication of one queue, between the pure DH-HMAC-CHAP
//! state machine ([`super::auth::dhchap`]) and the queue: which host
//! entries require it, the Connect response bit that tells the host,
//! the gate that refuses every other command until the queue has
//! authenticated, the Authentication Send/Receive commands, and the
//! deadline after which a queue that has not authenticated is closed.

use shoal_appliance::locks::Recover;
use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::auth::dhchap::{Authenticator, Credentials, ReceiveOutcome};
use super::auth::messages::MAX_MESSAGE_LEN;
use super::auth::{SECP_AUTHENTICATION, SPSP};
use super::command::{Command, Status, admin, fabrics};
use super::controller::Controller;
use super::queue::Response;
use super::subsystem::{Subsystem, Target};
use crate::bdev::IoBuf;

/// Time a queue that must authenticate has, from its Connect, to finish.
/// Hosts authenticate right after Connect, in milliseconds on real
/// hardware; but a host's first use of a DH group runs the kernel's
/// crypto self-tests, which took over 6 s for ffdhe8192 in a TCG guest,
/// and a queue that idles unauthenticated only holds a controller or I/O
/// queue ID. (SPDK allows 120 s.)
pub const AUTH_DEADLINE: Duration = Duration::from_secs(30);
/// While the admin queue authenticates, the controller counts as alive
/// (the deadline above bounds it instead of the keep-alive timeout: the
/// host sends no Keep Alive before it has authenticated). Refreshed this
/// often, well inside the smallest keep-alive timeout.
const KEEP_ALIVE_WHILE_AUTHENTICATING: Duration = Duration::from_millis(500);
/// Connect response DW0, AUTHREQ.ATR: authentication transaction required.
pub const CONNECT_AUTHREQ_ATR: u32 = 1 << 17;

/// The credentials host `hostnqn` must authenticate with on `subsystem`:
/// `None` when its entry has no keys (the host NQN check alone applies),
/// an error when a key it names is not in the keyring (the host is then
/// refused: a missing key never means "no authentication").
pub fn credentials(
    target: &Target,
    subsystem: &Subsystem,
    hostnqn: &str,
) -> Result<Option<Credentials>, String> {
    let Some(keys) = subsystem.host_keys(hostnqn) else {
        return Ok(None);
    };
    let host_key = target
        .keyring
        .get(&keys.dhchap_key)
        .ok_or_else(|| format!("key {} is not in the keyring", keys.dhchap_key))?;
    let controller_key = match &keys.dhchap_ctrlr_key {
        None => None,
        Some(name) => Some(
            target
                .keyring
                .get(name)
                .ok_or_else(|| format!("key {name} is not in the keyring"))?,
        ),
    };
    Ok(Some(Credentials {
        hostnqn: hostnqn.to_string(),
        subnqn: subsystem.nqn.clone(),
        host_key,
        controller_key,
    }))
}

/// A queue's authentication.
pub struct QueueAuth {
    /// Shared with the blocking thread a step runs on: the DH
    /// exponentiations take up to hundreds of milliseconds and must not
    /// stall the reactor's other connections.
    authenticator: Arc<Mutex<Authenticator>>,
    /// Whether the last step left the queue authenticated (read by the
    /// gate on every command, without the lock).
    authenticated: Cell<bool>,
    /// Cancelled to close this connection: the deadline passed, the host
    /// failed too often, or (as its parent) the controller ended.
    close: CancellationToken,
    /// Set once the queue has authenticated: the deadline then does nothing.
    settled: Rc<Cell<bool>>,
    qid: u16,
    peer: SocketAddr,
}

impl QueueAuth {
    /// Starts the authentication of queue `qid` and its deadline.
    pub fn start(
        credentials: Credentials,
        target: &Target,
        controller: &Arc<Controller>,
        qid: u16,
        peer: SocketAddr,
    ) -> Self {
        let close = controller.gone.child_token();
        let settled = Rc::new(Cell::new(false));
        {
            let (close, settled) = (close.clone(), Rc::clone(&settled));
            let hostnqn = credentials.hostnqn.clone();
            let controller = Arc::downgrade(controller);
            tokio::task::spawn_local(async move {
                let deadline = tokio::time::Instant::now() + AUTH_DEADLINE;
                while !settled.get() {
                    if tokio::time::Instant::now() >= deadline {
                        tracing::info!(hostnqn, qid, %peer, "queue did not authenticate within {AUTH_DEADLINE:?}: closing");
                        close.cancel();
                        return;
                    }
                    if qid == 0
                        && let Some(controller) = controller.upgrade()
                    {
                        controller.touch();
                    }
                    tokio::select! {
                        _ = close.cancelled() => return,
                        _ = tokio::time::sleep(KEEP_ALIVE_WHILE_AUTHENTICATING) => {}
                    }
                }
            });
        }
        Self {
            authenticator: Arc::new(Mutex::new(Authenticator::new(
                credentials,
                target.auth_policy(),
            ))),
            authenticated: Cell::new(false),
            close,
            settled,
            qid,
            peer,
        }
    }

    /// Fires when this queue's connection should end.
    pub fn close_token(&self) -> CancellationToken {
        self.close.clone()
    }

    /// `Some(status)` when `command` may not run yet: before the queue
    /// has authenticated, only Connect and the authentication commands do.
    pub fn gate(&self, command: &Command) -> Option<Status> {
        if self.authenticated.get() {
            return None;
        }
        let allowed = command.opcode() == admin::FABRICS
            && matches!(
                command.fctype(),
                fabrics::CONNECT | fabrics::AUTHENTICATION_SEND | fabrics::AUTHENTICATION_RECEIVE
            );
        (!allowed).then_some(Status::AUTHENTICATION_REQUIRED)
    }

    /// Checks an Authentication Send or Receive and returns the step to
    /// run, or the answer when its fields are wrong.
    pub fn prepare(&self, command: &Command, data: Option<IoBuf>) -> Result<AuthStep, Response> {
        let cid = command.cid();
        // CDW10: SECP in byte 43, SPSP1 in 42, SPSP0 in 41; CDW11: TL/AL.
        if command.byte(43) != SECP_AUTHENTICATION
            || command.byte(42) != SPSP
            || command.byte(41) != SPSP
        {
            return Err(Response::status(cid, Status::INVALID_FIELD));
        }
        let length = command.dword_at(44) as usize;
        let kind = if command.fctype() == fabrics::AUTHENTICATION_SEND {
            let data = data.as_ref().map_or(&[][..], |d| d.as_slice());
            if length == 0 || length > MAX_MESSAGE_LEN || length != data.len() {
                return Err(Response::status(cid, Status::INVALID_FIELD));
            }
            StepKind::Send(data.to_vec())
        } else {
            let wanted = length.min(command.sgl().length as usize);
            if wanted == 0 {
                return Err(Response::status(cid, Status::INVALID_FIELD));
            }
            StepKind::Receive(wanted)
        };
        Ok(AuthStep {
            authenticator: Arc::clone(&self.authenticator),
            kind,
            cid,
        })
    }

    /// Records what a step did: logs, the deadline, closing after too
    /// many failures.
    pub fn finish(&self, outcome: &StepOutcome) {
        self.authenticated.set(outcome.authenticated_after);
        self.after_step(outcome);
    }

    fn after_step(&self, outcome: &StepOutcome) {
        let (was_authenticated, now) = (outcome.authenticated_before, outcome.authenticated_after);
        if now && !was_authenticated {
            self.settled.set(true);
            tracing::info!(qid = self.qid, peer = %self.peer, "queue authenticated (DH-HMAC-CHAP)");
        } else if was_authenticated && !now {
            tracing::info!(qid = self.qid, peer = %self.peer, "queue re-authentication failed");
        }
        if outcome.exhausted {
            tracing::info!(qid = self.qid, peer = %self.peer, "queue failed authentication too often: closing");
            self.close.cancel();
        }
    }
}

/// The most data an Authentication Send may bring: checked before any
/// buffer is allocated or R2T sent for it.
pub fn send_data_too_long(command: &Command) -> bool {
    command.opcode() == admin::FABRICS
        && command.fctype() == fabrics::AUTHENTICATION_SEND
        && command.sgl().length as usize > MAX_MESSAGE_LEN
}

/// One Authentication Send or Receive, ready to run off the reactor.
pub struct AuthStep {
    authenticator: Arc<Mutex<Authenticator>>,
    kind: StepKind,
    cid: u16,
}

enum StepKind {
    Send(Vec<u8>),
    /// Up to this many bytes.
    Receive(usize),
}

/// What a step did.
pub struct StepOutcome {
    pub response: Response,
    authenticated_before: bool,
    authenticated_after: bool,
    exhausted: bool,
}

impl AuthStep {
    /// Runs the step on a blocking thread.
    pub async fn run(self) -> StepOutcome {
        let AuthStep {
            authenticator,
            kind,
            cid,
        } = self;
        let ran = tokio::task::spawn_blocking(move || {
            let mut authenticator = authenticator.locked();
            let before = authenticator.authenticated();
            let data = match kind {
                StepKind::Send(message) => {
                    authenticator.on_send(&message);
                    None
                }
                StepKind::Receive(wanted) => Some((authenticator.on_receive(wanted), wanted)),
            };
            (
                data,
                before,
                authenticator.authenticated(),
                authenticator.exhausted(),
            )
        })
        .await;
        let Ok((data, before, after, exhausted)) = ran else {
            return StepOutcome {
                response: Response::status(cid, Status::INTERNAL_ERROR),
                authenticated_before: false,
                authenticated_after: false,
                exhausted: true,
            };
        };
        let response = match data {
            None => Response::status(cid, Status::SUCCESS),
            Some((ReceiveOutcome::Data(bytes), wanted)) => Response::data(cid, bytes, wanted),
            Some((ReceiveOutcome::TooSmall { .. }, _)) => {
                Response::status(cid, Status::INVALID_FIELD)
            }
        };
        StepOutcome {
            response,
            authenticated_before: before,
            authenticated_after: after,
            exhausted,
        }
    }
}

/// Whether `command` is an Authentication Send or Receive.
pub fn is_auth_command(command: &Command) -> bool {
    command.opcode() == admin::FABRICS
        && matches!(
            command.fctype(),
            fabrics::AUTHENTICATION_SEND | fabrics::AUTHENTICATION_RECEIVE
        )
}
