//! End-to-end tests on real QEMU guests (TCG) under libvirtd, set up by
//! `scripts/libvirt/setup.sh` (which writes the environment these tests read).
//!
//! The guest is a Debian cloud kernel with a busybox initramfs; its kernel command line picks a
//! personality: `vr.mode=acpi` honours the ACPI power button, `vr.mode=ignore` ignores it,
//! `vr.agent=1` runs qemu-ga. Outside `VIRTRIGAUD_REQUIRE_BACKENDS=1` a missing setup skips
//! these tests loudly; under it, it fails them. The backend and its guests are
//! `tests/common/real.rs`; the conformance fixture is `tests/common/mod.rs`.
// Real servers run on real time: wall-clock instants measure latencies against the event
// timestamps the provider records (std Instants taken on libvirt's event thread).
#![allow(clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use virtrigaud_core::conformance;
use virtrigaud_core::provider::{DiskResize, PowerOffOptions, ReconfigureRequest, VmCreateSpec};
use virtrigaud_core::shutdown::{ForcedReason, ShutdownManager, ShutdownOutcome, ShutdownPolicy};
use virtrigaud_core::snapshot::{DeleteSnapshotOptions, RevertOptions, SnapshotOptions};
use virtrigaud_core::{
    AgentStatus, CloneOptions, ErrorKind, OffReason, PowerState, Provider, ShutdownChannel, VmId,
};

mod common;
use common::LibvirtFixture;
use common::real::real;

