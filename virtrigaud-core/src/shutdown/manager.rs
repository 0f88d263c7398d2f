//! [`ShutdownManager`]: exactly one grace period per VM, however many requests race.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::broadcast;
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tracing::Instrument;

use super::clock::{SystemClock, WallClock};
use super::driver::ShutdownTask;
use super::events::{ShutdownEvent, ShutdownEventKind};
use super::hooks::PreStopExecutor;
use super::journal::{NoJournal, ShutdownJournal};
use super::outcome::ShutdownReport;
use super::policy::ShutdownPolicy;
use super::slot::Slot;
use crate::error::{Error, Result};
use crate::provider::Provider;
use crate::vm::VmId;

pub(crate) struct InFlight {
    pub(crate) id: u64,
    slot: Arc<Slot>,
    abort: AbortHandle,
    started: Instant,
}

/// What every shutdown task of one manager shares.
pub(crate) struct Shared {
    pub(crate) provider: Arc<dyn Provider>,
    pub(crate) journal: Arc<dyn ShutdownJournal>,
    pub(crate) clock: Arc<dyn WallClock>,
    pub(crate) pre_stop: Option<Arc<dyn PreStopExecutor>>,
    pub(crate) events: broadcast::Sender<ShutdownEvent>,
    pub(crate) in_flight: Mutex<HashMap<VmId, InFlight>>,
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
    /// Keeps leases in `journal` (default: [`super::NoJournal`], not restart-safe).
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
    /// A manager without a journal (not restart-safe) and with the system clock.
    pub fn new(provider: Arc<dyn Provider>) -> Self {
        Self::builder(provider).build()
    }

    /// A builder for a manager over `provider`.
    pub fn builder(provider: Arc<dyn Provider>) -> ShutdownManagerBuilder {
        ShutdownManagerBuilder {
            provider,
            journal: Arc::new(NoJournal),
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
    ///
    /// The shutdown starts when this is called, not when the future is first polled. The
    /// future borrows the manager: dropping the manager abandons its shutdowns.
    pub fn shutdown<'a>(
        &'a self,
        vm: &VmId,
        policy: ShutdownPolicy,
    ) -> impl Future<Output = Result<ShutdownReport>> + Send + use<'a> {
        let handle = self.start(vm, policy);
        async move { Ok(handle?.wait().await) }
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
            && !f.slot.is_finished()
        {
            f.slot.shorten(requested);
            let _ = self.shared.events.send(ShutdownEvent {
                vm: vm.clone(),
                elapsed: now.saturating_duration_since(f.started),
                kind: ShutdownEventKind::Joined,
            });
            return Ok(ShutdownHandle {
                vm: vm.clone(),
                slot: Arc::clone(&f.slot),
            });
        }
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let slot = Arc::new(Slot::new(requested));
        let span = tracing::info_span!(
            "virtrigaud.shutdown",
            provider = self.shared.provider.provider_type(),
            vm = %vm,
            grace = ?policy.grace
        );
        let task = ShutdownTask::new(
            Arc::clone(&self.shared),
            Arc::clone(&slot),
            id,
            vm.clone(),
            policy,
            requested,
        );
        let join = tokio::spawn(task.run().instrument(span));
        map.insert(
            vm.clone(),
            InFlight {
                id,
                slot: Arc::clone(&slot),
                abort: join.abort_handle(),
                started: now,
            },
        );
        Ok(ShutdownHandle {
            vm: vm.clone(),
            slot,
        })
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
                    .filter(|(_, f)| !f.slot.is_finished())
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

/// A handle on one VM's shutdown in flight.
#[derive(Debug, Clone)]
pub struct ShutdownHandle {
    vm: VmId,
    slot: Arc<Slot>,
}

impl ShutdownHandle {
    /// The VM.
    pub fn vm(&self) -> &VmId {
        &self.vm
    }

    /// Shortens the grace period to end `grace` from now (ignored if that is later).
    pub fn shorten(&self, grace: Duration) {
        self.slot.shorten(Instant::now() + grace);
    }

    /// Powers off now (grace shortened to zero).
    pub fn force(&self) {
        self.shorten(Duration::ZERO);
    }

    /// Cancels the shutdown: no further request or power-off is sent (a hard power-off
    /// already under way completes). Every joined caller gets
    /// [`super::ShutdownOutcome::Cancelled`].
    pub fn cancel(&self) {
        self.slot.cancel();
    }

    /// Waits for the end.
    #[allow(
        clippy::manual_async_fn,
        reason = "an async fn would hold the handle twice in every waiting caller"
    )]
    pub fn wait(self) -> impl Future<Output = ShutdownReport> + Send + 'static {
        async move { self.slot.report().await }
    }
}
