//! [`Orchestrator`]: the shared context of every flow (provider, shutdown engine, events).

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use super::events::{EventBus, EventReason, ObjectKind};
use crate::error::{Error, ErrorKind, Result};
use crate::layers::RetryPolicy;
use crate::provider::{PowerOffOptions, Provider, StartOptions};
use crate::shutdown::{ShutdownManager, ShutdownPolicy, ShutdownReport, SystemClock, WallClock};
use crate::vm::{PowerState, VmId};

/// Settings shared by the flows.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct OrchestratorConfig {
    /// The shutdown policy of the graceful stops a flow needs (reconfigure power cycles,
    /// reverts). Default: 60 s grace. The shutdown engine checks it when a stop starts (a
    /// policy it rejects fails that stop with `InvalidSpec`).
    pub stop_policy: ShutdownPolicy,
    /// Attempts of a start that fails with a retryable error (at least 1). Default 4.
    pub start_attempts: usize,
    /// First delay between start attempts (doubling). Default 1 s. Any value is safe; one
    /// beyond about 30 years waits about 30 years.
    pub start_retry_delay: Duration,
    /// Time a start is expected to take, added to the grace to estimate downtime. Default 30 s.
    /// The sum saturates at `Duration::MAX`.
    pub boot_estimate: Duration,
}

impl Default for OrchestratorConfig {
    fn default() -> Self {
        OrchestratorConfig {
            stop_policy: ShutdownPolicy::default(),
            start_attempts: 4,
            start_retry_delay: Duration::from_secs(1),
            boot_estimate: Duration::from_secs(30),
        }
    }
}

/// Runs the lifecycle flows (reconfigure, snapshots, revert, clones, lifecycle actions) of
/// one provider, driven only through the core traits.
///
/// Cheap to clone. Graceful stops go through one [`ShutdownManager`] (shared with the
/// embedder if built with [`Orchestrator::with_shutdown_manager`]), so a flow's stop and
/// any other stop of the same VM share one grace period.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap().block_on(async {
/// use std::sync::Arc;
/// use virtrigaud_core::orchestration::Orchestrator;
/// use virtrigaud_core::sim::{GuestBehavior, Simulator};
/// let sim = Simulator::new();
/// let vm = sim.add_vm("web-1", GuestBehavior::cooperative());
/// let orch = Orchestrator::new(Arc::new(sim));
/// let status = orch.status(&vm).await?;
/// assert!(status.power_state.is_active());
/// # Ok::<(), virtrigaud_core::Error>(()) }).unwrap();
/// ```
#[derive(Clone)]
pub struct Orchestrator {
    pub(crate) provider: Arc<dyn Provider>,
    pub(crate) shutdown: Arc<ShutdownManager>,
    pub(crate) events: EventBus,
    pub(crate) config: OrchestratorConfig,
    pub(crate) in_use: Arc<Mutex<HashSet<(VmId, String)>>>,
    pub(crate) clock: Arc<dyn WallClock>,
}

