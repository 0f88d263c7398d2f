//! The placement inventory (hosts, clusters, datastores, and what runs where) and finding VMs
//! by inventory path or display name.

use std::collections::BTreeMap;

use virtrigaud_core::placement::{DatastoreInfo, HostInfo, Inventory, Resources};
use virtrigaud_core::{Error, ErrorKind, Result, VmId};

use crate::PROVIDER_TYPE;
use crate::client::Client;
use crate::error::{VimError, to_core_error};
use crate::types::{MoRef, Props, refs};
use crate::vm_api;

/// vCPUs counted per physical core in the placement inventory (a 4:1 consolidation ratio).
pub const VCPU_PER_CORE: u64 = 4;

const FIND: &str = "find_vm";

/// Hosts (with their cluster, vCPU capacity, memory and reachable datastores), the vCPUs and
/// memory of their powered-on VMs as allocation, and datastores with their free space and the
/// VMs with files on them.
pub(crate) async fn inventory(c: &Client) -> Result<Inventory> {
    let err = |e: VimError| to_core_error(e, "inventory", None);
    let clusters: BTreeMap<String, String> = c
        .list_by_type("ClusterComputeResource", &["name"])
        .await
        .map_err(err)?
        .into_iter()
        .map(|(m, p)| (m.value, p.str("name").unwrap_or_default().to_owned()))
        .collect();
    let datastores = c
        .list_by_type("Datastore", &["name", "summary.freeSpace", "vm"])
        .await
        .map_err(err)?;
    let ds_names: BTreeMap<String, String> = datastores
        .iter()
        .map(|(m, p)| {
            (
                m.value.clone(),
                p.str("name").unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let vm_paths = [
        "name",
        "runtime.powerState",
        "runtime.host",
        "config.hardware.numCPU",
        "config.hardware.memoryMB",
    ];
    let vms = c
        .list_by_type("VirtualMachine", &vm_paths)
        .await
        .map_err(err)?;
    let host_paths = [
        "name",
        "parent",
        "datastore",
        "summary.hardware.numCpuCores",
        "summary.hardware.memorySize",
    ];
    let hosts = c
        .list_by_type("HostSystem", &host_paths)
        .await
        .map_err(err)?;
    let mut inv = Inventory::default();
    for (m, p) in hosts {
        inv.hosts
            .push(host_info(&m, &p, &clusters, &ds_names, &vms));
    }
    let vm_names: BTreeMap<&str, &str> = vms
        .iter()
        .map(|(m, p)| (m.value.as_str(), p.str("name").unwrap_or_default()))
        .collect();
    inv.datastores = datastores
        .iter()
        .map(|(_, p)| {
            let mut ds = DatastoreInfo::new(
                p.str("name").unwrap_or_default(),
                p.u64("summary.freeSpace").unwrap_or(0) / (1024 * 1024 * 1024),
            );
            ds.vms = refs(p.get("vm"))
                .iter()
                .filter_map(|r| vm_names.get(r.as_str()).map(|n| (*n).to_owned()))
                .collect();
            ds
        })
        .collect();
    Ok(inv)
}

/// One host: capacity (physical cores × [`VCPU_PER_CORE`]), cluster, datastores, its VMs,
/// and the vCPUs and memory of the powered-on ones as allocation.
fn host_info(
    m: &MoRef,
    p: &Props,
    clusters: &BTreeMap<String, String>,
    ds_names: &BTreeMap<String, String>,
    vms: &[(MoRef, Props)],
) -> HostInfo {
    let mut h = HostInfo::new(
        p.str("name").unwrap_or(&m.value),
        Resources::new(
            p.u64("summary.hardware.numCpuCores").unwrap_or(0) * VCPU_PER_CORE,
            p.u64("summary.hardware.memorySize").unwrap_or(0) / (1024 * 1024),
        ),
    );
    h.cluster = p.str("parent").and_then(|c| clusters.get(c)).cloned();
    h.datastores = p
        .get("datastore")
        .map(|e| {
            e.children
                .iter()
                .filter_map(|c| ds_names.get(c.text()).cloned())
                .collect()
        })
        .unwrap_or_default();
    let mut alloc = Resources::default();
    for (_, v) in vms
        .iter()
        .filter(|(_, v)| v.str("runtime.host") == Some(m.value.as_str()))
    {
        h.vms.push(v.str("name").unwrap_or_default().to_owned());
        if v.str("runtime.powerState") == Some("poweredOn") {
            alloc.cpu += v.u64("config.hardware.numCPU").unwrap_or(0);
            alloc.memory_mib += v.u64("config.hardware.memoryMB").unwrap_or(0);
        }
    }
    h.allocated = alloc;
    h
}

/// Finds a VM by inventory path (`DC0/vm/folder/name`).
pub(crate) async fn find_vm_by_path(c: &Client, path: &str) -> Result<VmId> {
    let found = c
        .find_by_inventory_path(path)
        .await
        .map_err(|e| to_core_error(e, FIND, Some(path)))?;
    match found {
        Some(m) if m.ty == "VirtualMachine" => Ok(VmId::new(m.value)),
        Some(m) => Err(
            Error::invalid_spec(format!("{path} is a {}, not a VM", m.ty)).context_for(
                PROVIDER_TYPE,
                FIND,
                Some(path),
            ),
        ),
        None => Err(
            Error::not_found(format!("no VM at inventory path {path}")).context_for(
                PROVIDER_TYPE,
                FIND,
                Some(path),
            ),
        ),
    }
}

/// Finds a VM by display name; several VMs with that name are `Conflict`.
pub(crate) async fn find_vm_by_name(c: &Client, name: &str) -> Result<VmId> {
    let all = c
        .list_by_type("VirtualMachine", &["name"])
        .await
        .map_err(|e| to_core_error(e, FIND, Some(name)))?;
    let mut hits = all
        .into_iter()
        .filter(|(_, p)| p.str("name") == Some(name))
        .map(|(m, _)| m.value);
    match (hits.next(), hits.next()) {
        (Some(id), None) => Ok(VmId::new(id)),
        (None, _) => Err(Error::not_found(format!("no VM named {name}")).context_for(
            PROVIDER_TYPE,
            FIND,
            Some(name),
        )),
        (Some(_), Some(_)) => Err(Error::new(
            ErrorKind::Conflict,
            format!("several VMs are named {name}"),
        )
        .permanent()
        .context_for(PROVIDER_TYPE, FIND, Some(name))),
    }
}

/// The VM's display name (checks that the id exists).
pub(crate) async fn vm_name(c: &Client, vm: &VmId) -> Result<String> {
    let p = vm_api::props(c, vm, &["name"], "describe").await?;
    Ok(p.str("name").unwrap_or_default().to_owned())
}
