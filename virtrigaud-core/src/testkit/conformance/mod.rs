//! The conformance suite every provider runs against its real test server.
//!
//! Like `object_store`'s integration module: public async checks that take a provider and a
//! [`Fixture`], gated on the provider's declared capabilities. The simulator passes them in
//! this crate's tests; each provider crate runs them against its real test server. The set of
//! checks may grow in any release (it is not a stable API for third-party providers).
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap().block_on(async {
//! use std::sync::Arc;
//! use virtrigaud_core::conformance::{self, SimFixture};
//! let fixture = SimFixture::new();
//! conformance::run_all(Arc::new(fixture.simulator()), &fixture).await.assert_passed();
//! # });
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;

use crate::clone::{CloneOptions, Customization};
use crate::error::{ErrorKind, Result};
use crate::model::VmTemplate;
use crate::orchestration::image::ImageSink;
use crate::orchestration::{Orchestrator, OrchestratorConfig};
use crate::placement::{DatastoreInfo, HostInfo, Resources};
use crate::provider::{PowerOffOptions, Provider, StartOptions};
use crate::shutdown::{
    ForcedReason, PreStopExecutor, ShutdownManager, ShutdownOutcome, ShutdownPolicy, SystemClock,
    WallClock,
};
use crate::sim::{GuestBehavior, Simulator};
use crate::snapshot::{DeleteSnapshotOptions, RevertOptions, SnapshotOptions};
use crate::vm::{PowerState, VmId};

mod report;
mod truth;

pub use report::{CheckOutcome, REPORT_DIR_ENV, Report};
pub use truth::capabilities_tell_the_truth;

/// What a backend supplies to the conformance suite.
#[async_trait]
pub trait Fixture: Send + Sync {
    /// A fresh, running VM whose guest honours a shutdown request within
    /// [`Fixture::graceful_grace`]. Each call should return a VM no other check uses.
    async fn cooperative_vm(&self) -> Result<VmId>;

    /// A fresh, running VM whose guest ignores shutdown requests, or `None` when the backend
    /// cannot model one (then the timeout checks are skipped, with the reason reported).
    async fn ignoring_vm(&self) -> Result<Option<VmId>> {
        Ok(None)
    }

    /// An id that names no VM on the backend.
    fn missing_vm(&self) -> VmId;

    /// A grace period long enough for a cooperative guest to stop.
    fn graceful_grace(&self) -> Duration {
        Duration::from_secs(60)
    }

    /// A short grace period used by the forced-at-deadline checks.
    fn short_grace(&self) -> Duration {
        Duration::from_secs(2)
    }

    /// Removes a VM the fixture made (best effort; called at the end of each check).
    async fn cleanup(&self, vm: &VmId) {
        let _ = vm;
    }

    /// The customization a clone carries, read back from the platform's own record of it
    /// (the VM's config, its cloud-init seed, its guestinfo), or `None` when the fixture
    /// cannot read it back. A provider that declares `clone_customization` needs this: the
    /// customization check fails when what was applied cannot be seen.
    async fn applied_customization(&self, vm: &VmId) -> Result<Option<Customization>> {
        let _ = vm;
        Ok(None)
    }

    /// A fresh VM to clone from (`linked`: for a linked clone, which some platforms take
    /// only from a template). The default is a fresh [`Fixture::cooperative_vm`].
    async fn clone_source(&self, linked: bool) -> Result<VmId> {
        let _ = linked;
        self.cooperative_vm().await
    }

    /// Arranges for the next clone of `source` to fail after the copy has begun (a fault the
    /// backend can be told to inject) and returns the options that clone with; `None` when
    /// the backend cannot be made to fail half-way (the check is then skipped, saying so).
    async fn arrange_clone_failure(&self, source: &VmId) -> Result<Option<CloneOptions>> {
        let _ = source;
        Ok(None)
    }

    /// Adapts the VM-set check's member template (seed 003's, 1 vCPU, 128 MiB, a 1 GiB disk
    /// `root`, no network) to what the backend needs to make a VM, such as a network that
    /// exists there. The default leaves it as it is.
    fn adapt_set_template(&self, template: &mut VmTemplate) {
        let _ = template;
    }

    /// The image sink that takes prepared images into the backend's storage, for the image
    /// check; `None` (the default) when the fixture has none. A provider that declares
    /// `image_import` needs one: the image check fails without it.
    async fn image_sink(&self) -> Result<Option<Arc<dyn ImageSink>>> {
        Ok(None)
    }

    /// The wall clock the backend stamps snapshots with (the retention check ages
    /// snapshots by it). The default is the system clock; the simulator's follows tokio's
    /// paused clock.
    fn wall_clock(&self) -> Arc<dyn WallClock> {
        Arc::new(SystemClock)
    }

    /// The executor that runs pre-stop hooks in the backend's guests, for the pre-stop
    /// check: it must run [`CONFORMANCE_PRE_STOP`] in a [`Fixture::cooperative_vm`]'s guest
    /// with exit 0. `None` (the default): the test server cannot run guest programs (the
    /// check is skipped where the provider declares `guest_exec`).
    async fn pre_stop_executor(&self) -> Result<Option<Arc<dyn PreStopExecutor>>> {
        Ok(None)
    }

    /// A running VM for the pre-stop check, whose guest runs programs through the agent
    /// the executor uses. The default is [`Fixture::cooperative_vm`].
    async fn pre_stop_vm(&self) -> Result<VmId> {
        self.cooperative_vm().await
    }
}

/// Runs every check the provider's capabilities allow, in order.
pub async fn run_all(provider: Arc<dyn Provider>, fixture: &dyn Fixture) -> Report {
    let mut report = Report::default();
    let p = &provider;
    report.push(
        "not_found_is_classified",
        not_found_is_classified(p, fixture).await,
    );
    report.push("power_cycle", power_cycle(p, fixture).await);
    report.push(
        "graceful_shutdown_completes",
        graceful_shutdown_completes(p, fixture).await,
    );
    report.push(
        "grace_zero_forces_at_once",
        grace_zero_forces_at_once(p, fixture).await,
    );
    report.push(
        "ignored_shutdown_forced_at_deadline",
        ignored_shutdown_forced_at_deadline(p, fixture).await,
    );
    report.push(
        "racing_requests_share_one_grace",
        racing_requests_share_one_grace(p, fixture).await,
    );
    report.push("watch_reports_off", watch_reports_off(p, fixture).await);
    report.push("snapshot_round_trip", snapshot_round_trip(p, fixture).await);
    report.push(
        "capabilities_tell_the_truth",
        capabilities_tell_the_truth(p, fixture).await,
    );
    report.push(
        "reboot_comes_back_running",
        reboot_comes_back_running(p, fixture).await,
    );
    report.push("reset_keeps_running", reset_keeps_running(p, fixture).await);
    report.push(
        "pause_resume_round_trip",
        pause_resume_round_trip(p, fixture).await,
    );
    report.push(
        "escalation_shortens_or_forces",
        escalation_shortens_or_forces(p, fixture).await,
    );
    report.push(
        "cancelled_shutdown_is_honest",
        cancelled_shutdown_is_honest(p, fixture).await,
    );
    report.push(
        "reconfigure_online_when_declared",
        reconfigure_online_when_declared(p, fixture).await,
    );
    report.push(
        "reconfigure_power_cycles_gracefully",
        reconfigure_power_cycles_gracefully(p, fixture).await,
    );
    report.push(
        "disk_grows_by_its_spec_name",
        disk_grows_by_its_spec_name(p, fixture).await,
    );
    report.push(
        "snapshot_reports_memory_and_quiesce",
        snapshot_reports_memory_and_quiesce(p, fixture).await,
    );
    report.push(
        "revert_to_ref_restores_power_state",
        revert_to_ref_restores_power_state(p, fixture).await,
    );
    report.push(
        "retention_prunes_by_count_and_age",
        retention_prunes_by_count_and_age(p, fixture).await,
    );
    report.push(
        "delete_on_vm_delete_is_honoured",
        delete_on_vm_delete_is_honoured(p, fixture).await,
    );
    report.push(
        "snapshot_failure_deadline_leaves_nothing",
        snapshot_failure_deadline_leaves_nothing(p, fixture).await,
    );
    report.push(
        "full_and_linked_clones",
        full_and_linked_clones(p, fixture).await,
    );
    report.push(
        "clone_customization_is_applied",
        clone_customization_is_applied(p, fixture).await,
    );
    report.push(
        "failed_clone_leaves_nothing",
        failed_clone_leaves_nothing(p, fixture).await,
    );
    report.push(
        "vm_set_scales_and_rolls",
        vm_set_scales_and_rolls(p, fixture).await,
    );
    report.push(
        "vm_set_spreads_per_placement_policy",
        vm_set_spreads_per_placement_policy(p, fixture).await,
    );
    report.push(
        "image_import_from_the_seed",
        image_import_from_the_seed(p, fixture).await,
    );
    report.push(
        "vm_set_from_a_prepared_image",
        vm_set_from_a_prepared_image(p, fixture).await,
    );
    report.push(
        "pre_stop_runs_in_the_guest_or_is_refused",
        pre_stop_runs_in_the_guest_or_is_refused(p, fixture).await,
    );
    report
}

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return CheckOutcome::Failed(format!($($msg)+));
        }
    };
}

