//! Power: the state (`runtime.powerState` + `guest.guestState`), the run's identity,
//! power-on/off, suspend, reset, and the VMware Tools channel (probe, `ShutdownGuest`,
//! `RebootGuest`). vSphere has no ACPI-button API, so the ACPI channel is `Unsupported`.

use std::sync::Arc;

use virtrigaud_core::{
    AgentStatus, Error, ErrorKind, Incarnation, OffReason, PowerState, Result, ShutdownChannel,
    VmId,
};

use crate::PROVIDER_TYPE;
use crate::client::Client;
use crate::types::Props;
use crate::vm_api;

/// The paths [`power_state_of`] reads.
pub(crate) const POWER_PATHS: [&str; 2] = ["runtime.powerState", "guest.guestState"];

/// Maps `runtime.powerState` + `guest.guestState` to a core power state.
pub(crate) fn power_state_of(props: &Props) -> Option<PowerState> {
    let power = props.str("runtime.powerState")?;
    Some(match power {
        "poweredOn" => match props.str("guest.guestState") {
            Some("shuttingDown") => PowerState::ShuttingDown,
            _ => PowerState::Running,
        },
        "poweredOff" => PowerState::Off(OffReason::Unknown),
        "suspended" => PowerState::Off(OffReason::Saved),
        _ => return None,
    })
}

/// The paths [`incarnation_of`] reads. vcsim fills only `summary.runtime.bootTime` (the same
/// `VirtualMachineRuntimeInfo` as `runtime` on vCenter and ESXi), so both are asked for.
const INCARNATION_PATHS: [&str; 4] = [
    "runtime.powerState",
    "runtime.bootTime",
    "summary.runtime.bootTime",
    "config.instanceUuid",
];

/// The identity of a powered-on VM's current run: `"<config.instanceUuid>#<runtime.bootTime>"`.
/// vSphere sets `bootTime` when the VM powers on from off and clears it at power-off, so it
/// changes with every power-on. `None` when the VM is not powered on (off or suspended) or the
/// server gives no boot time (the engine then relies on lease expiry).
pub(crate) fn incarnation_of(props: &Props) -> Option<Incarnation> {
    if props.str("runtime.powerState") != Some("poweredOn") {
        return None;
    }
    let boot = props
        .str("runtime.bootTime")
        .or_else(|| props.str("summary.runtime.bootTime"))
        .filter(|b| !b.is_empty())?;
    let uuid = props.str("config.instanceUuid").unwrap_or_default();
    Some(Incarnation::new(format!("{uuid}#{boot}")))
}

/// The VM's power state.
pub(crate) async fn power_state(c: &Client, vm: &VmId) -> Result<PowerState> {
    const OP: &str = "power_state";
    let p = vm_api::props(c, vm, &POWER_PATHS, OP).await?;
    power_state_of(&p).ok_or_else(|| {
        Error::internal("VM has no runtime.powerState").context_for(
            PROVIDER_TYPE,
            OP,
            Some(vm.as_str()),
        )
    })
}

/// The identity of the VM's current run (see [`incarnation_of`]).
pub(crate) async fn incarnation(c: &Client, vm: &VmId) -> Result<Option<Incarnation>> {
    let p = vm_api::props(c, vm, &INCARNATION_PATHS, "incarnation").await?;
    Ok(incarnation_of(&p))
}

/// `PowerOnVM_Task`.
pub(crate) async fn start(c: &Arc<Client>, vm: &VmId) -> Result<()> {
    vm_api::task(c, vm, "PowerOnVM_Task", "", "start")
        .await
        .map(|_| ())
}

/// `PowerOffVM_Task`; on an off VM vim25's `InvalidPowerState` is `InvalidState`.
pub(crate) async fn power_off(c: &Arc<Client>, vm: &VmId) -> Result<()> {
    vm_api::task(c, vm, "PowerOffVM_Task", "", "power_off")
        .await
        .map(|_| ())
}

/// `SuspendVM_Task`; the VM then reads as `Off(Saved)`.
pub(crate) async fn suspend(c: &Arc<Client>, vm: &VmId) -> Result<()> {
    vm_api::task(c, vm, "SuspendVM_Task", "", "suspend")
        .await
        .map(|_| ())
}

/// `ResetVM_Task`.
pub(crate) async fn reset(c: &Arc<Client>, vm: &VmId) -> Result<()> {
    vm_api::task(c, vm, "ResetVM_Task", "", "reset")
        .await
        .map(|_| ())
}

/// VMware Tools' state: `guest.toolsRunningStatus`.
pub(crate) async fn probe_agent(c: &Client, vm: &VmId) -> Result<AgentStatus> {
    let p = vm_api::props(c, vm, &[TOOLS_PATH], "probe_agent").await?;
    Ok(tools_status(&p))
}

const TOOLS_PATH: &str = "guest.toolsRunningStatus";

