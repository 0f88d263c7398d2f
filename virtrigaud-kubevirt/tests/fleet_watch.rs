//! Issue 18 (fleet scale), KubeVirt side, against the real apiserver: concurrent graceful
//! stops through one shutdown engine over one provider share one VM watch and one VMI watch
//! per namespace (open watches constant in the number of stops, none left afterwards), every
//! VM is reported off only after the fake virt-handler made it off, and each stop stays
//! within its request budget.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use futures::StreamExt;
use kube::api::Api;
use virtrigaud_core::shutdown::{ShutdownManager, ShutdownOutcome, ShutdownPolicy};
use virtrigaud_core::{PowerState, Provider, VmId};
use virtrigaud_kubevirt::types::VirtualMachineInstance;
use virtrigaud_kubevirt::{ApiStatsSnapshot, KubeVirtProvider};

use common::*;

const SETTLE: Duration = Duration::from_secs(60);

/// Wire requests a graceful stop may send (issue 18's budget), the shared watch aside.
const STOP_BUDGET: u64 = 6;
/// What opening the namespace's shared watch costs once: a list and a watch request for the
/// VMs, the same for the VMIs.
const WATCH_OPENING: u64 = 4;

/// What one fleet stop measured.
struct Measured {
    used: ApiStatsSnapshot,
    peak: u64,
}

