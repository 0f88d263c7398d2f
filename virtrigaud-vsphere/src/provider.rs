//! [`VsphereProvider`]: the virtrigaud [`Provider`] for vSphere, as thin delegations to the
//! operation files.

use std::sync::Arc;

use async_trait::async_trait;
use virtrigaud_core::placement::Inventory;
use virtrigaud_core::{
    AgentStatus, CloneOptions, CloneResult, Cloner, DeleteOptions, DeleteSnapshotOptions,
    Incarnation, ListOptions, PowerOffOptions, PowerState, PowerStateStream, Provider,
    ProviderCapabilities, ReconfigureRequest, ReconfigureResult, Result, RevertOptions,
    ShutdownChannel, ShutdownRequestOptions, SnapshotInfo, SnapshotOptions, Snapshotter,
    StartOptions, VmCapabilities, VmCreateSpec, VmDescription, VmId,
};

use crate::PROVIDER_TYPE;
use crate::client::{Client, MethodCalls};
use crate::config::{CreateDefaults, VsphereConfig};
use crate::error::to_core_error;
use crate::{clone, create, describe, inventory, power, reconfigure, snapshot, watch};

/// The vSphere provider: one logged-in vim25 SOAP session.
///
/// [`VmId`]s are VM managed object ids (`vm-57`). Find them with
/// [`VsphereProvider::find_vm_by_path`] or [`VsphereProvider::find_vm_by_name`].
#[derive(Debug, Clone)]
pub struct VsphereProvider {
    client: Arc<Client>,
    defaults: Arc<CreateDefaults>,
    /// The shared power-state watch: one property collector and one long poll for every
    /// watched VM of this provider (and its clones).
    watches: Arc<watch::WatchHub>,
}

impl VsphereProvider {
    /// Connects to vCenter / ESXi and logs in.
    ///
    /// A wrong user name or password is [`virtrigaud_core::ErrorKind::Unauthenticated`]; an
    /// unreachable or untrusted endpoint is [`virtrigaud_core::ErrorKind::Unavailable`].
    ///
    /// ```no_run
    /// # async fn demo() -> virtrigaud_core::Result<()> {
    /// use virtrigaud_vsphere::{VsphereConfig, VsphereProvider};
    /// let provider = VsphereProvider::connect(
    ///     VsphereConfig::new("https://vcenter.example.com/sdk", "svc-virtrigaud", "secret"),
    /// ).await?;
    /// let vm = provider.find_vm_by_path("DC0/vm/web-1").await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect(config: VsphereConfig) -> Result<Self> {
        let client = Client::connect(&config)
            .await
            .map_err(|e| to_core_error(e, "connect", None))?;
        Ok(VsphereProvider {
            client,
            defaults: Arc::new(CreateDefaults::from_config(&config)),
            watches: Arc::default(),
        })
    }

    /// Finds a VM by inventory path (`DC0/vm/folder/name`).
    pub async fn find_vm_by_path(&self, path: &str) -> Result<VmId> {
        inventory::find_vm_by_path(&self.client, path).await
    }

    /// Finds a VM by display name (through a container view over the whole inventory).
    /// Several VMs with that name are [`virtrigaud_core::ErrorKind::Conflict`].
    pub async fn find_vm_by_name(&self, name: &str) -> Result<VmId> {
        inventory::find_vm_by_name(&self.client, name).await
    }

    /// Checks that a VM id exists (by managed object id) and returns its display name.
    pub async fn vm_name(&self, vm: &VmId) -> Result<String> {
        inventory::vm_name(&self.client, vm).await
    }

    /// Suspends the VM to disk (`SuspendVM_Task`); it then reads as `Off(Saved)`.
    pub async fn suspend(&self, vm: &VmId) -> Result<()> {
        power::suspend(&self.client, vm).await
    }

    /// Logs the session out. Later calls log in again.
    pub async fn logout(&self) -> Result<()> {
        self.client
            .logout()
            .await
            .map_err(|e| to_core_error(e, "logout", None))
    }

    /// The session (for the image sink).
    pub(crate) fn client(&self) -> &Arc<Client> {
        &self.client
    }

    /// The configured defaults (for the image sink).
    pub(crate) fn defaults(&self) -> &Arc<CreateDefaults> {
        &self.defaults
    }

    /// The number of SOAP calls this provider has sent (including logins), counted where
    /// requests are sent; for measurements.
    pub fn api_calls(&self) -> u64 {
        self.client.api_calls()
    }

    /// The SOAP requests of one method (`"WaitForUpdatesEx"`, `"CreatePropertyCollector"`, …)
    /// this provider has sent, has in flight now, and had in flight at most at once; for
    /// measurements (e.g. that power-state watches share one long poll).
    pub fn method_calls(&self, method: &str) -> MethodCalls {
        self.client.method_calls(method)
    }

    /// The VMs whose power state is watched now: each is one filter on the provider's one
    /// shared property collector (see the crate docs); for measurements.
    pub fn watched_vms(&self) -> usize {
        self.watches.watched()
    }

    /// Whether the shared property collector of the power-state watches exists now (it is
    /// created by the first watch and destroyed when the last one ends); for measurements.
    pub fn has_watch_collector(&self) -> bool {
        self.watches.has_collector()
    }
}

