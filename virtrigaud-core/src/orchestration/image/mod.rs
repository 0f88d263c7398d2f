//! Image preparation for `VMImage`: phases `Pending`/`Importing`/`Preparing`/`Ready`/`Failed`,
//! `onMissing: Import`, a streaming download with the `sha256:` (or `sha512:`) checksum
//! computed while streaming, retries with exponential backoff that resume with `Range`
//! where the source allows, an overall timeout, stall detection and progress reporting.
//!
//! Bytes come from an [`ImageSource`] (`HttpSource` with the `image-http` feature) and go
//! to an [`ImageSink`], the small trait a provider implements to take an image (a libvirt
//! storage-volume upload, a datastore file); [`FileSink`] stores files in a directory.
//! A failed preparation aborts the upload, so no partial image remains.

#[cfg(feature = "image-http")]
mod http;
mod prepare;
mod sink;
mod source;
mod staged;

#[cfg(feature = "image-http")]
#[cfg_attr(docsrs, doc(cfg(feature = "image-http")))]
pub use http::HttpSource;
pub use prepare::{ImagePreparer, PrepareOptions, PrepareReport, Progress};
pub use sink::{FileSink, ImageRef, ImageSink, ImageTarget, ImageUpload};
pub use source::{ImageSource, SourceStream};
pub use staged::{Publish, StagedUpload};
