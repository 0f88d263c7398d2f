//! Waiting for a VM's power state: one primitive and named conditions, in the manner of
//! kube-runtime's `await_condition`.
//!
//! [`await_power_state`] subscribes to the provider's watch when it has one (re-reading now and
//! then, so a lost event costs a little time, not the wait), and polls otherwise. It adds no
//! timeout of its own: wrap it in [`tokio::time::timeout`].
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap().block_on(async {
//! use std::time::Duration;
//! use virtrigaud_core::sim::{GuestBehavior, Simulator};
//! use virtrigaud_core::wait::{await_power_state, conditions};
//! use virtrigaud_core::{Provider, ShutdownChannel, ShutdownRequestOptions};
//!
//! let sim = Simulator::new();
//! let vm = sim.add_vm("web-1", GuestBehavior::cooperative().acpi_after(Duration::from_secs(3)));
//! sim.request_shutdown(&vm, ShutdownChannel::Acpi, &ShutdownRequestOptions::default()).await?;
//! let off = tokio::time::timeout(Duration::from_secs(10), await_power_state(&sim, &vm, conditions::is_off()))
//!     .await
//!     .expect("off within 10 s")?;
//! assert!(off.is_off());
//! # Ok::<(), virtrigaud_core::Error>(()) }).unwrap();
//! ```

use std::time::Duration;

use futures::StreamExt;

use crate::error::Result;
use crate::provider::Provider;
use crate::vm::{PowerState, VmId};

/// How often the state is read without a watch.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// How often the state is re-read while a watch is open (a lost event costs at most this).
pub const WATCH_RECHECK: Duration = Duration::from_secs(2);

/// A condition on a power state.
pub trait Condition {
    /// Whether `state` satisfies the condition.
    fn matches(&self, state: &PowerState) -> bool;
}

impl<F: Fn(&PowerState) -> bool> Condition for F {
    fn matches(&self, state: &PowerState) -> bool {
        self(state)
    }
}

/// Named conditions.
pub mod conditions {
    use super::Condition;
    use crate::vm::PowerState;

    /// Off, for any reason.
    pub fn is_off() -> impl Condition + Send + Sync {
        |s: &PowerState| s.is_off()
    }

    /// Running.
    pub fn is_running() -> impl Condition + Send + Sync {
        |s: &PowerState| *s == PowerState::Running
    }

    /// Active: running, shutting down or paused (see [`PowerState::is_active`]).
    pub fn is_active() -> impl Condition + Send + Sync {
        |s: &PowerState| s.is_active()
    }
}

/// Waits until `vm`'s power state satisfies `cond`, and returns that state.
///
/// Errors from the provider end the wait (a VM deleted meanwhile is `NotFound`).
pub async fn await_power_state(
    provider: &dyn Provider,
    vm: &VmId,
    cond: impl Condition,
) -> Result<PowerState> {
    let mut watch = provider.watch_power_state(vm).await?;
    loop {
        let state = provider.power_state(vm).await?;
        if cond.matches(&state) {
            return Ok(state);
        }
        let Some(stream) = watch.as_mut() else {
            tokio::time::sleep(POLL_INTERVAL).await;
            continue;
        };
        match tokio::time::timeout(WATCH_RECHECK, stream.next()).await {
            Ok(Some(Ok(pushed))) if cond.matches(&pushed) => return Ok(pushed),
            Ok(None) | Ok(Some(Err(_))) => watch = None,
            _ => {}
        }
    }
}
