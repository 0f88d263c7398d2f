//! [`RemoteFetch`]: sinks whose storage fetches the image URL itself (a CDI `DataVolume`
//! with an HTTP source, a storage API's "download from URL"). The preparer starts the
//! transfer, polls it and applies its own options to it: the overall timeout, the stall
//! timeout (no progress for that long), the retry budget (the server's own attempt count)
//! and the checksum (handed to the server, which must verify it).

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;

use super::sink::{ImageRef, ImageTarget};
use crate::error::{Error, Result};
use crate::model::{Checksum, ChecksumAlgorithm};

/// What a [`RemoteFetch`] is asked to fetch.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RemoteSource {
    /// The image URL (it may carry credentials: never log it as it is, see
    /// [`RemoteSource::redacted_url`]).
    pub url: String,
    /// The digest the server must verify, when the preparer validates checksums.
    pub checksum: Option<Checksum>,
    /// The image's size in bytes, when the source told it (`Content-Length`).
    pub size_hint: Option<u64>,
}

impl RemoteSource {
    /// A source for `url`.
    pub fn new(url: impl Into<String>) -> Self {
        RemoteSource {
            url: url.into(),
            checksum: None,
            size_hint: None,
        }
    }

    /// This source with a checksum to verify.
    pub fn with_checksum(mut self, checksum: Option<Checksum>) -> Self {
        self.checksum = checksum;
        self
    }

    /// This source with a size hint.
    pub fn with_size_hint(mut self, size: Option<u64>) -> Self {
        self.size_hint = size;
        self
    }

    /// Whether the URL carries credentials (`user:password@`).
    pub fn has_credentials(&self) -> bool {
        authority(&self.url).is_some_and(|a| a.contains('@'))
    }

    /// The URL without credentials, for logs and messages.
    pub fn redacted_url(&self) -> String {
        match authority(&self.url) {
            Some(a) if a.contains('@') => {
                let host = a.rsplit('@').next().unwrap_or_default();
                self.url.replacen(a, host, 1)
            }
            _ => self.url.clone(),
        }
    }
}

/// The authority part (`user:pw@host:port`) of a `scheme://authority/...` URL.
fn authority(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    Some(rest.split(['/', '?', '#']).next().unwrap_or(rest))
}

impl fmt::Debug for RemoteSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteSource")
            .field("url", &self.redacted_url())
            .field("checksum", &self.checksum)
            .field("size_hint", &self.size_hint)
            .finish()
    }
}

/// How far a remote transfer is, as the server reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransferProgress {
    /// Nothing reported yet (scheduling, connecting).
    Unknown,
    /// Bytes transferred.
    Bytes(u64),
    /// Thousandths of the whole image (CDI's `"45.2%"` is 452).
    Permille(u32),
}

/// A remote transfer's state, from [`RemoteTransfer::poll`].
#[derive(Debug)]
#[non_exhaustive]
pub enum TransferState {
    /// Still going.
    Running {
        /// Progress so far (of the current attempt).
        progress: TransferProgress,
        /// The server's attempt number (1 for the first; a server that retries by itself,
        /// as CDI restarts its importer, counts up).
        attempts: u32,
        /// What the server last said about a failed attempt, if anything.
        message: Option<String>,
    },
    /// The image is stored (and, when a checksum was given, verified by the server).
    Done(ImageRef),
    /// The server gave up.
    Failed(Error),
}

/// One transfer in progress. Dropping it without [`RemoteTransfer::abort`] leaves the
/// server's object as it is.
#[async_trait]
pub trait RemoteTransfer: Send {
    /// Reads the transfer's state.
    async fn poll(&mut self) -> Result<TransferState>;
    /// How long to wait between polls (default 500 ms).
    fn poll_interval(&self) -> Duration {
        Duration::from_millis(500)
    }
    /// Stops the transfer and removes what [`RemoteFetch::start`] created (only that: an
    /// object that is already gone, or was replaced by another one, is left alone).
    async fn abort(self: Box<Self>) -> Result<()>;
}

/// Storage that fetches an image URL itself. An [`super::ImageSink`] offers it through
/// [`super::ImageSink::remote_fetch`]; [`super::ImagePreparer`] then uses it instead of
/// streaming the bytes through this process.
#[async_trait]
pub trait RemoteFetch: Send + Sync {
    /// Whether the server verifies checksums of `algorithm`. The preparer refuses (with
    /// `Unsupported`, naming `validateChecksum`) to hand a checksum it cannot verify, rather
    /// than skip the verification. Default: yes.
    fn verifies(&self, algorithm: ChecksumAlgorithm) -> bool {
        let _ = algorithm;
        true
    }
    /// Starts fetching `source` into `target`.
    async fn start(
        &self,
        target: &ImageTarget,
        source: &RemoteSource,
    ) -> Result<Box<dyn RemoteTransfer>>;
}

#[cfg(test)]
mod tests {
    use super::RemoteSource;

    #[test]
    fn credentials_are_redacted() {
        let s = RemoteSource::new("https://user:s3cret@example.com:8443/a/b.img?x=1");
        assert!(s.has_credentials());
        assert_eq!(s.redacted_url(), "https://example.com:8443/a/b.img?x=1");
        assert!(!format!("{s:?}").contains("s3cret"));
        let plain = RemoteSource::new("http://example.com/x@y");
        assert!(!plain.has_credentials());
        assert_eq!(plain.redacted_url(), "http://example.com/x@y");
    }
}
