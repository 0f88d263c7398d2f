//! Power: reading the state (and why a VM is off), start, hard stop, reset, pause, resume,
//! the agent probe, and what this process last did to each VM (reboot: `reboot.rs`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use virtrigaud_core::{
    AgentStatus, Error, ErrorKind, Incarnation, OffReason, PauseReason, PowerState, Result,
    StartOptions,
};

use crate::PROVIDER_TYPE;
use crate::client::{ApiError, PveClient};
use crate::error::to_core_error;
use crate::id::VmRef;
use crate::request::api;
use crate::task::Upid;
use crate::types::{TaskListEntry, TaskLogLine, TaskStatus, VmStatus};
use crate::vm_api::{run_task, status, unknown_status};

/// How often a running shutdown task is re-checked by [`power_state`]. Every read fetches
/// the VM's status (which says off as soon as it is); the task is read only to notice that it
/// ended without stopping the VM (then the state is `Running` again), so a slow re-check
/// costs nothing in detection and keeps a polled shutdown near one request per poll.
const TASK_RECHECK: Duration = Duration::from_secs(10);

/// What PVE's `qmshutdown` task logs when its `forceStop` kills the VM at the timeout
/// (qemu-server's `_do_vm_stop`: "VM still running - terminating now with SIGTERM", then
/// "… SIGKILL"; "VM quit/powerdown failed - terminating now with SIGTERM").
const FORCED_STOP_LOG: &str = "terminating now with SIG";

/// What this process last did to a VM's power (to report `ShuttingDown` and the `OffReason`).
#[derive(Debug, Clone)]
pub(crate) enum LastAction {
    /// Our shutdown task (started or adopted), and when it was last seen running.
    Shutdown(Upid, Option<tokio::time::Instant>),
    /// The ACPI button pressed through the monitor, at this Unix time (our clock).
    AcpiPress(u64),
    /// Our hard stop.
    Stop,
    /// The VM went off after our request, for this reason (found out once, kept until it runs
    /// again).
    Off(OffReason),
}

/// The [`LastAction`] per VM, shared by the operations of one provider.
#[derive(Debug, Default)]
pub(crate) struct LastActions(Mutex<HashMap<VmRef, LastAction>>);

impl LastActions {
    /// Remembers `action` for `vm`; `None` forgets what was done to it.
    pub(crate) fn remember(&self, vm: &VmRef, action: Option<LastAction>) {
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match action {
            Some(a) => map.insert(vm.clone(), a),
            None => map.remove(vm),
        };
    }

    /// What was last done to `vm`.
    pub(crate) fn get(&self, vm: &VmRef) -> Option<LastAction> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(vm)
            .cloned()
    }
}

/// The power state `status/current` shows. Only `stopped` is off; a status other than
/// `running` or `stopped` is a retryable `Unavailable` error.
pub(crate) fn power_state_of(
    vm: &VmRef,
    status: &VmStatus,
    op: &'static str,
) -> Result<PowerState> {
    match status.status.as_str() {
        "stopped" => return Ok(PowerState::Off(OffReason::Unknown)),
        "running" => {}
        other => return Err(unknown_status(vm, op, other)),
    }
    Ok(match status.qmpstatus.as_deref().unwrap_or("running") {
        "paused" => PowerState::Paused(PauseReason::User),
        "suspended" => PowerState::Paused(PauseReason::Unknown),
        "io-error" | "inmigrate" | "postmigrate" | "finish-migrate" | "save-vm" | "restore-vm"
        | "watchdog" | "debug" | "colo" => PowerState::Paused(PauseReason::Hypervisor),
        "prelaunch" => PowerState::Starting,
        "internal-error" | "guest-panicked" => PowerState::Crashed,
        "shutdown" => PowerState::ShuttingDown,
        _ => match status.lock.as_deref() {
            Some(l) if l.starts_with("shutdown") => PowerState::ShuttingDown,
            _ => PowerState::Running,
        },
    })
}

/// The VM's power state, told apart with what this process did to it: `ShuttingDown` while
/// our shutdown task runs, and why it is off after our request or our hard stop.
pub(crate) async fn power_state(
    client: &PveClient,
    last: &LastActions,
    r: &VmRef,
) -> Result<PowerState> {
    // While our `qmshutdown` task runs, the VM is shutting down (the task ends only when the
    // VM is off, or has been stopped at its timeout): its status is the one read. Off is
    // never concluded from the task; the VM's own status is read once the task has ended.
    let task_ended = match last.get(r) {
        Some(LastAction::Shutdown(upid, _)) => match task_running(client, r, &upid).await {
            Some(true) => return Ok(PowerState::ShuttingDown),
            Some(false) => true,
            None => false,
        },
        _ => false,
    };
    let status = status(client, r, "power_state").await?;
    let state = power_state_of(r, &status, "power_state")?;
    if task_ended && state.is_active() {
        // Our task ended and the guest still runs: the request is spent (a failed task was
        // logged by `task_running`).
        last.remember(r, None);
        return Ok(state);
    }
    match (state, last.get(r)) {
        (PowerState::Off(_), Some(LastAction::Stop)) => Ok(PowerState::Off(OffReason::Destroyed)),
        (PowerState::Off(_), Some(LastAction::Off(reason))) => Ok(PowerState::Off(reason)),
        (PowerState::Off(_), Some(LastAction::Shutdown(upid, _))) => {
            // Off after our shutdown task: the guest, or the task's forceStop at the
            // timeout (or someone's stop)? Found out once.
            let reason = off_reason_after_request(client, r, Some(&upid), None).await;
            Ok(PowerState::Off(remember_off(last, r, reason)))
        }
        (PowerState::Off(_), Some(LastAction::AcpiPress(at))) => {
            let reason = off_reason_after_request(client, r, None, Some(at)).await;
            Ok(PowerState::Off(remember_off(last, r, reason)))
        }
        (PowerState::Running, Some(LastAction::Shutdown(upid, seen))) => {
            shutdown_task_state(client, last, r, upid, seen).await
        }
        (s, Some(LastAction::Stop | LastAction::Off(_))) => {
            // It runs again (started by someone else): what we did belongs to its last run.
            last.remember(r, None);
            Ok(s)
        }
        (s, _) => Ok(s),
    }
}

