//! Guest customization of a fresh clone ([`virtrigaud_core::Customization`]), patched into
//! the target VM once its `VirtualMachineClone` has `Succeeded`, where KubeVirt looks for it:
//! - the hostname becomes `spec.template.spec.hostname` (a DNS-1123 label, checked before
//!   anything is made: `InvalidSpec` naming `customization.hostname`);
//! - networks become the `networkData` (cloud-init network-config v2, NICs matched by the MAC
//!   addresses of the template's interfaces when they all have one, else the one network
//!   matches the first Ethernet NIC by name) of a `cloudInitNoCloud` volume, with its disk;
//! - cloud-init user data goes into a Secret, `<target>-userdata` (key `userdata`), that the
//!   volume names in `userDataSecretRef`: never inline in the VM spec. The Secret is owned by
//!   the target VM (an ownerReference with its uid), so Kubernetes' garbage collector removes
//!   it with the VM; [`crate::KubeVirtProvider`]'s `delete` removes it explicitly too (an
//!   orphaning delete, which keeps the disks, would keep it as well).
//!
//! A `cloudInitNoCloud` volume copied from the source is reused: what is customized replaces
//! its user data or network data, the rest stays. Nothing else of the guest is changed.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{DeleteParams, PostParams, Preconditions};
use serde_json::{Value, json};
use virtrigaud_core::cloudinit::{EMPTY_USER_DATA, NoCloudSeed};
use virtrigaud_core::{Customization, Error, ErrorKind, Result, ResultExt};

use crate::PROVIDER_TYPE;
use crate::client::Connection;
use crate::error::to_core_error;
use crate::id::{VmRef, is_dns_name, sanitize_name};
use crate::labels::VM_LABEL;
use crate::types::VirtualMachine;

const OP: &str = "clone";

/// The Secret key KubeVirt reads cloud-init user data from (`userDataSecretRef`).
pub(crate) const USER_DATA_KEY: &str = "userdata";
/// The name of the cloud-init volume (and its disk) added when the clone has none.
const CLOUD_INIT_VOLUME: &str = "cloudinitdisk";
/// The `cloudInitNoCloud` fields that carry user data, and those that carry network data.
const USER_DATA_FIELDS: [&str; 3] = ["userData", "userDataBase64", "userDataSecretRef"];
const NETWORK_DATA_FIELDS: [&str; 3] = ["networkData", "networkDataBase64", "networkDataSecretRef"];

/// The Secret holding the user data of the clone `vm`: `<vm>-userdata` (shortened when that
/// is not a valid name).
pub(crate) fn user_data_secret_name(vm: &str) -> String {
    const SUFFIX: &str = "-userdata";
    let name = format!("{vm}{SUFFIX}");
    if is_dns_name(&name) {
        return name;
    }
    // Too long (or a last label too long): a shortened label.
    let mut base = sanitize_name(vm);
    base.truncate(63 - SUFFIX.len());
    format!("{}{SUFFIX}", base.trim_end_matches('-'))
}

/// What a customization changes on the target VM. `Debug` never shows user data (it only
/// names the Secret holding it).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Plan {
    /// `spec.template.spec.hostname`.
    hostname: Option<String>,
    /// The volume's `networkData` (network-config v2).
    network_data: Option<String>,
    /// The Secret the volume's `userDataSecretRef` names.
    user_data_secret: Option<String>,
}

impl Plan {
    fn touches_volume(&self) -> bool {
        self.network_data.is_some() || self.user_data_secret.is_some()
    }
}

