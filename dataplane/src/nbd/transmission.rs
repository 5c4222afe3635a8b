//! The transmission phase: requests in, replies out, many in flight.
//!
//! A reader reads request headers (and write payloads, straight into I/O
//! buffers), checks them, and starts each I/O as its own task on this
//! reactor; a writer sends replies as they complete, in completion order,
//! batching whatever is ready into one flush. Every request holds its
//! share of the connection's and the cluster's [budget] from before its
//! buffer is allocated until its reply has been written, so what a client
//! can pin does not depend on whether it reads its replies. A malformed
//! request gets its NBD error and costs nobody else anything; a request
//! the stream cannot be resynchronised after (bad magic, an oversized
//! write) closes this connection only.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::budget::{ConnectionBudget, Reservation};
use super::exports::Export;
use super::proto::*;
use crate::bdev::{IoBuf, IoChannel, IoError, IoKind, IoRequest};

pub use super::budget::MAX_IN_FLIGHT;

/// Time a write's whole payload has to arrive once its buffer is
/// allocated (at least 1.1 MiB/s for the largest write): a client that
/// announces a payload and stops sending gives its budget back then.
pub const WRITE_PAYLOAD_TIMEOUT: Duration = Duration::from_secs(30);

/// Time one batch of replies (at most [`MAX_IN_FLIGHT_BYTES`](super::budget::MAX_IN_FLIGHT_BYTES) of
/// data) has to be written to the socket: a client that stops reading is
/// disconnected then, and what it held is given back.
pub const REPLY_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Command flags this server understands.
const KNOWN_FLAGS: u16 = CMD_FLAG_FUA | CMD_FLAG_NO_HOLE | CMD_FLAG_DF;

/// One reply to send, with what its request holds until it is written.
struct Reply {
    cookie: u64,
    offset: u64,
    outcome: Result<Option<IoBuf>, (u32, String)>,
    reservation: Reservation,
}

impl Reply {
    fn error(
        request: &Request,
        errno: u32,
        message: impl Into<String>,
        reservation: Reservation,
    ) -> Self {
        Self {
            cookie: request.cookie,
            offset: request.offset,
            outcome: Err((errno, message.into())),
            reservation,
        }
    }
}

/// Serves requests on `stream` for `export` until the client disconnects,
/// breaks the protocol, the export is stopped or `revoked` fires.
pub async fn transmit(
    stream: TcpStream,
    export: Arc<Export>,
    structured: bool,
    revoked: CancellationToken,
) -> std::io::Result<()> {
    let (read_half, write_half) = stream.into_split();
    transmit_on(read_half, write_half, export, structured, revoked).await
}

