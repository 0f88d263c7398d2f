//! [`ShutdownContext`]: what every shutdown task of one manager needs — the provider, the
//! journal and its budget, the wall clock, the pre-stop executor and the event channel.
//!
//! The manager's own bookkeeping (which VM has a shutdown in flight) is not here: it stays in
//! `manager.rs`, so a task never sees it.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;
use tokio::time::Instant;

use super::clock::WallClock;
use super::events::{ShutdownEvent, ShutdownEventKind};
use super::hooks::PreStopExecutor;
use super::journal::ShutdownJournal;
use super::lease::{Lease, LeaseScope, StaleLease};
use crate::error::{Error, Result};
use crate::provider::Provider;
use crate::vm::{Incarnation, VmId};

/// What every shutdown task of one manager needs.
pub(crate) struct ShutdownContext {
    pub(crate) provider: Arc<dyn Provider>,
    pub(crate) journal: Arc<dyn ShutdownJournal>,
    pub(crate) clock: Arc<dyn WallClock>,
    pub(crate) pre_stop: Option<Arc<dyn PreStopExecutor>>,
    pub(crate) events: broadcast::Sender<ShutdownEvent>,
    /// Which endpoint the leases of this manager belong to.
    pub(crate) scope: LeaseScope,
    /// Time budget of one journal call.
    pub(crate) journal_budget: Duration,
}

impl ShutdownContext {
    /// Sends a progress event of `vm`'s shutdown whose grace started at `started`, building it
    /// only when someone listens.
    pub(crate) fn emit(
        &self,
        vm: &VmId,
        started: Instant,
        kind: impl FnOnce() -> ShutdownEventKind,
    ) {
        if self.events.receiver_count() == 0 {
            return;
        }
        let _ = self.events.send(ShutdownEvent {
            vm: vm.clone(),
            elapsed: Instant::now().saturating_duration_since(started),
            kind: kind(),
        });
    }

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

    /// Records `lease`. A failure is logged as "could not journal `what`" and the shutdown
    /// goes on without restart safety; only a Conflict (another process drives this VM) is
    /// returned.
    pub(crate) async fn record(&self, lease: &Lease, what: &'static str) -> Result<()> {
        match self
            .journal_call("record", self.journal.record(lease))
            .await
        {
            Err(e) if e.is(crate::ErrorKind::Conflict) => Err(e),
            Err(e) => {
                tracing::warn!(vm = %lease.vm, error = %e, "could not journal {what}");
                Ok(())
            }
            Ok(()) => Ok(()),
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
