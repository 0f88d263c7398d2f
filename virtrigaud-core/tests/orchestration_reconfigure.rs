//! Reconfigure orchestration on the simulator (paused time), including a fault at every step.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use virtrigaud_core::model::{ExpandPolicy, VirtualMachineStatus, condition_types, find_condition};
use virtrigaud_core::orchestration::{
    DiskChange, EventReason, Orchestrator, PlanMode, ReconfigureOptions, ReconfigureOutcome,
    ResourceChange,
};
use virtrigaud_core::sim::{GuestBehavior, Simulator};
use virtrigaud_core::{ErrorKind, PowerState, Provider};

fn setup() -> (Simulator, virtrigaud_core::VmId, Orchestrator) {
    let sim = Simulator::new();
    let vm = sim.add_vm(
        "web-1",
        GuestBehavior::cooperative().acpi_after(Duration::from_secs(4)),
    );
    let orch = Orchestrator::new(Arc::new(sim.clone()));
    (sim, vm, orch)
}

#[tokio::test(start_paused = true)]
async fn online_change_within_live_limits_needs_no_power_cycle() {
    let (sim, vm, orch) = setup();
    let change = ResourceChange::default().cpu(4).memory_mib(4096);
    let plan = orch
        .plan_reconfigure(&vm, &change, &ReconfigureOptions::default())
        .await
        .unwrap();
    assert_eq!(plan.mode, PlanMode::Online);
    let mut status = VirtualMachineStatus::default();
    let r = orch
        .reconfigure(&vm, &change, &ReconfigureOptions::default(), &mut status)
        .await
        .unwrap();
    assert_eq!(r.outcome, ReconfigureOutcome::Online);
    assert_eq!(sim.calls("request_shutdown"), 0);
    assert_eq!(sim.calls("power_off"), 0);
    let d = sim.describe(&vm).await.unwrap();
    assert_eq!((d.cpu, d.memory_mib), (4, 4096));
    assert!(status.last_reconfigure_time.is_some());
    assert_eq!(status.current_resources.as_ref().unwrap().cpu, Some(4));
    assert!(
        !find_condition(&status.conditions, condition_types::RECONFIGURING)
            .unwrap()
            .is_true()
    );
}

