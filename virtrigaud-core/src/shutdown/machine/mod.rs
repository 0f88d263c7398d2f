//! The pure graceful-shutdown state machine.
//!
//! [`Machine`] does no I/O and reads no clock: the driver feeds it [`Input`]s with the
//! current time and executes the [`Command`] it returns. That makes every rule below unit-
//! and property-testable:
//!
//! - a VM is reported off only after the provider *read* off (never on "shutting down");
//! - the hard power-off happens at the deadline, earlier only for grace 0, a crashed or
//!   (by policy) paused guest, or a request that cannot be delivered on any channel;
//! - every stage is time-boxed by `min(stage budget, time left)`, so no single call eats
//!   the grace period;
//! - after one successful hard power-off no other is issued;
//! - "already off" from the hard power-off is success (the guest won the race);
//! - a NotFound mid-shutdown is confirmed by fresh reads before the VM counts as vanished;
//! - a retryable failure to deliver the request is retried with backoff inside the grace;
//! - a cancelled shutdown disarms the provider's server-side deadline before it ends;
//! - the machine owns the deadline: it is built with the final one (after any journalled
//!   lease), and a join or a force moves it only earlier, as an input
//!   ([`Input::Shortened`], [`Input::Forced`]), answered by [`Command::Persist`].

use std::time::Duration;

use tokio::time::Instant;

use super::outcome::{ForcedReason, ShutdownOutcome};
use super::policy::ShutdownPolicy;
use crate::capabilities::ProviderCapabilities;
use crate::error::{Error, ErrorKind};
use crate::vm::{AgentStatus, PowerState, ShutdownChannel};

/// Pause between retries of a failed state read or hard power-off, and the first pause
/// before re-sending a request that failed with a retryable error.
const RETRY_PAUSE: Duration = Duration::from_millis(500);
/// Longest pause between retries of a request that keeps failing with a retryable error.
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(5);
/// NotFound answers in a row (the first one included) before the VM counts as vanished.
const NOT_FOUND_CONFIRMATIONS: u32 = 3;
/// A time far enough ahead to mean "never" (what `Instant + Duration` saturates to).
const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);
/// Smallest time box given to a call (a zero time-out would fail before trying).
const MIN_BOX: Duration = Duration::from_millis(1);

/// What the machine asks the driver to do next.
#[derive(Debug, Clone)]
pub enum Command {
    /// Read the power state, within `timeout`.
    ReadPowerState {
        /// Time box.
        timeout: Duration,
    },
    /// Run the pre-stop hook's `argv`, within `timeout`.
    RunPreStop {
        /// The hook's command (program first).
        argv: Box<[String]>,
        /// Time box.
        timeout: Duration,
    },
    /// Probe the guest agent, within `timeout`.
    ProbeAgent {
        /// Time box.
        timeout: Duration,
    },
    /// Resume a paused guest, within `timeout`.
    Resume {
        /// Time box.
        timeout: Duration,
    },
    /// Send one shutdown request on `channel`, within `timeout`.
    Signal {
        /// The channel.
        channel: ShutdownChannel,
        /// Time box.
        timeout: Duration,
        /// 1 for the first request.
        attempt: u32,
        /// Time left in the grace period.
        remaining: Duration,
    },
    /// Wait until `until`, or until a pushed power-state change.
    Wait {
        /// Wake-up time.
        until: Instant,
    },
    /// Power off hard, within `timeout`.
    HardOff {
        /// Time box.
        timeout: Duration,
        /// Why.
        reason: ForcedReason,
    },
    /// The shutdown was cancelled after a request was sent: disarm the provider's
    /// server-side deadline ([`crate::Provider::cancel_shutdown`]), within `timeout`.
    Disarm {
        /// Time box.
        timeout: Duration,
    },
    /// The deadline moved earlier (after [`Input::Shortened`] or [`Input::Forced`]): record
    /// it where a restart will find it, then answer [`Input::Persisted`].
    Persist {
        /// The new deadline.
        deadline: Instant,
        /// Time left until it.
        remaining: Duration,
    },
    /// Done.
    Finish(ShutdownOutcome),
}

