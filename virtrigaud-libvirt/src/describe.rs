//! Reading VMs and the host: describe, per-VM capabilities, list by labels, the inventory.

use std::collections::BTreeMap;

use virt::domain::Domain;
use virt::sys;
use virtrigaud_core::placement::{DatastoreInfo, HostInfo, Inventory, Resources};
use virtrigaud_core::{DiskInfo, ErrorKind, Result, VmCapabilities, VmDescription, VmId};

use crate::capabilities;
use crate::connection::Session;
use crate::domain::{disk_capacity, state_of, xml_of};
use crate::domxml;
use crate::metadata;
use crate::placement;
use crate::volume::GIB;
use crate::xml::Element;

/// Each disk of `x` under its spec name (or target), with its capacity in GiB (rounded
/// up, see [`disk_capacity`]); on a driver that cannot resize anything, marked as a disk
/// that cannot grow.
fn disk_sizes(s: &Session, dom: &Domain, x: &Element, running: bool) -> Vec<DiskInfo> {
    let blocker = capabilities::disk_growth_blocker(s.driver());
    domxml::disks(x)
        .into_iter()
        .map(|d| {
            let vol = d
                .source
                .as_deref()
                .and_then(|p| s.api_raw(|c| c.lookup_storage_vol_by_path(p)).ok());
            let cap = disk_capacity(s, dom, &d.target, vol.as_ref(), running);
            let info = DiskInfo::new(d.name, cap.unwrap_or(0).div_ceil(GIB));
            match blocker {
                Some(why) => info.cannot_grow(why),
                None => info,
            }
        })
        .collect()
}

/// Describes `dom` (named `name`).
pub(crate) fn describe(s: &Session, dom: &Domain, name: &str) -> Result<VmDescription> {
    let state = state_of(s, dom, name)?;
    let x = xml_of(s, dom, name, 0)?;
    let mut d = VmDescription::new(VmId::new(name.to_owned()), name.to_owned(), state);
    d.cpu = domxml::vcpus(&x).0;
    d.memory_mib = x
        .find("currentMemory")
        .or_else(|| x.find("memory"))
        .map(domxml::size_kib)
        .unwrap_or(0)
        / 1024;
    d.labels = metadata::labels(&x);
    d.host = s.api_raw(|c| c.hostname()).ok();
    d.disks = disk_sizes(s, dom, &x, state.is_active());
    if state.is_active() {
        let cfg = xml_of(s, dom, name, sys::VIR_DOMAIN_XML_INACTIVE)?;
        let mem_cfg = cfg.find("currentMemory").map(domxml::size_kib);
        let mem_live = x.find("currentMemory").map(domxml::size_kib);
        d.pending_power_cycle = domxml::vcpus(&cfg) != domxml::vcpus(&x)
            || cfg.find("memory").map(domxml::size_kib) != x.find("memory").map(domxml::size_kib)
            || (mem_cfg != mem_live && mem_cfg > x.find("memory").map(domxml::size_kib));
    }
    Ok(d)
}

