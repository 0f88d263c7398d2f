//! Prepared images handed to Proxmox VE: [`PveImageSink`] implements the core's
//! [`ImageSink`], so `virtrigaud_core::orchestration::image::ImagePreparer` can download,
//! verify and then upload an image into a PVE storage.
//!
//! Bytes are staged in a local directory while they stream in (through a [`FileSink`], so a
//! resumed download can be re-hashed and nothing unverified reaches PVE); on commit the
//! verified file is uploaded with `POST /nodes/{node}/storage/{storage}/upload`
//! (`multipart/form-data`, streamed from the staged file with a known length), the `imgcopy`
//! task is awaited through the [`crate::TaskWaiter`], the volume is read back from the
//! storage's content listing (it must be there, with the staged size) and the staged copy is
//! removed. A failed upload or task deletes whatever reached the storage.
//!
//! **Content types.** PVE's upload takes `iso`, `vztmpl` and (PVE 8.2+) `import` (disk
//! images `qcow2`/`raw`/`vmdk` and `ova` appliances, which `qm importdisk` and the
//! `import-from` disk option read); see [`PveContent`]. fakepve's upload accepts only `iso`
//! and `vztmpl`, so the crate's tests import as `iso`; `import` is built and checked against
//! the PVE schema but not exercised against a server.
//!
//! **Names.** The volume of a target named `base.iso` on storage `local` is
//! `local:iso/base.iso` (`local:import/base.qcow2` for `import`). A name without an
//! extension of the content type gets one (from the target's format where the content type
//! allows it, else the type's first), so the `VMImage` `ubuntu-22-04` is
//! `local:iso/ubuntu-22-04.iso`. PVE rewrites every
//! character outside `[A-Za-z0-9_.-]` in an uploaded file name to `_`, so such names are
//! refused (`InvalidSpec` naming `name`) instead of silently stored under another name that a
//! later lookup would miss; the name must also end in an extension the content type allows.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use serde::Deserialize;
use virtrigaud_core::orchestration::image::{
    FileSink, ImageRef, ImageSink, ImageTarget, ImageUpload, Publish, StagedUpload,
};
use virtrigaud_core::{Error, Result};

use crate::PROVIDER_TYPE;
use crate::client::PveClient;
use crate::error::to_core_error;
use crate::provider::ProxmoxProvider;
use crate::request::api;
use crate::task::{TaskWaiter, Upid};
use crate::types::lenient;

const OP_LOOKUP: &str = "image_lookup";
const OP_BEGIN: &str = "image_begin";
const OP_UPLOAD: &str = "image_upload";
const OP_REMOVE: &str = "image_remove";
const OP_VALIDATE: &str = "image_validate";

/// PVE's longest upload file name (the schema's `maxLength` of `filename`).
const MAX_NAME: usize = 255;

/// The PVE content type an image is uploaded as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PveContent {
    /// `iso`: ISO images (`.iso`, `.img`), listed as `<storage>:iso/<name>`.
    Iso,
    /// `vztmpl`: container templates (`.tar.gz`, `.tar.xz`, `.tar.zst`, `.tar.bz2`).
    Vztmpl,
    /// `import` (PVE 8.2+): disk images and appliances (`.qcow2`, `.raw`, `.vmdk`, `.ova`)
    /// for `import-from` and `qm importdisk`. Not accepted by fakepve's upload.
    Import,
}

impl PveContent {
    /// The content type as PVE names it.
    pub fn as_str(self) -> &'static str {
        match self {
            PveContent::Iso => "iso",
            PveContent::Vztmpl => "vztmpl",
            PveContent::Import => "import",
        }
    }

    /// The file name extensions PVE's upload accepts for this content type (lower case).
    pub fn extensions(self) -> &'static [&'static str] {
        match self {
            PveContent::Iso => &[".iso", ".img"],
            PveContent::Vztmpl => &[".tar.gz", ".tar.xz", ".tar.zst", ".tar.bz2"],
            PveContent::Import => &[".qcow2", ".raw", ".vmdk", ".ova"],
        }
    }
}

impl std::fmt::Display for PveContent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Checks `name` as an upload file name for `content`: 1 to 255 characters of
/// `[A-Za-z0-9_.-]` (what PVE keeps unchanged), not starting with `.` or `-`, ending in one of
/// [`PveContent::extensions`]. `InvalidSpec` naming the `name` field otherwise.
pub fn validate_image_name(name: &str, content: PveContent) -> Result<()> {
    check_name(name, content).map_err(|e| e.context_for(PROVIDER_TYPE, OP_VALIDATE, Some(name)))
}

