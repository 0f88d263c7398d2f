//! `VirtualMachine`: desired power state, graceful-shutdown lifecycle, resources, disks.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::condition::Condition;
use super::duration::{HumanDuration, MAX_DURATION, check_at_most};
use super::meta::{API_VERSION, Object, ObjectRef, Resource};
use super::validate::{SpecErrors, Validate, index, join};

/// The graceful-shutdown timeout used when `lifecycle.gracefulShutdownTimeout` is absent.
pub const DEFAULT_GRACEFUL_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(60);

/// A `VirtualMachine` object.
pub type VirtualMachine = Object<VirtualMachineSpec, VirtualMachineStatus>;

/// Desired power state of a VM (`spec.powerState`).
///
/// Unknown values are rejected with the list of allowed values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum VmPowerState {
    /// Powered on.
    #[default]
    On,
    /// Hard power off, without notifying the guest.
    Off,
    /// Graceful shutdown through guest tools or ACPI, forced off at the deadline.
    OffGraceful,
}

impl VmPowerState {
    /// Whether this asks for the VM to be off (gracefully or not).
    pub fn is_off(self) -> bool {
        !matches!(self, VmPowerState::On)
    }
}

/// Observed power state in `status.powerState`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[non_exhaustive]
pub enum ObservedPowerState {
    /// Running.
    On,
    /// Off.
    Off,
    /// The guest is shutting down (not yet off).
    ShuttingDown,
    /// Paused / suspended.
    Paused,
    /// Not known.
    #[default]
    Unknown,
}

/// Spec of a `VirtualMachine`. Every field is optional so partial documents and
/// merge patches (`{"spec":{"resources":{…}}}`) parse too.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct VirtualMachineSpec {
    /// The provider that hosts the VM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_ref: Option<ObjectRef>,
    /// The VM class (size template).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_ref: Option<ObjectRef>,
    /// The image to create the VM from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_ref: Option<ObjectRef>,
    /// The placement policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement_ref: Option<ObjectRef>,
    /// Desired power state (default `On`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power_state: Option<VmPowerState>,
    /// Lifecycle hooks and the graceful-shutdown timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<VmLifecycle>,
    /// CPU and memory overrides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<VmResources>,
    /// Disks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<VmDisk>,
    /// Network attachments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<VmNetwork>,
    /// Snapshot operations (revert).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<VmSnapshotOperation>,
}

impl Resource for VirtualMachineSpec {
    const API_VERSION: &'static str = API_VERSION;
    const KIND: &'static str = "VirtualMachine";
}

impl VirtualMachineSpec {
    /// The desired power state (`On` when absent).
    pub fn desired_power_state(&self) -> VmPowerState {
        self.power_state.unwrap_or_default()
    }

    /// `lifecycle.gracefulShutdownTimeout`, or [`DEFAULT_GRACEFUL_SHUTDOWN_TIMEOUT`] (60 s).
    ///
    /// The value is returned as written: validation rejects one above
    /// [`super::MAX_DURATION`], and so does the shutdown engine's policy check, so a spec
    /// that skipped validation cannot overflow the clock either.
    pub fn graceful_shutdown_timeout(&self) -> Duration {
        self.lifecycle
            .as_ref()
            .and_then(|l| l.graceful_shutdown_timeout)
            .map_or(
                DEFAULT_GRACEFUL_SHUTDOWN_TIMEOUT,
                HumanDuration::as_duration,
            )
    }

    /// [`Self::graceful_shutdown_timeout`], or the validation error (at
    /// `{path}.lifecycle.gracefulShutdownTimeout`) when it is above [`MAX_DURATION`]: for
    /// callers that turn an unvalidated spec into a shutdown policy.
    pub(crate) fn checked_graceful_shutdown_timeout(
        &self,
        path: &str,
    ) -> Result<Duration, SpecErrors> {
        let mut errors = SpecErrors::new();
        if let Some(t) = self
            .lifecycle
            .as_ref()
            .and_then(|l| l.graceful_shutdown_timeout)
        {
            check_at_most(
                &mut errors,
                join(&join(path, "lifecycle"), "gracefulShutdownTimeout"),
                t,
                MAX_DURATION,
            );
        }
        errors.into_result()?;
        Ok(self.graceful_shutdown_timeout())
    }

    /// The preStop hook's argv (no implicit shell), if any.
    pub fn pre_stop_command(&self) -> Option<&[String]> {
        self.lifecycle
            .as_ref()
            .and_then(|l| l.pre_stop.as_ref())
            .and_then(|h| h.exec.as_ref())
            .map(|e| e.command.as_slice())
    }

    /// The postStart hook's argv, if any.
    pub fn post_start_command(&self) -> Option<&[String]> {
        self.lifecycle
            .as_ref()
            .and_then(|l| l.post_start.as_ref())
            .and_then(|h| h.exec.as_ref())
            .map(|e| e.command.as_slice())
    }
}

impl Validate for VirtualMachineSpec {
    fn validate_at(&self, path: &str, errors: &mut SpecErrors) {
        self.provider_ref
            .validate_at(&join(path, "providerRef"), errors);
        self.class_ref.validate_at(&join(path, "classRef"), errors);
        self.image_ref.validate_at(&join(path, "imageRef"), errors);
        self.placement_ref
            .validate_at(&join(path, "placementRef"), errors);
        self.lifecycle.validate_at(&join(path, "lifecycle"), errors);
        self.resources.validate_at(&join(path, "resources"), errors);
        let disks = join(path, "disks");
        self.disks.validate_at(&disks, errors);
        let mut seen = BTreeSet::new();
        for (i, d) in self.disks.iter().enumerate() {
            if !d.name.is_empty() && !seen.insert(d.name.as_str()) {
                errors.add(
                    join(&index(&disks, i), "name"),
                    "must be unique among disks",
                    &d.name,
                );
            }
        }
        self.networks.validate_at(&join(path, "networks"), errors);
        self.snapshot.validate_at(&join(path, "snapshot"), errors);
    }
}

