//! Disks keep the names the create spec gave them (in the domain's metadata), and grow by
//! those names: online on a running real guest (`blockresize`), offline on a stopped one
//! (a volume resize), never smaller; the test driver, which can resize nothing, says so.
//!
//! The seed's disk patch (`disks: [{name: data, sizeGiB: 100, expandPolicy: Online}]`) is
//! planned through the core orchestrator on both backends.
// Real servers run on real time.
#![allow(clippy::disallowed_methods, clippy::expect_used, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use virtrigaud_core::model::{SpecPatch, VirtualMachineSpec, VirtualMachineStatus, from_yaml_str};
use virtrigaud_core::orchestration::{
    Orchestrator, PlanMode, ReconfigureOptions, ReconfigureOutcome, ResourceChange,
};
use virtrigaud_core::provider::{DiskResize, PowerOffOptions, ReconfigureRequest};
use virtrigaud_core::{CloneOptions, ErrorKind, PowerState, Provider, VmId};
use virtrigaud_libvirt::{LibvirtConfig, LibvirtProvider};

mod common;
use common::real::real;
use common::{private, two_disk_spec};

/// Seed 003's disk patch, verbatim.
const SEED_DISK_PATCH: &str =
    include_str!("../../virtrigaud-core/tests/fixtures/seeds/003_02_vm_disks_patch.yaml");

fn grow(name: &str, gib: u64) -> ReconfigureRequest {
    let mut rq = ReconfigureRequest::default();
    rq.disks.push(DiskResize::new(name, gib));
    rq
}

fn names(p: &virtrigaud_core::VmDescription) -> Vec<(&str, u64)> {
    p.disks
        .iter()
        .map(|d| (d.name.as_str(), d.size_gib))
        .collect()
}

/// The seed patch as a change of `vm`, and its plan.
async fn plan_seed_patch(
    orch: &Orchestrator,
    p: &dyn Provider,
    vm: &VmId,
) -> (ResourceChange, PlanMode) {
    let patch: SpecPatch<VirtualMachineSpec> = from_yaml_str(SEED_DISK_PATCH).expect("seed");
    let current = p.describe(vm).await.expect("describe");
    let change = ResourceChange::from_spec(&patch.spec, &current);
    let plan = orch
        .plan_reconfigure(vm, &change, &ReconfigureOptions::default())
        .await
        .expect("plan");
    (change, plan.mode)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_disk_names_survive_describe_and_clone_on_the_test_driver() {
    let (p, _dir) = private().await;
    let vm = p
        .create(&two_disk_spec("named", None, false))
        .await
        .expect("create");
    let d = p.describe(&vm).await.expect("describe");
    assert_eq!(names(&d), [("root", 1), ("data", 1)]);
    // The test driver resizes nothing: every disk says why it cannot grow.
    for disk in &d.disks {
        let why = disk.cannot_grow.as_deref().expect("cannot grow");
        assert!(why.contains("test driver"), "{why}");
    }
    assert!(!p.capabilities().disk_expansion_online);
    assert!(!p.vm_capabilities(&vm).await.expect("caps").disk_grow_online);

    // A growth by the spec's name, or by the target, is refused before anything changes.
    let mut both = grow("data", 2);
    both.cpu = Some(2);
    for rq in [both, grow("vdb", 2)] {
        let e = p.reconfigure(&vm, &rq).await.expect_err("no resize");
        assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
        assert!(e.message().starts_with("disks."), "{e}");
    }
    assert_eq!(
        p.describe(&vm).await.expect("describe").cpu,
        1,
        "cpu untouched"
    );
    let e = p
        .reconfigure(&vm, &grow("scratch", 2))
        .await
        .expect_err("none");
    assert_eq!(e.kind(), ErrorKind::InvalidSpec, "{e}");
    assert!(
        e.message()
            .starts_with("disks.scratch: the VM has no such disk (it has: root, data)"),
        "{e}"
    );
    // Keeping a size is no change, even here.
    p.reconfigure(&vm, &grow("data", 1))
        .await
        .expect("same size");

    // The seed's patch: an Impossible plan with the driver's reason, not a power cycle.
    let orch = Orchestrator::new(Arc::new(p.clone()));
    let (change, mode) = plan_seed_patch(&orch, &p, &vm).await;
    assert_eq!(change.disks.len(), 1);
    match mode {
        PlanMode::Impossible { reasons } => {
            assert!(
                reasons
                    .iter()
                    .any(|r| r.starts_with("disks.data: cannot grow: the libvirt test driver")),
                "{reasons:?}"
            );
        }
        other => panic!("planned {other:?}"),
    }

    // A clone keeps the names (same targets, metadata copied).
    let c = p.cloner().expect("cloner");
    let full = c
        .clone_vm(&vm, &CloneOptions::new("named-copy"))
        .await
        .expect("clone");
    assert_eq!(
        names(&p.describe(&full.vm).await.expect("describe")),
        [("root", 1), ("data", 1)]
    );
}

/// A domain without virtrigaud's metadata (the test driver's built-in `test`) keeps its
/// target names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_domain_without_the_metadata_reports_its_targets() {
    let p = LibvirtProvider::connect(LibvirtConfig::new("test:///default").with_events(false))
        .await
        .expect("connect");
    let d = p.describe(&VmId::new("test")).await.expect("describe");
    assert_eq!(
        d.disks.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(),
        ["vda"]
    );
}

