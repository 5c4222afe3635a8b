//! The reconciler: makes every running data cluster hold what the plan
//! says, through the clusters' JSON-RPC sockets, and reports what it found.
//!
//! One pass reads each cluster's bdevs, NVMe-oF subsystem, NBD exports and
//! referrals, then, across all clusters in this order:
//!
//! 1. revokes: exports, namespaces and hosts the plan no longer has (and
//!    exports of bdevs about to be rebuilt), so access is withdrawn before
//!    anything is granted;
//! 2. deletes the service's bdevs the plan does not want, or wants built
//!    differently, with whatever was built on them, top first;
//! 3. creates parts and concats (the legs on each cluster's own drive);
//! 4. creates remote legs (once the owning cluster has the leg) and the
//!    striped volumes;
//! 5. grants: transport, subsystem, listener, namespaces with their hosts,
//!    referrals, NBD exports.
//!
//! The subsystem (and the transport, made once) exist only while a volume
//! does: an appliance without volumes leaves the NVMe-oF target alone.
//!
//! Only objects the service owns are touched: bdevs named `volume<N>...`,
//! NBD exports of those, and the storage's own subsystem. A cluster that is
//! down is skipped and caught up with when it runs again; a restarted
//! cluster starts empty and gets everything back, on the same blocks.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use shoal_appliance::jsonrpc::{CallError, RpcClient};

use super::model::Desired;
use super::owner;
use super::plan::{self, BdevPlan, ClusterPlan, Fabric, HostKeyNames};
use super::secrets::{self, KeyFiles};

/// What a pass needs to hand credentials to the clusters: where key files
/// are staged, and which NBD PSKs each cluster already has.
pub struct Credentials<'a> {
    pub files: &'a KeyFiles,
    pub psks_sent: &'a std::sync::Mutex<BTreeMap<(u32, String), [u8; 8]>>,
}

/// Longest wait for one call (a remote bdev's creation waits up to 5 s for
/// the other cluster).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A data cluster as one pass found it (and left it).
#[derive(Debug, Clone, Default)]
pub struct ClusterView {
    /// Every bdev, by name, as `bdev_get_bdevs` describes it.
    pub bdevs: BTreeMap<String, Value>,
    /// The storage's subsystem as `nvmf_get_subsystems` describes it.
    pub subsystem: Option<Value>,
    pub nbd_exports: BTreeSet<String>,
    /// The PSK identities each NBD export is served to.
    pub nbd_hosts: BTreeMap<String, BTreeSet<String>>,
    /// The NBD PSK identities the cluster has keys for.
    pub nbd_psks: BTreeSet<String>,
    /// The names in the DH-HMAC-CHAP keyring.
    pub keyring: BTreeSet<String>,
    pub referrals: Vec<Value>,
    pub transport: bool,
    /// The open lvol stores, by name, as `bdev_lvol_get_lvstores` has them.
    pub lvstores: BTreeMap<String, Value>,
    /// Their lvols, by alias (`lvs/lvol`), as `bdev_lvol_get_lvols` has them.
    pub lvols: BTreeMap<String, Value>,
}

impl ClusterView {
    /// NSIDs of the storage's subsystem, with their bdevs.
    fn namespaces(&self) -> BTreeMap<u32, Value> {
        self.subsystem
            .as_ref()
            .and_then(|s| s["namespaces"].as_array())
            .into_iter()
            .flatten()
            .filter_map(|n| Some((n["nsid"].as_u64()? as u32, n.clone())))
            .collect()
    }

    /// The name of the bdev called `name` or aliased `name` here (an
    /// lvol's `lvs/lvol`), which is what the target reports it by.
    pub fn bdev_named(&self, name: &str) -> Option<&str> {
        if let Some((name, _)) = self.bdevs.get_key_value(name) {
            return Some(name);
        }
        self.bdevs.iter().find_map(|(canonical, bdev)| {
            bdev["aliases"]
                .as_array()?
                .iter()
                .any(|a| a == name)
                .then_some(canonical.as_str())
        })
    }

    /// Whether this cluster serves `volume` as its namespace: through its
    /// lvol's alias where its pool's store is open, else its own bdev.
    pub fn serves_volume(&self, volume: &super::model::Volume) -> bool {
        let bdev = volume
            .lvol_alias()
            .filter(|alias| self.lvols.contains_key(alias))
            .unwrap_or_else(|| plan::volume_bdev(volume.id));
        self.serves(volume.nsid, &bdev)
    }

    /// Whether this cluster serves bdev `bdev` as namespace `nsid`.
    pub fn serves(&self, nsid: u32, bdev: &str) -> bool {
        self.bdev_named(bdev).is_some_and(|canonical| {
            self.namespaces()
                .get(&nsid)
                .is_some_and(|n| n["bdev_name"] == canonical)
        })
    }
}

