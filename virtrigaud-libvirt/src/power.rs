//! Power: start, hard stop, reset, pause/resume, the shutdown and reboot signals (agent or
//! ACPI, with a plain fallback), the guest-agent probe and the incarnation.

use virt::domain::Domain;
use virt::sys;
use virtrigaud_core::{AgentStatus, ErrorKind, Incarnation, PowerState, Result, ShutdownChannel};

use crate::connection::Session;
use crate::domain::{lookup, state_of, xml_of};
use crate::domxml;
use crate::error::is_unsupported_flags;

/// Starts the domain (paused when `paused`).
pub(crate) fn start(s: &Session, name: &str, paused: bool) -> Result<()> {
    let flags = if paused {
        sys::VIR_DOMAIN_START_PAUSED
    } else {
        0
    };
    let d = lookup(s, name)?;
    s.api("start", name, |_| d.create_with_flags(flags))
}

/// Stops the domain at once (`virDomainDestroy`).
pub(crate) fn power_off(s: &Session, name: &str) -> Result<()> {
    let d = lookup(s, name)?;
    s.api("power_off", name, |_| d.destroy())
}

/// Resets the domain (a hardware reset).
pub(crate) fn reset(s: &Session, name: &str) -> Result<()> {
    let d = lookup(s, name)?;
    s.api("reset", name, |_| d.reset())
}

/// Pauses the domain.
pub(crate) fn pause(s: &Session, name: &str) -> Result<()> {
    let d = lookup(s, name)?;
    s.api("pause", name, |_| d.suspend())
}

/// Resumes a paused domain.
pub(crate) fn resume(s: &Session, name: &str) -> Result<()> {
    let d = lookup(s, name)?;
    s.api("resume", name, |_| d.resume())
}

/// `"<uuid>#<domain id>"` while the domain is active, `None` while it is off.
pub(crate) fn incarnation(s: &Session, name: &str) -> Result<Option<Incarnation>> {
    // A fresh lookup: the id is cached in the domain handle.
    let d = lookup(s, name)?;
    let Some(id) = d.id() else {
        return Ok(None);
    };
    let uuid = s.api("incarnation", name, |_| d.uuid_string())?;
    Ok(Some(Incarnation::new(format!("{uuid}#{id}"))))
}

/// Sends one shutdown (or, with `reboot`, reboot) request on `channel`.
///
/// Drivers that refuse mode flags (the test driver) get a plain request. An agent channel
/// that closes while libvirt waits for QEMU's event means the request was delivered.
pub(crate) fn signal(
    s: &Session,
    name: &str,
    channel: ShutdownChannel,
    reboot: bool,
) -> Result<()> {
    let dom = lookup(s, name)?;
    let op = if reboot { "reboot" } else { "request_shutdown" };
    let flag = match channel {
        ShutdownChannel::Agent => sys::VIR_DOMAIN_SHUTDOWN_GUEST_AGENT,
        ShutdownChannel::Acpi => sys::VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN,
        _ => sys::VIR_DOMAIN_SHUTDOWN_DEFAULT,
    };
    let first = s.api(op, name, |_| {
        if reboot {
            dom.reboot(flag)
        } else {
            dom.shutdown_flags(flag)
        }
    });
    match first {
        Err(e) if is_unsupported_flags(&e) => {
            // Drivers without mode flags (the test driver): plain request.
            tracing::debug!(
                vm = name,
                "driver refuses shutdown mode flags; sending a plain request"
            );
            s.api(op, name, |_| {
                if reboot {
                    dom.reboot(0)
                } else {
                    dom.shutdown()
                }
            })
        }
        // The guest agent closed its channel while we waited for QEMU's shutdown/reset event:
        // the guest is already going down (a fast guest resets before libvirt sees the event).
        Err(e)
            if channel == ShutdownChannel::Agent
                && e.message().contains("End of file from agent") =>
        {
            tracing::debug!(
                vm = name,
                "agent channel closed during {op}: request delivered"
            );
            Ok(())
        }
        other => other,
    }
}

fn agent_status(connected: bool) -> AgentStatus {
    if connected {
        AgentStatus::Connected
    } else {
        AgentStatus::NotConnected
    }
}

/// Whether the guest agent answers: from the agent-lifecycle events when there are any, else
/// from the live XML, else a `guest-ping`.
/// The power state and, where it is known without asking the agent (the VM is off, no agent
/// channel, or the channel's state from lifecycle events or the live XML), the agent's
/// status: one read for the engine instead of a read and a probe.
pub(crate) fn state_and_agent(
    s: &Session,
    name: &str,
) -> Result<(PowerState, Option<AgentStatus>)> {
    let dom = lookup(s, name)?;
    let st = state_of(s, &dom, name)?;
    Ok((st, agent_without_ping(s, &dom, name, st)?))
}

/// The agent's status if it is known without a `guest-ping` (`None`: ping it).
fn agent_without_ping(
    s: &Session,
    dom: &Domain,
    name: &str,
    st: PowerState,
) -> Result<Option<AgentStatus>> {
    if st.is_off() {
        return Ok(Some(AgentStatus::NotConnected));
    }
    let x = xml_of(s, dom, name, 0)?;
    let (configured, live_state) = domxml::agent_channel(&x);
    if !configured {
        return Ok(Some(AgentStatus::NotConnected));
    }
    if let Some(ev) = s.hub().and_then(|h| h.agent_state(name)) {
        return Ok(Some(agent_status(ev)));
    }
    Ok(live_state.map(agent_status))
}

pub(crate) fn probe_agent(s: &Session, name: &str) -> Result<AgentStatus> {
    let dom = lookup(s, name)?;
    let st = state_of(s, &dom, name)?;
    if let Some(known) = agent_without_ping(s, &dom, name, st)? {
        return Ok(known);
    }
    let secs = s.cfg().agent_ping_timeout.as_secs().clamp(1, 60) as i32;
    match s.api("probe_agent", name, |_| {
        dom.qemu_agent_command(r#"{"execute":"guest-ping"}"#, secs, 0)
    }) {
        Ok(_) => Ok(AgentStatus::Connected),
        Err(e) if e.kind() == ErrorKind::Unsupported => Ok(AgentStatus::Unknown),
        Err(e) if e.kind() == ErrorKind::NotFound => Err(e),
        Err(_) => Ok(AgentStatus::NotConnected),
    }
}
