//! The layers around a provider: context, statistics, metrics, retry and validation, on the
//! simulator (with injected faults where a failure is needed).

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use virtrigaud_core::layers::{
    InstrumentLayer, LayerExt, PROVIDER_CALLS_TOTAL, RetryLayer, RetryPolicy, ValidateLayer,
};
use virtrigaud_core::sim::{GuestBehavior, Simulator};
use virtrigaud_core::{
    DiskResize, ErrorKind, ErrorStatus, Provider, ReconfigureRequest, SnapshotOptions,
    VmCreateSpec, VmId,
};

fn sim_with_vm() -> (Simulator, VmId) {
    let sim = Simulator::new();
    let vm = sim.add_vm("web-1", GuestBehavior::cooperative());
    (sim, vm)
}

#[tokio::test(start_paused = true)]
async fn instrument_fills_context_and_counts_each_operation() {
    let (sim, vm) = sim_with_vm();
    sim.inject_fault("power_state", ErrorKind::Internal);
    let layer = InstrumentLayer::new();
    let stats = layer.stats();
    let provider = sim.clone().layer(layer);

    let err = provider.power_state(&vm).await.unwrap_err();
    assert_eq!(err.provider(), "simulator");
    assert_eq!(err.operation(), "power_state");
    assert_eq!(err.resource(), Some("web-1"));
    provider.power_state(&vm).await.unwrap();
    provider.describe(&vm).await.unwrap();

    let ps = stats.get("power_state");
    assert_eq!((ps.calls, ps.failures), (2, 1));
    assert_eq!(stats.calls("describe"), 1);
    assert_eq!(stats.total_calls(), 3);
    assert_eq!(
        sim.calls("power_state"),
        2,
        "the layer adds no provider call"
    );
}

#[tokio::test(start_paused = true)]
async fn snapshots_and_clones_go_through_the_layer_too() {
    let (sim, vm) = sim_with_vm();
    let layer = InstrumentLayer::new();
    let stats = layer.stats();
    let provider: Arc<dyn Provider> = Arc::new(sim.layer(layer));
    let snaps = provider.snapshotter().expect("the simulator has snapshots");
    snaps
        .create_snapshot(&vm, &SnapshotOptions::new("before"))
        .await
        .unwrap();
    assert_eq!(snaps.list_snapshots(&vm).await.unwrap().len(), 1);
    assert_eq!(stats.calls("create_snapshot"), 1);
    assert_eq!(stats.calls("list_snapshots"), 1);
    assert!(provider.cloner().is_some());
}

#[tokio::test(start_paused = true)]
async fn retry_repeats_reads_but_never_writes() {
    let (sim, vm) = sim_with_vm();
    let provider = sim
        .clone()
        .layer(RetryLayer::new(RetryPolicy::new(Duration::from_secs(1), 3)));

    sim.inject_fault("power_state", ErrorKind::Unavailable);
    sim.inject_fault("power_state", ErrorKind::Unavailable);
    let started = tokio::time::Instant::now();
    provider.power_state(&vm).await.unwrap();
    assert_eq!(sim.calls("power_state"), 3);
    assert_eq!(started.elapsed(), Duration::from_secs(3), "1 s then 2 s");

    sim.inject_fault("power_off", ErrorKind::Unavailable);
    let err = provider
        .power_off(&vm, &Default::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert_eq!(sim.calls("power_off"), 1, "a write runs once");

    for _ in 0..4 {
        sim.inject_fault("describe", ErrorKind::Unavailable);
    }
    let err = provider.describe(&vm).await.unwrap_err();
    assert_eq!(err.status(), ErrorStatus::Persistent);
    assert_eq!(sim.calls("describe"), 4, "one attempt and three retries");

    sim.inject_fault("describe", ErrorKind::NotFound);
    provider.describe(&vm).await.unwrap_err();
    assert_eq!(sim.calls("describe"), 5, "a permanent error is not retried");
}

#[tokio::test(start_paused = true)]
async fn validation_names_the_field_before_the_provider_is_called() {
    let (sim, vm) = sim_with_vm();
    let provider = sim
        .clone()
        .layer(ValidateLayer)
        .layer(InstrumentLayer::new());

    let err = provider
        .create(&VmCreateSpec::new("db-1", 2, 0))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidSpec);
    assert_eq!(
        err.to_string(),
        "simulator create db-1: invalid_spec: memoryMiB: must be at least 1"
    );
    assert_eq!(sim.calls("create"), 0);

    let mut change = ReconfigureRequest::default();
    change.disks.push(DiskResize::new("root", 0));
    let err = provider.reconfigure(&vm, &change).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("disks.root.sizeGiB: must be at least 1")
    );
    assert_eq!(sim.calls("reconfigure"), 0);

    provider
        .create(&VmCreateSpec::new("db-1", 2, 1024))
        .await
        .unwrap();
}

#[test]
fn instrument_records_metrics_by_provider_operation_and_outcome() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            let (sim, vm) = sim_with_vm();
            sim.inject_fault("power_state", ErrorKind::Unavailable);
            let provider = sim.layer(InstrumentLayer::new());
            provider.power_state(&vm).await.unwrap_err();
            provider.power_state(&vm).await.unwrap();
        });
    });
    let mut seen = Vec::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        if key.key().name() != PROVIDER_CALLS_TOTAL {
            continue;
        }
        let labels: Vec<String> = key
            .key()
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        if let DebugValue::Counter(n) = value {
            seen.push((labels.join(","), n));
        }
    }
    seen.sort();
    assert_eq!(
        seen,
        [
            (
                "provider_type=simulator,operation=power_state,outcome=success".to_string(),
                1
            ),
            (
                "provider_type=simulator,operation=power_state,outcome=unavailable".to_string(),
                1
            ),
        ]
    );
}
