//! Section 2 of the report: the fleet runs, per personality, the forced-guest breakdown and its
//! target, the shortfall bullet and the timeline plot.

use std::time::Duration;

use super::types::{FleetRun, Forced, GuestRun, Personality, Rows, mix};
use crate::fmt::{met, ms, opt_secs, p50_max};
use crate::plots::{Bar, timeline};
use crate::report::{Plot, Report};
use crate::template::Template;

/// The section's prose.
const T: Template = Template::new("fleet", include_str!("../../../../../templates/fleet.md"));

/// The personalities present, in a stable order.
fn kinds_of(runs: &[FleetRun]) -> Vec<Personality> {
    let mut k: Vec<Personality> = runs
        .iter()
        .flat_map(|r| r.guests.iter().map(|g| g.personality))
        .collect();
    k.sort();
    k.dedup();
    k
}

/// The virtrigaud rounds.
fn rounds(runs: &[FleetRun]) -> Vec<&FleetRun> {
    runs.iter().filter(|f| f.virtrigaud).collect()
}

/// Every forced guest's breakdown, over every virtrigaud round.
fn forced_of(runs: &[FleetRun]) -> Vec<Forced> {
    rounds(runs)
        .iter()
        .flat_map(|v| v.guests.iter().filter_map(|g| g.forced))
        .collect()
}

/// Section 2 (`smoke`: the not-run line says so).
pub(crate) fn render(rows: &Rows, smoke: bool, r: &mut Report) {
    // The personalities actually run (the smoke round has its own), else the full mix.
    let kinds: Vec<Personality> = match &rows.runs {
        Some(Ok(runs)) if !runs.is_empty() => {
            runs[0].guests.iter().map(|g| g.personality).collect()
        }
        _ => mix(rows.n),
    };
    intro(rows, &kinds, r);
    let runs = match &rows.runs {
        None if smoke => return r.fill(&T, "not_run_smoke", &[]),
        None => return r.fill(&T, "not_run", &[]),
        Some(Err(e)) => return r.fill(&T, "failed", &[("error", e)]),
        Some(Ok(runs)) => runs,
    };
    let n_acpi = kinds
        .iter()
        .filter(|p| matches!(p, Personality::Acpi { .. }))
        .count();
    let n_ignore = kinds.len() - n_acpi;
    runs_table(runs, n_acpi, n_ignore, r);
    personalities(runs, r);
    let forced = forced_of(runs);
    if !forced.is_empty() {
        breakdown(runs, &forced, r);
        target(runs, &forced, rows.grace, n_ignore, r);
    }
    if runs.iter().any(|f| !f.virtrigaud) {
        r.fill(&T, "libvirt_guests", &[]);
    }
}

fn intro(rows: &Rows, kinds: &[Personality], r: &mut Report) {
    let mut counts: Vec<(Personality, usize)> = Vec::new();
    for k in kinds {
        match counts.iter_mut().find(|(p, _)| p == k) {
            Some((_, c)) => *c += 1,
            None => counts.push((*k, 1)),
        }
    }
    counts.sort();
    let guests: Vec<String> = counts
        .iter()
        .map(|(p, c)| {
            T.fill_phrase(
                "guest_kind",
                &[
                    ("count", c),
                    ("label", &p.label()),
                    ("cmdline", &p.cmdline()),
                ],
            )
        })
        .collect();
    let (n_rounds, smoke_only) = match &rows.runs {
        Some(Ok(runs)) => (rounds(runs).len(), !runs.iter().any(|f| !f.virtrigaud)),
        _ => (0, false),
    };
    let rounds = if n_rounds > 1 {
        T.fill_phrase("rounds", &[("rounds", &n_rounds)])
    } else {
        String::new()
    };
    let smoke = if smoke_only {
        T.phrase("not_in_smoke")
    } else {
        ""
    };
    r.fill(
        &T,
        "intro",
        &[
            ("fleet_n", &rows.n),
            ("guests", &guests.join(", ")),
            ("grace", &rows.grace.as_secs()),
            ("n", &kinds.len()),
            ("rounds", &rounds),
            ("smoke", &smoke),
        ],
    );
}

