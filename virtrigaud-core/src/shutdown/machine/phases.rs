//! The transitions of each phase of the [`Machine`]: inspecting the VM, the pre-stop hook,
//! choosing a channel, signalling, waiting, and the hard power-off with its confirming read.

use std::time::Duration;

use tokio::time::Instant;

use super::{Command, Input, MAX_RETRY_PAUSE, MIN_BOX, Machine, Phase, RETRY_PAUSE, later};
use crate::error::{Error, ErrorKind};
use crate::shutdown::outcome::{ForcedReason, ShutdownOutcome};
use crate::shutdown::policy::{ChannelPreference, MissingAgent, PausedGuest};
use crate::vm::{AgentStatus, OffReason, PowerState, ShutdownChannel};

impl Machine {
    pub(super) fn on_inspecting(&mut self, input: Input, now: Instant) -> Command {
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

    pub(super) fn after_running(&mut self, now: Instant) -> Command {
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
            let (argv, budget) = (hook.command.clone().into_boxed_slice(), hook.budget);
            self.phase = Phase::PreStop;
            self.agent_hint = None;
            // Never more than half the grace left: the guest is always asked to shut
            // down with at least the other half to go.
            return Command::RunPreStop {
                argv,
                timeout: self.stage(budget.min(self.remaining(now) / 2), now),
            };
        }
        self.choose_channel(now)
    }

    pub(super) fn stage(&self, budget: Duration, now: Instant) -> Duration {
        budget.min(self.remaining(now))
    }

    pub(super) fn choose_channel(&mut self, now: Instant) -> Command {
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
                    if let Some(status) = self.agent_hint.take() {
                        return self.on_probed(Ok(status), now);
                    }
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

    pub(super) fn no_agent(&mut self, now: Instant) -> Command {
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

    pub(super) fn on_probed(
        &mut self,
        result: Result<AgentStatus, Error>,
        now: Instant,
    ) -> Command {
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

    pub(super) fn signal(&mut self, channel: ShutdownChannel, now: Instant) -> Command {
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

    pub(super) fn on_signalled(&mut self, result: Result<(), Error>, now: Instant) -> Command {
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
    pub(super) fn acpi_allowed(&self) -> bool {
        match self.policy.channel {
            ChannelPreference::Auto | ChannelPreference::AcpiOnly => true,
            ChannelPreference::AgentOnly => {
                self.policy.on_missing_agent == MissingAgent::FallBackToAcpi
            }
        }
    }

    pub(super) fn enter_waiting(&mut self, now: Instant) -> Command {
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

    pub(super) fn enter_waiting_with_read(&mut self, now: Instant) -> Command {
        self.phase = Phase::Waiting;
        Command::ReadPowerState {
            timeout: self.stage(self.policy.read_budget, now).max(MIN_BOX),
        }
    }

    /// The next time something is due, never before `now` (a poll planned before a
    /// confirming read may have passed meanwhile).
    pub(super) fn next_wake(&self, now: Instant) -> Instant {
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

    pub(super) fn on_waiting(&mut self, input: Input, now: Instant) -> Command {
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
    pub(super) fn never_signalled(&self) -> bool {
        self.channel.is_none() && self.signals_sent == 0 && self.phase == Phase::Waiting
    }

    /// The outcome of a VM read off while we wait for it.
    pub(super) fn off_outcome(&self, reason: OffReason) -> ShutdownOutcome {
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

    pub(super) fn read_now(&self, now: Instant) -> Command {
        Command::ReadPowerState {
            timeout: self.stage(self.policy.read_budget, now).max(MIN_BOX),
        }
    }

    /// Decides what to do when waiting wakes up.
    pub(super) fn wake(&mut self, now: Instant) -> Command {
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

    pub(super) fn force(&mut self, reason: ForcedReason, now: Instant) -> Command {
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

    pub(super) fn force_time_left(&self, now: Instant) -> Duration {
        self.force_deadline
            .map_or(Duration::ZERO, |d| d.saturating_duration_since(now))
    }

    pub(super) fn on_forcing(&mut self, input: Input, now: Instant) -> Command {
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

    pub(super) fn confirm(&mut self, now: Instant) -> Command {
        self.phase = Phase::ConfirmingOff;
        let left = self.force_time_left(now).max(Duration::from_millis(1));
        Command::ReadPowerState {
            timeout: self.policy.read_budget.min(left),
        }
    }

    pub(super) fn on_confirming(&mut self, input: Input, now: Instant) -> Command {
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
