//! Comparison 3: the engine at scale on the simulator — library CPU per VM, heap bytes per
//! in-flight shutdown, the concurrency cap and the overall deadline.

mod sim;

use std::time::Duration;

pub(crate) use sim::{CapRow, DeadlineRow, MemoryRow, ScaleRow};

use crate::checks::Failures;
use crate::fmt::met;
use crate::report::Report;
use crate::template::Template;

/// The section's prose.
const T: Template = Template::new("scale", include_str!("../../../../../templates/scale.md"));

/// The sizes measured.
#[derive(Debug, Clone)]
pub(crate) struct Sizes {
    /// Fleet sizes for the CPU measurement.
    pub scale: Vec<usize>,
    /// Fleet size for the memory measurement (also measured at the largest scale size).
    pub memory: usize,
    /// Fleet size of the cap and deadline runs.
    pub cap_fleet: usize,
    /// The concurrency cap.
    pub cap: usize,
}

impl Sizes {
    /// Tiny sizes for `--smoke`, else the report's.
    pub(crate) fn new(smoke: bool) -> Self {
        if smoke {
            Sizes {
                scale: vec![200],
                memory: 200,
                cap_fleet: 100,
                cap: 16,
            }
        } else {
            Sizes {
                scale: vec![10_000, 100_000],
                memory: 10_000,
                cap_fleet: 10_000,
                cap: 256,
            }
        }
    }
}

/// Everything section 3 measured.
#[derive(Debug, Clone, Default)]
pub(crate) struct Rows {
    pub scale: Vec<ScaleRow>,
    pub memory: Vec<MemoryRow>,
    pub caps: Vec<CapRow>,
    pub deadlines: Vec<DeadlineRow>,
}

impl Rows {
    /// The largest engine total per in-flight shutdown (alone or through `FleetShutdown`).
    fn worst_memory(&self) -> f64 {
        self.memory
            .iter()
            .flat_map(|m| std::iter::once(m.engine_push).chain(m.fleet))
            .fold(0.0, f64::max)
    }
}

/// Runs the simulator measurements at `sizes`.
pub(crate) fn measure(sizes: &Sizes) -> Rows {
    let mut r = Rows::default();
    for &n in &sizes.scale {
        let row = sim::scale(n);
        eprintln!("  {n}: {row:?}");
        r.scale.push(row);
    }
    for n in [sizes.memory, *sizes.scale.last().unwrap_or(&sizes.memory)] {
        if r.memory.iter().any(|m| m.n == n) {
            continue;
        }
        let m = sim::memory(n);
        eprintln!("  memory per in-flight shutdown at {n}: {m:?}");
        r.memory.push(m);
    }
    let (n, cap) = (sizes.cap_fleet, sizes.cap);
    r.caps.push(sim::concurrency_cap(n, cap));
    r.deadlines.push(sim::overall_deadline(n, n));
    r.deadlines.push(sim::overall_deadline(n, cap));
    eprintln!("  caps {:?}\n  deadlines {:?}", r.caps, r.deadlines);
    r
}

/// Harness checks: every guest ends as it should, the cap holds, CPU and memory are counted.
pub(crate) fn check(r: &Rows) -> Failures {
    let mut f = Failures::default();
    for s in &r.scale {
        f.expect(s.off == s.n, "scale: every cooperative guest ends graceful");
        f.expect(s.engine_us > 0.0, "scale: CPU time is measured");
    }
    for c in &r.caps {
        f.expect(c.off == c.n, "cap: every guest ends graceful");
        f.expect(
            c.max_in_flight <= c.cap,
            "cap: in-flight never exceeds the cap",
        );
        f.expect(
            c.virtual_elapsed >= c.expected,
            "cap: waves take at least n/cap guest times",
        );
    }
    for d in &r.deadlines {
        f.expect(d.all_off, "deadline: every ignoring guest ends off");
        f.expect(
            d.virtual_elapsed <= d.deadline + Duration::from_secs(35),
            "deadline: the fleet ends near its overall deadline",
        );
    }
    for m in &r.memory {
        f.expect(
            m.engine_push > 0.0,
            "memory: counted by the global allocator",
        );
    }
    f
}

