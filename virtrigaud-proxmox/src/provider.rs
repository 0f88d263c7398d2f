//! [`ProxmoxProvider`]: the virtrigaud [`Provider`] for Proxmox VE.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use virtrigaud_core::placement::{DatastoreInfo, HostInfo, Resources};
use virtrigaud_core::{
    AgentStatus, CloneOptions, CloneResult, Cloner, DeleteOptions, DeleteSnapshotOptions, DiskInfo,
    Error, ErrorKind, Incarnation, Inventory, ListOptions, OffReason, PauseReason, PowerOffOptions,
    PowerState, Provider, ProviderCapabilities, ReconfigureRequest, ReconfigureResult, Result,
    RevertOptions, ShutdownChannel, ShutdownRequestOptions, SnapshotInfo, SnapshotOptions,
    Snapshotter, StartOptions, VmCapabilities, VmCreateSpec, VmDescription, VmId,
};

use crate::client::{ApiError, PveClient};
use crate::config::{Auth, ProxmoxConfig};
use crate::error::{PROVIDER, to_core};
use crate::request::{ApiRequest, api};
use crate::task::{TaskOutcome, TaskWaiter, Upid};
use crate::types::{
    ClusterVm, NodeEntry, PendingEntry, SnapshotEntry, TaskListEntry, TaskLogLine, TaskStatus,
    VmConfig, VmStatus,
};

/// A VM address: `node/vmid` (the form of a Proxmox [`VmId`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VmRef {
    /// Node name.
    pub node: String,
    /// VM id (≥ 100).
    pub vmid: u32,
}

impl VmRef {
    /// Parses `node/vmid`.
    pub fn parse(id: &VmId) -> Result<VmRef> {
        let s = id.as_str();
        let (node, vmid) = s.split_once('/').ok_or_else(|| {
            Error::invalid_spec(format!("Proxmox VM ids look like `node/vmid`, got {s:?}"))
                .with_provider(PROVIDER)
        })?;
        let vmid: u32 = vmid.parse().map_err(|_| {
            Error::invalid_spec(format!("Proxmox VM id {s:?}: {vmid:?} is not a number"))
                .with_provider(PROVIDER)
        })?;
        if node.is_empty() || node.contains('/') || vmid < 100 {
            return Err(Error::invalid_spec(format!(
                "Proxmox VM id {s:?} is not `node/vmid` with vmid >= 100"
            ))
            .with_provider(PROVIDER));
        }
        Ok(VmRef {
            node: node.to_owned(),
            vmid,
        })
    }

    /// The [`VmId`] `node/vmid`.
    pub fn to_vm_id(&self) -> VmId {
        VmId::new(format!("{}/{}", self.node, self.vmid))
    }
}

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

/// How often a running shutdown task is re-checked by [`Provider::power_state`]. Every read
/// fetches the VM's status (which says off as soon as it is); the task is read only to notice
/// that it ended without stopping the VM (then the state is `Running` again), so a slow
/// re-check costs nothing in detection and keeps a polled shutdown near one request per poll.
const TASK_RECHECK: Duration = Duration::from_secs(10);

/// How long [`Provider::cancel_shutdown`] waits for a stopped shutdown task to end (PVE
/// signals the worker and answers at once).
const CANCEL_WAIT: Duration = Duration::from_secs(10);

/// What PVE's `qmshutdown` task logs when its `forceStop` kills the VM at the timeout
/// (qemu-server's `_do_vm_stop`: "VM still running - terminating now with SIGTERM", then
/// "… SIGKILL"; "VM quit/powerdown failed - terminating now with SIGTERM").
const FORCED_STOP_LOG: &str = "terminating now with SIG";

/// What this process last did to a VM's power (to report `ShuttingDown` and the `OffReason`).
#[derive(Debug, Clone)]
enum LastAction {
    /// Our shutdown task (started or adopted), and when it was last seen running.
    Shutdown(Upid, Option<tokio::time::Instant>),
    /// The ACPI button pressed through the monitor, at this Unix time (our clock).
    AcpiPress(u64),
    /// Our hard stop.
    Stop,
    /// The VM went off after our request, for this reason (found out once, kept until it runs
    /// again).
    Off(OffReason),
}

/// What one node offers (see [`ProxmoxProvider::node_capabilities`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeCapabilities {
    /// Node name.
    pub node: String,
    /// Whether the cluster reports it online.
    pub online: bool,
    /// PVE version (`9.0.10`), cluster-wide.
    pub pve_version: String,
    /// `status/stop` knows `overrule-shutdown` (PVE 8.1+).
    pub overrule_shutdown: bool,
    /// Logical CPUs.
    pub cpus: u64,
    /// Memory, MiB.
    pub memory_mib: u64,
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
/// # Reads that cannot tell
///
/// `status/current` has only `running` and `stopped` in PVE's schema. Only `stopped` reads as
/// off; an empty, missing or unknown `status`, or an answer that is not a VM status, is a
/// retryable [`ErrorKind::Unavailable`] naming the value, and nothing is sent on it.
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
    last: Mutex<HashMap<VmRef, LastAction>>,
}

