//! Snapshot orchestration on the simulator (paused time): create, phases, quiesce report,
//! retention, revert, deleteOnVMDelete, faults.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use virtrigaud_core::model::{
    HumanDuration, ObjectRef, RetentionPolicy, SnapshotPhase, VMSnapshot, VMSnapshotSpec,
    VirtualMachine, VirtualMachineSpec, VirtualMachineStatus, VmSnapshotOperation, condition_types,
    find_condition,
};
use virtrigaud_core::orchestration::{
    EventReason, Orchestrator, ReconfigureOptions, ResourceChange, RetentionRules,
    SnapshotCreateOptions, plan_retention,
};
use virtrigaud_core::sim::{GuestBehavior, Simulator};
use virtrigaud_core::{ErrorKind, PowerState, Provider, SnapshotInfo, VmId};

fn snap(name: &str, vm: &str) -> VMSnapshot {
    let mut spec = VMSnapshotSpec::default();
    spec.vm_ref = ObjectRef::new(vm);
    VMSnapshot::new(name, spec)
}

fn with_policy(mut s: VMSnapshot, p: RetentionPolicy) -> VMSnapshot {
    s.spec.retention_policy = Some(p);
    s
}

fn policy(
    max_age: Option<&str>,
    max_count: Option<u32>,
    delete_on_vm_delete: Option<bool>,
) -> RetentionPolicy {
    let mut p = RetentionPolicy::default();
    p.max_age = max_age.map(|a| a.parse::<HumanDuration>().unwrap());
    p.max_count = max_count;
    p.delete_on_vm_delete = delete_on_vm_delete;
    p
}

fn setup(behavior: GuestBehavior) -> (Simulator, VmId, Orchestrator) {
    let sim = Simulator::new();
    let vm = sim.add_vm("db-1", behavior);
    let orch = Orchestrator::new(Arc::new(sim.clone()));
    (sim, vm, orch)
}

async fn provider_snapshots(sim: &Simulator, vm: &VmId) -> Vec<SnapshotInfo> {
    sim.snapshotter().unwrap().list_snapshots(vm).await.unwrap()
}

#[tokio::test(start_paused = true)]
async fn create_reports_quiescing_and_memory_and_reaches_ready() {
    let (_sim, vm, orch) = setup(GuestBehavior::with_agent(Duration::from_secs(2)));
    let mut events = orch.events().subscribe();
    let mut s = snap("pre-maint", "db-1");
    s.spec.memory = Some(true);
    s.spec.quiesce = Some(true);
    let r = orch
        .create_snapshot(&vm, &mut s, &SnapshotCreateOptions::default())
        .await
        .unwrap();
    assert!(r.quiesced && r.memory, "{r:?}");
    let st = s.status.as_ref().unwrap();
    assert_eq!(st.phase, Some(SnapshotPhase::Ready));
    assert_eq!(st.snapshot_id.as_deref(), Some(r.info.id.as_str()));
    assert!(st.creation_time.is_some());
    assert!(
        find_condition(&st.conditions, condition_types::READY)
            .unwrap()
            .is_true()
    );
    assert!(
        !find_condition(&st.conditions, condition_types::CREATING)
            .unwrap()
            .is_true()
    );
    assert_eq!(
        events.try_recv().unwrap().reason,
        EventReason::SnapshotCreating
    );
    assert_eq!(
        events.try_recv().unwrap().reason,
        EventReason::SnapshotReady
    );

    // Without an agent: not quiesced, and the report and status say so.
    let (_sim, vm, orch) = setup(GuestBehavior::cooperative());
    let mut s = snap("no-agent", "db-1");
    s.spec.quiesce = Some(true);
    let r = orch
        .create_snapshot(&vm, &mut s, &SnapshotCreateOptions::default())
        .await
        .unwrap();
    assert!(!r.quiesced);
    assert!(
        r.notes.iter().any(|n| n.contains("not quiesced")),
        "{:?}",
        r.notes
    );
    assert!(
        s.status
            .as_ref()
            .unwrap()
            .message
            .as_deref()
            .unwrap()
            .contains("not quiesced")
    );
    let mut strict = SnapshotCreateOptions::default();
    strict.require_quiesce = true;
    let mut s = snap("strict", "db-1");
    s.spec.quiesce = Some(true);
    let e = orch
        .create_snapshot(&vm, &mut s, &strict)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    assert_eq!(
        s.status.as_ref().unwrap().phase,
        Some(SnapshotPhase::Failed)
    );
}

