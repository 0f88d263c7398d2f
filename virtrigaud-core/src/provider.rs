//! The [`Provider`] trait: the contract between virtrigaud and a hypervisor backend.
//!
//! Providers implement primitives (read the power state, start, power off hard, ask the guest
//! to shut down through one channel). Policy — grace periods, re-signalling, fallbacks,
//! journals — lives in [`crate::shutdown`], so every backend gets the same behaviour.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;

use crate::capabilities::{ProviderCapabilities, VmCapabilities};
use crate::clone::Cloner;
use crate::error::{Error, Result};
use crate::placement::{Inventory, Placement, Placer};
use crate::snapshot::Snapshotter;
use crate::vm::{AgentStatus, Incarnation, PowerState, ShutdownChannel, VmDescription, VmId};

/// A stream of power-state changes for one VM.
pub type PowerStateStream = BoxStream<'static, Result<PowerState>>;

/// Options for [`Provider::start`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct StartOptions {
    /// Start paused (where supported).
    pub paused: bool,
}

/// Options for [`Provider::power_off`] (hard power-off).
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct PowerOffOptions {}

/// Options for [`Provider::request_shutdown`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ShutdownRequestOptions {
    /// Time left in the grace period when the request is sent. Providers with a server-side
    /// shutdown deadline (Proxmox `timeout`) may pass it on; others ignore it.
    pub remaining_grace: Option<Duration>,
    /// Which attempt this is (1 for the first request of a shutdown).
    pub attempt: u32,
}

impl ShutdownRequestOptions {
    /// Options for attempt `attempt` with `remaining` grace.
    pub fn new(attempt: u32, remaining: Duration) -> Self {
        ShutdownRequestOptions {
            remaining_grace: Some(remaining),
            attempt,
        }
    }
}

/// Options for [`Provider::delete`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct DeleteOptions {
    /// Also delete the VM's disks / volumes.
    pub delete_disks: bool,
}

/// A disk to create with a VM.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DiskCreateSpec {
    /// Disk name.
    pub name: String,
    /// Size in GiB.
    pub size_gib: u64,
    /// Disk type (`thin`, `thick`, `qcow2`, …), provider-specific.
    pub disk_type: Option<String>,
}

impl DiskCreateSpec {
    /// A disk of `size_gib`.
    pub fn new(name: impl Into<String>, size_gib: u64) -> Self {
        DiskCreateSpec {
            name: name.into(),
            size_gib,
            disk_type: None,
        }
    }
}

/// A network attachment to create with a VM.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NetworkCreateSpec {
    /// Network name (port group, bridge, libvirt network, PVE bridge).
    pub network: String,
    /// Adapter model (`virtio`, `vmxnet3`, `e1000`), provider-specific.
    pub model: Option<String>,
}

impl NetworkCreateSpec {
    /// An attachment to `network`.
    pub fn new(network: impl Into<String>) -> Self {
        NetworkCreateSpec {
            network: network.into(),
            model: None,
        }
    }
}

/// Everything a provider needs to create a VM. Its `Debug` output shows the user data's
/// size, never its text.
#[derive(Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct VmCreateSpec {
    /// VM name.
    pub name: String,
    /// vCPUs.
    pub cpu: u32,
    /// Memory, MiB.
    pub memory_mib: u64,
    /// Disks.
    pub disks: Vec<DiskCreateSpec>,
    /// Networks.
    pub networks: Vec<NetworkCreateSpec>,
    /// Image reference (provider-specific: template, volume, URL already imported).
    pub image: Option<String>,
    /// cloud-init user data to inject (NoCloud, guestinfo, PVE cicustom).
    pub cloud_init_user_data: Option<String>,
    /// Labels to store with the VM (used by VM sets to find their members).
    pub labels: BTreeMap<String, String>,
    /// Where to create it (host, cluster, datastore); empty leaves it to the provider.
    pub placement: Placement,
    /// Power on after creation.
    pub power_on: bool,
}

impl std::fmt::Debug for VmCreateSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VmCreateSpec")
            .field("name", &self.name)
            .field("cpu", &self.cpu)
            .field("memory_mib", &self.memory_mib)
            .field("disks", &self.disks)
            .field("networks", &self.networks)
            .field("image", &self.image)
            .field(
                "cloud_init_user_data",
                &crate::redact::Redacted(self.cloud_init_user_data.as_deref()),
            )
            .field("labels", &self.labels)
            .field("placement", &self.placement)
            .field("power_on", &self.power_on)
            .finish()
    }
}

impl VmCreateSpec {
    /// A spec for `name` with `cpu` vCPUs and `memory_mib` MiB.
    pub fn new(name: impl Into<String>, cpu: u32, memory_mib: u64) -> Self {
        VmCreateSpec {
            name: name.into(),
            cpu,
            memory_mib,
            ..Default::default()
        }
    }
}

