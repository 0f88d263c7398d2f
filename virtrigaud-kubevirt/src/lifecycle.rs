//! Seed 004's lifecycle action (`start`, `stop` with `gracePeriodSeconds`, `force`) and status
//! query, as provider-level methods.
//!
//! ```yaml
//! lifecycleAction:
//!   action: stop
//!   gracePeriodSeconds: 60   # default: the VMI's terminationGracePeriodSeconds (KubeVirt: 30)
//!   force: false             # true: stop with grace period 0
//! ```

use std::time::Duration;

use tokio::time::Instant;

use serde::{Deserialize, Serialize};
use virtrigaud_core::{Error, ErrorKind, PowerState, Result, ResultExt};

use virtrigaud_core::model::LifecycleActionKind;

use crate::PROVIDER_TYPE;
use crate::client::{Connection, derive};
use crate::config::DEFAULT_GRACE_SECONDS;
use crate::id::VmRef;
use crate::state::{printable_status, vmi_phase};
use crate::stop::StopOutcome;
use crate::types::{VirtualMachineInstance, condition_true};

/// The action verb: core's [`LifecycleActionKind`] (one type for it in the workspace).
pub type LifecycleVerb = LifecycleActionKind;

/// A lifecycle action (seed 004 `LifecycleActionSpec`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct LifecycleAction {
    /// `start` or `stop`.
    pub action: LifecycleVerb,
    /// Stop at once (grace period 0).
    #[serde(default)]
    pub force: bool,
    /// Grace period for a graceful stop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_period_seconds: Option<i64>,
}

impl LifecycleAction {
    /// `start`.
    pub fn start() -> Self {
        LifecycleAction {
            action: LifecycleVerb::Start,
            force: false,
            grace_period_seconds: None,
        }
    }
    /// A graceful `stop` (with the VM's own grace period unless set).
    pub fn stop(grace_period_seconds: Option<i64>) -> Self {
        LifecycleAction {
            action: LifecycleVerb::Stop,
            force: false,
            grace_period_seconds,
        }
    }
    /// A forced `stop`.
    pub fn force_stop() -> Self {
        LifecycleAction {
            action: LifecycleVerb::Stop,
            force: true,
            grace_period_seconds: None,
        }
    }
}

/// The seed's lifecycle state names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum LifecycleState {
    /// Starting.
    Starting,
    /// Running.
    Running,
    /// Paused.
    Paused,
    /// Shutting down.
    Stopping,
    /// Stopped.
    Stopped,
}

impl From<PowerState> for LifecycleState {
    fn from(p: PowerState) -> Self {
        match p {
            PowerState::Running => LifecycleState::Running,
            PowerState::Starting => LifecycleState::Starting,
            PowerState::Paused(_) => LifecycleState::Paused,
            PowerState::ShuttingDown | PowerState::Crashed => LifecycleState::Stopping,
            _ => LifecycleState::Stopped,
        }
    }
}

/// What [`crate::KubeVirtProvider::lifecycle_action`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LifecycleOutcome {
    /// The state reached (`Starting` after a start request; `Stopped` after a stop).
    pub state: LifecycleState,
    /// The VM was already in the requested state: nothing was sent.
    pub already: bool,
    /// A graceful stop did not finish within grace + slack and was forced (grace 0).
    pub forced: bool,
    /// Time taken.
    pub elapsed: Duration,
}

/// The status query's answer: both KubeVirt views and the combined state.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LifecycleStatus {
    /// The combined state.
    pub state: LifecycleState,
    /// The power state it derives from.
    pub power_state: PowerState,
    /// The VM's `status.printableStatus`.
    pub printable_status: Option<String>,
    /// The VMI's `status.phase` (`None`: no VMI).
    pub vmi_phase: Option<String>,
    /// The VM reports ready.
    pub ready: bool,
    /// `RestartRequired`: a change waits for a power cycle.
    pub needs_power_cycle: bool,
    /// Whether the VM's printable status agrees with the combined state (false while
    /// virt-controller catches up with virt-handler).
    pub consistent: bool,
}

/// Extra time allowed after a grace period before the provider forces a stop itself (KubeVirt
/// forces at the deadline; this only covers its reaction time).
const STOP_SLACK: Duration = Duration::from_secs(10);

impl Connection {
    /// Runs a seed-004 lifecycle action (see [`crate::KubeVirtProvider::lifecycle_action`]).
    pub(crate) async fn lifecycle_action(
        &self,
        r: &VmRef,
        action: &LifecycleAction,
    ) -> Result<LifecycleOutcome> {
        const OP: &str = "lifecycle_action";
        let t0 = Instant::now();
        let (vmo, vmi) = self.read(r, OP).await?;
        let state = derive(&vmo, vmi.as_ref(), OP, r)?;
        let (state, already, forced) = match action.action {
            LifecycleVerb::Start if !state.is_off() => (state.into(), true, false),
            LifecycleVerb::Start => {
                self.start_vm(r, false, OP).await?;
                (LifecycleState::Starting, false, false)
            }
            _ if state.is_off() => (LifecycleState::Stopped, true, false),
            _ => {
                let forced = self.stop_and_wait(r, action, vmi.as_ref(), OP).await?;
                (LifecycleState::Stopped, false, forced)
            }
        };
        Ok(LifecycleOutcome {
            state,
            already,
            forced,
            elapsed: t0.elapsed(),
        })
    }