fn ctx<'a>(op: &'static str, vm: &'a VmRef) -> impl FnOnce(ApiError) -> Error + 'a {
    move |e| to_core(e, op, &format!("{}/{}", vm.node, vm.vmid))
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
            last: Mutex::new(HashMap::new()),
        }
    }

    /// Builds the client from `config` and a provider over it.
    pub fn connect(config: ProxmoxConfig) -> Result<Self> {
        let client = PveClient::new(config).map_err(|e| to_core(e, "connect", ""))?;
        Ok(Self::new(client))
    }

    /// The underlying API client.
    pub fn client(&self) -> &PveClient {
        &self.client
    }

    fn remember(&self, vm: &VmRef, action: Option<LastAction>) {
        let mut map = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match action {
            Some(a) => map.insert(vm.clone(), a),
            None => map.remove(vm),
        };
    }

    fn last_action(&self, vm: &VmRef) -> Option<LastAction> {
        self.last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(vm)
            .cloned()
    }

    /// `status/current`, checked: its `status` is `running` or `stopped`. Anything else (an
    /// empty answer, `{}`, an unknown value) is a retryable `Unavailable`, never "off".
    async fn status(&self, vm: &VmRef, op: &'static str) -> Result<VmStatus> {
        let data = self
            .client
            .send(&api::status_current(&vm.node, vm.vmid))
            .await
            .map_err(ctx(op, vm))?;
        let status: VmStatus = match data {
            serde_json::Value::Null => VmStatus::default(),
            other => serde_json::from_value(other).map_err(|e| {
                Error::unavailable(format!(
                    "PVE answered status/current of {} with something that is not a VM status: {e}",
                    vm.vmid
                ))
                .with_provider(PROVIDER)
                .with_operation(op)
                .with_resource(format!("{}/{}", vm.node, vm.vmid))
            })?,
        };
        match status.status.as_str() {
            "running" | "stopped" => Ok(status),
            other => Err(unknown_status(vm, op, other)),
        }
    }

    /// Who this client is on PVE (the user field of the UPIDs of the tasks it starts).
    fn own_user(&self) -> &str {
        match &self.client.config().auth {
            Auth::ApiToken { token_id, .. } => token_id,
            Auth::Password { username, .. } => username,
        }
    }

    /// Whether a `qmshutdown` task's log shows its `forceStop` killing the VM; `None` when the
    /// log cannot be read.
    async fn task_force_stopped(&self, upid: &Upid) -> Option<bool> {
        let req = api::task_log(upid.node(), upid.as_str(), 0, 500);
        match self.client.call::<Vec<TaskLogLine>>(&req).await {
            Ok(lines) => Some(lines.iter().any(|l| l.t.contains(FORCED_STOP_LOG))),
            Err(e) => {
                tracing::debug!(%upid, error = %e, "could not read the shutdown task log");
                None
            }
        }
    }

    /// Why a VM that our request was shutting down is off now.
    ///
    /// * `Destroyed` when it was killed: our `qmshutdown` task's log shows its `forceStop`
    ///   ([`FORCED_STOP_LOG`]; qemu-server writes that line before it signals QEMU, so a VM
    ///   already off has it in the log), or someone's `qmstop` started since the request (an
    ///   operator's `qm stop`, another client's power-off).
    /// * `GuestShutdown` when neither is there.
    /// * `Unknown` when PVE could not be asked.
    async fn off_reason_after_request(
        &self,
        vm: &VmRef,
        task: Option<&Upid>,
        since: Option<u64>,
    ) -> OffReason {
        if let Some(upid) = task {
            match self.task_force_stopped(upid).await {
                Some(true) => return OffReason::Destroyed,
                Some(false) => {}
                None => return OffReason::Unknown,
            }
        }
        let Some(since) = since.or_else(|| task.and_then(Upid::starttime)) else {
            return OffReason::Unknown;
        };
        let req = api::vm_tasks_since(&vm.node, vm.vmid, "qmstop", since);
        match self.client.call::<Vec<TaskListEntry>>(&req).await {
            Ok(tasks) => {
                let vmid = vm.vmid.to_string();
                let stopped = tasks.iter().any(|t| {
                    t.task_type == "qmstop"
                        && t.starttime.is_some_and(|s| s >= since)
                        && Upid::parse(&t.upid).is_some_and(|u| u.id() == vmid)
                });
                if stopped {
                    OffReason::Destroyed
                } else {
                    OffReason::GuestShutdown
                }
            }
            Err(e) => {
                tracing::debug!(vm = %vm.to_vm_id(), error = %e, "could not list the VM's stop tasks");
                OffReason::Unknown
            }
        }
    }

    async fn config(&self, vm: &VmRef, op: &'static str) -> Result<VmConfig> {
        self.client
            .call(&api::config(&vm.node, vm.vmid))
            .await
            .map_err(ctx(op, vm))
    }

    async fn pending(&self, vm: &VmRef, op: &'static str) -> Result<Vec<PendingEntry>> {
        self.client
            .call(&api::pending(&vm.node, vm.vmid))
            .await
            .map_err(ctx(op, vm))
    }

    /// Sends a request whose answer is a UPID and waits for the task.
    async fn run_task(
        &self,
        req: &ApiRequest,
        op: &'static str,
        vm: &VmRef,
    ) -> Result<TaskOutcome> {
        let upid = self.start_task(req, op, vm).await?;
        TaskWaiter::new(&self.client)
            .wait(&upid)
            .await
            .map_err(ctx(op, vm))
    }

    async fn start_task(&self, req: &ApiRequest, op: &'static str, vm: &VmRef) -> Result<Upid> {
        let data: serde_json::Value = self.client.send(req).await.map_err(ctx(op, vm))?;
        data.as_str().and_then(Upid::parse).ok_or_else(|| {
            Error::internal(format!(
                "{} {}: expected a UPID, got {data}",
                req.method, req.template
            ))
            .with_provider(PROVIDER)
            .with_operation(op)
            .with_resource(format!("{}/{}", vm.node, vm.vmid))
        })
    }

    /// What one node offers: online state, PVE version, `overrule-shutdown`, capacity.
    pub async fn node_capabilities(&self, node: &str) -> Result<NodeCapabilities> {
        #[derive(serde::Deserialize)]
        struct Version {
            #[serde(default)]
            version: String,
        }
        let v: Version = self
            .client
            .call(&api::version())
            .await
            .map_err(|e| to_core(e, "node_capabilities", node))?;
        let nodes: Vec<NodeEntry> = self
            .client
            .call(&api::nodes())
            .await
            .map_err(|e| to_core(e, "node_capabilities", node))?;
        let entry = nodes.into_iter().find(|n| n.node == node).ok_or_else(|| {
            Error::not_found(format!("no PVE node {node:?}"))
                .with_provider(PROVIDER)
                .with_operation("node_capabilities")
        })?;
        let mut parts = v.version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
        let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        Ok(NodeCapabilities {
            node: entry.node,
            online: entry.status == "online",
            pve_version: v.version,
            overrule_shutdown: (major, minor) >= (8, 1),
            cpus: entry.maxcpu.unwrap_or(0),
            memory_mib: entry.maxmem.unwrap_or(0) / (1024 * 1024),
        })
    }

    /// The power state `status/current` shows. Only `stopped` is off; a status other than
    /// `running` or `stopped` is a retryable `Unavailable` error.
    fn power_state_of(vm: &VmRef, status: &VmStatus, op: &'static str) -> Result<PowerState> {
        match status.status.as_str() {
            "stopped" => return Ok(PowerState::Off(OffReason::Unknown)),
            "running" => {}
            other => return Err(unknown_status(vm, op, other)),
        }
        Ok(match status.qmpstatus.as_deref().unwrap_or("running") {
            "paused" => PowerState::Paused(PauseReason::User),
            "suspended" => PowerState::Paused(PauseReason::Unknown),
            "io-error" | "inmigrate" | "postmigrate" | "finish-migrate" | "save-vm"
            | "restore-vm" | "watchdog" | "debug" | "colo" => {
                PowerState::Paused(PauseReason::Hypervisor)
            }
            "prelaunch" => PowerState::Starting,
            "internal-error" | "guest-panicked" => PowerState::Crashed,
            "shutdown" => PowerState::ShuttingDown,
            _ => match status.lock.as_deref() {
                Some(l) if l.starts_with("shutdown") => PowerState::ShuttingDown,
                _ => PowerState::Running,
            },
        })
    }

    async fn stop(&self, vm: &VmRef) -> Result<()> {
        let req = api::stop(&vm.node, vm.vmid, self.options.overrule_shutdown);
        match self.run_task(&req, "power_off", vm).await {
            Err(e)
                if self.options.overrule_shutdown
                    && e.kind() == ErrorKind::InvalidSpec
                    && e.message().contains("overrule-shutdown") =>
            {
                // PVE before 8.1: no overrule-shutdown parameter.
                self.run_task(&api::stop(&vm.node, vm.vmid, false), "power_off", vm)
                    .await
                    .map(|_| ())
            }
            other => other.map(|_| ()),
        }
    }
}

