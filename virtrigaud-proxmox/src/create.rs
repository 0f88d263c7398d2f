//! Create and delete VMs.

use std::collections::BTreeSet;

use virtrigaud_core::{Error, Result, ResultExt, VmCreateSpec, VmId};

use crate::PROVIDER_TYPE;
use crate::boot_image::BootImage;
use crate::client::PveClient;
use crate::from_template::create_from_template;
use crate::id::VmRef;
use crate::labels::labels_to_tags;
use crate::meta::{Meta, valid_disk_name};
use crate::placement;
use crate::power::LastActions;
use crate::request::api;
use crate::vm_api::{run_task, with_free_vmid};

const OP: &str = "create";

/// The least memory PVE accepts for a VM (`memory` has `minimum: 16` in its schema).
const MIN_MEMORY_MIB: u64 = 16;

/// Where and on what [`create`] puts a VM whose spec does not say.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CreateDefaults<'a> {
    /// Node when the spec's placement names none (else the first online node).
    pub(crate) node: Option<&'a str>,
    /// Storage for the disks when the placement names no datastore.
    pub(crate) storage: &'a str,
}

/// Creates the VM on a free VM id (retried when another client took the id first).
pub(crate) async fn create(
    client: &PveClient,
    last: &LastActions,
    spec: &VmCreateSpec,
    defaults: CreateDefaults<'_>,
) -> Result<VmId> {
    check_spec(spec)?;
    let boot = spec
        .image
        .as_deref()
        .map(BootImage::parse)
        .transpose()
        .ctx(PROVIDER_TYPE, OP, &spec.name)?;
    if let Some(BootImage::Template(t)) = &boot {
        return create_from_template(client, last, spec, t, defaults.storage).await;
    }
    let place = placement::resolve(client, &spec.placement, defaults.node, OP, &spec.name).await?;
    let node = place.node;
    let config = vm_config(
        spec,
        place.storage.as_deref().unwrap_or(defaults.storage),
        boot.as_ref(),
    );
    let (node, config) = (&node, &config);
    with_free_vmid(client, OP, &spec.name, move |vmid| async move {
        let r = VmRef {
            node: node.clone(),
            vmid,
        };
        let req = api::create(node, vmid, config, spec.power_on);
        run_task(client, &req, OP, &r).await.map(|_| r.to_vm_id())
    })
    .await
}

/// Refuses a spec PVE would refuse or that would lose something, before any call: core's
/// rules, PVE's memory floor, then the disk names. Nothing is clamped: `InvalidSpec` names the
/// field instead.
fn check_spec(spec: &VmCreateSpec) -> Result<()> {
    spec.validate().ctx(PROVIDER_TYPE, OP, &spec.name)?;
    if spec.memory_mib < MIN_MEMORY_MIB {
        return Err(Error::invalid_spec(format!(
            "memoryMiB: Proxmox VE needs at least {MIN_MEMORY_MIB} (got {})",
            spec.memory_mib
        ))
        .context_for(PROVIDER_TYPE, OP, Some(&spec.name)));
    }
    if spec.cloud_init_user_data.is_some() {
        return Err(Error::invalid_spec(
            "cloudInitUserData: this provider does not write user data at create (PVE takes \
             it as a cicustom snippet file); clone a template with a customization instead",
        )
        .context_for(PROVIDER_TYPE, OP, Some(&spec.name)));
    }
    check_disk_names(spec)
}

/// The disk names are kept in the VM's virtrigaud block: unique, 1-63 characters
/// `[A-Za-z0-9_.-]` each (`InvalidSpec` naming the disk otherwise).
fn check_disk_names(spec: &VmCreateSpec) -> Result<()> {
    let mut seen = BTreeSet::new();
    for (i, d) in spec.disks.iter().enumerate() {
        let problem = if !valid_disk_name(&d.name) {
            "must be 1-63 characters [A-Za-z0-9_.-]"
        } else if !seen.insert(d.name.as_str()) {
            "appears twice"
        } else {
            continue;
        };
        return Err(
            Error::invalid_spec(format!("disks[{i}].name: {problem} (got {:?})", d.name))
                .context_for(PROVIDER_TYPE, OP, Some(&spec.name)),
        );
    }
    Ok(())
}

