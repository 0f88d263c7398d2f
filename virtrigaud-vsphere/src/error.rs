//! SOAP faults, the client's failures ([`VimError`]) and the one place where they become
//! [`virtrigaud_core::Error`]s ([`to_core_error`]).
//!
//! | vim25 answer | kind |
//! | --- | --- |
//! | `InvalidLogin`, `NotAuthenticated` (after one re-login), `InvalidGuestLogin`, HTTP 401 | `Unauthenticated` |
//! | `NoPermission`, `GuestPermissionDenied`, `OperationDisabledByGuest`, HTTP 403 | `PermissionDenied` |
//! | `ManagedObjectNotFound`, `FileNotFound`, `GuestProcessNotFound`, HTTP 404 | `NotFound` |
//! | `InvalidPowerState`, `ToolsUnavailable`, `InvalidHostState` | `InvalidState` |
//! | `TaskInProgress`, `ConcurrentAccess`, `FileLocked`, HTTP 409 | `Conflict` (retryable) |
//! | `DuplicateName`, `AlreadyExists` | `AlreadyExists` |
//! | `InvalidArgument`, `InvalidVmConfig`, `InvalidDeviceSpec` | `InvalidSpec` |
//! | `NotSupported`, `CpuHotPlugNotSupported`, `GuestComponentsOutOfDate`, `OperationNotSupportedByGuest` | `Unsupported` |
//! | `TooManyGuestLogons`, HTTP 429 | `RateLimited` (retryable) |
//! | `HostNotConnected`, `HostCommunication`, `GuestOperationsUnavailable`, HTTP 5xx, transport errors | `Unavailable` (retryable) |
//! | a request timeout | `Timeout` (retryable) |
//! | unreadable or unexpected replies, unknown faults | `Internal` |

use std::fmt;

use virtrigaud_core::{Error, ErrorKind};

use crate::PROVIDER_TYPE;
use crate::xml::{Element, XmlError};

/// A vim25 fault, from a SOAP `Fault` or a failed task's `info.error`.
///
/// Attached as the [`std::error::Error::source`] of the [`virtrigaud_core::Error`]s this crate
/// returns, so callers can downcast to read the vSphere fault type when they need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SoapFault {
    fault_type: String,
    message: String,
}

impl SoapFault {
    /// A fault of type `fault_type` (`InvalidPowerState`, `ToolsUnavailable`, …).
    pub fn new(fault_type: impl Into<String>, message: impl Into<String>) -> Self {
        SoapFault {
            fault_type: fault_type.into(),
            message: message.into(),
        }
    }
    /// The vim25 fault type name, without the `Fault` element suffix.
    pub fn fault_type(&self) -> &str {
        &self.fault_type
    }
    /// The server's message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Reads a SOAP `<Fault>` element.
    pub(crate) fn from_soap_fault(fault: &Element) -> Self {
        let message = fault.text_at("faultstring").unwrap_or("").to_owned();
        let ty = fault
            .child("detail")
            .and_then(|d| d.children.first())
            .map(|d| {
                d.xsi_type
                    .clone()
                    .unwrap_or_else(|| d.name.strip_suffix("Fault").unwrap_or(&d.name).to_owned())
            })
            .unwrap_or_else(|| {
                fault
                    .text_at("faultcode")
                    .unwrap_or("UnknownFault")
                    .to_owned()
            });
        SoapFault {
            fault_type: ty,
            message,
        }
    }

    /// Reads a `LocalizedMethodFault` (`<error><fault xsi:type=…/><localizedMessage/></error>`).
    pub(crate) fn from_localized(err: &Element) -> Self {
        let ty = err
            .child("fault")
            .and_then(|f| f.xsi_type.clone())
            .unwrap_or_else(|| "UnknownFault".to_owned());
        let message = err.text_at("localizedMessage").unwrap_or("").to_owned();
        SoapFault {
            fault_type: ty,
            message,
        }
    }

    /// Whether this fault is `NotAuthenticated` (session gone: log in again).
    pub(crate) fn is_not_authenticated(&self) -> bool {
        self.fault_type == "NotAuthenticated"
    }

