//! The thin async loop that executes the [`Machine`]'s commands against a provider.
//!
//! Before the machine is built, the task resolves where the shutdown starts: the lease (a
//! journalled deadline of this run of the VM shortens the grace) and the watch subscription
//! (pushed states, or polling). The machine is then built with its final deadline and owns
//! it: a join or a force moves the slot's deadline, and the loop hands that move to the
//! machine as [`Input::Shortened`] — in the wait, or before the next command when it came
//! while a call ran. The machine answers [`Command::Persist`] when its deadline moved.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::time::{Instant, sleep_until, timeout};

use super::context::ShutdownContext;
use super::events::ShutdownEventKind;
use super::hooks::PreStopRun;
use super::lease::{Lease, wall_add};
use super::machine::{Command, Input, Machine, MachineCaps, later};
use super::metrics;
use super::outcome::{ShutdownOutcome, ShutdownReport};
use super::policy::ShutdownPolicy;
use super::slot::Slot;
use crate::error::{Error, ErrorKind, Result};
use crate::provider::{PowerOffOptions, PowerStateStream, ShutdownRequestOptions};
use crate::vm::{ShutdownChannel, VmId};

/// One shutdown before it is driven: resolves its lease and its watch, then builds the
/// [`Machine`] and hands over to the loop ([`Driver`]).
pub(crate) struct ShutdownTask {
    ctx: Arc<ShutdownContext>,
    slot: Arc<Slot>,
    vm: VmId,
    policy: ShutdownPolicy,
    /// The deadline this request asked for (the slot's when the shutdown was started).
    requested: Instant,
    /// The start of the grace period (earlier for a resumed lease).
    started: Instant,
    /// Provider calls made while resolving.
    calls: u32,
}

/// Where a shutdown starts, as resolved from the journal.
struct Start {
    deadline: Instant,
    /// The lease as journalled (only with a durable journal).
    lease: Option<Box<Lease>>,
    /// The channel of a request an earlier process already delivered.
    delivered: Option<ShutdownChannel>,
    resumed: bool,
}

impl ShutdownTask {
    /// A task for `vm` under `policy`, whose grace ends at `requested`.
    pub(crate) fn new(
        ctx: Arc<ShutdownContext>,
        slot: Arc<Slot>,
        vm: VmId,
        policy: ShutdownPolicy,
        requested: Instant,
    ) -> Self {
        ShutdownTask {
            ctx,
            slot,
            vm,
            policy,
            requested,
            started: Instant::now(),
            calls: 0,
        }
    }

