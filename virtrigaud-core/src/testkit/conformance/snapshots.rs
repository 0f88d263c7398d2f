//! Snapshots through the [`crate::orchestration::Orchestrator`]: what a snapshot really
//! holds, revert through `revertToRef`, retention, `deleteOnVMDelete`, and the failure
//! deadline.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::{CheckOutcome, Fixture, SETTLE, await_state, orchestrator, with_vm};
use crate::error::ErrorKind;
use crate::model::{
    ObjectRef, RetentionPolicy, SnapshotPhase, VMSnapshot, VMSnapshotSpec, VirtualMachine,
    VirtualMachineSpec, VmSnapshotOperation,
};
use crate::orchestration::{RetentionRules, SnapshotCreateOptions};
use crate::provider::{DeleteOptions, DiskCreateSpec, PowerOffOptions, Provider, VmCreateSpec};
use crate::snapshot::{DeleteSnapshotOptions, SnapshotInfo};
use crate::vm::{PowerState, VmId};

/// How far a snapshot's creation time may be from this machine's clock.
const CLOCK_SLACK: Duration = Duration::from_secs(300);

fn object(name: &str, vm: &VmId) -> VMSnapshot {
    let spec = VMSnapshotSpec {
        vm_ref: ObjectRef::new(vm.as_str()),
        ..Default::default()
    };
    VMSnapshot::new(name, spec)
}

async fn listed(provider: &Arc<dyn Provider>, vm: &VmId) -> crate::Result<Vec<SnapshotInfo>> {
    match provider.snapshotter() {
        Some(s) => s.list_snapshots(vm).await,
        None => Ok(vec![]),
    }
}

async fn remove(provider: &Arc<dyn Provider>, vm: &VmId, id: &str) {
    if let Some(s) = provider.snapshotter() {
        let _ = s
            .delete_snapshot(vm, id, &DeleteSnapshotOptions::default())
            .await;
    }
}

/// A snapshot of a running VM asked for memory and quiescing holds exactly what the
/// provider declares and the VM offers, the report and the provider's listing agree, and
/// it carries a creation time (retention needs one).
pub async fn snapshot_reports_memory_and_quiesce(
    provider: &Arc<dyn Provider>,
    fixture: &dyn Fixture,
) -> CheckOutcome {
    let caps = provider.capabilities();
    if !caps.snapshots {
        return CheckOutcome::Skipped("snapshots are declared false".into());
    }
    with_vm(fixture, async |vm: &VmId| {
        let orch = orchestrator(provider, fixture);
        let v = attempt!(provider.vm_capabilities(vm).await, "vm_capabilities");
        ensure!(
            !caps.memory_snapshots || v.snapshot_memory,
            "memory_snapshots is declared but the running VM cannot take one"
        );
        let mut snap = object("vrconf-memory", vm);
        snap.spec.memory = Some(true);
        snap.spec.quiesce = Some(true);
        let before = SystemTime::now();
        let r = attempt!(
            orch.create_snapshot(vm, &mut snap, &SnapshotCreateOptions::default())
                .await,
            "create_snapshot"
        );
        let outcome = async {
            let st = snap.status.clone().unwrap_or_default();
            ensure!(
                st.phase == Some(SnapshotPhase::Ready),
                "phase {:?}",
                st.phase
            );
            ensure!(
                r.memory == caps.memory_snapshots,
                "memory asked: the snapshot has memory {} but memory_snapshots is {}",
                r.memory,
                caps.memory_snapshots
            );
            let can_quiesce = caps.quiesced_snapshots && v.snapshot_quiesce;
            ensure!(
                !r.quiesced || can_quiesce,
                "reported quiesced although quiescing is not declared for this VM"
            );
            ensure!(
                r.quiesced || !can_quiesce || st.message.is_some(),
                "quiescing was possible, did not happen, and nothing says so"
            );
            let list = attempt!(listed(provider, vm).await, "list_snapshots");
            let Some(seen) = list.iter().find(|s| s.id == r.info.id) else {
                return CheckOutcome::Failed(format!("snapshot {} not listed", r.info.id));
            };
            ensure!(
                seen.has_memory == r.memory && seen.quiesced == r.quiesced,
                "the listing says memory {} quiesced {}, the report {} {}",
                seen.has_memory,
                seen.quiesced,
                r.memory,
                r.quiesced
            );
            let Some(at) = seen.created_at else {
                return CheckOutcome::Failed(
                    "the listed snapshot has no creation time (maxAge/maxCount cannot prune it)"
                        .into(),
                );
            };
            let after = SystemTime::now();
            ensure!(
                at + CLOCK_SLACK >= before && at <= after + CLOCK_SLACK,
                "created at {at:?}, outside the call's {before:?}..{after:?}"
            );
            CheckOutcome::Passed
        }
        .await;
        remove(provider, vm, &r.info.id).await;
        outcome
    })
    .await
}

