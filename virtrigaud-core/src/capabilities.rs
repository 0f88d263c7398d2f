//! Declared capabilities: what a provider, and one VM on it, can do.
//!
//! Engines and orchestration read these instead of discovering support by failure.

use serde::{Deserialize, Serialize};

/// What a provider supports in general.
///
/// Field names serialise as in the seeds' `Provider.status.capabilities`
/// (`supportsReconfigureOnline`, …). Build one with `Default` and set the fields:
///
/// ```
/// let mut caps = virtrigaud_core::ProviderCapabilities::default();
/// caps.acpi_shutdown = true;
/// caps.power_state_watch = true;
/// assert!(!caps.snapshots);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct ProviderCapabilities {
    /// CPU/memory changes without a power cycle.
    #[serde(rename = "supportsReconfigureOnline")]
    pub reconfigure_online: bool,
    /// Disk growth without a power cycle.
    #[serde(rename = "supportsDiskExpansionOnline")]
    pub disk_expansion_online: bool,
    /// Snapshots.
    #[serde(rename = "supportsSnapshots")]
    pub snapshots: bool,
    /// Snapshots including memory state.
    #[serde(rename = "supportsMemorySnapshots")]
    pub memory_snapshots: bool,
    /// Quiesced (filesystem-frozen) snapshots.
    #[serde(rename = "supportsQuiescedSnapshots", default)]
    pub quiesced_snapshots: bool,
    /// Linked clones.
    #[serde(rename = "supportsLinkedClones")]
    pub linked_clones: bool,
    /// Full clones.
    #[serde(rename = "supportsFullClones", default)]
    pub full_clones: bool,
    /// Guest customization at clone time (hostname, network, cloud-init).
    #[serde(rename = "supportsCloneCustomization", default)]
    pub clone_customization: bool,
    /// Image import.
    #[serde(rename = "supportsImageImport")]
    pub image_import: bool,
    /// Disk types the provider can create.
    #[serde(default)]
    pub supported_disk_types: Vec<String>,
    /// Network adapter types the provider can create.
    #[serde(default)]
    pub supported_network_types: Vec<String>,
    /// Shutdown through the ACPI power button.
    #[serde(default)]
    pub acpi_shutdown: bool,
    /// Shutdown through the guest agent / tools.
    #[serde(default)]
    pub agent_shutdown: bool,
    /// Re-sending a shutdown request while one is in progress is safe and useful (an ACPI
    /// press sent before the guest listens is lost, so the engine re-sends it).
    #[serde(default)]
    pub repeatable_shutdown_signal: bool,
    /// The provider pushes power-state changes ([`crate::Provider::watch_power_state`]).
    #[serde(default)]
    pub power_state_watch: bool,
    /// Hard reset.
    #[serde(default)]
    pub reset: bool,
    /// Guest reboot.
    #[serde(default)]
    pub reboot: bool,
    /// Pause and resume (memory resident).
    #[serde(default)]
    pub pause: bool,
    /// Create VMs from a spec.
    #[serde(default)]
    pub create: bool,
    /// Delete VMs.
    #[serde(default)]
    pub delete: bool,
    /// Reconfigure CPU/memory/disks (online or offline).
    #[serde(default)]
    pub reconfigure: bool,
    /// Supplies a placement inventory.
    #[serde(default)]
    pub inventory: bool,
}

/// What one VM supports right now (depends on its configuration and guest).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct VmCapabilities {
    /// Whether a guest agent / tools channel is configured for the VM.
    pub agent_configured: bool,
    /// Whether the agent / tools is known to be running (None: unknown without a probe).
    pub agent_connected: Option<bool>,
    /// CPU hot-add enabled, with the maximum vCPUs reachable live.
    pub cpu_hot_add: bool,
    /// Maximum vCPUs without a power cycle (0: unknown).
    pub max_live_vcpus: u32,
    /// Memory hot-add enabled.
    pub memory_hot_add: bool,
    /// Maximum memory without a power cycle, MiB (0: unknown).
    pub max_live_memory_mib: u64,
    /// Disks can grow while running.
    pub disk_grow_online: bool,
    /// A snapshot of this VM can include memory.
    pub snapshot_memory: bool,
    /// A snapshot of this VM can be quiesced.
    pub snapshot_quiesce: bool,
    /// This VM can be the source of a linked clone.
    pub linked_clone_source: bool,
}
