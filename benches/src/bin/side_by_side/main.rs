//! Side-by-side comparisons of virtrigaud against the tools users run today, written as a
//! Markdown report (`docs/BENCHMARKS.md`). Run through `scripts/bench.sh`.
//!
//! ```text
//! side_by_side [--smoke] [--out FILE] [--runs N] [--fleet N] [--fleet-rounds R] [--criterion DIR] [--no-libvirt]
//! side_by_side --fleet-only N [--fleet-rounds R] [--out FILE]     # comparison 2 alone (real guests)
//! ```
//!
//! `--smoke` runs every comparison at a tiny size on the simulator (and, when the libvirt
//! environment is present, one latency round and a 2-guest fleet round on real guests; with
//! feature `providers`, one 1 s guest per Proxmox / vSphere / KubeVirt backend) and checks the
//! harness's results for correctness only; it exits non-zero when the harness is broken.
// Real guests run on real time: wall-clock instants are the measurement.
#![allow(clippy::disallowed_methods)]
#![allow(missing_docs, unreachable_pub)]

mod fleet;
mod fmt;
mod plots;
#[cfg(feature = "providers")]
mod providers;
mod real;
mod report;
mod sim;

use std::time::Duration;

use virtrigaud_benches::CountingAlloc;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

#[derive(Debug)]
pub(crate) struct Args {
    smoke: bool,
    out: Option<String>,
    runs: usize,
    fleet: usize,
    criterion: Option<String>,
    libvirt: bool,
    fleet_only: Option<usize>,
    fleet_rounds: usize,
}

fn parse_args() -> Args {
    let mut a = Args {
        smoke: false,
        out: None,
        runs: 10,
        fleet: 6,
        criterion: None,
        libvirt: true,
        fleet_only: None,
        fleet_rounds: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--smoke" => a.smoke = true,
            "--out" => a.out = it.next(),
            "--runs" => a.runs = it.next().and_then(|v| v.parse().ok()).unwrap_or(10),
            "--fleet" => a.fleet = it.next().and_then(|v| v.parse().ok()).unwrap_or(6),
            "--criterion" => a.criterion = it.next(),
            "--no-libvirt" => a.libvirt = false,
            "--fleet-rounds" => {
                a.fleet_rounds = it.next().and_then(|v| v.parse().ok()).unwrap_or(1)
            }
            "--fleet-only" => a.fleet_only = it.next().and_then(|v| v.parse().ok()).or(Some(6)),
            other => {
                eprintln!("side_by_side: unknown argument {other}");
                std::process::exit(2);
            }
        }
    }
    a
}

/// API calls per graceful stop on one real provider backend.
#[derive(Debug, Clone)]
pub(crate) struct ProviderPoints {
    pub provider: &'static str,
    /// (guest shutdown time in s, virtrigaud requests, 2 s loop requests).
    pub rows: Vec<(f64, Option<u64>, Option<u64>)>,
}