/// `spec.snapshot.revertToRef` reverts a running VM and leaves it running, clears the
/// request, and reverting a stopped VM leaves it stopped.
pub async fn revert_to_ref_restores_power_state(
    provider: &Arc<dyn Provider>,
    fixture: &dyn Fixture,
) -> CheckOutcome {
    if !provider.capabilities().snapshots {
        return CheckOutcome::Skipped("snapshots are declared false".into());
    }
    with_vm(fixture, async |vm: &VmId| {
        let orch = orchestrator(provider, fixture);
        let mut snap = object("vrconf-revert", vm);
        let r = attempt!(
            orch.create_snapshot(vm, &mut snap, &SnapshotCreateOptions::default())
                .await,
            "create_snapshot"
        );
        let outcome = async {
            let snapshots = [snap.clone()];
            for (round, want_running) in [(1, true), (2, false)] {
                let spec = VirtualMachineSpec {
                    snapshot: Some(VmSnapshotOperation {
                        revert_to_ref: Some(ObjectRef::new("vrconf-revert")),
                    }),
                    ..Default::default()
                };
                let mut obj = VirtualMachine::new(vm.as_str(), spec);
                let info = attempt!(orch.revert(vm, &mut obj, &snapshots).await, "revert");
                ensure!(
                    info.is_some_and(|i| i.id == r.info.id),
                    "round {round}: reverted to another snapshot"
                );
                ensure!(
                    obj.spec
                        .snapshot
                        .as_ref()
                        .is_none_or(|s| s.revert_to_ref.is_none()),
                    "round {round}: revertToRef was not cleared"
                );
                let state = attempt!(
                    await_state(provider, vm, SETTLE, |s| if want_running {
                        *s == PowerState::Running
                    } else {
                        s.is_off()
                    })
                    .await,
                    format!("round {round}: waiting for the power state from before the revert")
                );
                ensure!(
                    want_running == (state == PowerState::Running),
                    "round {round}: after the revert the VM is {state} (running before: {want_running})"
                );
                if round == 1 {
                    attempt!(
                        provider.power_off(vm, &PowerOffOptions::default()).await,
                        "power_off"
                    );
                    attempt!(
                        await_state(provider, vm, SETTLE, PowerState::is_off).await,
                        "waiting for off"
                    );
                }
            }
            CheckOutcome::Passed
        }
        .await;
        remove(provider, vm, &r.info.id).await;
        outcome
    })
    .await
}

