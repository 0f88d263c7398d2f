//! The seed-004 lifecycle action of any object: `spec.lifecycleAction` is applied once,
//! written to `status.lifecycleState`, and cleared.

use super::action::Action;
use crate::error::{Error, Result};
use crate::model::{LifecycleAction, LifecycleState, RunStrategy, Validate};
use crate::orchestration::Orchestrator;
use crate::vm::VmId;

/// Applies one-shot lifecycle actions (`start`, `stop` with `gracePeriodSeconds`, `force`)
/// through the orchestrator and the shutdown engine.
///
/// The action is cleared only after it has been carried out, so a process that dies while
/// a stop is under way finds it again on restart and applies it again: the stop joins (or,
/// with the shutdown manager's journal, resumes) the grace it had, and a start of a running
/// VM changes nothing. An invalid action is left in place, untouched, and the error names
/// its field.
#[derive(Debug, Clone)]
pub struct LifecycleReconciler {
    orch: Orchestrator,
}

impl LifecycleReconciler {
    /// A reconciler over `orch`.
    pub fn new(orch: Orchestrator) -> Self {
        LifecycleReconciler { orch }
    }

    /// One pass: applies `action` (if any) to `vm` under `strategy`, records the outcome in
    /// `state` and clears `action`.
    pub async fn reconcile(
        &self,
        vm: &VmId,
        action: &mut Option<LifecycleAction>,
        state: &mut Option<LifecycleState>,
        strategy: RunStrategy,
    ) -> Result<Action> {
        let Some(a) = action.as_ref() else {
            return Ok(Action::await_change());
        };
        let mut errors = crate::model::SpecErrors::new();
        a.validate_at("spec.lifecycleAction", &mut errors);
        errors.into_result().map_err(|e| {
            Error::from(e)
                .with_operation("reconcile")
                .with_resource(vm.to_string())
        })?;
        let done = self.orch.apply_action(vm, a, strategy).await?;
        *state = Some(done);
        *action = None;
        Ok(Action::await_change())
    }
}
