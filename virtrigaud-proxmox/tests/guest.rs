//! What goes through the guest against fakepve (with the launcher's agent channel and
//! snapshot freeze): reboot through either channel, and whether a snapshot was quiesced.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;
use virtrigaud_core::{ErrorKind, PowerState, Provider, ShutdownChannel, SnapshotOptions};

/// The agent commands the fake saw for the VM.
async fn agent_commands(env: &common::Env, vm: &virtrigaud_core::VmId) -> Vec<String> {
    env.control.fake_vm(vm).await["agent_requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r[0].as_str().map(str::to_owned))
        .collect()
}

/// An ACPI reboot (no agent) and an agent reboot each run PVE's `qmreboot` task, return when
/// it has ended (a new QEMU process: a new incarnation), and go through their own channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reboot_honours_the_channel_and_waits_for_the_task() {
    let Some(env) = common::env() else { return };
    let provider = env.provider();
    let acpi = env
        .control
        .vm("reboot-acpi", json!({"shutdown_secs": 1}))
        .await;
    let agent = env
        .control
        .vm(
            "reboot-agent",
            json!({"shutdown_secs": 1, "acpi": false, "agent": {},
                   "config": {"cores": 1, "memory": 512, "agent": "1"}}),
        )
        .await;
    for (vm, channel) in [
        (&acpi, ShutdownChannel::Acpi),
        (&agent, ShutdownChannel::Agent),
    ] {
        let before = provider.incarnation(vm).await.unwrap().unwrap();
        let t0 = Instant::now();
        provider.reboot(vm, channel).await.unwrap();
        // The guest took its second to go down: the call waited for the task.
        assert!(
            t0.elapsed() >= Duration::from_millis(900),
            "{vm}: {:?}",
            t0.elapsed()
        );
        assert_eq!(provider.power_state(vm).await.unwrap(), PowerState::Running);
        let after = provider.incarnation(vm).await.unwrap().unwrap();
        assert_ne!(
            before, after,
            "{vm}: PVE's reboot starts a new QEMU process"
        );
    }
    assert!(agent_commands(&env, &acpi).await.is_empty());
    // The provider's agent/ping, then PVE's guest-shutdown through the agent.
    assert_eq!(agent_commands(&env, &agent).await, ["ping", "shutdown"]);
    // The wrong channel for the VM's config is refused before anything is sent.
    let e = provider
        .reboot(&acpi, ShutdownChannel::Agent)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    let e = provider
        .reboot(&agent, ShutdownChannel::Acpi)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    assert!(e.message().contains("agent"), "{e}");
    for vm in [&acpi, &agent] {
        provider.power_off(vm, &Default::default()).await.unwrap();
    }
    // Off: InvalidState.
    let e = provider
        .reboot(&acpi, ShutdownChannel::Acpi)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidState, "{e}");
    for vm in [&acpi, &agent] {
        provider.delete(vm, &Default::default()).await.unwrap();
    }
}

/// An agent that does not answer is found before the reboot is sent; a guest that ignores
/// ACPI makes PVE end the task with its timeout, which comes back typed as `Timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reboot_failures_are_typed() {
    let Some(env) = common::env() else { return };
    let client = virtrigaud_proxmox::PveClient::new(
        env.token_config().with_task_timeout(Duration::from_secs(4)),
    )
    .unwrap();
    let provider = virtrigaud_proxmox::ProxmoxProvider::new(client);
    let silent = env
        .control
        .vm(
            "reboot-silent-agent",
            json!({"config": {"cores": 1, "memory": 512, "agent": "1"}}),
        )
        .await;
    let (_, silent_id) = common::split(&silent);
    let reboot_path = format!("/qemu/{silent_id}/status/reboot");
    let since = env.control.requests_total().await;
    let e = provider
        .reboot(&silent, ShutdownChannel::Agent)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.is_retryable());
    let sent = env.control.get(&format!("/requests?since={since}")).await;
    assert!(
        !sent["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i[1].as_str().is_some_and(|p| p.ends_with(&reboot_path))),
        "nothing sent: {sent}"
    );
    // PVE's timeout is 3 of the 4 seconds the wait allows.
    let deaf = env.control.vm("reboot-deaf", json!({"acpi": false})).await;
    let t0 = Instant::now();
    let e = provider
        .reboot(&deaf, ShutdownChannel::Acpi)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    assert!(e.message().contains("got timeout"), "PVE's task error: {e}");
    assert!(t0.elapsed() < Duration::from_secs(4), "{:?}", t0.elapsed());
    assert_eq!(
        provider.power_state(&deaf).await.unwrap(),
        PowerState::Running
    );
    for vm in [&silent, &deaf] {
        provider.power_off(vm, &Default::default()).await.unwrap();
        provider.delete(vm, &Default::default()).await.unwrap();
    }
}

