//! Importing a staged, verified OVA ([`import_ova`]): `OvfManager.CreateImportSpec` (its
//! `error`s are `InvalidSpec`, its `warning`s logged), `ResourcePool.ImportVApp`, the
//! `HttpNfcLease` uploads of every `fileItem` (`nfc.rs`), `HttpNfcLeaseComplete`, then the
//! OVA's size and SHA-256 recorded in the VM's `extraConfig` and `MarkAsTemplate`.
//!
//! Once `ImportVApp` answered, any failure aborts the lease and destroys the VM the lease
//! created: that VM (`info.entity` of this upload's lease, checked to carry the target's
//! name) is the only one ever deleted here.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use virtrigaud_core::{Error, ErrorKind, Result};

use crate::PROVIDER_TYPE;
use crate::client::Client;
use crate::error::{SoapFault, to_core_error};
use crate::image_place::{ImportPlace, SHA256_KEY, SIZE_KEY, destroy};
use crate::nfc::{Lease, Transfer};
use crate::ovf::Index;
use crate::spec::write_element;
use crate::types::MoRef;
use crate::xml::{Element, Xml, esc};

const OP: &str = "image_upload";

/// Deadlines of one import.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadlines {
    /// For the lease to become ready.
    pub(crate) lease_ready: Duration,
    /// For all uploads together.
    pub(crate) upload: Duration,
}

/// What an import needs.
pub(crate) struct Import<'a> {
    pub(crate) client: &'a Arc<Client>,
    pub(crate) name: &'a str,
    pub(crate) place: &'a ImportPlace,
    pub(crate) thin: bool,
    pub(crate) file: &'a Path,
    pub(crate) index: &'a Index,
    pub(crate) descriptor: &'a str,
    pub(crate) deadlines: Deadlines,
}

/// One file to upload (`OvfFileItem`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileItem {
    device_id: String,
    path: String,
    create: bool,
}

fn ctx(e: Error, name: &str) -> Error {
    e.context_for(PROVIDER_TYPE, OP, Some(name))
}

/// Imports the OVA and returns the template.
pub(crate) async fn import_ova(i: &Import<'_>) -> Result<MoRef> {
    let (spec, items) = create_import_spec(i).await?;
    let lease = import_vapp(i, &spec).await?;
    let lease = Lease::new(i.client, lease, i.name);
    let mut made: Option<MoRef> = None;
    let res = fill(i, &lease, &items, &mut made).await;
    match res {
        Ok(vm) => Ok(vm),
        Err(e) => Err(roll_back(i, &lease, made.as_ref(), e).await),
    }
}

/// `CreateImportSpec`: the import spec element and the files to upload.
async fn create_import_spec(i: &Import<'_>) -> Result<(Element, Vec<FileItem>)> {
    let om = i.client.sc.ovf_manager.clone().ok_or_else(|| {
        ctx(
            Error::new(ErrorKind::Unsupported, "the server has no OvfManager"),
            i.name,
        )
    })?;
    let body = import_spec_body(
        i.descriptor,
        &i.place.pool,
        &i.place.datastore,
        i.name,
        i.thin,
    );
    let resp = i
        .client
        .call("CreateImportSpec", &om, &body)
        .await
        .map_err(|e| to_core_error(e, OP, Some(i.name)))?;
    let rv = resp
        .child("returnval")
        .ok_or_else(|| ctx(Error::internal("CreateImportSpec returned nothing"), i.name))?;
    for w in rv.children_named("warning") {
        tracing::warn!(image = i.name, warning = %SoapFault::from_localized(w), "CreateImportSpec warning");
    }
    let errors: Vec<String> = rv
        .children_named("error")
        .map(|e| SoapFault::from_localized(e).to_string())
        .collect();
    if !errors.is_empty() {
        return Err(ctx(
            Error::invalid_spec(format!(
                "the OVF descriptor (ovfDescriptor) cannot be imported: {}",
                errors.join("; ")
            ))
            .permanent(),
            i.name,
        ));
    }
    let spec = rv.child("importSpec").cloned().ok_or_else(|| {
        ctx(
            Error::invalid_spec(
                "CreateImportSpec gave no importSpec for the OVF descriptor (ovfDescriptor)",
            ),
            i.name,
        )
    })?;
    let items = rv
        .children_named("fileItem")
        .map(|f| FileItem {
            device_id: f.text_at("deviceId").unwrap_or_default().to_owned(),
            path: f.text_at("path").unwrap_or_default().to_owned(),
            create: f.text_at("create") == Some("true"),
        })
        .collect();
    Ok((spec, items))
}

