//! Metrics and events of the orchestration flows, asserted with a recording recorder.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use metrics_util::CompositeKey;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};

type Entries = Vec<(
    CompositeKey,
    Option<metrics::Unit>,
    Option<metrics::SharedString>,
    DebugValue,
)>;
use virtrigaud_core::ErrorKind;
use virtrigaud_core::model::{
    CloneTarget, ObjectRef, VMClone, VMCloneSpec, VMSnapshot, VMSnapshotSpec, VirtualMachineStatus,
};
use virtrigaud_core::orchestration::{
    EventReason, EventType, ObjectKind, Orchestrator, ReconfigureOptions, ResourceChange,
    SnapshotCreateOptions, metrics as m,
};
use virtrigaud_core::sim::{GuestBehavior, Simulator};

fn counter(snap: &Entries, name: &str, labels: &[(&str, &str)]) -> u64 {
    snap.iter()
        .filter(|(k, _, _, _)| {
            let key = k.key();
            key.name() == name
                && labels
                    .iter()
                    .all(|(ln, lv)| key.labels().any(|l| l.key() == *ln && l.value() == *lv))
        })
        .map(|(_, _, _, v)| match v {
            DebugValue::Counter(c) => *c,
            _ => 0,
        })
        .sum()
}

fn histogram_count(snap: &Entries, name: &str) -> usize {
    snap.iter()
        .filter(|(k, _, _, _)| k.key().name() == name)
        .map(|(_, _, _, v)| match v {
            DebugValue::Histogram(h) => h.len(),
            _ => 0,
        })
        .sum()
}

#[derive(Debug)]
struct OneChunk(bytes::Bytes);

#[async_trait::async_trait]
impl virtrigaud_core::orchestration::image::ImageSource for OneChunk {
    async fn open(
        &self,
        offset: u64,
    ) -> virtrigaud_core::Result<virtrigaud_core::orchestration::image::SourceStream> {
        use futures::StreamExt;
        let body = futures::stream::iter(vec![Ok(self.0.slice(offset as usize..))]).boxed();
        Ok(virtrigaud_core::orchestration::image::SourceStream::new(
            offset,
            Some(self.0.len() as u64),
            body,
        ))
    }
}

#[test]
fn image_preparation_and_lifecycle_actions_are_counted() {
    use virtrigaud_core::model::{LifecycleAction, RunStrategy, VMImage, VMImageSpec};
    use virtrigaud_core::orchestration::image::{
        FileSink, ImagePreparer, ImageTarget, PrepareOptions,
    };
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let dir = tempfile::tempdir().unwrap();
    metrics::with_local_recorder(&recorder, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let prep = ImagePreparer::new(Arc::new(FileSink::new(dir.path())));
            let src = OneChunk(bytes::Bytes::from_static(b"qcow2 image bytes"));
            let mut img = VMImage::new("img", VMImageSpec::default());
            prep.prepare(
                &mut img,
                &ImageTarget::new("img"),
                &src,
                &PrepareOptions::default(),
            )
            .await
            .unwrap();
            let mut opts = PrepareOptions::default();
            opts.checksum = Some(format!("sha256:{}", "0".repeat(64)).parse().unwrap());
            let mut img = VMImage::new("img2", VMImageSpec::default());
            prep.prepare(&mut img, &ImageTarget::new("img2"), &src, &opts)
                .await
                .unwrap_err();

            let sim = Simulator::new();
            let vm = sim.add_vm(
                "a",
                GuestBehavior::cooperative().acpi_after(Duration::from_millis(10)),
            );
            let orch = Orchestrator::new(Arc::new(sim));
            orch.apply_action(&vm, &LifecycleAction::stop(), RunStrategy::Manual)
                .await
                .unwrap();
            orch.apply_action(&vm, &LifecycleAction::start(), RunStrategy::Halted)
                .await
                .unwrap_err();
        })
    });
    let snap: Entries = snapshotter.snapshot().into_vec();
    assert_eq!(
        counter(
            &snap,
            m::IMAGE_PREPARE_TOTAL,
            &[("provider_type", "file"), ("outcome", "success")]
        ),
        1
    );
    assert_eq!(
        counter(
            &snap,
            m::IMAGE_PREPARE_TOTAL,
            &[("outcome", "invalid_spec")]
        ),
        1
    );
    assert_eq!(histogram_count(&snap, m::IMAGE_PREPARE_DURATION), 2);
    assert_eq!(
        counter(
            &snap,
            m::LIFECYCLE_ACTION_TOTAL,
            &[("action", "stop"), ("outcome", "success")]
        ),
        1
    );
    assert_eq!(
        counter(
            &snap,
            m::LIFECYCLE_ACTION_TOTAL,
            &[("action", "start"), ("outcome", "invalid_spec")]
        ),
        1
    );
}

