//! A queue pair's command handling: Fabrics Connect turns a connection
//! into the admin queue of a new controller or an I/O queue of an
//! existing one; after that, commands go to the admin command set or to
//! the namespaces' bdevs.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc};

use super::command::{Command, Completion, Status, admin, fabrics};
use super::connection::{Outgoing, send_response};
use super::controller::Controller;
use super::queue_auth::{self, CONNECT_AUTHREQ_ATR, QueueAuth};
use super::subsystem::{Namespace, Target, TransportOptions};
use super::{admin_commands, io_commands};
use crate::bdev::{IoBuf, IoChannel};

/// What a command produced.
pub enum Response {
    Done(Completion),
    /// Data for the host (sent with C2HData), then the completion.
    Data {
        completion: Completion,
        data: IoBuf,
        len: usize,
    },
    /// The completion comes later (an Asynchronous Event Request).
    Deferred,
}

impl Response {
    pub fn status(cid: u16, status: Status) -> Self {
        Response::Done(Completion::new(cid, status))
    }

    /// Data for a command that asked for `wanted` bytes: what fits.
    pub fn data(cid: u16, bytes: Vec<u8>, wanted: usize) -> Self {
        let len = bytes.len().min(wanted);
        if len == 0 {
            return Response::status(cid, Status::SUCCESS);
        }
        let mut data = IoBuf::for_io(len);
        data.as_mut_slice().copy_from_slice(&bytes[..len]);
        Response::Data {
            completion: Completion::new(cid, Status::SUCCESS),
            data,
            len,
        }
    }
}

/// A namespace and this queue's channel to its bdev: what an I/O needs,
/// shared by the queue's cache and the commands in flight (no atomic
/// reference counting per I/O).
pub struct NamespaceChannel {
    pub namespace: Namespace,
    pub channel: Rc<IoChannel>,
}

enum Role {
    /// Before Connect.
    Unconnected,
    Admin,
    Io {
        /// Namespace channels, rebuilt when the subsystem's generation moves.
        channels: HashMap<u32, Rc<NamespaceChannel>>,
        generation: u64,
        in_flight: Arc<Semaphore>,
    },
}

pub struct Queue {
    pub target: Arc<Target>,
    pub options: TransportOptions,
    local: SocketAddr,
    peer: SocketAddr,
    role: Role,
    qid: Option<u16>,
    sqsize: u16,
    sqflow_disabled: bool,
    controller: Option<Arc<Controller>>,
    disconnected: bool,
    /// Present when the host's entry has keys: the queue must
    /// authenticate before it runs anything else.
    auth: Option<QueueAuth>,
}

/// Commands a queue takes before it is established: only Fabrics Connect.
/// Anything else ends the connection before a data buffer or R2T is spent
/// on it. In-band authentication (Authentication Send/Receive) joins here.
pub fn admitted_before_connect(command: &Command) -> bool {
    command.opcode() == admin::FABRICS && command.fctype() == fabrics::CONNECT
}

/// Commands outstanding on a queue before it is established: the one
/// Connect (then one authentication step at a time).
pub const DEPTH_BEFORE_CONNECT: usize = 1;

/// Bytes of Connect's data: the most a command before Connect may carry,
/// in the capsule or asked for with R2T.
pub const CONNECT_DATA_LEN: usize = 1024;

/// Connect's data (1024 bytes).
struct ConnectData {
    hostid: [u8; 16],
    cntlid: u16,
    subnqn: String,
    hostnqn: String,
}

fn nul_terminated(field: &[u8]) -> Option<String> {
    let end = field.iter().position(|&b| b == 0)?;
    String::from_utf8(field[..end].to_vec()).ok()
}