fn runs_table(runs: &[FleetRun], n_acpi: usize, n_ignore: usize, r: &mut Report) {
    r.fill(&T, "runs", &[]);
    for f in runs {
        let exit = f
            .exit
            .map(|code| T.fill_phrase("exit", &[("code", &code)]))
            .unwrap_or_default();
        let forced = if f.virtrigaud {
            T.fill_phrase(
                "forced",
                &[("forced", &f.forced_count()), ("n_ignore", &n_ignore)],
            )
        } else {
            T.phrase("never_forces").to_string()
        };
        r.fill(
            &T,
            "run_row",
            &[
                ("method", &f.method),
                ("exit", &exit),
                ("wall", &format!("{:.2}", f.wall.as_secs_f64())),
                ("acpi_ok", &f.acpi_ok()),
                ("n_acpi", &n_acpi),
                ("forced", &forced),
                ("left", &f.left_running()),
            ],
        );
    }
}

/// Per personality: virtrigaud's rounds are one group (max over every round), libvirt-guests'
/// runs one each.
fn personalities(runs: &[FleetRun], r: &mut Report) {
    r.fill(&T, "personalities", &[]);
    let vs = rounds(runs);
    let mut groups: Vec<(String, Vec<&FleetRun>)> = Vec::new();
    if !vs.is_empty() {
        let label = if vs.len() == 1 {
            "virtrigaud".into()
        } else {
            T.fill_phrase("rounds_label", &[("rounds", &vs.len())])
        };
        groups.push((label, vs));
    }
    for f in runs.iter().filter(|f| !f.virtrigaud) {
        groups.push((f.method.clone(), vec![f]));
    }
    for (label, fs) in &groups {
        for p in kinds_of(runs) {
            let gs: Vec<&GuestRun> = fs.iter().flat_map(|f| f.of(p)).collect();
            if !gs.is_empty() {
                personality_row(label, p, &gs, r);
            }
        }
    }
}

fn personality_row(label: &str, p: Personality, gs: &[&GuestRun], r: &mut Report) {
    let max = |x: fn(&GuestRun) -> Option<Duration>| gs.iter().filter_map(|g| x(g)).max();
    let mut outcomes: Vec<String> = gs.iter().filter_map(|g| g.outcome.clone()).collect();
    outcomes.sort();
    outcomes.dedup();
    let outcome = if !outcomes.is_empty() {
        outcomes.join(", ")
    } else if gs.iter().all(|g| g.off) {
        "off".into()
    } else {
        "left running".into()
    };
    r.fill(
        &T,
        "personality_row",
        &[
            ("method", &label),
            ("personality", &p.label()),
            ("off", &gs.iter().filter(|g| g.off).count()),
            ("n", &gs.len()),
            ("own", &opt_secs(max(|g| g.own))),
            ("stopped", &opt_secs(max(|g| g.stopped))),
            ("reported", &opt_secs(max(|g| g.reported))),
            ("outcome", &outcome),
        ],
    );
}

/// virtrigaud's share of a forced guest's time past its deadline: issue delay + report delay.
fn share(f: &Forced) -> Duration {
    f.issue_after_deadline + f.report_after_destroy
}

fn breakdown(runs: &[FleetRun], forced: &[Forced], r: &mut Report) {
    let col = |f: fn(&Forced) -> Duration| forced.iter().map(f).collect::<Vec<_>>();
    let solo: Vec<Duration> = runs
        .iter()
        .flat_map(|f| f.solo_destroys.iter().copied())
        .collect();
    let exit: Vec<Duration> = forced.iter().filter_map(|f| f.qemu_exit).collect();
    let exit_to_return: Vec<Duration> = forced
        .iter()
        .filter_map(|f| f.qemu_exit.map(|x| f.destroy.saturating_sub(x)))
        .collect();
    r.fill(
        &T,
        "breakdown",
        &[
            ("forced", &forced.len()),
            ("rounds", &rounds(runs).len()),
            ("issue", &p50_max(&col(|f| f.issue_after_deadline))),
            ("destroy", &p50_max(&col(|f| f.destroy))),
            ("exit", &p50_max(&exit)),
            ("exit_to_return", &p50_max(&exit_to_return)),
            ("solo_n", &solo.len()),
            ("solo", &p50_max(&solo)),
            ("report", &p50_max(&col(|f| f.report_after_destroy))),
            ("share", &p50_max(&col(share))),
            ("past", &p50_max(&col(|f| f.past_deadline))),
        ],
    );
    let mut evs: Vec<f64> = forced
        .iter()
        .filter_map(|f| f.event_vs_destroy_ms)
        .collect();
    evs.sort_by(f64::total_cmp);
    if let (Some(first), Some(last)) = (evs.first(), evs.last()) {
        r.fill(
            &T,
            "stopped_event",
            &[
                ("first", &format!("{first:.1}")),
                ("last", &format!("{last:.1}")),
            ],
        );
    }
}

