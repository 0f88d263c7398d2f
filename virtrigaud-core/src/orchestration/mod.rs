//! Lifecycle orchestration: reconfigure, snapshots and revert, clones, image preparation,
//! lifecycle actions and run strategies — provider-agnostic, driven only through the core
//! traits, and safe when a step fails half-way.
//!
//! # Tour
//!
//! - [`Orchestrator`] holds the provider, one [`crate::shutdown::ShutdownManager`] (every
//!   graceful stop a flow needs goes through the engine) and an [`EventBus`].
//! - **Reconfigure**: [`Orchestrator::plan_reconfigure`] returns a [`ReconfigurePlan`]
//!   (`Online`, `GracefulPowerCycle { expected_downtime }` or `Impossible { reasons }`)
//!   from the change, the provider's and this VM's capabilities (hot-add limits,
//!   `expandPolicy`, grow-only disks); [`Orchestrator::reconfigure`] executes it, setting
//!   `ReconfigurePendingPowerCycle`, stopping gracefully, applying, starting and recording
//!   `lastReconfigureTime`. A VM that was on is on again at the end, or the error says why.
//! - **Snapshots**: [`Orchestrator::create_snapshot`] (memory and quiesce where capable; the
//!   report says whether quiescing happened), phases `Creating`/`Ready`/`Deleting`/`Failed`
//!   with a failure deadline; retention (`maxAge`, `maxCount`) at create time and by
//!   [`Orchestrator::sweep_snapshots`] / [`Orchestrator::sweep_objects`] ([`plan_retention`]
//!   is the pure rule), `deleteOnVMDelete` by [`Orchestrator::delete_vm`];
//!   [`Orchestrator::revert`] consumes `spec.snapshot.revertToRef`. A snapshot a revert uses
//!   is never deleted by retention.
//! - **Clones**: [`Orchestrator::clone_vm`] — full or linked (only where capable),
//!   customization through the provider's [`crate::Cloner`], optional power-on, phases
//!   `Cloning`/`Customizing`/`Ready`/`Failed`; a failed clone is deleted.
//! - **Lifecycle actions** (seed 004): [`Orchestrator::apply_action`] and
//!   [`Orchestrator::status`]; [`Supervisor`] enforces a [`crate::model::RunStrategy`].
//! - **Images**: [`image`] — `VMImage` preparation with a streaming download (feature
//!   `image-http`), sha256 checked while streaming, retries, stall detection, Range resume
//!   and an [`image::ImageSink`] trait through which providers take the bytes.
//! - **Durations**: no duration given to a flow can overflow the clock. Lifecycle actions
//!   and the template grace of a [`crate::vmset::VmSetReconciler`] are validated
//!   ([`crate::model::MAX_DURATION`]; `InvalidSpec` naming the field); option timeouts,
//!   poll intervals and backoffs ([`image::PrepareOptions`], [`SnapshotCreateOptions`],
//!   [`SupervisorConfig`], [`OrchestratorConfig`]) saturate at about 30 years, so
//!   `Duration::MAX` means "no limit"; a downtime estimate saturates at `Duration::MAX`.
//! - **Observability**: [`metrics`] (`virtrigaud_vm_reconfigure_total`, …) and typed
//!   [`OrchestrationEvent`]s (`SnapshotCreating`, `ReconfigurePowerCycle`, `CloneCompleted`, …).
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap().block_on(async {
//! use std::sync::Arc;
//! use virtrigaud_core::model::VirtualMachineStatus;
//! use virtrigaud_core::orchestration::{Orchestrator, PlanMode, ReconfigureOptions, ResourceChange};
//! use virtrigaud_core::sim::{GuestBehavior, Simulator};
//! use virtrigaud_core::{PowerState, Provider};
//!
//! let sim = Simulator::new();
//! let vm = sim.add_vm("web-1", GuestBehavior::cooperative()); // 2 vCPUs, live max 8
//! let orch = Orchestrator::new(Arc::new(sim.clone()));
//! let change = ResourceChange::default().cpu(16); // beyond the live maximum
//! let plan = orch.plan_reconfigure(&vm, &change, &ReconfigureOptions::default()).await?;
//! assert!(matches!(plan.mode, PlanMode::GracefulPowerCycle { .. }));
//! let mut status = VirtualMachineStatus::default();
//! orch.reconfigure(&vm, &change, &ReconfigureOptions::default(), &mut status).await?;
//! assert_eq!(sim.describe(&vm).await?.cpu, 16);
//! assert_eq!(sim.power_state(&vm).await?, PowerState::Running);
//! assert!(status.last_reconfigure_time.is_some());
//! # Ok::<(), virtrigaud_core::Error>(()) }).unwrap();
//! ```

mod clone;
mod events;
pub mod image;
mod lifecycle;
pub mod metrics;
mod orchestrator;
mod reconfigure;
mod snapshot;
mod supervisor;

pub(crate) use clone::set_phase as set_clone_phase;
pub use clone::{CloneReport, customization_from_model};
pub use events::{EventBus, EventReason, EventType, ObjectKind, OrchestrationEvent};
pub use lifecycle::{VmStatusReport, lifecycle_phase, observed_power_state};
pub use orchestrator::{Orchestrator, OrchestratorConfig, SnapshotGuard};
pub(crate) use orchestrator::{now_rfc3339, rfc3339};
pub use reconfigure::{
    DiskChange, PlanMode, ReconfigureOptions, ReconfigureOutcome, ReconfigurePlan,
    ReconfigureReport, ResourceChange,
};
pub(crate) use snapshot::set_phase as set_snapshot_phase;
pub use snapshot::{
    DEFAULT_SNAPSHOT_DEADLINE, RetentionRules, SnapshotCreateOptions, SnapshotReport,
    plan_retention, snapshot_name,
};
pub use supervisor::{
    Supervisor, SupervisorConfig, SupervisorHandle, SupervisorPhase, SupervisorStatus,
    check_run_strategy,
};