macro_rules! attempt {
    ($e:expr, $what:expr) => {
        match $e {
            Ok(v) => v,
            Err(err) => {
                return CheckOutcome::Failed(format!(
                    "{}: {}",
                    $what,
                    crate::error::error_chain(&err)
                ))
            }
        }
    };
}

mod clones;
mod hooks;
mod image_sets;
mod images;
mod lifecycle;
mod reconfigure;
mod sets;
mod snapshots;
mod spread;

pub use clones::{
    clone_customization_is_applied, failed_clone_leaves_nothing, full_and_linked_clones,
};
pub use hooks::{CONFORMANCE_PRE_STOP, pre_stop_runs_in_the_guest_or_is_refused};
pub use image_sets::vm_set_from_a_prepared_image;
pub use images::image_import_from_the_seed;
pub use lifecycle::{
    cancelled_shutdown_is_honest, escalation_shortens_or_forces, pause_resume_round_trip,
    reboot_comes_back_running, reset_keeps_running,
};
pub use reconfigure::{
    disk_grows_by_its_spec_name, reconfigure_online_when_declared,
    reconfigure_power_cycles_gracefully,
};
pub use sets::vm_set_scales_and_rolls;
pub use snapshots::{
    delete_on_vm_delete_is_honoured, retention_prunes_by_count_and_age,
    revert_to_ref_restores_power_state, snapshot_failure_deadline_leaves_nothing,
    snapshot_reports_memory_and_quiesce,
};
pub use spread::vm_set_spreads_per_placement_policy;