/// [`transmit`] over any pair of stream halves (a TLS session's, or the
/// in-memory pipes of tests and fuzzing).
pub async fn transmit_on<R, W>(
    read_half: R,
    write_half: W,
    export: Arc<Export>,
    structured: bool,
    revoked: CancellationToken,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + 'static,
{
    let _counted = export.connect();
    let (replies, outgoing) = mpsc::unbounded_channel();
    let writer = tokio::task::spawn_local(write_replies(write_half, outgoing, structured));
    let read_result = read_requests(read_half, &export, replies, &revoked).await;
    // The writer ends once every in-flight request has sent its reply.
    let write_result = writer
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
    read_result.and(write_result)
}

/// Why the reader stopped waiting.
enum Wait<T> {
    Done(T),
    /// The export was stopped, access revoked, or the writer gave up.
    Ended,
}

async fn unless_ended<T>(
    export: &Export,
    revoked: &CancellationToken,
    replies: &mpsc::UnboundedSender<Reply>,
    work: impl Future<Output = T>,
) -> Wait<T> {
    tokio::select! {
        _ = export.stopped() => Wait::Ended,
        _ = revoked.cancelled() => Wait::Ended,
        _ = replies.closed() => Wait::Ended,
        done = work => Wait::Done(done),
    }
}

async fn read_requests<R: AsyncRead + Unpin>(
    read_half: R,
    export: &Arc<Export>,
    replies: mpsc::UnboundedSender<Reply>,
    revoked: &CancellationToken,
) -> std::io::Result<()> {
    let mut reader = BufReader::with_capacity(256 * 1024, read_half);
    let channel = export.bdev.channel();
    let budget = ConnectionBudget::new();
    let block_size = u64::from(export.bdev.block_size());
    let size = export.bdev.size_bytes();
    loop {
        let Wait::Done(mut reservation) =
            unless_ended(export, revoked, &replies, budget.slot()).await
        else {
            return Ok(());
        };
        let mut header = [0u8; REQUEST_BYTES];
        match unless_ended(export, revoked, &replies, reader.read_exact(&mut header)).await {
            Wait::Ended => return Ok(()),
            Wait::Done(Ok(_)) => {}
            Wait::Done(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Wait::Done(Err(e)) => return Err(e),
        }
        let request = match parse_request(&header) {
            Ok(request) => request,
            Err(e) => {
                tracing::debug!(export = export.name, "{e}: closing the connection");
                return Ok(());
            }
        };
        if request.command == CMD_WRITE && request.length > MAX_PAYLOAD_BYTES {
            // The payload cannot be skipped at a bounded cost: refuse and close.
            let message = format!(
                "write of {} bytes exceeds the {MAX_PAYLOAD_BYTES}-byte maximum",
                request.length
            );
            let _ = replies.send(Reply::error(&request, EOVERFLOW, message, reservation));
            return Ok(());
        }
        // Reads and writes reserve their payload before its buffer exists.
        let payload_bytes = match request.command {
            CMD_READ | CMD_WRITE if request.length <= MAX_PAYLOAD_BYTES => request.length,
            _ => 0,
        };
        let reserved = budget.add_bytes(&mut reservation, payload_bytes);
        if let Wait::Ended = unless_ended(export, revoked, &replies, reserved).await {
            return Ok(());
        }

        // A write's payload follows its header whatever we think of the
        // request: read it first to stay in step with the stream.
        let payload = if request.command == CMD_WRITE {
            let mut buf = IoBuf::for_io(request.length as usize);
            let arrived =
                tokio::time::timeout(WRITE_PAYLOAD_TIMEOUT, reader.read_exact(buf.as_mut_slice()));
            match unless_ended(export, revoked, &replies, arrived).await {
                Wait::Ended => return Ok(()),
                Wait::Done(Ok(read)) => {
                    read?;
                }
                Wait::Done(Err(_)) => {
                    tracing::debug!(
                        export = export.name,
                        "write payload did not arrive in {WRITE_PAYLOAD_TIMEOUT:?}: closing"
                    );
                    return Ok(());
                }
            }
            Some(buf)
        } else {
            None
        };

        if request.command == CMD_DISC {
            return Ok(());
        }
        match check(&request, export, block_size, size) {
            Err((errno, message)) => {
                let _ = replies.send(Reply::error(&request, errno, message, reservation));
            }
            Ok(Some(mut io)) => {
                if payload.is_some() {
                    io.buf = payload;
                }
                let channel = Rc::clone(&channel);
                let replies = replies.clone();
                tokio::task::spawn_local(async move {
                    let reply = execute(&channel, &request, io, reservation).await;
                    let _ = replies.send(reply);
                });
            }
            Ok(None) => {
                // Nothing to do (a trim smaller than one block).
                let _ = replies.send(Reply {
                    cookie: request.cookie,
                    offset: request.offset,
                    outcome: Ok(None),
                    reservation,
                });
            }
        }
    }
}

/// Checks a request against the export and turns it into a bdev request.
/// `Ok(None)` means there is nothing to do; errors carry the NBD errno.
fn check(
    request: &Request,
    export: &Export,
    block_size: u64,
    size: u64,
) -> Result<Option<IoRequest>, (u32, String)> {
    if request.flags & !KNOWN_FLAGS != 0 {
        return Err((
            EINVAL,
            format!("unknown command flags {:#x}", request.flags & !KNOWN_FLAGS),
        ));
    }
    let writes = matches!(request.command, CMD_WRITE | CMD_TRIM | CMD_WRITE_ZEROES);
    if writes && export.read_only {
        return Err((EPERM, "the export is read-only".into()));
    }
    let offset = request.offset;
    let length = u64::from(request.length);
    let end = offset.checked_add(length);
    let beyond_end = end.is_none_or(|end| end > size);
    let aligned = offset.is_multiple_of(block_size) && length.is_multiple_of(block_size);
    let misaligned = || {
        (
            EINVAL,
            format!("offset and length must be multiples of the {block_size}-byte block size"),
        )
    };
    let range = |kind: IoKind| IoRequest::range(kind, offset / block_size, length / block_size);
    match request.command {
        CMD_READ => {
            if length == 0 {
                return Err((EINVAL, "zero-length read".into()));
            }
            if request.length > MAX_PAYLOAD_BYTES {
                return Err((
                    EOVERFLOW,
                    format!("read exceeds the {MAX_PAYLOAD_BYTES}-byte maximum"),
                ));
            }
            if beyond_end {
                return Err((
                    EINVAL,
                    format!("read beyond the end of the {size}-byte export"),
                ));
            }
            if !aligned {
                return Err(misaligned());
            }
            let buf = IoBuf::for_io(request.length as usize);
            Ok(Some(IoRequest::read(
                offset / block_size,
                buf,
                block_size as u32,
            )))
        }
        CMD_WRITE | CMD_WRITE_ZEROES => {
            if length == 0 {
                return Err((EINVAL, "zero-length write".into()));
            }
            if beyond_end {
                return Err((
                    ENOSPC,
                    format!("write beyond the end of the {size}-byte export"),
                ));
            }
            if !aligned {
                return Err(misaligned());
            }
            let kind = if request.command == CMD_WRITE {
                IoKind::Write
            } else {
                IoKind::WriteZeroes
            };
            let mut io = range(kind);
            io.fua = request.flags & CMD_FLAG_FUA != 0;
            Ok(Some(io))
        }
        CMD_TRIM => {
            if beyond_end {
                return Err((
                    EINVAL,
                    format!("trim beyond the end of the {size}-byte export"),
                ));
            }
            // Trim is advisory: shrink it to the whole blocks it covers.
            let first = offset.div_ceil(block_size);
            let last = (offset + length) / block_size;
            Ok((last > first).then(|| IoRequest::range(IoKind::Unmap, first, last - first)))
        }
        CMD_FLUSH => Ok(Some(IoRequest::range(IoKind::Flush, 0, 0))),
        other => Err((EINVAL, format!("command {other} is not supported"))),
    }
}

async fn execute(
    channel: &IoChannel,
    request: &Request,
    io: IoRequest,
    reservation: Reservation,
) -> Reply {
    let is_read = io.kind == IoKind::Read;
    let fua = io.fua;
    let mut completion = channel.submit(io).await;
    if completion.result.is_ok() && fua && !is_read {
        // Force unit access: bdevs without native FUA get a flush.
        completion.result = channel
            .submit(IoRequest::range(IoKind::Flush, 0, 0))
            .await
            .result;
    }
    let outcome = match completion.result {
        Ok(()) => Ok(if is_read { completion.buf } else { None }),
        Err(error) => Err((wire_errno(&error), error.to_string())),
    };
    Reply {
        cookie: request.cookie,
        offset: request.offset,
        outcome,
        reservation,
    }
}

fn wire_errno(error: &IoError) -> u32 {
    match error {
        IoError::Io => EIO,
        IoError::OutOfRange { .. } | IoError::Invalid(_) => EINVAL,
        IoError::NotSupported => ENOTSUP,
        IoError::Removed => ESHUTDOWN,
        IoError::NoSpace => ENOSPC,
    }
}

async fn write_replies<W: AsyncWrite + Unpin>(
    write_half: W,
    mut outgoing: mpsc::UnboundedReceiver<Reply>,
    structured: bool,
) -> std::io::Result<()> {
    let mut out = BufWriter::with_capacity(256 * 1024, write_half);
    let mut written = Vec::new();
    while let Some(reply) = outgoing.recv().await {
        let batch = async {
            written.push(encode(&mut out, reply, structured).await?);
            while let Ok(reply) = outgoing.try_recv() {
                written.push(encode(&mut out, reply, structured).await?);
            }
            out.flush().await
        };
        match tokio::time::timeout(REPLY_WRITE_TIMEOUT, batch).await {
            Ok(result) => result?,
            Err(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("the client read no reply for {REPLY_WRITE_TIMEOUT:?}"),
                ));
            }
        }
        // On the socket now: give their buffers and budget back.
        written.clear();
    }
    out.shutdown().await
}

