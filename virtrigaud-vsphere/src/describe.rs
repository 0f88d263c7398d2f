//! Reading VMs: `describe`, `list_vms` (filtered by labels client-side: vim25 has no
//! server-side filter) and `vm_capabilities` (hot-add flags, VMware Tools state).

use virtrigaud_core::{
    DiskInfo, ListOptions, OffReason, PowerState, Result, VmCapabilities, VmDescription, VmId,
};

use crate::client::Client;
use crate::error::to_core_error;
use crate::labels::{has_labels, labels_from_props};
use crate::power::power_state_of;
use crate::types::Props;
use crate::vm_api;
use crate::xml::Element;

/// KiB per GiB.
pub(crate) const GIB_KIB: u64 = 1024 * 1024;

/// What `describe` reads.
const DESCRIBE_PATHS: [&str; 8] = [
    "name",
    "runtime.powerState",
    "guest.guestState",
    "config.hardware.numCPU",
    "config.hardware.memoryMB",
    "config.hardware.device",
    "config.extraConfig",
    "runtime.host",
];

/// What `list_vms` reads (the devices are left out: disks are not listed).
const LIST_PATHS: [&str; 7] = [
    "name",
    "runtime.powerState",
    "guest.guestState",
    "config.hardware.numCPU",
    "config.hardware.memoryMB",
    "config.extraConfig",
    "runtime.host",
];

/// One VM: name, power state, CPU, memory, disks, host and labels.
pub(crate) async fn describe(c: &Client, vm: &VmId) -> Result<VmDescription> {
    let p = vm_api::props(c, vm, &DESCRIBE_PATHS, "describe").await?;
    Ok(describe_from(vm.clone(), &p))
}

/// Every VM carrying the labels of `opts`.
pub(crate) async fn list_vms(c: &Client, opts: &ListOptions) -> Result<Vec<VmDescription>> {
    let all = c
        .list_by_type("VirtualMachine", &LIST_PATHS)
        .await
        .map_err(|e| to_core_error(e, "list_vms", None))?;
    Ok(all
        .into_iter()
        .map(|(m, p)| describe_from(VmId::new(m.value), &p))
        .filter(|d| has_labels(&d.labels, &opts.labels))
        .collect())
}

fn describe_from(id: VmId, p: &Props) -> VmDescription {
    let state = power_state_of(p).unwrap_or(PowerState::Off(OffReason::Unknown));
    let mut d = VmDescription::new(id, p.str("name").unwrap_or_default(), state);
    d.cpu = p.u64("config.hardware.numCPU").unwrap_or(0) as u32;
    d.memory_mib = p.u64("config.hardware.memoryMB").unwrap_or(0);
    d.disks = disks_of(p.get("config.hardware.device"))
        .into_iter()
        .map(|(l, kib, _)| DiskInfo::new(l, kib.div_ceil(GIB_KIB)))
        .collect();
    d.host = p.str("runtime.host").map(str::to_owned);
    d.labels = labels_from_props(p);
    d
}

/// Disks from `config.hardware.device`: `(label, capacity KiB, device element)`.
pub(crate) fn disks_of(devices: Option<&Element>) -> Vec<(String, u64, Element)> {
    let Some(devs) = devices else {
        return Vec::new();
    };
    devs.children
        .iter()
        .filter(|d| d.xsi_type.as_deref() == Some("VirtualDisk"))
        .map(|d| {
            let label = d.text_at("deviceInfo/label").unwrap_or("disk").to_owned();
            let kib = d
                .text_at("capacityInBytes")
                .and_then(|b| b.parse::<u64>().ok())
                .map(|b| b / 1024)
                .or_else(|| d.text_at("capacityInKB").and_then(|k| k.parse().ok()))
                .unwrap_or(0);
            (label, kib, d.clone())
        })
        .collect()
}

/// Per-VM capabilities: hot-add from `config.*HotAddEnabled` (without it the live limit is
/// the current size), VMware Tools from `guest.tools*`.
pub(crate) async fn vm_capabilities(c: &Client, vm: &VmId) -> Result<VmCapabilities> {
    let paths = [
        "runtime.powerState",
        "guest.toolsRunningStatus",
        "guest.toolsVersionStatus2",
        "config.cpuHotAddEnabled",
        "config.memoryHotAddEnabled",
        "config.hardware.numCPU",
        "config.hardware.memoryMB",
    ];
    let p = vm_api::props(c, vm, &paths, "vm_capabilities").await?;
    let tools_running = p.str("guest.toolsRunningStatus") == Some("guestToolsRunning");
    let running = p.str("runtime.powerState") == Some("poweredOn");
    let mut caps = VmCapabilities::default();
    caps.agent_configured = p
        .str("guest.toolsVersionStatus2")
        .is_some_and(|s| s != "guestToolsNotInstalled");
    caps.agent_connected = Some(tools_running);
    caps.cpu_hot_add = p.bool("config.cpuHotAddEnabled").unwrap_or(false);
    caps.memory_hot_add = p.bool("config.memoryHotAddEnabled").unwrap_or(false);
    caps.max_live_vcpus = if caps.cpu_hot_add {
        0
    } else {
        p.u64("config.hardware.numCPU").unwrap_or(0) as u32
    };
    caps.max_live_memory_mib = if caps.memory_hot_add {
        0
    } else {
        p.u64("config.hardware.memoryMB").unwrap_or(0)
    };
    caps.disk_grow_online = true;
    caps.snapshot_memory = running;
    caps.snapshot_quiesce = running && tools_running;
    caps.linked_clone_source = true;
    Ok(caps)
}
