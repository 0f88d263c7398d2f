//! Where an image goes and where it is found: the datacenter, the VM folder, the datastore
//! and the resource pool of an import ([`resolve`]), the image template of a name in a
//! folder ([`find`]), and its removal ([`destroy`]).
//!
//! Each setting comes from the first of: the sink's explicit override
//! (`VsphereImageSink::with_datastore`, `with_folder`, `with_resource_pool`), the target's
//! `storage` (`datastore` or `datastore/folder`, the folder relative to the datacenter's VM
//! folder, as `spec.prepare.storage.vsphere` gives them), the provider's defaults
//! (`VsphereConfig::with_default_datastore`, `…_folder`, `…_resource_pool`,
//! `…_datacenter`), and finally the datacenter's VM folder, the first compute resource
//! reaching the datastore, and its first accessible datastore with room for the image.
//! Something the server does not have is `NotFound` naming the field it came from.

use virtrigaud_core::{Error, ErrorKind, Result};

use crate::PROVIDER_TYPE;
use crate::client::Client;
use crate::config::CreateDefaults;
use crate::error::to_core_error;
use crate::types::{MoRef, Props, refs};

/// extraConfig key of the imported OVA's size in bytes.
pub(crate) const SIZE_KEY: &str = "virtrigaud.image.size";
/// extraConfig key of the imported OVA's SHA-256 (lower-case hex).
pub(crate) const SHA256_KEY: &str = "virtrigaud.image.sha256";

/// The sink's explicit settings (each overrides the target's storage and the defaults).
#[derive(Debug, Clone, Default)]
pub(crate) struct Overrides {
    pub(crate) datastore: Option<String>,
    pub(crate) folder: Option<String>,
    pub(crate) resource_pool: Option<String>,
}

/// A setting and the field it came from (for error messages).
#[derive(Debug, Clone)]
struct Setting {
    value: String,
    field: &'static str,
}

/// Where an image is stored.
#[derive(Debug, Clone)]
pub(crate) struct Place {
    pub(crate) folder: MoRef,
    /// The folder as the user named it (or `<dc>/vm`), for messages.
    pub(crate) folder_name: String,
    /// The datacenter's datastore folder.
    datastore_folder: MoRef,
    host_folder: MoRef,
}

/// Where an import goes: the folder, datastore and pool.
#[derive(Debug, Clone)]
pub(crate) struct ImportPlace {
    pub(crate) place: Place,
    pub(crate) datastore: MoRef,
    pub(crate) datastore_name: String,
    pub(crate) pool: MoRef,
}

fn ctx(e: Error, op: &'static str, name: &str) -> Error {
    e.context_for(PROVIDER_TYPE, op, Some(name))
}

/// Splits a target storage `datastore[/folder]`.
fn split_storage(storage: Option<&str>) -> (Option<&str>, Option<&str>) {
    let Some(s) = storage.map(str::trim).filter(|s| !s.is_empty()) else {
        return (None, None);
    };
    match s.split_once('/') {
        Some((ds, f)) => (
            Some(ds).filter(|d| !d.is_empty()),
            Some(f.trim_matches('/')).filter(|f| !f.is_empty()),
        ),
        None => (Some(s), None),
    }
}

/// The folder of a target: found by inventory path, not created.
pub(crate) async fn resolve_folder(
    c: &Client,
    defaults: &CreateDefaults,
    o: &Overrides,
    storage: Option<&str>,
    op: &'static str,
    name: &str,
) -> Result<Place> {
    let dcs = c
        .list_by_type(
            "Datacenter",
            &["name", "vmFolder", "datastoreFolder", "hostFolder"],
        )
        .await
        .map_err(|e| to_core_error(e, op, Some(name)))?;
    let dc = match &defaults.datacenter {
        Some(n) => dcs.into_iter().find(|(_, p)| p.str("name") == Some(n)),
        None => dcs.into_iter().next(),
    };
    let Some((_, dcp)) = dc else {
        return Err(ctx(
            Error::not_found(format!(
                "datacenter {} (field `default_datacenter`) does not exist",
                defaults.datacenter.as_deref().unwrap_or("(any)")
            )),
            op,
            name,
        ));
    };
    let dc_name = dcp.str("name").unwrap_or_default().to_owned();
    let get = |p: &Props, path: &str| {
        p.get(path).and_then(MoRef::from_el).ok_or_else(|| {
            ctx(
                Error::internal(format!("datacenter {dc_name} has no {path}")),
                op,
                name,
            )
        })
    };
    let (_, target_folder) = split_storage(storage);
    let folder = o
        .folder
        .clone()
        .map(|v| Setting {
            value: v,
            field: "folder",
        })
        .or_else(|| {
            target_folder.map(|f| Setting {
                value: format!("{dc_name}/vm/{f}"),
                field: "storage",
            })
        })
        .or_else(|| {
            defaults.folder.clone().map(|v| Setting {
                value: v,
                field: "default_folder",
            })
        });
    let (folder, folder_name) = match folder {
        None => (get(&dcp, "vmFolder")?, format!("{dc_name}/vm")),
        Some(s) => (by_path(c, &s, "Folder", op, name).await?, s.value),
    };
    Ok(Place {
        folder,
        folder_name,
        datastore_folder: get(&dcp, "datastoreFolder")?,
        host_folder: get(&dcp, "hostFolder")?,
    })
}

