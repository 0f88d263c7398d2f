//! Creating a VM from an image: on vSphere an image is a template (as
//! [`crate::VsphereImageSink`] imports them), so a create spec whose `image` names one
//! (by moref, `vm-42`, or by name) becomes a full `CloneVM_Task` of it into the spec's
//! placement (folder, pool, host, datastore resolved as for an empty VM), with the spec's
//! vCPUs, memory, labels and user data (set again with `ReconfigVM_Task` when the server did
//! not apply the clone spec's config, as vcsim does not). The disks and adapters are the template's: a spec
//! that also asks for disks or networks is refused, naming the field. A clone that fails
//! after vCenter registered it is deleted again.

use std::sync::Arc;

use virtrigaud_core::{Error, ErrorKind, Result, VmCreateSpec, VmId};

use crate::PROVIDER_TYPE;
use crate::client::Client;
use crate::config::CreateDefaults;
use crate::create::{AfterCreate, finish, name_taken, roll_back};
use crate::error::to_core_error;
use crate::labels::{extra_config, labels_of};
use crate::placement::resolve_target;
use crate::spec::{TemplateTarget, relocate_to_host, size_and_extra_config, template_clone_body};
use crate::types::MoRef;
use crate::{inventory, vm_api};

const OP: &str = "create";

/// Makes `spec` (whose `image` is `template`) from that template.
pub(crate) async fn create_from_template(
    c: &Arc<Client>,
    defaults: &CreateDefaults,
    spec: &VmCreateSpec,
    template: &str,
    after_create: Option<AfterCreate<'_>>,
) -> Result<VmId> {
    for (field, given) in [
        ("disks", !spec.disks.is_empty()),
        ("networks", !spec.networks.is_empty()),
    ] {
        if given {
            return Err(Error::invalid_spec(format!(
                "{field}: a VM made from a template (image {template}) has the template's {field}"
            ))
            .context_for(PROVIDER_TYPE, OP, Some(&spec.name)));
        }
    }
    let source = find_template(c, template).await?;
    let target = resolve_target(c, defaults, spec).await?;
    if name_taken(c, &target.folder, &spec.name).await? {
        return Err(Error::new(
            ErrorKind::AlreadyExists,
            format!("a VM named {} already exists in that folder", spec.name),
        )
        .permanent());
    }
    let datastore = datastore_ref(c, &target.datastore).await?;
    let to = TemplateTarget {
        folder: &target.folder,
        datastore: &datastore,
        pool: &target.pool,
        host: target.host.as_ref(),
    };
    let body = template_clone_body(
        &spec.name,
        &to,
        spec.cpu,
        spec.memory_mib,
        &extra_config(spec),
    );
    let made = match vm_api::task(c, &source, "CloneVM_Task", &body, OP).await {
        Ok(r) => r,
        Err(e) => match inventory::find_vm_by_name(c, &spec.name).await {
            Ok(half_made) => return Err(roll_back(c, &half_made, e).await),
            Err(_) => return Err(e),
        },
    };
    let vm = made
        .as_ref()
        .and_then(MoRef::from_result)
        .map(|m| VmId::new(m.value))
        .ok_or_else(|| Error::internal("CloneVM_Task returned no VM"))?;
    let mut step = apply_size_and_labels(c, &vm, spec).await;
    if step.is_ok()
        && let Some(host) = &target.host
    {
        step = keep_on_host(c, &vm, host, &target.pool).await;
    }
    match step {
        Ok(()) => finish(c, vm, spec, after_create).await,
        Err(e) => Err(roll_back(c, &vm, e).await),
    }
}

/// The template an image reference names: a VM moref or a unique VM name, which must be a
/// template (`image: … is a VM, not a template` otherwise).
async fn find_template(c: &Arc<Client>, image: &str) -> Result<VmId> {
    let by_moref = VmId::new(image);
    let vm =
        match vm_api::props(c, &by_moref, &["config.template"], OP).await {
            Ok(_) => by_moref,
            Err(e) if e.is(ErrorKind::NotFound) => inventory::find_vm_by_name(c, image)
                .await
                .map_err(|e| match e.kind() {
                    ErrorKind::NotFound => {
                        Error::not_found(format!("image: no template {image:?} (by moref or name)"))
                            .context_for(PROVIDER_TYPE, OP, Some(image))
                    }
                    _ => e,
                })?,
            Err(e) => return Err(e),
        };
    let p = vm_api::props(c, &vm, &["config.template"], OP).await?;
    if p.bool("config.template") != Some(true) {
        return Err(
            Error::invalid_spec(format!("image: {image} is a VM, not a template")).context_for(
                PROVIDER_TYPE,
                OP,
                Some(image),
            ),
        );
    }
    Ok(vm)
}

/// The moref of the datastore named `name`.
async fn datastore_ref(c: &Client, name: &str) -> Result<MoRef> {
    let all = c
        .list_by_type("Datastore", &["name"])
        .await
        .map_err(|e| to_core_error(e, OP, Some(name)))?;
    all.into_iter()
        .find(|(_, p)| p.str("name") == Some(name))
        .map(|(m, _)| m)
        .ok_or_else(|| {
            Error::not_found(format!("datastore: no datastore {name:?}")).context_for(
                PROVIDER_TYPE,
                OP,
                Some(name),
            )
        })
}

/// Gives the clone the spec's vCPUs, memory and labels when the server did not apply the
/// clone spec's config (vcsim does not; vCenter does, and then this is one read).
async fn apply_size_and_labels(c: &Arc<Client>, vm: &VmId, spec: &VmCreateSpec) -> Result<()> {
    let paths = [
        "config.hardware.numCPU",
        "config.hardware.memoryMB",
        "config.extraConfig",
    ];
    let p = vm_api::props(c, vm, &paths, OP).await?;
    let labels = labels_of(p.get("config.extraConfig"));
    let applied = p.u64("config.hardware.numCPU") == Some(u64::from(spec.cpu))
        && p.u64("config.hardware.memoryMB") == Some(spec.memory_mib)
        && spec.labels.iter().all(|(k, v)| labels.get(k) == Some(v));
    if applied {
        return Ok(());
    }
    let body = size_and_extra_config(spec.cpu, spec.memory_mib, &extra_config(spec));
    vm_api::task(c, vm, "ReconfigVM_Task", &body, OP)
        .await
        .map(|_| ())
}

/// Moves the clone to the placement's host when the server put it elsewhere (vcsim ignores
/// the clone spec's host; vCenter honours it, and then this is one read).
async fn keep_on_host(c: &Arc<Client>, vm: &VmId, host: &MoRef, pool: &MoRef) -> Result<()> {
    let p = vm_api::props(c, vm, &["runtime.host"], OP).await?;
    if p.str("runtime.host") == Some(host.value.as_str()) {
        return Ok(());
    }
    let body = relocate_to_host(host, pool);
    vm_api::task(c, vm, "RelocateVM_Task", &body, OP).await?;
    let p = vm_api::props(c, vm, &["runtime.host"], OP).await?;
    if p.str("runtime.host") == Some(host.value.as_str()) {
        Ok(())
    } else {
        Err(Error::invalid_state(format!(
            "placement.host: the server left the new VM on {:?}, not on {}",
            p.str("runtime.host"),
            host.value
        )))
    }
}
