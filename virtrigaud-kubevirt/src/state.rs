//! Reading KubeVirt state: run strategies and the power state derived from a VM and its VMI.
//!
//! A VirtualMachine's `status.printableStatus` (written by virt-controller) and its
//! VirtualMachineInstance's `status.phase` (written by virt-handler) are updated by different
//! controllers and briefly disagree. [`power_state_of`] combines them so that the answer is
//! always conservative: a VM is reported off only when no instance can still run a guest.
//!
//! When no instance runs (none exists, or it reached a final phase), the question is whether
//! virt-controller is about to create one — the rules of its `syncRunStrategy` (see
//! [`will_start`]). A VM that will be started again reads `Starting`, never `Off`: `Always`
//! without an instance (a restart window, a start-failure back-off, a final instance waiting to
//! be replaced), `RerunOnFailure` after a failure (virt-controller queues a `Start` request) or
//! while its status still shows it running, a pending `Start` request, `Once` before its run.
//! Only a VM that nothing will start again reads `Off`.
//!
//! | VMI | VM | power state |
//! |-----|----|-------------|
//! | none or final | [`will_start`] (e.g. `Always`, a pending `Start` request) | `Starting` |
//! | `Succeeded` | not starting | `Off(GuestShutdown)` |
//! | `Failed`, being deleted | not starting | `Off(Destroyed)` (a stop forced it: grace expired or grace 0) |
//! | `Failed` | not starting | `Off(Failed)` |
//! | none | not starting, `CrashLoopBackOff` | `Off(Crashed)` |
//! | none | not starting, `ErrorUnschedulable`, `ErrImagePull`, … | `Off(Failed)` |
//! | none | not starting, anything else | `Off(Unknown)` |
//! | deleting, or VM `Stopping`/`Terminating`, or run strategy `Halted` | any | `ShuttingDown` |
//! | `Pending`/`Scheduling`/`Scheduled`/unset | any | `Starting` |
//! | `Running` with `Paused` condition (or VM `Paused`) | any | `Paused` |
//! | `Running` | any | `Running` |
//! | `Unknown` | any | error `Unavailable` (node lost: KubeVirt itself cannot tell) |
//!
//! ## Forced off by the platform
//! virt-handler kills a guest that does not shut down within its termination grace and then
//! marks the VMI `Failed` (with ACPI, a destroyed domain is a failure; a guest that shut itself
//! down is `Succeeded`). A VMI that is `Failed` *while being deleted* therefore reads
//! `Off(Destroyed)`: the stop ended in a hard power-off (KubeVirt's grace expired, or the grace
//! was 0). That is visible only while the final VMI still exists (until virt-controller removes
//! its finalizer; a watch sees it); afterwards the VM reads `Off(Unknown)`. A guest that shut
//! down by itself never reads `Off(Destroyed)`.

use virtrigaud_core::{OffReason, PauseReason, PowerState};

use crate::types::{VirtualMachine, VirtualMachineInstance, condition_true, find_condition};

/// A KubeVirt run strategy: core's [`RunStrategy`] (one type for it in the workspace).
pub use virtrigaud_core::model::RunStrategy;

/// The run strategy of `vm`: `spec.runStrategy`, else the deprecated `spec.running`
/// (`true` = Always, `false`/unset = Halted), as KubeVirt reads it. `None`: a value this crate
/// does not know (`WaitAsReceiver`, say; [`run_strategy_name`] shows it verbatim).
pub fn run_strategy_of(vm: &VirtualMachine) -> Option<RunStrategy> {
    match (&vm.spec.run_strategy, vm.spec.running) {
        (Some(s), _) => serde_json::from_value(serde_json::Value::String(s.clone())).ok(),
        (None, Some(true)) => Some(RunStrategy::Always),
        _ => Some(RunStrategy::Halted),
    }
}

/// The API value of a run strategy (`"Always"`, `"Halted"`, …).
pub fn run_strategy_value(rs: RunStrategy) -> String {
    match serde_json::to_value(rs) {
        Ok(serde_json::Value::String(s)) => s,
        _ => format!("{rs:?}"),
    }
}

