//! Harness checks: what a comparison's `check` step collects (correctness of the harness, never
//! timings).

/// The failed checks of one or more comparisons.
#[derive(Debug, Default)]
pub(crate) struct Failures(Vec<String>);

impl Failures {
    /// Records `what` unless `ok`.
    pub(crate) fn expect(&mut self, ok: bool, what: &str) {
        if !ok {
            self.0.push(what.to_string());
        }
    }

    /// Records `what`.
    pub(crate) fn fail(&mut self, what: String) {
        self.0.push(what);
    }

    /// Adds another comparison's failures.
    pub(crate) fn extend(&mut self, other: Failures) {
        self.0.extend(other.0);
    }

    /// The failures, in the order found.
    pub(crate) fn into_vec(self) -> Vec<String> {
        self.0
    }
}
