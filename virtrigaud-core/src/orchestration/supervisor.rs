//! A small embeddable supervisor enforcing a VM's [`RunStrategy`].
//!
//! | strategy         | VM stops on its own (clean)  | VM crashes / fails            | on (re)start of the supervisor |
//! |------------------|------------------------------|-------------------------------|--------------------------------|
//! | `Always`         | restarted                    | restarted, with backoff       | started if off                 |
//! | `RerunOnFailure` | left off                     | restarted, with backoff       | started if off                 |
//! | `Manual`         | left off                     | left as is                    | nothing                        |
//! | `Halted`         | kept off (stopped if started)| kept off                      | stopped if on                  |
//! | `Once`           | left off                     | left off                      | started once                   |
//!
//! A run shorter than [`SupervisorConfig::min_uptime`] counts as a failed boot; restart
//! delays double with each consecutive failed boot, and after
//! [`SupervisorConfig::max_failed_boots`] the supervisor gives up (event `RestartGivenUp`)
//! instead of looping on a guest that cannot boot. A `start` action resets it. A `stop`
//! action under `Always`/`RerunOnFailure` suspends restarts until the next `start`.

use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::events::EventReason;
use super::metrics;
use super::orchestrator::{Orchestrator, deadline_after};
use crate::capabilities::ProviderCapabilities;
use crate::error::{Error, ErrorKind, Result};
use crate::model::{
    LifecycleAction, LifecycleActionKind, LifecycleState, RunStrategy, RunStrategyState,
};
use crate::vm::{OffReason, PowerState, VmId};

/// Settings of a [`Supervisor`].
///
/// No duration here can overflow the clock or panic the supervisor: a poll interval or
/// restart delay too long to set as a timer (beyond about 30 years, up to `Duration::MAX`)
/// saturates, and the doubling of `restart_backoff` saturates too. So `Duration::MAX` as
/// `poll_interval` means "react only to pushed power-state changes and to commands", and as
/// a backoff "do not restart until a `start` action or a new strategy".
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SupervisorConfig {
    /// How often the power state is read. Default 2 s.
    pub poll_interval: Duration,
    /// Delay before the first restart after a failure; doubles per consecutive failed boot.
    /// Default 5 s.
    pub restart_backoff: Duration,
    /// Longest restart delay. Default 5 min.
    pub max_restart_backoff: Duration,
    /// A run shorter than this is a failed boot. Default 60 s.
    pub min_uptime: Duration,
    /// Consecutive failed boots before giving up. Default 5.
    pub max_failed_boots: u32,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        SupervisorConfig {
            poll_interval: Duration::from_secs(2),
            restart_backoff: Duration::from_secs(5),
            max_restart_backoff: Duration::from_secs(300),
            min_uptime: Duration::from_secs(60),
            max_failed_boots: 5,
        }
    }
}

/// What the supervisor is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SupervisorPhase {
    /// Watching; nothing to do.
    Watching,
    /// Waiting before a restart.
    BackingOff {
        /// Consecutive failed boots so far.
        failed_boots: u32,
    },
    /// Restarts are suspended by a user `stop`.
    StoppedByUser,
    /// Gave up restarting a VM that cannot stay up.
    GaveUp,
}

/// A snapshot of the supervisor's state.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct SupervisorStatus {
    /// The strategy enforced.
    pub strategy: RunStrategy,
    /// What it is doing.
    pub phase: SupervisorPhase,
    /// Restarts made after the VM stopped or failed.
    pub restarts: u32,
    /// The last power state read.
    pub power_state: Option<PowerState>,
    /// The last error (a failed read, start or stop).
    pub last_error: Option<String>,
    /// What must survive a restart of this process: store it (in
    /// `status.runStrategyState`) and hand it to [`Supervisor::spawn_resuming`].
    pub memory: RunStrategyState,
}

enum Command {
    SetStrategy(RunStrategy),
    Action(LifecycleAction, oneshot::Sender<Result<LifecycleState>>),
}

/// Spawns run-strategy supervisors.
#[derive(Debug)]
pub struct Supervisor;

impl Supervisor {
    /// Supervises `vm` with `strategy` in a task of the current tokio runtime, from a
    /// clean slate.
    pub fn spawn(
        orch: Orchestrator,
        vm: VmId,
        strategy: RunStrategy,
        config: SupervisorConfig,
    ) -> SupervisorHandle {
        Self::spawn_resuming(orch, vm, strategy, config, RunStrategyState::default())
    }

