//! Comparison 5: placement throughput at 5,000 hosts, read from the criterion benchmark
//! `benches/benches/placement.rs` (`scripts/bench.sh` runs it first) and set against the
//! Kubernetes scheduler_perf floors.

use crate::report::Report;
use crate::template::Template;

/// The section's prose.
const T: Template = Template::new(
    "placement",
    include_str!("../../../../templates/placement.md"),
);

/// (scenario, placements per second), in the order criterion's directories sort.
pub(crate) type Rows = Vec<(String, f64)>;

/// Placements per second per scenario, from criterion's `placement_5000_hosts` results.
pub(crate) fn measure(dir: &str) -> Rows {
    let root = std::path::Path::new(dir).join("placement_5000_hosts");
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(&root) else {
        return out;
    };
    let mut dirs: Vec<_> = rd.flatten().map(|e| e.path()).collect();
    dirs.sort();
    for d in dirs {
        // `<scenario>/<param>/new` or `<scenario>/new`.
        let candidates = std::fs::read_dir(&d)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path().join("new"))
            .chain(std::iter::once(d.join("new")));
        for new in candidates {
            let est = std::fs::read_to_string(new.join("estimates.json"));
            let bench = std::fs::read_to_string(new.join("benchmark.json"));
            let (Ok(est), Ok(bench)) = (est, bench) else {
                continue;
            };
            let est: serde_json::Value = serde_json::from_str(&est).unwrap_or_default();
            let bench: serde_json::Value = serde_json::from_str(&bench).unwrap_or_default();
            let median_ns = est["median"]["point_estimate"].as_f64().unwrap_or(0.0);
            let elems = bench["throughput"]["Elements"].as_f64().unwrap_or(1.0);
            let name = d
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if median_ns > 0.0 {
                out.push((name, elems / (median_ns / 1e9)));
            }
        }
    }
    out
}

/// The Kubernetes scheduler_perf floor (pods/s at 5,000 nodes) a scenario compares with.
fn floor(scenario: &str) -> Option<f64> {
    if scenario == "basic" {
        Some(680.0)
    } else if scenario.contains("anti_affinity") {
        Some(60.0)
    } else {
        None
    }
}

/// Section 5.
pub(crate) fn render(rows: &Rows, r: &mut Report) {
    r.fill(&T, "intro", &[]);
    if rows.is_empty() {
        return r.fill(&T, "missing", &[]);
    }
    r.fill(&T, "table", &[]);
    for (name, rate) in rows {
        let f = floor(name);
        let floor = f
            .map(|f| T.fill_phrase("floor", &[("floor", &format!("{f:.0}"))]))
            .unwrap_or_else(|| "—".into());
        let ratio = f
            .map(|f| format!("{:.0}×", rate / f))
            .unwrap_or_else(|| "—".into());
        r.fill(
            &T,
            "row",
            &[
                ("scenario", name),
                ("rate", &format!("{rate:.0}")),
                ("floor", &floor),
                ("ratio", &ratio),
            ],
        );
    }
    r.fill(&T, "notes", &[]);
}
