//! [`ImageSource`]: where image bytes come from (HTTP(S) with the `image-http` feature, or
//! anything an embedder implements).

use std::fmt;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

use crate::error::Result;

/// An opened download.
#[non_exhaustive]
pub struct SourceStream {
    /// Offset of the first byte of `body` in the image: the requested offset when the
    /// source resumed, 0 when it restarted from the beginning.
    pub offset: u64,
    /// Length of the whole image, when known.
    pub total_len: Option<u64>,
    /// The bytes from `offset` on. Errors that a retry may fix are retryable
    /// ([`crate::Error::is_retryable`]).
    pub body: BoxStream<'static, Result<Bytes>>,
}

impl SourceStream {
    /// A stream of `body` starting at `offset` of an image of `total_len` bytes.
    pub fn new(
        offset: u64,
        total_len: Option<u64>,
        body: BoxStream<'static, Result<Bytes>>,
    ) -> Self {
        SourceStream {
            offset,
            total_len,
            body,
        }
    }
}

impl fmt::Debug for SourceStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourceStream")
            .field("offset", &self.offset)
            .field("total_len", &self.total_len)
            .finish_non_exhaustive()
    }
}

/// A source of image bytes that can (ideally) resume at an offset.
#[async_trait]
pub trait ImageSource: Send + Sync + fmt::Debug {
    /// Opens the image at `offset` (a source that cannot resume starts at 0 and says so in
    /// [`SourceStream::offset`]).
    async fn open(&self, offset: u64) -> Result<SourceStream>;

    /// The URL a storage that fetches by itself ([`super::RemoteFetch`]) can be given
    /// instead of the bytes; `None` (the default) for sources that are not a URL.
    fn url(&self) -> Option<&str> {
        None
    }

    /// The image's length without downloading it (an HTTP `HEAD`), when the source can
    /// tell; `None` (the default) otherwise. Used as the size hint of a remote fetch.
    async fn probe_len(&self) -> Option<u64> {
        None
    }
}
