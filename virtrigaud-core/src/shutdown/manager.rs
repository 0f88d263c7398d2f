//! [`ShutdownManager`]: exactly one grace period per VM, however many requests race.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{broadcast, watch};
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::clock::{SystemClock, WallClock, to_instant};
use super::driver::{Run, drive};
use super::events::{ShutdownEvent, ShutdownEventKind};
use super::hooks::PreStopExecutor;
use super::journal::{Lease, MemoryJournal, ShutdownJournal};
use super::outcome::{ShutdownOutcome, ShutdownReport};
use super::policy::ShutdownPolicy;
use crate::error::{Error, Result};
use crate::provider::Provider;
use crate::vm::VmId;

struct InFlight {
    id: u64,
    deadline: Arc<watch::Sender<Instant>>,
    result: watch::Receiver<Option<ShutdownReport>>,
    cancel: CancellationToken,
    abort: AbortHandle,
    started: Instant,
}

struct Shared {
    provider: Arc<dyn Provider>,
    journal: Arc<dyn ShutdownJournal>,
    clock: Arc<dyn WallClock>,
    pre_stop: Option<Arc<dyn PreStopExecutor>>,
    events: broadcast::Sender<ShutdownEvent>,
    in_flight: Mutex<HashMap<VmId, InFlight>>,
    next_id: AtomicU64,
}

/// Runs graceful shutdowns of one provider's VMs.
///
/// - **One grace period per VM**: a request for a VM whose shutdown is in flight joins it;
///   a shorter grace (or a force) shortens it, nothing lengthens it.
/// - **Restart-safe**: with a [`super::FileJournal`], a shutdown's deadline is recorded before
///   the guest is signalled; after a crash, [`ShutdownManager::resume_pending`] (or any new
///   request for that VM) continues with the time left.
/// - Dropping the manager abandons its shutdowns in flight (as a crash would); their leases
///   stay in the journal.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap().block_on(async {
/// use std::{sync::Arc, time::Duration};
/// use virtrigaud_core::shutdown::{ShutdownManager, ShutdownOutcome, ShutdownPolicy};
/// use virtrigaud_core::sim::{GuestBehavior, Simulator};
/// use virtrigaud_core::ShutdownChannel;
///
/// let sim = Simulator::new();
/// let vm = sim.add_vm("db-1", GuestBehavior::cooperative().acpi_after(Duration::from_secs(8)));
/// let manager = ShutdownManager::new(Arc::new(sim));
/// let report = manager.shutdown(&vm, ShutdownPolicy::with_grace(Duration::from_secs(30))).await?;
/// assert!(matches!(report.outcome, ShutdownOutcome::Graceful { channel: Some(ShutdownChannel::Acpi) }));
/// # Ok::<(), virtrigaud_core::Error>(()) }).unwrap();
/// ```
pub struct ShutdownManager {
    shared: Arc<Shared>,
}

impl fmt::Debug for ShutdownManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShutdownManager")
            .field("provider", &self.shared.provider.provider_type())
            .field("journal", &self.shared.journal)
            .finish_non_exhaustive()
    }
}

/// Builds a [`ShutdownManager`].
#[derive(Debug)]
pub struct ShutdownManagerBuilder {
    provider: Arc<dyn Provider>,
    journal: Arc<dyn ShutdownJournal>,
    clock: Arc<dyn WallClock>,
    pre_stop: Option<Arc<dyn PreStopExecutor>>,
    event_capacity: usize,
}

impl ShutdownManagerBuilder {
    /// Keeps leases in `journal` (default: in memory, not restart-safe).
    pub fn journal(mut self, journal: Arc<dyn ShutdownJournal>) -> Self {
        self.journal = journal;
        self
    }
    /// Uses `clock` for wall-clock lease times (default: the system clock).
    pub fn clock(mut self, clock: Arc<dyn WallClock>) -> Self {
        self.clock = clock;
        self
    }
    /// Runs pre-stop hooks through `executor`.
    pub fn pre_stop_executor(mut self, executor: Arc<dyn PreStopExecutor>) -> Self {
        self.pre_stop = Some(executor);
        self
    }
    /// Capacity of the progress event channel (default 1024; slow subscribers lag).
    pub fn event_capacity(mut self, capacity: usize) -> Self {
        self.event_capacity = capacity.max(1);
        self
    }
    /// Builds the manager.
    pub fn build(self) -> ShutdownManager {
        let (events, _) = broadcast::channel(self.event_capacity);
        ShutdownManager {
            shared: Arc::new(Shared {
                provider: self.provider,
                journal: self.journal,
                clock: self.clock,
                pre_stop: self.pre_stop,
                events,
                in_flight: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(1),
            }),
        }
    }
}

