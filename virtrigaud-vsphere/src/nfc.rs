//! `HttpNfcLease`: the lease `ResourcePool.ImportVApp` returns. [`Lease::wait_ready`] waits
//! (with a deadline) for `state` to become `ready` and reads `info` (the new entity and the
//! `deviceUrl`s), [`Lease::upload`] streams one file of the staged OVA to its device URL
//! (`PUT` for files the server creates, `POST` of a stream-optimised disk otherwise, as
//! govmomi and ovftool do), with `HttpNfcLeaseProgress` every few seconds, and the lease ends
//! with [`Lease::complete`] or [`Lease::abort`].
//!
//! A device URL's host `*` means "the host you talk to": it is replaced by the SDK URL's
//! scheme, host and port. The session cookie goes only to that host (vcsim wants it on
//! `/nfc/` uploads; an ESXi host named in a URL authorises by the lease instead), and it is
//! never logged. On vCenter the lease id in a device URL's path authorises the transfer, so
//! logs and errors show a device URL only as [`shown`] (scheme, host, port, file name).
//! Reply bodies are read up to [`MAX_REPLY`] bytes.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::time::Instant;
use virtrigaud_core::{Error, ErrorKind, Result};

use crate::PROVIDER_TYPE;
use crate::client::Client;
use crate::error::{SoapFault, to_core_error};
use crate::types::MoRef;
use crate::xml::Xml;

const OP: &str = "image_upload";
/// The most bytes of an upload reply read (for an error message).
pub(crate) const MAX_REPLY: usize = 16 << 10;
/// How often progress is reported while a file streams (vCenter's lease times out after
/// `leaseTimeout`, 5 minutes by default, without it).
const PROGRESS_EVERY: Duration = Duration::from_secs(15);

/// One `deviceUrl` of the lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeviceUrl {
    /// Matches an `OvfFileItem.deviceId` of the import spec result.
    pub(crate) import_key: String,
    /// Where the file goes (`*` host already replaced).
    pub(crate) url: url::Url,
}

/// The ready lease's `info`.
#[derive(Debug, Clone)]
pub(crate) struct LeaseInfo {
    /// The entity being imported (the new VM).
    pub(crate) entity: Option<MoRef>,
    pub(crate) urls: Vec<DeviceUrl>,
}

/// One file to send: `size` bytes of `file` from `offset`, to `url`, with `PUT` when
/// `create` (the server creates the file) or `POST` (a stream-optimised disk).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Transfer<'a> {
    pub(crate) file: &'a Path,
    pub(crate) offset: u64,
    pub(crate) size: u64,
    pub(crate) url: &'a url::Url,
    pub(crate) create: bool,
}

/// An `HttpNfcLease` of this client.
#[derive(Debug)]
pub(crate) struct Lease {
    client: Arc<Client>,
    moref: MoRef,
    resource: String,
}

impl Lease {
    /// The lease `moref`, for the import of `resource` (the image name, for errors).
    pub(crate) fn new(client: &Arc<Client>, moref: MoRef, resource: &str) -> Self {
        Lease {
            client: Arc::clone(client),
            moref,
            resource: resource.to_owned(),
        }
    }

    fn err(&self, e: crate::error::VimError) -> Error {
        to_core_error(e, OP, Some(&self.resource))
    }