impl fmt::Debug for Orchestrator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Orchestrator")
            .field("provider", &self.provider.provider_type())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Orchestrator {
    /// An orchestrator with its own shutdown manager and default settings.
    pub fn new(provider: Arc<dyn Provider>) -> Self {
        let shutdown = Arc::new(ShutdownManager::new(Arc::clone(&provider)));
        Self::with_shutdown_manager(provider, shutdown)
    }

    /// An orchestrator whose graceful stops go through `shutdown` (use the same manager as
    /// the rest of the program so that racing stops share one grace period).
    pub fn with_shutdown_manager(
        provider: Arc<dyn Provider>,
        shutdown: Arc<ShutdownManager>,
    ) -> Self {
        Orchestrator {
            provider,
            shutdown,
            events: EventBus::default(),
            config: OrchestratorConfig::default(),
            in_use: Arc::new(Mutex::new(HashSet::new())),
            clock: Arc::new(SystemClock),
        }
    }

    /// Reads wall-clock time (snapshot ages for retention) from `clock` instead of the
    /// system clock: the simulator's [`crate::sim::Simulator::wall_clock`] under tokio's
    /// paused clock in tests.
    pub fn with_clock(mut self, clock: Arc<dyn WallClock>) -> Self {
        self.clock = clock;
        self
    }

    /// Replaces the settings.
    pub fn with_config(mut self, config: OrchestratorConfig) -> Self {
        self.config = config;
        self
    }

    /// Sends events to `bus` (to share one bus between orchestrators).
    pub fn with_events(mut self, bus: EventBus) -> Self {
        self.events = bus;
        self
    }

    /// The provider.
    pub fn provider(&self) -> &Arc<dyn Provider> {
        &self.provider
    }

    /// The shutdown manager.
    pub fn shutdown_manager(&self) -> &Arc<ShutdownManager> {
        &self.shutdown
    }

    /// The event bus (subscribe with [`EventBus::subscribe`] or [`EventBus::stream`]).
    pub fn events(&self) -> &EventBus {
        &self.events
    }

    /// The settings.
    pub fn config(&self) -> &OrchestratorConfig {
        &self.config
    }

    pub(crate) fn ptype(&self) -> &'static str {
        self.provider.provider_type()
    }

    pub(crate) fn emit_vm(&self, vm: &VmId, reason: EventReason, message: impl Into<String>) {
        self.events
            .emit(ObjectKind::VirtualMachine, vm.as_str(), reason, message);
    }

    fn in_use_set(&self) -> MutexGuard<'_, HashSet<(VmId, String)>> {
        self.in_use.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks snapshot `snapshot` of `vm` as used by a revert until the guard drops; retention
    /// never deletes it meanwhile.
    pub fn protect_snapshot(&self, vm: &VmId, snapshot: &str) -> SnapshotGuard {
        self.in_use_set().insert((vm.clone(), snapshot.to_owned()));
        SnapshotGuard {
            set: Arc::clone(&self.in_use),
            key: (vm.clone(), snapshot.to_owned()),
        }
    }

    /// Whether snapshot `snapshot` (provider id or name) of `vm` is in use by a revert.
    pub fn is_snapshot_in_use(&self, vm: &VmId, snapshot: &str) -> bool {
        self.in_use_set()
            .contains(&(vm.clone(), snapshot.to_owned()))
    }

    /// Stops `vm` through the shutdown engine with `policy`; an error unless it is off at
    /// the end.
    pub(crate) async fn graceful_stop(
        &self,
        vm: &VmId,
        policy: ShutdownPolicy,
    ) -> Result<ShutdownReport> {
        let report = self.shutdown.shutdown(vm, policy).await?;
        if report.outcome.is_off() {
            Ok(report)
        } else {
            let kind = match &report.outcome {
                crate::shutdown::ShutdownOutcome::Failed { error } => error.kind(),
                crate::shutdown::ShutdownOutcome::Cancelled => ErrorKind::Cancelled,
                crate::shutdown::ShutdownOutcome::Vanished => ErrorKind::NotFound,
                _ => ErrorKind::Internal,
            };
            Err(Error::new(
                kind,
                format!(
                    "the graceful stop did not power the VM off: {}",
                    report.outcome
                ),
            )
            .with_provider(self.ptype())
            .with_operation("stop")
            .with_resource(vm.to_string()))
        }
    }

    /// Starts `vm`, retrying retryable failures; starting a VM that is already active is
    /// success.
    pub(crate) async fn start_with_retry(&self, vm: &VmId) -> Result<()> {
        let attempts = self.config.start_attempts.max(1);
        RetryPolicy::new(self.config.start_retry_delay, attempts - 1)
            .retry(|| async {
                match self.provider.start(vm, &StartOptions::default()).await {
                    Ok(()) => Ok(()),
                    Err(e) if e.is(ErrorKind::InvalidState) => {
                        // Already running is fine; anything else is a real failure.
                        match self.provider.power_state(vm).await {
                            Ok(p) if p.is_active() => Ok(()),
                            _ => Err(e),
                        }
                    }
                    Err(e) => Err(e),
                }
            })
            .await
    }

    /// Powers `vm` off hard; "already off" is success.
    pub(crate) async fn hard_off(&self, vm: &VmId) -> Result<()> {
        match self
            .provider
            .power_off(vm, &PowerOffOptions::default())
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if e.is(ErrorKind::InvalidState) => match self.provider.power_state(vm).await {
                Ok(p) if p.is_off() => Ok(()),
                _ => Err(e),
            },
            Err(e) => Err(e),
        }
    }
}

/// Keeps a snapshot protected from retention while a revert uses it (see
/// [`Orchestrator::protect_snapshot`]).
#[derive(Debug)]
pub struct SnapshotGuard {
    set: Arc<Mutex<HashSet<(VmId, String)>>>,
    key: (VmId, String),
}

impl Drop for SnapshotGuard {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key);
    }
}

/// Whether a power state counts as "on" for restoring it after a flow.
pub(crate) fn was_on(p: PowerState) -> bool {
    matches!(
        p,
        PowerState::Running
            | PowerState::Starting
            | PowerState::ShuttingDown
            | PowerState::Paused(_)
    )
}

/// The farthest ahead a flow ever sets a deadline or a timer: 30 years of 365 days (tokio's
/// own "far future"). A duration from the API beyond it means "no limit" in practice, and a
/// timer this far ahead never overflows the clock (a timer set within a millisecond of the
/// clock's end would overflow inside tokio).
pub(crate) const HORIZON: Duration = Duration::from_secs(30 * 365 * 86_400);

/// `d`, at most [`HORIZON`]: safe to hand to `tokio::time::timeout` or `sleep`.
pub(crate) fn bounded(d: Duration) -> Duration {
    d.min(HORIZON)
}

/// `now + d` without overflow: at most [`HORIZON`] ahead.
pub(crate) fn deadline_after(now: Instant, d: Duration) -> Instant {
    // 30 years fit in every clock tokio supports; `now` itself is the unreachable fallback.
    now.checked_add(bounded(d)).unwrap_or(now)
}

/// The last second RFC 3339 can show: 9999-12-31T23:59:59Z.
const RFC3339_MAX_SECS: u64 = 253_402_300_799;

/// RFC 3339 (seconds) for `t`, clamped to 1970-01-01T00:00:00Z … 9999-12-31T23:59:59Z (a
/// time a provider reports outside that range cannot be written; humantime would panic).
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        .min(RFC3339_MAX_SECS);
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}

/// RFC 3339 for now.
pub(crate) fn now_rfc3339() -> String {
    rfc3339(SystemTime::now())
}

/// Parses RFC 3339.
pub(crate) fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(s).ok()
}
