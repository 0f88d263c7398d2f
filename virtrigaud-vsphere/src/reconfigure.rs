//! Reconfigure: vCPUs and memory (live only with hot-add, and only growing), disks grown
//! online, in one `ReconfigVM_Task`.
//!
//! Core's [`ReconfigureRequest::validate`] / [`ReconfigureRequest::validate_against`] check
//! the request (sizes of at least 1, disks grow only); the rules here are vSphere's: a
//! running VM changes vCPUs or memory only with `cpuHotAddEnabled` / `memoryHotAddEnabled`
//! and never shrinks them, and an unknown disk is `NotFound`.

use std::sync::Arc;

use virtrigaud_core::{
    DiskInfo, Error, ReconfigureRequest, ReconfigureResult, Result, ResultExt, VmId,
};

use crate::PROVIDER_TYPE;
use crate::client::Client;
use crate::describe::{GIB_KIB, disks_of};
use crate::types::Props;
use crate::{spec, vm_api};

const OP: &str = "reconfigure";

const PATHS: [&str; 6] = [
    "runtime.powerState",
    "config.hardware.numCPU",
    "config.hardware.memoryMB",
    "config.cpuHotAddEnabled",
    "config.memoryHotAddEnabled",
    "config.hardware.device",
];

/// Applies `change`: checked first, then one `ReconfigVM_Task` with what differs.
pub(crate) async fn reconfigure(
    c: &Arc<Client>,
    vm: &VmId,
    change: &ReconfigureRequest,
) -> Result<ReconfigureResult> {
    change.validate().ctx(PROVIDER_TYPE, OP, vm.as_str())?;
    let p = vm_api::props(c, vm, &PATHS, OP).await?;
    let running = p.str("runtime.powerState") != Some("poweredOff");
    let cur_cpu = p.u64("config.hardware.numCPU").unwrap_or(0) as u32;
    let cur_mem = p.u64("config.hardware.memoryMB").unwrap_or(0);
    let cpu = change.cpu.filter(|c| *c != cur_cpu);
    let mem = change.memory_mib.filter(|m| *m != cur_mem);
    let mut notes = Vec::new();
    if running {
        notes = hot_add(&p, cpu, mem).ctx(PROVIDER_TYPE, OP, vm.as_str())?;
    }
    let edits = disk_edits(vm, &p, change, &mut notes)?;
    let mut r = ReconfigureResult::default();
    r.applied_live = running;
    if cpu.is_none() && mem.is_none() && edits.is_empty() {
        r.notes.push("nothing to change".into());
        return Ok(r);
    }
    let body = spec::config_spec(cpu, mem, &edits);
    vm_api::task(c, vm, "ReconfigVM_Task", &body, OP).await?;
    r.needs_power_cycle = false;
    if !running {
        notes.push("applied while powered off".into());
    }
    r.notes = notes;
    Ok(r)
}

/// On a running VM: vCPUs and memory only grow, and only with hot-add enabled.
fn hot_add(p: &Props, cpu: Option<u32>, mem: Option<u64>) -> Result<Vec<String>> {
    let cur_cpu = p.u64("config.hardware.numCPU").unwrap_or(0) as u32;
    let cur_mem = p.u64("config.hardware.memoryMB").unwrap_or(0);
    let mut notes = Vec::new();
    if let Some(c) = cpu {
        if c < cur_cpu || !p.bool("config.cpuHotAddEnabled").unwrap_or(false) {
            return Err(Error::invalid_state(format!(
                "changing vCPUs {cur_cpu} -> {c} on a running VM needs CPU hot-add (grow only); power it off first"
            )));
        }
        notes.push(format!("vCPUs {cur_cpu} -> {c} hot-added"));
    }
    if let Some(m) = mem {
        if m < cur_mem || !p.bool("config.memoryHotAddEnabled").unwrap_or(false) {
            return Err(Error::invalid_state(format!(
                "changing memory {cur_mem} -> {m} MiB on a running VM needs memory hot-add (grow only); power it off first"
            )));
        }
        notes.push(format!("memory {cur_mem} -> {m} MiB hot-added"));
    }
    Ok(notes)
}

/// The `deviceChange` edits that grow the requested disks (an unknown disk is `NotFound`,
/// a smaller size `InvalidSpec`).
fn disk_edits(
    vm: &VmId,
    p: &Props,
    change: &ReconfigureRequest,
    notes: &mut Vec<String>,
) -> Result<Vec<String>> {
    let disks = disks_of(p.get("config.hardware.device"));
    if let Some(d) = change
        .disks
        .iter()
        .find(|d| !disks.iter().any(|(l, _, _)| *l == d.name))
    {
        return Err(
            Error::not_found(format!("VM {vm} has no disk {}", d.name)).context_for(
                PROVIDER_TYPE,
                OP,
                Some(vm.as_str()),
            ),
        );
    }
    let current: Vec<DiskInfo> = disks
        .iter()
        .map(|(l, kib, _)| DiskInfo::new(l.clone(), kib.div_ceil(GIB_KIB)))
        .collect();
    change
        .validate_against(&current)
        .ctx(PROVIDER_TYPE, OP, vm.as_str())?;
    let mut edits = Vec::new();
    for d in &change.disks {
        let Some((label, kib, el)) = disks.iter().find(|(l, _, _)| *l == d.name) else {
            continue;
        };
        let want = d.size_gib * GIB_KIB;
        if want > *kib {
            edits.push(spec::grown_disk(el, want));
            notes.push(format!("{label} grown to {} GiB", d.size_gib));
        }
    }
    Ok(edits)
}