/// Something a pass could not do.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Failure {
    pub cluster: u32,
    /// The bdev, namespace or export concerned, e.g. `volume3-leg1`.
    pub object: String,
    pub error: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "data cluster {}: {}: {}",
            self.cluster, self.object, self.error
        )
    }
}

/// The outcome of a pass: what failed, and every reachable cluster's state.
#[derive(Debug, Default)]
pub struct Report {
    pub failures: Vec<Failure>,
    pub views: BTreeMap<u32, ClusterView>,
}

impl Report {
    /// Failures concerning volume `id` (its bdevs, namespace or export).
    pub fn failures_of(&self, volume: u64) -> Vec<&Failure> {
        let bdev = plan::volume_bdev(volume);
        self.failures
            .iter()
            .filter(|f| f.object == bdev || f.object.starts_with(&format!("{bdev}-")))
            .collect()
    }
}

/// One cluster's socket, with a timeout on every call.
struct Session {
    cluster: u32,
    client: RpcClient,
}

impl Session {
    async fn open(cluster: u32, socket: &std::path::Path) -> Result<Self, String> {
        let client = tokio::time::timeout(CALL_TIMEOUT, RpcClient::connect(socket))
            .await
            .map_err(|_| "connecting timed out".to_string())?
            .map_err(|e| format!("cannot connect to {}: {e}", socket.display()))?;
        Ok(Self { cluster, client })
    }

    async fn call(&mut self, method: &str, params: Value) -> Result<Value, String> {
        match tokio::time::timeout(CALL_TIMEOUT, self.client.call(method, Some(params))).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(CallError::Rpc(e))) => Err(format!("{method}: {} ({})", e.message, e.code)),
            Ok(Err(e)) => Err(format!("{method}: {e}")),
            Err(_) => Err(format!("{method}: no answer within {CALL_TIMEOUT:?}")),
        }
    }

    async fn read(&mut self, fabric: &Fabric) -> Result<ClusterView, String> {
        let bdevs = self.call("bdev_get_bdevs", json!({})).await?;
        let subsystems = self.call("nvmf_get_subsystems", json!({})).await?;
        let disks = self.call("nbd_get_disks", json!({})).await?;
        let transports = self.call("nvmf_get_transports", json!({})).await?;
        let keys = self.call("keyring_get_keys", json!({})).await?;
        let psks = self.call("nbd_get_psks", json!({})).await?;
        let lvstores = self.call("bdev_lvol_get_lvstores", json!({})).await?;
        let lvols = self.call("bdev_lvol_get_lvols", json!({})).await?;
        let referrals = if self.cluster == 0 {
            self.call("nvmf_discovery_get_referrals", json!({})).await?
        } else {
            json!([])
        };
        let list = |v: &Value| v.as_array().cloned().unwrap_or_default();
        Ok(ClusterView {
            bdevs: keyed_by(bdevs, "name"),
            subsystem: list(&subsystems)
                .into_iter()
                .find(|s| s["nqn"] == fabric.nqn.as_str()),
            nbd_exports: list(&disks)
                .iter()
                .filter_map(|d| d["nbd_device"].as_str().map(str::to_string))
                .collect(),
            nbd_hosts: list(&disks)
                .iter()
                .filter_map(|d| {
                    Some((
                        d["nbd_device"].as_str()?.to_string(),
                        string_set(&d["hosts"]),
                    ))
                })
                .collect(),
            nbd_psks: list(&psks)
                .iter()
                .filter_map(|p| p["identity"].as_str().map(str::to_string))
                .collect(),
            keyring: list(&keys)
                .iter()
                .filter_map(|k| k["name"].as_str().map(str::to_string))
                .collect(),
            referrals: list(&referrals),
            transport: !list(&transports).is_empty(),
            lvstores: keyed_by(lvstores, "name"),
            lvols: keyed_by(lvols, "alias"),
        })
    }
}

/// A cluster being reconciled: its socket, what it holds, what it must.
struct Target<'a> {
    session: Session,
    view: ClusterView,
    plan: &'a ClusterPlan,
}

