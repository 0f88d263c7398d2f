//! [`ProxmoxProvider`]: the virtrigaud [`Provider`] for Proxmox VE, as thin delegations to
//! the operation files.

use async_trait::async_trait;
use virtrigaud_core::{
    AgentStatus, CloneOptions, CloneResult, Cloner, DeleteOptions, DeleteSnapshotOptions,
    Incarnation, Inventory, ListOptions, PowerOffOptions, PowerState, Provider,
    ProviderCapabilities, ReconfigureRequest, ReconfigureResult, Result, RevertOptions,
    ShutdownChannel, ShutdownRequestOptions, SnapshotInfo, SnapshotOptions, Snapshotter,
    StartOptions, VmCapabilities, VmCreateSpec, VmDescription, VmId,
};

use crate::PROVIDER_TYPE;
use crate::client::PveClient;
use crate::config::ProxmoxConfig;
use crate::create::CreateDefaults;
use crate::error::to_core_error;
use crate::id::VmRef;
use crate::node::NodeCapabilities;
use crate::power::LastActions;
use crate::{clone, create, inventory, node, power, reboot, reconfigure, shutdown, snapshot};

/// Tunables of the provider (beyond the connection settings).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ProviderOptions {
    /// Send `forceStop=1` with a shutdown that carries a remaining grace, so PVE itself
    /// hard-stops the VM when the grace ends even if this process is gone (default true).
    /// [`Provider::cancel_shutdown`] disarms it by stopping the shutdown task.
    pub server_force_stop: bool,
    /// Send `overrule-shutdown=1` with hard stops (PVE 8.1+), aborting a running shutdown
    /// task instead of waiting for its config lock (default true; retried without it when
    /// the server does not know the parameter).
    pub overrule_shutdown: bool,
    /// Storage for disks of VMs made by [`Provider::create`].
    pub default_storage: String,
    /// Default node for [`Provider::create`] when the spec has no placement.
    pub default_node: Option<String>,
}

impl Default for ProviderOptions {
    fn default() -> Self {
        ProviderOptions {
            server_force_stop: true,
            overrule_shutdown: true,
            default_storage: "local-lvm".into(),
            default_node: None,
        }
    }
}

