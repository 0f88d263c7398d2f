//! [`VsphereProvider`]: the virtrigaud [`Provider`] for vSphere.

use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use virtrigaud_core::{
    AgentStatus, CloneOptions, CloneResult, Cloner, DeleteOptions, DeleteSnapshotOptions, DiskInfo,
    Error, ErrorKind, Incarnation, ListOptions, OffReason, PowerOffOptions, PowerState,
    PowerStateStream, Provider, ProviderCapabilities, ReconfigureRequest, ReconfigureResult,
    Result, RevertOptions, ShutdownChannel, ShutdownRequestOptions, SnapshotInfo, SnapshotOptions,
    Snapshotter, StartOptions, VmCapabilities, VmDescription, VmId,
};

use std::collections::BTreeMap;

/// vCPUs counted per physical core in the placement inventory (a 4:1 consolidation ratio).
pub const VCPU_PER_CORE: u64 = 4;

use virtrigaud_core::placement::{DatastoreInfo, HostInfo, Inventory, Resources};

use crate::client::{Client, MoRef, Props};
use crate::config::VsphereConfig;
use crate::create;
use crate::fault::VimError;
use crate::spec;
use crate::xml::{Element, Xml};

/// The provider type label.
pub(crate) const PROVIDER_TYPE: &str = "vsphere";

const POWER_PATHS: [&str; 2] = ["runtime.powerState", "guest.guestState"];

/// The vSphere provider: one logged-in vim25 SOAP session.
///
/// [`VmId`]s are VM managed object ids (`vm-57`). Find them with
/// [`VsphereProvider::find_vm_by_path`] or [`VsphereProvider::find_vm_by_name`].
#[derive(Debug, Clone)]
pub struct VsphereProvider {
    pub(crate) client: Arc<Client>,
    pub(crate) defaults: Arc<crate::create::CreateDefaults>,
}

fn map<T>(r: std::result::Result<T, VimError>, op: &'static str, vm: &VmId) -> Result<T> {
    r.map_err(|e| e.into_error(op, Some(vm.as_str())))
}

/// Maps `runtime.powerState` + `guest.guestState` to a core power state.
pub(crate) fn power_state_of(props: &Props) -> Option<PowerState> {
    let power = props.str("runtime.powerState")?;
    Some(match power {
        "poweredOn" => match props.str("guest.guestState") {
            Some("shuttingDown") => PowerState::ShuttingDown,
            _ => PowerState::Running,
        },
        "poweredOff" => PowerState::Off(OffReason::Unknown),
        "suspended" => PowerState::Off(OffReason::Saved),
        _ => return None,
    })
}

/// The paths [`incarnation_of`] reads. vcsim fills only `summary.runtime.bootTime` (the same
/// `VirtualMachineRuntimeInfo` as `runtime` on vCenter and ESXi), so both are asked for.
const INCARNATION_PATHS: [&str; 4] = [
    "runtime.powerState",
    "runtime.bootTime",
    "summary.runtime.bootTime",
    "config.instanceUuid",
];

/// The identity of a powered-on VM's current run: `"<config.instanceUuid>#<runtime.bootTime>"`.
/// vSphere sets `bootTime` when the VM powers on from off and clears it at power-off, so it
/// changes with every power-on. `None` when the VM is not powered on (off or suspended) or the
/// server gives no boot time (the engine then relies on lease expiry).
pub(crate) fn incarnation_of(props: &Props) -> Option<Incarnation> {
    if props.str("runtime.powerState") != Some("poweredOn") {
        return None;
    }
    let boot = props
        .str("runtime.bootTime")
        .or_else(|| props.str("summary.runtime.bootTime"))
        .filter(|b| !b.is_empty())?;
    let uuid = props.str("config.instanceUuid").unwrap_or_default();
    Some(Incarnation::new(format!("{uuid}#{boot}")))
}

