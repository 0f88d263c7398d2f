//! The comparisons, one module each, every one in three steps: `measure` (numbers only),
//! `check` (harness correctness, never timings) and `render` (its report section from its
//! template in `benches/templates/`). This module lists them: in the order they are measured,
//! and in the order the report shows them.
//!
//! | section | module | backend |
//! |---|---|---|
//! | 1. off-detection latency | [`latency`] | real QEMU guests (libvirt) |
//! | 2. fleet shutdown | [`fleet`] | real QEMU guests (libvirt) |
//! | 3. scale, memory, cap, deadline | [`scale`] | simulator |
//! | 4. API calls per graceful stop | [`api_calls`], `providers` | simulator; Proxmox / vSphere / KubeVirt (feature `providers`) |
//! | 5. placement throughput | [`placement`] | criterion results |

pub(crate) mod api_calls;
pub(crate) mod fleet;
pub(crate) mod latency;
pub(crate) mod placement;
#[cfg(feature = "providers")]
pub(crate) mod providers;
pub(crate) mod scale;

use std::time::{Duration, Instant};

use crate::args::Args;
use crate::checks::Failures;
use crate::lab::Lab;
use crate::report::{Plot, Report};

/// Everything measured in one run (numbers only; the prose is in the templates).
#[derive(Debug)]
pub(crate) struct Results {
    pub latency: latency::Rows,
    pub fleet: fleet::Rows,
    pub scale: scale::Rows,
    pub api_calls: api_calls::Rows,
    #[cfg(feature = "providers")]
    pub providers: Option<providers::Rows>,
    pub placement: placement::Rows,
    /// The harness's run time.
    pub wall: Duration,
}

/// Runs every comparison `args` asks for.
pub(crate) fn measure(args: &Args) -> Results {
    let started = Instant::now();
    eprintln!("[3] scale on the simulator");
    let scale = scale::measure(&scale::Sizes::new(args.smoke));
    eprintln!("[4] API calls per graceful stop");
    let api_calls = api_calls::measure(&api_calls::guest_times(args.smoke));
    let placement = args
        .criterion
        .as_deref()
        .map(placement::measure)
        .unwrap_or_default();
    if args.criterion.is_some() {
        eprintln!("[5] placement: {placement:?}");
    }
    let (latency, fleet) = real_guests(args);
    #[cfg(feature = "providers")]
    let providers = Some(providers::measure(args.smoke));
    Results {
        latency,
        fleet,
        scale,
        api_calls,
        #[cfg(feature = "providers")]
        providers,
        placement,
        wall: started.elapsed(),
    }
}

/// Comparisons 1 and 2 on real guests, when the libvirt environment is set.
fn real_guests(args: &Args) -> (latency::Rows, fleet::Rows) {
    if !args.libvirt || std::env::var("VIRTRIGAUD_LIBVIRT_URI").is_err() {
        eprintln!("[1,2] libvirt environment not set: real-guest comparisons skipped");
        return (None, fleet::Plan::not_run(args.fleet, None));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let lab = match Lab::connect().await {
            Ok(lab) => lab,
            Err(e) => {
                return (
                    Some(Err(e.clone())),
                    fleet::Plan::not_run(args.fleet, Some(e)),
                );
            }
        };
        let runs = if args.smoke { 1 } else { args.runs };
        eprintln!("[1] off-detection latency on real guests, {runs} rounds");
        let latency = Some(latency::measure(&lab, runs).await);
        let plan = fleet::Plan::new(args.smoke, args.fleet, args.fleet_rounds);
        (latency, fleet::measure(&lab, &plan).await)
    })
}

/// Every comparison's harness checks.
pub(crate) fn check(r: &Results) -> Vec<String> {
    let mut f = Failures::default();
    #[cfg(feature = "providers")]
    if let Some(p) = &r.providers {
        f.extend(providers::check(p));
    }
    f.extend(scale::check(&r.scale));
    f.extend(api_calls::check(&r.api_calls));
    f.extend(latency::check(&r.latency));
    f.extend(fleet::check(&r.fleet));
    f.into_vec()
}

/// Writes every comparison's plots under `dir`.
pub(crate) fn plots(r: &Results, dir: &std::path::Path) -> Result<Vec<Plot>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut out = api_calls::plots(&r.api_calls, dir)?;
    #[cfg(feature = "providers")]
    if let Some(p) = &r.providers {
        out.extend(providers::plots(p, dir)?);
    }
    out.extend(fleet::plots(&r.fleet, dir)?);
    out.extend(latency::plots(&r.latency, dir)?);
    Ok(out)
}

/// Whether the real provider backends were measured.
fn have_providers(r: &Results) -> bool {
    #[cfg(feature = "providers")]
    return r.providers.is_some();
    #[cfg(not(feature = "providers"))]
    {
        let _ = r;
        false
    }
}

/// The whole report: header, sections 1-5, shortfalls.
pub(crate) fn render(
    r: &Results,
    smoke: bool,
    machine: &[(String, String)],
    plots: Vec<Plot>,
) -> String {
    let mut out = Report::new(plots);
    out.header(smoke, r.wall.as_secs_f64(), machine);
    latency::render(&r.latency, &mut out);
    fleet::render(&r.fleet, smoke, &mut out);
    out.plot(
        "fleet",
        "Fleet shutdown timeline: each guest from the start to its stop event, first run of each method",
    );
    scale::render(&r.scale, &mut out);
    api_calls::render(&r.api_calls, &mut out);
    latency::render_real_calls(&r.latency, &mut out);
    #[cfg(feature = "providers")]
    if let Some(p) = &r.providers {
        providers::render(p, &mut out);
        out.plot(
            "api_calls_providers",
            "Wire requests per graceful stop on Proxmox, vSphere and KubeVirt",
        );
    }
    if !have_providers(r) {
        api_calls::render_no_providers(&mut out);
    }
    out.plot(
        "api_calls",
        "Provider calls per graceful stop against guest shutdown time (simulator)",
    );
    placement::render(&r.placement, &mut out);
    shortfalls(r, &mut out);
    out.finish()
}

/// The shortfalls and caveats (in the order the report has always listed them).
fn shortfalls(r: &Results, out: &mut Report) {
    out.shortfalls_heading(false);
    scale::shortfalls(&r.scale, out);
    fleet::shortfalls(&r.fleet, out);
    scale::caveat_cpu(out);
    latency::shortfalls(&r.latency, out);
    if !have_providers(r) {
        api_calls::shortfalls_no_providers(out);
    }
    scale::caveat_deadline(out);
}
