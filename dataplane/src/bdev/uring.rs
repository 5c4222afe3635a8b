//! `uring`: a file or block device driven through io_uring, SPDK's
//! `bdev_uring`. This is how the appliance talks to its SSDs (files in the
//! dev setup, `/dev/nvmeXnY` in the QEMU image).
//!
//! The file is opened with `O_DIRECT` so I/O bypasses the page cache; a
//! file system that refuses it gets buffered I/O and one WARN line. Each
//! reactor's channel owns one ring: requests are pushed and submitted as
//! they come, up to [`QUEUE_DEPTH`] in flight (more wait their turn), and
//! completions wake the reactor through an eventfd registered with the ring.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::future::Future;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use io_uring::{IoUring, opcode, squeue, types};
use serde_json::json;
use tokio::io::unix::AsyncFd;
use uuid::Uuid;

use super::zeroing::ZeroingChoice;
use super::{
    BackendChannel, Bdev, BdevBackend, BdevError, BdevRegistry, BdevSpec, IoBuf, IoCompletion,
    IoError, IoFuture, IoKind, IoRequest,
};

/// Requests in flight per ring (per bdev per reactor).
pub const QUEUE_DEPTH: u32 = 128;

/// Largest write of a zero buffer where the file system can only zero by
/// writing (see [`ZeroingMethod::WriteBuffers`]).
const ZERO_BUFFER_BYTES: u64 = 1 << 20;

/// What `bdev_uring_create` asks for.
#[derive(Debug, Clone)]
pub struct UringConfig {
    pub name: String,
    pub filename: PathBuf,
    /// Block size; default: the device's logical block size, 512 for files.
    pub block_size: Option<u32>,
    pub uuid: Option<Uuid>,
}

struct Uring {
    file: Arc<File>,
    path: PathBuf,
    direct: bool,
    block_size: u32,
    zeroing: Arc<Zeroing>,
}

/// How this bdev's file takes write-zeroes, learnt from its refusals.
struct Zeroing {
    choice: ZeroingChoice,
    path: PathBuf,
}

/// Opens the file and registers the bdev.
pub fn create_uring(registry: &BdevRegistry, config: UringConfig) -> Result<Arc<Bdev>, BdevError> {
    let zeroing = ZeroingChoice::default();
    create_with_zeroing(registry, config, zeroing)
}

/// [`create_uring`], starting from a given zeroing method (tests).
fn create_with_zeroing(
    registry: &BdevRegistry,
    config: UringConfig,
    zeroing: ZeroingChoice,
) -> Result<Arc<Bdev>, BdevError> {
    let io_err = |context: String| move |source| BdevError::Io { context, source };
    let path = &config.filename;
    let (file, direct) = open(path).map_err(io_err(format!("cannot open {}", path.display())))?;
    let metadata = file
        .metadata()
        .map_err(io_err(format!("cannot stat {}", path.display())))?;
    let (size, logical_block) = if metadata.file_type().is_block_device() {
        block_device_geometry(&file).map_err(io_err(format!(
            "cannot read the geometry of {}",
            path.display()
        )))?
    } else if metadata.is_file() {
        (metadata.len(), 512)
    } else {
        return Err(BdevError::Invalid(format!(
            "{} is neither a regular file nor a block device",
            path.display()
        )));
    };
    let block_size = config.block_size.unwrap_or(logical_block);
    if direct && block_size < logical_block {
        return Err(BdevError::Invalid(format!(
            "block_size {block_size} is smaller than {}'s logical block size {logical_block}",
            path.display()
        )));
    }
    let num_blocks = size / u64::from(block_size.max(1));
    if num_blocks == 0 {
        return Err(BdevError::Invalid(format!(
            "{} ({size} bytes) is smaller than one {block_size}-byte block",
            path.display()
        )));
    }
    let spec = BdevSpec {
        name: config.name,
        uuid: config.uuid,
        block_size,
        num_blocks,
    };
    let backend = Uring {
        file: Arc::new(file),
        path: path.clone(),
        direct,
        block_size,
        zeroing: Arc::new(Zeroing {
            choice: zeroing,
            path: path.clone(),
        }),
    };
    registry.register(spec, Box::new(backend))
}