impl VsphereProvider {
    /// Connects to vCenter / ESXi and logs in.
    ///
    /// A wrong user name or password is [`ErrorKind::Unauthenticated`]; an unreachable or
    /// untrusted endpoint is [`ErrorKind::Unavailable`].
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
            .map_err(|e| e.into_error("connect", None))?;
        Ok(VsphereProvider {
            client,
            defaults: Arc::new(crate::create::CreateDefaults::from_config(&config)),
        })
    }

    /// Finds a VM by inventory path (`DC0/vm/folder/name`).
    pub async fn find_vm_by_path(&self, path: &str) -> Result<VmId> {
        let found = self
            .client
            .find_by_inventory_path(path)
            .await
            .map_err(|e| e.into_error("find_vm", Some(path)))?;
        match found {
            Some(m) if m.ty == "VirtualMachine" => Ok(VmId::new(m.value)),
            Some(m) => Err(
                Error::invalid_spec(format!("{path} is a {}, not a VM", m.ty))
                    .with_provider(PROVIDER_TYPE)
                    .with_operation("find_vm"),
            ),
            None => Err(Error::not_found(format!("no VM at inventory path {path}"))
                .with_provider(PROVIDER_TYPE)
                .with_operation("find_vm")
                .with_resource(path)),
        }
    }

    /// Finds a VM by display name (through a container view over the whole inventory).
    /// Several VMs with that name are [`ErrorKind::Conflict`].
    pub async fn find_vm_by_name(&self, name: &str) -> Result<VmId> {
        let all = self
            .client
            .list_by_type("VirtualMachine", &["name"])
            .await
            .map_err(|e| e.into_error("find_vm", Some(name)))?;
        let mut hits = all
            .into_iter()
            .filter(|(_, p)| p.str("name") == Some(name))
            .map(|(m, _)| m.value);
        match (hits.next(), hits.next()) {
            (Some(id), None) => Ok(VmId::new(id)),
            (None, _) => Err(Error::not_found(format!("no VM named {name}"))
                .with_provider(PROVIDER_TYPE)
                .with_operation("find_vm")
                .with_resource(name)),
            (Some(_), Some(_)) => Err(Error::new(
                ErrorKind::Conflict,
                format!("several VMs are named {name}"),
            )
            .permanent()
            .with_provider(PROVIDER_TYPE)
            .with_operation("find_vm")
            .with_resource(name)),
        }
    }

    /// Checks that a VM id exists (by managed object id) and returns its display name.
    pub async fn vm_name(&self, vm: &VmId) -> Result<String> {
        let p = map(
            self.client
                .retrieve(&MoRef::vm(vm.as_str()), &["name"])
                .await,
            "describe",
            vm,
        )?;
        Ok(p.str("name").unwrap_or_default().to_owned())
    }

    /// Suspends the VM to disk (`SuspendVM_Task`); it then reads as `Off(Saved)`.
    pub async fn suspend(&self, vm: &VmId) -> Result<()> {
        map(
            self.client
                .run_task("SuspendVM_Task", &MoRef::vm(vm.as_str()), "")
                .await,
            "suspend",
            vm,
        )
        .map(|_| ())
    }

    /// Logs the session out. Later calls log in again.
    pub async fn logout(&self) -> Result<()> {
        self.client
            .logout()
            .await
            .map_err(|e| e.into_error("logout", None))
    }

    /// The number of SOAP calls this provider has sent (including logins); for measurements.
    pub fn soap_calls(&self) -> u64 {
        self.client.calls()
    }

    async fn props(&self, vm: &VmId, paths: &[&str], op: &'static str) -> Result<Props> {
        map(
            self.client.retrieve(&MoRef::vm(vm.as_str()), paths).await,
            op,
            vm,
        )
    }

    async fn vm_task(
        &self,
        vm: &VmId,
        method: &str,
        body: &str,
        op: &'static str,
    ) -> Result<Option<Element>> {
        map(
            self.client
                .run_task(method, &MoRef::vm(vm.as_str()), body)
                .await,
            op,
            vm,
        )
    }

    async fn snapshot_tree(&self, vm: &VmId) -> Result<Vec<SnapshotInfo>> {
        let p = self.props(vm, &["snapshot"], "snapshot_list").await?;
        let mut out = Vec::new();
        if let Some(info) = p.get("snapshot") {
            for root in info.children_named("rootSnapshotList") {
                walk_snapshots(root, None, &mut out);
            }
        }
        Ok(out)
    }

    async fn resolve_snapshot(&self, vm: &VmId, snapshot: &str) -> Result<MoRef> {
        let list = self.snapshot_tree(vm).await?;
        let by_id = list.iter().find(|s| s.id == snapshot);
        let hit = by_id.or_else(|| list.iter().rev().find(|s| s.name == snapshot));
        hit.map(|s| MoRef::new("VirtualMachineSnapshot", &s.id))
            .ok_or_else(|| {
                Error::not_found(format!("VM {vm} has no snapshot {snapshot}"))
                    .with_provider(PROVIDER_TYPE)
                    .with_operation("snapshot")
                    .with_resource(vm.as_str())
            })
    }
}