/// The Proxmox VE provider. VM ids are `node/vmid` (`pve1/101`).
///
/// # Graceful shutdown on PVE
///
/// * **Grace period → PVE deadline.** [`Provider::request_shutdown`] sends
///   `POST …/status/shutdown` with `timeout = ⌈remaining grace⌉` seconds and `forceStop=1`
///   ([`ProviderOptions::server_force_stop`]). PVE's own deadline therefore equals the
///   engine's (rounded *up*, so the engine, when alive, reaches it first and decides), and it
///   is restart-safe by itself: if this process dies mid-shutdown, PVE still hard-stops the
///   VM when the grace ends. Without a remaining grace the request carries neither (PVE's
///   default timeout, no force).
/// * **Escalation.** The engine's hard-off ([`Provider::power_off`]) sends `status/stop` with
///   `overrule-shutdown=1`, which aborts the running `qmshutdown` task (it holds the VM's
///   config lock) instead of queueing behind it.
/// * **No re-signalling.** While a `qmshutdown` task runs it holds the config lock, so a
///   second request would only wait for that lock and fail: `repeatable_shutdown_signal` is
///   false. A request while such a task runs (for example after a restart of this process)
///   adopts the running task instead of queueing a second one.
/// * **Channels.** PVE chooses the channel of `status/shutdown` itself from the VM's `agent`
///   option: with the agent enabled it sends `guest-shutdown` through qemu-guest-agent,
///   otherwise it presses the ACPI button. So: an **Agent** request needs the agent enabled
///   (else `Unsupported`) and uses `status/shutdown`; an **Acpi** request on a VM without the
///   agent uses `status/shutdown`; an **Acpi** request on a VM *with* the agent enabled (the
///   engine's choice when `agent/ping` fails) presses the ACPI button through the monitor
///   (`system_powerdown`, needs `Sys.Modify`), because `status/shutdown` would wait for the
///   missing agent until the timeout. That last path has no server-side deadline.
/// * **Paused VMs.** PVE refuses to shut down a paused VM, and with `forceStop=1` it would
///   hard-stop it instead. The provider checks first and returns `InvalidState`.
/// * [`Provider::probe_agent`] uses `agent/ping`: an answer is `Connected`; PVE's 500
///   (agent not configured / not running / timeout) is `NotConnected`.
/// * **Cancel.** [`Provider::cancel_shutdown`] stops the running `qmshutdown` task
///   (`DELETE /nodes/{node}/tasks/{upid}`), so its `forceStop` never fires; it waits until
///   the task has ended. Nothing to do when the task has ended or the request was an ACPI
///   press through the monitor. What the guest was already sent cannot be taken back.
/// * **Why it is off.** After a request, `Off(Destroyed)` when PVE killed the VM (the
///   `qmshutdown` task's log shows its `forceStop`: "terminating now with SIGTERM") or
///   someone's `qmstop` ran since the request (an operator, another client); the engine
///   reports that as forced by the platform. `Off(GuestShutdown)` when the guest went off
///   by itself; `Off(Unknown)` when PVE could not be asked. After our own hard stop,
///   `Off(Destroyed)`. Found out once per run (two reads), then remembered.
///
/// # Reboot
///
/// [`Provider::reboot`] runs PVE's `status/reboot` task (the guest goes down, PVE starts a
/// new QEMU process) and returns when the task has ended. PVE picks the channel from the
/// VM's `agent` option, so **Agent** needs the agent enabled and answering `agent/ping`
/// (`Unsupported` / retryable `Unavailable` otherwise, nothing sent) and **Acpi** needs it
/// disabled (`Unsupported`: PVE has no ACPI reboot of a VM with the agent on). PVE's own
/// `timeout` for the guest is three quarters of the client's task timeout, so a guest that
/// does not go down ends the task with PVE's "got timeout" (`Timeout`) before the wait
/// gives up. Off or paused VMs: `InvalidState`.
///
/// # Reconfigure
///
/// * **CPUs** are described as `vcpus` when set, else sockets × cores. A change goes
///   through `vcpus` when `hotplug` has `cpu` and it stays within sockets × cores (PVE
///   hot-plugs only `vcpus`); otherwise a consistent pair is written (sockets kept and
///   cores = cpu / sockets when that divides, else one socket with cpu cores, and `vcpus`
///   removed), pending until the next power cycle on a running VM.
/// * **Memory** grows live with `memory` in `hotplug` and `numa: 1`; otherwise pending.
/// * **Disks** are found by the create spec's name (recorded as `disk.scsiN: NAME` in a
///   virtrigaud block, an HTML comment in the VM's `description`, which PVE keeps through
///   clones and rollbacks), by slot or by volume, and grow through PVE's `resize` task,
///   online. A qcow2 volume of a VM with snapshots cannot grow (PVE refuses), and is
///   described so ([`virtrigaud_core::DiskInfo::cannot_grow`]).
///
/// # Clone customization
///
/// Through PVE's cloud-init options, checked before anything is made: the hostname becomes
/// the clone's `name` (PVE's cloud-init takes the VM name as hostname), each network an
/// `ipconfigN` for `netN` (a network named `netN`, else by position; a static address with
/// its prefix length, none for DHCP), all DNS servers the VM's `nameserver`, and a
/// cloud-init drive is added unless the source has one. User data is `Unsupported` (see the
/// crate's Capabilities). A clone whose task or customization fails is destroyed (when it
/// still carries the clone's name); what cannot be removed is named in the error.
///
/// # Reads that cannot tell
///
/// `status/current` has only `running` and `stopped` in PVE's schema. Only `stopped` reads as
/// off; an empty, missing or unknown `status`, or an answer that is not a VM status, is a
/// retryable [`virtrigaud_core::ErrorKind::Unavailable`] naming the value, and nothing is sent on it.
///
/// # Identities
///
/// * [`Provider::instance_id`]: the API endpoint, `https://host:port` without credentials
///   ([`ProxmoxConfig::endpoint`]).
/// * [`Provider::incarnation`]: `node/vmid:qemu-pid:PID`, the pid of the VM's QEMU process,
///   new for every start; `None` while the VM is stopped.
#[derive(Debug)]
pub struct ProxmoxProvider {
    client: PveClient,
    options: ProviderOptions,
    last: LastActions,
}

impl ProxmoxProvider {
    /// A provider over an existing client.
    pub fn new(client: PveClient) -> Self {
        Self::with_options(client, ProviderOptions::default())
    }

    /// A provider with options.
    pub fn with_options(client: PveClient, options: ProviderOptions) -> Self {
        ProxmoxProvider {
            client,
            options,
            last: LastActions::default(),
        }
    }

    /// Builds the client from `config` and a provider over it (async like every provider's
    /// `connect`; the first request logs in).
    pub async fn connect(config: ProxmoxConfig) -> Result<Self> {
        let client = PveClient::new(config).map_err(|e| to_core_error(e, "connect", None))?;
        Ok(Self::new(client))
    }

    /// The underlying API client.
    pub fn client(&self) -> &PveClient {
        &self.client
    }

    /// How many HTTP requests this provider's client (and its clones) sent so far, logins
    /// included.
    pub fn api_calls(&self) -> u64 {
        self.client.api_calls()
    }