/// What happened, fed back to the machine.
#[derive(Debug, Clone)]
pub enum Input {
    /// Result of [`Command::ReadPowerState`] (a time-out is an `Err` of kind Timeout).
    PowerState(Result<PowerState, Error>),
    /// Result of [`Command::RunPreStop`].
    PreStopDone(Result<(), Error>),
    /// Result of [`Command::ProbeAgent`].
    AgentProbed(Result<AgentStatus, Error>),
    /// Result of [`Command::Resume`].
    Resumed(Result<(), Error>),
    /// Result of [`Command::Signal`].
    Signalled(Result<(), Error>),
    /// [`Command::Wait`] ended at its time (or the deadline changed).
    Wake,
    /// [`Command::Wait`] ended with a pushed power state.
    Pushed(PowerState),
    /// The push stream ended: switch to polling.
    PushClosed,
    /// Result of [`Command::HardOff`].
    HardOffDone(Result<(), Error>),
    /// Result of [`Command::Disarm`].
    Disarmed(Result<(), Error>),
    /// The caller cancelled.
    Cancel,
    /// A joined request or a caller moved the deadline to `at` (a later one changes
    /// nothing). May arrive at any time, also while a command is pending: the machine answers
    /// [`Command::Persist`] if its deadline moved, and after [`Input::Persisted`] repeats the
    /// pending command (a wait outside the hard power-off is planned anew against the new
    /// deadline).
    Shortened(Instant),
    /// Power off now: the deadline moves to the current time ([`Input::Shortened`] to now).
    Forced,
    /// [`Command::Persist`] is done.
    Persisted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Init,
    Inspecting,
    PreStop,
    Resuming,
    Probing,
    Signalling,
    Waiting,
    Forcing,
    ConfirmingOff,
    Disarming,
    Done,
}

/// The capabilities the machine needs, taken from the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MachineCaps {
    /// ACPI requests possible.
    pub acpi: bool,
    /// Agent requests possible.
    pub agent: bool,
    /// Re-sending a request is safe.
    pub resignal: bool,
    /// Pushed power-state changes are available for this shutdown.
    pub push: bool,
    /// Pause / resume supported.
    pub resume: bool,
}

impl MachineCaps {
    /// From provider capabilities, with `push` telling whether a stream was obtained.
    pub fn from_provider(caps: &ProviderCapabilities, push: bool) -> Self {
        MachineCaps {
            acpi: caps.acpi_shutdown,
            agent: caps.agent_shutdown,
            resignal: caps.repeatable_shutdown_signal,
            push,
            resume: caps.pause,
        }
    }
}

/// The graceful-shutdown state machine of one VM.
#[derive(Debug, Clone)]
pub struct Machine {
    policy: ShutdownPolicy,
    caps: MachineCaps,
    deadline: Instant,
    phase: Phase,
    channel: Option<ShutdownChannel>,
    signals_sent: u32,
    signal_failures: u32,
    next_resignal: Option<Instant>,
    resignal_step: Duration,
    next_poll: Option<Instant>,
    poll_step: Duration,
    /// A read is due at the next wake-up (confirming a NotFound).
    read_due: bool,
    /// Re-read the state at this time: the VM was shutting down when we came, and a stale
    /// "shutting down" must not keep the request from being sent.
    recheck_at: Option<Instant>,
    recheck_step: Duration,
    /// NotFound answers in a row.
    not_found: u32,
    last_state: Option<PowerState>,
    forced: Option<ForcedReason>,
    force_deadline: Option<Instant>,
    hard_off_calls: u32,
    hard_off_ok: bool,
    pre_stop_done: bool,
    shortened_to_zero: bool,
    outcome: Option<ShutdownOutcome>,
    /// The last command other than [`Command::Persist`], repeated after a deadline change.
    pending: Option<Command>,
    /// The agent status read with the first power state, used instead of a probe.
    agent_hint: Option<AgentStatus>,
}

impl Machine {
    /// A machine for one shutdown whose grace ends at `deadline`.
    pub fn new(policy: ShutdownPolicy, caps: MachineCaps, deadline: Instant) -> Self {
        let poll_step = policy.poll_initial.max(Duration::from_millis(1));
        let resignal_step = policy.resignal_interval.unwrap_or(Duration::ZERO);
        Machine {
            policy,
            caps,
            deadline,
            phase: Phase::Init,
            channel: None,
            signals_sent: 0,
            signal_failures: 0,
            next_resignal: None,
            resignal_step,
            next_poll: None,
            poll_step,
            read_due: false,
            recheck_at: None,
            recheck_step: RETRY_PAUSE,
            not_found: 0,
            last_state: None,
            forced: None,
            force_deadline: None,
            hard_off_calls: 0,
            hard_off_ok: false,
            pre_stop_done: false,
            shortened_to_zero: false,
            outcome: None,
            pending: None,
            agent_hint: None,
        }
    }

