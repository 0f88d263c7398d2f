//! Lifecycle actions beyond on/off: reboot, reset, pause/resume, and the escalation or
//! cancellation of a shutdown under way.

use std::sync::Arc;
use std::time::Duration;

use super::{CheckOutcome, Fixture, SETTLE, await_state, with_ignoring_vm, with_vm};
use crate::error::ErrorKind;
use crate::provider::Provider;
use crate::shutdown::{ForcedReason, ShutdownManager, ShutdownOutcome, ShutdownPolicy};
use crate::vm::{PowerState, ShutdownChannel, VmId};

/// A guest reboot ([`Provider::reboot`], through ACPI when declared, else the agent) brings
/// the VM back running.
pub async fn reboot_comes_back_running(
    provider: &Arc<dyn Provider>,
    fixture: &dyn Fixture,
) -> CheckOutcome {
    let caps = provider.capabilities();
    if !caps.reboot {
        return CheckOutcome::Skipped("reboot is declared false".into());
    }
    let channel = if caps.acpi_shutdown {
        ShutdownChannel::Acpi
    } else {
        ShutdownChannel::Agent
    };
    with_vm(fixture, async |vm: &VmId| {
        attempt!(provider.reboot(vm, channel).await, "reboot");
        let state = attempt!(
            await_state(provider, vm, SETTLE, |s| *s == PowerState::Running).await,
            "waiting for running after the reboot"
        );
        ensure!(state == PowerState::Running, "after reboot: {state}");
        CheckOutcome::Passed
    })
    .await
}

/// A hard reset ([`Provider::reset`]) leaves the VM running.
pub async fn reset_keeps_running(
    provider: &Arc<dyn Provider>,
    fixture: &dyn Fixture,
) -> CheckOutcome {
    if !provider.capabilities().reset {
        return CheckOutcome::Skipped("reset is declared false".into());
    }
    with_vm(fixture, async |vm: &VmId| {
        attempt!(provider.reset(vm).await, "reset");
        attempt!(
            await_state(provider, vm, SETTLE, |s| *s == PowerState::Running).await,
            "waiting for running after the reset"
        );
        CheckOutcome::Passed
    })
    .await
}

/// Pause reads back as paused (not off, not running), resume as running.
pub async fn pause_resume_round_trip(
    provider: &Arc<dyn Provider>,
    fixture: &dyn Fixture,
) -> CheckOutcome {
    if !provider.capabilities().pause {
        return CheckOutcome::Skipped("pause is declared false".into());
    }
    with_vm(fixture, async |vm: &VmId| {
        attempt!(provider.pause(vm).await, "pause");
        attempt!(
            await_state(provider, vm, SETTLE, |s| matches!(s, PowerState::Paused(_))).await,
            "waiting for paused"
        );
        attempt!(provider.resume(vm).await, "resume");
        attempt!(
            await_state(provider, vm, SETTLE, |s| *s == PowerState::Running).await,
            "waiting for running after resume"
        );
        CheckOutcome::Passed
    })
    .await
}

/// A grace long enough that a check ending well before it proves the escalation worked.
fn long_grace(fixture: &dyn Fixture) -> Duration {
    fixture.graceful_grace().max(fixture.short_grace() * 10)
}

/// A shutdown under way is escalated twice over: shortening its grace powers the ignoring
/// guest off at the new deadline (not before, not at the old one), and forcing one powers it
/// off at once.
pub async fn escalation_shortens_or_forces(
    provider: &Arc<dyn Provider>,
    fixture: &dyn Fixture,
) -> CheckOutcome {
    let manager = ShutdownManager::new(Arc::clone(provider));
    let long = long_grace(fixture);
    let short = fixture.short_grace();
    let shortened = with_ignoring_vm(fixture, async |vm: &VmId| {
        let t0 = tokio::time::Instant::now();
        let handle = attempt!(manager.start(vm, ShutdownPolicy::with_grace(long)), "start");
        let head_start = short / 2;
        tokio::time::sleep(head_start).await;
        handle.shorten(short);
        let report = handle.wait().await;
        ensure!(
            matches!(
                report.outcome,
                ShutdownOutcome::Forced {
                    reason: ForcedReason::Timeout
                }
            ),
            "shortened shutdown ended {}",
            report.outcome
        );
        ensure!(
            t0.elapsed() >= head_start + short,
            "forced after {:?}, before the shortened grace ({head_start:?} + {short:?})",
            t0.elapsed()
        );
        ensure!(
            report.elapsed < long,
            "the original grace won: {:?}",
            report.elapsed
        );
        off_after_force(provider, vm).await
    })
    .await;
    if shortened != CheckOutcome::Passed {
        return shortened;
    }
    with_ignoring_vm(fixture, async |vm: &VmId| {
        let handle = attempt!(manager.start(vm, ShutdownPolicy::with_grace(long)), "start");
        tokio::time::sleep(short / 2).await;
        handle.force();
        let report = handle.wait().await;
        ensure!(
            matches!(report.outcome, ShutdownOutcome::Forced { .. }),
            "forced shutdown ended {}",
            report.outcome
        );
        ensure!(
            report.elapsed < long,
            "force waited for the grace: {:?}",
            report.elapsed
        );
        off_after_force(provider, vm).await
    })
    .await
}

/// The provider reads the VM off after the engine forced it.
async fn off_after_force(provider: &Arc<dyn Provider>, vm: &VmId) -> CheckOutcome {
    let state = attempt!(provider.power_state(vm).await, "power_state");
    ensure!(state.is_off(), "forced off but the provider says {state}");
    CheckOutcome::Passed
}

/// A shutdown cancelled during its grace is honest about it: either it reads `Cancelled`,
/// nothing powered the VM off, and the VM still runs past the old deadline (a deadline armed
/// on the server was disarmed), or it reads `Failed` because the platform cannot take the
/// request back (KubeVirt once virt-controller deletes the instance). Never `Cancelled` with
/// the VM going down.
pub async fn cancelled_shutdown_is_honest(
    provider: &Arc<dyn Provider>,
    fixture: &dyn Fixture,
) -> CheckOutcome {
    let manager = ShutdownManager::new(Arc::clone(provider));
    let short = fixture.short_grace();
    with_ignoring_vm(fixture, async |vm: &VmId| {
        let handle = attempt!(
            manager.start(vm, ShutdownPolicy::with_grace(short * 2)),
            "start"
        );
        tokio::time::sleep(short / 2).await;
        handle.cancel();
        let report = handle.wait().await;
        match &report.outcome {
            ShutdownOutcome::Cancelled => {}
            ShutdownOutcome::Failed { error } if error.is(ErrorKind::InvalidState) => {
                // The platform could not take the request back, and says so.
                return CheckOutcome::Passed;
            }
            other => return CheckOutcome::Failed(format!("cancelled shutdown ended {other}")),
        }
        ensure!(
            report.power_off_calls == 0,
            "a cancelled shutdown powered the VM off"
        );
        // Past the original deadline: a deadline armed on the server must have been disarmed.
        tokio::time::sleep(short * 3).await;
        let state = attempt!(provider.power_state(vm).await, "power_state");
        ensure!(
            state.is_active(),
            "the shutdown read Cancelled but the VM went down: {state}"
        );
        CheckOutcome::Passed
    })
    .await
}
