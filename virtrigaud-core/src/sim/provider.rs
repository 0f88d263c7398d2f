//! The simulator's [`Provider`] implementation.

use std::collections::BTreeMap;

use async_trait::async_trait;
use tokio::time::Instant;

use super::behavior::{AcpiResponse, AgentResponse};
use super::{PROVIDER_TYPE, Simulator, begin, not_found, schedule, set_power, settle_vm};
use crate::capabilities::{ProviderCapabilities, VmCapabilities};
use crate::clone::Cloner;
use crate::error::{Error, ErrorKind, Result, ResultExt};
use crate::placement::{Inventory, Placer};
use crate::provider::{
    DeleteOptions, ListOptions, PowerOffOptions, PowerStateStream, Provider, ReconfigureRequest,
    ReconfigureResult, ShutdownRequestOptions, StartOptions, VmCreateSpec,
};
use crate::snapshot::Snapshotter;
use crate::vm::{
    AgentStatus, DiskInfo, Incarnation, OffReason, PauseReason, PowerState, ShutdownChannel,
    VmDescription, VmId,
};

impl Simulator {
    /// Runs `f` on a settled VM after counting the call.
    fn with_vm<T>(
        &self,
        op: &'static str,
        vm: &VmId,
        f: impl FnOnce(&mut super::SimVm) -> Result<T>,
    ) -> Result<T> {
        let mut st = self.lock();
        begin(&mut st, op)?;
        settle_vm(&mut st, vm, Instant::now());
        let v = st.vms.get_mut(vm).ok_or_else(|| not_found(vm))?;
        f(v).map_err(|e| e.context(PROVIDER_TYPE, op).with_resource(vm.to_string()))
    }

    fn agent_of(&self, vm: &VmId) -> Option<AgentResponse> {
        self.lock().vms.get(vm).map(|v| v.behavior.agent)
    }
}

