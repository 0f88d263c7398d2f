//! [`ShutdownManager`]: exactly one grace period per VM, however many requests race.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::broadcast;
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tracing::Instrument;

use super::clock::{SystemClock, WallClock};
use super::context::ShutdownContext;
use super::driver::ShutdownTask;
use super::events::{ShutdownEvent, ShutdownEventKind};
use super::hooks::PreStopExecutor;
use super::journal::{NoJournal, ShutdownJournal};
use super::lease::LeaseScope;
use super::machine::later;
use super::outcome::ShutdownReport;
use super::policy::ShutdownPolicy;
use super::slot::Slot;
use crate::error::{Error, Result};
use crate::provider::Provider;
use crate::vm::VmId;

/// One shutdown in flight, as the manager tracks it.
struct InFlight {
    /// Which task of this VM it is (a VM's next shutdown gets a new one).
    id: u64,
    slot: Arc<Slot>,
    abort: AbortHandle,
    started: Instant,
}

/// The manager's bookkeeping: which VM has a shutdown in flight. Only the manager (and the
/// wrapper it spawns around each task) touches it.
struct Registry {
    in_flight: Mutex<HashMap<VmId, InFlight>>,
    next_id: AtomicU64,
}

impl Registry {
    /// Forgets task `id` of `vm` (not a later task of the same VM).
    fn deregister(&self, vm: &VmId, id: u64) {
        if let Ok(mut map) = self.in_flight.lock()
            && map.get(vm).is_some_and(|f| f.id == id)
        {
            map.remove(vm);
        }
    }
}

/// Abandons the slot when dropped before its report is in (the manager was dropped, the
/// runtime shut down, the task panicked), so no waiter is left hanging.
struct AbandonOnDrop(Arc<Slot>);

impl Drop for AbandonOnDrop {
    fn drop(&mut self) {
        self.0.abandon();
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
    context: Arc<ShutdownContext>,
    registry: Arc<Registry>,
}

impl fmt::Debug for ShutdownManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShutdownManager")
            .field("provider", &self.context.provider.provider_type())
            .field("journal", &self.context.journal)
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
            context: Arc::new(ShutdownContext {
                journal: self.journal,
                clock: self.clock,
                pre_stop: self.pre_stop,
                events,
                scope: LeaseScope::of(&*self.provider),
                provider: self.provider,
                journal_budget: self.journal_budget,
            }),
            registry: Arc::new(Registry {
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
            journal_budget: Duration::from_secs(2),
        }
    }

    /// The provider.
    pub fn provider(&self) -> &Arc<dyn Provider> {
        &self.context.provider
    }

    /// Subscribes to progress events of every shutdown of this manager.
    pub fn subscribe(&self) -> broadcast::Receiver<ShutdownEvent> {
        self.context.events.subscribe()
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
            .registry
            .in_flight
            .lock()
            .map_err(|_| Error::internal("lock poisoned"))?;
        if let Some(f) = map.get(vm)
            && !f.slot.is_finished()
        {
            f.slot.shorten(requested);
            self.context
                .emit(vm, f.started, || ShutdownEventKind::Joined);
            return Ok(ShutdownHandle::attach(vm.clone(), Arc::clone(&f.slot)));
        }
        let id = self.registry.next_id.fetch_add(1, Ordering::Relaxed);
        let slot = Arc::new(Slot::new(requested));
        let span = tracing::info_span!(
            "virtrigaud.shutdown",
            provider = self.context.provider.provider_type(),
            vm = %vm,
            grace = ?policy.grace
        );
        let run = ShutdownTask::new(
            Arc::clone(&self.context),
            Arc::clone(&slot),
            vm.clone(),
            policy,
            requested,
        )
        .run();
        let registry = Arc::clone(&self.registry);
        let guard = AbandonOnDrop(Arc::clone(&slot));
        // `map`, not an `async` block around `run.await`: that would hold the task's future
        // twice in every shutdown in flight.
        let join = tokio::spawn(
            run.map(move |(vm, report)| {
                registry.deregister(&vm, id);
                guard.0.finish(report);
            })
            .instrument(span),
        );
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
        let ctx = &self.context;
        let leases = ctx
            .journal_call("list", ctx.journal.list(&ctx.scope))
            .await?;
        let mut handles = Vec::with_capacity(leases.len());
        for lease in leases {
            if self.in_flight().contains(&lease.vm) {
                continue;
            }
            let current = ctx.incarnation(&lease.vm, policy.read_budget).await;
            let now = ctx.clock.now();
            if let Some(reason) = lease.staleness(now, current.as_ref(), policy.force_budget) {
                ctx.discard_stale(&lease, reason).await;
                continue;
            }
            let left = lease.time_left(now).max(Duration::from_millis(1));
            handles.push(self.start(&lease.vm, policy.clone().grace(left))?);
        }
        Ok(handles)
    }

    /// Whether this manager has a [`PreStopExecutor`], so that a policy's pre-stop hook can
    /// run (without one, a hook is reported failed and the shutdown goes on).
    pub fn runs_pre_stop_hooks(&self) -> bool {
        self.context.pre_stop.is_some()
    }

    /// VMs whose shutdown is in flight.
    pub fn in_flight(&self) -> Vec<VmId> {
        self.registry
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
        if let Ok(map) = self.registry.in_flight.lock() {
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
                return ShutdownReport::detached();
            }
            self.slot.report().await
        }
    }
}
