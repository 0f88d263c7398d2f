//! Scriptable guest personalities.

use std::time::Duration;

use crate::error::ErrorKind;

/// How the guest reacts to the ACPI power button.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AcpiResponse {
    /// Powers off this long after the press.
    Honours(Duration),
    /// Ignores it.
    Ignores,
}

/// The guest agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AgentResponse {
    /// No agent.
    Absent,
    /// An agent that shuts the guest down this long after the request.
    Present(Duration),
    /// An agent whose calls never return.
    Hangs,
}

/// A simulated guest's personality.
///
/// ```
/// use std::time::Duration;
/// use virtrigaud_core::sim::GuestBehavior;
/// let slow = GuestBehavior::cooperative().acpi_after(Duration::from_secs(40));
/// let stubborn = GuestBehavior::ignores_acpi();
/// let with_agent = GuestBehavior::with_agent(Duration::from_secs(3));
/// # let _ = (slow, stubborn, with_agent);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestBehavior {
    /// Reaction to ACPI.
    pub acpi: AcpiResponse,
    /// The agent.
    pub agent: AgentResponse,
    /// ACPI presses within this time after boot are lost (acpid not running yet).
    pub acpi_listen_after: Duration,
    /// Every shutdown request fails with this kind (retryable for Unavailable/Timeout).
    pub signal_error: Option<ErrorKind>,
    /// The first N hard power-offs fail with a retryable error.
    pub power_off_failures: u32,
    /// The VM disappears this long after the first shutdown request.
    pub vanish_after_signal: Option<Duration>,
    /// Whether "shutting down" is visible before "off" (some hypervisors only show running).
    pub shutting_down_visible: bool,
}

impl Default for GuestBehavior {
    fn default() -> Self {
        Self::cooperative()
    }
}

impl GuestBehavior {
    /// Honours ACPI after 5 s; no agent.
    pub fn cooperative() -> Self {
        GuestBehavior {
            acpi: AcpiResponse::Honours(Duration::from_secs(5)),
            agent: AgentResponse::Absent,
            acpi_listen_after: Duration::ZERO,
            signal_error: None,
            power_off_failures: 0,
            vanish_after_signal: None,
            shutting_down_visible: true,
        }
    }
    /// Ignores ACPI; no agent.
    pub fn ignores_acpi() -> Self {
        GuestBehavior {
            acpi: AcpiResponse::Ignores,
            ..Self::cooperative()
        }
    }
    /// An agent that shuts down after `after`; ACPI honoured after 5 s too.
    pub fn with_agent(after: Duration) -> Self {
        GuestBehavior {
            agent: AgentResponse::Present(after),
            ..Self::cooperative()
        }
    }
    /// An agent whose calls hang; ACPI honoured after 5 s.
    pub fn hanging_agent() -> Self {
        GuestBehavior {
            agent: AgentResponse::Hangs,
            ..Self::cooperative()
        }
    }
    /// Sets the ACPI reaction to "power off after `after`".
    pub fn acpi_after(mut self, after: Duration) -> Self {
        self.acpi = AcpiResponse::Honours(after);
        self
    }
    /// Sets the agent.
    pub fn agent(mut self, agent: AgentResponse) -> Self {
        self.agent = agent;
        self
    }
    /// Loses ACPI presses during the first `d` after boot.
    pub fn acpi_listen_after(mut self, d: Duration) -> Self {
        self.acpi_listen_after = d;
        self
    }
    /// Makes every shutdown request fail with `kind`.
    pub fn signal_fails(mut self, kind: ErrorKind) -> Self {
        self.signal_error = Some(kind);
        self
    }
    /// Makes the first `n` hard power-offs fail (retryable).
    pub fn power_off_fails(mut self, n: u32) -> Self {
        self.power_off_failures = n;
        self
    }
    /// Makes the VM vanish `after` the first shutdown request.
    pub fn vanishes_after(mut self, after: Duration) -> Self {
        self.vanish_after_signal = Some(after);
        self
    }
    /// Hides the shutting-down state (reads say running until off).
    pub fn hide_shutting_down(mut self) -> Self {
        self.shutting_down_visible = false;
        self
    }
}
