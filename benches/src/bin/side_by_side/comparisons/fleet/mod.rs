//! Comparison 2: fleet shutdown of real QEMU guests with mixed personalities (ACPI at once,
//! ACPI after a delay, ACPI ignored), virtrigaud's `FleetShutdown` vs `libvirt-guests`, and
//! where a forced guest's time past its deadline goes (engine reaction, libvirt's destroy,
//! report).
//!
//! - `types`: the personalities and what a run measured (numbers only);
//! - `virtrigaud` / `libvirt_guests`: one run of each method;
//! - `render`: the section, its shortfall and its timeline plot.

mod libvirt_guests;
mod render;
mod types;
mod virtrigaud;

use std::time::{Duration, Instant};

use virtrigaud_core::provider::PowerOffOptions;
use virtrigaud_core::{Provider, VmId};

pub(crate) use render::{plots, render, shortfalls};
pub(crate) use types::Rows;
use types::{FleetRun, Personality, mix, smoke_mix};

use crate::checks::Failures;
use crate::lab::Lab;
use crate::report::Report;

/// What one fleet comparison runs.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    kinds: Vec<Personality>,
    grace: Duration,
    rounds: usize,
    virtrigaud_only: bool,
}

impl Plan {
    /// The smoke round (one guest honouring ACPI after 1 s, one ignoring it, grace 3 s,
    /// virtrigaud only), else `n` guests of [`mix`], grace 10 s, `rounds` virtrigaud rounds then
    /// libvirt-guests with `PARALLEL_SHUTDOWN=0` and `=n`.
    pub(crate) fn new(smoke: bool, n: usize, rounds: usize) -> Plan {
        if smoke {
            Plan {
                kinds: smoke_mix(),
                grace: Duration::from_secs(3),
                rounds: 1,
                virtrigaud_only: true,
            }
        } else {
            Plan {
                kinds: mix(n),
                grace: Duration::from_secs(10),
                rounds,
                virtrigaud_only: false,
            }
        }
    }

    /// The section when nothing ran (`Err`: why), with the full plan's description.
    pub(crate) fn not_run(n: usize, why: Option<String>) -> Rows {
        Rows {
            n,
            grace: Duration::from_secs(10),
            runs: why.map(Err),
        }
    }

    /// The methods in the order they run.
    fn methods(&self) -> Vec<String> {
        let rounds = self.rounds.max(1);
        let mut methods: Vec<String> = (1..=rounds)
            .map(|k| {
                if rounds == 1 {
                    "virtrigaud".to_string()
                } else {
                    format!("virtrigaud, round {k}/{rounds}")
                }
            })
            .collect();
        if !self.virtrigaud_only {
            methods.push("libvirt-guests PARALLEL_SHUTDOWN=0".into());
            methods.push("libvirt-guests PARALLEL_SHUTDOWN=N".into());
        }
        methods
    }
}

/// Runs `plan` on `lab`: one guest per personality, every method in turn on the same guests.
pub(crate) async fn measure(lab: &Lab, plan: &Plan) -> Rows {
    eprintln!("[2] fleet of {} real guests", plan.kinds.len());
    Rows {
        n: plan.kinds.len(),
        grace: plan.grace,
        runs: Some(run_all(lab, plan).await),
    }
}

async fn run_all(lab: &Lab, plan: &Plan) -> Result<Vec<FleetRun>, String> {
    let mut vms = Vec::new();
    for (i, p) in plan.kinds.iter().enumerate() {
        vms.push(
            lab.create_cmdline(&format!("fleet-{i}"), &p.cmdline())
                .await?,
        );
    }
    let mut runs = Vec::new();
    let res = async {
        for method in plan.methods() {
            runs.push(run_method(lab, &vms, plan, &method).await?);
        }
        Ok::<(), String>(())
    }
    .await;
    lab.remove(&vms).await;
    res.map(|()| runs)
}