/// A snapshot reports quiesced exactly when PVE froze the guest: disk-only, running, agent
/// enabled and answering. The capabilities agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_report_whether_pve_quiesced_the_guest() {
    let Some(env) = common::env() else { return };
    let provider = env.provider();
    assert!(provider.capabilities().quiesced_snapshots);
    let snaps = provider.snapshotter().unwrap();
    let with_agent = json!({"agent": {}, "config": {"cores": 1, "memory": 512, "agent": "1",
                                               "scsi0": "local-lvm:vm-1-disk-0,size=8G"}});
    let agent = env.control.vm("quiesce-agent", with_agent.clone()).await;
    assert!(
        provider
            .vm_capabilities(&agent)
            .await
            .unwrap()
            .snapshot_quiesce
    );
    let t0 = std::time::SystemTime::now() - Duration::from_secs(2);
    let s = snaps
        .create_snapshot(&agent, &SnapshotOptions::new("frozen").with_quiesce(true))
        .await
        .unwrap();
    assert!(s.quiesced && !s.has_memory, "{s:?}");
    assert!(s.created_at.unwrap() >= t0, "PVE's snaptime: {s:?}");
    assert_eq!(
        agent_commands(&env, &agent).await,
        ["fsfreeze-freeze", "fsfreeze-thaw"]
    );
    // With RAM PVE does not freeze.
    let s = snaps
        .create_snapshot(
            &agent,
            &SnapshotOptions::new("with-ram")
                .with_memory(true)
                .with_quiesce(true),
        )
        .await
        .unwrap();
    assert!(!s.quiesced && s.has_memory, "{s:?}");
    assert_eq!(agent_commands(&env, &agent).await.len(), 2);
    // Agent enabled but not answering: PVE warns and snapshots unfrozen.
    let mut silent_spec = with_agent.clone();
    silent_spec.as_object_mut().unwrap().remove("agent");
    let silent = env.control.vm("quiesce-silent", silent_spec).await;
    let s = snaps
        .create_snapshot(
            &silent,
            &SnapshotOptions::new("unfrozen").with_quiesce(true),
        )
        .await
        .unwrap();
    assert!(!s.quiesced, "{s:?}");
    // freeze-fs off, or no agent: not quiesced, and the capability says so.
    let mut off_spec = with_agent.clone();
    off_spec["config"]["agent"] = Value::from("1,freeze-fs=0");
    let off = env.control.vm("quiesce-off", off_spec).await;
    let plain = env.control.vm("quiesce-none", json!({})).await;
    for vm in [&off, &plain] {
        assert!(!provider.vm_capabilities(vm).await.unwrap().snapshot_quiesce);
        let s = snaps
            .create_snapshot(vm, &SnapshotOptions::new("plain").with_quiesce(true))
            .await
            .unwrap();
        assert!(!s.quiesced, "{vm}: {s:?}");
        assert!(agent_commands(&env, vm).await.is_empty());
    }
    // The listed snapshot is the one reported.
    let listed = snaps.list_snapshots(&agent).await.unwrap();
    assert!(listed.iter().any(|l| l.name == "frozen"));
    for vm in [&agent, &silent, &off, &plain] {
        provider.power_off(vm, &Default::default()).await.unwrap();
        provider.delete(vm, &Default::default()).await.unwrap();
    }
}