impl ConnectData {
    fn parse(data: &[u8]) -> Result<Self, (Status, u32)> {
        if data.len() < CONNECT_DATA_LEN {
            return Err((Status::CONNECT_INVALID_PARAMETERS, 0));
        }
        let subnqn =
            nul_terminated(&data[256..512]).ok_or((Status::CONNECT_INVALID_PARAMETERS, 256))?;
        let hostnqn =
            nul_terminated(&data[512..768]).ok_or((Status::CONNECT_INVALID_PARAMETERS, 512))?;
        Ok(Self {
            hostid: data[0..16].try_into().expect("16 bytes"),
            cntlid: u16::from_le_bytes([data[16], data[17]]),
            subnqn,
            hostnqn,
        })
    }
}

/// A Connect failure naming the offending parameter: IATTR (1 = in the
/// data) and IPO in DW0.
fn invalid_parameter(cid: u16, in_data: bool, offset: u32) -> Response {
    Response::Done(Completion {
        dw0: (offset & 0xffff) | (u32::from(in_data) << 16),
        ..Completion::new(cid, Status::CONNECT_INVALID_PARAMETERS)
    })
}

impl Queue {
    pub fn new(
        target: Arc<Target>,
        options: TransportOptions,
        local: SocketAddr,
        peer: SocketAddr,
    ) -> Self {
        Self {
            target,
            options,
            local,
            peer,
            role: Role::Unconnected,
            qid: None,
            sqsize: 0,
            sqflow_disabled: false,
            controller: None,
            disconnected: false,
            auth: None,
        }
    }

    pub fn controller(&self) -> Option<&Arc<Controller>> {
        self.controller.as_ref()
    }

    /// Fires when this queue's connection should end: its controller
    /// ended, or (with authentication) the queue failed to authenticate.
    pub fn gone_token(&self) -> Option<tokio_util::sync::CancellationToken> {
        match &self.auth {
            Some(auth) => Some(auth.close_token()),
            None => self.controller.as_ref().map(|c| c.gone.clone()),
        }
    }

    pub fn qid(&self) -> Option<u16> {
        self.qid
    }

    pub fn sqflow_disabled(&self) -> bool {
        self.sqflow_disabled
    }

    pub fn disconnected(&self) -> bool {
        self.disconnected
    }

    /// Fabrics Connect succeeded: the queue takes any command of its type.
    /// The connect deadline and [`admitted_before_connect`] apply until
    /// then. (Authentication, when required, completes here too.)
    pub fn established(&self) -> bool {
        self.controller.is_some()
    }

    /// Commands the host may have outstanding at once (received, response
    /// not yet sent): SQSIZE + 1 entries once connected (SQSIZE is 0's
    /// based), [`DEPTH_BEFORE_CONNECT`] before. One more is a protocol
    /// error, so the data buffers a queue holds stay within this many
    /// transfers of at most the transport's largest.
    pub fn queue_depth(&self) -> usize {
        if self.established() {
            usize::from(self.sqsize) + 1
        } else {
            DEPTH_BEFORE_CONNECT
        }
    }

    /// The connection is going away.
    pub fn close(&mut self, outgoing: &mpsc::UnboundedSender<Outgoing>) {
        let Some(controller) = self.controller.take() else {
            return;
        };
        match self.role {
            Role::Admin => {
                for cid in controller.drain_aers() {
                    let _ = outgoing.send(Outgoing::Completion(Completion::new(
                        cid,
                        Status::ABORTED_SQ_DELETION,
                    )));
                }
                // The admin queue owns the controller: it ends with it.
                controller.fail("admin queue disconnected");
            }
            Role::Io { .. } => {
                if let Some(qid) = self.qid {
                    controller.release_queue(qid);
                }
            }
            Role::Unconnected => {}
        }
    }