/// `maxCount` prunes the oldest snapshot when a new one is made, and a sweep with `maxAge`
/// prunes the ones older than it, never a protected one.
pub async fn retention_prunes_by_count_and_age(
    provider: &Arc<dyn Provider>,
    fixture: &dyn Fixture,
) -> CheckOutcome {
    if !provider.capabilities().snapshots {
        return CheckOutcome::Skipped("snapshots are declared false".into());
    }
    with_vm(fixture, async |vm: &VmId| {
        let orch = orchestrator(provider, fixture);
        let mut made = Vec::new();
        let outcome = async {
            for (i, name) in ["vrconf-keep-1", "vrconf-keep-2", "vrconf-keep-3"]
                .iter()
                .enumerate()
            {
                if i > 0 {
                    // Creation times of most platforms have one-second resolution.
                    tokio::time::sleep(Duration::from_millis(1100)).await;
                }
                let mut snap = object(name, vm);
                if i == 2 {
                    snap.spec.retention_policy = Some(RetentionPolicy {
                        max_count: Some(2),
                        ..Default::default()
                    });
                }
                let r = attempt!(
                    orch.create_snapshot(vm, &mut snap, &SnapshotCreateOptions::default())
                        .await,
                    format!("create {name}")
                );
                made.push(r.info.id.clone());
                if i == 2 {
                    ensure!(
                        r.pruned == [made[0].clone()],
                        "maxCount 2 pruned {:?}, want the oldest {:?} ({:?})",
                        r.pruned,
                        made[0],
                        r.notes
                    );
                }
            }
            let list = attempt!(listed(provider, vm).await, "list_snapshots");
            let ids: HashSet<_> = list.iter().map(|s| s.id.clone()).collect();
            ensure!(
                !ids.contains(&made[0]) && ids.contains(&made[1]) && ids.contains(&made[2]),
                "after maxCount 2 the VM has {ids:?}"
            );
            tokio::time::sleep(Duration::from_millis(2100)).await;
            let protected: HashSet<String> = [made[2].clone()].into();
            let rules = RetentionRules::new(Some(Duration::from_secs(1)), None);
            let deleted = attempt!(
                orch.sweep_snapshots(vm, rules, &protected).await,
                "sweep maxAge 1s"
            );
            ensure!(
                deleted == [made[1].clone()],
                "a maxAge sweep deleted {deleted:?}, want only {:?}",
                made[1]
            );
            let list = attempt!(listed(provider, vm).await, "list_snapshots");
            ensure!(
                list.iter().any(|s| s.id == made[2]),
                "the protected snapshot was deleted"
            );
            CheckOutcome::Passed
        }
        .await;
        for id in &made {
            remove(provider, vm, id).await;
        }
        outcome
    })
    .await
}

/// Deleting a VM deletes the snapshots whose policy says `deleteOnVMDelete` and leaves
/// the others as objects: `Ready` where the provider declares `snapshots_outlive_vm` (and
/// such a snapshot can still be deleted), `Failed` otherwise.
pub async fn delete_on_vm_delete_is_honoured(
    provider: &Arc<dyn Provider>,
    fixture: &dyn Fixture,
) -> CheckOutcome {
    let caps = provider.capabilities();
    if !caps.snapshots || !caps.create || !caps.delete {
        return CheckOutcome::Skipped("needs snapshots, create and delete".into());
    }
    // A disk to snapshot: a hypervisor may refuse a snapshot of a VM with nothing to capture.
    let mut spec = VmCreateSpec::new(format!("vrconf-snapdel-{}", std::process::id()), 1, 256);
    spec.disks.push(DiskCreateSpec::new("root", 1));
    let vm = attempt!(provider.create(&spec).await, "create");
    let orch = orchestrator(provider, fixture);
    let mut objects = [object("vrconf-goes", &vm), object("vrconf-stays", &vm)];
    for (o, delete) in objects.iter_mut().zip([true, false]) {
        o.spec.retention_policy = Some(RetentionPolicy {
            delete_on_vm_delete: Some(delete),
            ..Default::default()
        });
        if let Err(e) = orch
            .create_snapshot(&vm, o, &SnapshotCreateOptions::default())
            .await
        {
            let _ = provider
                .delete(&vm, &DeleteOptions { delete_disks: true })
                .await;
            return CheckOutcome::Failed(format!("create {}: {e}", o.metadata.name));
        }
    }
    let stays_id = objects[1]
        .status
        .as_ref()
        .and_then(|s| s.snapshot_id.clone())
        .unwrap_or_default();
    let removed = match orch.delete_vm(&vm, &mut objects).await {
        Ok(r) => r,
        Err(e) => {
            let _ = provider
                .delete(&vm, &DeleteOptions { delete_disks: true })
                .await;
            return CheckOutcome::Failed(format!("delete_vm: {e}"));
        }
    };
    ensure!(
        removed == ["vrconf-goes"],
        "delete_vm removed {removed:?}, want [vrconf-goes]"
    );
    match provider.power_state(&vm).await {
        Err(e) if e.is(ErrorKind::NotFound) => {}
        other => return CheckOutcome::Failed(format!("the deleted VM answers {other:?}")),
    }
    let phase = objects[1].status.as_ref().and_then(|s| s.phase);
    if caps.snapshots_outlive_vm {
        ensure!(
            phase == Some(SnapshotPhase::Ready),
            "snapshots outlive the VM, but the kept object is {phase:?}"
        );
        let Some(s) = provider.snapshotter() else {
            return CheckOutcome::Failed("no snapshotter".into());
        };
        attempt!(
            s.delete_snapshot(&vm, &stays_id, &DeleteSnapshotOptions::default())
                .await,
            "deleting the snapshot that outlived its VM"
        );
    } else {
        ensure!(
            phase == Some(SnapshotPhase::Failed),
            "the VM's snapshots went with it, but the kept object is {phase:?}"
        );
    }
    CheckOutcome::Passed
}

