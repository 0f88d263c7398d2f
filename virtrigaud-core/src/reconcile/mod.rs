//! Declarative reconcilers: a seed object's desired state plus what the provider reports
//! becomes the next step, which a thin executor runs through the
//! [`crate::orchestration::Orchestrator`] and the shutdown engine, writing the status
//! back.
//!
//! The shape is kube-runtime's: a pure planner ([`plan_vm`]) that can be tested without
//! any I/O, and a `reconcile` call ([`VmReconciler::reconcile`]) that does **one step per
//! pass** and returns an [`Action`] saying when to look again. Everything a pass needs is
//! re-read from the provider and the object, so a pass is idempotent and a restarted
//! process simply continues: a desired state that is not reached yet (a start asked for
//! while a shutdown is under way, say) stays in the spec and is acted on by a later pass.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap().block_on(async {
//! use std::sync::Arc;
//! use virtrigaud_core::model::{VirtualMachine, from_yaml_str};
//! use virtrigaud_core::orchestration::Orchestrator;
//! use virtrigaud_core::reconcile::VmReconciler;
//! use virtrigaud_core::sim::{GuestBehavior, Simulator};
//! use virtrigaud_core::Provider;
//!
//! let sim = Simulator::new();
//! let id = sim.add_vm("my-vm", GuestBehavior::cooperative());
//! let mut vm: VirtualMachine = from_yaml_str(
//!     "apiVersion: infra.virtrigaud.io/v1beta1\nkind: VirtualMachine\n\
//!      metadata: {name: my-vm}\nspec: {powerState: OffGraceful}\n",
//! )?;
//! let r = VmReconciler::new(Orchestrator::new(Arc::new(sim.clone())));
//! r.run_until_settled(&id, &mut vm, &[], 10).await?;
//! assert!(sim.power_state(&id).await?.is_off());
//! # Ok::<(), virtrigaud_core::Error>(()) }).unwrap();
//! ```

mod action;
mod clone;
mod image;
mod lifecycle;
mod placement;
mod snapshot;
mod vm;
mod vm_plan;

pub use action::Action;
pub use clone::{CloneReconciler, CloneStep, plan_clone};
pub use image::{ImageReconciler, ImageStep, plan_image};
pub use lifecycle::LifecycleReconciler;
pub use placement::{POLICY_RECHECK, PlacementPolicyReconciler, check_policy};
pub use snapshot::{SnapshotReconciler, SnapshotStep, plan_snapshot};
pub use vm::VmReconciler;
pub use vm_plan::{VmPlan, VmStep, plan_vm, pre_stop_budget};
