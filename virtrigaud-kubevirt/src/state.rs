//! Reading KubeVirt state: run strategies and the power state derived from a VM and its VMI.
//!
//! A VirtualMachine's `status.printableStatus` (written by virt-controller) and its
//! VirtualMachineInstance's `status.phase` (written by virt-handler) are updated by different
//! controllers and briefly disagree. [`power_state_of`] combines them so that the answer is
//! always conservative: a VM is reported off only when no instance can still run a guest.
//!
//! | VMI | VM says | power state |
//! |-----|---------|-------------|
//! | none | wants to run (`Always`/`RerunOnFailure`/`Once`), `Starting`/`Provisioning`/… | `Starting` |
//! | none | `CrashLoopBackOff` | `Off(Crashed)` |
//! | none | `ErrorUnschedulable`, `ErrImagePull`, … | `Off(Failed)` |
//! | none | anything else | `Off(Unknown)` |
//! | `Succeeded` | any | `Off(GuestShutdown)` |
//! | `Failed` | any | `Off(Failed)` |
//! | deleting, or VM `Stopping`/`Terminating`, or run strategy `Halted` | any | `ShuttingDown` |
//! | `Pending`/`Scheduling`/`Scheduled`/unset | any | `Starting` |
//! | `Running` with `Paused` condition (or VM `Paused`) | any | `Paused` |
//! | `Running` | any | `Running` |
//! | `Unknown` | any | error `Unavailable` (node lost: KubeVirt itself cannot tell) |

use std::fmt;

use virtrigaud_core::{OffReason, PauseReason, PowerState};

use crate::types::{VirtualMachine, VirtualMachineInstance, condition_true, find_condition};

/// A KubeVirt run strategy.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RunStrategy {
    /// Keep a VMI running; restart it whatever happens.
    Always,
    /// Restart the VMI only when it fails.
    RerunOnFailure,
    /// Start and stop only on request (`status.stateChangeRequests`).
    Manual,
    /// No VMI.
    Halted,
    /// Run the VMI once.
    Once,
    /// Any other value (kept verbatim).
    Other(String),
}

impl RunStrategy {
    /// Parses a `spec.runStrategy` value.
    pub fn parse(s: &str) -> Self {
        match s {
            "Always" => RunStrategy::Always,
            "RerunOnFailure" => RunStrategy::RerunOnFailure,
            "Manual" => RunStrategy::Manual,
            "Halted" => RunStrategy::Halted,
            "Once" => RunStrategy::Once,
            other => RunStrategy::Other(other.to_owned()),
        }
    }
    /// The API value.
    pub fn as_str(&self) -> &str {
        match self {
            RunStrategy::Always => "Always",
            RunStrategy::RerunOnFailure => "RerunOnFailure",
            RunStrategy::Manual => "Manual",
            RunStrategy::Halted => "Halted",
            RunStrategy::Once => "Once",
            RunStrategy::Other(s) => s,
        }
    }
    /// The strategy of `vm`: `spec.runStrategy`, else the deprecated `spec.running`
    /// (`true` = Always, `false`/unset = Halted), as KubeVirt reads it.
    pub fn of(vm: &VirtualMachine) -> Self {
        match (&vm.spec.run_strategy, vm.spec.running) {
            (Some(s), _) => RunStrategy::parse(s),
            (None, Some(true)) => RunStrategy::Always,
            _ => RunStrategy::Halted,
        }
    }
    /// Whether virt-controller creates a VMI for this strategy without a start request.
    pub fn runs_by_itself(&self) -> bool {
        matches!(
            self,
            RunStrategy::Always | RunStrategy::RerunOnFailure | RunStrategy::Once
        )
    }
}

