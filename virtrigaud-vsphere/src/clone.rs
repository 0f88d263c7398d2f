//! Clones: `CloneVM_Task` into the source's folder and pool, full or linked (a linked clone
//! needs a snapshot to share disks with: the named one, the current one, or a new
//! `<target>-base`), with a Linux customization when asked.

use std::sync::Arc;

use virtrigaud_core::{CloneOptions, CloneResult, Error, Result, ResultExt, SnapshotOptions, VmId};

use crate::PROVIDER_TYPE;
use crate::client::Client;
use crate::snapshot::{create_snapshot, resolve_snapshot};
use crate::types::MoRef;
use crate::{spec, vm_api};

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
    let result = vm_api::task(c, source, "CloneVM_Task", &body, OP).await?;
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
