//! Pre-stop hooks through PVE's guest-agent API against fakepve ([`GuestAgentPreStop`]):
//! the argv reaches `agent/exec` as given, the exit code and output come back from
//! `agent/exec-status`, a failing, hanging or impossible hook never stops the shutdown, and
//! seed 000's lifecycle block reconciled on a fakepve VM runs its hook, then stops the VM.
//!
//! fakepve executes nothing: a VM's scripted agent state maps a space-joined command line to
//! the `exec-status` it answers (exit 0 and no output for anything else), and every agent
//! request is recorded (`agent_requests` of the control API's `/vm/{vmid}`).
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use virtrigaud_core::model::{
    ObservedPowerState, VirtualMachine, condition_types, find_condition, from_yaml_str,
};
use virtrigaud_core::orchestration::Orchestrator;
use virtrigaud_core::reconcile::{Action, VmReconciler};
use virtrigaud_core::shutdown::{
    PreStopExecutor, PreStopHook, ShutdownEventKind, ShutdownManager, ShutdownOutcome,
    ShutdownPolicy,
};
use virtrigaud_core::{ErrorKind, Provider, VmId};
use virtrigaud_proxmox::{GuestAgentPreStop, ProxmoxProvider};

/// Seed 000's lifecycle-hooks block, verbatim.
const SEED_000_ADVANCED: &str = virtrigaud_core::testing::SEED_000_LIFECYCLE_HOOKS;

/// The seed's hook as its argv (the YAML block scalar keeps its final newline).
fn seed_argv() -> Vec<String> {
    vec![
        "/bin/bash".into(),
        "-c".into(),
        "# Save application state\nsystemctl stop my-application\n# Sync filesystem\nsync\n".into(),
    ]
}

fn sh(script: &str) -> Vec<String> {
    vec!["/bin/sh".into(), "-c".into(), script.into()]
}

/// A running fakepve guest with the agent enabled and answering, whose `agent/exec-status`
/// answers `results` (command line → status) and which shuts down in one second.
async fn guest_with_agent(env: &common::Env, name: &str, results: Value) -> VmId {
    env.control
        .vm(
            name,
            json!({"shutdown_secs": 1, "agent": {"exec": results},
                   "config": {"cores": 1, "memory": 512, "agent": "1",
                              "scsi0": "local-lvm:vm-1-disk-0,size=8G",
                              "net0": "virtio,bridge=vmbr0"}}),
        )
        .await
}