    /// Runs the shutdown to its end and returns its VM and report (the manager deregisters
    /// the VM and publishes the report).
    ///
    /// Not an `async fn`: that would keep the whole task in the future for its lifetime,
    /// beside the driver built from it. The task is boxed until then, so a waiting shutdown
    /// holds one pointer, not a second copy of the task and its policy.
    pub(crate) fn run(self) -> impl Future<Output = (VmId, ShutdownReport)> + Send + 'static {
        let task = Box::new(self);
        async move {
            let mut driver = match Box::pin(task.prepare()).await {
                Ok(driver) => driver,
                Err(refused) => return refused,
            };
            let report = driver.drive().await;
            Box::pin(driver.close_lease()).await;
            (driver.vm, report)
        }
    }

    /// Resolves the lease and the watch, then builds the machine with its final deadline and
    /// push capability. `Err`: the report of a shutdown another process drives (this one
    /// leaves the VM and its lease alone).
    async fn prepare(mut self: Box<Self>) -> std::result::Result<Driver, (VmId, ShutdownReport)> {
        let start = match self.resolve().await {
            Ok(start) => start,
            Err(error) => {
                let report = self.refused(error);
                return Err((self.vm, report));
            }
        };
        let stream = self.subscribe().await;
        let caps = MachineCaps::from_provider(&self.ctx.provider.capabilities(), stream.is_some());
        let task = *self;
        let mut machine = Machine::new(task.policy, caps, start.deadline);
        if let Some(channel) = start.delivered {
            machine = machine.resumed(channel);
        }
        Ok(Driver {
            ctx: task.ctx,
            slot: task.slot,
            vm: task.vm,
            machine,
            stream,
            lease: start.lease,
            started: task.started,
            resumed: start.resumed,
            calls: task.calls,
            power_offs: 0,
            pre_stop: None,
            read_once: false,
            off_observed: None,
        })
    }

    /// Records the lease before anything is sent and returns the deadline. A journalled
    /// lease of this run of the VM (after a restart) is continued with the time it has left,
    /// never more than its original grace, or less if this request asks for less; a stale
    /// one is discarded. `Err` only when another process holds the lease.
    async fn resolve(&mut self) -> Result<Start> {
        let ctx = Arc::clone(&self.ctx);
        if !ctx.journal.is_durable() {
            return Ok(Start {
                deadline: self.requested,
                lease: None,
                delivered: None,
                resumed: false,
            });
        }
        let requested_at = Instant::now();
        let requested = self.slot.deadline().saturating_duration_since(requested_at);
        let mut existing = match ctx
            .journal_call("read", ctx.journal.get(&ctx.scope, &self.vm))
            .await
        {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(vm = %self.vm, error = %e, "could not read the shutdown journal");
                None
            }
        };
        self.calls += 1;
        let incarnation = ctx.incarnation(&self.vm, self.policy.read_budget).await;
        let wall_now = ctx.clock.now();
        if let Some(lease) = &existing
            && let Some(reason) =
                lease.staleness(wall_now, incarnation.as_ref(), self.policy.force_budget)
        {
            ctx.discard_stale(lease, reason).await;
            existing = None;
        }
        let resumed = existing.is_some();
        let lease = match existing {
            Some(mut lease) => {
                let left = lease.time_left(wall_now).min(requested);
                lease.end_in(wall_now, left);
                if lease.incarnation.is_none() {
                    lease.incarnation = incarnation;
                }
                self.started = requested_at
                    .checked_sub(lease.elapsed(wall_now))
                    .unwrap_or(requested_at);
                self.slot.shorten(later(requested_at, left));
                lease
            }
            None => Lease::new(
                &ctx.scope,
                self.vm.clone(),
                wall_now,
                wall_add(wall_now, requested),
            )
            .with_incarnation(incarnation),
        };
        let deadline = self.slot.take_deadline();
        ctx.record(&lease, "the shutdown; it is not restart-safe")
            .await?;
        Ok(Start {
            deadline,
            delivered: lease.signalled,
            lease: Some(Box::new(lease)),
            resumed,
        })
    }

    /// Subscribes to pushed power states where the provider can, before the first read so
    /// no change is missed; `None`: the machine polls.
    async fn subscribe(&mut self) -> Option<PowerStateStream> {
        let provider = Arc::clone(&self.ctx.provider);
        if !provider.capabilities().power_state_watch {
            return None;
        }
        self.calls += 1;
        let subscribed = call(
            &self.slot,
            provider.provider_type(),
            &self.vm,
            "watch_power_state",
            self.policy.read_budget,
            provider.watch_power_state(&self.vm),
        )
        .await;
        match subscribed {
            Some(Ok(stream)) => stream,
            _ => None,
        }
    }

    /// The report of a shutdown this process may not drive.
    fn refused(&self, error: Error) -> ShutdownReport {
        tracing::warn!(vm = %self.vm, error = %error, "shutdown refused");
        let mut report = ShutdownReport::empty(ShutdownOutcome::Failed { error });
        report.provider_calls = self.calls;
        metrics::finished(self.ctx.provider.provider_type(), &report);
        self.ctx.emit(&self.vm, self.started, || {
            ShutdownEventKind::Finished(report.outcome.clone())
        });
        report
    }
}

/// One shutdown being driven: its machine, and what the loop counts for the report.
///
/// The task's future holds this value, so its size is this struct plus the largest set of
/// locals alive across one await (the wait: a sleep, a wake-up and the next pushed state).
/// Provider calls are boxed for the same reason.
struct Driver {
    ctx: Arc<ShutdownContext>,
    slot: Arc<Slot>,
    vm: VmId,
    machine: Machine,
    stream: Option<PowerStateStream>,
    /// The lease as journalled (only with a durable journal).
    lease: Option<Box<Lease>>,
    started: Instant,
    resumed: bool,
    calls: u32,
    power_offs: u32,
    pre_stop: Option<PreStopRun>,
    /// Whether the power state was read yet (the first read also asks for the agent).
    read_once: bool,
    /// The first sign that the VM was off (see `ShutdownReport::off_observed`).
    off_observed: Option<Instant>,
}

