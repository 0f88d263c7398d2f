//! `capabilities_tell_the_truth`: every declared flag agrees with what the provider does.

use std::sync::Arc;

use super::{CheckOutcome, Fixture};
use crate::error::{ErrorKind, Result};
use crate::provider::{DeleteOptions, Provider, ReconfigureRequest, VmCreateSpec};
use crate::vm::{ShutdownChannel, VmId};

/// Whether `res` agrees with a declared flag: a `true` flag must not answer `Unsupported`,
/// a `false` one must.
fn agrees<T>(flag: &str, declared: bool, res: &Result<T>) -> std::result::Result<(), String> {
    let unsupported = matches!(res, Err(e) if e.is(ErrorKind::Unsupported));
    match (declared, unsupported) {
        (true, true) => Err(format!(
            "{flag} is declared but the call answers Unsupported"
        )),
        (false, false) => Err(format!(
            "{flag} is declared false but the call does not answer Unsupported ({})",
            match res {
                Ok(_) => "it succeeded".to_string(),
                Err(e) => e.to_string(),
            }
        )),
        _ => Ok(()),
    }
}

/// Checks each capability flag against behaviour: the sub-trait accessors match the
/// snapshot and clone flags, a declared watch opens, and every operation a flag covers
/// answers `Unsupported` exactly when its flag is false. True flags are exercised with
/// calls that leave the VM as it was (pause then resume, an empty reconfigure, a reset); a
/// VM is never created or deleted here (other checks and the fixtures do that).
pub async fn capabilities_tell_the_truth(
    provider: &Arc<dyn Provider>,
    fixture: &dyn Fixture,
) -> CheckOutcome {
    let caps = provider.capabilities();
    let mut wrong = Vec::new();
    if caps.snapshots != provider.snapshotter().is_some() {
        wrong.push(format!(
            "snapshots is {} but snapshotter() is {}",
            caps.snapshots,
            if provider.snapshotter().is_some() {
                "Some"
            } else {
                "None"
            }
        ));
    }
    let clones = caps.linked_clones || caps.full_clones;
    if clones != provider.cloner().is_some() {
        wrong.push(format!(
            "linked_clones || full_clones is {clones} but cloner() is {}",
            if provider.cloner().is_some() {
                "Some"
            } else {
                "None"
            }
        ));
    }
    wrong.extend(
        agrees(
            "list_vms",
            caps.list_vms,
            &provider.list_vms(&Default::default()).await,
        )
        .err(),
    );
    wrong.extend(agrees("inventory", caps.inventory, &provider.inventory().await).err());
    if !caps.create {
        let spec = VmCreateSpec::new("vr-conformance-never-created", 1, 256);
        wrong.extend(agrees("create", false, &provider.create(&spec).await).err());
    }
    if !caps.delete {
        let gone = fixture.missing_vm();
        let res = provider.delete(&gone, &DeleteOptions::default()).await;
        wrong.extend(agrees("delete", false, &res).err());
    }
    let vm = match fixture.cooperative_vm().await {
        Ok(vm) => vm,
        Err(e) => return CheckOutcome::Failed(format!("fixture.cooperative_vm: {e}")),
    };
    wrong.extend(on_a_vm(provider, &vm).await);
    fixture.cleanup(&vm).await;
    if wrong.is_empty() {
        CheckOutcome::Passed
    } else {
        CheckOutcome::Failed(wrong.join("; "))
    }
}

async fn on_a_vm(provider: &Arc<dyn Provider>, vm: &VmId) -> Vec<String> {
    let caps = provider.capabilities();
    let mut wrong = Vec::new();
    match provider.watch_power_state(vm).await {
        Ok(w) if w.is_some() != caps.power_state_watch => wrong.push(format!(
            "power_state_watch is {} but watch_power_state gave {}",
            caps.power_state_watch,
            if w.is_some() { "a stream" } else { "none" }
        )),
        Ok(_) => {}
        Err(e) => wrong.push(format!("watch_power_state: {e}")),
    }
    let paused = provider.pause(vm).await;
    wrong.extend(agrees("pause", caps.pause, &paused).err());
    if paused.is_ok() {
        wrong.extend(agrees("pause (resume)", caps.pause, &provider.resume(vm).await).err());
    }
    let change = ReconfigureRequest::default();
    let res = provider.reconfigure(vm, &change).await;
    wrong.extend(agrees("reconfigure", caps.reconfigure, &res).err());
    wrong.extend(agrees("reset", caps.reset, &provider.reset(vm).await).err());
    if !caps.reboot {
        let res = provider.reboot(vm, ShutdownChannel::Acpi).await;
        wrong.extend(agrees("reboot", false, &res).err());
    }
    wrong
}