/// A disk size change.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DiskResize {
    /// Disk name.
    pub name: String,
    /// New size, GiB (grow only).
    pub size_gib: u64,
}

impl DiskResize {
    /// Grow `name` to `size_gib`.
    pub fn new(name: impl Into<String>, size_gib: u64) -> Self {
        DiskResize {
            name: name.into(),
            size_gib,
        }
    }
}

/// A change of resources for [`Provider::reconfigure`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ReconfigureRequest {
    /// New vCPU count.
    pub cpu: Option<u32>,
    /// New memory, MiB.
    pub memory_mib: Option<u64>,
    /// Disks to grow.
    pub disks: Vec<DiskResize>,
}

/// `cpu 4, memory 8192 MiB, disk data 100 GiB` (only what changes; `nothing` when empty).
///
/// ```
/// let mut r = virtrigaud_core::ReconfigureRequest::default();
/// r.cpu = Some(4);
/// r.disks.push(virtrigaud_core::DiskResize::new("data", 100));
/// assert_eq!(r.to_string(), "cpu 4, disk data 100 GiB");
/// ```
impl std::fmt::Display for ReconfigureRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if let Some(c) = self.cpu {
            parts.push(format!("cpu {c}"));
        }
        if let Some(m) = self.memory_mib {
            parts.push(format!("memory {m} MiB"));
        }
        for d in &self.disks {
            parts.push(format!("disk {} {} GiB", d.name, d.size_gib));
        }
        if parts.is_empty() {
            return f.write_str("nothing");
        }
        f.write_str(&parts.join(", "))
    }
}

/// What [`Provider::reconfigure`] did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ReconfigureResult {
    /// The change is live in the running guest.
    pub applied_live: bool,
    /// The change was stored but needs a power cycle to take effect.
    pub needs_power_cycle: bool,
    /// Human-readable notes (which parts were live, which pending).
    pub notes: Vec<String>,
}

/// Options for [`Provider::list_vms`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ListOptions {
    /// Only VMs carrying all these labels.
    pub labels: BTreeMap<String, String>,
}