impl Target<'_> {
    /// Calls `method`; a failure is recorded against `object`.
    async fn apply(
        &mut self,
        failures: &mut Vec<Failure>,
        object: &str,
        method: &str,
        params: Value,
    ) -> bool {
        match self.session.call(method, params).await {
            Ok(_) => true,
            Err(error) => {
                failures.push(Failure {
                    cluster: self.session.cluster,
                    object: object.to_string(),
                    error,
                });
                false
            }
        }
    }

    fn planned(&self, name: &str) -> Option<&BdevPlan> {
        self.plan.bdevs.iter().find(|b| b.name() == name)
    }

    /// The service's bdevs to delete: unwanted, built differently than
    /// planned, or built on one of those.
    fn doomed(&self) -> BTreeSet<String> {
        let mut doomed: BTreeSet<String> = self
            .view
            .bdevs
            .iter()
            .filter(|(name, actual)| {
                plan::is_owned_bdev(name) && self.planned(name).is_none_or(|p| !p.matches(actual))
            })
            .map(|(name, _)| name.clone())
            .collect();
        loop {
            let more: Vec<String> = self
                .view
                .bdevs
                .iter()
                .filter(|(name, actual)| {
                    !doomed.contains(*name)
                        && plan::is_owned_bdev(name)
                        && bases_of(actual).iter().any(|b| doomed.contains(b))
                })
                .map(|(name, _)| name.clone())
                .collect();
            if more.is_empty() {
                return doomed;
            }
            doomed.extend(more);
        }
    }

    fn namespace_matches(&self, actual: &Value, planned: &plan::NamespacePlan) -> bool {
        self.view
            .bdev_named(&planned.bdev)
            .is_some_and(|canonical| actual["bdev_name"] == canonical)
            && actual["nguid"] == planned.nguid.as_str()
            && actual["uuid"] == planned.uuid.to_string().as_str()
            && actual["no_auto_visible"] == true
    }

    /// Step 1: withdraw access the plan no longer grants, and exports of
    /// bdevs about to be deleted.
    async fn revoke(
        &mut self,
        fabric: &Fabric,
        doomed: &BTreeSet<String>,
        failures: &mut Vec<Failure>,
    ) {
        let stale_exports: Vec<String> = self
            .view
            .nbd_exports
            .iter()
            .filter(|e| {
                plan::is_owned_bdev(e)
                    && (!self.plan.nbd_exports.iter().any(|p| p.name == **e) || doomed.contains(*e))
            })
            .cloned()
            .collect();
        for export in stale_exports {
            if self
                .apply(
                    failures,
                    &export,
                    "nbd_stop_disk",
                    json!({"nbd_device": export}),
                )
                .await
            {
                self.view.nbd_exports.remove(&export);
            }
        }
        let Some(subsystem) = self.view.subsystem.clone() else {
            return;
        };
        let nqn = fabric.nqn.as_str();
        if !self.plan.serves {
            // No volume left: the subsystem goes, and cluster 0's referrals.
            if self
                .apply(
                    failures,
                    "subsystem",
                    "nvmf_delete_subsystem",
                    json!({"nqn": nqn}),
                )
                .await
            {
                self.view.subsystem = None;
            }
            self.grant_referrals(nqn, failures).await;
            return;
        }
        for (nsid, actual) in self.view.namespaces() {
            let bdev = actual["bdev_name"].as_str().unwrap_or("").to_string();
            let planned = self.plan.namespaces.iter().find(|n| n.nsid == nsid);
            let keep = planned
                .is_some_and(|p| self.namespace_matches(&actual, p) && !doomed.contains(&bdev));
            let object = if bdev.is_empty() {
                format!("namespace {nsid}")
            } else {
                bdev
            };
            if !keep {
                self.apply(
                    failures,
                    &object,
                    "nvmf_subsystem_remove_ns",
                    json!({"nqn": nqn, "nsid": nsid}),
                )
                .await;
                continue;
            }
            let planned = planned.expect("kept namespaces are planned").clone();
            for host in string_set(&actual["hosts"]).difference(&planned.hosts) {
                self.apply(
                    failures,
                    &object,
                    "nvmf_ns_remove_host",
                    json!({"nqn": nqn, "nsid": nsid, "host": host}),
                )
                .await;
            }
        }
        let hosts = subsystem_hosts(&subsystem);
        for host in hosts.difference(&self.plan.hosts) {
            self.apply(
                failures,
                &format!("host {host}"),
                "nvmf_subsystem_remove_host",
                json!({"nqn": nqn, "host": host}),
            )
            .await;
        }
    }

    /// Step 2: delete doomed bdevs, each once nothing is built on it.
    async fn delete(&mut self, doomed: BTreeSet<String>, failures: &mut Vec<Failure>) {
        let mut left = doomed;
        while !left.is_empty() {
            // A bdev still claimed by another doomed bdev waits for it.
            let ready: Vec<String> = left
                .iter()
                .filter(|name| {
                    !left.iter().any(|other| {
                        self.view
                            .bdevs
                            .get(other)
                            .is_some_and(|b| bases_of(b).iter().any(|base| base == *name))
                    })
                })
                .cloned()
                .collect();
            if ready.is_empty() {
                break;
            }
            for name in ready {
                left.remove(&name);
                let Some((method, params)) = self.view.bdevs.get(&name).and_then(plan::delete_call)
                else {
                    continue;
                };
                if self.apply(failures, &name, &method, params).await {
                    self.view.bdevs.remove(&name);
                }
            }
        }
    }

    /// Creates the planned bdevs of `stages` that are missing, and grows
    /// those smaller than planned (a volume grew), if `available(bdev)`
    /// says what they depend on is there.
    async fn create(
        &mut self,
        stages: &[u8],
        available: impl Fn(&BdevPlan) -> bool,
        failures: &mut Vec<Failure>,
    ) {
        let plan = self.plan;
        for bdev in plan.bdevs.iter().filter(|b| stages.contains(&b.stage())) {
            if !available(bdev) {
                continue;
            }
            let retarget = self
                .view
                .bdevs
                .get(bdev.name())
                .and_then(|actual| bdev.retarget_call(actual));
            if let Some((method, params)) = retarget {
                tracing::info!(
                    cluster = self.session.cluster,
                    bdev = bdev.name(),
                    "forwarding to the volume's new owner"
                );
                if self.apply(failures, bdev.name(), method, params).await
                    && let BdevPlan::Remote { cluster, .. } = bdev
                    && let Some(actual) = self.view.bdevs.get_mut(bdev.name())
                {
                    actual["driver_specific"]["remote"]["cluster"] = json!(cluster);
                }
            }
            if let Some(actual) = self.view.bdevs.get(bdev.name()) {
                if let Some((method, params)) = bdev.growth_call(actual)
                    && self.apply(failures, bdev.name(), method, params).await
                    && let Some(actual) = self.view.bdevs.get_mut(bdev.name())
                {
                    actual["num_blocks"] = json!(bdev.planned_blocks());
                }
                continue;
            }
            if !bdev
                .bases()
                .iter()
                .all(|b| self.view.bdevs.contains_key(*b))
            {
                continue;
            }
            let (method, params) = bdev.create_call();
            if self.apply(failures, bdev.name(), method, params).await {
                // Enough for the rest of the pass to know it is there.
                self.view.bdevs.insert(
                    bdev.name().to_string(),
                    json!({"name": bdev.name(), "num_blocks": bdev.planned_blocks()}),
                );
            }
        }
    }

    /// Opens the pools' stores this cluster owns (examining the pool
    /// volume; a new pool's empty volume gets a new store), makes the
    /// lvols of volumes being created, and deletes lvols of volumes that
    /// are gone. A store or lvol missing otherwise is a failure, never
    /// made anew over what it held.
    async fn open_stores(&mut self, failures: &mut Vec<Failure>) {
        let plan = self.plan;
        let mut changed = false;
        for store in &plan.stores {
            if !self.view.lvstores.contains_key(&store.name) {
                if self.view.bdev_named(&store.base).is_none() {
                    continue;
                }
                changed = true;
                if !self
                    .apply(
                        failures,
                        &store.name,
                        "bdev_examine",
                        json!({"name": store.base}),
                    )
                    .await
                {
                    continue;
                }
                self.refresh_lvols().await;
                if !self.view.lvstores.contains_key(&store.name) {
                    if !store.create {
                        failures.push(Failure {
                            cluster: self.session.cluster,
                            object: store.name.clone(),
                            error: format!("no lvol store was found on {}", store.base),
                        });
                        continue;
                    }
                    let (method, params) = store.create_call();
                    if !self.apply(failures, &store.name, method, params).await {
                        continue;
                    }
                    self.refresh_lvols().await;
                }
            }
            for lvol in &store.lvols {
                let alias = store.alias(&lvol.name);
                if self.view.lvols.contains_key(&alias) {
                    continue;
                }
                let object = plan::volume_bdev(lvol.volume);
                if !lvol.create {
                    failures.push(Failure {
                        cluster: self.session.cluster,
                        object,
                        error: format!("lvol {alias} is missing from its store"),
                    });
                    continue;
                }
                let (method, params) = store.create_lvol_call(lvol);
                changed |= self.apply(failures, &object, method, params).await;
            }
            // Volumes of the service that are gone from the pool.
            let gone: Vec<String> = self
                .view
                .lvols
                .iter()
                .filter(|(_, l)| l["lvs"]["name"] == store.name.as_str())
                .filter_map(|(alias, l)| {
                    let name = l["name"].as_str()?;
                    (plan::is_owned_bdev(name) && store.lvols.iter().all(|p| p.name != name))
                        .then(|| alias.clone())
                })
                .collect();
            for alias in gone {
                changed |= self
                    .apply(failures, &alias, "bdev_lvol_delete", json!({"name": alias}))
                    .await;
            }
        }
        // Stores of pools that are gone (their volumes went first).
        let gone: Vec<String> = self
            .view
            .lvstores
            .keys()
            .filter(|name| plan::is_owned_store(name))
            .filter(|name| plan.stores.iter().all(|s| &s.name != *name))
            .cloned()
            .collect();
        for name in gone {
            if self
                .view
                .lvols
                .values()
                .any(|l| l["lvs"]["name"] == name.as_str())
            {
                continue;
            }
            changed |= self
                .apply(
                    failures,
                    &name,
                    "bdev_lvol_delete_lvstore",
                    json!({"lvs_name": name}),
                )
                .await;
        }
        if changed {
            self.refresh_lvols().await;
            if let Ok(bdevs) = self.session.call("bdev_get_bdevs", json!({})).await {
                self.view.bdevs = keyed_by(bdevs, "name");
            }
        }
    }

    /// Reads the stores and lvols again.
    async fn refresh_lvols(&mut self) {
        if let Ok(list) = self.session.call("bdev_lvol_get_lvstores", json!({})).await {
            self.view.lvstores = keyed_by(list, "name");
        }
        if let Ok(list) = self.session.call("bdev_lvol_get_lvols", json!({})).await {
            self.view.lvols = keyed_by(list, "alias");
        }
    }

    /// Takes legs back into this cluster's redundant raids: a slot missing or
    /// failed whose leg is here again and whose cluster runs.
    async fn heal(&mut self, live: &BTreeSet<u32>, failures: &mut Vec<Failure>) {
        let plan = self.plan;
        for bdev in &plan.bdevs {
            let Some(actual) = self.view.bdevs.get(bdev.name()) else {
                continue;
            };
            let leg_ready = |leg: &str| {
                let cluster_runs = match plan.bdevs.iter().find(|b| b.name() == leg) {
                    Some(BdevPlan::Remote { cluster, .. }) => live.contains(cluster),
                    Some(_) => true,
                    None => false,
                };
                cluster_runs && self.view.bdevs.contains_key(leg)
            };
            let calls = bdev.heal_calls(actual, leg_ready);
            for (method, params) in calls {
                tracing::info!(
                    cluster = self.session.cluster,
                    raid = bdev.name(),
                    leg = params["base_bdev"].as_str(),
                    "taking a leg back into the raid"
                );
                self.apply(failures, bdev.name(), method, params).await;
            }
        }
    }

    /// Step 5: transport, subsystem, listener, namespaces, hosts,
    /// referrals and NBD exports.
    async fn grant(
        &mut self,
        fabric: &Fabric,
        credentials: &Credentials<'_>,
        failures: &mut Vec<Failure>,
    ) {
        let nqn = fabric.nqn.as_str();
        if !self.plan.serves {
            return;
        }
        if !self.view.transport
            && self
                .apply(
                    failures,
                    "transport",
                    "nvmf_create_transport",
                    json!({"trtype": "TCP"}),
                )
                .await
        {
            self.view.transport = true;
        }
        if self.view.subsystem.is_none() {
            let params = json!({
                "nqn": nqn,
                "serial_number": fabric.serial_number,
                "model_number": plan::MODEL_NUMBER,
                "allow_any_host": false,
                "max_namespaces": super::model::MAX_VOLUMES,
            });
            if !self
                .apply(failures, "subsystem", "nvmf_create_subsystem", params)
                .await
            {
                return;
            }
            self.view.subsystem =
                Some(json!({"nqn": nqn, "listen_addresses": [], "hosts": [], "namespaces": []}));
        }
        let subsystem = self.view.subsystem.clone().unwrap_or_default();
        let (traddr, trsvcid) = &self.plan.listener;
        let listening = subsystem["listen_addresses"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|l| l["traddr"] == traddr.as_str() && l["trsvcid"] == trsvcid.as_str());
        if !listening {
            let address = json!({"trtype": "TCP", "traddr": traddr, "trsvcid": trsvcid});
            self.apply(
                failures,
                "listener",
                "nvmf_subsystem_add_listener",
                json!({"nqn": nqn, "listen_address": address}),
            )
            .await;
        }
        self.grant_keyring(credentials.files, failures).await;
        let keyed = subsystem_host_keys(&subsystem);
        let plan = self.plan;
        for host in &plan.hosts {
            let wanted = plan.host_keys.get(host);
            match keyed.get(host) {
                Some(actual) if actual.as_ref() == wanted => continue,
                _ => {}
            }
            let mut params = json!({"nqn": nqn, "host": host});
            if let Some(names) = wanted {
                params["dhchap_key"] = json!(names.dhchap_key);
                if let Some(ctrlr) = &names.dhchap_ctrlr_key {
                    params["dhchap_ctrlr_key"] = json!(ctrlr);
                }
            }
            // Adding a host again replaces its keys (or drops them).
            self.apply(
                failures,
                &format!("host {host}"),
                "nvmf_subsystem_add_host",
                params,
            )
            .await;
        }
        // Namespaces as they are after the revocations of step 1.
        let session = &mut self.session;
        let current = match session
            .call("nvmf_get_subsystems", json!({"nqn": nqn}))
            .await
        {
            Ok(list) => list[0].clone(),
            Err(_) => subsystem,
        };
        self.view.subsystem = Some(current);
        let existing = self.view.namespaces();
        let plan = self.plan;
        for namespace in &plan.namespaces {
            if self.view.bdev_named(&namespace.bdev).is_none() {
                continue;
            }
            let shown_to = match existing.get(&namespace.nsid) {
                Some(actual) => string_set(&actual["hosts"]),
                None => {
                    let params = json!({"nqn": nqn, "namespace": {
                        "bdev_name": namespace.bdev,
                        "nsid": namespace.nsid,
                        "nguid": namespace.nguid,
                        "uuid": namespace.uuid.to_string(),
                        "no_auto_visible": true,
                    }});
                    if !self
                        .apply(failures, &namespace.bdev, "nvmf_subsystem_add_ns", params)
                        .await
                    {
                        continue;
                    }
                    BTreeSet::new()
                }
            };
            for host in namespace.hosts.difference(&shown_to) {
                self.apply(
                    failures,
                    &namespace.bdev,
                    "nvmf_ns_add_host",
                    json!({"nqn": nqn, "nsid": namespace.nsid, "host": host}),
                )
                .await;
            }
        }
        self.grant_referrals(nqn, failures).await;
        self.grant_psks(credentials, failures).await;
        for export in &plan.nbd_exports {
            let name = &export.name;
            if self.view.bdev_named(&export.bdev).is_none() {
                continue;
            }
            if !self.view.nbd_exports.contains(name) {
                let hosts: Vec<&String> = export.hosts.iter().collect();
                if self
                    .apply(
                        failures,
                        name,
                        "nbd_start_disk",
                        json!({"bdev_name": export.bdev, "nbd_device": name, "hosts": hosts,
                               "read_only": export.read_only}),
                    )
                    .await
                {
                    self.view.nbd_exports.insert(name.clone());
                    self.view
                        .nbd_hosts
                        .insert(name.clone(), export.hosts.clone());
                }
                continue;
            }
            // Hosts are added before others are removed: an export whose
            // list emptied on the way would serve anyone on loopback.
            let actual = self.view.nbd_hosts.get(name).cloned().unwrap_or_default();
            for host in export.hosts.difference(&actual) {
                self.apply(
                    failures,
                    name,
                    "nbd_disk_add_host",
                    json!({"nbd_device": name, "host": host}),
                )
                .await;
            }
            for host in actual.difference(&export.hosts) {
                self.apply(
                    failures,
                    name,
                    "nbd_disk_remove_host",
                    json!({"nbd_device": name, "host": host}),
                )
                .await;
            }
        }
    }

    /// DH-HMAC-CHAP keys the plan names that the keyring lacks, each
    /// through a key file that lives only for its call.
    async fn grant_keyring(&mut self, files: &KeyFiles, failures: &mut Vec<Failure>) {
        let plan = self.plan;
        for (name, secret) in &plan.keyring {
            if self.view.keyring.contains(name) {
                continue;
            }
            let object = format!("host key {name}");
            let file = match files.write(name, secret.expose()) {
                Ok(file) => file,
                Err(e) => {
                    failures.push(Failure {
                        cluster: self.session.cluster,
                        object,
                        error: format!("cannot stage the key file: {e}"),
                    });
                    continue;
                }
            };
            let params = json!({"name": name, "path": file.path()});
            // The dataplane reads the file in the call; it goes right after.
            if self
                .apply(failures, &object, "keyring_file_add_key", params)
                .await
            {
                self.view.keyring.insert(name.clone());
            }
            drop(file);
        }
    }

    /// NBD PSKs of keyed initiators: sent when the cluster lacks them or
    /// has another; those of initiators no longer keyed are removed.
    async fn grant_psks(&mut self, credentials: &Credentials<'_>, failures: &mut Vec<Failure>) {
        let cluster = self.session.cluster;
        let plan = self.plan;
        for (identity, psk) in &plan.nbd_psks {
            let sent = credentials
                .psks_sent
                .lock()
                .expect("psk ledger lock")
                .get(&(cluster, identity.clone()))
                .copied();
            if self.view.nbd_psks.contains(identity) && sent == Some(psk.tag()) {
                continue;
            }
            let object = format!("host NBD PSK {identity}");
            let content = format!("{identity}:{}\n", secrets::hex(&psk.0));
            let file = match credentials
                .files
                .write(&format!("psk-{identity}"), &content)
            {
                Ok(file) => file,
                Err(e) => {
                    failures.push(Failure {
                        cluster,
                        object,
                        error: format!("cannot stage the key file: {e}"),
                    });
                    continue;
                }
            };
            let params = json!({"identity": identity, "key_path": file.path()});
            if self.apply(failures, &object, "nbd_add_psk", params).await {
                self.view.nbd_psks.insert(identity.clone());
                credentials
                    .psks_sent
                    .lock()
                    .expect("psk ledger lock")
                    .insert((cluster, identity.clone()), psk.tag());
            }
            drop(file);
        }
        let stale: Vec<String> = self
            .view
            .nbd_psks
            .iter()
            .filter(|i| plan::is_owned_identity(i) && !plan.nbd_psks.contains_key(*i))
            .cloned()
            .collect();
        for identity in stale {
            if self
                .apply(
                    failures,
                    &format!("host NBD PSK {identity}"),
                    "nbd_remove_psk",
                    json!({"identity": identity}),
                )
                .await
            {
                self.view.nbd_psks.remove(&identity);
                credentials
                    .psks_sent
                    .lock()
                    .expect("psk ledger lock")
                    .remove(&(cluster, identity));
            }
        }
    }

    /// Keyring entries of the service no host refers to any more (run
    /// after the hosts took their new keys).
    async fn revoke_keyring(&mut self, failures: &mut Vec<Failure>) {
        let plan = self.plan;
        let stale: Vec<String> = self
            .view
            .keyring
            .iter()
            .filter(|n| n.starts_with(plan::KEY_NAME_PREFIX) && !plan.keyring.contains_key(*n))
            .cloned()
            .collect();
        for name in stale {
            if self
                .apply(
                    failures,
                    &format!("host key {name}"),
                    "keyring_file_remove_key",
                    json!({"name": name}),
                )
                .await
            {
                self.view.keyring.remove(&name);
            }
        }
    }

    /// Cluster 0's referrals to the other portals of the subsystem.
    async fn grant_referrals(&mut self, nqn: &str, failures: &mut Vec<Failure>) {
        let existing: Vec<(String, String)> = self
            .view
            .referrals
            .iter()
            .filter(|r| r["subnqn"] == nqn)
            .filter_map(|r| {
                let a = &r["address"];
                Some((
                    a["traddr"].as_str()?.to_string(),
                    a["trsvcid"].as_str()?.to_string(),
                ))
            })
            .collect();
        let plan = self.plan;
        for (traddr, trsvcid) in existing.iter().filter(|r| !plan.referrals.contains(r)) {
            let address = json!({"trtype": "TCP", "traddr": traddr, "trsvcid": trsvcid});
            self.apply(
                failures,
                "referral",
                "nvmf_discovery_remove_referral",
                json!({"subnqn": nqn, "address": address}),
            )
            .await;
        }
        for (traddr, trsvcid) in plan.referrals.iter().filter(|r| !existing.contains(r)) {
            let address = json!({"trtype": "TCP", "traddr": traddr, "trsvcid": trsvcid});
            self.apply(
                failures,
                "referral",
                "nvmf_discovery_add_referral",
                json!({"subnqn": nqn, "address": address}),
            )
            .await;
        }
    }
}

