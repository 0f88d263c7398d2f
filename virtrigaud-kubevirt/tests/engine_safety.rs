//! Issue 13 (engine safety), KubeVirt side, against the real apiserver: restart windows read
//! `Starting` (never `Off`), the incarnation is the VMI's UID, a cancelled shutdown restores
//! what the stop changed, and a stop forced by KubeVirt's grace reads `Off(Destroyed)`.
//! Tests without `FakeKubeVirt` run in a namespace no controller watches, so what they set up
//! stays exactly as written.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, DeleteParams};
use serde_json::json;
use virtrigaud_core::shutdown::{ShutdownManager, ShutdownOutcome, ShutdownPolicy};
use virtrigaud_core::{
    ErrorKind, OffReason, PowerState, Provider, ShutdownChannel, ShutdownRequestOptions, VmId,
};
use virtrigaud_kubevirt::KubeVirtProvider;
use virtrigaud_kubevirt::types::{VirtualMachine, VirtualMachineInstance};

use common::*;

const SETTLE: Duration = Duration::from_secs(30);

fn vms(client: &kube::Client, ns: &str) -> Api<VirtualMachine> {
    Api::namespaced(client.clone(), ns)
}

fn vmis(client: &kube::Client, ns: &str) -> Api<VirtualMachineInstance> {
    Api::namespaced(client.clone(), ns)
}

async fn run_strategy(client: &kube::Client, ns: &str, name: &str) -> Option<String> {
    vms(client, ns).get(name).await.unwrap().spec.run_strategy
}

/// Collects the pushed power states of `vm` until one satisfies `stop` (or `timeout`), in a
/// task started now: trigger the change after calling this.
async fn collect_states(
    p: &KubeVirtProvider,
    vm: &VmId,
    mut stop: impl FnMut(&PowerState) -> bool + Send + 'static,
    timeout: Duration,
) -> tokio::task::JoinHandle<Vec<PowerState>> {
    let mut stream = p
        .watch_power_state(vm)
        .await
        .expect("watch")
        .expect("a push stream");
    let handle = tokio::spawn(async move {
        let mut seen = Vec::new();
        let _ = tokio::time::timeout(timeout, async {
            while let Some(item) = stream.next().await {
                let Ok(s) = item else { break };
                seen.push(s);
                if stop(&s) {
                    break;
                }
            }
        })
        .await;
        seen
    });
    // let both watches list before the change is triggered
    tokio::time::sleep(Duration::from_millis(300)).await;
    handle
}

// ---------------------------------------------------------------- 1. restart windows

/// No instance, but virt-controller is about to create one: `Starting`, not `Off` — and a
/// shutdown through the engine then really stops the VM instead of reporting it already off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_windows_read_starting_not_off() {
    let Some(path) = kubeconfig() else {
        return;
    };
    let ns = unique_ns("restart-window");
    let client = client(&path).await;
    let p = provider(&path, &ns).await;

    // Always, the instance just deleted (a restart), the status still from the old run
    let a = create_vm(&client, &ns, "a", "Always", None, &[]).await;
    for printable in ["Running", "Stopping"] {
        set_vm_status(
            &client,
            &ns,
            "a",
            json!({"printableStatus": printable, "created": false}),
        )
        .await;
        assert_eq!(
            p.power_state(&a).await.unwrap(),
            PowerState::Starting,
            "Always, no VMI, status {printable}"
        );
    }
    // Always, the old instance final but not replaced yet
    let b = create_vm(&client, &ns, "b", "Always", None, &[]).await;
    create_running_vmi(&client, &ns, "b").await;
    vmis(&client, &ns)
        .patch_status(
            "b",
            &Default::default(),
            &kube::api::Patch::Merge(json!({"status": {"phase": "Succeeded"}})),
        )
        .await
        .unwrap();
    assert_eq!(p.power_state(&b).await.unwrap(), PowerState::Starting);
    // RerunOnFailure after a failure: the failed VMI is gone, virt-controller queued a Start
    let r = create_vm(&client, &ns, "r", "RerunOnFailure", None, &[]).await;
    set_vm_status(
        &client,
        &ns,
        "r",
        json!({"printableStatus": "Stopping", "stateChangeRequests": [{"action": "Start"}]}),
    )
    .await;
    assert_eq!(p.power_state(&r).await.unwrap(), PowerState::Starting);
    // Manual with a pending Start request
    let m = create_vm(&client, &ns, "m", "Manual", None, &[]).await;
    set_vm_status(
        &client,
        &ns,
        "m",
        json!({"printableStatus": "Stopped", "stateChangeRequests": [{"action": "Start"}]}),
    )
    .await;
    assert_eq!(p.power_state(&m).await.unwrap(), PowerState::Starting);
    // really meant to be stopped: Off
    let h = create_vm(&client, &ns, "h", "Halted", None, &[]).await;
    set_vm_status(&client, &ns, "h", json!({"printableStatus": "Stopping"})).await;
    assert_eq!(
        p.power_state(&h).await.unwrap(),
        PowerState::Off(OffReason::Unknown)
    );
    let m2 = create_vm(&client, &ns, "m2", "Manual", None, &[]).await;
    set_vm_status(&client, &ns, "m2", json!({"printableStatus": "Running"})).await;
    assert_eq!(
        p.power_state(&m2).await.unwrap(),
        PowerState::Off(OffReason::Unknown)
    );

    // The engine does not take the restart window for "already off": it stops the VM for good.
    let manager = ShutdownManager::new(Arc::new(p.clone()) as Arc<dyn Provider>);
    let report = manager
        .shutdown(&a, ShutdownPolicy::with_grace(Duration::from_secs(5)))
        .await
        .expect("shutdown");
    assert!(
        !matches!(report.outcome, ShutdownOutcome::AlreadyOff),
        "{}",
        report.outcome
    );
    assert_eq!(
        run_strategy(&client, &ns, "a").await.as_deref(),
        Some("Halted")
    );
    assert_eq!(
        p.power_state(&a).await.unwrap(),
        PowerState::Off(OffReason::Unknown)
    );
}