/// Boots the fleet, runs `method` on it, then stops whatever it left running.
async fn run_method(
    lab: &Lab,
    vms: &[VmId],
    plan: &Plan,
    method: &str,
) -> Result<FleetRun, String> {
    let kinds = &plan.kinds;
    lab.boot(vms).await?;
    // A guest built before `vr.delay` existed would honour ACPI at once: refuse it.
    for (vm, p) in vms.iter().zip(kinds) {
        if let Personality::Acpi { delay_s } = p
            && !lab.console_text(vm).contains(&format!("delay={delay_s} "))
        {
            return Err(format!(
                "{vm}: the guest image has no vr.delay support (READY line without \
                 delay={delay_s}); rebuild it with scripts/libvirt/setup.sh"
            ));
        }
    }
    let mut run = if method.starts_with("virtrigaud") {
        let mut r = virtrigaud::run(lab, vms, kinds, plan.grace).await?;
        r.method = method.to_string();
        r
    } else {
        let par = if method.ends_with("=0") {
            0
        } else {
            kinds.len()
        };
        libvirt_guests::run(lab, vms, kinds, plan.grace, par).await?
    };
    eprintln!(
        "  fleet {}: {:.2} s, {} left running",
        run.method,
        run.wall.as_secs_f64(),
        run.left_running()
    );
    for (vm, g) in vms.iter().zip(&run.guests) {
        eprintln!("    {vm} {}: {g:?}", g.personality.label());
    }
    // Stop whatever libvirt-guests left running before the next method, one guest at a
    // time, timing each destroy of a running guest.
    let left: Vec<bool> = run.guests.iter().map(|g| !g.off).collect();
    for (vm, left_running) in vms.iter().zip(left) {
        let t = Instant::now();
        let r = lab
            .provider()
            .power_off(vm, &PowerOffOptions::default())
            .await;
        if left_running && r.is_ok() {
            run.solo_destroys.push(t.elapsed());
        }
    }
    Ok(run)
}

/// Harness checks for the fleet runs (correctness only, no timings).
pub(crate) fn check(rows: &Rows) -> Failures {
    let mut f = Failures::default();
    let runs = match &rows.runs {
        None => return f,
        Some(Err(e)) => {
            f.fail(format!("fleet: {e}"));
            return f;
        }
        Some(Ok(runs)) => runs,
    };
    f.expect(
        runs.iter().any(|r| r.virtrigaud),
        "fleet: virtrigaud run missing",
    );
    for v in runs.iter().filter(|r| r.virtrigaud) {
        check_one(v, &mut f);
    }
    f
}

fn check_one(v: &FleetRun, f: &mut Failures) {
    let n_acpi = v
        .guests
        .iter()
        .filter(|g| matches!(g.personality, Personality::Acpi { .. }))
        .count();
    let n_ignore = v.guests.len() - n_acpi;
    f.expect(
        v.left_running() == 0,
        "fleet: virtrigaud leaves every guest off",
    );
    f.expect(
        v.acpi_ok() == n_acpi,
        "fleet: every ACPI guest ends graceful under virtrigaud",
    );
    f.expect(
        v.forced_count() == n_ignore,
        "fleet: every ignoring guest is forced, with its breakdown measured",
    );
    f.expect(
        v.guests.iter().all(|g| g.reported.is_some()),
        "fleet: every guest's report instant is known (engine events received)",
    );
    f.expect(
        v.guests
            .iter()
            .filter(|g| g.forced.is_some())
            .all(|g| g.stopped.is_some()),
        "fleet: libvirt's Stopped event seen for every forced guest",
    );
    f.expect(
        v.power_off_calls
            .is_some_and(|c| c >= v.forced_count() as u64),
        "fleet: the instrument layer counted a power_off per forced guest",
    );
}

