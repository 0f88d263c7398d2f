//! Unit tests of the pure machine, stepped by hand: inputs in, commands out, no runtime.

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

#[test]
fn pure_run_of_an_ignoring_guest_forces_exactly_at_the_deadline() {
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

#[test]
fn a_pushed_off_is_confirmed_by_a_read_before_reporting() {
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

#[test]
fn shorten_never_lengthens() {
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

#[test]
fn already_off_from_the_hard_off_after_a_request_is_graceful() {
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

// Deadline inputs, stepped directly: inputs in, commands out, no runtime and no clock but
// the times passed in.

/// A push-capable machine without re-sends that has delivered its ACPI request at `t0` and
/// now waits for the VM (or the deadline at `t0 + grace`).
fn waiting_after_the_request(grace: u64, t0: Instant) -> Machine {
    let caps = MachineCaps {
        resignal: false,
        ..caps(true)
    };
    let mut m = Machine::new(
        ShutdownPolicy::with_grace(secs(grace)),
        caps,
        t0 + secs(grace),
    );
    assert!(matches!(m.start(), Command::ReadPowerState { .. }));
    let cmd = m.on(Input::PowerState(Ok(PowerState::Running)), t0);
    assert!(matches!(cmd, Command::ProbeAgent { .. }), "{cmd:?}");
    let cmd = m.on(Input::AgentProbed(Ok(AgentStatus::NotConnected)), t0);
    assert!(
        matches!(
            cmd,
            Command::Signal {
                channel: ShutdownChannel::Acpi,
                ..
            }
        ),
        "{cmd:?}"
    );
    let cmd = m.on(Input::Signalled(Ok(())), t0);
    assert!(
        matches!(cmd, Command::Wait { until } if until == t0 + secs(grace)),
        "{cmd:?}"
    );
    m
}

fn is_hard_off(cmd: &Command, why: ForcedReason) -> bool {
    matches!(cmd, Command::HardOff { reason, .. } if *reason == why)
}

#[test]
fn shortened_before_the_grace_ends_moves_the_hard_off_to_the_new_deadline() {
    let t0 = Instant::now();
    let mut m = waiting_after_the_request(60, t0);
    let cmd = m.on(Input::Shortened(t0 + secs(20)), t0 + secs(5));
    assert!(
        matches!(cmd, Command::Persist { deadline, remaining }
            if deadline == t0 + secs(20) && remaining == secs(15)),
        "{cmd:?}"
    );
    assert_eq!(m.deadline(), t0 + secs(20));
    // Persisted: the wait is planned anew against the new deadline, nothing is sent early.
    let cmd = m.on(Input::Persisted, t0 + secs(5));
    assert!(
        matches!(cmd, Command::Wait { until } if until == t0 + secs(20)),
        "{cmd:?}"
    );
    let cmd = m.on(Input::Wake, t0 + secs(20));
    // The grace ran out (it was not cut to nothing): a timeout, at the new deadline.
    assert!(is_hard_off(&cmd, ForcedReason::Timeout), "{cmd:?}");
    assert_eq!(m.hard_off_calls(), 1);
}

#[test]
fn shortened_to_a_time_already_past_forces_at_once_as_grace_zero() {
    let t0 = Instant::now();
    let mut m = waiting_after_the_request(60, t0);
    let now = t0 + secs(5);
    let cmd = m.on(Input::Shortened(t0 + secs(2)), now);
    assert!(
        matches!(cmd, Command::Persist { remaining, .. } if remaining.is_zero()),
        "{cmd:?}"
    );
    let cmd = m.on(Input::Persisted, now);
    assert!(is_hard_off(&cmd, ForcedReason::GraceZero), "{cmd:?}");
}

#[test]
fn shortened_after_the_grace_ended_is_recorded_without_a_second_hard_off() {
    let t0 = Instant::now();
    let mut m = waiting_after_the_request(10, t0);
    let cmd = m.on(Input::Wake, t0 + secs(10));
    assert!(is_hard_off(&cmd, ForcedReason::Timeout), "{cmd:?}");
    // A forcing join arrives while the hard power-off is pending.
    let cmd = m.on(Input::Shortened(t0 + secs(10)), t0 + secs(10));
    assert!(
        matches!(cmd, Command::HardOff { .. }),
        "nothing moved: {cmd:?}"
    );
    let cmd = m.on(Input::Forced, t0 + secs(11));
    // The deadline had passed already: a force changes nothing, the pending call stands.
    assert!(is_hard_off(&cmd, ForcedReason::Timeout), "{cmd:?}");
    assert_eq!(m.hard_off_calls(), 1);
    assert_eq!(m.deadline(), t0 + secs(10));
    // A retryable failure pauses; a deadline move in that pause does not cut it short.
    let cmd = m.on(
        Input::HardOffDone(Err(Error::unavailable("busy"))),
        t0 + secs(11),
    );
    let Command::Wait { until } = cmd else {
        panic!("{cmd:?}")
    };
    let cmd = m.on(Input::Shortened(t0 + secs(1)), t0 + secs(11));
    assert!(matches!(cmd, Command::Persist { .. }), "{cmd:?}");
    let cmd = m.on(Input::Persisted, t0 + secs(11));
    assert!(
        matches!(cmd, Command::Wait { until: again } if again == until),
        "{cmd:?}"
    );
    assert_eq!(m.hard_off_calls(), 1);
}

#[test]
fn forced_while_waiting_powers_off_now_as_grace_zero() {
    let t0 = Instant::now();
    let mut m = waiting_after_the_request(60, t0);
    let now = t0 + secs(3);
    let cmd = m.on(Input::Forced, now);
    assert!(
        matches!(cmd, Command::Persist { deadline, remaining } if deadline == now && remaining.is_zero()),
        "{cmd:?}"
    );
    let cmd = m.on(Input::Persisted, now);
    assert!(is_hard_off(&cmd, ForcedReason::GraceZero), "{cmd:?}");
    let cmd = m.on(Input::HardOffDone(Ok(())), now);
    assert!(matches!(cmd, Command::ReadPowerState { .. }), "{cmd:?}");
    let cmd = m.on(
        Input::PowerState(Ok(PowerState::Off(OffReason::Destroyed))),
        now,
    );
    assert!(
        matches!(
            cmd,
            Command::Finish(ShutdownOutcome::Forced {
                reason: ForcedReason::GraceZero
            })
        ),
        "{cmd:?}"
    );
}

#[test]
fn forced_while_a_call_is_pending_repeats_the_call_then_sends_nothing_more() {
    let t0 = Instant::now();
    let mut m = Machine::new(
        ShutdownPolicy::with_grace(secs(60)),
        caps(true),
        t0 + secs(60),
    );
    let _ = m.start();
    let probe = m.on(Input::PowerState(Ok(PowerState::Running)), t0);
    assert!(matches!(probe, Command::ProbeAgent { .. }), "{probe:?}");
    // The force came while the read ran: persisted, then the probe goes out as decided.
    let cmd = m.on(Input::Forced, t0 + secs(1));
    assert!(matches!(cmd, Command::Persist { .. }), "{cmd:?}");
    let cmd = m.on(Input::Persisted, t0 + secs(1));
    assert_eq!(format!("{cmd:?}"), format!("{probe:?}"));
    // No request after the force: the hard power-off comes next.
    let cmd = m.on(
        Input::AgentProbed(Ok(AgentStatus::NotConnected)),
        t0 + secs(2),
    );
    assert!(is_hard_off(&cmd, ForcedReason::GraceZero), "{cmd:?}");
    assert_eq!(m.signals_sent(), 0);
}

#[test]
fn a_join_with_a_longer_grace_changes_nothing() {
    let t0 = Instant::now();
    let mut m = waiting_after_the_request(30, t0);
    // While waiting: no persist, the same wait.
    let cmd = m.on(Input::Shortened(t0 + secs(300)), t0 + secs(5));
    assert!(
        matches!(cmd, Command::Wait { until } if until == t0 + secs(30)),
        "{cmd:?}"
    );
    // The same deadline again is no move either.
    let cmd = m.on(Input::Shortened(t0 + secs(30)), t0 + secs(6));
    assert!(matches!(cmd, Command::Wait { .. }), "{cmd:?}");
    assert_eq!(m.deadline(), t0 + secs(30));
    // While a read is pending: the same read.
    let read = m.on(
        Input::Pushed(PowerState::Off(OffReason::GuestShutdown)),
        t0 + secs(7),
    );
    assert!(matches!(read, Command::ReadPowerState { .. }), "{read:?}");
    let cmd = m.on(Input::Shortened(t0 + secs(31)), t0 + secs(7));
    assert_eq!(format!("{cmd:?}"), format!("{read:?}"));
    // And the hard power-off still comes at the original deadline, as a timeout.
    let mut cmd = m.on(Input::PowerState(Ok(PowerState::Running)), t0 + secs(7));
    if let Command::Wait { until } = cmd {
        assert!(until <= t0 + secs(30));
        cmd = m.on(Input::Wake, t0 + secs(30));
    }
    assert!(is_hard_off(&cmd, ForcedReason::Timeout), "{cmd:?}");
    assert_eq!(m.deadline(), t0 + secs(30));
}

#[test]
fn a_restart_with_a_journalled_deadline_in_the_past_forces_without_a_new_request() {
    let t0 = Instant::now() + secs(3600);
    let policy = ShutdownPolicy::with_grace(secs(30));
    // The lease said the grace ended a second ago and the request was delivered.
    let mut m =
        Machine::new(policy.clone(), caps(true), t0 - secs(1)).resumed(ShutdownChannel::Acpi);
    assert!(matches!(m.start(), Command::ReadPowerState { .. }));
    let cmd = m.on(Input::PowerState(Ok(PowerState::Running)), t0);
    // A grace that ran out, not one cut to zero: no probe, no pre-stop, no request.
    assert!(is_hard_off(&cmd, ForcedReason::Timeout), "{cmd:?}");
    assert_eq!(m.signals_sent(), 1);

    // Without a delivered request, the same: the grace is over, nothing is sent.
    let mut m = Machine::new(policy.clone(), caps(true), t0 - secs(1));
    let _ = m.start();
    let cmd = m.on(Input::PowerState(Ok(PowerState::Running)), t0);
    assert!(is_hard_off(&cmd, ForcedReason::Timeout), "{cmd:?}");
    assert_eq!(m.signals_sent(), 0);

    // A VM that went off meanwhile is already off: no hard power-off at all.
    let mut m = Machine::new(policy, caps(true), t0 - secs(1)).resumed(ShutdownChannel::Acpi);
    let _ = m.start();
    let cmd = m.on(
        Input::PowerState(Ok(PowerState::Off(OffReason::GuestShutdown))),
        t0,
    );
    assert!(
        matches!(cmd, Command::Finish(ShutdownOutcome::AlreadyOff)),
        "{cmd:?}"
    );
    assert_eq!(m.hard_off_calls(), 0);
}

#[test]
fn a_restart_within_the_grace_waits_for_the_delivered_request_until_the_journalled_deadline() {
    let t0 = Instant::now();
    let caps = MachineCaps {
        resignal: false,
        ..caps(true)
    };
    let mut m = Machine::new(ShutdownPolicy::with_grace(secs(60)), caps, t0 + secs(12))
        .resumed(ShutdownChannel::Acpi);
    let _ = m.start();
    let cmd = m.on(Input::PowerState(Ok(PowerState::Running)), t0);
    // Not sent again, and no earlier than the lease's deadline.
    assert!(
        matches!(cmd, Command::Wait { until } if until == t0 + secs(12)),
        "{cmd:?}"
    );
    let cmd = m.on(Input::Wake, t0 + secs(12));
    assert!(is_hard_off(&cmd, ForcedReason::Timeout), "{cmd:?}");
    assert_eq!(m.signals_sent(), 1);
}
