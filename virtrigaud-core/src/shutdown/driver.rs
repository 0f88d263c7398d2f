//! The thin async loop that executes the [`Machine`]'s commands against a provider.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{broadcast, watch};
use tokio::time::{Instant, sleep_until, timeout};
use tokio_util::sync::CancellationToken;

use super::clock::WallClock;
use super::events::{ShutdownEvent, ShutdownEventKind};
use super::hooks::PreStopExecutor;
use super::journal::{Lease, ShutdownJournal};
use super::machine::{Command, Input, Machine, MachineCaps};
use super::metrics;
use super::outcome::{ShutdownOutcome, ShutdownReport};
use super::policy::ShutdownPolicy;
use crate::error::{Error, Result};
use crate::provider::{PowerOffOptions, PowerStateStream, Provider, ShutdownRequestOptions};
use crate::vm::VmId;

/// Everything one run needs.
pub(crate) struct Run {
    pub(crate) provider: Arc<dyn Provider>,
    pub(crate) vm: VmId,
    pub(crate) deadline: watch::Receiver<Instant>,
    pub(crate) cancel: CancellationToken,
    pub(crate) events: broadcast::Sender<ShutdownEvent>,
    pub(crate) pre_stop: Option<Arc<dyn PreStopExecutor>>,
    pub(crate) journal: Arc<dyn ShutdownJournal>,
    pub(crate) clock: Arc<dyn WallClock>,
    pub(crate) lease: Lease,
    pub(crate) started: Instant,
    pub(crate) resumed: bool,
}

struct Counters {
    calls: u32,
    power_offs: u32,
    pre_stop_ok: Option<bool>,
}

impl Run {
    /// Sends a progress event, building it only when someone listens.
    fn emit(&self, kind: impl FnOnce() -> ShutdownEventKind) {
        if self.events.receiver_count() == 0 {
            return;
        }
        let _ = self.events.send(ShutdownEvent {
            vm: self.vm.clone(),
            elapsed: Instant::now().saturating_duration_since(self.started),
            kind: kind(),
        });
    }

    /// Runs `fut` time-boxed by `limit` and abandoned on cancellation. Boxed, so that a
    /// waiting shutdown does not keep room for every kind of call in its own state.
    fn call<'a, T: Send + 'a>(
        &'a self,
        op: &'static str,
        limit: Duration,
        fut: impl Future<Output = Result<T>> + Send + 'a,
    ) -> Pin<Box<dyn Future<Output = Option<Result<T>>> + Send + 'a>> {
        Box::pin(async move {
            tokio::select! {
                biased;
                _ = self.cancel.cancelled() => None,
                r = timeout(limit, fut) => Some(match r {
                    Ok(r) => r.map_err(|e| e.context(self.provider.provider_type(), op)),
                    Err(_) => Err(Error::timeout(format!("{op} did not answer within {limit:?}"))
                        .with_provider(self.provider.provider_type())
                        .with_operation(op)
                        .with_resource(self.vm.to_string())),
                }),
            }
        })
    }
}

