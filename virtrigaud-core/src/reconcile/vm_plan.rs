//! The pure planner of a `VirtualMachine`: desired spec + observed description → steps.

use std::time::Duration;

use crate::model::{VirtualMachineSpec, VmPowerState};
use crate::orchestration::ResourceChange;
use crate::shutdown::{PreStopHook, ShutdownPolicy};
use crate::vm::{PowerState, VmDescription};

/// One step towards the spec, with the reason it is needed.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum VmStep {
    /// Revert to the `VMSnapshot` named by `spec.snapshot.revertToRef` (the power state
    /// from before is restored; the request is cleared when done).
    Revert {
        /// The `VMSnapshot` object's name.
        snapshot: String,
    },
    /// Apply a change of CPU, memory or disk sizes through the reconfigure plan.
    Reconfigure {
        /// What differs from the spec.
        change: ResourceChange,
    },
    /// Wait for the shutdown under way (the engine's or the guest's own) to end; the start
    /// the spec asks for comes after it, so it is queued, not lost.
    AwaitShutdown,
    /// Power the VM on.
    Start,
    /// Stop the VM through the shutdown engine: `powerState: OffGraceful` with the
    /// lifecycle's grace and preStop, or `Off` as grace 0 (which also cuts a graceful
    /// stop under way).
    Stop {
        /// The shutdown policy.
        policy: ShutdownPolicy,
    },
}

impl VmStep {
    /// A short name for events and logs.
    pub fn name(&self) -> &'static str {
        match self {
            VmStep::Revert { .. } => "revert",
            VmStep::Reconfigure { .. } => "reconfigure",
            VmStep::AwaitShutdown => "await_shutdown",
            VmStep::Start => "start",
            VmStep::Stop { policy } if policy.grace.is_zero() => "power_off",
            VmStep::Stop { .. } => "graceful_stop",
        }
    }
}

/// The steps that bring a VM to its spec, in order, each with its reason.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct VmPlan {
    /// The steps, in the order they run (one per reconcile pass).
    pub steps: Vec<VmStep>,
    /// One reason per step.
    pub reasons: Vec<String>,
}

impl VmPlan {
    fn push(&mut self, step: VmStep, reason: impl Into<String>) {
        self.steps.push(step);
        self.reasons.push(reason.into());
    }

    /// Whether the VM already matches its spec.
    pub fn is_settled(&self) -> bool {
        self.steps.is_empty()
    }
}

/// How much of `grace` a preStop hook may use: half, so that the guest is always asked to
/// shut down with at least the other half left before the hard power-off.
pub fn pre_stop_budget(grace: Duration) -> Duration {
    grace / 2
}

/// Plans the steps from `observed` to `spec`. Pure: no provider call.
///
/// Order: a requested revert first (it restores the power state it found). When the spec
/// wants the VM off, it is stopped before a resource change, so the change is applied
/// offline instead of through a power cycle; when it wants the VM on, the change comes
/// first (the reconfigure plan decides between online and a graceful power cycle) and the
/// start last. A VM being shut down by someone else is not stopped again by `OffGraceful`
/// (the stop joins the one in flight); `Off` cuts it with grace 0. A VM the spec wants on
/// while it is being shut down (`shutdown_in_flight`: the engine has a stop of it under way)
/// first waits for that shutdown, then starts.
pub fn plan_vm(
    spec: &VirtualMachineSpec,
    observed: &VmDescription,
    shutdown_in_flight: bool,
) -> VmPlan {
    let mut plan = VmPlan::default();
    if let Some(target) = spec
        .snapshot
        .as_ref()
        .and_then(|s| s.revert_to_ref.as_ref())
    {
        plan.push(
            VmStep::Revert {
                snapshot: target.name.clone(),
            },
            format!("spec.snapshot.revertToRef names {}", target.name),
        );
    }
    let change = ResourceChange::from_spec(spec, observed);
    let active = observed.power_state.is_active();
    let desired = spec.desired_power_state();
    let reconfigure = |plan: &mut VmPlan| {
        if !change.is_empty() {
            plan.push(
                VmStep::Reconfigure {
                    change: change.clone(),
                },
                describe_change(&change, observed),
            );
        }
    };
    match desired {
        VmPowerState::On => {
            if shutdown_in_flight || observed.power_state == PowerState::ShuttingDown {
                plan.push(
                    VmStep::AwaitShutdown,
                    "spec.powerState is On, and a shutdown is under way",
                );
                plan.push(VmStep::Start, "spec.powerState is On");
                return plan;
            }
            reconfigure(&mut plan);
            if !active {
                plan.push(
                    VmStep::Start,
                    format!("spec.powerState is On, the VM is {}", observed.power_state),
                );
            }
        }
        VmPowerState::Off | VmPowerState::OffGraceful => {
            if active {
                let grace = spec.graceful_shutdown_timeout();
                let policy = if desired == VmPowerState::Off || grace.is_zero() {
                    ShutdownPolicy::force()
                } else {
                    let mut p = ShutdownPolicy::with_grace(grace);
                    if let Some(argv) = spec.pre_stop_command() {
                        p = p.pre_stop(PreStopHook::new(argv.to_vec(), pre_stop_budget(grace)));
                    }
                    p
                };
                plan.push(
                    VmStep::Stop { policy },
                    format!(
                        "spec.powerState is {desired:?}, the VM is {}",
                        observed.power_state
                    ),
                );
            }
            reconfigure(&mut plan);
        }
    }
    plan
}

