//! The thin async loop that executes the [`Machine`]'s commands against a provider.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::time::{Instant, sleep_until, timeout};

use super::context::ShutdownContext;
use super::events::{ShutdownEvent, ShutdownEventKind};
use super::lease::{Lease, to_ms, wall_add};
use super::machine::{Command, Input, Machine, MachineCaps, later};
use super::metrics;
use super::outcome::{ShutdownOutcome, ShutdownReport};
use super::policy::ShutdownPolicy;
use super::slot::Slot;
use crate::error::{Error, Result};
use crate::provider::{PowerOffOptions, PowerStateStream, ShutdownRequestOptions};
use crate::vm::{ShutdownChannel, VmId};

/// One shutdown in flight: everything its task needs, in one place.
///
/// The task's future is [`ShutdownTask::run`] on this value, so its size is this struct plus
/// the largest set of locals alive across one await (the wait: a sleep, a wake-up and the
/// next pushed state). Provider calls are boxed for the same reason.
pub(crate) struct ShutdownTask {
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
    pre_stop_ok: Option<bool>,
    /// The first sign that the VM was off (see `ShutdownReport::off_observed`).
    off_observed: Option<Instant>,
}

impl ShutdownTask {
    /// A task for `vm` under `policy`, whose grace ends at `deadline`.
    pub(crate) fn new(
        ctx: Arc<ShutdownContext>,
        slot: Arc<Slot>,
        vm: VmId,
        policy: ShutdownPolicy,
        deadline: Instant,
    ) -> Self {
        let caps = MachineCaps::from_provider(&ctx.provider.capabilities(), false);
        ShutdownTask {
            ctx,
            slot,
            vm,
            machine: Machine::new(policy, caps, deadline),
            stream: None,
            lease: None,
            started: Instant::now(),
            resumed: false,
            calls: 0,
            power_offs: 0,
            pre_stop_ok: None,
            off_observed: None,
        }
    }