/// Keeps a known reason, so it is found out once.
fn remember_off(last: &LastActions, r: &VmRef, reason: OffReason) -> OffReason {
    if reason != OffReason::Unknown {
        last.remember(r, Some(LastAction::Off(reason)));
    }
    reason
}

/// Whether our `qmshutdown` task still runs (`None`: its status could not be read). A task
/// that ended other than `OK` is logged.
async fn task_running(client: &PveClient, r: &VmRef, upid: &Upid) -> Option<bool> {
    let req = api::task_status(upid.node(), upid.as_str());
    match client.call::<TaskStatus>(&req).await {
        Ok(t) if t.status == "running" => Some(true),
        Ok(t) => {
            if t.exitstatus.as_deref() != Some("OK") {
                tracing::warn!(vm = %r, upid = %upid, exit = ?t.exitstatus, "PVE shutdown task failed");
            }
            Some(false)
        }
        Err(e) => {
            tracing::debug!(vm = %r, error = %e, "could not read shutdown task status");
            None
        }
    }
}

/// A running VM with our shutdown task whose status could not be read just now: shutting
/// down while the task runs. The task is re-checked at most every [`TASK_RECHECK`].
async fn shutdown_task_state(
    client: &PveClient,
    last: &LastActions,
    r: &VmRef,
    upid: Upid,
    seen: Option<tokio::time::Instant>,
) -> Result<PowerState> {
    if seen.is_some_and(|t| t.elapsed() < TASK_RECHECK) {
        return Ok(PowerState::ShuttingDown);
    }
    let req = api::task_status(upid.node(), upid.as_str());
    match client.call::<TaskStatus>(&req).await {
        Ok(t) if t.status == "running" => {
            let now = Some(tokio::time::Instant::now());
            last.remember(r, Some(LastAction::Shutdown(upid, now)));
            Ok(PowerState::ShuttingDown)
        }
        Ok(t) => {
            if t.exitstatus.as_deref() != Some("OK") {
                tracing::warn!(vm = %r, upid = %upid, exit = ?t.exitstatus, "PVE shutdown task failed");
            }
            last.remember(r, None);
            Ok(PowerState::Running)
        }
        Err(e) => {
            tracing::debug!(vm = %r, error = %e, "could not read shutdown task status");
            Ok(PowerState::Running)
        }
    }
}

/// Whether a `qmshutdown` task's log shows its `forceStop` killing the VM; `None` when the
/// log cannot be read.
pub(crate) async fn task_force_stopped(client: &PveClient, upid: &Upid) -> Option<bool> {
    let req = api::task_log(upid.node(), upid.as_str(), 0, 500);
    match client.call::<Vec<TaskLogLine>>(&req).await {
        Ok(lines) => Some(lines.iter().any(|l| l.t.contains(FORCED_STOP_LOG))),
        Err(e) => {
            tracing::debug!(%upid, error = %e, "could not read the shutdown task log");
            None
        }
    }
}

/// Why a VM that our request was shutting down is off now.
///
/// * `Destroyed` when it was killed: our `qmshutdown` task's log shows its `forceStop`
///   ([`FORCED_STOP_LOG`]; qemu-server writes that line before it signals QEMU, so a VM
///   already off has it in the log), or someone's `qmstop` started since the request (an
///   operator's `qm stop`, another client's power-off).
/// * `GuestShutdown` when neither is there.
/// * `Unknown` when PVE could not be asked.
async fn off_reason_after_request(
    client: &PveClient,
    vm: &VmRef,
    task: Option<&Upid>,
    since: Option<u64>,
) -> OffReason {
    if let Some(upid) = task {
        match task_force_stopped(client, upid).await {
            Some(true) => return OffReason::Destroyed,
            Some(false) => {}
            None => return OffReason::Unknown,
        }
    }
    let Some(since) = since.or_else(|| task.and_then(Upid::starttime)) else {
        return OffReason::Unknown;
    };
    let req = api::vm_tasks_since(&vm.node, vm.vmid, "qmstop", since);
    match client.call::<Vec<TaskListEntry>>(&req).await {
        Ok(tasks) => {
            let vmid = vm.vmid.to_string();
            let stopped = tasks.iter().any(|t| {
                t.task_type == "qmstop"
                    && t.starttime.is_some_and(|s| s >= since)
                    && Upid::parse(&t.upid).is_some_and(|u| u.id() == vmid)
            });
            if stopped {
                OffReason::Destroyed
            } else {
                OffReason::GuestShutdown
            }
        }
        Err(e) => {
            tracing::debug!(vm = %vm.to_vm_id(), error = %e, "could not list the VM's stop tasks");
            OffReason::Unknown
        }
    }
}