/// Section 3.
pub(crate) fn render(r: &Rows, out: &mut Report) {
    out.fill(&T, "intro", &[]);
    for s in &r.scale {
        out.fill(
            &T,
            "scale_row",
            &[
                ("n", &s.n),
                ("setup", &format!("{:.1}", s.setup_us)),
                ("engine", &format!("{:.1}", s.engine_us)),
                ("bare", &format!("{:.1}", s.bare_us)),
                ("library", &format!("{:.1}", s.library_us())),
                ("off", &s.off),
                (
                    "simulated",
                    &format!("{:.1}", s.virtual_elapsed.as_secs_f64()),
                ),
            ],
        );
    }
    render_memory(r, out);
    render_targets(r, out);
    out.fill(&T, "caps", &[]);
    for c in &r.caps {
        out.fill(
            &T,
            "cap_row",
            &[
                ("n", &c.n),
                ("cap", &c.cap),
                ("off", &c.off),
                (
                    "simulated",
                    &format!("{:.1}", c.virtual_elapsed.as_secs_f64()),
                ),
                ("expected", &format!("{:.0}", c.expected.as_secs_f64())),
                ("max_in_flight", &c.max_in_flight),
            ],
        );
    }
    out.fill(&T, "deadlines", &[]);
    for d in &r.deadlines {
        out.fill(
            &T,
            "deadline_row",
            &[
                ("n", &d.n),
                ("cap", &d.cap),
                (
                    "simulated",
                    &format!("{:.1}", d.virtual_elapsed.as_secs_f64()),
                ),
                ("latest", &format!("{:.1}", d.latest_forced.as_secs_f64())),
                ("counts", &d.counts),
                ("all_off", &d.all_off),
            ],
        );
    }
}

fn render_memory(r: &Rows, out: &mut Report) {
    out.fill(&T, "memory", &[]);
    for m in &r.memory {
        let fleet = match m.fleet {
            Some(f) => T.fill_phrase("fleet_bytes", &[("bytes", &format!("{f:.0}"))]),
            None => "—".to_string(),
        };
        out.fill(
            &T,
            "memory_row",
            &[
                ("n", &m.n),
                ("push", &format!("{:.0}", m.engine_push)),
                ("poll", &format!("{:.0}", m.engine_poll)),
                ("fleet", &fleet),
                ("bare", &format!("{:.0}", m.bare)),
                ("own", &format!("{:.0}", m.engine_push - m.bare)),
            ],
        );
    }
}

fn render_targets(r: &Rows, out: &mut Report) {
    let lib = r.scale.iter().map(|s| s.library_us()).fold(0.0, f64::max);
    let mem = r.worst_memory();
    let own = r
        .memory
        .iter()
        .map(|m| m.engine_push - m.bare)
        .fold(0.0, f64::max);
    let own_verdict = T.phrase(if own <= 2048.0 {
        "own_met"
    } else {
        "own_not_met"
    });
    out.fill(
        &T,
        "targets",
        &[
            ("library", &format!("{lib:.1}")),
            ("library_verdict", &met(lib <= 20.0)),
            ("memory", &format!("{mem:.0}")),
            ("memory_verdict", &met(mem <= 2048.0)),
            ("own", &format!("{own:.0}")),
            ("own_verdict", &own_verdict),
        ],
    );
}

/// The memory caveat (first in the list).
pub(crate) fn shortfalls(r: &Rows, out: &mut Report) {
    let mem = r.worst_memory();
    let bare = r.memory.iter().map(|m| m.bare).fold(0.0, f64::max);
    let above = if mem > 2048.0 {
        T.phrase("above_target")
    } else {
        ""
    };
    out.fill(
        &T,
        "shortfall_memory",
        &[
            ("above", &above),
            ("memory", &format!("{mem:.0}")),
            ("bare", &format!("{bare:.0}")),
        ],
    );
}

/// The caveat on library CPU (measured by subtraction).
pub(crate) fn caveat_cpu(out: &mut Report) {
    out.fill(&T, "shortfall_cpu", &[]);
}

/// The caveat on the overall deadline (the force budget).
pub(crate) fn caveat_deadline(out: &mut Report) {
    out.fill(&T, "shortfall_deadline", &[]);
}