/// The agent requests fakepve answered for `vm`: (command, parameters), oldest first.
async fn agent_requests(env: &common::Env, vm: &VmId) -> Vec<(String, Value)> {
    env.control.fake_vm(vm).await["agent_requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r[0].as_str().unwrap().to_owned(), r[1].clone()))
        .collect()
}

/// The argv of every `agent/exec` fakepve answered for `vm`.
async fn execs(env: &common::Env, vm: &VmId) -> Vec<Vec<String>> {
    agent_requests(env, vm)
        .await
        .into_iter()
        .filter(|(c, _)| c == "exec")
        .map(|(_, p)| serde_json::from_value(p["command"].clone()).unwrap())
        .collect()
}

/// Where in the API requests since `since` the first one to `path_suffix` is (method, path).
async fn request_index(env: &common::Env, since: u64, method: &str, path_suffix: &str) -> usize {
    let sent = env.control.get(&format!("/requests?since={since}")).await;
    sent["items"]
        .as_array()
        .unwrap()
        .iter()
        .position(|i| i[0] == method && i[1].as_str().is_some_and(|p| p.ends_with(path_suffix)))
        .unwrap_or_else(|| panic!("no {method} …{path_suffix} in {sent}"))
}

async fn remove(provider: &ProxmoxProvider, vm: &VmId) {
    if provider.power_state(vm).await.unwrap().is_active() {
        provider.power_off(vm, &Default::default()).await.unwrap();
    }
    provider.delete(vm, &Default::default()).await.unwrap();
}

/// The argv goes to `agent/exec` exactly as given (one array element each, spaces and
/// newlines kept, no shell added), the pid is followed through `agent/exec-status`, and its
/// exit code and output come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_runs_its_exact_argv_in_the_guest_and_returns_its_output() {
    let Some(env) = common::env() else { return };
    let provider = env.provider();
    let caps = provider.capabilities();
    assert!(caps.guest_exec && !caps.failure_detection, "{caps:?}");
    let hook = sh("echo saving state; sync\necho 'done & gone'");
    let vm = guest_with_agent(
        &env,
        "prestop-ok",
        json!({hook.join(" "): {"exitcode": 0, "out-data": "saving state\ndone & gone\n"}}),
    )
    .await;
    let hooks = GuestAgentPreStop::new(&provider);
    let out = hooks.exec(&vm, &hook).await.unwrap();
    assert!(out.succeeded(), "{out}");
    assert_eq!(out.output, "saving state\ndone & gone\n");
    // A program without arguments is a one-element array.
    let single = hooks.exec(&vm, &["/usr/bin/sync".into()]).await.unwrap();
    assert!(single.succeeded(), "{single}");
    assert_eq!(execs(&env, &vm).await, [hook, vec!["/usr/bin/sync".into()]]);
    // Each exec was followed by its own pid.
    let reqs = agent_requests(&env, &vm).await;
    let statuses: Vec<&Value> = reqs
        .iter()
        .filter(|(c, _)| c == "exec-status")
        .map(|(_, p)| &p["pid"])
        .collect();
    assert_eq!(statuses.len(), 2, "{reqs:?}");
    assert_ne!(statuses[0], statuses[1]);
    // An empty argv is refused before anything is sent.
    let e = hooks.exec(&vm, &[]).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidSpec, "{e}");
    assert_eq!(agent_requests(&env, &vm).await.len(), reqs.len());
    remove(&provider, &vm).await;
}

/// A hook exiting with 3 is a failed hook, and the VM still shuts down gracefully: the
/// report and the `PreStop` event carry the exit code and its error output, and the hook ran
/// before the shutdown request was sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_hook_is_reported_and_the_shutdown_stays_graceful() {
    let Some(env) = common::env() else { return };
    let provider = env.provider();
    let hook = sh("pg_ctl stop -m fast");
    let vm = guest_with_agent(
        &env,
        "prestop-fails",
        json!({hook.join(" "): {"exitcode": 3, "out-data": "",
                                "err-data": "pg_ctl: server does not shut down\n"}}),
    )
    .await;
    let (_, vmid) = common::split(&vm);
    let manager = ShutdownManager::builder(Arc::<ProxmoxProvider>::clone(&provider))
        .pre_stop_executor(Arc::new(GuestAgentPreStop::new(&provider)))
        .build();
    let mut events = manager.subscribe();
    let since = env.control.requests_total().await;
    let policy = ShutdownPolicy::with_grace(Duration::from_secs(20))
        .pre_stop(PreStopHook::new(hook.clone(), Duration::from_secs(5)));
    let report = manager.shutdown(&vm, policy).await.unwrap();
    assert!(
        matches!(report.outcome, ShutdownOutcome::Graceful { .. }),
        "{}",
        report.outcome
    );
    assert_eq!(report.power_off_calls, 0);
    assert!(
        report.elapsed < Duration::from_secs(20),
        "{:?}",
        report.elapsed
    );
    let run = report.pre_stop.clone().expect("the hook ran");
    assert_eq!(run.exit_code(), Some(3), "{run}");
    assert!(!run.is_ok());
    assert_eq!(
        run.output.as_ref().unwrap().output,
        "pg_ctl: server does not shut down\n"
    );
    let mut seen = None;
    while let Ok(e) = events.try_recv() {
        if let ShutdownEventKind::PreStop {
            ok,
            exit_code,
            detail,
        } = e.kind
        {
            seen = Some((ok, exit_code, detail));
        }
    }
    let (ok, code, detail) = seen.expect("a PreStop event");
    assert_eq!((ok, code), (false, Some(3)));
    assert!(detail.contains("server does not shut down"), "{detail}");
    // The hook, then the shutdown: in the agent's record and in the API requests.
    let order: Vec<String> = agent_requests(&env, &vm)
        .await
        .into_iter()
        .map(|(c, _)| c)
        .filter(|c| c != "ping")
        .collect();
    assert_eq!(order.first().map(String::as_str), Some("exec"), "{order:?}");
    assert_eq!(
        order.last().map(String::as_str),
        Some("shutdown"),
        "{order:?}"
    );
    let exec_at = request_index(&env, since, "POST", &format!("/qemu/{vmid}/agent/exec")).await;
    let down_at = request_index(
        &env,
        since,
        "POST",
        &format!("/qemu/{vmid}/status/shutdown"),
    )
    .await;
    assert!(exec_at < down_at, "exec #{exec_at}, shutdown #{down_at}");
    assert!(provider.power_state(&vm).await.unwrap().is_off());
    assert_eq!(execs(&env, &vm).await, [hook]);
    provider.delete(&vm, &Default::default()).await.unwrap();
}