/// `side_by_side --fleet-only N`: only the fleet comparison (N guests of [`mix`], grace 10 s,
/// `rounds` virtrigaud rounds), written as section 2 alone to `out` (when given). Returns the
/// process exit code.
pub(crate) fn run_only(n: usize, rounds: usize, out: Option<&str>) -> i32 {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("side_by_side: tokio runtime: {e}");
            return 1;
        }
    };
    let plan = Plan::new(false, n, rounds);
    let rows = rt.block_on(async {
        match Lab::connect().await {
            Ok(lab) => measure(&lab, &plan).await,
            Err(e) => Plan::not_run(n, Some(e)),
        }
    });
    let failures = check(&rows).into_vec();
    for f in &failures {
        eprintln!("HARNESS CHECK FAILED: {f}");
    }
    if let Some(out) = out {
        let mut r = Report::default();
        render(&rows, false, &mut r);
        r.shortfalls_heading(true);
        shortfalls(&rows, &mut r);
        if let Err(e) = std::fs::write(out, r.finish()) {
            eprintln!("side_by_side: write {out}: {e}");
            return 1;
        }
        eprintln!("report (section 2 only) written to {out}");
    }
    i32::from(!failures.is_empty())
}

/// Fixture runs for the report's golden tests.
#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use super::types::{FleetRun, Forced, GuestRun, Personality, mix};

    fn d(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    fn forced(k: u64) -> Forced {
        Forced {
            issue_after_deadline: d(1 + k),
            destroy: d(220 + k),
            qemu_exit: if k == 2 { None } else { Some(d(4 + k)) },
            event_vs_destroy_ms: if k == 1 {
                None
            } else {
                Some(k as f64 * 0.3 - 0.1)
            },
            report_after_destroy: d(1 + 2 * k),
            past_deadline: d(222 + 3 * k),
        }
    }

    fn virtrigaud_round(r: u64, kinds: &[Personality]) -> FleetRun {
        let guests = kinds
            .iter()
            .enumerate()
            .map(|(i, &p)| {
                let ig = p == Personality::Ignore;
                let i = i as u64;
                GuestRun {
                    personality: p,
                    outcome: Some(if ig { "forced (Timeout)" } else { "graceful" }.into()),
                    off: true,
                    stopped: Some(d(if ig {
                        10_230 + r * 7
                    } else {
                        280 + 2000 * i + r
                    })),
                    own: Some(d(if ig { 10_210 } else { 260 + 2000 * i })),
                    reported: Some(d(if ig { 10_231 + r } else { 290 + 2000 * i })),
                    forced: ig.then(|| forced(r + i / 2)),
                }
            })
            .collect();
        FleetRun {
            method: format!("virtrigaud, round {}/2", r + 1),
            virtrigaud: true,
            wall: d(10_230 + r * 5),
            guests,
            exit: None,
            solo_destroys: vec![],
            power_off_calls: Some(2),
        }
    }

    fn libvirt_guests_run(par: u64, kinds: &[Personality]) -> FleetRun {
        let guests = kinds
            .iter()
            .enumerate()
            .map(|(i, &p)| {
                let ig = p == Personality::Ignore;
                GuestRun {
                    personality: p,
                    outcome: None,
                    off: !ig,
                    stopped: (!ig).then(|| d(500 + 13_000 * i as u64 + par)),
                    own: (par > 0 && !ig).then(|| d(270 + i as u64)),
                    reported: None,
                    forced: None,
                }
            })
            .collect();
        FleetRun {
            method: format!("libvirt-guests PARALLEL_SHUTDOWN={par}"),
            virtrigaud: false,
            wall: d(41_660 - 30_000 * (par / 4)),
            guests,
            exit: Some(i32::from(par > 0)),
            solo_destroys: vec![d(210), d(211 + par)],
            power_off_calls: None,
        }
    }

    /// Two virtrigaud rounds and both libvirt-guests runs over `mix(4)`.
    pub(crate) fn runs() -> Vec<FleetRun> {
        let kinds = mix(4);
        let mut runs: Vec<FleetRun> = (0..2).map(|r| virtrigaud_round(r, &kinds)).collect();
        runs.extend([0, 4].map(|par| libvirt_guests_run(par, &kinds)));
        runs
    }
}
