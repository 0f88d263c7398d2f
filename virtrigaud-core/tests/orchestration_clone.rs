//! Clone orchestration on the simulator: full/linked, customization, power-on, and no
//! half-made clone after a failure at any step.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use virtrigaud_core::model::{
    CloneCustomization, CloneNetwork, ClonePhase, CloneTarget, CloudInit, ObjectRef, UserData,
    VMClone, VMCloneSpec, condition_types, find_condition,
};
use virtrigaud_core::orchestration::{EventReason, Orchestrator};
use virtrigaud_core::sim::{GuestBehavior, Simulator};
use virtrigaud_core::{ErrorKind, PowerState, VmId};

fn clone_obj(
    target: &str,
    linked: bool,
    power_on: bool,
    custom: Option<CloneCustomization>,
) -> VMClone {
    let mut spec = VMCloneSpec::default();
    spec.source_ref = ObjectRef::new("web-server");
    let mut t = CloneTarget::default();
    t.name = target.into();
    spec.target = t;
    spec.linked = Some(linked);
    spec.power_on = Some(power_on);
    spec.customization = custom;
    VMClone::new("web-server-clone", spec)
}

fn customization() -> CloneCustomization {
    let mut c = CloneCustomization::default();
    c.hostname = Some("web-server-test".into());
    let mut n = CloneNetwork::default();
    n.name = "primary".into();
    n.ip_address = Some("192.168.1.100".into());
    n.gateway = Some("192.168.1.1".into());
    n.dns = vec!["8.8.8.8".into()];
    c.networks = vec![n];
    let mut ci = CloudInit::default();
    ci.inline = Some("#cloud-config\nruncmd:\n  - echo test > /etc/motd\n".into());
    let mut ud = UserData::default();
    ud.cloud_init = Some(ci);
    c.user_data = Some(ud);
    c
}

fn setup(sim: Simulator) -> (Simulator, VmId, Orchestrator) {
    let vm = sim.add_vm("web-server", GuestBehavior::cooperative());
    let orch = Orchestrator::new(Arc::new(sim.clone()));
    (sim, vm, orch)
}