fn walk_snapshots(tree: &Element, parent: Option<&str>, out: &mut Vec<SnapshotInfo>) {
    let Some(id) = tree.child("snapshot").map(|s| s.text().to_owned()) else {
        return;
    };
    let mut info = SnapshotInfo::new(id.clone(), tree.text_at("name").unwrap_or_default());
    info.description = tree
        .text_at("description")
        .filter(|d| !d.is_empty())
        .map(str::to_owned);
    info.has_memory = tree.text_at("state") == Some("poweredOn");
    info.quiesced = tree.text_at("quiesced") == Some("true");
    info.parent = parent.map(str::to_owned);
    out.push(info);
    for child in tree.children_named("childSnapshotList") {
        walk_snapshots(child, Some(&id), out);
    }
}

/// Disks from `config.hardware.device`: `(label, capacity KiB, device element)`.
pub(crate) fn disks_of(devices: Option<&Element>) -> Vec<(String, u64, Element)> {
    let Some(devs) = devices else {
        return Vec::new();
    };
    devs.children
        .iter()
        .filter(|d| d.xsi_type.as_deref() == Some("VirtualDisk"))
        .map(|d| {
            let label = d.text_at("deviceInfo/label").unwrap_or("disk").to_owned();
            let kib = d
                .text_at("capacityInBytes")
                .and_then(|b| b.parse::<u64>().ok())
                .map(|b| b / 1024)
                .or_else(|| d.text_at("capacityInKB").and_then(|k| k.parse().ok()))
                .unwrap_or(0);
            (label, kib, d.clone())
        })
        .collect()
}