/// Opens read-write with O_DIRECT, falling back to buffered I/O where the
/// file system does not support it.
fn open(path: &Path) -> std::io::Result<(File, bool)> {
    let mut options = OpenOptions::new();
    options.read(true).write(true);
    match options.clone().custom_flags(libc::O_DIRECT).open(path) {
        Ok(file) => Ok((file, true)),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            tracing::warn!(
                path = %path.display(),
                "O_DIRECT is not supported here; using buffered I/O (slower, and writes are durable only after flush)"
            );
            Ok((options.open(path)?, false))
        }
        Err(e) => Err(e),
    }
}

/// Size in bytes and logical block size of a block device.
fn block_device_geometry(file: &File) -> std::io::Result<(u64, u32)> {
    // From <linux/fs.h>: _IOR(0x12, 114, size_t) and _IO(0x12, 104).
    const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;
    const BLKSSZGET: libc::c_ulong = 0x1268;
    let mut size: u64 = 0;
    let mut logical: libc::c_int = 0;
    // SAFETY: both ioctls write one value of the pointed-to type.
    unsafe {
        if libc::ioctl(file.as_raw_fd(), BLKGETSIZE64, &mut size) != 0
            || libc::ioctl(file.as_raw_fd(), BLKSSZGET, &mut logical) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok((size, logical.max(512) as u32))
}

impl BdevBackend for Uring {
    fn module(&self) -> &'static str {
        "uring"
    }

    fn product_name(&self) -> &'static str {
        "URING bdev"
    }

    fn supports(&self, _kind: IoKind) -> bool {
        true
    }

    fn create_channel(&self) -> Box<dyn BackendChannel> {
        match Ring::new(Arc::clone(&self.file)) {
            Ok(ring) => Box::new(UringChannel {
                ring,
                block_size: u64::from(self.block_size),
                zeroing: Arc::clone(&self.zeroing),
            }),
            Err(e) => {
                tracing::error!(path = %self.path.display(), "cannot set up io_uring: {e}");
                Box::new(FailedChannel)
            }
        }
    }

    fn driver_specific(&self) -> Option<(&'static str, serde_json::Value)> {
        Some((
            "uring",
            json!({"filename": self.path, "o_direct": self.direct}),
        ))
    }
}

/// A channel whose ring could not be created: every I/O fails.
struct FailedChannel;

impl BackendChannel for FailedChannel {
    fn submit(&self, io: IoRequest) -> IoFuture {
        Box::pin(std::future::ready(IoCompletion::new(
            io.buf,
            Err(IoError::Io),
        )))
    }
}

struct UringChannel {
    ring: Rc<RefCell<Ring>>,
    block_size: u64,
    zeroing: Arc<Zeroing>,
}

impl BackendChannel for UringChannel {
    fn submit(&self, io: IoRequest) -> IoFuture {
        let offset = io.offset_blocks * self.block_size;
        let len = io.num_blocks * self.block_size;
        let slot = match io.kind {
            IoKind::WriteZeroes => {
                return Box::pin(write_zeroes(
                    Rc::clone(&self.ring),
                    Arc::clone(&self.zeroing),
                    offset,
                    len,
                ));
            }
            IoKind::Unmap => {
                let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
                Ring::start_fallocate(&self.ring, io.kind, mode, offset, len)
            }
            _ => Ring::start(&self.ring, io, offset),
        };
        Box::pin(UringIo {
            ring: Rc::clone(&self.ring),
            slot: Some(slot),
        })
    }
}

/// Write zeroes with the bdev's current method, falling back (and
/// remembering it) while the file system refuses methods as unsupported.
async fn write_zeroes(
    ring: Rc<RefCell<Ring>>,
    zeroing: Arc<Zeroing>,
    offset: u64,
    len: u64,
) -> IoCompletion {
    let mut method = zeroing.choice.current();
    loop {
        let result = match method.fallocate_mode() {
            Some(mode) => {
                let slot = Ring::start_fallocate(&ring, IoKind::WriteZeroes, mode, offset, len);
                UringIo {
                    ring: Rc::clone(&ring),
                    slot: Some(slot),
                }
                .await
                .result
            }
            None => write_zero_buffers(&ring, offset, len).await,
        };
        if result != Err(IoError::NotSupported) {
            return IoCompletion::new(None, result);
        }
        let Some(next) = zeroing.choice.refused(method) else {
            return IoCompletion::new(None, result);
        };
        if next != method {
            tracing::info!(
                path = %zeroing.path.display(),
                "write zeroes: {method:?} is not supported here; using {next:?}"
            );
        }
        method = next;
    }
}

