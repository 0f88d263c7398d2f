//! The wire-call counter shared by the provider crates.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

/// Counts requests a provider sends to its server: one `record()` at the one place the
/// provider talks to the wire (an HTTP send, a libvirt call), read with `get()`.
///
/// Clones share the count, so a client and the provider built on it see the same number.
///
/// ```
/// use virtrigaud_core::layers::ApiCalls;
/// let calls = ApiCalls::default();
/// let seen_by_client = calls.clone();
/// seen_by_client.record();
/// assert_eq!(calls.get(), 1);
/// ```
#[derive(Debug, Clone, Default)]
pub struct ApiCalls(Arc<AtomicU64>);

impl ApiCalls {
    /// A counter at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one request.
    pub fn record(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Requests counted so far.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}
