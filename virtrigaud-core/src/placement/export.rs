//! Export placement decisions as native rules, so the hypervisor keeps enforcing them after
//! placement (when DRS moves VMs, for instance).
//!
//! What is exported (vSphere), per cluster of the decisions:
//!
//! | Policy | Native rule |
//! |---|---|
//! | `antiAffinity.hostAntiAffinity` | DRS VM-VM anti-affinity rule (`ClusterAntiAffinityRuleSpec`) over the group's VMs in that cluster |
//! | `hard.hosts` | DRS VM-Host rule, "must run on" (`ClusterVmHostRuleInfo`, `mandatory = true`) |
//! | `soft.hosts` | DRS VM-Host rule, "should run on" (`mandatory = false`) |
//! | `antiAffinity.datastoreAntiAffinity` | Storage DRS inter-VM anti-affinity rule (`VirtualDiskAntiAffinityRuleSpec` at VM level) |
//!
//! What is **not** exported, and stays enforced only when virtrigaud places a VM:
//! - cluster anti-affinity (DRS rules live inside one cluster; nothing spreads VMs across
//!   clusters), zones, hard clusters and hard datastores (no "must" rule for storage);
//! - soft folders, soft zones, soft clusters and soft datastores, and the spread/balance
//!   score (DRS has its own balancing);
//! - capacity: DRS admission control is configured separately;
//! - other platforms: Proxmox VE 9 HA affinity rules are not generated (libvirt has no rule
//!   engine). KubeVirt keeps host anti-affinity as pod anti-affinity, and the vSphere provider
//!   makes the DRS VM-VM rule itself, both from the rule a placement carries
//!   ([`super::HostAntiAffinity`]).
//!
//! The rules are plain values; a vSphere provider translates them into its API calls.

use std::collections::BTreeMap;

use super::PlacementDecision;
use crate::model::VMPlacementPolicySpec;

/// A rule a hypervisor can enforce by itself.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NativeRule {
    /// A DRS VM-VM anti-affinity rule: these VMs never share a host.
    DrsVmAntiAffinity {
        /// The cluster the rule is created in.
        cluster: String,
        /// Rule name.
        name: String,
        /// VMs (sorted).
        vms: Vec<String>,
    },
    /// A DRS VM-Host rule: these VMs run on these hosts ("must" when `mandatory`).
    DrsVmHost {
        /// The cluster the rule is created in.
        cluster: String,
        /// Rule name.
        name: String,
        /// VMs (sorted).
        vms: Vec<String>,
        /// Hosts of the cluster the VMs may run on (sorted).
        hosts: Vec<String>,
        /// `true`: must run on; `false`: should run on.
        mandatory: bool,
    },
    /// A Storage DRS inter-VM anti-affinity rule: these VMs' disks never share a datastore.
    StorageDrsVmAntiAffinity {
        /// Rule name.
        name: String,
        /// VMs (sorted).
        vms: Vec<String>,
    },
}

/// Native rules for the VMs of `group` placed by `decisions` under `policy`.
///
/// `cluster_hosts` lists each cluster's hosts (to intersect `hard.hosts` / `soft.hosts` with
/// the cluster). Decisions without a cluster yield no DRS rule. Rules with fewer than two VMs
/// (anti-affinity) or no VM are omitted.
pub fn native_rules(
    group: &str,
    policy: &VMPlacementPolicySpec,
    decisions: &[PlacementDecision],
    cluster_hosts: &BTreeMap<String, Vec<String>>,
) -> Vec<NativeRule> {
    let mut by_cluster: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for d in decisions {
        if let Some(c) = &d.cluster {
            by_cluster.entry(c).or_default().push(d.vm_name.clone());
        }
    }
    let aa = policy.anti_affinity.clone().unwrap_or_default();
    let mut rules = Vec::new();
    for (cluster, mut vms) in by_cluster {
        vms.sort();
        vms.dedup();
        if aa.host_anti_affinity && vms.len() >= 2 {
            rules.push(NativeRule::DrsVmAntiAffinity {
                cluster: cluster.to_owned(),
                name: format!("virtrigaud-{group}-anti-affinity"),
                vms: vms.clone(),
            });
        }
        let in_cluster = cluster_hosts.get(cluster).cloned().unwrap_or_default();
        for (list, mandatory, kind) in [
            (policy.hard.as_ref().map(|h| &h.hosts), true, "must"),
            (policy.soft.as_ref().map(|s| &s.hosts), false, "should"),
        ] {
            let Some(list) = list.filter(|l| !l.is_empty()) else {
                continue;
            };
            let mut hosts: Vec<String> = in_cluster
                .iter()
                .filter(|h| list.contains(h))
                .cloned()
                .collect();
            hosts.sort();
            if !hosts.is_empty() {
                rules.push(NativeRule::DrsVmHost {
                    cluster: cluster.to_owned(),
                    name: format!("virtrigaud-{group}-{kind}-run-on"),
                    vms: vms.clone(),
                    hosts,
                    mandatory,
                });
            }
        }
    }
    if aa.datastore_anti_affinity {
        let mut vms: Vec<String> = decisions
            .iter()
            .filter(|d| d.datastore.is_some())
            .map(|d| d.vm_name.clone())
            .collect();
        vms.sort();
        vms.dedup();
        if vms.len() >= 2 {
            rules.push(NativeRule::StorageDrsVmAntiAffinity {
                name: format!("virtrigaud-{group}-datastore-anti-affinity"),
                vms,
            });
        }
    }
    rules
}