impl fmt::Display for RunStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The VMI phase, if any.
pub fn vmi_phase(vmi: &VirtualMachineInstance) -> &str {
    vmi.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// Whether the VMI has reached a final phase (`Succeeded` or `Failed`).
pub fn vmi_is_final(vmi: &VirtualMachineInstance) -> bool {
    matches!(vmi_phase(vmi), "Succeeded" | "Failed")
}

/// Whether an instance exists that is not final (KubeVirt's "VM is running" for start/stop checks).
pub fn vmi_active(vmi: Option<&VirtualMachineInstance>) -> bool {
    vmi.is_some_and(|v| !vmi_is_final(v))
}

/// The VM's `printableStatus`.
pub fn printable_status(vm: &VirtualMachine) -> Option<&str> {
    vm.status
        .as_ref()
        .and_then(|s| s.printable_status.as_deref())
}

/// Whether a stop is in flight: the instance is being deleted, virt-controller reports
/// `Stopping`/`Terminating`, the run strategy is `Halted` while an instance still exists, or a
/// stop request is pending.
pub fn stop_in_flight(vm: &VirtualMachine, vmi: Option<&VirtualMachineInstance>) -> bool {
    let Some(vmi) = vmi.filter(|v| !vmi_is_final(v)) else {
        return false;
    };
    vmi.metadata.deletion_timestamp.is_some()
        || matches!(printable_status(vm), Some("Stopping" | "Terminating"))
        || RunStrategy::of(vm) == RunStrategy::Halted
        || pending_stop_request(vm)
}

/// Whether `status.stateChangeRequests` holds a Stop request.
pub fn pending_stop_request(vm: &VirtualMachine) -> bool {
    vm.status
        .as_ref()
        .and_then(|s| s.state_change_requests.as_ref())
        .is_some_and(|r| r.iter().any(is_stop_request))
}

/// Whether one `status.stateChangeRequests` entry is a Stop request.
pub(crate) fn is_stop_request(req: &serde_json::Value) -> bool {
    req.get("action").and_then(serde_json::Value::as_str) == Some("Stop")
}

/// Why the power state cannot be derived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateError {
    /// The VMI phase is `Unknown` (its node is unreachable).
    UnknownPhase,
}

/// Derives the power state from the VM and its VMI (see the module table).
pub fn power_state_of(
    vm: &VirtualMachine,
    vmi: Option<&VirtualMachineInstance>,
) -> Result<PowerState, StateError> {
    let printable = printable_status(vm).unwrap_or("");
    let Some(vmi) = vmi else {
        return Ok(match printable {
            "CrashLoopBackOff" => PowerState::Off(OffReason::Crashed),
            "ErrorUnschedulable"
            | "ErrImagePull"
            | "ImagePullBackOff"
            | "ErrorPvcNotFound"
            | "DataVolumeError"
            | "ErrorDataVolumeNotFound"
            | "FailedUnschedulable" => PowerState::Off(OffReason::Failed),
            "Starting" | "Provisioning" | "WaitingForVolumeBinding" | "Stopped" | ""
                if RunStrategy::of(vm).runs_by_itself() && !vm_run_completed(vm) =>
            {
                PowerState::Starting
            }
            _ => PowerState::Off(OffReason::Unknown),
        });
    };
    let phase = vmi_phase(vmi);
    match phase {
        "Succeeded" => return Ok(PowerState::Off(OffReason::GuestShutdown)),
        "Failed" => return Ok(PowerState::Off(OffReason::Failed)),
        "Unknown" => return Err(StateError::UnknownPhase),
        _ => {}
    }
    if stop_in_flight(vm, Some(vmi)) {
        return Ok(PowerState::ShuttingDown);
    }
    match phase {
        "Running" => {
            let conds = vmi
                .status
                .as_ref()
                .map(|s| s.conditions.as_slice())
                .unwrap_or_default();
            if condition_true(conds, "Paused") || printable == "Paused" {
                let reason = match find_condition(conds, "Paused").and_then(|c| c.reason.as_deref())
                {
                    Some("PausedByUser") => PauseReason::User,
                    Some(_) => PauseReason::Hypervisor,
                    None => PauseReason::Unknown,
                };
                Ok(PowerState::Paused(reason))
            } else {
                Ok(PowerState::Running)
            }
        }
        _ => Ok(PowerState::Starting),
    }
}

