//! Readiness gates: power on, then an optional asynchronous health probe.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;

use crate::vm::VmDescription;

/// What a health probe says about a running VM.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Health {
    /// Ready to serve.
    Ready,
    /// Not ready yet (booting, warming up): the rollout waits.
    NotReady(String),
    /// The gate failed: the rollout pauses until the VM recovers or the template changes.
    Failed(String),
}

/// Checks whether a running VM is ready (an HTTP or TCP check, an agent ping, …).
///
/// Called on every reconcile pass for every running member, concurrently; keep it bounded in
/// time (wrap it in a timeout).
#[async_trait]
pub trait HealthProbe: Send + Sync {
    /// Checks `vm`.
    async fn check(&self, vm: &VmDescription) -> Health;
}

/// A [`HealthProbe`] from an async closure (see [`probe_fn`]).
pub struct ProbeFn<F>(F);

impl<F> fmt::Debug for ProbeFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ProbeFn")
    }
}

#[async_trait]
impl<F, Fut> HealthProbe for ProbeFn<F>
where
    F: Fn(VmDescription) -> Fut + Send + Sync,
    Fut: Future<Output = Health> + Send,
{
    async fn check(&self, vm: &VmDescription) -> Health {
        (self.0)(vm.clone()).await
    }
}

/// A health probe from an async closure.
///
/// ```
/// use virtrigaud_core::vmset::{Health, probe_fn};
/// let probe = probe_fn(|vm| async move {
///     if vm.name.ends_with("-13") { Health::Failed("HTTP 500".into()) } else { Health::Ready }
/// });
/// # let _ = probe;
/// ```
pub fn probe_fn<F, Fut>(f: F) -> Arc<dyn HealthProbe>
where
    F: Fn(VmDescription) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Health> + Send + 'static,
{
    Arc::new(ProbeFn(f))
}
