//! Snapshots, clones and reconfigure against a real vcsim over SOAP (scripts/vsphere/setup.sh
//! starts it). Each test owns distinct model VMs (by name), as in tests/vcsim.rs.

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use virtrigaud_core::shutdown::{ForcedReason, ShutdownManager, ShutdownOutcome, ShutdownPolicy};
use virtrigaud_core::{
    AgentStatus, CloneOptions, Customization, DeleteSnapshotOptions, DiskResize, ErrorKind,
    NetworkCustomization, PowerOffOptions, Provider, ReconfigureRequest, RevertOptions,
    SnapshotOptions, StartOptions,
};

use common::{RawSession, provider, remove, running_vm};

#[tokio::test]
async fn snapshot_create_revert_remove() {
    let Some(p) = provider().await else { return };
    let vm = running_vm(&p, "DC0_H0_VM1").await;
    let snaps = p.snapshotter().expect("snapshotter");
    for s in snaps.list_snapshots(&vm).await.expect("list") {
        let _ = snaps
            .delete_snapshot(&vm, &s.id, &DeleteSnapshotOptions::default())
            .await;
    }
    // vcsim runs on this machine: its createTime is this clock's (a second of slack).
    let before = SystemTime::now() - Duration::from_secs(1);
    let a = snaps
        .create_snapshot(
            &vm,
            &SnapshotOptions::new("vr-a")
                .with_memory(true)
                .with_description("first"),
        )
        .await
        .expect("snapshot a");
    assert_eq!(a.name, "vr-a");
    assert_eq!(a.description.as_deref(), Some("first"));
    tokio::time::sleep(Duration::from_millis(20)).await;
    let b = snaps
        .create_snapshot(&vm, &SnapshotOptions::new("vr-b").with_quiesce(true))
        .await
        .expect("snapshot b");
    let after = SystemTime::now() + Duration::from_secs(1);
    assert_eq!(
        b.parent.as_deref(),
        Some(a.id.as_str()),
        "b is a child of a"
    );
    let list = snaps.list_snapshots(&vm).await.expect("list");
    assert_eq!(
        list.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        ["vr-a", "vr-b"]
    );
    // createTime from the tree: what retention by maxAge / maxCount orders by.
    let (ta, tb) = (
        a.created_at.expect("a has a creation time"),
        b.created_at.expect("b has a creation time"),
    );
    assert!(before <= ta && ta < tb && tb <= after, "{a:?} {b:?}");
    assert_eq!(
        list.iter().map(|s| s.created_at).collect::<Vec<_>>(),
        [Some(ta), Some(tb)],
        "the listed times are the created ones"
    );
    // Revert by name and by id.
    snaps
        .revert_snapshot(&vm, "vr-a", &RevertOptions::default())
        .await
        .expect("revert by name");
    snaps
        .revert_snapshot(&vm, &b.id, &RevertOptions::default())
        .await
        .expect("revert by id");
    let err = snaps
        .revert_snapshot(&vm, "no-such", &RevertOptions::default())
        .await
        .expect_err("missing");
    assert_eq!(err.kind(), ErrorKind::NotFound);
    snaps
        .delete_snapshot(&vm, &a.id, &{
            let mut o = DeleteSnapshotOptions::default();
            o.children = true;
            o
        })
        .await
        .expect("remove tree");
    assert!(snaps.list_snapshots(&vm).await.expect("list").is_empty());
    let err = snaps
        .delete_snapshot(&vm, &a.id, &DeleteSnapshotOptions::default())
        .await
        .expect_err("gone");
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

/// `has_memory` and `quiesced` as the server recorded them in the snapshot tree (`state`,
/// `quiesced`), not as asked: the project's vcsim records them as vCenter does (a snapshot
/// without memory is poweredOff; quiesce needs a running VM with VMware Tools running, else
/// it is ignored). The model VMs run Tools.
#[tokio::test]
async fn snapshot_memory_and_quiesce_are_read_from_the_tree() {
    let Some(p) = provider().await else { return };
    let vm = running_vm(&p, "DC0_H0_VM12").await;
    let snaps = p.snapshotter().expect("snapshotter");
    for s in snaps.list_snapshots(&vm).await.expect("list") {
        let _ = snaps
            .delete_snapshot(&vm, &s.id, &DeleteSnapshotOptions::default())
            .await;
    }
    let asked = [
        ("vr-mem", true, false),
        ("vr-quiesce", false, true),
        ("vr-both", true, true),
        ("vr-disk", false, false),
    ];
    for (name, memory, quiesce) in asked {
        let opts = SnapshotOptions::new(name)
            .with_memory(memory)
            .with_quiesce(quiesce);
        let s = snaps.create_snapshot(&vm, &opts).await.expect(name);
        assert_eq!((s.has_memory, s.quiesced), (memory, quiesce), "{s:?}");
    }
    let listed: Vec<_> = snaps
        .list_snapshots(&vm)
        .await
        .expect("list")
        .into_iter()
        .map(|s| (s.name, s.has_memory, s.quiesced))
        .collect();
    let want: Vec<_> = asked
        .iter()
        .map(|(n, m, q)| ((*n).to_owned(), *m, *q))
        .collect();
    assert_eq!(listed, want);
    // Powered off, neither memory nor quiescing happens, whatever was asked.
    p.power_off(&vm, &PowerOffOptions::default())
        .await
        .expect("off");
    let off = snaps
        .create_snapshot(
            &vm,
            &SnapshotOptions::new("vr-off")
                .with_memory(true)
                .with_quiesce(true),
        )
        .await
        .expect("snapshot of an off VM");
    assert!(!off.has_memory && !off.quiesced, "{off:?}");
    let root = snaps.list_snapshots(&vm).await.expect("list")[0].id.clone();
    let mut all = DeleteSnapshotOptions::default();
    all.children = true;
    snaps
        .delete_snapshot(&vm, &root, &all)
        .await
        .expect("remove tree");
    p.start(&vm, &StartOptions::default()).await.expect("start");
}

#[tokio::test]
async fn clone_full_linked_and_customized() {
    let Some(p) = provider().await else { return };
    let src = running_vm(&p, "DC0_H0_VM2").await;
    let cloner = p.cloner().expect("cloner");
    let tag = std::process::id();
    // Full clone, powered on.
    let full = cloner
        .clone_vm(
            &src,
            &CloneOptions::new(format!("vr-full-{tag}")).power_on(true),
        )
        .await
        .expect("full clone");
    assert!(!full.linked);
    assert_eq!(
        p.vm_name(&full.vm).await.expect("name"),
        format!("vr-full-{tag}")
    );
    // Linked clone with customization (vcsim accepts the spec; it ignores diskMoveType).
    let mut c = Customization::default();
    c.hostname = Some("web-1.example.com".into());
    let mut n = NetworkCustomization::default();
    n.name = "VM Network".into();
    n.ip_address = Some("10.0.0.5/24".into());
    n.gateway = Some("10.0.0.1".into());
    n.dns = vec!["10.0.0.2".into()];
    c.networks.push(n);
    let linked = cloner
        .clone_vm(
            &src,
            &CloneOptions::new(format!("vr-linked-{tag}"))
                .linked(true)
                .with_customization(c),
        )
        .await
        .expect("linked clone");
    assert!(linked.linked && linked.customized);
    // Clones report Tools not running (vcsim creates them that way): an engine shutdown must
    // force at once with NoGuestTools instead of sending ShutdownGuest.
    let clone_vm = linked.vm.clone();
    if p.power_state(&clone_vm).await.expect("state").is_off() {
        p.start(&clone_vm, &StartOptions::default())
            .await
            .expect("start clone");
    }
    assert_eq!(
        p.probe_agent(&clone_vm).await.expect("probe"),
        AgentStatus::NotConnected
    );
    let provider: Arc<dyn Provider> = Arc::new(p.clone());
    let report = ShutdownManager::new(provider)
        .shutdown(
            &clone_vm,
            ShutdownPolicy::with_grace(Duration::from_secs(10)),
        )
        .await
        .expect("shutdown");
    assert!(
        matches!(
            report.outcome,
            ShutdownOutcome::Forced {
                reason: ForcedReason::NoGuestTools
            }
        ),
        "{}",
        report.outcome
    );
    assert_eq!(report.signals_sent, 0);
    for vm in [full.vm, linked.vm] {
        remove(&p, &vm).await;
        assert_eq!(
            p.power_state(&vm).await.expect_err("deleted").kind(),
            ErrorKind::NotFound
        );
    }
    // The base snapshot the linked clone needed stays on the source; remove it.
    let snaps = p.snapshotter().expect("snapshotter");
    for s in snaps.list_snapshots(&src).await.expect("list") {
        snaps
            .delete_snapshot(&src, &s.id, &DeleteSnapshotOptions::default())
            .await
            .expect("cleanup");
    }
}

#[tokio::test]
async fn reconfigure_cpu_memory_disk() {
    let Some(p) = provider().await else { return };
    let vm = running_vm(&p, "DC0_H0_VM3").await;
    let caps = p.vm_capabilities(&vm).await.expect("caps");
    assert!(
        !caps.cpu_hot_add && !caps.memory_hot_add,
        "model VMs have hot-add disabled"
    );
    let before = p.describe(&vm).await.expect("describe");
    // Running without hot-add: refused, nothing changed.
    let mut up = ReconfigureRequest::default();
    up.cpu = Some(before.cpu + 1);
    let err = p
        .reconfigure(&vm, &up)
        .await
        .expect_err("cpu change while running");
    assert_eq!(err.kind(), ErrorKind::InvalidState, "{err}");
    // Disks grow online.
    let disk = before.disks[0].clone();
    let mut grow = ReconfigureRequest::default();
    grow.disks
        .push(DiskResize::new(disk.name.clone(), disk.size_gib + 1));
    let r = p.reconfigure(&vm, &grow).await.expect("grow disk");
    assert!(r.applied_live);
    let after = p.describe(&vm).await.expect("describe");
    assert_eq!(after.disks[0].size_gib, disk.size_gib + 1, "{after:?}");
    let mut shrink = ReconfigureRequest::default();
    shrink.disks.push(DiskResize::new(disk.name.clone(), 0));
    assert_eq!(
        p.reconfigure(&vm, &shrink)
            .await
            .expect_err("shrink")
            .kind(),
        ErrorKind::InvalidSpec
    );
    // Powered off: CPU and memory change.
    p.power_off(&vm, &PowerOffOptions::default())
        .await
        .expect("off");
    let mut change = ReconfigureRequest::default();
    change.cpu = Some(if before.cpu == 2 { 4 } else { 2 });
    change.memory_mib = Some(if before.memory_mib == 2048 {
        1024
    } else {
        2048
    });
    let r = p.reconfigure(&vm, &change).await.expect("reconfigure off");
    assert!(!r.applied_live && !r.needs_power_cycle);
    let d = p.describe(&vm).await.expect("describe");
    assert_eq!(
        (Some(d.cpu), Some(d.memory_mib)),
        (change.cpu, change.memory_mib)
    );

    // Enable CPU/memory hot-add behind the provider's back (raw ReconfigVM_Task), then grow live.
    let mut raw = RawSession::login().await;
    let r = raw
        .call(&format!(
            r#"<ReconfigVM_Task xmlns="urn:vim25"><_this type="VirtualMachine">{vm}</_this><spec><memoryHotAddEnabled>true</memoryHotAddEnabled><cpuHotAddEnabled>true</cpuHotAddEnabled></spec></ReconfigVM_Task>"#
        ))
        .await;
    assert!(r.contains("<returnval type=\"Task\">"), "{r}");
    p.start(&vm, &StartOptions::default()).await.expect("on");
    let caps = p.vm_capabilities(&vm).await.expect("caps");
    assert!(caps.cpu_hot_add && caps.memory_hot_add, "{caps:?}");
    let mut live = ReconfigureRequest::default();
    live.cpu = Some(d.cpu + 2);
    live.memory_mib = Some(d.memory_mib + 1024);
    let r = p.reconfigure(&vm, &live).await.expect("hot-add");
    assert!(r.applied_live && !r.needs_power_cycle, "{r:?}");
    let d2 = p.describe(&vm).await.expect("describe");
    assert_eq!((d2.cpu, d2.memory_mib), (d.cpu + 2, d.memory_mib + 1024));
    let mut shrink = ReconfigureRequest::default();
    shrink.cpu = Some(1);
    assert_eq!(
        p.reconfigure(&vm, &shrink)
            .await
            .expect_err("no hot-remove")
            .kind(),
        ErrorKind::InvalidState
    );
    // Leave the model VM as other runs expect it: off, hot-add disabled.
    p.power_off(&vm, &PowerOffOptions::default())
        .await
        .expect("off");
    raw.call(&format!(
        r#"<ReconfigVM_Task xmlns="urn:vim25"><_this type="VirtualMachine">{vm}</_this><spec><memoryHotAddEnabled>false</memoryHotAddEnabled><cpuHotAddEnabled>false</cpuHotAddEnabled></spec></ReconfigVM_Task>"#
    ))
    .await;
}

#[tokio::test]
async fn linked_clones_share_one_base_snapshot_and_a_failed_clone_removes_it() {
    let Some(p) = provider().await else { return };
    let src = running_vm(&p, "DC0_H0_VM13").await;
    let snaps = p.snapshotter().expect("snapshotter");
    let cloner = p.cloner().expect("cloner");
    let names = |p: &virtrigaud_vsphere::VsphereProvider, vm: virtrigaud_core::VmId| {
        let p = p.clone();
        async move {
            let s = p.snapshotter().expect("snapshotter");
            let list = s.list_snapshots(&vm).await.expect("list snapshots");
            list.into_iter().map(|s| s.name).collect::<Vec<_>>()
        }
    };
    for s in snaps.list_snapshots(&src).await.expect("list") {
        let _ = snaps
            .delete_snapshot(&src, &s.id, &DeleteSnapshotOptions::default())
            .await;
    }
    let tag = std::process::id();
    // A linked clone that fails after registration takes its base snapshot with it.
    let (status, body) =
        common::vcsim_knob(true, &format!("/virtrigaud/fail-next-clone?vm={src}")).await;
    assert_eq!(status, 200, "fail-next-clone: {body}");
    let failed = format!("vr-lbase-fail-{tag}");
    cloner
        .clone_vm(&src, &CloneOptions::new(failed.clone()).linked(true))
        .await
        .expect_err("the arranged failure fails the clone");
    assert_eq!(names(&p, src.clone()).await, Vec::<String>::new());
    // Two linked clones share one base snapshot, named for what it is.
    let mut clones = Vec::new();
    for i in 0..2 {
        let r = cloner
            .clone_vm(
                &src,
                &CloneOptions::new(format!("vr-lbase-{i}-{tag}")).linked(true),
            )
            .await
            .expect("linked clone");
        assert!(r.linked);
        clones.push(r.vm);
        assert_eq!(
            names(&p, src.clone()).await,
            vec![virtrigaud_vsphere::LINKED_CLONE_BASE.to_owned()]
        );
    }
    for vm in &clones {
        remove(&p, vm).await;
    }
    for s in snaps.list_snapshots(&src).await.expect("list") {
        snaps
            .delete_snapshot(&src, &s.id, &DeleteSnapshotOptions::default())
            .await
            .expect("cleanup");
    }
    common::remove_named(&p, &failed).await;
}