/// Drives one shutdown to its end.
pub(crate) async fn drive(mut run: Run, policy: ShutdownPolicy) -> ShutdownReport {
    let provider = Arc::clone(&run.provider);
    let caps = provider.capabilities();
    let mut counters = Counters {
        calls: 0,
        power_offs: 0,
        pre_stop_ok: None,
    };

    // Subscribe before the first read so no change is missed.
    let mut stream: Option<PowerStateStream> = None;
    if caps.power_state_watch {
        counters.calls += 1;
        if let Some(Ok(s)) = run
            .call(
                "watch_power_state",
                policy.read_budget,
                provider.watch_power_state(&run.vm),
            )
            .await
        {
            stream = s;
        }
    }

    let deadline = *run.deadline.borrow_and_update();
    let pre_stop_argv = policy
        .pre_stop
        .as_ref()
        .map(|h| h.command.clone())
        .unwrap_or_default();
    let mut machine = Machine::new(
        policy,
        MachineCaps::from_provider(&caps, stream.is_some()),
        deadline,
    );
    run.emit(|| ShutdownEventKind::Started {
        remaining: deadline.saturating_duration_since(Instant::now()),
        resumed: run.resumed,
    });
    let mut deadline_open = true;
    let mut cmd = machine.start(Instant::now());

    let outcome = loop {
        if deadline_open && run.deadline.has_changed().unwrap_or(false) {
            let d = *run.deadline.borrow_and_update();
            Box::pin(shorten(&mut run, &mut machine, d)).await;
        }
        let input = match cmd {
            Command::Finish(outcome) => break outcome,
            Command::ReadPowerState { timeout: t } => {
                counters.calls += 1;
                match run
                    .call("power_state", t, provider.power_state(&run.vm))
                    .await
                {
                    None => Input::Cancel,
                    Some(r) => {
                        if let Ok(state) = &r {
                            run.emit(|| ShutdownEventKind::State(*state));
                        }
                        Input::PowerState(r)
                    }
                }
            }
            Command::RunPreStop { timeout: t } => {
                let result = match &run.pre_stop {
                    Some(exec) => {
                        run.call("pre_stop", t, exec.exec(&run.vm, &pre_stop_argv))
                            .await
                    }
                    None => Some(Err(
                        Error::unsupported("pre_stop").with_resource(run.vm.to_string())
                    )),
                };
                match result {
                    None => Input::Cancel,
                    Some(r) => {
                        if let Err(e) = &r {
                            tracing::warn!(vm = %run.vm, error = %e, "pre-stop hook failed; continuing");
                        }
                        counters.pre_stop_ok = Some(r.is_ok());
                        run.emit(|| ShutdownEventKind::PreStop { ok: r.is_ok() });
                        Input::PreStopDone(r)
                    }
                }
            }
            Command::ProbeAgent { timeout: t } => {
                counters.calls += 1;
                match run
                    .call("probe_agent", t, provider.probe_agent(&run.vm))
                    .await
                {
                    None => Input::Cancel,
                    Some(r) => {
                        run.emit(|| ShutdownEventKind::AgentProbed(r.as_ref().ok().copied()));
                        Input::AgentProbed(r)
                    }
                }
            }
            Command::Resume { timeout: t } => {
                counters.calls += 1;
                match run.call("resume", t, provider.resume(&run.vm)).await {
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
                counters.calls += 1;
                let opts = ShutdownRequestOptions::new(attempt, remaining);
                match run
                    .call(
                        "request_shutdown",
                        t,
                        provider.request_shutdown(&run.vm, channel, &opts),
                    )
                    .await
                {
                    None => Input::Cancel,
                    Some(r) => {
                        match &r {
                            Ok(()) => {
                                metrics::signal_sent(provider.provider_type(), channel);
                                run.emit(|| ShutdownEventKind::Signalled { channel, attempt });
                            }
                            Err(e) => run.emit(|| ShutdownEventKind::SignalFailed {
                                channel,
                                error: e.to_string(),
                            }),
                        }
                        Input::Signalled(r)
                    }
                }
            }
            Command::Wait { until } => {
                let listen = stream.is_some() && machine.is_waiting();
                let forcing = machine.is_forcing();
                tokio::select! {
                    biased;
                    _ = run.cancel.cancelled(), if !forcing => Input::Cancel,
                    changed = run.deadline.changed(), if deadline_open && !forcing => {
                        if changed.is_ok() {
                            let d = *run.deadline.borrow_and_update();
                            Box::pin(shorten(&mut run, &mut machine, d)).await;
                        } else {
                            deadline_open = false;
                        }
                        Input::Wake
                    }
                    ev = next_event(&mut stream), if listen => match ev {
                        Some(Ok(state)) => {
                            run.emit(|| ShutdownEventKind::State(state));
                            Input::Pushed(state)
                        }
                        _ => {
                            stream = None;
                            machine.disable_push();
                            Input::PushClosed
                        }
                    },
                    _ = sleep_until(until) => Input::Wake,
                }
            }
            Command::HardOff { timeout: t, reason } => {
                counters.calls += 1;
                counters.power_offs += 1;
                run.emit(|| ShutdownEventKind::Forcing(reason));
                // The hard power-off is never abandoned half-way: no cancellation here.
                let r = match timeout(t, provider.power_off(&run.vm, &PowerOffOptions::default()))
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
        };
        cmd = machine.on(input, Instant::now());
    };

    let now = Instant::now();
    let report = ShutdownReport {
        elapsed: now.saturating_duration_since(run.started),
        grace: machine.deadline().saturating_duration_since(run.started),
        signals_sent: machine.signals_sent(),
        power_off_calls: counters.power_offs,
        provider_calls: counters.calls,
        channel: machine.channel(),
        pre_stop_ok: counters.pre_stop_ok,
        resumed: run.resumed,
        outcome,
    };
    metrics::finished(provider.provider_type(), &report);
    run.emit(|| ShutdownEventKind::Finished(report.outcome.clone()));
    match &report.outcome {
        ShutdownOutcome::Failed { error } => {
            tracing::warn!(vm = %run.vm, error = %error, elapsed = ?report.elapsed, "shutdown failed")
        }
        outcome => {
            tracing::info!(vm = %run.vm, outcome = %outcome, elapsed = ?report.elapsed, "shutdown finished")
        }
    }
    report
}

async fn shorten(run: &mut Run, machine: &mut Machine, deadline: Instant) {
    let before = machine.deadline();
    let now = Instant::now();
    machine.shorten(deadline, now);
    if machine.deadline() < before {
        run.emit(|| ShutdownEventKind::Shortened {
            remaining: machine.deadline().saturating_duration_since(now),
        });
        // Persist the shorter deadline so a restart never lengthens it.
        let left = machine.deadline().saturating_duration_since(now);
        let wall = run.clock.now() + left;
        let mut lease = run.lease.clone();
        lease.deadline_ms = super::journal::to_ms(wall);
        if let Err(e) = run.journal.record(&lease).await {
            tracing::warn!(vm = %run.vm, error = %e, "could not journal the shortened deadline");
        }
        run.lease = lease;
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