#[tokio::test(start_paused = true)]
async fn linked_clone_with_customization_and_power_on() {
    let (sim, src, orch) = setup(Simulator::new());
    let mut events = orch.events().subscribe();
    let mut c = clone_obj("web-server-test", true, true, Some(customization()));
    let r = orch.clone_vm(&src, &mut c, None).await.unwrap();
    assert!(r.result.linked && r.result.customized && r.powered_on);
    let st = c.status.as_ref().unwrap();
    assert_eq!(st.phase, Some(ClonePhase::Ready));
    assert_eq!(st.target_id.as_deref(), Some("web-server-test"));
    assert!(
        find_condition(&st.conditions, condition_types::READY)
            .unwrap()
            .is_true()
    );
    assert!(
        !find_condition(&st.conditions, condition_types::CLONING)
            .unwrap()
            .is_true()
    );
    assert_eq!(sim.true_state(&r.result.vm), Some(PowerState::Running));
    assert_eq!(
        sim.labels(&r.result.vm)
            .unwrap()
            .get("virtrigaud.io/hostname")
            .map(String::as_str),
        Some("web-server-test")
    );
    let mut reasons = Vec::new();
    while let Ok(e) = events.try_recv() {
        reasons.push(e.reason);
    }
    assert_eq!(
        reasons,
        vec![
            EventReason::CloneStarted,
            EventReason::CloneCustomizing,
            EventReason::CloneCompleted
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn full_clone_stays_off_without_power_on() {
    let (sim, src, orch) = setup(Simulator::new());
    let mut c = clone_obj("copy", false, false, None);
    let r = orch.clone_vm(&src, &mut c, None).await.unwrap();
    assert!(!r.result.linked);
    assert!(sim.true_state(&r.result.vm).unwrap().is_off());
}

#[tokio::test(start_paused = true)]
async fn linked_clone_on_an_incapable_provider_is_a_clear_error_and_creates_nothing() {
    let mut caps = Simulator::default_capabilities();
    caps.linked_clones = false;
    let (sim, src, orch) = setup(Simulator::with_capabilities(caps));
    let mut c = clone_obj("linked", true, false, None);
    let e = orch.clone_vm(&src, &mut c, None).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    assert!(e.to_string().contains("linked: false"), "{e}");
    assert_eq!(sim.calls("clone"), 0);
    assert_eq!(sim.vm_count(), 1);
    assert_eq!(c.status.as_ref().unwrap().phase, Some(ClonePhase::Failed));
}

#[tokio::test(start_paused = true)]
async fn customization_needs_a_capable_provider_and_secret_content() {
    let mut caps = Simulator::default_capabilities();
    caps.clone_customization = false;
    let (sim, src, orch) = setup(Simulator::with_capabilities(caps));
    let mut c = clone_obj("custom", false, false, Some(customization()));
    let e = orch.clone_vm(&src, &mut c, None).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    assert_eq!(sim.vm_count(), 1);

    let (sim, src, orch) = setup(Simulator::new());
    let mut custom = CloneCustomization::default();
    let mut ci = CloudInit::default();
    ci.secret_ref = Some(ObjectRef::new("user-data"));
    let mut ud = UserData::default();
    ud.cloud_init = Some(ci);
    custom.user_data = Some(ud);
    let mut c = clone_obj("secret", false, false, Some(custom.clone()));
    let e = orch.clone_vm(&src, &mut c, None).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidSpec);
    assert_eq!(sim.vm_count(), 1);
    let mut c = clone_obj("secret", false, false, Some(custom));
    orch.clone_vm(&src, &mut c, Some("#cloud-config\n"))
        .await
        .unwrap();
    assert_eq!(sim.vm_count(), 2);
}

/// A fault at every step leaves no half-made clone behind (or says exactly which one is left).
#[tokio::test(start_paused = true)]
async fn a_failure_at_any_step_leaves_nothing_behind() {
    for (op, kind) in [
        ("vm_capabilities", ErrorKind::Unavailable),
        ("clone", ErrorKind::Internal),
        ("clone", ErrorKind::Unavailable),
        ("start", ErrorKind::Internal),
        ("start", ErrorKind::PermissionDenied),
    ] {
        let (sim, src, orch) = setup(Simulator::new());
        sim.inject_fault(op, kind);
        let mut c = clone_obj("victim", true, true, Some(customization()));
        let res = orch.clone_vm(&src, &mut c, None).await;
        let e = res.expect_err(op);
        assert_eq!(e.kind(), kind, "{op}: {e}");
        assert_eq!(sim.vm_count(), 1, "{op}: a half-made clone remains: {e}");
        assert_eq!(sim.true_state(&src), Some(PowerState::Running));
        assert_eq!(c.status.as_ref().unwrap().phase, Some(ClonePhase::Failed));
        if op == "start" {
            assert!(e.to_string().contains("was deleted"), "{e}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_cleanup_that_fails_names_the_leftover() {
    let (sim, src, orch) = setup(Simulator::new());
    sim.inject_fault("start", ErrorKind::Internal);
    sim.inject_fault("delete", ErrorKind::Internal);
    let mut c = clone_obj("leftover", false, true, None);
    let e = orch.clone_vm(&src, &mut c, None).await.unwrap_err();
    assert!(e.to_string().contains("LEFT BEHIND"), "{e}");
    assert!(e.to_string().contains("leftover"), "{e}");
    assert_eq!(sim.vm_count(), 2);
}

#[tokio::test(start_paused = true)]
async fn an_existing_target_is_not_deleted() {
    let (sim, src, orch) = setup(Simulator::new());
    sim.add_vm("taken", GuestBehavior::cooperative());
    let mut c = clone_obj("taken", false, false, None);
    let e = orch.clone_vm(&src, &mut c, None).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists);
    assert_eq!(sim.vm_count(), 2);
    assert_eq!(
        sim.true_state(&VmId::new("taken")),
        Some(PowerState::Running)
    );
}
