//! Comparison 1: off-detection latency on real QEMU guests. Each round stops three ACPI guests
//! one after the other: virtrigaud (event-driven), the same engine polling every 2 s, and
//! Debian's `libvirt-guests`; each stop is measured from the request and from libvirt's own
//! stop event.

use std::sync::Arc;
use std::time::{Duration, Instant};

use virtrigaud_core::shutdown::{ShutdownManager, ShutdownOutcome, ShutdownPolicy};
use virtrigaud_core::{PowerState, Provider, VmId};

use crate::checks::Failures;
use crate::fmt::{self, opt_ms, ratio};
use crate::lab::Lab;
use crate::plots::{Series, strips_log_ms};
use crate::report::{Plot, Report};
use crate::template::Template;

/// The section's prose.
const T: Template = Template::new("latency", include_str!("../../../../templates/latency.md"));

/// One shutdown measured: total (request → reported off), detection (stop event → reported
/// off), libvirt API calls.
#[derive(Debug, Clone, Default)]
pub(crate) struct Sample {
    pub total: Duration,
    pub detect: Option<Duration>,
    pub calls: Option<u64>,
}

/// Samples of the three methods.
#[derive(Debug, Clone, Default)]
pub(crate) struct Latency {
    pub event: Vec<Sample>,
    pub poll: Vec<Sample>,
    pub guests: Vec<Sample>,
    /// Stops that did not end as expected (a guest forced, or left on).
    pub errors: Vec<String>,
}

impl Latency {
    /// The three methods with their report labels.
    fn methods(&self) -> [(&'static str, &[Sample]); 3] {
        [
            ("virtrigaud (events)", &self.event),
            ("2 s polling", &self.poll),
            ("libvirt-guests", &self.guests),
        ]
    }
}

/// What section 1 holds: `None` when the libvirt environment was not set.
pub(crate) type Rows = Option<Result<Latency, String>>;

/// The method that stops guest `m` of a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Events,
    Polling,
    LibvirtGuests,
}

/// Off-detection latency: `runs` rounds, each stopping three ACPI guests one after the other.
pub(crate) async fn measure(lab: &Lab, runs: usize) -> Result<Latency, String> {
    let mut vms = Vec::new();
    for n in ["lat-ev", "lat-poll", "lat-lg"] {
        vms.push(lab.create(n, "acpi").await?);
    }
    let mut out = Latency::default();
    let methods = [Method::Events, Method::Polling, Method::LibvirtGuests];
    let res = async {
        for round in 0..runs {
            lab.boot(&vms).await?;
            // Rotate the order so no method always runs first.
            for k in 0..3 {
                let m = (k + round) % 3;
                stop_one(lab, &vms[m], methods[m], &mut out).await?;
            }
            eprintln!("  latency round {}/{runs} done", round + 1);
        }
        Ok::<(), String>(())
    }
    .await;
    lab.remove(&vms).await;
    res.map(|()| out)
}

/// Stops `vm` with `method` and records its sample.
async fn stop_one(lab: &Lab, vm: &VmId, method: Method, out: &mut Latency) -> Result<(), String> {
    let t0 = Instant::now();
    if method == Method::LibvirtGuests {
        let (start, end, text, _code) =
            tokio::task::block_in_place(|| lab.libvirt_guests(std::slice::from_ref(vm), 0, 60))?;
        if !matches!(lab.provider().power_state(vm).await, Ok(PowerState::Off(_))) {
            out.errors
                .push(format!("libvirt-guests left {vm} on:\n{text}"));
        }
        out.guests.push(Sample {
            total: end - start,
            detect: lab
                .stop_event_after(vm, t0)
                .map(|s| end.saturating_duration_since(s)),
            calls: None,
        });
        return Ok(());
    }
    let grace = ShutdownPolicy::with_grace(Duration::from_secs(60));
    let two = Duration::from_secs(2);
    let (p, policy) = match method {
        Method::Events => (lab.provider(), grace),
        _ => (lab.polling_provider(), grace.polling(two, two)),
    };
    let c0 = p.api_calls();
    let r = ShutdownManager::new(Arc::new(p.clone()) as Arc<dyn Provider>)
        .shutdown(vm, policy)
        .await
        .map_err(|e| e.to_string())?;
    let done = Instant::now();
    let calls = p.api_calls() - c0;
    if !matches!(r.outcome, ShutdownOutcome::Graceful { .. }) {
        out.errors.push(format!("{vm}: {}", r.outcome));
    }
    // The event callback may land a moment after the poll saw Off.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let s = Sample {
        total: done - t0,
        detect: lab
            .stop_event_after(vm, t0)
            .map(|s| done.saturating_duration_since(s)),
        calls: Some(calls),
    };
    if method == Method::Events {
        out.event.push(s);
    } else {
        out.poll.push(s);
    }
    Ok(())
}

