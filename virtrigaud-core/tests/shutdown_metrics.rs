//! The engine's metrics, asserted with a recording recorder.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use virtrigaud_core::shutdown::{ShutdownManager, ShutdownPolicy, metrics as names};
use virtrigaud_core::sim::{GuestBehavior, Simulator};

#[test]
fn shutdown_metrics_are_emitted_with_the_seed_naming() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            let sim = Simulator::new();
            let good = sim.add_vm("good", GuestBehavior::cooperative());
            let bad = sim.add_vm("bad", GuestBehavior::ignores_acpi());
            let m = ShutdownManager::new(Arc::new(sim));
            let policy = ShutdownPolicy::with_grace(Duration::from_secs(20));
            m.shutdown(&good, policy.clone()).await.unwrap();
            m.shutdown(&bad, policy).await.unwrap();
        });
    });
    let snapshot = snapshotter.snapshot().into_vec();
    let find = |name: &str, labels: &[(&str, &str)]| {
        snapshot.iter().find_map(|(key, _, _, value)| {
            let k = key.key();
            let matches = k.name() == name
                && labels
                    .iter()
                    .all(|(lk, lv)| k.labels().any(|l| l.key() == *lk && l.value() == *lv));
            matches.then(|| match value {
                DebugValue::Counter(c) => DebugValue::Counter(*c),
                DebugValue::Gauge(g) => DebugValue::Gauge(*g),
                DebugValue::Histogram(h) => DebugValue::Histogram(h.clone()),
            })
        })
    };
    let total = |outcome: &str| {
        find(
            names::SHUTDOWN_TOTAL,
            &[("provider_type", "simulator"), ("outcome", outcome)],
        )
    };
    assert_eq!(total("graceful"), Some(DebugValue::Counter(1)));
    assert_eq!(total("forced"), Some(DebugValue::Counter(1)));
    assert_eq!(
        find(names::SHUTDOWN_FORCED_TOTAL, &[("reason", "timeout")]),
        Some(DebugValue::Counter(1))
    );
    match find(names::SHUTDOWN_DURATION, &[("outcome", "forced")]) {
        Some(DebugValue::Histogram(values)) => {
            assert_eq!(values.len(), 1);
            assert_eq!(values[0].into_inner(), 20.0);
        }
        other => panic!("no duration histogram: {other:?}"),
    }
    assert!(matches!(
        find(names::SHUTDOWN_SIGNALS_TOTAL, &[("channel", "acpi")]),
        Some(DebugValue::Counter(n)) if n >= 2
    ));
}
