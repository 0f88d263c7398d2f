//! What a shutdown ended with.

use std::fmt;
use std::time::Duration;

use super::hooks::PreStopRun;
use crate::error::Error;
use crate::vm::ShutdownChannel;

/// Why the VM was powered off hard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ForcedReason {
    /// The grace period ran out.
    Timeout,
    /// The shutdown request could not be delivered on any channel.
    SignalFailed,
    /// No guest agent / tools and no other channel (or the policy said power off).
    NoGuestTools,
    /// The grace period was zero (or shortened to zero by a forcing request).
    GraceZero,
    /// The guest had crashed.
    GuestCrashed,
    /// The guest was paused and the policy said power off.
    GuestPaused,
    /// The platform powered it off hard before the engine did: a server-side deadline armed
    /// with the request (Proxmox `forceStop`, KubeVirt's termination grace) or someone else's
    /// power-off. The VM read `Off` with [`crate::OffReason::Destroyed`].
    Platform,
}

impl ForcedReason {
    /// A stable snake_case name.
    pub fn as_str(&self) -> &'static str {
        match self {
            ForcedReason::Timeout => "timeout",
            ForcedReason::SignalFailed => "signal_failed",
            ForcedReason::NoGuestTools => "no_guest_tools",
            ForcedReason::GraceZero => "grace_zero",
            ForcedReason::GuestCrashed => "guest_crashed",
            ForcedReason::GuestPaused => "guest_paused",
            ForcedReason::Platform => "platform",
        }
    }
}

/// How a shutdown ended.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ShutdownOutcome {
    /// The VM was already off.
    AlreadyOff,
    /// The guest shut down by itself after a request (`channel`), or was already shutting
    /// down when we came (`None`).
    Graceful {
        /// The channel of the request it honoured.
        channel: Option<ShutdownChannel>,
    },
    /// The VM was powered off hard.
    Forced {
        /// Why.
        reason: ForcedReason,
    },
    /// The VM disappeared during the shutdown: NotFound on several fresh reads in a row. It
    /// is *not* counted as off ([`ShutdownOutcome::is_off`]): the provider can no longer see it,
    /// which does not prove that it stopped.
    Vanished,
    /// The shutdown was cancelled; the VM is as it was when cancelled (see the report).
    Cancelled,
    /// The shutdown failed; the VM may still be running.
    Failed {
        /// What went wrong.
        error: Error,
    },
}

impl ShutdownOutcome {
    /// Whether the VM is known to be off at the end: it was read off. A VM that vanished is
    /// not (it may run elsewhere: moved to another node, an instance left behind by a
    /// deleted object); see [`ShutdownOutcome::is_gone`].
    pub fn is_off(&self) -> bool {
        matches!(
            self,
            ShutdownOutcome::AlreadyOff
                | ShutdownOutcome::Graceful { .. }
                | ShutdownOutcome::Forced { .. }
        )
    }
    /// Whether the VM could no longer be found, after confirming reads.
    pub fn is_gone(&self) -> bool {
        matches!(self, ShutdownOutcome::Vanished)
    }
    /// A stable snake_case name, used as the metrics `outcome` label.
    pub fn as_str(&self) -> &'static str {
        match self {
            ShutdownOutcome::AlreadyOff => "already_off",
            ShutdownOutcome::Graceful { .. } => "graceful",
            ShutdownOutcome::Forced { .. } => "forced",
            ShutdownOutcome::Vanished => "vanished",
            ShutdownOutcome::Cancelled => "cancelled",
            ShutdownOutcome::Failed { .. } => "failed",
        }
    }
}

impl fmt::Display for ShutdownOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShutdownOutcome::Graceful { channel: Some(c) } => write!(f, "graceful ({c})"),
            ShutdownOutcome::Graceful { channel: None } => f.write_str("graceful (guest)"),
            ShutdownOutcome::Forced { reason } => write!(f, "forced ({})", reason.as_str()),
            ShutdownOutcome::Failed { error } => write!(f, "failed ({error})"),
            other => f.write_str(other.as_str()),
        }
    }
}

/// The report of one shutdown.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// How it ended.
    pub outcome: ShutdownOutcome,
    /// Time from the start of the grace period to the end (across restarts: from the
    /// journalled start).
    pub elapsed: Duration,
    /// The grace period that applied (after any shortening).
    pub grace: Duration,
    /// Shutdown requests delivered to the guest.
    pub signals_sent: u32,
    /// Hard power-off calls made.
    pub power_off_calls: u32,
    /// Provider calls made by the engine for this shutdown (reads, probes, signals, offs).
    pub provider_calls: u32,
    /// The last channel used.
    pub channel: Option<ShutdownChannel>,
    /// What became of the pre-stop hook (`None`: no hook ran): its exit code and output,
    /// or why it failed.
    pub pre_stop: Option<PreStopRun>,
    /// Whether this shutdown resumed a journalled one after a restart.
    pub resumed: bool,
    /// Time from the start of the grace period to the first sign that the VM was off: a pushed
    /// or read `Off`, or the hard power-off call returning. The report itself ends after that
    /// sign is confirmed by a read (see [`ShutdownReport::elapsed`]). `None` when the VM was
    /// not seen off (cancelled, failed, vanished).
    pub off_observed: Option<Duration>,
}

impl ShutdownReport {
    /// A report of nothing done, ending with `outcome`.
    pub(crate) fn empty(outcome: ShutdownOutcome) -> Self {
        ShutdownReport {
            outcome,
            elapsed: Duration::ZERO,
            grace: Duration::ZERO,
            signals_sent: 0,
            power_off_calls: 0,
            provider_calls: 0,
            channel: None,
            pre_stop: None,
            resumed: false,
            off_observed: None,
        }
    }

    /// The report of a shutdown whose task was dropped before it reported (its manager was
    /// dropped, the runtime shut down).
    pub(crate) fn abandoned() -> Self {
        Self::empty(ShutdownOutcome::Failed {
            error: Error::cancelled(
                "the shutdown manager was dropped; the lease stays in its journal",
            ),
        })
    }

    /// The report of a caller that cancelled while others still wait for the shutdown.
    pub(crate) fn detached() -> Self {
        Self::empty(ShutdownOutcome::Cancelled)
    }
}