/// The run strategy of `vm` as the server has it (an unknown value verbatim), for messages.
pub fn run_strategy_name(vm: &VirtualMachine) -> String {
    match &vm.spec.run_strategy {
        Some(s) => s.clone(),
        None => run_strategy_of(vm)
            .map(run_strategy_value)
            .unwrap_or_default(),
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
        || run_strategy_of(vm) == Some(RunStrategy::Halted)
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

/// Whether `status.stateChangeRequests` holds a Start request.
pub fn pending_start_request(vm: &VirtualMachine) -> bool {
    vm.status
        .as_ref()
        .and_then(|s| s.state_change_requests.as_ref())
        .is_some_and(|r| r.iter().any(is_start_request))
}

/// Whether one `status.stateChangeRequests` entry is a Start request.
pub(crate) fn is_start_request(req: &serde_json::Value) -> bool {
    req.get("action").and_then(serde_json::Value::as_str) == Some("Start")
}

/// Whether virt-controller will create a (new) instance for `vm`, given that no instance of it
/// runs (`vmi` is absent or final) — its `syncRunStrategy` rules:
/// - a VM being deleted never starts again;
/// - `Always` replaces any missing or final instance (after a start-failure back-off, too);
/// - a pending `Start` request starts `Manual`, `RerunOnFailure` and (start paused) `Halted`;
/// - `RerunOnFailure` re-runs a `Failed` instance that nobody stopped; without an instance it
///   stays stopped once virt-controller says `Stopped` (after a guest shutdown or a `Stop`
///   request, which is honoured first), and starts otherwise (a strategy just switched to it, a
///   restart window whose status still shows the old run);
/// - `Once` runs once.
pub fn will_start(vm: &VirtualMachine, vmi: Option<&VirtualMachineInstance>) -> bool {
    if vm.metadata.deletion_timestamp.is_some() {
        return false;
    }
    match run_strategy_of(vm) {
        Some(RunStrategy::Always) => true,
        Some(RunStrategy::Manual | RunStrategy::Halted) => pending_start_request(vm),
        Some(RunStrategy::RerunOnFailure) => {
            if pending_start_request(vm) {
                return true;
            }
            if pending_stop_request(vm) {
                return false;
            }
            match vmi {
                Some(v) => vmi_phase(v) == "Failed" && v.metadata.deletion_timestamp.is_none(),
                None => {
                    let observed = vm
                        .status
                        .as_ref()
                        .and_then(|s| s.extra.get("runStrategy"))
                        .and_then(serde_json::Value::as_str);
                    let switched = observed.is_some_and(|o| o != "RerunOnFailure");
                    switched || printable_status(vm) != Some("Stopped")
                }
            }
        }
        Some(RunStrategy::Once) => vmi.is_none() && !vm_run_completed(vm),
        // An unknown strategy (or one core adds later) is not started by this reading.
        _ => false,
    }
}

/// Derives the power state from the VM and its VMI (see the module table).
pub fn power_state_of(
    vm: &VirtualMachine,
    vmi: Option<&VirtualMachineInstance>,
) -> Result<PowerState, StateError> {
    let printable = printable_status(vm).unwrap_or("");
    let phase = vmi.map(vmi_phase);
    if phase == Some("Unknown") {
        return Err(StateError::UnknownPhase);
    }
    let final_or_none = vmi.filter(|v| !vmi_is_final(v));
    let Some(vmi) = final_or_none else {
        // No instance runs: off only if nothing will start one.
        if will_start(vm, vmi) {
            return Ok(PowerState::Starting);
        }
        return Ok(match vmi {
            Some(v) if vmi_phase(v) == "Succeeded" => PowerState::Off(OffReason::GuestShutdown),
            Some(v) if v.metadata.deletion_timestamp.is_some() => {
                PowerState::Off(OffReason::Destroyed)
            }
            Some(_) => PowerState::Off(OffReason::Failed),
            None => match printable {
                "CrashLoopBackOff" => PowerState::Off(OffReason::Crashed),
                "ErrorUnschedulable"
                | "ErrImagePull"
                | "ImagePullBackOff"
                | "ErrorPvcNotFound"
                | "DataVolumeError"
                | "ErrorDataVolumeNotFound"
                | "FailedUnschedulable" => PowerState::Off(OffReason::Failed),
                _ => PowerState::Off(OffReason::Unknown),
            },
        });
    };
    let phase = vmi_phase(vmi);
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
    run_strategy_of(vm) == Some(RunStrategy::Once)
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
        // a start-failure back-off: virt-controller starts it again when the back-off ends
        assert_eq!(
            power_state_of(&vm("Always", "CrashLoopBackOff"), None),
            Ok(PowerState::Starting)
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

    fn with_requests(mut v: VirtualMachine, actions: &[&str]) -> VirtualMachine {
        let reqs = actions
            .iter()
            .map(|a| serde_json::json!({"action": a}))
            .collect();
        v.status.get_or_insert_default().state_change_requests = Some(reqs);
        v
    }
    fn deleting(mut v: VirtualMachineInstance) -> VirtualMachineInstance {
        v.metadata.deletion_timestamp = Some(Time(Default::default()));
        v
    }

    /// No instance runs but virt-controller is about to create one: never `Off`.
    #[test]
    fn restart_windows_read_starting() {
        // Always, instance gone, status still shows the old run (restart, VMI deleted by hand)
        for printable in [
            "Running",
            "Stopping",
            "Terminating",
            "Paused",
            "Stopped",
            "",
        ] {
            assert_eq!(
                power_state_of(&vm("Always", printable), None),
                Ok(PowerState::Starting),
                "Always, {printable:?}, no VMI"
            );
        }
        // Always, the final instance not replaced yet
        for phase in ["Succeeded", "Failed"] {
            assert_eq!(
                power_state_of(&vm("Always", "Running"), Some(&vmi(phase))),
                Ok(PowerState::Starting)
            );
            assert_eq!(
                power_state_of(&vm("Always", "Stopping"), Some(&deleting(vmi(phase)))),
                Ok(PowerState::Starting)
            );
        }
        // RerunOnFailure after a failure: the failed VMI, then a Start request
        assert_eq!(
            power_state_of(&vm("RerunOnFailure", "Running"), Some(&vmi("Failed"))),
            Ok(PowerState::Starting)
        );
        assert_eq!(
            power_state_of(
                &with_requests(vm("RerunOnFailure", "Stopped"), &["Start"]),
                None
            ),
            Ok(PowerState::Starting)
        );
        assert_eq!(
            power_state_of(&vm("RerunOnFailure", "Running"), None),
            Ok(PowerState::Starting)
        );
        // pending Start requests (Manual; a restart's Stop + Start)
        assert_eq!(
            power_state_of(&with_requests(vm("Manual", "Stopped"), &["Start"]), None),
            Ok(PowerState::Starting)
        );
        assert_eq!(
            power_state_of(
                &with_requests(vm("Manual", "Stopping"), &["Stop", "Start"]),
                None
            ),
            Ok(PowerState::Starting)
        );
        assert_eq!(
            power_state_of(&with_requests(vm("Halted", "Stopped"), &["Start"]), None),
            Ok(PowerState::Starting)
        );
        assert_eq!(
            power_state_of(&vm("Once", ""), None),
            Ok(PowerState::Starting)
        );
    }

    /// Off only when nothing will start an instance again.
    #[test]
    fn meant_to_be_stopped_reads_off() {
        assert_eq!(
            power_state_of(&vm("Manual", "Running"), None),
            Ok(PowerState::Off(OffReason::Unknown))
        );
        assert_eq!(
            power_state_of(&with_requests(vm("Manual", "Stopping"), &["Stop"]), None),
            Ok(PowerState::Off(OffReason::Unknown))
        );
        assert_eq!(
            power_state_of(&vm("RerunOnFailure", "Stopped"), None),
            Ok(PowerState::Off(OffReason::Unknown))
        );
        assert_eq!(
            power_state_of(
                &with_requests(vm("RerunOnFailure", "Stopping"), &["Stop"]),
                None
            ),
            Ok(PowerState::Off(OffReason::Unknown))
        );
        // RerunOnFailure does not re-run a guest that shut down
        assert_eq!(
            power_state_of(&vm("RerunOnFailure", "Running"), Some(&vmi("Succeeded"))),
            Ok(PowerState::Off(OffReason::GuestShutdown))
        );
        // a RerunOnFailure VM switched from another strategy starts (status.runStrategy differs)
        let mut switched = vm("RerunOnFailure", "Stopped");
        switched
            .status
            .as_mut()
            .unwrap()
            .extra
            .insert("runStrategy".into(), serde_json::json!("Halted"));
        assert_eq!(power_state_of(&switched, None), Ok(PowerState::Starting));
        // a VM being deleted is not started again
        let mut gone = vm("Always", "Running");
        gone.metadata.deletion_timestamp = Some(Time(Default::default()));
        assert_eq!(
            power_state_of(&gone, None),
            Ok(PowerState::Off(OffReason::Unknown))
        );
        let mut once = vm("Once", "Stopped");
        once.status.as_mut().unwrap().created = Some(false);
        once.status.as_mut().unwrap().conditions = vec![Default::default()];
        assert_eq!(
            power_state_of(&once, None),
            Ok(PowerState::Off(OffReason::Unknown))
        );
        assert_eq!(
            power_state_of(&vm("Once", "Running"), Some(&vmi("Succeeded"))),
            Ok(PowerState::Off(OffReason::GuestShutdown))
        );
    }

    /// virt-handler marks a VMI it killed at the grace deadline `Failed`: while being deleted
    /// that reads `Off(Destroyed)`; a guest that shut down never does.
    #[test]
    fn forced_end_of_a_stop_reads_destroyed() {
        assert_eq!(
            power_state_of(&vm("Halted", "Stopping"), Some(&deleting(vmi("Failed")))),
            Ok(PowerState::Off(OffReason::Destroyed))
        );
        assert_eq!(
            power_state_of(
                &with_requests(vm("Manual", "Stopping"), &["Stop"]),
                Some(&deleting(vmi("Failed")))
            ),
            Ok(PowerState::Off(OffReason::Destroyed))
        );
        assert_eq!(
            power_state_of(
                &vm("RerunOnFailure", "Stopping"),
                Some(&deleting(vmi("Failed")))
            ),
            Ok(PowerState::Off(OffReason::Destroyed))
        );
        for rs in ["Halted", "Manual", "RerunOnFailure", "Once"] {
            let s = power_state_of(&vm(rs, "Stopping"), Some(&deleting(vmi("Succeeded"))));
            assert_eq!(s, Ok(PowerState::Off(OffReason::GuestShutdown)), "{rs}");
            let s = power_state_of(&vm(rs, "Stopped"), Some(&vmi("Succeeded")));
            assert_eq!(s, Ok(PowerState::Off(OffReason::GuestShutdown)), "{rs}");
        }
        // a failure nobody asked for is a failure, not a forced stop
        assert_eq!(
            power_state_of(&vm("Manual", "Running"), Some(&vmi("Failed"))),
            Ok(PowerState::Off(OffReason::Failed))
        );
    }

    #[test]
    fn run_strategy_falls_back_to_running_field() {
        let mut v = VirtualMachine::new("v", Default::default());
        assert_eq!(run_strategy_of(&v), Some(RunStrategy::Halted));
        v.spec.running = Some(true);
        assert_eq!(run_strategy_of(&v), Some(RunStrategy::Always));
        v.spec.run_strategy = Some("RerunOnFailure".into());
        assert_eq!(run_strategy_of(&v), Some(RunStrategy::RerunOnFailure));
        assert_eq!(
            run_strategy_value(RunStrategy::RerunOnFailure),
            "RerunOnFailure"
        );
        v.spec.run_strategy = Some("WaitAsReceiver".into());
        assert_eq!(run_strategy_of(&v), None);
        assert_eq!(run_strategy_name(&v), "WaitAsReceiver");
    }
}
