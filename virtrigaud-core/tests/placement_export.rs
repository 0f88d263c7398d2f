//! Native rule export: DRS VM-VM anti-affinity per cluster, VM-Host must/should rules,
//! Storage DRS anti-affinity; nothing for constraints that have no native form.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use virtrigaud_core::model::{AntiAffinity, PlacementConstraints, VMPlacementPolicySpec};
use virtrigaud_core::placement::export::{NativeRule, native_rules};
use virtrigaud_core::placement::{
    DatastoreInfo, HostInfo, Inventory, PlacementRequest, Resources, Solver,
};

#[test]
fn exports_drs_and_storage_drs_rules() {
    let mut inv = Inventory::default();
    let mut cluster_hosts: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for i in 1..=4 {
        let cluster = if i <= 2 { "prod-a" } else { "prod-b" };
        let name = format!("esx-{i}");
        inv.hosts.push(
            HostInfo::new(name.clone(), Resources::new(16, 65536))
                .cluster(cluster)
                .datastore(format!("ds-{i}")),
        );
        inv.datastores
            .push(DatastoreInfo::new(format!("ds-{i}"), 500));
        cluster_hosts.entry(cluster.into()).or_default().push(name);
    }
    let mut aa = AntiAffinity::default();
    aa.host_anti_affinity = true;
    aa.datastore_anti_affinity = true;
    let mut hard = PlacementConstraints::default();
    hard.hosts = vec!["esx-1".into(), "esx-2".into(), "esx-3".into()];
    let mut policy = VMPlacementPolicySpec::default();
    policy.anti_affinity = Some(aa);
    policy.hard = Some(hard);
    let mut solver = Solver::new(&inv);
    let decisions: Vec<_> = (1..=3)
        .map(|i| {
            let r = PlacementRequest::new(format!("db-{i}"), Resources::new(4, 8192))
                .disk_gib(100)
                .group("db")
                .policy(policy.clone());
            solver.place(&r).unwrap()
        })
        .collect();
    let rules = native_rules("db", &policy, &decisions, &cluster_hosts);
    let anti: Vec<&NativeRule> = rules
        .iter()
        .filter(|r| matches!(r, NativeRule::DrsVmAntiAffinity { .. }))
        .collect();
    // db-1 and db-2 share cluster prod-a: one DRS rule; db-3 alone in prod-b: none.
    assert_eq!(anti.len(), 1);
    assert!(
        matches!(anti[0], NativeRule::DrsVmAntiAffinity { cluster, vms, .. }
        if cluster == "prod-a" && vms.len() == 2)
    );
    assert!(rules.iter().any(|r| matches!(r,
        NativeRule::DrsVmHost { cluster, hosts, mandatory: true, .. }
            if cluster == "prod-b" && hosts == &["esx-3".to_string()])));
    assert!(rules.iter().any(|r| matches!(r,
        NativeRule::StorageDrsVmAntiAffinity { vms, .. } if vms.len() == 3)));
}