impl Driver {
    /// Sends a progress event, building it only when someone listens.
    fn emit(&self, kind: impl FnOnce() -> ShutdownEventKind) {
        self.ctx.emit(&self.vm, self.started, kind);
    }

    /// Runs `fut` time-boxed by `limit` and abandoned on cancellation (see [`call`]).
    fn call<'a, T: Send + 'a>(
        &'a self,
        op: &'static str,
        limit: Duration,
        fut: impl Future<Output = Result<T>> + Send + 'a,
    ) -> Pin<Box<dyn Future<Output = Option<Result<T>>> + Send + 'a>> {
        call(
            &self.slot,
            self.ctx.provider.provider_type(),
            &self.vm,
            op,
            limit,
            fut,
        )
    }

    /// Drives the machine to its end.
    async fn drive(&mut self) -> ShutdownReport {
        let provider = Arc::clone(&self.ctx.provider);
        let deadline = self.machine.deadline();
        self.emit(|| ShutdownEventKind::Started {
            remaining: deadline.saturating_duration_since(Instant::now()),
            resumed: self.resumed,
        });
        let mut cmd = self.machine.start();

        let outcome = loop {
            let input = match cmd {
                Command::Wait { until } => self.wait(until).await,
                Command::Persist { remaining, .. } => {
                    Box::pin(self.persist(remaining)).await;
                    Input::Persisted
                }
                // A deadline moved while the last call ran: the machine hears of it before
                // anything more is sent (it then repeats this command).
                cmd => match self.slot.take_shortened() {
                    Some(at) => Input::Shortened(at),
                    None => match cmd {
                        Command::Finish(outcome) => break outcome,
                        cmd => Box::pin(self.execute(cmd)).await,
                    },
                },
            };
            match shows_off(&input) {
                Some(true) if self.off_observed.is_none() => {
                    self.off_observed = Some(Instant::now());
                }
                // A later read says it runs after all: that sign was not the end.
                Some(false) => self.off_observed = None,
                _ => {}
            }
            cmd = self.machine.on(input, Instant::now());
        };

        let now = Instant::now();
        let report = ShutdownReport {
            elapsed: now.saturating_duration_since(self.started),
            grace: self
                .machine
                .deadline()
                .saturating_duration_since(self.started),
            signals_sent: self.machine.signals_sent(),
            power_off_calls: self.power_offs,
            provider_calls: self.calls,
            channel: self.machine.channel(),
            pre_stop: self.pre_stop.clone(),
            resumed: self.resumed,
            off_observed: self
                .off_observed
                .filter(|_| outcome.is_off())
                .map(|t| t.saturating_duration_since(self.started)),
            outcome,
        };
        metrics::finished(provider.provider_type(), &report);
        self.emit(|| ShutdownEventKind::Finished(report.outcome.clone()));
        match &report.outcome {
            ShutdownOutcome::Failed { error } => {
                tracing::warn!(vm = %self.vm, error = %error, elapsed = ?report.elapsed, "shutdown failed")
            }
            outcome => {
                tracing::info!(vm = %self.vm, outcome = %outcome, elapsed = ?report.elapsed, "shutdown finished")
            }
        }
        report
    }

    /// Waits until `until`, a pushed state, a shorter deadline or cancellation. The hard
    /// power-off's pauses are not cut short: a shorter deadline is only handed over then.
    async fn wait(&mut self, until: Instant) -> Input {
        let forcing = self.machine.is_forcing();
        if forcing && let Some(at) = self.slot.take_shortened() {
            return Input::Shortened(at);
        }
        let listen = self.stream.is_some() && self.machine.is_waiting();
        let woken = tokio::select! {
            biased;
            _ = self.slot.woken(), if !forcing => true,
            ev = next_event(&mut self.stream), if listen => {
                return match ev {
                    Some(Ok(state)) => {
                        self.emit(|| ShutdownEventKind::State(state));
                        Input::Pushed(state)
                    }
                    _ => {
                        self.stream = None;
                        Input::PushClosed
                    }
                };
            }
            _ = sleep_until(until) => false,
        };
        if woken {
            if self.slot.is_cancelled() {
                return Input::Cancel;
            }
            if let Some(at) = self.slot.take_shortened() {
                return Input::Shortened(at);
            }
        }
        Input::Wake
    }

    /// Executes one command other than waiting, persisting and finishing.
    async fn execute(&mut self, cmd: Command) -> Input {
        let provider = Arc::clone(&self.ctx.provider);
        if calls_provider(&cmd) {
            self.calls += 1;
        }
        match cmd {
            Command::ReadPowerState { timeout: t } => {
                // The first read also asks for the agent's status (the probe it may save).
                let first = !std::mem::replace(&mut self.read_once, true);
                let vm = self.vm.clone();
                let read = async move {
                    if first {
                        provider.power_state_and_agent(&vm).await
                    } else {
                        provider.power_state(&vm).await.map(|s| (s, None))
                    }
                };
                let Some(r) = self.call("power_state", t, read).await else {
                    return Input::Cancel;
                };
                let r = r.map(|(state, agent)| {
                    if let Some(a) = agent {
                        self.machine.note_agent(a);
                    }
                    state
                });
                if let Ok(state) = &r {
                    self.emit(|| ShutdownEventKind::State(*state));
                }
                Input::PowerState(r)
            }
            Command::RunPreStop { argv, timeout: t } => {
                let began = Instant::now();
                let result = match &self.ctx.pre_stop {
                    Some(exec) => self.call("pre_stop", t, exec.exec(&self.vm, &argv)).await,
                    None => Some(Err(Error::new(
                        ErrorKind::Unsupported,
                        "this shutdown manager has no pre-stop executor",
                    )
                    .with_operation("pre_stop")
                    .with_resource(self.vm.to_string()))),
                };
                let Some(r) = result else {
                    return Input::Cancel;
                };
                let run = PreStopRun::from_result(&r, began.elapsed());
                if !run.is_ok() {
                    tracing::warn!(vm = %self.vm, hook = %run, "pre-stop hook failed; the shutdown goes on");
                }
                let done = if run.is_ok() {
                    Ok(())
                } else {
                    Err(Error::new(
                        ErrorKind::InvalidState,
                        format!("pre-stop hook {run}"),
                    ))
                };
                self.emit(|| ShutdownEventKind::PreStop {
                    ok: run.is_ok(),
                    exit_code: run.exit_code(),
                    detail: run.to_string(),
                });
                self.pre_stop = Some(run);
                Input::PreStopDone(done)
            }
            Command::ProbeAgent { timeout: t } => {
                let Some(r) = self
                    .call("probe_agent", t, provider.probe_agent(&self.vm))
                    .await
                else {
                    return Input::Cancel;
                };
                self.emit(|| ShutdownEventKind::AgentProbed(r.as_ref().ok().copied()));
                Input::AgentProbed(r)
            }
            Command::Resume { timeout: t } => {
                match self.call("resume", t, provider.resume(&self.vm)).await {
                    None => Input::Cancel,
                    Some(r) => Input::Resumed(r),
                }
            }
            Command::Signal {
                channel,
                timeout: t,
                attempt,
                remaining,
            } => {
                let opts = ShutdownRequestOptions::new(attempt, remaining);
                let Some(r) = self
                    .call(
                        "request_shutdown",
                        t,
                        provider.request_shutdown(&self.vm, channel, &opts),
                    )
                    .await
                else {
                    return Input::Cancel;
                };
                match &r {
                    Ok(()) => {
                        metrics::signal_sent(provider.provider_type(), channel);
                        self.emit(|| ShutdownEventKind::Signalled { channel, attempt });
                        Box::pin(self.journal_signal(channel)).await;
                    }
                    Err(e) => self.emit(|| ShutdownEventKind::SignalFailed {
                        channel,
                        error: e.to_string(),
                    }),
                }
                Input::Signalled(r)
            }
            Command::HardOff { timeout: t, reason } => {
                self.power_offs += 1;
                self.emit(|| ShutdownEventKind::Forcing(reason));
                // The hard power-off is never abandoned half-way: no cancellation here.
                let r = time_boxed(
                    provider.provider_type(),
                    "power_off",
                    t,
                    provider.power_off(&self.vm, &PowerOffOptions::default()),
                )
                .await;
                Input::HardOffDone(r)
            }
            Command::Disarm { timeout: t } => {
                // The shutdown is cancelled: this call is the one thing still sent, so it
                // is not abandoned on cancellation.
                let r = time_boxed(
                    provider.provider_type(),
                    "cancel_shutdown",
                    t,
                    provider.cancel_shutdown(&self.vm),
                )
                .await;
                if let Err(e) = &r {
                    tracing::warn!(vm = %self.vm, error = %e, "could not disarm the provider's shutdown deadline");
                }
                let ok = r.is_ok();
                self.emit(|| ShutdownEventKind::Disarmed { ok });
                Input::Disarmed(r)
            }
            Command::Wait { .. } | Command::Persist { .. } | Command::Finish(_) => Input::Wake,
        }
    }

    /// Records the first delivered request in the lease, so a restart does not send it again.
    async fn journal_signal(&mut self, channel: ShutdownChannel) {
        let ctx = Arc::clone(&self.ctx);
        let Some(lease) = self.lease.as_mut() else {
            return;
        };
        if lease.signalled.is_some() {
            return;
        }
        lease.signalled = Some(channel);
        if let Err(e) = ctx.journal_call("record", ctx.journal.record(lease)).await {
            tracing::warn!(vm = %self.vm, error = %e, "could not journal the delivered request");
        }
    }

    /// The machine's deadline moved earlier, to `remaining` from now: tell listeners and
    /// persist it, so a restart never lengthens it.
    async fn persist(&mut self, remaining: Duration) {
        self.emit(|| ShutdownEventKind::Shortened { remaining });
        let ctx = Arc::clone(&self.ctx);
        let Some(lease) = self.lease.as_mut() else {
            return;
        };
        lease.end_in(ctx.clock.now(), remaining);
        if let Err(e) = ctx.journal_call("record", ctx.journal.record(lease)).await {
            tracing::warn!(vm = %self.vm, error = %e, "could not journal the shortened deadline");
        }
    }

    /// Removes the lease at the end.
    async fn close_lease(&mut self) {
        let ctx = &self.ctx;
        if self.lease.take().is_none() {
            return;
        }
        if let Err(e) = ctx
            .journal_call("remove", ctx.journal.remove(&ctx.scope, &self.vm))
            .await
        {
            tracing::warn!(vm = %self.vm, error = %e, "could not remove the shutdown lease");
        }
    }
}

