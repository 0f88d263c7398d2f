//! The [`Provider`] implementation.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use kube::api::{DeleteParams, ListParams, PostParams, PropagationPolicy};
use kube::runtime::wait::{await_condition, conditions};
use serde_json::json;
use virtrigaud_core::{
    AgentStatus, Cloner, DeleteOptions, DiskInfo, ErrorKind, Incarnation, ListOptions,
    PowerOffOptions, PowerState, PowerStateStream, Provider, ProviderCapabilities,
    ReconfigureRequest, ReconfigureResult, Result, ShutdownChannel, ShutdownRequestOptions,
    Snapshotter, StartOptions, VmCapabilities, VmCreateSpec, VmDescription, VmId,
};

use crate::PROVIDER_TYPE;
use crate::error::{Call, err, map_kube};
use crate::id::{VmRef, is_dns_name};
use crate::power::Sub;
use crate::provider::{KubeVirtProvider, PowerApi, RolloutStrategy};
use crate::quantity::{mib_to_quantity, quantity_to_mib};
use crate::state::{vmi_active, vmi_phase};
use crate::types::{
    CpuSpec, KubeVirt, VirtualMachine, VirtualMachineInstance, VirtualMachineSpec, condition_true,
    meta,
};

/// Seconds of grace to pass on for `remaining`: rounded up, so a guest never gets less than the engine allows.
pub(crate) fn grace_seconds(remaining: Duration) -> i64 {
    let secs = remaining.as_secs() + u64::from(remaining.subsec_nanos() > 0);
    i64::try_from(secs).unwrap_or(i64::MAX)
}

