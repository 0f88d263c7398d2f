//! Golden tests of the report: fixed numbers rendered through every template block, compared
//! with `benches/golden/*.md` (`UPDATE_GOLDEN=1` rewrites them after a deliberate change).

use std::time::Duration;

use crate::comparisons::fleet::Rows as FleetRows;
use crate::comparisons::latency::{Latency, Sample};
use crate::comparisons::scale::{CapRow, DeadlineRow, MemoryRow, ScaleRow};
use crate::comparisons::{Results, fleet, scale};
use crate::report::Report;

fn d(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

fn machine() -> Vec<(String, String)> {
    [("CPU", "Test CPU"), ("nproc", "2"), ("QEMU", "QEMU 7.2")]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .to_vec()
}

fn latency() -> Latency {
    let s = |t, det: Option<u64>, c: Option<u64>| Sample {
        total: d(t),
        detect: det.map(d),
        calls: c,
    };
    Latency {
        event: vec![
            s(239, Some(1), Some(9)),
            s(241, Some(2), Some(9)),
            s(244, None, Some(10)),
        ],
        poll: vec![s(2007, Some(1765), Some(9)), s(2016, Some(1770), Some(8))],
        guests: vec![s(1066, Some(811), None), s(1070, Some(814), None)],
        errors: vec!["lat-ev: forced\n(timeout)".into()],
    }
}

fn sim_parts() -> scale::Rows {
    let mem = |n, engine_push, engine_poll, fleet, bare| MemoryRow {
        n,
        engine_push,
        engine_poll,
        fleet,
        bare,
    };
    let deadline = |cap, all_off, latest| DeadlineRow {
        n: 10_000,
        cap,
        deadline: d(30_000),
        virtual_elapsed: d(27_000),
        counts: "{\"forced\": 10000}".into(),
        all_off,
        latest_forced: d(latest),
    };
    scale::Rows {
        scale: vec![
            ScaleRow {
                n: 10_000,
                setup_us: 1.4,
                engine_us: 10.2,
                bare_us: 2.0,
                off: 10_000,
                virtual_elapsed: d(5000),
            },
            ScaleRow {
                n: 100_000,
                setup_us: 1.3,
                engine_us: 12.4,
                bare_us: 2.8,
                off: 100_000,
                virtual_elapsed: d(5000),
            },
        ],
        memory: vec![
            mem(10_000, 1556.0, 1372.0, Some(1957.4), 468.0),
            mem(100_000, 1535.2, 1351.0, None, 466.0),
        ],
        caps: vec![CapRow {
            n: 10_000,
            cap: 256,
            off: 10_000,
            virtual_elapsed: d(200_000),
            expected: d(200_000),
            max_in_flight: 256,
        }],
        deadlines: vec![deadline(10_000, true, 27_000), deadline(256, false, 26_900)],
    }
}

fn calls() -> crate::comparisons::api_calls::Rows {
    use crate::comparisons::api_calls::CallsRow;
    let row = |g, push, engine_poll, engine_poll_2s, go_loop| CallsRow {
        guest: d(g),
        push,
        engine_poll,
        engine_poll_2s,
        go_loop,
    };
    vec![
        row(1000, 5, 6, 4, 2),
        row(10_000, 5, 11, 8, 6),
        row(120_000, 5, 66, 63, 61),
    ]
}

fn results() -> Results {
    Results {
        latency: None,
        fleet: fleet::Plan::not_run(6, None),
        scale: scale::Rows::default(),
        api_calls: Vec::new(),
        #[cfg(feature = "providers")]
        providers: None,
        placement: Vec::new(),
        wall: d(2_500),
    }
}

fn plots() -> Vec<crate::report::Plot> {
    ["api_calls", "api_calls_providers", "fleet", "latency"]
        .map(|k| (k, format!("bench/{k}.svg")))
        .to_vec()
}

fn full() -> Results {
    let mut r = results();
    r.scale = sim_parts();
    r.api_calls = calls();
    r.latency = Some(Ok(latency()));
    r.fleet = FleetRows {
        n: 4,
        grace: d(10_000),
        runs: Some(Ok(fleet::tests::runs())),
    };
    r.placement = vec![
        ("basic".into(), 9863.2),
        ("index_and_place_one".into(), 252.0),
        ("required_host_anti_affinity".into(), 7930.0),
    ];
    #[cfg(feature = "providers")]
    {
        r.providers = Some(crate::comparisons::providers::tests::rows(false));
    }
    r.wall = d(383_400);
    r
}

/// Compares `got` with `benches/golden/<name>` (or rewrites it under `UPDATE_GOLDEN=1`).
fn golden(name: &str, got: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("golden")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, got).expect("write golden");
        return;
    }
    let want = std::fs::read_to_string(&path).expect("read golden");
    if got != want {
        let at = got
            .lines()
            .zip(want.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(got.lines().count().min(want.lines().count()));
        panic!(
            "{name} differs from the golden file at line {}:\n got: {:?}\nwant: {:?}",
            at + 1,
            got.lines().nth(at),
            want.lines().nth(at)
        );
    }
}

