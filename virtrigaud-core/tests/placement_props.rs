//! Property tests of the placement solver against a naive oracle: no hard constraint or
//! capacity is ever violated, anti-affinity is honoured whenever any host allows it (each
//! decision is exact), and every failure is explained host by host.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use virtrigaud_core::model::{AntiAffinity, PlacementConstraints, VMPlacementPolicySpec};
use virtrigaud_core::placement::{
    DatastoreInfo, HostInfo, Inventory, PlacementRequest, RejectReason, Resources, Solver,
    Unsatisfiable,
};

const CLUSTERS: [&str; 3] = ["c1", "c2", "c3"];
const ZONES: [&str; 2] = ["z1", "z2"];
const DATASTORES: [&str; 4] = ["ds1", "ds2", "ds3", "ds4"];

fn opt_of(list: &'static [&'static str]) -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        1 => Just(None),
        3 => proptest::sample::select(list).prop_map(|s| Some(s.to_owned())),
    ]
}

fn subset(list: &'static [&'static str]) -> impl Strategy<Value = Vec<String>> {
    proptest::sample::subsequence(list, 0..=list.len())
        .prop_map(|v| v.into_iter().map(str::to_owned).collect())
}

fn host_names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("h{i}")).collect()
}

prop_compose! {
    fn host(i: usize)(
        cluster in opt_of(&CLUSTERS),
        zone in opt_of(&ZONES),
        datastores in subset(&DATASTORES),
        cpu in 1u64..16,
        mem in 1u64..16,
        used_cpu in 0u64..8,
        used_mem in 0u64..8,
        pre in 0usize..3,
    ) -> HostInfo {
        let mut h = HostInfo::new(format!("h{i}"), Resources::new(cpu, mem * 1024))
            .allocated(Resources::new(used_cpu.min(cpu), (used_mem * 1024).min(mem * 1024)));
        h.cluster = cluster;
        h.zone = zone;
        h.datastores = datastores;
        h.vms = (0..pre).map(|k| format!("pre-{i}-{k}")).collect();
        h
    }
}

fn inventory() -> impl Strategy<Value = Inventory> {
    (1usize..10)
        .prop_flat_map(|n| {
            let hosts: Vec<_> = (0..n).map(host).collect();
            (hosts, proptest::collection::vec(0u64..120, 4))
        })
        .prop_map(|(hosts, free)| {
            let mut inv = Inventory::default();
            for (i, name) in DATASTORES.iter().enumerate() {
                let mut d = DatastoreInfo::new(*name, free[i]);
                // Pre-existing VMs keep a disk on the first datastore their host reaches.
                for h in &hosts {
                    if h.datastores.first().map(String::as_str) == Some(*name) {
                        d.vms.extend(h.vms.iter().cloned());
                    }
                }
                inv.datastores.push(d);
            }
            inv.hosts = hosts;
            inv
        })
}

fn constraints(hosts: usize) -> impl Strategy<Value = Option<PlacementConstraints>> {
    let names = host_names(hosts);
    prop_oneof![
        1 => Just(None),
        2 => (
            proptest::sample::subsequence(names, 0..=hosts.min(3)),
            subset(&CLUSTERS),
            subset(&ZONES),
            subset(&DATASTORES),
        )
            .prop_map(|(hosts, clusters, zones, datastores)| {
                let mut c = PlacementConstraints::default();
                c.hosts = hosts;
                c.clusters = clusters;
                c.zones = zones;
                c.datastores = datastores;
                Some(c)
            }),
    ]
}

fn policy(hosts: usize) -> impl Strategy<Value = VMPlacementPolicySpec> {
    (
        constraints(hosts),
        constraints(hosts),
        any::<(bool, bool, bool)>(),
    )
        .prop_map(|(hard, soft, (h, c, d))| {
            let mut p = VMPlacementPolicySpec::default();
            p.hard = hard;
            p.soft = soft;
            let mut aa = AntiAffinity::default();
            aa.host_anti_affinity = h;
            aa.cluster_anti_affinity = c;
            aa.datastore_anti_affinity = d;
            p.anti_affinity = Some(aa);
            p
        })
}

type Demand = (u64, u64, u64);

fn scenario() -> impl Strategy<Value = (Inventory, VMPlacementPolicySpec, Vec<Demand>, bool)> {
    inventory().prop_flat_map(|inv| {
        let n = inv.hosts.len();
        (
            Just(inv),
            policy(n),
            proptest::collection::vec((1u64..5, 1u64..5, 0u64..40), 1..12),
            any::<bool>(),
        )
    })
}

/// The naive model: hosts and datastores by name, the group's placements as a list.
struct Oracle {
    hosts: BTreeMap<String, HostInfo>,
    free: BTreeMap<String, u64>,
    /// (vm, host, datastores)
    group: Vec<(String, String, Vec<String>)>,
}