/// An orchestrator over `provider` whose graceful stops wait the fixture's graceful grace.
fn orchestrator(provider: &Arc<dyn Provider>, fixture: &dyn Fixture) -> Orchestrator {
    let config = OrchestratorConfig {
        stop_policy: ShutdownPolicy::with_grace(fixture.graceful_grace()),
        ..Default::default()
    };
    Orchestrator::new(Arc::clone(provider))
        .with_config(config)
        .with_clock(fixture.wall_clock())
}

/// Runs `check` on a fresh cooperative VM from the fixture, then cleans the VM up.
async fn with_vm(
    fixture: &dyn Fixture,
    check: impl AsyncFnOnce(&VmId) -> CheckOutcome,
) -> CheckOutcome {
    let vm = attempt!(fixture.cooperative_vm().await, "fixture.cooperative_vm");
    let outcome = check(&vm).await;
    fixture.cleanup(&vm).await;
    outcome
}

/// Runs `check` on a fresh VM whose guest ignores shutdown, then cleans the VM up; skipped
/// when the fixture cannot model such a guest.
async fn with_ignoring_vm(
    fixture: &dyn Fixture,
    check: impl AsyncFnOnce(&VmId) -> CheckOutcome,
) -> CheckOutcome {
    let vm = match fixture.ignoring_vm().await {
        Ok(Some(vm)) => vm,
        Ok(None) => {
            return CheckOutcome::Skipped(
                "the backend cannot model a guest that ignores shutdown".into(),
            );
        }
        Err(e) => return CheckOutcome::Failed(format!("fixture.ignoring_vm: {e}")),
    };
    let outcome = check(&vm).await;
    fixture.cleanup(&vm).await;
    outcome
}