    /// Supervises `vm` again after a restart of the process, from the `memory` an earlier
    /// supervisor published ([`SupervisorStatus::memory`]): `Once` does not start the VM a
    /// second time, a user's `stop` still holds, a give-up stays given up.
    pub fn spawn_resuming(
        orch: Orchestrator,
        vm: VmId,
        strategy: RunStrategy,
        config: SupervisorConfig,
        memory: RunStrategyState,
    ) -> SupervisorHandle {
        let (cmd_tx, cmd_rx) = mpsc::channel(16);
        let status = SupervisorStatus {
            strategy,
            phase: SupervisorPhase::Watching,
            restarts: memory.restarts,
            power_state: None,
            last_error: None,
            memory,
        };
        let (status_tx, status_rx) = watch::channel(status);
        let cancel = CancellationToken::new();
        let task = Task {
            orch,
            vm,
            config,
            strategy,
            status: status_tx,
            once_done: memory.once_done,
            stopped_by_user: memory.stopped_by_user,
            gave_up: memory.gave_up,
            failed_boots: memory.failed_boots,
            last_start: None,
            next_restart: None,
        };
        let join = tokio::spawn(task.run(cmd_rx, cancel.clone()));
        SupervisorHandle {
            cmd: cmd_tx,
            status: status_rx,
            cancel,
            join: Some(join),
        }
    }
}

/// Whether a provider with `caps` can honour `strategy`: `RerunOnFailure` needs
/// [`crate::ProviderCapabilities::failure_detection`], since a guest that crashed must be told
/// from one that stopped cleanly. `Err` (`Unsupported`, naming `spec.runStrategy`) says why
/// not; a supervisor given such a strategy publishes that error, emits a
/// `RunStrategyNotHonoured` Warning, and treats every stop as clean (the VM is left off, as
/// under `Manual`).
pub fn check_run_strategy(strategy: RunStrategy, caps: &ProviderCapabilities) -> Result<()> {
    if strategy == RunStrategy::RerunOnFailure && !caps.failure_detection {
        return Err(Error::new(
            ErrorKind::Unsupported,
            "spec.runStrategy: RerunOnFailure cannot be honoured: this provider does not tell \
             a guest that crashed from one that stopped cleanly",
        ));
    }
    Ok(())
}

/// Controls a running supervisor. Dropping it stops the supervisor (the VM is left as is).
#[derive(Debug)]
pub struct SupervisorHandle {
    cmd: mpsc::Sender<Command>,
    status: watch::Receiver<SupervisorStatus>,
    cancel: CancellationToken,
    join: Option<JoinHandle<()>>,
}

impl SupervisorHandle {
    /// The current status.
    pub fn status(&self) -> SupervisorStatus {
        self.status.borrow().clone()
    }

    /// A receiver of status changes.
    pub fn watch(&self) -> watch::Receiver<SupervisorStatus> {
        self.status.clone()
    }

    /// Changes the strategy (clears a user stop and a give-up).
    pub async fn set_strategy(&self, strategy: RunStrategy) -> Result<()> {
        self.cmd
            .send(Command::SetStrategy(strategy))
            .await
            .map_err(|_| Error::cancelled("the supervisor has stopped"))
    }

    /// Applies a lifecycle action through the supervisor (so it knows a stop was wanted).
    pub async fn action(&self, action: LifecycleAction) -> Result<LifecycleState> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(Command::Action(action, tx))
            .await
            .map_err(|_| Error::cancelled("the supervisor has stopped"))?;
        rx.await
            .map_err(|_| Error::cancelled("the supervisor has stopped"))?
    }

    /// Stops supervising and waits for the task to end.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        if let Some(j) = self.join.take() {
            let _ = j.await;
        }
    }
}

impl Drop for SupervisorHandle {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

struct Task {
    orch: Orchestrator,
    vm: VmId,
    config: SupervisorConfig,
    strategy: RunStrategy,
    status: watch::Sender<SupervisorStatus>,
    once_done: bool,
    stopped_by_user: bool,
    gave_up: bool,
    failed_boots: u32,
    last_start: Option<Instant>,
    next_restart: Option<Instant>,
}

fn failed(p: PowerState) -> bool {
    matches!(
        p,
        PowerState::Crashed
            | PowerState::Off(OffReason::Crashed)
            | PowerState::Off(OffReason::Failed)
    )
}

fn strategy_label(s: RunStrategy) -> &'static str {
    match s {
        RunStrategy::Always => "Always",
        RunStrategy::RerunOnFailure => "RerunOnFailure",
        RunStrategy::Manual => "Manual",
        RunStrategy::Halted => "Halted",
        _ => "Once",
    }
}