    /// The stop of a lifecycle action: waits (watch-based) until the VM is off; a graceful stop
    /// gets its grace period plus [`STOP_SLACK`], after which it is forced. Returns whether
    /// the stop was forced.
    async fn stop_and_wait(
        &self,
        r: &VmRef,
        action: &LifecycleAction,
        vmi: Option<&VirtualMachineInstance>,
        op: &'static str,
    ) -> Result<bool> {
        let grace = if action.force {
            0
        } else {
            action
                .grace_period_seconds
                .or_else(|| vmi.and_then(|v| v.spec.termination_grace_period_seconds))
                .unwrap_or(DEFAULT_GRACE_SECONDS)
        };
        let grace_u = u64::try_from(grace)
            .map_err(|_| Error::invalid_spec("gracePeriodSeconds must be >= 0"))
            .ctx(PROVIDER_TYPE, op, &r.to_string())?;
        self.stop_vm(r, Some(grace), op).await?;
        let budget = Duration::from_secs(grace_u) + STOP_SLACK;
        match self
            .wait_power_state(r, PowerState::is_off, budget, op)
            .await
        {
            Ok(_) => Ok(action.force),
            Err(e) if e.kind() == ErrorKind::Timeout => {
                tracing::warn!(vm = %r, grace, "graceful stop overran its grace period; forcing");
                match self.stop_vm(r, Some(0), op).await {
                    Ok(_) => {}
                    Err(e) if e.kind() == ErrorKind::InvalidState => {}
                    Err(e) => return Err(e),
                }
                self.wait_power_state(r, PowerState::is_off, self.config.operation_timeout, op)
                    .await?;
                Ok(true)
            }
            Err(e) => Err(e),
        }
    }

    /// The seed-004 status query.
    pub(crate) async fn status(&self, r: &VmRef) -> Result<LifecycleStatus> {
        let (vmo, vmi) = self.read(r, "status").await?;
        let power_state = derive(&vmo, vmi.as_ref(), "status", r)?;
        let state = LifecycleState::from(power_state);
        let printable = printable_status(&vmo).map(str::to_owned);
        let st = vmo.status.as_ref();
        Ok(LifecycleStatus {
            state,
            power_state,
            consistent: consistent(printable.as_deref(), state),
            printable_status: printable,
            vmi_phase: vmi.as_ref().map(|v| vmi_phase(v).to_owned()),
            ready: st.and_then(|s| s.ready).unwrap_or(false),
            needs_power_cycle: st.is_some_and(|s| condition_true(&s.conditions, "RestartRequired")),
        })
    }

    /// Stops the VM with an explicit grace period (`None`: the VMI's own; negative: refused).
    pub(crate) async fn stop_with_grace(
        &self,
        r: &VmRef,
        grace_seconds: Option<i64>,
    ) -> Result<StopOutcome> {
        if grace_seconds.is_some_and(|g| g < 0) {
            return Err(Error::invalid_spec("grace period must be >= 0")).ctx(
                PROVIDER_TYPE,
                "stop",
                &r.to_string(),
            );
        }
        self.stop_vm(r, grace_seconds, "stop").await
    }
}

/// Whether the VM's printable status agrees with the combined state.
fn consistent(printable: Option<&str>, state: LifecycleState) -> bool {
    match (printable, state) {
        (Some("Running" | "Migrating"), LifecycleState::Running) => true,
        (Some("Paused"), LifecycleState::Paused) => true,
        (Some("Stopping" | "Terminating"), LifecycleState::Stopping) => true,
        (
            Some("Starting" | "Provisioning" | "WaitingForVolumeBinding"),
            LifecycleState::Starting,
        ) => true,
        (Some(_), LifecycleState::Stopped) => !matches!(
            printable,
            Some("Running" | "Starting" | "Stopping" | "Paused")
        ),
        (None, LifecycleState::Stopped) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_yaml_shape_parses() {
        let a: LifecycleAction =
            serde_json::from_str(r#"{"action":"stop","gracePeriodSeconds":60}"#).expect("parse");
        assert_eq!(a, LifecycleAction::stop(Some(60)));
        let a: LifecycleAction =
            serde_json::from_str(r#"{"action":"stop","force":true}"#).expect("parse");
        assert_eq!(a, LifecycleAction::force_stop());
        let a: LifecycleAction = serde_json::from_str(r#"{"action":"start"}"#).expect("parse");
        assert_eq!(a, LifecycleAction::start());
        assert!(serde_json::from_str::<LifecycleAction>(r#"{"action":"reboot"}"#).is_err());
    }
}
