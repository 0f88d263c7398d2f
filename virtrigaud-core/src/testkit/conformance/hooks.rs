//! Pre-stop hooks: a VirtualMachine with `powerState: OffGraceful` and a `preStop` runs the
//! hook in the guest and then stops gracefully where the provider declares `guest_exec`; it
//! is refused with a typed error, the VM left running, where it does not.

use std::sync::Arc;

use super::{CheckOutcome, Fixture};
use crate::error::ErrorKind;
use crate::model::{VirtualMachine, from_yaml_str};
use crate::orchestration::{EventReason, Orchestrator};
use crate::provider::Provider;
use crate::reconcile::VmReconciler;
use crate::shutdown::ShutdownManager;
use crate::vm::VmId;

/// The argv a conformance pre-stop hook runs (no bash in the test guests).
pub const CONFORMANCE_PRE_STOP: [&str; 3] = ["/bin/sh", "-c", "echo virtrigaud-pre-stop; sync"];

/// The VirtualMachine object of the check: seed 000's shape with the fixture's grace.
fn vm_object(fixture: &dyn Fixture) -> crate::error::Result<VirtualMachine> {
    let grace = fixture.graceful_grace().as_secs().max(1);
    let argv = CONFORMANCE_PRE_STOP
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect::<Vec<_>>()
        .join(", ");
    Ok(from_yaml_str(&format!(
        "apiVersion: infra.virtrigaud.io/v1beta1\nkind: VirtualMachine\n\
         metadata: {{name: conformance-pre-stop}}\n\
         spec:\n  powerState: OffGraceful\n  lifecycle:\n    gracefulShutdownTimeout: \"{grace}s\"\n\
         \x20   preStop: {{exec: {{command: [{argv}]}}}}\n"
    ))?)
}

/// `guest_exec` declared: with the fixture's executor the reconciler runs
/// [`CONFORMANCE_PRE_STOP`] in the guest (exit 0, a `PreStopCompleted` event) and then stops
/// the VM gracefully (no hard power-off). Declared false: the reconciler refuses the stop
/// with `Unsupported` naming `spec.lifecycle.preStop` and the VM keeps running.
pub async fn pre_stop_runs_in_the_guest_or_is_refused(
    provider: &Arc<dyn Provider>,
    fixture: &dyn Fixture,
) -> CheckOutcome {
    let declared = provider.capabilities().guest_exec;
    let executor = match fixture.pre_stop_executor().await {
        Ok(e) => e,
        Err(e) => return CheckOutcome::Failed(format!("fixture.pre_stop_executor: {e}")),
    };
    if declared && executor.is_none() {
        return CheckOutcome::Skipped(
            "guest_exec is declared, but this test server cannot run guest programs".into(),
        );
    }
    let mut object = attempt!(vm_object(fixture), "the VirtualMachine object");
    let vm = attempt!(fixture.pre_stop_vm().await, "fixture.pre_stop_vm");
    let mut check = async |vm: &VmId| {
        let mut manager = ShutdownManager::builder(Arc::clone(provider));
        if declared && let Some(e) = &executor {
            manager = manager.pre_stop_executor(Arc::clone(e));
        }
        let orch =
            Orchestrator::with_shutdown_manager(Arc::clone(provider), Arc::new(manager.build()));
        let mut events = orch.events().subscribe();
        let r = VmReconciler::new(orch);
        if !declared {
            let e = match r.reconcile(vm, &mut object, &[]).await {
                Ok(a) => return CheckOutcome::Failed(format!("not refused: {a:?}")),
                Err(e) => e,
            };
            ensure!(
                e.kind() == ErrorKind::Unsupported
                    && e.to_string().contains("spec.lifecycle.preStop"),
                "refused with {e}"
            );
            let p = attempt!(provider.power_state(vm).await, "power_state");
            ensure!(p.is_active(), "the VM must keep running: {p}");
            return CheckOutcome::Passed;
        }
        attempt!(
            r.run_until_settled(vm, &mut object, &[], 10).await,
            "reconcile until settled"
        );
        let p = attempt!(provider.power_state(vm).await, "power_state");
        ensure!(p.is_off(), "off after the reconcile: {p}");
        let (mut hook, mut stopped) = (None, None);
        while let Ok(e) = events.try_recv() {
            match e.reason {
                EventReason::PreStopCompleted | EventReason::PreStopFailed => {
                    hook = Some((e.reason, e.message.clone()));
                }
                EventReason::VmStopped => stopped = Some(e.message.clone()),
                _ => {}
            }
        }
        let Some((reason, msg)) = hook else {
            return CheckOutcome::Failed("no pre-stop event".into());
        };
        ensure!(
            reason == EventReason::PreStopCompleted,
            "the hook did not exit 0 in the guest: {msg}"
        );
        let stopped = stopped.unwrap_or_default();
        ensure!(
            stopped.contains("graceful"),
            "not a graceful stop: {stopped}"
        );
        CheckOutcome::Passed
    };
    let outcome = check(&vm).await;
    fixture.cleanup(&vm).await;
    outcome
}
