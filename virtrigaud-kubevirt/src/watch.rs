//! Watches: the power-state stream behind `watch_power_state` and the one watch-based wait
//! for a power state, both over the namespace's shared watches ([`crate::shared`]).

use std::time::Duration;

use futures::{StreamExt, TryFutureExt};
use virtrigaud_core::{Error, PowerState, Result, ResultExt};

use crate::PROVIDER_TYPE;
use crate::client::{Connection, derive};
use crate::id::VmRef;
use crate::shared::Subscription;

impl Connection {
    /// Power states of `r` from now on (deduplicated), from the namespace's shared watches.
    /// Subscribes first, then reads the VM and its VMI (the baseline: nothing older than this
    /// read is ever pushed, and the baseline's state is not repeated). Yields `NotFound` and
    /// ends when the VM is deleted. `seen`: whether the baseline's own state counts as already
    /// seen (`false`: the first state is pushed too).
    pub(crate) async fn subscribe_power_state(
        &self,
        r: &VmRef,
        seen: bool,
        op: &'static str,
    ) -> Result<(Option<PowerState>, Subscription)> {
        let sub = self.shared.subscribe(self, r);
        let (vm, vmi) = self.read(r, op).await?;
        let baseline = derive(&vm, vmi.as_ref(), op, r).ok();
        sub.anchor(&vm, vmi.as_ref(), baseline.filter(|_| seen));
        Ok((baseline, sub))
    }

    /// Waits (watch-based, no polling) until the power state satisfies `pred`.
    pub(crate) async fn wait_power_state(
        &self,
        r: &VmRef,
        pred: impl Fn(&PowerState) -> bool,
        timeout: Duration,
        op: &'static str,
    ) -> Result<PowerState> {
        let res = r.to_string();
        let fut = async {
            let (_, mut s) = self.subscribe_power_state(r, false, op).await?;
            while let Some(item) = s.next().await {
                let st = item?;
                if pred(&st) {
                    return Ok(st);
                }
            }
            Err(Error::unavailable("watch ended"))
        };
        tokio::time::timeout(timeout, fut)
            .unwrap_or_else(|_| Err(Error::timeout(format!("not done within {timeout:?}"))))
            .await
            .ctx(PROVIDER_TYPE, op, &res)
    }
}
