//! What a layer sees of a call, and how it runs the next step.

use std::fmt::Debug;

use futures::future::BoxFuture;

use crate::clone::CloneOptions;
use crate::error::Result;
use crate::provider::{ReconfigureRequest, VmCreateSpec};
use crate::vm::VmId;

/// The request of a call, for layers that look at it (validation, say).
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum Args<'a> {
    /// Nothing a layer needs to see.
    None,
    /// [`crate::Provider::create`].
    Create(&'a VmCreateSpec),
    /// [`crate::Provider::reconfigure`].
    Reconfigure(&'a ReconfigureRequest),
    /// [`crate::Cloner::clone_vm`].
    Clone(&'a CloneOptions),
}

/// One call through a layer.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Call<'a> {
    /// The provider type of the wrapped provider.
    pub provider: &'static str,
    /// The trait method (`"power_state"`, `"create_snapshot"`, …).
    pub operation: &'static str,
    /// The VM (or for `create`, the new VM's name) concerned, if any.
    pub resource: Option<&'a str>,
    /// Whether running the call twice has the effect of running it once (reads, mostly):
    /// only these are retried by [`crate::layers::RetryLayer`].
    pub idempotent: bool,
    /// The request, where a layer may want it.
    pub args: Args<'a>,
}

impl<'a> Call<'a> {
    /// A call of `operation` on `resource`.
    pub fn new(provider: &'static str, operation: &'static str, resource: Option<&'a str>) -> Self {
        Call {
            provider,
            operation,
            resource,
            idempotent: false,
            args: Args::None,
        }
    }

    /// A call that changes nothing (or whose repetition changes nothing more).
    pub fn idempotent(mut self) -> Self {
        self.idempotent = true;
        self
    }

    /// With its request.
    pub fn with_args(mut self, args: Args<'a>) -> Self {
        self.args = args;
        self
    }

    pub(crate) fn on(provider: &'static str, operation: &'static str, vm: &'a VmId) -> Self {
        Call::new(provider, operation, Some(vm.as_str()))
    }
}

/// The rest of the stack: run it once with [`Next::run`], again to retry.
pub struct Next<'a, T> {
    step: Box<dyn Fn() -> BoxFuture<'a, Result<T>> + Send + Sync + 'a>,
}

impl<T> Debug for Next<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Next")
    }
}

impl<'a, T> Next<'a, T> {
    /// The step `f` (each call of `f` starts the call afresh).
    pub fn new(f: impl Fn() -> BoxFuture<'a, Result<T>> + Send + Sync + 'a) -> Self {
        Next { step: Box::new(f) }
    }

    /// Runs the rest of the stack once.
    pub fn run(&self) -> BoxFuture<'a, Result<T>> {
        (self.step)()
    }
}

/// A cross-cutting concern around every provider call. See [`crate::layers`].
pub trait Layer: Send + Sync + Debug + 'static {
    /// Runs `call` through `next`, adding this layer's behaviour.
    fn call<'a, T: Send + 'a>(
        &'a self,
        call: Call<'a>,
        next: Next<'a, T>,
    ) -> BoxFuture<'a, Result<T>>;
}
