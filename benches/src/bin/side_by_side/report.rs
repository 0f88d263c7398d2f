//! The report being written: Markdown text plus the plots it may link. Each comparison adds
//! its section through [`Report::fill`]; the prose comes from `benches/templates/`.

use crate::template::{Template, Vars};

/// The frame's template (header, machine table, plot links, shortfalls heading).
const FRAME: Template = Template::new("report", include_str!("../../../templates/report.md"));

/// A plot written next to the report: (key, path relative to the report).
pub(crate) type Plot = (&'static str, String);

/// The Markdown report under construction.
#[derive(Debug, Default)]
pub(crate) struct Report {
    md: String,
    plots: Vec<Plot>,
}

impl Report {
    /// An empty report that may link `plots`.
    pub(crate) fn new(plots: Vec<Plot>) -> Self {
        Report {
            md: String::new(),
            plots,
        }
    }

    /// Appends block `block` of `t`, filled from `vars`.
    pub(crate) fn fill(&mut self, t: &Template, block: &str, vars: &Vars<'_>) {
        let s = t.fill(block, vars);
        self.md.push_str(&s);
    }

    /// Links the plot `key`, if it was written.
    pub(crate) fn plot(&mut self, key: &str, alt: &str) {
        if let Some((_, path)) = self.plots.iter().find(|(k, _)| *k == key) {
            let s = FRAME.fill("plot", &[("alt", &alt), ("path", path)]);
            self.md.push_str(&s);
        }
    }

    /// The report's title, run facts and machine table.
    pub(crate) fn header(&mut self, smoke: bool, wall_s: f64, machine: &[(String, String)]) {
        let mode = if smoke { FRAME.phrase("smoke") } else { "" };
        let wall = format!("{wall_s:.0}");
        self.fill(&FRAME, "header", &[("smoke", &mode), ("wall", &wall)]);
        for (key, value) in machine {
            self.fill(&FRAME, "machine_row", &[("key", key), ("value", value)]);
        }
    }

    /// The heading of the shortfalls list (`fleet_only`: the `--fleet-only` report's).
    pub(crate) fn shortfalls_heading(&mut self, fleet_only: bool) {
        let block = if fleet_only {
            "fleet_only_shortfalls"
        } else {
            "shortfalls"
        };
        self.fill(&FRAME, block, &[]);
    }

    /// The Markdown text.
    pub(crate) fn finish(self) -> String {
        self.md
    }
}
