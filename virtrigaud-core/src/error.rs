//! The one public error type of virtrigaud.
//!
//! Every provider maps its native failures into [`Error`], choosing an [`ErrorKind`] and whether
//! the failure is worth retrying. Callers match on [`Error::kind`] and ask
//! [`Error::is_retryable`]; they never downcast provider-specific errors.

use std::borrow::Cow;
use std::fmt;

/// Boxed source error carried inside [`Error`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Result alias used across virtrigaud.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The category of a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The VM, snapshot or other object does not exist.
    NotFound,
    /// An object with that name or id already exists.
    AlreadyExists,
    /// The request or spec is invalid (a bad field value, a rule broken).
    InvalidSpec,
    /// The object is in a state that does not allow the operation (for example a paused VM
    /// that cannot take a shutdown request, or powering on a running VM).
    InvalidState,
    /// Another change raced this one (optimistic concurrency, lock held, 409).
    Conflict,
    /// The provider or this VM does not support the operation.
    Unsupported,
    /// Credentials are missing, wrong or expired.
    Unauthenticated,
    /// Credentials are valid but lack permission.
    PermissionDenied,
    /// The operation did not finish in time.
    Timeout,
    /// The server asked us to slow down.
    RateLimited,
    /// The endpoint could not be reached or answered with a transient failure.
    Unavailable,
    /// The caller cancelled the operation.
    Cancelled,
    /// Anything else: a bug, an unexpected answer.
    Internal,
}

impl ErrorKind {
    /// Whether failures of this kind are usually transient.
    pub const fn default_retryable(self) -> bool {
        matches!(
            self,
            ErrorKind::Conflict
                | ErrorKind::Timeout
                | ErrorKind::RateLimited
                | ErrorKind::Unavailable
        )
    }

