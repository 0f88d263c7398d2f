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
use super::policy::{ChannelPreference, MissingAgent, PausedGuest, ShutdownPolicy};
use crate::capabilities::ProviderCapabilities;
use crate::error::{Error, ErrorKind};
use crate::vm::{AgentStatus, OffReason, PowerState, ShutdownChannel};

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
        argv: Vec<String>,
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

    fn on_inspecting(&mut self, input: Input, now: Instant) -> Command {
        let result = match input {
            Input::PowerState(result) => result,
            Input::Wake => {
                return Command::ReadPowerState {
                    timeout: self
                        .policy
                        .read_budget
                        .min(self.remaining(now))
                        .max(MIN_BOX),
                };
            }
            _ => return self.unexpected(),
        };
        match result {
            Ok(state) => {
                self.last_state = Some(state);
                match state {
                    PowerState::Off(_) => self.finish(ShutdownOutcome::AlreadyOff),
                    _ if self.grace_over(now) => self.force(self.zero_reason(), now),
                    PowerState::Crashed => self.force(ForcedReason::GuestCrashed, now),
                    PowerState::Paused(_) => match self.policy.on_paused {
                        PausedGuest::Resume if self.caps.resume => {
                            self.phase = Phase::Resuming;
                            Command::Resume {
                                timeout: self.stage(self.policy.signal_budget, now),
                            }
                        }
                        PausedGuest::Fail => self.finish(ShutdownOutcome::Failed {
                            error: Error::invalid_state(
                                "the guest is paused and cannot take a shutdown request; \
                                 resume it or force it off",
                            )
                            .with_operation("shutdown"),
                        }),
                        _ => self.force(ForcedReason::GuestPaused, now),
                    },
                    PowerState::ShuttingDown => {
                        // Already on its way down: do not signal, watch. A stale "shutting
                        // down" (PVE reports one) is caught by re-reading now and then.
                        self.recheck_at = Some(later(now, self.recheck_step));
                        self.enter_waiting(now)
                    }
                    _ => self.after_running(now),
                }
            }
            Err(e) if e.is(ErrorKind::NotFound) => {
                self.finish(ShutdownOutcome::Failed { error: e })
            }
            Err(e) if e.is_retryable() && !self.grace_over(now) => {
                // Read again shortly; still inspecting.
                self.phase = Phase::Inspecting;
                Command::Wait {
                    until: later(now, RETRY_PAUSE).min(self.deadline),
                }
            }
            Err(_) if self.grace_over(now) => self.force(self.zero_reason(), now),
            Err(e) => self.finish(ShutdownOutcome::Failed { error: e }),
        }
    }

    fn after_running(&mut self, now: Instant) -> Command {
        if self.grace_over(now) {
            return self.force(self.zero_reason(), now);
        }
        if self.signals_sent > 0 && self.next_resignal.is_none() {
            // Resumed after a crash: the request went out before it.
            if self.caps.resignal && !self.resignal_step.is_zero() {
                self.next_resignal = Some(later(now, self.resignal_step));
                self.resignal_step = self.resignal_step.saturating_mul(2);
            }
            return self.enter_waiting(now);
        }
        if !self.pre_stop_done
            && let Some(hook) = &self.policy.pre_stop
        {
            let (argv, budget) = (hook.command.clone(), hook.budget);
            self.phase = Phase::PreStop;
            return Command::RunPreStop {
                argv,
                timeout: self.stage(budget, now),
            };
        }
        self.choose_channel(now)
    }

    fn stage(&self, budget: Duration, now: Instant) -> Duration {
        budget.min(self.remaining(now))
    }

    fn choose_channel(&mut self, now: Instant) -> Command {
        if self.grace_over(now) {
            return self.force(self.zero_reason(), now);
        }
        match self.policy.channel {
            ChannelPreference::AcpiOnly => {
                if self.caps.acpi {
                    self.signal(ShutdownChannel::Acpi, now)
                } else {
                    self.force(ForcedReason::NoGuestTools, now)
                }
            }
            ChannelPreference::Auto | ChannelPreference::AgentOnly => {
                if self.caps.agent {
                    self.phase = Phase::Probing;
                    Command::ProbeAgent {
                        timeout: self.stage(self.policy.probe_budget, now),
                    }
                } else {
                    self.no_agent(now)
                }
            }
        }
    }

    fn no_agent(&mut self, now: Instant) -> Command {
        if self.acpi_allowed() && self.caps.acpi {
            return self.signal(ShutdownChannel::Acpi, now);
        }
        if self.policy.channel == ChannelPreference::AgentOnly
            && self.policy.on_missing_agent == MissingAgent::Fail
        {
            return self.finish(ShutdownOutcome::Failed {
                error: Error::new(
                    ErrorKind::Unsupported,
                    "no guest agent is connected and the policy allows no other channel",
                )
                .with_operation("shutdown"),
            });
        }
        self.force(ForcedReason::NoGuestTools, now)
    }

    fn on_probed(&mut self, result: Result<AgentStatus, Error>, now: Instant) -> Command {
        match result {
            Ok(AgentStatus::Connected) => self.signal(ShutdownChannel::Agent, now),
            Ok(AgentStatus::Unknown) if !self.caps.acpi => {
                // Cannot tell and nothing else to try: try the agent.
                self.signal(ShutdownChannel::Agent, now)
            }
            Err(e) if e.is(ErrorKind::NotFound) => self.not_found(now),
            _ => self.no_agent(now),
        }
    }

    fn signal(&mut self, channel: ShutdownChannel, now: Instant) -> Command {
        if self.grace_over(now) {
            return self.force(self.zero_reason(), now);
        }
        self.phase = Phase::Signalling;
        self.channel = Some(channel);
        self.recheck_at = None;
        Command::Signal {
            channel,
            timeout: self.stage(self.policy.signal_budget, now),
            attempt: self.signals_sent + self.signal_failures + 1,
            remaining: self.remaining(now),
        }
    }

    fn on_signalled(&mut self, result: Result<(), Error>, now: Instant) -> Command {
        let channel = self.channel.unwrap_or(ShutdownChannel::Acpi);
        match result {
            Ok(()) => {
                self.signals_sent += 1;
                self.signal_failures = 0;
                if self.caps.resignal && !self.resignal_step.is_zero() {
                    self.next_resignal = Some(later(now, self.resignal_step));
                    self.resignal_step = self.resignal_step.saturating_mul(2);
                }
                self.enter_waiting(now)
            }
            Err(e) if e.is(ErrorKind::NotFound) => {
                // Send again after the confirming read if the VM is still there.
                self.next_resignal = Some(later(now, RETRY_PAUSE));
                self.not_found(now)
            }
            Err(e) if e.is(ErrorKind::InvalidState) => {
                // Maybe it went off (or paused) under us: look before deciding.
                self.enter_waiting_with_read(now)
            }
            Err(e) => {
                self.signal_failures += 1;
                if channel == ShutdownChannel::Agent && self.caps.acpi && self.acpi_allowed() {
                    // A hung or failing agent must not eat the grace period: switch channel.
                    return self.signal(ShutdownChannel::Acpi, now);
                }
                if self.signals_sent > 0 {
                    // An earlier request was delivered; keep waiting for it.
                    return self.enter_waiting(now);
                }
                if e.is_retryable() {
                    // A timeout, a 503, a lock held for a moment: try again with backoff
                    // until the deadline; only then does the grace end in a power-off.
                    let pause = RETRY_PAUSE
                        .saturating_mul(1 << self.signal_failures.saturating_sub(1).min(8))
                        .min(MAX_RETRY_PAUSE);
                    self.phase = Phase::Waiting;
                    self.next_resignal = Some(later(now, pause));
                    return self.enter_waiting(now);
                }
                // A permanent failure: the request cannot be delivered at all.
                self.force(ForcedReason::SignalFailed, now)
            }
        }
    }

    /// Whether the policy lets a request go out on ACPI (always, but agent-only without the
    /// fall-back).
    fn acpi_allowed(&self) -> bool {
        match self.policy.channel {
            ChannelPreference::Auto | ChannelPreference::AcpiOnly => true,
            ChannelPreference::AgentOnly => {
                self.policy.on_missing_agent == MissingAgent::FallBackToAcpi
            }
        }
    }

    fn enter_waiting(&mut self, now: Instant) -> Command {
        self.phase = Phase::Waiting;
        if !self.caps.push && self.next_poll.is_none() {
            self.next_poll = Some(later(now, self.poll_step));
        }
        if self.grace_over(now) {
            return self.force(self.zero_reason(), now);
        }
        Command::Wait {
            until: self.next_wake(now),
        }
    }

    fn enter_waiting_with_read(&mut self, now: Instant) -> Command {
        self.phase = Phase::Waiting;
        Command::ReadPowerState {
            timeout: self.stage(self.policy.read_budget, now).max(MIN_BOX),
        }
    }

    /// The next time something is due, never before `now` (a poll planned before a
    /// confirming read may have passed meanwhile).
    fn next_wake(&self, now: Instant) -> Instant {
        let mut wake = self.deadline;
        if !self.caps.push
            && let Some(p) = self.next_poll
        {
            wake = wake.min(p);
        }
        for at in [self.next_resignal, self.recheck_at].into_iter().flatten() {
            wake = wake.min(at);
        }
        wake.max(now)
    }

    fn on_waiting(&mut self, input: Input, now: Instant) -> Command {
        match input {
            Input::Pushed(state) => {
                self.last_state = Some(state);
                if state.is_off() {
                    // Confirm with a read: report off only when the provider says so.
                    return Command::ReadPowerState {
                        timeout: self
                            .policy
                            .read_budget
                            .min(self.remaining(now))
                            .max(MIN_BOX),
                    };
                }
                if state == PowerState::Crashed {
                    return self.force(ForcedReason::GuestCrashed, now);
                }
                if state == PowerState::Running && self.never_signalled() {
                    return self.after_running(now);
                }
                self.wake(now)
            }
            Input::PushClosed => {
                self.caps.push = false;
                self.next_poll = Some(now);
                self.wake(now)
            }
            Input::Wake => self.wake(now),
            Input::PowerState(result) => match result {
                Ok(state) => {
                    self.last_state = Some(state);
                    match state {
                        PowerState::Off(reason) => self.finish(self.off_outcome(reason)),
                        PowerState::Crashed => self.force(ForcedReason::GuestCrashed, now),
                        PowerState::Running if self.never_signalled() => {
                            // "Shutting down" was stale: it runs, and nobody asked it to stop.
                            self.recheck_at = None;
                            self.after_running(now)
                        }
                        _ => self.wake(now),
                    }
                }
                Err(e) if e.is(ErrorKind::NotFound) => self.not_found(now),
                Err(_) => self.wake(now),
            },
            _ => self.unexpected(),
        }
    }

    /// Whether no request was ever tried (the VM was shutting down when we came).
    fn never_signalled(&self) -> bool {
        self.channel.is_none() && self.signals_sent == 0 && self.phase == Phase::Waiting
    }

    /// The outcome of a VM read off while we wait for it.
    fn off_outcome(&self, reason: OffReason) -> ShutdownOutcome {
        if reason == OffReason::Destroyed {
            // Not by us: a server-side deadline or someone else powered it off hard.
            return ShutdownOutcome::Forced {
                reason: ForcedReason::Platform,
            };
        }
        let channel = if self.signals_sent == 0 {
            // No request of ours was delivered: it went down by itself.
            None
        } else {
            self.channel
        };
        ShutdownOutcome::Graceful { channel }
    }

    fn read_now(&self, now: Instant) -> Command {
        Command::ReadPowerState {
            timeout: self.stage(self.policy.read_budget, now).max(MIN_BOX),
        }
    }

    /// Decides what to do when waiting wakes up.
    fn wake(&mut self, now: Instant) -> Command {
        if self.grace_over(now) {
            return self.force(self.zero_reason(), now);
        }
        if self.read_due {
            self.read_due = false;
            return self.read_now(now);
        }
        if !self.caps.push && self.next_poll.is_some_and(|p| now >= p) {
            self.poll_step = (self.poll_step.saturating_mul(2)).min(self.policy.poll_max);
            self.next_poll = Some(later(now, self.poll_step));
            return self.read_now(now);
        }
        if self.recheck_at.is_some_and(|r| now >= r) {
            self.recheck_step = self.recheck_step.saturating_mul(2).min(MAX_RETRY_PAUSE);
            self.recheck_at = Some(later(now, self.recheck_step));
            return self.read_now(now);
        }
        if self.next_resignal.is_some_and(|r| now >= r) {
            self.next_resignal = None;
            let still_running = !matches!(
                self.last_state,
                Some(PowerState::ShuttingDown) | Some(PowerState::Paused(_))
            );
            if still_running {
                if self.signals_sent == 0 {
                    // Retrying a failed first request.
                    let channel = self.channel.unwrap_or(ShutdownChannel::Acpi);
                    return self.signal(channel, now);
                }
                if self.caps.resignal {
                    let channel = self.channel.unwrap_or(ShutdownChannel::Acpi);
                    return self.signal(channel, now);
                }
            }
        }
        self.phase = Phase::Waiting;
        Command::Wait {
            until: self.next_wake(now),
        }
    }

    fn force(&mut self, reason: ForcedReason, now: Instant) -> Command {
        self.forced = Some(reason);
        self.phase = Phase::Forcing;
        let force_deadline = *self
            .force_deadline
            .get_or_insert_with(|| later(now, self.policy.force_budget));
        self.hard_off_calls += 1;
        Command::HardOff {
            timeout: force_deadline
                .saturating_duration_since(now)
                .max(Duration::from_millis(1)),
            reason,
        }
    }

    fn force_time_left(&self, now: Instant) -> Duration {
        self.force_deadline
            .map_or(Duration::ZERO, |d| d.saturating_duration_since(now))
    }

    fn on_forcing(&mut self, input: Input, now: Instant) -> Command {
        match input {
            Input::HardOffDone(Ok(())) => {
                self.hard_off_ok = true;
                self.confirm(now)
            }
            Input::HardOffDone(Err(e)) if e.is(ErrorKind::InvalidState) => {
                // Typically "already powered off": the guest won the race. Look.
                self.confirm(now)
            }
            Input::HardOffDone(Err(e)) if e.is(ErrorKind::NotFound) => self.not_found(now),
            Input::HardOffDone(Err(e)) => {
                if e.is_retryable() && self.force_time_left(now) > RETRY_PAUSE {
                    Command::Wait {
                        until: later(now, RETRY_PAUSE),
                    }
                } else {
                    self.finish(ShutdownOutcome::Failed { error: e })
                }
            }
            Input::Wake => {
                let reason = self.forced.unwrap_or(ForcedReason::Timeout);
                self.force(reason, now)
            }
            _ => self.unexpected(),
        }
    }

    fn confirm(&mut self, now: Instant) -> Command {
        self.phase = Phase::ConfirmingOff;
        let left = self.force_time_left(now).max(Duration::from_millis(1));
        Command::ReadPowerState {
            timeout: self.policy.read_budget.min(left),
        }
    }

    fn on_confirming(&mut self, input: Input, now: Instant) -> Command {
        match input {
            Input::PowerState(Ok(state)) if state.is_off() => {
                let reason = self.forced.unwrap_or(ForcedReason::Timeout);
                if self.hard_off_ok {
                    self.finish(ShutdownOutcome::Forced { reason })
                } else if self.signals_sent > 0 {
                    // Our power-off was refused because the guest had already gone down.
                    self.finish(ShutdownOutcome::Graceful {
                        channel: self.channel,
                    })
                } else {
                    self.finish(ShutdownOutcome::AlreadyOff)
                }
            }
            Input::PowerState(Err(e)) if e.is(ErrorKind::NotFound) => self.not_found(now),
            Input::PowerState(_) | Input::Wake => {
                let left = self.force_time_left(now);
                if left.is_zero() {
                    return self.finish(ShutdownOutcome::Failed {
                        error: Error::timeout(
                            "the VM is not reported off within the hard power-off budget",
                        )
                        .with_operation("power_off"),
                    });
                }
                if matches!(input, Input::Wake) {
                    return self.confirm(now);
                }
                if !self.hard_off_ok {
                    // Refused, yet not off: pause, then power off again.
                    self.phase = Phase::Forcing;
                }
                Command::Wait {
                    until: later(now, RETRY_PAUSE.min(left)),
                }
            }
            _ => self.unexpected(),
        }
    }
}

