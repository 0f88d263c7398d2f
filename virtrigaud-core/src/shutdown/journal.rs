//! Where shutdown leases are kept.
//!
//! When a shutdown starts, its [`Lease`] — VM, run, start, deadline and grace as wall-clock
//! times — is recorded before the guest is signalled. A process that crashes mid-grace and
//! comes back finds the lease and resumes with the time that is *left*, never a fresh grace
//! period; a lease of an earlier run of the VM, or one long expired, is discarded instead.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::lease::{Lease, LeaseScope};
use crate::error::{Error, Result};
use crate::vm::VmId;

/// Where leases are kept. Implement it over your own store (a database, a Kubernetes
/// object); [`super::FileJournal`] is the crash-safe default.
///
/// The engine bounds every call in time (see
/// [`super::ShutdownManagerBuilder::journal_budget`]); a journal that cannot answer makes the
/// shutdown go on without restart safety, never stop.
#[async_trait]
pub trait ShutdownJournal: Send + Sync + Debug {
    /// Records (or replaces) the lease of `lease.vm`. Must be durable when it returns. A lease
    /// that another process is driving is [`crate::ErrorKind::Conflict`] (permanent): the
    /// engine then leaves that VM alone.
    async fn record(&self, lease: &Lease) -> Result<()>;
    /// Removes the lease of `vm` in `scope` (a missing lease is not an error).
    async fn remove(&self, scope: &LeaseScope, vm: &VmId) -> Result<()>;
    /// The lease of `vm` in `scope`, if any.
    async fn get(&self, scope: &LeaseScope, vm: &VmId) -> Result<Option<Lease>>;
    /// Every lease in `scope`.
    async fn list(&self, scope: &LeaseScope) -> Result<Vec<Lease>>;
    /// Whether leases outlive the process. The engine reads a VM's incarnation only for a
    /// durable journal (it costs a provider call).
    fn is_durable(&self) -> bool {
        true
    }
}

/// A journal that keeps nothing: the [`super::ShutdownManager`] default.
///
/// Requests for a VM whose shutdown is in flight still join it (the manager tracks that
/// itself); only a process restart loses the deadline. Use [`super::FileJournal`] (or your own
/// store) to be restart-safe.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoJournal;

#[async_trait]
impl ShutdownJournal for NoJournal {
    async fn record(&self, _lease: &Lease) -> Result<()> {
        Ok(())
    }
    async fn remove(&self, _scope: &LeaseScope, _vm: &VmId) -> Result<()> {
        Ok(())
    }
    async fn get(&self, _scope: &LeaseScope, _vm: &VmId) -> Result<Option<Lease>> {
        Ok(None)
    }
    async fn list(&self, _scope: &LeaseScope) -> Result<Vec<Lease>> {
        Ok(Vec::new())
    }
    fn is_durable(&self) -> bool {
        false
    }
}

type LeaseMap = HashMap<(LeaseScope, VmId), Lease>;

/// A journal in memory: leases outlive a [`super::ShutdownManager`] that shares it (a new
/// manager over the same journal resumes them), but not the process.
#[derive(Debug, Clone, Default)]
pub struct MemoryJournal {
    leases: Arc<Mutex<LeaseMap>>,
}

impl MemoryJournal {
    /// An empty journal.
    pub fn new() -> Self {
        Self::default()
    }

    fn map(&self) -> Result<std::sync::MutexGuard<'_, LeaseMap>> {
        self.leases
            .lock()
            .map_err(|_| Error::internal("journal lock poisoned"))
    }
}

#[async_trait]
impl ShutdownJournal for MemoryJournal {
    async fn record(&self, lease: &Lease) -> Result<()> {
        self.map()?
            .insert((lease.scope(), lease.vm.clone()), lease.clone());
        Ok(())
    }
    async fn remove(&self, scope: &LeaseScope, vm: &VmId) -> Result<()> {
        self.map()?.remove(&(scope.clone(), vm.clone()));
        Ok(())
    }
    async fn get(&self, scope: &LeaseScope, vm: &VmId) -> Result<Option<Lease>> {
        Ok(self.map()?.get(&(scope.clone(), vm.clone())).cloned())
    }
    async fn list(&self, scope: &LeaseScope) -> Result<Vec<Lease>> {
        let mut leases: Vec<Lease> = self
            .map()?
            .values()
            .filter(|l| scope.contains(l))
            .cloned()
            .collect();
        leases.sort_by(|a, b| a.vm.cmp(&b.vm));
        Ok(leases)
    }
    fn is_durable(&self) -> bool {
        // Outlives a manager, which is what the incarnation check protects against too.
        true
    }
}