fn metric(name: &str, value: impl std::fmt::Display) {
    eprintln!("METRIC libvirt {name} = {value}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_acpi_stop_is_event_driven() {
    let Some(r) = real("acpi").await else { return };
    let vm = r.guest("g", "acpi", false, true).await;
    // The endpoint: the test daemon's qemu:///system is local, so the host name is part of it.
    let host = r.p.inventory().await.expect("inventory").hosts[0]
        .name
        .clone();
    let uri = std::env::var("VIRTRIGAUD_LIBVIRT_URI").expect("uri");
    assert_eq!(r.p.instance_id(), format!("{uri}@{host}"));
    // This run's incarnation, stable while it runs.
    let run1 = r.p.incarnation(&vm).await.expect("incarnation");
    assert!(run1.is_some(), "a running guest has an incarnation");
    assert_eq!(r.p.incarnation(&vm).await.expect("again"), run1);
    let calls0 = r.p.api_calls();
    let report = ShutdownManager::new(r.dyn_provider())
        .shutdown(&vm, ShutdownPolicy::with_grace(Duration::from_secs(30)))
        .await
        .expect("shutdown");
    let done = Instant::now();
    assert!(
        matches!(
            report.outcome,
            ShutdownOutcome::Graceful {
                channel: Some(ShutdownChannel::Acpi)
            }
        ),
        "{}",
        report.outcome
    );
    assert_eq!(report.power_off_calls, 0);
    let stop =
        r.p.last_stop_event(&vm)
            .expect("a Stopped event was received");
    metric("acpi_stop_elapsed_ms", report.elapsed.as_millis());
    metric(
        "stopped_event_to_outcome_us",
        done.duration_since(stop).as_micros(),
    );
    metric(
        "libvirt_api_calls_per_graceful_stop",
        r.p.api_calls() - calls0,
    );
    metric(
        "engine_provider_calls_per_graceful_stop",
        report.provider_calls,
    );
    // Issue 18's budget: the read (which also says the agent's state), one signal, the
    // confirming read, besides the event subscription.
    assert!(
        report.provider_calls <= 4,
        "{} provider calls for one graceful stop",
        report.provider_calls
    );
    assert_eq!(
        r.p.power_state(&vm).await.expect("state"),
        PowerState::Off(OffReason::GuestShutdown)
    );
    assert_eq!(r.p.incarnation(&vm).await.expect("off"), None);
    // The next start is a new run (no need to wait for the guest to boot).
    r.p.start(&vm, &Default::default()).await.expect("start");
    let run2 = r.p.incarnation(&vm).await.expect("incarnation");
    let (run1, run2) = (run1.expect("run 1"), run2.expect("run 2"));
    assert_ne!(run1, run2, "a new QEMU process is a new incarnation");
    let uuid = run1.as_str().split_once('#').expect("<uuid>#<id>").0;
    assert!(run2.as_str().starts_with(&format!("{uuid}#")), "{run2}");
    r.remove(&vm).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_agent_stop_uses_the_guest_agent() {
    let Some(r) = real("agent").await else { return };
    // ACPI is ignored by this guest: only the agent can stop it gracefully.
    let vm = r.guest("g", "ignore", true, true).await;
    let t0 = Instant::now();
    while r.p.probe_agent(&vm).await.expect("probe") != AgentStatus::Connected {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the guest agent never connected"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        r.p.vm_capabilities(&vm)
            .await
            .expect("caps")
            .agent_connected,
        Some(true)
    );
    let report = ShutdownManager::new(r.dyn_provider())
        .shutdown(&vm, ShutdownPolicy::with_grace(Duration::from_secs(30)))
        .await
        .expect("shutdown");
    let done = Instant::now();
    assert!(
        matches!(
            report.outcome,
            ShutdownOutcome::Graceful {
                channel: Some(ShutdownChannel::Agent)
            }
        ),
        "{}",
        report.outcome
    );
    if let Some(stop) = r.p.last_stop_event(&vm) {
        metric(
            "agent_stopped_event_to_outcome_us",
            done.duration_since(stop).as_micros(),
        );
    }
    metric("agent_stop_elapsed_ms", report.elapsed.as_millis());
    assert_eq!(
        r.p.probe_agent(&vm).await.expect("probe"),
        AgentStatus::NotConnected
    );
    assert_eq!(
        r.p.power_state(&vm).await.expect("state"),
        PowerState::Off(OffReason::GuestShutdown),
        "an agent shutdown is the guest's own, not a destroy"
    );
    r.remove(&vm).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignored_acpi_is_forced_at_the_deadline() {
    let Some(r) = real("ignore").await else {
        return;
    };
    let vm = r.guest("g", "ignore", false, true).await;
    let grace = Duration::from_secs(3);
    let report = ShutdownManager::new(r.dyn_provider())
        .shutdown(&vm, ShutdownPolicy::with_grace(grace))
        .await
        .expect("shutdown");
    assert!(
        matches!(
            report.outcome,
            ShutdownOutcome::Forced {
                reason: ForcedReason::Timeout
            }
        ),
        "{}",
        report.outcome
    );
    assert!(
        report.elapsed >= grace,
        "forced after {:?}, before the deadline",
        report.elapsed
    );
    assert!(
        report.elapsed < grace + Duration::from_secs(3),
        "forced late: {:?}",
        report.elapsed
    );
    assert!(report.signals_sent >= 1);
    metric("ignored_forced_elapsed_ms", report.elapsed.as_millis());
    assert_eq!(
        r.p.power_state(&vm).await.expect("state"),
        PowerState::Off(OffReason::Destroyed)
    );
    r.remove(&vm).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_with_memory_and_revert() {
    let Some(r) = real("snap").await else { return };
    let vm = r.guest("g", "acpi", false, true).await;
    let s = r.p.snapshotter().expect("snapshots");
    let t0 = Instant::now();
    let info = s
        .create_snapshot(&vm, &SnapshotOptions::new("live").with_memory(true))
        .await
        .expect("snapshot");
    metric("memory_snapshot_ms", t0.elapsed().as_millis());
    assert!(info.has_memory, "{info:?}");
    assert_eq!(s.list_snapshots(&vm).await.expect("list").len(), 1);
    // Stop the guest, then revert: the memory snapshot brings it back running.
    r.p.power_off(&vm, &PowerOffOptions::default())
        .await
        .expect("off");
    let t0 = Instant::now();
    s.revert_snapshot(&vm, "live", &RevertOptions::default())
        .await
        .expect("revert stopped");
    metric("revert_ms", t0.elapsed().as_millis());
    assert_eq!(
        r.p.power_state(&vm).await.expect("state"),
        PowerState::Running
    );
    // Revert while running.
    s.revert_snapshot(&vm, "live", &RevertOptions::default())
        .await
        .expect("revert running");
    assert_eq!(
        r.p.power_state(&vm).await.expect("state"),
        PowerState::Running
    );
    s.delete_snapshot(&vm, "live", &DeleteSnapshotOptions::default())
        .await
        .expect("delete");
    assert!(s.list_snapshots(&vm).await.expect("list").is_empty());
    r.remove(&vm).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linked_clone_boots() {
    let Some(r) = real("clone").await else { return };
    let src = r.guest("src", "acpi", false, false).await;
    let target = r.name("linked");
    r.remove(&VmId::new(target.clone())).await;
    let _ = std::fs::remove_file(r.console_of(&target));
    let res =
        r.p.cloner()
            .expect("cloner")
            .clone_vm(
                &src,
                &CloneOptions::new(target.clone())
                    .linked(true)
                    .power_on(true),
            )
            .await
            .expect("linked clone");
    assert!(res.linked);
    r.wait_console(&target, "READY", Duration::from_secs(60))
        .await;
    assert_eq!(
        r.p.power_state(&res.vm).await.expect("state"),
        PowerState::Running
    );
    let d = r.p.describe(&res.vm).await.expect("describe");
    assert_eq!(d.disks.len(), 1);
    r.remove(&res.vm).await;
    r.remove(&src).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_vcpu_and_memory_change() {
    let Some(r) = real("hotplug").await else {
        return;
    };
    let vm = r.guest("g", "acpi", false, true).await;
    let mut rq = ReconfigureRequest::default();
    rq.cpu = Some(2);
    rq.memory_mib = Some(96);
    let res = r.p.reconfigure(&vm, &rq).await.expect("live reconfigure");
    assert!(res.applied_live && !res.needs_power_cycle, "{res:?}");
    r.wait_console(vm.as_str(), "cpus=2", Duration::from_secs(30))
        .await;
    assert_eq!(r.p.describe(&vm).await.expect("describe").cpu, 2);
    let mut rq = ReconfigureRequest::default();
    rq.cpu = Some(3);
    let res = r.p.reconfigure(&vm, &rq).await.expect("beyond maximum");
    assert!(res.needs_power_cycle && !res.applied_live, "{res:?}");
    assert!(
        r.p.describe(&vm)
            .await
            .expect("describe")
            .pending_power_cycle
    );
    // Disks grow live (blockresize); core's check refuses a shrink before libvirt sees it.
    let mut rq = ReconfigureRequest::default();
    rq.disks.push(DiskResize::new("vda", 2));
    r.p.reconfigure(&vm, &rq).await.expect("grow vda live");
    assert_eq!(
        r.p.describe(&vm).await.expect("describe").disks[0].size_gib,
        2
    );
    let mut rq = ReconfigureRequest::default();
    rq.disks.push(DiskResize::new("vda", 1));
    let e = r.p.reconfigure(&vm, &rq).await.expect_err("shrink");
    assert_eq!(e.kind(), ErrorKind::InvalidSpec, "{e}");
    assert!(e.message().contains("disks only grow"), "{e}");
    r.remove(&vm).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_reboot_is_a_real_guest_reboot() {
    let Some(r) = real("reboot").await else {
        return;
    };
    let vm = r.guest("g", "acpi", true, true).await;
    let t0 = Instant::now();
    while r.p.probe_agent(&vm).await.expect("probe") != AgentStatus::Connected {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the guest agent never connected"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let before = r.p.incarnation(&vm).await.expect("incarnation");
    assert!(before.is_some());
    let t_reboot = Instant::now();
    r.p.reboot(&vm, ShutdownChannel::Agent)
        .await
        .expect("reboot");
    metric("agent_reboot_call_ms", t_reboot.elapsed().as_millis());
    // The same QEMU process keeps running (no destroy + start): the console shows a second boot.
    let path = r.console_of(vm.as_str());
    let t0 = Instant::now();
    loop {
        let boots = std::fs::read_to_string(&path)
            .map(|s| s.matches("READY").count())
            .unwrap_or(0);
        if boots >= 2 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no second boot after the reboot"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        r.p.power_state(&vm).await.expect("state"),
        PowerState::Running
    );
    assert!(
        r.p.last_stop_event(&vm).is_none(),
        "a reboot must not stop the domain"
    );
    // A reboot inside the same QEMU process keeps the domain id: the incarnation names the
    // run of the domain, not of the guest OS (see the crate docs).
    assert_eq!(r.p.incarnation(&vm).await.expect("incarnation"), before);
    r.remove(&vm).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_init_nocloud_seed_reaches_the_guest() {
    let Some(r) = real("seed").await else { return };
    let name = r.name("g");
    r.remove(&VmId::new(name.clone())).await;
    let _ = std::fs::remove_file(r.console_of(&name));
    let mut spec = VmCreateSpec::new(name.clone(), 1, 128);
    spec.cloud_init_user_data = Some("#cloud-config\nhostname: vr-seeded\n".into());
    spec.power_on = true;
    let mut tpl = r.template("acpi", false);
    if let Some(kb) = tpl.kernel_boot.as_mut() {
        kb.cmdline.push_str(" vr.seed=1");
    }
    let vm =
        r.p.create_with(&spec, &tpl)
            .await
            .expect("create with a seed");
    // The guest mounts the cdrom labelled cidata and prints the files it finds.
    r.wait_console(
        &name,
        "SEED user-data: hostname: vr-seeded",
        Duration::from_secs(60),
    )
    .await;
    r.wait_console(&name, "SEED file meta-data", Duration::from_secs(5))
        .await;
    r.remove(&vm).await;
    let pool_dir = r.console.parent().expect("state dir").join("pool");
    assert!(
        !pool_dir.join(format!("{name}-cidata.iso")).exists(),
        "delete with disks removes the seed volume"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite_on_real_qemu() {
    let Some(r) = real("conf").await else { return };
    let provider = r.dyn_provider();
    let fx =
        LibvirtFixture::new(r, Duration::from_secs(30)).with_short_grace(Duration::from_secs(3));
    let t0 = Instant::now();
    let report = conformance::run_all(provider, &fx).await;
    report.assert_passed_on("libvirt-real-qemu");
    for check in [
        "clone_customization_is_applied",
        "failed_clone_leaves_nothing",
    ] {
        assert!(report.passed().contains(&check), "{check} did not pass");
    }
    metric("real_conformance_wall_s", t0.elapsed().as_secs_f64());
}

/// Issue 7's flows on a real guest: an offline reconfigure is a graceful power cycle through
/// the engine (the guest stops by ACPI, not by a hard off) and the VM runs again; a
/// `revertToRef` request reverts a memory snapshot and leaves the running VM running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orchestration_flows_on_a_real_guest() {
    use virtrigaud_core::model::{
        ObjectRef, VMSnapshot, VMSnapshotSpec, VirtualMachine, VirtualMachineSpec,
        VirtualMachineStatus, VmSnapshotOperation,
    };
    use virtrigaud_core::orchestration::{
        Orchestrator, PlanMode, ReconfigureOptions, ReconfigureOutcome, ResourceChange,
        SnapshotCreateOptions,
    };
    let Some(r) = real("orch").await else { return };
    let vm = r.guest("g", "acpi", false, true).await;
    let orch = Orchestrator::new(r.dyn_provider());

    let caps = r.p.vm_capabilities(&vm).await.expect("vm_capabilities");
    let change = ResourceChange::default().cpu(caps.max_live_vcpus + 1);
    let plan = orch
        .plan_reconfigure(&vm, &change, &ReconfigureOptions::default())
        .await
        .expect("plan");
    assert!(
        matches!(plan.mode, PlanMode::GracefulPowerCycle { .. }),
        "{:?}",
        plan.mode
    );
    let mut shutdown_events = orch.shutdown_manager().subscribe();
    let mut status = VirtualMachineStatus::default();
    let report = orch
        .reconfigure(&vm, &change, &ReconfigureOptions::default(), &mut status)
        .await
        .expect("reconfigure");
    assert_eq!(report.outcome, ReconfigureOutcome::PowerCycled);
    let mut graceful = false;
    while let Ok(ev) = shutdown_events.try_recv() {
        if let virtrigaud_core::shutdown::ShutdownEventKind::Finished(outcome) = ev.kind {
            graceful = matches!(outcome, ShutdownOutcome::Graceful { .. });
        }
    }
    assert!(
        graceful,
        "the power cycle must stop the guest gracefully through the engine"
    );
    assert_eq!(
        r.p.power_state(&vm).await.expect("state"),
        PowerState::Running
    );
    assert_eq!(
        r.p.describe(&vm).await.expect("describe").cpu,
        caps.max_live_vcpus + 1
    );
    metric(
        "orchestration_power_cycle_downtime_ms",
        report.downtime.unwrap_or_default().as_millis(),
    );

    r.wait_console(vm.as_str(), "READY", Duration::from_secs(60))
        .await;
    let mut spec = VMSnapshotSpec::default();
    spec.vm_ref = ObjectRef::new(vm.as_str());
    spec.memory = Some(true);
    let mut snap = VMSnapshot::new("orch-base", spec);
    orch.create_snapshot(&vm, &mut snap, &SnapshotCreateOptions::default())
        .await
        .expect("create snapshot");
    let mut vm_spec = VirtualMachineSpec::default();
    let mut op = VmSnapshotOperation::default();
    op.revert_to_ref = Some(ObjectRef::new("orch-base"));
    vm_spec.snapshot = Some(op);
    let mut obj = VirtualMachine::new(vm.as_str(), vm_spec);
    let reverted = orch
        .revert(&vm, &mut obj, std::slice::from_ref(&snap))
        .await
        .expect("revert");
    assert!(reverted.is_some());
    assert!(
        obj.spec
            .snapshot
            .as_ref()
            .and_then(|s| s.revert_to_ref.as_ref())
            .is_none()
    );
    assert_eq!(
        r.p.power_state(&vm).await.expect("state"),
        PowerState::Running
    );
    r.remove(&vm).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pre_stop_hooks_run_inside_the_guest_and_never_eat_the_grace() {
    use std::sync::Arc;
    use virtrigaud_core::shutdown::{PreStopHook, ShutdownEventKind};
    use virtrigaud_libvirt::GuestAgentPreStop;
    let Some(r) = real("prestop").await else {
        return;
    };
    let sh = |script: &str| vec!["/bin/sh".to_owned(), "-c".to_owned(), script.to_owned()];
    let cases = [
        // (hook, budget, the hook's outcome)
        (sh("echo VR-PRESTOP saving > /dev/console; sync"), 10, true),
        (
            sh("echo VR-PRESTOP failing > /dev/console; exit 3"),
            10,
            false,
        ),
        (
            sh("echo VR-PRESTOP hanging > /dev/console; sleep 600"),
            2,
            false,
        ),
    ];
    for (i, (hook, budget, ok)) in cases.into_iter().enumerate() {
        let vm = r.guest(&format!("h{i}"), "acpi", true, true).await;
        let t0 = Instant::now();
        while r.p.probe_agent(&vm).await.expect("probe") != AgentStatus::Connected {
            assert!(t0.elapsed() < Duration::from_secs(60), "no agent");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let manager = ShutdownManager::builder(r.dyn_provider())
            .pre_stop_executor(Arc::new(GuestAgentPreStop::new(&r.p)))
            .build();
        let mut events = manager.subscribe();
        let policy = ShutdownPolicy::with_grace(Duration::from_secs(30))
            .pre_stop(PreStopHook::new(hook.clone(), Duration::from_secs(budget)));
        let report = manager.shutdown(&vm, policy).await.expect("shutdown");
        assert!(
            matches!(report.outcome, ShutdownOutcome::Graceful { .. }),
            "{hook:?}: {}",
            report.outcome
        );
        assert!(
            report.elapsed < Duration::from_secs(30),
            "{:?}",
            report.elapsed
        );
        let mut hook_ok = None;
        while let Ok(e) = events.try_recv() {
            if let ShutdownEventKind::PreStop { ok, .. } = e.kind {
                hook_ok = Some(ok);
            }
        }
        assert_eq!(hook_ok, Some(ok), "{hook:?}");
        // The hook ran inside the guest, before its shutdown.
        let console = std::fs::read_to_string(r.console_of(vm.as_str())).unwrap_or_default();
        let ran = console
            .find("VR-PRESTOP")
            .unwrap_or_else(|| panic!("{hook:?}: {console}"));
        let down = console.rfind("VR:").unwrap_or(usize::MAX);
        assert!(ran < down || down == usize::MAX, "{console}");
        r.remove(&vm).await;
    }
}
