//! Creating a VM from a template: a create spec whose `image` is a PVE template's id
//! (`node/vmid`) becomes a full clone of that template into the spec's placement (node and
//! storage), given the spec's cores, memory and labels, then started when asked. The disks
//! and adapters are the template's: a spec that also asks for disks or networks is refused,
//! naming the field. A clone whose configuration fails is removed again.

use virtrigaud_core::{CloneOptions, Error, Result, StartOptions, VmCreateSpec, VmId};

use crate::PROVIDER_TYPE;
use crate::client::PveClient;
use crate::clone::clone_vm;
use crate::create::delete;
use crate::error::to_core_error;
use crate::id::VmRef;
use crate::labels::labels_to_tags;
use crate::power::{LastActions, start};
use crate::request::api;
use crate::vm_api::status;

const OP: &str = "create";

/// Makes `spec` from the template `template`.
pub(crate) async fn create_from_template(
    client: &PveClient,
    last: &LastActions,
    spec: &VmCreateSpec,
    template: &VmRef,
    storage: &str,
) -> Result<VmId> {
    let ctx = |e: Error| e.context_for(PROVIDER_TYPE, OP, Some(&spec.name));
    for (field, given) in [
        ("disks", !spec.disks.is_empty()),
        ("networks", !spec.networks.is_empty()),
    ] {
        if given {
            return Err(ctx(Error::invalid_spec(format!(
                "{field}: a VM made from a template (image {template}) has the template's {field}"
            ))));
        }
    }
    if !status(client, template, OP).await?.template {
        return Err(ctx(Error::invalid_spec(format!(
            "image: {template} is a VM, not a template"
        ))));
    }
    let opts = CloneOptions::new(spec.name.clone()).with_placement(spec.placement.clone());
    let made = clone_vm(client, last, template, &opts, storage).await?.vm;
    let new = VmRef::parse_for(&made, OP)?;
    let mut changes = vec![
        ("cores", spec.cpu.to_string()),
        ("memory", spec.memory_mib.to_string()),
    ];
    if !spec.labels.is_empty() {
        changes.push(("tags", labels_to_tags(&spec.labels)));
    }
    let sized = client
        .send(&api::update_config(&new.node, new.vmid, None, &changes))
        .await
        .map_err(|e| to_core_error(e, OP, Some(&new.to_string())));
    let started = match sized {
        Ok(_) if spec.power_on => start(client, last, &new, &StartOptions::default()).await,
        Ok(_) => Ok(()),
        Err(e) => Err(e),
    };
    match started {
        Ok(()) => Ok(made),
        Err(e) => {
            let _ = delete(client, last, &new).await;
            Err(e)
        }
    }
}