/// On a real guest: the seed patch plans an online growth of `data`; it runs live
/// (`blockresize`) and QEMU reports the new size; stopped, `data` grows again (a volume
/// resize), and the next boot's block device has that size; a shrink names the disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disks_grow_by_spec_name_online_and_offline_on_real_qemu() {
    let Some(r) = real("disks").await else { return };
    let vm = r.two_disk_guest("g", "", false).await;
    let p = r.dyn_provider();
    assert!(p.capabilities().disk_expansion_online);
    assert!(p.vm_capabilities(&vm).await.expect("caps").disk_grow_online);
    let d = p.describe(&vm).await.expect("describe");
    assert_eq!(names(&d), [("root", 1), ("data", 1)]);
    assert!(d.disks.iter().all(|d| d.cannot_grow.is_none()));

    let orch = Orchestrator::new(Arc::clone(&p));
    let (change, mode) = plan_seed_patch(&orch, p.as_ref(), &vm).await;
    assert_eq!(mode, PlanMode::Online, "the seed's patch grows data online");
    let mut status = VirtualMachineStatus::default();
    let report = orch
        .reconfigure(&vm, &change, &ReconfigureOptions::default(), &mut status)
        .await
        .expect("reconfigure");
    assert_eq!(report.outcome, ReconfigureOutcome::Online, "{report:?}");
    assert!(
        report
            .notes
            .iter()
            .any(|n| n.contains("disk data (vdb) -> 100 GiB live")),
        "{:?}",
        report.notes
    );
    let d = p.describe(&vm).await.expect("describe");
    assert_eq!(d.power_state, PowerState::Running);
    assert_eq!(names(&d), [("root", 1), ("data", 100)]);

    // A shrink is refused, naming the disk, before anything changes.
    let e = p
        .reconfigure(&vm, &grow("data", 50))
        .await
        .expect_err("shrink");
    assert_eq!(e.kind(), ErrorKind::InvalidSpec, "{e}");
    assert!(
        e.message()
            .starts_with("disks.data.sizeGiB: disks only grow"),
        "{e}"
    );

    // Offline: a volume resize, read back from the volume, then from QEMU after a boot.
    p.power_off(&vm, &PowerOffOptions::default())
        .await
        .expect("off");
    let res = p
        .reconfigure(&vm, &grow("data", 120))
        .await
        .expect("grow off");
    assert!(!res.applied_live && !res.needs_power_cycle, "{res:?}");
    assert_eq!(
        names(&p.describe(&vm).await.expect("describe")),
        [("root", 1), ("data", 120)]
    );
    // The target name still works.
    p.reconfigure(&vm, &grow("vda", 2))
        .await
        .expect("grow vda off");
    p.start(&vm, &Default::default()).await.expect("start");
    r.wait_console(vm.as_str(), "READY", Duration::from_secs(60))
        .await;
    assert_eq!(
        names(&p.describe(&vm).await.expect("describe")),
        [("root", 2), ("data", 120)]
    );
    r.remove(&vm).await;
}