/// Starts the VM (not paused: `Unsupported`).
pub(crate) async fn start(
    client: &PveClient,
    last: &LastActions,
    r: &VmRef,
    opts: &StartOptions,
) -> Result<()> {
    if opts.paused {
        return Err(Error::unsupported("start paused").context_for(
            PROVIDER_TYPE,
            "start",
            Some(&r.to_string()),
        ));
    }
    last.remember(r, None);
    run_task(client, &api::start(&r.node, r.vmid), "start", r)
        .await
        .map(|_| ())
}

/// The hard-off: `InvalidState` when the VM is already stopped.
pub(crate) async fn power_off(
    client: &PveClient,
    last: &LastActions,
    r: &VmRef,
    overrule_shutdown: bool,
) -> Result<()> {
    let status = status(client, r, "power_off").await?;
    if status.status != "running" {
        return Err(
            Error::invalid_state(format!("VM {} is already stopped", r.vmid)).context_for(
                PROVIDER_TYPE,
                "power_off",
                Some(&r.to_string()),
            ),
        );
    }
    // Remembered before the stop is sent: a power-state read racing it (the VM is off
    // before PVE archives the `qmstop` task) must read a kill, never the guest's own stop.
    let before = last.get(r);
    last.remember(r, Some(LastAction::Stop));
    if let Err(e) = stop(client, r, overrule_shutdown).await {
        // Not stopped by us after all (or not known to be): what came before still holds, and
        // a kill that did happen is still found in the VM's task list.
        last.remember(r, before);
        return Err(e);
    }
    Ok(())
}

/// `status/stop`, with `overrule-shutdown` when asked for and known to the server.
async fn stop(client: &PveClient, vm: &VmRef, overrule_shutdown: bool) -> Result<()> {
    let req = api::stop(&vm.node, vm.vmid, overrule_shutdown);
    match run_task(client, &req, "power_off", vm).await {
        Err(e)
            if overrule_shutdown
                && e.kind() == ErrorKind::InvalidSpec
                && e.message().contains("overrule-shutdown") =>
        {
            // PVE before 8.1: no overrule-shutdown parameter.
            run_task(
                client,
                &api::stop(&vm.node, vm.vmid, false),
                "power_off",
                vm,
            )
            .await
            .map(|_| ())
        }
        other => other.map(|_| ()),
    }
}

/// `agent/ping`: an answer is `Connected`; PVE's 500 (not configured, not running, timeout)
/// is `NotConnected`.
pub(crate) async fn probe_agent(client: &PveClient, r: &VmRef) -> Result<AgentStatus> {
    match client.send(&api::agent_ping(&r.node, r.vmid)).await {
        Ok(_) => Ok(AgentStatus::Connected),
        // "No QEMU guest agent configured", "QEMU guest agent is not running", "… got timeout".
        Err(ApiError::Http {
            status: 500,
            message,
            ..
        }) if !message.contains("does not exist") && !message.contains("lock") => {
            tracing::debug!(vm = %r, %message, "guest agent not connected");
            Ok(AgentStatus::NotConnected)
        }
        Err(e) => Err(to_core_error(e, "probe_agent", Some(&r.to_string()))),
    }
}

/// Hard reset.
pub(crate) async fn reset(client: &PveClient, r: &VmRef) -> Result<()> {
    run_task(client, &api::reset(&r.node, r.vmid), "reset", r)
        .await
        .map(|_| ())
}

/// Pause (`status/suspend`).
pub(crate) async fn pause(client: &PveClient, r: &VmRef) -> Result<()> {
    run_task(client, &api::suspend(&r.node, r.vmid), "pause", r)
        .await
        .map(|_| ())
}

/// Resume a paused VM.
pub(crate) async fn resume(client: &PveClient, r: &VmRef) -> Result<()> {
    run_task(client, &api::resume(&r.node, r.vmid), "resume", r)
        .await
        .map(|_| ())
}

/// `node/vmid:qemu-pid:PID` while the VM runs (see [`crate::ProxmoxProvider`]'s
/// `incarnation` docs); `None` while it is stopped or PVE reports no pid.
pub(crate) async fn incarnation(client: &PveClient, r: &VmRef) -> Result<Option<Incarnation>> {
    let status = status(client, r, "incarnation").await?;
    if status.status != "running" {
        return Ok(None);
    }
    Ok(status
        .pid
        .map(|pid| Incarnation::new(format!("{}/{}:qemu-pid:{pid}", r.node, r.vmid))))
}
