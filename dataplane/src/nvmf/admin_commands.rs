//! The admin command set: Identify, Get Log Page, Set/Get Features, Keep
//! Alive, Asynchronous Event Request and Abort, for I/O and discovery
//! controllers.

use std::sync::Arc;

use super::command::{Command, Completion, Status, admin};
use super::controller::Controller;
use super::identify;
use super::queue::Response;
use super::subsystem::Target;

/// Feature identifiers.
const FEATURE_VOLATILE_WRITE_CACHE: u8 = 0x06;
const FEATURE_NUMBER_OF_QUEUES: u8 = 0x07;
const FEATURE_ASYNC_EVENT_CONFIG: u8 = 0x0b;
const FEATURE_KEEP_ALIVE_TIMER: u8 = 0x0f;

/// Log page identifiers.
const LOG_ERROR: u8 = 0x01;
const LOG_SMART: u8 = 0x02;
const LOG_FIRMWARE_SLOT: u8 = 0x03;
const LOG_CHANGED_NAMESPACES: u8 = 0x04;
const LOG_DISCOVERY: u8 = 0x70;

/// Identify CNS values.
const CNS_NAMESPACE: u8 = 0x00;
const CNS_CONTROLLER: u8 = 0x01;
const CNS_ACTIVE_NAMESPACES: u8 = 0x02;
const CNS_NAMESPACE_DESCRIPTORS: u8 = 0x03;

/// Runs an admin command. `local` is the address the host reached us on
/// (discovery entries for wildcard listeners report it).
pub fn execute(
    target: &Target,
    controller: &Arc<Controller>,
    command: &Command,
    local: std::net::SocketAddr,
) -> Response {
    let cid = command.cid();
    if !controller.ready() && command.opcode() != admin::KEEP_ALIVE {
        return Response::status(cid, Status::COMMAND_SEQUENCE_ERROR);
    }
    let discovery = controller.subsystem.discovery;
    let wanted = command.sgl().length as usize;
    match command.opcode() {
        admin::IDENTIFY => identify(controller, command, wanted),
        admin::GET_LOG_PAGE => get_log_page(target, controller, command, wanted, local),
        admin::SET_FEATURES => set_features(controller, command),
        admin::GET_FEATURES => get_features(controller, command),
        admin::KEEP_ALIVE => Response::status(cid, Status::SUCCESS),
        admin::ASYNC_EVENT_REQUEST => match controller.queue_aer(cid) {
            Ok(()) => Response::Deferred,
            Err(status) => Response::status(cid, status),
        },
        // Commands complete as they arrive, so there is never one to abort:
        // DW0 bit 0 set says "not aborted".
        admin::ABORT if !discovery => Response::Done(Completion::with_dw0(cid, 1)),
        _ => Response::status(cid, Status::INVALID_OPCODE),
    }
}

fn identify(controller: &Controller, command: &Command, wanted: usize) -> Response {
    let cid = command.cid();
    let cns = (command.cdw(10) & 0xff) as u8;
    let subsystem = &controller.subsystem;
    let nsid = command.nsid();
    match cns {
        CNS_CONTROLLER => Response::data(cid, identify::controller(controller), wanted),
        _ if subsystem.discovery => Response::status(cid, Status::INVALID_FIELD),
        CNS_NAMESPACE => match subsystem.namespace_for(nsid, &controller.hostnqn) {
            Some(namespace) => Response::data(cid, identify::namespace(&namespace), wanted),
            // An inactive but valid ID answers zeroes; others are invalid.
            None if nsid != 0 && nsid <= subsystem.max_namespaces => {
                Response::data(cid, vec![0u8; identify::IDENTIFY_LEN], wanted)
            }
            None => Response::status(cid, Status::INVALID_NAMESPACE),
        },
        CNS_ACTIVE_NAMESPACES => {
            if nsid >= 0xffff_fffe {
                return Response::status(cid, Status::INVALID_NAMESPACE);
            }
            let ids = subsystem.visible_nsids(&controller.hostnqn);
            Response::data(
                cid,
                identify::active_namespaces(ids.into_iter(), nsid),
                wanted,
            )
        }
        CNS_NAMESPACE_DESCRIPTORS => match subsystem.namespace_for(nsid, &controller.hostnqn) {
            Some(namespace) => {
                Response::data(cid, identify::namespace_descriptors(&namespace), wanted)
            }
            None => Response::status(cid, Status::INVALID_NAMESPACE),
        },
        _ => Response::status(cid, Status::INVALID_FIELD),
    }
}

