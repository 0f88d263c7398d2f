//! A state-machine property test over the pure shutdown [`Machine`]: arbitrary sequences of
//! reads, pushes, errors, NotFound, shortenings, forces and cancels, checked against the
//! engine's promises.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use proptest::prelude::*;
use tokio::time::Instant;
use virtrigaud_core::shutdown::machine::{Command, Input, Machine, MachineCaps};
use virtrigaud_core::shutdown::{ForcedReason, ShutdownOutcome, ShutdownPolicy};
use virtrigaud_core::{AgentStatus, Error, ErrorKind, OffReason, PauseReason, PowerState};

/// What the world answers, one byte of choice at a time; benign once the bytes run out.
struct World {
    choices: std::vec::IntoIter<u8>,
    hard_off_done: bool,
}

impl World {
    fn pick(&mut self) -> Option<u8> {
        self.choices.next()
    }

    fn state(&mut self) -> Result<PowerState, Error> {
        let benign = if self.hard_off_done {
            PowerState::Off(OffReason::Destroyed)
        } else {
            PowerState::Running
        };
        Ok(match self.pick().map(|b| b % 12) {
            None | Some(0..=3) => benign,
            Some(4) => PowerState::ShuttingDown,
            Some(5) => PowerState::Off(OffReason::GuestShutdown),
            Some(6) => PowerState::Off(OffReason::Destroyed),
            Some(7) => PowerState::Paused(PauseReason::User),
            Some(8) => PowerState::Crashed,
            Some(9) => return Err(Error::not_found("no such VM")),
            Some(10) => return Err(Error::unavailable("503")),
            _ => return Err(Error::timeout("read timed out")),
        })
    }

    fn result(&mut self) -> Result<(), Error> {
        match self.pick().map(|b| b % 8) {
            None | Some(0..=3) => Ok(()),
            Some(4) => Err(Error::unavailable("VM is locked")),
            Some(5) => Err(Error::new(ErrorKind::PermissionDenied, "no")),
            Some(6) => Err(Error::not_found("gone")),
            _ => Err(Error::invalid_state("not running")),
        }
    }
}

fn caps_from(bits: u8) -> MachineCaps {
    MachineCaps {
        acpi: bits & 1 != 0,
        agent: bits & 2 != 0,
        resignal: bits & 4 != 0,
        push: bits & 8 != 0,
        resume: bits & 16 != 0,
    }
}