/// With the fake virt-controller: a restart deletes the instance and creates a new one; every
/// state pushed in between is active, none is `Off`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_never_reads_off() {
    let Some(path) = kubeconfig() else {
        return;
    };
    let ns = unique_ns("restart-never-off");
    let client = client(&path).await;
    let p = provider(&path, &ns).await;
    let _ctl = FakeKubeVirt::start(client.clone(), &ns, false);
    let vm = create_vm(
        &client,
        &ns,
        "w",
        "Always",
        Some(30),
        &[(GUEST_SHUTDOWN, "1000"), (BOOT, "500")],
    )
    .await;
    p.wait_for_power_state(&vm, |s| *s == PowerState::Running, SETTLE)
        .await
        .expect("running");
    let first = vmis(&client, &ns).get("w").await.unwrap().metadata.uid;

    // a restart (Stop + Start requests), then the instance deleted by hand (Always re-creates it)
    for how in ["restart", "delete"] {
        let before = vmis(&client, &ns).get("w").await.unwrap().metadata.uid;
        // until the first off (the bug) or running again after the window
        let mut left = false;
        let until = move |s: &PowerState| {
            left |= *s != PowerState::Running;
            s.is_off() || (left && *s == PowerState::Running)
        };
        let states = collect_states(&p, &vm, until, SETTLE).await;
        match how {
            "restart" => p.restart(&vm, false).await.expect("restart"),
            _ => {
                vmis(&client, &ns)
                    .delete("w", &DeleteParams::default())
                    .await
                    .expect("delete VMI");
            }
        }
        // the new instance runs
        tokio::time::timeout(SETTLE, async {
            loop {
                if let Some(v) = vmis(&client, &ns).get_opt("w").await.unwrap()
                    && v.metadata.uid != before
                    && v.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .expect("a new instance runs");
        let seen = states.await.unwrap();
        assert!(
            seen.iter().all(|s| !s.is_off()),
            "{how}: a state pushed during the restart reads off: {seen:?}"
        );
        assert!(
            seen.contains(&PowerState::Starting),
            "{how}: the window was observed: {seen:?}"
        );
        assert_eq!(seen.last(), Some(&PowerState::Running), "{how}: {seen:?}");
    }
    let last = vmis(&client, &ns).get("w").await.unwrap().metadata.uid;
    assert_ne!(first, last);
}

// ---------------------------------------------------------------- 3. incarnation

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incarnation_is_the_uid_of_the_running_instance() {
    let Some(path) = kubeconfig() else {
        return;
    };
    let ns = unique_ns("incarnation");
    let client = client(&path).await;
    let p = provider(&path, &ns).await;
    let _ctl = FakeKubeVirt::start(client.clone(), &ns, false);
    let vm = create_vm(&client, &ns, "i", "Always", Some(30), &[]).await;
    p.wait_for_power_state(&vm, |s| *s == PowerState::Running, SETTLE)
        .await
        .expect("running");
    let uid1 = vmis(&client, &ns).get("i").await.unwrap().metadata.uid;
    let inc1 = p
        .incarnation(&vm)
        .await
        .unwrap()
        .expect("a running VM has one");
    assert_eq!(Some(inc1.as_str()), uid1.as_deref());
    assert_eq!(
        p.incarnation(&vm).await.unwrap(),
        Some(inc1.clone()),
        "stable"
    );

    // the instance is deleted and virt-controller creates a new one: a new run
    vmis(&client, &ns)
        .delete("i", &DeleteParams::default())
        .await
        .expect("delete VMI");
    let uid2 = tokio::time::timeout(SETTLE, async {
        loop {
            if let Some(v) = vmis(&client, &ns).get_opt("i").await.unwrap()
                && v.metadata.uid != uid1
                && v.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
            {
                break v.metadata.uid;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("a new instance");
    let inc2 = p.incarnation(&vm).await.unwrap().expect("running again");
    assert_ne!(inc1, inc2);
    assert_eq!(Some(inc2.as_str()), uid2.as_deref());

    // stopped: no run
    p.stop_with_grace(&vm, Some(5)).await.expect("stop");
    p.wait_for_power_state(&vm, PowerState::is_off, SETTLE)
        .await
        .expect("off");
    assert_eq!(p.incarnation(&vm).await.unwrap(), None);
    let e = p
        .incarnation(&VmId::new(format!("{ns}/no-such-vm")))
        .await
        .expect_err("missing VM");
    assert_eq!(e.kind(), ErrorKind::NotFound);
}

// ---------------------------------------------------------------- 4. cancel_shutdown

fn req(secs: u64) -> ShutdownRequestOptions {
    ShutdownRequestOptions::new(1, Duration::from_secs(secs))
}

/// A shutdown cancelled before virt-controller acts on it leaves nothing armed: the run
/// strategy (Always) or the Stop request (Manual) and the VMI's grace are as before, and a
/// controller started afterwards keeps the instance running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_restores_what_the_stop_changed() {
    let Some(path) = kubeconfig() else {
        return;
    };
    // No controller yet: the stop stays pending until we cancel it.
    let ns = unique_ns("cancel");
    let client = client(&path).await;
    let p = provider(&path, &ns).await;
    let a = create_vm(&client, &ns, "a", "Always", Some(30), &[]).await;
    let m = create_vm(&client, &ns, "m", "Manual", Some(30), &[]).await;
    let uid_a = create_running_vmi(&client, &ns, "a").await.metadata.uid;
    let uid_m = create_running_vmi(&client, &ns, "m").await.metadata.uid;
    for vm in [&a, &m] {
        p.request_shutdown(vm, ShutdownChannel::Acpi, &req(5))
            .await
            .expect("request");
    }
    // what the stop armed
    assert_eq!(
        run_strategy(&client, &ns, "a").await.as_deref(),
        Some("Halted")
    );
    let pending = vms(&client, &ns)
        .get("m")
        .await
        .unwrap()
        .status
        .and_then(|s| s.state_change_requests)
        .unwrap_or_default();
    assert_eq!(pending.len(), 1, "{pending:?}");
    for name in ["a", "m"] {
        let v = vmis(&client, &ns).get(name).await.unwrap();
        assert_eq!(v.spec.termination_grace_period_seconds, Some(5));
    }

    for vm in [&a, &m] {
        p.cancel_shutdown(vm).await.expect("cancel");
    }
    assert_eq!(
        run_strategy(&client, &ns, "a").await.as_deref(),
        Some("Always")
    );
    let pending = vms(&client, &ns)
        .get("m")
        .await
        .unwrap()
        .status
        .and_then(|s| s.state_change_requests)
        .unwrap_or_default();
    assert!(pending.is_empty(), "{pending:?}");
    for name in ["a", "m"] {
        let v = vmis(&client, &ns).get(name).await.unwrap();
        assert_eq!(
            v.spec.termination_grace_period_seconds,
            Some(30),
            "{name}: the grace is as before"
        );
    }
    // a second cancel has nothing left to undo
    p.cancel_shutdown(&a).await.expect("nothing to undo");

    // virt-controller comes (back): nothing is stopped
    let ctl = FakeKubeVirt::start(client.clone(), &ns, false);
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (name, uid) in [("a", &uid_a), ("m", &uid_m)] {
        let v = vmis(&client, &ns).get(name).await.unwrap();
        assert_eq!(&v.metadata.uid, uid, "{name}: the same instance");
        assert!(
            v.metadata.deletion_timestamp.is_none(),
            "{name}: the instance is not being deleted"
        );
        assert!(ctl.stops_of(name).is_empty(), "{name}");
    }
    assert_eq!(p.power_state(&a).await.unwrap(), PowerState::Running);
    assert_eq!(p.power_state(&m).await.unwrap(), PowerState::Running);
}

/// Once virt-controller has begun deleting the instance, a cancel cannot undo the stop: a clear
/// `InvalidState`, and the VM is not restarted behind the caller's back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_after_the_deletion_began_is_invalid_state() {
    let Some(path) = kubeconfig() else {
        return;
    };
    let ns = unique_ns("cancel-late");
    let client = client(&path).await;
    let p = provider(&path, &ns).await;
    let _ctl = FakeKubeVirt::start(client.clone(), &ns, false);
    let vm = create_vm(
        &client,
        &ns,
        "l",
        "Always",
        Some(30),
        &[(GUEST_SHUTDOWN, "never")],
    )
    .await;
    p.wait_for_power_state(&vm, |s| *s == PowerState::Running, SETTLE)
        .await
        .expect("running");
    p.request_shutdown(&vm, ShutdownChannel::Acpi, &req(20))
        .await
        .expect("request");
    tokio::time::timeout(SETTLE, async {
        while vmis(&client, &ns)
            .get("l")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_none()
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("virt-controller deletes the instance");
    let e = p.cancel_shutdown(&vm).await.expect_err("too late");
    assert_eq!(e.kind(), ErrorKind::InvalidState, "{e}");
    assert!(e.to_string().contains("deleting"), "{e}");
    // the stop stands (no silent restart): still Halted
    assert_eq!(
        run_strategy(&client, &ns, "l").await.as_deref(),
        Some("Halted")
    );
    p.stop_with_grace(&vm, Some(0)).await.expect("force");
    p.wait_for_power_state(&vm, PowerState::is_off, SETTLE)
        .await
        .expect("off");
}

// ---------------------------------------------------------------- 5. forced by the platform

/// KubeVirt kills a guest that outlives its grace (virt-handler marks the VMI `Failed`): that
/// reads `Off(Destroyed)`. A guest that shuts down by itself reads `Off(GuestShutdown)`, never
/// `Off(Destroyed)`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grace_expiry_reads_destroyed_guest_shutdown_never_does() {
    let Some(path) = kubeconfig() else {
        return;
    };
    let ns = unique_ns("platform-force");
    let client = client(&path).await;
    let p = provider(&path, &ns).await;
    let ctl = FakeKubeVirt::start(client.clone(), &ns, false);
    let stuck = create_vm(
        &client,
        &ns,
        "stuck",
        "Always",
        Some(30),
        &[(GUEST_SHUTDOWN, "never")],
    )
    .await;
    let coop = create_vm(
        &client,
        &ns,
        "coop",
        "Always",
        Some(30),
        &[(GUEST_SHUTDOWN, "1000")],
    )
    .await;
    for vm in [&stuck, &coop] {
        p.wait_for_power_state(vm, |s| *s == PowerState::Running, SETTLE)
            .await
            .expect("running");
    }
    let unknown = |s: &PowerState| *s == PowerState::Off(OffReason::Unknown);

    // the guest ignores the signal: KubeVirt forces it off when the 1 s grace expires
    let states = collect_states(&p, &stuck, unknown, SETTLE).await;
    p.request_shutdown(&stuck, ShutdownChannel::Acpi, &req(1))
        .await
        .expect("request");
    let seen = states.await.unwrap();
    assert!(
        seen.contains(&PowerState::Off(OffReason::Destroyed)),
        "{seen:?}"
    );
    let stop = ctl.stops_of("stuck");
    assert_eq!(stop.len(), 1);
    assert!(!stop[0].graceful, "KubeVirt forced it: {stop:?}");

    // the guest shuts down within its grace
    let states = collect_states(&p, &coop, unknown, SETTLE).await;
    p.request_shutdown(&coop, ShutdownChannel::Acpi, &req(10))
        .await
        .expect("request");
    let seen = states.await.unwrap();
    assert!(
        seen.contains(&PowerState::Off(OffReason::GuestShutdown)),
        "{seen:?}"
    );
    assert!(
        !seen.contains(&PowerState::Off(OffReason::Destroyed)),
        "a guest shutdown read as destroyed: {seen:?}"
    );
    assert!(ctl.stops_of("coop")[0].graceful);
}
