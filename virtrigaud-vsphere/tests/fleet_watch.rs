//! Fleet-scale power-state watches: concurrent graceful stops through one `ShutdownManager`
//! over one provider share ONE property collector and ONE `WaitForUpdatesEx` long poll
//! (counted per method where requests are sent), on vcsim with 1 and 20 VMs; and the shared
//! loop's failure path on a scripted vCenter.
#![allow(clippy::expect_used, clippy::unwrap_used, missing_docs)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use virtrigaud_core::shutdown::{ShutdownManager, ShutdownOutcome, ShutdownPolicy};
use virtrigaud_core::{PowerState, Provider, ShutdownChannel, ShutdownRequestOptions, VmId};
use virtrigaud_vsphere::{MethodCalls, VsphereProvider};

use common::fake_vc::{Guest, VM, scripted};
use common::{config, running_vm, set_guest_shutdown_delay};

/// The guest shutdown delay: every stop overlaps every other one.
const GUEST_DELAY_MS: u64 = 1500;

const METHODS: [&str; 7] = [
    "CreatePropertyCollector",
    "CreateFilter",
    "WaitForUpdatesEx",
    "CancelWaitForUpdates",
    "DestroyPropertyFilter",
    "DestroyPropertyCollector",
    "RetrievePropertiesEx",
];

fn counts(p: &VsphereProvider) -> Vec<MethodCalls> {
    METHODS.iter().map(|m| p.method_calls(m)).collect()
}

fn sent(before: &[MethodCalls], after: &[MethodCalls], method: &str) -> u64 {
    let i = METHODS.iter().position(|m| *m == method).expect("counted");
    after[i].sent - before[i].sent
}