    /// What one node offers: online state, PVE version, `overrule-shutdown`, capacity.
    pub async fn node_capabilities(&self, node: &str) -> Result<NodeCapabilities> {
        node::node_capabilities(&self.client, node).await
    }
}

#[async_trait]
impl Provider for ProxmoxProvider {
    fn provider_type(&self) -> &'static str {
        PROVIDER_TYPE
    }

    /// The API endpoint, `https://host:port` without credentials
    /// ([`ProxmoxConfig::endpoint`]). Two URLs for two nodes of one cluster are two
    /// identities: give every process the same URL for one cluster.
    fn instance_id(&self) -> String {
        self.client.config().endpoint()
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
        c.clone_user_data = false;
        c.supported_disk_types = &["raw", "qcow2", "vmdk"];
        c.supported_network_types = &["virtio", "e1000", "vmxnet3", "rtl8139"];
        c.acpi_shutdown = true;
        c.agent_shutdown = true;
        c.repeatable_shutdown_signal = false;
        c.power_state_watch = false;
        c.reset = true;
        c.reboot = true;
        c.pause = true;
        c.create = true;
        c.delete = true;
        c.reconfigure = true;
        c.inventory = true;
        c.list_vms = true;
        // `GuestAgentPreStop` (prestop.rs) runs pre-stop hooks through `agent/exec` and
        // `agent/exec-status`; tests/prestop.rs runs them against fakepve's agent.
        c.guest_exec = true;
        // A QEMU process that dies (crash, OOM kill) leaves the VM `stopped` with no task,
        // exactly as a guest that powers itself off: PVE's API cannot tell them apart (see
        // the crate docs' Capabilities). `guest-panicked`/`internal-error` while QEMU still
        // runs do read as `Crashed`.
        c.failure_detection = false;
        // `PveImageSink` (image.rs) uploads prepared images to a storage (`upload`, as
        // `iso`, `vztmpl` or `import`); tests/image.rs drives the core's `ImagePreparer`
        // through it against fakepve.
        c.image_import = true;
        c
    }

    async fn vm_capabilities(&self, vm: &VmId) -> Result<VmCapabilities> {
        inventory::vm_capabilities(&self.client, &VmRef::parse_for(vm, "vm_capabilities")?).await
    }

    async fn power_state(&self, vm: &VmId) -> Result<PowerState> {
        power::power_state(
            &self.client,
            &self.last,
            &VmRef::parse_for(vm, "power_state")?,
        )
        .await
    }

    /// `node/vmid` plus the pid of the VM's QEMU process (`pve1/101:qemu-pid:48213`).
    ///
    /// PVE starts a new QEMU process for every start of a VM (also for `reboot` through
    /// PVE, which stops and starts it), so the pid changes with every run and stays the same
    /// for the whole run (a reboot inside the guest or a `reset` keeps the process). The
    /// start time derived from `uptime` (now − uptime) is not used: `uptime` is whole seconds
    /// read at an unknown point of the request, so two reads of one run, above all from two
    /// processes, can differ by a second, and the identity must compare equal exactly. A
    /// pid is reused only after the node's pid counter wraps (4 194 304 on PVE), far beyond
    /// a lease's lifetime. `Ok(None)` when the VM is stopped or PVE reports no pid.
    async fn incarnation(&self, vm: &VmId) -> Result<Option<Incarnation>> {
        power::incarnation(&self.client, &VmRef::parse_for(vm, "incarnation")?).await
    }

    /// Stops the running `qmshutdown` task our [`Provider::request_shutdown`] started (or
    /// adopted), with `DELETE /nodes/{node}/tasks/{upid}`, and waits until it has ended, so
    /// its `forceStop` can no longer stop the VM at the timeout.
    ///
    /// * Nothing to do when that task has already ended, or when the request pressed the
    ///   ACPI button through the monitor (no server-side deadline).
    /// * After a restart of this process (no task remembered), the VM's running
    ///   `qmshutdown` task is looked up.
    /// * A task started by another PVE user is left running: `Conflict` (permanent), PVE may
    ///   still stop the VM at that task's timeout.
    /// * When the task ends with its `forceStop` having killed the VM before the stop took
    ///   effect: `InvalidState` ("too late to cancel"); the VM then reads `Off(Destroyed)`.
    /// * What was already sent to the guest (the ACPI press, the agent's `guest-shutdown`)
    ///   cannot be taken back: a guest that is shutting down goes on.
    async fn cancel_shutdown(&self, vm: &VmId) -> Result<()> {
        shutdown::cancel_shutdown(
            &self.client,
            &self.last,
            &VmRef::parse_for(vm, "cancel_shutdown")?,
        )
        .await
    }

    async fn start(&self, vm: &VmId, opts: &StartOptions) -> Result<()> {
        power::start(
            &self.client,
            &self.last,
            &VmRef::parse_for(vm, "start")?,
            opts,
        )
        .await
    }

    async fn power_off(&self, vm: &VmId, _opts: &PowerOffOptions) -> Result<()> {
        let r = VmRef::parse_for(vm, "power_off")?;
        power::power_off(&self.client, &self.last, &r, self.options.overrule_shutdown).await
    }

    async fn probe_agent(&self, vm: &VmId) -> Result<AgentStatus> {
        power::probe_agent(&self.client, &VmRef::parse_for(vm, "probe_agent")?).await
    }

    async fn request_shutdown(
        &self,
        vm: &VmId,
        channel: ShutdownChannel,
        opts: &ShutdownRequestOptions,
    ) -> Result<()> {
        let r = VmRef::parse_for(vm, "request_shutdown")?;
        let force = self.options.server_force_stop;
        shutdown::request_shutdown(&self.client, &self.last, &r, channel, opts, force).await
    }

    async fn reset(&self, vm: &VmId) -> Result<()> {
        power::reset(&self.client, &VmRef::parse_for(vm, "reset")?).await
    }

    /// `status/reboot` through `channel`, returning when PVE's reboot task has ended (see
    /// [`ProxmoxProvider`]'s docs: Agent needs the agent enabled and answering, Acpi needs it
    /// disabled).
    async fn reboot(&self, vm: &VmId, channel: ShutdownChannel) -> Result<()> {
        let r = VmRef::parse_for(vm, "reboot")?;
        reboot::reboot(&self.client, &self.last, &r, channel).await
    }

    async fn pause(&self, vm: &VmId) -> Result<()> {
        power::pause(&self.client, &VmRef::parse_for(vm, "pause")?).await
    }

    async fn resume(&self, vm: &VmId) -> Result<()> {
        power::resume(&self.client, &VmRef::parse_for(vm, "resume")?).await
    }

    async fn create(&self, spec: &VmCreateSpec) -> Result<VmId> {
        let defaults = CreateDefaults {
            node: self.options.default_node.as_deref(),
            storage: &self.options.default_storage,
        };
        create::create(&self.client, &self.last, spec, defaults).await
    }

    async fn delete(&self, vm: &VmId, _opts: &DeleteOptions) -> Result<()> {
        create::delete(&self.client, &self.last, &VmRef::parse_for(vm, "delete")?).await
    }

    async fn reconfigure(
        &self,
        vm: &VmId,
        change: &ReconfigureRequest,
    ) -> Result<ReconfigureResult> {
        reconfigure::reconfigure(&self.client, &VmRef::parse_for(vm, "reconfigure")?, change).await
    }

    async fn describe(&self, vm: &VmId) -> Result<VmDescription> {
        inventory::describe(&self.client, &self.last, &VmRef::parse_for(vm, "describe")?).await
    }

    async fn list_vms(&self, opts: &ListOptions) -> Result<Vec<VmDescription>> {
        inventory::list_vms(&self.client, opts).await
    }

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
impl Snapshotter for ProxmoxProvider {
    async fn create_snapshot(&self, vm: &VmId, opts: &SnapshotOptions) -> Result<SnapshotInfo> {
        snapshot::create_snapshot(
            &self.client,
            &VmRef::parse_for(vm, "snapshot_create")?,
            opts,
        )
        .await
    }

    async fn list_snapshots(&self, vm: &VmId) -> Result<Vec<SnapshotInfo>> {
        snapshot::list_snapshots(&self.client, &VmRef::parse_for(vm, "snapshot_list")?).await
    }

    async fn revert_snapshot(&self, vm: &VmId, snapshot: &str, opts: &RevertOptions) -> Result<()> {
        let r = VmRef::parse_for(vm, "snapshot_revert")?;
        snapshot::revert_snapshot(&self.client, &self.last, &r, snapshot, opts).await
    }

    async fn delete_snapshot(
        &self,
        vm: &VmId,
        snapshot: &str,
        opts: &DeleteSnapshotOptions,
    ) -> Result<()> {
        snapshot::delete_snapshot(
            &self.client,
            &VmRef::parse_for(vm, "snapshot_delete")?,
            snapshot,
            opts,
        )
        .await
    }
}

#[async_trait]
impl Cloner for ProxmoxProvider {
    async fn clone_vm(&self, source: &VmId, opts: &CloneOptions) -> Result<CloneResult> {
        clone::clone_vm(
            &self.client,
            &self.last,
            &VmRef::parse_for(source, "clone")?,
            opts,
            &self.options.default_storage,
        )
        .await
    }
}