#[tokio::test(start_paused = true)]
async fn transient_create_failures_are_retried_and_permanent_ones_fail_cleanly() {
    let (sim, vm, orch) = setup(GuestBehavior::cooperative());
    sim.inject_fault("snapshot_create", ErrorKind::Unavailable);
    sim.inject_fault("snapshot_create", ErrorKind::Unavailable);
    let mut s = snap("retry", "db-1");
    orch.create_snapshot(&vm, &mut s, &SnapshotCreateOptions::default())
        .await
        .unwrap();
    assert_eq!(sim.calls("snapshot_create"), 3);

    sim.inject_fault("snapshot_create", ErrorKind::Internal);
    let mut s = snap("broken", "db-1");
    let e = orch
        .create_snapshot(&vm, &mut s, &SnapshotCreateOptions::default())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Internal);
    let st = s.status.as_ref().unwrap();
    assert_eq!(st.phase, Some(SnapshotPhase::Failed));
    assert!(
        !find_condition(&st.conditions, condition_types::READY)
            .unwrap()
            .is_true()
    );
    assert_eq!(
        provider_snapshots(&sim, &vm).await.len(),
        1,
        "no half-made snapshot"
    );

    // Always failing: the failure deadline ends it.
    for _ in 0..20 {
        sim.inject_fault("snapshot_create", ErrorKind::Unavailable);
    }
    let mut opts = SnapshotCreateOptions::default();
    opts.failure_deadline = Duration::from_secs(10);
    let mut s = snap("deadline", "db-1");
    let e = orch.create_snapshot(&vm, &mut s, &opts).await.unwrap_err();
    assert!(
        matches!(e.kind(), ErrorKind::Timeout | ErrorKind::Unavailable),
        "{e}"
    );
    assert_eq!(
        s.status.as_ref().unwrap().phase,
        Some(SnapshotPhase::Failed)
    );
}

#[tokio::test(start_paused = true)]
async fn max_count_is_enforced_at_create_time_keeping_the_newest() {
    let (sim, vm, orch) = setup(GuestBehavior::cooperative());
    let mut ids = Vec::new();
    for i in 0..5 {
        let mut s = with_policy(snap(&format!("s{i}"), "db-1"), policy(None, Some(2), None));
        let r = orch
            .create_snapshot(&vm, &mut s, &SnapshotCreateOptions::default())
            .await
            .unwrap();
        ids.push(r.info.id);
    }
    let left: Vec<String> = provider_snapshots(&sim, &vm)
        .await
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(left, ids[3..].to_vec());
}

#[test]
fn plan_retention_max_age_and_count_never_touch_protected_or_undated() {
    let now = SystemTime::now();
    let mk = |id: &str, age_h: Option<u64>| {
        let mut s = SnapshotInfo::new(id, id);
        s.created_at = age_h.map(|h| now - Duration::from_secs(h * 3600));
        s
    };
    let snaps = vec![
        mk("old", Some(200)),
        mk("older", Some(300)),
        mk("new", Some(1)),
        mk("undated", None),
    ];
    let protected: HashSet<String> = ["older".to_string()].into();
    let doomed = plan_retention(
        &snaps,
        RetentionRules::new(Some(Duration::from_secs(7 * 86400)), None),
        now,
        &protected,
    );
    assert_eq!(
        doomed.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        vec!["old"]
    );
    let doomed = plan_retention(&snaps, RetentionRules::new(None, Some(1)), now, &protected);
    assert_eq!(
        doomed.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        vec!["old", "new"]
    );
}

