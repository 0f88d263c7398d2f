//! [`LibvirtProvider`]: the struct, its getters, and the trait impls ([`Provider`],
//! [`Snapshotter`], [`Cloner`]) as thin delegations to the operation modules, each body run
//! on the blocking pool by [`Connection::call`].

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use virtrigaud_core::clone::{CloneOptions, CloneResult};
use virtrigaud_core::placement::Inventory;
use virtrigaud_core::provider::{
    DeleteOptions, ListOptions, PowerOffOptions, PowerStateStream, ReconfigureRequest,
    ReconfigureResult, ShutdownRequestOptions, StartOptions, VmCreateSpec,
};
use virtrigaud_core::snapshot::{
    DeleteSnapshotOptions, RevertOptions, SnapshotInfo, SnapshotOptions,
};
use virtrigaud_core::{
    AgentStatus, Cloner, Incarnation, PowerState, Provider, ProviderCapabilities, Result,
    ShutdownChannel, Snapshotter, VmCapabilities, VmDescription, VmId,
};

use crate::PROVIDER_TYPE;
use crate::config::{DomainTemplate, LibvirtConfig};
use crate::connection::{Connection, Session};
use crate::domain::{lookup, state_of};
use crate::{clone, create, describe, power, reconfigure, snapshot};

/// A libvirt provider over one connection, reopened when libvirtd closes it. Cheap to clone.
///
/// VM ids are libvirt domain names.
#[derive(Debug, Clone)]
pub struct LibvirtProvider {
    connection: Arc<Connection>,
}

impl LibvirtProvider {
    /// Opens a connection to `cfg.uri` (and registers for domain events when `cfg.events`),
    /// and computes the capabilities (see [`LibvirtProvider::refresh_capabilities`]).
    ///
    /// Libvirt's own error printing to stderr is switched off (errors are returned instead).
    /// When libvirtd closes the connection (it restarted, a keepalive timed out), watchers'
    /// streams end and the next call opens a new connection; a call that fails because the
    /// daemon is still down returns a retryable
    /// [`ErrorKind::Unavailable`](virtrigaud_core::ErrorKind::Unavailable) error.
    pub async fn connect(cfg: LibvirtConfig) -> Result<LibvirtProvider> {
        Ok(LibvirtProvider {
            connection: Arc::new(Connection::open(cfg).await?),
        })
    }

    /// The shared connection (for the image sink).
    pub(crate) fn connection(&self) -> Arc<Connection> {
        Arc::clone(&self.connection)
    }

    /// The libvirt driver name (`QEMU`, `TEST`, …).
    pub fn driver(&self) -> String {
        self.connection.current().driver().to_owned()
    }

    /// Whether domain events are registered (power state is pushed, not polled).
    pub fn events_registered(&self) -> bool {
        self.connection.current().hub().is_some()
    }

    /// How many libvirt API calls this provider made so far (for measurements).
    pub fn api_calls(&self) -> u64 {
        self.connection.api_calls()
    }

    /// How many times the connection was reopened after libvirtd closed it.
    pub fn reconnects(&self) -> u64 {
        self.connection.reconnects()
    }

    /// When the last `Stopped` lifecycle event of `vm` arrived (for latency measurements).
    pub fn last_stop_event(&self, vm: &VmId) -> Option<Instant> {
        self.connection
            .current()
            .hub()
            .and_then(|h| h.last_stop(vm.as_str()))
    }

    /// Reads the driver from libvirtd again (after an upgrade, say) and recomputes the
    /// capabilities [`Provider::capabilities`] returns. They are otherwise computed when the
    /// connection opens (and reopens).
    pub async fn refresh_capabilities(&self) -> Result<ProviderCapabilities> {
        self.connection.refresh_capabilities().await
    }

    /// Creates a VM from `spec` with an explicit domain template (kernel boot, serial log, …)
    /// instead of the configured one.
    pub async fn create_with(&self, spec: &VmCreateSpec, tpl: &DomainTemplate) -> Result<VmId> {
        let spec = spec.clone();
        let tpl = tpl.clone();
        self.connection
            .call("create", move |s| create::create(s, &spec, &tpl))
            .await
    }

    /// Runs `f(session, vm name)` as operation `op`.
    async fn on_vm<T, F>(&self, op: &'static str, vm: &VmId, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Session, &str) -> Result<T> + Send + 'static,
    {
        let name = vm.to_string();
        self.connection.call(op, move |s| f(s, &name)).await
    }
}

#[async_trait]
impl Provider for LibvirtProvider {
    fn provider_type(&self) -> &'static str {
        PROVIDER_TYPE
    }

    /// Computed when the connection opens (and reopens), or by
    /// [`LibvirtProvider::refresh_capabilities`].
    fn capabilities(&self) -> ProviderCapabilities {
        self.connection.capabilities()
    }

    async fn vm_capabilities(&self, vm: &VmId) -> Result<VmCapabilities> {
        self.on_vm("vm_capabilities", vm, describe::vm_capabilities)
            .await
    }

    async fn power_state(&self, vm: &VmId) -> Result<PowerState> {
        self.on_vm("power_state", vm, |s, n| state_of(s, &lookup(s, n)?, n))
            .await
    }

    /// The state with the agent channel's state where libvirt knows it without a ping
    /// (lifecycle events, the live XML).
    async fn power_state_and_agent(&self, vm: &VmId) -> Result<(PowerState, Option<AgentStatus>)> {
        self.on_vm("power_state", vm, power::state_and_agent).await
    }