impl ShutdownManager {
    /// A manager with an in-memory journal and the system clock.
    pub fn new(provider: Arc<dyn Provider>) -> Self {
        Self::builder(provider).build()
    }

    /// A builder for a manager over `provider`.
    pub fn builder(provider: Arc<dyn Provider>) -> ShutdownManagerBuilder {
        ShutdownManagerBuilder {
            provider,
            journal: Arc::new(MemoryJournal::new()),
            clock: Arc::new(SystemClock),
            pre_stop: None,
            event_capacity: 1024,
        }
    }

    /// The provider.
    pub fn provider(&self) -> &Arc<dyn Provider> {
        &self.shared.provider
    }

    /// Subscribes to progress events of every shutdown of this manager.
    pub fn subscribe(&self) -> broadcast::Receiver<ShutdownEvent> {
        self.shared.events.subscribe()
    }

    /// Shuts `vm` down and waits for the end (joining a shutdown already in flight).
    pub async fn shutdown(&self, vm: &VmId, policy: ShutdownPolicy) -> Result<ShutdownReport> {
        Ok(self.start(vm, policy)?.wait().await)
    }

    /// Starts (or joins) the shutdown of `vm` and returns a handle at once.
    ///
    /// Must be called within a tokio runtime.
    pub fn start(&self, vm: &VmId, policy: ShutdownPolicy) -> Result<ShutdownHandle> {
        policy.validate()?;
        let now = Instant::now();
        let requested = now + policy.grace;
        let mut map = self
            .shared
            .in_flight
            .lock()
            .map_err(|_| Error::internal("lock poisoned"))?;
        if let Some(f) = map.get(vm)
            && f.result.borrow().is_none()
        {
            f.deadline.send_if_modified(|d| {
                if requested < *d {
                    *d = requested;
                    true
                } else {
                    false
                }
            });
            let _ = self.shared.events.send(ShutdownEvent {
                vm: vm.clone(),
                elapsed: now.saturating_duration_since(f.started),
                kind: ShutdownEventKind::Joined,
            });
            return Ok(ShutdownHandle::from_in_flight(vm.clone(), f));
        }
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let (deadline_tx, deadline_rx) = watch::channel(requested);
        let deadline_tx = Arc::new(deadline_tx);
        let (result_tx, result_rx) = watch::channel(None);
        let cancel = CancellationToken::new();
        let span = tracing::info_span!(
            "virtrigaud.shutdown",
            provider = self.shared.provider.provider_type(),
            vm = %vm,
            grace = ?policy.grace
        );
        let task = tokio::spawn(
            run_one(
                Arc::clone(&self.shared),
                id,
                vm.clone(),
                policy,
                Arc::clone(&deadline_tx),
                deadline_rx,
                result_tx,
                cancel.clone(),
            )
            .instrument(span),
        );
        let entry = InFlight {
            id,
            deadline: deadline_tx,
            result: result_rx,
            cancel,
            abort: task.abort_handle(),
            started: now,
        };
        let handle = ShutdownHandle::from_in_flight(vm.clone(), &entry);
        map.insert(vm.clone(), entry);
        Ok(handle)
    }

    /// Resumes every shutdown recorded in the journal for this provider (after a restart),
    /// each with the time left of its original grace period. `policy` supplies everything
    /// but the grace.
    pub async fn resume_pending(&self, policy: ShutdownPolicy) -> Result<Vec<ShutdownHandle>> {
        let provider_type = self.shared.provider.provider_type();
        let leases = self.shared.journal.list(provider_type).await?;
        let mut handles = Vec::with_capacity(leases.len());
        for lease in leases {
            let left = lease
                .deadline()
                .duration_since(self.shared.clock.now())
                .unwrap_or(Duration::ZERO)
                .max(Duration::from_millis(1));
            handles.push(self.start(&lease.vm, policy.clone().grace(left))?);
        }
        Ok(handles)
    }