/// Zeroes `len` bytes at `offset` by writing a zeroed buffer, piece by
/// piece (the buffer comes back with each completion and is reused).
async fn write_zero_buffers(
    ring: &Rc<RefCell<Ring>>,
    offset: u64,
    len: u64,
) -> Result<(), IoError> {
    let mut buf = Some(IoBuf::new(ZERO_BUFFER_BYTES.min(len) as usize));
    let mut done = 0;
    while done < len {
        let piece = ZERO_BUFFER_BYTES.min(len - done);
        let mut zeroes = buf.take().ok_or(IoError::Io)?;
        if zeroes.len() as u64 != piece {
            zeroes = IoBuf::new(piece as usize);
        }
        let write = IoRequest {
            kind: IoKind::Write,
            offset_blocks: 0,
            num_blocks: 0,
            buf: Some(zeroes),
            fua: false,
        };
        let slot = Ring::start(ring, write, offset + done);
        let completion = UringIo {
            ring: Rc::clone(ring),
            slot: Some(slot),
        }
        .await;
        completion.result?;
        buf = completion.buf;
        done += piece;
    }
    Ok(())
}

impl Drop for UringChannel {
    fn drop(&mut self) {
        Ring::shut_down(&self.ring);
    }
}

/// One request's place while the kernel has it.
struct Slot {
    kind: IoKind,
    expected: usize,
    buf: Option<IoBuf>,
    result: Option<i32>,
    waker: Option<Waker>,
    /// The submitter went away; free the slot when the CQE arrives.
    orphaned: bool,
}

struct Ring {
    uring: IoUring,
    file: Arc<File>,
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    /// Requests waiting for room in the ring.
    waiting: VecDeque<squeue::Entry>,
    in_flight: u32,
    reaper: Option<tokio::task::JoinHandle<()>>,
}

impl Ring {
    fn new(file: Arc<File>) -> std::io::Result<Rc<RefCell<Self>>> {
        let uring = IoUring::builder()
            .setup_cqsize(QUEUE_DEPTH * 2)
            .build(QUEUE_DEPTH)?;
        // SAFETY: eventfd returns a new descriptor we own, or -1.
        let raw = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: raw is a fresh, valid descriptor.
        let eventfd = unsafe { OwnedFd::from_raw_fd(raw) };
        uring.submitter().register_eventfd(eventfd.as_raw_fd())?;
        // SAFETY: the OwnedFd stays open and unchanged inside the AsyncFd.
        let eventfd =
            unsafe { AsyncFd::register_with_interest(eventfd, tokio::io::Interest::READABLE) }
                .map_err(|e| std::io::Error::other(e.to_string()))?;
        let eventfd = Rc::new(eventfd);
        let ring = Rc::new(RefCell::new(Self {
            uring,
            file,
            slots: Vec::new(),
            free: Vec::new(),
            waiting: VecDeque::new(),
            in_flight: 0,
            reaper: None,
        }));
        let weak = Rc::downgrade(&ring);
        let reaper = tokio::task::spawn_local(async move {
            loop {
                let Ok(mut guard) = eventfd.readable().await else {
                    return;
                };
                let mut counter = [0u8; 8];
                // SAFETY: reading 8 bytes into an 8-byte buffer.
                let _ = unsafe {
                    libc::read(
                        guard.get_inner().as_raw_fd(),
                        counter.as_mut_ptr().cast(),
                        8,
                    )
                };
                guard.clear_ready();
                let Some(ring) = weak.upgrade() else { return };
                ring.borrow_mut().reap();
            }
        });
        ring.borrow_mut().reaper = Some(reaper);
        Ok(ring)
    }

    fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// Builds the request's entry, queues it and submits. Returns its slot.
    fn start(ring: &Rc<RefCell<Self>>, mut io: IoRequest, offset: u64) -> usize {
        let mut this = ring.borrow_mut();
        let fd = types::Fd(this.fd());
        let (entry, expected) = match (io.kind, io.buf.as_mut()) {
            (IoKind::Read, Some(buf)) => {
                let len = buf.len();
                (
                    opcode::Read::new(fd, buf.as_mut_ptr(), len as u32)
                        .offset(offset)
                        .build(),
                    len,
                )
            }
            (IoKind::Write, Some(buf)) => {
                let len = buf.len();
                let flags = if io.fua { libc::RWF_DSYNC } else { 0 };
                (
                    opcode::Write::new(fd, buf.as_ptr(), len as u32)
                        .offset(offset)
                        .rw_flags(flags)
                        .build(),
                    len,
                )
            }
            (IoKind::Flush, _) => (
                opcode::Fsync::new(fd)
                    .flags(types::FsyncFlags::DATASYNC)
                    .build(),
                0,
            ),
            // Unmap and write zeroes go through start_range; reset has
            // nothing to do for a file.
            _ => (opcode::Nop::new().build(), 0),
        };
        this.enqueue(entry, io.kind, expected, io.buf)
    }

