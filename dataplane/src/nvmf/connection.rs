//! One NVMe/TCP connection: one queue pair. It starts with ICReq/ICResp,
//! becomes an admin or I/O queue with Fabrics Connect, then reads command
//! capsules and H2CData, runs commands (I/O ones concurrently on this
//! reactor), and a writer sends R2T, C2HData and response capsules as
//! they are ready.
//!
//! A PDU that breaks the transport rules ends this connection only, with
//! a C2HTermReq saying why; a command that breaks the command rules gets
//! its NVMe status and costs nobody else anything.
//!
//! What a host can make a connection hold is bounded before it has
//! credentials: until Fabrics Connect succeeds, only the Connect capsule
//! is taken (anything else ends the connection, no buffer or R2T spent on
//! it) and the queue must be established within [`CONNECT_TIMEOUT`]. After
//! that, commands outstanding (received, response not yet written) are
//! bounded by the queue depth the host asked for at Connect, so its data
//! buffers stay within that many transfers.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::command::{Command, Completion, Status, admin, sgl};
use super::pdu::{self, CommonHeader, Digests, Fes, PduError};
use super::queue::{self, Queue, Response};
use super::subsystem::{Target, TransportOptions};
use crate::bdev::IoBuf;

/// Time a host has to send ICReq after connecting.
pub const IC_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest H2CData payload we accept per PDU (MAXH2CDATA).
pub const MAX_H2C_DATA: u32 = 131_072;
/// Time a host has after ICResp to establish the queue: Fabrics Connect
/// (and in-band authentication, when required) complete. A connection
/// that has not by then is closed, so idle or stalled connections without
/// credentials cannot pile up and use the process's file descriptors.
/// Generous for a host that has to compute its authentication replies.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time the writer gets to send what is queued once the connection ends:
/// a host that stops reading cannot keep a finished connection open.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// What the writer sends.
pub enum Outgoing {
    Completion(Completion),
    /// Data for a command that reads, then its completion (or the SUCCESS
    /// flag in place of it).
    ReadData {
        completion: Completion,
        data: IoBuf,
        len: usize,
    },
    R2T {
        cid: u16,
        ttag: u16,
        length: u32,
    },
    /// A fatal transport error: send the termination request and stop.
    Terminate(Vec<u8>),
}

/// A write waiting for its data (R2T sent, H2CData arriving).
struct PendingData {
    command: Command,
    buf: IoBuf,
    received: usize,
}

/// Serves one connection until the host leaves, the controller ends or
/// `stop` fires.
pub async fn serve<S>(
    stream: S,
    target: Arc<Target>,
    local: SocketAddr,
    peer: SocketAddr,
    stop: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + 'static,
{
    let (read_half, write_half) = tokio::io::split(stream);
    let mut reader = BufReader::with_capacity(64 * 1024, read_half);
    let mut writer = BufWriter::with_capacity(64 * 1024, write_half);

    let Some(options) = target.transport() else {
        tracing::debug!(%peer, "NVMe/TCP connection before nvmf_create_transport: closing");
        return;
    };
    let digests = match tokio::time::timeout(IC_TIMEOUT, initialize(&mut reader, &mut writer)).await
    {
        Ok(Ok(digests)) => digests,
        Ok(Err(e)) => {
            tracing::debug!(%peer, "NVMe/TCP initialization failed: {e}");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "no ICReq within {IC_TIMEOUT:?}");
            return;
        }
    };

    let connect_deadline = tokio::time::Instant::now() + CONNECT_TIMEOUT;
    // Everything the writer may hold is bounded by this, and the channel
    // with it: commands received whose response is not yet written.
    let (outgoing, to_send) = mpsc::unbounded_channel();
    let queue = Rc::new(RefCell::new(Queue::new(target, options, local, peer)));
    let sq_head = Rc::new(Cell::new(0u16));
    let outstanding = Rc::new(Cell::new(0usize));
    let writer_task = tokio::task::spawn_local(write_loop(
        writer,
        to_send,
        digests,
        Rc::clone(&queue),
        Rc::clone(&sq_head),
        Rc::clone(&outstanding),
    ));
    let (established, on_established) = oneshot::channel();
    let mut established = Some(established);
    let result = tokio::select! {
        _ = stop.cancelled() => Ok(()),
        ended = watch_queue(&queue, connect_deadline, on_established) => Err(ended),
        result = read_loop(&mut reader, &queue, &outgoing, &sq_head, &outstanding, &mut established, digests) => result,
    };
    if let Err(error) = &result {
        tracing::debug!(%peer, "NVMe/TCP connection ended: {error}");
    }
    queue.borrow_mut().close(&outgoing);
    drop(outgoing);
    let mut writer_task = writer_task;
    if tokio::time::timeout(CLOSE_TIMEOUT, &mut writer_task)
        .await
        .is_err()
    {
        tracing::debug!(%peer, "NVMe/TCP host stopped reading: closing without the rest");
        writer_task.abort();
    }
}

