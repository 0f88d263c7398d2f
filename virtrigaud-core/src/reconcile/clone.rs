//! The `VMClone` reconciler: a pure planner ([`plan_clone`]) and an executor that clones
//! through the orchestrator.
//!
//! **Restart safety: claim, then make.** The first pass checks that no VM has the target's
//! name and records the claim (phase `Cloning`); the caller persists the status. The next
//! pass clones. A process that died mid-clone finds phase `Cloning` and a VM of the target's
//! name: it is this object's half-made clone (the claim proved the name free), possibly
//! uncustomised, so it is powered off and deleted, and the clone is made again. A VM of that
//! name that existed before the claim is never touched: the object fails with `Conflict`.

use std::time::Duration;

use super::action::Action;
use crate::error::{Error, ErrorKind, Result};
use crate::model::{ClonePhase, VMClone, Validate};
use crate::orchestration::{EventReason, ObjectKind, Orchestrator, set_clone_phase};
use crate::provider::{DeleteOptions, ListOptions, PowerOffOptions};
use crate::vm::{VmDescription, VmId};

/// The next step of a `VMClone`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum CloneStep {
    /// Record the claim on the target name (phase `Cloning`); no VM has it.
    Claim,
    /// Clone the source into the claimed name.
    Clone,
    /// Remove the half-made clone an interrupted pass left (ours by the claim).
    RollBack(VmId),
    /// A VM with the target's name exists and is not this object's: fail, touch nothing.
    Refuse,
    /// The clone this object made is gone from the provider.
    Lost,
}

/// Plans the next step of `clone` given the provider's VMs, with its reason, or `None` when
/// the object has settled (`Ready` with its VM present, or `Failed`). Pure.
pub fn plan_clone(clone: &VMClone, vms: &[VmDescription]) -> Option<(CloneStep, String)> {
    let target = clone.spec.target.name.as_str();
    let st = clone.status.as_ref();
    let named = vms.iter().find(|d| d.name == target);
    match st.and_then(|s| s.phase) {
        None | Some(ClonePhase::Pending) => Some(match named {
            Some(_) => (
                CloneStep::Refuse,
                format!("a VM named {target} already exists and is not this clone's"),
            ),
            None => (CloneStep::Claim, format!("clone {target} is asked for")),
        }),
        Some(ClonePhase::Cloning | ClonePhase::Customizing) => Some(match named {
            Some(d) => (
                CloneStep::RollBack(d.id.clone()),
                format!("an interrupted pass left a half-made {target} ({})", d.id),
            ),
            None => (CloneStep::Clone, format!("clone {target} is claimed")),
        }),
        Some(ClonePhase::Ready) => {
            let id = st.and_then(|s| s.target_id.as_deref());
            let present = vms
                .iter()
                .any(|d| Some(d.id.as_str()) == id || d.name == target);
            (!present).then(|| {
                (
                    CloneStep::Lost,
                    format!("the clone {target} is no longer on the provider"),
                )
            })
        }
        _ => None,
    }
}

/// Reconciles `VMClone` objects of one provider through an [`Orchestrator`].
///
/// The caller resolves `spec.sourceRef` to the source VM's id, passes the content of a
/// cloud-init `secretRef` if any, and persists the status after every pass.
#[derive(Debug, Clone)]
pub struct CloneReconciler {
    orch: Orchestrator,
}

impl CloneReconciler {
    /// A reconciler over `orch`.
    pub fn new(orch: Orchestrator) -> Self {
        CloneReconciler { orch }
    }

    /// One pass for `clone` of `source`.
    pub async fn reconcile(
        &self,
        source: &VmId,
        clone: &mut VMClone,
        secret_user_data: Option<&str>,
    ) -> Result<Action> {
        let resource = clone.metadata.name.clone();
        let ctx = |e: Error| {
            e.with_operation("reconcile")
                .with_resource(resource.clone())
        };
        clone.validate().map_err(|e| ctx(Error::from(e)))?;
        let vms = self
            .orch
            .provider()
            .list_vms(&ListOptions::default())
            .await
            .map_err(ctx)?;
        let Some((step, reason)) = plan_clone(clone, &vms) else {
            return Ok(Action::await_change());
        };
        tracing::debug!(clone = %resource, ?step, %reason, "reconcile step");
        match step {
            CloneStep::Claim => {
                set_clone_phase(clone, ClonePhase::Cloning, Some(reason));
                Ok(Action::requeue(Duration::ZERO))
            }
            CloneStep::Clone => {
                self.orch
                    .clone_vm(source, clone, secret_user_data)
                    .await
                    .map_err(ctx)?;
                Ok(Action::await_change())
            }
            CloneStep::RollBack(vm) => {
                let p = self.orch.provider();
                if p.power_state(&vm).await.map_err(ctx)?.is_active() {
                    p.power_off(&vm, &PowerOffOptions::default())
                        .await
                        .map_err(ctx)?;
                }
                let delete = DeleteOptions { delete_disks: true };
                p.delete(&vm, &delete).await.map_err(ctx)?;
                self.emit(&resource, EventReason::CloneCleanedUp, reason);
                Ok(Action::requeue(Duration::ZERO))
            }
            CloneStep::Refuse => {
                set_clone_phase(clone, ClonePhase::Failed, Some(reason.clone()));
                self.emit(&resource, EventReason::CloneFailed, reason.clone());
                Err(ctx(Error::new(ErrorKind::Conflict, reason)))
            }
            CloneStep::Lost => {
                set_clone_phase(clone, ClonePhase::Failed, Some(reason.clone()));
                self.emit(&resource, EventReason::CloneFailed, reason);
                Ok(Action::await_change())
            }
        }
    }

    fn emit(&self, name: &str, reason: EventReason, message: String) {
        self.orch
            .events()
            .emit(ObjectKind::VMClone, name, reason, message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::from_yaml_str;
    use crate::vm::PowerState;

    fn clone(status: &str) -> VMClone {
        from_yaml_str(&format!(
            "apiVersion: infra.virtrigaud.io/v1beta1\nkind: VMClone\nmetadata: {{name: c}}\n\
             spec: {{sourceRef: {{name: golden}}, target: {{name: web-2}}}}\n{status}"
        ))
        .unwrap()
    }

    fn vm(id: &str, name: &str) -> VmDescription {
        VmDescription::new(VmId::new(id), name, PowerState::Running)
    }

    #[test]
    fn the_target_is_claimed_first_and_a_half_made_one_is_rolled_back() {
        assert_eq!(plan_clone(&clone(""), &[]).unwrap().0, CloneStep::Claim);
        let theirs = vm("vm-9", "web-2");
        assert_eq!(
            plan_clone(&clone(""), std::slice::from_ref(&theirs))
                .unwrap()
                .0,
            CloneStep::Refuse
        );
        let claimed = clone("status: {phase: Cloning}\n");
        assert_eq!(plan_clone(&claimed, &[]).unwrap().0, CloneStep::Clone);
        assert_eq!(
            plan_clone(&claimed, &[theirs]).unwrap().0,
            CloneStep::RollBack(VmId::new("vm-9"))
        );
        let ready = clone("status: {phase: Ready, targetId: vm-9}\n");
        assert!(plan_clone(&ready, &[vm("vm-9", "web-2")]).is_none());
        assert_eq!(plan_clone(&ready, &[]).unwrap().0, CloneStep::Lost);
    }
}
