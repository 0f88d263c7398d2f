//! A thin typed client for the PVE REST API (`/api2/json`).
//!
//! * Bodies are **form-encoded** (as PVE's own clients send them; booleans as `0`/`1`).
//! * Answers are unwrapped from PVE's `{"data": …}` envelope.
//! * API-token auth, or ticket + CSRF auth with renewal (before expiry, and once on a 401).
//! * Secrets never appear in logs or `Debug` output.

use std::path::Path;
use std::sync::Arc;
use tokio::time::Instant;

use reqwest::header::HeaderValue;
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use tokio::sync::Mutex;
use virtrigaud_core::layers::ApiCalls;

use crate::config::{Auth, ProxmoxConfig, Tls, redact_url};
use crate::multipart;
use crate::request::{ApiRequest, Method, api};

/// How a request's parameters travel.
enum Body<'a> {
    /// As the query (reads, deletes) or a form body (writes).
    Params,
    /// As `multipart/form-data` around the `len` bytes of the file at `path` (uploads).
    File { path: &'a Path, len: u64 },
}

/// A failure of one API call, before it is mapped to a [`virtrigaud_core::Error`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// PVE answered with an HTTP error status.
    #[error("HTTP {status}: {message}{}", fmt_field_errors(.errors))]
    Http {
        /// HTTP status (401, 403, 500, 595, …).
        status: u16,
        /// PVE's message (trimmed).
        message: String,
        /// Per-parameter errors of a 400.
        errors: Vec<(String, String)>,
    },
    /// The request did not reach PVE or no answer came back.
    #[error("transport error: {0}")]
    Transport(String),
    /// The answer could not be decoded.
    #[error("unexpected answer: {0}")]
    Decode(String),
    /// Login failed or was refused.
    #[error("login failed: {0}")]
    Login(String),
    /// The client could not be built (bad CA PEM, bad URL).
    #[error("client configuration: {0}")]
    Config(String),
    /// A task ended with an exit status other than `OK`.
    #[error("task {task_type} failed: {exitstatus}{}", fmt_log(.log))]
    TaskFailed {
        /// The task's UPID.
        upid: String,
        /// Task type (`qmshutdown`, `qmclone`, …).
        task_type: String,
        /// PVE's exit status (the error message).
        exitstatus: String,
        /// The last lines of the task log.
        log: Vec<String>,
    },
    /// Waiting for a task exceeded its deadline (the task may still be running on PVE).
    #[error("task {upid} still running after the deadline")]
    TaskTimeout {
        /// The task's UPID.
        upid: String,
    },
    /// The wait was cancelled (the task may still be running on PVE).
    #[error("cancelled while waiting for task {upid}")]
    Cancelled {
        /// The task's UPID.
        upid: String,
    },
}

fn fmt_field_errors(errors: &[(String, String)]) -> String {
    if errors.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = errors.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    format!(" ({})", parts.join("; "))
}

fn fmt_log(log: &[String]) -> String {
    if log.is_empty() {
        String::new()
    } else {
        format!(" (task log: {})", log.join(" | "))
    }
}

impl ApiError {
    /// The HTTP status, when PVE answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Http { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// PVE's message or exit status.
    pub fn message(&self) -> String {
        match self {
            ApiError::Http { message, .. } => message.clone(),
            ApiError::TaskFailed { exitstatus, .. } => exitstatus.clone(),
            other => other.to_string(),
        }
    }
}

struct Ticket {
    ticket: SecretString,
    csrf: SecretString,
    obtained: Instant,
}

/// What the clones of one [`PveClient`] share: the connection pool, the settings, the
/// login ticket, the request counter and the request record.
struct Session {
    http: reqwest::Client,
    base: String,
    config: ProxmoxConfig,
    ticket: Mutex<Option<Arc<Ticket>>>,
    calls: ApiCalls,
    recorder: std::sync::Mutex<Option<Vec<ApiRequest>>>,
}

/// The PVE API client. Cheap to clone (shared connection pool and session).
#[derive(Clone)]
pub struct PveClient {
    inner: Arc<Session>,
}

impl std::fmt::Debug for PveClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PveClient")
            .field("base", &redact_url(&self.inner.base))
            .field("auth", &self.inner.config.auth)
            .field("tls", &self.inner.config.tls)
            .finish_non_exhaustive()
    }
}