/// Whether executing `cmd` makes a provider call (counted in the report).
fn calls_provider(cmd: &Command) -> bool {
    !matches!(
        cmd,
        Command::RunPreStop { .. }
            | Command::Wait { .. }
            | Command::Persist { .. }
            | Command::Finish(_)
    )
}

/// What `input` says about the VM being off, if anything.
fn shows_off(input: &Input) -> Option<bool> {
    match input {
        Input::Pushed(state) | Input::PowerState(Ok(state)) => Some(state.is_off()),
        Input::HardOffDone(Ok(())) => Some(true),
        _ => None,
    }
}

/// Runs `fut` time-boxed by `limit`; `None` when the shutdown is cancelled first. Boxed, so
/// that a waiting shutdown does not keep room for every kind of call in its own state.
fn call<'a, T: Send + 'a>(
    slot: &'a Slot,
    provider_type: &'static str,
    vm: &'a VmId,
    op: &'static str,
    limit: Duration,
    fut: impl Future<Output = Result<T>> + Send + 'a,
) -> Pin<Box<dyn Future<Output = Option<Result<T>>> + Send + 'a>> {
    Box::pin(async move {
        tokio::select! {
            biased;
            _ = slot.cancelled() => None,
            r = timeout(limit, fut) => Some(match r {
                Ok(r) => r.map_err(|e| e.context(provider_type, op)),
                Err(_) => Err(Error::timeout(format!("{op} did not answer within {limit:?}"))
                    .with_provider(provider_type)
                    .with_operation(op)
                    .with_resource(vm.to_string())),
            }),
        }
    })
}

/// Runs `fut` time-boxed by `limit`, not abandoned on cancellation (the hard power-off, the
/// disarm of a cancelled shutdown).
async fn time_boxed<T>(
    provider_type: &'static str,
    op: &'static str,
    limit: Duration,
    fut: impl Future<Output = Result<T>>,
) -> Result<T> {
    match timeout(limit, fut).await {
        Ok(r) => r.map_err(|e| e.context(provider_type, op)),
        Err(_) => Err(
            Error::timeout(format!("{op} did not answer within {limit:?}"))
                .with_provider(provider_type)
                .with_operation(op),
        ),
    }
}

async fn next_event(
    stream: &mut Option<PowerStateStream>,
) -> Option<Result<crate::vm::PowerState>> {
    match stream {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}
