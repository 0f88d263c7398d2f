//! The one place where kube / Kubernetes API failures become [`virtrigaud_core::Error`]s.

use virtrigaud_core::{Error, ErrorKind};

use crate::PROVIDER_TYPE;

/// The message the apiserver returns (422, no causes) when a JSON-patch `test` operation fails.
const TEST_OP_FAILED: &str = "the server rejected our request due to an error in our request";

/// How a request was made, which changes how some status codes read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Call {
    /// A normal object read or write.
    Object,
    /// A JSON patch with `test` operations: a failed `test` is an optimistic-concurrency conflict.
    GuardedPatch,
    /// A `subresources.kubevirt.io` PUT: virt-api answers 409 for state errors
    /// ("VM is already running", "VM is not running").
    Subresource,
}

/// A native failure of the kube client stack, as [`to_core_error`] takes it.
#[derive(Debug)]
pub(crate) enum KubeError {
    /// A kube client error, and how the request was made.
    Client(kube::Error, Call),
    /// A watch (used where a watch ends a wait) failed.
    Watch(kube::runtime::watcher::Error),
    /// `await_condition` failed (its watch did).
    Wait(kube::runtime::wait::Error),
}

impl From<kube::Error> for KubeError {
    fn from(e: kube::Error) -> Self {
        KubeError::Client(e, Call::Object)
    }
}

impl From<kube::runtime::watcher::Error> for KubeError {
    fn from(e: kube::runtime::watcher::Error) -> Self {
        KubeError::Watch(e)
    }
}

impl From<kube::runtime::wait::Error> for KubeError {
    fn from(e: kube::runtime::wait::Error) -> Self {
        KubeError::Wait(e)
    }
}

/// The one place a kube failure becomes a [`virtrigaud_core::Error`]: kind, retry status,
/// provider, `operation` and `resource`.
pub(crate) fn to_core_error(
    native: impl Into<KubeError>,
    operation: &'static str,
    resource: Option<&str>,
) -> Error {
    let (base, source): (Error, virtrigaud_core::BoxError) = match native.into() {
        KubeError::Client(err, call) => (client_error(&err, call), Box::new(err)),
        KubeError::Watch(err) => (Error::unavailable("watch failed"), Box::new(err)),
        KubeError::Wait(err) => (Error::unavailable("watch failed"), Box::new(err)),
    };
    base.context_for(PROVIDER_TYPE, operation, resource)
        .with_source(source)
}

/// The kind and message of a kube client error.
fn client_error(err: &kube::Error, call: Call) -> Error {
    match err {
        kube::Error::Api(status) => {
            let msg = if status.message.is_empty() {
                status.reason.clone()
            } else {
                status.message.clone()
            };
            let no_causes = status.details.as_ref().is_none_or(|d| d.causes.is_empty());
            let kind = match status.code {
                404 => ErrorKind::NotFound,
                409 if status.reason == "AlreadyExists" => ErrorKind::AlreadyExists,
                409 if call == Call::Subresource => ErrorKind::InvalidState,
                409 => ErrorKind::Conflict,
                410 => ErrorKind::Conflict,
                422 if call == Call::GuardedPatch
                    && no_causes
                    && status.message == TEST_OP_FAILED =>
                {
                    ErrorKind::Conflict
                }
                400 | 422 => ErrorKind::InvalidSpec,
                401 => ErrorKind::Unauthenticated,
                403 => ErrorKind::PermissionDenied,
                405 | 501 => ErrorKind::Unsupported,
                408 | 504 => ErrorKind::Timeout,
                429 => ErrorKind::RateLimited,
                500..=599 => ErrorKind::Unavailable,
                _ => ErrorKind::Internal,
            };
            let msg = if kind == ErrorKind::Conflict && status.code == 422 {
                "a concurrent change won (JSON-patch test failed)".to_owned()
            } else {
                format!("{msg} (HTTP {})", status.code)
            };
            Error::new(kind, msg)
        }
        kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::ReadEvents(_) => {
            Error::unavailable("Kubernetes API unreachable")
        }
        kube::Error::Auth(_) => Error::new(
            ErrorKind::Unauthenticated,
            "Kubernetes authentication failed",
        ),
        kube::Error::SerdeError(_) => {
            Error::internal("unexpected response from the Kubernetes API")
        }
        kube::Error::InferConfig(_) => {
            Error::invalid_spec("cannot load Kubernetes client configuration")
        }
        _ => Error::internal("Kubernetes client error"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    fn api(code: u16, reason: &str, message: &str) -> kube::Error {
        let mut s = Status::failure(message, reason);
        s.code = code;
        kube::Error::Api(Box::new(s))
    }

    #[test]
    fn status_codes_map_to_kinds() {
        let k = |e, c| to_core_error(KubeError::Client(e, c), "op", Some("ns/vm")).kind();
        assert_eq!(
            k(api(404, "NotFound", "x"), Call::Object),
            ErrorKind::NotFound
        );
        assert_eq!(
            k(api(409, "Conflict", "x"), Call::Object),
            ErrorKind::Conflict
        );
        assert_eq!(
            k(api(409, "AlreadyExists", "x"), Call::Object),
            ErrorKind::AlreadyExists
        );
        assert_eq!(
            k(api(409, "Conflict", "VM is not running"), Call::Subresource),
            ErrorKind::InvalidState
        );
        assert_eq!(
            k(api(422, "Invalid", TEST_OP_FAILED), Call::GuardedPatch),
            ErrorKind::Conflict
        );
        assert_eq!(
            k(api(422, "Invalid", TEST_OP_FAILED), Call::Object),
            ErrorKind::InvalidSpec
        );
        assert_eq!(
            k(api(403, "Forbidden", "x"), Call::Object),
            ErrorKind::PermissionDenied
        );
        assert_eq!(
            k(api(401, "Unauthorized", "x"), Call::Object),
            ErrorKind::Unauthenticated
        );
        assert_eq!(
            k(api(503, "ServiceUnavailable", "x"), Call::Object),
            ErrorKind::Unavailable
        );
        assert!(to_core_error(api(500, "InternalError", "x"), "op", Some("r")).is_retryable());
        assert!(to_core_error(api(409, "Conflict", "x"), "op", Some("r")).is_retryable());
    }
}
