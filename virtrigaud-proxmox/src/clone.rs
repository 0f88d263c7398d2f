//! Clones (full, or linked from a template), on the source's node or another one, with
//! customization through PVE's cloud-init options (`customize.rs`). A clone that fails
//! half-way is removed.

use virtrigaud_core::{CloneOptions, CloneResult, Error, ErrorKind, Result, StartOptions};

use crate::PROVIDER_TYPE;
use crate::client::PveClient;
use crate::customize::cloud_init_config;
use crate::error::to_core_error;
use crate::id::VmRef;
use crate::placement;
use crate::power::{LastActions, start};
use crate::request::api;
use crate::types::VmStatus;
use crate::vm_api::{config, run_task, status, with_free_vmid};

const OP: &str = "clone";

/// Clones `src` on a free VM id (retried when another client took the id first), then writes
/// its customization; a clone that fails on the way is removed. Starts the clone when asked.
/// Customization is checked (and user data refused) before anything is made; `storage`
/// holds a cloud-init drive when the source's disks name none.
pub(crate) async fn clone_vm(
    client: &PveClient,
    last: &LastActions,
    src: &VmRef,
    opts: &CloneOptions,
    storage: &str,
) -> Result<CloneResult> {
    let writes = match opts.customization.as_ref().filter(|c| !c.is_empty()) {
        Some(c) => {
            let cfg = config(client, src, OP).await?;
            cloud_init_config(c, &cfg, storage, &src.to_string())?
        }
        None => Vec::new(),
    };
    let (target, target_storage) = clone_target(client, src, opts).await?;
    let (target, target_storage) = (target.as_deref(), target_storage.as_deref());
    let writes = &writes;
    let new = with_free_vmid(client, OP, &src.to_string(), move |vmid| async move {
        let req = api::clone(
            &src.node,
            src.vmid,
            vmid,
            &opts.target_name,
            !opts.linked,
            opts.snapshot.as_deref(),
            api::CloneTo {
                node: target,
                storage: target_storage,
            },
        );
        let new = VmRef {
            node: target.unwrap_or(&src.node).to_owned(),
            vmid,
        };
        let made = run_task(client, &req, OP, src).await;
        let done = match made {
            Ok(_) => customize(client, &new, writes).await,
            Err(e) => Err(e),
        };
        match done {
            Ok(()) => Ok(new),
            Err(e) => Err(remove_half_made(client, &new, &opts.target_name, e).await),
        }
    })
    .await?;
    if opts.power_on {
        start(client, last, &new, &StartOptions::default()).await?;
    }
    Ok(CloneResult::new(
        new.to_vm_id(),
        opts.linked,
        !writes.is_empty(),
    ))
}

/// Writes the customization into the new VM's config (PVE builds the cloud-init seed from
/// it at start).
async fn customize(
    client: &PveClient,
    new: &VmRef,
    writes: &[(&'static str, String)],
) -> Result<()> {
    if writes.is_empty() {
        return Ok(());
    }
    client
        .send(&api::update_config(&new.node, new.vmid, None, writes))
        .await
        .map(|_| ())
        .map_err(|e| to_core_error(e, OP, Some(&new.to_string())))
}

/// Removes a clone that failed half-way and returns `e`, extended when something is left.
///
/// PVE's own cleanup usually removes a failed clone; a worker that fails after writing the
/// target's config, or a customization that PVE refuses, leaves it. Only a VM with the
/// clone's id *and* name is removed (after an `AlreadyExists` the id is someone else's; a VM
/// with another name under that id was made by someone else since). A VM still locked (a
/// clone worker that still runs or died holding the lock) cannot be removed through the API
/// (PVE's `skiplock` is for `root@pam` only): the error says it is left.
async fn remove_half_made(client: &PveClient, new: &VmRef, name: &str, e: Error) -> Error {
    if e.kind() == ErrorKind::AlreadyExists {
        return e;
    }
    let left = match status(client, new, OP).await {
        Err(s) if s.kind() == ErrorKind::NotFound => return e,
        Err(s) => Err(s),
        Ok(st) if st.name.as_deref().is_some_and(|n| n != name) => return e,
        Ok(st) => destroy(client, new, &st).await,
    };
    match left {
        Ok(()) => {
            tracing::info!(vm = %new, "removed the half-made clone");
            e
        }
        Err(why) => {
            tracing::warn!(vm = %new, error = %why, "could not remove the half-made clone");
            Error::new(
                e.kind(),
                format!(
                    "{}; the half-made clone {new} is left behind: {}",
                    e.message(),
                    why.message()
                ),
            )
            .context_for(PROVIDER_TYPE, OP, Some(&new.to_string()))
            .with_source(e)
        }
    }
}

async fn destroy(client: &PveClient, new: &VmRef, st: &VmStatus) -> Result<()> {
    if let Some(lock) = st.lock.as_deref().filter(|l| !l.is_empty()) {
        return Err(Error::invalid_state(format!(
            "it is locked ({lock}); `qm unlock {}` as root, then delete it",
            new.vmid
        )));
    }
    if st.status == "running" {
        run_task(client, &api::stop(&new.node, new.vmid, false), OP, new).await?;
    }
    run_task(client, &api::destroy(&new.node, new.vmid, true), OP, new)
        .await
        .map(|_| ())
}

/// The node (when not the source's) and storage a clone's placement asks for. A linked
/// clone shares its source's disks, so it cannot go to another storage.
async fn clone_target(
    client: &PveClient,
    src: &VmRef,
    opts: &CloneOptions,
) -> Result<(Option<String>, Option<String>)> {
    if opts.placement.is_empty() {
        return Ok((None, None));
    }
    if opts.linked && opts.placement.datastore.is_some() {
        return Err(Error::invalid_spec(
            "placement.datastore: a linked clone stays on its source's storage",
        )
        .context_for(PROVIDER_TYPE, OP, Some(&src.to_string())));
    }
    let r = placement::resolve(
        client,
        &opts.placement,
        Some(&src.node),
        OP,
        &opts.target_name,
    )
    .await?;
    Ok(((r.node != src.node).then_some(r.node), r.storage))
}