/// The golden files' names depend on the feature set (providers or not).
fn name(base: &str) -> String {
    if cfg!(feature = "providers") {
        format!("{base}.md")
    } else {
        format!("{base}-no-providers.md")
    }
}

#[test]
fn report_full_run_matches_golden() {
    let md = crate::comparisons::render(&full(), false, &machine(), plots());
    golden(&name("full"), &md);
}

#[test]
fn report_nothing_run_matches_golden() {
    let r = results();
    golden(
        &name("empty-smoke"),
        &crate::comparisons::render(&r, true, &machine(), Vec::new()),
    );
    golden(
        &name("empty"),
        &crate::comparisons::render(&r, false, &machine(), Vec::new()),
    );
}

#[test]
fn report_failures_match_golden() {
    let mut r = results();
    r.scale = sim_parts();
    r.api_calls = calls();
    r.api_calls[1].push = 6;
    r.scale.memory = vec![MemoryRow {
        n: 200,
        engine_push: 2100.0,
        engine_poll: 1900.0,
        fleet: None,
        bare: 400.0,
    }];
    r.scale.scale[1].engine_us = 40.0;
    r.latency = Some(Err("connect qemu:///system: no".into()));
    r.fleet = FleetRows {
        n: 2,
        grace: d(3_000),
        runs: Some(Err("fleet-1: not READY after 180 s".into())),
    };
    #[cfg(feature = "providers")]
    {
        r.providers = Some(crate::comparisons::providers::tests::rows(true));
    }
    r.wall = d(40_000);
    golden(
        &name("failures"),
        &crate::comparisons::render(&r, true, &machine(), Vec::new()),
    );
}

#[test]
fn report_smoke_fleet_matches_golden() {
    let mut r = results();
    let mut runs = fleet::tests::runs();
    runs.truncate(1);
    runs[0].method = "virtrigaud".into();
    runs[0].guests.truncate(2);
    r.fleet = FleetRows {
        n: 2,
        grace: d(3_000),
        runs: Some(Ok(runs)),
    };
    let mut l = latency();
    l.poll.clear();
    l.guests.clear();
    l.errors.clear();
    r.latency = Some(Ok(l));
    r.wall = d(40_000);
    golden(
        &name("smoke-fleet"),
        &crate::comparisons::render(&r, true, &machine(), Vec::new()),
    );
}

#[test]
fn report_fleet_only_matches_golden() {
    let rows = FleetRows {
        n: 4,
        grace: d(10_000),
        runs: Some(Ok(fleet::tests::runs())),
    };
    let mut r = Report::default();
    fleet::render(&rows, false, &mut r);
    r.shortfalls_heading(true);
    fleet::shortfalls(&rows, &mut r);
    golden("fleet-only.md", &r.finish());
}

#[test]
fn report_checks_name_each_failure() {
    let r = full();
    let f = crate::comparisons::check(&r);
    // The fixture has one failed provider stop, one deadline run that left a guest on and a
    // latency harness note; everything else is sound.
    let mut want = Vec::new();
    if cfg!(feature = "providers") {
        want.push("providers: Proxmox 2 s loop, guest 15s: request: boom".to_string());
    }
    want.push("deadline: every ignoring guest ends off".to_string());
    want.push("latency: every method stopped its guest gracefully".to_string());
    assert_eq!(f, want);
    let mut bad = full();
    bad.scale.caps[0].max_in_flight = 257;
    bad.api_calls[0].go_loop = 0;
    bad.fleet.runs = Some(Err("boom".into()));
    let f = crate::comparisons::check(&bad);
    for want in [
        "cap: in-flight never exceeds the cap",
        "calls: counted",
        "fleet: boom",
    ] {
        assert!(f.iter().any(|x| x == want), "{want} not in {f:?}");
    }
}