impl Connection {
    /// Applies `c` to the freshly cloned (never started) `target`: the user-data Secret first
    /// (owned by the VM), then one merge patch of the template pinned to the VM's
    /// resourceVersion (a concurrent write is re-read and the patch recomputed).
    pub(crate) async fn customize(&self, target: &VmRef, c: &Customization) -> Result<()> {
        let res = target.to_string();
        let vm = self.get_vm(target, OP).await?;
        let uid = vm
            .metadata
            .uid
            .clone()
            .ok_or_else(|| Error::internal("the cloned VM has no uid"))
            .ctx(PROVIDER_TYPE, OP, &res)?;
        let seed = NoCloudSeed::for_customization(&res, c, &template_macs(&vm)).ctx(
            PROVIDER_TYPE,
            OP,
            &res,
        )?;
        let user_data_secret = match &c.cloud_init_user_data {
            Some(_) => Some(
                self.create_user_data_secret(target, &uid, &seed.user_data)
                    .await?,
            ),
            None => None,
        };
        let plan = Plan {
            hostname: c.hostname.clone(),
            network_data: seed.network_config,
            user_data_secret,
        };
        let api = self.api::<VirtualMachine>(&target.namespace);
        self.retry_conflicts(|| async {
            let vm = self.get_vm(target, OP).await?;
            if vm.metadata.uid.as_deref() != Some(uid.as_str()) {
                return Err(Error::new(
                    ErrorKind::Conflict,
                    "the cloned VM was replaced while it was being customized",
                ))
                .ctx(PROVIDER_TYPE, OP, &res);
            }
            let body = customization_patch(&vm, &plan);
            self.merge_patch(&api, &target.name, &body, OP, &res).await
        })
        .await?;
        Ok(())
    }

    /// Creates the Secret holding the clone's user data, owned by the VM `uid`.
    async fn create_user_data_secret(
        &self,
        target: &VmRef,
        uid: &str,
        user_data: &str,
    ) -> Result<String> {
        let name = user_data_secret_name(&target.name);
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(target.namespace.clone()),
                labels: Some(BTreeMap::from([(VM_LABEL.to_owned(), target.name.clone())])),
                owner_references: Some(vec![OwnerReference {
                    api_version: "kubevirt.io/v1".into(),
                    kind: "VirtualMachine".into(),
                    name: target.name.clone(),
                    uid: uid.to_owned(),
                    controller: Some(true),
                    block_owner_deletion: None,
                }]),
                ..Default::default()
            },
            data: Some(BTreeMap::from([(
                USER_DATA_KEY.to_owned(),
                ByteString(user_data.as_bytes().to_vec()),
            )])),
            type_: Some("Opaque".into()),
            ..Default::default()
        };
        let pp = PostParams {
            field_manager: Some(self.config.field_manager.clone()),
            ..Default::default()
        };
        self.api::<Secret>(&target.namespace)
            .create(&pp, &secret)
            .await
            .map_err(|e| to_core_error(e, OP, Some(&format!("{}/{name}", target.namespace))))?;
        Ok(name)
    }

    /// Deletes the Secrets `vm` owns that this provider knows of: those its cloud-init volumes
    /// reference and, with `made_for_clone`, the one a customization makes (best effort; a
    /// Secret not owned by this VM is never touched).
    pub(crate) async fn delete_owned_secrets(&self, vm: &VirtualMachine, made_for_clone: bool) {
        let (Some(ns), Some(uid)) = (vm.metadata.namespace.as_deref(), vm.metadata.uid.as_deref())
        else {
            return;
        };
        let mut names = referenced_secrets(vm);
        if made_for_clone && let Some(n) = vm.metadata.name.as_deref() {
            names.push(user_data_secret_name(n));
        }
        names.sort();
        names.dedup();
        let api = self.api::<Secret>(ns);
        for name in names {
            // Only a Secret this VM owns, and only the one read (uid precondition).
            let secret_uid = match api.get_opt(&name).await {
                Ok(Some(s)) => s
                    .metadata
                    .owner_references
                    .as_deref()
                    .unwrap_or_default()
                    .iter()
                    .any(|o| o.uid == uid)
                    .then_some(s.metadata.uid)
                    .flatten(),
                Ok(None) => None,
                Err(e) => {
                    tracing::warn!(secret = %name, error = %e, "cannot read a Secret of the VM; leaving it to the garbage collector");
                    None
                }
            };
            let Some(secret_uid) = secret_uid else {
                continue;
            };
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: Some(secret_uid),
                    resource_version: None,
                }),
                ..Default::default()
            };
            match api.delete(&name, &dp).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => {
                    tracing::warn!(secret = %name, error = %e, "cannot delete a Secret of the VM; leaving it to the garbage collector");
                }
            }
        }
    }
}