#[tokio::test(start_paused = true)]
async fn sweep_objects_applies_max_age_from_status_times() {
    let (sim, vm, orch) = setup(GuestBehavior::cooperative());
    let mut objs = vec![
        with_policy(snap("weekly", "db-1"), policy(Some("7d"), None, None)),
        with_policy(snap("fresh", "db-1"), policy(Some("7d"), None, None)),
    ];
    for o in objs.iter_mut() {
        orch.create_snapshot(&vm, o, &SnapshotCreateOptions::default())
            .await
            .unwrap();
    }
    // Pretend "weekly" was taken 8 days ago.
    let eight_days = SystemTime::now() - Duration::from_secs(8 * 86400);
    objs[0].status.as_mut().unwrap().creation_time =
        Some(humantime::format_rfc3339_seconds(eight_days).to_string());
    let removed = orch.sweep_objects(&vm, &mut objs).await.unwrap();
    assert_eq!(removed, vec!["weekly".to_string()]);
    assert_eq!(provider_snapshots(&sim, &vm).await.len(), 1);
    assert_eq!(
        objs[0].status.as_ref().unwrap().phase,
        Some(SnapshotPhase::Deleting)
    );
}

fn vm_object(revert_to: Option<&str>) -> VirtualMachine {
    let mut spec = VirtualMachineSpec::default();
    if let Some(r) = revert_to {
        let mut op = VmSnapshotOperation::default();
        op.revert_to_ref = Some(ObjectRef::new(r));
        spec.snapshot = Some(op);
    }
    VirtualMachine::new("db-1", spec)
}

#[tokio::test(start_paused = true)]
async fn revert_stops_gracefully_reverts_restores_power_and_clears_the_request() {
    let (sim, vm, orch) = setup(GuestBehavior::cooperative());
    let mut s = snap("base", "db-1");
    orch.create_snapshot(&vm, &mut s, &SnapshotCreateOptions::default())
        .await
        .unwrap();
    let mut st = VirtualMachineStatus::default();
    orch.reconfigure(
        &vm,
        &ResourceChange::default().cpu(4),
        &ReconfigureOptions::default(),
        &mut st,
    )
    .await
    .unwrap();
    assert_eq!(sim.describe(&vm).await.unwrap().cpu, 4);
    let mut obj = vm_object(Some("base"));
    let info = orch
        .revert(&vm, &mut obj, std::slice::from_ref(&s))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(info.name, "base");
    assert_eq!(sim.describe(&vm).await.unwrap().cpu, 2);
    assert_eq!(sim.true_state(&vm), Some(PowerState::Running));
    assert!(sim.calls("request_shutdown") >= 1, "graceful stop first");
    assert_eq!(sim.effective_power_offs(&vm), 0);
    assert!(obj.spec.snapshot.as_ref().unwrap().revert_to_ref.is_none());
    // No request: nothing happens.
    assert!(
        orch.revert(&vm, &mut obj, std::slice::from_ref(&s))
            .await
            .unwrap()
            .is_none()
    );

    // A VM that was off stays off.
    sim.power_off(&vm, &Default::default()).await.unwrap();
    let mut obj = vm_object(Some("base"));
    orch.revert(&vm, &mut obj, std::slice::from_ref(&s))
        .await
        .unwrap();
    assert!(sim.true_state(&vm).unwrap().is_off());
}

