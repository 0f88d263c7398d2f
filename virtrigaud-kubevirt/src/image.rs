//! [`DataVolumeImageSink`]: images imported into KubeVirt storage by CDI, the
//! Containerized Data Importer: a `cdi.kubevirt.io/v1beta1` `DataVolume` with an HTTP
//! source, fetched by CDI's importer in the cluster (never streamed through this process).
//! Thin trait impls here; the DataVolume operations are in `datavolume.rs`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use virtrigaud_core::model::ChecksumAlgorithm;
use virtrigaud_core::orchestration::image::{
    ImageRef, ImageSink, ImageTarget, ImageUpload, RemoteFetch, RemoteSource, RemoteTransfer,
    TransferState,
};
use virtrigaud_core::{Error, ErrorKind, Result};

use crate::PROVIDER_TYPE;
use crate::client::Connection;
use crate::datavolume;
use crate::provider::KubeVirtProvider;

/// The PVC size requested when neither [`DataVolumeImageSink::with_size`] nor the image's
/// size is known: 10 GiB.
pub const DEFAULT_IMAGE_PVC_SIZE: u64 = 10 << 30;

/// Annotation the sink writes on the DataVolumes it creates: the image's size in bytes as
/// the source told it (`Content-Length`), which lookup reports (CDI itself reports only
/// the PVC's size).
pub const IMAGE_SIZE_ANNOTATION: &str = "virtrigaud.io/image-size";

/// The prefix of an image reference naming a PVC (`pvc:namespace/name`); any other image
/// is a container disk.
pub const PVC_IMAGE_PREFIX: &str = "pvc:";

/// Takes images into KubeVirt storage through CDI `DataVolume`s: the server-side fetch of
/// [`RemoteFetch`], which [`virtrigaud_core::orchestration::image::ImagePreparer`] uses for
/// URL sources.
///
/// - The DataVolume is named after the image ([`ImageTarget::name`], which must be a valid
///   Kubernetes name) in the provider's namespace; the stored image's reference is
///   `pvc:namespace/name` (the PVC CDI fills, named as the DataVolume), which a create
///   spec's `image` takes to clone its root disk from.
/// - `spec.source.http.url` is the image URL (a URL with credentials is refused: they would
///   be stored in the object), `spec.source.http.checksum` the verified digest (CDI ≥ 1.62;
///   an older CDI prunes the field, which the sink detects from the created object and then
///   refuses, naming `validateChecksum`), `spec.storage.resources.requests.storage` the PVC
///   size (see [`DataVolumeImageSink::with_size`]) and `spec.storage.storageClassName` the
///   target's storage, else [`DataVolumeImageSink::with_storage_class`], else the cluster's
///   default. The DataVolume asks for immediate binding
///   (`cdi.kubevirt.io/storage.bind.immediate.requested`), so a `WaitForFirstConsumer`
///   storage class does not hold the import until a VM uses it.
/// - CDI's `status.progress` is the progress, `status.restartCount + 1` the attempt count the
///   preparer holds against its retries, `Succeeded` the end, `Failed` a failure (with the
///   condition's message); every failure deletes the DataVolume this sink created (by UID).
/// - Only a `Succeeded` DataVolume is a present image. Its size is the
///   [`IMAGE_SIZE_ANNOTATION`] when the source's size was known, else the PVC's requested
///   size.
/// - Streaming ([`ImageSink::begin`]) is not offered: CDI's upload proxy (`virtctl
///   image-upload`) is not used.
#[derive(Clone)]
pub struct DataVolumeImageSink {
    pub(crate) conn: Arc<Connection>,
    pub(crate) storage_class: Option<String>,
    pub(crate) size: Option<u64>,
}

impl fmt::Debug for DataVolumeImageSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataVolumeImageSink")
            .field("namespace", &self.conn.namespace)
            .field("storage_class", &self.storage_class)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl DataVolumeImageSink {
    /// A sink creating DataVolumes in `provider`'s namespace, with its client.
    pub fn new(provider: &KubeVirtProvider) -> Self {
        DataVolumeImageSink {
            conn: Arc::clone(provider.conn()),
            storage_class: None,
            size: None,
        }
    }

    /// The storage class of the PVCs (when the target names no storage).
    pub fn with_storage_class(mut self, class: impl Into<String>) -> Self {
        self.storage_class = Some(class.into());
        self
    }

    /// The PVC size to request, in bytes (CDI adds its file-system overhead). Without it the
    /// sink requests, for a `raw` image of known size, that size rounded up to whole GiB;
    /// for other formats (a qcow2's virtual size is not its file size) the larger of that and
    /// [`DEFAULT_IMAGE_PVC_SIZE`]; and [`DEFAULT_IMAGE_PVC_SIZE`] when the size is unknown.
    pub fn with_size(mut self, bytes: u64) -> Self {
        self.size = Some(bytes);
        self
    }

    /// The namespace the DataVolumes are made in.
    pub fn namespace(&self) -> &str {
        &self.conn.namespace
    }
}

#[async_trait]
impl ImageSink for DataVolumeImageSink {
    fn provider_type(&self) -> &'static str {
        PROVIDER_TYPE
    }

    async fn lookup(&self, target: &ImageTarget) -> Result<Option<ImageRef>> {
        datavolume::lookup(self, target).await
    }

    async fn begin(
        &self,
        target: &ImageTarget,
        _size_hint: Option<u64>,
    ) -> Result<Box<dyn ImageUpload>> {
        Err(Error::new(
            ErrorKind::Unsupported,
            format!(
                "KubeVirt images are imported by CDI from a URL (a DataVolume with an HTTP \
                 source); streaming {} through this process (CDI's upload proxy) is not \
                 supported",
                target.name
            ),
        )
        .context_for(PROVIDER_TYPE, "image_begin", Some(&target.name)))
    }

    async fn remove(&self, target: &ImageTarget) -> Result<()> {
        datavolume::remove(self, target).await
    }

    fn remote_fetch(&self) -> Option<&dyn RemoteFetch> {
        Some(self)
    }
}

#[async_trait]
impl RemoteFetch for DataVolumeImageSink {
    /// CDI verifies `md5`, `sha1`, `sha256` and `sha512` (from 1.62 on).
    fn verifies(&self, algorithm: ChecksumAlgorithm) -> bool {
        matches!(
            algorithm,
            ChecksumAlgorithm::Sha256 | ChecksumAlgorithm::Sha512
        )
    }

    async fn start(
        &self,
        target: &ImageTarget,
        source: &RemoteSource,
    ) -> Result<Box<dyn RemoteTransfer>> {
        let t = datavolume::start(self, target, source).await?;
        Ok(Box::new(t))
    }
}

/// One CDI import: the DataVolume this sink created (name and UID).
pub(crate) struct DataVolumeTransfer {
    pub(crate) conn: Arc<Connection>,
    pub(crate) namespace: String,
    pub(crate) name: String,
    pub(crate) uid: Option<String>,
}

#[async_trait]
impl RemoteTransfer for DataVolumeTransfer {
    async fn poll(&mut self) -> Result<TransferState> {
        datavolume::poll(self).await
    }

    fn poll_interval(&self) -> Duration {
        Duration::from_millis(250)
    }

    async fn abort(self: Box<Self>) -> Result<()> {
        datavolume::abort(&self).await
    }
}
