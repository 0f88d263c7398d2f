//! Shared helpers for virtrigaud's benchmarks: fleet scenarios on the simulator and an
//! allocation counter to measure memory per in-flight shutdown.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Duration;

use virtrigaud_core::VmId;
use virtrigaud_core::shutdown::{FleetShutdown, ShutdownManager, ShutdownPolicy};
use virtrigaud_core::sim::{GuestBehavior, Simulator};

/// A global allocator wrapper that tracks live heap bytes.
#[derive(Debug)]
pub struct CountingAlloc;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// Forwards every call to the system allocator and only counts bytes.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Live heap bytes (when [`CountingAlloc`] is the global allocator).
pub fn live_bytes() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// A current-thread runtime on tokio's paused clock (simulated time).
pub fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime")
}

/// A simulator with `n` running VMs of `behavior`.
pub fn fleet(n: usize, behavior: GuestBehavior, push: bool) -> (Simulator, Vec<VmId>) {
    let sim = if push {
        Simulator::new()
    } else {
        Simulator::polling_only()
    };
    let vms = (0..n)
        .map(|i| sim.add_vm(&format!("vm-{i}"), behavior.clone()))
        .collect();
    (sim, vms)
}

/// Shuts a fleet down (all in flight at once) on a paused clock; returns how many ended off.
pub fn shut_down_fleet(n: usize, guest: Duration, concurrency: usize) -> usize {
    let rt = paused_runtime();
    rt.block_on(async move {
        let (sim, vms) = fleet(n, GuestBehavior::cooperative().acpi_after(guest), true);
        let manager = ShutdownManager::new(Arc::new(sim));
        let report = FleetShutdown::new(&manager)
            .concurrency(concurrency)
            .group(vms, ShutdownPolicy::with_grace(Duration::from_secs(60)))
            .run()
            .await;
        report
            .entries
            .iter()
            .filter(|e| e.report.as_ref().is_ok_and(|r| r.outcome.is_off()))
            .count()
    })
}

/// API calls one graceful shutdown makes against the simulator when the guest needs
/// `guest` to stop, with a push-capable or a polling-only provider.
pub fn calls_per_graceful_shutdown(guest: Duration, push: bool) -> u64 {
    let rt = paused_runtime();
    rt.block_on(async move {
        let (sim, vms) = fleet(1, GuestBehavior::cooperative().acpi_after(guest), push);
        let manager = ShutdownManager::new(Arc::new(sim.clone()));
        let policy = ShutdownPolicy::with_grace(guest + Duration::from_secs(60));
        let _ = manager.shutdown(&vms[0], policy).await;
        sim.total_calls()
    })
}

/// Heap bytes per in-flight shutdown: starts `n` shutdowns of guests that ignore them (so all
/// stay in flight) and measures the live-heap growth once they are all waiting.
pub fn bytes_per_in_flight_shutdown(n: usize) -> f64 {
    bytes_per_in_flight_shutdown_with(n, true)
}

/// [`bytes_per_in_flight_shutdown`] with a push-capable (`true`) or polling-only simulator.
pub fn bytes_per_in_flight_shutdown_with(n: usize, push: bool) -> f64 {
    let rt = paused_runtime();
    rt.block_on(async move {
        let (sim, vms) = fleet(n, GuestBehavior::ignores_acpi().hide_shutting_down(), push);
        let manager = ShutdownManager::new(Arc::new(sim));
        let before = live_bytes();
        let handles: Vec<_> = vms
            .iter()
            .map(|vm| {
                manager
                    .start(vm, ShutdownPolicy::with_grace(Duration::from_secs(600)))
                    .expect("start")
            })
            .collect();
        // Let every shutdown reach its waiting state.
        tokio::time::sleep(Duration::from_secs(10)).await;
        let after = live_bytes();
        drop(handles);
        (after - before) as f64 / n as f64
    })
}

/// Heap bytes per in-flight shutdown when the fleet runs through [`FleetShutdown`] (all `n`
/// in flight, each waiting on a guest that ignores the request), including the fleet's own
/// per-VM future and result slot.
pub fn bytes_per_in_flight_fleet_shutdown(n: usize) -> f64 {
    let rt = paused_runtime();
    rt.block_on(async move {
        let (sim, vms) = fleet(n, GuestBehavior::ignores_acpi().hide_shutting_down(), true);
        let manager = Arc::new(ShutdownManager::new(Arc::new(sim)));
        let before = live_bytes();
        let runner = {
            let manager = Arc::clone(&manager);
            tokio::spawn(async move {
                FleetShutdown::new(&manager)
                    .concurrency(n)
                    .group(vms, ShutdownPolicy::with_grace(Duration::from_secs(600)))
                    .run()
                    .await
            })
        };
        // Let every shutdown reach its waiting state.
        tokio::time::sleep(Duration::from_secs(10)).await;
        let after = live_bytes();
        runner.abort();
        (after - before) as f64 / n as f64
    })
}
