//! Seed-004 lifecycle actions and the run-strategy supervisor (paused time).
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;
use virtrigaud_core::model::{LifecycleAction, LifecyclePhase, ObservedPowerState, RunStrategy};
use virtrigaud_core::orchestration::{
    EventReason, Orchestrator, Supervisor, SupervisorConfig, SupervisorPhase,
};
use virtrigaud_core::sim::{GuestBehavior, Simulator};
use virtrigaud_core::{
    ErrorKind, OffReason, PowerOffOptions, PowerState, Provider, ProviderCapabilities, Result,
    ShutdownChannel, ShutdownRequestOptions, StartOptions, VmCapabilities, VmDescription, VmId,
};

#[tokio::test(start_paused = true)]
async fn start_stop_force_and_status() {
    let sim = Simulator::new();
    let vm = sim.add_vm(
        "app",
        GuestBehavior::cooperative().acpi_after(Duration::from_secs(10)),
    );
    let orch = Orchestrator::new(Arc::new(sim.clone()));
    let st = orch.status(&vm).await.unwrap();
    assert_eq!(
        (st.observed, st.phase),
        (ObservedPowerState::On, LifecyclePhase::Running)
    );

    // Graceful stop with gracePeriodSeconds: 60 (the guest needs 10 s).
    let t0 = Instant::now();
    let s = orch
        .apply_action(
            &vm,
            &LifecycleAction::stop().with_grace_period_seconds(60),
            RunStrategy::Manual,
        )
        .await
        .unwrap();
    assert_eq!(s.state, LifecyclePhase::Stopped);
    assert!(t0.elapsed() >= Duration::from_secs(10));
    assert_eq!(sim.effective_power_offs(&vm), 0);
    // Stopping an off VM is fine.
    orch.apply_action(&vm, &LifecycleAction::stop(), RunStrategy::Manual)
        .await
        .unwrap();

    let s = orch
        .apply_action(&vm, &LifecycleAction::start(), RunStrategy::Manual)
        .await
        .unwrap();
    assert_eq!(s.state, LifecyclePhase::Running);
    assert!(s.last_action_time.is_some());

    // gracePeriodSeconds shorter than the guest needs: forced at the deadline.
    let t0 = Instant::now();
    orch.apply_action(
        &vm,
        &LifecycleAction::stop().with_grace_period_seconds(3),
        RunStrategy::Manual,
    )
    .await
    .unwrap();
    assert!(t0.elapsed() < Duration::from_secs(10));
    assert_eq!(sim.effective_power_offs(&vm), 1);

    orch.apply_action(&vm, &LifecycleAction::start(), RunStrategy::Manual)
        .await
        .unwrap();
    let t0 = Instant::now();
    orch.apply_action(&vm, &LifecycleAction::force_stop(), RunStrategy::Manual)
        .await
        .unwrap();
    assert_eq!(t0.elapsed(), Duration::ZERO);
    assert_eq!(sim.effective_power_offs(&vm), 2);
    assert_eq!(
        orch.status(&vm).await.unwrap().phase,
        LifecyclePhase::Stopped
    );

    // Start is refused under Halted; invalid actions are refused.
    let e = orch
        .apply_action(&vm, &LifecycleAction::start(), RunStrategy::Halted)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidSpec);
    let e = orch
        .apply_action(
            &vm,
            &LifecycleAction::force_stop().with_grace_period_seconds(5),
            RunStrategy::Manual,
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidSpec);
    assert!(sim.true_state(&vm).unwrap().is_off());
}

/// A simulator VM that can crash: on demand, or every time within `crash_after` of a start.
#[derive(Debug)]
struct Crashy {
    sim: Simulator,
    st: Mutex<CrashState>,
}

#[derive(Debug, Default)]
struct CrashState {
    /// Declares no failure detection (reads a crash as a plain `Off`).
    blind: bool,
    crashed: bool,
    crash_after: Option<Duration>,
    started: Option<Instant>,
}