/// Waits (watch or poll, [`crate::wait::await_power_state`]) until `pred` holds or `limit`
/// passes.
pub async fn await_state(
    provider: &Arc<dyn Provider>,
    vm: &VmId,
    limit: Duration,
    pred: impl Fn(&PowerState) -> bool,
) -> Result<PowerState> {
    let wait = crate::wait::await_power_state(provider.as_ref(), vm, pred);
    match tokio::time::timeout(limit, wait).await {
        Ok(res) => res,
        Err(_) => {
            let state = provider.power_state(vm).await?;
            Err(crate::Error::timeout(format!(
                "{vm} still {state} after {limit:?}"
            )))
        }
    }
}

const SETTLE: Duration = Duration::from_secs(60);

/// A missing VM is `NotFound` everywhere, and its shutdown fails with `NotFound`.
pub async fn not_found_is_classified(
    provider: &Arc<dyn Provider>,
    fixture: &dyn Fixture,
) -> CheckOutcome {
    let missing = fixture.missing_vm();
    match provider.power_state(&missing).await {
        Err(e) if e.is(ErrorKind::NotFound) => {}
        other => return CheckOutcome::Failed(format!("power_state of a missing VM: {other:?}")),
    }
    match provider.describe(&missing).await {
        Err(e) if e.is(ErrorKind::NotFound) => {}
        other => return CheckOutcome::Failed(format!("describe of a missing VM: {other:?}")),
    }
    let manager = ShutdownManager::new(Arc::clone(provider));
    let report = attempt!(
        manager
            .shutdown(&missing, ShutdownPolicy::with_grace(fixture.short_grace()))
            .await,
        "shutdown"
    );
    match report.outcome {
        ShutdownOutcome::Failed { error } if error.is(ErrorKind::NotFound) => CheckOutcome::Passed,
        other => CheckOutcome::Failed(format!("shutdown of a missing VM ended {other}")),
    }
}

/// Hard off, start, hard off; powering off an off VM is `InvalidState`.
pub async fn power_cycle(provider: &Arc<dyn Provider>, fixture: &dyn Fixture) -> CheckOutcome {
    with_vm(fixture, async |vm: &VmId| {
        let state = attempt!(provider.power_state(vm).await, "power_state");
        ensure!(
            state.is_active(),
            "a fresh cooperative VM should be running, it is {state}"
        );
        attempt!(
            provider.power_off(vm, &PowerOffOptions::default()).await,
            "power_off"
        );
        attempt!(
            await_state(provider, vm, SETTLE, PowerState::is_off).await,
            "waiting for off"
        );
        match provider.power_off(vm, &PowerOffOptions::default()).await {
            Err(e) if e.is(ErrorKind::InvalidState) => {}
            other => {
                return CheckOutcome::Failed(format!(
                    "power_off of an off VM: {other:?} (want InvalidState)"
                ));
            }
        }
        attempt!(provider.start(vm, &StartOptions::default()).await, "start");
        attempt!(
            await_state(provider, vm, SETTLE, |s| *s == PowerState::Running).await,
            "waiting for running"
        );
        let d = attempt!(provider.describe(vm).await, "describe");
        ensure!(d.id == *vm, "describe returned id {} for {vm}", d.id);
        attempt!(
            provider.power_off(vm, &PowerOffOptions::default()).await,
            "power_off"
        );
        attempt!(
            await_state(provider, vm, SETTLE, PowerState::is_off).await,
            "waiting for off"
        );
        CheckOutcome::Passed
    })
    .await
}

