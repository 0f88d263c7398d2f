//! Create and delete.

use kube::api::{DeleteParams, PostParams, PropagationPolicy};
use kube::runtime::wait::{await_condition, conditions};
use serde_json::json;
use virtrigaud_core::{DeleteOptions, Error, Result, ResultExt, VmCreateSpec, VmId};

use crate::PROVIDER_TYPE;
use crate::client::Connection;
use crate::error::to_core_error;
use crate::id::{VmRef, is_dns_name};
use crate::image::PVC_IMAGE_PREFIX;
use crate::quantity::mib_to_quantity;
use crate::state::vmi_active;
use crate::types::{VirtualMachine, VirtualMachineSpec, meta};

impl Connection {
    /// Creates the VM of `spec` in the configured namespace.
    pub(crate) async fn create(&self, spec: &VmCreateSpec) -> Result<VmId> {
        let ns = self.namespace.clone();
        validate_create(spec).ctx(PROVIDER_TYPE, "create", &spec.name)?;
        let r = VmRef {
            namespace: ns.clone(),
            name: spec.name.clone(),
        };
        let vm = build_vm(spec, &ns).ctx(PROVIDER_TYPE, "create", &spec.name)?;
        self.api::<VirtualMachine>(&ns)
            .create(
                &PostParams {
                    field_manager: Some(self.config.field_manager.clone()),
                    ..Default::default()
                },
                &vm,
            )
            .await
            .map_err(|e| to_core_error(e, "create", Some(&r.to_string())))?;
        Ok(r.id())
    }