    /// Runs a command that has all its data.
    pub async fn submit(
        queue: &Rc<std::cell::RefCell<Queue>>,
        command: Command,
        data: Option<IoBuf>,
        outgoing: &mpsc::UnboundedSender<Outgoing>,
    ) {
        let refused = queue.borrow().auth.as_ref().and_then(|a| a.gate(&command));
        if let Some(status) = refused {
            send_response(outgoing, Response::status(command.cid(), status));
            return;
        }
        if let Some(controller) = queue.borrow().controller() {
            controller.touch();
        }
        if queue_auth::is_auth_command(&command) {
            let step = match &queue.borrow().auth {
                Some(auth) => auth.prepare(&command, data),
                None => Err(Response::status(
                    command.cid(),
                    Status::COMMAND_SEQUENCE_ERROR,
                )),
            };
            let response = match step {
                Ok(step) => {
                    let outcome = step.run().await;
                    if let Some(auth) = &queue.borrow().auth {
                        auth.finish(&outcome);
                    }
                    outcome.response
                }
                Err(response) => response,
            };
            send_response(outgoing, response);
            return;
        }
        if command.opcode() == admin::FABRICS {
            let response = queue.borrow_mut().fabrics(&command, data, outgoing);
            send_response(outgoing, response);
            return;
        }
        let in_flight = match &queue.borrow().role {
            Role::Unconnected => {
                send_response(
                    outgoing,
                    Response::status(command.cid(), Status::COMMAND_SEQUENCE_ERROR),
                );
                return;
            }
            Role::Admin => None,
            Role::Io { in_flight, .. } => Some(Arc::clone(in_flight)),
        };
        let Some(in_flight) = in_flight else {
            let response = {
                let queue = queue.borrow();
                let controller = queue
                    .controller
                    .as_ref()
                    .expect("admin queues have a controller");
                admin_commands::execute(&queue.target, controller, &command, queue.local)
            };
            send_response(outgoing, response);
            return;
        };
        let Some(permit) = in_flight.acquire_owned().await.ok() else {
            return;
        };
        let target = queue.borrow_mut().namespace_channel(command.nsid());
        let controller = queue.borrow().controller.clone();
        let outgoing = outgoing.clone();
        let cid = command.cid();
        match (target, controller) {
            (Some(entry), Some(controller)) => {
                tokio::task::spawn_local(async move {
                    let response = io_commands::execute(
                        &entry.namespace,
                        &entry.channel,
                        &controller.counters,
                        &command,
                        data,
                    )
                    .await;
                    send_response(&outgoing, response);
                    drop(permit);
                });
            }
            _ => {
                let status = if io_commands::is_io_opcode(command.opcode()) {
                    Status::INVALID_NAMESPACE
                } else {
                    Status::INVALID_OPCODE
                };
                send_response(&outgoing, Response::status(cid, status));
            }
        }
    }

    /// The namespace `nsid` and this queue's channel to its bdev.
    fn namespace_channel(&mut self, nsid: u32) -> Option<Rc<NamespaceChannel>> {
        let controller = self.controller.as_ref()?;
        let (subsystem, hostnqn) = (&controller.subsystem, controller.hostnqn.as_str());
        let Role::Io {
            channels,
            generation,
            ..
        } = &mut self.role
        else {
            return None;
        };
        let current = subsystem.generation();
        if *generation != current {
            // Keep channels of namespaces that still name the same bdev.
            let state = subsystem.read();
            channels.retain(|id, entry| {
                state.namespaces.get(id).is_some_and(|n| {
                    n.bdev.id() == entry.namespace.bdev.id() && n.visible_to(hostnqn)
                })
            });
            *generation = current;
        }
        if let Some(entry) = channels.get(&nsid) {
            return Some(Rc::clone(entry));
        }
        let namespace = subsystem.namespace_for(nsid, hostnqn)?;
        let entry = Rc::new(NamespaceChannel {
            channel: namespace.bdev.channel(),
            namespace,
        });
        channels.insert(nsid, Rc::clone(&entry));
        Some(entry)
    }

