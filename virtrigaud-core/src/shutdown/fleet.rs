//! Shutting many VMs down: ordered groups, a concurrency cap, one overall deadline.

use std::time::Duration;

use futures::StreamExt;
use tokio::time::Instant;

use super::manager::ShutdownManager;
use super::outcome::ShutdownReport;
use super::policy::ShutdownPolicy;
use crate::error::Result;
use crate::vm::VmId;

/// A fleet shutdown plan.
///
/// Groups run in order (for example application servers first, databases last); within a
/// group at most `concurrency` shutdowns are in flight. With an overall deadline (say the
/// runtime left on a UPS), every VM's grace is cut so that its hard power-off still fits
/// before the deadline; groups that start late get less grace, down to zero.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap().block_on(async {
/// use std::{sync::Arc, time::Duration};
/// use virtrigaud_core::shutdown::{FleetShutdown, ShutdownManager, ShutdownPolicy};
/// use virtrigaud_core::sim::{GuestBehavior, Simulator};
///
/// let sim = Simulator::new();
/// let web: Vec<_> = (0..4).map(|i| sim.add_vm(&format!("web-{i}"), GuestBehavior::cooperative())).collect();
/// let db = sim.add_vm("db-0", GuestBehavior::cooperative().acpi_after(Duration::from_secs(20)));
/// let manager = ShutdownManager::new(Arc::new(sim));
/// let report = FleetShutdown::new(&manager)
///     .concurrency(2)
///     .deadline(Duration::from_secs(120))
///     .group(web, ShutdownPolicy::with_grace(Duration::from_secs(30)))
///     .group([db], ShutdownPolicy::with_grace(Duration::from_secs(60)))
///     .run()
///     .await;
/// assert!(report.all_off());
/// # });
/// ```
#[derive(Debug)]
pub struct FleetShutdown<'a> {
    manager: &'a ShutdownManager,
    concurrency: usize,
    overall: Option<Duration>,
    groups: Vec<Vec<(VmId, ShutdownPolicy)>>,
}

/// One VM's result in a fleet shutdown.
#[derive(Debug, Clone)]
pub struct FleetEntry {
    /// The VM.
    pub vm: VmId,
    /// Index of its group.
    pub group: usize,
    /// Its report (an `Err` only when the shutdown could not be started).
    pub report: Result<ShutdownReport>,
}

/// The result of a fleet shutdown.
#[derive(Debug, Clone)]
pub struct FleetReport {
    /// Per-VM results, in completion order.
    pub entries: Vec<FleetEntry>,
    /// Wall time of the whole fleet shutdown.
    pub elapsed: Duration,
}

impl FleetReport {
    /// Whether every VM is known to be off (a vanished VM is not: see
    /// [`super::ShutdownOutcome::is_off`]).
    pub fn all_off(&self) -> bool {
        self.entries
            .iter()
            .all(|e| e.report.as_ref().is_ok_and(|r| r.outcome.is_off()))
    }
    /// Counts of outcomes by name (`graceful`, `forced`, …).
    pub fn counts(&self) -> std::collections::BTreeMap<&'static str, usize> {
        let mut m = std::collections::BTreeMap::new();
        for e in &self.entries {
            let key = match &e.report {
                Ok(r) => r.outcome.as_str(),
                Err(_) => "not_started",
            };
            *m.entry(key).or_insert(0) += 1;
        }
        m
    }
}

impl<'a> FleetShutdown<'a> {
    /// A fleet shutdown through `manager`, concurrency 16, no overall deadline.
    pub fn new(manager: &'a ShutdownManager) -> Self {
        FleetShutdown {
            manager,
            concurrency: 16,
            overall: None,
            groups: Vec::new(),
        }
    }
    /// At most `n` shutdowns in flight (at least 1).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }
    /// Everything must be off within `d` of the start.
    pub fn deadline(mut self, d: Duration) -> Self {
        self.overall = Some(d);
        self
    }
    /// Adds a group, run after the groups added before it.
    pub fn group(mut self, vms: impl IntoIterator<Item = VmId>, policy: ShutdownPolicy) -> Self {
        self.groups
            .push(vms.into_iter().map(|vm| (vm, policy.clone())).collect());
        self
    }
    /// Adds a group whose VMs each have their own policy.
    pub fn group_with(mut self, vms: impl IntoIterator<Item = (VmId, ShutdownPolicy)>) -> Self {
        self.groups.push(vms.into_iter().collect());
        self
    }

    /// Runs the plan.
    pub async fn run(self) -> FleetReport {
        let start = Instant::now();
        let fleet_deadline = self.overall.map(|d| super::machine::later(start, d));
        let mut entries = Vec::new();
        for (index, vms) in self.groups.into_iter().enumerate() {
            let manager = self.manager;
            let overall = self.overall;
            // Each shutdown starts when the stream hands its VM to the buffer, i.e. when a
            // place is free; the future kept per VM in flight only waits for the report.
            let results: Vec<FleetEntry> = futures::stream::iter(vms)
                .map(|(vm, policy)| {
                    let started = manager.start(&vm, cap_grace(policy, fleet_deadline, overall));
                    async move {
                        let report = match started {
                            Ok(handle) => Ok(handle.wait().await),
                            Err(e) => Err(e),
                        };
                        FleetEntry {
                            vm,
                            group: index,
                            report,
                        }
                    }
                })
                .buffer_unordered(self.concurrency)
                .collect()
                .await;
            entries.extend(results);
        }
        FleetReport {
            entries,
            elapsed: Instant::now().saturating_duration_since(start),
        }
    }
}

/// Cuts a VM's grace so its hard power-off fits before the fleet deadline. The reserve for
/// the power-off is the policy's force budget, at most a tenth of the overall deadline.
fn cap_grace(
    policy: ShutdownPolicy,
    fleet_deadline: Option<Instant>,
    overall: Option<Duration>,
) -> ShutdownPolicy {
    let (Some(deadline), Some(overall)) = (fleet_deadline, overall) else {
        return policy;
    };
    let reserve = policy.force_budget.min(overall / 10);
    let left = deadline
        .saturating_duration_since(Instant::now())
        .saturating_sub(reserve);
    let grace = policy.grace.min(left);
    policy.grace(grace)
}