/// `spec.lifecycle`: hooks and the graceful-shutdown timeout.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct VmLifecycle {
    /// How long a graceful shutdown may take before a hard power-off (default 60 s;
    /// `0s` means an immediate hard power-off). At most [`MAX_DURATION`] (`"365d"`); a
    /// longer value is rejected by validation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graceful_shutdown_timeout: Option<HumanDuration>,
    /// Runs before the shutdown signal, inside the grace period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_stop: Option<LifecycleHandler>,
    /// Runs after the VM started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_start: Option<LifecycleHandler>,
}

impl Validate for VmLifecycle {
    fn validate_at(&self, path: &str, errors: &mut SpecErrors) {
        if let Some(t) = self.graceful_shutdown_timeout {
            check_at_most(
                errors,
                join(path, "gracefulShutdownTimeout"),
                t,
                MAX_DURATION,
            );
        }
        self.pre_stop.validate_at(&join(path, "preStop"), errors);
        self.post_start
            .validate_at(&join(path, "postStart"), errors);
    }
}

/// A lifecycle hook.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct LifecycleHandler {
    /// Run a command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecAction>,
}

impl Validate for LifecycleHandler {
    fn validate_at(&self, path: &str, errors: &mut SpecErrors) {
        match &self.exec {
            None => errors.add_rule(join(path, "exec"), "a hook must specify exec"),
            Some(e) => e.validate_at(&join(path, "exec"), errors),
        }
    }
}

/// A command run as argv (no implicit shell: write `["/bin/sh", "-c", "…"]` for one).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct ExecAction {
    /// argv; the first element is the program.
    pub command: Vec<String>,
}

impl ExecAction {
    /// A command from argv.
    pub fn new<I: IntoIterator<Item = S>, S: Into<String>>(argv: I) -> Self {
        ExecAction {
            command: argv.into_iter().map(Into::into).collect(),
        }
    }
}

impl Validate for ExecAction {
    fn validate_at(&self, path: &str, errors: &mut SpecErrors) {
        let path = join(path, "command");
        match self.command.first() {
            None => errors.add_rule(path, "must not be empty"),
            Some(p) if p.trim().is_empty() => {
                errors.add(index(&path, 0), "the program must not be empty", p)
            }
            Some(_) => {}
        }
    }
}

/// `spec.resources`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct VmResources {
    /// vCPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<u32>,
    /// Memory in MiB.
    #[serde(default, rename = "memoryMiB", skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u64>,
}

impl Validate for VmResources {
    fn validate_at(&self, path: &str, errors: &mut SpecErrors) {
        if self.cpu == Some(0) {
            errors.add(join(path, "cpu"), "must be at least 1", 0);
        }
        if self.memory_mib == Some(0) {
            errors.add(join(path, "memoryMiB"), "must be at least 1", 0);
        }
    }
}

/// When a disk may grow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum ExpandPolicy {
    /// Try to grow while running (fall back to a power cycle if unsupported).
    #[default]
    Online,
    /// Grow only while powered off.
    Offline,
}

/// One disk in `spec.disks`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct VmDisk {
    /// Disk name, unique in the VM.
    pub name: String,
    /// Size in GiB (at least 1).
    #[serde(rename = "sizeGiB")]
    pub size_gib: u64,
    /// Disk type (provider-specific, e.g. `thin`).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// When growth may be applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expand_policy: Option<ExpandPolicy>,
}

impl Validate for VmDisk {
    fn validate_at(&self, path: &str, errors: &mut SpecErrors) {
        errors.require_name(join(path, "name"), &self.name);
        if self.size_gib == 0 {
            errors.add(join(path, "sizeGiB"), "must be at least 1", 0);
        }
    }
}

/// One network attachment in `spec.networks`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct VmNetwork {
    /// Interface name in the VM.
    pub name: String,
    /// The network object to attach to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_ref: Option<ObjectRef>,
    /// Static IP address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_address: Option<String>,
    /// Fixed MAC address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac_address: Option<String>,
}

impl Validate for VmNetwork {
    fn validate_at(&self, path: &str, errors: &mut SpecErrors) {
        errors.require_name(join(path, "name"), &self.name);
        self.network_ref
            .validate_at(&join(path, "networkRef"), errors);
    }
}

/// `spec.snapshot`: snapshot operations on the VM.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct VmSnapshotOperation {
    /// Revert to this `VMSnapshot` (cleared by the controller when done).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revert_to_ref: Option<ObjectRef>,
}

impl Validate for VmSnapshotOperation {
    fn validate_at(&self, path: &str, errors: &mut SpecErrors) {
        self.revert_to_ref
            .validate_at(&join(path, "revertToRef"), errors);
    }
}

/// Status of a `VirtualMachine`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct VirtualMachineStatus {
    /// Provider-side id of the VM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Observed power state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power_state: Option<ObservedPowerState>,
    /// Guest IP addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_addresses: Vec<String>,
    /// Resources currently applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_resources: Option<VmResources>,
    /// When the last reconfiguration completed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reconfigure_time: Option<String>,
    /// The spec generation this status reflects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Conditions (`Ready`, `Provisioning`, `Reconfiguring`, `ReconfigurePendingPowerCycle`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// What the run-strategy supervisor remembers across restarts (write
    /// `SupervisorStatus::memory` here; hand it back to `Supervisor::spawn_resuming`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_strategy_state: Option<super::lifecycle::RunStrategyState>,
}