    fn fabrics(
        &mut self,
        command: &Command,
        data: Option<IoBuf>,
        outgoing: &mpsc::UnboundedSender<Outgoing>,
    ) -> Response {
        let cid = command.cid();
        match command.fctype() {
            fabrics::CONNECT => self.connect(command, data, outgoing),
            fabrics::PROPERTY_GET | fabrics::PROPERTY_SET => {
                let (Role::Admin, Some(controller)) = (&self.role, &self.controller) else {
                    return Response::status(cid, Status::COMMAND_SEQUENCE_ERROR);
                };
                let eight_bytes = command.byte(40) & 0x7 == 1;
                let offset = command.dword_at(44);
                if command.fctype() == fabrics::PROPERTY_GET {
                    match controller.property_get(offset, eight_bytes) {
                        Ok(value) => Response::Done(Completion {
                            dw0: value as u32,
                            dw1: (value >> 32) as u32,
                            ..Completion::new(cid, Status::SUCCESS)
                        }),
                        Err(status) => Response::status(cid, status),
                    }
                } else {
                    match controller.property_set(offset, eight_bytes, command.u64_at(48)) {
                        Ok(()) => Response::status(cid, Status::SUCCESS),
                        Err(status) => Response::status(cid, status),
                    }
                }
            }
            fabrics::DISCONNECT => {
                if self.controller.is_none() {
                    return Response::status(cid, Status::COMMAND_SEQUENCE_ERROR);
                }
                self.disconnected = true;
                Response::status(cid, Status::SUCCESS)
            }
            _ => Response::status(cid, Status::INVALID_OPCODE),
        }
    }

