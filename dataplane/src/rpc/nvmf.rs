//! NVMe-oF target methods, with SPDK's names and parameters:
//! `nvmf_create_transport`, `nvmf_get_transports`, `nvmf_create_subsystem`,
//! `nvmf_delete_subsystem`, `nvmf_get_subsystems`,
//! `nvmf_subsystem_add_ns` / `remove_ns`, `nvmf_subsystem_add_listener` /
//! `remove_listener`, `nvmf_subsystem_add_host` / `remove_host`,
//! `nvmf_subsystem_allow_any_host`, `nvmf_discovery_add_referral` /
//! `remove_referral` / `get_referrals`, and `nvmf_set_config`'s
//! `dhchap_digests` / `dhchap_dhgroups`.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use nix::errno::Errno;
use serde::Deserialize;
use serde_json::{Value, json};
use shoal_appliance::jsonrpc::{Router, RpcError};

use super::{Context, method};
use crate::nvmf::auth::dh::DhGroup;
use crate::nvmf::auth::hash::HashFunction;
use crate::nvmf::subsystem::{
    DEFAULT_MAX_NAMESPACES, DISCOVERY_NQN, HostKeys, ListenAddress, MAX_CNTLID, MAX_NAMESPACES,
    Namespace, Referral, Subsystem, TransportOptions, default_cntlid_range,
};

pub fn register(router: Router, context: &Arc<Context>) -> Router {
    let router = method(router, "nvmf_create_transport", context, create_transport);
    let router = method(router, "nvmf_get_transports", context, get_transports);
    let router = method(router, "nvmf_create_subsystem", context, create_subsystem);
    let router = method(router, "nvmf_delete_subsystem", context, delete_subsystem);
    let router = method(router, "nvmf_get_subsystems", context, get_subsystems);
    let router = method(router, "nvmf_subsystem_add_ns", context, add_ns);
    let router = method(router, "nvmf_subsystem_remove_ns", context, remove_ns);
    let router = method(router, "nvmf_subsystem_add_listener", context, add_listener);
    let router = method(
        router,
        "nvmf_subsystem_remove_listener",
        context,
        remove_listener,
    );
    let router = method(router, "nvmf_ns_add_host", context, ns_add_host);
    let router = method(router, "nvmf_ns_remove_host", context, ns_remove_host);
    let router = method(router, "nvmf_set_config", context, set_config);
    let router = method(router, "nvmf_subsystem_add_host", context, add_host);
    let router = method(router, "nvmf_subsystem_remove_host", context, remove_host);
    let router = method(
        router,
        "nvmf_subsystem_allow_any_host",
        context,
        allow_any_host,
    );
    let router = method(router, "nvmf_discovery_add_referral", context, add_referral);
    let router = method(
        router,
        "nvmf_discovery_remove_referral",
        context,
        remove_referral,
    );
    method(
        router,
        "nvmf_discovery_get_referrals",
        context,
        get_referrals,
    )
}

fn not_found(what: String) -> RpcError {
    RpcError::errno(Errno::ENODEV, what)
}

fn invalid(message: impl Into<String>) -> RpcError {
    RpcError::invalid_params(message.into())
}

fn check_nqn(nqn: &str) -> Result<(), RpcError> {
    shoal_appliance::nqn::check(nqn).map_err(invalid)
}

