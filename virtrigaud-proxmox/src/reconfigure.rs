//! Reconfigure: CPU and memory through the config (with its digest), disks grown with
//! `resize`; what PVE keeps pending until the next power cycle is reported as such.
//!
//! CPUs are written as PVE hot-plugs them: `vcpus` when the VM's `hotplug` has `cpu` and the
//! count stays within sockets × cores, else a consistent sockets/cores pair
//! ([`crate::hotplug::cpu_changes`]). Disks are found by the create spec's name (the VM's
//! virtrigaud block), their slot or their volume.

use virtrigaud_core::{Error, ReconfigureRequest, ReconfigureResult, Result, ResultExt};

use crate::PROVIDER_TYPE;
use crate::client::PveClient;
use crate::disks::{VmDisk, vm_disks};
use crate::error::to_core_error;
use crate::hotplug::{Hotplug, cpu_changes};
use crate::id::VmRef;
use crate::request::api;
use crate::task::{TaskWaiter, Upid};
use crate::types::{PendingEntry, VmConfig};
use crate::vm_api::{config, pending};

const OP: &str = "reconfigure";

/// Applies `change` to the VM: checked first, then config changes, then disk growth.
pub(crate) async fn reconfigure(
    client: &PveClient,
    r: &VmRef,
    change: &ReconfigureRequest,
) -> Result<ReconfigureResult> {
    let cfg = config(client, r, OP).await?;
    // Disks first (grow only), checked before anything changes.
    let resizes = validate_reconfigure(r, &vm_disks(&cfg), change)?;
    let changes = config_changes(&cfg, change);
    let mut notes = Vec::new();
    let mut digest = cfg.digest.clone();
    if !changes.is_empty() {
        // The digest makes PVE refuse the change if someone else changed the config since
        // we read it ("checksum mismatch" → Conflict).
        let req = api::update_config(&r.node, r.vmid, digest.as_deref(), &changes);
        client
            .send(&req)
            .await
            .map_err(|e| to_core_error(e, OP, Some(&r.to_string())))?;
        digest = None;
        notes.extend(changes.iter().map(|(k, v)| format!("{k}={v}")));
    }
    for (key, gib) in &resizes {
        grow_disk(client, r, key, *gib, digest.as_deref()).await?;
        digest = None;
        notes.push(format!("{key} grown to {gib}G"));
    }
    let touched: Vec<&str> = changes
        .iter()
        .flat_map(|(k, v)| match *k {
            "delete" => v.split(',').collect::<Vec<_>>(),
            key => vec![key],
        })
        .collect();
    let mut result = result_from_pending(client, r, &touched, !resizes.is_empty()).await?;
    result.notes.splice(0..0, notes);
    Ok(result)
}

/// The checks before anything changes: core's shared rules (vCPUs and memory at least 1, disks
/// named once, only grown, and not grown when PVE cannot), after resolving each named disk
/// (by spec name, slot or volume) to the VM's disk, which must exist. Returns the disks to
/// grow (slot, new size in GiB).
fn validate_reconfigure(
    r: &VmRef,
    disks: &[VmDisk],
    change: &ReconfigureRequest,
) -> Result<Vec<(String, u64)>> {
    let resource = r.to_string();
    let mut current = Vec::with_capacity(change.disks.len());
    let mut resizes = Vec::new();
    for d in &change.disks {
        let Some(disk) = disks.iter().find(|disk| disk.is_named(&d.name)) else {
            return Err(
                Error::not_found(format!("VM {} has no disk {:?}", r.vmid, d.name)).context_for(
                    PROVIDER_TYPE,
                    OP,
                    Some(&resource),
                ),
            );
        };
        // Named as the caller named it, so core's grow-only rule compares the right pair.
        let mut info = disk.info();
        info.name = d.name.clone();
        current.push(info);
        if d.size_gib > disk.size_gib {
            resizes.push((disk.key.clone(), d.size_gib));
        }
    }
    change
        .validate_against(&current)
        .ctx(PROVIDER_TYPE, OP, &resource)?;
    Ok(resizes)
}

/// The config writes: the CPU count as PVE takes it ([`cpu_changes`]) and `memory`, where
/// they differ from the config.
fn config_changes(cfg: &VmConfig, change: &ReconfigureRequest) -> Vec<(&'static str, String)> {
    let mut changes = Vec::new();
    if let Some(cpu) = change.cpu {
        changes.extend(cpu_changes(cfg, &Hotplug::of(cfg), u64::from(cpu)));
    }
    if let Some(mem) = change.memory_mib
        && cfg.get_u64("memory") != Some(mem)
    {
        changes.push(("memory", mem.to_string()));
    }
    changes
}