/// `n` concurrent graceful stops of `names` through one manager over one fresh provider.
async fn fleet_stop(names: &[String]) {
    let Some(cfg) = config() else { return };
    let n = names.len();
    let p = VsphereProvider::connect(cfg).await.expect("connect");
    let mut vms = Vec::new();
    for name in names {
        let vm = running_vm(&p, name).await;
        set_guest_shutdown_delay(&vm, GUEST_DELAY_MS).await;
        vms.push(vm);
    }
    let mgr = ShutdownManager::new(Arc::new(p.clone()) as Arc<dyn Provider>);
    let before = counts(&p);
    let calls_before = p.api_calls();
    assert!(!p.has_watch_collector());

    // The watched VMs at peak, sampled.
    let peak_watched = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let p = p.clone();
        let peak = Arc::clone(&peak_watched);
        tokio::spawn(async move {
            loop {
                peak.fetch_max(p.watched_vms(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let started = tokio::time::Instant::now();
    let handles: Vec<_> = vms
        .iter()
        .map(|vm| {
            mgr.start(vm, ShutdownPolicy::with_grace(Duration::from_secs(30)))
                .expect("start")
        })
        .collect();
    let mut reports = Vec::new();
    for h in handles {
        reports.push(h.wait().await);
    }
    let wall = started.elapsed();
    sampler.abort();

    for (vm, r) in vms.iter().zip(&reports) {
        assert!(
            matches!(
                r.outcome,
                ShutdownOutcome::Graceful {
                    channel: Some(ShutdownChannel::Agent)
                }
            ),
            "{vm}: {}",
            r.outcome
        );
        assert_eq!((r.signals_sent, r.power_off_calls), (1, 0), "{vm}");
        // Off only once vcsim powered the guest off (its delay after ShutdownGuest).
        let off = r.off_observed.expect("off observed");
        assert!(
            off >= Duration::from_millis(GUEST_DELAY_MS - 100),
            "{vm}: off after {off:?}, before the guest's {GUEST_DELAY_MS} ms"
        );
        assert!(p.power_state(vm).await.expect("state").is_off(), "{vm}");
    }
    let reads = 2 * n as u64; // the power_state reads just above
    drop(mgr);

    // Every stream is gone: the filters and the collector are destroyed (in the background).
    let mut gone = false;
    for _ in 0..100 {
        if !p.has_watch_collector() && p.method_calls("DestroyPropertyCollector").in_flight == 0 {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(gone, "the shared collector outlived its watches");
    assert_eq!(p.watched_vms(), 0);
    let after = counts(&p);
    let collectors = sent(&before, &after, "CreatePropertyCollector");
    let filters = sent(&before, &after, "CreateFilter");
    let waits = sent(&before, &after, "WaitForUpdatesEx");
    let cancels = sent(&before, &after, "CancelWaitForUpdates");
    let destroyed_filters = sent(&before, &after, "DestroyPropertyFilter");
    let destroyed_collectors = sent(&before, &after, "DestroyPropertyCollector");
    let peak_polls = p.method_calls("WaitForUpdatesEx").peak_in_flight;
    let total = p.api_calls() - calls_before - reads;
    eprintln!(
        "METRIC vsphere fleet_watch n={n} collectors_created = {collectors}\n\
         METRIC vsphere fleet_watch n={n} peak_long_polls = {peak_polls}\n\
         METRIC vsphere fleet_watch n={n} peak_watched_vms = {}\n\
         METRIC vsphere fleet_watch n={n} filters_created = {filters} (destroyed one by one: {destroyed_filters}, the rest with the collector: {destroyed_collectors})\n\
         METRIC vsphere fleet_watch n={n} wait_for_updates = {waits} ({:.2} per stop), cancel_wait_for_updates = {cancels}\n\
         METRIC vsphere fleet_watch n={n} requests_per_stop = {:.2} ({total} SOAP requests in {wall:?})",
        peak_watched.load(Ordering::Relaxed),
        waits as f64 / n as f64,
        total as f64 / n as f64,
    );
    assert_eq!(
        collectors, 1,
        "one shared collector for {n} concurrent stops"
    );
    assert_eq!(peak_polls, 1, "one long poll for {n} concurrent stops");
    assert_eq!(filters, n as u64, "one filter per VM");
    assert_eq!(
        destroyed_collectors, 1,
        "the collector is destroyed at the end"
    );
    for vm in &vms {
        set_guest_shutdown_delay(vm, 0).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_stop_uses_one_collector_and_one_long_poll() {
    fleet_stop(&["DC0_H0_VM14".to_owned()]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_stops_share_one_collector_and_one_long_poll() {
    // DC0_H0_VM15..19 and 21..35: no other test uses them (20 is the guest-ops VM).
    let names: Vec<String> = (15..20)
        .chain(21..36)
        .map(|i| format!("DC0_H0_VM{i}"))
        .collect();
    assert_eq!(names.len(), 20);
    fleet_stop(&names).await;
}

/// Two watches of a VM share one filter; the shared loop's long poll fails: both streams end
/// with the error (the engine then polls), the collector is dropped, and the next watch
/// builds a new one that pushes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_shared_long_poll_ends_every_stream_and_the_next_watch_recovers() {
    let (_s, vc, p) = scripted(Guest::Honours {
        after: Duration::from_millis(600),
    })
    .await;
    let vm = VmId::new(VM);
    let mut a = p.watch_power_state(&vm).await.expect("watch").expect("a");
    let mut b = p.watch_power_state(&vm).await.expect("watch").expect("b");
    assert_eq!(p.method_calls("CreatePropertyCollector").sent, 1);
    assert_eq!(p.method_calls("CreateFilter").sent, 1, "one filter per VM");
    assert_eq!(p.watched_vms(), 1);
    vc.fail_next_waits(1);
    for (name, s) in [("a", &mut a), ("b", &mut b)] {
        let first = tokio::time::timeout(Duration::from_secs(5), s.next())
            .await
            .expect("in time");
        let err = first.expect("an item").expect_err("the failure");
        assert!(err.to_string().contains("SystemError"), "{name}: {err}");
        let end = tokio::time::timeout(Duration::from_secs(5), s.next())
            .await
            .expect("in time");
        assert!(end.is_none(), "{name}: the stream ends after its error");
    }
    assert!(!p.has_watch_collector(), "the failed collector is dropped");
    assert_eq!(p.watched_vms(), 0);
    drop((a, b));

    // A later watch builds a new collector, and pushes the guest's shutdown.
    let mut c = p.watch_power_state(&vm).await.expect("watch").expect("c");
    assert_eq!(p.method_calls("CreatePropertyCollector").sent, 2);
    p.request_shutdown(
        &vm,
        ShutdownChannel::Agent,
        &ShutdownRequestOptions::default(),
    )
    .await
    .expect("ShutdownGuest");
    let mut seen = Vec::new();
    let off = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(item) = c.next().await {
            let state = item.expect("state");
            seen.push(state);
            if state.is_off() {
                return true;
            }
        }
        false
    })
    .await
    .expect("in time");
    assert!(off, "off pushed after the recovery: {seen:?}");
    assert_eq!(seen.first(), Some(&PowerState::ShuttingDown), "{seen:?}");
    assert_eq!(p.method_calls("WaitForUpdatesEx").peak_in_flight, 1);
    drop(c);
    for _ in 0..50 {
        if !p.has_watch_collector() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!p.has_watch_collector());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let calls = vc.calls();
    assert_eq!(
        calls
            .iter()
            .filter(|c| *c == "DestroyPropertyCollector")
            .count(),
        2,
        "the failed collector and the last one are destroyed: {calls:?}"
    );
}