    /// Unmap and write zeroes: fallocate over a byte range.
    fn start_fallocate(
        ring: &Rc<RefCell<Self>>,
        kind: IoKind,
        mode: i32,
        offset: u64,
        len: u64,
    ) -> usize {
        let mut this = ring.borrow_mut();
        let fd = types::Fd(this.fd());
        let entry = opcode::Fallocate::new(fd, len)
            .offset(offset)
            .mode(mode)
            .build();
        this.enqueue(entry, kind, 0, None)
    }

    fn enqueue(
        &mut self,
        entry: squeue::Entry,
        kind: IoKind,
        expected: usize,
        buf: Option<IoBuf>,
    ) -> usize {
        let slot = Slot {
            kind,
            expected,
            buf,
            result: None,
            waker: None,
            orphaned: false,
        };
        let index = match self.free.pop() {
            Some(index) => {
                self.slots[index] = Some(slot);
                index
            }
            None => {
                self.slots.push(Some(slot));
                self.slots.len() - 1
            }
        };
        self.waiting.push_back(entry.user_data(index as u64));
        self.push_waiting();
        index
    }

    /// Moves waiting entries into the ring while there is room, then submits.
    fn push_waiting(&mut self) {
        let mut pushed = false;
        while self.in_flight < QUEUE_DEPTH
            && let Some(entry) = self.waiting.pop_front()
        {
            // SAFETY: the entry's buffer lives in its slot until the CQE.
            if unsafe { self.uring.submission().push(&entry) }.is_err() {
                self.waiting.push_front(entry);
                break;
            }
            self.in_flight += 1;
            pushed = true;
        }
        if pushed && let Err(e) = self.uring.submit() {
            tracing::error!("io_uring submit failed: {e}");
        }
    }

    /// Collects completions and wakes their futures.
    fn reap(&mut self) {
        let mut done = Vec::new();
        for cqe in self.uring.completion() {
            done.push((cqe.user_data() as usize, cqe.result()));
        }
        for (index, result) in done {
            self.in_flight -= 1;
            let Some(Some(slot)) = self.slots.get_mut(index) else {
                continue;
            };
            if slot.orphaned {
                self.slots[index] = None;
                self.free.push(index);
                continue;
            }
            slot.result = Some(result);
            if let Some(waker) = slot.waker.take() {
                waker.wake();
            }
        }
        self.push_waiting();
    }

    /// Waits (blocking) for every request the kernel still holds, so no
    /// buffer is freed under it.
    fn shut_down(ring: &Rc<RefCell<Self>>) {
        let mut this = ring.borrow_mut();
        if let Some(reaper) = this.reaper.take() {
            reaper.abort();
        }
        this.waiting.clear();
        while this.in_flight > 0 {
            if this.uring.submit_and_wait(1).is_err() {
                break;
            }
            this.reap();
        }
    }
}

struct UringIo {
    ring: Rc<RefCell<Ring>>,
    slot: Option<usize>,
}

impl Future for UringIo {
    type Output = IoCompletion;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<IoCompletion> {
        let index = self.slot.expect("polled after completion");
        let mut ring = self.ring.borrow_mut();
        let slot = ring.slots[index].as_mut().expect("slot of a live request");
        let Some(result) = slot.result else {
            slot.waker = Some(cx.waker().clone());
            return Poll::Pending;
        };
        let slot = ring.slots[index].take().expect("present");
        ring.free.push(index);
        drop(ring);
        self.slot = None;
        let outcome = outcome_of(slot.kind, result, slot.expected);
        Poll::Ready(IoCompletion::new(slot.buf, outcome))
    }
}