/// Writes one reply into `out`; returns what its request held, to be
/// released once `out` has been flushed.
async fn encode<W: AsyncWrite + Unpin>(
    out: &mut BufWriter<W>,
    reply: Reply,
    structured: bool,
) -> std::io::Result<Reservation> {
    let reservation = reply.reservation;
    match (reply.outcome, structured) {
        (Ok(data), false) => {
            out.write_all(&simple_reply(0, reply.cookie)).await?;
            if let Some(data) = data {
                out.write_all(data.as_slice()).await?;
            }
        }
        (Err((errno, _)), false) => out.write_all(&simple_reply(errno, reply.cookie)).await?,
        (Ok(Some(data)), true) => {
            let length = 8 + data.len() as u32;
            out.write_all(&structured_header(
                REPLY_FLAG_DONE,
                REPLY_TYPE_OFFSET_DATA,
                reply.cookie,
                length,
            ))
            .await?;
            out.write_all(&reply.offset.to_be_bytes()).await?;
            out.write_all(data.as_slice()).await?;
        }
        (Ok(None), true) => {
            out.write_all(&structured_header(
                REPLY_FLAG_DONE,
                REPLY_TYPE_NONE,
                reply.cookie,
                0,
            ))
            .await?;
        }
        (Err((errno, message)), true) => {
            out.write_all(&structured_error(reply.cookie, errno, &message))
                .await?
        }
    }
    Ok(reservation)
}

#[cfg(test)]
mod wire_errno_tests {
    use super::*;

    #[test]
    fn each_io_error_has_its_nbd_errno() {
        assert_eq!(wire_errno(&IoError::NoSpace), 28, "ENOSPC");
        assert_eq!(wire_errno(&IoError::Io), 5, "EIO");
        assert_eq!(wire_errno(&IoError::Removed), ESHUTDOWN);
    }
}
