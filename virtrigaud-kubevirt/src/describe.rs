//! Reads: describe, list, per-VM capabilities, the agent probe and the run's incarnation.

use std::collections::BTreeMap;

use kube::api::ListParams;
use virtrigaud_core::{
    AgentStatus, DiskInfo, Incarnation, ListOptions, PowerState, Result, VmCapabilities,
    VmDescription,
};

use crate::client::{Connection, derive};
use crate::config::RolloutStrategy;
use crate::error::to_core_error;
use crate::id::VmRef;
use crate::quantity::quantity_to_mib;
use crate::state::{power_state_of, vmi_active, vmi_phase};
use crate::types::{CpuSpec, VirtualMachine, VirtualMachineInstance, condition_true};

impl Connection {
    /// The power state now.
    /// The power state. While a power-state stream of `r` is open and its shared watch has
    /// caught up with that stream's baseline read, a state other than `Off` is answered from
    /// the watch (no request); `Off` is always read from the wire, so a watch never ends a
    /// shutdown alone (the engine confirms a pushed `Off` with this read).
    pub(crate) async fn power_state(&self, r: &VmRef) -> Result<PowerState> {
        if let Some((vm, vmi)) = self.shared.current(r)
            && let Ok(s) = power_state_of(&vm, vmi.as_ref())
            && !s.is_off()
        {
            return Ok(s);
        }
        let (vmo, vmi) = self.read(r, "power_state").await?;
        derive(&vmo, vmi.as_ref(), "power_state", r)
    }

    pub(crate) fn describe_pair(
        &self,
        r: &VmRef,
        vm: &VirtualMachine,
        vmi: Option<&VirtualMachineInstance>,
    ) -> Result<VmDescription> {
        let state = derive(vm, vmi, "describe", r)?;
        let mut d = VmDescription::new(r.id(), r.name.clone(), state);
        let spec = vm.spec.template.as_ref().and_then(|t| t.spec.as_ref());
        let domain = spec.and_then(|s| s.domain.as_ref());
        d.cpu = domain
            .and_then(|d| d.cpu.as_ref())
            .map(CpuSpec::vcpus)
            .unwrap_or(1);
        d.memory_mib = domain
            .and_then(|d| {
                d.memory.as_ref().and_then(|m| m.guest.clone()).or_else(|| {
                    d.resources
                        .as_ref()
                        .and_then(|r| r.pointer("/requests/memory"))
                        .and_then(|v| v.as_str())
                        .map(str::to_owned)
                })
            })
            .and_then(|q| quantity_to_mib(&q))
            .unwrap_or(0);
        let sizes: BTreeMap<String, u64> = vm
            .spec
            .extra
            .get("dataVolumeTemplates")
            .and_then(|v| v.as_array())
            .map(|dvs| {
                dvs.iter()
                    .filter_map(|dv| {
                        let name = dv.pointer("/metadata/name")?.as_str()?.to_owned();
                        let q = dv
                            .pointer("/spec/storage/resources/requests/storage")
                            .or_else(|| dv.pointer("/spec/pvc/resources/requests/storage"))?
                            .as_str()?;
                        Some((name, quantity_to_mib(q)?.div_ceil(1024)))
                    })
                    .collect()
            })
            .unwrap_or_default();
        if let Some(disks) = domain
            .and_then(|d| d.devices.as_ref())
            .and_then(|d| d.get("disks"))
            .and_then(|d| d.as_array())
        {
            let volumes = spec
                .and_then(|s| s.extra.get("volumes"))
                .and_then(|v| v.as_array());
            for disk in disks {
                let Some(name) = disk.get("name").and_then(|n| n.as_str()) else {
                    continue;
                };
                let dv = volumes
                    .and_then(|vs| {
                        vs.iter()
                            .find(|v| v.get("name").and_then(|n| n.as_str()) == Some(name))
                    })
                    .and_then(|v| v.pointer("/dataVolume/name"))
                    .and_then(|n| n.as_str());
                let size = dv.and_then(|dv| sizes.get(dv)).copied().unwrap_or(0);
                // Growing a disk means expanding its PVC / DataVolume, which this crate does
                // not do yet; the plan says so instead of failing half-way.
                d.disks.push(DiskInfo::new(name, size).cannot_grow(
                    "growing a KubeVirt disk means expanding its PVC or DataVolume, which this provider does not do",
                ));
            }
        }
        d.labels = vm.metadata.labels.clone().unwrap_or_default();
        d.host = vmi
            .and_then(|v| v.status.as_ref())
            .and_then(|s| s.node_name.clone());
        d.pending_power_cycle = vm
            .status
            .as_ref()
            .is_some_and(|s| condition_true(&s.conditions, "RestartRequired"));
        Ok(d)
    }