impl Oracle {
    fn new(inv: &Inventory, peers: &[String]) -> Self {
        let mut group = Vec::new();
        for p in peers {
            let host = inv.hosts.iter().find(|h| h.vms.contains(p)).unwrap();
            let ds = inv
                .datastores
                .iter()
                .filter(|d| d.vms.contains(p))
                .map(|d| d.name.clone())
                .collect();
            group.push((p.clone(), host.name.clone(), ds));
        }
        Oracle {
            hosts: inv
                .hosts
                .iter()
                .map(|h| (h.name.clone(), h.clone()))
                .collect(),
            free: inv
                .datastores
                .iter()
                .map(|d| (d.name.clone(), d.free_gib))
                .collect(),
            group,
        }
    }

    fn cluster_of(&self, host: &str) -> Option<&String> {
        self.hosts[host].cluster.as_ref()
    }

    /// The first reason `host` cannot take the request, and the datastores it could use.
    fn check(
        &self,
        p: &VMPlacementPolicySpec,
        host: &str,
        r: &PlacementRequest,
    ) -> Result<Vec<String>, RejectReason> {
        let h = &self.hosts[host];
        let hard = p.hard.clone().unwrap_or_default();
        let aa = p.anti_affinity.clone().unwrap_or_default();
        let in_list = |list: &[String], v: Option<&String>| {
            list.is_empty() || v.is_some_and(|v| list.contains(v))
        };
        if !in_list(&hard.hosts, Some(&h.name)) {
            return Err(RejectReason::NotInHardHosts);
        }
        if !in_list(&hard.clusters, h.cluster.as_ref()) {
            return Err(RejectReason::NotInHardClusters);
        }
        if !in_list(&hard.zones, h.zone.as_ref()) {
            return Err(RejectReason::NotInHardZones);
        }
        let allowed: Vec<&String> = h
            .datastores
            .iter()
            .filter(|d| in_list(&hard.datastores, Some(d)))
            .collect();
        let needs = !hard.datastores.is_empty() || aa.datastore_anti_affinity;
        if (needs && h.datastores.is_empty()) || (!h.datastores.is_empty() && allowed.is_empty()) {
            return Err(RejectReason::NoAllowedDatastore);
        }
        if aa.host_anti_affinity && self.group.iter().any(|(_, gh, _)| gh == host) {
            return Err(RejectReason::HostAntiAffinity);
        }
        if aa.cluster_anti_affinity
            && let Some(c) = &h.cluster
            && self
                .group
                .iter()
                .any(|(_, gh, _)| self.cluster_of(gh) == Some(c))
        {
            return Err(RejectReason::ClusterAntiAffinity);
        }
        if h.allocated.cpu + r.demand.cpu > h.capacity.cpu {
            return Err(RejectReason::InsufficientCpu);
        }
        if h.allocated.memory_mib + r.demand.memory_mib > h.capacity.memory_mib {
            return Err(RejectReason::InsufficientMemory);
        }
        if h.datastores.is_empty() {
            return Ok(Vec::new());
        }
        let free_of_aa: Vec<&String> = allowed
            .into_iter()
            .filter(|d| {
                !aa.datastore_anti_affinity || !self.group.iter().any(|(_, _, ds)| ds.contains(d))
            })
            .collect();
        if free_of_aa.is_empty() {
            return Err(RejectReason::DatastoreAntiAffinity);
        }
        let fits: Vec<String> = free_of_aa
            .into_iter()
            .filter(|d| self.free[*d] >= r.disk_gib)
            .cloned()
            .collect();
        if fits.is_empty() {
            return Err(RejectReason::InsufficientDisk);
        }
        Ok(fits)
    }

    fn apply(&mut self, r: &PlacementRequest, host: &str, ds: Option<&String>) {
        let h = self.hosts.get_mut(host).unwrap();
        h.allocated.cpu += r.demand.cpu;
        h.allocated.memory_mib += r.demand.memory_mib;
        if let Some(d) = ds {
            *self.free.get_mut(d).unwrap() -= r.disk_gib;
        }
        self.group.push((
            r.vm_name.clone(),
            host.to_owned(),
            ds.into_iter().cloned().collect(),
        ));
    }
}