fn get_log_page(
    target: &Target,
    controller: &Controller,
    command: &Command,
    wanted: usize,
    local: std::net::SocketAddr,
) -> Response {
    let cid = command.cid();
    let cdw10 = command.cdw(10);
    let lid = (cdw10 & 0xff) as u8;
    let numd = ((u64::from(command.cdw(11) & 0xffff) << 16) | u64::from(cdw10 >> 16)) + 1;
    let length = (numd * 4) as usize;
    let offset = (u64::from(command.cdw(13)) << 32) | u64::from(command.cdw(12));
    if length > wanted.max(4) || offset % 4 != 0 {
        return Response::status(cid, Status::INVALID_FIELD);
    }
    let discovery = controller.subsystem.discovery;
    let page = match (lid, discovery) {
        (LOG_DISCOVERY, true) => identify::discovery_log(
            target,
            &controller.hostnqn,
            controller.options.max_aq_depth,
            local.ip(),
        ),
        (LOG_ERROR, _) => vec![0u8; 64],
        (LOG_SMART, false) => smart(controller),
        (LOG_FIRMWARE_SLOT, false) => identify::firmware_slot_log(),
        (LOG_CHANGED_NAMESPACES, false) => {
            let (ids, overflow) = controller.take_changed_namespaces();
            identify::changed_namespace_log(&ids, overflow)
        }
        _ => return Response::status(cid, Status::INVALID_LOG_PAGE),
    };
    let Ok(start) = usize::try_from(offset) else {
        return Response::status(cid, Status::INVALID_FIELD);
    };
    if start > page.len() {
        return Response::status(cid, Status::INVALID_FIELD);
    }
    let mut slice = page[start..].to_vec();
    slice.resize(length, 0);
    Response::data(cid, slice, length)
}

/// SMART / health from this controller's I/O counters.
fn smart(controller: &Controller) -> Vec<u8> {
    use std::sync::atomic::Ordering::Relaxed;
    let counters = &controller.counters;
    identify::smart_log(
        counters.bytes_read.load(Relaxed),
        counters.bytes_written.load(Relaxed),
        counters.reads.load(Relaxed),
        counters.writes.load(Relaxed),
        controller.age().as_secs() / 3600,
    )
}

fn set_features(controller: &Controller, command: &Command) -> Response {
    let cid = command.cid();
    let cdw10 = command.cdw(10);
    if cdw10 & (1 << 31) != 0 {
        return Response::status(cid, Status::FEATURE_NOT_SAVEABLE);
    }
    let value = command.cdw(11);
    match (cdw10 & 0xff) as u8 {
        FEATURE_NUMBER_OF_QUEUES if !controller.subsystem.discovery => {
            let requested_sq = (value & 0xffff) as u16;
            let requested_cq = (value >> 16) as u16;
            if requested_sq == 0xffff || requested_cq == 0xffff {
                return Response::status(cid, Status::INVALID_FIELD);
            }
            Response::Done(Completion::with_dw0(
                cid,
                controller.set_queue_count(requested_sq, requested_cq),
            ))
        }
        FEATURE_ASYNC_EVENT_CONFIG => {
            controller.set_async_event_config(value);
            Response::status(cid, Status::SUCCESS)
        }
        FEATURE_KEEP_ALIVE_TIMER => {
            controller.set_kato_ms(value);
            Response::status(cid, Status::SUCCESS)
        }
        FEATURE_VOLATILE_WRITE_CACHE if !controller.subsystem.discovery => {
            // The cache stays on: Flush and FUA make writes durable.
            if value & 1 == 0 {
                return Response::status(cid, Status::INVALID_FIELD);
            }
            Response::status(cid, Status::SUCCESS)
        }
        _ => Response::status(cid, Status::INVALID_FIELD),
    }
}

fn get_features(controller: &Controller, command: &Command) -> Response {
    let cid = command.cid();
    let value = match (command.cdw(10) & 0xff) as u8 {
        FEATURE_NUMBER_OF_QUEUES if !controller.subsystem.discovery => controller.queue_count(),
        FEATURE_ASYNC_EVENT_CONFIG => controller.async_event_config(),
        FEATURE_KEEP_ALIVE_TIMER => controller.kato_ms(),
        FEATURE_VOLATILE_WRITE_CACHE if !controller.subsystem.discovery => 1,
        _ => return Response::status(cid, Status::INVALID_FIELD),
    };
    Response::Done(Completion::with_dw0(cid, value))
}