/// The bdevs an existing bdev is built on (raid legs, a part's base).
/// The objects of a JSON-RPC list, by their string field `key`.
fn keyed_by(list: Value, key: &str) -> BTreeMap<String, Value> {
    let Value::Array(items) = list else {
        return BTreeMap::new();
    };
    items
        .into_iter()
        .filter_map(|item| Some((item[key].as_str()?.to_string(), item)))
        .collect()
}

fn bases_of(actual: &Value) -> Vec<String> {
    let specific = &actual["driver_specific"];
    if let Some(base) = specific["part"]["base_bdev"].as_str() {
        return vec![base.to_string()];
    }
    specific["raid"]["base_bdevs_list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["name"].as_str().map(str::to_string))
        .collect()
}

/// The hosts of a subsystem with the key names each must prove, if any.
fn subsystem_host_keys(subsystem: &Value) -> BTreeMap<String, Option<HostKeyNames>> {
    subsystem["hosts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|h| {
            let keys = h["dhchap_key"].as_str().map(|key| HostKeyNames {
                dhchap_key: key.to_string(),
                dhchap_ctrlr_key: h["dhchap_ctrlr_key"].as_str().map(str::to_string),
            });
            Some((h["nqn"].as_str()?.to_string(), keys))
        })
        .collect()
}