/// `Once` VMs that already ran to completion do not start again.
fn vm_run_completed(vm: &VirtualMachine) -> bool {
    RunStrategy::of(vm) == RunStrategy::Once
        && printable_status(vm) == Some("Stopped")
        && vm.status.as_ref().and_then(|s| s.created) == Some(false)
        && vm.status.as_ref().is_some_and(|s| !s.conditions.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{VirtualMachineInstanceStatus, VirtualMachineStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn vm(rs: &str, printable: &str) -> VirtualMachine {
        let mut vm = VirtualMachine::new("v", Default::default());
        vm.spec.run_strategy = Some(rs.into());
        vm.status = Some(VirtualMachineStatus {
            printable_status: Some(printable.into()),
            ..Default::default()
        });
        vm
    }
    fn vmi(phase: &str) -> VirtualMachineInstance {
        let mut v = VirtualMachineInstance::new("v", Default::default());
        v.status = Some(VirtualMachineInstanceStatus {
            phase: Some(phase.into()),
            ..Default::default()
        });
        v
    }

    #[test]
    fn vm_and_vmi_disagreements_resolve_conservatively() {
        assert_eq!(
            power_state_of(&vm("Always", "Running"), Some(&vmi("Running"))),
            Ok(PowerState::Running)
        );
        assert_eq!(
            power_state_of(&vm("Always", "Stopping"), Some(&vmi("Running"))),
            Ok(PowerState::ShuttingDown)
        );
        // run strategy already Halted but virt-controller has not caught up yet
        assert_eq!(
            power_state_of(&vm("Halted", "Running"), Some(&vmi("Running"))),
            Ok(PowerState::ShuttingDown)
        );
        let mut deleting = vmi("Running");
        deleting.metadata.deletion_timestamp = Some(Time(Default::default()));
        assert_eq!(
            power_state_of(&vm("Always", "Running"), Some(&deleting)),
            Ok(PowerState::ShuttingDown)
        );
        assert_eq!(
            power_state_of(&vm("Halted", "Stopped"), None),
            Ok(PowerState::Off(OffReason::Unknown))
        );
        // VM still says Running, VMI already gone or final: off
        assert_eq!(
            power_state_of(&vm("Halted", "Running"), None),
            Ok(PowerState::Off(OffReason::Unknown))
        );
        assert_eq!(
            power_state_of(&vm("Halted", "Stopping"), Some(&vmi("Succeeded"))),
            Ok(PowerState::Off(OffReason::GuestShutdown))
        );
        assert_eq!(
            power_state_of(&vm("Manual", "Running"), Some(&vmi("Failed"))),
            Ok(PowerState::Off(OffReason::Failed))
        );
        assert_eq!(
            power_state_of(&vm("Always", "Starting"), None),
            Ok(PowerState::Starting)
        );
        assert_eq!(
            power_state_of(&vm("Always", "Stopped"), None),
            Ok(PowerState::Starting)
        );
        assert_eq!(
            power_state_of(&vm("Always", "CrashLoopBackOff"), None),
            Ok(PowerState::Off(OffReason::Crashed))
        );
        assert_eq!(
            power_state_of(&vm("Always", "Starting"), Some(&vmi("Scheduling"))),
            Ok(PowerState::Starting)
        );
        assert_eq!(
            power_state_of(&vm("Always", "Running"), Some(&vmi("Unknown"))),
            Err(StateError::UnknownPhase)
        );
        assert_eq!(
            power_state_of(&vm("Always", "Paused"), Some(&vmi("Running"))),
            Ok(PowerState::Paused(PauseReason::Unknown))
        );
    }

    #[test]
    fn run_strategy_falls_back_to_running_field() {
        let mut v = VirtualMachine::new("v", Default::default());
        assert_eq!(RunStrategy::of(&v), RunStrategy::Halted);
        v.spec.running = Some(true);
        assert_eq!(RunStrategy::of(&v), RunStrategy::Always);
        v.spec.run_strategy = Some("WaitAsReceiver".into());
        assert_eq!(
            RunStrategy::of(&v),
            RunStrategy::Other("WaitAsReceiver".into())
        );
    }
}