/// The VM's config: name, cores, memory, one `scsiN` per disk, one `netN` per network, tags,
/// and the virtrigaud block in `description` naming each `scsiN` by its spec disk name. An
/// image is the CD-ROM, or the first disk (`scsi0`, imported, in place of the spec's first
/// disk's blank one).
fn vm_config(
    spec: &VmCreateSpec,
    storage: &str,
    boot: Option<&BootImage>,
) -> Vec<(String, String)> {
    let mut config: Vec<(String, String)> = vec![
        ("name".into(), spec.name.clone()),
        ("cores".into(), spec.cpu.to_string()),
        ("memory".into(), spec.memory_mib.to_string()),
    ];
    if let Some(b) = boot {
        config.extend(b.config(storage));
    }
    let imported = matches!(boot, Some(BootImage::Import(_)));
    for (i, d) in spec.disks.iter().enumerate() {
        if i == 0 && imported {
            continue;
        }
        config.push((format!("scsi{i}"), format!("{storage}:{}", d.size_gib)));
    }
    for (i, n) in spec.networks.iter().enumerate() {
        config.push((
            format!("net{i}"),
            format!(
                "{},bridge={}",
                n.model.as_deref().unwrap_or("virtio"),
                n.network
            ),
        ));
    }
    if !spec.labels.is_empty() {
        config.push(("tags".into(), labels_to_tags(&spec.labels)));
    }
    let meta = Meta {
        disks: spec
            .disks
            .iter()
            .enumerate()
            .map(|(i, d)| (format!("scsi{i}"), d.name.clone()))
            .collect(),
    };
    if !meta.is_empty() {
        config.push(("description".into(), meta.into_description(None)));
    }
    config
}

/// Destroys the VM (with `purge`) and forgets what was done to it.
pub(crate) async fn delete(client: &PveClient, last: &LastActions, r: &VmRef) -> Result<()> {
    run_task(client, &api::destroy(&r.node, r.vmid, true), "delete", r).await?;
    last.remember(r, None);
    Ok(())
}

#[cfg(test)]
mod tests {
    use virtrigaud_core::{DiskCreateSpec, NetworkCreateSpec};

    use super::*;

    #[test]
    fn the_config_holds_size_disks_networks_and_tags() {
        let mut spec = VmCreateSpec::new("web-1", 1, 16);
        spec.disks = vec![
            DiskCreateSpec::new("root", 1),
            DiskCreateSpec::new("data", 20),
        ];
        spec.networks = vec![NetworkCreateSpec::new("vmbr0")];
        spec.labels.insert("app".into(), "web".into());
        let cfg = vm_config(&spec, "local-lvm", None);
        let get = |k: &str| {
            cfg.iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("name"), Some("web-1"));
        assert_eq!(get("cores"), Some("1"));
        assert_eq!(get("memory"), Some("16"));
        assert_eq!(get("scsi0"), Some("local-lvm:1"));
        assert_eq!(get("scsi1"), Some("local-lvm:20"));
        assert_eq!(get("net0"), Some("virtio,bridge=vmbr0"));
        assert_eq!(get("tags"), Some("vr+app-web"));
        let names = Meta::parse(get("description"));
        assert_eq!(names.disk_name("scsi0"), "root");
        assert_eq!(names.disk_name("scsi1"), "data");
    }

    #[test]
    fn a_bad_spec_is_refused_naming_the_field_not_clamped() {
        let e = check_spec(&VmCreateSpec::new("web-1", 0, 512)).unwrap_err();
        assert_eq!(e.kind(), virtrigaud_core::ErrorKind::InvalidSpec);
        assert!(e.message().contains("cpu"), "{e}");
        let e = check_spec(&VmCreateSpec::new("web-1", 1, 8)).unwrap_err();
        assert_eq!(e.kind(), virtrigaud_core::ErrorKind::InvalidSpec);
        assert!(e.message().contains("memoryMiB"), "{e}");
        assert!(e.message().contains("16"), "{e}");
        let mut spec = VmCreateSpec::new("web-1", 1, 16);
        spec.disks = vec![DiskCreateSpec::new("root", 0)];
        let e = check_spec(&spec).unwrap_err();
        assert!(e.message().contains("disks.root.sizeGiB"), "{e}");
        spec.disks[0].size_gib = 1;
        assert!(check_spec(&spec).is_ok());
    }

    #[test]
    fn disk_names_must_fit_the_block() {
        let mut spec = VmCreateSpec::new("web-1", 1, 512);
        spec.disks = vec![
            DiskCreateSpec::new("root", 8),
            DiskCreateSpec::new("root", 8),
        ];
        let e = check_disk_names(&spec).unwrap_err();
        assert!(e.message().contains("disks[1].name: appears twice"), "{e}");
        spec.disks[1].name = "my data".into();
        let e = check_disk_names(&spec).unwrap_err();
        assert_eq!(e.kind(), virtrigaud_core::ErrorKind::InvalidSpec);
        assert!(e.message().contains("disks[1].name"), "{e}");
    }
}
