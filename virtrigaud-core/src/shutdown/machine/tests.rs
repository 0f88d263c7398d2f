//! Unit tests of the pure machine: runs stepped by hand, no tokio I/O.

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
