//! The VirtualMachine reconciler on the simulator (paused time), fed the seeds' YAML.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use virtrigaud_core::model::{
    ObservedPowerState, VirtualMachine, condition_types, find_condition, from_yaml_str,
};
use virtrigaud_core::orchestration::Orchestrator;
use virtrigaud_core::reconcile::{Action, VmReconciler};
use virtrigaud_core::shutdown::{HookOutput, PreStopExecutor, ShutdownManager, ShutdownPolicy};
use virtrigaud_core::sim::{GuestBehavior, Simulator};
use virtrigaud_core::{ErrorKind, PowerState, Provider, Result, VmId};

/// Seed 000's lifecycle-hooks block, verbatim.
const SEED_000_ADVANCED: &str = virtrigaud_core::testing::SEED_000_LIFECYCLE_HOOKS;

/// Records each hook run with the time it ran (since the test began).
#[derive(Debug, Default)]
struct Recorder {
    runs: Mutex<Vec<(Vec<String>, Duration)>>,
    t0: Mutex<Option<tokio::time::Instant>>,
}

#[async_trait]
impl PreStopExecutor for Recorder {
    async fn exec(&self, _vm: &VmId, argv: &[String]) -> Result<HookOutput> {
        let t0 = self.t0.lock().unwrap().unwrap();
        self.runs
            .lock()
            .unwrap()
            .push((argv.to_vec(), t0.elapsed()));
        Ok(HookOutput::exited(0))
    }
}

fn reconciler(sim: &Simulator, hooks: Arc<Recorder>) -> VmReconciler {
    let p: Arc<dyn Provider> = Arc::new(sim.clone());
    let manager = ShutdownManager::builder(Arc::clone(&p))
        .pre_stop_executor(hooks)
        .build();
    VmReconciler::new(Orchestrator::with_shutdown_manager(p, Arc::new(manager)))
}

#[tokio::test(start_paused = true)]
async fn seed_000_off_graceful_runs_the_pre_stop_then_stops_within_120s() {
    let sim = Simulator::new();
    let id = sim.add_vm(
        "my-vm",
        GuestBehavior::cooperative().acpi_after(Duration::from_secs(90)),
    );
    tokio::time::sleep(Duration::from_secs(30)).await;
    let hooks = Arc::new(Recorder::default());
    *hooks.t0.lock().unwrap() = Some(tokio::time::Instant::now());
    let r = reconciler(&sim, Arc::clone(&hooks));
    let mut vm: VirtualMachine = from_yaml_str(SEED_000_ADVANCED).unwrap();
    let t0 = tokio::time::Instant::now();
    let first = r.reconcile(&id, &mut vm, &[]).await.unwrap();
    assert!(matches!(first, Action::Requeue(_)), "{first:?}");
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_secs(90) && took < Duration::from_secs(120),
        "the 90 s guest stopped gracefully inside the 120 s grace: {took:?}"
    );
    assert!(sim.power_state(&id).await.unwrap().is_off());
    assert_eq!(sim.effective_power_offs(&id), 0, "never forced");
    let runs = hooks.runs.lock().unwrap().clone();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0].0[0], "/bin/bash");
    assert!(runs[0].0[2].contains("systemctl stop my-application"));
    assert_eq!(
        runs[0].1,
        Duration::ZERO,
        "the hook ran before the guest was signalled"
    );
    // The next pass finds the VM where the spec says and settles.
    assert_eq!(
        r.reconcile(&id, &mut vm, &[]).await.unwrap(),
        Action::AwaitChange
    );
    let st = vm.status.as_ref().unwrap();
    assert_eq!(st.power_state, Some(ObservedPowerState::Off));
    assert!(
        find_condition(&st.conditions, condition_types::READY)
            .unwrap()
            .is_true()
    );
}

#[tokio::test(start_paused = true)]
async fn a_start_asked_during_a_shutdown_waits_for_it_and_is_not_lost() {
    let sim = Simulator::new();
    let id = sim.add_vm(
        "web",
        GuestBehavior::cooperative().acpi_after(Duration::from_secs(20)),
    );
    tokio::time::sleep(Duration::from_secs(30)).await;
    let r = reconciler(&sim, Arc::new(Recorder::default()));
    let stop = r
        .orchestrator()
        .shutdown_manager()
        .start(&id, ShutdownPolicy::with_grace(Duration::from_secs(60)))
        .unwrap();
    let mut vm: VirtualMachine = from_yaml_str(
        "apiVersion: infra.virtrigaud.io/v1beta1\nkind: VirtualMachine\nmetadata: {name: web}\nspec: {powerState: On}\n",
    )
    .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let a = r.reconcile(&id, &mut vm, &[]).await.unwrap();
    assert!(matches!(a, Action::Requeue(_)));
    let ready = find_condition(
        &vm.status.as_ref().unwrap().conditions,
        condition_types::READY,
    )
    .unwrap()
    .clone();
    assert_eq!(ready.reason, "WaitingForShutdown");
    assert!(stop.wait().await.outcome.is_off());
    r.run_until_settled(&id, &mut vm, &[], 20).await.unwrap();
    assert_eq!(sim.power_state(&id).await.unwrap(), PowerState::Running);
}

