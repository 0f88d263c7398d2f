//! An in-memory hypervisor on tokio's clock, for tests, doctests, examples and benchmarks.
//!
//! [`Simulator`] implements [`Provider`](crate::Provider), [`Snapshotter`](crate::Snapshotter) and [`Cloner`](crate::Cloner), and supplies a placement inventory. Each VM
//! has a scripted [`GuestBehavior`]: honours ACPI after N s, ignores it, has or lacks an agent,
//! an agent that hangs, requests that fail, power-offs that fail once, a VM that vanishes
//! mid-shutdown, a visible (or hidden) shutting-down state, paused guests. Time is tokio's,
//! so with a paused clock an hour of guest behaviour runs in milliseconds. The simulator
//! counts API calls per operation and keeps the ground truth the engine's reports are
//! checked against.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap().block_on(async {
//! use std::time::Duration;
//! use virtrigaud_core::{Provider, PowerState, ShutdownChannel, ShutdownRequestOptions};
//! use virtrigaud_core::sim::{GuestBehavior, Simulator};
//! let sim = Simulator::new();
//! let vm = sim.add_vm("app-1", GuestBehavior::cooperative().acpi_after(Duration::from_secs(3)));
//! sim.request_shutdown(&vm, ShutdownChannel::Acpi, &ShutdownRequestOptions::default()).await?;
//! assert_eq!(sim.power_state(&vm).await?, PowerState::ShuttingDown);
//! tokio::time::sleep(Duration::from_secs(3)).await;
//! assert!(sim.power_state(&vm).await?.is_off());
//! assert_eq!(sim.calls("request_shutdown"), 1);
//! # Ok::<(), virtrigaud_core::Error>(()) }).unwrap();
//! ```

mod behavior;
mod provider;
mod storage;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use tokio::time::Instant;

pub use behavior::{AcpiResponse, AgentResponse, GuestBehavior};

use crate::capabilities::ProviderCapabilities;
use crate::clone::Customization;
use crate::error::{Error, ErrorKind, Result};
use crate::placement::{DatastoreInfo, HostInfo, Inventory, Placement, Resources};
use crate::shutdown::{TokioClock, WallClock};
use crate::snapshot::SnapshotInfo;
use crate::vm::{DiskInfo, OffReason, PowerState, VmId};

/// The provider type of the simulator.
pub const PROVIDER_TYPE: &str = "simulator";

#[derive(Debug, Clone)]
struct SimSnapshot {
    info: SnapshotInfo,
    cpu: u32,
    memory_mib: u64,
    disks: Vec<DiskInfo>,
    power: PowerState,
}

#[derive(Debug)]
struct SimVm {
    name: String,
    behavior: GuestBehavior,
    power: PowerState,
    booted_at: Instant,
    /// When the guest will be off by itself (after an honoured request).
    off_at: Option<Instant>,
    vanish_at: Option<Instant>,
    power_off_failures_left: u32,
    effective_power_offs: u32,
    signals_received: u32,
    cpu: u32,
    memory_mib: u64,
    max_live_vcpus: u32,
    max_live_memory_mib: u64,
    pending: Option<(u32, u64)>,
    disks: Vec<DiskInfo>,
    labels: BTreeMap<String, String>,
    host: Option<String>,
    /// The datastore holding its disks, when it was placed on one.
    datastore: Option<String>,
    /// The image it was created from.
    image: Option<String>,
    snapshots: Vec<SimSnapshot>,
    /// The customization a clone was made with (the simulator's stand-in for a seed).
    customization: Option<Customization>,
    /// Pushes power-state changes to watchers; dropped when the VM disappears.
    watch: tokio::sync::watch::Sender<PowerState>,
    generation: u64,
    /// Boots so far: the VM's incarnation is its name with this count.
    boots: u32,
    /// Guest reboots honoured so far (within the same run).
    reboots: u32,
}

#[derive(Debug, Default)]
struct State {
    vms: HashMap<VmId, SimVm>,
    hosts: Vec<HostInfo>,
    datastores: Vec<DatastoreInfo>,
    calls: BTreeMap<&'static str, u64>,
    faults: HashMap<&'static str, Vec<ErrorKind>>,
    next_snapshot: u64,
    instance: String,
}

#[derive(Debug)]
struct Inner {
    state: Mutex<State>,
    caps: ProviderCapabilities,
    clock: TokioClock,
}

/// The in-memory hypervisor. Cheap to clone (shared state).
#[derive(Debug, Clone)]
pub struct Simulator {
    inner: Arc<Inner>,
}

