//! Graceful shutdown on PVE: the request (agent or ACPI, adopting a running `qmshutdown`
//! task, PVE's own deadline) and its cancellation (see [`crate::ProxmoxProvider`]'s docs).

use std::time::Duration;

use virtrigaud_core::{
    Error, ErrorKind, OffReason, PowerState, Result, ShutdownChannel, ShutdownRequestOptions,
};

use crate::PROVIDER_TYPE;
use crate::client::{ApiError, PveClient};
use crate::config::Auth;
use crate::error::to_core_error;
use crate::id::VmRef;
use crate::power::{LastAction, LastActions, power_state_of, task_force_stopped};
use crate::request::api;
use crate::task::{TaskWaiter, Upid};
use crate::types::{TaskListEntry, TaskStatus, VmStatus};
use crate::vm_api::{now_secs, start_task, status};

/// How long [`cancel_shutdown`] waits for a stopped shutdown task to end (PVE signals the
/// worker and answers at once).
const CANCEL_WAIT: Duration = Duration::from_secs(10);

const REQUEST: &str = "request_shutdown";
const CANCEL: &str = "cancel_shutdown";

/// Asks the guest to shut down through `channel`, with PVE's own deadline at the end of
/// `opts.remaining_grace` (and `forceStop` when `server_force_stop`).
pub(crate) async fn request_shutdown(
    client: &PveClient,
    last: &LastActions,
    r: &VmRef,
    channel: ShutdownChannel,
    opts: &ShutdownRequestOptions,
    server_force_stop: bool,
) -> Result<()> {
    let status = status(client, r, REQUEST).await?;
    refuse_unless_running(r, &status)?;
    match channel {
        ShutdownChannel::Agent if !status.agent => {
            return Err(refused(
                r,
                ErrorKind::Unsupported,
                format!(
                    "VM {} has no guest agent enabled in its config (`agent: 1`)",
                    r.vmid
                ),
            ));
        }
        // status/shutdown would go through the (unresponsive) agent: press ACPI directly.
        ShutdownChannel::Acpi if status.agent => return press_acpi(client, last, r).await,
        _ => {}
    }
    if adopt_running_shutdown(client, last, r).await? {
        return Ok(());
    }
    send_shutdown(client, last, r, channel, opts, server_force_stop).await
}

fn refused(r: &VmRef, kind: ErrorKind, msg: String) -> Error {
    Error::new(kind, msg).context_for(PROVIDER_TYPE, REQUEST, Some(&r.to_string()))
}

/// `InvalidState` unless the VM runs: off, or paused (PVE refuses a graceful shutdown of a
/// paused VM, and with `forceStop` it would hard-stop it).
fn refuse_unless_running(r: &VmRef, status: &VmStatus) -> Result<()> {
    match power_state_of(r, status, REQUEST)? {
        PowerState::Off(_) => Err(refused(
            r,
            ErrorKind::InvalidState,
            format!("VM {} is not running", r.vmid),
        )),
        PowerState::Paused(_) => Err(refused(
            r,
            ErrorKind::InvalidState,
            format!(
                "VM {} is paused: PVE refuses a graceful shutdown of a paused VM (and with forceStop it \
                 would hard-stop it); resume it first or power it off",
                r.vmid
            ),
        )),
        _ => Ok(()),
    }
}

/// Presses the ACPI button through the monitor (`system_powerdown`): no server-side deadline.
async fn press_acpi(client: &PveClient, last: &LastActions, r: &VmRef) -> Result<()> {
    client
        .send(&api::monitor(&r.node, r.vmid, "system_powerdown"))
        .await
        .map_err(|e| to_core_error(e, REQUEST, Some(&r.to_string())))?;
    last.remember(r, Some(LastAction::AcpiPress(now_secs())));
    Ok(())
}

/// Idempotent across restarts: a shutdown task that is already running (ours from before a
/// restart, or anyone's) holds the config lock, and a second one would only queue behind it.
/// Adopts it instead; `true` when there was one.
async fn adopt_running_shutdown(client: &PveClient, last: &LastActions, r: &VmRef) -> Result<bool> {
    let Some(upid) = running_shutdown_task(client, r, REQUEST).await? else {
        return Ok(false);
    };
    tracing::debug!(vm = %r, %upid, "a PVE shutdown task is already running; adopting it");
    last.remember(r, Some(LastAction::Shutdown(upid, None)));
    Ok(true)
}

/// Seconds PVE's server-side `forceStop` waits beyond the remaining grace.
const FORCE_STOP_MARGIN_SECS: u64 = 1;

