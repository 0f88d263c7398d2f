//! Clones: `CloneVM_Task` into the source's folder and pool, full or linked, with a Linux
//! customization and cloud-init user data when asked; a clone that fails after it was
//! registered is deleted again.
//!
//! A linked clone shares a snapshot's disks: the named one, else the source's current one,
//! else [`LINKED_CLONE_BASE`]. That snapshot is made by the first linked clone of a source
//! without snapshots and, being current from then on, is reused by every later one, so linked clones do not pile snapshots up
//! on their source. It stays while linked clones may depend on it (vSphere cannot remove a
//! snapshot whose disks a clone still reads); a clone that fails removes it again when that
//! clone made it.

use std::sync::Arc;

use virtrigaud_core::{
    CloneOptions, CloneResult, DeleteSnapshotOptions, Error, Result, ResultExt, SnapshotOptions,
    VmId,
};

use crate::PROVIDER_TYPE;
use crate::client::Client;
use crate::snapshot::{create_snapshot, delete_snapshot, resolve_snapshot};
use crate::types::MoRef;
use crate::{create, inventory, spec, vm_api};

const OP: &str = "clone";

/// The name of the snapshot a linked clone of a source without snapshots shares disks with
/// (one per source, reused by later linked clones).
pub const LINKED_CLONE_BASE: &str = "virtrigaud-linked-clone-base";

/// Clones `source` as `opts.target_name`.
pub(crate) async fn clone_vm(
    c: &Arc<Client>,
    source: &VmId,
    opts: &CloneOptions,
) -> Result<CloneResult> {
    if opts.target_name.is_empty() {
        return Err(
            Error::invalid_spec("clone target name is empty").context_for(PROVIDER_TYPE, OP, None),
        );
    }
    let paths = ["parent", "resourcePool", "snapshot.currentSnapshot"];
    let p = vm_api::props(c, source, &paths, OP).await?;
    let folder = p.get("parent").and_then(MoRef::from_el).ok_or_else(|| {
        Error::invalid_state("source VM has no parent folder (is it a template?)").context_for(
            PROVIDER_TYPE,
            OP,
            Some(source.as_str()),
        )
    })?;
    let pool = p.get("resourcePool").and_then(MoRef::from_el);
    let current = p.get("snapshot.currentSnapshot").and_then(MoRef::from_el);
    let (snapshot, made_base) = if let Some(s) = &opts.snapshot {
        (Some(resolve_snapshot(c, source, s).await?), false)
    } else if opts.linked {
        let (base, made) = linked_base(c, source, current).await?;
        (Some(base), made)
    } else {
        (None, false)
    };
    let result = run_clone(c, source, opts, &folder, pool.as_ref(), snapshot.as_ref()).await;
    if result.is_err()
        && made_base
        && let Some(base) = &snapshot
    {
        // Best effort: the clone's error is what the caller needs to see.
        let _ = delete_snapshot(c, source, &base.value, &DeleteSnapshotOptions::default()).await;
    }
    result
}

/// The snapshot a linked clone of `source` shares disks with when none is named: the current
/// one, else a new [`LINKED_CLONE_BASE`] (`true`: made by this call), which is current from
/// then on, so later linked clones share it.
async fn linked_base(
    c: &Arc<Client>,
    source: &VmId,
    current: Option<MoRef>,
) -> Result<(MoRef, bool)> {
    if let Some(s) = current {
        return Ok((s, false));
    }
    let base = SnapshotOptions::new(LINKED_CLONE_BASE)
        .with_description("shared by virtrigaud's linked clones of this VM");
    let info = create_snapshot(c, source, &base).await?;
    Ok((MoRef::new("VirtualMachineSnapshot", &info.id), true))
}

/// Runs `CloneVM_Task`; a clone that vCenter registered before its task failed is deleted.
async fn run_clone(
    c: &Arc<Client>,
    source: &VmId,
    opts: &CloneOptions,
    folder: &MoRef,
    pool: Option<&MoRef>,
    snapshot: Option<&MoRef>,
) -> Result<CloneResult> {
    let customization = opts.customization.as_ref().filter(|c| !c.is_empty());
    let body = spec::clone_spec(
        folder,
        &opts.target_name,
        pool,
        opts.linked,
        snapshot,
        customization,
        opts.power_on,
    )
    .ctx(PROVIDER_TYPE, OP, source.as_str())?;
    // A clone whose task fails after vCenter registered it (a disk copy running out of room)
    // is removed again, unless a VM of that name was there before.
    let existed = inventory::find_vm_by_name(c, &opts.target_name)
        .await
        .is_ok();
    let result = match vm_api::task(c, source, "CloneVM_Task", &body, OP).await {
        Ok(r) => r,
        Err(e) if existed => return Err(e),
        Err(e) => match inventory::find_vm_by_name(c, &opts.target_name).await {
            Ok(half_made) => return Err(create::roll_back(c, &half_made, e).await),
            Err(_) => return Err(e),
        },
    };
    let vm = result
        .as_ref()
        .and_then(MoRef::from_result)
        .ok_or_else(|| {
            Error::internal("CloneVM_Task returned no VM").context_for(PROVIDER_TYPE, OP, None)
        })?;
    Ok(CloneResult::new(
        VmId::new(vm.value),
        opts.linked,
        customization.is_some(),
    ))
}