/// The folder, datastore and pool of an import of `need` bytes.
pub(crate) async fn resolve_import(
    c: &Client,
    defaults: &CreateDefaults,
    o: &Overrides,
    storage: Option<&str>,
    need: u64,
    op: &'static str,
    name: &str,
) -> Result<ImportPlace> {
    let place = resolve_folder(c, defaults, o, storage, op, name).await?;
    let (target_ds, _) = split_storage(storage);
    let wanted = o
        .datastore
        .clone()
        .map(|v| Setting {
            value: v,
            field: "datastore",
        })
        .or_else(|| {
            target_ds.map(|d| Setting {
                value: d.to_owned(),
                field: "storage",
            })
        })
        .or_else(|| {
            defaults.datastore.clone().map(|v| Setting {
                value: v,
                field: "default_datastore",
            })
        });
    let all = c
        .list_in(
            &place.datastore_folder,
            "Datastore",
            &["name", "summary.accessible", "summary.freeSpace"],
        )
        .await
        .map_err(|e| to_core_error(e, op, Some(name)))?;
    let pool_setting = o
        .resource_pool
        .clone()
        .map(|v| Setting {
            value: v,
            field: "resource_pool",
        })
        .or_else(|| {
            defaults.resource_pool.clone().map(|v| Setting {
                value: v,
                field: "default_resource_pool",
            })
        });
    let crs = c
        .list_in(
            &place.host_folder,
            "ComputeResource",
            &["resourcePool", "datastore"],
        )
        .await
        .map_err(|e| to_core_error(e, op, Some(name)))?;
    let (datastore, datastore_name) = match &wanted {
        Some(s) => {
            let Some((m, _)) = all.iter().find(|(_, p)| p.str("name") == Some(&s.value)) else {
                return Err(ctx(
                    Error::not_found(format!(
                        "datastore {:?} (field `{}`) does not exist in the datacenter",
                        s.value, s.field
                    )),
                    op,
                    name,
                ));
            };
            (m.clone(), s.value.clone())
        }
        None => {
            let reachable: Vec<String> = crs
                .iter()
                .flat_map(|(_, p)| refs(p.get("datastore")))
                .collect();
            all.iter()
                .find(|(m, p)| {
                    reachable.contains(&m.value)
                        && p.bool("summary.accessible") != Some(false)
                        && p.u64("summary.freeSpace").unwrap_or(0) >= need
                })
                .map(|(m, p)| (m.clone(), p.str("name").unwrap_or_default().to_owned()))
                .ok_or_else(|| {
                    ctx(
                        Error::new(
                            ErrorKind::InvalidState,
                            format!("no accessible datastore with {need} bytes free"),
                        ),
                        op,
                        name,
                    )
                })?
        }
    };
    let pool = match pool_setting {
        Some(s) => by_path(c, &s, "ResourcePool", op, name).await?,
        None => crs
            .iter()
            .filter(|(_, p)| refs(p.get("datastore")).contains(&datastore.value))
            .find_map(|(_, p)| p.get("resourcePool").and_then(MoRef::from_el))
            .ok_or_else(|| {
                ctx(
                    Error::not_found(format!(
                        "no host or cluster reaches datastore {datastore_name}"
                    )),
                    op,
                    name,
                )
            })?,
    };
    Ok(ImportPlace {
        place,
        datastore,
        datastore_name,
        pool,
    })
}

