//! Guest reboot through PVE's `status/reboot` task, with the channel honoured.
//!
//! PVE's reboot shuts the guest down and starts the VM again (a new QEMU process, so a new
//! incarnation). Like `status/shutdown` it picks the channel from the VM's `agent` option:
//! `guest-shutdown` through the guest agent when the option is enabled, else the ACPI power
//! button. So:
//!
//! * **Agent** needs the agent enabled in the config (else `Unsupported`) and answering
//!   `agent/ping` (else a retryable `Unavailable`, before anything is sent);
//! * **Acpi** needs the agent *disabled*: with it enabled PVE would reboot through the agent,
//!   and PVE's API has no ACPI reboot of such a VM (`Unsupported`, saying so).
//!
//! The call returns when the task has ended. The wait is bounded by the client's task
//! timeout; PVE's own `timeout` for the guest to go down is three quarters of it, so a guest
//! that does not go down makes PVE end the task itself ("got timeout", a `Timeout` error)
//! before the wait gives up. A failed task is typed like every PVE error
//! ([`crate::error`]), with its log.

use std::time::Duration;

use virtrigaud_core::{AgentStatus, Error, ErrorKind, PowerState, Result, ShutdownChannel};

use crate::PROVIDER_TYPE;
use crate::client::PveClient;
use crate::error::to_core_error;
use crate::id::VmRef;
use crate::power::{LastActions, power_state_of, probe_agent};
use crate::request::api;
use crate::task::TaskWaiter;
use crate::vm_api::{start_task, status};

const OP: &str = "reboot";

/// PVE's `timeout` for the guest to go down: three quarters of the task wait, at least 1 s.
pub(crate) fn guest_timeout(task_timeout: Duration) -> u64 {
    (task_timeout.as_secs() * 3 / 4).max(1)
}

/// Reboots the running VM through `channel` and waits for PVE's reboot task to end.
pub(crate) async fn reboot(
    client: &PveClient,
    last: &LastActions,
    r: &VmRef,
    channel: ShutdownChannel,
) -> Result<()> {
    let st = status(client, r, OP).await?;
    match power_state_of(r, &st, OP)? {
        PowerState::Off(_) => {
            return Err(refused(
                r,
                ErrorKind::InvalidState,
                format!("VM {} is not running", r.vmid),
            ));
        }
        PowerState::Paused(_) => {
            return Err(refused(
                r,
                ErrorKind::InvalidState,
                format!(
                    "VM {} is paused: its guest cannot take a reboot request; resume it first",
                    r.vmid
                ),
            ));
        }
        _ => {}
    }
    match channel {
        ShutdownChannel::Agent if !st.agent => {
            return Err(refused(
                r,
                ErrorKind::Unsupported,
                format!(
                    "VM {} has no guest agent enabled in its config (`agent: 1`): PVE cannot reboot \
                     it through the agent",
                    r.vmid
                ),
            ));
        }
        ShutdownChannel::Agent => {
            if probe_agent(client, r).await? != AgentStatus::Connected {
                return Err(refused(
                    r,
                    ErrorKind::Unavailable,
                    format!(
                        "the guest agent of VM {} does not answer agent/ping; nothing was sent",
                        r.vmid
                    ),
                ));
            }
        }
        ShutdownChannel::Acpi if st.agent => {
            return Err(refused(
                r,
                ErrorKind::Unsupported,
                format!(
                    "VM {} has the guest agent enabled, so PVE reboots it through the agent; PVE's \
                     API has no ACPI reboot for it (use the Agent channel, or disable `agent`)",
                    r.vmid
                ),
            ));
        }
        ShutdownChannel::Acpi => {}
        other => {
            return Err(refused(
                r,
                ErrorKind::Unsupported,
                format!("PVE has no {other} reboot"),
            ));
        }
    }
    let timeout = guest_timeout(client.config().task_timeout);
    let upid = start_task(client, &api::reboot(&r.node, r.vmid, Some(timeout)), OP, r).await?;
    // A new run: what this process did to the old one no longer applies.
    last.remember(r, None);
    TaskWaiter::new(client)
        .wait(&upid)
        .await
        .map_err(|e| to_core_error(e, OP, Some(&r.to_string())))?;
    Ok(())
}

fn refused(r: &VmRef, kind: ErrorKind, msg: String) -> Error {
    Error::new(kind, msg).context_for(PROVIDER_TYPE, OP, Some(&r.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pve_gives_up_before_the_wait_does() {
        assert_eq!(guest_timeout(Duration::from_secs(600)), 450);
        assert_eq!(guest_timeout(Duration::from_secs(60)), 45);
        assert_eq!(guest_timeout(Duration::from_millis(500)), 1);
    }
}