    /// Deletes a stopped VM (its disks kept unless `opts.delete_disks`) and the cloud-init
    /// Secrets it owns, and waits until it is gone.
    pub(crate) async fn delete(&self, r: &VmRef, opts: &DeleteOptions) -> Result<()> {
        let res = r.to_string();
        let (vmo, vmi) = self.read(r, "delete").await?;
        if vmi_active(vmi.as_ref()) {
            return Err(Error::invalid_state("the VM must be stopped")).ctx(
                PROVIDER_TYPE,
                "delete",
                &res,
            );
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
            .map_err(|e| to_core_error(e, "delete", Some(&res)))?;
        // The cloud-init Secrets a clone's customization made: owned by the VM, so the garbage
        // collector would remove them, but not after an orphaning delete (and not on clusters
        // without one).
        self.delete_owned_secrets(&vmo, false).await;
        if let Some(obj) = deleted.left()
            && let Some(uid) = obj.metadata.uid.clone()
        {
            tokio::time::timeout(
                self.config.operation_timeout,
                await_condition(api, &r.name, conditions::is_deleted(&uid)),
            )
            .await
            .map_err(|_| Error::timeout("VM not gone in time"))
            .ctx(PROVIDER_TYPE, "delete", &res)?
            .map_err(|e| to_core_error(e, "delete", Some(&res)))?;
        }
        Ok(())
    }
}

/// Core's shared rules ([`VmCreateSpec::validate`]), then what KubeVirt adds: the VM and disk
/// names are DNS-1123 names (they become object names).
fn validate_create(spec: &VmCreateSpec) -> Result<()> {
    spec.validate()?;
    if let Some(c) = &spec.placement.cluster {
        return Err(Error::invalid_spec(format!(
            "placement.cluster: a Kubernetes API endpoint is one cluster; place by host (node), not cluster {c:?}"
        )));
    }
    if !is_dns_name(&spec.name) {
        return Err(Error::invalid_spec(
            "name: VM names must be lowercase DNS-1123 names",
        ));
    }
    for d in &spec.disks {
        if !is_dns_name(&d.name) {
            return Err(Error::invalid_spec(format!(
                "disks.{}: the disk name is not a DNS-1123 name",
                d.name
            )));
        }
    }
    Ok(())
}

/// The PVC a `pvc:<namespace>/<name>` image names (a prepared DataVolume, see
/// [`crate::DataVolumeImageSink`]); `None` for a container disk image.
fn pvc_image(image: &str) -> Result<Option<(&str, &str)>> {
    let Some(rest) = image.strip_prefix(PVC_IMAGE_PREFIX) else {
        return Ok(None);
    };
    match rest.split_once('/') {
        Some((ns, name)) if is_dns_name(ns) && is_dns_name(name) => Ok(Some((ns, name))),
        _ => Err(Error::invalid_spec(format!(
            "image: {image:?} is not {PVC_IMAGE_PREFIX}NAMESPACE/NAME with DNS-1123 names"
        ))),
    }
}

/// The VirtualMachine object for a (validated) create spec.
fn build_vm(spec: &VmCreateSpec, ns: &str) -> Result<VirtualMachine> {
    let mut disks = Vec::new();
    let mut volumes = Vec::new();
    let mut dvts = Vec::new();
    if let Some(image) = &spec.image {
        disks.push(json!({"name": "rootdisk", "disk": {"bus": "virtio"}}));
        match pvc_image(image)? {
            Some((namespace, name)) => {
                let dv = format!("{}-rootdisk", spec.name);
                volumes.push(json!({"name": "rootdisk", "dataVolume": {"name": dv}}));
                // No size: CDI sizes a PVC clone like its source.
                let mut storage = json!({});
                if let Some(class) = &spec.placement.datastore {
                    storage["storageClassName"] = json!(class);
                }
                dvts.push(json!({"metadata": {"name": dv}, "spec": {
                    "source": {"pvc": {"namespace": namespace, "name": name}},
                    "storage": storage}}));
            }
            None => {
                volumes.push(json!({"name": "rootdisk", "containerDisk": {"image": image}}));
            }
        }
    }
    for d in &spec.disks {
        let dv = format!("{}-{}", spec.name, d.name);
        disks.push(json!({"name": d.name, "disk": {"bus": "virtio"}}));
        volumes.push(json!({"name": d.name, "dataVolume": {"name": dv}}));
        let mut storage =
            json!({"resources": {"requests": {"storage": format!("{}Gi", d.size_gib)}}});
        if let Some(class) = &spec.placement.datastore {
            storage["storageClassName"] = json!(class);
        }
        dvts.push(json!({"metadata": {"name": dv}, "spec": {"source": {"blank": {}}, "storage": storage}}));
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
    if let Some(node) = &spec.placement.host {
        template_spec["nodeSelector"] = json!({"kubernetes.io/hostname": node});
    }
    // A standing rule: a rescheduled VM still avoids its peers' nodes.
    if let Some(rule) = &spec.placement.anti_affinity {
        template_spec["affinity"] = json!({"podAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [{
                "labelSelector": {"matchLabels": {rule.label.as_str(): rule.value.as_str()}},
                "topologyKey": "kubernetes.io/hostname"}]}});
    }
    let mut vm_spec: VirtualMachineSpec = serde_json::from_value(json!({
        "runStrategy": if spec.power_on { "Always" } else { "Halted" },
        "template": {"metadata": {"labels": spec.labels}, "spec": template_spec},
    }))
    .map_err(|e| Error::internal("build VM").with_source(e))?;
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
    use crate::types::CpuSpec;

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

    #[test]
    fn a_pvc_image_becomes_a_cloned_root_disk_and_a_bad_one_is_refused() {
        let mut s = VmCreateSpec::new("web-1", 1, 256);
        s.image = Some("pvc:images/ubuntu".into());
        s.placement = virtrigaud_core::Placement::default().with_datastore("fast");
        let vm = serde_json::to_value(build_vm(&s, "ns").expect("vm")).unwrap();
        let dvt = &vm["spec"]["dataVolumeTemplates"][0];
        assert_eq!(dvt["metadata"]["name"], "web-1-rootdisk");
        assert_eq!(
            dvt["spec"]["source"]["pvc"],
            json!({"namespace": "images", "name": "ubuntu"})
        );
        assert_eq!(dvt["spec"]["storage"]["storageClassName"], "fast");
        let vols = &vm["spec"]["template"]["spec"]["volumes"][0];
        assert_eq!(vols["dataVolume"]["name"], "web-1-rootdisk");
        s.image = Some("pvc:Images/x".into());
        let e = build_vm(&s, "ns").unwrap_err();
        assert!(e.to_string().contains("image:"), "{e}");
        s.image = Some("quay.io/containerdisks/fedora:40".into());
        let vm = serde_json::to_value(build_vm(&s, "ns").expect("vm")).unwrap();
        assert_eq!(
            vm["spec"]["template"]["spec"]["volumes"][0]["containerDisk"]["image"],
            "quay.io/containerdisks/fedora:40"
        );
    }

    #[test]
    fn host_anti_affinity_becomes_required_pod_anti_affinity_on_the_template() {
        use virtrigaud_core::placement::HostAntiAffinity;
        let mut s = VmCreateSpec::new("web-2", 1, 256);
        s.labels.insert("virtrigaud.io/set".into(), "web".into());
        s.placement = virtrigaud_core::Placement::on_host("node-2")
            .with_anti_affinity(HostAntiAffinity::new("virtrigaud.io/set", "web"));
        let vm = serde_json::to_value(build_vm(&s, "ns").expect("vm")).unwrap();
        let t = &vm["spec"]["template"];
        assert_eq!(t["metadata"]["labels"]["virtrigaud.io/set"], "web");
        assert_eq!(
            t["spec"]["nodeSelector"]["kubernetes.io/hostname"],
            "node-2"
        );
        let term = &t["spec"]["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            [0];
        assert_eq!(
            term["labelSelector"]["matchLabels"]["virtrigaud.io/set"],
            "web"
        );
        assert_eq!(term["topologyKey"], "kubernetes.io/hostname");
    }
}