impl PveClient {
    /// Builds a client (no request is sent until the first call).
    pub fn new(config: ProxmoxConfig) -> Result<Self, ApiError> {
        let mut builder = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .connect_timeout(config.connect_timeout)
            .user_agent(concat!("virtrigaud-proxmox/", env!("CARGO_PKG_VERSION")));
        match &config.tls {
            Tls::Verify => {}
            Tls::TrustCaPem(pem) => {
                let certs = reqwest::Certificate::from_pem_bundle(pem)
                    .map_err(|e| ApiError::Config(format!("CA PEM: {e}")))?;
                if certs.is_empty() {
                    return Err(ApiError::Config("CA PEM holds no certificate".into()));
                }
                builder = builder.tls_certs_only(certs);
            }
            Tls::DangerAcceptInvalidCerts => {
                tracing::warn!(
                    url = %redact_url(&config.url),
                    "TLS certificate verification is DISABLED for this Proxmox endpoint"
                );
                builder = builder.tls_danger_accept_invalid_certs(true);
            }
        }
        let http = builder
            .build()
            .map_err(|e| ApiError::Config(e.to_string()))?;
        Self::with_http_client(http, config)
    }

    /// A client sending its requests through `http`, the embedder's own `reqwest::Client`
    /// (its TLS roots, proxy, timeouts and connection pool apply; `config`'s TLS and timeout
    /// settings are not used). The URL and the credentials still come from `config`.
    pub fn with_http_client(
        http: reqwest::Client,
        config: ProxmoxConfig,
    ) -> Result<Self, ApiError> {
        let base = config.api_base();
        url::Url::parse(&base)
            .map_err(|e| ApiError::Config(format!("URL {:?}: {e}", redact_url(&base))))?;
        Ok(PveClient {
            inner: Arc::new(Session {
                http,
                base,
                config,
                ticket: Mutex::new(None),
                calls: ApiCalls::new(),
                recorder: std::sync::Mutex::new(None),
            }),
        })
    }

    /// The settings this client was built with.
    pub fn config(&self) -> &ProxmoxConfig {
        &self.inner.config
    }

    /// How many HTTP requests this client (and its clones) sent so far, logins included.
    pub fn api_calls(&self) -> u64 {
        self.inner.calls.get()
    }

    /// Starts keeping a copy of every request sent from now on (for audits and tests; the
    /// values of sensitive requests such as logins are replaced by `***`).
    pub fn record_requests(&self) {
        let mut rec = self
            .inner
            .recorder
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        rec.get_or_insert_with(Vec::new);
    }