    /// VMs whose shutdown is in flight.
    pub fn in_flight(&self) -> Vec<VmId> {
        self.shared
            .in_flight
            .lock()
            .map(|m| {
                m.iter()
                    .filter(|(_, f)| f.result.borrow().is_none())
                    .map(|(k, _)| k.clone())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for ShutdownManager {
    fn drop(&mut self) {
        if let Ok(map) = self.shared.in_flight.lock() {
            for f in map.values() {
                f.abort.abort();
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_one(
    shared: Arc<Shared>,
    id: u64,
    vm: VmId,
    policy: ShutdownPolicy,
    deadline_tx: Arc<watch::Sender<Instant>>,
    deadline_rx: watch::Receiver<Instant>,
    result_tx: watch::Sender<Option<ShutdownReport>>,
    cancel: CancellationToken,
) {
    let provider_type = shared.provider.provider_type();
    let requested_at = Instant::now();
    let wall_now = shared.clock.now();
    let requested_wall = wall_now + policy.grace;
    let existing = match shared.journal.get(provider_type, &vm).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(vm = %vm, error = %e, "could not read the shutdown journal");
            None
        }
    };
    let (lease, resumed) = match existing {
        Some(mut lease) => {
            // A grace period was already running before a restart: keep its deadline (or a
            // shorter one from this request).
            if requested_wall < lease.deadline() {
                lease.deadline_ms = super::journal::to_ms(requested_wall);
            }
            (lease, true)
        }
        None => (
            Lease::new(provider_type, vm.clone(), wall_now, requested_wall),
            false,
        ),
    };
    let deadline = to_instant(&*shared.clock, lease.deadline());
    deadline_tx.send_if_modified(|d| {
        if deadline < *d {
            *d = deadline;
            true
        } else {
            false
        }
    });
    if let Err(e) = shared.journal.record(&lease).await {
        tracing::warn!(vm = %vm, error = %e, "could not journal the shutdown; it is not restart-safe");
    }
    let started = if resumed {
        let since_start = wall_now
            .duration_since(lease.started_at())
            .unwrap_or(Duration::ZERO);
        let now = Instant::now();
        now.checked_sub(since_start).unwrap_or(now)
    } else {
        requested_at
    };

    let run = Run {
        provider: Arc::clone(&shared.provider),
        vm: vm.clone(),
        deadline: deadline_rx,
        cancel,
        events: shared.events.clone(),
        pre_stop: shared.pre_stop.clone(),
        journal: Arc::clone(&shared.journal),
        clock: Arc::clone(&shared.clock),
        lease,
        started,
        resumed,
    };
    let report = drive(run, policy).await;
    if let Err(e) = shared.journal.remove(provider_type, &vm).await {
        tracing::warn!(vm = %vm, error = %e, "could not remove the shutdown lease");
    }
    if let Ok(mut map) = shared.in_flight.lock()
        && map.get(&vm).is_some_and(|f| f.id == id)
    {
        map.remove(&vm);
    }
    let _ = result_tx.send(Some(report));
}

/// A handle on one VM's shutdown in flight.
#[derive(Debug, Clone)]
pub struct ShutdownHandle {
    vm: VmId,
    deadline: Arc<watch::Sender<Instant>>,
    result: watch::Receiver<Option<ShutdownReport>>,
    cancel: CancellationToken,
}

impl ShutdownHandle {
    fn from_in_flight(vm: VmId, f: &InFlight) -> Self {
        ShutdownHandle {
            vm,
            deadline: Arc::clone(&f.deadline),
            result: f.result.clone(),
            cancel: f.cancel.clone(),
        }
    }

    /// The VM.
    pub fn vm(&self) -> &VmId {
        &self.vm
    }

    /// Shortens the grace period to end `grace` from now (ignored if that is later).
    pub fn shorten(&self, grace: Duration) {
        let requested = Instant::now() + grace;
        self.deadline.send_if_modified(|d| {
            if requested < *d {
                *d = requested;
                true
            } else {
                false
            }
        });
    }

    /// Powers off now (grace shortened to zero).
    pub fn force(&self) {
        self.shorten(Duration::ZERO);
    }

    /// Cancels the shutdown: no further request or power-off is sent (a hard power-off
    /// already under way completes). Every joined caller gets
    /// [`ShutdownOutcome::Cancelled`].
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// Waits for the end.
    pub async fn wait(mut self) -> ShutdownReport {
        loop {
            if let Some(report) = self.result.borrow_and_update().clone() {
                return report;
            }
            if self.result.changed().await.is_err() {
                let report = self.result.borrow().clone();
                return report.unwrap_or_else(|| ShutdownReport {
                    outcome: ShutdownOutcome::Failed {
                        error: Error::cancelled(
                            "the shutdown manager was dropped; the lease stays in its journal",
                        ),
                    },
                    elapsed: Duration::ZERO,
                    grace: Duration::ZERO,
                    signals_sent: 0,
                    power_off_calls: 0,
                    provider_calls: 0,
                    channel: None,
                    pre_stop_ok: None,
                    resumed: false,
                });
            }
        }
    }
}