fn check_explanation(
    oracle: &Oracle,
    p: &VMPlacementPolicySpec,
    r: &PlacementRequest,
    u: &Unsatisfiable,
) {
    assert_eq!(u.total_hosts, oracle.hosts.len());
    let mut expected: BTreeMap<RejectReason, usize> = BTreeMap::new();
    for h in oracle.hosts.keys() {
        let reason = oracle
            .check(p, h, r)
            .expect_err("the solver failed although a host fits");
        *expected.entry(reason).or_default() += 1;
    }
    let got: BTreeMap<RejectReason, usize> =
        u.classes.iter().map(|c| (c.reason, c.hosts)).collect();
    assert_eq!(got, expected, "{u}");
    let members: BTreeSet<&String> = oracle.group.iter().map(|(n, _, _)| n).collect();
    for c in &u.classes {
        assert!(!c.examples.is_empty());
        if c.reason.is_anti_affinity() {
            assert!(!c.conflicts.is_empty(), "{u}");
            assert!(c.conflicts.iter().all(|n| members.contains(n)), "{u}");
        }
    }
    let text = u.to_string();
    assert!(text.contains(&r.vm_name));
}

/// `PROPTEST_CASES` overrides the default number of cases.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(400)))]

    #[test]
    fn decisions_are_valid_exact_and_explained((inv, policy, demands, with_peers) in scenario()) {
        let peers: Vec<String> = if with_peers {
            inv.hosts.iter().flat_map(|h| h.vms.iter().filter(|v| v.ends_with("-0")).cloned()).collect()
        } else {
            Vec::new()
        };
        let mut solver = Solver::new(&inv);
        let mut oracle = Oracle::new(&inv, &peers);
        let mut decisions = Vec::new();
        for (i, (cpu, mem, disk)) in demands.iter().enumerate() {
            let r = PlacementRequest::new(format!("vm-{i}"), Resources::new(*cpu, mem * 1024))
                .disk_gib(*disk)
                .group("g")
                .peers(peers.clone())
                .policy(policy.clone());
            match solver.place(&r) {
                Ok(d) => {
                    let fits = oracle.check(&policy, &d.host, &r);
                    prop_assert!(fits.is_ok(), "{} placed on {} which the oracle rejects: {:?}", r.vm_name, d.host, fits);
                    let fits = fits.unwrap();
                    match &d.datastore {
                        Some(ds) => prop_assert!(fits.contains(ds), "datastore {ds} not usable: {fits:?}"),
                        None => prop_assert!(oracle.hosts[&d.host].datastores.is_empty()),
                    }
                    prop_assert_eq!(d.cluster.as_ref(), oracle.hosts[&d.host].cluster.as_ref());
                    oracle.apply(&r, &d.host, d.datastore.as_ref());
                    decisions.push(d);
                }
                Err(u) => check_explanation(&oracle, &policy, &r, &u),
            }
        }
        // Deterministic: the same inputs give the same decisions.
        let mut again = Solver::new(&inv);
        for (i, (cpu, mem, disk)) in demands.iter().enumerate() {
            let r = PlacementRequest::new(format!("vm-{i}"), Resources::new(*cpu, mem * 1024))
                .disk_gib(*disk)
                .group("g")
                .peers(peers.clone())
                .policy(policy.clone());
            if let Ok(d) = again.place(&r) {
                let first = decisions.iter().find(|x| x.vm_name == d.vm_name);
                prop_assert_eq!(first, Some(&d));
            }
        }
    }
}

#[test]
fn explanation_names_classes_and_conflicts() {
    let mut inv = Inventory::default();
    for i in 1..=3 {
        inv.hosts
            .push(HostInfo::new(format!("a{i}"), Resources::new(8, 8192)).cluster("prod"));
    }
    inv.hosts
        .push(HostInfo::new("b1", Resources::new(8, 8192)).cluster("dev"));
    inv.hosts
        .push(HostInfo::new("b2", Resources::new(8, 8192)).cluster("dev"));
    inv.hosts
        .push(HostInfo::new("small", Resources::new(8, 1024)).cluster("prod"));
    let mut policy = VMPlacementPolicySpec::default();
    let mut hard = PlacementConstraints::default();
    hard.clusters = vec!["prod".into()];
    policy.hard = Some(hard);
    let mut aa = AntiAffinity::default();
    aa.host_anti_affinity = true;
    policy.anti_affinity = Some(aa);
    let mut solver = Solver::new(&inv);
    let req = |n: &str| {
        PlacementRequest::new(n, Resources::new(2, 2048))
            .group("web")
            .policy(policy.clone())
    };
    for n in ["web-1", "web-2", "web-3"] {
        solver.place(&req(n)).unwrap();
    }
    let err = solver.place(&req("web-4")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot place web-4 on any of 6 hosts: 2 hosts: not in hard.clusters; \
         3 hosts: host anti-affinity with web-1, web-2, web-3; 1 host: insufficient memory"
    );
    let e: virtrigaud_core::Error = err.into();
    assert_eq!(e.kind(), virtrigaud_core::ErrorKind::InvalidState);
}