/// Resolves, with the reason, when the connection must end whatever it is
/// doing (even in the middle of a PDU): the queue was not established by
/// `connect_deadline`, or later its controller ended (keep-alive expiry,
/// admin queue gone, host removed) or its authentication failed.
async fn watch_queue(
    queue: &Rc<RefCell<Queue>>,
    connect_deadline: tokio::time::Instant,
    on_established: oneshot::Receiver<()>,
) -> String {
    tokio::select! {
        _ = tokio::time::sleep_until(connect_deadline) => {
            return format!("queue not established within {CONNECT_TIMEOUT:?} of ICResp");
        }
        // A dropped sender means the read loop ended: nothing to watch.
        signalled = on_established => if signalled.is_err() {
            return std::future::pending().await;
        }
    }
    // With DH-HMAC-CHAP pending this also fires when authentication fails
    // or outlasts its own deadline.
    let Some(gone) = queue.borrow().gone_token() else {
        return "queue closed".into();
    };
    gone.cancelled().await;
    "controller ended".into()
}

/// Tells the watch, once, that the queue is established.
fn signal_established(queue: &Rc<RefCell<Queue>>, established: &mut Option<oneshot::Sender<()>>) {
    if established.is_some() && queue.borrow().established() {
        let _ = established.take().map(|sender| sender.send(()));
    }
}

/// ICReq in, ICResp out: the digests this connection uses.
async fn initialize<R, W>(reader: &mut R, writer: &mut W) -> Result<Digests, PduError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut ic = [0u8; pdu::IC_LEN];
    reader
        .read_exact(&mut ic[..pdu::COMMON_HEADER_LEN])
        .await
        .map_err(|e| PduError::new(Fes::PduSequenceError, e.to_string()))?;
    let header = CommonHeader::parse(ic[..8].try_into().expect("8 bytes"));
    let check = if header.pdu_type != pdu::IC_REQ {
        Err(PduError::new(
            Fes::PduSequenceError,
            format!("first PDU has type {:#04x}, not ICReq", header.pdu_type),
        ))
    } else if usize::from(header.hlen) != pdu::IC_LEN || header.plen as usize != pdu::IC_LEN {
        Err(PduError::field(2, "ICReq HLEN/PLEN are not 128"))
    } else {
        Ok(())
    };
    if let Err(error) = check {
        let _ = writer.write_all(&pdu::c2h_term_req(&error, &ic[..8])).await;
        let _ = writer.flush().await;
        return Err(error);
    }
    reader
        .read_exact(&mut ic[pdu::COMMON_HEADER_LEN..])
        .await
        .map_err(|e| PduError::new(Fes::PduSequenceError, e.to_string()))?;
    let request = match pdu::IcReq::parse(&ic) {
        Ok(request) => request,
        Err(error) => {
            let _ = writer.write_all(&pdu::c2h_term_req(&error, &ic)).await;
            let _ = writer.flush().await;
            return Err(error);
        }
    };
    // CPDA 0: data right after the header; whatever digests the host asks.
    let response = pdu::ic_resp(0, request.digests, MAX_H2C_DATA);
    writer
        .write_all(&response)
        .await
        .and(writer.flush().await)
        .map_err(|e| PduError::new(Fes::PduSequenceError, e.to_string()))?;
    Ok(request.digests)
}

