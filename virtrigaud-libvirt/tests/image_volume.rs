//! Image preparation handed to libvirt: the core `ImagePreparer` streams and verifies an image,
//! then `VolumeImageSink` uploads it into a storage pool (private test-driver instances).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use sha2::{Digest, Sha256};
use virtrigaud_core::model::{Checksum, VMImage, VMImageSpec};
use virtrigaud_core::orchestration::image::{
    ImagePreparer, ImageSink, ImageSource, ImageTarget, PrepareOptions, SourceStream,
};
use virtrigaud_core::{ErrorKind, Result};
use virtrigaud_libvirt::{LibvirtConfig, LibvirtProvider, VolumeImageSink};

mod common;
use common::private;

/// A deterministic image of `len` bytes served in 256 KiB chunks.
#[derive(Debug)]
struct Pattern {
    len: u64,
}

impl Pattern {
    fn bytes(&self) -> Vec<u8> {
        (0..self.len).map(|i| (i % 251) as u8).collect()
    }
}

#[async_trait]
impl ImageSource for Pattern {
    async fn open(&self, offset: u64) -> Result<SourceStream> {
        let data = self.bytes();
        let chunks: Vec<Result<Bytes>> = data[offset as usize..]
            .chunks(256 * 1024)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        Ok(SourceStream::new(
            offset,
            Some(self.len),
            Box::pin(futures::stream::iter(chunks)),
        ))
    }
}

fn checksum(data: &[u8]) -> Checksum {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
        .parse()
        .unwrap()
}

async fn prepare_into(sink: Arc<VolumeImageSink>, staging: &std::path::Path, prefix: &str) {
    let preparer = ImagePreparer::new(Arc::clone(&sink) as Arc<dyn ImageSink>);
    let source = Pattern {
        len: 3 * 1024 * 1024 + 17,
    };

    let mut opts = PrepareOptions::default();
    opts.checksum = Some(checksum(&source.bytes()));
    let mut image = VMImage::new("base-image", VMImageSpec::default());
    let target = ImageTarget::new(format!("{prefix}-base.raw"));
    let report = preparer
        .prepare(&mut image, &target, &source, &opts)
        .await
        .unwrap();
    assert!(report.imported);
    assert_eq!(report.image.size_bytes, source.len);
    let found = sink.lookup(&target).await.unwrap().expect("volume exists");
    assert_eq!(found.size_bytes, source.len);
    assert_eq!(
        std::fs::read_dir(staging).unwrap().count(),
        0,
        "staging is emptied"
    );
    // A second preparation finds it and does not import again.
    let mut again = VMImage::new("base-image", VMImageSpec::default());
    let report = preparer
        .prepare(&mut again, &target, &source, &opts)
        .await
        .unwrap();
    assert!(!report.imported);
    sink.remove(&target).await.unwrap();
    assert!(sink.lookup(&target).await.unwrap().is_none());

    // A checksum mismatch: no volume, no staged file.
    let mut bad = PrepareOptions::default();
    bad.checksum = Some(checksum(b"something else"));
    bad.retries = 0;
    let bad_target = ImageTarget::new(format!("{prefix}-bad.raw"));
    let mut image = VMImage::new("bad-image", VMImageSpec::default());
    let err = preparer
        .prepare(&mut image, &bad_target, &source, &bad)
        .await
        .unwrap_err();
    assert_ne!(err.kind(), ErrorKind::Internal, "{err}");
    assert!(
        sink.lookup(&bad_target).await.unwrap().is_none(),
        "no half-made volume"
    );
    assert_eq!(std::fs::read_dir(staging).unwrap().count(), 0);
}

/// The in-process test driver has no volume upload: the preparation fails with a clear
/// `Unsupported` and leaves neither a volume nor a staged file.
#[tokio::test]
async fn upload_unsupported_by_the_driver_is_clear_and_leaves_nothing() {
    let (p, dir) = private().await;
    let staging = dir.path().join("staging");
    let sink = Arc::new(VolumeImageSink::new(p, &staging));
    let preparer = ImagePreparer::new(Arc::clone(&sink) as Arc<dyn ImageSink>);
    let source = Pattern { len: 1024 * 1024 };
    let mut opts = PrepareOptions::default();
    opts.checksum = Some(checksum(&source.bytes()));
    opts.retries = 0;
    let target = ImageTarget::new("img.raw");
    let mut image = VMImage::new("img", VMImageSpec::default());
    let err = preparer
        .prepare(&mut image, &target, &source, &opts)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    assert!(sink.lookup(&target).await.unwrap().is_none());
    assert_eq!(std::fs::read_dir(&staging).unwrap().count(), 0);
}

/// On the real libvirtd (set up by `scripts/libvirt/setup.sh`): a verified image becomes a
/// volume in the pool; a checksum mismatch leaves nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verified_image_becomes_a_volume_on_libvirtd() {
    use virtrigaud_core::testing::backend_env;
    let Some(uri) = backend_env("libvirt", "VIRTRIGAUD_LIBVIRT_URI") else {
        return;
    };
    let Some(pool) = backend_env("libvirt", "VIRTRIGAUD_LIBVIRT_POOL") else {
        return;
    };
    let p = LibvirtProvider::connect(LibvirtConfig::new(uri).with_storage_pool(pool))
        .await
        .expect("connect to libvirtd");
    let dir = tempfile::tempdir().expect("tempdir");
    let staging = dir.path().join("staging");
    let sink = Arc::new(VolumeImageSink::new(p, &staging));
    let prefix = format!("vrt-img-{}", std::process::id());
    prepare_into(Arc::clone(&sink), &staging, &prefix).await;
}