/// [`validate_image_name`] without context (the caller adds its operation).
fn check_name(name: &str, content: PveContent) -> Result<()> {
    let bad = |why: String| {
        Err(Error::invalid_spec(format!(
            "image name {name:?} (field `name`): {why}"
        )))
    };
    if name.is_empty() || name.len() > MAX_NAME {
        return bad(format!("PVE file names are 1-{MAX_NAME} characters"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return bad(format!(
            "{c:?} is not allowed (PVE would store the file under another name; use [A-Za-z0-9_.-])"
        ));
    }
    if name.starts_with(['.', '-']) {
        return bad("must not start with '.' or '-'".into());
    }
    let exts = content.extensions();
    if !exts
        .iter()
        .any(|e| name.len() > e.len() && name.ends_with(e))
    {
        return bad(format!(
            "content type {content} needs a file name ending in one of {}",
            exts.join(", ")
        ));
    }
    Ok(())
}

/// The upload file name of `target`: its name when that already ends in an extension of
/// `content`, else the name with one added, from the target's format where `content` allows
/// it (`qcow2` → `.qcow2`), else `content`'s first (`.iso`), so that a `VMImage` named
/// `ubuntu-22-04` becomes `ubuntu-22-04.iso`.
fn file_name(target: &ImageTarget, content: PveContent) -> String {
    let name = target.name.as_str();
    let exts = content.extensions();
    if exts
        .iter()
        .any(|e| name.len() > e.len() && name.ends_with(e))
    {
        return name.to_owned();
    }
    let from_format = target.format.as_deref().and_then(|f| {
        let want = format!(".{}", f.to_ascii_lowercase());
        exts.iter().find(|e| **e == want)
    });
    format!("{name}{}", from_format.unwrap_or(&exts[0]))
}

/// PVE's storage id rule (`pve-storage-id`).
fn valid_storage_id(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 2
        && b[0].is_ascii_alphabetic()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// PVE's node name rule (`pve-node`).
fn valid_node(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
}

/// One entry of a storage's content listing.
#[derive(Debug, Deserialize)]
struct ContentEntry {
    #[serde(default, deserialize_with = "lenient::string")]
    volid: String,
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    size: Option<u64>,
}

/// Where one target goes: node, storage, file name and volume id.
#[derive(Debug, Clone)]
struct Place {
    node: String,
    storage: String,
    name: String,
    volid: String,
}

/// Uploads prepared images into one PVE storage (of one node), as one content type.
///
/// A target's `storage`, when set, overrides the sink's storage. Images are staged in a
/// local directory first (see the module docs); give every sink its own directory or at
/// least unique image names.
///
/// ```no_run
/// # fn demo(p: &virtrigaud_proxmox::ProxmoxProvider) {
/// use virtrigaud_proxmox::{PveContent, PveImageSink};
/// let sink = PveImageSink::new(p, "pve1", "local", PveContent::Iso, "/var/tmp/virtrigaud-images");
/// # let _ = sink; }
/// ```
#[derive(Debug, Clone)]
pub struct PveImageSink {
    client: PveClient,
    node: String,
    storage: String,
    content: PveContent,
    staging: FileSink,
}

impl PveImageSink {
    /// A sink uploading into `storage` on `node` through `provider`'s client, as `content`,
    /// staging downloads in `staging_dir` (created if missing). Node and storage are checked
    /// on use (`InvalidSpec`).
    pub fn new(
        provider: &ProxmoxProvider,
        node: impl Into<String>,
        storage: impl Into<String>,
        content: PveContent,
        staging_dir: impl Into<PathBuf>,
    ) -> Self {
        Self::with_client(
            provider.client().clone(),
            node,
            storage,
            content,
            staging_dir,
        )
    }

    /// Like [`PveImageSink::new`], from a client.
    pub fn with_client(
        client: PveClient,
        node: impl Into<String>,
        storage: impl Into<String>,
        content: PveContent,
        staging_dir: impl Into<PathBuf>,
    ) -> Self {
        let dir = staging_dir.into();
        if let Err(e) = std::fs::create_dir_all(&dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot create the image staging directory");
        }
        PveImageSink {
            client,
            node: node.into(),
            storage: storage.into(),
            content,
            staging: FileSink::new(dir),
        }
    }

    /// The content type images are uploaded as.
    pub fn content(&self) -> PveContent {
        self.content
    }

    /// The PVE volume id `target` is stored as (`local:iso/base.iso`), once its name, the
    /// node and the storage are valid.
    pub fn volume_id(&self, target: &ImageTarget) -> Result<String> {
        Ok(self.place(target, OP_LOOKUP)?.volid)
    }

    fn place(&self, target: &ImageTarget, op: &'static str) -> Result<Place> {
        let file = file_name(target, self.content);
        check_name(&file, self.content)
            .map_err(|e| e.context_for(PROVIDER_TYPE, op, Some(&target.name)))?;
        let storage = target.storage.as_deref().unwrap_or(&self.storage);
        if !valid_storage_id(storage) {
            return Err(Error::invalid_spec(format!(
                "storage {storage:?} (field `storage`) is not a PVE storage id"
            ))
            .context_for(PROVIDER_TYPE, op, Some(&target.name)));
        }
        if !valid_node(&self.node) {
            return Err(Error::invalid_spec(format!(
                "node {:?} (field `node`) is not a PVE node name",
                self.node
            ))
            .context_for(PROVIDER_TYPE, op, Some(&target.name)));
        }
        Ok(Place {
            node: self.node.clone(),
            storage: storage.to_owned(),
            volid: format!("{storage}:{}/{file}", self.content),
            name: file,
        })
    }
}

/// The volume of `place`, as the storage lists it.
async fn find_volume(
    client: &PveClient,
    place: &Place,
    content: PveContent,
    op: &'static str,
) -> Result<Option<ImageRef>> {
    let entries: Vec<ContentEntry> = client
        .call(&api::storage_content(
            &place.node,
            &place.storage,
            content.as_str(),
        ))
        .await
        .map_err(|e| to_core_error(e, op, Some(&place.volid)))?;
    Ok(entries
        .into_iter()
        .find(|e| e.volid == place.volid)
        .map(|e| ImageRef::new(e.volid, e.size.unwrap_or(0))))
}

/// Deletes the volume of `place` if the storage lists it, and waits for PVE's `imgdel` task.
async fn remove_volume(
    client: &PveClient,
    place: &Place,
    content: PveContent,
    op: &'static str,
) -> Result<()> {
    if find_volume(client, place, content, op).await?.is_none() {
        return Ok(());
    }
    let ctx = |e| to_core_error(e, op, Some(&place.volid));
    let data = client
        .send(&api::delete_volume(
            &place.node,
            &place.storage,
            &place.volid,
        ))
        .await
        .map_err(ctx)?;
    // Without `delay` PVE answers with the task; `null` means it already finished.
    if let Some(upid) = data.as_str().and_then(Upid::parse) {
        TaskWaiter::new(client).wait(&upid).await.map_err(ctx)?;
    }
    Ok(())
}

#[async_trait]
impl ImageSink for PveImageSink {
    fn provider_type(&self) -> &'static str {
        PROVIDER_TYPE
    }

    async fn lookup(&self, target: &ImageTarget) -> Result<Option<ImageRef>> {
        let place = self.place(target, OP_LOOKUP)?;
        find_volume(&self.client, &place, self.content, OP_LOOKUP).await
    }

    /// Deletes the volume of `target` from the storage (a missing volume is not an error).
    async fn remove(&self, target: &ImageTarget) -> Result<()> {
        let place = self.place(target, OP_REMOVE)?;
        remove_volume(&self.client, &place, self.content, OP_REMOVE).await
    }

    async fn begin(
        &self,
        target: &ImageTarget,
        size_hint: Option<u64>,
    ) -> Result<Box<dyn ImageUpload>> {
        // Checked before any byte is downloaded.
        let place = self.place(target, OP_BEGIN)?;
        let staged = self.staging.begin(target, size_hint).await?;
        let publish = PvePublish {
            client: self.client.clone(),
            content: self.content,
            place,
        };
        Ok(Box::new(StagedUpload::new(staged, Box::new(publish))))
    }
}

/// An upload staged in a local file, sent to PVE on commit.
struct PvePublish {
    client: PveClient,
    content: PveContent,
    place: Place,
}

/// What an upload works on once the staged file is complete.
struct Target<'a> {
    client: &'a PveClient,
    place: &'a Place,
    content: PveContent,
}

impl Target<'_> {
    /// Uploads the staged file and checks the result; on failure removes whatever reached
    /// the storage.
    async fn upload(&self, path: &std::path::Path, size: u64) -> Result<ImageRef> {
        let res = self.upload_and_check(path, size).await;
        let Err(err) = res else { return res };
        match remove_volume(self.client, self.place, self.content, OP_UPLOAD).await {
            Ok(()) => Err(err),
            Err(re) => Err(Error::new(
                err.kind(),
                format!(
                    "{}; removing the partial volume {} also failed: {re}",
                    err.message(),
                    self.place.volid
                ),
            )
            .context_for(PROVIDER_TYPE, OP_UPLOAD, Some(&self.place.volid))),
        }
    }

    async fn upload_and_check(&self, path: &std::path::Path, size: u64) -> Result<ImageRef> {
        let p = self.place;
        let ctx = |e| to_core_error(e, OP_UPLOAD, Some(&p.volid));
        let req = api::upload(&p.node, &p.storage, self.content.as_str(), &p.name);
        tracing::debug!(volume = %p.volid, bytes = size, "uploading image to PVE");
        let data = self.client.upload(&req, path, size).await.map_err(ctx)?;
        let upid = data.as_str().and_then(Upid::parse).ok_or_else(|| {
            Error::internal(format!(
                "{} {}: expected a UPID, got {data}",
                req.method, req.template
            ))
            .context_for(PROVIDER_TYPE, OP_UPLOAD, Some(&p.volid))
        })?;
        TaskWaiter::new(self.client)
            .wait(&upid)
            .await
            .map_err(ctx)?;
        match find_volume(self.client, p, self.content, OP_UPLOAD).await? {
            Some(found) if found.size_bytes == size => Ok(found),
            Some(found) => Err(Error::internal(format!(
                "PVE stored {} with {} bytes, {size} were uploaded",
                p.volid, found.size_bytes
            ))
            .context_for(PROVIDER_TYPE, OP_UPLOAD, Some(&p.volid))),
            None => Err(Error::internal(format!(
                "the upload task {upid} ended OK but {} is not in the storage's content",
                p.volid
            ))
            .context_for(PROVIDER_TYPE, OP_UPLOAD, Some(&p.volid))),
        }
    }
}

