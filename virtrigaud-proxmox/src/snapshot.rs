//! Snapshots: create (with memory while the VM runs), list, roll back, delete.

use std::time::{Duration, UNIX_EPOCH};

use virtrigaud_core::{
    DeleteSnapshotOptions, Error, Result, RevertOptions, SnapshotInfo, SnapshotOptions,
};

use crate::PROVIDER_TYPE;
use crate::client::PveClient;
use crate::error::to_core_error;
use crate::id::VmRef;
use crate::power::LastActions;
use crate::request::api;
use crate::types::SnapshotEntry;
use crate::vm_api::{now_secs, run_task, status};

const CREATE: &str = "snapshot_create";

/// PVE's rule for snapshot names: 2-40 characters `[A-Za-z0-9_-]` starting with a letter.
fn validate_snapshot_name(name: &str) -> Result<()> {
    let valid = name.len() >= 2
        && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !valid || name.len() > 40 {
        return Err(Error::invalid_spec(format!(
            "PVE snapshot names are 2-40 characters [A-Za-z0-9_-] starting with a letter: {name:?}"
        ))
        .context_for(PROVIDER_TYPE, CREATE, None));
    }
    Ok(())
}

/// Takes a snapshot; a memory snapshot of a stopped VM is disk-only.
pub(crate) async fn create_snapshot(
    client: &PveClient,
    r: &VmRef,
    opts: &SnapshotOptions,
) -> Result<SnapshotInfo> {
    validate_snapshot_name(&opts.name)?;
    let running = if opts.memory {
        status(client, r, CREATE).await?.status == "running"
    } else {
        false
    };
    if opts.memory && !running {
        tracing::debug!(vm = %r, "memory snapshot of a stopped VM: disk-only");
    }
    let req = api::snapshot(
        &r.node,
        r.vmid,
        &opts.name,
        opts.description.as_deref(),
        opts.memory && running,
    );
    run_task(client, &req, CREATE, r).await?;
    let mut info = SnapshotInfo::new(opts.name.clone(), opts.name.clone());
    info.description = opts.description.clone();
    info.has_memory = opts.memory && running;
    info.quiesced = false;
    info.created_at = Some(UNIX_EPOCH + Duration::from_secs(now_secs()));
    Ok(info)
}

/// The VM's snapshots (without PVE's `current` pseudo-entry).
pub(crate) async fn list_snapshots(client: &PveClient, r: &VmRef) -> Result<Vec<SnapshotInfo>> {
    let list: Vec<SnapshotEntry> = client
        .call(&api::snapshots(&r.node, r.vmid))
        .await
        .map_err(|e| to_core_error(e, "snapshot_list", Some(&r.to_string())))?;
    Ok(list
        .into_iter()
        .filter(|s| s.name != "current")
        .map(|s| {
            let mut i = SnapshotInfo::new(s.name.clone(), s.name);
            i.description = s.description.filter(|d| !d.is_empty());
            i.created_at = s
                .snaptime
                .and_then(|t| UNIX_EPOCH.checked_add(Duration::from_secs(t)));
            i.has_memory = s.vmstate;
            i.parent = s.parent;
            i
        })
        .collect())
}

/// Rolls back (and starts the VM when asked); what was done to its power is forgotten.
pub(crate) async fn revert_snapshot(
    client: &PveClient,
    last: &LastActions,
    r: &VmRef,
    snapshot: &str,
    opts: &RevertOptions,
) -> Result<()> {
    let req = api::rollback(&r.node, r.vmid, snapshot, opts.start);
    run_task(client, &req, "snapshot_revert", r).await?;
    last.remember(r, None);
    Ok(())
}

/// Deletes one snapshot (not its children: `Unsupported`).
pub(crate) async fn delete_snapshot(
    client: &PveClient,
    r: &VmRef,
    snapshot: &str,
    opts: &DeleteSnapshotOptions,
) -> Result<()> {
    if opts.children {
        return Err(
            Error::unsupported("delete snapshot with children").context_for(
                PROVIDER_TYPE,
                "snapshot_delete",
                Some(&r.to_string()),
            ),
        );
    }
    let req = api::delete_snapshot(&r.node, r.vmid, snapshot);
    run_task(client, &req, "snapshot_delete", r)
        .await
        .map(|_| ())
}
