//! Comparison 4 on the real provider backends (feature `providers`): wire requests per graceful
//! stop vs the guest's own shutdown time, for Proxmox (fakepve), vSphere (vcsim) and KubeVirt
//! (a real kube-apiserver with the KubeVirt CRDs, plus the fake virt-controller of
//! `virtrigaud-kubevirt`'s `testkit` feature), against a 2 s polling loop on the same provider.
//!
//! Per guest time T every measurement gets its own provider instance (its own HTTP client and
//! request counter), so the different T run concurrently and every count is attributed to one
//! stop. How each backend makes a guest take T is in its module (`pve`, `vcsim`, `kubevirt`);
//! `backend` drives the stops, `render` writes the tables and verdicts.

mod backend;
mod kubevirt;
mod pve;
mod render;
mod types;
mod vcsim;

use std::time::{Duration, Instant};

use virtrigaud_core::VmId;
use virtrigaud_core::testing::backends_required;

pub(crate) use render::render;
pub(crate) use types::Rows;
use types::{Res, Row, Stop};

use crate::checks::Failures;
use crate::plots::{Series, lines};
use crate::report::Plot;

/// Guest shutdown times: one short one for `--smoke`, else five.
fn guest_times(smoke: bool) -> Vec<Duration> {
    let s: &[u64] = if smoke { &[1] } else { &[1, 5, 15, 30, 60] };
    s.iter().copied().map(Duration::from_secs).collect()
}

/// Whether `backend`'s environment (`key`, from scripts/<backend>/setup.sh) is set; records
/// a skip (or, under `VIRTRIGAUD_REQUIRE_BACKENDS`, a failure) when not.
fn present(rows: &mut Rows, backend: &'static str, key: &str) -> bool {
    if std::env::var(key).is_ok_and(|v| !v.is_empty()) {
        return true;
    }
    let lower = backend.to_lowercase();
    let msg = format!(
        "{backend}: {key} is not set (source /tmp/virtrigaud-state/{lower}.env after scripts/{lower}/setup.sh)"
    );
    if backends_required() {
        eprintln!("  {msg}: VIRTRIGAUD_REQUIRE_BACKENDS is set -> failure");
        rows.setup_failures.push(format!("providers: {msg}"));
    } else {
        eprintln!("\n!!!!!!!! SKIPPING the {backend} API-call comparison: {msg}\n");
    }
    rows.skipped.push(backend);
    false
}

/// Runs the section on every configured backend at once (`smoke`: one short guest time).
pub(crate) fn measure(smoke: bool) -> Rows {
    eprintln!("[4] API calls per graceful stop on the Proxmox / vSphere / KubeVirt backends");
    let mut rows = Rows::default();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            rows.setup_failures
                .push(format!("providers: tokio runtime: {e}"));
            return rows;
        }
    };
    let started = Instant::now();
    let on = [
        present(&mut rows, "Proxmox", "VIRTRIGAUD_PROXMOX_URL"),
        present(&mut rows, "vSphere", "VIRTRIGAUD_VSPHERE_URL"),
        present(&mut rows, "KubeVirt", "VIRTRIGAUD_KUBECONFIG"),
    ];
    let results = rt.block_on(measure_all(on, &guest_times(smoke)));
    for (name, r) in ["Proxmox", "vSphere", "KubeVirt"].into_iter().zip(results) {
        if let Some(r) = r {
            rows.sections.push((name, r));
        }
    }
    rows.wall = started.elapsed();
    log(&rows);
    rows
}

/// The three backends concurrently (those `on`).
async fn measure_all(on: [bool; 3], g: &[Duration]) -> [Option<Res<Vec<Row>>>; 3] {
    let pve = async move {
        if !on[0] {
            return None;
        }
        Some(match pve::Pve::from_env() {
            Ok(b) => Ok(backend::measure(&b, g).await),
            Err(e) => Err(e),
        })
    };
    let vcsim = async move {
        if !on[1] {
            return None;
        }
        Some(match vcsim::Vcsim::from_env() {
            Ok(b) => match b.set_delay(&VmId::new("vm-0"), 0).await {
                // Probe the knob once: a missing knob is one clear error, not ten.
                Err(e) if !e.contains("no such VirtualMachine") => Err(e),
                _ => Ok(backend::measure(&b, g).await),
            },
            Err(e) => Err(e),
        })
    };
    let kv = async move {
        if !on[2] {
            return None;
        }
        Some(match kubevirt::KubeVirt::connect().await {
            Ok(b) => Ok(backend::measure(&b, g).await),
            Err(e) => Err(e),
        })
    };
    let (a, b, c) = futures::future::join3(pve, vcsim, kv).await;
    [a, b, c]
}

/// Prints every stop's counts.
fn log(rows: &Rows) {
    for (name, r) in &rows.sections {
        let Ok(rs) = r else { continue };
        for row in rs {
            for (what, s) in [("engine", &row.engine), ("2 s loop", &row.poll)] {
                let Ok(s) = s else { continue };
                eprintln!(
                    "  {name} {what}, guest {} s: {} requests{}{} in {:.2} s ({})",
                    row.guest.as_secs(),
                    s.count.requests,
                    s.count
                        .watches
                        .map(|w| format!(", {w} watches"))
                        .unwrap_or_default(),
                    s.count
                        .events
                        .map(|w| format!(", {w} watch events"))
                        .unwrap_or_default(),
                    s.elapsed.as_secs_f64(),
                    s.outcome
                );
            }
        }
    }
}