    /// The requests recorded since [`PveClient::record_requests`] (and clears the record).
    pub fn take_recorded(&self) -> Vec<ApiRequest> {
        let mut rec = self
            .inner
            .recorder
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        rec.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// Sends `req` and decodes the `data` of the answer into `T`.
    pub async fn call<T: DeserializeOwned>(&self, req: &ApiRequest) -> Result<T, ApiError> {
        let data = self.send(req).await?;
        serde_json::from_value(data)
            .map_err(|e| ApiError::Decode(format!("{} {}: {e}", req.method, req.template)))
    }

    /// Sends `req` and returns the `data` of the answer.
    pub async fn send(&self, req: &ApiRequest) -> Result<serde_json::Value, ApiError> {
        self.send_with(req, &Body::Params).await
    }

    /// Sends `req` (an [`api::upload`]) as `multipart/form-data`, the `len` bytes of the
    /// local file `file` as its file part, and returns the `data` of the answer (a UPID).
    /// The body is streamed from the file with a known `Content-Length`; the request may
    /// take up to the configured task timeout (not the per-request timeout). Same
    /// authentication (token, or ticket cookie + CSRF token) and ticket renewal as
    /// [`PveClient::send`].
    pub(crate) async fn upload(
        &self,
        req: &ApiRequest,
        file: &Path,
        len: u64,
    ) -> Result<serde_json::Value, ApiError> {
        self.send_with(req, &Body::File { path: file, len }).await
    }

    async fn send_with(
        &self,
        req: &ApiRequest,
        body: &Body<'_>,
    ) -> Result<serde_json::Value, ApiError> {
        match &self.inner.config.auth {
            Auth::ApiToken { .. } => self.send_once(req, None, body).await,
            Auth::Password { .. } => {
                let ticket = self.ticket(false).await?;
                match self.send_once(req, Some(&ticket), body).await {
                    Err(ApiError::Http {
                        status: 401,
                        message,
                        ..
                    }) => {
                        // A 401 means the request was refused before it ran: safe to repeat once.
                        tracing::debug!(%message, "PVE ticket refused; logging in again");
                        let ticket = self.ticket(true).await?;
                        self.send_once(req, Some(&ticket), body).await
                    }
                    other => other,
                }
            }
        }
    }

    async fn ticket(&self, force: bool) -> Result<Arc<Ticket>, ApiError> {
        let mut guard = self.inner.ticket.lock().await;
        if let Some(t) = guard.as_ref()
            && !force
            && t.obtained.elapsed() < self.inner.config.ticket_renew_after
        {
            return Ok(Arc::clone(t));
        }
        let Auth::Password { username, password } = &self.inner.config.auth else {
            return Err(ApiError::Login("not using password auth".into()));
        };
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Answer {
            #[serde(rename = "ticket")]
            ticket: Option<String>,
            #[serde(rename = "CSRFPreventionToken")]
            csrf: Option<String>,
            #[serde(rename = "NeedTFA", default)]
            need_tfa: Option<serde_json::Value>,
        }
        let req = api::ticket(username, password.expose_secret());
        let data = match self.send_once(&req, None, &Body::Params).await {
            Ok(d) => d,
            Err(ApiError::Http {
                status, message, ..
            }) => {
                return Err(ApiError::Http {
                    status,
                    message: format!("login as {username}: {message}"),
                    errors: vec![],
                });
            }
            Err(e) => return Err(e),
        };
        let answer: Answer =
            serde_json::from_value(data).map_err(|e| ApiError::Decode(format!("ticket: {e}")))?;
        if answer.need_tfa.is_some_and(|v| v != 0) {
            return Err(ApiError::Login(format!(
                "{username} needs a second factor (TFA); use an API token"
            )));
        }
        let (Some(ticket), Some(csrf)) = (answer.ticket, answer.csrf) else {
            return Err(ApiError::Login(
                "answer without ticket or CSRF token".into(),
            ));
        };
        let t = Arc::new(Ticket {
            ticket: SecretString::from(ticket),
            csrf: SecretString::from(csrf),
            obtained: Instant::now(),
        });
        *guard = Some(Arc::clone(&t));
        Ok(t)
    }

    /// Sends one HTTP request (no ticket renewal): the one place requests are counted and
    /// recorded.
    async fn send_once(
        &self,
        req: &ApiRequest,
        ticket: Option<&Ticket>,
        body: &Body<'_>,
    ) -> Result<serde_json::Value, ApiError> {
        let rb = match body {
            Body::Params => self.build(req),
            Body::File { path, len } => self.build_upload(req, path, *len).await?,
        };
        let rb = self.authorize(rb, req, ticket)?;
        self.inner.calls.record();
        self.record(req);
        tracing::trace!(request = ?req, "PVE request");
        let resp = rb
            .send()
            .await
            .map_err(|e| ApiError::Transport(transport_message(&e)))?;
        read_answer(resp, req).await
    }

    /// The HTTP request for `req`: query parameters for reads and deletes, a form body
    /// otherwise.
    fn build(&self, req: &ApiRequest) -> reqwest::RequestBuilder {
        let url = format!("{}{}", self.inner.base, req.path());
        let method = match req.method {
            Method::Get => reqwest::Method::GET,
            Method::Post => reqwest::Method::POST,
            Method::Put => reqwest::Method::PUT,
            Method::Delete => reqwest::Method::DELETE,
        };
        let rb = self.inner.http.request(method, &url);
        match req.method {
            Method::Get | Method::Delete => rb.query(&req.params),
            // Always a form body, even when empty: PVE parses forms, not JSON booleans.
            Method::Post | Method::Put => rb.form(&req.params),
        }
    }

    /// The HTTP request for an upload: a `multipart/form-data` body of known length, the
    /// parameters as text fields, the file streamed from disk as the part named `filename`.
    async fn build_upload(
        &self,
        req: &ApiRequest,
        path: &Path,
        len: u64,
    ) -> Result<reqwest::RequestBuilder, ApiError> {
        use futures::StreamExt;
        use tokio::io::AsyncReadExt;

        let filename = req.get(multipart::FILE_FIELD).ok_or_else(|| {
            ApiError::Config(format!("{} {}: no filename", req.method, req.template))
        })?;
        let fields: Vec<(&str, &str)> = req
            .params
            .iter()
            .filter(|(k, _)| k != multipart::FILE_FIELD)
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let frame = multipart::Frame::new(multipart::boundary(), &fields, filename)
            .map_err(ApiError::Config)?;
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|e| ApiError::Transport(format!("cannot read {}: {e}", path.display())))?;
        let total = frame.content_length(len);
        let head = futures::stream::once(futures::future::ready(Ok::<_, std::io::Error>(
            bytes::Bytes::from(frame.head.clone()),
        )));
        let tail = futures::stream::once(futures::future::ready(Ok::<_, std::io::Error>(
            bytes::Bytes::from(frame.tail.clone()),
        )));
        let data = tokio_util::io::ReaderStream::with_capacity(file.take(len), 256 * 1024);
        let body = reqwest::Body::wrap_stream(head.chain(data).chain(tail));
        let url = format!("{}{}", self.inner.base, req.path());
        let timeout = self
            .inner
            .config
            .task_timeout
            .max(self.inner.config.request_timeout);
        Ok(self
            .inner
            .http
            .post(&url)
            .timeout(timeout)
            .header(reqwest::header::CONTENT_TYPE, frame.content_type())
            .header(reqwest::header::CONTENT_LENGTH, total)
            .body(body))
    }

