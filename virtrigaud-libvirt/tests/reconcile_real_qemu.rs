//! Core's `VirtualMachine` reconciler on real QEMU guests (TCG) under libvirtd, set up by
//! `scripts/libvirt/setup.sh`: a `VirtualMachine` parsed from YAML with
//! `powerState: OffGraceful` and a `preStop` hook, reconciled through a shutdown manager whose
//! pre-stop executor is [`GuestAgentPreStop`] (the hook runs inside the guest through qemu-ga).
//!
//! Outside `VIRTRIGAUD_REQUIRE_BACKENDS=1` a missing setup skips these tests loudly; under it,
//! it fails them (see `tests/common/real.rs`).
// Real servers run on real time.
#![allow(clippy::disallowed_methods)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::broadcast;
use virtrigaud_core::model::{
    ObservedPowerState, VirtualMachine, condition_types, find_condition, from_yaml_str,
};
use virtrigaud_core::orchestration::{EventType, OrchestrationEvent, Orchestrator};
use virtrigaud_core::reconcile::{Action, VmReconciler};
use virtrigaud_core::shutdown::{ShutdownEvent, ShutdownEventKind, ShutdownManager};
use virtrigaud_core::{AgentStatus, OffReason, PowerState, Provider, VmId};
use virtrigaud_libvirt::GuestAgentPreStop;

mod common;
use common::real::{Real, real};

fn metric(name: &str, value: impl std::fmt::Display) {
    eprintln!("METRIC libvirt {name} = {value}");
}