/// A cooperative guest stops gracefully; a second shutdown reports `AlreadyOff` without
/// signalling or powering off.
pub async fn graceful_shutdown_completes(
    provider: &Arc<dyn Provider>,
    fixture: &dyn Fixture,
) -> CheckOutcome {
    let manager = ShutdownManager::new(Arc::clone(provider));
    with_vm(fixture, async |vm: &VmId| {
        let grace = fixture.graceful_grace();
        let report = attempt!(
            manager
                .shutdown(vm, ShutdownPolicy::with_grace(grace))
                .await,
            "shutdown"
        );
        ensure!(
            matches!(report.outcome, ShutdownOutcome::Graceful { .. }),
            "cooperative guest ended {} after {:?}",
            report.outcome,
            report.elapsed
        );
        ensure!(
            report.elapsed <= grace,
            "graceful shutdown took {:?} > grace {grace:?}",
            report.elapsed
        );
        let state = attempt!(provider.power_state(vm).await, "power_state");
        ensure!(
            state.is_off(),
            "reported graceful but the provider says {state}"
        );
        let again = attempt!(
            manager
                .shutdown(vm, ShutdownPolicy::with_grace(grace))
                .await,
            "second shutdown"
        );
        ensure!(
            matches!(again.outcome, ShutdownOutcome::AlreadyOff),
            "second shutdown ended {}",
            again.outcome
        );
        ensure!(
            again.signals_sent == 0 && again.power_off_calls == 0,
            "an off VM was signalled or powered off"
        );
        CheckOutcome::Passed
    })
    .await
}

/// Grace 0 powers off at once, without a request to the guest.
pub async fn grace_zero_forces_at_once(
    provider: &Arc<dyn Provider>,
    fixture: &dyn Fixture,
) -> CheckOutcome {
    let manager = ShutdownManager::new(Arc::clone(provider));
    with_vm(fixture, async |vm: &VmId| {
        let report = attempt!(
            manager.shutdown(vm, ShutdownPolicy::force()).await,
            "shutdown"
        );
        ensure!(
            matches!(
                report.outcome,
                ShutdownOutcome::Forced {
                    reason: ForcedReason::GraceZero
                }
            ),
            "grace 0 ended {}",
            report.outcome
        );
        ensure!(
            report.signals_sent == 0,
            "grace 0 sent {} requests",
            report.signals_sent
        );
        let state = attempt!(provider.power_state(vm).await, "power_state");
        ensure!(state.is_off(), "forced off but the provider says {state}");
        CheckOutcome::Passed
    })
    .await
}

/// A guest that ignores the request is powered off at the deadline, not before.
pub async fn ignored_shutdown_forced_at_deadline(
    provider: &Arc<dyn Provider>,
    fixture: &dyn Fixture,
) -> CheckOutcome {
    let manager = ShutdownManager::new(Arc::clone(provider));
    with_ignoring_vm(fixture, async |vm: &VmId| {
        let grace = fixture.short_grace();
        let report = attempt!(
            manager
                .shutdown(vm, ShutdownPolicy::with_grace(grace))
                .await,
            "shutdown"
        );
        ensure!(
            matches!(
                report.outcome,
                ShutdownOutcome::Forced {
                    reason: ForcedReason::Timeout
                }
            ),
            "ignoring guest ended {}",
            report.outcome
        );
        ensure!(
            report.elapsed >= grace,
            "forced after {:?}, before the grace {grace:?}",
            report.elapsed
        );
        ensure!(
            report.signals_sent >= 1,
            "no request was sent before forcing"
        );
        let state = attempt!(provider.power_state(vm).await, "power_state");
        ensure!(state.is_off(), "forced off but the provider says {state}");
        CheckOutcome::Passed
    })
    .await
}

