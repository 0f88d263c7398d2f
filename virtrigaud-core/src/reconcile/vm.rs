//! The executor of a `VirtualMachine`: observe, plan ([`plan_vm`]), run one step through
//! the orchestrator and the shutdown engine, write the status.

use std::time::Duration;

use super::action::Action;
use super::vm_plan::{VmStep, plan_vm};
use crate::error::{Error, ErrorKind, Result};
use crate::model::{
    Condition, VMSnapshot, Validate, VirtualMachine, VirtualMachineStatus, VmResources,
    condition_types, set_condition,
};
use crate::orchestration::{
    EventReason, Orchestrator, ReconfigureOptions, now_rfc3339, observed_power_state,
};
use crate::vm::{VmDescription, VmId};

/// Reconciles `VirtualMachine` objects against one provider.
///
/// Each [`VmReconciler::reconcile`] does at most one step (a revert, a reconfiguration, a
/// start or a stop) and says when to come back. The object's status carries the observed
/// power state, the resources, `lastReconfigureTime` (from the reconfigure flow),
/// `observedGeneration` and the `Ready` condition, whose reason names the step under way.
///
/// A `preStop` hook needs a [`crate::shutdown::PreStopExecutor`] on the shutdown manager
/// (one that runs commands in the provider's guests). Without one, a stop that would run the
/// hook is refused with `Unsupported` naming `spec.lifecycle.preStop` and the VM is left
/// running, unless [`VmReconciler::skip_unrunnable_pre_stop`] says to stop without it.
#[derive(Debug, Clone)]
pub struct VmReconciler {
    orch: Orchestrator,
    step_requeue: Duration,
    busy_requeue: Duration,
    skip_unrunnable_pre_stop: bool,
}

impl VmReconciler {
    /// A reconciler running its steps through `orch` (share its shutdown manager with the
    /// rest of the program, so that its stops join theirs).
    pub fn new(orch: Orchestrator) -> Self {
        VmReconciler {
            orch,
            step_requeue: Duration::from_secs(1),
            busy_requeue: Duration::from_secs(2),
            skip_unrunnable_pre_stop: false,
        }
    }

    /// Stops a VM whose `preStop` cannot run (no executor) without the hook, with a
    /// `PreStopFailed` Warning event, instead of refusing the stop.
    pub fn skip_unrunnable_pre_stop(mut self) -> Self {
        self.skip_unrunnable_pre_stop = true;
        self
    }

    /// The orchestrator.
    pub fn orchestrator(&self) -> &Orchestrator {
        &self.orch
    }

    /// One pass for the VM `id` described by `vm`; `snapshots` are the `VMSnapshot` objects
    /// a `revertToRef` may name. A spec that fails validation changes nothing and fails
    /// with `InvalidSpec` naming the field.
    pub async fn reconcile(
        &self,
        id: &VmId,
        vm: &mut VirtualMachine,
        snapshots: &[VMSnapshot],
    ) -> Result<Action> {
        let ctx = |e: Error| e.with_operation("reconcile").with_resource(vm_name(id));
        vm.validate().map_err(|e| ctx(Error::from(e)))?;
        let desc = self.orch.provider().describe(id).await.map_err(ctx)?;
        let in_flight = self.orch.shutdown_manager().in_flight().contains(id);
        let plan = plan_vm(&vm.spec, &desc, in_flight);
        let generation = vm.metadata.generation;
        let Some(step) = plan.steps.first().cloned() else {
            let st = vm.status.get_or_insert_with(Default::default);
            observe(st, &desc, generation);
            ready(st, true, "Reconciled", "the VM matches its spec");
            return Ok(Action::await_change());
        };
        let reason = plan.reasons.first().cloned().unwrap_or_default();
        let step = match self.runnable(id, step) {
            Ok(step) => step,
            Err(e) => {
                let st = vm.status.get_or_insert_with(Default::default);
                observe(st, &desc, generation);
                ready(st, false, "PreStopUnsupported", e.message());
                return Err(ctx(e));
            }
        };
        if step == VmStep::AwaitShutdown {
            // The start waits for the shutdown under way; the spec keeps asking for it.
            let st = vm.status.get_or_insert_with(Default::default);
            observe(st, &desc, generation);
            ready(
                st,
                false,
                "WaitingForShutdown",
                "a start waits for the shutdown in flight",
            );
            return Ok(Action::requeue(self.busy_requeue));
        }
        tracing::debug!(vm = %id, step = step.name(), %reason, "reconcile step");
        let res = self.run(id, vm, snapshots, &step).await;
        let st = vm.status.get_or_insert_with(Default::default);
        if let Ok(d) = self.orch.provider().describe(id).await {
            observe(st, &d, generation);
        }
        match res {
            Ok(()) => {
                ready(
                    st,
                    false,
                    "Progressing",
                    format!("{}: {reason}", step.name()),
                );
                Ok(Action::requeue(self.step_requeue))
            }
            Err(e) => {
                ready(st, false, "StepFailed", format!("{}: {e}", step.name()));
                Err(ctx(e))
            }
        }
    }

