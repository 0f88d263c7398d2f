//! [`HttpSource`]: streaming HTTP(S) download with `Range` resume (feature `image-http`).

use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_RANGE, RANGE};

use super::source::{ImageSource, SourceStream};
use crate::error::{Error, ErrorKind, Result};

/// Downloads an image over HTTP(S). TLS certificates are verified (rustls, system roots).
/// Credentials in the URL never appear in logs, errors or `Debug` output.
#[derive(Clone)]
pub struct HttpSource {
    client: reqwest::Client,
    url: reqwest::Url,
}

impl std::fmt::Debug for HttpSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSource")
            .field("url", &self.redacted_url())
            .finish_non_exhaustive()
    }
}

impl HttpSource {
    /// A source for `url` with a default client (15 s connect timeout).
    pub fn new(url: &str) -> Result<Self> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(15))
            .tls_backend_rustls()
            .build()
            .map_err(|e| Error::internal("cannot build the HTTP client").with_source(e))?;
        Self::with_client(client, url)
    }

    /// A source for `url` using `client` (bring your own TLS settings, proxies, …).
    pub fn with_client(client: reqwest::Client, url: &str) -> Result<Self> {
        let url = reqwest::Url::parse(url)
            .map_err(|e| Error::invalid_spec(format!("invalid image URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Error::invalid_spec(format!(
                "image URL scheme {:?} is not http or https",
                url.scheme()
            )));
        }
        Ok(HttpSource { client, url })
    }

    /// The URL without credentials, for logs.
    pub fn redacted_url(&self) -> String {
        let mut u = self.url.clone();
        let _ = u.set_username("");
        let _ = u.set_password(None);
        u.to_string()
    }

    fn status_error(&self, status: StatusCode) -> Error {
        let kind = match status.as_u16() {
            404 | 410 => ErrorKind::NotFound,
            401 => ErrorKind::Unauthenticated,
            403 => ErrorKind::PermissionDenied,
            408 => ErrorKind::Timeout,
            429 => ErrorKind::RateLimited,
            500..=599 => ErrorKind::Unavailable,
            _ => ErrorKind::Internal,
        };
        Error::new(
            kind,
            format!("GET {} answered {status}", self.redacted_url()),
        )
        .with_provider("http")
        .with_operation("image_download")
    }
}

/// Parses `bytes start-end/total` (total may be `*`).
fn parse_content_range(v: &str) -> Option<(u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, _end) = range.split_once('-')?;
    Some((start.trim().parse().ok()?, total.trim().parse().ok()))
}

#[async_trait]
impl ImageSource for HttpSource {
    fn url(&self) -> Option<&str> {
        Some(self.url.as_str())
    }

    async fn probe_len(&self) -> Option<u64> {
        let resp = self.client.head(self.url.clone()).send().await.ok()?;
        if !resp.status().is_success() {
            return None;
        }
        resp.headers()
            .get(reqwest::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok())
            .filter(|n| *n > 0)
    }

    async fn open(&self, offset: u64) -> Result<SourceStream> {
        let mut req = self.client.get(self.url.clone());
        if offset > 0 {
            req = req.header(RANGE, format!("bytes={offset}-"));
        }
        let resp = req.send().await.map_err(|e| {
            Error::unavailable(format!("GET {} failed", self.redacted_url()))
                .with_provider("http")
                .with_operation("image_download")
                .with_source(e)
        })?;
        let status = resp.status();
        let (start, total) = if status == StatusCode::PARTIAL_CONTENT {
            let cr = resp
                .headers()
                .get(CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_content_range);
            match cr {
                Some((s, t)) => (s, t),
                None => {
                    return Err(
                        Error::internal("206 without a valid Content-Range").with_provider("http")
                    );
                }
            }
        } else if status == StatusCode::RANGE_NOT_SATISFIABLE && offset > 0 {
            // Our partial data does not fit the object any more: start over.
            return Box::pin(self.open(0)).await;
        } else if status.is_success() {
            (0, resp.content_length())
        } else {
            return Err(self.status_error(status));
        };
        let url = self.redacted_url();
        let body = resp
            .bytes_stream()
            .map(move |r| {
                r.map_err(|e| {
                    Error::unavailable(format!("download of {url} interrupted"))
                        .with_provider("http")
                        .with_source(e)
                })
            })
            .boxed();
        Ok(SourceStream::new(start, total, body))
    }
}

#[cfg(test)]
mod tests {
    use super::parse_content_range;

    #[test]
    fn credentials_are_redacted() {
        let s = super::HttpSource::new("https://user:s3cret@example.com/img.qcow2").unwrap();
        assert!(!format!("{s:?}").contains("s3cret"));
        assert_eq!(s.redacted_url(), "https://example.com/img.qcow2");
    }

    #[test]
    fn content_range() {
        assert_eq!(
            parse_content_range("bytes 100-199/1000"),
            Some((100, Some(1000)))
        );
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, None)));
        assert_eq!(parse_content_range("items 1-2/3"), None);
    }
}
