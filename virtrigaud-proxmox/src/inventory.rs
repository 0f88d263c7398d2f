//! Reads: describe one VM, its capabilities, list VMs by label, the cluster inventory.

use std::collections::BTreeMap;

use virtrigaud_core::placement::{DatastoreInfo, HostInfo, Resources};
use virtrigaud_core::{
    Error, Inventory, ListOptions, OffReason, PowerState, Result, VmCapabilities, VmDescription,
    VmId,
};

use crate::PROVIDER_TYPE;
use crate::client::PveClient;
use crate::disks::vm_disks;
use crate::error::to_core_error;
use crate::hotplug::{Hotplug, Topology};
use crate::id::VmRef;
use crate::labels::tags_to_labels;
use crate::placement::Store;
use crate::power::{LastActions, power_state};
use crate::request::api;
use crate::types::{ClusterVm, NodeEntry, PendingEntry};
use crate::vm_api::{config, pending, status};

/// The VM's state, name, size, disks, labels, node and whether changes wait for a power
/// cycle. `cpu` is the vCPUs it runs with (`vcpus`, else sockets × cores); disks are named
/// by the create spec's disk names where the VM records them.
pub(crate) async fn describe(
    client: &PveClient,
    last: &LastActions,
    r: &VmRef,
) -> Result<VmDescription> {
    let state = power_state(client, last, r).await?;
    let cfg = config(client, r, "describe").await?;
    let pending = pending(client, r, "describe").await?;
    let name = cfg
        .get("name")
        .map(str::to_owned)
        .unwrap_or_else(|| format!("VM {}", r.vmid));
    let mut d = VmDescription::new(r.to_vm_id(), name, state);
    d.cpu = u32::try_from(Topology::of(&cfg).count()).unwrap_or(u32::MAX);
    d.memory_mib = cfg.get_u64("memory").unwrap_or(512);
    d.disks = vm_disks(&cfg).iter().map(|disk| disk.info()).collect();
    d.labels = tags_to_labels(cfg.get("tags"));
    d.host = Some(r.node.clone());
    d.pending_power_cycle = pending.iter().any(PendingEntry::is_pending);
    Ok(d)
}

/// What this VM allows, from its config:
///
/// * CPU hot-add when `hotplug` has `cpu` (PVE hot-plugs `vcpus`), up to sockets × cores;
///   without it the VM stays at the vCPUs it has.
/// * Memory hot-add when `hotplug` has `memory` and `numa` is on. Its live maximum is not in
///   the config (PVE caps it by the host's physical address bits, at most 4 TiB): 0,
///   unknown. Without hot-add it is the memory the VM has.
/// * Snapshots with memory while it runs; quiesced when the agent is enabled and its
///   `freeze-fs` is not off (PVE freezes the guest's filesystems through the agent for a
///   snapshot without RAM).
/// * Linked clones from templates.
pub(crate) async fn vm_capabilities(client: &PveClient, r: &VmRef) -> Result<VmCapabilities> {
    let status = status(client, r, "vm_capabilities").await?;
    let cfg = config(client, r, "vm_capabilities").await?;
    let hot = Hotplug::of(&cfg);
    let cpus = Topology::of(&cfg);
    let mut c = VmCapabilities::default();
    c.agent_configured = cfg.agent_enabled();
    c.agent_connected = None;
    c.cpu_hot_add = hot.cpu();
    let live_cpus = if hot.cpu() { cpus.max() } else { cpus.count() };
    c.max_live_vcpus = u32::try_from(live_cpus).unwrap_or(u32::MAX);
    c.memory_hot_add = hot.memory();
    c.max_live_memory_mib = if hot.memory() {
        0
    } else {
        cfg.get_u64("memory").unwrap_or(512)
    };
    c.disk_grow_online = true;
    c.snapshot_memory = status.status == "running";
    c.snapshot_quiesce = c.agent_configured && cfg.agent_freeze_fs();
    c.linked_clone_source = status.template || cfg.get_u64("template") == Some(1);
    Ok(c)
}