impl Crashy {
    fn new(sim: Simulator) -> Self {
        Crashy {
            sim,
            st: Mutex::new(CrashState::default()),
        }
    }
    async fn crash_now(&self, vm: &VmId) {
        let _ = self.sim.power_off(vm, &PowerOffOptions::default()).await;
        self.st.lock().unwrap().crashed = true;
    }
    fn crash_after_every_boot(&self, d: Duration) {
        self.st.lock().unwrap().crash_after = Some(d);
    }
}

#[async_trait]
impl Provider for Crashy {
    fn provider_type(&self) -> &'static str {
        "crashy"
    }
    fn capabilities(&self) -> ProviderCapabilities {
        let mut c = self.sim.capabilities();
        c.failure_detection = !self.st.lock().unwrap().blind;
        c
    }
    async fn vm_capabilities(&self, vm: &VmId) -> Result<VmCapabilities> {
        self.sim.vm_capabilities(vm).await
    }
    async fn power_state(&self, vm: &VmId) -> Result<PowerState> {
        let crash = {
            let st = self.st.lock().unwrap();
            if st.crashed {
                return Ok(PowerState::Off(OffReason::Crashed));
            }
            matches!((st.crash_after, st.started), (Some(d), Some(t)) if t.elapsed() >= d)
        };
        if crash {
            self.crash_now(vm).await;
            return Ok(PowerState::Off(OffReason::Crashed));
        }
        self.sim.power_state(vm).await
    }
    async fn start(&self, vm: &VmId, opts: &StartOptions) -> Result<()> {
        self.sim.start(vm, opts).await?;
        let mut st = self.st.lock().unwrap();
        st.crashed = false;
        st.started = Some(Instant::now());
        Ok(())
    }
    async fn power_off(&self, vm: &VmId, opts: &PowerOffOptions) -> Result<()> {
        self.sim.power_off(vm, opts).await
    }
    async fn request_shutdown(
        &self,
        vm: &VmId,
        channel: ShutdownChannel,
        opts: &ShutdownRequestOptions,
    ) -> Result<()> {
        self.sim.request_shutdown(vm, channel, opts).await
    }
    async fn describe(&self, vm: &VmId) -> Result<VmDescription> {
        let mut d = self.sim.describe(vm).await?;
        d.power_state = self.power_state(vm).await?;
        Ok(d)
    }
}

fn config() -> SupervisorConfig {
    SupervisorConfig::default()
}

async fn settle(secs: u64) {
    tokio::time::sleep(Duration::from_secs(secs)).await;
}

