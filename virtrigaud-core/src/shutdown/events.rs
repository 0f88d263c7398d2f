//! Progress events of shutdowns, for live display or forwarding.

use std::time::Duration;

use super::lease::StaleLease;
use super::outcome::{ForcedReason, ShutdownOutcome};
use crate::vm::{AgentStatus, PowerState, ShutdownChannel, VmId};

/// One progress event of one VM's shutdown.
#[derive(Debug, Clone)]
pub struct ShutdownEvent {
    /// The VM.
    pub vm: VmId,
    /// Time since the grace period started.
    pub elapsed: Duration,
    /// What happened.
    pub kind: ShutdownEventKind,
}

/// What happened.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ShutdownEventKind {
    /// The shutdown started (or resumed after a restart) with this much grace left.
    Started {
        /// Grace left.
        remaining: Duration,
        /// Resumed from the journal.
        resumed: bool,
    },
    /// Another request joined the shutdown in flight.
    Joined,
    /// A lease found in the journal was not applied: it belonged to an earlier run of the VM
    /// or expired long ago. The shutdown got a full, fresh grace (or, when resuming, the VM
    /// was left alone).
    StaleLeaseDiscarded {
        /// Why it was stale.
        reason: StaleLease,
    },
    /// A cancelled shutdown asked the provider to disarm its server-side deadline.
    Disarmed {
        /// Whether that worked.
        ok: bool,
    },
    /// The grace deadline moved earlier.
    Shortened {
        /// Grace left now.
        remaining: Duration,
    },
    /// The power state was read (or pushed).
    State(PowerState),
    /// The pre-stop hook finished.
    PreStop {
        /// Whether its program exited with 0.
        ok: bool,
        /// Its exit code, when it exited.
        exit_code: Option<i32>,
        /// What became of it (exit code and the start of its output, or why it failed).
        detail: String,
    },
    /// The guest agent was probed.
    AgentProbed(Option<AgentStatus>),
    /// A shutdown request was delivered.
    Signalled {
        /// Channel.
        channel: ShutdownChannel,
        /// Attempt number.
        attempt: u32,
    },
    /// A shutdown request failed.
    SignalFailed {
        /// Channel.
        channel: ShutdownChannel,
        /// Error text.
        error: String,
    },
    /// The hard power-off is being sent.
    Forcing(ForcedReason),
    /// Finished.
    Finished(ShutdownOutcome),
}
