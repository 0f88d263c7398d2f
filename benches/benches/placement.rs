//! Placement throughput of the core solver at 5,000 hosts.
//!
//! Compare with the Kubernetes scheduler_perf CI floors at 5,000 nodes: 680 pods/s for basic
//! scheduling and 60 pods/s for required pod anti-affinity.
//!
//! `cargo bench -p virtrigaud-benches --bench placement`

use std::hint::black_box;
use std::time::Instant;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use virtrigaud_core::model::{AntiAffinity, PlacementConstraints, VMPlacementPolicySpec};
use virtrigaud_core::placement::{
    DatastoreInfo, HostInfo, Inventory, PlacementRequest, Resources, Solver,
};

const HOSTS: usize = 5_000;
/// VMs of the group already running before the measured placements.
const EXISTING: usize = 1_000;
/// Placements per iteration.
const BATCH: usize = 1_000;

/// 5,000 hosts in 50 clusters and 4 zones, each with a local datastore and one of 100
/// shared datastores (each shared by 50 hosts), about half loaded, with `EXISTING` VMs of
/// group `web` on the first hosts (disks on their local datastores).
fn inventory() -> Inventory {
    let mut inv = Inventory::default();
    for d in 0..100 {
        inv.datastores
            .push(DatastoreInfo::new(format!("shared-{d:03}"), 100_000));
    }
    for i in 0..HOSTS {
        let local = format!("local-{i:05}");
        let mut ds = DatastoreInfo::new(local.clone(), 2_000);
        let mut h = HostInfo::new(format!("esx-{i:05}"), Resources::new(64, 512 * 1024))
            .cluster(format!("cluster-{:02}", i % 50))
            .zone(format!("zone-{}", i % 4))
            .datastore(local)
            .datastore(format!("shared-{:03}", i / 50))
            .allocated(Resources::new(
                (i % 32) as u64,
                ((i % 7) * 32 * 1024) as u64,
            ));
        if i < EXISTING {
            h.vms.push(format!("web-old-{i}"));
            ds.vms.push(format!("web-old-{i}"));
        }
        inv.hosts.push(h);
        inv.datastores.push(ds);
    }
    inv
}

fn anti_affinity_policy(datastore: bool) -> VMPlacementPolicySpec {
    let mut aa = AntiAffinity::default();
    aa.host_anti_affinity = true;
    aa.datastore_anti_affinity = datastore;
    let mut p = VMPlacementPolicySpec::default();
    p.anti_affinity = Some(aa);
    p
}

fn mixed_policy() -> VMPlacementPolicySpec {
    let mut p = anti_affinity_policy(false);
    let mut hard = PlacementConstraints::default();
    hard.clusters = (0..40).map(|c| format!("cluster-{c:02}")).collect();
    hard.zones = vec!["zone-0".into(), "zone-1".into(), "zone-2".into()];
    p.hard = Some(hard);
    let mut soft = PlacementConstraints::default();
    soft.zones = vec!["zone-1".into()];
    p.soft = Some(soft);
    p
}

fn requests(policy: Option<VMPlacementPolicySpec>) -> Vec<PlacementRequest> {
    let peers: Vec<String> = (0..EXISTING).map(|i| format!("web-old-{i}")).collect();
    (0..BATCH)
        .map(|i| {
            let r = PlacementRequest::new(format!("web-{i}"), Resources::new(2, 4096)).disk_gib(40);
            match &policy {
                None => r,
                Some(p) => r.group("web").peers(peers.clone()).policy(p.clone()),
            }
        })
        .collect()
}

fn place_all(inv: &Inventory, reqs: &[PlacementRequest]) -> usize {
    let mut solver = Solver::new(inv);
    reqs.iter().filter(|r| solver.place(r).is_ok()).count()
}

// A benchmark measures wall-clock time on purpose.
#[allow(clippy::disallowed_methods)]
fn placement(c: &mut Criterion) {
    let inv = inventory();
    let scenarios: [(&str, Option<VMPlacementPolicySpec>); 4] = [
        ("basic", None),
        (
            "required_host_anti_affinity",
            Some(anti_affinity_policy(false)),
        ),
        (
            "host_and_datastore_anti_affinity",
            Some(anti_affinity_policy(true)),
        ),
        ("mixed_hard_soft_anti_affinity", Some(mixed_policy())),
    ];
    // One plain measurement per scenario, printed as placements per second.
    for (name, policy) in &scenarios {
        let reqs = requests(policy.clone());
        let start = Instant::now();
        let placed = place_all(&inv, &reqs);
        let secs = start.elapsed().as_secs_f64();
        println!(
            "{name}: {placed}/{BATCH} placed at {HOSTS} hosts in {:.1} ms: {:.0} placements/s",
            secs * 1e3,
            placed as f64 / secs
        );
    }

    let mut group = c.benchmark_group("placement_5000_hosts");
    group.sample_size(10);
    group.throughput(Throughput::Elements(BATCH as u64));
    for (name, policy) in &scenarios {
        let reqs = requests(policy.clone());
        group.bench_with_input(BenchmarkId::new(*name, BATCH), &reqs, |b, reqs| {
            b.iter(|| {
                let placed = place_all(&inv, black_box(reqs));
                assert_eq!(placed, BATCH);
            });
        });
    }
    // What `SolverPlacer` pays per call: index a fresh inventory snapshot, then place one VM.
    group.throughput(Throughput::Elements(1));
    let one = requests(Some(anti_affinity_policy(false))).remove(0);
    group.bench_function("index_and_place_one", |b| {
        b.iter(|| {
            let mut s = Solver::new(black_box(&inv));
            s.place(&one).is_ok()
        });
    });
    group.finish();
}

criterion_group!(benches, placement);
criterion_main!(benches);