/// A VM without a running agent: the executor says `Unavailable`, naming the agent, and a
/// shutdown with a hook still completes (through ACPI), its report saying why the hook did
/// not run. The same for a VM whose config enables the agent that does not run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_running_agent_the_hook_is_unavailable_and_the_shutdown_completes() {
    let Some(env) = common::env() else { return };
    let provider = env.provider();
    let hooks = GuestAgentPreStop::new(&provider);
    let plain = env.control.vm("prestop-no-agent", json!({})).await;
    let silent = env
        .control
        .vm(
            "prestop-agent-down",
            json!({"config": {"cores": 1, "memory": 512, "agent": "1"}}),
        )
        .await;
    for vm in [&plain, &silent] {
        let e = hooks.exec(vm, &sh("sync")).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unavailable, "{vm}: {e}");
        assert!(e.is_retryable());
        assert!(e.message().contains("guest agent"), "{e}");
        assert_eq!(
            (e.provider(), e.operation(), e.resource()),
            ("proxmox", "pre_stop", Some(vm.as_str()))
        );
    }
    let manager = ShutdownManager::builder(Arc::<ProxmoxProvider>::clone(&provider))
        .pre_stop_executor(Arc::new(hooks))
        .build();
    let policy = ShutdownPolicy::with_grace(Duration::from_secs(20))
        .pre_stop(PreStopHook::new(sh("sync"), Duration::from_secs(5)));
    let report = manager.shutdown(&plain, policy).await.unwrap();
    assert!(
        matches!(report.outcome, ShutdownOutcome::Graceful { .. }),
        "{}",
        report.outcome
    );
    let run = report.pre_stop.expect("the hook was tried");
    assert!(
        run.error
            .as_deref()
            .is_some_and(|e| e.contains("guest agent")),
        "{run}"
    );
    assert!(provider.power_state(&plain).await.unwrap().is_off());
    for vm in [&plain, &silent] {
        remove(&provider, vm).await;
    }
}

