//! The one place where libvirt errors become [`virtrigaud_core::Error`]s.

use virt::error::{Error as VirtError, ErrorNumber};
use virtrigaud_core::{Error, ErrorKind};

use crate::PROVIDER_TYPE;

/// Maps a libvirt error number to a core [`ErrorKind`] and whether a retry may help.
pub(crate) fn classify(code: ErrorNumber, message: &str) -> (ErrorKind, bool) {
    use ErrorNumber as N;
    match code {
        N::NoDomain
        | N::NoDomainSnapshot
        | N::NoStoragePool
        | N::NoStorageVolume
        | N::NoNetwork
        | N::NoDomainMetadata
        | N::NoDomainCheckpoint => (ErrorKind::NotFound, false),
        N::DomExist | N::StorageVolExist | N::NetworkExist => (ErrorKind::AlreadyExists, false),
        N::OperationInvalid => {
            // libvirt uses OPERATION_INVALID for "domain is already running / not running" and
            // also for "domain 'x' already exists with uuid …".
            if message.contains("already exists") {
                (ErrorKind::AlreadyExists, false)
            } else {
                (ErrorKind::InvalidState, false)
            }
        }
        N::Rpc | N::SystemError | N::NoConnect | N::InvalidConn | N::NoServer | N::NoClient => {
            (ErrorKind::Unavailable, true)
        }
        N::AuthFailed | N::AuthCancelled | N::AuthUnavailable => {
            (ErrorKind::Unauthenticated, false)
        }
        N::AccessDenied | N::OperationDenied => (ErrorKind::PermissionDenied, false),
        N::NoSupport | N::OperationUnsupported | N::ConfigUnsupported => {
            (ErrorKind::Unsupported, false)
        }
        N::AgentUnresponsive | N::OperationTimeout | N::AgentCommandTimeout => {
            (ErrorKind::Timeout, true)
        }
        N::ResourceBusy | N::OperationAborted => (ErrorKind::Conflict, true),
        N::InvalidArg | N::XmlError | N::XmlDetail | N::XmlInvalidSchema => {
            (ErrorKind::InvalidSpec, false)
        }
        N::InternalError | N::OperationFailed
            if message.contains("already running") || message.contains("is not running") =>
        {
            // The test driver reports state conflicts as internal errors.
            (ErrorKind::InvalidState, false)
        }
        N::OperationFailed
            if message.contains("vol already exists") || message.contains("exists already") =>
        {
            // The test driver reports a volume name in use as a failed operation.
            (ErrorKind::AlreadyExists, false)
        }
        _ => (ErrorKind::Internal, false),
    }
}

/// Converts a libvirt error raised by `operation` on `resource`: the one mapping from
/// `virt::error::Error` to the core [`Error`] (kind from [`classify`], retry status, context).
pub(crate) fn to_core_error(
    native: VirtError,
    operation: &'static str,
    resource: Option<&str>,
) -> Error {
    let (kind, retry) = match native.code() {
        virt::enumutil::Enum::Known(code) => classify(code, native.message()),
        virt::enumutil::Enum::Unknown(_) => (ErrorKind::Internal, false),
    };
    let e = Error::new(kind, native.message().to_owned());
    let e = if retry { e.temporary() } else { e.permanent() };
    e.context_for(PROVIDER_TYPE, operation, resource)
        .with_source(native)
}

/// Whether a libvirt error says the driver refuses the flags we passed (test driver:
/// `unsupported flags (0x1)`), so a plain call may work.
pub(crate) fn is_unsupported_flags(err: &Error) -> bool {
    matches!(err.kind(), ErrorKind::InvalidSpec | ErrorKind::Unsupported)
        && (err.message().contains("unsupported flags") || err.message().contains("not supported"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_follow_the_issue_table() {
        use ErrorNumber as N;
        assert_eq!(classify(N::NoDomain, ""), (ErrorKind::NotFound, false));
        assert_eq!(
            classify(N::OperationInvalid, "domain is not running"),
            (ErrorKind::InvalidState, false)
        );
        assert_eq!(classify(N::Rpc, ""), (ErrorKind::Unavailable, true));
        assert_eq!(classify(N::SystemError, ""), (ErrorKind::Unavailable, true));
        assert_eq!(classify(N::NoConnect, ""), (ErrorKind::Unavailable, true));
        assert_eq!(
            classify(N::AuthFailed, ""),
            (ErrorKind::Unauthenticated, false)
        );
        assert_eq!(classify(N::NoSupport, ""), (ErrorKind::Unsupported, false));
        assert_eq!(
            classify(N::OperationUnsupported, ""),
            (ErrorKind::Unsupported, false)
        );
        assert_eq!(
            classify(N::AgentUnresponsive, ""),
            (ErrorKind::Timeout, true)
        );
        assert_eq!(
            classify(N::OperationTimeout, ""),
            (ErrorKind::Timeout, true)
        );
        assert_eq!(
            classify(N::NoDomainSnapshot, ""),
            (ErrorKind::NotFound, false)
        );
        assert_eq!(
            classify(N::AccessDenied, ""),
            (ErrorKind::PermissionDenied, false)
        );
        assert_eq!(
            classify(N::OperationFailed, "storage vol already exists"),
            (ErrorKind::AlreadyExists, false)
        );
    }
}