#[tokio::test(start_paused = true)]
async fn beyond_live_limits_is_a_graceful_power_cycle_and_the_vm_runs_again() {
    let (sim, vm, orch) = setup();
    let mut events = orch.events().subscribe();
    let change = ResourceChange::default().cpu(16);
    let plan = orch
        .plan_reconfigure(&vm, &change, &ReconfigureOptions::default())
        .await
        .unwrap();
    match &plan.mode {
        PlanMode::GracefulPowerCycle { expected_downtime } => {
            assert!(*expected_downtime >= Duration::from_secs(60))
        }
        other => panic!("unexpected plan {other:?}"),
    }
    assert!(
        plan.power_cycle_reasons[0].contains("live maximum"),
        "{:?}",
        plan.power_cycle_reasons
    );
    let mut status = VirtualMachineStatus::default();
    let r = orch
        .reconfigure(&vm, &change, &ReconfigureOptions::default(), &mut status)
        .await
        .unwrap();
    assert_eq!(r.outcome, ReconfigureOutcome::PowerCycled);
    // Graceful: the guest was asked, not destroyed.
    assert!(sim.calls("request_shutdown") >= 1);
    assert_eq!(sim.effective_power_offs(&vm), 0);
    assert_eq!(sim.true_state(&vm), Some(PowerState::Running));
    assert_eq!(sim.describe(&vm).await.unwrap().cpu, 16);
    assert!(r.downtime.unwrap() >= Duration::from_secs(4));
    assert!(
        find_condition(
            &status.conditions,
            condition_types::RECONFIGURE_PENDING_POWER_CYCLE
        )
        .is_none()
    );
    assert!(status.last_reconfigure_time.is_some());
    let mut reasons = Vec::new();
    while let Ok(e) = events.try_recv() {
        reasons.push(e.reason);
    }
    assert_eq!(
        reasons,
        vec![
            EventReason::ReconfigureStarted,
            EventReason::ReconfigurePowerCycle,
            EventReason::ReconfigureCompleted
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn impossible_plans_explain_why_and_touch_nothing() {
    let (sim, vm, orch) = setup();
    let shrink = ResourceChange::default().disk(DiskChange::new("root", 10, ExpandPolicy::Online));
    let plan = orch
        .plan_reconfigure(&vm, &shrink, &ReconfigureOptions::default())
        .await
        .unwrap();
    match &plan.mode {
        PlanMode::Impossible { reasons } => {
            assert!(reasons[0].contains("disks only grow"), "{reasons:?}")
        }
        other => panic!("{other:?}"),
    }
    let missing = ResourceChange::default().disk(DiskChange::new("data", 10, ExpandPolicy::Online));
    let mut status = VirtualMachineStatus::default();
    let err = orch
        .reconfigure(&vm, &missing, &ReconfigureOptions::default(), &mut status)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidSpec);
    assert!(err.to_string().contains("no such disk"), "{err}");
    let mut no_cycle = ReconfigureOptions::default();
    no_cycle.allow_power_cycle = false;
    let plan = orch
        .plan_reconfigure(&vm, &ResourceChange::default().cpu(1), &no_cycle)
        .await
        .unwrap();
    match &plan.mode {
        PlanMode::Impossible { reasons } => assert!(
            reasons.iter().any(|r| r.contains("not allowed")),
            "{reasons:?}"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(sim.calls("reconfigure"), 0);
    assert_eq!(sim.true_state(&vm), Some(PowerState::Running));
}

#[tokio::test(start_paused = true)]
async fn disk_growth_honours_expand_policy() {
    let (sim, vm, orch) = setup();
    let online = ResourceChange::default().disk(DiskChange::new("root", 30, ExpandPolicy::Online));
    let plan = orch
        .plan_reconfigure(&vm, &online, &ReconfigureOptions::default())
        .await
        .unwrap();
    assert_eq!(plan.mode, PlanMode::Online);
    let offline =
        ResourceChange::default().disk(DiskChange::new("root", 40, ExpandPolicy::Offline));
    let plan = orch
        .plan_reconfigure(&vm, &offline, &ReconfigureOptions::default())
        .await
        .unwrap();
    assert!(
        matches!(plan.mode, PlanMode::GracefulPowerCycle { .. }),
        "{plan:?}"
    );
    let mut status = VirtualMachineStatus::default();
    orch.reconfigure(&vm, &offline, &ReconfigureOptions::default(), &mut status)
        .await
        .unwrap();
    assert_eq!(sim.describe(&vm).await.unwrap().disks[0].size_gib, 40);
    assert_eq!(sim.true_state(&vm), Some(PowerState::Running));
}

#[tokio::test(start_paused = true)]
async fn stopped_vm_is_changed_directly_and_stays_off() {
    let sim = Simulator::new();
    let vm = sim.add_stopped_vm("off-1", GuestBehavior::cooperative());
    let orch = Orchestrator::new(Arc::new(sim.clone()));
    let mut status = VirtualMachineStatus::default();
    let r = orch
        .reconfigure(
            &vm,
            &ResourceChange::default().cpu(32),
            &ReconfigureOptions::default(),
            &mut status,
        )
        .await
        .unwrap();
    assert_eq!(r.outcome, ReconfigureOutcome::Online);
    assert!(sim.true_state(&vm).unwrap().is_off());
    assert_eq!(sim.calls("start"), 0);
}

/// A fault at every step: a VM that was on is running at the end, or the error says it is OFF.
#[tokio::test(start_paused = true)]
async fn a_fault_at_every_step_never_leaves_the_vm_off_silently() {
    let ops = [
        "describe",
        "vm_capabilities",
        "power_state",
        "watch_power_state",
        "probe_agent",
        "request_shutdown",
        "power_off",
        "reconfigure",
        "start",
    ];
    for op in ops {
        for kind in [ErrorKind::Unavailable, ErrorKind::Internal] {
            for repeat in [1, 6] {
                let (sim, vm, orch) = setup();
                for _ in 0..repeat {
                    sim.inject_fault(op, kind);
                }
                let mut status = VirtualMachineStatus::default();
                let res = orch
                    .reconfigure(
                        &vm,
                        &ResourceChange::default().cpu(16),
                        &ReconfigureOptions::default(),
                        &mut status,
                    )
                    .await;
                let state = sim.true_state(&vm).unwrap();
                match res {
                    Ok(_) => {
                        assert_eq!(
                            state,
                            PowerState::Running,
                            "{op} {kind:?} x{repeat}: ok but {state}"
                        );
                        assert_eq!(sim.describe(&vm).await.unwrap().cpu, 16);
                    }
                    Err(e) => {
                        if state.is_off() {
                            assert!(
                                e.to_string().contains("OFF"),
                                "{op} {kind:?} x{repeat}: off without saying so: {e}"
                            );
                        } else {
                            assert_eq!(state, PowerState::Running, "{op} {kind:?} x{repeat}: {e}");
                        }
                        assert!(
                            !find_condition(&status.conditions, condition_types::RECONFIGURING)
                                .unwrap()
                                .is_true()
                        );
                    }
                }
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_failed_apply_restarts_the_vm_unchanged() {
    let (sim, vm, orch) = setup();
    sim.inject_fault("reconfigure", ErrorKind::Internal);
    let mut status = VirtualMachineStatus::default();
    let err = orch
        .reconfigure(
            &vm,
            &ResourceChange::default().cpu(16),
            &ReconfigureOptions::default(),
            &mut status,
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("started again unchanged"), "{err}");
    assert_eq!(sim.true_state(&vm), Some(PowerState::Running));
    assert_eq!(sim.describe(&vm).await.unwrap().cpu, 2);
}

#[tokio::test(start_paused = true)]
async fn a_start_that_keeps_failing_is_reported_with_the_vm_off() {
    let (sim, vm, orch) = setup();
    sim.inject_fault("start", ErrorKind::PermissionDenied);
    let mut status = VirtualMachineStatus::default();
    let err = orch
        .reconfigure(
            &vm,
            &ResourceChange::default().cpu(16),
            &ReconfigureOptions::default(),
            &mut status,
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("could not be started again"),
        "{err}"
    );
    assert!(err.to_string().contains("OFF"), "{err}");
    assert!(sim.true_state(&vm).unwrap().is_off());
    // Still pending: the condition stays true so the caller sees it.
    assert!(
        find_condition(
            &status.conditions,
            condition_types::RECONFIGURE_PENDING_POWER_CYCLE
        )
        .unwrap()
        .is_true()
    );
}