#[test]
fn flows_emit_the_seed_metrics_and_events() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let events = metrics::with_local_recorder(&recorder, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            let sim = Simulator::new();
            let vm = sim.add_vm(
                "web-server",
                GuestBehavior::cooperative().acpi_after(Duration::from_secs(2)),
            );
            let orch = Orchestrator::new(Arc::new(sim.clone()));
            let mut rx = orch.events().subscribe();
            let mut st = VirtualMachineStatus::default();
            orch.reconfigure(
                &vm,
                &ResourceChange::default().cpu(4),
                &ReconfigureOptions::default(),
                &mut st,
            )
            .await
            .unwrap();
            orch.reconfigure(
                &vm,
                &ResourceChange::default().cpu(32),
                &ReconfigureOptions::default(),
                &mut st,
            )
            .await
            .unwrap();
            sim.inject_fault("reconfigure", ErrorKind::Internal);
            orch.reconfigure(
                &vm,
                &ResourceChange::default().memory_mib(4096),
                &ReconfigureOptions::default(),
                &mut st,
            )
            .await
            .unwrap_err();

            let mut spec = VMSnapshotSpec::default();
            spec.vm_ref = ObjectRef::new("web-server");
            let mut s = VMSnapshot::new("pre-maintenance-backup", spec);
            orch.create_snapshot(&vm, &mut s, &SnapshotCreateOptions::default())
                .await
                .unwrap();
            orch.delete_snapshot(&vm, &mut s).await.unwrap();

            let mut cspec = VMCloneSpec::default();
            cspec.source_ref = ObjectRef::new("web-server");
            let mut t = CloneTarget::default();
            t.name = "web-server-test".into();
            cspec.target = t;
            cspec.linked = Some(true);
            let mut c = VMClone::new("web-server-clone", cspec);
            orch.clone_vm(&vm, &mut c, None).await.unwrap();

            let mut out = Vec::new();
            while let Ok(e) = rx.try_recv() {
                out.push(e);
            }
            out
        })
    });
    let snap: Entries = snapshotter.snapshot().into_vec();
    assert_eq!(
        counter(
            &snap,
            m::RECONFIGURE_TOTAL,
            &[("provider_type", "simulator"), ("outcome", "online")]
        ),
        1
    );
    assert_eq!(
        counter(&snap, m::RECONFIGURE_TOTAL, &[("outcome", "power_cycle")]),
        1
    );
    assert_eq!(
        counter(&snap, m::RECONFIGURE_TOTAL, &[("outcome", "internal")]),
        1
    );
    assert_eq!(histogram_count(&snap, m::RECONFIGURE_DURATION), 3);
    assert_eq!(
        counter(
            &snap,
            m::SNAPSHOT_TOTAL,
            &[
                ("action", "create"),
                ("provider_type", "simulator"),
                ("outcome", "success")
            ]
        ),
        1
    );
    assert_eq!(
        counter(
            &snap,
            m::SNAPSHOT_TOTAL,
            &[("action", "delete"), ("outcome", "success")]
        ),
        1
    );
    assert_eq!(histogram_count(&snap, m::SNAPSHOT_DURATION), 2);
    assert_eq!(
        counter(
            &snap,
            m::CLONE_TOTAL,
            &[
                ("linked", "true"),
                ("provider_type", "simulator"),
                ("outcome", "success")
            ]
        ),
        1
    );
    assert_eq!(histogram_count(&snap, m::CLONE_DURATION), 1);
    // The engine's own metrics flow through the same recorder.
    assert!(
        counter(
            &snap,
            "virtrigaud_vm_shutdown_total",
            &[("outcome", "graceful")]
        ) >= 1
    );

    let reasons: Vec<EventReason> = events.iter().map(|e| e.reason).collect();
    for want in [
        EventReason::ReconfigureStarted,
        EventReason::ReconfigurePowerCycle,
        EventReason::ReconfigureFailed,
        EventReason::SnapshotCreating,
        EventReason::SnapshotReady,
        EventReason::SnapshotDeleted,
        EventReason::CloneCompleted,
    ] {
        assert!(reasons.contains(&want), "missing {want}: {reasons:?}");
    }
    let pc = events
        .iter()
        .find(|e| e.reason == EventReason::ReconfigurePowerCycle)
        .unwrap();
    assert_eq!(
        (pc.event_type, pc.object, pc.name.as_str()),
        (EventType::Warning, ObjectKind::VirtualMachine, "web-server")
    );
    let ready = events
        .iter()
        .find(|e| e.reason == EventReason::SnapshotReady)
        .unwrap();
    assert_eq!(
        (ready.event_type, ready.object, ready.name.as_str()),
        (
            EventType::Normal,
            ObjectKind::VMSnapshot,
            "pre-maintenance-backup"
        )
    );
    assert!(
        ready.to_string().starts_with("Normal   SnapshotReady"),
        "{ready}"
    );
}
