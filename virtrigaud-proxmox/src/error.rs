//! The one place where PVE failures become [`virtrigaud_core::Error`]s.
//!
//! | PVE answer | kind |
//! | --- | --- |
//! | 401 (after one ticket renewal) | `Unauthenticated` |
//! | 403 | `PermissionDenied` |
//! | 400 parameter verification | `InvalidSpec` (field errors in the message) |
//! | 500 `Configuration file … does not exist`, `snapshot … does not exist` | `NotFound` |
//! | 500 `VM is locked (…)`, `can't lock file … got timeout` | `Conflict` (retryable) |
//! | 500 `checksum mismatch`, `detected modified configuration` (digest) | `Conflict` (retryable after re-reading) |
//! | 500 `not running`, `already running`, `VM is paused - cannot shutdown` | `InvalidState` |
//! | 500 `already exists`, `already used` | `AlreadyExists` |
//! | 500 `Linked clone feature is not supported` | `InvalidSpec` (the source is not a template) |
//! | 500 `no quorum`, QMP socket trouble (`unable to connect to VM … qmp socket`), refused or reset connections between nodes | `Unavailable` (retryable) |
//! | 500 with a timeout (`got timeout`, `timeout after 31 retries`, `got lock request timeout`), 408 | `Timeout` (retryable) |
//! | 595/596 (node offline, no route), 502–504, transport errors | `Unavailable` (retryable) |
//! | 501 | `Unsupported` |
//! | a task ending in error | as its exit status above, with the task log in the message |
//! | 500 from a guest-agent command (`agent/exec`, `agent/exec-status`): `No QEMU guest agent configured`, `QEMU guest agent is not running`, `VM … not running`, the agent's `qmp command 'guest-…' failed - got timeout` | `Unavailable` ([`agent_error`]) |

use virtrigaud_core::{Error, ErrorKind};

use crate::PROVIDER_TYPE;
use crate::client::ApiError;

/// Classifies PVE's error text (HTTP 500 messages and task exit statuses).
fn classify_message(msg: &str) -> ErrorKind {
    let m = msg.to_ascii_lowercase();
    if m.contains("vm is locked")
        || m.contains("can't lock file")
        || m.contains("checksum mismatch")
        || m.contains("detected modified configuration")
    {
        ErrorKind::Conflict
    } else if m.contains("linked clone feature is not supported") {
        ErrorKind::InvalidSpec
    } else if (m.contains("configuration file") && m.contains("does not exist"))
        || (m.contains("snapshot") && m.contains("does not exist"))
        || m.contains("no such vm")
    {
        ErrorKind::NotFound
    } else if m.contains("already exists") || m.contains("already used") {
        ErrorKind::AlreadyExists
    } else if m.contains("not running")
        || m.contains("already running")
        || m.contains("is running")
        || m.contains("is paused")
        || m.contains("cannot shutdown")
        || m.contains("is a template")
        || m.contains("if it's a template")
        || m.contains("if vm is a template")
    {
        ErrorKind::InvalidState
    } else if m.contains("no quorum")
        || m.contains("no route to host")
        || m.contains("connection timed out")
        || m.contains("connection refused")
        || m.contains("connection reset")
        || m.contains("temporarily unavailable")
        || m.contains("qmp socket")
    {
        ErrorKind::Unavailable
    } else if m.contains("timeout") || m.contains("timed out") {
        // "got timeout", "timeout after 51 retries", "cfs-lock … got lock request timeout".
        ErrorKind::Timeout
    } else {
        ErrorKind::Internal
    }
}