/// The body of `CreateImportSpec`, in XSD order: the descriptor, pool, datastore and the
/// `OvfCreateImportSpecParams` (`locale` and `deploymentOption`, required and empty for the
/// defaults, `entityName`, then `diskProvisioning`).
fn import_spec_body(
    descriptor: &str,
    pool: &MoRef,
    datastore: &MoRef,
    name: &str,
    thin: bool,
) -> String {
    let mut b = Xml::new();
    b.el("ovfDescriptor", descriptor)
        .moref("resourcePool", &pool.ty, &pool.value)
        .moref("datastore", &datastore.ty, &datastore.value)
        .open("cisp")
        .el("locale", "")
        .el("deploymentOption", "")
        .el("entityName", name);
    if thin {
        b.el("diskProvisioning", "thin");
    }
    b.close("cisp");
    b.finish()
}

/// `ImportVApp`: the lease.
async fn import_vapp(i: &Import<'_>, spec: &Element) -> Result<MoRef> {
    let mut body = String::new();
    write_element(&mut body, spec, "spec");
    let mut b = Xml::new();
    b.raw(&body).moref(
        "folder",
        &i.place.place.folder.ty,
        &i.place.place.folder.value,
    );
    let resp = i
        .client
        .call("ImportVApp", &i.place.pool, &b.finish())
        .await
        .map_err(|e| to_core_error(e, OP, Some(i.name)))?;
    resp.child("returnval")
        .and_then(MoRef::from_el)
        .ok_or_else(|| ctx(Error::internal("ImportVApp returned no lease"), i.name))
}

/// Waits for the lease, uploads every file, completes the lease and makes the VM a
/// template. `made` is set as soon as the lease names the VM.
async fn fill(
    i: &Import<'_>,
    lease: &Lease,
    items: &[FileItem],
    made: &mut Option<MoRef>,
) -> Result<MoRef> {
    let info = lease.wait_ready(i.deadlines.lease_ready).await?;
    let vm = info
        .entity
        .clone()
        .ok_or_else(|| ctx(Error::internal("the NFC lease names no VM"), i.name))?;
    *made = Some(vm.clone());
    let mut plan = Vec::new();
    for item in items {
        let entry = i.index.find(&item.path).ok_or_else(|| {
            ctx(
                Error::invalid_spec(format!(
                    "the OVF descriptor (ovfDescriptor) names {} but the OVA has no such file",
                    item.path
                )),
                i.name,
            )
        })?;
        let url = info
            .urls
            .iter()
            .find(|u| u.import_key == item.device_id)
            .ok_or_else(|| {
                ctx(
                    Error::internal(format!(
                        "the NFC lease has no device URL for {} ({})",
                        item.path, item.device_id
                    )),
                    i.name,
                )
            })?;
        plan.push((entry, &url.url, item.create));
    }
    let total: u64 = plan.iter().map(|(e, _, _)| e.size).sum();
    let sent = Arc::new(AtomicU64::new(0));
    let started = tokio::time::Instant::now();
    for (entry, url, create) in plan {
        let left = i.deadlines.upload.saturating_sub(started.elapsed());
        let t = Transfer {
            file: i.file,
            offset: entry.offset,
            size: entry.size,
            url,
            create,
        };
        lease.upload(&t, &sent, total, left).await?;
        let done = sent.load(std::sync::atomic::Ordering::Relaxed);
        lease
            .progress(done.saturating_mul(100) / total.max(1))
            .await;
    }
    lease.complete().await?;
    mark_template(i, &vm).await?;
    Ok(vm)
}

