//! The core's provider-agnostic orchestration flows (issue 7) on libvirt's in-process test
//! driver: reconfigure with a graceful power cycle, snapshot revert via `revertToRef`, clone,
//! and seed-004 lifecycle actions.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use virtrigaud_core::model::{
    CloneTarget, LifecycleAction, LifecyclePhase, ObjectRef, RunStrategy, VMClone, VMCloneSpec,
    VMSnapshot, VMSnapshotSpec, VirtualMachine, VirtualMachineSpec, VirtualMachineStatus,
    VmSnapshotOperation,
};
use virtrigaud_core::orchestration::{
    Orchestrator, PlanMode, ReconfigureOptions, ReconfigureOutcome, ResourceChange,
    SnapshotCreateOptions,
};
use virtrigaud_core::{PowerState, Provider};
use virtrigaud_libvirt::LibvirtProvider;

mod common;
use common::running_vm;

#[tokio::test]
async fn reconfigure_beyond_live_limits_power_cycles_and_runs_again() {
    let (p, _dir) = common::private().await;
    let p = Arc::new(p);
    let vm = running_vm(&p, "orch-reconf").await;
    let orch = Orchestrator::new(Arc::<LibvirtProvider>::clone(&p));
    let caps = p.vm_capabilities(&vm).await.unwrap();

    // Within the live headroom: online.
    let live = ResourceChange::default().cpu(caps.max_live_vcpus.max(1));
    let plan = orch
        .plan_reconfigure(&vm, &live, &ReconfigureOptions::default())
        .await
        .unwrap();
    assert!(
        matches!(plan.mode, PlanMode::Online | PlanMode::NoChange),
        "{:?}",
        plan.mode
    );

    // Beyond it: a graceful power cycle, and the VM runs again with the new size.
    let target = caps.max_live_vcpus + 1;
    let change = ResourceChange::default().cpu(target);
    let plan = orch
        .plan_reconfigure(&vm, &change, &ReconfigureOptions::default())
        .await
        .unwrap();
    assert!(
        matches!(plan.mode, PlanMode::GracefulPowerCycle { .. }),
        "{:?}",
        plan.mode
    );
    let mut status = VirtualMachineStatus::default();
    let report = orch
        .reconfigure(&vm, &change, &ReconfigureOptions::default(), &mut status)
        .await
        .unwrap();
    assert_eq!(report.outcome, ReconfigureOutcome::PowerCycled);
    assert_eq!(p.power_state(&vm).await.unwrap(), PowerState::Running);
    assert_eq!(p.describe(&vm).await.unwrap().cpu, target);
    assert!(status.last_reconfigure_time.is_some());
}

#[tokio::test]
async fn revert_to_ref_restores_the_power_state_and_clears_the_request() {
    let (p, _dir) = common::private().await;
    let p = Arc::new(p);
    let vm = running_vm(&p, "orch-revert").await;
    let orch = Orchestrator::new(Arc::<LibvirtProvider>::clone(&p));
    let mut spec = VMSnapshotSpec::default();
    spec.vm_ref = ObjectRef::new("orch-revert");
    let mut snap = VMSnapshot::new("base", spec);
    orch.create_snapshot(&vm, &mut snap, &SnapshotCreateOptions::default())
        .await
        .unwrap();

    let mut vm_spec = VirtualMachineSpec::default();
    let mut op = VmSnapshotOperation::default();
    op.revert_to_ref = Some(ObjectRef::new("base"));
    vm_spec.snapshot = Some(op);
    let mut obj = VirtualMachine::new("orch-revert", vm_spec);
    let reverted = orch
        .revert(&vm, &mut obj, std::slice::from_ref(&snap))
        .await
        .unwrap();
    assert!(reverted.is_some());
    assert!(
        obj.spec
            .snapshot
            .as_ref()
            .and_then(|s| s.revert_to_ref.as_ref())
            .is_none()
    );
    assert_eq!(
        p.power_state(&vm).await.unwrap(),
        PowerState::Running,
        "was on, is on again"
    );
}

#[tokio::test]
async fn full_clone_and_lifecycle_actions() {
    let (p, _dir) = common::private().await;
    let p = Arc::new(p);
    let src = running_vm(&p, "orch-src").await;
    let orch = Orchestrator::new(Arc::<LibvirtProvider>::clone(&p));

    // Seed 004: stop with a grace period, then start, then force stop.
    let st = orch
        .apply_action(
            &src,
            &LifecycleAction::stop().with_grace_period_seconds(30),
            RunStrategy::Manual,
        )
        .await
        .unwrap();
    assert_eq!(st.state, LifecyclePhase::Stopped);
    let st = orch
        .apply_action(&src, &LifecycleAction::start(), RunStrategy::Manual)
        .await
        .unwrap();
    assert_eq!(st.state, LifecyclePhase::Running);
    orch.apply_action(&src, &LifecycleAction::force_stop(), RunStrategy::Manual)
        .await
        .unwrap();
    assert!(p.power_state(&src).await.unwrap().is_off());

    let mut spec = VMCloneSpec::default();
    spec.source_ref = ObjectRef::new("orch-src");
    let mut t = CloneTarget::default();
    t.name = "orch-clone".into();
    spec.target = t;
    spec.linked = Some(false);
    spec.power_on = Some(true);
    let mut clone = VMClone::new("orch-clone", spec);
    let report = orch.clone_vm(&src, &mut clone, None).await.unwrap();
    assert_eq!(
        p.power_state(&report.result.vm).await.unwrap(),
        PowerState::Running
    );
}

#[tokio::test]
async fn inventory_feeds_the_core_placement_solver() {
    use virtrigaud_core::placement::{PlacementRequest, Placer, Resources, SolverPlacer};
    let (p, _dir) = common::private().await;
    let p = Arc::new(p);
    let _vm = running_vm(&p, "inv-1").await;
    let inv = p.inventory().await.unwrap();
    assert_eq!(inv.hosts.len(), 1);
    let host = &inv.hosts[0];
    assert!(host.capacity.cpu > 0 && host.capacity.memory_mib > 0);
    assert!(host.vms.iter().any(|v| v == "inv-1"));
    assert_eq!(inv.datastores.len(), 1);

    let placer = SolverPlacer::new(Arc::<LibvirtProvider>::clone(&p));
    let decision = placer
        .place(&PlacementRequest::new("new-vm", Resources::new(1, 128)))
        .await
        .unwrap();
    assert_eq!(decision.host, host.name);
    // A VM bigger than the host is explained, not placed.
    let err = placer
        .place(&PlacementRequest::new("huge", Resources::new(1_000_000, 1)))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("cpu") || err.to_string().contains("CPU"),
        "{err}"
    );
}