const GIB_KIB: u64 = 1024 * 1024;

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
        c
    }

    async fn vm_capabilities(&self, vm: &VmId) -> Result<VmCapabilities> {
        let p = self
            .props(
                vm,
                &[
                    "runtime.powerState",
                    "guest.toolsRunningStatus",
                    "guest.toolsVersionStatus2",
                    "config.cpuHotAddEnabled",
                    "config.memoryHotAddEnabled",
                    "config.hardware.numCPU",
                    "config.hardware.memoryMB",
                ],
                "vm_capabilities",
            )
            .await?;
        let tools_running = p.str("guest.toolsRunningStatus") == Some("guestToolsRunning");
        let running = p.str("runtime.powerState") == Some("poweredOn");
        let mut c = VmCapabilities::default();
        c.agent_configured = p
            .str("guest.toolsVersionStatus2")
            .is_some_and(|s| s != "guestToolsNotInstalled");
        c.agent_connected = Some(tools_running);
        c.cpu_hot_add = p.bool("config.cpuHotAddEnabled").unwrap_or(false);
        c.memory_hot_add = p.bool("config.memoryHotAddEnabled").unwrap_or(false);
        c.max_live_vcpus = if c.cpu_hot_add {
            0
        } else {
            p.u64("config.hardware.numCPU").unwrap_or(0) as u32
        };
        c.max_live_memory_mib = if c.memory_hot_add {
            0
        } else {
            p.u64("config.hardware.memoryMB").unwrap_or(0)
        };
        c.disk_grow_online = true;
        c.snapshot_memory = running;
        c.snapshot_quiesce = running && tools_running;
        c.linked_clone_source = true;
        Ok(c)
    }

    async fn power_state(&self, vm: &VmId) -> Result<PowerState> {
        let p = self.props(vm, &POWER_PATHS, "power_state").await?;
        power_state_of(&p).ok_or_else(|| {
            Error::internal("VM has no runtime.powerState")
                .with_provider(PROVIDER_TYPE)
                .with_resource(vm.as_str())
        })
    }

    /// The endpoint: `scheme://host:port` of the SDK URL (never its user information, path or
    /// query).
    fn instance_id(&self) -> String {
        self.client.endpoint()
    }

    /// `"<config.instanceUuid>#<runtime.bootTime>"` while the VM is powered on, `None`
    /// otherwise (see the crate docs).
    async fn incarnation(&self, vm: &VmId) -> Result<Option<Incarnation>> {
        let p = self.props(vm, &INCARNATION_PATHS, "incarnation").await?;
        Ok(incarnation_of(&p))
    }

    async fn watch_power_state(&self, vm: &VmId) -> Result<Option<PowerStateStream>> {
        let moref = MoRef::vm(vm.as_str());
        let mut waiter = map(
            self.client.waiter(&moref, &POWER_PATHS).await,
            "watch_power_state",
            vm,
        )?;
        // The first update carries the current values: consume it so the stream only reports
        // changes after this call (callers read power_state themselves).
        let mut props = Props::default();
        let first = map(waiter.next().await, "watch_power_state", vm)?;
        for group in first.unwrap_or_default() {
            props.apply(group);
        }
        let last = power_state_of(&props);
        let vmid = vm.clone();
        let pending: std::collections::VecDeque<PowerState> = std::collections::VecDeque::new();
        let stream = futures::stream::unfold(Some((waiter, props, last, pending)), move |state| {
            let vmid = vmid.clone();
            async move {
                let (mut waiter, mut props, mut last, mut pending) = state?;
                loop {
                    if let Some(s) = pending.pop_front() {
                        return Some((Ok(s), Some((waiter, props, last, pending))));
                    }
                    match waiter.next().await {
                        Ok(Some(groups)) => {
                            // One state per object update, so a batched off-then-on reports both.
                            for group in groups {
                                props.apply(group);
                                let now = power_state_of(&props);
                                if let Some(s) = now.filter(|_| now != last) {
                                    last = now;
                                    pending.push_back(s);
                                }
                            }
                        }
                        Ok(None) => continue,
                        Err(e) => {
                            let err = e.into_error("watch_power_state", Some(vmid.as_str()));
                            waiter.destroy().await;
                            return Some((Err(err), None));
                        }
                    }
                }
            }
        });
        Ok(Some(stream.boxed()))
    }

    async fn start(&self, vm: &VmId, _opts: &StartOptions) -> Result<()> {
        self.vm_task(vm, "PowerOnVM_Task", "", "start")
            .await
            .map(|_| ())
    }

    async fn power_off(&self, vm: &VmId, _opts: &PowerOffOptions) -> Result<()> {
        // InvalidPowerState (already off) maps to ErrorKind::InvalidState.
        self.vm_task(vm, "PowerOffVM_Task", "", "power_off")
            .await
            .map(|_| ())
    }

    async fn probe_agent(&self, vm: &VmId) -> Result<AgentStatus> {
        let p = self
            .props(vm, &["guest.toolsRunningStatus"], "probe_agent")
            .await?;
        Ok(match p.str("guest.toolsRunningStatus") {
            Some("guestToolsRunning") => AgentStatus::Connected,
            Some(_) => AgentStatus::NotConnected,
            None => AgentStatus::Unknown,
        })
    }

    async fn request_shutdown(
        &self,
        vm: &VmId,
        channel: ShutdownChannel,
        _opts: &ShutdownRequestOptions,
    ) -> Result<()> {
        match channel {
            ShutdownChannel::Agent => map(
                self.client.call("ShutdownGuest", &MoRef::vm(vm.as_str()), "").await,
                "request_shutdown",
                vm,
            )
            .map(|_| ()),
            _ => Err(Error::new(
                ErrorKind::Unsupported,
                "vSphere has no ACPI power-button API: shut down through VMware Tools (agent channel)",
            )
            .with_provider(PROVIDER_TYPE)
            .with_operation("request_shutdown")
            .with_resource(vm.as_str())),
        }
    }

    async fn reset(&self, vm: &VmId) -> Result<()> {
        self.vm_task(vm, "ResetVM_Task", "", "reset")
            .await
            .map(|_| ())
    }

    async fn reboot(&self, vm: &VmId, channel: ShutdownChannel) -> Result<()> {
        match channel {
            ShutdownChannel::Agent => map(
                self.client
                    .call("RebootGuest", &MoRef::vm(vm.as_str()), "")
                    .await,
                "reboot",
                vm,
            )
            .map(|_| ()),
            _ => Err(Error::new(
                ErrorKind::Unsupported,
                "vSphere reboots guests through VMware Tools only",
            )
            .with_provider(PROVIDER_TYPE)
            .with_operation("reboot")
            .with_resource(vm.as_str())),
        }
    }

    async fn delete(&self, vm: &VmId, opts: &DeleteOptions) -> Result<()> {
        if opts.delete_disks {
            self.vm_task(vm, "Destroy_Task", "", "delete")
                .await
                .map(|_| ())
        } else {
            map(
                self.client
                    .call("UnregisterVM", &MoRef::vm(vm.as_str()), "")
                    .await,
                "delete",
                vm,
            )
            .map(|_| ())
        }
    }

    async fn reconfigure(
        &self,
        vm: &VmId,
        change: &ReconfigureRequest,
    ) -> Result<ReconfigureResult> {
        let p = self
            .props(
                vm,
                &[
                    "runtime.powerState",
                    "config.hardware.numCPU",
                    "config.hardware.memoryMB",
                    "config.cpuHotAddEnabled",
                    "config.memoryHotAddEnabled",
                    "config.hardware.device",
                ],
                "reconfigure",
            )
            .await?;
        let running = p.str("runtime.powerState") != Some("poweredOff");
        let cur_cpu = p.u64("config.hardware.numCPU").unwrap_or(0) as u32;
        let cur_mem = p.u64("config.hardware.memoryMB").unwrap_or(0);
        let invalid = |msg: String| {
            Error::invalid_state(msg)
                .with_provider(PROVIDER_TYPE)
                .with_operation("reconfigure")
                .with_resource(vm.as_str())
        };
        let mut notes = Vec::new();
        let cpu = change.cpu.filter(|c| *c != cur_cpu);
        let mem = change.memory_mib.filter(|m| *m != cur_mem);
        if running {
            if let Some(c) = cpu {
                if c < cur_cpu || !p.bool("config.cpuHotAddEnabled").unwrap_or(false) {
                    return Err(invalid(format!(
                        "changing vCPUs {cur_cpu} -> {c} on a running VM needs CPU hot-add (grow only); power it off first"
                    )));
                }
                notes.push(format!("vCPUs {cur_cpu} -> {c} hot-added"));
            }
            if let Some(m) = mem {
                if m < cur_mem || !p.bool("config.memoryHotAddEnabled").unwrap_or(false) {
                    return Err(invalid(format!(
                        "changing memory {cur_mem} -> {m} MiB on a running VM needs memory hot-add (grow only); power it off first"
                    )));
                }
                notes.push(format!("memory {cur_mem} -> {m} MiB hot-added"));
            }
        }
        let disks = disks_of(p.get("config.hardware.device"));
        let mut edits = Vec::new();
        for d in &change.disks {
            let Some((label, kib, el)) = disks.iter().find(|(l, _, _)| *l == d.name) else {
                return Err(Error::not_found(format!("VM {vm} has no disk {}", d.name))
                    .with_provider(PROVIDER_TYPE)
                    .with_operation("reconfigure")
                    .with_resource(vm.as_str()));
            };
            let want = d.size_gib * GIB_KIB;
            if want < *kib {
                return Err(Error::invalid_spec(format!(
                    "disk {label} can only grow ({} KiB -> {want} KiB)",
                    kib
                ))
                .with_provider(PROVIDER_TYPE)
                .with_operation("reconfigure")
                .with_resource(vm.as_str()));
            }
            if want > *kib {
                edits.push(spec::grown_disk(el, want));
                notes.push(format!("{label} grown to {} GiB", d.size_gib));
            }
        }
        if cpu.is_none() && mem.is_none() && edits.is_empty() {
            let mut r = ReconfigureResult::default();
            r.applied_live = running;
            r.notes.push("nothing to change".into());
            return Ok(r);
        }
        let body = spec::config_spec(cpu, mem, &edits);
        self.vm_task(vm, "ReconfigVM_Task", &body, "reconfigure")
            .await?;
        let mut r = ReconfigureResult::default();
        r.applied_live = running;
        r.needs_power_cycle = false;
        if !running {
            notes.push("applied while powered off".into());
        }
        r.notes = notes;
        Ok(r)
    }

    async fn describe(&self, vm: &VmId) -> Result<VmDescription> {
        let p = self
            .props(
                vm,
                &[
                    "name",
                    "runtime.powerState",
                    "guest.guestState",
                    "config.hardware.numCPU",
                    "config.hardware.memoryMB",
                    "config.hardware.device",
                    "config.extraConfig",
                    "runtime.host",
                ],
                "describe",
            )
            .await?;
        Ok(describe_from(vm.clone(), &p))
    }

    async fn list_vms(&self, opts: &ListOptions) -> Result<Vec<VmDescription>> {
        let all = self
            .client
            .list_by_type(
                "VirtualMachine",
                &[
                    "name",
                    "runtime.powerState",
                    "guest.guestState",
                    "config.hardware.numCPU",
                    "config.hardware.memoryMB",
                    "config.extraConfig",
                    "runtime.host",
                ],
            )
            .await
            .map_err(|e| e.into_error("list_vms", None))?;
        Ok(all
            .into_iter()
            .map(|(m, p)| describe_from(VmId::new(m.value), &p))
            .filter(|d| create::has_labels(&d.labels, &opts.labels))
            .collect())
    }

    /// Creates an empty VM (`CreateVM_Task`): one paravirtual SCSI controller with one disk per
    /// [`virtrigaud_core::DiskCreateSpec`] (thin unless `thick`), one adapter per network
    /// (vmxnet3 unless `e1000`/`e1000e`), labels and cloud-init user data in `extraConfig`,
    /// then `PowerOnVM_Task` when asked. `placement` names a host or a cluster / compute
    /// resource. A failure after the VM exists deletes it again.
    async fn create(&self, spec: &virtrigaud_core::VmCreateSpec) -> Result<VmId> {
        self.create_with(spec, None).await
    }

    /// Hosts (with their cluster, vCPU capacity, memory and reachable datastores), the vCPUs
    /// and memory of their powered-on VMs as allocation, and datastores with their free space.
    /// vCPU capacity is physical cores × [`VCPU_PER_CORE`] (vSphere overcommits CPU, not
    /// memory).
    async fn inventory(&self) -> Result<Inventory> {
        let err = |e: VimError| e.into_error("inventory", None);
        let clusters: BTreeMap<String, String> = self
            .client
            .list_by_type("ClusterComputeResource", &["name"])
            .await
            .map_err(err)?
            .into_iter()
            .map(|(m, p)| (m.value, p.str("name").unwrap_or_default().to_owned()))
            .collect();
        let datastores = self
            .client
            .list_by_type("Datastore", &["name", "summary.freeSpace"])
            .await
            .map_err(err)?;
        let ds_names: BTreeMap<String, String> = datastores
            .iter()
            .map(|(m, p)| {
                (
                    m.value.clone(),
                    p.str("name").unwrap_or_default().to_owned(),
                )
            })
            .collect();
        let vms = self
            .client
            .list_by_type(
                "VirtualMachine",
                &[
                    "name",
                    "runtime.powerState",
                    "runtime.host",
                    "config.hardware.numCPU",
                    "config.hardware.memoryMB",
                ],
            )
            .await
            .map_err(err)?;
        let hosts = self
            .client
            .list_by_type(
                "HostSystem",
                &[
                    "name",
                    "parent",
                    "datastore",
                    "summary.hardware.numCpuCores",
                    "summary.hardware.memorySize",
                ],
            )
            .await
            .map_err(err)?;
        let mut inv = Inventory::default();
        for (m, p) in hosts {
            let mut h = HostInfo::new(
                p.str("name").unwrap_or(&m.value),
                Resources::new(
                    p.u64("summary.hardware.numCpuCores").unwrap_or(0) * VCPU_PER_CORE,
                    p.u64("summary.hardware.memorySize").unwrap_or(0) / (1024 * 1024),
                ),
            );
            h.cluster = p.str("parent").and_then(|c| clusters.get(c)).cloned();
            h.datastores = p
                .get("datastore")
                .map(|e| {
                    e.children
                        .iter()
                        .filter_map(|c| ds_names.get(c.text()).cloned())
                        .collect()
                })
                .unwrap_or_default();
            let mut alloc = Resources::default();
            for (_, v) in vms
                .iter()
                .filter(|(_, v)| v.str("runtime.host") == Some(m.value.as_str()))
            {
                h.vms.push(v.str("name").unwrap_or_default().to_owned());
                if v.str("runtime.powerState") == Some("poweredOn") {
                    alloc.cpu += v.u64("config.hardware.numCPU").unwrap_or(0);
                    alloc.memory_mib += v.u64("config.hardware.memoryMB").unwrap_or(0);
                }
            }
            h.allocated = alloc;
            inv.hosts.push(h);
        }
        inv.datastores = datastores
            .iter()
            .map(|(_, p)| {
                DatastoreInfo::new(
                    p.str("name").unwrap_or_default(),
                    p.u64("summary.freeSpace").unwrap_or(0) / (1024 * 1024 * 1024),
                )
            })
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

fn describe_from(id: VmId, p: &Props) -> VmDescription {
    let state = power_state_of(p).unwrap_or(PowerState::Off(OffReason::Unknown));
    let mut d = VmDescription::new(id, p.str("name").unwrap_or_default(), state);
    d.cpu = p.u64("config.hardware.numCPU").unwrap_or(0) as u32;
    d.memory_mib = p.u64("config.hardware.memoryMB").unwrap_or(0);
    d.disks = disks_of(p.get("config.hardware.device"))
        .into_iter()
        .map(|(l, kib, _)| DiskInfo::new(l, kib.div_ceil(GIB_KIB)))
        .collect();
    d.host = p.str("runtime.host").map(str::to_owned);
    d.labels = create::labels_from_props(p);
    d
}

#[async_trait]
impl Snapshotter for VsphereProvider {
    async fn create_snapshot(&self, vm: &VmId, opts: &SnapshotOptions) -> Result<SnapshotInfo> {
        let mut b = Xml::new();
        b.el("name", &opts.name)
            .opt("description", opts.description.as_deref())
            .el("memory", if opts.memory { "true" } else { "false" })
            .el("quiesce", if opts.quiesce { "true" } else { "false" });
        let result = self
            .vm_task(vm, "CreateSnapshot_Task", &b.finish(), "snapshot_create")
            .await?;
        let id = result
            .map(|r| r.text().to_owned())
            .filter(|s| !s.is_empty());
        let list = self.snapshot_tree(vm).await?;
        let found = match &id {
            Some(id) => list.into_iter().find(|s| &s.id == id),
            None => list.into_iter().rev().find(|s| s.name == opts.name),
        };
        found.ok_or_else(|| {
            Error::internal("the new snapshot is not in the VM's snapshot tree")
                .with_provider(PROVIDER_TYPE)
                .with_operation("snapshot_create")
                .with_resource(vm.as_str())
        })
    }

    async fn list_snapshots(&self, vm: &VmId) -> Result<Vec<SnapshotInfo>> {
        self.snapshot_tree(vm).await
    }

    async fn revert_snapshot(&self, vm: &VmId, snapshot: &str, opts: &RevertOptions) -> Result<()> {
        let snap = self.resolve_snapshot(vm, snapshot).await?;
        let mut b = Xml::new();
        b.el("suppressPowerOn", if opts.start { "false" } else { "true" });
        map(
            self.client
                .run_task("RevertToSnapshot_Task", &snap, &b.finish())
                .await,
            "snapshot_revert",
            vm,
        )?;
        if opts.start && self.power_state(vm).await?.is_off() {
            self.start(vm, &StartOptions::default()).await?;
        }
        Ok(())
    }

    async fn delete_snapshot(
        &self,
        vm: &VmId,
        snapshot: &str,
        opts: &DeleteSnapshotOptions,
    ) -> Result<()> {
        let snap = self.resolve_snapshot(vm, snapshot).await?;
        let mut b = Xml::new();
        b.el(
            "removeChildren",
            if opts.children { "true" } else { "false" },
        )
        .el("consolidate", "true");
        map(
            self.client
                .run_task("RemoveSnapshot_Task", &snap, &b.finish())
                .await,
            "snapshot_delete",
            vm,
        )
        .map(|_| ())
    }
}

#[async_trait]
impl Cloner for VsphereProvider {
    async fn clone_vm(&self, source: &VmId, opts: &CloneOptions) -> Result<CloneResult> {
        if opts.target_name.is_empty() {
            return Err(
                Error::invalid_spec("clone target name is empty").with_provider(PROVIDER_TYPE)
            );
        }
        let p = self
            .props(
                source,
                &["parent", "resourcePool", "snapshot.currentSnapshot"],
                "clone",
            )
            .await?;
        let folder = p.get("parent").and_then(MoRef::from_el).ok_or_else(|| {
            Error::invalid_state("source VM has no parent folder (is it a template?)")
                .with_provider(PROVIDER_TYPE)
                .with_operation("clone")
                .with_resource(source.as_str())
        })?;
        let pool = p.get("resourcePool").and_then(MoRef::from_el);
        let snapshot = if let Some(s) = &opts.snapshot {
            Some(self.resolve_snapshot(source, s).await?)
        } else if opts.linked {
            match p.get("snapshot.currentSnapshot").and_then(MoRef::from_el) {
                Some(s) => Some(s),
                None => {
                    // A linked clone needs a snapshot to share disks with: take one.
                    let info = self
                        .create_snapshot(
                            source,
                            &SnapshotOptions::new(format!("{}-base", opts.target_name)),
                        )
                        .await?;
                    Some(MoRef::new("VirtualMachineSnapshot", &info.id))
                }
            }
        } else {
            None
        };
        let customization = opts.customization.as_ref().filter(|c| !c.is_empty());
        let body = spec::clone_spec(
            &folder,
            &opts.target_name,
            pool.as_ref(),
            opts.linked,
            snapshot.as_ref(),
            customization,
            opts.power_on,
        )
        .map_err(|e| {
            e.with_provider(PROVIDER_TYPE)
                .with_operation("clone")
                .with_resource(source.as_str())
        })?;
        let result = self.vm_task(source, "CloneVM_Task", &body, "clone").await?;
        let vm = result.and_then(|r| MoRef::from_el(&r).or_else(|| Some(MoRef::vm(r.text()))));
        let vm = vm.filter(|m| !m.value.is_empty()).ok_or_else(|| {
            Error::internal("CloneVM_Task returned no VM")
                .with_provider(PROVIDER_TYPE)
                .with_operation("clone")
        })?;
        Ok(CloneResult::new(
            VmId::new(vm.value),
            opts.linked,
            customization.is_some(),
        ))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used)]
    use super::*;

    fn props(pairs: &[(&str, &str)]) -> Props {
        Props(
            pairs
                .iter()
                .map(|(n, v)| {
                    let val = Element {
                        name: "val".into(),
                        text: (*v).to_owned(),
                        ..Element::default()
                    };
                    ((*n).to_owned(), val)
                })
                .collect(),
        )
    }

    #[test]
    fn incarnation_is_instance_uuid_and_boot_time_of_a_powered_on_vm() {
        let on = props(&[
            ("runtime.powerState", "poweredOn"),
            ("runtime.bootTime", "2026-12-01T23:00:10.7Z"),
            ("summary.runtime.bootTime", "2026-12-01T23:00:10.7Z"),
            (
                "config.instanceUuid",
                "253ca6dd-6815-57ab-a2d5-ff50c884fd82",
            ),
        ]);
        assert_eq!(
            incarnation_of(&on).expect("on").as_str(),
            "253ca6dd-6815-57ab-a2d5-ff50c884fd82#2026-12-01T23:00:10.7Z"
        );
        // vcsim: only summary.runtime.bootTime.
        let vcsim = props(&[
            ("runtime.powerState", "poweredOn"),
            ("summary.runtime.bootTime", "2026-12-01T23:00:11Z"),
            ("config.instanceUuid", "u"),
        ]);
        assert_eq!(
            incarnation_of(&vcsim).expect("on").as_str(),
            "u#2026-12-01T23:00:11Z"
        );
        for state in ["poweredOff", "suspended"] {
            let off = props(&[
                ("runtime.powerState", state),
                ("summary.runtime.bootTime", "2026-12-01T23:00:11Z"),
                ("config.instanceUuid", "u"),
            ]);
            assert_eq!(incarnation_of(&off), None, "{state}");
        }
        let no_boot = props(&[
            ("runtime.powerState", "poweredOn"),
            ("config.instanceUuid", "u"),
        ]);
        assert_eq!(incarnation_of(&no_boot), None, "no boot time: cannot tell");
    }

    #[test]
    fn power_states_never_read_as_destroyed() {
        for power in ["poweredOn", "poweredOff", "suspended"] {
            for guest in [
                "running",
                "shuttingDown",
                "notRunning",
                "standby",
                "unknown",
            ] {
                let p = props(&[("runtime.powerState", power), ("guest.guestState", guest)]);
                let st = power_state_of(&p).expect("known power state");
                assert_ne!(st, PowerState::Off(OffReason::Destroyed), "{power}/{guest}");
                assert_eq!(st.is_off(), power != "poweredOn", "{power}/{guest}");
            }
        }
        assert_eq!(
            power_state_of(&props(&[("runtime.powerState", "bogus")])),
            None
        );
    }
}
