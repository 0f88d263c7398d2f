//! The typed spec/status model: every kind in the design documents, as serde types.
//!
//! # Tour
//!
//! - **Kinds**: [`VirtualMachine`], [`VMSnapshot`], [`VMClone`], [`VMSet`],
//!   [`VMPlacementPolicy`], [`VMImage`] are aliases of the generic envelope [`Object`]
//!   (`apiVersion`, `kind`, [`ObjectMeta`], `spec`, `status`); [`ProviderResource`] carries
//!   declared [`crate::ProviderCapabilities`]. [`SpecPatch`] holds a spec-only fragment.
//! - **Value types**: [`HumanDuration`] (`"120s"`, `"7d"`; bare numbers rejected),
//!   [`IntOrPercent`] (`1` or `"25%"`, resolved against a replica count), [`Checksum`]
//!   (`sha256:<64 hex>`), [`Quantity`] (`4Gi`), [`Condition`] with [`set_condition`] and
//!   [`find_condition`].
//! - **Lifecycle**: `powerState`, [`VirtualMachineSpec::graceful_shutdown_timeout`] (60 s by
//!   default) and [`VirtualMachineSpec::pre_stop_command`] reach the shutdown engine through
//!   [`crate::reconcile::VmReconciler`] (the preStop gets at most half the grace, run in the
//!   guest by the shutdown manager's `PreStopExecutor`, one per provider crate that declares
//!   `guest_exec`; without one the stop is refused naming `spec.lifecycle.preStop`);
//!   [`LifecycleAction`] (`start`/`stop`, `force`, `gracePeriodSeconds`) and [`RunStrategy`]
//!   model seed 004, applied by [`crate::reconcile::LifecycleReconciler`] and enforced by
//!   [`crate::orchestration::Supervisor`] (its memory kept in `status.runStrategyState`).
//! - **What drives each kind**: a reconciler in [`crate::reconcile`] per kind —
//!   `VmReconciler` (power state, resources, disks, `revertToRef`), `SnapshotReconciler`,
//!   `CloneReconciler`, `ImageReconciler`, `PlacementPolicyReconciler` and
//!   [`crate::vmset::VmSetReconciler`]. A field no reconciler reads (`classRef`,
//!   `providerRef`, `postStart`) is carried and validated, and does nothing by itself: the
//!   embedder resolves classes and providers before it builds a reconciler.
//! - **Duration bounds**: a grace period or timeout (`gracefulShutdownTimeout`,
//!   `gracePeriodSeconds`, `prepare.timeout`) is at most [`MAX_DURATION`] (365 days) and a
//!   snapshot's `maxAge` at most [`MAX_RETENTION_AGE`] (100 years); a longer value, or a
//!   negative `gracePeriodSeconds`, is a [`SpecError`] naming the field, so an accepted
//!   document never overflows the clock.
//! - **Parsing**: [`from_yaml_str`] (feature `yaml`) and [`from_json_str`] deserialize
//!   through `serde_path_to_error`, so a bad field is reported with its path
//!   ([`ParseError::Field`]), then run [`Validate`], which collects every broken rule as a
//!   [`SpecError`] (`path`, `rule`, `value`) in [`SpecErrors`]. [`ParseError`] converts into
//!   [`crate::Error`] with [`crate::ErrorKind::InvalidSpec`].
//!
//! ```
//! # #[cfg(feature = "yaml")] {
//! use virtrigaud_core::model::{from_yaml_str, VMSet};
//! let err = from_yaml_str::<VMSet>(
//!     "apiVersion: infra.virtrigaud.io/v1beta1
//! kind: VMSet
//! metadata: {name: web}
//! spec:
//!   replicas: -1
//!   template: {}
//!   updateStrategy: {rollingUpdate: {maxUnavailable: 0, maxSurge: 0}}
//! ",
//! )
//! .unwrap_err();
//! let errors = err.spec_errors().unwrap();
//! assert_eq!(errors.errors()[0].path, "spec.replicas");
//! assert!(errors.find("spec.updateStrategy.rollingUpdate.maxUnavailable").is_some());
//! let err: virtrigaud_core::Error = err.into();
//! assert_eq!(err.kind(), virtrigaud_core::ErrorKind::InvalidSpec);
//! # }
//! ```

mod checksum;
mod clone;
mod condition;
mod duration;
mod image;
mod intorpercent;
mod lifecycle;
mod meta;
mod parse;
mod placement;
mod provider;
mod quantity;
#[cfg(feature = "schema")]
mod schema;
mod snapshot;
mod validate;
mod vm;
mod vmset;

pub use checksum::{Checksum, ChecksumAlgorithm, ChecksumParseError};
pub use clone::{
    CloneCustomization, CloneNetwork, ClonePhase, CloneTarget, CloudInit, UserData, VMClone,
    VMCloneSpec, VMCloneStatus,
};
pub use condition::{
    Condition, ConditionStatus, find_condition, is_condition_true, remove_condition, set_condition,
    types as condition_types,
};
pub use duration::{
    DURATION_RULE, DurationParseError, HumanDuration, MAX_DURATION, MAX_RETENTION_AGE,
};
pub use image::{
    ImageDownload, ImagePhase, ImagePrepare, ImageStorage, LibvirtImageSource, LibvirtImageStorage,
    OnMissing, ProxmoxImageSource, ProxmoxImageStorage, StoredImage, VMImage, VMImageSpec,
    VMImageStatus, VsphereImageSource, VsphereImageStorage,
};
pub use intorpercent::{INT_OR_PERCENT_RULE, IntOrPercent, IntOrPercentParseError};
pub use lifecycle::{
    DEFAULT_STOP_GRACE_PERIOD, LifecycleAction, LifecycleActionKind, LifecyclePhase,
    LifecycleState, RunStrategy, RunStrategyState,
};
pub use meta::{API_VERSION, LabelSelector, Object, ObjectMeta, ObjectRef, Resource, SpecPatch};
pub use parse::{
    ParseError, from_json_str, from_json_value, from_value_unvalidated, to_json_string,
};
#[cfg(feature = "yaml")]
pub use parse::{from_yaml_str, from_yaml_str_unvalidated, to_yaml_string, yaml_to_value};
pub use placement::{
    AntiAffinity, PlacementConstraints, VMPlacementPolicy, VMPlacementPolicySpec,
    VMPlacementPolicyStatus,
};
pub use provider::{DeclaredCapabilities, ProviderResource, ProviderSpec, ProviderStatus};
pub use quantity::{Quantity, QuantityParseError};
#[cfg(feature = "schema")]
pub use schema::schemas;
pub use snapshot::{RetentionPolicy, SnapshotPhase, VMSnapshot, VMSnapshotSpec, VMSnapshotStatus};
pub use validate::{SpecError, SpecErrors, Validate, index as path_index, join as path_join};
pub use vm::{
    DEFAULT_GRACEFUL_SHUTDOWN_TIMEOUT, ExecAction, ExpandPolicy, LifecycleHandler,
    ObservedPowerState, VirtualMachine, VirtualMachineSpec, VirtualMachineStatus, VmDisk,
    VmLifecycle, VmNetwork, VmPowerState, VmResources, VmSnapshotOperation,
};
pub use vmset::{
    DEFAULT_ROLLING_PERCENT, RollingUpdate, UpdateStrategy, UpdateStrategyType, VMSet, VMSetSpec,
    VMSetStatus, VmTemplate,
};
