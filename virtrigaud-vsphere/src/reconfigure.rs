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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::Element;
    use virtrigaud_core::{DiskResize, ErrorKind};

    fn el(name: &str, text: &str, children: Vec<Element>) -> Element {
        Element {
            name: name.into(),
            text: text.into(),
            children,
            ..Element::default()
        }
    }

    /// A VM with 2 vCPUs, 1024 MiB, hot-add as given and one 10 GiB disk `root`.
    fn vm_props(hot_add: bool) -> Props {
        let mut disk = el(
            "VirtualDevice",
            "",
            vec![
                el("deviceInfo", "", vec![el("label", "root", vec![])]),
                el("capacityInKB", &(10 * GIB_KIB).to_string(), vec![]),
            ],
        );
        disk.xsi_type = Some("VirtualDisk".into());
        let flag = if hot_add { "true" } else { "false" };
        Props(vec![
            ("config.hardware.numCPU".into(), el("val", "2", vec![])),
            ("config.hardware.memoryMB".into(), el("val", "1024", vec![])),
            ("config.cpuHotAddEnabled".into(), el("val", flag, vec![])),
            ("config.memoryHotAddEnabled".into(), el("val", flag, vec![])),
            ("config.hardware.device".into(), el("val", "", vec![disk])),
        ])
    }

    fn resize(name: &str, gib: u64) -> ReconfigureRequest {
        let mut r = ReconfigureRequest::default();
        r.disks.push(DiskResize::new(name, gib));
        r
    }

    #[test]
    fn disks_grow_only_and_must_exist() {
        let vm = VmId::new("vm-1");
        let p = vm_props(false);
        let mut notes = Vec::new();
        let missing = disk_edits(&vm, &p, &resize("data", 20), &mut notes).unwrap_err();
        assert_eq!(missing.kind(), ErrorKind::NotFound, "{missing}");
        assert_eq!(
            (missing.operation(), missing.resource()),
            (OP, Some("vm-1"))
        );
        let shrink = disk_edits(&vm, &p, &resize("root", 5), &mut notes).unwrap_err();
        assert_eq!(shrink.kind(), ErrorKind::InvalidSpec, "{shrink}");
        assert!(shrink.message().contains("disks only grow"), "{shrink}");
        assert_eq!(shrink.provider(), PROVIDER_TYPE);
        assert!(
            disk_edits(&vm, &p, &resize("root", 10), &mut notes)
                .expect("same size")
                .is_empty()
        );
        assert!(notes.is_empty());
        let grow = disk_edits(&vm, &p, &resize("root", 12), &mut notes).expect("grow");
        assert_eq!(grow.len(), 1);
        let kib = (12 * GIB_KIB).to_string();
        assert!(
            grow[0].contains(&format!("<capacityInKB>{kib}</capacityInKB>")),
            "{grow:?}"
        );
        assert!(grow[0].contains("<operation>edit</operation>"), "{grow:?}");
        assert_eq!(notes, ["root grown to 12 GiB"]);
    }

    #[test]
    fn running_vms_change_cpu_and_memory_only_by_hot_add_and_only_up() {
        let without = vm_props(false);
        for (cpu, mem) in [(Some(4), None), (None, Some(2048))] {
            let err = hot_add(&without, cpu, mem).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidState, "{err}");
        }
        let with = vm_props(true);
        assert_eq!(
            hot_add(&with, Some(4), Some(2048)).expect("hot-add"),
            [
                "vCPUs 2 -> 4 hot-added",
                "memory 1024 -> 2048 MiB hot-added"
            ]
        );
        for (cpu, mem) in [(Some(1), None), (None, Some(512))] {
            let err = hot_add(&with, cpu, mem).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidState, "no hot-remove: {err}");
        }
        assert!(hot_add(&with, None, None).expect("nothing").is_empty());
    }
}
