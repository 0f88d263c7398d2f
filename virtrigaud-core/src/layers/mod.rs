//! Layers: what every provider would otherwise repeat, written once.
//!
//! In the spirit of OpenDAL's layers and tower, a [`Layer`] sees every call a provider gets
//! (its [`Call`]: the operation, the VM, whether it is idempotent, the request) and decides
//! how to run the [`Next`] step: add context and a span, count it, retry it, refuse it.
//! [`Layered`] puts a layer around any [`Provider`](crate::Provider), and is a provider
//! itself, so layers stack:
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap().block_on(async {
//! use std::sync::Arc;
//! use virtrigaud_core::layers::{InstrumentLayer, LayerExt, RetryLayer, ValidateLayer};
//! use virtrigaud_core::sim::{GuestBehavior, Simulator};
//! use virtrigaud_core::{Provider, VmCreateSpec};
//!
//! let sim = Simulator::new();
//! let vm = sim.add_vm("web-1", GuestBehavior::cooperative());
//! let instrument = InstrumentLayer::new();
//! let stats = instrument.stats();
//! let provider: Arc<dyn Provider> = Arc::new(
//!     sim.layer(ValidateLayer).layer(RetryLayer::default()).layer(instrument),
//! );
//! provider.power_state(&vm).await?;
//! assert_eq!(stats.calls("power_state"), 1);
//! let err = provider.create(&VmCreateSpec::new("db-1", 0, 1024)).await.unwrap_err();
//! assert_eq!(err.to_string(), "simulator create db-1: invalid_spec: cpu: must be at least 1");
//! # Ok::<(), virtrigaud_core::Error>(()) }).unwrap();
//! ```
//!
//! The layers here:
//! - [`InstrumentLayer`]: error context (provider, operation, resource), one tracing span per
//!   call, `virtrigaud_provider_calls_total` / `virtrigaud_provider_call_seconds` metrics, and
//!   per-operation [`CallStats`].
//! - [`RetryLayer`]: retries idempotent calls on retryable errors with one [`RetryPolicy`].
//! - [`ValidateLayer`]: rejects bad create specs and reconfigure requests before any provider
//!   sees them ([`VmCreateSpec::validate`](crate::VmCreateSpec::validate)).
//!
//! [`ApiCalls`] is the one wire-call counter every provider crate counts with, at the one place
//! it sends requests.

mod call;
mod counter;
mod instrument;
mod layered;
mod retry;
mod validate;

pub use call::{Args, Call, Layer, Next};
pub use counter::ApiCalls;
pub use instrument::{
    CallStats, InstrumentLayer, OperationStats, PROVIDER_CALL_SECONDS, PROVIDER_CALLS_TOTAL,
};
pub use layered::{LayerExt, Layered};
pub use retry::{RetryLayer, RetryPolicy};
pub use validate::ValidateLayer;