/// Two concurrent requests with different graces share one shutdown; the shorter grace wins.
pub async fn racing_requests_share_one_grace(
    provider: &Arc<dyn Provider>,
    fixture: &dyn Fixture,
) -> CheckOutcome {
    let (vm, ignoring) = match fixture.ignoring_vm().await {
        Ok(Some(vm)) => (vm, true),
        Ok(None) => (
            attempt!(fixture.cooperative_vm().await, "fixture.cooperative_vm"),
            false,
        ),
        Err(e) => return CheckOutcome::Failed(format!("fixture.ignoring_vm: {e}")),
    };
    let manager = ShutdownManager::new(Arc::clone(provider));
    let outcome = async {
        let long = fixture.graceful_grace().max(fixture.short_grace() * 4);
        let short = if ignoring {
            fixture.short_grace()
        } else {
            fixture.graceful_grace()
        };
        let first = attempt!(
            manager.start(&vm, ShutdownPolicy::with_grace(long)),
            "start long"
        );
        let second = attempt!(
            manager.start(&vm, ShutdownPolicy::with_grace(short)),
            "start short"
        );
        let (a, b) = futures::join!(first.wait(), second.wait());
        if !ignoring && matches!(b.outcome, ShutdownOutcome::AlreadyOff) {
            // A backend that stops cooperative guests instantly may finish the first shutdown
            // before the second request arrives; then the second rightly sees an off VM. The
            // join itself is only provable with a guest that ignores the request.
            ensure!(a.outcome.is_off(), "first request ended {}", a.outcome);
            return CheckOutcome::Passed;
        }
        ensure!(
            a.outcome.as_str() == b.outcome.as_str(),
            "joined requests saw {} and {}",
            a.outcome,
            b.outcome
        );
        ensure!(
            a.signals_sent == b.signals_sent && a.provider_calls == b.provider_calls,
            "the two requests ran separate shutdowns ({} vs {} signals)",
            a.signals_sent,
            b.signals_sent
        );
        ensure!(
            a.grace <= short + Duration::from_secs(1),
            "grace {:?} exceeds the shorter request {short:?}",
            a.grace
        );
        if ignoring {
            ensure!(
                matches!(
                    a.outcome,
                    ShutdownOutcome::Forced {
                        reason: ForcedReason::Timeout
                    }
                ),
                "ended {}",
                a.outcome
            );
            ensure!(a.elapsed < long, "the longer grace won: {:?}", a.elapsed);
        } else {
            ensure!(a.outcome.is_off(), "ended {}", a.outcome);
        }
        CheckOutcome::Passed
    }
    .await;
    fixture.cleanup(&vm).await;
    outcome
}

/// A push-capable provider pushes the transition to off.
pub async fn watch_reports_off(
    provider: &Arc<dyn Provider>,
    fixture: &dyn Fixture,
) -> CheckOutcome {
    if !provider.capabilities().power_state_watch {
        return CheckOutcome::Skipped("the provider does not push power-state changes".into());
    }
    with_vm(fixture, async |vm: &VmId| {
        let Some(mut stream) = attempt!(provider.watch_power_state(vm).await, "watch_power_state")
        else {
            return CheckOutcome::Failed(
                "declares power_state_watch but returned no stream".into(),
            );
        };
        attempt!(
            provider.power_off(vm, &PowerOffOptions::default()).await,
            "power_off"
        );
        let seen = tokio::time::timeout(SETTLE, async {
            while let Some(item) = futures::StreamExt::next(&mut stream).await {
                if let Ok(state) = item
                    && state.is_off()
                {
                    return true;
                }
            }
            false
        })
        .await;
        ensure!(
            matches!(seen, Ok(true)),
            "no off state was pushed after a power-off"
        );
        CheckOutcome::Passed
    })
    .await
}