/// Waits until the provider has no watch open.
async fn watches_closed(p: &KubeVirtProvider) -> u64 {
    let t0 = Instant::now();
    loop {
        let open = p.api_stats().open_watches;
        if open == 0 || t0.elapsed() > Duration::from_secs(10) {
            return open;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts `n` VMs, then stops them all gracefully at once through one engine over one
/// provider, checking each report against the fake virt-handler.
/// `warm`: a stream of another VM of the namespace is open all along (a controller watching
/// its VMs), so the stops find the shared watch open and listed.
async fn fleet_stop(n: usize, warm: bool) -> Option<Measured> {
    let path = kubeconfig()?;
    let ns = unique_ns(&format!("fleet{n}{}", if warm { "w" } else { "c" }));
    let client = client(&path).await;
    let p = provider(&path, &ns).await;
    let ctl = FakeKubeVirt::start(client.clone(), &ns, false);
    let vmis: Api<VirtualMachineInstance> = Api::namespaced(client.clone(), &ns);

    let mut vms = Vec::new();
    for i in 0..n {
        let name = format!("vm-{i}");
        vms.push(
            create_vm(
                &client,
                &ns,
                &name,
                "Always",
                Some(30),
                &[(GUEST_SHUTDOWN, "400")],
            )
            .await,
        );
    }
    let running = futures::future::join_all(
        vms.iter()
            .map(|vm| p.wait_for_power_state(vm, |s| *s == PowerState::Running, SETTLE)),
    )
    .await;
    assert!(running.iter().all(Result::is_ok), "{running:?}");
    // The waits each held the shared watch; with them done it is closed.
    assert_eq!(watches_closed(&p).await, 0, "the waits left a watch open");
    let _sentinel = if warm {
        let s = create_vm(&client, &ns, "sentinel", "Halted", None, &[]).await;
        let stream = p.watch_power_state(&s).await.unwrap();
        // listed and caught up: the sentinel's state comes from the watch
        tokio::time::sleep(Duration::from_millis(500)).await;
        Some(stream)
    } else {
        None
    };
    let before = p.api_stats();
    assert!(
        before.peak_open_watches <= 2,
        "{n} concurrent waits opened {} watches",
        before.peak_open_watches
    );

    let manager = ShutdownManager::new(Arc::new(p.clone()) as Arc<dyn Provider>);
    let t0 = Instant::now();
    let stops = vms.iter().map(|vm: &VmId| {
        let manager = &manager;
        let ctl = &ctl;
        let vmis = &vmis;
        async move {
            let report = manager
                .shutdown(vm, ShutdownPolicy::with_grace(Duration::from_secs(20)))
                .await
                .expect("shutdown");
            let reported = Instant::now();
            // Reported off: the fake virt-handler must already have made it off.
            let name = vm.to_string().rsplit('/').next().unwrap().to_owned();
            let records = ctl.stops_of(&name);
            assert_eq!(
                records.len(),
                1,
                "{vm} reported off before the guest was off"
            );
            assert!(records[0].graceful, "{records:?}");
            let vmi = vmis.get_opt(&name).await.unwrap();
            let phase = vmi
                .as_ref()
                .and_then(|v| v.status.as_ref())
                .and_then(|s| s.phase.clone());
            assert!(
                vmi.is_none() || phase.as_deref() == Some("Succeeded"),
                "{vm} reported off while its VMI is {phase:?}"
            );
            assert!(
                matches!(report.outcome, ShutdownOutcome::Graceful { .. }),
                "{vm}: {}",
                report.outcome
            );
            // how long after the guest was off the engine knew
            (report, reported.saturating_duration_since(records[0].at))
        }
    });
    let reports = futures::future::join_all(stops).await;
    let elapsed = t0.elapsed();
    let after = p.api_stats();
    let used = after - before;
    drop(_sentinel);
    let left = watches_closed(&p).await;
    let worst = reports.iter().map(|r| r.1).max().unwrap_or_default();
    eprintln!(
        "METRIC fleet graceful stop N={n} ({}): {} HTTP requests ({:.2} per stop; {} watch requests), \
         {} watch streams opened, peak {} open, {} open after, {} watch events, {} conflict retries, \
         elapsed {elapsed:?}, worst guest-off-to-report {worst:?}",
        if warm {
            "shared watch already open"
        } else {
            "cold: the first stop opens the watch"
        },
        used.requests,
        used.requests as f64 / n as f64,
        used.watch_requests,
        used.watches_opened,
        after.peak_open_watches,
        left,
        used.watch_events,
        used.conflict_retries,
    );
    assert_eq!(left, 0, "watches leaked after every stream ended");
    Some(Measured {
        used,
        peak: after.peak_open_watches,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_stops_share_one_watch_pair_per_namespace() {
    let Some(cold) = fleet_stop(1, false).await else {
        return;
    };
    let Some(one) = fleet_stop(1, true).await else {
        return;
    };
    let Some(many) = fleet_stop(20, true).await else {
        return;
    };
    for (what, m) in [("N=1 cold", &cold), ("N=1", &one), ("N=20", &many)] {
        assert!(m.peak <= 2, "{what}: peak {} open watches", m.peak);
    }
    // Cold: the stop opened the watch pair (a list and a watch request each) and, while it
    // was not listed yet, read from the wire what a warm stop reads from the watch (its power
    // state and the stop's plan, 2 requests each): never more than the per-VM watches cost.
    assert_eq!(cold.used.watches_opened, 2);
    assert_eq!(cold.used.watch_requests, 2);
    assert!(
        cold.used.requests <= STOP_BUDGET + WATCH_OPENING + 4,
        "N=1 cold: {} requests",
        cold.used.requests
    );
    // Warm: no watch opened, and each stop within the budget.
    for (n, m) in [(1u64, &one), (20, &many)] {
        assert_eq!(m.used.watches_opened, 0, "N={n}");
        assert_eq!(m.used.watch_requests, 0, "N={n}");
        assert!(
            m.used.requests <= STOP_BUDGET * n,
            "N={n}: {} requests, over {STOP_BUDGET} per stop",
            m.used.requests
        );
    }
}

/// Many subscribers of one VM and of different VMs share the watch; each gets its own
/// deduplicated sequence after its baseline, and a deleted VM ends its streams with NotFound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_of_one_and_many_vms_share_the_watch() {
    let Some(path) = kubeconfig() else {
        return;
    };
    let ns = unique_ns("fleet-subs");
    let client = client(&path).await;
    let p = provider(&path, &ns).await;
    let _ctl = FakeKubeVirt::start(client.clone(), &ns, false);
    let a = create_vm(
        &client,
        &ns,
        "a",
        "Always",
        Some(30),
        &[(GUEST_SHUTDOWN, "200")],
    )
    .await;
    let b = create_vm(&client, &ns, "b", "Halted", None, &[]).await;
    p.wait_for_power_state(&a, |s| *s == PowerState::Running, SETTLE)
        .await
        .unwrap();
    let mut a1 = p.watch_power_state(&a).await.unwrap().unwrap();
    let mut a2 = p.watch_power_state(&a).await.unwrap().unwrap();
    let mut b1 = p.watch_power_state(&b).await.unwrap().unwrap();
    assert_eq!(
        p.api_stats().open_watches,
        2,
        "three streams, one watch pair"
    );

    // a stops: both of its streams see it go off; b's sees nothing
    p.stop_with_grace(&a, Some(5)).await.unwrap();
    for s in [&mut a1, &mut a2] {
        let mut seen = Vec::new();
        let off = tokio::time::timeout(SETTLE, async {
            while let Some(st) = s.next().await {
                let st = st.unwrap();
                seen.push(st);
                if st.is_off() {
                    return;
                }
            }
        })
        .await;
        assert!(off.is_ok(), "no Off after {seen:?}");
        assert_ne!(
            seen.first(),
            Some(&PowerState::Running),
            "baseline repeated: {seen:?}"
        );
        let mut dedup = seen.clone();
        dedup.dedup();
        assert_eq!(dedup, seen, "repeated states");
    }
    // (b never ran: anything its stream hears is an Off of a settling status)
    if let Ok(Some(st)) = tokio::time::timeout(Duration::from_millis(300), b1.next()).await {
        assert!(
            st.as_ref().is_ok_and(PowerState::is_off),
            "b's stream got {st:?}"
        );
    }

    // b deleted: its stream ends with NotFound
    let vms: Api<virtrigaud_kubevirt::types::VirtualMachine> = Api::namespaced(client.clone(), &ns);
    vms.delete("b", &Default::default()).await.unwrap();
    let end = tokio::time::timeout(SETTLE, b1.next()).await.unwrap();
    assert_eq!(
        end.unwrap().unwrap_err().kind(),
        virtrigaud_core::ErrorKind::NotFound
    );
    assert!(
        tokio::time::timeout(SETTLE, b1.next())
            .await
            .unwrap()
            .is_none()
    );
    drop((a1, a2, b1));
    assert_eq!(watches_closed(&p).await, 0);
    assert!(p.api_stats().peak_open_watches <= 2);
}
