//! Declared capabilities: what a provider, and one VM on it, can do.
//!
//! Engines and orchestration read these instead of discovering support by failure.

use serde::{Deserialize, Serialize};

/// What a provider supports in general.
///
/// `Copy`: a provider computes its capabilities once (at connect) and hands out copies.
/// Field names serialise as in the seeds' `Provider.status.capabilities`
/// (`supportsReconfigureOnline`, …); the type lists are static and travel in
/// [`crate::model::DeclaredCapabilities`]. Build one with `Default` and set the fields:
///
/// ```
/// let mut caps = virtrigaud_core::ProviderCapabilities::default();
/// caps.acpi_shutdown = true;
/// caps.power_state_watch = true;
/// assert!(!caps.snapshots);
/// ```
///
/// One source of truth: a provider's [`crate::Provider::snapshotter`] is `Some` exactly when
/// `snapshots` is set, and [`crate::Provider::cloner`] exactly when `linked_clones` or
/// `full_clones` is; the conformance suite's `capabilities_tell_the_truth` checks every flag
/// against behaviour.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
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
    /// A VM's snapshots outlive the VM (KubeVirt keeps `VirtualMachineSnapshot` objects and
    /// their contents after the VM is deleted; hypervisors drop snapshots with the VM).
    #[serde(rename = "snapshotsOutliveVM", default)]
    pub snapshots_outlive_vm: bool,
    /// Linked clones.
    #[serde(rename = "supportsLinkedClones")]
    pub linked_clones: bool,
    /// Full clones.
    #[serde(rename = "supportsFullClones", default)]
    pub full_clones: bool,
    /// Guest customization at clone time: hostname and static networks.
    #[serde(rename = "supportsCloneCustomization", default)]
    pub clone_customization: bool,
    /// cloud-init user data delivered to a clone (a platform may set a hostname and
    /// addresses but have no way to hand a clone arbitrary user data, as Proxmox's API has
    /// none to upload a snippet).
    #[serde(rename = "supportsCloneUserData", default)]
    pub clone_user_data: bool,
    /// Image import.
    #[serde(rename = "supportsImageImport")]
    pub image_import: bool,
    /// Disk types the provider can create.
    #[serde(skip)]
    pub supported_disk_types: &'static [&'static str],
    /// Network adapter types the provider can create.
    #[serde(skip)]
    pub supported_network_types: &'static [&'static str],
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
    /// Lists VMs, filtered by labels ([`crate::Provider::list_vms`]; VM sets need it).
    #[serde(default)]
    pub list_vms: bool,
    /// Runs programs inside the guest through its agent, so a `preStop` hook can run there:
    /// the provider crate has a [`crate::shutdown::GuestExec`] executor. The embedder still
    /// hands it to the shutdown manager (with guest credentials where the provider needs
    /// them); a VM reconciler whose manager has none refuses a `preStop`.
    #[serde(rename = "supportsGuestExec", default)]
    pub guest_exec: bool,
    /// Tells a guest that crashed or that the hypervisor failed to run
    /// ([`crate::OffReason::Crashed`], [`crate::OffReason::Failed`],
    /// [`crate::PowerState::Crashed`]) from one that stopped cleanly, so the supervisor can
    /// honour `RerunOnFailure`.
    #[serde(default)]
    pub failure_detection: bool,
}

impl ProviderCapabilities {
    /// Whether the provider clones at all (linked or full).
    pub fn clones(&self) -> bool {
        self.linked_clones || self.full_clones
    }
}

/// What one VM supports right now (depends on its configuration and guest).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
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