    /// What this VM allows (hot-plug maxima under `LiveUpdate`, the agent).
    pub(crate) async fn vm_capabilities(&self, r: &VmRef) -> Result<VmCapabilities> {
        let (vmo, vmi) = self.read(r, "vm_capabilities").await?;
        let live = self.rollout_strategy().await == RolloutStrategy::LiveUpdate;
        let domain = vmo
            .spec
            .template
            .as_ref()
            .and_then(|t| t.spec.as_ref())
            .and_then(|s| s.domain.as_ref());
        let cpu = domain.and_then(|d| d.cpu.clone()).unwrap_or_default();
        let mut c = VmCapabilities::default();
        // virt-launcher always adds the qemu-guest-agent channel.
        c.agent_configured = true;
        c.agent_connected = vmi.as_ref().filter(|v| vmi_phase(v) == "Running").map(|v| {
            v.status
                .as_ref()
                .is_some_and(|s| condition_true(&s.conditions, "AgentConnected"))
        });
        c.cpu_hot_add = live;
        // KubeVirt's default maxSockets is 4 × the initial sockets.
        let max_sockets = cpu
            .max_sockets
            .unwrap_or(cpu.sockets.unwrap_or(1).max(1) * 4);
        c.max_live_vcpus = if live {
            max_sockets * cpu.per_socket()
        } else {
            0
        };
        c.memory_hot_add = live;
        let guest = domain.and_then(|d| d.memory.as_ref());
        c.max_live_memory_mib = if live {
            guest
                .and_then(|m| m.max_guest.as_deref().and_then(quantity_to_mib))
                .or_else(|| {
                    guest
                        .and_then(|m| m.guest.as_deref())
                        .and_then(quantity_to_mib)
                        .map(|m| m * 4)
                })
                .unwrap_or(0)
        } else {
            0
        };
        c.snapshot_quiesce = c.agent_connected == Some(true);
        Ok(c)
    }

    /// Whether the guest agent is connected (only a `Running` VMI has one).
    pub(crate) async fn probe_agent(&self, r: &VmRef) -> Result<AgentStatus> {
        let vmi = self.get_vmi(r, "probe_agent").await?;
        Ok(match vmi.as_ref().filter(|v| vmi_phase(v) == "Running") {
            Some(v)
                if v.status
                    .as_ref()
                    .is_some_and(|s| condition_true(&s.conditions, "AgentConnected")) =>
            {
                AgentStatus::Connected
            }
            _ => AgentStatus::NotConnected,
        })
    }

    /// The UID of the VM's non-final instance (see `Provider::incarnation`).
    // The UID of the VM's instance (VMI) while one exists that has not reached a final phase:
    /// virt-controller creates a new VMI, with a new UID, for every run (a restart deletes and
    /// re-creates it). `Ok(None)` without an instance or when it is `Succeeded`/`Failed`. An
    /// instance whose VirtualMachine is gone (orphaned) still has its run's identity.
    pub(crate) async fn incarnation(&self, r: &VmRef) -> Result<Option<Incarnation>> {
        let vmi = self.get_vmi(r, "incarnation").await?;
        if let Some(uid) = vmi
            .as_ref()
            .filter(|v| vmi_active(Some(v)))
            .and_then(|v| v.metadata.uid.clone())
        {
            return Ok(Some(Incarnation::new(uid)));
        }
        // No run: still NotFound for a VM that does not exist.
        self.get_vm(r, "incarnation").await?;
        Ok(None)
    }

    /// The VMs of the namespace matching `opts.labels` (a VM in an unknown state is skipped).
    pub(crate) async fn list_vms(&self, opts: &ListOptions) -> Result<Vec<VmDescription>> {
        let (vms, vmis) = self.list_objects(opts, "list_vms").await?;
        Ok(self.describe_listed(&vms, &vmis))
    }

    /// The namespace's VM objects matching `opts.labels`, and all its VMIs (one list each).
    pub(crate) async fn list_objects(
        &self,
        opts: &ListOptions,
        op: &'static str,
    ) -> Result<(Vec<VirtualMachine>, Vec<VirtualMachineInstance>)> {
        let ns = self.namespace.as_str();
        let selector: Vec<String> = opts
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let lp = ListParams::default().labels(&selector.join(","));
        let vms = self
            .api::<VirtualMachine>(ns)
            .list(&lp)
            .await
            .map_err(|e| to_core_error(e, op, Some(ns)))?;
        let vmis = self
            .api::<VirtualMachineInstance>(ns)
            .list(&ListParams::default())
            .await
            .map_err(|e| to_core_error(e, op, Some(ns)))?;
        Ok((vms.items, vmis.items))
    }

    /// Describes listed VMs with their VMIs (a VM in an unknown state is skipped).
    pub(crate) fn describe_listed(
        &self,
        vms: &[VirtualMachine],
        vmis: &[VirtualMachineInstance],
    ) -> Vec<VmDescription> {
        let mut out = Vec::new();
        for vm in vms {
            let Some(name) = vm.metadata.name.clone() else {
                continue;
            };
            let vmi = vmis
                .iter()
                .find(|i| i.metadata.name.as_deref() == Some(&name));
            let r = VmRef {
                namespace: self.namespace.clone(),
                name,
            };
            match self.describe_pair(&r, vm, vmi) {
                Ok(d) => out.push(d),
                Err(e) => tracing::debug!(vm = %r, error = %e, "skipping VM in unknown state"),
            }
        }
        out
    }
}