/// The hosts allowed on a subsystem, as `nvmf_get_subsystems` lists them.
fn subsystem_hosts(subsystem: &Value) -> BTreeSet<String> {
    subsystem["hosts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|h| h["nqn"].as_str().map(str::to_string))
        .collect()
}

fn string_set(value: &Value) -> BTreeSet<String> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect()
}

/// One pass over the running clusters (`running`: index and socket).
/// The owner of every redundant volume: the running cluster that holds its
/// raid now (so ownership survives a management restart), else a new one
/// by [`owner::choose_owner`].
fn owners(
    fabric: &Fabric,
    desired: &Desired,
    opened: &[(Session, ClusterView)],
) -> BTreeMap<u64, u32> {
    let mut running = vec![false; fabric.clusters as usize];
    for (session, _) in opened {
        running[session.cluster as usize] = true;
    }
    desired
        .volumes
        .iter()
        // A pool's volumes go with the pool volume's owner.
        .filter(|volume| volume.pool.is_none())
        .filter_map(|volume| {
            let wanted = volume.raid_type.owner_level()?;
            let name = plan::volume_bdev(volume.id);
            let current = opened.iter().find_map(|(session, view)| {
                let level = &view.bdevs.get(&name)?["driver_specific"]["raid"]["raid_level"];
                (level == wanted).then_some(session.cluster)
            });
            let leg_clusters: Vec<u32> = volume.legs.iter().map(|l| l.cluster).collect();
            owner::choose_owner(current, &running, &leg_clusters, volume.id)
                .map(|owner| (volume.id, owner))
        })
        .collect()
}

