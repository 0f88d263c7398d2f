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
//!
//! The layout: [`comparisons`] has one module per comparison (measure → check → render) and
//! lists them; their prose is in `benches/templates/*.md`, filled by [`template`]; [`report`]
//! collects the sections; [`fmt`] formats numbers; [`lab`] is the real libvirt backend;
//! [`plots`] draws the SVG figures.
// Real guests run on real time: wall-clock instants are the measurement.
#![allow(clippy::disallowed_methods)]
#![allow(missing_docs, unreachable_pub)]

mod args;
mod checks;
mod comparisons;
mod fmt;
mod lab;
mod machine;
mod plots;
mod report;
mod template;
#[cfg(test)]
mod tests;

use virtrigaud_benches::CountingAlloc;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

fn main() {
    let args = args::parse();
    if let Some(n) = args.fleet_only {
        std::process::exit(comparisons::fleet::run_only(
            n,
            args.fleet_rounds,
            args.out.as_deref(),
        ));
    }
    let results = comparisons::measure(&args);
    let mut failures = comparisons::check(&results);
    if let Some(out) = &args.out {
        let dir = std::path::Path::new(out)
            .parent()
            .unwrap_or(std::path::Path::new("."))
            .join("bench");
        let plots = comparisons::plots(&results, &dir).unwrap_or_else(|e| {
            failures.push(format!("plots: {e}"));
            Vec::new()
        });
        let md = comparisons::render(&results, args.smoke, &machine::machine(), plots);
        std::fs::write(out, md).unwrap_or_else(|e| panic!("write {out}: {e}"));
        eprintln!("report written to {out}");
    }
    for f in &failures {
        eprintln!("HARNESS CHECK FAILED: {f}");
    }
    if failures.is_empty() {
        eprintln!(
            "side_by_side: harness OK ({:.1} s)",
            results.wall.as_secs_f64()
        );
    } else {
        eprintln!("side_by_side: {} harness check(s) failed", failures.len());
        std::process::exit(1);
    }
}