#[async_trait]
impl Publish for PvePublish {
    /// Sends the verified file to the storage. A volume of this name that turns up while the
    /// download ran was made by someone else (another preparer finishing first), and a failed
    /// upload removes only what reached the storage through it.
    async fn publish(self: Box<Self>, path: &Path, size: u64) -> Result<ImageRef> {
        let target = Target {
            client: &self.client,
            place: &self.place,
            content: self.content,
        };
        target.upload(path, size).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtrigaud_core::ErrorKind;

    #[test]
    fn names_follow_pve_upload_rules() {
        for ok in ["base.iso", "Debian-12_amd64.img", "a.b.iso", "x1.iso"] {
            assert!(validate_image_name(ok, PveContent::Iso).is_ok(), "{ok}");
        }
        assert!(validate_image_name("debian-12-standard.tar.zst", PveContent::Vztmpl).is_ok());
        assert!(validate_image_name("noble.qcow2", PveContent::Import).is_ok());
        assert!(validate_image_name("appliance.ova", PveContent::Import).is_ok());
        let long = format!("{}.iso", "a".repeat(252));
        assert!(validate_image_name(&long, PveContent::Iso).is_err());
        assert!(validate_image_name(&long[1..], PveContent::Iso).is_ok());
        for bad in [
            "",
            ".iso",
            ".hidden.iso",
            "-x.iso",
            "a/b.iso",
            "../x.iso",
            "a b.iso",
            "ü.iso",
            "a\"b.iso",
            "a\r\n.iso",
            "base.qcow2",
            "base",
            "base.ISO",
            "base.iso.part",
        ] {
            let e = validate_image_name(bad, PveContent::Iso)
                .err()
                .unwrap_or_else(|| panic!("{bad:?} accepted"));
            assert_eq!(e.kind(), ErrorKind::InvalidSpec, "{bad:?}");
            assert!(e.message().contains("`name`"), "{bad:?}: {e}");
        }
        assert!(validate_image_name("base.iso", PveContent::Import).is_err());
        assert!(validate_image_name("t.tar", PveContent::Vztmpl).is_err());
    }

    #[test]
    fn a_name_without_an_extension_gets_one() {
        let t = |name: &str, format: Option<&str>| {
            let mut t = ImageTarget::new(name);
            t.format = format.map(str::to_owned);
            t
        };
        assert_eq!(
            file_name(&t("ubuntu-22-04", None), PveContent::Iso),
            "ubuntu-22-04.iso"
        );
        assert_eq!(file_name(&t("base.img", None), PveContent::Iso), "base.img");
        assert_eq!(
            file_name(&t("noble", Some("QCOW2")), PveContent::Import),
            "noble.qcow2"
        );
        assert_eq!(
            file_name(&t("noble", Some("qcow2")), PveContent::Iso),
            "noble.iso"
        );
        assert_eq!(file_name(&t("ct", None), PveContent::Vztmpl), "ct.tar.gz");
        // The result is still checked: a bad character is refused, not rewritten.
        assert!(
            check_name(
                &file_name(&t("a b", None), PveContent::Iso),
                PveContent::Iso
            )
            .is_err()
        );
    }

    #[test]
    fn storage_and_node_ids() {
        assert!(valid_storage_id("local"));
        assert!(valid_storage_id("nfs-iso.1"));
        assert!(!valid_storage_id("1local"));
        assert!(!valid_storage_id("local/x"));
        assert!(!valid_storage_id("l"));
        assert!(valid_node("pve1"));
        assert!(!valid_node("pve1/"));
        assert!(!valid_node(""));
    }
}
