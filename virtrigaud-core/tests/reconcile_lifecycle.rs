//! Seed 004's three Wukong objects, verbatim, drive the lifecycle-action reconciler on the
//! simulator (paused time): start, a graceful stop within 60 s, and a force stop.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use virtrigaud_core::model::{
    LifecycleAction, LifecycleActionKind, LifecyclePhase, LifecycleState, RunStrategy, SpecErrors,
    Validate, from_yaml_str, from_yaml_str_unvalidated, path_join,
};
use virtrigaud_core::orchestration::Orchestrator;
use virtrigaud_core::reconcile::{Action, LifecycleReconciler};
use virtrigaud_core::sim::{GuestBehavior, Simulator};
use virtrigaud_core::{ErrorKind, PowerState, Provider};

/// Only the part of the Wukong document this test needs (the rest is ignored).
#[derive(Debug, Deserialize)]
struct Doc {
    spec: Spec,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Spec {
    lifecycle_action: Option<LifecycleAction>,
}

impl Validate for Doc {
    fn validate_at(&self, path: &str, errors: &mut SpecErrors) {
        self.spec
            .lifecycle_action
            .validate_at(&path_join(path, "spec.lifecycleAction"), errors);
    }
}

fn action(name: &str) -> Option<LifecycleAction> {
    let path = format!("{}/tests/fixtures/seeds/{name}", env!("CARGO_MANIFEST_DIR"));
    let doc: Doc = from_yaml_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    doc.spec.lifecycle_action
}

#[tokio::test(start_paused = true)]
async fn the_three_wukong_objects_start_stop_gracefully_and_force_stop() {
    let sim = Simulator::new();
    let vm = sim.add_stopped_vm(
        "my-vm-vm",
        GuestBehavior::cooperative().acpi_after(Duration::from_secs(40)),
    );
    let r = LifecycleReconciler::new(Orchestrator::new(Arc::new(sim.clone())));
    let mut state: Option<LifecycleState> = None;

    let mut a = action("004_01_wukong_start.yaml");
    let next = r
        .reconcile(&vm, &mut a, &mut state, RunStrategy::Manual)
        .await
        .unwrap();
    assert_eq!(next, Action::AwaitChange);
    assert!(a.is_none(), "the action is cleared once applied");
    assert_eq!(
        state.as_ref().unwrap().last_action,
        Some(LifecycleActionKind::Start)
    );
    assert!(sim.power_state(&vm).await.unwrap().is_active());

    tokio::time::sleep(Duration::from_secs(30)).await;
    let mut a = action("004_02_wukong_graceful_stop.yaml");
    let t0 = tokio::time::Instant::now();
    r.reconcile(&vm, &mut a, &mut state, RunStrategy::Manual)
        .await
        .unwrap();
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_secs(40) && took < Duration::from_secs(60),
        "a 40 s guest stops gracefully inside gracePeriodSeconds: 60 ({took:?})"
    );
    assert_eq!(sim.effective_power_offs(&vm), 0, "not forced");
    assert_eq!(state.as_ref().unwrap().state, LifecyclePhase::Stopped);
    assert!(a.is_none());

    let mut a = action("004_01_wukong_start.yaml");
    r.reconcile(&vm, &mut a, &mut state, RunStrategy::Manual)
        .await
        .unwrap();
    let mut a = action("004_03_wukong_force_stop.yaml");
    let t0 = tokio::time::Instant::now();
    r.reconcile(&vm, &mut a, &mut state, RunStrategy::Manual)
        .await
        .unwrap();
    assert_eq!(t0.elapsed(), Duration::ZERO, "force: no grace");
    assert_eq!(sim.effective_power_offs(&vm), 1);
    assert!(matches!(
        sim.power_state(&vm).await.unwrap(),
        PowerState::Off(_)
    ));
}

#[tokio::test(start_paused = true)]
async fn an_invalid_action_is_kept_and_names_its_field() {
    let sim = Simulator::new();
    let vm = sim.add_vm("my-vm-vm", GuestBehavior::cooperative());
    let r = LifecycleReconciler::new(Orchestrator::new(Arc::new(sim.clone())));
    let mut state = None;
    // force with a grace period is contradictory; it skipped validation on the way in.
    let mut a: Option<LifecycleAction> = Some(
        from_yaml_str_unvalidated("action: stop\nforce: true\ngracePeriodSeconds: 10\n").unwrap(),
    );
    let e = r
        .reconcile(&vm, &mut a, &mut state, RunStrategy::Manual)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidSpec);
    assert!(e.to_string().contains("spec.lifecycleAction"), "{e}");
    assert!(a.is_some(), "an invalid action is not lost");
    assert!(state.is_none());
    assert_eq!(sim.power_state(&vm).await.unwrap(), PowerState::Running);
}
