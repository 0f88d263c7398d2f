//! Snapshots: create (with memory while the VM runs), list, roll back, delete.
//!
//! **Quiescing.** PVE has no parameter for it: for a snapshot *without* RAM of a running VM
//! whose config enables the guest agent (and does not turn its `freeze-fs` off), qemu-server
//! freezes the guest's filesystems through the agent around the snapshot, and skips that
//! with a warning in the task log ("QEMU Guest Agent is not running") when the agent does
//! not answer. A snapshot with RAM is never frozen (the saved RAM is consistent by itself).
//! The report's `quiesced` says what happened, read from those conditions and the task's
//! log, whether quiescing was asked for or not (PVE freezes either way).

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
use crate::task::Upid;
use crate::types::{SnapshotEntry, TaskLogLine};
use crate::vm_api::{config, now_secs, run_task, status};

/// What qemu-server logs in a snapshot task when it could not freeze the guest.
const NOT_FROZEN_LOGS: [&str; 2] = [
    "guest agent is not running",
    "guest-fsfreeze-freeze problems",
];

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

/// Takes a snapshot; a memory snapshot of a stopped VM is disk-only. The report is the
/// snapshot as PVE lists it afterwards (its `snaptime`, whether it holds RAM), with whether
/// PVE quiesced the guest (see the module docs).
pub(crate) async fn create_snapshot(
    client: &PveClient,
    r: &VmRef,
    opts: &SnapshotOptions,
) -> Result<SnapshotInfo> {
    validate_snapshot_name(&opts.name)?;
    let running = status(client, r, CREATE).await?.status == "running";
    let vmstate = opts.memory && running;
    if opts.memory && !running {
        tracing::debug!(vm = %r, "memory snapshot of a stopped VM: disk-only");
    }
    let freezes = running && !vmstate && {
        let cfg = config(client, r, CREATE).await?;
        cfg.agent_enabled() && cfg.agent_freeze_fs()
    };
    if opts.quiesce && !freezes {
        tracing::debug!(vm = %r, vmstate, "quiesce asked for, but PVE will not freeze this snapshot");
    }
    let req = api::snapshot(
        &r.node,
        r.vmid,
        &opts.name,
        opts.description.as_deref(),
        vmstate,
    );
    let done = run_task(client, &req, CREATE, r).await?;
    let quiesced = freezes && froze(client, &done.upid).await;
    let listed = list_snapshots(client, r)
        .await?
        .into_iter()
        .find(|s| s.name == opts.name);
    let mut info = listed.unwrap_or_else(|| {
        let mut i = SnapshotInfo::new(opts.name.clone(), opts.name.clone());
        i.description = opts.description.clone();
        i.has_memory = vmstate;
        i.created_at = Some(UNIX_EPOCH + Duration::from_secs(now_secs()));
        i
    });
    info.quiesced = quiesced;
    Ok(info)
}

/// Whether the snapshot task's log shows no failed or skipped freeze (an unreadable log
/// counts as not frozen: nothing is claimed that cannot be seen).
async fn froze(client: &PveClient, upid: &Upid) -> bool {
    let req = api::task_log(upid.node(), upid.as_str(), 0, 500);
    match client.call::<Vec<TaskLogLine>>(&req).await {
        Ok(lines) => !lines.iter().any(|l| {
            let t = l.t.to_ascii_lowercase();
            NOT_FROZEN_LOGS.iter().any(|m| t.contains(m))
        }),
        Err(e) => {
            tracing::debug!(%upid, error = %e, "could not read the snapshot task log");
            false
        }
    }
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