    /// The core error kind for this fault type.
    pub(crate) fn kind(&self) -> ErrorKind {
        match self.fault_type.as_str() {
            "InvalidLogin"
            | "NotAuthenticated"
            | "InvalidCredentials"
            | "NoClientCertificate"
            | "InvalidGuestLogin"
            | "GuestAuthenticationChallenge" => ErrorKind::Unauthenticated,
            "NoPermission"
            | "RestrictedVersion"
            | "SecurityError"
            | "GuestPermissionDenied"
            | "OperationDisabledByGuest" => ErrorKind::PermissionDenied,
            "ManagedObjectNotFound" | "NotFound" | "FileNotFound" | "GuestProcessNotFound" => {
                ErrorKind::NotFound
            }
            "InvalidPowerState"
            | "InvalidState"
            | "ToolsUnavailable"
            | "VmConfigIncompatibleForPowerOnOp"
            | "InvalidHostState"
            | "DisallowedOperationOnFailoverHost" => ErrorKind::InvalidState,
            "TaskInProgress" | "ConcurrentAccess" | "FileLocked" | "ResourceInUse" => {
                ErrorKind::Conflict
            }
            "DuplicateName" | "AlreadyExists" | "FileAlreadyExists" => ErrorKind::AlreadyExists,
            "InvalidArgument"
            | "InvalidRequest"
            | "InvalidType"
            | "InvalidProperty"
            | "InvalidName"
            | "InvalidDeviceSpec"
            | "InvalidVmConfig"
            | "InvalidDatastore"
            | "InvalidSnapshotFormat"
            | "MethodNotFound"
            | "InvalidDatastorePath" => ErrorKind::InvalidSpec,
            "NotSupported"
            | "NotImplemented"
            | "CpuHotPlugNotSupported"
            | "MemoryHotPlugNotSupported"
            | "GuestComponentsOutOfDate"
            | "OperationNotSupportedByGuest" => ErrorKind::Unsupported,
            "TooManyGuestLogons" => ErrorKind::RateLimited,
            "HostNotConnected"
            | "HostCommunication"
            | "HostNotReachable"
            | "Timedout"
            | "GuestOperationsUnavailable" => ErrorKind::Unavailable,
            "RequestCanceled" => ErrorKind::Cancelled,
            _ => ErrorKind::Internal,
        }
    }
}

impl fmt::Display for SoapFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.message.is_empty() {
            write!(f, "vSphere fault {}", self.fault_type)
        } else {
            write!(f, "vSphere fault {}: {}", self.fault_type, self.message)
        }
    }
}

impl std::error::Error for SoapFault {}

/// Everything that can go wrong inside the SOAP client (crate-private).
#[derive(Debug)]
pub(crate) enum VimError {
    /// The server answered with a fault.
    Fault(SoapFault),
    /// The server answered with an HTTP status and no SOAP fault.
    Http(u16, String),
    /// The request did not get an answer.
    Transport(reqwest::Error),
    /// The answer was not XML we understand.
    Xml(XmlError),
    /// The answer was XML but not what the method returns.
    Protocol(String),
}

impl From<XmlError> for VimError {
    fn from(e: XmlError) -> Self {
        VimError::Xml(e)
    }
}
impl From<SoapFault> for VimError {
    fn from(f: SoapFault) -> Self {
        VimError::Fault(f)
    }
}

impl VimError {
    /// The fault, if this is one.
    pub(crate) fn fault(&self) -> Option<&SoapFault> {
        match self {
            VimError::Fault(f) => Some(f),
            _ => None,
        }
    }
    /// Whether this is the fault `ty`.
    pub(crate) fn is_fault(&self, ty: &str) -> bool {
        self.fault().is_some_and(|f| f.fault_type == ty)
    }
}

/// [`to_core_error`] of an error several callers share (one failed long poll ends every
/// watch it served): the same kind and message; a transport error loses its source.
pub(crate) fn to_core_error_shared(
    native: &VimError,
    operation: &'static str,
    resource: Option<&str>,
) -> Error {
    let copy = match native {
        VimError::Fault(f) => VimError::Fault(f.clone()),
        VimError::Http(status, body) => VimError::Http(*status, body.clone()),
        VimError::Protocol(msg) => VimError::Protocol(msg.clone()),
        VimError::Transport(e) => {
            let kind = if e.is_timeout() {
                ErrorKind::Timeout
            } else {
                ErrorKind::Unavailable
            };
            return Error::new(kind, format!("cannot reach the SOAP endpoint: {e}"))
                .temporary()
                .context_for(PROVIDER_TYPE, operation, resource);
        }
        VimError::Xml(e) => {
            return Error::internal(format!("unreadable SOAP reply: {e}")).context_for(
                PROVIDER_TYPE,
                operation,
                resource,
            );
        }
    };
    to_core_error(copy, operation, resource)
}

