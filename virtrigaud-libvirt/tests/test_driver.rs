//! Fast tests against private in-process `test:///` driver instances (no daemon, no QEMU).
//!
//! Every test opens its own instance (`test:///<tmp>/node.xml`), so tests run in parallel
//! without sharing state (all connections to `test:///default` in one process would share it).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use virtrigaud_core::clone::CloneOptions;
use virtrigaud_core::conformance;
use virtrigaud_core::provider::{
    DeleteOptions, DiskCreateSpec, DiskResize, ListOptions, PowerOffOptions, ReconfigureRequest,
    ShutdownRequestOptions, StartOptions, VmCreateSpec,
};
use virtrigaud_core::shutdown::{ShutdownManager, ShutdownOutcome, ShutdownPolicy};
use virtrigaud_core::snapshot::{DeleteSnapshotOptions, RevertOptions, SnapshotOptions};
use virtrigaud_core::{
    AgentStatus, ErrorKind, OffReason, PauseReason, PowerState, Provider, ShutdownChannel, VmId,
};
use virtrigaud_libvirt::{LibvirtConfig, LibvirtProvider};

mod common;
use common::{
    Guests, LibvirtFixture, Platform, private, running_vm, shared, two_disk_spec, with_disks,
};

fn rq(cpu: Option<u32>, memory_mib: Option<u64>) -> ReconfigureRequest {
    let mut r = ReconfigureRequest::default();
    r.cpu = cpu;
    r.memory_mib = memory_mib;
    r
}

