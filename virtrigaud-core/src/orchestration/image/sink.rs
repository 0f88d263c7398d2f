//! [`ImageSink`]: how a provider takes an image's bytes (a libvirt volume upload, a
//! datastore file, a PVE storage upload), and [`FileSink`], a directory on the local host.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;

use super::remote::RemoteFetch;
use crate::error::{Error, ErrorKind, Result};
use crate::model::VMImage;

/// Which image to store, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ImageTarget {
    /// Image name (the `VMImage` name).
    pub name: String,
    /// Disk format (`qcow2`, `raw`, `ova`), if known.
    pub format: Option<String>,
    /// Provider storage (pool, datastore, storage id), if given.
    pub storage: Option<String>,
    /// Thin-provision the image's disks (`Some(false)`: the storage's default), where the
    /// provider distinguishes (vSphere); `None` leaves it to the sink.
    pub thin_provisioned: Option<bool>,
}

impl ImageTarget {
    /// A target named `name`.
    pub fn new(name: impl Into<String>) -> Self {
        ImageTarget {
            name: name.into(),
            format: None,
            storage: None,
            thin_provisioned: None,
        }
    }

    /// The target a `VMImage` names for a provider of type `provider_type`: the image's
    /// name, the format of that provider's source
    /// ([`crate::model::VMImageSpec::download_for`]), the storage of
    /// `spec.prepare.storage` ([`crate::model::ImagePrepare::storage_for`]) and, for vSphere,
    /// its `thinProvisioned`.
    pub fn for_image(image: &VMImage, provider_type: &str) -> Self {
        ImageTarget {
            name: image.metadata.name.clone(),
            format: image
                .spec
                .download_for(provider_type)
                .and_then(|d| d.format),
            storage: image
                .spec
                .prepare
                .as_ref()
                .and_then(|p| p.storage_for(provider_type)),
            thin_provisioned: (provider_type == "vsphere")
                .then(|| {
                    image
                        .spec
                        .prepare
                        .as_ref()?
                        .storage
                        .as_ref()?
                        .vsphere
                        .as_ref()?
                        .thin_provisioned
                })
                .flatten(),
        }
    }

    /// This target with `format`.
    pub fn with_format(mut self, format: impl Into<String>) -> Self {
        self.format = Some(format.into());
        self
    }

    /// This target in `storage`.
    pub fn with_storage(mut self, storage: impl Into<String>) -> Self {
        self.storage = Some(storage.into());
        self
    }
}

/// A stored image, as the provider names it (a volume path, a template id).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ImageRef {
    /// Provider-specific reference.
    pub reference: String,
    /// Size in bytes.
    pub size_bytes: u64,
}

impl ImageRef {
    /// A reference of `size_bytes`.
    pub fn new(reference: impl Into<String>, size_bytes: u64) -> Self {
        ImageRef {
            reference: reference.into(),
            size_bytes,
        }
    }
}

/// Takes images for one provider. Implement it to import into your storage.
#[async_trait]
pub trait ImageSink: Send + Sync + fmt::Debug {
    /// The provider type, for the metrics label.
    fn provider_type(&self) -> &'static str;
    /// The image, if it is already stored (`onMissing` applies otherwise).
    async fn lookup(&self, target: &ImageTarget) -> Result<Option<ImageRef>>;
    /// Starts (or resumes, when a partial upload of the same target exists and
    /// [`ImageUpload::written`] says so) an upload.
    async fn begin(
        &self,
        target: &ImageTarget,
        size_hint: Option<u64>,
    ) -> Result<Box<dyn ImageUpload>>;
    /// The server-side fetch this sink's storage offers, if any: the preparer then hands it
    /// the source's URL instead of streaming the bytes ([`RemoteFetch`]). Default: none.
    fn remote_fetch(&self) -> Option<&dyn RemoteFetch> {
        None
    }
    /// Deletes the stored image of `target`; a missing image is not an error. The default
    /// answers `Unsupported`.
    async fn remove(&self, target: &ImageTarget) -> Result<()> {
        let _ = target;
        Err(Error::new(
            ErrorKind::Unsupported,
            "this image sink cannot remove images",
        ))
    }
}

/// One upload in progress. Dropping it without [`ImageUpload::commit`] or
/// [`ImageUpload::abort`] leaves its partial data for a later resume.
#[async_trait]
pub trait ImageUpload: Send {
    /// Bytes accepted so far (a resumed upload starts above zero).
    fn written(&self) -> u64;
    /// Reads back the accepted bytes in order (to re-hash a resumed upload), feeding `f`.
    async fn replay(&mut self, f: &mut (dyn for<'b> FnMut(&'b [u8]) + Send)) -> Result<()>;
    /// Appends a chunk.
    async fn write(&mut self, chunk: Bytes) -> Result<()>;
    /// Drops everything written (the source cannot resume).
    async fn restart(&mut self) -> Result<()>;
    /// Makes the complete, verified image available.
    async fn commit(self: Box<Self>) -> Result<ImageRef>;
    /// Removes the partial image.
    async fn abort(self: Box<Self>) -> Result<()>;
}

/// Stores images as files `<dir>/<name>` (written as `<name>.part`, renamed on commit).
/// File I/O runs on tokio's blocking pool; data is streamed, never held in memory.
#[derive(Debug, Clone)]
pub struct FileSink {
    dir: PathBuf,
}

impl FileSink {
    /// A sink writing into `dir` (which must exist).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        FileSink { dir: dir.into() }
    }

    fn path(&self, target: &ImageTarget) -> Result<PathBuf> {
        let n = &target.name;
        if n.is_empty() || n.contains(['/', '\\']) || n == "." || n == ".." {
            return Err(Error::invalid_spec(format!(
                "image name {n:?} is not a valid file name"
            )));
        }
        Ok(self.dir.join(n))
    }
}

