//! The outcome of each check and of a suite run; a run can be recorded for the test
//! command's providers × checks table.

use std::path::{Path, PathBuf};

/// The result of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckOutcome {
    /// It passed.
    Passed,
    /// It was not applicable (capability missing, fixture cannot model it).
    Skipped(String),
    /// It failed.
    Failed(String),
}

/// The environment variable naming the directory [`Report::record`] writes runs into
/// (`scripts/test.sh` sets it and prints the table at the end).
pub const REPORT_DIR_ENV: &str = "VIRTRIGAUD_CONFORMANCE_DIR";

/// The results of a suite run.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// `(check name, outcome)` in run order.
    pub results: Vec<(&'static str, CheckOutcome)>,
}

impl Report {
    /// Appends a result.
    pub fn push(&mut self, name: &'static str, outcome: CheckOutcome) {
        self.results.push((name, outcome));
    }
    /// Names of the checks that passed.
    pub fn passed(&self) -> Vec<&'static str> {
        self.results
            .iter()
            .filter(|(_, o)| *o == CheckOutcome::Passed)
            .map(|(n, _)| *n)
            .collect()
    }
    /// Names of the checks that were skipped.
    pub fn skipped(&self) -> Vec<&'static str> {
        self.results
            .iter()
            .filter(|(_, o)| matches!(o, CheckOutcome::Skipped(_)))
            .map(|(n, _)| *n)
            .collect()
    }

    /// Writes the run as `<dir>/<backend>.tsv` (one `check<TAB>passed|skipped|failed<TAB>why`
    /// line per check) when [`REPORT_DIR_ENV`] names a directory, so the test command can
    /// print one table of backends × checks; does nothing otherwise. `backend` names the
    /// server the run was against (`libvirt-test-driver`, `proxmox-fakepve`, …).
    ///
    /// # Errors
    /// When the file cannot be written.
    pub fn record(&self, backend: &str) -> std::io::Result<Option<PathBuf>> {
        match std::env::var_os(REPORT_DIR_ENV) {
            Some(dir) if !dir.is_empty() => self.write_to(Path::new(&dir), backend).map(Some),
            _ => Ok(None),
        }
    }

    /// Writes the run as `<dir>/<backend>.tsv` (see [`Report::record`]).
    ///
    /// # Errors
    /// When the directory or the file cannot be written.
    pub fn write_to(&self, dir: &Path, backend: &str) -> std::io::Result<PathBuf> {
        std::fs::create_dir_all(dir)?;
        let one_line = |s: &str| s.replace(['\t', '\n', '\r'], " ");
        let mut out = String::new();
        for (name, outcome) in &self.results {
            let (word, why) = match outcome {
                CheckOutcome::Passed => ("passed", String::new()),
                CheckOutcome::Skipped(why) => ("skipped", one_line(why)),
                CheckOutcome::Failed(why) => ("failed", one_line(why)),
            };
            out.push_str(&format!("{name}\t{word}\t{why}\n"));
        }
        let path = dir.join(format!("{}.tsv", one_line(backend).replace('/', "_")));
        std::fs::write(&path, out)?;
        Ok(path)
    }

    /// [`Report::record`]s the run as `backend`, then [`Report::assert_passed`].
    ///
    /// # Panics
    /// When a check failed or the record cannot be written.
    pub fn assert_passed_on(&self, backend: &str) {
        if let Err(e) = self.record(backend) {
            panic!("could not record the conformance run on {backend}: {e}");
        }
        self.assert_passed();
    }

    /// Panics with every failure listed if any check failed; prints skips loudly.
    ///
    /// # Panics
    /// When a check failed.
    pub fn assert_passed(&self) {
        let mut failures = Vec::new();
        for (name, outcome) in &self.results {
            match outcome {
                CheckOutcome::Passed => eprintln!("conformance {name}: passed"),
                CheckOutcome::Skipped(why) => eprintln!("conformance {name}: SKIPPED ({why})"),
                CheckOutcome::Failed(why) => failures.push(format!("{name}: {why}")),
            }
        }
        assert!(
            failures.is_empty(),
            "conformance failures:\n{}",
            failures.join("\n")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_is_written_one_line_per_check() {
        let dir = std::env::temp_dir().join(format!("vr-report-{}", std::process::id()));
        let mut r = Report::default();
        r.push("a", CheckOutcome::Passed);
        r.push("b", CheckOutcome::Skipped("no\tguest\nagent".into()));
        r.push("c", CheckOutcome::Failed("boom".into()));
        let path = r.write_to(&dir, "sim/x").expect("write");
        assert_eq!(path, dir.join("sim_x.tsv"));
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(
            text,
            "a\tpassed\t\nb\tskipped\tno guest agent\nc\tfailed\tboom\n"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