/// What a completion's result (bytes done, or a negative errno) means for
/// a request of `kind` that asked for `expected` bytes.
fn outcome_of(kind: IoKind, result: i32, expected: usize) -> Result<(), IoError> {
    match result {
        n if n < 0 => Err(match -n {
            libc::EOPNOTSUPP => IoError::NotSupported,
            libc::EINVAL => IoError::Invalid("the device refused the request (alignment or range)"),
            // Out of space (or quota) on the file system under the file.
            libc::ENOSPC | libc::EDQUOT => IoError::NoSpace,
            _ => IoError::Io,
        }),
        // A write inside the file's size comes back short only when the
        // file system ran out of blocks (the rest would fail ENOSPC).
        n if kind == IoKind::Write && (n as usize) < expected => Err(IoError::NoSpace),
        n if kind.has_data() && n as usize != expected => Err(IoError::Io),
        _ => Ok(()),
    }
}

impl Drop for UringIo {
    fn drop(&mut self) {
        if let Some(index) = self.slot
            && let Ok(mut ring) = self.ring.try_borrow_mut()
            && let Some(slot) = ring.slots[index].as_mut()
        {
            if slot.result.is_some() {
                ring.slots[index] = None;
                ring.free.push(index);
            } else {
                slot.orphaned = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bdev::channel::submit;
    use crate::bdev::testing::block_on;
    use crate::bdev::zeroing::ZeroingMethod;

    fn backing_file(dir: &Path, bytes: u64) -> PathBuf {
        let path = dir.join("disk.img");
        File::create(&path).unwrap().set_len(bytes).unwrap();
        path
    }

    fn config(path: &Path, block_size: Option<u32>) -> UringConfig {
        UringConfig {
            name: "u0".into(),
            filename: path.to_path_buf(),
            block_size,
            uuid: None,
        }
    }

    #[test]
    fn writes_land_in_the_file_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = backing_file(dir.path(), 1 << 20);
        let registry = BdevRegistry::new();
        let bdev = create_uring(&registry, config(&path, Some(4096))).unwrap();
        assert_eq!(bdev.num_blocks(), 256);
        block_on(async {
            // Many requests in flight at once, more than the ring holds.
            let writes = (0..200u64).map(|block| {
                let data = IoBuf::from_slice(&vec![(block % 251) as u8; 4096]);
                let bdev = Arc::clone(&bdev);
                async move { submit(&bdev, IoRequest::write(block, data, 4096)).await }
            });
            for done in futures_util::future::join_all(writes).await {
                assert_eq!(done.result, Ok(()));
            }
            let flush = submit(&bdev, IoRequest::range(IoKind::Flush, 0, 0)).await;
            assert_eq!(flush.result, Ok(()));
            let read = submit(&bdev, IoRequest::read(199, IoBuf::new(4096), 4096)).await;
            assert_eq!(read.result, Ok(()));
            assert!(read.buf.unwrap().as_slice().iter().all(|&b| b == 199));
            let zero = submit(&bdev, IoRequest::range(IoKind::WriteZeroes, 10, 2)).await;
            assert_eq!(zero.result, Ok(()));
        });
        let contents = std::fs::read(&path).unwrap();
        assert!(contents[5 * 4096..6 * 4096].iter().all(|&b| b == 5));
        assert!(contents[10 * 4096..12 * 4096].iter().all(|&b| b == 0));
        assert!(contents[12 * 4096..13 * 4096].iter().all(|&b| b == 12));
    }

    #[test]
    fn a_truncated_file_fails_reads_past_its_end_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let path = backing_file(dir.path(), 1 << 20);
        let registry = BdevRegistry::new();
        let bdev = create_uring(&registry, config(&path, None)).unwrap();
        assert_eq!(bdev.block_size(), 512);
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(4096)
            .unwrap();
        block_on(async {
            let read = submit(&bdev, IoRequest::read(100, IoBuf::new(512), 512)).await;
            assert_eq!(read.result, Err(IoError::Io));
        });
    }

    #[test]
    fn completion_results_map_to_io_errors() {
        assert_eq!(outcome_of(IoKind::Write, 4096, 4096), Ok(()));
        assert_eq!(
            outcome_of(IoKind::Write, -libc::ENOSPC, 4096),
            Err(IoError::NoSpace)
        );
        assert_eq!(
            outcome_of(IoKind::WriteZeroes, -libc::EDQUOT, 0),
            Err(IoError::NoSpace)
        );
        assert_eq!(
            outcome_of(IoKind::Write, 1024, 4096),
            Err(IoError::NoSpace),
            "a short write means the file system is full"
        );
        assert_eq!(outcome_of(IoKind::Read, 1024, 4096), Err(IoError::Io));
        assert_eq!(outcome_of(IoKind::Read, -libc::EIO, 4096), Err(IoError::Io));
        assert_eq!(
            outcome_of(IoKind::WriteZeroes, -libc::EOPNOTSUPP, 0),
            Err(IoError::NotSupported)
        );
        assert_eq!(outcome_of(IoKind::Flush, 0, 0), Ok(()));
    }

    #[test]
    fn write_zeroes_falls_back_where_zero_range_is_refused() {
        // Every bdev starts with ZERO_RANGE; pretend this file system
        // refused it, and then hole punching too.
        let dir = tempfile::tempdir().unwrap();
        let path = backing_file(dir.path(), 1 << 20);
        std::fs::write(&path, vec![0xaau8; 1 << 20]).unwrap();
        let registry = BdevRegistry::new();
        let zero_with = |name: &str, method: ZeroingMethod, range: (u64, u64)| {
            let choice = ZeroingChoice::default();
            if method != ZeroingMethod::ZeroRange {
                choice.refused(ZeroingMethod::ZeroRange);
            }
            if method == ZeroingMethod::WriteBuffers {
                choice.refused(ZeroingMethod::PunchHole);
            }
            assert_eq!(choice.current(), method);
            let mut config = config(&path, Some(4096));
            config.name = name.into();
            let bdev = create_with_zeroing(&registry, config, choice).unwrap();
            block_on(async {
                let io = IoRequest::range(IoKind::WriteZeroes, range.0, range.1);
                assert_eq!(submit(&bdev, io).await.result, Ok(()));
            });
        };
        zero_with("punch", ZeroingMethod::PunchHole, (1, 2));
        zero_with("write", ZeroingMethod::WriteBuffers, (5, 3));
        let contents = std::fs::read(&path).unwrap();
        assert!(contents[..4096].iter().all(|&b| b == 0xaa));
        assert!(contents[4096..3 * 4096].iter().all(|&b| b == 0), "punched");
        assert!(contents[3 * 4096..5 * 4096].iter().all(|&b| b == 0xaa));
        assert!(
            contents[5 * 4096..8 * 4096].iter().all(|&b| b == 0),
            "written"
        );
        assert!(contents[8 * 4096..].iter().all(|&b| b == 0xaa));
    }

    #[test]
    fn write_zeroes_works_on_tmpfs_which_refuses_zero_range() {
        // /dev/shm is tmpfs on Linux: ZERO_RANGE answers EOPNOTSUPP there.
        let Ok(dir) = tempfile::tempdir_in("/dev/shm") else {
            eprintln!("SKIPPED: no /dev/shm");
            return;
        };
        let path = backing_file(dir.path(), 1 << 20);
        std::fs::write(&path, vec![0x55u8; 1 << 20]).unwrap();
        let registry = BdevRegistry::new();
        let bdev = create_uring(&registry, config(&path, Some(4096))).unwrap();
        block_on(async {
            for range in [(2, 4), (10, 1)] {
                let io = IoRequest::range(IoKind::WriteZeroes, range.0, range.1);
                assert_eq!(submit(&bdev, io).await.result, Ok(()));
            }
        });
        let contents = std::fs::read(&path).unwrap();
        assert!(contents[..2 * 4096].iter().all(|&b| b == 0x55));
        assert!(contents[2 * 4096..6 * 4096].iter().all(|&b| b == 0));
        assert!(contents[6 * 4096..10 * 4096].iter().all(|&b| b == 0x55));
        assert!(contents[10 * 4096..11 * 4096].iter().all(|&b| b == 0));
    }

    #[test]
    fn unusable_files_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let registry = BdevRegistry::new();
        let missing = create_uring(&registry, config(&dir.path().join("nope"), None)).unwrap_err();
        assert!(missing.to_string().contains("nope"), "{missing}");
        let tiny = backing_file(dir.path(), 100);
        let err = create_uring(&registry, config(&tiny, None)).unwrap_err();
        assert!(err.to_string().contains("smaller than one"), "{err}");
        let err = create_uring(&registry, config(dir.path(), None)).unwrap_err();
        assert!(err.to_string().contains("directory"), "{err}");
    }
}
