//! Lifecycle actions of seed 004 (start, stop with `gracePeriodSeconds`, forced stop) and
//! the status query, on any provider.

use std::time::Duration;

use super::events::EventReason;
use super::metrics;
use super::orchestrator::{Orchestrator, now_rfc3339};
use crate::error::{Error, ErrorKind, Result};
use crate::model::{
    DEFAULT_STOP_GRACE_PERIOD, LifecycleAction, LifecycleActionKind, LifecyclePhase,
    LifecycleState, ObservedPowerState, RunStrategy, Validate,
};
use crate::shutdown::{ShutdownOutcome, ShutdownPolicy, ShutdownReport};
use crate::vm::{PowerState, VmId};

/// What [`Orchestrator::status`] found.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct VmStatusReport {
    /// The provider's power state.
    pub power_state: PowerState,
    /// The same as `status.powerState`.
    pub observed: ObservedPowerState,
    /// The same as `status.lifecycleState.state`.
    pub phase: LifecyclePhase,
    /// A configuration change waits for a power cycle.
    pub pending_power_cycle: bool,
}

/// Maps a provider power state to the model's observed state.
pub fn observed_power_state(p: PowerState) -> ObservedPowerState {
    match p {
        PowerState::Running | PowerState::Starting => ObservedPowerState::On,
        PowerState::ShuttingDown => ObservedPowerState::ShuttingDown,
        PowerState::Paused(_) => ObservedPowerState::Paused,
        PowerState::Off(_) => ObservedPowerState::Off,
        PowerState::Crashed => ObservedPowerState::Unknown,
    }
}

/// Maps a provider power state to a lifecycle phase.
pub fn lifecycle_phase(p: PowerState) -> LifecyclePhase {
    match p {
        PowerState::Running | PowerState::Paused(_) => LifecyclePhase::Running,
        PowerState::Starting => LifecyclePhase::Starting,
        PowerState::ShuttingDown => LifecyclePhase::Stopping,
        PowerState::Off(_) => LifecyclePhase::Stopped,
        PowerState::Crashed => LifecyclePhase::Failed,
    }
}

fn state(phase: LifecyclePhase, action: LifecycleActionKind) -> LifecycleState {
    // LifecycleState is non_exhaustive; build it through serde-free field init in-crate.
    LifecycleState {
        state: phase,
        last_action: Some(action),
        last_action_time: Some(now_rfc3339()),
    }
}

impl Orchestrator {
    /// The VM's power state, observed state and lifecycle phase.
    pub async fn status(&self, vm: &VmId) -> Result<VmStatusReport> {
        let d = self.provider.describe(vm).await?;
        Ok(VmStatusReport {
            power_state: d.power_state,
            observed: observed_power_state(d.power_state),
            phase: lifecycle_phase(d.power_state),
            pending_power_cycle: d.pending_power_cycle,
        })
    }

    /// Applies a seed-004 lifecycle action under `strategy`: `start` (refused for
    /// `Halted`; a running VM is left as is), `stop` through the shutdown engine with
    /// `gracePeriodSeconds` (default 30 s), or at once with `force`. Returns the new
    /// `status.lifecycleState`; the caller clears `spec.lifecycleAction`.
    pub async fn apply_action(
        &self,
        vm: &VmId,
        action: &LifecycleAction,
        strategy: RunStrategy,
    ) -> Result<LifecycleState> {
        let kind = match action.action {
            LifecycleActionKind::Start => "start",
            _ => "stop",
        };
        let res = self.apply_action_inner(vm, action, strategy).await;
        metrics::lifecycle_action(kind, self.ptype(), metrics::outcome_of(&res));
        if let Err(e) = &res {
            self.emit_vm(
                vm,
                EventReason::LifecycleActionFailed,
                format!("{kind}: {e}"),
            );
        }
        res
    }

    async fn apply_action_inner(
        &self,
        vm: &VmId,
        action: &LifecycleAction,
        strategy: RunStrategy,
    ) -> Result<LifecycleState> {
        let err = |kind: ErrorKind, msg: String| {
            Error::new(kind, msg)
                .with_provider(self.ptype())
                .with_operation("lifecycle_action")
                .with_resource(vm.to_string())
        };
        if let Err(errors) = action.validate() {
            return Err(err(ErrorKind::InvalidSpec, errors.to_string()));
        }
        if !strategy.allows(action.action) {
            return Err(err(
                ErrorKind::InvalidSpec,
                format!("action start is not allowed with runStrategy {strategy:?}"),
            ));
        }
        match action.action {
            LifecycleActionKind::Start => {
                let p = self.provider.power_state(vm).await?;
                if p.is_active() {
                    return Ok(state(lifecycle_phase(p), LifecycleActionKind::Start));
                }
                self.start_with_retry(vm).await?;
                self.emit_vm(vm, EventReason::VmStarted, "started");
                let p = self
                    .provider
                    .power_state(vm)
                    .await
                    .unwrap_or(PowerState::Starting);
                Ok(state(lifecycle_phase(p), LifecycleActionKind::Start))
            }
            _ => {
                let grace = action.grace_period(DEFAULT_STOP_GRACE_PERIOD);
                let policy = if action.force {
                    ShutdownPolicy::force()
                } else {
                    self.config.stop_policy.clone().grace(grace)
                };
                self.stop(vm, policy)
                    .await
                    .map_err(|e| err(e.kind(), e.message().to_owned()))?;
                Ok(state(LifecyclePhase::Stopped, LifecycleActionKind::Stop))
            }
        }
    }

    /// Stops `vm` through the shutdown engine under `policy` (joining a stop in flight) and
    /// reports it as events: the pre-stop hook's result (`PreStopFailed`, a Warning, when it
    /// did not exit with 0; the shutdown went on regardless) and `VMStopped`. A shutdown
    /// that did not leave the VM off is an error.
    pub async fn stop(&self, vm: &VmId, policy: ShutdownPolicy) -> Result<ShutdownReport> {
        let report = self.shutdown.shutdown(vm, policy).await?;
        if let Some(run) = &report.pre_stop {
            let reason = if run.is_ok() {
                EventReason::PreStopCompleted
            } else {
                EventReason::PreStopFailed
            };
            let tail = if run.is_ok() {
                ""
            } else {
                "; the shutdown went on with the rest of the grace"
            };
            self.emit_vm(vm, reason, format!("preStop {run}{tail}"));
        }
        match &report.outcome {
            o if o.is_off() => {
                self.emit_vm(
                    vm,
                    EventReason::VmStopped,
                    format!("stopped: {o} after {}", fmt_secs(report.elapsed)),
                );
                Ok(report)
            }
            ShutdownOutcome::Failed { error } => Err(Error::new(
                error.kind(),
                format!("the stop failed: {error}"),
            )),
            o => Err(Error::new(
                ErrorKind::Internal,
                format!("the stop ended with {o}"),
            )),
        }
    }
}

fn fmt_secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}