/// Maps a client failure to a core error for `operation` on `resource`: the one place a
/// vim25 failure becomes a [`virtrigaud_core::Error`] (kind, retry status, provider,
/// operation, resource, and the [`SoapFault`] or transport error as its source).
pub(crate) fn to_core_error(
    native: VimError,
    operation: &'static str,
    resource: Option<&str>,
) -> Error {
    let err = match native {
        VimError::Fault(f) => {
            let kind = f.kind();
            Error::new(kind, f.to_string()).with_source(f)
        }
        VimError::Http(status, body) => {
            let kind = match status {
                401 => ErrorKind::Unauthenticated,
                403 => ErrorKind::PermissionDenied,
                404 => ErrorKind::NotFound,
                409 => ErrorKind::Conflict,
                429 => ErrorKind::RateLimited,
                500..=599 => ErrorKind::Unavailable,
                _ => ErrorKind::Internal,
            };
            let snippet: String = body.chars().take(200).collect();
            Error::new(
                kind,
                format!("HTTP {status} from the SOAP endpoint: {snippet}"),
            )
        }
        VimError::Transport(e) => {
            let kind = if e.is_timeout() {
                ErrorKind::Timeout
            } else {
                ErrorKind::Unavailable
            };
            Error::new(kind, format!("cannot reach the SOAP endpoint: {e}"))
                .with_source(e)
                .temporary()
        }
        VimError::Xml(e) => Error::internal(format!("unreadable SOAP reply: {e}")).with_source(e),
        VimError::Protocol(msg) => Error::internal(format!("unexpected SOAP reply: {msg}")),
    };
    err.context_for(PROVIDER_TYPE, operation, resource)
}

impl fmt::Display for VimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VimError::Fault(x) => x.fmt(f),
            VimError::Http(s, _) => write!(f, "HTTP {s}"),
            VimError::Transport(e) => e.fmt(f),
            VimError::Xml(e) => e.fmt(f),
            VimError::Protocol(m) => f.write_str(m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_kinds() {
        for (ty, kind) in [
            ("InvalidLogin", ErrorKind::Unauthenticated),
            ("NotAuthenticated", ErrorKind::Unauthenticated),
            ("NoPermission", ErrorKind::PermissionDenied),
            ("ManagedObjectNotFound", ErrorKind::NotFound),
            ("InvalidPowerState", ErrorKind::InvalidState),
            ("ToolsUnavailable", ErrorKind::InvalidState),
            ("TaskInProgress", ErrorKind::Conflict),
            ("DuplicateName", ErrorKind::AlreadyExists),
            ("InvalidArgument", ErrorKind::InvalidSpec),
            ("InvalidVmConfig", ErrorKind::InvalidSpec),
            ("AlreadyExists", ErrorKind::AlreadyExists),
            ("NotSupported", ErrorKind::Unsupported),
            ("HostCommunication", ErrorKind::Unavailable),
            ("InvalidGuestLogin", ErrorKind::Unauthenticated),
            ("GuestOperationsUnavailable", ErrorKind::Unavailable),
            ("GuestComponentsOutOfDate", ErrorKind::Unsupported),
            ("GuestProcessNotFound", ErrorKind::NotFound),
            ("TooManyGuestLogons", ErrorKind::RateLimited),
            ("SomethingNew", ErrorKind::Internal),
        ] {
            let err = to_core_error(VimError::Fault(SoapFault::new(ty, "m")), "op", Some("vm-1"));
            assert_eq!(err.kind(), kind, "{ty}");
            assert_eq!(
                (err.provider(), err.operation(), err.resource()),
                ("vsphere", "op", Some("vm-1"))
            );
        }
        assert!(
            to_core_error(
                VimError::Fault(SoapFault::new("TaskInProgress", "")),
                "op",
                None
            )
            .is_retryable()
        );
        assert_eq!(
            to_core_error(VimError::Http(503, String::new()), "op", None).kind(),
            ErrorKind::Unavailable
        );
        assert_eq!(
            to_core_error(VimError::Http(403, String::new()), "op", None).kind(),
            ErrorKind::PermissionDenied
        );
    }
}