#[tokio::test(start_paused = true)]
async fn rerun_on_failure_restarts_after_a_crash_but_not_after_a_clean_shutdown() {
    let sim = Simulator::new();
    let vm = sim.add_vm(
        "worker",
        GuestBehavior::cooperative().acpi_after(Duration::from_secs(2)),
    );
    let crashy = Arc::new(Crashy::new(sim.clone()));
    let orch = Orchestrator::new(Arc::clone(&crashy) as Arc<dyn Provider>);
    let mut events = orch.events().subscribe();
    let sup = Supervisor::spawn(
        orch.clone(),
        vm.clone(),
        RunStrategy::RerunOnFailure,
        config(),
    );
    settle(120).await;
    crashy.crash_now(&vm).await;
    settle(3).await;
    assert!(
        sim.true_state(&vm).unwrap().is_off(),
        "backoff: not restarted at once"
    );
    settle(10).await;
    assert_eq!(sim.true_state(&vm), Some(PowerState::Running));
    assert_eq!(sup.status().restarts, 1);
    let mut reasons = Vec::new();
    while let Ok(e) = events.try_recv() {
        reasons.push(e.reason);
    }
    assert!(
        reasons.contains(&EventReason::CrashLoopBackOff)
            && reasons.contains(&EventReason::VmRestarted),
        "{reasons:?}"
    );

    // A clean guest shutdown is not a failure.
    settle(120).await;
    sim.request_shutdown(
        &vm,
        ShutdownChannel::Acpi,
        &ShutdownRequestOptions::default(),
    )
    .await
    .unwrap();
    settle(600).await;
    assert!(sim.true_state(&vm).unwrap().is_off());
    assert_eq!(sup.status().restarts, 1);
    sup.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_guest_that_cannot_boot_is_not_restarted_forever() {
    let sim = Simulator::new();
    let vm = sim.add_vm("broken", GuestBehavior::cooperative());
    let crashy = Arc::new(Crashy::new(sim.clone()));
    crashy.crash_after_every_boot(Duration::from_secs(3));
    crashy.crash_now(&vm).await;
    let orch = Orchestrator::new(Arc::clone(&crashy) as Arc<dyn Provider>);
    let sup = Supervisor::spawn(orch, vm.clone(), RunStrategy::RerunOnFailure, config());
    settle(24 * 3600).await;
    let st = sup.status();
    assert_eq!(st.phase, SupervisorPhase::GaveUp, "{st:?}");
    let starts = sim.calls("start");
    assert!(starts <= 5, "restarted {starts} times");
    settle(24 * 3600).await;
    assert_eq!(sim.calls("start"), starts, "no restart after giving up");
    // A start action resets it.
    sup.action(LifecycleAction::start()).await.unwrap();
    assert_eq!(sup.status().phase, SupervisorPhase::Watching);
    sup.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn always_restarts_after_a_clean_shutdown_until_a_stop_action() {
    let sim = Simulator::new();
    let vm = sim.add_stopped_vm(
        "web",
        GuestBehavior::cooperative().acpi_after(Duration::from_secs(2)),
    );
    let orch = Orchestrator::new(Arc::new(sim.clone()));
    let sup = Supervisor::spawn(orch, vm.clone(), RunStrategy::Always, config());
    settle(1).await;
    assert_eq!(
        sim.true_state(&vm),
        Some(PowerState::Running),
        "started on supervise"
    );
    settle(120).await;
    sim.request_shutdown(
        &vm,
        ShutdownChannel::Acpi,
        &ShutdownRequestOptions::default(),
    )
    .await
    .unwrap();
    settle(10).await;
    assert_eq!(sim.true_state(&vm), Some(PowerState::Running));
    assert_eq!(sup.status().restarts, 1);
    // A user stop is respected.
    sup.action(LifecycleAction::stop().with_grace_period_seconds(30))
        .await
        .unwrap();
    settle(600).await;
    assert!(sim.true_state(&vm).unwrap().is_off());
    assert_eq!(sup.status().phase, SupervisorPhase::StoppedByUser);
    sup.action(LifecycleAction::start()).await.unwrap();
    assert_eq!(sim.true_state(&vm), Some(PowerState::Running));
    sup.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn halted_keeps_it_off_manual_leaves_it_and_once_runs_once() {
    // Halted: a running VM is stopped gracefully and kept off.
    let sim = Simulator::new();
    let vm = sim.add_vm(
        "h",
        GuestBehavior::cooperative().acpi_after(Duration::from_secs(2)),
    );
    let orch = Orchestrator::new(Arc::new(sim.clone()));
    let sup = Supervisor::spawn(orch.clone(), vm.clone(), RunStrategy::Halted, config());
    settle(10).await;
    assert!(sim.true_state(&vm).unwrap().is_off());
    assert_eq!(sim.effective_power_offs(&vm), 0, "graceful");
    assert_eq!(
        sup.action(LifecycleAction::start())
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidSpec
    );
    sim.start(&vm, &StartOptions::default()).await.unwrap();
    settle(10).await;
    assert!(
        sim.true_state(&vm).unwrap().is_off(),
        "started behind its back: stopped again"
    );
    sup.shutdown().await;

    // Manual: a crash is left alone.
    let sim = Simulator::new();
    let vm = sim.add_vm("m", GuestBehavior::cooperative());
    let crashy = Arc::new(Crashy::new(sim.clone()));
    let orch = Orchestrator::new(Arc::clone(&crashy) as Arc<dyn Provider>);
    let sup = Supervisor::spawn(orch, vm.clone(), RunStrategy::Manual, config());
    crashy.crash_now(&vm).await;
    settle(600).await;
    assert!(sim.true_state(&vm).unwrap().is_off());
    assert_eq!(sim.calls("start"), 0);
    sup.shutdown().await;

    // Once: started once, not again after it stops.
    let sim = Simulator::new();
    let vm = sim.add_stopped_vm(
        "o",
        GuestBehavior::cooperative().acpi_after(Duration::from_secs(1)),
    );
    let orch = Orchestrator::new(Arc::new(sim.clone()));
    let sup = Supervisor::spawn(orch, vm.clone(), RunStrategy::Once, config());
    settle(5).await;
    assert_eq!(sim.true_state(&vm), Some(PowerState::Running));
    sim.request_shutdown(
        &vm,
        ShutdownChannel::Acpi,
        &ShutdownRequestOptions::default(),
    )
    .await
    .unwrap();
    settle(600).await;
    assert!(sim.true_state(&vm).unwrap().is_off());
    assert_eq!(sim.calls("start"), 1);
    sup.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn pushed_state_changes_are_acted_on_without_waiting_for_the_poll() {
    let sim = Simulator::new();
    let vm = sim.add_vm(
        "w",
        GuestBehavior::cooperative().acpi_after(Duration::from_secs(1)),
    );
    let orch = Orchestrator::new(Arc::new(sim.clone()));
    let mut cfg = SupervisorConfig::default();
    cfg.poll_interval = Duration::from_secs(3600);
    let sup = Supervisor::spawn(orch, vm.clone(), RunStrategy::Always, cfg);
    settle(120).await;
    sim.request_shutdown(
        &vm,
        ShutdownChannel::Acpi,
        &ShutdownRequestOptions::default(),
    )
    .await
    .unwrap();
    settle(2).await;
    assert_eq!(
        sim.true_state(&vm),
        Some(PowerState::Running),
        "restarted from the pushed change"
    );
    assert_eq!(sup.status().restarts, 1);
    sup.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn simulated_reboot_honours_the_channel_and_the_guest() {
    let sim = Simulator::new();
    let acpi = sim.add_vm("acpi", GuestBehavior::cooperative());
    let deaf = sim.add_vm("deaf", GuestBehavior::ignores_acpi());
    let agent = sim.add_vm("agent", GuestBehavior::with_agent(Duration::from_secs(1)));
    tokio::time::sleep(Duration::from_secs(60)).await;
    let before = sim.incarnation(&acpi).await.unwrap();
    sim.reboot(&acpi, ShutdownChannel::Acpi).await.unwrap();
    assert_eq!(sim.reboots(&acpi), 1);
    assert_eq!(
        sim.incarnation(&acpi).await.unwrap(),
        before,
        "a guest reboot stays in the same run"
    );
    sim.reboot(&deaf, ShutdownChannel::Acpi).await.unwrap();
    assert_eq!(
        sim.reboots(&deaf),
        0,
        "a guest that ignores ACPI does not reboot"
    );
    let e = sim.reboot(&acpi, ShutdownChannel::Agent).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "no agent: {e}");
    sim.reboot(&agent, ShutdownChannel::Agent).await.unwrap();
    assert_eq!(sim.reboots(&agent), 1);
    assert_eq!(sim.power_state(&agent).await.unwrap(), PowerState::Running);
}

#[tokio::test(start_paused = true)]
async fn once_and_a_user_stop_survive_a_restart_of_the_supervisor() {
    use virtrigaud_core::model::RunStrategyState;
    // Once: started by the first process; after the VM stopped and the process restarted
    // with the published memory, it is not started again.
    let sim = Simulator::new();
    let vm = sim.add_stopped_vm("once", GuestBehavior::cooperative());
    let orch = Orchestrator::new(Arc::new(sim.clone()));
    let sup = Supervisor::spawn(orch.clone(), vm.clone(), RunStrategy::Once, config());
    settle(10).await;
    assert!(sim.true_state(&vm).unwrap().is_active());
    let memory = sup.status().memory;
    assert!(memory.once_done, "{memory:?}");
    sup.shutdown().await;
    sim.power_off(&vm, &PowerOffOptions::default())
        .await
        .unwrap();
    let starts = sim.calls("start");
    let again = Supervisor::spawn_resuming(
        orch.clone(),
        vm.clone(),
        RunStrategy::Once,
        config(),
        memory,
    );
    settle(600).await;
    assert_eq!(sim.calls("start"), starts, "Once ran a second time");
    again.shutdown().await;

    // Always: a user's stop still holds after a restart.
    let vm = sim.add_vm("always", GuestBehavior::cooperative());
    let sup = Supervisor::spawn(orch.clone(), vm.clone(), RunStrategy::Always, config());
    settle(10).await;
    sup.action(LifecycleAction::force_stop()).await.unwrap();
    let memory = sup.status().memory;
    assert!(memory.stopped_by_user, "{memory:?}");
    sup.shutdown().await;
    let back: RunStrategyState =
        serde_json::from_str(&serde_json::to_string(&memory).unwrap()).unwrap();
    let again = Supervisor::spawn_resuming(orch, vm.clone(), RunStrategy::Always, config(), back);
    settle(600).await;
    assert!(
        sim.true_state(&vm).unwrap().is_off(),
        "the user's stop was undone"
    );
    again.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn rerun_on_failure_restarts_a_simulated_crash_and_leaves_a_clean_stop_off() {
    let sim = Simulator::new();
    let vm = sim.add_vm("web", GuestBehavior::cooperative());
    let orch = Orchestrator::new(Arc::new(sim.clone()));
    let sup = Supervisor::spawn(orch, vm.clone(), RunStrategy::RerunOnFailure, config());
    settle(120).await;
    sim.crash(&vm);
    assert_eq!(
        sim.true_state(&vm),
        Some(PowerState::Off(OffReason::Crashed))
    );
    settle(60).await;
    assert_eq!(sim.true_state(&vm), Some(PowerState::Running), "restarted");
    assert_eq!(sup.status().restarts, 1);
    assert_eq!(sup.status().last_error, None);
    settle(120).await;
    sim.request_shutdown(
        &vm,
        ShutdownChannel::Acpi,
        &ShutdownRequestOptions::default(),
    )
    .await
    .unwrap();
    settle(60).await;
    assert!(
        sim.true_state(&vm).unwrap().is_off(),
        "a clean stop is left off"
    );
    assert_eq!(sup.status().restarts, 1);
    sup.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn rerun_on_failure_on_a_provider_blind_to_crashes_is_declared_not_honoured() {
    let sim = Simulator::new();
    let vm = sim.add_vm("web", GuestBehavior::cooperative());
    let crashy = Arc::new(Crashy::new(sim.clone()));
    crashy.st.lock().unwrap().blind = true;
    let orch = Orchestrator::new(Arc::clone(&crashy) as Arc<dyn Provider>);
    let mut events = orch.events().subscribe();
    let sup = Supervisor::spawn(orch, vm.clone(), RunStrategy::RerunOnFailure, config());
    settle(1).await;
    let err = sup.status().last_error.expect("the supervisor says why");
    assert!(
        err.contains("spec.runStrategy") && err.contains("RerunOnFailure"),
        "{err}"
    );
    let mut warned = false;
    while let Ok(e) = events.try_recv() {
        warned |= e.reason == EventReason::RunStrategyNotHonoured;
    }
    assert!(warned, "a RunStrategyNotHonoured Warning");
    sup.shutdown().await;
}