/// A hypervisor backend.
///
/// Object-safe: pass providers around as `Arc<dyn Provider>`. Optional operations have
/// default implementations that return [`crate::ErrorKind::Unsupported`]; a provider declares
/// what it really supports in [`Provider::capabilities`].
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap().block_on(async {
/// use std::sync::Arc;
/// use virtrigaud_core::{Provider, PowerState, sim::{Simulator, GuestBehavior}};
/// let sim = Simulator::new();
/// let vm = sim.add_vm("web-1", GuestBehavior::cooperative());
/// let provider: Arc<dyn Provider> = Arc::new(sim);
/// assert_eq!(provider.power_state(&vm).await?, PowerState::Running);
/// # Ok::<(), virtrigaud_core::Error>(()) }).unwrap();
/// ```
#[async_trait]
pub trait Provider: Send + Sync + Debug + 'static {
    /// The provider type (`"libvirt"`, `"vsphere"`, `"proxmox"`, `"kubevirt"`, `"simulator"`);
    /// used as the `provider_type` metrics label.
    fn provider_type(&self) -> &'static str;

    /// What this provider supports.
    fn capabilities(&self) -> ProviderCapabilities;

    /// The identity of the endpoint this provider instance talks to (a libvirt URI, a
    /// vCenter or PVE host, a Kubernetes API server with its namespace), without credentials.
    ///
    /// The shutdown journal keys its leases by provider type, this identity and the VM id, so
    /// two hosts sharing one journal directory never resume or force each other's same-named
    /// VMs. The default, `""`, suits a process that talks to one endpoint of this type.
    fn instance_id(&self) -> String {
        String::new()
    }

    /// What one VM supports right now.
    async fn vm_capabilities(&self, vm: &VmId) -> Result<VmCapabilities>;

    /// The VM's power state. A VM that does not exist is [`crate::ErrorKind::NotFound`].
    async fn power_state(&self, vm: &VmId) -> Result<PowerState>;

    /// A stream of the VM's power-state changes, if the provider can push them
    /// (`Ok(None)` otherwise; the engine then polls). The stream starts with changes after the
    /// call; callers read [`Provider::power_state`] after subscribing.
    async fn watch_power_state(&self, vm: &VmId) -> Result<Option<PowerStateStream>> {
        let _ = vm;
        Ok(None)
    }

    /// Powers the VM on. Starting a running VM is [`crate::ErrorKind::InvalidState`].
    async fn start(&self, vm: &VmId, opts: &StartOptions) -> Result<()>;

    /// Powers the VM off at once (destroy, PowerOff, stop). Powering off a VM that is already
    /// off is [`crate::ErrorKind::InvalidState`]; the engine treats that as success.
    async fn power_off(&self, vm: &VmId, opts: &PowerOffOptions) -> Result<()>;

    /// The power state, and whether the guest agent answers, from one read where the provider
    /// can tell both at once (vSphere's `guest.toolsRunningStatus` beside
    /// `runtime.powerState`, a KubeVirt VMI's `AgentConnected` condition). The engine reads it
    /// at the start of a shutdown and, given an agent status, skips its probe: one provider
    /// call less per stop. The default reads the power state alone (`None`: probe as usual).
    async fn power_state_and_agent(&self, vm: &VmId) -> Result<(PowerState, Option<AgentStatus>)> {
        Ok((self.power_state(vm).await?, None))
    }

    /// Asks whether the guest agent / tools can take a request now. Called with a small time
    /// budget by the engine.
    async fn probe_agent(&self, vm: &VmId) -> Result<AgentStatus> {
        let _ = vm;
        Ok(AgentStatus::Unknown)
    }

    /// Asks the guest to shut down through exactly one channel, and returns once the request
    /// is delivered (not when the VM is off).
    async fn request_shutdown(
        &self,
        vm: &VmId,
        channel: ShutdownChannel,
        opts: &ShutdownRequestOptions,
    ) -> Result<()>;

    /// The identity of the VM's current run (see [`Incarnation`]): `Ok(None)` when the VM
    /// is not running or the provider cannot tell. The engine reads it only with a durable
    /// journal, before it records a lease; a provider without one relies on lease expiry
    /// alone.
    async fn incarnation(&self, vm: &VmId) -> Result<Option<Incarnation>> {
        let _ = vm;
        Ok(None)
    }

    /// Disarms whatever server-side deadline [`Provider::request_shutdown`] armed (Proxmox's
    /// `qmshutdown` task with `forceStop`, KubeVirt's termination grace), so that a cancelled
    /// shutdown does not kill the VM later. Called by the engine when a shutdown is cancelled
    /// after a request was sent; the default has nothing to disarm.
    async fn cancel_shutdown(&self, vm: &VmId) -> Result<()> {
        let _ = vm;
        Ok(())
    }

    /// Hard reset.
    async fn reset(&self, vm: &VmId) -> Result<()> {
        let _ = vm;
        Err(Error::unsupported("reset").with_provider(self.provider_type()))
    }

    /// Asks the guest to reboot through one channel (a real guest reboot, not off + on).
    async fn reboot(&self, vm: &VmId, channel: ShutdownChannel) -> Result<()> {
        let _ = (vm, channel);
        Err(Error::unsupported("reboot").with_provider(self.provider_type()))
    }

    /// Pauses execution (memory stays resident).
    async fn pause(&self, vm: &VmId) -> Result<()> {
        let _ = vm;
        Err(Error::unsupported("pause").with_provider(self.provider_type()))
    }

    /// Resumes a paused VM.
    async fn resume(&self, vm: &VmId) -> Result<()> {
        let _ = vm;
        Err(Error::unsupported("resume").with_provider(self.provider_type()))
    }

    /// Creates a VM and returns its id.
    async fn create(&self, spec: &VmCreateSpec) -> Result<VmId> {
        let _ = spec;
        Err(Error::unsupported("create").with_provider(self.provider_type()))
    }

    /// Deletes a VM (which must be off) and its snapshots' metadata.
    async fn delete(&self, vm: &VmId, opts: &DeleteOptions) -> Result<()> {
        let _ = (vm, opts);
        Err(Error::unsupported("delete").with_provider(self.provider_type()))
    }

    /// Changes CPU, memory or disk sizes; live where possible.
    async fn reconfigure(
        &self,
        vm: &VmId,
        change: &ReconfigureRequest,
    ) -> Result<ReconfigureResult> {
        let _ = (vm, change);
        Err(Error::unsupported("reconfigure").with_provider(self.provider_type()))
    }

    /// Describes one VM.
    async fn describe(&self, vm: &VmId) -> Result<VmDescription>;

    /// Lists VMs, optionally filtered by labels.
    async fn list_vms(&self, opts: &ListOptions) -> Result<Vec<VmDescription>> {
        let _ = opts;
        Err(Error::unsupported("list_vms").with_provider(self.provider_type()))
    }

    /// The placement inventory (hosts, clusters, datastores, load).
    async fn inventory(&self) -> Result<Inventory> {
        Err(Error::unsupported("inventory").with_provider(self.provider_type()))
    }

    /// This provider's snapshot support, if any.
    fn snapshotter(&self) -> Option<&dyn Snapshotter> {
        None
    }

    /// This provider's clone support, if any.
    fn cloner(&self) -> Option<&dyn Cloner> {
        None
    }

    /// This provider's own placement, if it has one (most use the core solver).
    fn placer(&self) -> Option<&dyn Placer> {
        None
    }
}