/// Create, list, revert and delete a snapshot.
pub async fn snapshot_round_trip(
    provider: &Arc<dyn Provider>,
    fixture: &dyn Fixture,
) -> CheckOutcome {
    let caps = provider.capabilities();
    let Some(snapshotter) = provider.snapshotter().filter(|_| caps.snapshots) else {
        return CheckOutcome::Skipped("the provider has no snapshots".into());
    };
    with_vm(fixture, async |vm: &VmId| {
        let opts = SnapshotOptions::new("vr-conformance")
            .with_memory(caps.memory_snapshots)
            .with_description("virtrigaud conformance");
        let snap = attempt!(
            snapshotter.create_snapshot(vm, &opts).await,
            "create_snapshot"
        );
        ensure!(
            snap.name.starts_with("vr-conformance"),
            "snapshot named {}",
            snap.name
        );
        let list = attempt!(snapshotter.list_snapshots(vm).await, "list_snapshots");
        ensure!(
            list.iter().any(|s| s.id == snap.id),
            "new snapshot {} not listed",
            snap.id
        );
        attempt!(
            snapshotter
                .revert_snapshot(vm, &snap.id, &RevertOptions::default())
                .await,
            "revert_snapshot"
        );
        attempt!(
            snapshotter
                .delete_snapshot(vm, &snap.id, &DeleteSnapshotOptions::default())
                .await,
            "delete_snapshot"
        );
        let list = attempt!(snapshotter.list_snapshots(vm).await, "list_snapshots");
        ensure!(
            !list.iter().any(|s| s.id == snap.id),
            "deleted snapshot {} still listed",
            snap.id
        );
        match snapshotter
            .delete_snapshot(vm, &snap.id, &DeleteSnapshotOptions::default())
            .await
        {
            Err(e) if e.is(ErrorKind::NotFound) => {}
            other => {
                return CheckOutcome::Failed(format!(
                    "deleting a deleted snapshot: {other:?} (want NotFound)"
                ));
            }
        }
        CheckOutcome::Passed
    })
    .await
}

/// The simulator's fixture: fresh VMs with the personalities the checks need.
#[derive(Debug, Clone, Default)]
pub struct SimFixture {
    sim: Simulator,
    next: Arc<AtomicU32>,
}

impl SimFixture {
    /// A fixture over a new simulator with a placement inventory
    /// ([`SimFixture::add_inventory`]).
    pub fn new() -> Self {
        let f = Self::over(Simulator::new());
        f.add_inventory();
        f
    }
    /// Gives the simulator three hosts (16 vCPUs, 32 GiB) that all reach three datastores
    /// (100 GiB), so the placement check can spread three members.
    pub fn add_inventory(&self) {
        for i in 1..=3 {
            let mut h = HostInfo::new(format!("esx-{i}"), Resources::new(16, 32768));
            h.datastores = (1..=3).map(|d| format!("ds-{d}")).collect();
            self.sim.add_host(h);
            self.sim
                .add_datastore(DatastoreInfo::new(format!("ds-{i}"), 100));
        }
    }
    /// A fixture over `sim`.
    pub fn over(sim: Simulator) -> Self {
        SimFixture {
            sim,
            next: Arc::new(AtomicU32::new(0)),
        }
    }
    /// The simulator (clone; shared state).
    pub fn simulator(&self) -> Simulator {
        self.sim.clone()
    }
    fn name(&self, kind: &str) -> String {
        format!("{kind}-{}", self.next.fetch_add(1, Ordering::Relaxed))
    }
}

#[async_trait]
impl Fixture for SimFixture {
    async fn cooperative_vm(&self) -> Result<VmId> {
        Ok(self
            .sim
            .add_vm(&self.name("coop"), GuestBehavior::cooperative()))
    }
    async fn ignoring_vm(&self) -> Result<Option<VmId>> {
        Ok(Some(self.sim.add_vm(
            &self.name("ignoring"),
            GuestBehavior::ignores_acpi(),
        )))
    }
    fn missing_vm(&self) -> VmId {
        VmId::new("no-such-vm")
    }
    fn graceful_grace(&self) -> Duration {
        Duration::from_secs(60)
    }
    fn short_grace(&self) -> Duration {
        Duration::from_secs(10)
    }
    fn wall_clock(&self) -> Arc<dyn WallClock> {
        self.sim.wall_clock()
    }
    async fn applied_customization(&self, vm: &VmId) -> Result<Option<Customization>> {
        Ok(self.sim.customization_of(vm))
    }
    async fn arrange_clone_failure(&self, _source: &VmId) -> Result<Option<CloneOptions>> {
        self.sim.inject_fault("clone_copy", ErrorKind::Internal);
        Ok(Some(CloneOptions::new(self.name("half-made"))))
    }
}