    /// The same machine continuing a shutdown whose request on `channel` was already
    /// delivered (by a process that crashed since): no pre-stop hook and no first request
    /// again.
    pub fn resumed(mut self, channel: ShutdownChannel) -> Self {
        self.channel = Some(channel);
        self.signals_sent = 1;
        self.pre_stop_done = true;
        self
    }

    /// Notes the guest agent's status as read together with the power state (see
    /// [`crate::Provider::power_state_and_agent`]): the channel is then chosen without a
    /// probe, unless a pre-stop hook runs first (the hint is then stale and dropped).
    pub fn note_agent(&mut self, status: AgentStatus) {
        self.agent_hint = Some(status);
    }

    /// The current grace deadline.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }
    /// Requests delivered so far.
    pub fn signals_sent(&self) -> u32 {
        self.signals_sent
    }
    /// Hard power-off calls so far.
    pub fn hard_off_calls(&self) -> u32 {
        self.hard_off_calls
    }
    /// The last channel used.
    pub fn channel(&self) -> Option<ShutdownChannel> {
        self.channel
    }
    /// The outcome, once finished.
    pub fn outcome(&self) -> Option<&ShutdownOutcome> {
        self.outcome.as_ref()
    }
    /// Whether the machine is in its waiting phase (a deadline change should wake it).
    pub fn is_waiting(&self) -> bool {
        self.phase == Phase::Waiting
    }
    /// Whether the hard power-off stage has begun (it is never interrupted).
    pub fn is_forcing(&self) -> bool {
        matches!(self.phase, Phase::Forcing | Phase::ConfirmingOff)
    }

    /// Starts the machine.
    pub fn start(&mut self) -> Command {
        self.phase = Phase::Inspecting;
        self.issue(Command::ReadPowerState {
            timeout: self.policy.read_budget,
        })
    }

    /// Feeds one input and returns the next command.
    pub fn on(&mut self, input: Input, now: Instant) -> Command {
        let cmd = self.step(input, now);
        self.issue(cmd)
    }

    /// Remembers `cmd` as pending (a [`Command::Persist`] comes in between) and returns it.
    fn issue(&mut self, cmd: Command) -> Command {
        if !matches!(cmd, Command::Persist { .. }) {
            self.pending = Some(cmd.clone());
        }
        cmd
    }

    fn step(&mut self, input: Input, now: Instant) -> Command {
        // A deadline change is recorded in every phase (a report's grace says what applied).
        match input {
            Input::Shortened(at) => return self.shorten(at, now),
            Input::Forced => return self.shorten(now, now),
            Input::Persisted => return self.repeat_pending(now),
            _ => {}
        }
        if self.phase == Phase::Done {
            return self.finished();
        }
        if let Input::Cancel = input {
            return self.cancel();
        }
        if let Input::PowerState(Ok(_)) = input {
            self.not_found = 0;
        }
        let input = match input {
            Input::PushClosed if self.phase != Phase::Waiting => {
                self.caps.push = false;
                Input::Wake
            }
            Input::Pushed(_) if self.phase != Phase::Waiting => Input::Wake,
            other => other,
        };
        match self.phase {
            Phase::Init => self.start(),
            Phase::Inspecting => self.on_inspecting(input, now),
            Phase::PreStop => match input {
                Input::PreStopDone(_) => {
                    self.pre_stop_done = true;
                    self.choose_channel(now)
                }
                _ => self.unexpected(),
            },
            Phase::Resuming => match input {
                Input::Resumed(Ok(())) => self.after_running(now),
                Input::Resumed(Err(e)) if e.is(ErrorKind::NotFound) => self.not_found(now),
                Input::Resumed(Err(_)) => self.force(ForcedReason::GuestPaused, now),
                _ => self.unexpected(),
            },
            Phase::Probing => match input {
                Input::AgentProbed(result) => self.on_probed(result, now),
                _ => self.unexpected(),
            },
            Phase::Signalling => match input {
                Input::Signalled(result) => self.on_signalled(result, now),
                _ => self.unexpected(),
            },
            Phase::Waiting => self.on_waiting(input, now),
            Phase::Forcing => self.on_forcing(input, now),
            Phase::ConfirmingOff => self.on_confirming(input, now),
            Phase::Disarming => match input {
                Input::Disarmed(Ok(())) => self.finish(ShutdownOutcome::Cancelled),
                // Too late, or the provider could not: the VM may still go down. Say so.
                Input::Disarmed(Err(e)) => self.finish(ShutdownOutcome::Failed {
                    error: Error::new(
                        e.kind(),
                        format!(
                            "the shutdown was cancelled, but the provider's own deadline could \
                             not be disarmed, so the VM may still go down: {e}"
                        ),
                    )
                    .with_operation("cancel_shutdown"),
                }),
                _ => Command::Disarm {
                    timeout: self.policy.signal_budget.max(MIN_BOX),
                },
            },
            Phase::Done => self.finished(),
        }
    }