    /// Sends a progress event, building it only when someone listens.
    fn emit(&self, kind: impl FnOnce() -> ShutdownEventKind) {
        if self.ctx.events.receiver_count() == 0 {
            return;
        }
        let _ = self.ctx.events.send(ShutdownEvent {
            vm: self.vm.clone(),
            elapsed: Instant::now().saturating_duration_since(self.started),
            kind: kind(),
        });
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

    /// Runs the shutdown to its end and returns its report (the manager publishes it).
    ///
    /// Not an `async fn`: that would keep a second copy of `self` in the future (the
    /// argument and its rebinding); the `async move` block mutates its capture in place.
    #[allow(
        clippy::manual_async_fn,
        reason = "an async fn would hold `self` twice in every waiting shutdown"
    )]
    pub(crate) fn run(mut self) -> impl Future<Output = ShutdownReport> + Send + 'static {
        async move {
            match Box::pin(self.open_lease()).await {
                Ok(()) => {
                    let report = self.drive().await;
                    Box::pin(self.close_lease()).await;
                    report
                }
                // Another process drives this VM: leave it (and its lease) alone.
                Err(error) => self.refused(error),
            }
        }
    }

    /// Records the lease before anything is sent. A journalled lease of this run of the VM
    /// (after a restart) is continued with the time it has left, never more than its
    /// original grace, or less if this request asks for less; a stale one is discarded.
    /// `Err` only when another process holds the lease.
    async fn open_lease(&mut self) -> Result<()> {
        let ctx = Arc::clone(&self.ctx);
        if !ctx.journal.is_durable() {
            return Ok(());
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
        let read_budget = self.machine.policy().read_budget;
        let incarnation = ctx.incarnation(&self.vm, read_budget).await;
        let wall_now = ctx.clock.now();
        if let Some(lease) = &existing
            && let Some(reason) = lease.staleness(
                wall_now,
                incarnation.as_ref(),
                self.machine.policy().force_budget,
            )
        {
            ctx.discard_stale(lease, reason).await;
            existing = None;
        }
        let lease = match existing {
            Some(mut lease) => {
                if let Some(channel) = lease.signalled {
                    self.machine.resume_signalled(channel);
                }
                let left = lease.time_left(wall_now).min(requested);
                lease.deadline_ms = to_ms(wall_add(wall_now, left));
                if lease.incarnation.is_none() {
                    lease.incarnation = incarnation;
                }
                self.resumed = true;
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
        self.machine.reset_deadline(self.slot.deadline());
        ctx.record(&lease, "the shutdown; it is not restart-safe")
            .await?;
        self.lease = Some(Box::new(lease));
        Ok(())
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

    /// The report of a shutdown this process may not drive.
    fn refused(&self, error: Error) -> ShutdownReport {
        tracing::warn!(vm = %self.vm, error = %error, "shutdown refused");
        let report = ShutdownReport {
            outcome: ShutdownOutcome::Failed { error },
            elapsed: Duration::ZERO,
            grace: Duration::ZERO,
            signals_sent: 0,
            power_off_calls: 0,
            provider_calls: self.calls,
            channel: None,
            pre_stop_ok: None,
            resumed: false,
            off_observed: None,
        };
        metrics::finished(self.ctx.provider.provider_type(), &report);
        self.emit(|| ShutdownEventKind::Finished(report.outcome.clone()));
        report
    }

    /// Drives the machine to its end.
    async fn drive(&mut self) -> ShutdownReport {
        let provider = Arc::clone(&self.ctx.provider);
        let read_budget = self.machine.policy().read_budget;

        // Subscribe before the first read so no change is missed.
        if provider.capabilities().power_state_watch {
            self.calls += 1;
            if let Some(Ok(s)) = self
                .call(
                    "watch_power_state",
                    read_budget,
                    provider.watch_power_state(&self.vm),
                )
                .await
            {
                self.stream = s;
            }
        }
        if self.stream.is_some() {
            self.machine.enable_push();
        }
        let deadline = self.machine.deadline();
        self.emit(|| ShutdownEventKind::Started {
            remaining: deadline.saturating_duration_since(Instant::now()),
            resumed: self.resumed,
        });
        let mut cmd = self.machine.start(Instant::now());

        let outcome = loop {
            if self.slot.deadline() < self.machine.deadline() {
                Box::pin(self.shorten()).await;
            }
            let input = match cmd {
                Command::Finish(outcome) => break outcome,
                Command::Wait { until } => self.wait(until).await,
                other => Box::pin(self.execute(other)).await,
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
            pre_stop_ok: self.pre_stop_ok,
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

    /// Waits until `until`, a pushed state, a shorter deadline or cancellation.
    async fn wait(&mut self, until: Instant) -> Input {
        let listen = self.stream.is_some() && self.machine.is_waiting();
        let forcing = self.machine.is_forcing();
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
                        self.machine.disable_push();
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
            if self.slot.deadline() < self.machine.deadline() {
                Box::pin(self.shorten()).await;
            }
        }
        Input::Wake
    }

    /// Executes one command other than waiting and finishing.
    async fn execute(&mut self, cmd: Command) -> Input {
        let provider = Arc::clone(&self.ctx.provider);
        match cmd {
            Command::ReadPowerState { timeout: t } => {
                self.calls += 1;
                match self
                    .call("power_state", t, provider.power_state(&self.vm))
                    .await
                {
                    None => Input::Cancel,
                    Some(r) => {
                        if let Ok(state) = &r {
                            self.emit(|| ShutdownEventKind::State(*state));
                        }
                        Input::PowerState(r)
                    }
                }
            }
            Command::RunPreStop { timeout: t } => {
                let argv = self
                    .machine
                    .policy()
                    .pre_stop
                    .as_ref()
                    .map(|h| h.command.clone())
                    .unwrap_or_default();
                let result = match &self.ctx.pre_stop {
                    Some(exec) => self.call("pre_stop", t, exec.exec(&self.vm, &argv)).await,
                    None => Some(Err(
                        Error::unsupported("pre_stop").with_resource(self.vm.to_string())
                    )),
                };
                match result {
                    None => Input::Cancel,
                    Some(r) => {
                        if let Err(e) = &r {
                            tracing::warn!(vm = %self.vm, error = %e, "pre-stop hook failed; continuing");
                        }
                        self.pre_stop_ok = Some(r.is_ok());
                        self.emit(|| ShutdownEventKind::PreStop { ok: r.is_ok() });
                        Input::PreStopDone(r)
                    }
                }
            }
            Command::ProbeAgent { timeout: t } => {
                self.calls += 1;
                match self
                    .call("probe_agent", t, provider.probe_agent(&self.vm))
                    .await
                {
                    None => Input::Cancel,
                    Some(r) => {
                        self.emit(|| ShutdownEventKind::AgentProbed(r.as_ref().ok().copied()));
                        Input::AgentProbed(r)
                    }
                }
            }
            Command::Resume { timeout: t } => {
                self.calls += 1;
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
                self.calls += 1;
                let opts = ShutdownRequestOptions::new(attempt, remaining);
                match self
                    .call(
                        "request_shutdown",
                        t,
                        provider.request_shutdown(&self.vm, channel, &opts),
                    )
                    .await
                {
                    None => Input::Cancel,
                    Some(r) => {
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
                }
            }
            Command::HardOff { timeout: t, reason } => {
                self.calls += 1;
                self.power_offs += 1;
                self.emit(|| ShutdownEventKind::Forcing(reason));
                // The hard power-off is never abandoned half-way: no cancellation here.
                let r = match timeout(t, provider.power_off(&self.vm, &PowerOffOptions::default()))
                    .await
                {
                    Ok(r) => r.map_err(|e| e.context(provider.provider_type(), "power_off")),
                    Err(_) => Err(
                        Error::timeout(format!("power_off did not answer within {t:?}"))
                            .with_provider(provider.provider_type())
                            .with_operation("power_off"),
                    ),
                };
                Input::HardOffDone(r)
            }
            Command::Disarm { timeout: t } => {
                self.calls += 1;
                // The shutdown is cancelled: this call is the one thing still sent, so it
                // is not abandoned on cancellation.
                let r = match timeout(t, provider.cancel_shutdown(&self.vm)).await {
                    Ok(r) => r.map_err(|e| e.context(provider.provider_type(), "cancel_shutdown")),
                    Err(_) => Err(Error::timeout(format!(
                        "cancel_shutdown did not answer within {t:?}"
                    ))
                    .with_provider(provider.provider_type())
                    .with_operation("cancel_shutdown")),
                };
                if let Err(e) = &r {
                    tracing::warn!(vm = %self.vm, error = %e, "could not disarm the provider's shutdown deadline");
                }
                let ok = r.is_ok();
                self.emit(|| ShutdownEventKind::Disarmed { ok });
                Input::Disarmed(r)
            }
            Command::Wait { .. } | Command::Finish(_) => Input::Wake,
        }
    }

    /// Applies the slot's (earlier) deadline to the machine and persists it, so a restart
    /// never lengthens it.
    async fn shorten(&mut self) {
        let before = self.machine.deadline();
        let now = Instant::now();
        self.machine.shorten(self.slot.deadline(), now);
        if self.machine.deadline() >= before {
            return;
        }
        let left = self.machine.deadline().saturating_duration_since(now);
        self.emit(|| ShutdownEventKind::Shortened { remaining: left });
        let ctx = Arc::clone(&self.ctx);
        let Some(lease) = self.lease.as_mut() else {
            return;
        };
        lease.deadline_ms = to_ms(wall_add(ctx.clock.now(), left));
        if let Err(e) = ctx.journal_call("record", ctx.journal.record(lease)).await {
            tracing::warn!(vm = %self.vm, error = %e, "could not journal the shortened deadline");
        }
    }
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

async fn next_event(
    stream: &mut Option<PowerStateStream>,
) -> Option<Result<crate::vm::PowerState>> {
    match stream {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}