/// A snapshot not made by its failure deadline fails with `Timeout`, phase `Failed`, and
/// nothing of it is left on the VM, even when the platform finishes it after the deadline.
pub async fn snapshot_failure_deadline_leaves_nothing(
    provider: &Arc<dyn Provider>,
    fixture: &dyn Fixture,
) -> CheckOutcome {
    if !provider.capabilities().snapshots {
        return CheckOutcome::Skipped("snapshots are declared false".into());
    }
    with_vm(fixture, async |vm: &VmId| {
        let orch = orchestrator(provider, fixture);
        let mut snap = object("vrconf-late", vm);
        // A deadline that has passed when the creation is first looked at: the platform's
        // work goes on, and whatever it makes must be removed.
        let opts = SnapshotCreateOptions {
            failure_deadline: Duration::ZERO,
            ..Default::default()
        };
        let mut timed_out = false;
        for _ in 0..3 {
            match orch.create_snapshot(vm, &mut snap, &opts).await {
                Err(e) if e.is(ErrorKind::Timeout) => {
                    timed_out = true;
                    break;
                }
                // Done before it was first looked at: try again.
                Ok(r) => remove(provider, vm, &r.info.id).await,
                Err(e) => {
                    return CheckOutcome::Failed(format!(
                        "a zero failure deadline gave {e} (want Timeout)"
                    ));
                }
            }
        }
        if !timed_out {
            // Each creation finished before the orchestrator first looked (the libvirt test
            // driver's are instant): the deadline had nothing to cut short, so nothing is shown.
            return CheckOutcome::Skipped(
                "the backend made every snapshot before a zero deadline could cut it short".into(),
            );
        }
        let phase = snap.status.as_ref().and_then(|s| s.phase);
        ensure!(
            phase == Some(SnapshotPhase::Failed),
            "phase {phase:?} after the deadline"
        );
        // The platform may still finish it; it must be gone for a quiet while after that.
        let failed = tokio::time::Instant::now();
        let mut last_seen = failed;
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let list = attempt!(listed(provider, vm).await, "list_snapshots");
            let now = tokio::time::Instant::now();
            if list.iter().any(|s| s.name.starts_with("vrconf-late")) {
                last_seen = now;
            } else if now - last_seen >= Duration::from_secs(5) {
                return CheckOutcome::Passed;
            }
            ensure!(
                now - failed < SETTLE,
                "a snapshot of the failed creation is still there {SETTLE:?} later"
            );
        }
    })
    .await
}
