//! Snapshots: `CreateSnapshot_Task`, the VM's snapshot tree, `RevertToSnapshot_Task` (then
//! power-on when asked) and `RemoveSnapshot_Task`. A snapshot is named by its moref
//! (`snapshot-12`) or, failing that, by its name (the newest of that name).

use std::sync::Arc;

use virtrigaud_core::{
    DeleteSnapshotOptions, Error, Result, RevertOptions, SnapshotInfo, SnapshotOptions, VmId,
};

use crate::PROVIDER_TYPE;
use crate::client::Client;
use crate::types::MoRef;
use crate::vm_api::{self, on_vm};
use crate::xml::{Element, Xml};
use crate::{datetime, power};

fn flag(b: bool) -> &'static str {
    if b { "true" } else { "false" }
}

/// Takes a snapshot and returns it as read back from the tree.
pub(crate) async fn create_snapshot(
    c: &Arc<Client>,
    vm: &VmId,
    opts: &SnapshotOptions,
) -> Result<SnapshotInfo> {
    const OP: &str = "snapshot_create";
    let mut b = Xml::new();
    b.el("name", &opts.name)
        .opt("description", opts.description.as_deref())
        .el("memory", flag(opts.memory))
        .el("quiesce", flag(opts.quiesce));
    let result = vm_api::task(c, vm, "CreateSnapshot_Task", &b.finish(), OP).await?;
    let id = result
        .map(|r| r.text().to_owned())
        .filter(|s| !s.is_empty());
    let list = snapshot_tree(c, vm).await?;
    let found = match &id {
        Some(id) => list.into_iter().find(|s| &s.id == id),
        None => list.into_iter().rev().find(|s| s.name == opts.name),
    };
    found.ok_or_else(|| {
        Error::internal("the new snapshot is not in the VM's snapshot tree").context_for(
            PROVIDER_TYPE,
            OP,
            Some(vm.as_str()),
        )
    })
}

/// The VM's snapshots, parents before children.
pub(crate) async fn snapshot_tree(c: &Client, vm: &VmId) -> Result<Vec<SnapshotInfo>> {
    let p = vm_api::props(c, vm, &["snapshot"], "snapshot_list").await?;
    let mut out = Vec::new();
    if let Some(info) = p.get("snapshot") {
        for root in info.children_named("rootSnapshotList") {
            walk_snapshots(root, None, &mut out);
        }
    }
    Ok(out)
}

fn walk_snapshots(tree: &Element, parent: Option<&str>, out: &mut Vec<SnapshotInfo>) {
    let Some(id) = tree.child("snapshot").map(|s| s.text().to_owned()) else {
        return;
    };
    let mut info = SnapshotInfo::new(id.clone(), tree.text_at("name").unwrap_or_default());
    info.description = tree
        .text_at("description")
        .filter(|d| !d.is_empty())
        .map(str::to_owned);
    info.created_at = tree.text_at("createTime").and_then(datetime::parse);
    info.has_memory = tree.text_at("state") == Some("poweredOn");
    info.quiesced = tree.text_at("quiesced") == Some("true");
    info.parent = parent.map(str::to_owned);
    out.push(info);
    for child in tree.children_named("childSnapshotList") {
        walk_snapshots(child, Some(&id), out);
    }
}

/// The moref of a snapshot named by id or name.
pub(crate) async fn resolve_snapshot(c: &Client, vm: &VmId, snapshot: &str) -> Result<MoRef> {
    let list = snapshot_tree(c, vm).await?;
    let by_id = list.iter().find(|s| s.id == snapshot);
    let hit = by_id.or_else(|| list.iter().rev().find(|s| s.name == snapshot));
    hit.map(|s| MoRef::new("VirtualMachineSnapshot", &s.id))
        .ok_or_else(|| {
            Error::not_found(format!("VM {vm} has no snapshot {snapshot}")).context_for(
                PROVIDER_TYPE,
                "snapshot",
                Some(vm.as_str()),
            )
        })
}

/// Reverts to a snapshot; with `opts.start`, powers the VM on if the snapshot left it off.
pub(crate) async fn revert_snapshot(
    c: &Arc<Client>,
    vm: &VmId,
    snapshot: &str,
    opts: &RevertOptions,
) -> Result<()> {
    let snap = resolve_snapshot(c, vm, snapshot).await?;
    let mut b = Xml::new();
    b.el("suppressPowerOn", flag(!opts.start));
    on_vm(
        c.run_task("RevertToSnapshot_Task", &snap, &b.finish())
            .await,
        "snapshot_revert",
        vm,
    )?;
    if opts.start && power::power_state(c, vm).await?.is_off() {
        power::start(c, vm).await?;
    }
    Ok(())
}

/// Removes a snapshot (with its children when asked), consolidating the disks.
pub(crate) async fn delete_snapshot(
    c: &Arc<Client>,
    vm: &VmId,
    snapshot: &str,
    opts: &DeleteSnapshotOptions,
) -> Result<()> {
    let snap = resolve_snapshot(c, vm, snapshot).await?;
    let mut b = Xml::new();
    b.el("removeChildren", flag(opts.children))
        .el("consolidate", "true");
    on_vm(
        c.run_task("RemoveSnapshot_Task", &snap, &b.finish()).await,
        "snapshot_delete",
        vm,
    )
    .map(|_| ())
}
