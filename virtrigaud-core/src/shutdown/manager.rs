//! [`ShutdownManager`]: exactly one grace period per VM, however many requests race.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
use super::lease::{Lease, LeaseScope, StaleLease};
use super::machine::later;
use super::outcome::ShutdownReport;
use super::policy::ShutdownPolicy;
use super::slot::Slot;
use crate::error::{Error, Result};
use crate::provider::Provider;
use crate::vm::{Incarnation, VmId};

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
    /// Which endpoint the leases of this manager belong to.
    pub(crate) scope: LeaseScope,
    /// Time budget of one journal call.
    pub(crate) journal_budget: Duration,
    next_id: AtomicU64,
}

impl Shared {
    /// Runs one journal call within the journal budget.
    pub(crate) async fn journal_call<T>(
        &self,
        op: &'static str,
        fut: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        match tokio::time::timeout(self.journal_budget, fut).await {
            Ok(r) => r,
            Err(_) => Err(Error::timeout(format!(
                "journal {op} did not answer within {:?}",
                self.journal_budget
            ))
            .with_operation("journal")),
        }
    }

    /// Reads the current run of `vm`, within `budget`; `None` if the provider cannot tell.
    pub(crate) async fn incarnation(&self, vm: &VmId, budget: Duration) -> Option<Incarnation> {
        match tokio::time::timeout(budget, self.provider.incarnation(vm)).await {
            Ok(Ok(i)) => i,
            Ok(Err(e)) => {
                tracing::debug!(vm = %vm, error = %e, "could not read the VM's incarnation");
                None
            }
            Err(_) => None,
        }
    }

    /// Drops a stale lease with a warning and an event.
    pub(crate) async fn discard_stale(&self, lease: &Lease, reason: StaleLease) {
        tracing::warn!(
            vm = %lease.vm,
            reason = %reason,
            "a journalled shutdown lease is stale ({reason}); it is discarded, not applied"
        );
        let _ = self.events.send(ShutdownEvent {
            vm: lease.vm.clone(),
            elapsed: Duration::ZERO,
            kind: ShutdownEventKind::StaleLeaseDiscarded { reason },
        });
        if let Err(e) = self
            .journal_call("remove", self.journal.remove(&self.scope, &lease.vm))
            .await
        {
            tracing::warn!(vm = %lease.vm, error = %e, "could not remove a stale shutdown lease");
        }
    }
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
    journal_budget: Duration,
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
    /// Time budget of one journal call (default 2 s). A journal that does not answer in time
    /// (a hung mount) makes the shutdown go on without restart safety, with a warning.
    pub fn journal_budget(mut self, budget: Duration) -> Self {
        self.journal_budget = budget.max(Duration::from_millis(1));
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
                journal: self.journal,
                clock: self.clock,
                pre_stop: self.pre_stop,
                events,
                in_flight: Mutex::new(HashMap::new()),
                scope: LeaseScope::of(&*self.provider),
                provider: self.provider,
                journal_budget: self.journal_budget,
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
            journal_budget: Duration::from_secs(2),
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
        let requested = later(now, policy.grace);
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
            return Ok(ShutdownHandle::attach(vm.clone(), Arc::clone(&f.slot)));
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
        Ok(ShutdownHandle::attach(vm.clone(), slot))
    }

    /// Resumes every shutdown recorded in the journal for this provider endpoint (after a
    /// restart), each with the time left of its original grace period (never more than that
    /// grace). `policy` supplies everything but the grace.
    ///
    /// A stale lease is discarded with a warning and a
    /// [`ShutdownEventKind::StaleLeaseDiscarded`] event, and its VM is left alone: a lease of an
    /// earlier run of the VM (the VM was restarted since: its [`crate::Provider::incarnation`]
    /// changed), or one whose deadline, force budget and [`super::LEASE_EXPIRY_MARGIN`] have
    /// passed.
    pub async fn resume_pending(&self, policy: ShutdownPolicy) -> Result<Vec<ShutdownHandle>> {
        policy.validate()?;
        let shared = &self.shared;
        let leases = shared
            .journal_call("list", shared.journal.list(&shared.scope))
            .await?;
        let mut handles = Vec::with_capacity(leases.len());
        for lease in leases {
            if self.in_flight().contains(&lease.vm) {
                continue;
            }
            let current = shared.incarnation(&lease.vm, policy.read_budget).await;
            let now = shared.clock.now();
            if let Some(reason) = lease.staleness(now, current.as_ref(), policy.force_budget) {
                shared.discard_stale(&lease, reason).await;
                continue;
            }
            let left = lease.time_left(now).max(Duration::from_millis(1));
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
///
/// Every handle (each clone too) is one caller attached to the shutdown. Dropping it detaches
/// that caller; the shutdown goes on.
#[derive(Debug)]
pub struct ShutdownHandle {
    vm: VmId,
    slot: Arc<Slot>,
    cancelled: AtomicBool,
}

impl Clone for ShutdownHandle {
    fn clone(&self) -> Self {
        ShutdownHandle::attach(self.vm.clone(), Arc::clone(&self.slot))
    }
}

impl Drop for ShutdownHandle {
    fn drop(&mut self) {
        if !self.cancelled.load(Ordering::Acquire) {
            self.slot.detach(false);
        }
    }
}

impl ShutdownHandle {
    fn attach(vm: VmId, slot: Arc<Slot>) -> Self {
        slot.attach();
        ShutdownHandle {
            vm,
            slot,
            cancelled: AtomicBool::new(false),
        }
    }

    /// The VM.
    pub fn vm(&self) -> &VmId {
        &self.vm
    }

    /// Shortens the grace period to end `grace` from now (ignored if that is later).
    pub fn shorten(&self, grace: Duration) {
        if let Some(deadline) = Instant::now().checked_add(grace) {
            self.slot.shorten(deadline);
        }
    }

    /// Powers off now (grace shortened to zero).
    pub fn force(&self) {
        self.shorten(Duration::ZERO);
    }

    /// Cancels this caller's part in the shutdown.
    ///
    /// When every caller attached to the shutdown has cancelled, nothing more is sent: no
    /// further request and no power-off (a hard power-off already under way completes), and
    /// a server-side deadline armed by the request is disarmed
    /// ([`crate::Provider::cancel_shutdown`]); each caller then gets
    /// [`super::ShutdownOutcome::Cancelled`] — or `Failed` when the provider could not disarm
    /// its deadline (too late: the VM may still go down). While another caller still waits, this one is
    /// only detached: its [`ShutdownHandle::wait`] returns `Cancelled` at once, and the shutdown
    /// goes on for the others.
    pub fn cancel(&self) {
        if !self.cancelled.swap(true, Ordering::AcqRel) {
            self.slot.detach(true);
        }
    }

    /// Waits for the end (at once with `Cancelled` if this caller cancelled while the
    /// shutdown goes on for others).
    #[allow(
        clippy::manual_async_fn,
        reason = "an async fn would hold the handle twice in every waiting caller"
    )]
    pub fn wait(self) -> impl Future<Output = ShutdownReport> + Send + 'static {
        async move {
            if self.cancelled.load(Ordering::Acquire) && !self.slot.is_cancelled() {
                return super::slot::detached_report();
            }
            self.slot.report().await
        }
    }
}