/// `resize` of one disk to `gib`, waiting for the task when PVE answers with one.
async fn grow_disk(
    client: &PveClient,
    r: &VmRef,
    key: &str,
    gib: u64,
    digest: Option<&str>,
) -> Result<()> {
    let req = api::resize(&r.node, r.vmid, key, &format!("{gib}G"), digest);
    let data = client
        .send(&req)
        .await
        .map_err(|e| to_core_error(e, OP, Some(&r.to_string())))?;
    if let Some(upid) = data.as_str().and_then(Upid::parse) {
        TaskWaiter::new(client)
            .wait(&upid)
            .await
            .map_err(|e| to_core_error(e, OP, Some(&r.to_string())))?;
    }
    Ok(())
}

/// What went live and what waits for a power cycle: the `touched` keys PVE keeps pending
/// need one; disk growth (`resized`) is live.
async fn result_from_pending(
    client: &PveClient,
    r: &VmRef,
    touched: &[&str],
    resized: bool,
) -> Result<ReconfigureResult> {
    let pending: Vec<String> = pending(client, r, OP)
        .await?
        .into_iter()
        .filter(PendingEntry::is_pending)
        .map(|p| p.key)
        .collect();
    let pending_touched: Vec<&String> = pending
        .iter()
        .filter(|k| touched.contains(&k.as_str()))
        .collect();
    let mut result = ReconfigureResult::default();
    result.needs_power_cycle = !pending_touched.is_empty();
    result.applied_live = !touched.is_empty() || resized;
    if result.needs_power_cycle {
        result.applied_live = pending_touched.len() < touched.len() || resized;
        result.notes.push(format!(
            "pending until the next power cycle: {}",
            pending_touched
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use virtrigaud_core::{DiskResize, ErrorKind};

    use super::*;

    fn cfg() -> VmConfig {
        serde_json::from_value(serde_json::json!({
            "cores": 2,
            "memory": "2048",
            "scsi0": "local-lvm:vm-101-disk-0,size=8G",
            "scsi1": "local-lvm:vm-101-disk-1,size=20G",
            "ide2": "local:iso/x.iso,media=cdrom",
            "description": "<!-- virtrigaud\ndisk.scsi1: data\n-->",
            "digest": "abc",
        }))
        .unwrap()
    }

    fn change(
        cpu: Option<u32>,
        memory_mib: Option<u64>,
        disks: Vec<DiskResize>,
    ) -> ReconfigureRequest {
        let mut r = ReconfigureRequest::default();
        r.cpu = cpu;
        r.memory_mib = memory_mib;
        r.disks = disks;
        r
    }

    #[test]
    fn disks_only_grow_and_must_exist() {
        let r = VmRef {
            node: "pve1".into(),
            vmid: 101,
        };
        let grow = change(None, None, vec![DiskResize::new("scsi0", 16)]);
        assert_eq!(
            validate_reconfigure(&r, &vm_disks(&cfg()), &grow).unwrap(),
            vec![("scsi0".to_owned(), 16)]
        );
        // By volume name too; the same size is no change.
        let same = change(
            None,
            None,
            vec![DiskResize::new("local-lvm:vm-101-disk-0", 8)],
        );
        assert!(
            validate_reconfigure(&r, &vm_disks(&cfg()), &same)
                .unwrap()
                .is_empty()
        );
        let shrink = change(None, None, vec![DiskResize::new("scsi0", 4)]);
        let e = validate_reconfigure(&r, &vm_disks(&cfg()), &shrink).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidSpec, "{e}");
        assert_eq!(e.operation(), "reconfigure");
        // By the create spec's name.
        let data = change(None, None, vec![DiskResize::new("data", 32)]);
        assert_eq!(
            validate_reconfigure(&r, &vm_disks(&cfg()), &data).unwrap(),
            vec![("scsi1".to_owned(), 32)]
        );
        let missing = change(None, None, vec![DiskResize::new("ide2", 4)]);
        let e = validate_reconfigure(&r, &vm_disks(&cfg()), &missing).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
        assert_eq!(e.resource(), Some("pve1/101"));
    }

    #[test]
    fn only_differing_cpu_and_memory_are_changed() {
        assert!(config_changes(&cfg(), &change(Some(2), Some(2048), vec![])).is_empty());
        assert_eq!(
            config_changes(&cfg(), &change(Some(4), Some(2048), vec![])),
            vec![("cores", "4".to_owned())]
        );
        assert_eq!(
            config_changes(&cfg(), &change(None, Some(4096), vec![])),
            vec![("memory", "4096".to_owned())]
        );
    }
}
