//! # virtrigaud-core
//!
//! The provider contract, the VM model and the graceful-shutdown engine of virtrigaud.
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod capabilities;
pub mod clone;
pub mod conformance;
pub mod error;
pub mod model;
pub mod orchestration;
pub mod placement;
pub mod provider;
pub mod shutdown;
pub mod sim;
pub mod snapshot;
pub mod testing;
pub mod vm;
pub mod vmset;

pub use capabilities::{ProviderCapabilities, VmCapabilities};
pub use clone::{CloneOptions, CloneResult, Cloner, Customization, NetworkCustomization};
pub use error::{BoxError, Error, ErrorKind, ErrorStatus, Result};
pub use placement::{Inventory, PlacementDecision, PlacementRequest, Placer};
pub use provider::{
    DeleteOptions, DiskCreateSpec, DiskResize, ListOptions, NetworkCreateSpec, PowerOffOptions,
    PowerStateStream, Provider, ReconfigureRequest, ReconfigureResult, ShutdownRequestOptions,
    StartOptions, VmCreateSpec,
};
pub use snapshot::{
    DeleteSnapshotOptions, RevertOptions, SnapshotInfo, SnapshotOptions, Snapshotter,
};
pub use vm::{
    AgentStatus, DiskInfo, OffReason, PauseReason, PowerState, ShutdownChannel, VmDescription, VmId,
};