async fn read_loop<R: AsyncRead + Unpin>(
    reader: &mut R,
    queue: &Rc<RefCell<Queue>>,
    outgoing: &mpsc::UnboundedSender<Outgoing>,
    sq_head: &Rc<Cell<u16>>,
    outstanding: &Rc<Cell<usize>>,
    established: &mut Option<oneshot::Sender<()>>,
    digests: Digests,
) -> Result<(), String> {
    let mut pending: HashMap<u16, PendingData> = HashMap::new();
    let mut next_ttag: u16 = 0;
    loop {
        let mut common = [0u8; pdu::COMMON_HEADER_LEN];
        match reader.read_exact(&mut common).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e.to_string()),
        }
        let header = CommonHeader::parse(&common);
        let options = queue.borrow().options;
        let max_data = match header.pdu_type {
            pdu::CAPSULE_CMD => options.in_capsule_data_size as usize,
            pdu::H2C_DATA => MAX_H2C_DATA as usize,
            pdu::H2C_TERM_REQ => pdu::TERM_MAX_DATA + 24,
            _ => 0,
        };
        let layout = match pdu::layout(header, digests, max_data) {
            Ok(layout) => layout,
            Err(error) => return terminate(outgoing, &error, &common),
        };
        // On the stack: no allocation per PDU.
        let mut header_buffer = [0u8; pdu::MAX_HLEN];
        let raw_header = &mut header_buffer[..pdu::COMMON_HEADER_LEN + layout.specific_len];
        raw_header[..pdu::COMMON_HEADER_LEN].copy_from_slice(&common);
        reader
            .read_exact(&mut raw_header[pdu::COMMON_HEADER_LEN..])
            .await
            .map_err(|e| e.to_string())?;
        if layout.header_digest {
            let digest = read_digest(reader).await?;
            if !pdu::header_digest_ok(raw_header, &digest) {
                let error = PduError::new(Fes::HeaderDigestError, "header digest mismatch");
                return terminate(outgoing, &error, raw_header);
            }
        }
        if layout.padding > 0 {
            let mut padding = vec![0u8; layout.padding];
            reader
                .read_exact(&mut padding)
                .await
                .map_err(|e| e.to_string())?;
        }

        match header.pdu_type {
            pdu::H2C_TERM_REQ => {
                let mut data = vec![0u8; layout.data_len];
                reader
                    .read_exact(&mut data)
                    .await
                    .map_err(|e| e.to_string())?;
                let fes = u16::from_le_bytes([raw_header[8], raw_header[9]]);
                return Err(format!("host terminated the connection (FES {fes:#x})"));
            }
            pdu::CAPSULE_CMD => {
                let sqe: [u8; 64] = raw_header[8..72].try_into().expect("64 bytes");
                let command = Command::from_bytes(sqe);
                // Admission before anything is read or allocated for it.
                if let Err(error) = admit(
                    &queue.borrow(),
                    &command,
                    layout.data_len,
                    outstanding.get(),
                ) {
                    return terminate(outgoing, &error, raw_header);
                }
                outstanding.set(outstanding.get() + 1);
                let in_capsule = if layout.data_len > 0 {
                    let mut buf = IoBuf::for_io(layout.data_len);
                    reader
                        .read_exact(buf.as_mut_slice())
                        .await
                        .map_err(|e| e.to_string())?;
                    if layout.data_digest {
                        let digest = read_digest(reader).await?;
                        if pdu::data_digest(buf.as_slice()) != digest {
                            // A data digest error fails the command, not the connection.
                            sq_head.set(sq_head.get().wrapping_add(1));
                            let _ = outgoing.send(Outgoing::Completion(Completion::new(
                                command.cid(),
                                Status::DATA_TRANSFER_ERROR,
                            )));
                            continue;
                        }
                    }
                    Some(buf)
                } else {
                    None
                };
                sq_head.set(sq_head.get().wrapping_add(1));
                let connected = queue.borrow().established();
                match prepare(&command, in_capsule, &options, connected) {
                    Prepared::Run(data) => {
                        Queue::submit(queue, command, data, outgoing).await;
                        signal_established(queue, established);
                        if queue.borrow().disconnected() {
                            return Ok(());
                        }
                    }
                    Prepared::NeedData(length) => {
                        if pending.len() >= usize::from(u16::MAX) {
                            let _ = outgoing.send(Outgoing::Completion(Completion::new(
                                command.cid(),
                                Status::INTERNAL_ERROR,
                            )));
                            continue;
                        }
                        let ttag = loop {
                            next_ttag = next_ttag.wrapping_add(1);
                            if !pending.contains_key(&next_ttag) {
                                break next_ttag;
                            }
                        };
                        pending.insert(
                            ttag,
                            PendingData {
                                command,
                                buf: IoBuf::for_io(length as usize),
                                received: 0,
                            },
                        );
                        let _ = outgoing.send(Outgoing::R2T {
                            cid: command.cid(),
                            ttag,
                            length,
                        });
                    }
                    Prepared::Fail(status) => {
                        let _ = outgoing
                            .send(Outgoing::Completion(Completion::new(command.cid(), status)));
                    }
                }
            }
            pdu::H2C_DATA => {
                let data_header =
                    pdu::DataHeader::parse(&raw_header[8..]).map_err(|e| e.to_string())?;
                let Some(entry) = pending.get_mut(&data_header.ttag) else {
                    let error = PduError::field(
                        10,
                        format!("H2CData for unknown transfer tag {}", data_header.ttag),
                    );
                    return terminate(outgoing, &error, raw_header);
                };
                let expected_len = layout.data_len as u32;
                let ok = data_header.cccid == entry.command.cid()
                    && data_header.datal == expected_len
                    && data_header.datao as usize == entry.received
                    && entry.received + layout.data_len <= entry.buf.len();
                if !ok {
                    let error = PduError::new(
                        Fes::DataTransferOutOfRange,
                        format!(
                            "H2CData at offset {} for {} bytes does not continue the {}-byte transfer of command {} at {}",
                            data_header.datao,
                            data_header.datal,
                            entry.buf.len(),
                            entry.command.cid(),
                            entry.received
                        ),
                    );
                    return terminate(outgoing, &error, raw_header);
                }
                let start = entry.received;
                reader
                    .read_exact(&mut entry.buf.as_mut_slice()[start..start + layout.data_len])
                    .await
                    .map_err(|e| e.to_string())?;
                entry.received += layout.data_len;
                let mut digest_ok = true;
                if layout.data_digest {
                    let digest = read_digest(reader).await?;
                    digest_ok =
                        pdu::data_digest(&entry.buf.as_slice()[start..start + layout.data_len])
                            == digest;
                }
                let last = header.flags & pdu::FLAG_LAST_PDU != 0;
                let complete = entry.received == entry.buf.len();
                if !digest_ok {
                    let entry = pending.remove(&data_header.ttag).expect("present");
                    let _ = outgoing.send(Outgoing::Completion(Completion::new(
                        entry.command.cid(),
                        Status::DATA_TRANSFER_ERROR,
                    )));
                    continue;
                }
                if last != complete {
                    let error =
                        PduError::field(1, "LAST_PDU does not match the end of the transfer");
                    return terminate(outgoing, &error, raw_header);
                }
                if complete {
                    let entry = pending.remove(&data_header.ttag).expect("present");
                    Queue::submit(queue, entry.command, Some(entry.buf), outgoing).await;
                    signal_established(queue, established);
                }
            }
            other => {
                let error = PduError::field(0, format!("unexpected PDU type {other:#04x}"));
                return terminate(outgoing, &error, raw_header);
            }
        }
    }
}