    /// The endpoint: the connection URI libvirt reports, without credentials or query
    /// parameters other than `name`, `socket` and `root`; for a URI naming the local daemon
    /// (`qemu:///system`) followed by `@` and the host name libvirt reports.
    fn instance_id(&self) -> String {
        self.connection.instance_id().to_owned()
    }

    /// `"<uuid>#<domain id>"` while the domain is active (running, paused, shutting down):
    /// libvirt gives a domain a new id every time it starts. `Ok(None)` when it is off.
    async fn incarnation(&self, vm: &VmId) -> Result<Option<Incarnation>> {
        self.on_vm("incarnation", vm, power::incarnation).await
    }

    async fn watch_power_state(&self, vm: &VmId) -> Result<Option<PowerStateStream>> {
        let session = self.connection.session("watch_power_state").await?;
        Ok(session.hub().map(|h| h.watch(vm.to_string())))
    }

    async fn start(&self, vm: &VmId, opts: &StartOptions) -> Result<()> {
        let paused = opts.paused;
        self.on_vm("start", vm, move |s, n| power::start(s, n, paused))
            .await
    }

    async fn power_off(&self, vm: &VmId, _opts: &PowerOffOptions) -> Result<()> {
        self.on_vm("power_off", vm, power::power_off).await
    }

    async fn probe_agent(&self, vm: &VmId) -> Result<AgentStatus> {
        self.on_vm("probe_agent", vm, power::probe_agent).await
    }

    async fn request_shutdown(
        &self,
        vm: &VmId,
        channel: ShutdownChannel,
        _opts: &ShutdownRequestOptions,
    ) -> Result<()> {
        self.on_vm("request_shutdown", vm, move |s, n| {
            power::signal(s, n, channel, false)
        })
        .await
    }

    async fn reset(&self, vm: &VmId) -> Result<()> {
        self.on_vm("reset", vm, power::reset).await
    }

    async fn reboot(&self, vm: &VmId, channel: ShutdownChannel) -> Result<()> {
        self.on_vm("reboot", vm, move |s, n| power::signal(s, n, channel, true))
            .await
    }

    async fn pause(&self, vm: &VmId) -> Result<()> {
        self.on_vm("pause", vm, power::pause).await
    }

    async fn resume(&self, vm: &VmId) -> Result<()> {
        self.on_vm("resume", vm, power::resume).await
    }

    async fn create(&self, spec: &VmCreateSpec) -> Result<VmId> {
        let tpl = self.connection.cfg().template.clone();
        self.create_with(spec, &tpl).await
    }

    async fn delete(&self, vm: &VmId, opts: &DeleteOptions) -> Result<()> {
        let opts = opts.clone();
        self.on_vm("delete", vm, move |s, n| create::delete(s, n, &opts))
            .await
    }

    async fn reconfigure(
        &self,
        vm: &VmId,
        change: &ReconfigureRequest,
    ) -> Result<ReconfigureResult> {
        let change = change.clone();
        self.on_vm("reconfigure", vm, move |s, n| {
            reconfigure::reconfigure(s, n, &change)
        })
        .await
    }

    async fn describe(&self, vm: &VmId) -> Result<VmDescription> {
        self.on_vm("describe", vm, |s, n| {
            describe::describe(s, &lookup(s, n)?, n)
        })
        .await
    }

    async fn list_vms(&self, opts: &ListOptions) -> Result<Vec<VmDescription>> {
        let want = opts.labels.clone();
        self.connection
            .call("list_vms", move |s| describe::list(s, &want))
            .await
    }

    /// One host (this connection's node): its CPUs and memory, the vCPUs and memory of its
    /// running domains as the allocation, and the configured storage pool as its datastore.
    async fn inventory(&self) -> Result<Inventory> {
        self.connection.call("inventory", describe::inventory).await
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
impl Snapshotter for LibvirtProvider {
    async fn create_snapshot(&self, vm: &VmId, opts: &SnapshotOptions) -> Result<SnapshotInfo> {
        let opts = opts.clone();
        self.on_vm("snapshot_create", vm, move |s, n| {
            snapshot::create(s, n, &opts)
        })
        .await
    }

    async fn list_snapshots(&self, vm: &VmId) -> Result<Vec<SnapshotInfo>> {
        self.on_vm("snapshot_list", vm, snapshot::list).await
    }

    async fn revert_snapshot(&self, vm: &VmId, snapshot: &str, opts: &RevertOptions) -> Result<()> {
        let (snap, opts) = (snapshot.to_owned(), opts.clone());
        self.on_vm("snapshot_revert", vm, move |s, n| {
            crate::snapshot::revert(s, n, &snap, &opts)
        })
        .await
    }

    async fn delete_snapshot(
        &self,
        vm: &VmId,
        snapshot: &str,
        opts: &DeleteSnapshotOptions,
    ) -> Result<()> {
        let (snap, opts) = (snapshot.to_owned(), opts.clone());
        self.on_vm("snapshot_delete", vm, move |s, n| {
            crate::snapshot::delete(s, n, &snap, &opts)
        })
        .await
    }
}

#[async_trait]
impl Cloner for LibvirtProvider {
    async fn clone_vm(&self, source: &VmId, opts: &CloneOptions) -> Result<CloneResult> {
        let opts = opts.clone();
        self.on_vm("clone", source, move |s, n| clone::clone(s, n, &opts))
            .await
    }
}