/// `now + d`, saturating far in the future instead of panicking on overflow.
pub(crate) fn later(now: Instant, d: Duration) -> Instant {
    now.checked_add(d)
        .unwrap_or_else(|| now + FAR_FUTURE.min(d))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::OffReason;

    fn caps(push: bool) -> MachineCaps {
        MachineCaps {
            acpi: true,
            agent: true,
            resignal: true,
            push,
            resume: true,
        }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[tokio::test(start_paused = true)]
    async fn pure_run_of_an_ignoring_guest_forces_exactly_at_the_deadline() {
        let t0 = Instant::now();
        let policy = ShutdownPolicy::with_grace(secs(30));
        let mut m = Machine::new(policy, caps(true), t0 + secs(30));
        let mut now = t0;
        let mut cmd = m.start();
        let mut hard_offs = Vec::new();
        for _ in 0..100 {
            let input = match cmd {
                Command::ReadPowerState { .. } => Input::PowerState(Ok(if hard_offs.is_empty() {
                    PowerState::Running
                } else {
                    PowerState::Off(OffReason::Destroyed)
                })),
                Command::ProbeAgent { .. } => Input::AgentProbed(Ok(AgentStatus::NotConnected)),
                Command::Signal { .. } => Input::Signalled(Ok(())),
                Command::Wait { until } => {
                    now = until;
                    Input::Wake
                }
                Command::HardOff { .. } => {
                    hard_offs.push(now);
                    Input::HardOffDone(Ok(()))
                }
                Command::Finish(ref outcome) => {
                    assert!(matches!(
                        outcome,
                        ShutdownOutcome::Forced {
                            reason: ForcedReason::Timeout
                        }
                    ));
                    break;
                }
                ref other => panic!("unexpected {other:?}"),
            };
            cmd = m.on(input, now);
        }
        assert_eq!(hard_offs, vec![t0 + secs(30)]);
        // Re-sends at 5 s and 15 s (doubling), never after the guest could not hear.
        assert_eq!(m.signals_sent(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_pushed_off_is_confirmed_by_a_read_before_reporting() {
        let t0 = Instant::now();
        let mut m = Machine::new(
            ShutdownPolicy::with_grace(secs(30)),
            caps(true),
            t0 + secs(30),
        );
        let _ = m.start();
        let _ = m.on(Input::PowerState(Ok(PowerState::Running)), t0);
        let _ = m.on(Input::AgentProbed(Ok(AgentStatus::NotConnected)), t0);
        let cmd = m.on(Input::Signalled(Ok(())), t0);
        assert!(matches!(cmd, Command::Wait { .. }));
        let cmd = m.on(
            Input::Pushed(PowerState::Off(OffReason::GuestShutdown)),
            t0 + secs(3),
        );
        assert!(
            matches!(cmd, Command::ReadPowerState { .. }),
            "must confirm, got {cmd:?}"
        );
        // The read still says shutting down: keep waiting, never report off.
        let cmd = m.on(
            Input::PowerState(Ok(PowerState::ShuttingDown)),
            t0 + secs(3),
        );
        assert!(matches!(cmd, Command::Wait { .. }));
        assert!(m.outcome().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn shorten_never_lengthens() {
        let t0 = Instant::now();
        let mut m = Machine::new(
            ShutdownPolicy::with_grace(secs(30)),
            caps(true),
            t0 + secs(30),
        );
        let _ = m.start();
        let _ = m.on(Input::Shortened(t0 + secs(60)), t0);
        assert_eq!(m.deadline(), t0 + secs(30));
        let _ = m.on(Input::Shortened(t0 + secs(10)), t0);
        assert_eq!(m.deadline(), t0 + secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn already_off_from_the_hard_off_after_a_request_is_graceful() {
        let t0 = Instant::now();
        let mut m = Machine::new(
            ShutdownPolicy::with_grace(secs(5)),
            caps(false),
            t0 + secs(5),
        );
        let _ = m.start();
        let _ = m.on(Input::PowerState(Ok(PowerState::Running)), t0);
        let _ = m.on(Input::AgentProbed(Ok(AgentStatus::NotConnected)), t0);
        let _ = m.on(Input::Signalled(Ok(())), t0);
        let cmd = m.on(Input::Wake, t0 + secs(5));
        assert!(matches!(cmd, Command::HardOff { .. }));
        let cmd = m.on(
            Input::HardOffDone(Err(Error::invalid_state("already off"))),
            t0 + secs(5),
        );
        assert!(matches!(cmd, Command::ReadPowerState { .. }));
        let cmd = m.on(
            Input::PowerState(Ok(PowerState::Off(OffReason::GuestShutdown))),
            t0 + secs(5),
        );
        assert!(matches!(
            cmd,
            Command::Finish(ShutdownOutcome::Graceful {
                channel: Some(ShutdownChannel::Acpi)
            })
        ));
    }
}