impl KubeVirtProvider {
    /// Reads the cluster's rollout strategy (configured, else from the KubeVirt CR, else `Stage`).
    pub async fn rollout_strategy(&self) -> RolloutStrategy {
        if let Some(s) = self.inner.config.rollout_strategy {
            return s;
        }
        let api: kube::Api<KubeVirt> = kube::Api::all(self.inner.client.clone());
        match api.list(&ListParams::default()).await {
            Ok(list) => {
                let live = list.items.iter().any(|kv| {
                    kv.spec
                        .configuration
                        .as_ref()
                        .and_then(|c| c.get("vmRolloutStrategy"))
                        .and_then(|v| v.as_str())
                        == Some("LiveUpdate")
                });
                if live {
                    RolloutStrategy::LiveUpdate
                } else {
                    RolloutStrategy::Stage
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the KubeVirt CR; assuming the Stage rollout strategy");
                RolloutStrategy::Stage
            }
        }
    }

    fn describe_pair(
        &self,
        r: &VmRef,
        vm: &VirtualMachine,
        vmi: Option<&VirtualMachineInstance>,
    ) -> Result<VmDescription> {
        let state = Self::derive(vm, vmi, "describe", r)?;
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
                d.disks.push(DiskInfo::new(name, size));
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
}

#[async_trait]
impl Provider for KubeVirtProvider {
    fn provider_type(&self) -> &'static str {
        PROVIDER_TYPE
    }

    /// `scheme://host:port[/path]/ns/<namespace>`: the API server (no credentials) and the
    /// namespace bare VM names resolve in (see [`KubeVirtProvider::instance_identity`]).
    fn instance_id(&self) -> String {
        self.instance_identity()
    }

    fn capabilities(&self) -> ProviderCapabilities {
        let sub = self.inner.config.power_api == PowerApi::Subresources;
        let mut c = ProviderCapabilities::default();
        c.reconfigure_online = true;
        c.snapshots = true;
        c.full_clones = true;
        c.supported_disk_types = &["dataVolume", "containerDisk"];
        c.supported_network_types = &["virtio", "e1000"];
        // A KubeVirt stop delivers one shutdown signal; the launcher picks the guest agent or ACPI.
        c.acpi_shutdown = true;
        c.agent_shutdown = false;
        c.repeatable_shutdown_signal = false;
        c.power_state_watch = true;
        c.reset = sub;
        c.reboot = sub;
        c.pause = sub;
        c.create = true;
        c.delete = true;
        c.reconfigure = true;
        c.list_vms = true;
        c
    }

    async fn vm_capabilities(&self, vm: &VmId) -> Result<VmCapabilities> {
        let r = self.vm_ref(vm)?;
        let (vmo, vmi) = self.read(&r, "vm_capabilities").await?;
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

    async fn power_state(&self, vm: &VmId) -> Result<PowerState> {
        let r = self.vm_ref(vm)?;
        let (vmo, vmi) = self.read(&r, "power_state").await?;
        Self::derive(&vmo, vmi.as_ref(), "power_state", &r)
    }

    async fn watch_power_state(&self, vm: &VmId) -> Result<Option<PowerStateStream>> {
        let r = self.vm_ref(vm)?;
        let (vmo, vmi) = self.read(&r, "watch_power_state").await?;
        let baseline = Self::derive(&vmo, vmi.as_ref(), "watch_power_state", &r).ok();
        Ok(Some(self.power_state_stream(&r, baseline).boxed()))
    }

    async fn start(&self, vm: &VmId, opts: &StartOptions) -> Result<()> {
        let r = self.vm_ref(vm)?;
        self.start_vm(&r, opts.paused, "start").await
    }

    async fn power_off(&self, vm: &VmId, _opts: &PowerOffOptions) -> Result<()> {
        let r = self.vm_ref(vm)?;
        self.stop_vm(&r, Some(0), "power_off").await.map(drop)
    }

    async fn probe_agent(&self, vm: &VmId) -> Result<AgentStatus> {
        let r = self.vm_ref(vm)?;
        let vmi = self.get_vmi(&r, "probe_agent").await?;
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

    /// A graceful KubeVirt stop. The engine's remaining grace becomes the stop's `gracePeriod`
    /// (rounded up to whole seconds) — KubeVirt forces the guest off itself when it expires, so
    /// KubeVirt's deadline and the engine's agree. Without a remaining grace the VMI's own
    /// `terminationGracePeriodSeconds` applies. Only `ShutdownChannel::Acpi` is accepted: KubeVirt
    /// delivers the signal itself (through the agent when connected, else ACPI).
    async fn request_shutdown(
        &self,
        vm: &VmId,
        channel: ShutdownChannel,
        opts: &ShutdownRequestOptions,
    ) -> Result<()> {
        let r = self.vm_ref(vm)?;
        if channel != ShutdownChannel::Acpi {
            return Err(err(
                ErrorKind::Unsupported,
                "request_shutdown",
                &r.to_string(),
                "KubeVirt chooses the guest channel itself; request the shutdown with ShutdownChannel::Acpi",
            ));
        }
        let grace = opts.remaining_grace.map(grace_seconds);
        self.stop_vm_armed(&r, grace, "request_shutdown")
            .await
            .map(drop)
    }

    /// The UID of the VM's instance (VMI) while one exists that has not reached a final phase:
    /// virt-controller creates a new VMI, with a new UID, for every run (a restart deletes and
    /// re-creates it). `Ok(None)` without an instance or when it is `Succeeded`/`Failed`. An
    /// instance whose VirtualMachine is gone (orphaned) still has its run's identity.
    async fn incarnation(&self, vm: &VmId) -> Result<Option<Incarnation>> {
        let r = self.vm_ref(vm)?;
        let vmi = self.get_vmi(&r, "incarnation").await?;
        if let Some(uid) = vmi
            .as_ref()
            .filter(|v| vmi_active(Some(v)))
            .and_then(|v| v.metadata.uid.clone())
        {
            return Ok(Some(Incarnation::new(uid)));
        }
        // No run: still NotFound for a VM that does not exist.
        self.get_vm(&r, "incarnation").await?;
        Ok(None)
    }

    /// Undoes the stop [`Provider::request_shutdown`] sent, so the VM keeps running: the run
    /// strategy it had before (`Halted` → `Always`/`Once`/…, or `spec.running`), our `Stop`
    /// state-change request withdrawn (`Manual`/`RerunOnFailure`), and the VMI's
    /// `terminationGracePeriodSeconds` as it was. Possible only until virt-controller acts on
    /// the stop: once it has begun deleting the instance, KubeVirt cannot take the deletion
    /// back (the guest gets its shutdown signal and is forced off when the grace expires), and
    /// this fails with `InvalidState`; it does too when the VM has already stopped. The record
    /// of what a request changed lives in this provider instance (not across processes); with
    /// none for this VM there is nothing to undo and this returns `Ok`.
    async fn cancel_shutdown(&self, vm: &VmId) -> Result<()> {
        let r = self.vm_ref(vm)?;
        self.cancel_stop(&r, "cancel_shutdown").await
    }

    async fn reset(&self, vm: &VmId) -> Result<()> {
        let r = self.vm_ref(vm)?;
        self.require_subresources(&r, "reset")?;
        self.subresource(&r, Sub::Reset, json!({}), "reset").await
    }

    async fn reboot(&self, vm: &VmId, _channel: ShutdownChannel) -> Result<()> {
        let r = self.vm_ref(vm)?;
        self.require_subresources(&r, "reboot")?;
        self.subresource(&r, Sub::SoftReboot, json!({}), "reboot")
            .await
    }

    async fn pause(&self, vm: &VmId) -> Result<()> {
        let r = self.vm_ref(vm)?;
        self.require_subresources(&r, "pause")?;
        self.subresource(&r, Sub::Pause, json!({}), "pause").await
    }

    async fn resume(&self, vm: &VmId) -> Result<()> {
        let r = self.vm_ref(vm)?;
        self.require_subresources(&r, "resume")?;
        self.subresource(&r, Sub::Unpause, json!({}), "resume")
            .await
    }

    async fn create(&self, spec: &VmCreateSpec) -> Result<VmId> {
        let ns = self.inner.namespace.clone();
        if !is_dns_name(&spec.name) {
            return Err(err(
                ErrorKind::InvalidSpec,
                "create",
                &spec.name,
                "VM names must be lowercase DNS-1123 names",
            ));
        }
        let r = VmRef {
            namespace: ns.clone(),
            name: spec.name.clone(),
        };
        let vm = build_vm(spec, &ns)?;
        self.api::<VirtualMachine>(&ns)
            .create(
                &PostParams {
                    field_manager: Some(self.inner.config.field_manager.clone()),
                    ..Default::default()
                },
                &vm,
            )
            .await
            .map_err(|e| map_kube(e, Call::Object, "create", &r.to_string()))?;
        Ok(r.id())
    }

    async fn delete(&self, vm: &VmId, opts: &DeleteOptions) -> Result<()> {
        let r = self.vm_ref(vm)?;
        let res = r.to_string();
        let (vmo, vmi) = self.read(&r, "delete").await?;
        if vmi_active(vmi.as_ref()) {
            return Err(err(
                ErrorKind::InvalidState,
                "delete",
                &res,
                "the VM must be stopped",
            ));
        }
        let api = self.api::<VirtualMachine>(&r.namespace);
        // DataVolumes from dataVolumeTemplates are owned by the VM: orphan them to keep the disks
        // (only then: orphaning waits for the garbage collector to drop its finalizer).
        let has_dvs = vmo
            .spec
            .extra
            .get("dataVolumeTemplates")
            .and_then(|v| v.as_array())
            .is_some_and(|a| !a.is_empty());
        let dp = DeleteParams {
            propagation_policy: Some(if has_dvs && !opts.delete_disks {
                PropagationPolicy::Orphan
            } else {
                PropagationPolicy::Background
            }),
            ..Default::default()
        };
        let deleted = api
            .delete(&r.name, &dp)
            .await
            .map_err(|e| map_kube(e, Call::Object, "delete", &res))?;
        if let Some(obj) = deleted.left()
            && let Some(uid) = obj.metadata.uid.clone()
        {
            tokio::time::timeout(
                self.inner.config.operation_timeout,
                await_condition(api, &r.name, conditions::is_deleted(&uid)),
            )
            .await
            .map_err(|_| err(ErrorKind::Timeout, "delete", &res, "VM not gone in time"))?
            .map_err(|e| {
                err(ErrorKind::Unavailable, "delete", &res, "watch failed").with_source(e)
            })?;
        }
        Ok(())
    }

    async fn reconfigure(
        &self,
        vm: &VmId,
        change: &ReconfigureRequest,
    ) -> Result<ReconfigureResult> {
        let r = self.vm_ref(vm)?;
        self.hotplug(&r, change).await
    }

    async fn describe(&self, vm: &VmId) -> Result<VmDescription> {
        let r = self.vm_ref(vm)?;
        let (vmo, vmi) = self.read(&r, "describe").await?;
        self.describe_pair(&r, &vmo, vmi.as_ref())
    }

    async fn list_vms(&self, opts: &ListOptions) -> Result<Vec<VmDescription>> {
        let ns = self.inner.namespace.clone();
        let selector: Vec<String> = opts
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let lp = ListParams::default().labels(&selector.join(","));
        let vms = self
            .api::<VirtualMachine>(&ns)
            .list(&lp)
            .await
            .map_err(|e| map_kube(e, Call::Object, "list_vms", &ns))?;
        let vmis = self
            .api::<VirtualMachineInstance>(&ns)
            .list(&ListParams::default())
            .await
            .map_err(|e| map_kube(e, Call::Object, "list_vms", &ns))?;
        let mut out = Vec::new();
        for vm in &vms.items {
            let Some(name) = vm.metadata.name.clone() else {
                continue;
            };
            let vmi = vmis
                .items
                .iter()
                .find(|i| i.metadata.name.as_deref() == Some(&name));
            let r = VmRef {
                namespace: ns.clone(),
                name,
            };
            match self.describe_pair(&r, vm, vmi) {
                Ok(d) => out.push(d),
                Err(e) => tracing::debug!(vm = %r, error = %e, "skipping VM in unknown state"),
            }
        }
        Ok(out)
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

impl KubeVirtProvider {
    fn require_subresources(&self, r: &VmRef, op: &'static str) -> Result<()> {
        if self.inner.config.power_api == PowerApi::Subresources {
            Ok(())
        } else {
            Err(err(
                ErrorKind::Unsupported,
                op,
                &r.to_string(),
                "needs the subresources.kubevirt.io API (PowerApi::Subresources)",
            ))
        }
    }
}

/// The VirtualMachine object for a create spec.
fn build_vm(spec: &VmCreateSpec, ns: &str) -> Result<VirtualMachine> {
    let mut disks = Vec::new();
    let mut volumes = Vec::new();
    let mut dvts = Vec::new();
    if let Some(image) = &spec.image {
        disks.push(json!({"name": "rootdisk", "disk": {"bus": "virtio"}}));
        volumes.push(json!({"name": "rootdisk", "containerDisk": {"image": image}}));
    }
    for d in &spec.disks {
        if !is_dns_name(&d.name) {
            return Err(err(
                ErrorKind::InvalidSpec,
                "create",
                &spec.name,
                format!("disk name {:?} is not a DNS-1123 name", d.name),
            ));
        }
        let dv = format!("{}-{}", spec.name, d.name);
        disks.push(json!({"name": d.name, "disk": {"bus": "virtio"}}));
        volumes.push(json!({"name": d.name, "dataVolume": {"name": dv}}));
        dvts.push(
            json!({"metadata": {"name": dv}, "spec": {"source": {"blank": {}},
            "storage": {"resources": {"requests": {"storage": format!("{}Gi", d.size_gib)}}}}}),
        );
    }
    if let Some(ud) = &spec.cloud_init_user_data {
        disks.push(json!({"name": "cloudinit", "disk": {"bus": "virtio"}}));
        volumes.push(json!({"name": "cloudinit", "cloudInitNoCloud": {"userData": ud}}));
    }
    let mut interfaces = Vec::new();
    let mut networks = Vec::new();
    for (i, n) in spec.networks.iter().enumerate() {
        let name = format!("net{i}");
        let model = n.model.clone().unwrap_or_else(|| "virtio".into());
        if n.network == "pod" || n.network == "default" {
            interfaces.push(json!({"name": name, "model": model, "masquerade": {}}));
            networks.push(json!({"name": name, "pod": {}}));
        } else {
            interfaces.push(json!({"name": name, "model": model, "bridge": {}}));
            networks.push(json!({"name": name, "multus": {"networkName": n.network}}));
        }
    }
    let mut template_spec = json!({
        "domain": {
            "cpu": {"sockets": spec.cpu.max(1), "cores": 1, "threads": 1},
            "memory": {"guest": mib_to_quantity(spec.memory_mib.max(1))},
            "devices": {"disks": disks, "interfaces": interfaces},
        },
        "volumes": volumes,
        "networks": networks,
    });
    if let Some(node) = &spec.placement {
        template_spec["nodeSelector"] = json!({"kubernetes.io/hostname": node});
    }
    let mut vm_spec: VirtualMachineSpec = serde_json::from_value(json!({
        "runStrategy": if spec.power_on { "Always" } else { "Halted" },
        "template": {"metadata": {"labels": spec.labels}, "spec": template_spec},
    }))
    .map_err(|e| err(ErrorKind::Internal, "create", &spec.name, "build VM").with_source(e))?;
    if !dvts.is_empty() {
        vm_spec
            .extra
            .insert("dataVolumeTemplates".into(), json!(dvts));
    }
    let mut vm = VirtualMachine::new(&spec.name, vm_spec);
    vm.metadata = meta(&spec.name, ns, spec.labels.clone());
    Ok(vm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grace_rounds_up() {
        assert_eq!(grace_seconds(Duration::from_millis(0)), 0);
        assert_eq!(grace_seconds(Duration::from_millis(1)), 1);
        assert_eq!(grace_seconds(Duration::from_millis(2000)), 2);
        assert_eq!(grace_seconds(Duration::from_millis(2001)), 3);
    }

    #[test]
    fn create_spec_becomes_a_halted_vm() {
        let mut s = VmCreateSpec::new("web-1", 2, 1536);
        s.disks
            .push(virtrigaud_core::DiskCreateSpec::new("data", 10));
        let vm = build_vm(&s, "ns").expect("vm");
        assert_eq!(vm.spec.run_strategy.as_deref(), Some("Halted"));
        let d = vm
            .spec
            .template
            .as_ref()
            .and_then(|t| t.spec.as_ref())
            .and_then(|s| s.domain.as_ref())
            .expect("domain");
        assert_eq!(d.cpu.as_ref().map(CpuSpec::vcpus), Some(2));
        assert_eq!(
            d.memory.as_ref().and_then(|m| m.guest.as_deref()),
            Some("1536Mi")
        );
        assert!(vm.spec.extra.contains_key("dataVolumeTemplates"));
    }
}