fn describe_change(change: &ResourceChange, d: &VmDescription) -> String {
    let mut parts = Vec::new();
    if let Some(cpu) = change.cpu {
        parts.push(format!("cpu {} -> {cpu}", d.cpu));
    }
    if let Some(mem) = change.memory_mib {
        parts.push(format!("memoryMiB {} -> {mem}", d.memory_mib));
    }
    for x in &change.disks {
        let now = d
            .disks
            .iter()
            .find(|c| c.name == x.name)
            .map_or_else(|| "missing".to_owned(), |c| format!("{} GiB", c.size_gib));
        parts.push(format!("disks.{}: {now} -> {} GiB", x.name, x.size_gib));
    }
    format!("the spec differs: {}", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{VmLifecycle, VmResources};
    use crate::vm::{OffReason, VmId};

    fn running() -> VmDescription {
        let mut d = VmDescription::new(VmId::new("vm"), "vm", PowerState::Running);
        d.cpu = 2;
        d.memory_mib = 2048;
        d
    }

    #[test]
    fn a_vm_that_matches_has_nothing_to_do() {
        assert!(plan_vm(&VirtualMachineSpec::default(), &running(), false).is_settled());
    }

    #[test]
    fn off_graceful_stops_with_the_lifecycle_grace_and_a_bounded_pre_stop() {
        let spec: VirtualMachineSpec = crate::model::from_yaml_str(
            "powerState: OffGraceful\nlifecycle:\n  gracefulShutdownTimeout: 120s\n  \
             preStop:\n    exec:\n      command: [/bin/sh, -c, sync]\n",
        )
        .unwrap();
        let plan = plan_vm(&spec, &running(), false);
        let [VmStep::Stop { policy }] = plan.steps.as_slice() else {
            panic!("{plan:?}");
        };
        assert_eq!(policy.grace, Duration::from_secs(120));
        let hook = policy.pre_stop.as_ref().unwrap();
        assert_eq!(hook.command, ["/bin/sh", "-c", "sync"]);
        assert_eq!(hook.budget, Duration::from_secs(60));
    }

    #[test]
    fn off_is_grace_zero_and_an_off_vm_is_not_stopped_again() {
        let spec = VirtualMachineSpec {
            power_state: Some(VmPowerState::Off),
            ..Default::default()
        };
        let plan = plan_vm(&spec, &running(), false);
        assert_eq!(plan.steps[0].name(), "power_off");
        let mut off = running();
        off.power_state = PowerState::Off(OffReason::Unknown);
        assert!(plan_vm(&spec, &off, false).is_settled());
    }

    #[test]
    fn a_change_to_a_vm_going_off_is_applied_after_the_stop() {
        let spec = VirtualMachineSpec {
            power_state: Some(VmPowerState::OffGraceful),
            resources: Some(VmResources {
                cpu: Some(4),
                memory_mib: None,
            }),
            lifecycle: Some(VmLifecycle::default()),
            ..Default::default()
        };
        let names: Vec<_> = plan_vm(&spec, &running(), false)
            .steps
            .iter()
            .map(VmStep::name)
            .collect();
        assert_eq!(names, ["graceful_stop", "reconfigure"]);
    }

    #[test]
    fn a_change_to_a_vm_that_stays_on_comes_before_its_start() {
        let spec = VirtualMachineSpec {
            resources: Some(VmResources {
                cpu: None,
                memory_mib: Some(4096),
            }),
            ..Default::default()
        };
        let mut off = running();
        off.power_state = PowerState::Off(OffReason::Unknown);
        let plan = plan_vm(&spec, &off, false);
        let names: Vec<_> = plan.steps.iter().map(VmStep::name).collect();
        assert_eq!(names, ["reconfigure", "start"]);
        assert_eq!(plan.reasons[0], "the spec differs: memoryMiB 2048 -> 4096");
    }

    #[test]
    fn a_start_during_a_shutdown_is_queued_behind_it() {
        let names: Vec<_> = plan_vm(&VirtualMachineSpec::default(), &running(), true)
            .steps
            .iter()
            .map(VmStep::name)
            .collect();
        assert_eq!(names, ["await_shutdown", "start"]);
    }
}
