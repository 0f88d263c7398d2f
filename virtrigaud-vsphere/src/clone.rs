//! Clones: `CloneVM_Task` into the source's folder and pool, full or linked (a linked clone
//! needs a snapshot to share disks with: the named one, the current one, or a new
//! `<target>-base`), with a Linux customization and cloud-init user data when asked; a clone
//! that fails after it was registered is deleted again.

use std::sync::Arc;

use virtrigaud_core::{CloneOptions, CloneResult, Error, Result, ResultExt, SnapshotOptions, VmId};

use crate::PROVIDER_TYPE;
use crate::client::Client;
use crate::snapshot::{create_snapshot, resolve_snapshot};
use crate::types::MoRef;
use crate::{create, inventory, spec, vm_api};

const OP: &str = "clone";

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
    let snapshot = if let Some(s) = &opts.snapshot {
        Some(resolve_snapshot(c, source, s).await?)
    } else if opts.linked {
        match p.get("snapshot.currentSnapshot").and_then(MoRef::from_el) {
            Some(s) => Some(s),
            None => {
                // A linked clone needs a snapshot to share disks with: take one.
                let base = SnapshotOptions::new(format!("{}-base", opts.target_name));
                let info = create_snapshot(c, source, &base).await?;
                Some(MoRef::new("VirtualMachineSnapshot", &info.id))
            }
        }
    } else {
        None
    };
    let customization = opts.customization.as_ref().filter(|c| !c.is_empty());
    let body = spec::clone_spec(
        &folder,
        &opts.target_name,
        pool.as_ref(),
        opts.linked,
        snapshot.as_ref(),
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
