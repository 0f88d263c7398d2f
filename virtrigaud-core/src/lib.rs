//! # virtrigaud-core
//!
//! The provider contract, the VM model and the restart-safe graceful-shutdown engine of
//! virtrigaud. Provider crates (`virtrigaud-libvirt`, `-vsphere`, `-proxmox`, `-kubevirt`)
//! implement the traits; everything else here is provider-agnostic.
//!
//! ## 1. Providers
//!
//! A [`Provider`] is object-safe and is passed around as `Arc<dyn Provider>`. It implements
//! primitives — read the power state with detail ([`PowerState`]: running, shutting down,
//! paused, crashed, off with a reason), start, hard power-off, ask the guest to shut down
//! through *one* [`ShutdownChannel`] — and declares what it can do in
//! [`ProviderCapabilities`] (and per VM in [`VmCapabilities`]). The in-memory
//! [`sim::Simulator`] is a provider too:
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap().block_on(async {
//! use std::sync::Arc;
//! use virtrigaud_core::{Provider, PowerState, sim::{GuestBehavior, Simulator}};
//!
//! let sim = Simulator::new();
//! let vm = sim.add_vm("web-1", GuestBehavior::cooperative());
//! let provider: Arc<dyn Provider> = Arc::new(sim);
//! assert_eq!(provider.power_state(&vm).await?, PowerState::Running);
//! assert!(provider.capabilities().power_state_watch);
//! # Ok::<(), virtrigaud_core::Error>(()) }).unwrap();
//! ```
//!
//! ## 2. Graceful shutdown
//!
//! [`shutdown::ShutdownManager`] runs the engine: agent probe with a small budget, one channel
//! per request, re-sent while the guest ignores it, completion by push (or polling with
//! backoff), a hard power-off at the deadline — and exactly one grace period per VM however
//! many requests race, journalled so that a restarted process resumes with the time left. A
//! journalled lease belongs to one run of the VM ([`Incarnation`]) and expires, so a VM
//! restarted in between always gets a full, fresh grace.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap().block_on(async {
//! use std::{sync::Arc, time::Duration};
//! use virtrigaud_core::shutdown::{ForcedReason, ShutdownManager, ShutdownOutcome, ShutdownPolicy};
//! use virtrigaud_core::sim::{GuestBehavior, Simulator};
//!
//! let sim = Simulator::new();
//! let stubborn = sim.add_vm("legacy", GuestBehavior::ignores_acpi());
//! let manager = ShutdownManager::new(Arc::new(sim));
//! let report = manager.shutdown(&stubborn, ShutdownPolicy::with_grace(Duration::from_secs(30))).await?;
//! assert!(matches!(report.outcome, ShutdownOutcome::Forced { reason: ForcedReason::Timeout }));
//! assert_eq!(report.elapsed, Duration::from_secs(30));
//! # Ok::<(), virtrigaud_core::Error>(()) }).unwrap();
//! ```
//!
//! ## 3. Errors
//!
//! One [`Error`] type: an [`ErrorKind`], a retry status ([`Error::is_retryable`]) and the
//! provider, operation and resource concerned. Providers map their native errors in one place.
//!
//! ## 4. The model
//!
//! [`model`] holds the typed spec/status objects of the design (VirtualMachine, VMSnapshot,
//! VMClone, VMSet, VMPlacementPolicy, VMImage, lifecycle actions, run strategies). Parsing
//! reports the field path and the rule broken:
//!
//! ```
//! # #[cfg(feature = "yaml")] {
//! use virtrigaud_core::model::{self, LifecycleAction};
//! let err = model::from_yaml_str::<LifecycleAction>("action: stop\ngracePeriodSeconds: -5\n").unwrap_err();
//! assert!(err.to_string().contains("gracePeriodSeconds"));
//! # }
//! ```
//!
//! ## 5. Testing a provider
//!
//! With the `testkit` feature, `conformance::run_all` runs the shared checks against any
//! provider and a `conformance::Fixture`; `testing::backend_env` makes real-server tests skip
//! loudly, or fail under the project's test command. The simulator's scriptable guests cover
//! what real servers cannot show. [`writing_a_provider`] walks through the contract, the shape
//! of a provider crate and the suite.
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod capabilities;
pub mod checks;
pub mod clone;
pub mod cloudinit;
pub mod error;
pub mod layers;
#[cfg(any(test, feature = "mock"))]
pub mod mock;
pub mod model;
pub mod orchestration;
pub mod placement;
pub mod provider;
pub mod reconcile;
mod redact;
pub mod shutdown;
pub mod sim;
pub mod snapshot;
#[cfg(feature = "testkit")]
#[cfg_attr(docsrs, doc(cfg(feature = "testkit")))]
pub mod testkit;
pub mod vm;
pub mod vmset;
pub mod wait;

#[doc = include_str!("../docs/writing-a-provider.md")]
pub mod writing_a_provider {}

#[cfg(feature = "testkit")]
pub use testkit::{conformance, testing};

pub use capabilities::{ProviderCapabilities, VmCapabilities};
pub use clone::{CloneOptions, CloneResult, Cloner, Customization, NetworkCustomization};
pub use error::{BoxError, Error, ErrorKind, ErrorStatus, Result, ResultExt};
pub use placement::{Inventory, Placement, PlacementDecision, PlacementRequest, Placer};
pub use provider::{
    DeleteOptions, DiskCreateSpec, DiskResize, ListOptions, NetworkCreateSpec, PowerOffOptions,
    PowerStateStream, Provider, ReconfigureRequest, ReconfigureResult, ShutdownRequestOptions,
    StartOptions, VmCreateSpec,
};
pub use snapshot::{
    DeleteSnapshotOptions, RevertOptions, SnapshotInfo, SnapshotOptions, Snapshotter,
};
pub use vm::{
    AgentStatus, DiskInfo, Incarnation, OffReason, PauseReason, PowerState, ShutdownChannel,
    VmDescription, VmId,
};