fn subsystem(context: &Context, nqn: &str) -> Result<Arc<Subsystem>, RpcError> {
    if nqn == DISCOVERY_NQN {
        return Err(invalid(
            "the discovery subsystem cannot be changed this way",
        ));
    }
    context
        .nvmf
        .subsystem(nqn)
        .ok_or_else(|| not_found(format!("subsystem {nqn} not found")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateTransport {
    trtype: String,
    max_queue_depth: Option<u16>,
    max_io_qpairs_per_ctrlr: Option<u16>,
    in_capsule_data_size: Option<u32>,
    max_io_size: Option<u32>,
    max_aq_depth: Option<u16>,
    c2h_success: Option<bool>,
    /// SPDK sizes its own buffer pools with these; buffers here come from
    /// the shared region's pool, so they are accepted and have no effect.
    io_unit_size: Option<u32>,
    num_shared_buffers: Option<u32>,
    buf_cache_size: Option<u32>,
}

async fn create_transport(context: Arc<Context>, p: CreateTransport) -> Result<Value, RpcError> {
    if !p.trtype.eq_ignore_ascii_case("tcp") {
        return Err(invalid(format!(
            "trtype {:?}: only TCP is supported",
            p.trtype
        )));
    }
    let _ = (p.io_unit_size, p.num_shared_buffers, p.buf_cache_size);
    let defaults = TransportOptions::default();
    let options = TransportOptions {
        max_queue_depth: p.max_queue_depth.unwrap_or(defaults.max_queue_depth),
        max_io_qpairs_per_ctrlr: p
            .max_io_qpairs_per_ctrlr
            .unwrap_or(defaults.max_io_qpairs_per_ctrlr),
        in_capsule_data_size: p
            .in_capsule_data_size
            .unwrap_or(defaults.in_capsule_data_size),
        max_io_size: p.max_io_size.unwrap_or(defaults.max_io_size),
        max_aq_depth: p.max_aq_depth.unwrap_or(defaults.max_aq_depth),
        c2h_success: p.c2h_success.unwrap_or(defaults.c2h_success),
    };
    context
        .nvmf
        .set_transport(options)
        .map_err(|e| RpcError::errno(Errno::EEXIST, e))?;
    Ok(json!(true))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoParams {}

async fn get_transports(context: Arc<Context>, _: NoParams) -> Result<Value, RpcError> {
    Ok(Value::Array(
        context
            .nvmf
            .transport()
            .map(|o| {
                json!({
                    "trtype": "TCP",
                    "max_queue_depth": o.max_queue_depth,
                    "max_io_qpairs_per_ctrlr": o.max_io_qpairs_per_ctrlr,
                    "in_capsule_data_size": o.in_capsule_data_size,
                    "max_io_size": o.max_io_size,
                    "max_aq_depth": o.max_aq_depth,
                    "c2h_success": o.c2h_success,
                    "listen_addresses": context.portals.addresses().iter().map(|a| a.to_string()).collect::<Vec<_>>(),
                    "connections": context.portals.connections(),
                })
            })
            .into_iter()
            .collect(),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateSubsystem {
    nqn: String,
    serial_number: Option<String>,
    model_number: Option<String>,
    allow_any_host: Option<bool>,
    max_namespaces: Option<u32>,
    ana_reporting: Option<bool>,
    min_cntlid: Option<u16>,
    max_cntlid: Option<u16>,
}

fn check_ascii_field(name: &str, value: &str, max: usize) -> Result<(), RpcError> {
    if value.len() > max || !value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(invalid(format!(
            "{name} must be printable ASCII of at most {max} characters"
        )));
    }
    Ok(())
}

async fn create_subsystem(context: Arc<Context>, p: CreateSubsystem) -> Result<Value, RpcError> {
    check_nqn(&p.nqn)?;
    if p.ana_reporting == Some(true) {
        return Err(invalid("ana_reporting is not supported"));
    }
    let serial = p
        .serial_number
        .unwrap_or_else(|| "00000000000000000000".into());
    let model = p
        .model_number
        .unwrap_or_else(|| "Shoal NVMe-oF controller".into());
    check_ascii_field("serial_number", &serial, 20)?;
    check_ascii_field("model_number", &model, 40)?;
    let max_namespaces = p.max_namespaces.unwrap_or(DEFAULT_MAX_NAMESPACES);
    if !(1..=MAX_NAMESPACES).contains(&max_namespaces) {
        return Err(invalid(format!(
            "max_namespaces must be 1 to {MAX_NAMESPACES}"
        )));
    }
    // Clusters serving the same subsystem must not hand out the same
    // controller ID: by default each cluster has its own block of IDs.
    let (default_min, default_max) = default_cntlid_range(context.cluster);
    let min_cntlid = p.min_cntlid.unwrap_or(default_min);
    let max_cntlid = p.max_cntlid.unwrap_or(default_max);
    if min_cntlid == 0 || max_cntlid > MAX_CNTLID || min_cntlid > max_cntlid {
        return Err(invalid(format!(
            "min_cntlid {min_cntlid} and max_cntlid {max_cntlid} must satisfy 1 <= min <= max <= {MAX_CNTLID}"
        )));
    }
    let subsystem = Subsystem::new(
        &p.nqn,
        &serial,
        &model,
        max_namespaces,
        false,
        (min_cntlid, max_cntlid),
    );
    subsystem.write().allow_any_host = p.allow_any_host.unwrap_or(false);
    context
        .nvmf
        .add_subsystem(subsystem)
        .map_err(|e| RpcError::errno(Errno::EEXIST, e))?;
    tracing::info!(nqn = p.nqn, "NVMe-oF subsystem created");
    Ok(json!(true))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Nqn {
    nqn: String,
}

async fn delete_subsystem(context: Arc<Context>, p: Nqn) -> Result<Value, RpcError> {
    let subsystem = subsystem(&context, &p.nqn)?;
    for namespace in subsystem.read().namespaces.values() {
        namespace
            .bdev
            .remove_export(&owner_tag(&p.nqn, namespace.nsid));
    }
    context.nvmf.remove_subsystem(&p.nqn);
    tracing::info!(nqn = p.nqn, "NVMe-oF subsystem deleted");
    Ok(json!(true))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GetSubsystems {
    nqn: Option<String>,
}

async fn get_subsystems(context: Arc<Context>, p: GetSubsystems) -> Result<Value, RpcError> {
    let mut list = vec![context.nvmf.discovery().describe()];
    list.extend(context.nvmf.subsystems().iter().map(|s| s.describe()));
    if let Some(nqn) = p.nqn {
        list.retain(|s| s["nqn"] == nqn.as_str());
        if list.is_empty() {
            return Err(not_found(format!("subsystem {nqn} not found")));
        }
    }
    Ok(Value::Array(list))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NamespaceParams {
    bdev_name: String,
    nsid: Option<u32>,
    nguid: Option<String>,
    eui64: Option<String>,
    uuid: Option<String>,
    /// Hidden from every host until `nvmf_ns_add_host` names one.
    no_auto_visible: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddNs {
    nqn: String,
    namespace: NamespaceParams,
}

fn parse_hex<const N: usize>(name: &str, text: &str) -> Result<[u8; N], RpcError> {
    let digits: String = text.chars().filter(|c| *c != '-').collect();
    if digits.len() != N * 2 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(invalid(format!("{name} {text:?} is not {N} bytes of hex")));
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&digits[i * 2..i * 2 + 2], 16).expect("checked hex");
    }
    Ok(out)
}

fn owner_tag(nqn: &str, nsid: u32) -> String {
    format!("nvmf {nqn} nsid {nsid}")
}

async fn add_ns(context: Arc<Context>, p: AddNs) -> Result<Value, RpcError> {
    let subsystem = subsystem(&context, &p.nqn)?;
    let bdev = context.registry.get(&p.namespace.bdev_name)?;
    let uuid = match &p.namespace.uuid {
        Some(text) => {
            uuid::Uuid::parse_str(text).map_err(|e| invalid(format!("uuid {text:?}: {e}")))?
        }
        None => bdev.uuid(),
    };
    let nguid = match &p.namespace.nguid {
        Some(text) => parse_hex::<16>("nguid", text)?,
        None => *uuid.as_bytes(),
    };
    let eui64 = p
        .namespace
        .eui64
        .as_deref()
        .map(|t| parse_hex::<8>("eui64", t))
        .transpose()?;
    let nsid = {
        let mut state = subsystem.write();
        let nsid = match p.namespace.nsid {
            Some(0) | None => (1..=subsystem.max_namespaces)
                .find(|id| !state.namespaces.contains_key(id))
                .ok_or_else(|| {
                    RpcError::errno(
                        Errno::ENOSPC,
                        format!(
                            "subsystem {} has {} namespaces, its maximum",
                            p.nqn, subsystem.max_namespaces
                        ),
                    )
                })?,
            Some(nsid) if nsid > subsystem.max_namespaces => {
                return Err(invalid(format!(
                    "nsid {nsid} exceeds max_namespaces {}",
                    subsystem.max_namespaces
                )));
            }
            Some(nsid) if state.namespaces.contains_key(&nsid) => {
                return Err(RpcError::errno(
                    Errno::EEXIST,
                    format!("nsid {nsid} is already in use"),
                ));
            }
            Some(nsid) => nsid,
        };
        if state.namespaces.values().any(|n| n.nguid == nguid) {
            return Err(RpcError::errno(
                Errno::EEXIST,
                "another namespace has this NGUID".to_string(),
            ));
        }
        bdev.add_export(&owner_tag(&p.nqn, nsid), true)?;
        state.namespaces.insert(
            nsid,
            Namespace {
                nsid,
                bdev,
                nguid,
                uuid,
                eui64,
                visible_to: p
                    .namespace
                    .no_auto_visible
                    .unwrap_or(false)
                    .then(BTreeSet::new),
            },
        );
        nsid
    };
    subsystem.namespaces_changed(nsid);
    tracing::info!(
        nqn = p.nqn,
        nsid,
        bdev = p.namespace.bdev_name,
        "namespace added"
    );
    Ok(json!(nsid))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoveNs {
    nqn: String,
    nsid: u32,
}

async fn remove_ns(context: Arc<Context>, p: RemoveNs) -> Result<Value, RpcError> {
    let subsystem = subsystem(&context, &p.nqn)?;
    let removed = subsystem.write().namespaces.remove(&p.nsid);
    let Some(namespace) = removed else {
        return Err(not_found(format!(
            "subsystem {} has no namespace {}",
            p.nqn, p.nsid
        )));
    };
    namespace.bdev.remove_export(&owner_tag(&p.nqn, p.nsid));
    subsystem.namespaces_changed(p.nsid);
    Ok(json!(true))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NamespaceHost {
    nqn: String,
    nsid: u32,
    host: String,
}

/// Adds (`visible`) or removes host `p.host` from the hosts that see
/// namespace `p.nsid`; its controllers get a namespace-changed event.
fn set_ns_visibility(context: &Context, p: &NamespaceHost, visible: bool) -> Result<(), RpcError> {
    check_nqn(&p.host)?;
    let subsystem = subsystem(context, &p.nqn)?;
    {
        let mut state = subsystem.write();
        let namespace = state
            .namespaces
            .get_mut(&p.nsid)
            .ok_or_else(|| not_found(format!("subsystem {} has no namespace {}", p.nqn, p.nsid)))?;
        let Some(hosts) = namespace.visible_to.as_mut() else {
            return Err(invalid(format!(
                "namespace {} is visible to every host; add it with no_auto_visible to choose hosts",
                p.nsid
            )));
        };
        if visible {
            hosts.insert(p.host.clone());
        } else if !hosts.remove(&p.host) {
            return Err(not_found(format!(
                "namespace {} is not visible to {}",
                p.nsid, p.host
            )));
        }
    }
    subsystem.namespaces_changed(p.nsid);
    Ok(())
}

async fn ns_add_host(context: Arc<Context>, p: NamespaceHost) -> Result<Value, RpcError> {
    set_ns_visibility(&context, &p, true)?;
    Ok(json!(true))
}

async fn ns_remove_host(context: Arc<Context>, p: NamespaceHost) -> Result<Value, RpcError> {
    set_ns_visibility(&context, &p, false)?;
    Ok(json!(true))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListenAddressParams {
    trtype: String,
    adrfam: Option<String>,
    traddr: String,
    trsvcid: String,
}

impl ListenAddressParams {
    fn parse(&self) -> Result<(ListenAddress, SocketAddr), RpcError> {
        if !self.trtype.eq_ignore_ascii_case("tcp") {
            return Err(invalid(format!(
                "trtype {:?}: only TCP is supported",
                self.trtype
            )));
        }
        let ip: IpAddr = self
            .traddr
            .parse()
            .map_err(|_| invalid(format!("traddr {:?} is not an IP address", self.traddr)))?;
        let family_ok = match self
            .adrfam
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None => true,
            Some("ipv4") => ip.is_ipv4(),
            Some("ipv6") => ip.is_ipv6(),
            Some(other) => return Err(invalid(format!("adrfam {other:?} is not IPv4 or IPv6"))),
        };
        if !family_ok {
            return Err(invalid(format!("traddr {ip} does not match adrfam")));
        }
        let port: u16 = self
            .trsvcid
            .parse()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| invalid(format!("trsvcid {:?} is not a port number", self.trsvcid)))?;
        Ok((
            ListenAddress {
                traddr: ip.to_string(),
                trsvcid: port.to_string(),
            },
            SocketAddr::new(ip, port),
        ))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Listener {
    nqn: String,
    listen_address: ListenAddressParams,
}

async fn add_listener(context: Arc<Context>, p: Listener) -> Result<Value, RpcError> {
    let (address, socket) = p.listen_address.parse()?;
    let subsystem = if p.nqn == DISCOVERY_NQN {
        Arc::clone(context.nvmf.discovery())
    } else {
        subsystem(&context, &p.nqn)?
    };
    context.portals.listen(socket).map_err(|e| {
        RpcError::errno(Errno::EADDRINUSE, format!("cannot listen on {socket}: {e}"))
    })?;
    {
        let mut state = subsystem.write();
        if !state.listeners.contains(&address) {
            state.listeners.push(address);
        }
    }
    context.nvmf.discovery_changed();
    Ok(json!(true))
}

async fn remove_listener(context: Arc<Context>, p: Listener) -> Result<Value, RpcError> {
    let (address, _) = p.listen_address.parse()?;
    let subsystem = subsystem(&context, &p.nqn)?;
    let removed = {
        let mut state = subsystem.write();
        let before = state.listeners.len();
        state.listeners.retain(|l| *l != address);
        before != state.listeners.len()
    };
    if !removed {
        return Err(not_found(format!(
            "subsystem {} does not listen on {}:{}",
            p.nqn, address.traddr, address.trsvcid
        )));
    }
    context.nvmf.discovery_changed();
    Ok(json!(true))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Host {
    nqn: String,
    host: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddHost {
    nqn: String,
    host: String,
    /// Keyring name of the key the host authenticates with (DH-HMAC-CHAP).
    dhchap_key: Option<String>,
    /// Keyring name of the key the controller authenticates with.
    dhchap_ctrlr_key: Option<String>,
}

/// Allows a host; with `dhchap_key` every queue of its must authenticate.
/// Adding a host again replaces its keys with the ones given.
async fn add_host(context: Arc<Context>, p: AddHost) -> Result<Value, RpcError> {
    check_nqn(&p.host)?;
    let subsystem = subsystem(&context, &p.nqn)?;
    let keys = match (p.dhchap_key, p.dhchap_ctrlr_key) {
        (None, None) => None,
        (None, Some(_)) => {
            return Err(invalid("dhchap_ctrlr_key needs dhchap_key"));
        }
        (Some(dhchap_key), dhchap_ctrlr_key) => {
            for name in std::iter::once(&dhchap_key).chain(dhchap_ctrlr_key.as_ref()) {
                if !context.nvmf.keyring.contains(name) {
                    return Err(RpcError::errno(
                        Errno::ENOKEY,
                        format!("key {name} is not in the keyring"),
                    ));
                }
            }
            Some(HostKeys {
                dhchap_key,
                dhchap_ctrlr_key,
            })
        }
    };
    {
        let mut state = subsystem.write();
        match keys {
            Some(keys) => state.host_keys.insert(p.host.clone(), keys),
            None => state.host_keys.remove(&p.host),
        };
        state.hosts.insert(p.host);
    }
    context.nvmf.discovery_changed();
    Ok(json!(true))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetConfig {
    /// Hashes hosts may authenticate with: "sha256", "sha384", "sha512".
    dhchap_digests: Option<Vec<String>>,
    /// DH groups: "null", "ffdhe2048" ... "ffdhe8192".
    dhchap_dhgroups: Option<Vec<String>>,
}

/// Limits the DH-HMAC-CHAP algorithms for queues that connect from now on.
async fn set_config(context: Arc<Context>, p: SetConfig) -> Result<Value, RpcError> {
    let mut policy = context.nvmf.auth_policy();
    if let Some(names) = p.dhchap_digests {
        let chosen = names
            .iter()
            .map(|n| {
                HashFunction::from_name(n).ok_or_else(|| invalid(format!("unknown digest {n:?}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        // Keep the controller's preference order, strongest first.
        policy.hashes = HashFunction::ALL
            .into_iter()
            .filter(|h| chosen.contains(h))
            .collect();
    }
    if let Some(names) = p.dhchap_dhgroups {
        let chosen = names
            .iter()
            .map(|n| {
                DhGroup::from_name(n).ok_or_else(|| invalid(format!("unknown DH group {n:?}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        policy.dh_groups = DhGroup::ALL
            .into_iter()
            .filter(|g| chosen.contains(g))
            .collect();
    }
    if policy.hashes.is_empty() || policy.dh_groups.is_empty() {
        return Err(invalid(
            "at least one digest and one DH group must stay allowed",
        ));
    }
    context.nvmf.set_auth_policy(policy);
    Ok(json!(true))
}

async fn remove_host(context: Arc<Context>, p: Host) -> Result<Value, RpcError> {
    let subsystem = subsystem(&context, &p.nqn)?;
    subsystem.write().host_keys.remove(&p.host);
    if !subsystem.write().hosts.remove(&p.host) {
        return Err(not_found(format!(
            "host {} is not allowed on {}",
            p.host, p.nqn
        )));
    }
    // Controllers of that host lose access now.
    for controller in subsystem.controllers() {
        if controller.hostnqn == p.host && !subsystem.host_allowed(&p.host) {
            controller.fail("host removed from the subsystem");
        }
    }
    context.nvmf.discovery_changed();
    Ok(json!(true))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AllowAnyHost {
    nqn: String,
    allow_any_host: bool,
}

async fn allow_any_host(context: Arc<Context>, p: AllowAnyHost) -> Result<Value, RpcError> {
    let subsystem = subsystem(&context, &p.nqn)?;
    subsystem.write().allow_any_host = p.allow_any_host;
    context.nvmf.discovery_changed();
    Ok(json!(true))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReferralParams {
    address: ListenAddressParams,
    subnqn: Option<String>,
    secure_channel: Option<bool>,
}

fn referral(p: &ReferralParams) -> Result<Referral, RpcError> {
    if p.secure_channel == Some(true) {
        return Err(invalid("secure_channel is not supported"));
    }
    let (address, _) = p.address.parse()?;
    let subnqn = p
        .subnqn
        .clone()
        .unwrap_or_else(|| DISCOVERY_NQN.to_string());
    check_nqn(&subnqn)?;
    Ok(Referral { address, subnqn })
}

async fn add_referral(context: Arc<Context>, p: ReferralParams) -> Result<Value, RpcError> {
    let referral = referral(&p)?;
    if !context.nvmf.add_referral(referral) {
        return Err(RpcError::errno(
            Errno::EEXIST,
            "referral already exists".to_string(),
        ));
    }
    Ok(json!(true))
}

async fn remove_referral(context: Arc<Context>, p: ReferralParams) -> Result<Value, RpcError> {
    let referral = referral(&p)?;
    if !context.nvmf.remove_referral(&referral) {
        return Err(not_found("no such referral".to_string()));
    }
    Ok(json!(true))
}

async fn get_referrals(context: Arc<Context>, _: NoParams) -> Result<Value, RpcError> {
    Ok(Value::Array(
        context
            .nvmf
            .referrals()
            .iter()
            .map(Referral::describe)
            .collect(),
    ))
}
