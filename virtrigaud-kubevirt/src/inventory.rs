//! The placement inventory of a KubeVirt cluster: its nodes as hosts and its storage classes
//! as datastores.
//!
//! - **Hosts** are the schedulable, `Ready` nodes: capacity from `status.allocatable` (CPU
//!   cores as vCPUs, memory), zone from the `topology.kubernetes.io/zone` label, every node
//!   label kept. A host's VMs are this provider's namespace's VMs whose VMI runs there (or,
//!   before it is scheduled, whose template's node selector pins it there), and its
//!   allocation what the running ones' domains ask for. Pods other than those VMs are not
//!   counted.
//! - **Datastores** are the storage classes. Kubernetes reports no free space for a storage
//!   class, so each has an unbounded `free_gib` (`u64::MAX`): capacity is the provisioner's
//!   business, and a full backend fails the DataVolume, not the placement. A datastore's VMs
//!   are the namespace's VMs with a DataVolume template of that class (or without a class,
//!   when it is the default class).
//! - **Clusters**: one API endpoint is one cluster, so hosts have none.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, ListParams};
use serde_json::Value;
use virtrigaud_core::placement::{DatastoreInfo, HostInfo, Inventory, Resources};
use virtrigaud_core::{ListOptions, Result};

use crate::client::Connection;
use crate::error::to_core_error;
use crate::quantity::quantity_to_mib;
use crate::types::VirtualMachine;

const OP: &str = "inventory";

/// The node label naming its zone.
pub(crate) const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// The storage class annotation marking the default class.
const DEFAULT_CLASS: &str = "storageclass.kubernetes.io/is-default-class";

impl Connection {
    /// Nodes as hosts, storage classes as datastores (see the module docs).
    pub(crate) async fn inventory(&self) -> Result<Inventory> {
        let wire = |e| to_core_error(e, OP, None);
        let nodes = Api::<Node>::all(self.client.clone())
            .list(&ListParams::default())
            .await
            .map_err(wire)?;
        let classes = Api::<StorageClass>::all(self.client.clone())
            .list(&ListParams::default())
            .await
            .map_err(wire)?;
        let (objects, vmis) = self.list_objects(&ListOptions::default(), OP).await?;
        let vms = self.describe_listed(&objects, &vmis);
        // Where each VM is: its VMI's node, else the node its template pins it to.
        let node_of: BTreeMap<&str, String> = vms
            .iter()
            .filter_map(|v| {
                let pinned = || {
                    objects
                        .iter()
                        .find(|o| o.metadata.name.as_deref() == Some(v.name.as_str()))
                        .and_then(pinned_node)
                };
                Some((v.name.as_str(), v.host.clone().or_else(pinned)?))
            })
            .collect();
        let mut inv = Inventory::default();
        let class_names: Vec<String> = classes
            .items
            .iter()
            .filter_map(|c| c.metadata.name.clone())
            .collect();
        for n in nodes.items.iter().filter(|n| schedulable(n)) {
            let Some(name) = n.metadata.name.clone() else {
                continue;
            };
            let mut h = HostInfo::new(name.clone(), allocatable(n));
            let labels = n.metadata.labels.clone().unwrap_or_default();
            h.zone = labels.get(ZONE_LABEL).cloned();
            h.labels = labels.into_iter().collect();
            h.datastores = class_names.clone();
            for v in vms
                .iter()
                .filter(|v| node_of.get(v.name.as_str()) == Some(&name))
            {
                h.vms.push(v.name.clone());
                if v.power_state.is_active() {
                    h.allocated.cpu += u64::from(v.cpu);
                    h.allocated.memory_mib += v.memory_mib;
                }
            }
            inv.hosts.push(h);
        }
        let default = classes
            .items
            .iter()
            .find(|c| {
                c.metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(DEFAULT_CLASS))
                    .is_some_and(|v| v == "true")
            })
            .and_then(|c| c.metadata.name.clone());
        for class in class_names {
            let mut ds = DatastoreInfo::new(class.clone(), u64::MAX);
            ds.vms = objects
                .iter()
                .filter(|vm| {
                    storage_classes(vm)
                        .iter()
                        .any(|c| c.as_deref().or(default.as_deref()) == Some(class.as_str()))
                })
                .filter_map(|vm| vm.metadata.name.clone())
                .collect();
            inv.datastores.push(ds);
        }
        Ok(inv)
    }
}

/// Ready and not cordoned.
fn schedulable(n: &Node) -> bool {
    let cordoned = n
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false);
    let ready = n
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    ready && !cordoned
}

/// `status.allocatable`: whole CPU cores (millicores rounded down) and memory.
fn allocatable(n: &Node) -> Resources {
    let a = n.status.as_ref().and_then(|s| s.allocatable.as_ref());
    let get = |k: &str| a.and_then(|a| a.get(k)).map(|q| q.0.clone());
    let cpu = get("cpu").and_then(|q| cores(&q)).unwrap_or(0);
    let memory = get("memory").and_then(|q| quantity_to_mib(&q)).unwrap_or(0);
    Resources::new(cpu, memory)
}

/// CPU cores of a quantity (`"4"`, `"3500m"` → 3).
fn cores(q: &str) -> Option<u64> {
    match q.strip_suffix('m') {
        Some(milli) => milli.parse::<u64>().ok().map(|m| m / 1000),
        None => q.parse::<f64>().ok().filter(|c| *c >= 0.0).map(|c| {
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let whole = c.floor() as u64;
            whole
        }),
    }
}

/// The node a VM's template pins it to (`kubernetes.io/hostname` node selector): where it
/// counts before its VMI is scheduled.
fn pinned_node(vm: &VirtualMachine) -> Option<String> {
    let spec = serde_json::to_value(vm.spec.template.as_ref()?.spec.as_ref()?).ok()?;
    spec.pointer("/nodeSelector/kubernetes.io~1hostname")?
        .as_str()
        .map(str::to_owned)
}

/// The storage class of each DataVolume template of `vm` (`None`: the default class).
fn storage_classes(vm: &VirtualMachine) -> Vec<Option<String>> {
    vm.spec
        .extra
        .get("dataVolumeTemplates")
        .and_then(Value::as_array)
        .map(|dvs| {
            dvs.iter()
                .map(|dv| {
                    dv.pointer("/spec/storage/storageClassName")
                        .or_else(|| dv.pointer("/spec/pvc/storageClassName"))
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                })
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_quantities_become_whole_cores() {
        assert_eq!(cores("4"), Some(4));
        assert_eq!(cores("3500m"), Some(3));
        assert_eq!(cores("1.5"), Some(1));
        assert_eq!(cores("-1"), None);
        assert_eq!(cores("x"), None);
    }

    #[test]
    fn a_cordoned_or_unready_node_is_not_a_host() {
        let node = |ready: &str, cordoned: bool| -> Node {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "n"},
                "spec": {"unschedulable": cordoned},
                "status": {"conditions": [{"type": "Ready", "status": ready}]}
            }))
            .unwrap()
        };
        assert!(schedulable(&node("True", false)));
        assert!(!schedulable(&node("True", true)));
        assert!(!schedulable(&node("False", false)));
    }
}
