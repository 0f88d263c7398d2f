//! The provider subsection of section 4: one table and one verdict per backend.

use super::types::{Res, Row, Rows, Stop};
use crate::report::Report;
use crate::template::Template;

/// The subsection's prose.
const T: Template = Template::new(
    "providers",
    include_str!("../../../../../templates/providers.md"),
);

/// The per-backend tables and one verdict line per backend.
pub(crate) fn render(rows: &Rows, r: &mut Report) {
    r.fill(
        &T,
        "intro",
        &[("wall", &format!("{:.0}", rows.wall.as_secs_f64()))],
    );
    for (name, res) in &rows.sections {
        r.fill(
            &T,
            "backend",
            &[("name", name), ("note", &T.phrase(note_block(name)))],
        );
        let rs = match res {
            Err(e) => {
                r.fill(&T, "failed", &[("error", &e.replace('\n', " "))]);
                continue;
            }
            Ok(rs) => rs,
        };
        r.fill(&T, "table", &[]);
        for row in rs {
            table_row(row, r);
        }
        verdict(name, rs, r);
    }
    for name in &rows.skipped {
        r.fill(
            &T,
            "skipped",
            &[("name", name), ("dir", &name.to_lowercase())],
        );
    }
}

fn table_row(row: &Row, r: &mut Report) {
    let ratio = match (&row.engine, &row.poll) {
        (Ok(e), Ok(p)) if e.count.requests > 0 => {
            format!("{:.1}×", p.count.requests as f64 / e.count.requests as f64)
        }
        _ => "n/a".into(),
    };
    let outcome = row
        .engine
        .as_ref()
        .map(|s| s.outcome.clone())
        .unwrap_or_else(|e| e.clone());
    r.fill(
        &T,
        "row",
        &[
            ("guest", &row.guest.as_secs()),
            ("engine", &cell(&row.engine)),
            ("outcome", &outcome),
            ("engine_s", &secs(&row.engine)),
            ("poll", &cell(&row.poll)),
            ("poll_s", &secs(&row.poll)),
            ("ratio", &ratio),
        ],
    );
}

fn cell(s: &Res<Stop>) -> String {
    match s {
        Err(_) => T.phrase("cell_failed").to_string(),
        Ok(s) => match (s.count.watches, s.count.events) {
            (Some(w), Some(e)) => T.fill_phrase(
                "cell_watches",
                &[
                    ("requests", &s.count.requests),
                    ("watches", &w),
                    ("events", &e),
                ],
            ),
            _ => T.fill_phrase("cell", &[("requests", &s.count.requests)]),
        },
    }
}

fn secs(s: &Res<Stop>) -> String {
    s.as_ref()
        .map(|s| format!("{:.1}", s.elapsed.as_secs_f64()))
        .unwrap_or_else(|_| "—".into())
}

fn note_block(name: &str) -> &'static str {
    match name {
        "Proxmox" => "note_proxmox",
        "vSphere" => "note_vsphere",
        _ => "note_kubevirt",
    }
}

/// Least-squares line `a + b·x` through `pts`.
fn fit(pts: &[(f64, f64)]) -> (f64, f64) {
    let n = pts.len() as f64;
    let (sx, sy) = pts.iter().fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let sxx: f64 = pts.iter().map(|(x, _)| (x - mx) * (x - mx)).sum();
    let sxy: f64 = pts.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
    let b = if sxx > 0.0 { sxy / sxx } else { 0.0 };
    (my - b * mx, b)
}

/// (guest time s, virtrigaud requests, 2 s loop requests) of the rows where both stops ran.
type Point = (u64, u64, u64);

/// One verdict line per backend: constant or not, the measured slope and the 120 s point.
fn verdict(name: &str, rows: &[Row], r: &mut Report) {
    let ok: Vec<Point> = rows
        .iter()
        .filter_map(|r| match (&r.engine, &r.poll) {
            (Ok(e), Ok(p)) => Some((r.guest.as_secs(), e.count.requests, p.count.requests)),
            _ => None,
        })
        .collect();
    let list = |f: fn(&Point) -> u64| {
        ok.iter()
            .map(|x| f(x).to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let min = ok.iter().map(|x| x.1).min().unwrap_or(0);
    let max = ok.iter().map(|x| x.1).max().unwrap_or(0);
    if ok.len() < 2 {
        let poll = list(|x| x.2);
        return r.fill(
            &T,
            "verdict_smoke",
            &[("name", &name), ("min", &min), ("poll", &poll)],
        );
    }
    let pts = |f: fn(&Point) -> u64| -> Vec<(f64, f64)> {
        ok.iter().map(|x| (x.0 as f64, f(x) as f64)).collect()
    };
    let (ea, eb) = fit(&pts(|x| x.1));
    let (pa, pb) = fit(&pts(|x| x.2));
    let constant = min == max;
    let range = if constant {
        T.fill_phrase("range_constant", &[("min", &min)])
    } else {
        T.fill_phrase("range", &[("min", &min), ("max", &max)])
    };
    let verdict = T.phrase(if constant {
        "verdict_constant"
    } else if name == "vSphere" && max - min <= 2 {
        "verdict_nearly"
    } else {
        "verdict_not"
    });
    let at120 = match name {
        "vSphere" => format!("{}", min + 3),
        _ => format!("≈ {:.0}", ea + eb * 120.0),
    };
    r.fill(
        &T,
        "verdict",
        &[
            ("name", &name),
            ("range", &range),
            ("times", &list(|x| x.0)),
            ("poll", &list(|x| x.2)),
            ("verdict", &verdict),
            ("why", &why(name, min, constant, eb, pb)),
            ("even", &break_even(ea, eb, pa, pb)),
            ("at120", &at120),
            ("ea", &format!("{ea:.1}")),
            ("eb", &format!("{eb:.3}")),
            ("poll120", &format!("{:.0}", pa + pb * 120.0)),
            ("pa", &format!("{pa:.1}")),
            ("pb", &format!("{pb:.3}")),
        ],
    );
}

/// Why the backend's count behaves as it does.
fn why(name: &str, min: u64, constant: bool, eb: f64, pb: f64) -> String {
    match name {
        "Proxmox" => T.fill_phrase(
            "why_proxmox",
            &[
                ("eb_rate", &format!("{eb:.2}")),
                ("pb_rate", &format!("{pb:.2}")),
            ],
        ),
        "vSphere" => {
            let quiet = if constant {
                T.phrase("why_vsphere_quiet")
            } else {
                ""
            };
            T.fill_phrase("why_vsphere", &[("min", &min), ("quiet", &quiet)])
        }
        _ => T.phrase("why_kubevirt").to_string(),
    }
}

/// Where the polling loop starts costing more than virtrigaud.
fn break_even(ea: f64, eb: f64, pa: f64, pb: f64) -> String {
    if pb > eb && ea > pa {
        let secs = format!("{:.0}", (ea - pa) / (pb - eb));
        T.fill_phrase("break_even", &[("secs", &secs)])
    } else if pb > eb {
        T.phrase("fewer_everywhere").to_string()
    } else {
        String::new()
    }
}