/// Harness checks: every method measured, every stop graceful.
pub(crate) fn check(rows: &Rows) -> Failures {
    let mut f = Failures::default();
    match rows {
        None => {}
        Some(Err(e)) => f.fail(format!("latency: {e}")),
        Some(Ok(l)) => {
            f.expect(
                !l.event.is_empty() && !l.poll.is_empty() && !l.guests.is_empty(),
                "latency: every method measured",
            );
            f.expect(
                l.errors.is_empty(),
                "latency: every method stopped its guest gracefully",
            );
            for e in &l.errors {
                eprintln!("  {e}");
            }
        }
    }
    f
}

/// The latency percentiles of one method's samples.
fn stats(s: &[Sample]) -> fmt::Stats {
    let total: Vec<_> = s.iter().map(|x| x.total).collect();
    let det: Vec<_> = s.iter().filter_map(|x| x.detect).collect();
    fmt::stats(&total, &det)
}

/// Median, min and max of the samples' call counts.
fn calls(s: &[Sample]) -> Option<(u64, u64, u64)> {
    let mut c: Vec<u64> = s.iter().filter_map(|x| x.calls).collect();
    c.sort();
    Some((*c.get(c.len() / 2)?, c[0], c[c.len() - 1]))
}

/// Section 1.
pub(crate) fn render(rows: &Rows, r: &mut Report) {
    r.fill(&T, "intro", &[]);
    let l = match rows {
        None => return r.fill(&T, "not_run", &[]),
        Some(Err(e)) => return r.fill(&T, "failed", &[("error", e)]),
        Some(Ok(l)) => l,
    };
    r.fill(&T, "table", &[]);
    for (method, s) in l.methods() {
        let st = stats(s);
        let calls = match calls(s) {
            None => T.phrase("calls_na").to_string(),
            Some((median, min, max)) => T.fill_phrase(
                "calls",
                &[("median", &median), ("min", &min), ("max", &max)],
            ),
        };
        r.fill(
            &T,
            "row",
            &[
                ("method", &method),
                ("runs", &s.len()),
                ("detected", &st.detected),
                ("total_p50", &opt_ms(st.total_p50)),
                ("total_p99", &opt_ms(st.total_p99)),
                ("detect_p50", &opt_ms(st.detect_p50)),
                ("detect_p99", &opt_ms(st.detect_p99)),
                ("calls", &calls),
            ],
        );
    }
    let (ev, p, g) = (stats(&l.event), stats(&l.poll), stats(&l.guests));
    let ok = ev.detect_p99.is_some_and(|d| d < Duration::from_millis(50));
    r.fill(
        &T,
        "ratios",
        &[
            ("poll_p99", &ratio(ev.detect_p99, p.detect_p99)),
            ("guests_p99", &ratio(ev.detect_p99, g.detect_p99)),
            ("poll_p50", &ratio(ev.detect_p50, p.detect_p50)),
            ("guests_p50", &ratio(ev.detect_p50, g.detect_p50)),
            ("poll_total", &ratio(ev.total_p50, p.total_p50)),
            ("guests_total", &ratio(ev.total_p50, g.total_p50)),
            ("p99", &opt_ms(ev.detect_p99)),
            ("verdict", &fmt::met(ok)),
        ],
    );
    r.plot(
        "latency",
        "Off-detection beyond libvirt's stop event, every run",
    );
    for e in &l.errors {
        r.fill(&T, "note", &[("note", &e.replace('\n', " "))]);
    }
}

/// Section 4's paragraph on the real libvirt backend (the call counts of section 1's stops).
pub(crate) fn render_real_calls(rows: &Rows, r: &mut Report) {
    let Some(Ok(l)) = rows else { return };
    let med = |s: &[Sample]| {
        calls(s)
            .map(|c| c.0.to_string())
            .unwrap_or_else(|| "n/a".into())
    };
    r.fill(
        &T,
        "real_calls",
        &[
            ("event", &med(&l.event)),
            ("poll", &med(&l.poll)),
            ("own", &opt_ms(stats(&l.event).total_p50)),
        ],
    );
}

/// The section's caveat (always listed).
pub(crate) fn shortfalls(_rows: &Rows, r: &mut Report) {
    r.fill(&T, "shortfall", &[]);
}

/// The strip plot of every run's detection time.
pub(crate) fn plots(rows: &Rows, dir: &std::path::Path) -> Result<Vec<Plot>, String> {
    let Some(Ok(l)) = rows else {
        return Ok(Vec::new());
    };
    let groups = l.methods().map(|(name, v)| Series {
        name: name.into(),
        points: v
            .iter()
            .filter_map(|s| s.detect)
            .map(|d| (d.as_secs_f64() * 1e3, 0.0))
            .collect(),
    });
    if !groups.iter().any(|g| !g.points.is_empty()) {
        return Ok(Vec::new());
    }
    strips_log_ms(
        &dir.join("latency.svg"),
        "Reported off, after libvirt's own stop event",
        "milliseconds (log scale)",
        &groups,
    )?;
    Ok(vec![("latency", "bench/latency.svg".to_string())])
}