fn tools_status(p: &Props) -> AgentStatus {
    match p.str(TOOLS_PATH) {
        Some("guestToolsRunning") => AgentStatus::Connected,
        Some(_) => AgentStatus::NotConnected,
        None => AgentStatus::Unknown,
    }
}

/// The power state and VMware Tools' state from one property read (the engine then skips
/// its probe).
pub(crate) async fn power_state_and_agent(
    c: &Client,
    vm: &VmId,
) -> Result<(PowerState, Option<AgentStatus>)> {
    const OP: &str = "power_state";
    let paths = [POWER_PATHS[0], POWER_PATHS[1], TOOLS_PATH];
    let p = vm_api::props(c, vm, &paths, OP).await?;
    let state = power_state_of(&p).ok_or_else(|| {
        Error::internal("VM has no runtime.powerState").context_for(
            PROVIDER_TYPE,
            OP,
            Some(vm.as_str()),
        )
    })?;
    Ok((
        state,
        Some(tools_status(&p)).filter(|s| *s != AgentStatus::Unknown),
    ))
}

/// `ShutdownGuest` through VMware Tools (the agent channel; ACPI is `Unsupported`).
pub(crate) async fn request_shutdown(
    c: &Client,
    vm: &VmId,
    channel: ShutdownChannel,
) -> Result<()> {
    const OP: &str = "request_shutdown";
    match channel {
        ShutdownChannel::Agent => vm_api::call(c, vm, "ShutdownGuest", OP).await,
        _ => Err(Error::new(
            ErrorKind::Unsupported,
            "vSphere has no ACPI power-button API: shut down through VMware Tools (agent channel)",
        )
        .context_for(PROVIDER_TYPE, OP, Some(vm.as_str()))),
    }
}

/// `RebootGuest` through VMware Tools (the agent channel only).
pub(crate) async fn reboot(c: &Client, vm: &VmId, channel: ShutdownChannel) -> Result<()> {
    const OP: &str = "reboot";
    match channel {
        ShutdownChannel::Agent => vm_api::call(c, vm, "RebootGuest", OP).await,
        _ => Err(Error::new(
            ErrorKind::Unsupported,
            "vSphere reboots guests through VMware Tools only",
        )
        .context_for(PROVIDER_TYPE, OP, Some(vm.as_str()))),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used)]
    use super::*;
    use crate::xml::Element;

    fn props(pairs: &[(&str, &str)]) -> Props {
        Props(
            pairs
                .iter()
                .map(|(n, v)| {
                    let val = Element {
                        name: "val".into(),
                        text: (*v).to_owned(),
                        ..Element::default()
                    };
                    ((*n).to_owned(), val)
                })
                .collect(),
        )
    }

    #[test]
    fn incarnation_is_instance_uuid_and_boot_time_of_a_powered_on_vm() {
        let on = props(&[
            ("runtime.powerState", "poweredOn"),
            ("runtime.bootTime", "2026-12-01T23:00:10.7Z"),
            ("summary.runtime.bootTime", "2026-12-01T23:00:10.7Z"),
            (
                "config.instanceUuid",
                "253ca6dd-6815-57ab-a2d5-ff50c884fd82",
            ),
        ]);
        assert_eq!(
            incarnation_of(&on).expect("on").as_str(),
            "253ca6dd-6815-57ab-a2d5-ff50c884fd82#2026-12-01T23:00:10.7Z"
        );
        // vcsim: only summary.runtime.bootTime.
        let vcsim = props(&[
            ("runtime.powerState", "poweredOn"),
            ("summary.runtime.bootTime", "2026-12-01T23:00:11Z"),
            ("config.instanceUuid", "u"),
        ]);
        assert_eq!(
            incarnation_of(&vcsim).expect("on").as_str(),
            "u#2026-12-01T23:00:11Z"
        );
        for state in ["poweredOff", "suspended"] {
            let off = props(&[
                ("runtime.powerState", state),
                ("summary.runtime.bootTime", "2026-12-01T23:00:11Z"),
                ("config.instanceUuid", "u"),
            ]);
            assert_eq!(incarnation_of(&off), None, "{state}");
        }
        let no_boot = props(&[
            ("runtime.powerState", "poweredOn"),
            ("config.instanceUuid", "u"),
        ]);
        assert_eq!(incarnation_of(&no_boot), None, "no boot time: cannot tell");
    }

    #[test]
    fn power_states_never_read_as_destroyed() {
        for power in ["poweredOn", "poweredOff", "suspended"] {
            for guest in [
                "running",
                "shuttingDown",
                "notRunning",
                "standby",
                "unknown",
            ] {
                let p = props(&[("runtime.powerState", power), ("guest.guestState", guest)]);
                let st = power_state_of(&p).expect("known power state");
                assert_ne!(st, PowerState::Off(OffReason::Destroyed), "{power}/{guest}");
                assert_eq!(st.is_off(), power != "poweredOn", "{power}/{guest}");
            }
        }
        assert_eq!(
            power_state_of(&props(&[("runtime.powerState", "bogus")])),
            None
        );
    }
}