    /// Moves the deadline to `at` if that is earlier (nothing lengthens a grace period); at
    /// or before `now`, that is a force. Asks for the move to be persisted.
    fn shorten(&mut self, at: Instant, now: Instant) -> Command {
        if at >= self.deadline {
            return self.repeat_pending(now);
        }
        self.deadline = at;
        if at <= now {
            self.shortened_to_zero = true;
        }
        Command::Persist {
            deadline: at,
            remaining: self.remaining(now),
        }
    }

    /// The pending command again, after a deadline change: a call decided before it is made
    /// as decided; a wait (but the hard power-off's pauses) is planned anew.
    fn repeat_pending(&mut self, now: Instant) -> Command {
        match &self.pending {
            Some(Command::Wait { .. }) if !self.is_forcing() => self.step(Input::Wake, now),
            Some(cmd) => cmd.clone(),
            None => self.step(Input::Wake, now),
        }
    }

    /// The caller cancelled: nothing more is sent but, once a request went out, the order to
    /// disarm the provider's own deadline (a hard power-off under way completes first: the
    /// driver does not deliver a cancel while forcing).
    fn cancel(&mut self) -> Command {
        if self.channel.is_some() && !self.is_forcing() && self.phase != Phase::Disarming {
            self.phase = Phase::Disarming;
            return Command::Disarm {
                timeout: self.policy.signal_budget.max(MIN_BOX),
            };
        }
        self.finish(ShutdownOutcome::Cancelled)
    }

    /// A NotFound answer: the VM may have vanished, or the answer may be wrong (a VM moving
    /// between nodes, an orphaned instance, a proxy's 404). Read again before believing it.
    fn not_found(&mut self, now: Instant) -> Command {
        self.not_found += 1;
        if self.not_found >= NOT_FOUND_CONFIRMATIONS {
            return self.finish(ShutdownOutcome::Vanished);
        }
        if self.is_forcing() {
            self.phase = Phase::ConfirmingOff;
            return Command::Wait {
                until: later(now, RETRY_PAUSE),
            };
        }
        self.phase = Phase::Waiting;
        self.read_due = true;
        Command::Wait {
            until: later(now, RETRY_PAUSE).min(self.deadline),
        }
    }

    fn finished(&self) -> Command {
        Command::Finish(self.outcome.clone().unwrap_or(ShutdownOutcome::Cancelled))
    }

    fn finish(&mut self, outcome: ShutdownOutcome) -> Command {
        self.phase = Phase::Done;
        self.outcome = Some(outcome.clone());
        Command::Finish(outcome)
    }

    /// An input that does not belong to the phase (a driver bug): re-inspect the VM.
    fn unexpected(&mut self) -> Command {
        if self.is_forcing() {
            self.phase = Phase::ConfirmingOff;
        } else {
            self.phase = Phase::Waiting;
        }
        Command::ReadPowerState {
            timeout: self.policy.read_budget,
        }
    }

    fn remaining(&self, now: Instant) -> Duration {
        self.deadline.saturating_duration_since(now)
    }

    fn grace_over(&self, now: Instant) -> bool {
        now >= self.deadline
    }

    fn zero_reason(&self) -> ForcedReason {
        if self.shortened_to_zero || self.policy.grace.is_zero() {
            ForcedReason::GraceZero
        } else {
            ForcedReason::Timeout
        }
    }
}

/// `now + d`, saturating far in the future instead of panicking on overflow.
pub(crate) fn later(now: Instant, d: Duration) -> Instant {
    now.checked_add(d)
        .unwrap_or_else(|| now + FAR_FUTURE.min(d))
}

mod phases;
#[cfg(test)]
mod tests;