fn io_err(op: &'static str, path: &Path, e: std::io::Error) -> Error {
    let kind = match e.kind() {
        std::io::ErrorKind::NotFound => ErrorKind::NotFound,
        std::io::ErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
        _ => ErrorKind::Internal,
    };
    Error::new(kind, format!("{}: {e}", path.display()))
        .with_provider("file")
        .with_operation(op)
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::internal(format!("blocking task failed: {e}")))?
}

#[async_trait]
impl ImageSink for FileSink {
    fn provider_type(&self) -> &'static str {
        "file"
    }

    async fn lookup(&self, target: &ImageTarget) -> Result<Option<ImageRef>> {
        let path = self.path(target)?;
        blocking(move || match std::fs::metadata(&path) {
            Ok(m) => Ok(Some(ImageRef::new(path.display().to_string(), m.len()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("image_lookup", &path, e)),
        })
        .await
    }

    async fn begin(
        &self,
        target: &ImageTarget,
        _size_hint: Option<u64>,
    ) -> Result<Box<dyn ImageUpload>> {
        let path = self.path(target)?;
        let mut part = path.clone().into_os_string();
        part.push(".part");
        let part = PathBuf::from(part);
        let p2 = part.clone();
        let (file, written) = blocking(move || {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&p2)
                .map_err(|e| io_err("image_begin", &p2, e))?;
            let len = f
                .metadata()
                .map_err(|e| io_err("image_begin", &p2, e))?
                .len();
            Ok((f, len))
        })
        .await?;
        Ok(Box::new(FileUpload {
            path,
            part,
            file: Some(file),
            written,
        }))
    }

    async fn remove(&self, target: &ImageTarget) -> Result<()> {
        let path = self.path(target)?;
        blocking(move || match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("image_remove", &path, e)),
        })
        .await
    }
}

struct FileUpload {
    path: PathBuf,
    part: PathBuf,
    file: Option<std::fs::File>,
    written: u64,
}

impl FileUpload {
    async fn with_file<T: Send + 'static>(
        &mut self,
        op: &'static str,
        f: impl FnOnce(&mut std::fs::File) -> std::io::Result<T> + Send + 'static,
    ) -> Result<T> {
        let mut file = self
            .file
            .take()
            .ok_or_else(|| Error::internal("upload already finished"))?;
        let part = self.part.clone();
        let (file, res) = blocking(move || {
            let r = f(&mut file);
            Ok((file, r))
        })
        .await?;
        self.file = Some(file);
        res.map_err(|e| io_err(op, &part, e))
    }
}

#[async_trait]
impl ImageUpload for FileUpload {
    fn written(&self) -> u64 {
        self.written
    }

    async fn replay(&mut self, f: &mut (dyn for<'b> FnMut(&'b [u8]) + Send)) -> Result<()> {
        use std::io::Read;
        let part = self.part.clone();
        let mut file = std::fs::File::open(&part).map_err(|e| io_err("image_replay", &part, e))?;
        let mut buf = vec![0u8; 1 << 20];
        let mut left = self.written;
        while left > 0 {
            let want = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
            let p2 = part.clone();
            let (f2, b2, n) = blocking(move || {
                let n = file
                    .read(&mut buf[..want])
                    .map_err(|e| io_err("image_replay", &p2, e))?;
                Ok((file, buf, n))
            })
            .await?;
            file = f2;
            buf = b2;
            if n == 0 {
                break;
            }
            f(&buf[..n]);
            left -= n as u64;
        }
        Ok(())
    }

    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        let n = chunk.len() as u64;
        self.with_file("image_write", move |f| f.write_all(&chunk))
            .await?;
        self.written += n;
        Ok(())
    }

    async fn restart(&mut self) -> Result<()> {
        self.with_file("image_restart", |f| f.set_len(0)).await?;
        self.written = 0;
        Ok(())
    }

    async fn commit(mut self: Box<Self>) -> Result<ImageRef> {
        let written = self.written;
        self.with_file("image_commit", |f| f.sync_all()).await?;
        self.file = None;
        let (part, path) = (self.part.clone(), self.path.clone());
        blocking(move || {
            std::fs::rename(&part, &path).map_err(|e| io_err("image_commit", &part, e))
        })
        .await?;
        Ok(ImageRef::new(self.path.display().to_string(), written))
    }

    async fn abort(mut self: Box<Self>) -> Result<()> {
        self.file = None;
        let part = self.part.clone();
        blocking(move || match std::fs::remove_file(&part) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("image_abort", &part, e)),
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::from_json_value;

    #[test]
    fn a_vmimage_names_its_vsphere_storage_and_thin_provisioning() {
        let image: VMImage = from_json_value(serde_json::json!({
            "apiVersion": "infra.virtrigaud.io/v1beta1", "kind": "VMImage",
            "metadata": {"name": "ubuntu"},
            "spec": {"vsphere": {"ovaURL": "https://example.com/u.ova"},
                     "libvirt": {"url": "https://example.com/u.img", "format": "qcow2"},
                     "prepare": {"storage": {"vsphere": {"datastore": "ds1", "folder": "/Templates",
                                                         "thinProvisioned": false}}}}
        }))
        .unwrap();
        let v = ImageTarget::for_image(&image, "vsphere");
        assert_eq!(v.storage.as_deref(), Some("ds1/Templates"));
        assert_eq!(v.thin_provisioned, Some(false));
        let l = ImageTarget::for_image(&image, "libvirt");
        assert_eq!(
            (l.format.as_deref(), l.thin_provisioned),
            (Some("qcow2"), None)
        );
    }
}