impl Default for Simulator {
    fn default() -> Self {
        Self::new()
    }
}

impl Simulator {
    /// A simulator that can push power-state changes.
    pub fn new() -> Self {
        Self::with_capabilities(Self::default_capabilities())
    }

    /// A simulator that cannot push (the engine must poll), for comparisons.
    pub fn polling_only() -> Self {
        let mut caps = Self::default_capabilities();
        caps.power_state_watch = false;
        Self::with_capabilities(caps)
    }

    /// A simulator declaring `caps` (to test capability gating).
    pub fn with_capabilities(caps: ProviderCapabilities) -> Self {
        Simulator {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                caps,
                clock: TokioClock::new(SystemTime::now()),
            }),
        }
    }

    /// Everything the simulator can do.
    pub fn default_capabilities() -> ProviderCapabilities {
        ProviderCapabilities {
            reconfigure_online: true,
            disk_expansion_online: true,
            snapshots: true,
            memory_snapshots: true,
            quiesced_snapshots: true,
            linked_clones: true,
            full_clones: true,
            clone_customization: true,
            clone_user_data: true,
            snapshots_outlive_vm: false,
            image_import: false,
            supported_disk_types: &["thin", "thick"],
            supported_network_types: &["virtio"],
            acpi_shutdown: true,
            agent_shutdown: true,
            repeatable_shutdown_signal: true,
            power_state_watch: true,
            reset: true,
            reboot: true,
            pause: true,
            create: true,
            delete: true,
            reconfigure: true,
            inventory: true,
            list_vms: true,
            // No executor runs commands in simulated guests; a crash
            // (`Simulator::crash`) reads `Off(Crashed)`.
            guest_exec: false,
            failure_detection: true,
        }
    }

    /// The simulator's wall clock: it follows tokio's clock (paused in tests) from the
    /// moment the simulator was made; snapshot creation times are read from it. Give it to
    /// [`crate::orchestration::Orchestrator::with_clock`] so that retention by age sees the
    /// same time.
    pub fn wall_clock(&self) -> Arc<dyn WallClock> {
        Arc::new(self.inner.clock)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock would be a simulator bug; recover the data anyway.
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a running VM named `name` (its id is the name).
    pub fn add_vm(&self, name: &str, behavior: GuestBehavior) -> VmId {
        self.insert_vm(
            name,
            behavior,
            PowerState::Running,
            2,
            2048,
            BTreeMap::new(),
        )
    }

    /// Adds a VM that is off.
    pub fn add_stopped_vm(&self, name: &str, behavior: GuestBehavior) -> VmId {
        self.insert_vm(
            name,
            behavior,
            PowerState::Off(OffReason::Unknown),
            2,
            2048,
            BTreeMap::new(),
        )
    }

    fn insert_vm(
        &self,
        name: &str,
        behavior: GuestBehavior,
        power: PowerState,
        cpu: u32,
        memory_mib: u64,
        labels: BTreeMap<String, String>,
    ) -> VmId {
        let id = VmId::new(name);
        let vm = SimVm {
            name: name.to_owned(),
            power_off_failures_left: behavior.power_off_failures,
            behavior,
            power,
            booted_at: Instant::now(),
            off_at: None,
            vanish_at: None,
            effective_power_offs: 0,
            signals_received: 0,
            cpu,
            memory_mib,
            max_live_vcpus: cpu.saturating_mul(4).max(4),
            max_live_memory_mib: memory_mib.saturating_mul(4),
            pending: None,
            disks: vec![DiskInfo::new("root", 20)],
            labels,
            host: None,
            datastore: None,
            image: None,
            snapshots: Vec::new(),
            customization: None,
            reboots: 0,
            watch: tokio::sync::watch::Sender::new(power),
            generation: 0,
            boots: 1,
        };
        self.lock().vms.insert(id.clone(), vm);
        id
    }

    /// Pauses a VM directly (ground truth, no API call counted).
    pub fn set_paused(&self, vm: &VmId) {
        let mut st = self.lock();
        if let Some(v) = st.vms.get_mut(vm) {
            set_power(v, PowerState::Paused(crate::vm::PauseReason::User));
        }
    }

    /// Sets the endpoint identity this simulator reports ([`crate::Provider::instance_id`];
    /// default `""`), to stand for one of several hosts sharing a journal.
    pub fn set_instance_id(&self, instance: impl Into<String>) {
        self.lock().instance = instance.into();
    }

    /// Starts a VM directly, as someone at the hypervisor's console would (ground truth, no
    /// API call counted): a new run of the VM, with a new incarnation.
    pub fn start_by_hand(&self, vm: &VmId) {
        let mut st = self.lock();
        if let Some(v) = st.vms.get_mut(vm)
            && v.power.is_off()
        {
            boot(v, PowerState::Running);
        }
    }

    /// Adds a host to the placement inventory.
    pub fn add_host(&self, host: HostInfo) {
        self.lock().hosts.push(host);
    }

    /// Adds a datastore to the placement inventory (list it in a host's
    /// [`HostInfo::datastores`] to make it reachable from there).
    pub fn add_datastore(&self, datastore: DatastoreInfo) {
        self.lock().datastores.push(datastore);
    }

    /// The host and datastore a VM named `vm` goes to at `placement`, after checking the
    /// inventory has each part of it: a host, cluster or datastore it does not have is
    /// `NotFound` naming the field, and so is a datastore the chosen host cannot reach. An
    /// empty placement decides nothing.
    fn resolve_placement(
        st: &State,
        vm: &str,
        placement: &Placement,
    ) -> Result<(Option<String>, Option<String>)> {
        let unknown = |field: &str, what: String| {
            Err(
                Error::not_found(format!("{field}: the simulator has no {what}"))
                    .with_provider(PROVIDER_TYPE)
                    .with_resource(vm.to_owned()),
            )
        };
        let host = match &placement.host {
            Some(h) => match st.hosts.iter().find(|x| &x.name == h) {
                Some(x) => Some(x),
                None => return unknown("placement.host", format!("host {h}")),
            },
            None => None,
        };
        if let Some(c) = &placement.cluster {
            let in_cluster = |x: &HostInfo| x.cluster.as_deref() == Some(c.as_str());
            if !host.map_or_else(|| st.hosts.iter().any(in_cluster), in_cluster) {
                return unknown("placement.cluster", format!("cluster {c} with that host"));
            }
        }
        if let Some(d) = &placement.datastore {
            let reachable = host.is_none_or(|x| x.datastores.iter().any(|n| n == d));
            if !reachable || !st.datastores.iter().any(|x| &x.name == d) {
                return unknown("placement.datastore", format!("datastore {d} there"));
            }
        }
        Ok((host.map(|x| x.name.clone()), placement.datastore.clone()))
    }

    /// Makes the next call of `operation` fail with `kind` (queued; one failure per call).
    pub fn inject_fault(&self, operation: &'static str, kind: ErrorKind) {
        self.lock().faults.entry(operation).or_default().push(kind);
    }

    /// The customization `vm` was cloned with, as the simulator recorded it (`None` for a
    /// VM that was not customized, or no such VM).
    pub fn customization_of(&self, vm: &VmId) -> Option<Customization> {
        self.lock()
            .vms
            .get(vm)
            .and_then(|v| v.customization.clone())
    }

    /// The image `vm` was created from (`VmCreateSpec::image`), as the simulator recorded it.
    pub fn image_of(&self, vm: &VmId) -> Option<String> {
        self.lock().vms.get(vm).and_then(|v| v.image.clone())
    }

    /// Guest reboots `vm` has honoured (0 for no such VM).
    pub fn reboots(&self, vm: &VmId) -> u32 {
        self.lock().vms.get(vm).map_or(0, |v| v.reboots)
    }

    /// API calls made so far to `operation`.
    pub fn calls(&self, operation: &str) -> u64 {
        self.lock().calls.get(operation).copied().unwrap_or(0)
    }

    /// API calls made so far, per operation.
    pub fn all_calls(&self) -> BTreeMap<&'static str, u64> {
        self.lock().calls.clone()
    }

    /// Total API calls made so far.
    pub fn total_calls(&self) -> u64 {
        self.lock().calls.values().sum()
    }

    /// Resets the call counters.
    pub fn reset_calls(&self) {
        self.lock().calls.clear();
    }

    /// The true power state (settled to now), without counting a call; `None` if the VM does
    /// not exist.
    pub fn true_state(&self, vm: &VmId) -> Option<PowerState> {
        let mut st = self.lock();
        settle_vm(&mut st, vm, Instant::now());
        st.vms.get(vm).map(|v| v.power)
    }

    /// Crashes `vm`'s guest now: the VM reads `Off(Crashed)`, as a hypervisor reports a
    /// guest that died (a shutdown under way is moot). No-op on a VM that is off or missing.
    pub fn crash(&self, vm: &VmId) {
        let mut st = self.lock();
        settle_vm(&mut st, vm, Instant::now());
        if let Some(v) = st.vms.get_mut(vm)
            && !v.power.is_off()
        {
            v.generation += 1;
            v.off_at = None;
            set_power(v, PowerState::Off(OffReason::Crashed));
        }
    }

    /// Hard power-offs that took effect on `vm`.
    pub fn effective_power_offs(&self, vm: &VmId) -> u32 {
        self.lock()
            .vms
            .get(vm)
            .map_or(0, |v| v.effective_power_offs)
    }

    /// Shutdown requests that reached `vm`'s guest (lost ACPI presses included).
    pub fn signals_received(&self, vm: &VmId) -> u32 {
        self.lock().vms.get(vm).map_or(0, |v| v.signals_received)
    }

    /// Number of VMs.
    pub fn vm_count(&self) -> usize {
        self.lock().vms.len()
    }

    fn inventory_snapshot(&self) -> Inventory {
        let st = self.lock();
        let mut inv = Inventory {
            hosts: st.hosts.clone(),
            datastores: st.datastores.clone(),
        };
        for ds in &mut inv.datastores {
            ds.vms = st
                .vms
                .values()
                .filter(|v| v.datastore.as_deref() == Some(ds.name.as_str()))
                .map(|v| v.name.clone())
                .collect();
            ds.vms.sort();
        }
        for host in &mut inv.hosts {
            let mut alloc = Resources::default();
            host.vms.clear();
            for v in st.vms.values() {
                if v.host.as_deref() == Some(host.name.as_str()) {
                    alloc.cpu += u64::from(v.cpu);
                    alloc.memory_mib += v.memory_mib;
                    host.vms.push(v.name.clone());
                }
            }
            host.allocated = alloc;
        }
        inv
    }
}