/// The object of type `ty` at the inventory path of `s`; `NotFound` naming its field.
async fn by_path(c: &Client, s: &Setting, ty: &str, op: &'static str, name: &str) -> Result<MoRef> {
    let found = c
        .find_by_inventory_path(&s.value)
        .await
        .map_err(|e| to_core_error(e, op, Some(name)))?;
    match found {
        Some(m) if m.ty == ty || (ty == "ResourcePool" && m.ty == "VirtualApp") => Ok(m),
        Some(m) => Err(ctx(
            Error::invalid_spec(format!(
                "{} (field `{}`) is a {}, not a {ty}",
                s.value, s.field, m.ty
            )),
            op,
            name,
        )),
        None => Err(ctx(
            Error::not_found(format!(
                "{ty} {:?} (field `{}`) does not exist",
                s.value, s.field
            )),
            op,
            name,
        )),
    }
}

/// A VM or template of a name directly in a folder.
#[derive(Debug, Clone)]
pub(crate) struct Found {
    pub(crate) vm: MoRef,
    pub(crate) template: bool,
}

/// The VM named `name` directly in `folder` (`Conflict` when there are several).
pub(crate) async fn find(
    c: &Client,
    folder: &MoRef,
    name: &str,
    op: &'static str,
) -> Result<Option<Found>> {
    let vms = c
        .list_in(
            folder,
            "VirtualMachine",
            &["name", "parent", "config.template"],
        )
        .await
        .map_err(|e| to_core_error(e, op, Some(name)))?;
    let mut hits = vms.into_iter().filter(|(_, p)| {
        p.str("name") == Some(name) && p.str("parent") == Some(folder.value.as_str())
    });
    match (hits.next(), hits.next()) {
        (None, _) => Ok(None),
        (Some((vm, p)), None) => Ok(Some(Found {
            vm,
            template: p.bool("config.template") == Some(true),
        })),
        (Some(_), Some(_)) => Err(ctx(
            Error::new(
                ErrorKind::Conflict,
                format!("several VMs are named {name} in that folder"),
            )
            .permanent(),
            op,
            name,
        )),
    }
}

/// The recorded size of an image template (its `virtrigaud.image.size`), if any.
pub(crate) async fn recorded_size(
    c: &Client,
    vm: &MoRef,
    op: &'static str,
    name: &str,
) -> Result<Option<u64>> {
    let p = c
        .retrieve(vm, &["config.extraConfig"])
        .await
        .map_err(|e| to_core_error(e, op, Some(name)))?;
    let extra = p.get("config.extraConfig");
    Ok(extra.and_then(|e| {
        e.children
            .iter()
            .find(|o| o.text_at("key") == Some(SIZE_KEY))
            .and_then(|o| o.text_at("value"))
            .and_then(|v| v.parse().ok())
    }))
}

/// Destroys `vm` (`Destroy_Task`), powering it off first if it runs; a VM already gone is
/// not an error.
pub(crate) async fn destroy(
    c: &std::sync::Arc<Client>,
    vm: &MoRef,
    op: &'static str,
    name: &str,
) -> Result<()> {
    let p = match c.retrieve(vm, &["runtime.powerState"]).await {
        Ok(p) => p,
        Err(e) if e.is_fault("ManagedObjectNotFound") => return Ok(()),
        Err(e) => return Err(to_core_error(e, op, Some(name))),
    };
    if p.str("runtime.powerState") == Some("poweredOn") {
        let _ = c.run_task("PowerOffVM_Task", vm, "").await;
    }
    match c.run_task("Destroy_Task", vm, "").await {
        Ok(_) => Ok(()),
        Err(e) if e.is_fault("ManagedObjectNotFound") => Ok(()),
        Err(e) => Err(to_core_error(e, op, Some(name))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_splits_into_datastore_and_folder() {
        assert_eq!(split_storage(None), (None, None));
        assert_eq!(split_storage(Some(" ")), (None, None));
        assert_eq!(split_storage(Some("ds1")), (Some("ds1"), None));
        assert_eq!(
            split_storage(Some("images-datastore/Templates")),
            (Some("images-datastore"), Some("Templates"))
        );
        assert_eq!(split_storage(Some("ds/a/b/")), (Some("ds"), Some("a/b")));
        assert_eq!(split_storage(Some("ds/")), (Some("ds"), None));
    }
}