// Current-thread runtime: the test driver stops a VM instantly, so on a multi-threaded runtime
// the first of the two racing shutdown requests of `racing_requests_share_one_grace` can finish
// before the second is even made (it then sees AlreadyOff). Here the second request joins.
#[tokio::test]
async fn conformance_suite_passes_on_the_test_driver() {
    struct TestDriver(LibvirtProvider, Platform);
    #[async_trait]
    impl Guests for TestDriver {
        fn provider(&self) -> &LibvirtProvider {
            &self.0
        }
        fn platform(&self) -> &Platform {
            &self.1
        }
        async fn cooperative(&self, name: &str) -> VmId {
            running_vm(&self.0, &format!("conf-{name}")).await
        }
        async fn clone_source(&self, name: &str) -> VmId {
            let spec = two_disk_spec(&format!("conf-{name}"), Some(common::NETWORK), false);
            self.0.create(&spec).await.expect("create a clone source")
        }
        fn missing(&self) -> VmId {
            VmId::new("no-such-domain")
        }
    }
    // The shared instance: the fixture's own connection sees the provider's domains and
    // volumes (to put a volume in a clone's way).
    let (p, platform) = shared().await;
    let fx = LibvirtFixture::new(TestDriver(p.clone(), platform), Duration::from_secs(10));
    let report = conformance::run_all(Arc::new(p), &fx).await;
    report.assert_passed_on("libvirt-test-driver");
    // Seeds cannot be uploaded on the test driver: customization is declared false there
    // and the check verifies the refusal; the half-way clone failure runs for real.
    for check in [
        "clone_customization_is_applied",
        "failed_clone_leaves_nothing",
    ] {
        assert!(report.passed().contains(&check), "{check} did not pass");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_classified() {
    let (p, _dir) = private().await;
    let missing = VmId::new("missing");
    assert_eq!(
        p.power_state(&missing).await.expect_err("missing").kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        p.describe(&missing).await.expect_err("missing").kind(),
        ErrorKind::NotFound
    );
    let vm = running_vm(&p, "e1").await;
    let again = p
        .start(&vm, &StartOptions::default())
        .await
        .expect_err("start running");
    assert_eq!(again.kind(), ErrorKind::InvalidState, "{again}");
    p.power_off(&vm, &PowerOffOptions::default())
        .await
        .expect("destroy");
    let off = p
        .power_off(&vm, &PowerOffOptions::default())
        .await
        .expect_err("destroy off");
    assert_eq!(off.kind(), ErrorKind::InvalidState);
    assert_eq!(off.provider(), "libvirt");
    let dup = p
        .create(&VmCreateSpec::new("e1", 1, 64))
        .await
        .expect_err("duplicate");
    assert_eq!(dup.kind(), ErrorKind::AlreadyExists);
    let bad = p
        .create(&VmCreateSpec::new("", 1, 64))
        .await
        .expect_err("bad name");
    assert_eq!(bad.kind(), ErrorKind::InvalidSpec);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_modes_fall_back_to_a_plain_request_and_events_push_off() {
    let (p, _dir) = private().await;
    assert!(
        p.events_registered(),
        "events should register on the test driver"
    );
    assert!(p.capabilities().power_state_watch);
    assert!(p.capabilities().repeatable_shutdown_signal);
    for ch in [ShutdownChannel::Acpi, ShutdownChannel::Agent] {
        let vm = running_vm(&p, &format!("s-{}", ch.as_str())).await;
        let mut watch = p
            .watch_power_state(&vm)
            .await
            .expect("watch")
            .expect("stream");
        p.request_shutdown(
            &vm,
            ch,
            &ShutdownRequestOptions::new(1, Duration::from_secs(5)),
        )
        .await
        .expect("shutdown request (flags refused, plain request sent)");
        // Events are delivered asynchronously: the Started event of the create may come first.
        let st = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                let st = watch.next().await.expect("stream item").expect("state");
                if st.is_off() {
                    return st;
                }
            }
        })
        .await
        .expect("off event in time");
        assert_eq!(st, PowerState::Off(OffReason::GuestShutdown));
        assert_eq!(
            p.power_state(&vm).await.expect("state"),
            PowerState::Off(OffReason::GuestShutdown)
        );
        assert!(p.last_stop_event(&vm).is_some());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_stops_a_test_driver_vm_gracefully() {
    let (p, _dir) = private().await;
    let vm = running_vm(&p, "eng").await;
    let p: Arc<dyn Provider> = Arc::new(p);
    let report = ShutdownManager::new(Arc::clone(&p))
        .shutdown(&vm, ShutdownPolicy::with_grace(Duration::from_secs(10)))
        .await
        .expect("shutdown");
    assert!(
        matches!(report.outcome, ShutdownOutcome::Graceful { .. }),
        "{}",
        report.outcome
    );
    assert_eq!(report.power_off_calls, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_operations_pause_resume_reset_reboot() {
    let (p, _dir) = private().await;
    let vm = running_vm(&p, "ops").await;
    p.pause(&vm).await.expect("pause");
    assert_eq!(
        p.power_state(&vm).await.expect("state"),
        PowerState::Paused(PauseReason::User)
    );
    p.resume(&vm).await.expect("resume");
    assert_eq!(
        p.power_state(&vm).await.expect("state"),
        PowerState::Running
    );
    p.reboot(&vm, ShutdownChannel::Acpi).await.expect("reboot");
    // The test driver has no agent: the probe says so.
    let a = p.probe_agent(&vm).await.expect("probe");
    assert!(
        matches!(a, AgentStatus::Unknown | AgentStatus::NotConnected),
        "{a:?}"
    );
    p.power_off(&vm, &PowerOffOptions::default())
        .await
        .expect("off");
    assert_eq!(
        p.power_state(&vm).await.expect("state"),
        PowerState::Off(OffReason::Destroyed)
    );
    p.start(&vm, &StartOptions::default()).await.expect("start");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_describe_list_by_labels_and_delete() {
    let (p, _dir) = private().await;
    let mut spec = VmCreateSpec::new("lab-1", 2, 256);
    spec.labels = BTreeMap::from([("set".to_string(), "web".to_string())]);
    spec.disks.push(DiskCreateSpec::new("root", 2));
    p.create(&spec).await.expect("create");
    let mut other = VmCreateSpec::new("lab-2", 1, 128);
    other.labels = BTreeMap::from([("set".to_string(), "db".to_string())]);
    p.create(&other).await.expect("create");
    let d = p.describe(&VmId::new("lab-1")).await.expect("describe");
    assert_eq!((d.cpu, d.memory_mib), (2, 256));
    assert_eq!(d.labels.get("set").map(String::as_str), Some("web"));
    assert_eq!(d.disks.len(), 1);
    assert!(d.power_state.is_off());
    let caps = p.vm_capabilities(&VmId::new("lab-1")).await.expect("caps");
    assert_eq!(caps.max_live_vcpus, 4);
    assert_eq!(caps.max_live_memory_mib, 512);
    assert!(caps.agent_configured);
    let mut opts = ListOptions::default();
    opts.labels.insert("set".into(), "web".into());
    let listed = p.list_vms(&opts).await.expect("list");
    assert_eq!(
        listed.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(),
        vec!["lab-1"]
    );
    p.delete(&VmId::new("lab-1"), &with_disks())
        .await
        .expect("delete");
    assert_eq!(
        p.describe(&VmId::new("lab-1"))
            .await
            .expect_err("gone")
            .kind(),
        ErrorKind::NotFound
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_vm_cannot_be_deleted() {
    let (p, _dir) = private().await;
    let vm = running_vm(&p, "del").await;
    let e = p
        .delete(&vm, &DeleteOptions::default())
        .await
        .expect_err("running");
    assert_eq!(e.kind(), ErrorKind::InvalidState);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_create_list_revert_delete() {
    let (p, _dir) = private().await;
    let vm = running_vm(&p, "snap").await;
    let s = p.snapshotter().expect("snapshots");
    let info = s
        .create_snapshot(
            &vm,
            &SnapshotOptions::new("s1")
                .with_memory(true)
                .with_description("first"),
        )
        .await
        .expect("create");
    assert!(info.has_memory);
    assert_eq!(info.description.as_deref(), Some("first"));
    let dup = s
        .create_snapshot(&vm, &SnapshotOptions::new("s1"))
        .await
        .expect_err("dup");
    assert_eq!(dup.kind(), ErrorKind::AlreadyExists);
    p.power_off(&vm, &PowerOffOptions::default())
        .await
        .expect("off");
    let s2 = s
        .create_snapshot(&vm, &SnapshotOptions::new("s2"))
        .await
        .expect("offline");
    assert!(!s2.has_memory);
    assert_eq!(s2.parent.as_deref(), Some("s1"));
    let list = s.list_snapshots(&vm).await.expect("list");
    assert_eq!(
        list.iter().map(|x| x.name.as_str()).collect::<Vec<_>>(),
        vec!["s1", "s2"]
    );
    // Revert a stopped VM to a running (memory) snapshot: it runs again.
    s.revert_snapshot(&vm, "s1", &RevertOptions::default())
        .await
        .expect("revert");
    assert_eq!(
        p.power_state(&vm).await.expect("state"),
        PowerState::Running
    );
    s.delete_snapshot(&vm, "s2", &DeleteSnapshotOptions::default())
        .await
        .expect("delete");
    let e = s
        .delete_snapshot(&vm, "s2", &DeleteSnapshotOptions::default())
        .await
        .expect_err("gone");
    assert_eq!(e.kind(), ErrorKind::NotFound);
    p.power_off(&vm, &PowerOffOptions::default())
        .await
        .expect("off");
    // Delete removes snapshot metadata with the domain.
    p.delete(&vm, &DeleteOptions::default())
        .await
        .expect("delete with snapshots");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_and_linked_clones_get_new_identity_and_failures_leave_nothing() {
    let (p, _dir) = private().await;
    let mut spec = VmCreateSpec::new("src", 1, 128);
    spec.disks.push(DiskCreateSpec::new("root", 1));
    p.create(&spec).await.expect("create");
    let c = p.cloner().expect("cloner");
    let full = c
        .clone_vm(&VmId::new("src"), &CloneOptions::new("full").power_on(true))
        .await
        .expect("full");
    assert!(!full.linked);
    assert_eq!(
        p.power_state(&full.vm).await.expect("state"),
        PowerState::Running
    );
    let linked = c
        .clone_vm(&VmId::new("src"), &CloneOptions::new("linked").linked(true))
        .await
        .expect("linked");
    assert!(linked.linked);
    let d = p.describe(&linked.vm).await.expect("describe");
    assert_eq!(d.disks.len(), 1);
    let dup = c
        .clone_vm(&VmId::new("src"), &CloneOptions::new("full"))
        .await
        .expect_err("dup");
    assert_eq!(dup.kind(), ErrorKind::AlreadyExists);
    // A linked clone of a running source is refused before anything is created.
    let e = c
        .clone_vm(&full.vm, &CloneOptions::new("bad").linked(true))
        .await
        .expect_err("running");
    assert_eq!(e.kind(), ErrorKind::InvalidState);
    assert_eq!(
        p.describe(&VmId::new("bad"))
            .await
            .expect_err("nothing")
            .kind(),
        ErrorKind::NotFound
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconfigure_live_within_maximum_else_power_cycle() {
    let (p, _dir) = private().await;
    let vm = running_vm(&p, "rc").await;
    let r = p
        .reconfigure(&vm, &rq(Some(2), Some(200)))
        .await
        .expect("live");
    assert!(r.applied_live && !r.needs_power_cycle, "{r:?}");
    let d = p.describe(&vm).await.expect("describe");
    assert_eq!(d.cpu, 2);
    let r = p.reconfigure(&vm, &rq(Some(8), None)).await.expect("cfg");
    assert!(r.needs_power_cycle && !r.applied_live, "{r:?}");
    assert!(p.describe(&vm).await.expect("describe").pending_power_cycle);
    p.power_off(&vm, &PowerOffOptions::default())
        .await
        .expect("off");
    let r = p
        .reconfigure(&vm, &rq(None, Some(1024)))
        .await
        .expect("offline");
    assert!(!r.needs_power_cycle);
    // Core's checks run before anything changes: sizes are positive, disks only grow.
    let zero = p
        .reconfigure(&vm, &rq(Some(0), None))
        .await
        .expect_err("0 vCPUs");
    assert_eq!(zero.kind(), ErrorKind::InvalidSpec, "{zero}");
    // The test driver cannot resize volumes: a grow is refused cleanly, by the driver.
    let mut grow = rq(None, None);
    grow.disks.push(DiskResize::new("vda", 2));
    let e = p
        .reconfigure(&vm, &grow)
        .await
        .expect_err("no volume resize");
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    p.start(&vm, &StartOptions::default()).await.expect("start");
    let d = p.describe(&vm).await.expect("describe");
    assert_eq!((d.cpu, d.memory_mib), (8, 1024));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_events_the_engine_polls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = dir.path().join("node.xml");
    std::fs::write(&node, "<node/>").expect("node xml");
    let p = LibvirtProvider::connect(
        LibvirtConfig::new(format!("test://{}", node.display())).with_events(false),
    )
    .await
    .expect("connect");
    assert!(!p.events_registered());
    assert!(!p.capabilities().power_state_watch);
    // Computed once at connect; a refresh reads the driver again and finds the same.
    let calls = p.api_calls();
    let refreshed = p.refresh_capabilities().await.expect("refresh");
    assert_eq!(refreshed, p.capabilities());
    assert!(!refreshed.agent_shutdown, "the test driver has no agent");
    assert_eq!(p.api_calls(), calls + 1, "one driver read");
    let mut spec = VmCreateSpec::new("poll", 1, 64);
    spec.power_on = true;
    let vm = p.create(&spec).await.expect("create");
    assert!(p.watch_power_state(&vm).await.expect("watch").is_none());
    let p: Arc<dyn Provider> = Arc::new(p);
    let report = ShutdownManager::new(Arc::clone(&p))
        .shutdown(&vm, ShutdownPolicy::with_grace(Duration::from_secs(10)))
        .await
        .expect("shutdown");
    assert!(
        matches!(report.outcome, ShutdownOutcome::Graceful { .. }),
        "{}",
        report.outcome
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_calls_are_bounded_and_all_complete() {
    let (p, _dir) = private().await;
    for i in 0..16 {
        running_vm(&p, &format!("c{i}")).await;
    }
    let futs = (0..16).map(|i| {
        let p = p.clone();
        async move { p.describe(&VmId::new(format!("c{i}"))).await }
    });
    let all = futures::future::join_all(futs).await;
    assert!(all.iter().all(Result::is_ok));
    assert_eq!(
        p.list_vms(&ListOptions::default())
            .await
            .expect("list")
            .len(),
        16
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_init_seed_is_created_or_cleanly_refused() {
    let (p, _dir) = private().await;
    let mut ci = VmCreateSpec::new("ci", 1, 64);
    ci.cloud_init_user_data = Some("#cloud-config\n".into());
    match p.create(&ci).await {
        Ok(vm) => assert!(p.describe(&vm).await.is_ok()),
        Err(e) => {
            // Drivers without volume upload: nothing is left behind.
            assert_eq!(
                p.describe(&VmId::new("ci"))
                    .await
                    .expect_err("absent")
                    .kind(),
                ErrorKind::NotFound,
                "{e}"
            );
        }
    }
}

/// A clone that fails at its second disk (a volume of that name is in the way) deletes the
/// first disk it copied and defines nothing: of `<target>-*` only the blocker is left, full
/// or linked. On the shared instance, where the test's own connection sees the pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clone_failing_at_its_second_disk_leaves_only_the_blocker() {
    let (p, platform) = shared().await;
    let src = p
        .create(&two_disk_spec("hf-src", Some(common::NETWORK), false))
        .await
        .expect("source");
    let c = p.cloner().expect("cloner");
    for (target, linked) in [("hf-full", false), ("hf-linked", true)] {
        let blocker = format!("{target}-vdb.qcow2");
        platform.delete_volume(&blocker);
        platform.create_volume(&blocker).expect("blocker");
        let e = c
            .clone_vm(&src, &CloneOptions::new(target).linked(linked))
            .await
            .expect_err("the second disk is in the way");
        assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");
        assert_eq!(
            platform.volumes(&format!("{target}-")).expect("volumes"),
            std::slice::from_ref(&blocker),
            "{target}: the first disk must be deleted again"
        );
        assert_eq!(
            p.describe(&VmId::new(target))
                .await
                .expect_err("no domain")
                .kind(),
            ErrorKind::NotFound
        );
        platform.delete_volume(&blocker);
    }
    // The source is untouched.
    assert_eq!(p.describe(&src).await.expect("source").disks.len(), 2);
    p.delete(&src, &with_disks()).await.expect("delete source");
    assert!(platform.volumes("hf-").expect("volumes").is_empty());
}

/// A clone without customization keeps the source's seed cdrom; deleting the clone with its
/// disks leaves the source's seed volume, which goes with the source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_clone_leaves_the_source_seed() {
    let (p, platform) = shared().await;
    let src = p
        .create(&two_disk_spec("ds-src", None, false))
        .await
        .expect("source");
    // The test driver cannot upload a seed's bytes: an empty volume of a seed's name stands
    // in, on the cdrom create would give it.
    platform.delete_volume("ds-src-cidata.iso");
    platform.create_volume("ds-src-cidata.iso").expect("seed");
    let seed = platform.volume_path("ds-src-cidata.iso").expect("path");
    platform
        .add_device(
            "ds-src",
            &format!(
                "<disk type='file' device='cdrom'><driver name='qemu' type='raw'/>\
                 <source file='{seed}'/><target dev='hdc' bus='ide'/><readonly/></disk>"
            ),
        )
        .expect("source seed cdrom");
    let c = p.cloner().expect("cloner");
    for (target, linked) in [("ds-full", false), ("ds-linked", true)] {
        let made = c
            .clone_vm(&src, &CloneOptions::new(target).linked(linked))
            .await
            .expect("clone");
        assert!(!made.customized);
        assert_eq!(
            platform.cdrom_sources(target).expect("cdroms"),
            std::slice::from_ref(&seed)
        );
        p.delete(&made.vm, &with_disks()).await.expect("delete");
        assert!(
            platform
                .volumes(&format!("{target}-"))
                .expect("volumes")
                .is_empty()
        );
        assert_eq!(
            platform.volumes("ds-src-cidata").expect("volumes"),
            ["ds-src-cidata.iso"],
            "deleting {target} with its disks deleted the source's seed"
        );
    }
    p.delete(&src, &with_disks()).await.expect("delete source");
    assert!(
        platform.volumes("ds-").expect("volumes").is_empty(),
        "the source's own seed goes with it"
    );
}

/// The test driver cannot upload a seed: customization is declared false and refused with
/// `Unsupported` before anything is made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customization_is_refused_on_the_test_driver_making_nothing() {
    let (p, platform) = shared().await;
    assert!(!p.capabilities().clone_customization && !p.capabilities().clone_user_data);
    let src = p
        .create(&two_disk_spec("cu-src", None, false))
        .await
        .expect("source");
    let mut c = virtrigaud_core::Customization::default();
    c.hostname = Some("cu".into());
    let mut opts = CloneOptions::new("cu-clone");
    opts.customization = Some(c);
    let e = p
        .cloner()
        .expect("cloner")
        .clone_vm(&src, &opts)
        .await
        .expect_err("no seeds here");
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    assert!(platform.volumes("cu-clone").expect("volumes").is_empty());
    p.delete(&src, &with_disks()).await.expect("delete source");
}
