//! The NVM command set on a namespace's bdev: Read, Write, Flush, Write
//! Zeroes and Dataset Management (deallocate becomes unmap).

use std::rc::Rc;

use super::command::{Command, Completion, Status, io};
use super::controller::IoCounters;
use super::queue::Response;
use super::subsystem::Namespace;
use crate::bdev::{IoBuf, IoChannel, IoError, IoKind, IoRequest};

/// Ranges one Dataset Management command may carry (NR is 0's based, 8 bits).
const MAX_DSM_RANGES: usize = 256;
const DSM_RANGE_LEN: usize = 16;

pub fn is_io_opcode(opcode: u8) -> bool {
    matches!(
        opcode,
        io::READ | io::WRITE | io::FLUSH | io::WRITE_ZEROES | io::DATASET_MANAGEMENT
    )
}

fn status_of(error: &IoError, write: bool) -> Status {
    match error {
        IoError::OutOfRange { .. } => Status::LBA_OUT_OF_RANGE,
        IoError::Invalid(_) => Status::INVALID_FIELD,
        IoError::NotSupported => Status::INVALID_OPCODE,
        IoError::Removed => Status::NAMESPACE_NOT_READY,
        IoError::NoSpace => Status::CAPACITY_EXCEEDED,
        IoError::Io if write => Status::WRITE_FAULT,
        IoError::Io => Status::UNRECOVERED_READ_ERROR,
    }
}

/// Checks that `[slba, slba + nlb)` lies inside the namespace.
fn in_range(namespace: &Namespace, slba: u64, nlb: u64) -> bool {
    slba.checked_add(nlb)
        .is_some_and(|end| end <= namespace.bdev.num_blocks())
}

pub async fn execute(
    namespace: &Namespace,
    channel: &Rc<IoChannel>,
    counters: &IoCounters,
    command: &Command,
    data: Option<IoBuf>,
) -> Response {
    let cid = command.cid();
    let block_size = u64::from(namespace.bdev.block_size());
    match command.opcode() {
        io::READ => {
            let nlb = u64::from(command.nlb());
            let bytes = nlb * block_size;
            if !in_range(namespace, command.slba(), nlb) {
                return Response::status(cid, Status::LBA_OUT_OF_RANGE);
            }
            if u64::from(command.sgl().length) != bytes {
                return Response::status(cid, Status::DATA_SGL_LENGTH_INVALID);
            }
            let buf = IoBuf::for_io(bytes as usize);
            let completion = channel
                .submit(IoRequest::read(command.slba(), buf, block_size as u32))
                .await;
            match (completion.result, completion.buf) {
                (Ok(()), Some(data)) => {
                    counters.record(false, bytes);
                    Response::Data {
                        completion: Completion::new(cid, Status::SUCCESS),
                        data,
                        len: bytes as usize,
                    }
                }
                (Ok(()), None) => Response::status(cid, Status::INTERNAL_ERROR),
                (Err(error), _) => Response::status(cid, status_of(&error, false)),
            }
        }
        io::WRITE => {
            let nlb = u64::from(command.nlb());
            let bytes = nlb * block_size;
            if !in_range(namespace, command.slba(), nlb) {
                return Response::status(cid, Status::LBA_OUT_OF_RANGE);
            }
            let Some(buf) = data.filter(|d| d.len() as u64 == bytes) else {
                return Response::status(cid, Status::DATA_SGL_LENGTH_INVALID);
            };
            let mut request = IoRequest::write(command.slba(), buf, block_size as u32);
            request.fua = command.fua();
            let fua = request.fua;
            let mut result = channel.submit(request).await.result;
            if result.is_ok() && fua {
                // Bdevs without native FUA get a flush.
                result = channel
                    .submit(IoRequest::range(IoKind::Flush, 0, 0))
                    .await
                    .result;
            }
            match result {
                Ok(()) => {
                    counters.record(true, bytes);
                    Response::status(cid, Status::SUCCESS)
                }
                Err(error) => Response::status(cid, status_of(&error, true)),
            }
        }
        io::FLUSH => match channel
            .submit(IoRequest::range(IoKind::Flush, 0, 0))
            .await
            .result
        {
            Ok(()) | Err(IoError::NotSupported) => Response::status(cid, Status::SUCCESS),
            Err(error) => Response::status(cid, status_of(&error, true)),
        },
        io::WRITE_ZEROES => {
            let nlb = u64::from(command.nlb());
            if !in_range(namespace, command.slba(), nlb) {
                return Response::status(cid, Status::LBA_OUT_OF_RANGE);
            }
            let request = IoRequest::range(IoKind::WriteZeroes, command.slba(), nlb);
            match channel.submit(request).await.result {
                Ok(()) => Response::status(cid, Status::SUCCESS),
                Err(error) => Response::status(cid, status_of(&error, true)),
            }
        }
        io::DATASET_MANAGEMENT => dataset_management(namespace, channel, command, data).await,
        _ => Response::status(cid, Status::INVALID_OPCODE),
    }
}

/// Deallocate ranges become unmaps; other attributes are hints we take
/// no action on.
async fn dataset_management(
    namespace: &Namespace,
    channel: &Rc<IoChannel>,
    command: &Command,
    data: Option<IoBuf>,
) -> Response {
    let cid = command.cid();
    let ranges = (command.cdw(10) & 0xff) as usize + 1;
    let deallocate = command.cdw(11) & (1 << 2) != 0;
    let Some(data) = data.filter(|d| d.len() >= ranges * DSM_RANGE_LEN && ranges <= MAX_DSM_RANGES)
    else {
        return Response::status(cid, Status::DATA_SGL_LENGTH_INVALID);
    };
    if !deallocate {
        return Response::status(cid, Status::SUCCESS);
    }
    let bytes = data.as_slice();
    for range in bytes[..ranges * DSM_RANGE_LEN].chunks_exact(DSM_RANGE_LEN) {
        let length = u64::from(u32::from_le_bytes(range[4..8].try_into().expect("4 bytes")));
        let slba = u64::from_le_bytes(range[8..16].try_into().expect("8 bytes"));
        if length == 0 {
            continue;
        }
        if !in_range(namespace, slba, length) {
            return Response::status(cid, Status::LBA_OUT_OF_RANGE);
        }
        match channel
            .submit(IoRequest::range(IoKind::Unmap, slba, length))
            .await
            .result
        {
            // Deallocation is advisory: a bdev that cannot unmap keeps the data.
            Ok(()) | Err(IoError::NotSupported) => {}
            Err(error) => return Response::status(cid, status_of(&error, true)),
        }
    }
    Response::status(cid, Status::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_backing_store_is_capacity_exceeded_not_a_media_error() {
        let status = status_of(&IoError::NoSpace, true);
        assert_eq!(status, Status::CAPACITY_EXCEEDED);
        assert_eq!((status.sct, status.sc, status.dnr), (0, 0x81, true));
        assert_eq!(status_of(&IoError::Io, true), Status::WRITE_FAULT);
    }
}
