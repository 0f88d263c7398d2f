//! `capabilities_tell_the_truth`: every declared flag agrees with what the provider does.

use std::sync::Arc;

use super::{CheckOutcome, Fixture};
use crate::clone::{CloneOptions, Customization};
use crate::error::{ErrorKind, Result};
use crate::provider::{DeleteOptions, Provider, ReconfigureRequest, VmCreateSpec};
use crate::snapshot::{DeleteSnapshotOptions, SnapshotOptions};
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
    wrong.extend(snapshot_refusals(provider, vm).await);
    wrong.extend(clone_refusals(provider, vm).await);
    wrong
}

/// A memory or quiesced snapshot that is not declared is refused (`Unsupported`) or, for
/// quiescing, made and honestly reported unquiesced; anything made is deleted again.
async fn snapshot_refusals(provider: &Arc<dyn Provider>, vm: &VmId) -> Vec<String> {
    let caps = provider.capabilities();
    let Some(s) = provider.snapshotter() else {
        return vec![];
    };
    let mut wrong = Vec::new();
    let asks = [
        (
            "memory_snapshots",
            caps.memory_snapshots,
            SnapshotOptions::new("vrconf-truth-memory").with_memory(true),
        ),
        (
            "quiesced_snapshots",
            caps.quiesced_snapshots,
            SnapshotOptions::new("vrconf-truth-quiesce").with_quiesce(true),
        ),
    ];
    for (flag, declared, opts) in asks {
        if declared {
            continue;
        }
        match s.create_snapshot(vm, &opts).await {
            Err(e) if e.is(ErrorKind::Unsupported) => {}
            Err(e) => wrong.push(format!(
                "{flag} is declared false; the snapshot failed with {e}"
            )),
            Ok(info) => {
                let _ = s
                    .delete_snapshot(vm, &info.id, &DeleteSnapshotOptions::default())
                    .await;
                if opts.memory || info.quiesced {
                    wrong.push(format!(
                        "{flag} is declared false but the snapshot was made (memory {}, quiesced {})",
                        info.has_memory, info.quiesced
                    ));
                }
            }
        }
    }
    wrong
}

/// Clones of an undeclared kind, or with undeclared customization, are refused with
/// `Unsupported` by the provider itself; anything made is deleted again.
async fn clone_refusals(provider: &Arc<dyn Provider>, vm: &VmId) -> Vec<String> {
    let caps = provider.capabilities();
    let Some(c) = provider.cloner() else {
        return vec![];
    };
    let named = |linked: bool, custom: Option<Customization>| {
        let mut o = CloneOptions::new("vrconf-truth-clone").linked(linked);
        o.customization = custom;
        o
    };
    let hostname = Customization {
        hostname: Some("vrconf-truth".into()),
        ..Default::default()
    };
    let user_data = Customization {
        cloud_init_user_data: Some("#cloud-config\n".into()),
        ..Default::default()
    };
    let plain_linked = !caps.full_clones;
    let asks = [
        ("linked_clones", caps.linked_clones, named(true, None)),
        ("full_clones", caps.full_clones, named(false, None)),
        (
            "clone_customization",
            caps.clone_customization,
            named(plain_linked, Some(hostname)),
        ),
        (
            "clone_user_data",
            caps.clone_user_data || !caps.clone_customization,
            named(plain_linked, Some(user_data)),
        ),
    ];
    let mut wrong = Vec::new();
    for (flag, declared, opts) in asks {
        if declared {
            continue;
        }
        match c.clone_vm(vm, &opts).await {
            Err(e) if e.is(ErrorKind::Unsupported) => {}
            Err(e) => wrong.push(format!(
                "{flag} is declared false; the clone failed with {e}"
            )),
            Ok(made) => {
                let _ = provider.power_off(&made.vm, &Default::default()).await;
                let _ = provider
                    .delete(&made.vm, &DeleteOptions { delete_disks: true })
                    .await;
                wrong.push(format!("{flag} is declared false but the clone was made"));
            }
        }
    }
    wrong
}
