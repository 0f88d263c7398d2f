//! Image preparation for `VMImage`: phases `Pending`/`Importing`/`Preparing`/`Ready`/`Failed`,
//! `onMissing: Import`, a streaming download with the `sha256:` (or `sha512:`) checksum
//! computed while streaming, retries with exponential backoff that resume with `Range`
//! where the source allows, an overall timeout, stall detection and progress reporting.
//!
//! Bytes come from an [`ImageSource`] (`HttpSource` with the `image-http` feature) and go
//! to an [`ImageSink`], the small trait a provider implements to take an image (a libvirt
//! storage-volume upload, a datastore file); [`FileSink`] stores files in a directory.
//! A failed preparation aborts the upload, so no partial image remains.
//!
//! A sink whose storage fetches URLs itself (a KubeVirt CDI `DataVolume`) offers a
//! [`RemoteFetch`] ([`ImageSink::remote_fetch`]); for a source with a URL
//! ([`ImageSource::url`]) the preparer then starts and polls a server-side transfer under
//! the same options: overall timeout, stall timeout (no progress), retries (the server's
//! attempt count), and the checksum handed to the server, which must verify it.

#[cfg(feature = "image-http")]
mod http;
mod prepare;
mod remote;
mod sink;
mod source;
mod staged;

#[cfg(feature = "image-http")]
#[cfg_attr(docsrs, doc(cfg(feature = "image-http")))]
pub use http::HttpSource;
pub use prepare::{ImagePreparer, PrepareOptions, PrepareReport, Progress};
pub use remote::{RemoteFetch, RemoteSource, RemoteTransfer, TransferProgress, TransferState};
pub use sink::{FileSink, ImageRef, ImageSink, ImageTarget, ImageUpload};
pub use source::{ImageSource, SourceStream};
pub use staged::{Publish, StagedUpload};
