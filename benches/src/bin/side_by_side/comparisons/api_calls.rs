//! Comparison 4 on the simulator: provider calls per graceful stop against the guest's own
//! shutdown time — the engine with push, polling-only with backoff and fixed 2 s polling, and a
//! Go-style 2 s loop.

use std::sync::Arc;
use std::time::Duration;

use virtrigaud_benches::{fleet, paused_runtime};
use virtrigaud_core::provider::ShutdownRequestOptions;
use virtrigaud_core::shutdown::{ShutdownManager, ShutdownPolicy};
use virtrigaud_core::sim::GuestBehavior;
use virtrigaud_core::{PowerState, Provider, ShutdownChannel};

use crate::checks::Failures;
use crate::fmt::met;
use crate::plots::{Series, lines};
use crate::report::{Plot, Report};
use crate::template::Template;

/// The section's prose.
const T: Template = Template::new(
    "api_calls",
    include_str!("../../../../templates/api_calls.md"),
);

/// One row per guest shutdown time.
pub(crate) type Rows = Vec<CallsRow>;

/// Guest shutdown times (s) measured: two for `--smoke`, else seven.
pub(crate) fn guest_times(smoke: bool) -> Vec<u64> {
    if smoke {
        vec![1, 10]
    } else {
        vec![1, 2, 5, 10, 30, 60, 120]
    }
}

/// One stop per guest time in `guests` (s), four ways each.
pub(crate) fn measure(guests: &[u64]) -> Rows {
    guests
        .iter()
        .map(|&s| {
            let row = api_calls(Duration::from_secs(s));
            eprintln!("  {row:?}");
            row
        })
        .collect()
}

/// API calls for one graceful stop of a guest that needs `guest` to stop.
#[derive(Debug, Clone)]
pub(crate) struct CallsRow {
    pub guest: Duration,
    /// Engine, push-capable simulator.
    pub push: u64,
    /// Engine, polling-only simulator, default backoff (250 ms doubling to 2 s).
    pub engine_poll: u64,
    /// Engine, polling-only simulator, fixed 2 s polling.
    pub engine_poll_2s: u64,
    /// Hand-written Go-style loop: one request, then a state read every 2 s until off.
    pub go_loop: u64,
}

/// Counts the calls of one stop of a guest taking `guest`, four ways.
fn api_calls(guest: Duration) -> CallsRow {
    let grace = guest + Duration::from_secs(60);
    let engine = |push: bool, policy: ShutdownPolicy| {
        paused_runtime().block_on(async move {
            let (sim, vms) = fleet(1, GuestBehavior::cooperative().acpi_after(guest), push);
            let manager = ShutdownManager::new(Arc::new(sim.clone()));
            let r = manager.shutdown(&vms[0], policy).await.expect("shutdown");
            assert!(r.outcome.is_off(), "{}", r.outcome);
            sim.total_calls()
        })
    };
    let push = engine(true, ShutdownPolicy::with_grace(grace));
    let engine_poll = engine(false, ShutdownPolicy::with_grace(grace));
    let two = Duration::from_secs(2);
    let engine_poll_2s = engine(false, ShutdownPolicy::with_grace(grace).polling(two, two));
    let go_loop = paused_runtime().block_on(async move {
        let (sim, vms) = fleet(1, GuestBehavior::cooperative().acpi_after(guest), false);
        let vm = &vms[0];
        sim.request_shutdown(
            vm,
            ShutdownChannel::Acpi,
            &ShutdownRequestOptions::new(1, grace),
        )
        .await
        .expect("request");
        loop {
            tokio::time::sleep(two).await;
            if matches!(sim.power_state(vm).await, Ok(PowerState::Off(_))) {
                break;
            }
        }
        sim.total_calls()
    });
    CallsRow {
        guest,
        push,
        engine_poll,
        engine_poll_2s,
        go_loop,
    }
}

/// Harness checks: calls are counted.
pub(crate) fn check(rows: &Rows) -> Failures {
    let mut f = Failures::default();
    for c in rows {
        f.expect(c.push > 0 && c.go_loop > 0, "calls: counted");
    }
    f
}

/// Section 4's simulator table and target.
pub(crate) fn render(rows: &Rows, r: &mut Report) {
    r.fill(&T, "intro", &[]);
    for c in rows {
        let ratio = format!("{:.1}", c.go_loop as f64 / c.push.max(1) as f64);
        r.fill(
            &T,
            "row",
            &[
                ("guest", &c.guest.as_secs()),
                ("push", &c.push),
                ("poll", &c.engine_poll),
                ("poll_2s", &c.engine_poll_2s),
                ("go_loop", &c.go_loop),
                ("ratio", &ratio),
            ],
        );
    }
    let constant = rows.windows(2).all(|w| w[0].push == w[1].push);
    let push: Vec<String> = rows.iter().map(|c| c.push.to_string()).collect();
    r.fill(
        &T,
        "target",
        &[("push", &push.join(", ")), ("verdict", &met(constant))],
    );
}

/// Section 4's note when the real provider backends were not measured.
pub(crate) fn render_no_providers(r: &mut Report) {
    r.fill(&T, "no_providers", &[]);
}

/// The caveat when the real provider backends were not measured.
pub(crate) fn shortfalls_no_providers(r: &mut Report) {
    r.fill(&T, "shortfall_no_providers", &[]);
}

/// Calls against guest shutdown time, one line per method.
pub(crate) fn plots(rows: &Rows, dir: &std::path::Path) -> Result<Vec<Plot>, String> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let series = |name: &str, f: &dyn Fn(&CallsRow) -> u64| Series {
        name: name.into(),
        points: rows
            .iter()
            .map(|c| (c.guest.as_secs_f64(), f(c) as f64))
            .collect(),
    };
    lines(
        &dir.join("api_calls.svg"),
        "Provider calls per graceful stop (simulator)",
        "guest shutdown time (s)",
        "provider calls",
        &[
            series("virtrigaud, push", &|c| c.push),
            series("virtrigaud, polling-only provider", &|c| c.engine_poll),
            series("virtrigaud, fixed 2 s polling", &|c| c.engine_poll_2s),
            series("Go-style 2 s loop", &|c| c.go_loop),
        ],
    )?;
    Ok(vec![("api_calls", "bench/api_calls.svg".to_string())])
}