#[async_trait]
impl Provider for VsphereProvider {
    fn provider_type(&self) -> &'static str {
        PROVIDER_TYPE
    }

    fn capabilities(&self) -> ProviderCapabilities {
        let mut c = ProviderCapabilities::default();
        c.reconfigure_online = true;
        c.disk_expansion_online = true;
        c.snapshots = true;
        c.memory_snapshots = true;
        c.quiesced_snapshots = true;
        c.linked_clones = true;
        c.full_clones = true;
        c.clone_customization = true;
        c.clone_user_data = true;
        c.supported_disk_types = &["thin", "thick"];
        c.supported_network_types = &["vmxnet3", "e1000"];
        // ShutdownGuest goes through VMware Tools; vSphere has no separate ACPI button API.
        c.acpi_shutdown = false;
        c.agent_shutdown = true;
        c.repeatable_shutdown_signal = false;
        c.power_state_watch = true;
        c.reset = true;
        c.reboot = true;
        c.pause = false;
        c.create = true;
        c.delete = true;
        c.reconfigure = true;
        c.inventory = true;
        c.list_vms = true;
        // OVAs, through VsphereImageSink (CreateImportSpec, ImportVApp, an NFC lease).
        c.image_import = true;
        // Pre-stop hooks run in the guest through VMware Tools, with guest credentials:
        // GuestOpsPreStop (StartProgramInGuest + ListProcessesInGuest).
        c.guest_exec = true;
        // vSphere keeps a crashed guest powered on and reports every stop as poweredOff, so
        // a failed guest cannot be told from one that stopped cleanly (see the crate docs).
        c.failure_detection = false;
        c
    }

    async fn vm_capabilities(&self, vm: &VmId) -> Result<VmCapabilities> {
        describe::vm_capabilities(&self.client, vm).await
    }

    async fn power_state(&self, vm: &VmId) -> Result<PowerState> {
        power::power_state(&self.client, vm).await
    }

    async fn power_state_and_agent(&self, vm: &VmId) -> Result<(PowerState, Option<AgentStatus>)> {
        power::power_state_and_agent(&self.client, vm).await
    }

    /// The endpoint: `scheme://host:port` of the SDK URL (never its user information, path or
    /// query).
    fn instance_id(&self) -> String {
        self.client.endpoint()
    }

    /// `"<config.instanceUuid>#<runtime.bootTime>"` while the VM is powered on, `None`
    /// otherwise (see the crate docs).
    async fn incarnation(&self, vm: &VmId) -> Result<Option<Incarnation>> {
        power::incarnation(&self.client, vm).await
    }

    async fn watch_power_state(&self, vm: &VmId) -> Result<Option<PowerStateStream>> {
        watch::watch_power_state(&self.client, &self.watches, vm)
            .await
            .map(Some)
    }

    /// `PowerOnVM_Task` (`StartOptions::paused` is not supported and ignored).
    async fn start(&self, vm: &VmId, _opts: &StartOptions) -> Result<()> {
        power::start(&self.client, vm).await
    }

    async fn power_off(&self, vm: &VmId, _opts: &PowerOffOptions) -> Result<()> {
        power::power_off(&self.client, vm).await
    }

    async fn probe_agent(&self, vm: &VmId) -> Result<AgentStatus> {
        power::probe_agent(&self.client, vm).await
    }

    async fn request_shutdown(
        &self,
        vm: &VmId,
        channel: ShutdownChannel,
        _opts: &ShutdownRequestOptions,
    ) -> Result<()> {
        power::request_shutdown(&self.client, vm, channel).await
    }

    async fn reset(&self, vm: &VmId) -> Result<()> {
        power::reset(&self.client, vm).await
    }

    async fn reboot(&self, vm: &VmId, channel: ShutdownChannel) -> Result<()> {
        power::reboot(&self.client, vm, channel).await
    }

    async fn delete(&self, vm: &VmId, opts: &DeleteOptions) -> Result<()> {
        create::delete(&self.client, vm, opts).await
    }

    async fn reconfigure(
        &self,
        vm: &VmId,
        change: &ReconfigureRequest,
    ) -> Result<ReconfigureResult> {
        reconfigure::reconfigure(&self.client, vm, change).await
    }

    async fn describe(&self, vm: &VmId) -> Result<VmDescription> {
        describe::describe(&self.client, vm).await
    }

    async fn list_vms(&self, opts: &ListOptions) -> Result<Vec<VmDescription>> {
        describe::list_vms(&self.client, opts).await
    }

    /// Creates an empty VM (`CreateVM_Task`): one paravirtual SCSI controller with one disk per
    /// [`virtrigaud_core::DiskCreateSpec`] (thin unless `thick`), one adapter per network
    /// (vmxnet3 unless `e1000`/`e1000e`), labels and cloud-init user data in `extraConfig`,
    /// then `PowerOnVM_Task` when asked. `placement` names a host or a cluster / compute
    /// resource. A failure after the VM exists deletes it again.
    async fn create(&self, spec: &VmCreateSpec) -> Result<VmId> {
        create::create(&self.client, &self.defaults, spec, None).await
    }

    /// Hosts (with their cluster, vCPU capacity, memory and reachable datastores), the vCPUs
    /// and memory of their powered-on VMs as allocation, and datastores with their free space.
    /// vCPU capacity is physical cores × [`VCPU_PER_CORE`](crate::VCPU_PER_CORE) (vSphere
    /// overcommits CPU, not memory).
    async fn inventory(&self) -> Result<Inventory> {
        inventory::inventory(&self.client).await
    }

    fn snapshotter(&self) -> Option<&dyn Snapshotter> {
        self.capabilities()
            .snapshots
            .then_some(self as &dyn Snapshotter)
    }

    fn cloner(&self) -> Option<&dyn Cloner> {
        self.capabilities().clones().then_some(self as &dyn Cloner)
    }
}

#[async_trait]
impl Snapshotter for VsphereProvider {
    async fn create_snapshot(&self, vm: &VmId, opts: &SnapshotOptions) -> Result<SnapshotInfo> {
        snapshot::create_snapshot(&self.client, vm, opts).await
    }

    async fn list_snapshots(&self, vm: &VmId) -> Result<Vec<SnapshotInfo>> {
        snapshot::snapshot_tree(&self.client, vm).await
    }

    async fn revert_snapshot(&self, vm: &VmId, snapshot: &str, opts: &RevertOptions) -> Result<()> {
        snapshot::revert_snapshot(&self.client, vm, snapshot, opts).await
    }

    async fn delete_snapshot(
        &self,
        vm: &VmId,
        snapshot: &str,
        opts: &DeleteSnapshotOptions,
    ) -> Result<()> {
        snapshot::delete_snapshot(&self.client, vm, snapshot, opts).await
    }
}

#[async_trait]
impl Cloner for VsphereProvider {
    async fn clone_vm(&self, source: &VmId, opts: &CloneOptions) -> Result<CloneResult> {
        clone::clone_vm(&self.client, source, opts).await
    }
}