impl Task {
    async fn run(mut self, mut cmds: mpsc::Receiver<Command>, cancel: CancellationToken) {
        self.warn_if_not_honoured();
        // Initial enforcement.
        if matches!(
            self.strategy,
            RunStrategy::Always | RunStrategy::RerunOnFailure | RunStrategy::Once
        ) {
            self.ensure_started_initially().await;
        }
        self.sync_phase();
        // React to pushed power-state changes at once where the provider can push them;
        // polling stays as the safety net.
        let mut pushed = if self.orch.provider.capabilities().power_state_watch {
            self.orch
                .provider
                .watch_power_state(&self.vm)
                .await
                .ok()
                .flatten()
        } else {
            None
        };
        loop {
            self.reconcile().await;
            let next_poll = deadline_after(Instant::now(), self.config.poll_interval);
            let wake = match self.next_restart {
                Some(t) => t.min(next_poll),
                None => next_poll,
            };
            let next_push = async {
                match pushed.as_mut() {
                    Some(s) => s.next().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => break,
                cmd = cmds.recv() => match cmd {
                    None => break,
                    Some(c) => self.command(c).await,
                },
                item = next_push => {
                    if !matches!(item, Some(Ok(_))) {
                        pushed = None; // ended or failed: poll only
                    }
                }
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    fn warn_if_not_honoured(&self) {
        let caps = self.orch.provider.capabilities();
        if let Err(e) = check_run_strategy(self.strategy, &caps) {
            let e = e
                .with_provider(self.orch.ptype())
                .with_resource(self.vm.to_string());
            tracing::warn!(vm = %self.vm, error = %e, "run strategy not honoured");
            self.orch
                .emit_vm(&self.vm, EventReason::RunStrategyNotHonoured, e.to_string());
            self.publish(|s| s.last_error = Some(e.to_string()));
        }
    }

    fn publish(&self, f: impl FnOnce(&mut SupervisorStatus)) {
        self.status.send_modify(f);
    }

    fn phase(&self) -> SupervisorPhase {
        if self.gave_up {
            SupervisorPhase::GaveUp
        } else if self.stopped_by_user {
            SupervisorPhase::StoppedByUser
        } else if self.next_restart.is_some() {
            SupervisorPhase::BackingOff {
                failed_boots: self.failed_boots,
            }
        } else {
            SupervisorPhase::Watching
        }
    }

    fn sync_phase(&self) {
        let phase = self.phase();
        let strategy = self.strategy;
        let (once_done, stopped_by_user, gave_up, failed_boots) = (
            self.once_done,
            self.stopped_by_user,
            self.gave_up,
            self.failed_boots,
        );
        self.publish(|s| {
            s.phase = phase;
            s.strategy = strategy;
            s.memory = RunStrategyState {
                once_done,
                stopped_by_user,
                gave_up,
                failed_boots,
                restarts: s.restarts,
            };
        });
    }

    async fn ensure_started_initially(&mut self) {
        if self.stopped_by_user
            || self.gave_up
            || self.strategy == RunStrategy::Once && self.once_done
        {
            // Remembered from before a restart: leave the VM as it is.
            return;
        }
        match self.orch.provider.power_state(&self.vm).await {
            Ok(p) if p.is_off() => {
                if self.strategy == RunStrategy::Once {
                    self.once_done = true;
                }
                self.start("initial start").await;
            }
            Ok(_) => {
                if self.strategy == RunStrategy::Once {
                    self.once_done = true;
                }
                self.last_start = Some(Instant::now());
            }
            Err(e) => self.publish(|s| s.last_error = Some(e.to_string())),
        }
    }

    async fn start(&mut self, why: &str) -> bool {
        match self.orch.start_with_retry(&self.vm).await {
            Ok(()) => {
                self.last_start = Some(Instant::now());
                self.orch.emit_vm(
                    &self.vm,
                    EventReason::VmStarted,
                    format!("started by the supervisor ({why})"),
                );
                true
            }
            Err(e) => {
                self.publish(|s| s.last_error = Some(e.to_string()));
                if !e.is_retryable() && e.status() != crate::error::ErrorStatus::Persistent {
                    self.give_up(format!("start failed permanently: {e}"));
                }
                false
            }
        }
    }

    fn give_up(&mut self, why: String) {
        self.gave_up = true;
        self.next_restart = None;
        self.orch
            .emit_vm(&self.vm, EventReason::RestartGivenUp, why);
        self.sync_phase();
    }

    async fn reconcile(&mut self) {
        let p = match self.orch.provider.power_state(&self.vm).await {
            Ok(p) => p,
            Err(e) => {
                self.publish(|s| s.last_error = Some(e.to_string()));
                return;
            }
        };
        self.publish(|s| s.power_state = Some(p));
        match self.strategy {
            RunStrategy::Halted if p.is_active() && p != PowerState::ShuttingDown => {
                if let Err(e) = self
                    .orch
                    .graceful_stop(&self.vm, self.orch.config.stop_policy.clone())
                    .await
                {
                    self.publish(|s| s.last_error = Some(e.to_string()));
                } else {
                    self.orch.emit_vm(
                        &self.vm,
                        EventReason::VmStopped,
                        "stopped: runStrategy Halted",
                    );
                }
            }
            RunStrategy::Always | RunStrategy::RerunOnFailure => {
                let down = p.is_off() || p == PowerState::Crashed;
                let restart_wanted = down
                    && (self.strategy == RunStrategy::Always || failed(p))
                    && !self.stopped_by_user
                    && !self.gave_up;
                if !restart_wanted {
                    if !down {
                        self.next_restart = None;
                    }
                    self.sync_phase();
                    return;
                }
                let now = Instant::now();
                match self.next_restart {
                    None => {
                        // A new stop: was it a failed boot?
                        let short = self.last_start.is_some_and(|t| {
                            now.saturating_duration_since(t) < self.config.min_uptime
                        });
                        if short || failed(p) && self.last_start.is_none() {
                            self.failed_boots += 1;
                        } else {
                            self.failed_boots = 0;
                        }
                        if self.failed_boots >= self.config.max_failed_boots {
                            self.give_up(format!(
                                "the VM went down {} times in a row within {:?} of being started; not restarting it again",
                                self.failed_boots, self.config.min_uptime
                            ));
                            return;
                        }
                        let delay = if self.failed_boots == 0 && !failed(p) {
                            Duration::ZERO
                        } else {
                            let exp = self.failed_boots.min(16);
                            self.config
                                .restart_backoff
                                .saturating_mul(2u32.pow(exp))
                                .min(self.config.max_restart_backoff)
                        };
                        if !delay.is_zero() {
                            self.orch.emit_vm(
                                &self.vm,
                                EventReason::CrashLoopBackOff,
                                format!(
                                    "VM is {p}; restarting in {:.0} s ({} failed boots in a row)",
                                    delay.as_secs_f64(),
                                    self.failed_boots
                                ),
                            );
                        }
                        self.next_restart = Some(deadline_after(now, delay));
                        self.sync_phase();
                        if !delay.is_zero() {
                            return;
                        }
                    }
                    Some(t) if now < t => return,
                    Some(_) => {}
                }
                self.next_restart = None;
                if p == PowerState::Crashed
                    && let Err(e) = self.orch.hard_off(&self.vm).await
                {
                    self.publish(|s| s.last_error = Some(e.to_string()));
                    return;
                }
                if self.start(&format!("was {p}")).await {
                    metrics::supervisor_restart(self.orch.ptype(), strategy_label(self.strategy));
                    self.orch.emit_vm(
                        &self.vm,
                        EventReason::VmRestarted,
                        format!(
                            "restarted after it was {p} (runStrategy {})",
                            strategy_label(self.strategy)
                        ),
                    );
                    self.publish(|s| s.restarts += 1);
                }
                self.sync_phase();
            }
            RunStrategy::Once if !self.once_done && p.is_off() => {
                self.once_done = true;
                self.start("runStrategy Once").await;
                self.sync_phase();
            }
            _ => {}
        }
    }

    async fn command(&mut self, cmd: Command) {
        match cmd {
            Command::SetStrategy(s) => {
                self.strategy = s;
                self.stopped_by_user = false;
                self.gave_up = false;
                self.failed_boots = 0;
                self.next_restart = None;
                self.once_done = false;
                if matches!(s, RunStrategy::Always | RunStrategy::RerunOnFailure) {
                    self.ensure_started_initially().await;
                }
                self.sync_phase();
            }
            Command::Action(action, reply) => {
                let res = self
                    .orch
                    .apply_action(&self.vm, &action, self.strategy)
                    .await;
                if res.is_ok() {
                    match action.action {
                        LifecycleActionKind::Start => {
                            self.stopped_by_user = false;
                            self.gave_up = false;
                            self.failed_boots = 0;
                            self.next_restart = None;
                            self.last_start = Some(Instant::now());
                        }
                        _ => {
                            self.stopped_by_user = true;
                            self.next_restart = None;
                        }
                    }
                }
                self.sync_phase();
                let _ = reply.send(res);
            }
        }
    }
}