/// Maps an [`ApiError`] to a core error for `operation` on `resource`: the one place a PVE
/// failure becomes a [`virtrigaud_core::Error`] (kind, retry status, provider, operation,
/// resource, and the [`ApiError`] as its source).
pub(crate) fn to_core_error(
    native: ApiError,
    operation: &'static str,
    resource: Option<&str>,
) -> Error {
    let (kind, message) = match &native {
        ApiError::Http {
            status, message, ..
        } => {
            let kind = match *status {
                401 => ErrorKind::Unauthenticated,
                403 => ErrorKind::PermissionDenied,
                400 => ErrorKind::InvalidSpec,
                404 => ErrorKind::NotFound,
                408 => ErrorKind::Timeout,
                429 => ErrorKind::RateLimited,
                501 => ErrorKind::Unsupported,
                502..=504 | 595 | 596 => ErrorKind::Unavailable,
                _ => classify_message(message),
            };
            let hint = match *status {
                595 | 596 => " (PVE node offline or unreachable)",
                401 => " (check the API token or password)",
                _ => "",
            };
            let hint = if message
                .to_ascii_lowercase()
                .contains("linked clone feature is not supported")
            {
                " (linked clones need a template as source: convert the source to a template or make a full clone)"
            } else {
                hint
            };
            (kind, format!("{native}{hint}"))
        }
        ApiError::Transport(_) => (ErrorKind::Unavailable, native.to_string()),
        ApiError::Decode(_) => (ErrorKind::Internal, native.to_string()),
        ApiError::Login(_) => (ErrorKind::Unauthenticated, native.to_string()),
        ApiError::Config(_) => (ErrorKind::InvalidSpec, native.to_string()),
        ApiError::TaskFailed { exitstatus, .. } => {
            (classify_message(exitstatus), native.to_string())
        }
        ApiError::TaskTimeout { .. } => (ErrorKind::Timeout, native.to_string()),
        ApiError::Cancelled { .. } => (ErrorKind::Cancelled, native.to_string()),
    };
    Error::new(kind, message)
        .context_for(PROVIDER_TYPE, operation, resource)
        .with_source(native)
}

/// Whether PVE's 500 to a guest-agent command says there is no agent to talk to: not
/// enabled in the config, not running in the guest (or the VM not running), or not answering.
fn agent_unreachable(msg: &str) -> bool {
    let m = msg.to_ascii_lowercase();
    (m.contains("guest agent") && (m.contains("not running") || m.contains("configured")))
        || (m.starts_with("vm ") && m.contains("not running"))
        || (m.contains("qmp command 'guest-") && (m.contains("timeout") || m.contains("timed out")))
}

/// Maps the failure of a guest-agent command sent to `operation` on `resource`: no agent to
/// talk to ([`agent_unreachable`]) is a retryable `Unavailable` saying that the agent could
/// not `what` and what it needs; anything else as [`to_core_error`] (a missing VM stays
/// `NotFound`, a refused permission `PermissionDenied`, an error of the agent itself
/// `Internal`).
pub(crate) fn agent_error(
    native: ApiError,
    operation: &'static str,
    resource: Option<&str>,
    what: &str,
) -> Error {
    match &native {
        ApiError::Http {
            status: 500,
            message,
            ..
        } if agent_unreachable(message) => Error::unavailable(format!(
            "no running guest agent to {what} ({native}): the VM must run with `agent: 1` \
             in its config and qemu-guest-agent running in the guest"
        ))
        .context_for(PROVIDER_TYPE, operation, resource)
        .with_source(native),
        _ => to_core_error(native, operation, resource),
    }
}