/// Counts a call and applies an injected fault, if any.
fn begin(st: &mut State, op: &'static str) -> Result<()> {
    *st.calls.entry(op).or_insert(0) += 1;
    injected(st, op)
}

/// The next fault injected into `op`, if any (a fault point that is not an API call).
fn injected(st: &mut State, op: &'static str) -> Result<()> {
    if let Some(queue) = st.faults.get_mut(op)
        && !queue.is_empty()
    {
        let kind = queue.remove(0);
        return Err(Error::new(kind, format!("injected fault in {op}"))
            .with_provider(PROVIDER_TYPE)
            .with_operation(op));
    }
    Ok(())
}

fn not_found(vm: &VmId) -> Error {
    Error::not_found(format!("no VM {vm}"))
        .with_provider(PROVIDER_TYPE)
        .with_resource(vm.to_string())
}

/// Boots a stopped VM into `power` (running or paused): a new run.
fn boot(v: &mut SimVm, power: PowerState) {
    v.generation += 1;
    v.boots = v.boots.wrapping_add(1);
    v.off_at = None;
    v.booted_at = Instant::now();
    if let Some((cpu, mem)) = v.pending.take() {
        v.cpu = cpu;
        v.memory_mib = mem;
    }
    set_power(v, power);
}

fn set_power(v: &mut SimVm, power: PowerState) {
    if v.power != power {
        v.power = power;
        v.watch.send_replace(power);
    }
}

/// Applies the transitions due at `now` to one VM.
fn settle_vm(st: &mut State, id: &VmId, now: Instant) {
    let vanish = match st.vms.get_mut(id) {
        None => return,
        Some(v) => {
            if v.vanish_at.is_some_and(|t| now >= t) {
                true
            } else {
                if let Some(t) = v.off_at
                    && now >= t
                    && v.power.is_active()
                {
                    v.off_at = None;
                    set_power(v, PowerState::Off(OffReason::GuestShutdown));
                }
                false
            }
        }
    };
    if vanish {
        // Dropping the VM drops its watch sender: watchers see their stream end.
        st.vms.remove(id);
    }
}

/// Schedules a settle of `id` at `at` (so watchers hear about it on time).
fn schedule(sim: &Simulator, id: VmId, at: Instant, generation: u64) {
    let sim = sim.clone();
    tokio::spawn(async move {
        tokio::time::sleep_until(at).await;
        let mut st = sim.lock();
        if st.vms.get(&id).is_some_and(|v| v.generation == generation) {
            settle_vm(&mut st, &id, Instant::now());
        }
    });
}