pub async fn pass(
    fabric: &Fabric,
    desired: &Desired,
    running: &[(u32, PathBuf)],
    credentials: &Credentials<'_>,
) -> Report {
    let mut failures = Vec::new();
    let mut opened = Vec::new();
    for (cluster, socket) in running {
        if *cluster >= fabric.clusters {
            continue;
        }
        let session = match Session::open(*cluster, socket).await {
            Ok(mut session) => session.read(fabric).await.map(|view| (session, view)),
            Err(e) => Err(e),
        };
        match session {
            Ok(pair) => opened.push(pair),
            Err(error) => failures.push(Failure {
                cluster: *cluster,
                object: "dataplane".into(),
                error,
            }),
        }
    }
    let owners = owners(fabric, desired, &opened);
    let plans = plan::plan(fabric, desired, &owners);
    let mut targets: Vec<Target> = opened
        .into_iter()
        .map(|(session, view)| Target {
            plan: &plans[session.cluster as usize],
            session,
            view,
        })
        .collect();

    for target in &mut targets {
        let doomed = target.doomed();
        target.revoke(fabric, &doomed, &mut failures).await;
        target.delete(doomed, &mut failures).await;
    }
    for target in &mut targets {
        target.create(&[0, 1], |_| true, &mut failures).await;
    }
    // A remote leg needs the leg on its own cluster, made (or grown to its
    // planned size) above or before.
    let legs_present: BTreeMap<u32, BTreeMap<String, Option<u64>>> = targets
        .iter()
        .map(|t| {
            let sizes = t
                .view
                .bdevs
                .iter()
                .map(|(name, b)| (name.clone(), b["num_blocks"].as_u64()))
                .collect();
            (t.session.cluster, sizes)
        })
        .collect();
    for target in &mut targets {
        let available = |bdev: &BdevPlan| match bdev {
            BdevPlan::Remote {
                cluster,
                remote_bdev,
                num_blocks,
                ..
            } => legs_present
                .get(cluster)
                .and_then(|names| names.get(remote_bdev))
                .is_some_and(|size| size.is_none_or(|size| size >= *num_blocks)),
            _ => true,
        };
        target.create(&[2, 3], available, &mut failures).await;
    }
    for target in &mut targets {
        target.open_stores(&mut failures).await;
    }
    // Forwarders need their volume's raid (or lvol, by its alias) on the
    // owner, made above.
    let raids_present: BTreeMap<u32, BTreeSet<String>> = targets
        .iter()
        .map(|t| {
            let names = t.view.bdevs.iter().flat_map(|(name, bdev)| {
                let aliases = bdev["aliases"].as_array().cloned().unwrap_or_default();
                std::iter::once(name.clone()).chain(
                    aliases
                        .into_iter()
                        .filter_map(|a| a.as_str().map(str::to_string)),
                )
            });
            (t.session.cluster, names.collect())
        })
        .collect();
    let live: BTreeSet<u32> = targets.iter().map(|t| t.session.cluster).collect();
    for target in &mut targets {
        let available = |bdev: &BdevPlan| match bdev {
            BdevPlan::Remote {
                cluster,
                remote_bdev,
                ..
            } => raids_present
                .get(cluster)
                .is_some_and(|names| names.contains(remote_bdev)),
            _ => true,
        };
        target.create(&[4], available, &mut failures).await;
        target.heal(&live, &mut failures).await;
    }
    for target in &mut targets {
        target.grant(fabric, credentials, &mut failures).await;
        target.revoke_keyring(&mut failures).await;
    }

    let mut views = BTreeMap::new();
    for mut target in targets {
        // Read back what the cluster now holds, so reports show the truth.
        let view = match target.session.read(fabric).await {
            Ok(view) => view,
            Err(_) => target.view,
        };
        views.insert(target.session.cluster, view);
    }
    Report { failures, views }
}
