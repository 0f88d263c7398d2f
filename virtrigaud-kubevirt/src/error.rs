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

/// Maps a kube error for `operation` on `resource`.
pub(crate) fn map_kube(
    err: kube::Error,
    call: Call,
    operation: &'static str,
    resource: &str,
) -> Error {
    let base = match &err {
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
    };
    base.with_provider(PROVIDER_TYPE)
        .with_operation(operation)
        .with_resource(resource)
        .with_source(err)
}

/// Maps a watcher failure (used where a watch ends a wait).
pub(crate) fn map_watch(
    err: kube::runtime::watcher::Error,
    operation: &'static str,
    resource: &str,
) -> Error {
    Error::unavailable("watch failed")
        .with_provider(PROVIDER_TYPE)
        .with_operation(operation)
        .with_resource(resource)
        .with_source(err)
}

/// An error of `kind` with the provider context filled in.
pub(crate) fn err(
    kind: ErrorKind,
    operation: &'static str,
    resource: &str,
    msg: impl Into<String>,
) -> Error {
    Error::new(kind, msg)
        .with_provider(PROVIDER_TYPE)
        .with_operation(operation)
        .with_resource(resource)
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
        let k = |e, c| map_kube(e, c, "op", "ns/vm").kind();
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
        assert!(map_kube(api(500, "InternalError", "x"), Call::Object, "op", "r").is_retryable());
        assert!(map_kube(api(409, "Conflict", "x"), Call::Object, "op", "r").is_retryable());
    }
}