/// Records the OVA's size and digest in `extraConfig`, then `MarkAsTemplate`.
async fn mark_template(i: &Import<'_>, vm: &MoRef) -> Result<()> {
    let mut b = Xml::new();
    b.open("spec");
    for (k, v) in [
        (SIZE_KEY, i.index.size.to_string()),
        (SHA256_KEY, i.index.sha256.clone()),
    ] {
        b.open_typed("extraConfig", "OptionValue")
            .el("key", k)
            .raw(&format!(
                "<value xsi:type=\"xsd:string\">{}</value>",
                esc(&v)
            ))
            .close("extraConfig");
    }
    b.close("spec");
    let c = i.client;
    c.run_task("ReconfigVM_Task", vm, &b.finish())
        .await
        .map_err(|e| to_core_error(e, OP, Some(i.name)))?;
    c.call("MarkAsTemplate", vm, "")
        .await
        .map_err(|e| to_core_error(e, OP, Some(i.name)))?;
    Ok(())
}

/// Aborts the lease and destroys the VM it made (only when it carries the target's name);
/// the error says what was cleaned up.
async fn roll_back(i: &Import<'_>, lease: &Lease, made: Option<&MoRef>, e: Error) -> Error {
    let mut notes = Vec::new();
    if let Err(ae) = lease.abort().await {
        // A completed or failed lease cannot be aborted; that is expected here.
        tracing::debug!(error = %ae, "HttpNfcLeaseAbort after a failed import");
    }
    // A lease that failed before naming its VM leaves nothing vSphere does not clean up.
    if let Some(vm) = made {
        let name = i
            .client
            .retrieve(vm, &["name"])
            .await
            .ok()
            .and_then(|p| p.str("name").map(str::to_owned));
        match name.as_deref() {
            Some(n) if n == i.name => match destroy(i.client, vm, OP, i.name).await {
                Ok(()) => notes.push(format!("the half-made VM {} was deleted", vm.value)),
                Err(de) => notes.push(format!(
                    "deleting the half-made VM {} failed: {de}",
                    vm.value
                )),
            },
            Some(other) => notes.push(format!(
                "VM {} is named {other:?}, not {:?}: left alone",
                vm.value, i.name
            )),
            None => {}
        }
    }
    tracing::warn!(image = i.name, error = %e, "OVA import failed; {}", notes.join("; "));
    if notes.is_empty() {
        return e;
    }
    Error::new(e.kind(), format!("{} ({})", e.message(), notes.join("; ")))
        .with_source(e)
        .context_for(PROVIDER_TYPE, OP, Some(i.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn import_spec_params_are_in_xsd_order_and_escaped() {
        let pool = MoRef::new("ResourcePool", "resgroup-9");
        let ds = MoRef::new("Datastore", "datastore-1");
        let body = import_spec_body("<Envelope a=\"&\"/>", &pool, &ds, "img <1>", true);
        assert_eq!(
            body,
            concat!(
                "<ovfDescriptor>&lt;Envelope a=&quot;&amp;&quot;/&gt;</ovfDescriptor>",
                "<resourcePool type=\"ResourcePool\">resgroup-9</resourcePool>",
                "<datastore type=\"Datastore\">datastore-1</datastore>",
                "<cisp><locale></locale><deploymentOption></deploymentOption>",
                "<entityName>img &lt;1&gt;</entityName><diskProvisioning>thin</diskProvisioning></cisp>"
            )
        );
        let thick = import_spec_body("x", &pool, &ds, "n", false);
        assert!(!thick.contains("diskProvisioning"), "{thick}");
    }
}