    /// A stable snake_case name, suitable for a metrics label.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not_found",
            ErrorKind::AlreadyExists => "already_exists",
            ErrorKind::InvalidSpec => "invalid_spec",
            ErrorKind::InvalidState => "invalid_state",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Unauthenticated => "unauthenticated",
            ErrorKind::PermissionDenied => "permission_denied",
            ErrorKind::Timeout => "timeout",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether retrying can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorStatus {
    /// Retrying the same call will fail the same way.
    Permanent,
    /// Retrying may succeed.
    Temporary,
    /// It was temporary, but retries were exhausted: do not retry again.
    Persistent,
}

/// A virtrigaud error: a kind, a retry status, and where it happened.
///
/// ```
/// use virtrigaud_core::{Error, ErrorKind};
/// let err = Error::new(ErrorKind::NotFound, "domain not found")
///     .with_provider("libvirt")
///     .with_operation("power_state")
///     .with_resource("web-1");
/// assert_eq!(err.kind(), ErrorKind::NotFound);
/// assert!(!err.is_retryable());
/// assert_eq!(err.to_string(), "libvirt power_state web-1: not_found: domain not found");
/// ```
///
/// The error is one pointer wide (its details live in one heap allocation), so a
/// `Result<T>` costs little more than `T`, in every future that holds one.
pub struct Error {
    inner: Box<Inner>,
}

struct Inner {
    kind: ErrorKind,
    status: ErrorStatus,
    provider: Cow<'static, str>,
    operation: Cow<'static, str>,
    resource: Option<String>,
    message: String,
    source: Option<BoxError>,
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner
            .source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}

impl Error {
    /// A new error of `kind`; its retry status follows [`ErrorKind::default_retryable`].
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            inner: Box::new(Inner {
                kind,
                status: if kind.default_retryable() {
                    ErrorStatus::Temporary
                } else {
                    ErrorStatus::Permanent
                },
                provider: Cow::Borrowed(""),
                operation: Cow::Borrowed(""),
                resource: None,
                message: message.into(),
                source: None,
            }),
        }
    }

    /// Shorthand for a [`ErrorKind::NotFound`] error.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }
    /// Shorthand for a [`ErrorKind::InvalidSpec`] error.
    pub fn invalid_spec(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidSpec, message)
    }
    /// Shorthand for a [`ErrorKind::InvalidState`] error.
    pub fn invalid_state(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidState, message)
    }
    /// Shorthand for a [`ErrorKind::Unsupported`] error naming the operation.
    pub fn unsupported(operation: &'static str) -> Self {
        Self::new(
            ErrorKind::Unsupported,
            format!("{operation} is not supported"),
        )
        .with_operation(operation)
    }
    /// Shorthand for a [`ErrorKind::Unavailable`] (retryable) error.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, message)
    }
    /// Shorthand for a [`ErrorKind::Timeout`] error.
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Timeout, message)
    }
    /// Shorthand for a [`ErrorKind::Cancelled`] error.
    pub fn cancelled(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Cancelled, message)
    }
    /// Shorthand for a [`ErrorKind::Internal`] error.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    /// Names the provider type (`"libvirt"`, `"vsphere"`, …).
    pub fn with_provider(mut self, provider: impl Into<Cow<'static, str>>) -> Self {
        self.inner.provider = provider.into();
        self
    }
    /// Names the operation (`"shutdown"`, `"snapshot_create"`, …).
    pub fn with_operation(mut self, operation: impl Into<Cow<'static, str>>) -> Self {
        self.inner.operation = operation.into();
        self
    }
    /// Names the resource (a VM id, a snapshot name).
    pub fn with_resource(mut self, resource: impl Into<String>) -> Self {
        self.inner.resource = Some(resource.into());
        self
    }
    /// Attaches the underlying cause.
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.inner.source = Some(source.into());
        self
    }
    /// Marks the error as temporary (retryable).
    pub fn temporary(mut self) -> Self {
        self.inner.status = ErrorStatus::Temporary;
        self
    }
    /// Marks the error as permanent (not retryable).
    pub fn permanent(mut self) -> Self {
        self.inner.status = ErrorStatus::Permanent;
        self
    }
    /// Marks a temporary error whose retries were exhausted.
    pub fn persistent(mut self) -> Self {
        if self.inner.status == ErrorStatus::Temporary {
            self.inner.status = ErrorStatus::Persistent;
        }
        self
    }

    /// Fills provider and operation only where they are still empty.
    pub fn context(
        mut self,
        provider: impl Into<Cow<'static, str>>,
        operation: impl Into<Cow<'static, str>>,
    ) -> Self {
        if self.inner.provider.is_empty() {
            self.inner.provider = provider.into();
        }
        if self.inner.operation.is_empty() {
            self.inner.operation = operation.into();
        }
        self
    }

    /// Fills provider, operation and resource only where they are still empty: the one way
    /// context is attached to an error (see [`ResultExt::ctx`]).
    pub fn context_for(
        mut self,
        provider: impl Into<Cow<'static, str>>,
        operation: impl Into<Cow<'static, str>>,
        resource: Option<&str>,
    ) -> Self {
        self = self.context(provider, operation);
        if self.inner.resource.is_none() {
            self.inner.resource = resource.map(str::to_owned);
        }
        self
    }

    /// The failure category.
    pub fn kind(&self) -> ErrorKind {
        self.inner.kind
    }
    /// The retry status.
    pub fn status(&self) -> ErrorStatus {
        self.inner.status
    }
    /// Whether retrying may succeed.
    pub fn is_retryable(&self) -> bool {
        self.inner.status == ErrorStatus::Temporary
    }
    /// The provider type that raised it, or `""`.
    pub fn provider(&self) -> &str {
        &self.inner.provider
    }
    /// The operation that failed, or `""`.
    pub fn operation(&self) -> &str {
        &self.inner.operation
    }
    /// The resource concerned, if known.
    pub fn resource(&self) -> Option<&str> {
        self.inner.resource.as_deref()
    }
    /// The human-readable message (without context).
    pub fn message(&self) -> &str {
        &self.inner.message
    }
    /// Whether this error is of `kind`.
    pub fn is(&self, kind: ErrorKind) -> bool {
        self.inner.kind == kind
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut wrote = false;
        for part in [
            &*self.inner.provider,
            &*self.inner.operation,
            self.inner.resource.as_deref().unwrap_or(""),
        ] {
            if part.is_empty() {
                continue;
            }
            if wrote {
                f.write_str(" ")?;
            }
            f.write_str(part)?;
            wrote = true;
        }
        if wrote {
            f.write_str(": ")?;
        }
        write!(f, "{}: {}", self.inner.kind, self.inner.message)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.inner.kind)
            .field("status", &self.inner.status)
            .field("provider", &self.inner.provider)
            .field("operation", &self.inner.operation)
            .field("resource", &self.inner.resource)
            .field("message", &self.inner.message);
        if let Some(source) = &self.inner.source {
            d.field("source", &source.to_string());
        }
        d.finish()
    }
}

