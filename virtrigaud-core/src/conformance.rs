//! The conformance suite every provider runs against its real test server.
//!
//! (Being filled in: the API below is stable for provider crates.)

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::Result;
use crate::provider::Provider;
use crate::vm::VmId;

/// What a backend supplies to the conformance suite.
#[async_trait]
pub trait Fixture: Send + Sync {
    /// A fresh, running VM whose guest honours a shutdown request within
    /// [`Fixture::graceful_grace`]. Each call should return a VM no other check uses.
    async fn cooperative_vm(&self) -> Result<VmId>;

    /// A fresh, running VM whose guest ignores shutdown requests, or `None` when the backend
    /// cannot model one (then the timeout checks are skipped, with the reason reported).
    async fn ignoring_vm(&self) -> Result<Option<VmId>> {
        Ok(None)
    }

    /// An id that names no VM on the backend.
    fn missing_vm(&self) -> VmId;

    /// A grace period long enough for a cooperative guest to stop.
    fn graceful_grace(&self) -> Duration {
        Duration::from_secs(60)
    }

    /// A short grace period used by the forced-at-deadline checks.
    fn short_grace(&self) -> Duration {
        Duration::from_secs(2)
    }

    /// Removes a VM the fixture made (best effort; called at the end of each check).
    async fn cleanup(&self, vm: &VmId) {
        let _ = vm;
    }
}

/// Runs every check the provider's capabilities allow.
pub async fn run_all(provider: Arc<dyn Provider>, fixture: &dyn Fixture) -> Report {
    let _ = (provider, fixture);
    Report { results: Vec::new() }
}

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

/// The results of a suite run.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// `(check name, outcome)` in run order.
    pub results: Vec<(&'static str, CheckOutcome)>,
}

impl Report {
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
        assert!(failures.is_empty(), "conformance failures:\n{}", failures.join("\n"));
    }
}
