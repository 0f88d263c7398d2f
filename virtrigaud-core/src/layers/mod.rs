//! Layers: what every provider would otherwise repeat, written once.
//!
//! In the spirit of OpenDAL's layers and tower: each layer is a [`Provider`](crate::Provider)
//! around a provider, so cross-cutting concerns (error context, tracing, metrics, call
//! counting, retry of idempotent reads, validation) live here and not in each backend.
//! [`ApiCalls`] is the one wire-call counter every provider crate counts with, at the one
//! place it sends requests.

mod counter;

pub use counter::ApiCalls;
