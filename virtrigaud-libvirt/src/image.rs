//! Prepared images handed to libvirt: [`VolumeImageSink`] implements the core's
//! [`ImageSink`], so `virtrigaud_core::orchestration::image::ImagePreparer` can download,
//! verify and then upload an image into a storage pool as a volume.
//!
//! Bytes are staged in a local directory while they stream in (so a resumed download can be
//! re-hashed and nothing unverified reaches the pool); on commit the verified file is
//! uploaded through a libvirt stream (which works over remote URIs too) and the staged copy
//! is removed. A failed upload deletes the half-made volume.

use std::io::Read;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use virt::storage_vol::StorageVol;
use virtrigaud_core::orchestration::image::{
    FileSink, ImageRef, ImageSink, ImageTarget, ImageUpload,
};
use virtrigaud_core::{Error, Result};

use crate::PROVIDER;
use crate::provider::{Ctx, Inner, LibvirtProvider, pool_required};
use crate::xml::Element;

/// Chunk size of the volume upload stream.
const CHUNK: usize = 1 << 20;

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
    provider: LibvirtProvider,
    staging: FileSink,
}

impl VolumeImageSink {
    /// A sink uploading into `provider`'s storage pool, staging downloads in `staging_dir`
    /// (created if missing).
    pub fn new(provider: LibvirtProvider, staging_dir: impl Into<PathBuf>) -> Self {
        let dir = staging_dir.into();
        let _ = std::fs::create_dir_all(&dir);
        VolumeImageSink {
            provider,
            staging: FileSink::new(dir),
        }
    }

    /// Deletes the volume of `target` (a missing volume is not an error).
    pub async fn remove(&self, target: &ImageTarget) -> Result<()> {
        let name = target.name.clone();
        self.provider
            .call("image_remove", move |inner| {
                let pool = pool_required(inner, "image_remove")?;
                inner.count();
                match pool.lookup_storage_vol_by_name(&name) {
                    Ok(vol) => {
                        inner.count();
                        vol.delete(0).ctx("image_remove", &name)
                    }
                    Err(e) => match Err::<(), _>(e).ctx("image_remove", &name) {
                        Err(err) if err.is(virtrigaud_core::ErrorKind::NotFound) => Ok(()),
                        other => other,
                    },
                }
            })
            .await
    }
}

#[async_trait]
impl ImageSink for VolumeImageSink {
    fn provider_type(&self) -> &'static str {
        PROVIDER
    }

    async fn lookup(&self, target: &ImageTarget) -> Result<Option<ImageRef>> {
        let name = target.name.clone();
        self.provider
            .call("image_lookup", move |inner| {
                let pool = pool_required(inner, "image_lookup")?;
                inner.count();
                match pool.lookup_storage_vol_by_name(&name) {
                    Ok(vol) => {
                        inner.count();
                        let info = vol.info().ctx("image_lookup", &name)?;
                        let path = vol.path().ctx("image_lookup", &name)?;
                        Ok(Some(ImageRef::new(path, info.capacity)))
                    }
                    Err(e) => match Err::<(), _>(e).ctx("image_lookup", &name) {
                        Err(err) if err.is(virtrigaud_core::ErrorKind::NotFound) => Ok(None),
                        Err(err) => Err(err),
                        Ok(()) => Ok(None),
                    },
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
        Ok(Box::new(VolumeUpload {
            staged,
            provider: self.provider.clone(),
            target: target.clone(),
        }))
    }
}

/// An upload staged in a local file, turned into a volume on commit.
struct VolumeUpload {
    staged: Box<dyn ImageUpload>,
    provider: LibvirtProvider,
    target: ImageTarget,
}

#[async_trait]
impl ImageUpload for VolumeUpload {
    fn written(&self) -> u64 {
        self.staged.written()
    }
    async fn replay(&mut self, f: &mut (dyn for<'b> FnMut(&'b [u8]) + Send)) -> Result<()> {
        self.staged.replay(f).await
    }
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        self.staged.write(chunk).await
    }
    async fn restart(&mut self) -> Result<()> {
        self.staged.restart().await
    }
    async fn commit(self: Box<Self>) -> Result<ImageRef> {
        let file = self.staged.commit().await?;
        let path = PathBuf::from(&file.reference);
        let name = self.target.name.clone();
        let format = self.target.format.clone().unwrap_or_else(|| "raw".into());
        let uploaded = self
            .provider
            .call("image_upload", move |inner| {
                upload_file(inner, &name, &format, &path, file.size_bytes)
            })
            .await;
        let staged_file = file.reference.clone();
        let _ = tokio::task::spawn_blocking(move || std::fs::remove_file(staged_file)).await;
        uploaded
    }
    async fn abort(self: Box<Self>) -> Result<()> {
        self.staged.abort().await
    }
}

fn upload_file(
    inner: &Inner,
    name: &str,
    format: &str,
    path: &Path,
    size: u64,
) -> Result<ImageRef> {
    let pool = pool_required(inner, "image_upload")?;
    let xml = Element::new("volume")
        .child(Element::new("name").text(name))
        .child(
            Element::new("capacity")
                .attr("unit", "bytes")
                .text(size.to_string()),
        )
        .child(Element::new("target").child(Element::new("format").attr("type", format)))
        .to_xml();
    inner.count();
    let vol = StorageVol::create_xml(&pool, &xml, 0).ctx("image_upload", name)?;
    let sent = (|| -> Result<()> {
        let mut file = std::fs::File::open(path).map_err(|e| {
            Error::internal(format!("cannot read staged image {}: {e}", path.display()))
        })?;
        inner.count();
        let stream = virt::stream::Stream::new(inner.conn(), 0).ctx("image_upload", name)?;
        inner.count();
        if let Err(e) = vol.upload(&stream, 0, size, 0).ctx("image_upload", name) {
            let _ = stream.abort();
            return Err(e);
        }
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    let _ = stream.abort();
                    return Err(Error::internal(format!("reading staged image: {e}")));
                }
            };
            let mut off = 0;
            while off < n {
                match stream.send(&buf[off..n]).ctx("image_upload", name) {
                    Ok(k) if k > 0 => off += k.unsigned_abs(),
                    Ok(_) => {
                        let _ = stream.abort();
                        return Err(Error::unavailable("image upload stream stalled"));
                    }
                    Err(e) => {
                        let _ = stream.abort();
                        return Err(e);
                    }
                }
            }
        }
        stream.finish().ctx("image_upload", name)
    })();
    if let Err(e) = sent {
        inner.count();
        let _ = vol.delete(0);
        return Err(e);
    }
    inner.count();
    let vol_path = vol.path().ctx("image_upload", name)?;
    Ok(ImageRef::new(vol_path, size))
}
