//! The VM reads and task calls every operation file needs: checked `status/current`,
//! `config`, `pending`, and "send a request that starts a task (and wait for it)". Errors
//! carry the operation and the VM (`node/vmid`).

use std::time::{SystemTime, UNIX_EPOCH};

use virtrigaud_core::{Error, ErrorKind, Result};

use crate::PROVIDER_TYPE;
use crate::client::PveClient;
use crate::error::to_core_error;
use crate::id::VmRef;
use crate::request::{ApiRequest, api};
use crate::task::{TaskOutcome, TaskWaiter, Upid};
use crate::types::{PendingEntry, VmConfig, VmStatus, lenient_u32};

/// `status/current`, checked: its `status` is `running` or `stopped`. Anything else (an
/// empty answer, `{}`, an unknown value) is a retryable `Unavailable`, never "off".
pub(crate) async fn status(client: &PveClient, vm: &VmRef, op: &'static str) -> Result<VmStatus> {
    let data = client
        .send(&api::status_current(&vm.node, vm.vmid))
        .await
        .map_err(|e| to_core_error(e, op, Some(&vm.to_string())))?;
    let status: VmStatus = match data {
        serde_json::Value::Null => VmStatus::default(),
        other => serde_json::from_value(other).map_err(|e| {
            Error::unavailable(format!(
                "PVE answered status/current of {} with something that is not a VM status: {e}",
                vm.vmid
            ))
            .context_for(PROVIDER_TYPE, op, Some(&vm.to_string()))
        })?,
    };
    match status.status.as_str() {
        "running" | "stopped" => Ok(status),
        other => Err(unknown_status(vm, op, other)),
    }
}

/// The error for a `status` PVE's schema does not have (`running`/`stopped`): PVE cannot tell
/// now, so the caller retries instead of reading it as off.
pub(crate) fn unknown_status(vm: &VmRef, op: &'static str, status: &str) -> Error {
    Error::unavailable(format!(
        "PVE reported status '{status}' for {} (neither running nor stopped)",
        vm.vmid
    ))
    .context_for(PROVIDER_TYPE, op, Some(&vm.to_string()))
}

/// The VM's current config.
pub(crate) async fn config(client: &PveClient, vm: &VmRef, op: &'static str) -> Result<VmConfig> {
    client
        .call(&api::config(&vm.node, vm.vmid))
        .await
        .map_err(|e| to_core_error(e, op, Some(&vm.to_string())))
}

/// The VM's config with its pending (not yet applied) values.
pub(crate) async fn pending(
    client: &PveClient,
    vm: &VmRef,
    op: &'static str,
) -> Result<Vec<PendingEntry>> {
    client
        .call(&api::pending(&vm.node, vm.vmid))
        .await
        .map_err(|e| to_core_error(e, op, Some(&vm.to_string())))
}

/// Sends a request whose answer is a UPID and waits for the task.
pub(crate) async fn run_task(
    client: &PveClient,
    req: &ApiRequest,
    op: &'static str,
    vm: &VmRef,
) -> Result<TaskOutcome> {
    let upid = start_task(client, req, op, vm).await?;
    TaskWaiter::new(client)
        .wait(&upid)
        .await
        .map_err(|e| to_core_error(e, op, Some(&vm.to_string())))
}

/// Sends a request whose answer is a UPID, without waiting for the task.
pub(crate) async fn start_task(
    client: &PveClient,
    req: &ApiRequest,
    op: &'static str,
    vm: &VmRef,
) -> Result<Upid> {
    let data: serde_json::Value = client
        .send(req)
        .await
        .map_err(|e| to_core_error(e, op, Some(&vm.to_string())))?;
    data.as_str().and_then(Upid::parse).ok_or_else(|| {
        Error::internal(format!(
            "{} {}: expected a UPID, got {data}",
            req.method, req.template
        ))
        .context_for(PROVIDER_TYPE, op, Some(&vm.to_string()))
    })
}

/// How many VM ids [`with_free_vmid`] tries before giving up with `Conflict`.
const FREE_ID_ATTEMPTS: usize = 3;

/// A free VM id (`cluster/nextid`); errors name `op` and `resource`.
pub(crate) async fn next_id(client: &PveClient, op: &'static str, resource: &str) -> Result<u32> {
    let id: serde_json::Value = client
        .send(&api::next_id())
        .await
        .map_err(|e| to_core_error(e, op, Some(resource)))?;
    lenient_u32(&id).ok_or_else(|| {
        Error::internal(format!("cluster/nextid answered {id}")).context_for(
            PROVIDER_TYPE,
            op,
            Some(resource),
        )
    })
}

/// Runs `attempt` on a free VM id, and again on a new one when another client took the id
/// first (`AlreadyExists`), up to [`FREE_ID_ATTEMPTS`] times; then `Conflict`.
pub(crate) async fn with_free_vmid<T, F>(
    client: &PveClient,
    op: &'static str,
    resource: &str,
    mut attempt: impl FnMut(u32) -> F,
) -> Result<T>
where
    F: Future<Output = Result<T>>,
{
    for _ in 0..FREE_ID_ATTEMPTS {
        let vmid = next_id(client, op, resource).await?;
        match attempt(vmid).await {
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            done => return done,
        }
    }
    Err(Error::new(
        ErrorKind::Conflict,
        format!("no free VM id after {FREE_ID_ATTEMPTS} attempts (others took each one first)"),
    )
    .context_for(PROVIDER_TYPE, op, Some(resource)))
}

/// Seconds since the Unix epoch on this machine's clock.
pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
