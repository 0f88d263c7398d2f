//! The simulator measurements of comparison 3 (paused tokio clock): CPU per VM at scale, heap
//! bytes per in-flight shutdown, the concurrency cap and the overall deadline.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use virtrigaud_benches::{fleet, live_bytes, paused_runtime};
use virtrigaud_core::provider::ShutdownRequestOptions;
use virtrigaud_core::shutdown::{FleetShutdown, ShutdownManager, ShutdownPolicy};
use virtrigaud_core::sim::{GuestBehavior, Simulator};
use virtrigaud_core::{PowerState, Provider, ShutdownChannel, VmId};

/// CPU time consumed so far by the calling thread (ns), `CLOCK_THREAD_CPUTIME_ID`. The
/// simulator runs on a current-thread runtime, so this is all the work measured.
#[allow(unsafe_code)]
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant the kernel knows.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// One scale measurement.
#[derive(Debug, Clone)]
pub(crate) struct ScaleRow {
    pub n: usize,
    /// CPU to build the simulated fleet (not the library), per VM.
    pub setup_us: f64,
    /// CPU of the engine's fleet shutdown (engine + simulator calls), per VM.
    pub engine_us: f64,
    /// CPU of a bare driver making the minimum calls (one ACPI request + one watch), per VM:
    /// the simulator's own cost of a graceful stop.
    pub bare_us: f64,
    /// Graceful outcomes.
    pub off: usize,
    /// Simulated (paused-clock) time of the fleet shutdown.
    pub virtual_elapsed: Duration,
}

impl ScaleRow {
    /// Library CPU per VM: engine minus the bare driver.
    pub(crate) fn library_us(&self) -> f64 {
        (self.engine_us - self.bare_us).max(0.0)
    }
}

/// Shuts down `n` cooperative guests (5 s each), all in flight, with the engine; then the
/// same with a bare driver, on a fresh fleet each.
pub(crate) fn scale(n: usize) -> ScaleRow {
    let guest = Duration::from_secs(5);
    let rt = paused_runtime();
    rt.block_on(async move {
        let c0 = thread_cpu_ns();
        let (sim, vms) = fleet(n, GuestBehavior::cooperative().acpi_after(guest), true);
        let setup = thread_cpu_ns() - c0;
        let manager = ShutdownManager::new(Arc::new(sim.clone()));
        let t0 = tokio::time::Instant::now();
        let c1 = thread_cpu_ns();
        let report = FleetShutdown::new(&manager)
            .concurrency(n)
            .group(vms, ShutdownPolicy::with_grace(Duration::from_secs(60)))
            .run()
            .await;
        let engine = thread_cpu_ns() - c1;
        let virtual_elapsed = t0.elapsed();
        let off = report.counts().get("graceful").copied().unwrap_or(0);
        drop(report);
        drop(manager);
        drop(sim);

        let (sim, vms) = fleet(n, GuestBehavior::cooperative().acpi_after(guest), true);
        let c2 = thread_cpu_ns();
        let bare_off = bare_driver(&sim, &vms).await;
        let bare = thread_cpu_ns() - c2;
        assert_eq!(bare_off, n, "bare driver: every guest must end off");
        let per = |ns: u64| ns as f64 / 1e3 / n as f64;
        ScaleRow {
            n,
            setup_us: per(setup),
            engine_us: per(engine),
            bare_us: per(bare),
            off,
            virtual_elapsed,
        }
    })
}

/// The least any event-driven driver must do: one ACPI request and one watch per VM.
async fn bare_driver(sim: &Simulator, vms: &[VmId]) -> usize {
    let tasks: Vec<_> = vms
        .iter()
        .map(|vm| {
            let sim = sim.clone();
            let vm = vm.clone();
            tokio::spawn(async move { bare_one(&sim, &vm).await })
        })
        .collect();
    let mut off = 0;
    for t in tasks {
        if t.await.unwrap_or(false) {
            off += 1;
        }
    }
    off
}

async fn bare_one(sim: &Simulator, vm: &VmId) -> bool {
    let Ok(Some(mut stream)) = sim.watch_power_state(vm).await else {
        return false;
    };
    if sim
        .request_shutdown(
            vm,
            ShutdownChannel::Acpi,
            &ShutdownRequestOptions::new(1, Duration::from_secs(60)),
        )
        .await
        .is_err()
    {
        return false;
    }
    while let Some(s) = stream.next().await {
        if matches!(s, Ok(PowerState::Off(_))) {
            return true;
        }
    }
    false
}

/// Heap bytes per in-flight shutdown at one fleet size.
#[derive(Debug, Clone)]
pub(crate) struct MemoryRow {
    pub n: usize,
    /// `ShutdownManager::start` per VM, push-capable simulator.
    pub engine_push: f64,
    /// The same, polling-only simulator.
    pub engine_poll: f64,
    /// Through one `FleetShutdown` (cap = fleet size), when measured.
    pub fleet: Option<f64>,
    /// A bare driver (one watch + one request per VM): the simulator's share.
    pub bare: f64,
}