/// Reads the 4-byte digest that follows a header or data.
async fn read_digest<R: AsyncRead + Unpin>(
    reader: &mut R,
) -> Result<[u8; pdu::DIGEST_LEN], String> {
    let mut digest = [0u8; pdu::DIGEST_LEN];
    reader
        .read_exact(&mut digest)
        .await
        .map_err(|e| e.to_string())?;
    Ok(digest)
}

fn terminate(
    outgoing: &mpsc::UnboundedSender<Outgoing>,
    error: &PduError,
    header: &[u8],
) -> Result<(), String> {
    let _ = outgoing.send(Outgoing::Terminate(pdu::c2h_term_req(error, header)));
    Err(format!("terminated: {error}"))
}

/// Whether the queue takes `command`, with `data_len` bytes in its
/// capsule, now that `outstanding` commands are received and not yet
/// answered. Refusal is a transport error: the host broke the queue's
/// rules, and nothing is spent on the command.
fn admit(
    queue: &Queue,
    command: &Command,
    data_len: usize,
    outstanding: usize,
) -> Result<(), PduError> {
    if !queue.established() {
        if !queue::admitted_before_connect(command) {
            return Err(PduError::new(
                Fes::PduSequenceError,
                format!(
                    "command (opcode {:#04x}, fctype {:#04x}) before Fabrics Connect",
                    command.opcode(),
                    command.fctype()
                ),
            ));
        }
        if data_len > queue::CONNECT_DATA_LEN {
            return Err(PduError::new(
                Fes::DataTransferLimitExceeded,
                format!("{data_len} bytes of in-capsule data before Fabrics Connect"),
            ));
        }
    }
    let depth = queue.queue_depth();
    if outstanding >= depth {
        return Err(PduError::new(
            Fes::PduSequenceError,
            format!("more than {depth} commands outstanding on a queue of {depth} entries"),
        ));
    }
    Ok(())
}