/// Everything measured in one run.
#[derive(Debug, Default)]
pub(crate) struct Results {
    pub scale: Vec<sim::ScaleRow>,
    pub memory: Vec<(usize, (f64, f64, f64))>,
    /// Bytes per in-flight shutdown through `FleetShutdown`, per fleet size.
    pub memory_fleet: Vec<(usize, f64)>,
    pub caps: Vec<sim::CapRow>,
    pub deadlines: Vec<sim::DeadlineRow>,
    pub calls: Vec<sim::CallsRow>,
    pub latency: Option<Result<real::Latency, String>>,
    pub fleet: Option<Result<Vec<fleet::FleetRun>, String>>,
    pub fleet_n: usize,
    pub fleet_grace: Duration,
    pub placement: Vec<(String, f64)>,
    /// Plots written next to the report: (key, path relative to the report).
    pub plots: Vec<(&'static str, String)>,
    /// Comparison 4 on the real provider backends (feature `providers`), as Markdown.
    pub providers: Option<String>,
    /// The same, as numbers for the plot.
    pub provider_points: Vec<ProviderPoints>,
    pub wall: Duration,
}

fn check(ok: bool, what: &str, failures: &mut Vec<String>) {
    if !ok {
        eprintln!("HARNESS CHECK FAILED: {what}");
        failures.push(what.to_string());
    }
}

fn main() {
    let args = parse_args();
    if let Some(n) = args.fleet_only {
        std::process::exit(fleet::run_only(n, args.fleet_rounds, args.out.as_deref()));
    }
    let started = std::time::Instant::now();
    let mut r = Results {
        fleet_n: args.fleet,
        fleet_grace: Duration::from_secs(10),
        ..Default::default()
    };
    let (scale_sizes, mem_size, cap_size, cap, guests): (
        Vec<usize>,
        usize,
        usize,
        usize,
        Vec<u64>,
    ) = if args.smoke {
        (vec![200], 200, 100, 16, vec![1, 10])
    } else {
        (
            vec![10_000, 100_000],
            10_000,
            10_000,
            256,
            vec![1, 2, 5, 10, 30, 60, 120],
        )
    };

    eprintln!("[3] scale on the simulator");
    for &n in &scale_sizes {
        let row = sim::scale(n);
        eprintln!("  {n}: {row:?}");
        r.scale.push(row);
    }
    for n in [mem_size, *scale_sizes.last().unwrap_or(&mem_size)] {
        if r.memory.iter().any(|(m, _)| *m == n) {
            continue;
        }
        let m = sim::memory(n);
        eprintln!("  memory per in-flight shutdown at {n}: {m:?}");
        r.memory.push((n, m));
        let f = virtrigaud_benches::bytes_per_in_flight_fleet_shutdown(n);
        eprintln!("  memory per in-flight shutdown through FleetShutdown at {n}: {f:.0} B");
        r.memory_fleet.push((n, f));
    }
    r.caps.push(sim::concurrency_cap(cap_size, cap));
    r.deadlines.push(sim::overall_deadline(cap_size, cap_size));
    r.deadlines.push(sim::overall_deadline(cap_size, cap));
    eprintln!("  caps {:?}\n  deadlines {:?}", r.caps, r.deadlines);

    eprintln!("[4] API calls per graceful stop");
    for s in guests {
        let row = sim::api_calls(Duration::from_secs(s));
        eprintln!("  {row:?}");
        r.calls.push(row);
    }

    if let Some(dir) = &args.criterion {
        r.placement = report::placement(dir);
        eprintln!("[5] placement: {:?}", r.placement);
    }

    let have_libvirt = args.libvirt && std::env::var("VIRTRIGAUD_LIBVIRT_URI").is_ok();
    if have_libvirt {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            match real::Lab::connect().await {
                Ok(lab) => {
                    let runs = if args.smoke { 1 } else { args.runs };
                    eprintln!("[1] off-detection latency on real guests, {runs} rounds");
                    r.latency = Some(real::latency(&lab, runs).await);
                    if args.smoke {
                        // Two guests (ACPI after 1 s, ignoring), grace 3 s, virtrigaud only.
                        let kinds = fleet::smoke_mix();
                        r.fleet_n = kinds.len();
                        r.fleet_grace = Duration::from_secs(3);
                        eprintln!("[2] fleet smoke round: {} real guests", kinds.len());
                        r.fleet = Some(fleet::fleet(&lab, &kinds, r.fleet_grace, 1, true).await);
                    } else {
                        eprintln!("[2] fleet of {} real guests", args.fleet);
                        let kinds = fleet::mix(args.fleet);
                        r.fleet = Some(
                            fleet::fleet(&lab, &kinds, r.fleet_grace, args.fleet_rounds, false)
                                .await,
                        );
                    }
                }
                Err(e) => {
                    r.latency = Some(Err(e.clone()));
                    r.fleet = Some(Err(e));
                }
            }
        });
    } else {
        eprintln!("[1,2] libvirt environment not set: real-guest comparisons skipped");
    }
    #[cfg(feature = "providers")]
    let provider_failures = {
        eprintln!("[4] API calls per graceful stop on the Proxmox / vSphere / KubeVirt backends");
        let out = providers::run(args.smoke);
        r.providers = Some(out.markdown);
        r.provider_points = out.points;
        out.failures
    };
    #[cfg(not(feature = "providers"))]
    let provider_failures: Vec<String> = Vec::new();
    r.wall = started.elapsed();

    // Harness correctness (not timings).
    let mut failures = Vec::new();
    for f in &provider_failures {
        check(false, f, &mut failures);
    }
    for s in &r.scale {
        check(
            s.off == s.n,
            "scale: every cooperative guest ends graceful",
            &mut failures,
        );
        check(
            s.engine_us > 0.0,
            "scale: CPU time is measured",
            &mut failures,
        );
    }
    for c in &r.caps {
        check(
            c.off == c.n,
            "cap: every guest ends graceful",
            &mut failures,
        );
        check(
            c.max_in_flight <= c.cap,
            "cap: in-flight never exceeds the cap",
            &mut failures,
        );
        check(
            c.virtual_elapsed >= c.expected,
            "cap: waves take at least n/cap guest times",
            &mut failures,
        );
    }
    for d in &r.deadlines {
        check(
            d.all_off,
            "deadline: every ignoring guest ends off",
            &mut failures,
        );
        check(
            d.virtual_elapsed <= d.deadline + Duration::from_secs(35),
            "deadline: the fleet ends near its overall deadline",
            &mut failures,
        );
    }
    for c in &r.calls {
        check(c.push > 0 && c.go_loop > 0, "calls: counted", &mut failures);
    }
    for (_, (e, _, _)) in &r.memory {
        check(
            *e > 0.0,
            "memory: counted by the global allocator",
            &mut failures,
        );
    }
    if let Some(l) = &r.latency {
        match l {
            Ok(l) => {
                check(
                    !l.event.is_empty() && !l.poll.is_empty() && !l.guests.is_empty(),
                    "latency: every method measured",
                    &mut failures,
                );
                check(
                    l.errors.is_empty(),
                    "latency: every method stopped its guest gracefully",
                    &mut failures,
                );
                for e in &l.errors {
                    eprintln!("  {e}");
                }
            }
            Err(e) => check(false, &format!("latency: {e}"), &mut failures),
        }
    }
    match &r.fleet {
        Some(Err(e)) => check(false, &format!("fleet: {e}"), &mut failures),
        Some(Ok(runs)) => fleet::check(runs, &mut failures),
        None => {}
    }

    if let Some(out) = &args.out {
        let dir = std::path::Path::new(out)
            .parent()
            .unwrap_or(std::path::Path::new("."))
            .join("bench");
        match report::write_plots(&r, &dir) {
            Ok(plots) => r.plots = plots,
            Err(e) => check(false, &format!("plots: {e}"), &mut failures),
        }
        let md = report::render(&r, args.smoke);
        std::fs::write(out, md).unwrap_or_else(|e| panic!("write {out}: {e}"));
        eprintln!("report written to {out}");
    }
    if failures.is_empty() {
        eprintln!("side_by_side: harness OK ({:.1} s)", r.wall.as_secs_f64());
    } else {
        eprintln!("side_by_side: {} harness check(s) failed", failures.len());
        std::process::exit(1);
    }
}