#[tokio::test(start_paused = true)]
async fn resources_in_the_spec_reach_the_vm_and_a_bad_spec_touches_nothing() {
    let sim = Simulator::new();
    let id = sim.add_vm("db", GuestBehavior::cooperative());
    let r = reconciler(&sim, Arc::new(Recorder::default()));
    let mut vm: VirtualMachine = from_yaml_str(
        "apiVersion: infra.virtrigaud.io/v1beta1\nkind: VirtualMachine\nmetadata: {name: db}\nspec:\n  resources: {cpu: 4, memoryMiB: 4096}\n",
    )
    .unwrap();
    r.run_until_settled(&id, &mut vm, &[], 20).await.unwrap();
    let d = sim.describe(&id).await.unwrap();
    assert_eq!((d.cpu, d.memory_mib), (4, 4096));
    let st = vm.status.as_ref().unwrap();
    assert!(st.last_reconfigure_time.is_some());
    assert_eq!(st.current_resources.as_ref().unwrap().cpu, Some(4));

    let mut bad = vm.clone();
    bad.spec.resources.as_mut().unwrap().cpu = Some(0);
    let calls = sim.all_calls();
    let e = r.reconcile(&id, &mut bad, &[]).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidSpec);
    assert!(e.to_string().contains("spec.resources.cpu"), "{e}");
    assert_eq!(
        sim.all_calls(),
        calls,
        "an invalid spec made no provider call"
    );
}

/// A hook whose program exits with `code`.
#[derive(Debug)]
struct Exits {
    code: i32,
}

#[async_trait]
impl PreStopExecutor for Exits {
    async fn exec(&self, _vm: &VmId, _argv: &[String]) -> Result<HookOutput> {
        Ok(HookOutput::exited(self.code).with_output("state not saved"))
    }
}

