//! Value types shared by every provider: VM ids, power states, descriptions.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A provider-specific VM identifier.
///
/// Each provider documents its form: a libvirt domain name, a vSphere managed object id
/// (`vm-57`), a Proxmox `node/vmid`, a KubeVirt `namespace/name`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct VmId(String);

impl VmId {
    /// Wraps an identifier.
    pub fn new(id: impl Into<String>) -> Self {
        VmId(id.into())
    }
    /// The identifier as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for VmId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for VmId {
    fn from(s: &str) -> Self {
        VmId(s.to_owned())
    }
}

impl From<String> for VmId {
    fn from(s: String) -> Self {
        VmId(s)
    }
}

/// Why a VM is off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum OffReason {
    /// The guest shut itself down (after a request or on its own).
    GuestShutdown,
    /// It was powered off hard (destroy, PowerOff, stop).
    Destroyed,
    /// The guest crashed and the hypervisor stopped it.
    Crashed,
    /// Its state was saved to disk (managed save, suspend to disk).
    Saved,
    /// The hypervisor failed to run it.
    Failed,
    /// The provider does not say.
    Unknown,
}

/// The identity of one *run* of a VM: it changes every time the VM boots.
///
/// The shutdown engine stores it in a journalled lease, so a lease written during one run can
/// never cut the grace of a later one (the VM was restarted by hand in between). Each provider
/// documents what it uses: the libvirt domain id with its UUID, vSphere's `runtime.bootTime`
/// with `instanceUuid`, PVE's QEMU pid with its start time, the KubeVirt VMI's UID.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Incarnation(String);

impl Incarnation {
    /// Wraps an identity.
    pub fn new(id: impl Into<String>) -> Self {
        Incarnation(id.into())
    }
    /// The identity as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Incarnation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a VM is paused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum PauseReason {
    /// A user or API call paused it.
    User,
    /// Paused for an I/O error, a migration, a snapshot or another hypervisor reason.
    Hypervisor,
    /// The provider does not say.
    Unknown,
}

/// A VM's power state, with the detail the engine needs.
///
/// `ShuttingDown` is never off: only [`PowerState::Off`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum PowerState {
    /// Powered on and running.
    Running,
    /// The guest is shutting down but the VM is not off yet.
    ShuttingDown,
    /// Execution is paused; memory stays resident.
    Paused(PauseReason),
    /// The VM is starting (not yet running).
    Starting,
    /// The guest crashed; the VM still exists in a crashed state and needs a hard power-off.
    Crashed,
    /// Powered off.
    Off(OffReason),
}

impl PowerState {
    /// Whether the VM is off (never true for `ShuttingDown`).
    pub fn is_off(&self) -> bool {
        matches!(self, PowerState::Off(_))
    }
    /// Whether the VM is running (including shutting down and paused: it holds resources).
    pub fn is_active(&self) -> bool {
        !self.is_off()
    }
    /// A short name for logs and labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            PowerState::Running => "running",
            PowerState::ShuttingDown => "shutting_down",
            PowerState::Paused(_) => "paused",
            PowerState::Starting => "starting",
            PowerState::Crashed => "crashed",
            PowerState::Off(_) => "off",
        }
    }
}

impl fmt::Display for PowerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PowerState::Off(r) => write!(f, "off ({r:?})"),
            PowerState::Paused(r) => write!(f, "paused ({r:?})"),
            other => f.write_str(other.as_str()),
        }
    }
}

/// The channel through which the guest is asked to shut down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ShutdownChannel {
    /// The guest agent / tools (qemu-guest-agent, VMware Tools).
    Agent,
    /// The ACPI power button.
    Acpi,
}

impl ShutdownChannel {
    /// A short name for logs and labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            ShutdownChannel::Agent => "agent",
            ShutdownChannel::Acpi => "acpi",
        }
    }
}

impl fmt::Display for ShutdownChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a probe of the guest agent / tools found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum AgentStatus {
    /// The agent answered: an agent shutdown request can be delivered.
    Connected,
    /// No agent is configured, or it is not running.
    NotConnected,
    /// The provider cannot tell.
    Unknown,
}

/// A disk as seen by a provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DiskInfo {
    /// The disk's name (target device, label or key).
    pub name: String,
    /// Its size in GiB (rounded up).
    pub size_gib: u64,
    /// Why this disk cannot grow at all, online or offline (`None`: it can). The
    /// reconfigure planner turns a growth of such a disk into an `Impossible` plan with this
    /// reason instead of a power cycle that would not help.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cannot_grow: Option<String>,
}

impl DiskInfo {
    /// A disk of `size_gib`.
    pub fn new(name: impl Into<String>, size_gib: u64) -> Self {
        DiskInfo {
            name: name.into(),
            size_gib,
            cannot_grow: None,
        }
    }

    /// Marks the disk as one that cannot grow, with the reason (for example "a container
    /// disk is read-only and sized by its image").
    pub fn cannot_grow(mut self, reason: impl Into<String>) -> Self {
        self.cannot_grow = Some(reason.into());
        self
    }
}

/// What a provider knows about one VM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct VmDescription {
    /// The VM's id.
    pub id: VmId,
    /// Its display name.
    pub name: String,
    /// Its power state.
    pub power_state: PowerState,
    /// Virtual CPUs currently configured.
    pub cpu: u32,
    /// Memory currently configured, MiB.
    pub memory_mib: u64,
    /// Disks.
    pub disks: Vec<DiskInfo>,
    /// Labels (or tags / annotations) the provider stores with the VM.
    pub labels: BTreeMap<String, String>,
    /// Where it runs (host, node), when known.
    pub host: Option<String>,
    /// Whether a configuration change is pending a power cycle.
    pub pending_power_cycle: bool,
}

impl VmDescription {
    /// A description with the given id, name and power state; other fields empty.
    pub fn new(id: VmId, name: impl Into<String>, power_state: PowerState) -> Self {
        VmDescription {
            id,
            name: name.into(),
            power_state,
            cpu: 0,
            memory_mib: 0,
            disks: Vec::new(),
            labels: BTreeMap::new(),
            host: None,
            pending_power_cycle: false,
        }
    }
}
