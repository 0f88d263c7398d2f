//! Shared validation in front of a provider.

use futures::future::BoxFuture;

use super::call::{Args, Call, Layer, Next};
use crate::error::Result;

/// Rejects a bad [`crate::VmCreateSpec`] or [`crate::ReconfigureRequest`] with an
/// `InvalidSpec` error naming the field, before the provider sees it (see [`crate::checks`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct ValidateLayer;

impl Layer for ValidateLayer {
    fn call<'a, T: Send + 'a>(
        &'a self,
        call: Call<'a>,
        next: Next<'a, T>,
    ) -> BoxFuture<'a, Result<T>> {
        Box::pin(async move {
            let checked = match call.args {
                Args::Create(spec) => spec.validate(),
                Args::Reconfigure(change) => change.validate(),
                _ => Ok(()),
            };
            checked.map_err(|e| e.context_for(call.provider, call.operation, call.resource))?;
            next.run().await
        })
    }
}