/// An [`ApiError`] as a core error without an operation (for callers of [`crate::PveClient`]
/// who want the crate's classification: kind, retry status, message).
impl From<ApiError> for Error {
    fn from(native: ApiError) -> Self {
        to_core_error(native, "", None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(status: u16, msg: &str) -> ApiError {
        ApiError::Http {
            status,
            message: msg.into(),
            errors: vec![],
        }
    }

    #[test]
    fn maps_pve_errors() {
        let e = to_core_error(
            http(500, "VM is locked (backup)"),
            "start",
            Some("pve1/100"),
        );
        assert_eq!(e.kind(), ErrorKind::Conflict);
        assert!(e.is_retryable());
        assert_eq!(
            to_core_error(
                http(
                    500,
                    "can't lock file '/var/lock/qemu-server/lock-100.conf' - got timeout"
                ),
                "x",
                Some("r")
            )
            .kind(),
            ErrorKind::Conflict
        );
        assert_eq!(
            to_core_error(http(595, "No route to host"), "x", Some("r")).kind(),
            ErrorKind::Unavailable
        );
        assert_eq!(
            to_core_error(http(401, "authentication failure"), "x", Some("r")).kind(),
            ErrorKind::Unauthenticated
        );
        assert_eq!(
            to_core_error(http(403, "Permission check failed"), "x", Some("r")).kind(),
            ErrorKind::PermissionDenied
        );
        assert_eq!(
            to_core_error(
                http(
                    500,
                    "Configuration file 'nodes/pve1/qemu-server/9.conf' does not exist"
                ),
                "x",
                Some("r")
            )
            .kind(),
            ErrorKind::NotFound
        );
        assert_eq!(
            to_core_error(http(500, "VM 100 not running"), "x", Some("r")).kind(),
            ErrorKind::InvalidState
        );
        assert_eq!(
            to_core_error(http(500, "VM is paused - cannot shutdown"), "x", Some("r")).kind(),
            ErrorKind::InvalidState
        );
        let task = ApiError::TaskFailed {
            upid: "UPID:pve1:1:1:1:qmstart:100:root@pam:".into(),
            task_type: "qmstart".into(),
            exitstatus: "start failed: disk missing".into(),
            log: vec!["starting".into()],
        };
        let e = to_core_error(task, "start", Some("pve1/100"));
        assert!(e.message().contains("start failed: disk missing"), "{e}");
        assert!(e.message().contains("task log: starting"), "{e}");
    }

    #[test]
    fn an_agent_nobody_can_reach_is_unavailable() {
        for msg in [
            "No QEMU guest agent configured",
            "QEMU guest agent is not running",
            "VM 101 is not running",
            "VM 101 qmp command 'guest-exec' failed - got timeout",
        ] {
            let e = agent_error(http(500, msg), "pre_stop", Some("pve1/101"), "run the hook");
            assert_eq!(e.kind(), ErrorKind::Unavailable, "{msg}");
            assert!(e.is_retryable(), "{msg}");
            assert!(e.message().contains(msg), "{e}");
            assert!(e.message().contains("run the hook"), "{e}");
            assert_eq!(
                (e.provider(), e.operation(), e.resource()),
                (PROVIDER_TYPE, "pre_stop", Some("pve1/101"))
            );
        }
        let gone = agent_error(
            http(
                500,
                "Configuration file 'nodes/pve1/qemu-server/101.conf' does not exist",
            ),
            "pre_stop",
            Some("pve1/101"),
            "run the hook",
        );
        assert_eq!(gone.kind(), ErrorKind::NotFound);
        let denied = agent_error(http(403, "Permission check failed"), "pre_stop", None, "x");
        assert_eq!(denied.kind(), ErrorKind::PermissionDenied);
        let own = agent_error(
            http(
                500,
                "Agent error: Failed to execute child process \"/nope\"",
            ),
            "pre_stop",
            None,
            "x",
        );
        assert_eq!(own.kind(), ErrorKind::Internal);
    }

    /// What PVE answers to `status/shutdown` or `monitor` while something else holds the VM
    /// or its QMP socket is busy: the request can succeed later, so the engine must be free
    /// to retry it inside the grace instead of forcing.
    #[test]
    fn transient_signal_failures_are_retryable() {
        for msg in [
            "VM is locked (backup)",
            "VM is locked (snapshot)",
            "can't lock file '/var/lock/qemu-server/lock-100.conf' - got timeout",
            "VM 100 qmp command 'query-status' failed - unable to connect to VM 100 qmp socket - timeout after 51 retries",
            "VM 100 qmp command 'system_powerdown' failed - got timeout",
            "unable to connect to VM 100 qmp socket - Resource temporarily unavailable",
            "cfs-lock 'file-replication_cfg' error: got lock request timeout",
            "cluster not ready - no quorum?",
        ] {
            let e = to_core_error(http(500, msg), "request_shutdown", Some("pve1/100"));
            assert!(e.is_retryable(), "{msg}: {:?} {e}", e.kind());
        }
        for status in [408, 429, 502, 503, 504, 595, 596] {
            let e = to_core_error(
                http(status, "whatever"),
                "request_shutdown",
                Some("pve1/100"),
            );
            assert!(e.is_retryable(), "{status}: {:?}", e.kind());
        }
        let e = to_core_error(
            ApiError::Transport("operation timed out".into()),
            "request_shutdown",
            Some("pve1/100"),
        );
        assert!(e.is_retryable(), "{e}");
        // Permanent answers stay permanent.
        for msg in ["VM 100 not running", "VM is paused - cannot shutdown"] {
            let e = to_core_error(http(500, msg), "request_shutdown", Some("pve1/100"));
            assert!(!e.is_retryable(), "{msg}");
        }
        assert!(
            !to_core_error(http(403, "Permission check failed"), "x", Some("r")).is_retryable()
        );
    }
}