/// How a command's data will arrive.
enum Prepared {
    /// Run now, with the in-capsule data if any.
    Run(Option<IoBuf>),
    /// Ask for this many bytes with R2T first.
    NeedData(u32),
    Fail(Status),
}

/// Whether the command moves data from the host to the controller (the
/// data transfer direction bits of the opcode, or of FCTYPE for fabrics).
fn host_to_controller(command: &Command) -> bool {
    let direction = if command.opcode() == admin::FABRICS {
        command.fctype() & 0x3
    } else {
        command.opcode() & 0x3
    };
    direction == 0b01
}

/// Checks the SGL against the transport's rules and says where the data is.
/// Before the queue is `established` a command carries at most Connect's
/// data.
fn prepare(
    command: &Command,
    in_capsule: Option<IoBuf>,
    options: &TransportOptions,
    established: bool,
) -> Prepared {
    if command.psdt() != 1
        && command.psdt() != 2
        && !(command.psdt() == 0 && command.opcode() == admin::FABRICS)
    {
        // Fabrics commands always use SGLs whatever PSDT says; other
        // commands must say SGL.
        return Prepared::Fail(Status::INVALID_FIELD);
    }
    let sgl = command.sgl();
    let to_controller = host_to_controller(command);
    match sgl.identifier {
        sgl::IN_CAPSULE => {
            let Some(buf) = in_capsule else {
                return if sgl.length == 0 {
                    Prepared::Run(None)
                } else {
                    Prepared::Fail(Status::DATA_SGL_LENGTH_INVALID)
                };
            };
            if !to_controller || sgl.address != 0 || sgl.length as usize != buf.len() {
                return Prepared::Fail(Status::DATA_SGL_LENGTH_INVALID);
            }
            Prepared::Run(Some(buf))
        }
        sgl::TRANSPORT => {
            if super::queue_auth::send_data_too_long(command) {
                return Prepared::Fail(Status::DATA_SGL_LENGTH_INVALID);
            }
            if in_capsule.is_some() {
                return Prepared::Fail(Status::INVALID_SGL_DESCRIPTOR);
            }
            let most = if established {
                options.max_io_size.max(1 << 16)
            } else {
                queue::CONNECT_DATA_LEN as u32
            };
            if sgl.length > most {
                return Prepared::Fail(Status::DATA_SGL_LENGTH_INVALID);
            }
            if to_controller && sgl.length > 0 {
                Prepared::NeedData(sgl.length)
            } else {
                Prepared::Run(None)
            }
        }
        _ => Prepared::Fail(Status::SGL_TYPE_INVALID),
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut writer: BufWriter<W>,
    mut to_send: mpsc::UnboundedReceiver<Outgoing>,
    digests: Digests,
    queue: Rc<RefCell<Queue>>,
    sq_head: Rc<Cell<u16>>,
    outstanding: Rc<Cell<usize>>,
) {
    let mut buffer = Vec::with_capacity(4096);
    while let Some(first) = to_send.recv().await {
        let mut next = Some(first);
        let mut terminate = false;
        while let Some(item) = next.take() {
            let (qid, sqflow_disabled, c2h_success) = {
                let queue = queue.borrow();
                (
                    queue.qid().unwrap_or(0),
                    queue.sqflow_disabled(),
                    queue.options.c2h_success,
                )
            };
            let success_flag = sqflow_disabled && c2h_success;
            let sqhd = if sqflow_disabled {
                0xffff
            } else {
                sq_head.get()
            };
            buffer.clear();
            if matches!(item, Outgoing::Completion(_) | Outgoing::ReadData { .. }) {
                // The command's answer is on its way: its slot is free.
                outstanding.set(outstanding.get().saturating_sub(1));
            }
            match item {
                Outgoing::Completion(completion) => {
                    pdu::capsule_resp(&mut buffer, &completion.encode(sqhd, qid), digests);
                    if writer.write_all(&buffer).await.is_err() {
                        return;
                    }
                }
                Outgoing::ReadData {
                    completion,
                    data,
                    len,
                } => {
                    let success =
                        success_flag && completion.status.is_success() && completion.dw0 == 0;
                    let payload = &data.as_slice()[..len];
                    pdu::c2h_data_header(
                        &mut buffer,
                        completion.cid,
                        0,
                        len as u32,
                        true,
                        success,
                        digests,
                    );
                    let ok = writer.write_all(&buffer).await.is_ok()
                        && writer.write_all(payload).await.is_ok();
                    if !ok {
                        return;
                    }
                    if digests.data
                        && len > 0
                        && writer.write_all(&pdu::data_digest(payload)).await.is_err()
                    {
                        return;
                    }
                    if !success {
                        buffer.clear();
                        pdu::capsule_resp(&mut buffer, &completion.encode(sqhd, qid), digests);
                        if writer.write_all(&buffer).await.is_err() {
                            return;
                        }
                    }
                }
                Outgoing::R2T { cid, ttag, length } => {
                    pdu::r2t(&mut buffer, cid, ttag, 0, length, digests);
                    if writer.write_all(&buffer).await.is_err() {
                        return;
                    }
                }
                Outgoing::Terminate(bytes) => {
                    let _ = writer.write_all(&bytes).await;
                    terminate = true;
                }
            }
            if !terminate {
                next = to_send.try_recv().ok();
            }
        }
        if writer.flush().await.is_err() || terminate {
            let _ = writer.shutdown().await;
            return;
        }
    }
    let _ = writer.shutdown().await;
}

/// Responses reach the writer through this.
pub fn send_response(outgoing: &mpsc::UnboundedSender<Outgoing>, response: Response) {
    let item = match response {
        Response::Done(completion) => Outgoing::Completion(completion),
        Response::Data {
            completion,
            data,
            len,
        } => Outgoing::ReadData {
            completion,
            data,
            len,
        },
        Response::Deferred => return,
    };
    let _ = outgoing.send(item);
}
