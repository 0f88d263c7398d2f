//! Prepared images handed to vSphere: [`VsphereImageSink`] implements the core's
//! [`ImageSink`], so `virtrigaud_core::orchestration::image::ImagePreparer` can download,
//! verify and then import an OVA as a VM template.
//!
//! Bytes are staged in a local directory while they stream in (through a [`FileSink`], so a
//! resumed download can be re-hashed and nothing unverified reaches vSphere). On commit the
//! staged OVA is read (`ovf.rs`: the tar entries, the `.ovf` descriptor first, its checks),
//! imported (`import.rs`: `CreateImportSpec`, `ImportVApp`, the `HttpNfcLease` uploads in
//! `nfc.rs`), its size and SHA-256 recorded in the VM's `extraConfig`
//! (`virtrigaud.image.size`, `virtrigaud.image.sha256`) and the VM marked a template; the
//! staged copy is then removed. A failed import aborts the lease and destroys the VM that
//! import's lease created, and nothing else.
//!
//! An image is the template of the target's name directly in the image folder (see
//! `image_place.rs` for how the folder, datastore and resource pool are chosen).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use virtrigaud_core::orchestration::image::{
    FileSink, ImageRef, ImageSink, ImageTarget, ImageUpload, Publish, StagedUpload,
};
use virtrigaud_core::{Error, ErrorKind, Result};

use crate::PROVIDER_TYPE;
use crate::client::Client;
use crate::config::CreateDefaults;
use crate::image_place::{self, ImportPlace, Overrides};
use crate::import::{Deadlines, Import, import_ova};
use crate::ovf;
use crate::provider::VsphereProvider;

const OP_LOOKUP: &str = "image_lookup";
const OP_BEGIN: &str = "image_begin";
const OP_UPLOAD: &str = "image_upload";
const OP_REMOVE: &str = "image_remove";
/// Longest VM name vSphere accepts.
const MAX_NAME: usize = 80;

/// Imports prepared OVAs into vSphere as VM templates.
///
/// ```no_run
/// # fn demo(p: &virtrigaud_vsphere::VsphereProvider) {
/// use virtrigaud_vsphere::VsphereImageSink;
/// let sink = VsphereImageSink::new(p, "/var/tmp/virtrigaud-images")
///     .with_datastore("LocalDS_0")
///     .with_folder("DC0/vm");
/// # let _ = sink; }
/// ```
#[derive(Debug, Clone)]
pub struct VsphereImageSink {
    client: Arc<Client>,
    defaults: Arc<CreateDefaults>,
    overrides: Overrides,
    thin: bool,
    staging: FileSink,
    deadlines: Deadlines,
}

impl VsphereImageSink {
    /// A sink importing through `provider`'s session, staging downloads in `staging_dir`
    /// (created if missing). Disks are thin-provisioned; the lease may take 10 minutes to
    /// become ready and the uploads 2 hours.
    pub fn new(provider: &VsphereProvider, staging_dir: impl Into<PathBuf>) -> Self {
        let dir = staging_dir.into();
        if let Err(e) = std::fs::create_dir_all(&dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot create the image staging directory");
        }
        VsphereImageSink {
            client: Arc::clone(provider.client()),
            defaults: Arc::clone(provider.defaults()),
            overrides: Overrides::default(),
            thin: true,
            staging: FileSink::new(dir),
            deadlines: Deadlines {
                lease_ready: Duration::from_secs(600),
                upload: Duration::from_secs(7200),
            },
        }
    }

    /// Imports onto this datastore (by name), whatever the target's storage says.
    pub fn with_datastore(mut self, name: impl Into<String>) -> Self {
        self.overrides.datastore = Some(name.into());
        self
    }

    /// Keeps templates in this VM folder (inventory path, `DC0/vm/templates`), whatever the
    /// target's storage says.
    pub fn with_folder(mut self, path: impl Into<String>) -> Self {
        self.overrides.folder = Some(path.into());
        self
    }

    /// Imports through this resource pool (inventory path, `DC0/host/DC0_C0/Resources`).
    pub fn with_resource_pool(mut self, path: impl Into<String>) -> Self {
        self.overrides.resource_pool = Some(path.into());
        self
    }

    /// Thin (`true`, the default) or the server's default disk provisioning, for targets
    /// that do not say ([`ImageTarget::thin_provisioned`], which a `VMImage`'s
    /// `prepare.storage.vsphere.thinProvisioned` sets, wins).
    pub fn with_thin_provisioned(mut self, thin: bool) -> Self {
        self.thin = thin;
        self
    }

    /// How long the NFC lease may take to become ready, and all uploads of one import.
    pub fn with_timeouts(mut self, lease_ready: Duration, upload: Duration) -> Self {
        self.deadlines = Deadlines {
            lease_ready,
            upload,
        };
        self
    }

    async fn place(&self, target: &ImageTarget, op: &'static str) -> Result<image_place::Place> {
        check_name(&target.name, op)?;
        image_place::resolve_folder(
            &self.client,
            &self.defaults,
            &self.overrides,
            target.storage.as_deref(),
            op,
            &target.name,
        )
        .await
    }
}

/// A VM name: 1-80 characters, no `/`, `\`, `%` or control characters. `InvalidSpec` naming
/// the `name` field otherwise.
fn check_name(name: &str, op: &'static str) -> Result<()> {
    let ok = !name.trim().is_empty()
        && name.chars().count() <= MAX_NAME
        && !name
            .chars()
            .any(|c| c.is_control() || matches!(c, '/' | '\\' | '%'));
    if ok {
        return Ok(());
    }
    Err(Error::invalid_spec(format!(
        "image name {name:?} (field `name`): a vSphere VM name is 1-{MAX_NAME} characters without '/', '\\\\', '%' or control characters"
    ))
    .context_for(PROVIDER_TYPE, op, Some(name)))
}

