//! Clones (full, or linked from a template), on the source's node or another one.

use virtrigaud_core::{CloneOptions, CloneResult, Error, ErrorKind, Result, StartOptions};

use crate::PROVIDER_TYPE;
use crate::client::PveClient;
use crate::id::VmRef;
use crate::power::{LastActions, start};
use crate::request::api;
use crate::vm_api::{run_task, status, with_free_vmid};

const OP: &str = "clone";

/// Clones `src` on a free VM id (retried when another client took the id first); a failed
/// clone leaves nothing behind. Starts the clone when asked.
pub(crate) async fn clone_vm(
    client: &PveClient,
    last: &LastActions,
    src: &VmRef,
    opts: &CloneOptions,
) -> Result<CloneResult> {
    if opts.customization.as_ref().is_some_and(|c| !c.is_empty()) {
        return Err(Error::unsupported("clone customization").context_for(
            PROVIDER_TYPE,
            OP,
            Some(&src.to_string()),
        ));
    }
    let target = opts.placement.as_deref().filter(|p| *p != src.node);
    let new = with_free_vmid(client, OP, &src.to_string(), move |vmid| async move {
        let req = api::clone(
            &src.node,
            src.vmid,
            vmid,
            &opts.target_name,
            !opts.linked,
            opts.snapshot.as_deref(),
            target,
        );
        let new = VmRef {
            node: target.unwrap_or(&src.node).to_owned(),
            vmid,
        };
        match run_task(client, &req, OP, src).await {
            Ok(_) => Ok(new),
            Err(e) => {
                remove_half_made(client, &new, &e).await;
                Err(e)
            }
        }
    })
    .await?;
    if opts.power_on {
        start(client, last, &new, &StartOptions::default()).await?;
    }
    Ok(CloneResult::new(new.to_vm_id(), opts.linked, false))
}

/// PVE removes a half-made clone itself; make sure nothing is left.
async fn remove_half_made(client: &PveClient, new: &VmRef, e: &Error) {
    if e.kind() != ErrorKind::AlreadyExists && status(client, new, OP).await.is_ok() {
        let _ = run_task(client, &api::destroy(&new.node, new.vmid, true), OP, new).await;
    }
}
