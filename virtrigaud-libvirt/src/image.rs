//! Prepared images handed to libvirt: [`VolumeImageSink`] implements the core's
//! [`ImageSink`], so `virtrigaud_core::orchestration::image::ImagePreparer` can download,
//! verify and then upload an image into a storage pool as a volume.
//!
//! Bytes are staged in a local directory while they stream in (so a resumed download can be
//! re-hashed and nothing unverified reaches the pool); on commit the verified file is
//! uploaded through a libvirt stream (which works over remote URIs too) and the staged copy
//! is removed. A failed upload deletes the half-made volume.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use virt::storage_vol::StorageVol;
use virtrigaud_core::orchestration::image::{
    FileSink, ImageRef, ImageSink, ImageTarget, ImageUpload, Publish, StagedUpload,
};
use virtrigaud_core::{Error, ErrorKind, Result};

use crate::PROVIDER_TYPE;
use crate::connection::{Connection, Session};
use crate::provider::LibvirtProvider;
use crate::volume::{fill, pool_required, volume_xml};

const OP_REMOVE: &str = "image_remove";
const OP_LOOKUP: &str = "image_lookup";
const OP_UPLOAD: &str = "image_upload";

/// Uploads prepared images into the provider's storage pool.
///
/// ```no_run
/// # async fn demo(p: virtrigaud_libvirt::LibvirtProvider) {
/// use virtrigaud_libvirt::VolumeImageSink;
/// let sink = VolumeImageSink::new(p, "/var/tmp/virtrigaud-images");
/// # let _ = sink; }
/// ```
#[derive(Debug, Clone)]
pub struct VolumeImageSink {
    connection: Arc<Connection>,
    staging: FileSink,
}

impl VolumeImageSink {
    /// A sink uploading into `provider`'s storage pool, staging downloads in `staging_dir`
    /// (created if missing).
    pub fn new(provider: LibvirtProvider, staging_dir: impl Into<PathBuf>) -> Self {
        let dir = staging_dir.into();
        let _ = std::fs::create_dir_all(&dir);
        VolumeImageSink {
            connection: provider.connection(),
            staging: FileSink::new(dir),
        }
    }
}

#[async_trait]
impl ImageSink for VolumeImageSink {
    fn provider_type(&self) -> &'static str {
        PROVIDER_TYPE
    }

    async fn lookup(&self, target: &ImageTarget) -> Result<Option<ImageRef>> {
        let name = target.name.clone();
        self.connection
            .call(OP_LOOKUP, move |s| {
                let pool = pool_required(s, OP_LOOKUP)?;
                match s.api(OP_LOOKUP, &name, |_| pool.lookup_storage_vol_by_name(&name)) {
                    Ok(vol) => {
                        let info = s.api(OP_LOOKUP, &name, |_| vol.info())?;
                        let path = s.api(OP_LOOKUP, &name, |_| vol.path())?;
                        Ok(Some(ImageRef::new(path, info.capacity)))
                    }
                    Err(err) if err.is(ErrorKind::NotFound) => Ok(None),
                    Err(err) => Err(err),
                }
            })
            .await
    }

    async fn begin(
        &self,
        target: &ImageTarget,
        size_hint: Option<u64>,
    ) -> Result<Box<dyn ImageUpload>> {
        let staged = self.staging.begin(target, size_hint).await?;
        let publish = VolumePublish {
            connection: Arc::clone(&self.connection),
            target: target.clone(),
        };
        Ok(Box::new(StagedUpload::new(staged, Box::new(publish))))
    }

    /// Deletes the volume of `target` (a missing volume is not an error).
    async fn remove(&self, target: &ImageTarget) -> Result<()> {
        let name = target.name.clone();
        self.connection
            .call(OP_REMOVE, move |s| {
                let pool = pool_required(s, OP_REMOVE)?;
                match s.api(OP_REMOVE, &name, |_| pool.lookup_storage_vol_by_name(&name)) {
                    Ok(vol) => s.api(OP_REMOVE, &name, |_| vol.delete(0)),
                    Err(err) if err.is(ErrorKind::NotFound) => Ok(()),
                    Err(err) => Err(err),
                }
            })
            .await
    }
}

/// Turns a verified staged file into a volume of the pool.
struct VolumePublish {
    connection: Arc<Connection>,
    target: ImageTarget,
}

#[async_trait]
impl Publish for VolumePublish {
    async fn publish(self: Box<Self>, path: &Path, size: u64) -> Result<ImageRef> {
        let path = path.to_path_buf();
        let name = self.target.name.clone();
        let format = self.target.format.clone().unwrap_or_else(|| "raw".into());
        self.connection
            .call(OP_UPLOAD, move |s| {
                upload_file(s, &name, &format, &path, size)
            })
            .await
    }
}

fn upload_file(s: &Session, name: &str, format: &str, path: &Path, size: u64) -> Result<ImageRef> {
    let pool = pool_required(s, OP_UPLOAD)?;
    let file = std::fs::File::open(path).map_err(|e| {
        Error::internal(format!("cannot read staged image {}: {e}", path.display()))
    })?;
    let xml = volume_xml(name, size, format).to_xml();
    let vol = s.api(OP_UPLOAD, name, |_| StorageVol::create_xml(&pool, &xml, 0))?;
    fill(s, OP_UPLOAD, name, &vol, size, file, "staged image")?;
    let vol_path = s.api(OP_UPLOAD, name, |_| vol.path())?;
    Ok(ImageRef::new(vol_path, size))
}