fn is_permanent_signal_error(input: &Input) -> bool {
    matches!(input, Input::Signalled(Err(e))
        if !e.is_retryable() && !e.is(ErrorKind::NotFound) && !e.is(ErrorKind::InvalidState))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn the_machine_keeps_its_promises(
        grace_s in 0u64..120,
        cap_bits in any::<u8>(),
        choices in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async move {
            let t0 = Instant::now();
            let grace = Duration::from_secs(grace_s);
            let policy = ShutdownPolicy::with_grace(grace);
            let caps = caps_from(cap_bits);
            let mut m = Machine::new(policy, caps, t0 + grace);
            let mut world = World { choices: choices.into_iter(), hard_off_done: false };
            let mut now = t0;
            let mut deadline = m.deadline();
            let mut last_input: Option<Input> = None;
            let mut shortened_to_now = grace.is_zero();
            let mut cancelled = false;
            let mut saw_crash = false;
            let mut saw_pause = false;
            let mut permanent_signal_failure = false;
            let mut cmd = m.start();
            let mut outcome = None;
            for _ in 0..5_000 {
                // A join or a force while a call is pending: the machine persists the move
                // and then repeats the pending call as it was.
                let calling = !matches!(
                    cmd,
                    Command::Finish(_) | Command::Wait { .. } | Command::Persist { .. }
                );
                if calling && world.pick().is_some_and(|b| b % 16 == 15) {
                    let by = Duration::from_secs(u64::from(world.pick().unwrap_or(0) % 90));
                    let to = now + by;
                    if to <= now && to < m.deadline() {
                        shortened_to_now = true;
                    }
                    let pending = format!("{cmd:?}");
                    let mut next = m.on(Input::Shortened(to), now);
                    if let Command::Persist { deadline, .. } = next {
                        prop_assert_eq!(deadline, to);
                        next = m.on(Input::Persisted, now);
                    }
                    prop_assert_eq!(format!("{next:?}"), pending, "the pending call changed");
                    prop_assert!(m.deadline() <= deadline);
                    deadline = m.deadline();
                }
                let input = match &cmd {
                    Command::Persist { .. } => Input::Persisted,
                    Command::Finish(o) => {
                        outcome = Some(o.clone());
                        break;
                    }
                    Command::ReadPowerState { .. } => Input::PowerState(world.state()),
                    Command::RunPreStop { .. } => Input::PreStopDone(world.result()),
                    Command::ProbeAgent { .. } => Input::AgentProbed(match world.pick().map(|b| b % 4) {
                        None | Some(0) => Ok(AgentStatus::NotConnected),
                        Some(1) => Ok(AgentStatus::Connected),
                        Some(2) => Ok(AgentStatus::Unknown),
                        _ => Err(Error::timeout("probe")),
                    }),
                    Command::Resume { .. } => Input::Resumed(world.result()),
                    Command::Signal { .. } => Input::Signalled(world.result()),
                    Command::Disarm { .. } => Input::Disarmed(world.result()),
                    Command::HardOff { reason, .. } => {
                        // No hard power-off before the deadline, unless grace 0, an explicit
                        // force, a crashed or paused guest, no channel, or a permanent failure.
                        match reason {
                            ForcedReason::Timeout => prop_assert!(now >= m.deadline()),
                            ForcedReason::GraceZero => {
                                prop_assert!(now >= m.deadline() && shortened_to_now)
                            }
                            ForcedReason::SignalFailed => prop_assert!(permanent_signal_failure),
                            ForcedReason::GuestCrashed => prop_assert!(saw_crash),
                            ForcedReason::GuestPaused => prop_assert!(saw_pause),
                            ForcedReason::NoGuestTools => {}
                            other => prop_assert!(false, "unexpected hard-off reason {other:?}"),
                        }
                        prop_assert!(!cancelled, "a hard power-off after cancel");
                        let r = world.result();
                        if r.is_ok() {
                            world.hard_off_done = true;
                        }
                        Input::HardOffDone(r)
                    }
                    Command::Wait { until } => {
                        prop_assert!(*until >= now, "waiting into the past");
                        match world.pick().map(|b| b % 16) {
                            // A push while waiting.
                            Some(0..=2) if caps.push => {
                                now += until.saturating_duration_since(now) / 2;
                                match world.state() {
                                    Ok(s) => Input::Pushed(s),
                                    Err(_) => Input::PushClosed,
                                }
                            }
                            // A caller shortens the grace (a force when by everything).
                            Some(3) => {
                                let by = Duration::from_secs(u64::from(world.pick().unwrap_or(0) % 90));
                                let to = now + by;
                                if to <= now && to < m.deadline() {
                                    shortened_to_now = true;
                                }
                                Input::Shortened(to)
                            }
                            Some(4) if !m.is_forcing() => {
                                cancelled = true;
                                Input::Cancel
                            }
                            _ => {
                                now = *until;
                                Input::Wake
                            }
                        }
                    }
                };
                match &input {
                    Input::PowerState(Ok(PowerState::Crashed)) | Input::Pushed(PowerState::Crashed) => {
                        saw_crash = true
                    }
                    Input::PowerState(Ok(PowerState::Paused(_))) => saw_pause = true,
                    _ => {}
                }
                if is_permanent_signal_error(&input) {
                    permanent_signal_failure = true;
                }
                // A shortening never lengthens.
                prop_assert!(m.deadline() <= deadline);
                deadline = m.deadline();
                cmd = m.on(input.clone(), now);
                last_input = Some(input);
            }
            // Exactly one report: it ends, and stays ended with the same outcome.
            let outcome = outcome.expect("the machine did not finish");
            let again = m.on(Input::Wake, now);
            prop_assert!(matches!(again, Command::Finish(ref o) if o.as_str() == outcome.as_str()));
            // Never reported off without an Off observation: the last input was a read of Off.
            if outcome.is_off() {
                prop_assert!(
                    matches!(last_input, Some(Input::PowerState(Ok(PowerState::Off(_))))),
                    "{outcome} after {last_input:?}"
                );
            }
            if cancelled {
                prop_assert!(matches!(outcome, ShutdownOutcome::Cancelled) || outcome.is_off() || matches!(outcome, ShutdownOutcome::Failed { .. } | ShutdownOutcome::Vanished),
                    "{outcome}");
            }
            Ok(())
        })?;
    }
}