/// A hook that never exits (the agent keeps answering `exited: false`) is cut at its budget
/// and the guest is still asked to shut down with the rest of the grace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_that_never_exits_is_cut_at_its_budget() {
    let Some(env) = common::env() else { return };
    let provider = env.provider();
    let hook = sh("sleep 600");
    let vm = guest_with_agent(
        &env,
        "prestop-hangs",
        json!({hook.join(" "): {"exited": false}}),
    )
    .await;
    let manager = ShutdownManager::builder(Arc::<ProxmoxProvider>::clone(&provider))
        .pre_stop_executor(Arc::new(GuestAgentPreStop::new(&provider)))
        .build();
    let policy = ShutdownPolicy::with_grace(Duration::from_secs(20))
        .pre_stop(PreStopHook::new(hook.clone(), Duration::from_secs(2)));
    let report = manager.shutdown(&vm, policy).await.unwrap();
    assert!(
        matches!(report.outcome, ShutdownOutcome::Graceful { .. }),
        "{}",
        report.outcome
    );
    let run = report.pre_stop.expect("the hook ran");
    assert!(run.output.is_none() && run.error.is_some(), "{run}");
    assert!(
        run.elapsed >= Duration::from_secs(2) && run.elapsed < Duration::from_secs(4),
        "{run}"
    );
    let polls = agent_requests(&env, &vm)
        .await
        .iter()
        .filter(|(c, _)| c == "exec-status")
        .count();
    assert!(polls >= 2, "followed while it ran: {polls}");
    assert!(provider.power_state(&vm).await.unwrap().is_off());
    provider.delete(&vm, &Default::default()).await.unwrap();
}

/// Seed 000's VirtualMachine (OffGraceful, 120 s, a bash preStop) reconciled against a
/// fakepve VM: the hook runs in the guest with the seed's argv, then the VM stops gracefully,
/// and the next pass settles with the VM off and Ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_000_lifecycle_hooks_run_the_pre_stop_then_stop_the_vm() {
    let Some(env) = common::env() else { return };
    let provider = env.provider();
    let argv = seed_argv();
    let vm = guest_with_agent(
        &env,
        "my-vm",
        json!({argv.join(" "): {"exitcode": 0, "out-data": "", "err-data": ""}}),
    )
    .await;
    let (_, vmid) = common::split(&vm);
    let p: Arc<dyn Provider> = Arc::<ProxmoxProvider>::clone(&provider);
    let manager = ShutdownManager::builder(Arc::clone(&p))
        .pre_stop_executor(Arc::new(GuestAgentPreStop::new(&provider)))
        .build();
    let r = VmReconciler::new(Orchestrator::with_shutdown_manager(p, Arc::new(manager)));
    let mut obj: VirtualMachine = from_yaml_str(SEED_000_ADVANCED).unwrap();
    assert_eq!(
        obj.spec
            .lifecycle
            .as_ref()
            .and_then(|l| l.pre_stop.as_ref())
            .and_then(|h| h.exec.as_ref())
            .map(|e| e.command.clone()),
        Some(argv.clone()),
        "the seed's argv as parsed"
    );
    let since = env.control.requests_total().await;
    let first = r.reconcile(&vm, &mut obj, &[]).await.unwrap();
    assert!(matches!(first, Action::Requeue(_)), "{first:?}");
    assert!(provider.power_state(&vm).await.unwrap().is_off());
    assert_eq!(execs(&env, &vm).await, [argv]);
    let exec_at = request_index(&env, since, "POST", &format!("/qemu/{vmid}/agent/exec")).await;
    let down_at = request_index(
        &env,
        since,
        "POST",
        &format!("/qemu/{vmid}/status/shutdown"),
    )
    .await;
    assert!(exec_at < down_at, "exec #{exec_at}, shutdown #{down_at}");
    let stops = env.control.get(&format!("/requests?since={since}")).await;
    assert!(
        !stops["items"].as_array().unwrap().iter().any(|i| i[1]
            .as_str()
            .is_some_and(|p| p.ends_with(&format!("/qemu/{vmid}/status/stop")))),
        "never forced: {stops}"
    );
    assert_eq!(
        r.reconcile(&vm, &mut obj, &[]).await.unwrap(),
        Action::AwaitChange
    );
    let st = obj.status.as_ref().unwrap();
    assert_eq!(st.power_state, Some(ObservedPowerState::Off));
    assert!(
        find_condition(&st.conditions, condition_types::READY)
            .unwrap()
            .is_true()
    );
    provider.delete(&vm, &Default::default()).await.unwrap();
}
