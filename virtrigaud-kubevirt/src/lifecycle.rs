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
use virtrigaud_core::{ErrorKind, PowerState, Result, VmId};

use crate::error::err;
use crate::provider::{DEFAULT_GRACE_SECONDS, KubeVirtProvider};
use crate::state::{printable_status, vmi_phase};
use crate::types::condition_true;

/// The action verb.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum LifecycleVerb {
    /// Start the VM.
    Start,
    /// Stop the VM (gracefully unless `force`).
    Stop,
}

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

/// What [`KubeVirtProvider::lifecycle_action`] did.
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

impl KubeVirtProvider {
    /// Runs a seed-004 lifecycle action. `start` returns once requested (state `Starting`);
    /// `stop` waits (watch-based) until the VM is off: a graceful stop gets its grace period
    /// plus a small slack, after which it is forced.
    pub async fn lifecycle_action(
        &self,
        vm: &VmId,
        action: &LifecycleAction,
    ) -> Result<LifecycleOutcome> {
        const OP: &str = "lifecycle_action";
        let r = self.vm_ref(vm)?;
        let t0 = Instant::now();
        let (vmo, vmi) = self.read(&r, OP).await?;
        let state = Self::derive(&vmo, vmi.as_ref(), OP, &r)?;
        let done = |state, already, forced| {
            Ok(LifecycleOutcome {
                state,
                already,
                forced,
                elapsed: t0.elapsed(),
            })
        };
        match action.action {
            LifecycleVerb::Start => {
                if !state.is_off() {
                    return done(state.into(), true, false);
                }
                self.start_vm(&r, false, OP).await?;
                done(LifecycleState::Starting, false, false)
            }
            LifecycleVerb::Stop => {
                if state.is_off() {
                    return done(LifecycleState::Stopped, true, false);
                }
                let grace = if action.force {
                    0
                } else {
                    action
                        .grace_period_seconds
                        .or_else(|| {
                            vmi.as_ref()
                                .and_then(|v| v.spec.termination_grace_period_seconds)
                        })
                        .unwrap_or(DEFAULT_GRACE_SECONDS)
                };
                let Ok(grace_u) = u64::try_from(grace) else {
                    return Err(err(
                        ErrorKind::InvalidSpec,
                        OP,
                        &r.to_string(),
                        "gracePeriodSeconds must be >= 0",
                    ));
                };
                self.stop_vm(&r, Some(grace), OP).await?;
                let budget = Duration::from_secs(grace_u) + STOP_SLACK;
                match self
                    .wait_power_state(&r, PowerState::is_off, budget, OP)
                    .await
                {
                    Ok(_) => done(LifecycleState::Stopped, false, action.force),
                    Err(e) if e.kind() == ErrorKind::Timeout => {
                        tracing::warn!(vm = %r, grace, "graceful stop overran its grace period; forcing");
                        match self.stop_vm(&r, Some(0), OP).await {
                            Ok(_) => {}
                            Err(e) if e.kind() == ErrorKind::InvalidState => {}
                            Err(e) => return Err(e),
                        }
                        self.wait_power_state(
                            &r,
                            PowerState::is_off,
                            self.inner.config.operation_timeout,
                            OP,
                        )
                        .await?;
                        done(LifecycleState::Stopped, false, true)
                    }
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// The seed-004 status query.
    pub async fn status(&self, vm: &VmId) -> Result<LifecycleStatus> {
        let r = self.vm_ref(vm)?;
        let (vmo, vmi) = self.read(&r, "status").await?;
        let power_state = Self::derive(&vmo, vmi.as_ref(), "status", &r)?;
        let state = LifecycleState::from(power_state);
        let printable = printable_status(&vmo).map(str::to_owned);
        let consistent = match (printable.as_deref(), state) {
            (Some("Running" | "Migrating"), LifecycleState::Running) => true,
            (Some("Paused"), LifecycleState::Paused) => true,
            (Some("Stopping" | "Terminating"), LifecycleState::Stopping) => true,
            (
                Some("Starting" | "Provisioning" | "WaitingForVolumeBinding"),
                LifecycleState::Starting,
            ) => true,
            (Some(_), LifecycleState::Stopped) => !matches!(
                printable.as_deref(),
                Some("Running" | "Starting" | "Stopping" | "Paused")
            ),
            (None, LifecycleState::Stopped) => true,
            _ => false,
        };
        let st = vmo.status.as_ref();
        Ok(LifecycleStatus {
            state,
            power_state,
            printable_status: printable,
            vmi_phase: vmi.as_ref().map(|v| vmi_phase(v).to_owned()),
            ready: st.and_then(|s| s.ready).unwrap_or(false),
            needs_power_cycle: st.is_some_and(|s| condition_true(&s.conditions, "RestartRequired")),
            consistent,
        })
    }

    /// Restarts the VM (KubeVirt `restart`); `force` uses grace period 0.
    pub async fn restart(&self, vm: &VmId, force: bool) -> Result<()> {
        let r = self.vm_ref(vm)?;
        self.restart_vm(&r, force, "restart").await
    }

    /// Stops the VM with an explicit grace period (seconds; `None`: the VMI's own). Returns
    /// whether a stop was requested, an in-flight one shortened, or nothing changed.
    pub async fn stop_with_grace(
        &self,
        vm: &VmId,
        grace_seconds: Option<i64>,
    ) -> Result<crate::StopOutcome> {
        let r = self.vm_ref(vm)?;
        if grace_seconds.is_some_and(|g| g < 0) {
            return Err(err(
                ErrorKind::InvalidSpec,
                "stop",
                &r.to_string(),
                "grace period must be >= 0",
            ));
        }
        self.stop_vm(&r, grace_seconds, "stop").await
    }

    /// Waits, watch-based, until the VM's power state satisfies `pred` (bounded by `timeout`).
    pub async fn wait_for_power_state(
        &self,
        vm: &VmId,
        pred: impl Fn(&PowerState) -> bool + Send,
        timeout: Duration,
    ) -> Result<PowerState> {
        let r = self.vm_ref(vm)?;
        self.wait_power_state(&r, pred, timeout, "wait").await
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