    fn connect(
        &mut self,
        command: &Command,
        data: Option<IoBuf>,
        outgoing: &mpsc::UnboundedSender<Outgoing>,
    ) -> Response {
        let cid = command.cid();
        if self.controller.is_some() {
            return Response::status(cid, Status::COMMAND_SEQUENCE_ERROR);
        }
        let recfmt = command.u16_at(40);
        if recfmt != 0 {
            return Response::status(cid, Status::CONNECT_INCOMPATIBLE_FORMAT);
        }
        let qid = command.u16_at(42);
        let sqsize = command.u16_at(44);
        let cattr = command.byte(46);
        let kato_ms = command.dword_at(48);
        let Some(data) = data else {
            return invalid_parameter(cid, false, 24);
        };
        let connect = match ConnectData::parse(data.as_slice()) {
            Ok(connect) => connect,
            Err((_, offset)) => return invalid_parameter(cid, true, offset),
        };
        let Some(subsystem) = self.target.subsystem(&connect.subnqn) else {
            tracing::debug!(subnqn = connect.subnqn, peer = %self.peer, "Connect to an unknown subsystem");
            return invalid_parameter(cid, true, 256);
        };
        let listening = subsystem.discovery
            || subsystem
                .read()
                .listeners
                .iter()
                .any(|l| l.accepts(self.local));
        if !listening {
            tracing::debug!(subnqn = connect.subnqn, local = %self.local, "Connect on a portal the subsystem does not listen on");
            return invalid_parameter(cid, true, 256);
        }
        if !subsystem.host_allowed(&connect.hostnqn) {
            tracing::info!(subnqn = connect.subnqn, hostnqn = connect.hostnqn, peer = %self.peer, "Connect refused: host not allowed");
            return Response::status(cid, Status::CONNECT_INVALID_HOST);
        }
        let credentials = match queue_auth::credentials(&self.target, &subsystem, &connect.hostnqn)
        {
            Ok(credentials) => credentials,
            Err(why) => {
                tracing::info!(subnqn = connect.subnqn, hostnqn = connect.hostnqn, peer = %self.peer, "Connect refused: {why}");
                return Response::status(cid, Status::CONNECT_INVALID_HOST);
            }
        };
        let authreq = if credentials.is_some() {
            CONNECT_AUTHREQ_ATR
        } else {
            0
        };
        let depth_limit = if qid == 0 {
            self.options.max_aq_depth
        } else {
            self.options.max_queue_depth
        };
        if sqsize == 0 || sqsize >= depth_limit {
            return invalid_parameter(cid, false, 44);
        }
        // CATTR bit 2: the host disables SQ flow control.
        self.sqflow_disabled = cattr & (1 << 2) != 0;
        self.sqsize = sqsize;

        if qid == 0 {
            if connect.cntlid != 0xffff {
                return invalid_parameter(cid, true, 16);
            }
            let options = self.options;
            let hostnqn = connect.hostnqn.clone();
            let outgoing_completions = {
                let (tx, mut rx) = mpsc::unbounded_channel::<Completion>();
                let outgoing = outgoing.clone();
                tokio::task::spawn_local(async move {
                    while let Some(completion) = rx.recv().await {
                        if outgoing.send(Outgoing::Completion(completion)).is_err() {
                            break;
                        }
                    }
                });
                tx
            };
            let created = subsystem.add_controller(|cntlid| {
                Arc::new(Controller::new(
                    cntlid,
                    Arc::clone(&subsystem),
                    hostnqn,
                    connect.hostid,
                    options,
                    kato_ms,
                    outgoing_completions,
                ))
            });
            let Some(controller) = created else {
                return Response::status(cid, Status::CONNECT_CONTROLLER_BUSY);
            };
            controller.touch();
            tokio::task::spawn_local(watch_keep_alive(Arc::downgrade(&controller)));
            tracing::info!(
                cntlid = controller.cntlid,
                subnqn = subsystem.nqn,
                hostnqn = controller.hostnqn,
                peer = %self.peer,
                kato_ms,
                "controller created"
            );
            let cntlid = controller.cntlid;
            self.auth =
                credentials.map(|c| QueueAuth::start(c, &self.target, &controller, 0, self.peer));
            self.controller = Some(controller);
            self.role = Role::Admin;
            self.qid = Some(0);
            return Response::Done(Completion::with_dw0(cid, u32::from(cntlid) | authreq));
        }

        if subsystem.discovery {
            return Response::status(cid, Status::INVALID_QUEUE_TYPE);
        }
        let Some(controller) = subsystem.controller(connect.cntlid) else {
            return invalid_parameter(cid, true, 16);
        };
        if controller.hostnqn != connect.hostnqn || controller.hostid != connect.hostid {
            return invalid_parameter(cid, true, 512);
        }
        if !controller.ready() {
            return Response::status(cid, Status::COMMAND_SEQUENCE_ERROR);
        }
        if qid > controller.max_qid() {
            return invalid_parameter(cid, false, 42);
        }
        if !controller.claim_queue(qid) {
            return invalid_parameter(cid, false, 42);
        }
        controller.touch();
        self.auth =
            credentials.map(|c| QueueAuth::start(c, &self.target, &controller, qid, self.peer));
        self.controller = Some(controller);
        self.role = Role::Io {
            channels: HashMap::new(),
            generation: 0,
            in_flight: Arc::new(Semaphore::new(usize::from(sqsize) + 1)),
        };
        self.qid = Some(qid);
        Response::Done(Completion::with_dw0(cid, authreq))
    }
}

/// Enforces a controller's keep-alive timeout: checks at a quarter of KATO
/// (re-read each time: Set Features may change it) and fails the
/// controller when no command came in time. Ends with the controller.
async fn watch_keep_alive(controller: std::sync::Weak<Controller>) {
    const IDLE_CHECK: std::time::Duration = std::time::Duration::from_secs(1);
    loop {
        let (wait, gone) = match controller.upgrade() {
            Some(controller) => (
                controller.keep_alive_check_interval().unwrap_or(IDLE_CHECK),
                controller.gone.clone(),
            ),
            None => return,
        };
        tokio::select! {
            _ = gone.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        let Some(controller) = controller.upgrade() else {
            return;
        };
        if controller.keep_alive_expired() {
            controller.fail(&format!(
                "no command within the keep-alive timeout ({} ms)",
                controller.kato_ms()
            ));
            return;
        }
    }
}