    /// Waits for `state` `ready` (polling, 100 ms doubling to 2 s) until `within` has
    /// passed; `error` is the lease's fault, a timeout is `Timeout`.
    pub(crate) async fn wait_ready(&self, within: Duration) -> Result<LeaseInfo> {
        let deadline = Instant::now() + within;
        let mut delay = Duration::from_millis(100);
        loop {
            let p = self
                .client
                .retrieve(&self.moref, &["state", "error", "info"])
                .await
                .map_err(|e| self.err(e))?;
            match p.str("state") {
                Some("ready") => {
                    let info = p.get("info");
                    let entity = info
                        .and_then(|i| i.child("entity"))
                        .and_then(MoRef::from_el);
                    let mut urls = Vec::new();
                    for d in info.into_iter().flat_map(|i| i.children_named("deviceUrl")) {
                        let raw = d.text_at("url").unwrap_or_default();
                        urls.push(DeviceUrl {
                            import_key: d.text_at("importKey").unwrap_or_default().to_owned(),
                            url: device_url(raw, self.client.sdk_url()).map_err(|m| {
                                Error::internal(m).context_for(
                                    PROVIDER_TYPE,
                                    OP,
                                    Some(&self.resource),
                                )
                            })?,
                        });
                    }
                    return Ok(LeaseInfo { entity, urls });
                }
                Some("error") => {
                    let f = p
                        .get("error")
                        .map(SoapFault::from_localized)
                        .unwrap_or_else(|| SoapFault::new("UnknownFault", "the lease failed"));
                    return Err(self.err(crate::error::VimError::Fault(f)));
                }
                Some("done") => {
                    return Err(Error::new(
                        ErrorKind::InvalidState,
                        "the NFC lease ended before the upload",
                    )
                    .context_for(PROVIDER_TYPE, OP, Some(&self.resource)));
                }
                _ => {}
            }
            if Instant::now() + delay > deadline {
                return Err(Error::timeout(format!(
                    "the NFC lease was not ready within {within:?}"
                ))
                .context_for(PROVIDER_TYPE, OP, Some(&self.resource)));
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }

    /// `HttpNfcLeaseProgress` (best effort: a failed report is logged).
    pub(crate) async fn progress(&self, percent: u64) {
        let mut b = Xml::new();
        b.el("percent", &percent.min(100).to_string());
        if let Err(e) = self
            .client
            .call("HttpNfcLeaseProgress", &self.moref, &b.finish())
            .await
        {
            tracing::debug!(error = %e, "HttpNfcLeaseProgress failed");
        }
    }

    /// `HttpNfcLeaseComplete`.
    pub(crate) async fn complete(&self) -> Result<()> {
        self.client
            .call("HttpNfcLeaseComplete", &self.moref, "")
            .await
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// `HttpNfcLeaseAbort`.
    pub(crate) async fn abort(&self) -> Result<()> {
        self.client
            .call("HttpNfcLeaseAbort", &self.moref, "")
            .await
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Streams one file (`t`), adding its bytes to `sent` as they go and reporting progress
    /// against `total`, all within `within`.
    pub(crate) async fn upload(
        &self,
        t: &Transfer<'_>,
        sent: &Arc<AtomicU64>,
        total: u64,
        within: Duration,
    ) -> Result<()> {
        let size = t.size;
        let send = self.send(t, sent);
        tokio::pin!(send);
        let deadline = tokio::time::sleep(within);
        tokio::pin!(deadline);
        let mut tick = tokio::time::interval(PROGRESS_EVERY);
        tick.tick().await;
        loop {
            tokio::select! {
                r = &mut send => return r,
                () = &mut deadline => {
                    return Err(Error::timeout(format!(
                        "uploading {} bytes to the NFC lease took longer than {within:?}", size
                    ))
                    .context_for(PROVIDER_TYPE, OP, Some(&self.resource)));
                }
                _ = tick.tick() => {
                    let done = sent.load(Ordering::Relaxed);
                    self.progress(done.saturating_mul(100) / total.max(1)).await;
                }
            }
        }
    }

    async fn send(&self, t: &Transfer<'_>, sent: &Arc<AtomicU64>) -> Result<()> {
        let Transfer {
            file,
            offset,
            size,
            url,
            create,
        } = *t;
        let ctx =
            |m: String| Error::internal(m).context_for(PROVIDER_TYPE, OP, Some(&self.resource));
        let mut f = tokio::fs::File::open(file)
            .await
            .map_err(|e| ctx(format!("opening {}: {e}", file.display())))?;
        f.seek(std::io::SeekFrom::Start(offset))
            .await
            .map_err(|e| ctx(format!("seeking in {}: {e}", file.display())))?;
        let counter = Arc::clone(sent);
        let stream = tokio_util::io::ReaderStream::new(f.take(size)).map(move |c| {
            if let Ok(b) = &c {
                counter.fetch_add(b.len() as u64, Ordering::Relaxed);
            }
            c
        });
        let sdk = self.client.sdk_url();
        let same_host = url.scheme() == sdk.scheme()
            && url.host_str() == sdk.host_str()
            && url.port_or_known_default() == sdk.port_or_known_default();
        let (method, kind) = if create {
            (reqwest::Method::PUT, "application/octet-stream")
        } else {
            (reqwest::Method::POST, "application/x-vnd.vmware-streamVmdk")
        };
        let mut req = self.client.http_request(method, url.clone(), same_host);
        req = req
            .header(reqwest::header::CONTENT_TYPE, kind)
            .header(reqwest::header::CONTENT_LENGTH, size)
            .body(reqwest::Body::wrap_stream(stream));
        if create {
            req = req.header("Overwrite", "t");
        }
        let shown = shown(url);
        tracing::debug!(url = %shown, bytes = size, "NFC upload");
        let resp = req.send().await.map_err(|e| {
            let kind = if e.is_timeout() {
                ErrorKind::Timeout
            } else {
                ErrorKind::Unavailable
            };
            Error::new(
                kind,
                format!("NFC upload to {shown} failed: {}", e.without_url()),
            )
            .context_for(PROVIDER_TYPE, OP, Some(&self.resource))
        })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let body = bounded_text(resp, MAX_REPLY).await;
        let kind = match status.as_u16() {
            401 => ErrorKind::Unauthenticated,
            403 => ErrorKind::PermissionDenied,
            404 => ErrorKind::NotFound,
            500..=599 => ErrorKind::Unavailable,
            _ => ErrorKind::Internal,
        };
        Err(Error::new(
            kind,
            format!(
                "NFC upload to {shown}: HTTP {status}: {}",
                body.chars().take(200).collect::<String>()
            ),
        )
        .context_for(PROVIDER_TYPE, OP, Some(&self.resource)))
    }
}

/// At most `max` bytes of a reply body, as text.
async fn bounded_text(mut resp: reqwest::Response, max: usize) -> String {
    let mut out = Vec::new();
    while out.len() < max {
        match resp.chunk().await {
            Ok(Some(c)) => out.extend_from_slice(&c[..c.len().min(max - out.len())]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A device URL as logs and errors show it: `scheme://host:port/…/<file>`, without the
/// lease id.
pub(crate) fn shown(url: &url::Url) -> String {
    let file = url
        .path_segments()
        .and_then(|mut s| s.next_back())
        .unwrap_or_default();
    format!(
        "{}://{}:{}/…/{file}",
        url.scheme(),
        url.host_str().unwrap_or_default(),
        url.port_or_known_default().unwrap_or_default()
    )
}

/// A device URL with a `*` host replaced by the SDK URL's scheme, host and port.
pub(crate) fn device_url(raw: &str, sdk: &url::Url) -> std::result::Result<url::Url, String> {
    let bad = || format!("the NFC lease gave an unusable device URL {raw:?}");
    let (scheme, rest) = raw.split_once("://").ok_or_else(bad)?;
    if !matches!(scheme, "https" | "http") {
        return Err(bad());
    }
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let fixed = if host == "*" || host.starts_with("*:") {
        let mut base = sdk.clone();
        base.set_path("");
        format!("{}{path}", base.as_str().trim_end_matches('/'))
    } else {
        raw.to_owned()
    };
    let u = url::Url::parse(&fixed).map_err(|_| bad())?;
    if !matches!(u.scheme(), "https" | "http") {
        return Err(bad());
    }
    Ok(u)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn star_hosts_become_the_sdk_host() {
        let sdk = url::Url::parse("https://127.0.0.1:18989/sdk").expect("url");
        let u = device_url("https://*/nfc/52a1/disk-0.vmdk", &sdk).expect("url");
        assert_eq!(u.as_str(), "https://127.0.0.1:18989/nfc/52a1/disk-0.vmdk");
        let u = device_url("https://*:443/nfc/x/y", &sdk).expect("url");
        assert_eq!(u.as_str(), "https://127.0.0.1:18989/nfc/x/y");
        let u = device_url("https://esx1.example.com/nfc/x/y", &sdk).expect("url");
        assert_eq!(u.host_str(), Some("esx1.example.com"));
        assert!(device_url("nonsense", &sdk).is_err());
        assert!(device_url("ftp://*/x", &sdk).is_err());
        let u = device_url("https://*/nfc/52a1-secret-lease/disk-0.vmdk", &sdk).expect("url");
        assert_eq!(shown(&u), "https://127.0.0.1:18989/…/disk-0.vmdk");
    }
}