/// Checks a customization before anything is made: the hostname is a DNS-1123 label, the
/// networks are well-formed (`InvalidSpec` naming the field).
pub(crate) fn check_customization(c: &Customization) -> Result<()> {
    if let Some(h) = &c.hostname
        && !is_dns_label(h)
    {
        return Err(Error::invalid_spec(format!(
            "customization.hostname: {h:?} is not a DNS-1123 label (KubeVirt sets it as \
             spec.hostname: lowercase letters, digits and '-', at most 63 characters)"
        )));
    }
    // One placeholder MAC per network: what is checked here is the networks' own fields
    // (the clone's NICs are matched once it exists).
    let macs: Vec<String> = (0..c.networks.len())
        .map(|i| format!("02:00:00:00:00:{:02x}", i % 256))
        .collect();
    NoCloudSeed::for_customization("check", c, &macs)?;
    Ok(())
}

/// Whether `s` is a DNS-1123 label (what Kubernetes accepts as a hostname).
fn is_dns_label(s: &str) -> bool {
    !s.contains('.') && is_dns_name(s) && s.len() <= 63
}

/// The MAC addresses of the template's interfaces, in order, when every interface has one
/// (else none: the network config then matches by name).
fn template_macs(vm: &VirtualMachine) -> Vec<String> {
    let ifaces = template_spec(vm)
        .and_then(|s| s.pointer("/domain/devices/interfaces").cloned())
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default();
    let macs: Option<Vec<String>> = ifaces
        .iter()
        .map(|i| {
            i.get("macAddress")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .collect();
    macs.unwrap_or_default()
}

/// The VM's template spec as JSON (`None` without one).
fn template_spec(vm: &VirtualMachine) -> Option<Value> {
    vm.spec
        .template
        .as_ref()
        .and_then(|t| t.spec.as_ref())
        .and_then(|s| serde_json::to_value(s).ok())
}

/// The Secrets the VM's cloud-init volumes reference.
fn referenced_secrets(vm: &VirtualMachine) -> Vec<String> {
    let volumes = template_spec(vm)
        .and_then(|s| s.get("volumes").cloned())
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default();
    let mut names = Vec::new();
    for v in &volumes {
        for kind in ["cloudInitNoCloud", "cloudInitConfigDrive"] {
            for field in ["userDataSecretRef", "networkDataSecretRef", "secretRef"] {
                if let Some(n) = v
                    .get(kind)
                    .and_then(|c| c.get(field))
                    .and_then(|r| r.get("name"))
                    .and_then(Value::as_str)
                {
                    names.push(n.to_owned());
                }
            }
        }
    }
    names
}

/// The merge patch applying `plan` to `vm`'s template, pinned to its resourceVersion. Lists
/// (volumes, disks) are replaced whole, so they are computed from `vm`.
fn customization_patch(vm: &VirtualMachine, plan: &Plan) -> Value {
    let tspec = template_spec(vm).unwrap_or_else(|| json!({}));
    let mut spec = serde_json::Map::new();
    if let Some(h) = &plan.hostname {
        spec.insert("hostname".into(), json!(h));
    }
    if plan.touches_volume() {
        let mut volumes: Vec<Value> = tspec
            .get("volumes")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut disks: Vec<Value> = tspec
            .pointer("/domain/devices/disks")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let named = |list: &[Value], n: &str| {
            list.iter()
                .any(|x| x.get("name").and_then(Value::as_str) == Some(n))
        };
        let existing = volumes
            .iter()
            .position(|v| v.get("cloudInitNoCloud").is_some());
        let (name, mut ci) = match existing {
            Some(i) => (
                volumes[i]
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or(CLOUD_INIT_VOLUME)
                    .to_owned(),
                volumes[i]["cloudInitNoCloud"].clone(),
            ),
            None => {
                let free = [CLOUD_INIT_VOLUME, "virtrigaud-cloudinit"]
                    .into_iter()
                    .find(|n| !named(&volumes, n) && !named(&disks, n))
                    .unwrap_or("virtrigaud-cloudinit-1");
                (free.to_owned(), json!({}))
            }
        };
        if let Some(obj) = ci.as_object_mut() {
            if let Some(secret) = &plan.user_data_secret {
                for f in USER_DATA_FIELDS {
                    obj.remove(f);
                }
                obj.insert("userDataSecretRef".into(), json!({ "name": secret }));
            }
            if let Some(nd) = &plan.network_data {
                for f in NETWORK_DATA_FIELDS {
                    obj.remove(f);
                }
                obj.insert("networkData".into(), json!(nd));
            }
            // KubeVirt wants user data in every cloud-init volume: an empty config, which is
            // nothing secret, when only the network is customized.
            if !USER_DATA_FIELDS.iter().any(|f| obj.contains_key(*f)) {
                obj.insert("userData".into(), json!(EMPTY_USER_DATA));
            }
        }
        let volume = json!({ "name": name, "cloudInitNoCloud": ci });
        match existing {
            Some(i) => volumes[i] = volume,
            None => volumes.push(volume),
        }
        if !named(&disks, &name) {
            disks.push(json!({ "name": name, "disk": { "bus": "virtio" } }));
        }
        spec.insert("volumes".into(), Value::Array(volumes));
        spec.insert("domain".into(), json!({ "devices": { "disks": disks } }));
    }
    json!({
        "metadata": { "resourceVersion": vm.metadata.resource_version },
        "spec": { "template": { "spec": spec } },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtrigaud_core::NetworkCustomization;

    fn vm(template_spec: Value) -> VirtualMachine {
        serde_json::from_value(json!({
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
            "metadata": {"name": "c", "namespace": "ns", "uid": "u-1", "resourceVersion": "7"},
            "spec": {"runStrategy": "Halted", "template": {"spec": template_spec}},
        }))
        .expect("vm")
    }

    fn customization(user_data: Option<&str>) -> Customization {
        let mut n = NetworkCustomization::default();
        n.name = "primary".into();
        n.ip_address = Some("192.0.2.10/24".into());
        let mut c = Customization::default();
        c.hostname = Some("web-2".into());
        c.networks = vec![n];
        c.cloud_init_user_data = user_data.map(Into::into);
        c
    }

    #[test]
    fn bad_customization_is_refused_before_anything_is_made() {
        let mut c = customization(None);
        for h in ["Web", "a.b", "-a", "a_b", &"x".repeat(64)] {
            c.hostname = Some(h.into());
            let e = check_customization(&c).expect_err(h);
            assert_eq!(e.kind(), ErrorKind::InvalidSpec);
            assert!(e.to_string().contains("customization.hostname"), "{e}");
        }
        let mut c = customization(None);
        c.networks[0].ip_address = Some("192.0.2.10".into());
        let e = check_customization(&c).unwrap_err();
        assert!(e.to_string().contains("networks[0].ipAddress"), "{e}");
        assert!(check_customization(&customization(None)).is_ok());
    }

    #[test]
    fn patch_replaces_the_sources_cloud_init_volume_and_keeps_the_rest() {
        let source = vm(json!({
            "domain": {"devices": {"disks": [{"name": "rootdisk"}, {"name": "ci", "disk": {"bus": "sata"}}],
                                   "interfaces": [{"name": "net0", "macAddress": "52:54:00:00:00:01"}]}},
            "volumes": [{"name": "rootdisk", "containerDisk": {"image": "x"}},
                        {"name": "ci", "cloudInitNoCloud": {"userData": "#cloud-config\nsource\n", "networkData": "old"}}],
        }));
        assert_eq!(template_macs(&source), ["52:54:00:00:00:01"]);
        let plan = Plan {
            hostname: Some("h".into()),
            network_data: None,
            user_data_secret: Some("c-userdata".into()),
        };
        let p = customization_patch(&source, &plan);
        assert_eq!(p["metadata"]["resourceVersion"], "7");
        let spec = &p["spec"]["template"]["spec"];
        assert_eq!(spec["hostname"], "h");
        let vols = spec["volumes"].as_array().unwrap();
        assert_eq!(vols.len(), 2);
        assert_eq!(
            vols[1],
            json!({"name": "ci", "cloudInitNoCloud": {"userDataSecretRef": {"name": "c-userdata"}, "networkData": "old"}})
        );
        assert_eq!(
            spec["domain"]["devices"]["disks"].as_array().unwrap().len(),
            2
        );
        assert!(
            !p.to_string().contains("source\\n"),
            "inline user data left: {p}"
        );
    }

    #[test]
    fn patch_adds_a_volume_and_disk_without_inline_secrets() {
        let source = vm(
            json!({"domain": {"devices": {"disks": [{"name": "rootdisk"}]}},
                               "volumes": [{"name": "rootdisk", "containerDisk": {"image": "x"}}]}),
        );
        assert!(template_macs(&source).is_empty());
        let plan = Plan {
            hostname: None,
            network_data: Some("{\"version\": 2}".into()),
            user_data_secret: None,
        };
        let p = customization_patch(&source, &plan);
        let spec = &p["spec"]["template"]["spec"];
        assert!(spec.get("hostname").is_none());
        assert_eq!(
            spec["volumes"][1],
            json!({"name": CLOUD_INIT_VOLUME, "cloudInitNoCloud": {"networkData": "{\"version\": 2}", "userData": EMPTY_USER_DATA}})
        );
        assert_eq!(
            spec["domain"]["devices"]["disks"][1]["name"],
            CLOUD_INIT_VOLUME
        );
        // hostname only: the volumes are not touched
        let plan = Plan {
            hostname: Some("h".into()),
            network_data: None,
            user_data_secret: None,
        };
        let spec = customization_patch(&source, &plan)["spec"]["template"]["spec"].clone();
        assert_eq!(spec, json!({"hostname": "h"}));
    }

    #[test]
    fn secret_names_and_references() {
        assert_eq!(user_data_secret_name("web"), "web-userdata");
        let long = vec!["a".repeat(62); 4].join(".");
        assert!(is_dns_name(&long));
        assert!(user_data_secret_name(&long).len() <= 253);
        assert!(is_dns_name(&user_data_secret_name(&long)));
        let v = vm(
            json!({"volumes": [{"name": "ci", "cloudInitNoCloud": {"userDataSecretRef": {"name": "s1"},
                                                                          "networkDataSecretRef": {"name": "s2"}}}]}),
        );
        assert_eq!(referenced_secrets(&v), ["s1", "s2"]);
    }

    #[test]
    fn debug_never_shows_user_data() {
        let plan = Plan {
            hostname: Some("h".into()),
            network_data: None,
            user_data_secret: Some("c-userdata".into()),
        };
        assert!(format!("{plan:?}").contains("c-userdata"));
        let mut c = customization(Some("#cloud-config\npassword: hunter2\n"));
        c.hostname = Some("Bad_Host".into());
        let e = check_customization(&c).unwrap_err();
        assert!(!format!("{e:?} {e}").contains("hunter2"));
    }
}