impl Clone for Error {
    /// Clones the error; the source chain is flattened into a message.
    fn clone(&self) -> Self {
        let i = &self.inner;
        Error {
            inner: Box::new(Inner {
                kind: i.kind,
                status: i.status,
                provider: i.provider.clone(),
                operation: i.operation.clone(),
                resource: i.resource.clone(),
                message: i.message.clone(),
                source: i.source.as_ref().map(|s| {
                    let flat: BoxError = Box::new(FlatSource(error_chain(&**s)));
                    flat
                }),
            }),
        }
    }
}

/// A source error flattened into text (used when an [`Error`] is cloned).
#[derive(Debug)]
struct FlatSource(String);
impl fmt::Display for FlatSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for FlatSource {}

/// Renders an error and its whole source chain as `a: b: c`.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

/// Attach context to a fallible result once, at an operation's boundary.
///
/// Fields already set (by a provider's native-error mapping, say) are kept: the innermost
/// context wins.
///
/// ```
/// use virtrigaud_core::{Error, ResultExt};
/// let r: virtrigaud_core::Result<()> = Err(Error::invalid_spec("cpu must be > 0"));
/// let err = r.ctx("libvirt", "create", "web-1").unwrap_err();
/// assert_eq!(err.to_string(), "libvirt create web-1: invalid_spec: cpu must be > 0");
/// ```
pub trait ResultExt<T> {
    /// Fills provider, operation and resource where they are still empty.
    fn ctx(self, provider: &'static str, operation: &'static str, resource: &str) -> Result<T>;
}

impl<T> ResultExt<T> for Result<T> {
    fn ctx(self, provider: &'static str, operation: &'static str, resource: &str) -> Result<T> {
        self.map_err(|e| e.context_for(provider, operation, Some(resource)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_status_follows_kind_and_can_be_overridden() {
        assert!(Error::unavailable("x").is_retryable());
        assert!(!Error::not_found("x").is_retryable());
        assert!(Error::not_found("x").temporary().is_retryable());
        let e = Error::timeout("slow").persistent();
        assert_eq!(e.status(), ErrorStatus::Persistent);
        assert!(!e.is_retryable());
    }

    #[test]
    fn display_includes_context_and_clone_keeps_source_text() {
        let io = std::io::Error::other("socket closed");
        let e = Error::unavailable("rpc failed")
            .with_provider("libvirt")
            .with_source(io);
        assert_eq!(e.to_string(), "libvirt: unavailable: rpc failed");
        let c = e.clone();
        assert_eq!(
            std::error::Error::source(&c).map(|s| s.to_string()),
            Some("socket closed".to_string())
        );
        assert_eq!(
            error_chain(&c),
            "libvirt: unavailable: rpc failed: socket closed"
        );
    }

    #[test]
    fn context_fills_only_empty_fields() {
        let e = Error::not_found("x")
            .with_operation("describe")
            .context("sim", "power_state");
        assert_eq!(e.provider(), "sim");
        assert_eq!(e.operation(), "describe");
    }
}