/// Heap bytes per in-flight shutdown: the engine (via the shared helpers, alone and through
/// `FleetShutdown`) and a bare driver (one watch + one request per VM, the simulator's share).
pub(crate) fn memory(n: usize) -> MemoryRow {
    let engine_push = virtrigaud_benches::bytes_per_in_flight_shutdown_with(n, true);
    let engine_poll = virtrigaud_benches::bytes_per_in_flight_shutdown_with(n, false);
    let rt = paused_runtime();
    let bare = rt.block_on(async move {
        let (sim, vms) = fleet(n, GuestBehavior::ignores_acpi().hide_shutting_down(), true);
        let before = live_bytes();
        let tasks: Vec<_> = vms
            .iter()
            .map(|vm| {
                let sim = sim.clone();
                let vm = vm.clone();
                tokio::spawn(async move { bare_one(&sim, &vm).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_secs(10)).await;
        let after = live_bytes();
        for t in &tasks {
            t.abort();
        }
        (after - before) as f64 / n as f64
    });
    let fleet = virtrigaud_benches::bytes_per_in_flight_fleet_shutdown(n);
    MemoryRow {
        n,
        engine_push,
        engine_poll,
        fleet: Some(fleet),
        bare,
    }
}

/// The concurrency cap: `n` guests of 5 s with at most `cap` in flight.
#[derive(Debug, Clone)]
pub(crate) struct CapRow {
    pub n: usize,
    pub cap: usize,
    pub off: usize,
    pub virtual_elapsed: Duration,
    /// `ceil(n / cap) * 5 s`: what a cap that is honoured exactly gives.
    pub expected: Duration,
    pub max_in_flight: usize,
}

/// Runs `n` guests of 5 s through `FleetShutdown` with concurrency `cap`.
pub(crate) fn concurrency_cap(n: usize, cap: usize) -> CapRow {
    let guest = Duration::from_secs(5);
    let rt = paused_runtime();
    rt.block_on(async move {
        let (sim, vms) = fleet(n, GuestBehavior::cooperative().acpi_after(guest), true);
        let manager = ShutdownManager::new(Arc::new(sim.clone()));
        // Sample how many guests have been signalled but are not yet off, once per simulated
        // second, while the fleet runs.
        let sampler = {
            let sim = sim.clone();
            let vms = vms.clone();
            tokio::spawn(async move {
                let mut max = 0;
                loop {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    let in_flight = vms
                        .iter()
                        .filter(|vm| {
                            sim.signals_received(vm) > 0
                                && !matches!(sim.true_state(vm), Some(PowerState::Off(_)))
                        })
                        .count();
                    max = max.max(in_flight);
                    if vms
                        .iter()
                        .all(|vm| matches!(sim.true_state(vm), Some(PowerState::Off(_))))
                    {
                        return max;
                    }
                }
            })
        };
        let t0 = tokio::time::Instant::now();
        let report = FleetShutdown::new(&manager)
            .concurrency(cap)
            .group(vms, ShutdownPolicy::with_grace(Duration::from_secs(60)))
            .run()
            .await;
        let virtual_elapsed = t0.elapsed();
        let max_in_flight = sampler.await.unwrap_or(0);
        CapRow {
            n,
            cap,
            off: report.counts().get("graceful").copied().unwrap_or(0),
            virtual_elapsed,
            expected: guest * n.div_ceil(cap) as u32,
            max_in_flight,
        }
    })
}

/// The overall deadline: `n` guests that ignore ACPI, 600 s grace each, a 30 s fleet deadline.
#[derive(Debug, Clone)]
pub(crate) struct DeadlineRow {
    pub n: usize,
    pub cap: usize,
    pub deadline: Duration,
    pub virtual_elapsed: Duration,
    pub counts: String,
    pub all_off: bool,
    pub latest_forced: Duration,
}

/// Runs `n` ignoring guests through `FleetShutdown` with concurrency `cap` and a 30 s deadline.
pub(crate) fn overall_deadline(n: usize, cap: usize) -> DeadlineRow {
    let deadline = Duration::from_secs(30);
    let rt = paused_runtime();
    rt.block_on(async move {
        let (sim, vms) = fleet(n, GuestBehavior::ignores_acpi(), true);
        let manager = ShutdownManager::new(Arc::new(sim));
        let t0 = tokio::time::Instant::now();
        let report = FleetShutdown::new(&manager)
            .concurrency(cap)
            .deadline(deadline)
            .group(vms, ShutdownPolicy::with_grace(Duration::from_secs(600)))
            .run()
            .await;
        let virtual_elapsed = t0.elapsed();
        let latest_forced = report
            .entries
            .iter()
            .filter_map(|e| e.report.as_ref().ok().map(|r| r.elapsed))
            .max()
            .unwrap_or_default();
        DeadlineRow {
            n,
            cap,
            deadline,
            virtual_elapsed,
            counts: format!("{:?}", report.counts()),
            all_off: report.all_off(),
            latest_forced,
        }
    })
}