/// `status/shutdown` with `timeout = ⌈remaining grace⌉ + 1 s` (and `forceStop`), or neither
/// without a remaining grace.
async fn send_shutdown(
    client: &PveClient,
    last: &LastActions,
    r: &VmRef,
    channel: ShutdownChannel,
    opts: &ShutdownRequestOptions,
    server_force_stop: bool,
) -> Result<()> {
    let (timeout, force) = match opts.remaining_grace {
        Some(g) => {
            // One second past the engine's own deadline: PVE's forceStop is the backstop for
            // a client that went away, and must not win a tie with the engine's hard
            // power-off (a kill in that race could be read as the guest's own stop).
            let secs = g.as_secs() + u64::from(g.subsec_nanos() > 0) + FORCE_STOP_MARGIN_SECS;
            (Some(secs.max(1)), server_force_stop)
        }
        None => (None, false),
    };
    let req = api::shutdown(&r.node, r.vmid, timeout, force);
    let upid = start_task(client, &req, REQUEST, r).await?;
    tracing::debug!(vm = %r, %upid, ?timeout, force, %channel, "PVE shutdown requested");
    last.remember(r, Some(LastAction::Shutdown(upid, None)));
    Ok(())
}

/// The VM's running `qmshutdown` task, if any.
async fn running_shutdown_task(
    client: &PveClient,
    r: &VmRef,
    op: &'static str,
) -> Result<Option<Upid>> {
    let active: Vec<TaskListEntry> = client
        .call(&api::active_tasks(&r.node, r.vmid, "qmshutdown"))
        .await
        .map_err(|e| to_core_error(e, op, Some(&r.to_string())))?;
    Ok(active
        .iter()
        .filter(|t| t.task_type == "qmshutdown" && t.is_running())
        .find_map(|t| Upid::parse(&t.upid).filter(|u| u.id() == r.vmid.to_string())))
}

/// Who this client is on PVE (the user field of the UPIDs of the tasks it starts).
fn own_user(client: &PveClient) -> &str {
    match &client.config().auth {
        Auth::ApiToken { token_id, .. } => token_id,
        Auth::Password { username, .. } => username,
    }
}

/// Stops the running `qmshutdown` task our request started (or adopted) and waits until it
/// has ended, so its `forceStop` can no longer stop the VM (the rules are on
/// [`virtrigaud_core::Provider::cancel_shutdown`] of [`crate::ProxmoxProvider`]).
pub(crate) async fn cancel_shutdown(
    client: &PveClient,
    last: &LastActions,
    r: &VmRef,
) -> Result<()> {
    let Some(upid) = task_to_cancel(client, last, r).await? else {
        return Ok(());
    };
    let req = api::task_status(upid.node(), upid.as_str());
    let task: TaskStatus = client
        .call(&req)
        .await
        .map_err(|e| to_core_error(e, CANCEL, Some(&r.to_string())))?;
    if task.status != "running" {
        last.remember(r, None);
        return Ok(());
    }
    if upid.user() != own_user(client) {
        return Err(Error::new(
            ErrorKind::Conflict,
            format!(
                "the running PVE shutdown task {upid} was started by {}, not by this client; \
                 left running, so PVE may still stop VM {} at its timeout",
                upid.user(),
                r.vmid
            ),
        )
        .permanent()
        .context_for(PROVIDER_TYPE, CANCEL, Some(&r.to_string())));
    }
    stop_task(client, last, r, &upid).await
}

/// The shutdown task to cancel: the one remembered, or (after a restart of this process)
/// the VM's running `qmshutdown` task; `None` when there is nothing to cancel (an ACPI
/// press, a hard stop, an ended request).
async fn task_to_cancel(client: &PveClient, last: &LastActions, r: &VmRef) -> Result<Option<Upid>> {
    match last.get(r) {
        Some(LastAction::Shutdown(upid, _)) => Ok(Some(upid)),
        Some(LastAction::AcpiPress(_) | LastAction::Stop | LastAction::Off(_)) => Ok(None),
        None => running_shutdown_task(client, r, CANCEL).await,
    }
}

/// Stops our running shutdown task and waits for it to end; `InvalidState` ("too late to
/// cancel") when its `forceStop` had already killed the VM.
async fn stop_task(client: &PveClient, last: &LastActions, r: &VmRef, upid: &Upid) -> Result<()> {
    client
        .send(&api::task_stop(upid.node(), upid.as_str()))
        .await
        .map_err(|e| to_core_error(e, CANCEL, Some(&r.to_string())))?;
    match TaskWaiter::new(client)
        .timeout(CANCEL_WAIT)
        .wait(upid)
        .await
    {
        // Ended OK: the guest was faster, or the task's forceStop was (then say so).
        Ok(_) => {
            if task_force_stopped(client, upid).await == Some(true) {
                last.remember(r, Some(LastAction::Off(OffReason::Destroyed)));
                return Err(Error::invalid_state(format!(
                    "too late to cancel: PVE's forceStop of shutdown task {upid} had already stopped VM {}",
                    r.vmid
                ))
                .context_for(PROVIDER_TYPE, CANCEL, Some(&r.to_string())));
            }
            last.remember(r, None);
            Ok(())
        }
        // "interrupted by signal": stopped before its forceStop.
        Err(ApiError::TaskFailed { .. }) => {
            tracing::debug!(vm = %r, %upid, "PVE shutdown task stopped");
            last.remember(r, None);
            Ok(())
        }
        Err(e) => Err(to_core_error(e, CANCEL, Some(&r.to_string()))),
    }
}