/// The cluster's QEMU VMs whose labels match.
///
/// A matching VM whose state PVE does not know (its node is offline or unreachable) fails the
/// whole listing with a retryable `Unavailable`, rather than being left out: a VM set that
/// counted its members from a partial listing would create duplicates of the missing ones.
pub(crate) async fn list_vms(client: &PveClient, opts: &ListOptions) -> Result<Vec<VmDescription>> {
    let vms: Vec<ClusterVm> = client
        .call(&api::cluster_vms())
        .await
        .map_err(|e| to_core_error(e, "list_vms", None))?;
    let mut out = Vec::new();
    for v in vms {
        let Some(vmid) = v.vmid else { continue };
        if v.kind != "qemu" {
            continue;
        }
        let labels = tags_to_labels(v.tags.as_deref());
        if !opts
            .labels
            .iter()
            .all(|(k, val)| labels.get(k) == Some(val))
        {
            continue;
        }
        let state = match v.status.as_str() {
            "running" => PowerState::Running,
            "stopped" => PowerState::Off(OffReason::Unknown),
            other => {
                let why = format!(
                    "the listing is partial: node {} is offline or unreachable \
                     (VM {vmid} has the status {other:?})",
                    v.node
                );
                return Err(Error::unavailable(why).context_for(PROVIDER_TYPE, "list_vms", None));
            }
        };
        let id = VmId::new(format!("{}/{vmid}", v.node));
        let mut d = VmDescription::new(id, v.name.unwrap_or_default(), state);
        d.cpu = v.maxcpu.unwrap_or(0) as u32;
        d.memory_mib = v.maxmem.unwrap_or(0) / (1024 * 1024);
        d.labels = labels;
        d.host = Some(v.node);
        out.push(d);
    }
    Ok(out)
}

/// Online nodes (capacity, what their running VMs take, their VMs and storages) and every
/// storage that holds VM disks (`images` content) as a datastore (shared ones by name,
/// node-local ones as `storage@node`, see [`crate::placement`]) with its free space and the
/// VMs with a disk on it (one content listing per such storage of an online node).
pub(crate) async fn inventory(client: &PveClient) -> Result<Inventory> {
    let wire = |e| to_core_error(e, "inventory", None);
    let nodes: Vec<NodeEntry> = client.call(&api::nodes()).await.map_err(wire)?;
    let vms: Vec<ClusterVm> = client.call(&api::cluster_vms()).await.map_err(wire)?;
    let mut stores: Vec<Store> = client.call(&api::cluster_storage()).await.map_err(wire)?;
    stores.retain(Store::holds_images);
    let online: Vec<NodeEntry> = nodes.into_iter().filter(|n| n.status == "online").collect();
    let mut inv = Inventory::default();
    let mut seen: BTreeMap<String, DatastoreInfo> = BTreeMap::new();
    for s in &stores {
        let free =
            s.maxdisk.unwrap_or(0).saturating_sub(s.disk.unwrap_or(0)) / (1024 * 1024 * 1024);
        let ds = seen
            .entry(s.datastore())
            .or_insert_with(|| DatastoreInfo::new(s.datastore(), free));
        if online.iter().any(|n| n.node == s.node) {
            for vm in disk_owners(client, s, &vms).await? {
                if !ds.vms.contains(&vm) {
                    ds.vms.push(vm);
                }
            }
        }
    }
    for n in online {
        inv.hosts.push(host(n, &vms, &stores));
    }
    inv.datastores = seen.into_values().collect();
    Ok(inv)
}

/// Names of the VMs with a disk volume on storage `s` of its node. A node-local storage only
/// counts VMs of that node: a VM elsewhere cannot use it (a volume left there by a VM that
/// moved is not a disk of that VM now), and servers that list one storage's volumes for
/// every node, as fakepve does, would otherwise put each VM on every node's local storage.
async fn disk_owners(client: &PveClient, s: &Store, vms: &[ClusterVm]) -> Result<Vec<String>> {
    #[derive(serde::Deserialize)]
    struct Volume {
        #[serde(default, deserialize_with = "crate::types::lenient::opt_u64")]
        vmid: Option<u64>,
    }
    let vols: Vec<Volume> = client
        .call(&api::storage_content(&s.node, &s.storage, "images"))
        .await
        .map_err(|e| to_core_error(e, "inventory", Some(&s.datastore())))?;
    let mut out: Vec<String> = vols
        .iter()
        .filter_map(|v| v.vmid)
        .filter_map(|id| vms.iter().find(|v| v.vmid == Some(id)))
        .filter(|v| s.is_shared() || v.node == s.node)
        .filter_map(|v| v.name.clone())
        .collect();
    out.sort();
    out.dedup();
    Ok(out)
}

fn host(n: NodeEntry, vms: &[ClusterVm], stores: &[Store]) -> HostInfo {
    let mut h = HostInfo::new(
        n.node.clone(),
        Resources::new(n.maxcpu.unwrap_or(0), n.maxmem.unwrap_or(0) / (1024 * 1024)),
    );
    let mine: Vec<&ClusterVm> = vms
        .iter()
        .filter(|v| v.node == n.node && v.status == "running")
        .collect();
    h.allocated = Resources::new(
        mine.iter().map(|v| v.maxcpu.unwrap_or(0)).sum(),
        mine.iter().map(|v| v.maxmem.unwrap_or(0)).sum::<u64>() / (1024 * 1024),
    );
    h.vms = vms
        .iter()
        .filter(|v| v.node == n.node)
        .filter_map(|v| v.name.clone())
        .collect();
    h.datastores = stores
        .iter()
        .filter(|s| s.node == n.node)
        .map(Store::datastore)
        .collect();
    h
}
