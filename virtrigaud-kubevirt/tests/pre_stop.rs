//! Seed 000's `preStop` hook on KubeVirt, against the real apiserver (`scripts/kubevirt/setup.sh`,
//! `VIRTRIGAUD_KUBECONFIG`) with the fake KubeVirt controllers: KubeVirt has no guest-exec
//! API, so `VmReconciler` refuses the stop (the VM keeps running) unless told to skip the
//! hook, and then stops it gracefully through the shutdown engine.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use kube::api::Api;
use virtrigaud_core::model::{
    ObservedPowerState, VirtualMachine as VmObject, condition_types, find_condition, from_yaml_str,
};
use virtrigaud_core::orchestration::{EventType, Orchestrator};
use virtrigaud_core::reconcile::VmReconciler;
use virtrigaud_core::{ErrorKind, PowerState, Provider};
use virtrigaud_kubevirt::types::{VirtualMachine, VirtualMachineInstance};

use common::*;

const SETTLE: Duration = Duration::from_secs(30);

/// Seed 000's lifecycle-hooks block, verbatim.
const SEED_000_ADVANCED: &str = virtrigaud_core::testing::SEED_000_LIFECYCLE_HOOKS;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pre_stop_hook_is_refused_unless_skipping_is_asked_for() {
    let Some(path) = kubeconfig() else {
        return;
    };
    let ns = unique_ns("prestop");
    let client = client(&path).await;
    let provider = provider(&path, &ns).await;
    assert!(
        !provider.capabilities().guest_exec,
        "KubeVirt has no guest-exec API"
    );
    let ctl = FakeKubeVirt::start(client.clone(), &ns, false);
    let mut vm: VmObject = from_yaml_str(SEED_000_ADVANCED).unwrap();
    let name = vm.metadata.name.clone();
    let id = create_vm(
        &client,
        &ns,
        &name,
        "Always",
        Some(30),
        &[(GUEST_SHUTDOWN, "500")],
    )
    .await;
    provider
        .wait_for_power_state(&id, |s| *s == PowerState::Running, SETTLE)
        .await
        .expect("running");
    let vmis: Api<VirtualMachineInstance> = Api::namespaced(client.clone(), &ns);
    let vms: Api<VirtualMachine> = Api::namespaced(client.clone(), &ns);

    // No executor can run the hook in a KubeVirt guest: the stop is refused, nothing is sent.
    let r = VmReconciler::new(Orchestrator::new(
        Arc::new(provider.clone()) as Arc<dyn Provider>
    ));
    assert!(!r.orchestrator().shutdown_manager().runs_pre_stop_hooks());
    let e = r.reconcile(&id, &mut vm, &[]).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    assert!(e.to_string().contains("spec.lifecycle.preStop"), "{e}");
    assert!(e.to_string().contains("kubevirt"), "{e}");
    let st = vm.status.as_ref().expect("status written");
    let ready = find_condition(&st.conditions, condition_types::READY).expect("Ready");
    assert!(!ready.is_true());
    assert_eq!(ready.reason, "PreStopUnsupported");
    assert!(
        ready.message.contains("spec.lifecycle.preStop"),
        "{ready:?}"
    );
    assert_eq!(st.power_state, Some(ObservedPowerState::On));
    assert_eq!(
        provider.power_state(&id).await.unwrap(),
        PowerState::Running
    );
    let vmi = vmis
        .get_opt(&name)
        .await
        .unwrap()
        .expect("the VMI is still there");
    assert_eq!(
        vmi.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Running")
    );
    assert_eq!(
        vms.get(&name).await.unwrap().spec.run_strategy.as_deref(),
        Some("Always"),
        "no stop was requested"
    );
    assert!(ctl.stops_of(&name).is_empty());

    // Told to skip the hook: a PreStopFailed Warning, then the engine's graceful stop with
    // the spec's 120 s grace.
    let r = r.skip_unrunnable_pre_stop();
    let mut events = r.orchestrator().events().subscribe();
    r.run_until_settled(&id, &mut vm, &[], 10)
        .await
        .expect("settled");
    assert!(provider.power_state(&id).await.unwrap().is_off());
    let stops = ctl.stops_of(&name);
    assert_eq!(stops.len(), 1, "{stops:?}");
    assert!(
        stops[0].graceful,
        "the guest shut down by itself: {stops:?}"
    );
    assert_eq!(stops[0].grace, 120, "the engine's grace reached KubeVirt");
    assert!(
        vmis.get_opt(&name).await.unwrap().is_none(),
        "the VMI is gone"
    );
    let mut seen = Vec::new();
    while let Ok(e) = events.try_recv() {
        seen.push(e);
    }
    let warned = seen
        .iter()
        .find(|e| e.reason.as_str() == "PreStopFailed")
        .unwrap_or_else(|| panic!("a PreStopFailed event in {seen:?}"));
    assert_eq!(warned.event_type, EventType::Warning);
    assert!(
        warned.message.contains("spec.lifecycle.preStop"),
        "{warned}"
    );
    let stopped = seen
        .iter()
        .find(|e| e.reason.as_str() == "VMStopped")
        .unwrap_or_else(|| panic!("a VMStopped event in {seen:?}"));
    assert!(stopped.message.contains("graceful"), "{stopped}");
    let st = vm.status.as_ref().unwrap();
    assert_eq!(st.power_state, Some(ObservedPowerState::Off));
    assert!(
        find_condition(&st.conditions, condition_types::READY)
            .unwrap()
            .is_true()
    );
}