/// Seed 000's shape (`OffGraceful`, a grace, a `preStop` exec hook), with a grace of `grace`
/// and `script` run by `/bin/sh -c` (the test guest is busybox: no bash, no systemctl).
fn off_graceful(name: &str, grace: &str, script: &str) -> VirtualMachine {
    let yaml = format!(
        r#"apiVersion: infra.virtrigaud.io/v1beta1
kind: VirtualMachine
metadata:
  name: {name}
spec:
  powerState: OffGraceful
  lifecycle:
    gracefulShutdownTimeout: "{grace}"
    preStop:
      exec:
        command:
          - "/bin/sh"
          - "-c"
          - "{script}"
"#
    );
    from_yaml_str(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"))
}

/// A reconciler whose shutdown manager runs pre-stop hooks in the guest through qemu-ga.
fn reconciler(r: &Real) -> VmReconciler {
    let p: Arc<dyn Provider> = r.dyn_provider();
    let manager = ShutdownManager::builder(Arc::clone(&p))
        .pre_stop_executor(Arc::new(GuestAgentPreStop::new(&r.p)))
        .build();
    VmReconciler::new(Orchestrator::with_shutdown_manager(p, Arc::new(manager)))
}

async fn wait_agent(r: &Real, vm: &VmId) {
    let t0 = Instant::now();
    while r.p.probe_agent(vm).await.expect("probe") != AgentStatus::Connected {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "{vm}: the guest agent never connected"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn drain<T: Clone>(rx: &mut broadcast::Receiver<T>) -> Vec<T> {
    let mut out = Vec::new();
    loop {
        match rx.try_recv() {
            Ok(e) => out.push(e),
            Err(broadcast::error::TryRecvError::Lagged(_)) => {}
            Err(_) => return out,
        }
    }
}

fn reasons(events: &[OrchestrationEvent]) -> Vec<&'static str> {
    events.iter().map(|e| e.reason.as_str()).collect()
}

/// The engine's events, one line each, for failure messages.
fn show(events: &[ShutdownEvent]) -> String {
    events
        .iter()
        .map(|e| format!("{:>6} ms {:?}", e.elapsed.as_millis(), e.kind))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Where the guest's own shutdown shows on its console: the agent's `shutdown` or the
/// ACPI button handler (both print `VR: ` lines; the boot lines are `VR[uptime]: `).
fn shutdown_line(console: &str) -> Option<usize> {
    ["VR: shutdown", "VR: ACPI power button"]
        .iter()
        .filter_map(|m| console.find(m))
        .min()
}

/// After the stop pass, the settling pass finds the VM off as its spec says: `Off`, `Ready`.
async fn assert_settles_off(r: &VmReconciler, vm: &VmId, obj: &mut VirtualMachine) {
    let action = r.reconcile(vm, obj, &[]).await.expect("settling pass");
    assert_eq!(action, Action::AwaitChange);
    let st = obj.status.as_ref().expect("status");
    assert_eq!(st.power_state, Some(ObservedPowerState::Off), "{st:?}");
    let ready = find_condition(&st.conditions, condition_types::READY).expect("Ready");
    assert!(ready.is_true(), "{ready:?}");
    assert_eq!(ready.reason, "Reconciled", "{ready:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_virtual_machine_with_off_graceful_and_a_pre_stop_runs_the_hook_in_the_guest_then_stops()
{
    let Some(r) = real("recon").await else { return };
    // Two guests that honour ACPI and run qemu-ga, booted together (2 cores, TCG).
    let saving = r.guest_unready("saving", "acpi", true, true).await;
    let hanging = r.guest_unready("hanging", "acpi", true, true).await;
    for vm in [&saving, &hanging] {
        r.wait_console(vm.as_str(), "READY", Duration::from_secs(60))
            .await;
        wait_agent(&r, vm).await;
    }

    // 1. A hook that saves and syncs: it runs in the guest, then the guest stops gracefully.
    let grace = Duration::from_secs(30);
    let marker = format!("VR-PRESTOP-SAVING-{}", std::process::id());
    let rec = reconciler(&r);
    let mut events = rec.orchestrator().events().subscribe();
    let mut engine = rec.orchestrator().shutdown_manager().subscribe();
    let mut obj = off_graceful(
        saving.as_str(),
        "30s",
        &format!("echo {marker} > /dev/console; sync"),
    );
    let t0 = Instant::now();
    let action = rec
        .reconcile(&saving, &mut obj, &[])
        .await
        .expect("stop pass");
    let took = t0.elapsed();
    assert!(matches!(action, Action::Requeue(_)), "{action:?}");
    let steps = drain(&mut engine);
    let evs = drain(&mut events);
    metric("reconcile_off_graceful_pre_stop_ms", took.as_millis());
    assert!(took < grace, "stopped within the grace: {took:?}");
    assert_eq!(
        r.p.power_state(&saving).await.expect("state"),
        PowerState::Off(OffReason::GuestShutdown),
        "the guest shut itself down (not destroyed)"
    );
    // The engine: hook ok, one request, graceful, never forced.
    let hook = steps
        .iter()
        .find_map(|e| match &e.kind {
            ShutdownEventKind::PreStop { ok, exit_code, .. } => Some((*ok, *exit_code, e.elapsed)),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no PreStop step:\n{}", show(&steps)));
    assert_eq!((hook.0, hook.1), (true, Some(0)), "{}", show(&steps));
    let signalled: Vec<Duration> = steps
        .iter()
        .filter(|e| matches!(e.kind, ShutdownEventKind::Signalled { .. }))
        .map(|e| e.elapsed)
        .collect();
    assert_eq!(signalled.len(), 1, "{}", show(&steps));
    assert!(
        signalled[0] >= hook.2,
        "signalled after the hook: {}",
        show(&steps)
    );
    assert!(
        !steps
            .iter()
            .any(|e| matches!(e.kind, ShutdownEventKind::Forcing(_))),
        "no hard power-off: {}",
        show(&steps)
    );
    assert!(
        steps.iter().any(|e| matches!(&e.kind,
            ShutdownEventKind::Finished(o) if o.as_str() == "graceful")),
        "{}",
        show(&steps)
    );
    // The orchestrator's events: PreStopCompleted (Normal), then VMStopped.
    let completed = evs
        .iter()
        .find(|e| e.reason.as_str() == "PreStopCompleted")
        .unwrap_or_else(|| panic!("no PreStopCompleted: {:?}", reasons(&evs)));
    assert_eq!(completed.event_type, EventType::Normal);
    assert_eq!(completed.name, saving.as_str());
    assert!(
        !evs.iter().any(|e| e.reason.as_str() == "PreStopFailed"),
        "{evs:?}"
    );
    let stopped = evs
        .iter()
        .find(|e| e.reason.as_str() == "VMStopped")
        .unwrap_or_else(|| panic!("no VMStopped: {:?}", reasons(&evs)));
    assert!(stopped.message.contains("graceful"), "{stopped}");
    // The guest's console: the hook's output before the guest's shutdown messages.
    let console = std::fs::read_to_string(r.console_of(saving.as_str())).unwrap_or_default();
    let ran = console
        .find(&marker)
        .unwrap_or_else(|| panic!("the hook's {marker} is not on the console:\n{console}"));
    assert_eq!(console.matches(&marker).count(), 1, "ran once:\n{console}");
    let down = shutdown_line(&console)
        .unwrap_or_else(|| panic!("no shutdown message on the console:\n{console}"));
    assert!(ran < down, "the hook ran before the shutdown:\n{console}");
    assert_settles_off(&rec, &saving, &mut obj).await;

    // 2. A hook that hangs: cut at half the grace, then the guest is still asked to stop and
    //    stops gracefully before the deadline; a PreStopFailed Warning says so.
    let grace = Duration::from_secs(20);
    let marker = format!("VR-PRESTOP-HANGING-{}", std::process::id());
    let mut obj = off_graceful(
        hanging.as_str(),
        "20s",
        &format!("echo {marker} > /dev/console; sleep 600"),
    );
    let t0 = Instant::now();
    let action = rec
        .reconcile(&hanging, &mut obj, &[])
        .await
        .expect("stop pass");
    let took = t0.elapsed();
    assert!(matches!(action, Action::Requeue(_)), "{action:?}");
    let steps = drain(&mut engine);
    let evs = drain(&mut events);
    metric("reconcile_hanging_pre_stop_ms", took.as_millis());
    let (ok, cut_at) = steps
        .iter()
        .find_map(|e| match &e.kind {
            ShutdownEventKind::PreStop { ok, .. } => Some((*ok, e.elapsed)),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no PreStop step:\n{}", show(&steps)));
    assert!(!ok, "{}", show(&steps));
    metric("reconcile_hanging_pre_stop_cut_ms", cut_at.as_millis());
    assert!(
        cut_at <= grace / 2 + Duration::from_millis(500),
        "cut at most at half the grace: {}",
        show(&steps)
    );
    assert!(
        cut_at >= grace / 2 - Duration::from_secs(1),
        "the hook hung until it was cut: {}",
        show(&steps)
    );
    let signalled: Vec<Duration> = steps
        .iter()
        .filter(|e| matches!(e.kind, ShutdownEventKind::Signalled { .. }))
        .map(|e| e.elapsed)
        .collect();
    assert_eq!(signalled.len(), 1, "{}", show(&steps));
    assert!(signalled[0] >= cut_at, "{}", show(&steps));
    assert!(
        !steps
            .iter()
            .any(|e| matches!(e.kind, ShutdownEventKind::Forcing(_))),
        "no hard power-off: {}",
        show(&steps)
    );
    let finished = steps
        .iter()
        .find_map(|e| match &e.kind {
            ShutdownEventKind::Finished(o) => Some((o.as_str(), e.elapsed)),
            _ => None,
        })
        .unwrap_or_else(|| panic!("not finished:\n{}", show(&steps)));
    assert_eq!(finished.0, "graceful", "{}", show(&steps));
    assert!(finished.1 < grace, "before the deadline: {}", show(&steps));
    assert!(took < grace, "{took:?}");
    assert_eq!(
        r.p.power_state(&hanging).await.expect("state"),
        PowerState::Off(OffReason::GuestShutdown)
    );
    let failed = evs
        .iter()
        .find(|e| e.reason.as_str() == "PreStopFailed")
        .unwrap_or_else(|| panic!("no PreStopFailed: {:?}", reasons(&evs)));
    assert_eq!(failed.event_type, EventType::Warning, "{failed}");
    assert_eq!(failed.name, hanging.as_str());
    assert!(
        !evs.iter().any(|e| e.reason.as_str() == "PreStopCompleted"),
        "{evs:?}"
    );
    let console = std::fs::read_to_string(r.console_of(hanging.as_str())).unwrap_or_default();
    let ran = console
        .find(&marker)
        .unwrap_or_else(|| panic!("the hook did not start in the guest:\n{console}"));
    let down = shutdown_line(&console)
        .unwrap_or_else(|| panic!("no shutdown message on the console:\n{console}"));
    assert!(ran < down, "{console}");
    assert_settles_off(&rec, &hanging, &mut obj).await;

    r.remove(&saving).await;
    r.remove(&hanging).await;
}