    /// Adds the credentials: the API token header, or the ticket cookie (and the CSRF token
    /// for writes). Every header value is marked sensitive.
    fn authorize(
        &self,
        mut rb: reqwest::RequestBuilder,
        req: &ApiRequest,
        ticket: Option<&Ticket>,
    ) -> Result<reqwest::RequestBuilder, ApiError> {
        match (&self.inner.config.auth, ticket) {
            (Auth::ApiToken { token_id, secret }, _) => {
                let value = sensitive(
                    &format!("PVEAPIToken={token_id}={}", secret.expose_secret()),
                    || ApiError::Config("API token contains invalid header characters".into()),
                )?;
                rb = rb.header(reqwest::header::AUTHORIZATION, value);
            }
            (Auth::Password { .. }, Some(t)) => {
                let cookie = sensitive(
                    &format!("PVEAuthCookie={}", t.ticket.expose_secret()),
                    || ApiError::Login("ticket contains invalid header characters".into()),
                )?;
                rb = rb.header(reqwest::header::COOKIE, cookie);
                if req.method.needs_csrf() {
                    let csrf = sensitive(t.csrf.expose_secret(), || {
                        ApiError::Login("CSRF token contains invalid header characters".into())
                    })?;
                    rb = rb.header("CSRFPreventionToken", csrf);
                }
            }
            (Auth::Password { .. }, None) => {}
        }
        Ok(rb)
    }

    /// Keeps a copy of `req` when recording (sensitive values replaced by `***`).
    fn record(&self, req: &ApiRequest) {
        if let Some(rec) = self
            .inner
            .recorder
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_mut()
        {
            let mut copy = req.clone();
            if copy.sensitive {
                for (_, v) in &mut copy.params {
                    *v = "***".into();
                }
            }
            rec.push(copy);
        }
    }
}

/// A header value marked sensitive (never logged), or `invalid` when it cannot be one.
fn sensitive(value: &str, invalid: impl FnOnce() -> ApiError) -> Result<HeaderValue, ApiError> {
    let mut v = HeaderValue::from_str(value).map_err(|_| invalid())?;
    v.set_sensitive(true);
    Ok(v)
}

/// The `data` of a successful answer (`null` when it has none), or the error PVE answered.
async fn read_answer(
    resp: reqwest::Response,
    req: &ApiRequest,
) -> Result<serde_json::Value, ApiError> {
    let status = resp.status();
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| ApiError::Transport(transport_message(&e)))?;
    let body: Option<serde_json::Value> = serde_json::from_slice(&bytes).ok();
    if !status.is_success() {
        return Err(http_error(status, &bytes, body.as_ref()));
    }
    let Some(mut body) = body else {
        return Err(ApiError::Decode(format!(
            "{} {}: answer is not JSON",
            req.method, req.template
        )));
    };
    Ok(body
        .get_mut("data")
        .map(serde_json::Value::take)
        .unwrap_or(serde_json::Value::Null))
}

/// An error answer: PVE's `message` (else the body text, else the HTTP reason) and the
/// per-parameter `errors` of a 400.
fn http_error(
    status: reqwest::StatusCode,
    bytes: &[u8],
    body: Option<&serde_json::Value>,
) -> ApiError {
    let mut message = body
        .and_then(|b| b.get("message"))
        .and_then(|m| m.as_str())
        .map(|m| m.trim().to_owned())
        .unwrap_or_default();
    if message.is_empty() {
        let text = String::from_utf8_lossy(bytes);
        let text = text.trim();
        message = if text.is_empty() || text.starts_with('<') {
            status
                .canonical_reason()
                .map(str::to_owned)
                .unwrap_or_else(|| "error".into())
        } else {
            text.chars().take(300).collect()
        };
    }
    let errors = body
        .and_then(|b| b.get("errors"))
        .and_then(|e| e.as_object())
        .map(|o| {
            o.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_str()
                            .map(|s| s.trim().to_owned())
                            .unwrap_or_else(|| v.to_string()),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    ApiError::Http {
        status: status.as_u16(),
        message,
        errors,
    }
}

fn transport_message(e: &reqwest::Error) -> String {
    // reqwest's errors carry the URL but never headers, so no secret leaks here.
    let mut out = e.to_string();
    let mut cur = std::error::Error::source(e);
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}