#[tokio::test(start_paused = true)]
async fn a_failing_pre_stop_is_a_warning_and_the_stop_goes_on() {
    let sim = Simulator::new();
    let id = sim.add_vm("my-vm", GuestBehavior::cooperative());
    let p: Arc<dyn Provider> = Arc::new(sim.clone());
    let manager = ShutdownManager::builder(Arc::clone(&p))
        .pre_stop_executor(Arc::new(Exits { code: 4 }))
        .build();
    let r = VmReconciler::new(Orchestrator::with_shutdown_manager(p, Arc::new(manager)));
    let mut events = r.orchestrator().events().subscribe();
    let mut vm: VirtualMachine = from_yaml_str(SEED_000_ADVANCED).unwrap();
    r.run_until_settled(&id, &mut vm, &[], 5).await.unwrap();
    assert!(sim.power_state(&id).await.unwrap().is_off());
    assert_eq!(sim.effective_power_offs(&id), 0, "still graceful");
    let mut warned = None;
    while let Ok(e) = events.try_recv() {
        if e.reason.as_str() == "PreStopFailed" {
            warned = Some(e.message.clone());
        }
    }
    let msg = warned.expect("a PreStopFailed event");
    assert!(
        msg.contains("exited with 4: state not saved") && msg.contains("went on"),
        "{msg}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_pre_stop_nobody_can_run_is_refused_unless_skipping_is_asked_for() {
    let sim = Simulator::new();
    let id = sim.add_vm("my-vm", GuestBehavior::cooperative());
    let r = VmReconciler::new(Orchestrator::new(Arc::new(sim.clone())));
    let mut vm: VirtualMachine = from_yaml_str(SEED_000_ADVANCED).unwrap();
    let e = r.reconcile(&id, &mut vm, &[]).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    assert!(e.to_string().contains("spec.lifecycle.preStop"), "{e}");
    assert_eq!(sim.power_state(&id).await.unwrap(), PowerState::Running);
    let ready = find_condition(
        &vm.status.as_ref().unwrap().conditions,
        condition_types::READY,
    )
    .unwrap();
    assert_eq!(ready.reason, "PreStopUnsupported");
    let r = r.skip_unrunnable_pre_stop();
    r.run_until_settled(&id, &mut vm, &[], 5).await.unwrap();
    assert!(sim.power_state(&id).await.unwrap().is_off());
}

#[tokio::test(start_paused = true)]
async fn a_reconciler_killed_mid_stop_resumes_with_the_original_grace_and_runs_no_hook_twice() {
    use std::time::SystemTime;
    use virtrigaud_core::shutdown::{FileJournal, TokioClock};
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(TokioClock::new(
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
    ));
    let sim = Simulator::new();
    let id = sim.add_vm("my-vm", GuestBehavior::ignores_acpi());
    tokio::time::sleep(Duration::from_secs(30)).await;
    let hooks = Arc::new(Recorder::default());
    *hooks.t0.lock().unwrap() = Some(tokio::time::Instant::now());
    let process = |hooks: Arc<Recorder>| {
        let p: Arc<dyn Provider> = Arc::new(sim.clone());
        let manager = ShutdownManager::builder(Arc::clone(&p))
            .journal(Arc::new(FileJournal::open(dir.path()).unwrap()))
            .clock(Arc::<TokioClock>::clone(&clock))
            .pre_stop_executor(hooks)
            .build();
        VmReconciler::new(Orchestrator::with_shutdown_manager(p, Arc::new(manager)))
    };
    let mut vm: VirtualMachine = from_yaml_str(SEED_000_ADVANCED).unwrap();
    let t0 = tokio::time::Instant::now();
    {
        let first = process(Arc::clone(&hooks));
        let cut =
            tokio::time::timeout(Duration::from_secs(50), first.reconcile(&id, &mut vm, &[])).await;
        assert!(cut.is_err(), "still stopping after 50 s of a 120 s grace");
        // The process dies here: reconciler, orchestrator and shutdown manager are gone;
        // the lease stays in the journal.
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(sim.true_state(&id).unwrap().is_active());
    let second = process(Arc::clone(&hooks));
    second
        .run_until_settled(&id, &mut vm, &[], 10)
        .await
        .unwrap();
    assert!(sim.true_state(&id).unwrap().is_off());
    assert_eq!(sim.effective_power_offs(&id), 1);
    // Settled one requeue (1 s) after the power-off.
    let off_at = t0.elapsed();
    assert!(
        off_at >= Duration::from_secs(120) && off_at < Duration::from_secs(125),
        "forced at the original 120 s deadline, not 120 s after the restart: {off_at:?}"
    );
    assert_eq!(
        hooks.runs.lock().unwrap().len(),
        1,
        "the preStop ran once, before the crash"
    );
}

#[tokio::test(start_paused = true)]
async fn a_power_cycle_reconfigure_cut_by_a_restart_is_finished_by_the_next_process() {
    let sim = Simulator::new();
    let id = sim.add_vm(
        "db",
        GuestBehavior::cooperative().acpi_after(Duration::from_secs(30)),
    );
    let before = sim.describe(&id).await.unwrap();
    let smaller = before.memory_mib / 2;
    let mut vm: VirtualMachine = from_yaml_str(&format!(
        "apiVersion: infra.virtrigaud.io/v1beta1\nkind: VirtualMachine\nmetadata: {{name: db}}\n\
         spec:\n  powerState: On\n  resources: {{memoryMiB: {smaller}}}\n"
    ))
    .unwrap();
    {
        // Shrinking memory needs a power cycle; the process dies while the guest shuts down.
        let first = reconciler(&sim, Arc::new(Recorder::default()));
        let cut = tokio::time::timeout(
            Duration::from_secs(10),
            first.run_until_settled(&id, &mut vm, &[], 20),
        )
        .await;
        assert!(cut.is_err(), "still cycling after 10 s");
    }
    tokio::time::sleep(Duration::from_secs(60)).await;
    let second = reconciler(&sim, Arc::new(Recorder::default()));
    second
        .run_until_settled(&id, &mut vm, &[], 20)
        .await
        .unwrap();
    let d = sim.describe(&id).await.unwrap();
    assert_eq!(d.memory_mib, smaller, "the change is in");
    assert_eq!(
        d.power_state,
        PowerState::Running,
        "spec.powerState On holds"
    );
    assert!(!d.pending_power_cycle);
    assert_eq!(sim.effective_power_offs(&id), 0, "never forced");
}