/// The error for a `status` PVE's schema does not have (`running`/`stopped`): PVE cannot tell
/// now, so the caller retries instead of reading it as off.
fn unknown_status(vm: &VmRef, op: &'static str, status: &str) -> Error {
    Error::unavailable(format!(
        "PVE reported status '{status}' for {} (neither running nor stopped)",
        vm.vmid
    ))
    .with_provider(PROVIDER)
    .with_operation(op)
    .with_resource(format!("{}/{}", vm.node, vm.vmid))
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[async_trait]
impl Provider for ProxmoxProvider {
    fn provider_type(&self) -> &'static str {
        PROVIDER
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
        c.linked_clones = true;
        c.full_clones = true;
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
        c
    }

    async fn vm_capabilities(&self, vm: &VmId) -> Result<VmCapabilities> {
        let r = VmRef::parse(vm)?;
        let status = self.status(&r, "vm_capabilities").await?;
        let cfg = self.config(&r, "vm_capabilities").await?;
        let hotplug = cfg
            .get("hotplug")
            .unwrap_or("network,disk,usb")
            .to_ascii_lowercase();
        let hot = |what: &str| hotplug == "1" || hotplug.split(',').any(|h| h.trim() == what);
        let numa = cfg.get_u64("numa").unwrap_or(0) == 1;
        let sockets = cfg.get_u64("sockets").unwrap_or(1);
        let cores = cfg.get_u64("cores").unwrap_or(1);
        let mut c = VmCapabilities::default();
        c.agent_configured = cfg.agent_enabled();
        c.agent_connected = None;
        c.cpu_hot_add = hot("cpu");
        c.max_live_vcpus = if hot("cpu") {
            (sockets * cores) as u32
        } else {
            0
        };
        c.memory_hot_add = hot("memory") && numa;
        c.disk_grow_online = true;
        c.snapshot_memory = status.status == "running";
        c.snapshot_quiesce = c.agent_configured;
        c.linked_clone_source = status.template || cfg.get_u64("template") == Some(1);
        Ok(c)
    }

    async fn power_state(&self, vm: &VmId) -> Result<PowerState> {
        let r = VmRef::parse(vm)?;
        let status = self.status(&r, "power_state").await?;
        let state = Self::power_state_of(&r, &status, "power_state")?;
        match (state, self.last_action(&r)) {
            (PowerState::Off(_), Some(LastAction::Stop)) => {
                Ok(PowerState::Off(OffReason::Destroyed))
            }
            (PowerState::Off(_), Some(LastAction::Off(reason))) => Ok(PowerState::Off(reason)),
            (PowerState::Off(_), Some(LastAction::Shutdown(upid, _))) => {
                // Off after our shutdown task: the guest, or the task's forceStop at the
                // timeout (or someone's stop)? Found out once.
                let reason = self.off_reason_after_request(&r, Some(&upid), None).await;
                if reason != OffReason::Unknown {
                    self.remember(&r, Some(LastAction::Off(reason)));
                }
                Ok(PowerState::Off(reason))
            }
            (PowerState::Off(_), Some(LastAction::AcpiPress(at))) => {
                let reason = self.off_reason_after_request(&r, None, Some(at)).await;
                if reason != OffReason::Unknown {
                    self.remember(&r, Some(LastAction::Off(reason)));
                }
                Ok(PowerState::Off(reason))
            }
            (PowerState::Running, Some(LastAction::Shutdown(upid, seen))) => {
                // Our shutdown task: the VM is shutting down while the task runs. The task
                // is re-checked at most every TASK_RECHECK, to keep polls at one call.
                if seen.is_some_and(|t| t.elapsed() < TASK_RECHECK) {
                    return Ok(PowerState::ShuttingDown);
                }
                let req = api::task_status(upid.node(), upid.as_str());
                match self.client.call::<TaskStatus>(&req).await {
                    Ok(t) if t.status == "running" => {
                        let now = Some(tokio::time::Instant::now());
                        self.remember(&r, Some(LastAction::Shutdown(upid, now)));
                        Ok(PowerState::ShuttingDown)
                    }
                    Ok(t) => {
                        if t.exitstatus.as_deref() != Some("OK") {
                            tracing::warn!(vm = %vm, upid = %upid, exit = ?t.exitstatus, "PVE shutdown task failed");
                        }
                        self.remember(&r, None);
                        Ok(PowerState::Running)
                    }
                    Err(e) => {
                        tracing::debug!(vm = %vm, error = %e, "could not read shutdown task status");
                        Ok(PowerState::Running)
                    }
                }
            }
            (s, Some(LastAction::Stop | LastAction::Off(_))) => {
                // It runs again (started by someone else): what we did belongs to its last run.
                self.remember(&r, None);
                Ok(s)
            }
            (s, _) => Ok(s),
        }
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
        let r = VmRef::parse(vm)?;
        let status = self.status(&r, "incarnation").await?;
        if status.status != "running" {
            return Ok(None);
        }
        Ok(status
            .pid
            .map(|pid| Incarnation::new(format!("{}/{}:qemu-pid:{pid}", r.node, r.vmid))))
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
        let r = VmRef::parse(vm)?;
        let op = "cancel_shutdown";
        let upid = match self.last_action(&r) {
            Some(LastAction::Shutdown(upid, _)) => upid,
            Some(LastAction::AcpiPress(_) | LastAction::Stop | LastAction::Off(_)) => {
                return Ok(());
            }
            None => {
                let active: Vec<TaskListEntry> = self
                    .client
                    .call(&api::active_tasks(&r.node, r.vmid, "qmshutdown"))
                    .await
                    .map_err(ctx(op, &r))?;
                match active
                    .iter()
                    .filter(|t| t.task_type == "qmshutdown" && t.is_running())
                    .find_map(|t| Upid::parse(&t.upid).filter(|u| u.id() == r.vmid.to_string()))
                {
                    Some(upid) => upid,
                    None => return Ok(()),
                }
            }
        };
        let req = api::task_status(upid.node(), upid.as_str());
        let task: TaskStatus = self.client.call(&req).await.map_err(ctx(op, &r))?;
        if task.status != "running" {
            self.remember(&r, None);
            return Ok(());
        }
        if upid.user() != self.own_user() {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!(
                    "the running PVE shutdown task {upid} was started by {}, not by this client; \
                     left running, so PVE may still stop VM {} at its timeout",
                    upid.user(),
                    r.vmid
                ),
            )
            .permanent()
            .with_provider(PROVIDER)
            .with_operation(op)
            .with_resource(vm.to_string()));
        }
        self.client
            .send(&api::task_stop(upid.node(), upid.as_str()))
            .await
            .map_err(ctx(op, &r))?;
        match TaskWaiter::new(&self.client)
            .timeout(CANCEL_WAIT)
            .wait(&upid)
            .await
        {
            // Ended OK: the guest was faster, or the task's forceStop was (then say so).
            Ok(_) => {
                if self.task_force_stopped(&upid).await == Some(true) {
                    self.remember(&r, Some(LastAction::Off(OffReason::Destroyed)));
                    return Err(Error::invalid_state(format!(
                        "too late to cancel: PVE's forceStop of shutdown task {upid} had already stopped VM {}",
                        r.vmid
                    ))
                    .with_provider(PROVIDER)
                    .with_operation(op)
                    .with_resource(vm.to_string()));
                }
                self.remember(&r, None);
                Ok(())
            }
            // "interrupted by signal": stopped before its forceStop.
            Err(ApiError::TaskFailed { .. }) => {
                tracing::debug!(vm = %vm, %upid, "PVE shutdown task stopped");
                self.remember(&r, None);
                Ok(())
            }
            Err(e) => Err(to_core(e, op, vm.as_str())),
        }
    }

    async fn start(&self, vm: &VmId, opts: &StartOptions) -> Result<()> {
        let r = VmRef::parse(vm)?;
        if opts.paused {
            return Err(Error::unsupported("start paused")
                .with_provider(PROVIDER)
                .with_resource(vm.to_string()));
        }
        self.remember(&r, None);
        self.run_task(&api::start(&r.node, r.vmid), "start", &r)
            .await
            .map(|_| ())
    }

    async fn power_off(&self, vm: &VmId, _opts: &PowerOffOptions) -> Result<()> {
        let r = VmRef::parse(vm)?;
        let status = self.status(&r, "power_off").await?;
        if status.status != "running" {
            return Err(
                Error::invalid_state(format!("VM {} is already stopped", r.vmid))
                    .with_provider(PROVIDER)
                    .with_operation("power_off")
                    .with_resource(vm.to_string()),
            );
        }
        self.stop(&r).await?;
        self.remember(&r, Some(LastAction::Stop));
        Ok(())
    }

    async fn probe_agent(&self, vm: &VmId) -> Result<AgentStatus> {
        let r = VmRef::parse(vm)?;
        match self.client.send(&api::agent_ping(&r.node, r.vmid)).await {
            Ok(_) => Ok(AgentStatus::Connected),
            // "No QEMU guest agent configured", "QEMU guest agent is not running", "… got timeout".
            Err(ApiError::Http {
                status: 500,
                message,
                ..
            }) if !message.contains("does not exist") && !message.contains("lock") => {
                tracing::debug!(vm = %vm, %message, "guest agent not connected");
                Ok(AgentStatus::NotConnected)
            }
            Err(e) => Err(to_core(e, "probe_agent", vm.as_str())),
        }
    }

    async fn request_shutdown(
        &self,
        vm: &VmId,
        channel: ShutdownChannel,
        opts: &ShutdownRequestOptions,
    ) -> Result<()> {
        let r = VmRef::parse(vm)?;
        let status = self.status(&r, "request_shutdown").await?;
        let fail = |kind: ErrorKind, msg: String| {
            Err(Error::new(kind, msg)
                .with_provider(PROVIDER)
                .with_operation("request_shutdown")
                .with_resource(vm.to_string()))
        };
        match Self::power_state_of(&r, &status, "request_shutdown")? {
            PowerState::Off(_) => {
                return fail(
                    ErrorKind::InvalidState,
                    format!("VM {} is not running", r.vmid),
                );
            }
            PowerState::Paused(_) => {
                return fail(
                    ErrorKind::InvalidState,
                    format!(
                        "VM {} is paused: PVE refuses a graceful shutdown of a paused VM (and with forceStop it \
                         would hard-stop it); resume it first or power it off",
                        r.vmid
                    ),
                );
            }
            _ => {}
        }
        let agent = status.agent;
        match channel {
            ShutdownChannel::Agent if !agent => {
                return fail(
                    ErrorKind::Unsupported,
                    format!(
                        "VM {} has no guest agent enabled in its config (`agent: 1`)",
                        r.vmid
                    ),
                );
            }
            ShutdownChannel::Acpi if agent => {
                // status/shutdown would go through the (unresponsive) agent: press ACPI directly.
                self.client
                    .send(&api::monitor(&r.node, r.vmid, "system_powerdown"))
                    .await
                    .map_err(ctx("request_shutdown", &r))?;
                self.remember(&r, Some(LastAction::AcpiPress(now_secs())));
                return Ok(());
            }
            _ => {}
        }
        // Idempotent across restarts: a shutdown task that is already running (ours from
        // before a restart, or anyone's) holds the config lock, and a second one would only
        // queue behind it. Adopt it instead.
        let active: Vec<TaskListEntry> = self
            .client
            .call(&api::active_tasks(&r.node, r.vmid, "qmshutdown"))
            .await
            .map_err(ctx("request_shutdown", &r))?;
        if let Some(upid) = active
            .iter()
            .filter(|t| t.task_type == "qmshutdown" && t.is_running())
            .find_map(|t| Upid::parse(&t.upid).filter(|u| u.id() == r.vmid.to_string()))
        {
            tracing::debug!(vm = %vm, %upid, "a PVE shutdown task is already running; adopting it");
            self.remember(&r, Some(LastAction::Shutdown(upid, None)));
            return Ok(());
        }
        let (timeout, force) = match opts.remaining_grace {
            Some(g) => {
                let secs = g.as_secs() + u64::from(g.subsec_nanos() > 0);
                (Some(secs.max(1)), self.options.server_force_stop)
            }
            None => (None, false),
        };
        let upid = self
            .start_task(
                &api::shutdown(&r.node, r.vmid, timeout, force),
                "request_shutdown",
                &r,
            )
            .await?;
        tracing::debug!(vm = %vm, %upid, ?timeout, force, %channel, "PVE shutdown requested");
        self.remember(&r, Some(LastAction::Shutdown(upid, None)));
        Ok(())
    }

    async fn reset(&self, vm: &VmId) -> Result<()> {
        let r = VmRef::parse(vm)?;
        self.run_task(&api::reset(&r.node, r.vmid), "reset", &r)
            .await
            .map(|_| ())
    }

    async fn reboot(&self, vm: &VmId, _channel: ShutdownChannel) -> Result<()> {
        // PVE picks agent or ACPI for reboot from the VM's `agent` option, as for shutdown.
        let r = VmRef::parse(vm)?;
        self.start_task(&api::reboot(&r.node, r.vmid, None), "reboot", &r)
            .await
            .map(|_| ())
    }

    async fn pause(&self, vm: &VmId) -> Result<()> {
        let r = VmRef::parse(vm)?;
        self.run_task(&api::suspend(&r.node, r.vmid), "pause", &r)
            .await
            .map(|_| ())
    }

    async fn resume(&self, vm: &VmId) -> Result<()> {
        let r = VmRef::parse(vm)?;
        self.run_task(&api::resume(&r.node, r.vmid), "resume", &r)
            .await
            .map(|_| ())
    }

    async fn create(&self, spec: &VmCreateSpec) -> Result<VmId> {
        let node = match spec
            .placement
            .clone()
            .or_else(|| self.options.default_node.clone())
        {
            Some(n) => n,
            None => {
                let nodes: Vec<NodeEntry> = self
                    .client
                    .call(&api::nodes())
                    .await
                    .map_err(|e| to_core(e, "create", &spec.name))?;
                nodes
                    .into_iter()
                    .find(|n| n.status == "online")
                    .map(|n| n.node)
                    .ok_or_else(|| {
                        Error::unavailable("no online PVE node")
                            .with_provider(PROVIDER)
                            .with_operation("create")
                    })?
            }
        };
        let mut config: Vec<(String, String)> = vec![
            ("name".into(), spec.name.clone()),
            ("cores".into(), spec.cpu.max(1).to_string()),
            ("memory".into(), spec.memory_mib.max(16).to_string()),
        ];
        for (i, d) in spec.disks.iter().enumerate() {
            let storage = d
                .disk_type
                .as_deref()
                .map_or(self.options.default_storage.as_str(), |_| {
                    self.options.default_storage.as_str()
                });
            config.push((
                format!("scsi{i}"),
                format!("{storage}:{}", d.size_gib.max(1)),
            ));
        }
        for (i, n) in spec.networks.iter().enumerate() {
            config.push((
                format!("net{i}"),
                format!(
                    "{},bridge={}",
                    n.model.as_deref().unwrap_or("virtio"),
                    n.network
                ),
            ));
        }
        if !spec.labels.is_empty() {
            config.push(("tags".into(), labels_to_tags(&spec.labels)));
        }
        for attempt in 0..3 {
            let id: serde_json::Value = self
                .client
                .send(&api::next_id())
                .await
                .map_err(|e| to_core(e, "create", &spec.name))?;
            let vmid: u32 = crate::types::lenient_u32(&id).ok_or_else(|| {
                Error::internal(format!("cluster/nextid answered {id}")).with_provider(PROVIDER)
            })?;
            let r = VmRef {
                node: node.clone(),
                vmid,
            };
            match self
                .run_task(
                    &api::create(&node, vmid, &config, spec.power_on),
                    "create",
                    &r,
                )
                .await
            {
                Ok(_) => return Ok(r.to_vm_id()),
                Err(e) if e.kind() == ErrorKind::AlreadyExists && attempt < 2 => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::new(ErrorKind::Conflict, "could not get a free VM id").with_provider(PROVIDER))
    }

    async fn delete(&self, vm: &VmId, _opts: &DeleteOptions) -> Result<()> {
        let r = VmRef::parse(vm)?;
        self.run_task(&api::destroy(&r.node, r.vmid, true), "delete", &r)
            .await?;
        self.remember(&r, None);
        Ok(())
    }

    async fn reconfigure(
        &self,
        vm: &VmId,
        change: &ReconfigureRequest,
    ) -> Result<ReconfigureResult> {
        let r = VmRef::parse(vm)?;
        let cfg = self.config(&r, "reconfigure").await?;
        let mut notes = Vec::new();
        // Disks first (grow only), checked before anything changes.
        let disks = cfg.disks();
        let mut resizes = Vec::new();
        for d in &change.disks {
            let Some((key, _, size)) = disks.iter().find(|(k, v, _)| *k == d.name || *v == d.name)
            else {
                return Err(
                    Error::not_found(format!("VM {} has no disk {:?}", r.vmid, d.name))
                        .with_provider(PROVIDER)
                        .with_operation("reconfigure")
                        .with_resource(vm.to_string()),
                );
            };
            if d.size_gib < *size {
                return Err(Error::invalid_spec(format!(
                    "disk {key} is {size} GiB; shrinking to {} GiB is not supported (grow only)",
                    d.size_gib
                ))
                .with_provider(PROVIDER)
                .with_operation("reconfigure")
                .with_resource(vm.to_string()));
            }
            if d.size_gib > *size {
                resizes.push((key.clone(), d.size_gib));
            }
        }
        let mut changes: Vec<(&str, String)> = Vec::new();
        if let Some(cpu) = change.cpu
            && cfg.get_u64("cores") != Some(u64::from(cpu))
        {
            changes.push(("cores", cpu.to_string()));
        }
        if let Some(mem) = change.memory_mib
            && cfg.get_u64("memory") != Some(mem)
        {
            changes.push(("memory", mem.to_string()));
        }
        let mut digest = cfg.digest.clone();
        if !changes.is_empty() {
            // The digest makes PVE refuse the change if someone else changed the config since
            // we read it ("checksum mismatch" → Conflict).
            self.client
                .send(&api::update_config(
                    &r.node,
                    r.vmid,
                    digest.as_deref(),
                    &changes,
                ))
                .await
                .map_err(ctx("reconfigure", &r))?;
            digest = None;
            notes.extend(changes.iter().map(|(k, v)| format!("{k}={v}")));
        }
        for (key, gib) in &resizes {
            let data = self
                .client
                .send(&api::resize(
                    &r.node,
                    r.vmid,
                    key,
                    &format!("{gib}G"),
                    digest.as_deref(),
                ))
                .await
                .map_err(ctx("reconfigure", &r))?;
            if let Some(upid) = data.as_str().and_then(Upid::parse) {
                TaskWaiter::new(&self.client)
                    .wait(&upid)
                    .await
                    .map_err(ctx("reconfigure", &r))?;
            }
            digest = None;
            notes.push(format!("{key} grown to {gib}G"));
        }
        let pending: Vec<String> = self
            .pending(&r, "reconfigure")
            .await?
            .into_iter()
            .filter(PendingEntry::is_pending)
            .map(|p| p.key)
            .collect();
        let touched: Vec<&str> = changes.iter().map(|(k, _)| *k).collect();
        let pending_touched: Vec<&String> = pending
            .iter()
            .filter(|k| touched.contains(&k.as_str()))
            .collect();
        let mut result = ReconfigureResult::default();
        result.needs_power_cycle = !pending_touched.is_empty();
        result.applied_live = !changes.is_empty() || !resizes.is_empty();
        if result.needs_power_cycle {
            result.applied_live = pending_touched.len() < touched.len() || !resizes.is_empty();
            notes.push(format!(
                "pending until the next power cycle: {}",
                pending_touched
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        result.notes = notes;
        Ok(result)
    }

    async fn describe(&self, vm: &VmId) -> Result<VmDescription> {
        let r = VmRef::parse(vm)?;
        let state = self.power_state(vm).await?;
        let cfg = self.config(&r, "describe").await?;
        let pending = self.pending(&r, "describe").await?;
        let name = cfg
            .get("name")
            .map(str::to_owned)
            .unwrap_or_else(|| format!("VM {}", r.vmid));
        let mut d = VmDescription::new(r.to_vm_id(), name, state);
        d.cpu = (cfg.get_u64("cores").unwrap_or(1) * cfg.get_u64("sockets").unwrap_or(1)) as u32;
        d.memory_mib = cfg.get_u64("memory").unwrap_or(512);
        d.disks = cfg
            .disks()
            .into_iter()
            .map(|(k, _, s)| DiskInfo::new(k, s))
            .collect();
        d.labels = tags_to_labels(cfg.get("tags"));
        d.host = Some(r.node.clone());
        d.pending_power_cycle = pending.iter().any(PendingEntry::is_pending);
        Ok(d)
    }

    async fn list_vms(&self, opts: &ListOptions) -> Result<Vec<VmDescription>> {
        let vms: Vec<ClusterVm> = self
            .client
            .call(&api::cluster_vms())
            .await
            .map_err(|e| to_core(e, "list_vms", ""))?;
        let mut out = Vec::new();
        for v in vms {
            let Some(vmid) = v.vmid else { continue };
            if v.kind != "qemu" {
                continue;
            }
            let labels = tags_to_labels(v.tags.as_deref());
            if !opts
                .labels
                .iter()
                .all(|(k, val)| labels.get(k) == Some(val))
            {
                continue;
            }
            let state = match v.status.as_str() {
                "running" => PowerState::Running,
                "stopped" => PowerState::Off(OffReason::Unknown),
                _ => continue, // node offline: state unknown
            };
            let id = VmId::new(format!("{}/{vmid}", v.node));
            let mut d = VmDescription::new(id, v.name.unwrap_or_default(), state);
            d.cpu = v.maxcpu.unwrap_or(0) as u32;
            d.memory_mib = v.maxmem.unwrap_or(0) / (1024 * 1024);
            d.labels = labels;
            d.host = Some(v.node);
            out.push(d);
        }
        Ok(out)
    }

    async fn inventory(&self) -> Result<Inventory> {
        let nodes: Vec<NodeEntry> = self
            .client
            .call(&api::nodes())
            .await
            .map_err(|e| to_core(e, "inventory", ""))?;
        let vms: Vec<ClusterVm> = self
            .client
            .call(&api::cluster_vms())
            .await
            .map_err(|e| to_core(e, "inventory", ""))?;
        #[derive(serde::Deserialize)]
        struct Store {
            #[serde(default)]
            storage: String,
            #[serde(default)]
            node: String,
            #[serde(default, deserialize_with = "crate::types::lenient::opt_u64")]
            maxdisk: Option<u64>,
            #[serde(default, deserialize_with = "crate::types::lenient::opt_u64")]
            disk: Option<u64>,
        }
        let stores: Vec<Store> = self
            .client
            .call(&api::cluster_storage())
            .await
            .map_err(|e| to_core(e, "inventory", ""))?;
        let mut inv = Inventory::default();
        for n in nodes.into_iter().filter(|n| n.status == "online") {
            let mut h = HostInfo::new(
                n.node.clone(),
                Resources::new(n.maxcpu.unwrap_or(0), n.maxmem.unwrap_or(0) / (1024 * 1024)),
            );
            let mine: Vec<&ClusterVm> = vms
                .iter()
                .filter(|v| v.node == n.node && v.status == "running")
                .collect();
            h.allocated = Resources::new(
                mine.iter().map(|v| v.maxcpu.unwrap_or(0)).sum(),
                mine.iter().map(|v| v.maxmem.unwrap_or(0)).sum::<u64>() / (1024 * 1024),
            );
            h.vms = vms
                .iter()
                .filter(|v| v.node == n.node)
                .filter_map(|v| v.name.clone())
                .collect();
            h.datastores = stores
                .iter()
                .filter(|s| s.node == n.node)
                .map(|s| s.storage.clone())
                .collect();
            inv.hosts.push(h);
        }
        let mut seen = BTreeMap::new();
        for s in stores {
            let free =
                s.maxdisk.unwrap_or(0).saturating_sub(s.disk.unwrap_or(0)) / (1024 * 1024 * 1024);
            seen.entry(s.storage).or_insert(free);
        }
        inv.datastores = seen
            .into_iter()
            .map(|(n, f)| DatastoreInfo::new(n, f))
            .collect();
        Ok(inv)
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

/// Labels become PVE tags `key-value` (PVE tags allow `[a-z0-9_+.-]`); a tag without `-`
/// is the label `tag = ""`.
fn labels_to_tags(labels: &BTreeMap<String, String>) -> String {
    let clean = |s: &str| -> String {
        s.to_ascii_lowercase()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '.') {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    labels
        .iter()
        .map(|(k, v)| {
            if v.is_empty() {
                clean(k)
            } else {
                format!("{}-{}", clean(k), clean(v))
            }
        })
        .collect::<Vec<_>>()
        .join(";")
}

fn tags_to_labels(tags: Option<&str>) -> BTreeMap<String, String> {
    tags.unwrap_or("")
        .split([';', ',', ' '])
        .filter(|t| !t.is_empty())
        .map(|t| match t.split_once('-') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => (t.to_owned(), String::new()),
        })
        .collect()
}

#[async_trait]
impl Snapshotter for ProxmoxProvider {
    async fn create_snapshot(&self, vm: &VmId, opts: &SnapshotOptions) -> Result<SnapshotInfo> {
        let r = VmRef::parse(vm)?;
        let valid = opts.name.len() >= 2
            && opts
                .name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic())
            && opts
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !valid || opts.name.len() > 40 {
            return Err(Error::invalid_spec(format!(
                "PVE snapshot names are 2-40 characters [A-Za-z0-9_-] starting with a letter: {:?}",
                opts.name
            ))
            .with_provider(PROVIDER)
            .with_operation("snapshot_create"));
        }
        let running = if opts.memory {
            self.status(&r, "snapshot_create").await?.status == "running"
        } else {
            false
        };
        if opts.memory && !running {
            tracing::debug!(vm = %vm, "memory snapshot of a stopped VM: disk-only");
        }
        let req = api::snapshot(
            &r.node,
            r.vmid,
            &opts.name,
            opts.description.as_deref(),
            opts.memory && running,
        );
        self.run_task(&req, "snapshot_create", &r).await?;
        let mut info = SnapshotInfo::new(opts.name.clone(), opts.name.clone());
        info.description = opts.description.clone();
        info.has_memory = opts.memory && running;
        info.quiesced = false;
        info.created_at = Some(UNIX_EPOCH + Duration::from_secs(now_secs()));
        Ok(info)
    }

    async fn list_snapshots(&self, vm: &VmId) -> Result<Vec<SnapshotInfo>> {
        let r = VmRef::parse(vm)?;
        let list: Vec<SnapshotEntry> = self
            .client
            .call(&api::snapshots(&r.node, r.vmid))
            .await
            .map_err(ctx("snapshot_list", &r))?;
        Ok(list
            .into_iter()
            .filter(|s| s.name != "current")
            .map(|s| {
                let mut i = SnapshotInfo::new(s.name.clone(), s.name);
                i.description = s.description.filter(|d| !d.is_empty());
                i.created_at = s
                    .snaptime
                    .and_then(|t| UNIX_EPOCH.checked_add(Duration::from_secs(t)));
                i.has_memory = s.vmstate;
                i.parent = s.parent;
                i
            })
            .collect())
    }

    async fn revert_snapshot(&self, vm: &VmId, snapshot: &str, opts: &RevertOptions) -> Result<()> {
        let r = VmRef::parse(vm)?;
        self.run_task(
            &api::rollback(&r.node, r.vmid, snapshot, opts.start),
            "snapshot_revert",
            &r,
        )
        .await?;
        self.remember(&r, None);
        Ok(())
    }

    async fn delete_snapshot(
        &self,
        vm: &VmId,
        snapshot: &str,
        opts: &DeleteSnapshotOptions,
    ) -> Result<()> {
        let r = VmRef::parse(vm)?;
        if opts.children {
            return Err(Error::unsupported("delete snapshot with children").with_provider(PROVIDER));
        }
        self.run_task(
            &api::delete_snapshot(&r.node, r.vmid, snapshot),
            "snapshot_delete",
            &r,
        )
        .await
        .map(|_| ())
    }
}

#[async_trait]
impl Cloner for ProxmoxProvider {
    async fn clone_vm(&self, source: &VmId, opts: &CloneOptions) -> Result<CloneResult> {
        let src = VmRef::parse(source)?;
        if opts.customization.as_ref().is_some_and(|c| !c.is_empty()) {
            return Err(Error::unsupported("clone customization")
                .with_provider(PROVIDER)
                .with_resource(source.to_string()));
        }
        for attempt in 0..3 {
            let id: serde_json::Value = self
                .client
                .send(&api::next_id())
                .await
                .map_err(ctx("clone", &src))?;
            let newid = crate::types::lenient_u32(&id).ok_or_else(|| {
                Error::internal(format!("cluster/nextid answered {id}")).with_provider(PROVIDER)
            })?;
            let target = opts.placement.as_deref().filter(|p| *p != src.node);
            let req = api::clone(
                &src.node,
                src.vmid,
                newid,
                &opts.target_name,
                !opts.linked,
                opts.snapshot.as_deref(),
                target,
            );
            let new = VmRef {
                node: target.unwrap_or(&src.node).to_owned(),
                vmid: newid,
            };
            match self.run_task(&req, "clone", &src).await {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::AlreadyExists && attempt < 2 => continue,
                Err(e) => {
                    // PVE removes a half-made clone itself; make sure nothing is left.
                    if e.kind() != ErrorKind::AlreadyExists
                        && self.status(&new, "clone").await.is_ok()
                    {
                        let _ = self
                            .run_task(&api::destroy(&new.node, new.vmid, true), "clone", &new)
                            .await;
                    }
                    return Err(e);
                }
            }
            let id = new.to_vm_id();
            if opts.power_on {
                self.start(&id, &StartOptions::default()).await?;
            }
            return Ok(CloneResult::new(id, opts.linked, false));
        }
        Err(Error::new(ErrorKind::Conflict, "could not get a free VM id").with_provider(PROVIDER))
    }
}