    /// `step`, or an error when it would run a pre-stop hook nobody can run (or the step
    /// without it, when told to skip such hooks).
    fn runnable(&self, id: &VmId, step: VmStep) -> Result<VmStep> {
        let VmStep::Stop { mut policy } = step else {
            return Ok(step);
        };
        if policy.pre_stop.is_none() || self.orch.shutdown_manager().runs_pre_stop_hooks() {
            return Ok(VmStep::Stop { policy });
        }
        let why = format!(
            "spec.lifecycle.preStop: the {} provider's shutdown manager has no pre-stop \
             executor, so the hook cannot run in the guest",
            self.orch.provider().provider_type()
        );
        if !self.skip_unrunnable_pre_stop {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!("{why}; remove the hook or opt in to stopping without it"),
            ));
        }
        self.orch.emit_vm(
            id,
            EventReason::PreStopFailed,
            format!("{why}; stopped without it"),
        );
        policy.pre_stop = None;
        Ok(VmStep::Stop { policy })
    }

    async fn run(
        &self,
        id: &VmId,
        vm: &mut VirtualMachine,
        snapshots: &[VMSnapshot],
        step: &VmStep,
    ) -> Result<()> {
        match step {
            VmStep::Revert { .. } => self.orch.revert(id, vm, snapshots).await.map(|_| ()),
            VmStep::Reconfigure { change } => {
                let st = vm.status.get_or_insert_with(Default::default);
                self.orch
                    .reconfigure(id, change, &ReconfigureOptions::default(), st)
                    .await
                    .map(|_| ())
            }
            VmStep::AwaitShutdown => Ok(()),
            VmStep::Start => {
                self.orch.start_with_retry(id).await?;
                self.orch
                    .emit_vm(id, EventReason::VmStarted, "spec.powerState is On");
                Ok(())
            }
            VmStep::Stop { policy } => self.orch.stop(id, policy.clone()).await.map(|_| ()),
        }
    }

    /// Reconciles until the VM matches its spec, sleeping as each pass asks, at most
    /// `max_passes` passes (then `Timeout`).
    pub async fn run_until_settled(
        &self,
        id: &VmId,
        vm: &mut VirtualMachine,
        snapshots: &[VMSnapshot],
        max_passes: u32,
    ) -> Result<()> {
        for _ in 0..max_passes {
            match self.reconcile(id, vm, snapshots).await? {
                Action::AwaitChange => return Ok(()),
                Action::Requeue(after) => tokio::time::sleep(after).await,
            }
        }
        Err(
            Error::timeout(format!("not settled after {max_passes} passes"))
                .with_operation("reconcile")
                .with_resource(vm_name(id)),
        )
    }
}

fn vm_name(id: &VmId) -> String {
    id.to_string()
}

fn observe(st: &mut VirtualMachineStatus, d: &VmDescription, generation: Option<i64>) {
    st.id = Some(d.id.to_string());
    st.power_state = Some(observed_power_state(d.power_state));
    st.current_resources = Some(VmResources {
        cpu: Some(d.cpu),
        memory_mib: Some(d.memory_mib),
    });
    if generation.is_some() {
        st.observed_generation = generation;
    }
}

fn ready(st: &mut VirtualMachineStatus, ok: bool, reason: &str, message: impl Into<String>) {
    set_condition(
        &mut st.conditions,
        Condition::new(condition_types::READY, ok, reason, message.into()).at(now_rfc3339()),
    );
}
