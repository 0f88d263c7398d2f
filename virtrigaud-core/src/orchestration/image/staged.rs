//! [`StagedUpload`]: an upload staged in a local file and published to the provider's
//! storage only once the preparer has verified it.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;

use super::sink::{ImageRef, ImageUpload};
use crate::error::Result;

/// What a [`StagedUpload`] does with the complete, verified file on commit: upload it to the
/// provider's storage (a libvirt volume, a PVE storage, a vSphere template). A failure must
/// remove whatever it made there.
#[async_trait]
pub trait Publish: Send {
    /// Publishes the staged file at `path` (`size` bytes).
    async fn publish(self: Box<Self>, path: &Path, size: u64) -> Result<ImageRef>;
}

/// An upload whose bytes go to a staging upload (usually a [`super::FileSink`]'s, so a
/// resumed download can be re-hashed and nothing unverified leaves the machine) and whose
/// commit hands the staged file to a [`Publish`], then removes the staged file whatever the
/// outcome, also when the commit is dropped half-way. Abort removes only the staged data: nothing has reached the provider before
/// commit.
pub struct StagedUpload {
    staged: Box<dyn ImageUpload>,
    publish: Box<dyn Publish>,
}

impl std::fmt::Debug for StagedUpload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StagedUpload")
            .field("written", &self.staged.written())
            .finish_non_exhaustive()
    }
}

impl StagedUpload {
    /// Stages into `staged`, publishes with `publish`.
    pub fn new(staged: Box<dyn ImageUpload>, publish: Box<dyn Publish>) -> Self {
        StagedUpload { staged, publish }
    }
}

#[async_trait]
impl ImageUpload for StagedUpload {
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
        let StagedUpload { staged, publish } = *self;
        let file = staged.commit().await?;
        // Removed when the hand-over ends, and also when it is cut short (the preparer's
        // deadline drops this future).
        let staged = StagedFile(PathBuf::from(&file.reference));
        publish.publish(&staged.0, file.size_bytes).await
    }
    async fn abort(self: Box<Self>) -> Result<()> {
        self.staged.abort().await
    }
}

/// A complete staged file, removed on drop (a file already gone is fine; any other failure is
/// logged).
struct StagedFile(PathBuf);

impl Drop for StagedFile {
    fn drop(&mut self) {
        match std::fs::remove_file(&self.0) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(file = %self.0.display(), error = %e, "cannot remove the staged image");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::orchestration::image::{FileSink, ImageSink, ImageTarget};

    /// The bytes and size published, once published.
    type Seen = Arc<Mutex<Option<(Vec<u8>, u64)>>>;

    struct Record(Seen);

    #[async_trait]
    impl Publish for Record {
        async fn publish(self: Box<Self>, path: &Path, size: u64) -> Result<ImageRef> {
            let bytes = std::fs::read(path).unwrap_or_default();
            *self.0.lock().unwrap() = Some((bytes, size));
            Ok(ImageRef::new("published", size))
        }
    }

    #[tokio::test]
    async fn commit_publishes_the_staged_file_then_removes_it() {
        let dir = std::env::temp_dir().join(format!("vr-staged-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sink = FileSink::new(&dir);
        let target = ImageTarget::new("img");
        let staged = sink.begin(&target, None).await.unwrap();
        let seen = Arc::new(Mutex::new(None));
        let mut up = Box::new(StagedUpload::new(
            staged,
            Box::new(Record(Arc::clone(&seen))),
        ));
        up.write(Bytes::from_static(b"abc")).await.unwrap();
        up.write(Bytes::from_static(b"de")).await.unwrap();
        assert_eq!(up.written(), 5);
        let r = up.commit().await.unwrap();
        assert_eq!((r.reference.as_str(), r.size_bytes), ("published", 5));
        assert_eq!(seen.lock().unwrap().take(), Some((b"abcde".to_vec(), 5)));
        assert!(
            sink.lookup(&target).await.unwrap().is_none(),
            "staged file removed"
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