#[async_trait]
impl Provider for Simulator {
    fn provider_type(&self) -> &'static str {
        PROVIDER_TYPE
    }

    fn instance_id(&self) -> String {
        self.lock().instance.clone()
    }

    fn capabilities(&self) -> ProviderCapabilities {
        self.inner.caps
    }

    async fn vm_capabilities(&self, vm: &VmId) -> Result<VmCapabilities> {
        self.with_vm("vm_capabilities", vm, |v| {
            let agent = !matches!(v.behavior.agent, AgentResponse::Absent);
            Ok(VmCapabilities {
                agent_configured: agent,
                agent_connected: Some(matches!(v.behavior.agent, AgentResponse::Present(_))),
                cpu_hot_add: true,
                max_live_vcpus: v.max_live_vcpus,
                memory_hot_add: true,
                max_live_memory_mib: v.max_live_memory_mib,
                disk_grow_online: true,
                snapshot_memory: true,
                snapshot_quiesce: agent,
                linked_clone_source: true,
            })
        })
    }

    async fn power_state(&self, vm: &VmId) -> Result<PowerState> {
        self.with_vm("power_state", vm, |v| {
            Ok(match v.power {
                PowerState::ShuttingDown if !v.behavior.shutting_down_visible => {
                    PowerState::Running
                }
                p => p,
            })
        })
    }

    async fn watch_power_state(&self, vm: &VmId) -> Result<Option<PowerStateStream>> {
        if !self.inner.caps.power_state_watch {
            return Ok(None);
        }
        let (rx, visible) = self.with_vm("watch_power_state", vm, |v| {
            Ok((v.watch.subscribe(), v.behavior.shutting_down_visible))
        })?;
        // Changes after the call only (the caller reads the current state itself).
        let stream = tokio_stream::wrappers::WatchStream::from_changes(rx);
        let stream = futures::StreamExt::filter_map(stream, move |state| async move {
            match state {
                PowerState::ShuttingDown if !visible => None,
                other => Some(Ok(other)),
            }
        });
        Ok(Some(Box::pin(stream)))
    }

    async fn incarnation(&self, vm: &VmId) -> Result<Option<Incarnation>> {
        self.with_vm("incarnation", vm, |v| {
            Ok(v.power
                .is_active()
                .then(|| Incarnation::new(format!("{}#{}", v.name, v.boots))))
        })
    }

    async fn start(&self, vm: &VmId, opts: &StartOptions) -> Result<()> {
        self.with_vm("start", vm, |v| {
            if v.power.is_active() {
                return Err(Error::invalid_state(format!("VM is {}", v.power)));
            }
            let p = if opts.paused {
                PowerState::Paused(PauseReason::User)
            } else {
                PowerState::Running
            };
            super::boot(v, p);
            Ok(())
        })
    }

    async fn power_off(&self, vm: &VmId, _opts: &PowerOffOptions) -> Result<()> {
        self.with_vm("power_off", vm, |v| {
            if v.power.is_off() {
                return Err(Error::invalid_state("VM is already powered off"));
            }
            if v.power_off_failures_left > 0 {
                v.power_off_failures_left -= 1;
                return Err(Error::unavailable("power-off failed (transient)"));
            }
            v.generation += 1;
            v.off_at = None;
            v.effective_power_offs += 1;
            set_power(v, PowerState::Off(OffReason::Destroyed));
            Ok(())
        })
    }

    /// One read: the power state with what the simulated agent would answer (a hanging
    /// agent is left to the engine's probe, which then hangs as a real one does).
    async fn power_state_and_agent(&self, vm: &VmId) -> Result<(PowerState, Option<AgentStatus>)> {
        let state = self.power_state(vm).await?;
        let agent = match self.agent_of(vm) {
            Some(AgentResponse::Present(_)) => Some(AgentStatus::Connected),
            Some(AgentResponse::Absent) => Some(AgentStatus::NotConnected),
            _ => None,
        };
        Ok((state, agent))
    }

    async fn probe_agent(&self, vm: &VmId) -> Result<AgentStatus> {
        {
            let mut st = self.lock();
            begin(&mut st, "probe_agent")?;
        }
        match self.agent_of(vm) {
            None => Err(not_found(vm)),
            Some(AgentResponse::Hangs) => std::future::pending().await,
            Some(AgentResponse::Present(_)) => Ok(AgentStatus::Connected),
            Some(AgentResponse::Absent) => Ok(AgentStatus::NotConnected),
        }
    }

    async fn request_shutdown(
        &self,
        vm: &VmId,
        channel: ShutdownChannel,
        _opts: &ShutdownRequestOptions,
    ) -> Result<()> {
        if channel == ShutdownChannel::Agent && self.agent_of(vm) == Some(AgentResponse::Hangs) {
            {
                let mut st = self.lock();
                begin(&mut st, "request_shutdown")?;
            }
            return std::future::pending().await;
        }
        let now = Instant::now();
        let scheduled = self.with_vm("request_shutdown", vm, |v| {
            if let Some(kind) = v.behavior.signal_error {
                return Err(Error::new(kind, "the shutdown request failed"));
            }
            match v.power {
                PowerState::Off(_) => return Err(Error::invalid_state("VM is not running")),
                PowerState::Paused(_) => {
                    return Err(Error::invalid_state(
                        "VM is paused and cannot take a request",
                    ));
                }
                _ => {}
            }
            v.signals_received += 1;
            if v.vanish_at.is_none()
                && let Some(d) = v.behavior.vanish_after_signal
            {
                v.vanish_at = Some(now + d);
            }
            let delay = match channel {
                ShutdownChannel::Agent => match v.behavior.agent {
                    AgentResponse::Present(d) => Some(d),
                    _ => {
                        return Err(
                            Error::unavailable("the guest agent is not connected").permanent()
                        );
                    }
                },
                ShutdownChannel::Acpi => {
                    let listening = now >= v.booted_at + v.behavior.acpi_listen_after;
                    match v.behavior.acpi {
                        AcpiResponse::Honours(d) if listening => Some(d),
                        _ => None,
                    }
                }
            };
            let mut wakeups = Vec::new();
            if let Some(d) = delay {
                let at = now + d;
                if v.off_at.is_none_or(|t| at < t) {
                    v.off_at = Some(at);
                    wakeups.push(at);
                }
                if v.power == PowerState::Running {
                    set_power(v, PowerState::ShuttingDown);
                }
            }
            if let Some(t) = v.vanish_at {
                wakeups.push(t);
            }
            Ok((wakeups, v.generation))
        })?;
        let (wakeups, generation) = scheduled;
        for at in wakeups {
            schedule(self, vm.clone(), at, generation);
        }
        Ok(())
    }

    async fn reset(&self, vm: &VmId) -> Result<()> {
        self.with_vm("reset", vm, |v| {
            if !v.power.is_active() {
                return Err(Error::invalid_state("VM is not running"));
            }
            v.generation += 1;
            v.off_at = None;
            v.booted_at = Instant::now();
            set_power(v, PowerState::Running);
            Ok(())
        })
    }

    async fn reboot(&self, vm: &VmId, channel: ShutdownChannel) -> Result<()> {
        self.with_vm("reboot", vm, |v| {
            if v.power != PowerState::Running {
                return Err(Error::invalid_state(format!("VM is {}", v.power)));
            }
            let honoured = match channel {
                ShutdownChannel::Agent => match v.behavior.agent {
                    AgentResponse::Present(_) => true,
                    _ => {
                        return Err(
                            Error::unavailable("the guest agent is not connected").permanent()
                        );
                    }
                },
                // A guest that ignores the power button ignores a reboot through it too, and
                // so does one whose acpid is not listening yet.
                _ => {
                    matches!(v.behavior.acpi, AcpiResponse::Honours(_))
                        && v.booted_at.elapsed() >= v.behavior.acpi_listen_after
                }
            };
            if honoured {
                // A guest reboot stays in the same run of the VM (same incarnation).
                v.booted_at = Instant::now();
                v.reboots += 1;
            }
            Ok(())
        })
    }

    async fn pause(&self, vm: &VmId) -> Result<()> {
        self.with_vm("pause", vm, |v| {
            if v.power != PowerState::Running {
                return Err(Error::invalid_state(format!("VM is {}", v.power)));
            }
            set_power(v, PowerState::Paused(PauseReason::User));
            Ok(())
        })
    }

    async fn resume(&self, vm: &VmId) -> Result<()> {
        self.with_vm("resume", vm, |v| {
            if !matches!(v.power, PowerState::Paused(_)) {
                return Err(Error::invalid_state(format!("VM is {}", v.power)));
            }
            set_power(v, PowerState::Running);
            Ok(())
        })
    }

    async fn create(&self, spec: &VmCreateSpec) -> Result<VmId> {
        {
            let mut st = self.lock();
            begin(&mut st, "create")?;
            spec.validate().ctx(PROVIDER_TYPE, "create", &spec.name)?;
            if st.vms.contains_key(&VmId::new(spec.name.as_str())) {
                return Err(Error::new(
                    ErrorKind::AlreadyExists,
                    format!("VM {} exists", spec.name),
                )
                .with_provider(PROVIDER_TYPE));
            }
        }
        let power = if spec.power_on {
            PowerState::Running
        } else {
            PowerState::Off(OffReason::Unknown)
        };
        let (host, datastore) = Self::resolve_placement(&self.lock(), &spec.name, &spec.placement)?;
        let id = self.insert_vm(
            &spec.name,
            super::GuestBehavior::cooperative(),
            power,
            spec.cpu,
            spec.memory_mib,
            spec.labels.clone(),
        );
        let mut st = self.lock();
        if let Some(v) = st.vms.get_mut(&id) {
            if !spec.disks.is_empty() {
                v.disks = spec
                    .disks
                    .iter()
                    .map(|d| DiskInfo::new(d.name.clone(), d.size_gib))
                    .collect();
            }
            v.host = host;
            v.datastore = datastore;
            v.image = spec.image.clone();
        }
        Ok(id)
    }

    async fn delete(&self, vm: &VmId, _opts: &DeleteOptions) -> Result<()> {
        let mut st = self.lock();
        begin(&mut st, "delete")?;
        settle_vm(&mut st, vm, Instant::now());
        let v = st.vms.get(vm).ok_or_else(|| not_found(vm))?;
        if v.power.is_active() {
            return Err(Error::invalid_state("power the VM off before deleting it")
                .with_provider(PROVIDER_TYPE)
                .with_resource(vm.to_string()));
        }
        st.vms.remove(vm);
        Ok(())
    }

    async fn reconfigure(
        &self,
        vm: &VmId,
        change: &ReconfigureRequest,
    ) -> Result<ReconfigureResult> {
        self.with_vm("reconfigure", vm, |v| {
            change.validate_against(&v.disks)?;
            let mut result = ReconfigureResult::default();
            for d in &change.disks {
                if let Some(disk) = v.disks.iter_mut().find(|x| x.name == d.name) {
                    disk.size_gib = d.size_gib;
                }
            }
            let cpu = change.cpu.unwrap_or(v.cpu);
            let mem = change.memory_mib.unwrap_or(v.memory_mib);
            let running = v.power.is_active();
            let live_ok = cpu >= v.cpu && cpu <= v.max_live_vcpus && mem >= v.memory_mib && mem <= v.max_live_memory_mib;
            if !running || live_ok {
                v.cpu = cpu;
                v.memory_mib = mem;
                v.pending = None;
                result.applied_live = running;
            } else {
                v.pending = Some((cpu, mem));
                result.needs_power_cycle = true;
                result.notes.push(format!(
                    "cpu {cpu} / memory {mem} MiB exceed the live limits ({} vCPUs, {} MiB) or shrink: applied at next power cycle",
                    v.max_live_vcpus, v.max_live_memory_mib
                ));
            }
            Ok(result)
        })
    }

    async fn describe(&self, vm: &VmId) -> Result<VmDescription> {
        self.with_vm("describe", vm, |v| Ok(describe(vm, v)))
    }

    async fn list_vms(&self, opts: &ListOptions) -> Result<Vec<VmDescription>> {
        let mut st = self.lock();
        begin(&mut st, "list_vms")?;
        let now = Instant::now();
        let ids: Vec<VmId> = st.vms.keys().cloned().collect();
        for id in &ids {
            settle_vm(&mut st, id, now);
        }
        let mut out: Vec<VmDescription> = st
            .vms
            .iter()
            .filter(|(_, v)| {
                opts.labels
                    .iter()
                    .all(|(k, val)| v.labels.get(k) == Some(val))
            })
            .map(|(id, v)| describe(id, v))
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    async fn inventory(&self) -> Result<Inventory> {
        {
            let mut st = self.lock();
            begin(&mut st, "inventory")?;
        }
        Ok(self.inventory_snapshot())
    }

    fn snapshotter(&self) -> Option<&dyn Snapshotter> {
        self.inner
            .caps
            .snapshots
            .then_some(self as &dyn Snapshotter)
    }

    fn cloner(&self) -> Option<&dyn Cloner> {
        self.inner.caps.clones().then_some(self as &dyn Cloner)
    }

    fn placer(&self) -> Option<&dyn Placer> {
        None
    }
}

fn describe(id: &VmId, v: &super::SimVm) -> VmDescription {
    let mut d = VmDescription::new(id.clone(), v.name.clone(), v.power);
    d.cpu = v.cpu;
    d.memory_mib = v.memory_mib;
    d.disks = v.disks.clone();
    d.labels = v.labels.clone();
    d.host = v.host.clone();
    d.pending_power_cycle = v.pending.is_some();
    d
}

impl Simulator {
    /// Sets a label on a VM (ground truth, no call counted).
    pub fn set_label(&self, vm: &VmId, key: &str, value: &str) {
        if let Some(v) = self.lock().vms.get_mut(vm) {
            v.labels.insert(key.to_owned(), value.to_owned());
        }
    }

    /// Labels of a VM.
    pub fn labels(&self, vm: &VmId) -> Option<BTreeMap<String, String>> {
        self.lock().vms.get(vm).map(|v| v.labels.clone())
    }
}