#[tokio::test(start_paused = true)]
async fn a_failed_revert_keeps_the_request_and_restarts_the_vm() {
    let (sim, vm, orch) = setup(GuestBehavior::cooperative());
    let mut s = snap("base", "db-1");
    orch.create_snapshot(&vm, &mut s, &SnapshotCreateOptions::default())
        .await
        .unwrap();
    for (op, kind) in [
        ("snapshot_revert", ErrorKind::Internal),
        ("start", ErrorKind::PermissionDenied),
        ("request_shutdown", ErrorKind::Internal),
        ("snapshot_list", ErrorKind::Unavailable),
    ] {
        sim.inject_fault(op, kind);
        let mut obj = vm_object(Some("base"));
        let res = orch.revert(&vm, &mut obj, std::slice::from_ref(&s)).await;
        let state = sim.true_state(&vm).unwrap();
        match res {
            Ok(_) => assert_eq!(state, PowerState::Running, "{op}"),
            Err(e) => {
                assert!(
                    obj.spec.snapshot.as_ref().unwrap().revert_to_ref.is_some(),
                    "{op}: request kept"
                );
                if state.is_off() {
                    assert!(e.to_string().contains("OFF"), "{op}: {e}");
                    sim.start(&vm, &Default::default()).await.unwrap();
                } else {
                    assert_eq!(state, PowerState::Running, "{op}: {e}");
                }
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn retention_never_deletes_a_snapshot_a_revert_is_using() {
    let (sim, vm, orch) = setup(GuestBehavior::cooperative().acpi_after(Duration::from_secs(20)));
    let mut objs = Vec::new();
    for name in ["oldest", "middle", "newest"] {
        let mut s = snap(name, "db-1");
        orch.create_snapshot(&vm, &mut s, &SnapshotCreateOptions::default())
            .await
            .unwrap();
        objs.push(s);
    }
    let oldest_id = objs[0]
        .status
        .as_ref()
        .unwrap()
        .snapshot_id
        .clone()
        .unwrap();
    let revert = {
        let orch = orch.clone();
        let vm = vm.clone();
        let objs = objs.clone();
        tokio::spawn(async move {
            let mut obj = vm_object(Some("oldest"));
            orch.revert(&vm, &mut obj, &objs).await
        })
    };
    // The revert is now waiting for the guest to shut down (20 s).
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(orch.is_snapshot_in_use(&vm, &oldest_id));
    let deleted = orch
        .sweep_snapshots(&vm, RetentionRules::new(None, Some(1)), &HashSet::new())
        .await
        .unwrap();
    assert!(!deleted.contains(&oldest_id), "{deleted:?}");
    assert_eq!(deleted.len(), 2);
    let mut target = objs[0].clone();
    let e = orch.delete_snapshot(&vm, &mut target).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict);
    revert.await.unwrap().unwrap();
    assert_eq!(sim.true_state(&vm), Some(PowerState::Running));
    assert!(!orch.is_snapshot_in_use(&vm, &oldest_id));
    assert_eq!(provider_snapshots(&sim, &vm).await.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn delete_on_vm_delete_is_honoured() {
    let (sim, vm, orch) = setup(GuestBehavior::cooperative());
    let mut objs = vec![
        with_policy(snap("goes", "db-1"), policy(None, None, Some(true))),
        with_policy(snap("stays", "db-1"), policy(None, None, Some(false))),
    ];
    for o in objs.iter_mut() {
        orch.create_snapshot(&vm, o, &SnapshotCreateOptions::default())
            .await
            .unwrap();
    }
    let removed = orch.delete_vm(&vm, &mut objs).await.unwrap();
    assert_eq!(removed, vec!["goes".to_string()]);
    assert_eq!(sim.vm_count(), 0);
    assert_eq!(sim.calls("snapshot_delete"), 1);
    let st = objs[1].status.as_ref().unwrap();
    assert_eq!(st.phase, Some(SnapshotPhase::Failed));
    assert!(
        st.message
            .as_deref()
            .unwrap()
            .contains("deleteOnVMDelete is false")
    );
}

#[tokio::test(start_paused = true)]
async fn reverting_a_memory_snapshot_keeps_an_off_vm_off() {
    let (sim, vm, orch) = setup(GuestBehavior::cooperative());
    let mut s = snap("with-ram", "db-1");
    s.spec.memory = Some(true);
    let r = orch
        .create_snapshot(&vm, &mut s, &SnapshotCreateOptions::default())
        .await
        .unwrap();
    assert!(r.memory);
    sim.power_off(&vm, &Default::default()).await.unwrap();
    let mut obj = vm_object(Some("with-ram"));
    orch.revert(&vm, &mut obj, std::slice::from_ref(&s))
        .await
        .unwrap();
    assert!(
        sim.true_state(&vm).unwrap().is_off(),
        "the memory snapshot resumed the guest; it was off before"
    );
    assert!(obj.spec.snapshot.as_ref().unwrap().revert_to_ref.is_none());
    // A running VM reverted to a memory snapshot is running.
    sim.start(&vm, &Default::default()).await.unwrap();
    let mut obj = vm_object(Some("with-ram"));
    orch.revert(&vm, &mut obj, std::slice::from_ref(&s))
        .await
        .unwrap();
    assert_eq!(sim.true_state(&vm), Some(PowerState::Running));
}