/// Every domain whose labels include `want`, sorted by name.
pub(crate) fn list(s: &Session, want: &BTreeMap<String, String>) -> Result<Vec<VmDescription>> {
    let doms = s.api("list_vms", "", |c| c.list_all_domains(0))?;
    let mut out = Vec::new();
    for d in doms {
        let Ok(name) = d.name() else {
            continue;
        };
        match describe(s, &d, &name) {
            Ok(desc) => {
                if want.iter().all(|(k, v)| desc.labels.get(k) == Some(v)) {
                    out.push(desc);
                }
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// What the domain can do now: agent, hot-plug headroom, disk growth, snapshot memory,
/// whether it can be the source of a linked clone.
pub(crate) fn vm_capabilities(s: &Session, name: &str) -> Result<VmCapabilities> {
    let dom = crate::domain::lookup(s, name)?;
    let st = state_of(s, &dom, name)?;
    let x = xml_of(s, &dom, name, 0)?;
    let mut c = VmCapabilities::default();
    let (configured, live) = domxml::agent_channel(&x);
    c.agent_configured = configured;
    c.agent_connected = if st.is_off() || !configured {
        Some(false)
    } else {
        s.hub().and_then(|h| h.agent_state(name)).or(live)
    };
    let (cur, max) = domxml::vcpus(&x);
    c.cpu_hot_add = max > cur;
    c.max_live_vcpus = max;
    let max_kib = x.find("memory").map(domxml::size_kib).unwrap_or(0);
    let cur_kib = x
        .find("currentMemory")
        .map(domxml::size_kib)
        .unwrap_or(max_kib);
    c.memory_hot_add = max_kib > cur_kib
        && x.path("devices/memballoon")
            .is_some_and(|b| b.get_attr("model") != Some("none"));
    c.max_live_memory_mib = max_kib / 1024;
    let disks = domxml::disks(&x);
    c.disk_grow_online =
        !disks.is_empty() && capabilities::disk_growth_blocker(s.driver()).is_none();
    let all_qcow2 = !disks.is_empty() && disks.iter().all(|d| d.format == "qcow2");
    c.snapshot_memory = all_qcow2 || s.driver() == "TEST";
    c.snapshot_quiesce = false;
    c.linked_clone_source = disks.iter().all(|d| d.source.is_some()) && !disks.is_empty();
    Ok(c)
}

/// The host (capacity, every domain on it, what the running ones take) and its active
/// storage pools as datastores, each with its free space and the domains with a disk in it.
/// The configured pool is listed even when inactive, so a placement can name it.
pub(crate) fn inventory(s: &Session) -> Result<Inventory> {
    const OP: &str = "inventory";
    let node = s.api(OP, "node", |c| c.node_info())?;
    let mut host = HostInfo::new(
        placement::host_name(s),
        Resources::new(u64::from(node.cpus), node.memory / 1024),
    );
    let doms = s.api(OP, "domains", |c| c.list_all_domains(0))?;
    let mut alloc = Resources::default();
    let mut disks: Vec<(String, Vec<String>)> = Vec::new();
    for d in &doms {
        let Ok(name) = d.name() else { continue };
        if s.api_raw(|_| d.is_active()).unwrap_or(false)
            && let Ok(info) = s.api_raw(|_| d.info())
        {
            alloc.cpu += u64::from(info.nr_virt_cpu);
            alloc.memory_mib += info.memory / 1024;
        }
        let paths = xml_of(s, d, &name, sys::VIR_DOMAIN_XML_INACTIVE)
            .map(|x| {
                domxml::disks(&x)
                    .into_iter()
                    .filter_map(|k| k.source)
                    .collect()
            })
            .unwrap_or_default();
        disks.push((name.clone(), paths));
        host.vms.push(name);
    }
    host.allocated = alloc;
    let mut inv = Inventory::default();
    let pools = s.api(OP, "storage_pools", |c| {
        c.list_all_storage_pools(sys::VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE)
    })?;
    let configured = s.cfg().storage_pool.clone();
    for p in pools {
        let Ok(name) = p.name() else { continue };
        let info = s.api(OP, &name, |_| p.info())?;
        let mut ds = DatastoreInfo::new(name.clone(), info.available / GIB);
        let vols: Vec<String> = s
            .api(OP, &name, |_| p.list_all_volumes(0))?
            .iter()
            .filter_map(|v| v.path().ok())
            .collect();
        ds.vms = disks
            .iter()
            .filter(|(_, paths)| paths.iter().any(|path| vols.contains(path)))
            .map(|(vm, _)| vm.clone())
            .collect();
        host.datastores.push(name);
        inv.datastores.push(ds);
    }
    if let Some(name) = configured.filter(|n| !host.datastores.contains(n)) {
        host.datastores.push(name.clone());
        inv.datastores.push(DatastoreInfo::new(name, 0));
    }
    inv.hosts.push(host);
    Ok(inv)
}