fn taken(name: &str, folder: &str, op: &'static str) -> Error {
    Error::new(
        ErrorKind::AlreadyExists,
        format!(
            "a VM named {name} already exists in folder {folder} (not an image template made here)"
        ),
    )
    .permanent()
    .context_for(PROVIDER_TYPE, op, Some(name))
}

#[async_trait]
impl ImageSink for VsphereImageSink {
    fn provider_type(&self) -> &'static str {
        PROVIDER_TYPE
    }

    /// The template of the target's name in the image folder, with the OVA size recorded
    /// at import (0 for a template imported by something else). A VM that is not a template
    /// is not an image.
    async fn lookup(&self, target: &ImageTarget) -> Result<Option<ImageRef>> {
        let place = self.place(target, OP_LOOKUP).await?;
        let found = image_place::find(&self.client, &place.folder, &target.name, OP_LOOKUP).await?;
        let Some(f) = found.filter(|f| f.template) else {
            return Ok(None);
        };
        let size = image_place::recorded_size(&self.client, &f.vm, OP_LOOKUP, &target.name)
            .await?
            .unwrap_or(0);
        Ok(Some(ImageRef::new(f.vm.value, size)))
    }

    /// Resolves where the image goes (a missing datastore, folder or pool is `NotFound`
    /// naming its field) before any byte is downloaded, then stages locally.
    async fn begin(
        &self,
        target: &ImageTarget,
        size_hint: Option<u64>,
    ) -> Result<Box<dyn ImageUpload>> {
        check_name(&target.name, OP_BEGIN)?;
        let place = image_place::resolve_import(
            &self.client,
            &self.defaults,
            &self.overrides,
            target.storage.as_deref(),
            size_hint.unwrap_or(0),
            OP_BEGIN,
            &target.name,
        )
        .await?;
        if image_place::find(&self.client, &place.place.folder, &target.name, OP_BEGIN)
            .await?
            .is_some()
        {
            return Err(taken(&target.name, &place.place.folder_name, OP_BEGIN));
        }
        let staged = self.staging.begin(target, size_hint).await?;
        let job = Job {
            client: Arc::clone(&self.client),
            place,
            name: target.name.clone(),
            thin: target.thin_provisioned.unwrap_or(self.thin),
            deadlines: self.deadlines,
        };
        Ok(Box::new(StagedUpload::new(staged, Box::new(job))))
    }

    /// Destroys the template of `target` (a missing one is not an error; a VM of that name
    /// that is not a template is left alone: `InvalidState`).
    async fn remove(&self, target: &ImageTarget) -> Result<()> {
        let place = self.place(target, OP_REMOVE).await?;
        match image_place::find(&self.client, &place.folder, &target.name, OP_REMOVE).await? {
            None => Ok(()),
            Some(f) if f.template => {
                image_place::destroy(&self.client, &f.vm, OP_REMOVE, &target.name).await
            }
            Some(f) => Err(Error::new(
                ErrorKind::InvalidState,
                format!(
                    "{} ({}) is a VM, not an image template: not removed",
                    target.name, f.vm.value
                ),
            )
            .context_for(PROVIDER_TYPE, OP_REMOVE, Some(&target.name))),
        }
    }
}

/// What the import of one upload needs.
struct Job {
    client: Arc<Client>,
    place: ImportPlace,
    name: String,
    thin: bool,
    deadlines: Deadlines,
}

impl Job {
    async fn import(&self, path: &std::path::Path) -> Result<ImageRef> {
        let p = path.to_owned();
        let (index, descriptor) = tokio::task::spawn_blocking(move || {
            let index = ovf::read_index(&p)?;
            let (_, text) = ovf::read_descriptor(&p, &index)?;
            ovf::check_descriptor(&text, &index)?;
            Ok::<_, Error>((index, text))
        })
        .await
        .map_err(|e| Error::internal(format!("reading the OVA failed: {e}")))?
        .map_err(|e| e.context_for(PROVIDER_TYPE, OP_UPLOAD, Some(&self.name)))?;
        // Another preparer may have finished first.
        if image_place::find(
            &self.client,
            &self.place.place.folder,
            &self.name,
            OP_UPLOAD,
        )
        .await?
        .is_some()
        {
            return Err(taken(&self.name, &self.place.place.folder_name, OP_UPLOAD));
        }
        tracing::debug!(image = %self.name, datastore = %self.place.datastore_name, bytes = index.size, "importing OVA");
        let vm = import_ova(&Import {
            client: &self.client,
            name: &self.name,
            place: &self.place,
            thin: self.thin,
            file: path,
            index: &index,
            descriptor: &descriptor,
            deadlines: self.deadlines,
        })
        .await?;
        Ok(ImageRef::new(vm.value, index.size))
    }
}

#[async_trait]
impl Publish for Job {
    /// Imports the verified OVA. Nothing of this upload is in vSphere before: the preparer
    /// aborts only before commit, and a failed import removes what it made itself.
    async fn publish(self: Box<Self>, path: &Path, _size: u64) -> Result<ImageRef> {
        self.import(path).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_vsphere_rules() {
        for ok in ["ubuntu-22-04", "a", "Debian 12 (x86)"] {
            assert!(check_name(ok, OP_BEGIN).is_ok(), "{ok}");
        }
        for bad in ["", " ", "a/b", "a\\b", "50%", "a\nb", &"x".repeat(81)] {
            let e = check_name(bad, OP_BEGIN).expect_err(bad);
            assert_eq!(e.kind(), ErrorKind::InvalidSpec);
            assert!(e.message().contains("`name`"), "{e}");
        }
    }
}