/// The target line: per round, the fleet's end past the longest graceful guest / the deadline,
/// and past the last guest's own `Stopped` event.
fn target(runs: &[FleetRun], forced: &[Forced], grace: Duration, n_ignore: usize, r: &mut Report) {
    let vs = rounds(runs);
    let over = vs
        .iter()
        .map(|v| {
            let longest_acpi = v
                .guests
                .iter()
                .filter(|g| matches!(g.personality, Personality::Acpi { .. }))
                .filter_map(|g| g.stopped)
                .max()
                .unwrap_or_default();
            v.wall.saturating_sub(grace.max(longest_acpi))
        })
        .max()
        .unwrap_or_default();
    let after_last_stop = vs
        .iter()
        .filter_map(|v| {
            let last = v.guests.iter().filter_map(|g| g.stopped).max()?;
            Some(v.wall.saturating_sub(last))
        })
        .max()
        .unwrap_or_default();
    let max = |f: fn(&Forced) -> Duration| forced.iter().map(f).max().unwrap_or_default();
    let share_max = max(share);
    let all_forced = vs.iter().all(|v| v.forced_count() == n_ignore);
    let strict = over <= Duration::from_millis(100) && all_forced;
    let controlled = share_max <= Duration::from_millis(100) && all_forced;
    r.fill(
        &T,
        "target",
        &[
            ("grace", &grace.as_secs()),
            ("over", &ms(over)),
            ("destroy", &ms(max(|f| f.destroy))),
            ("share", &ms(share_max)),
            ("issue", &ms(max(|f| f.issue_after_deadline))),
            ("forced", &forced.len()),
            ("ignoring", &(n_ignore * vs.len())),
            ("after_last_stop", &ms(after_last_stop)),
            ("controlled", &met(controlled)),
            ("strict", &met(strict)),
        ],
    );
}

/// The shortfall bullet for the fleet target, when virtrigaud finished more than 100 ms past the
/// ignoring guests' deadline.
pub(crate) fn shortfalls(rows: &Rows, r: &mut Report) {
    let Some(Ok(runs)) = &rows.runs else { return };
    let forced = forced_of(runs);
    let max = |f: fn(&Forced) -> Duration| forced.iter().map(f).max().unwrap_or_default();
    let past = max(|f| f.past_deadline);
    if forced.is_empty() || past <= Duration::from_millis(100) {
        return;
    }
    r.fill(
        &T,
        "shortfall",
        &[
            ("past", &ms(past)),
            ("grace", &rows.grace.as_secs()),
            ("destroy", &ms(max(|f| f.destroy))),
            ("share", &ms(max(share))),
        ],
    );
}

/// A method name short enough for a plot's row label.
fn short_method(m: &str) -> String {
    m.replace("libvirt-guests PARALLEL_SHUTDOWN=", "libvirt-guests P=")
}

/// The timeline of the first run of each method: one bar per guest, fleet start → its stop
/// event (or the method's end, hollow, when the guest was left running).
pub(crate) fn plots(rows: &Rows, dir: &std::path::Path) -> Result<Vec<Plot>, String> {
    let Some(Ok(runs)) = &rows.runs else {
        return Ok(Vec::new());
    };
    let mut bars = Vec::new();
    let mut seen = Vec::new();
    for run in runs {
        if seen.contains(&run.method) {
            continue;
        }
        seen.push(run.method.clone());
        for g in &run.guests {
            let (end, color, open) = match g.stopped {
                Some(t) if g.forced.is_some() => (t, 1, false),
                Some(t) => (t, 0, false),
                None => (run.wall, 2, true),
            };
            bars.push(Bar {
                label: format!("{} · {}", short_method(&run.method), g.personality.label()),
                start: 0.0,
                end: end.as_secs_f64(),
                color,
                open,
            });
        }
    }
    if bars.is_empty() {
        return Ok(Vec::new());
    }
    timeline(
        &dir.join("fleet.svg"),
        "Fleet shutdown: each guest from the start to libvirt's stop event",
        "seconds since the fleet shutdown started",
        &bars,
        Some((rows.grace.as_secs_f64(), "grace deadline")),
        &[
            "stopped by the guest",
            "forced off",
            "left running (hollow)",
        ],
    )?;
    Ok(vec![("fleet", "bench/fleet.svg".to_string())])
}