/// Harness checks (correctness, not counts): every backend ran, every stop counted requests.
pub(crate) fn check(rows: &Rows) -> Failures {
    let mut f = Failures::default();
    for e in &rows.setup_failures {
        f.fail(e.clone());
    }
    for (name, r) in &rows.sections {
        let rs = match r {
            Err(e) => {
                f.fail(format!("providers: {name}: {e}"));
                continue;
            }
            Ok(rs) => rs,
        };
        for row in rs {
            for (what, s) in [("engine", &row.engine), ("2 s loop", &row.poll)] {
                match s {
                    Err(e) => f.fail(format!("providers: {e}")),
                    Ok(s) if s.count.requests == 0 => f.fail(format!(
                        "providers: {name} {what}, guest {:?}: no requests counted",
                        row.guest
                    )),
                    Ok(_) => {}
                }
            }
        }
    }
    f
}

/// Requests against guest shutdown time, one line per backend and method.
pub(crate) fn plots(rows: &Rows, dir: &std::path::Path) -> Result<Vec<Plot>, String> {
    let n = |s: &Res<Stop>| s.as_ref().ok().map(|s| s.count.requests);
    let mut series = Vec::new();
    for (name, r) in &rows.sections {
        let Ok(rs) = r else { continue };
        for (method, engine) in [("virtrigaud", true), ("2 s loop", false)] {
            series.push(Series {
                name: format!("{name}, {method}"),
                points: rs
                    .iter()
                    .filter_map(|row| {
                        let v = n(if engine { &row.engine } else { &row.poll })?;
                        Some((row.guest.as_secs_f64(), v as f64))
                    })
                    .collect(),
            });
        }
    }
    if series.is_empty() {
        return Ok(Vec::new());
    }
    lines(
        &dir.join("api_calls_providers.svg"),
        "Wire requests per graceful stop on the real provider backends",
        "guest shutdown time (s)",
        "requests",
        &series,
    )?;
    Ok(vec![(
        "api_calls_providers",
        "bench/api_calls_providers.svg".to_string(),
    )])
}

/// Fixture rows for the report's golden tests.
#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use super::types::{Count, Res, Row, Rows, Stop};

    fn d(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    fn stop(requests: u64, w: Option<(u64, u64)>, ms: u64, outcome: &str) -> Res<Stop> {
        Ok(Stop {
            count: Count {
                requests,
                watches: w.map(|x| x.0),
                events: w.map(|x| x.1),
            },
            elapsed: d(ms),
            outcome: outcome.into(),
        })
    }

    fn rows_of(f: &dyn Fn(u64) -> (Res<Stop>, Res<Stop>)) -> Vec<Row> {
        [1u64, 5, 15, 30, 60]
            .iter()
            .map(|&t| {
                let (engine, poll) = f(t);
                Row {
                    guest: d(t * 1000),
                    engine,
                    poll,
                }
            })
            .collect()
    }

    /// Three backends over five guest times (`smoke`: one guest time, a failed and a skipped
    /// backend).
    pub(crate) fn rows(smoke: bool) -> Rows {
        if smoke {
            let row = Row {
                guest: d(1000),
                engine: stop(9, None, 1800, "graceful (acpi)"),
                poll: stop(4, None, 2100, "off"),
            };
            return Rows {
                sections: vec![
                    ("Proxmox", Ok(vec![row])),
                    ("KubeVirt", Err("KubeVirt connect:\nrefused".into())),
                ],
                skipped: vec!["vSphere"],
                wall: d(3000),
                setup_failures: Vec::new(),
            };
        }
        let pve = rows_of(&|t| {
            let poll = if t == 15 {
                Err("Proxmox 2 s loop, guest 15s: request: boom".into())
            } else {
                stop(4 + t / 2, None, t * 1000 + 100, "off")
            };
            (
                stop(9 + t * 6 / 10, None, t * 1000 + 800, "graceful (acpi)"),
                poll,
            )
        });
        let vsphere = rows_of(&|t| {
            (
                stop(8 + u64::from(t >= 60), None, t * 1000, "graceful (agent)"),
                stop(2 + t / 2, None, t * 1000 + 1000, "off"),
            )
        });
        let kubevirt = rows_of(&|t| {
            (
                stop(14, Some((2, 6)), t * 1000 + 200, "graceful (acpi)"),
                stop(6 + t, Some((0, 0)), t * 1000 + 1100, "off"),
            )
        });
        Rows {
            sections: vec![
                ("Proxmox", Ok(pve)),
                ("vSphere", Ok(vsphere)),
                ("KubeVirt", Ok(kubevirt)),
            ],
            skipped: Vec::new(),
            wall: d(120_000),
            setup_failures: Vec::new(),
        }
    }
}
