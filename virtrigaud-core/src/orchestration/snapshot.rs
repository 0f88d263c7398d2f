//! Snapshots: create (memory, quiesce where capable), delete, phases with a failure
//! deadline, retention (`maxAge`, `maxCount`, `deleteOnVMDelete`) and revert via
//! `spec.snapshot.revertToRef`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::events::{EventReason, ObjectKind};
use super::metrics;
use super::orchestrator::{Orchestrator, bounded, now_rfc3339, parse_rfc3339, rfc3339, was_on};
use crate::error::{Error, ErrorKind, Result};
use crate::layers::RetryPolicy;
use crate::model::{
    Condition, SnapshotPhase, VMSnapshot, VirtualMachine, condition_types, set_condition,
};
use crate::provider::{DeleteOptions, Provider};
use crate::snapshot::{
    DeleteSnapshotOptions, RevertOptions, SnapshotInfo, SnapshotOptions, Snapshotter,
};
use crate::vm::VmId;

/// Default failure deadline of a snapshot creation (KubeVirt's `failureDeadline`).
pub const DEFAULT_SNAPSHOT_DEADLINE: Duration = Duration::from_secs(300);

/// Options of [`Orchestrator::create_snapshot`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SnapshotCreateOptions {
    /// The creation fails (phase `Failed`) if not done by then, retries included. A
    /// deadline too far to set as a timer (beyond about 30 years, up to `Duration::MAX`)
    /// saturates: no deadline in practice.
    pub failure_deadline: Duration,
    /// Fail when memory was asked for but this VM cannot include it (default false: take a
    /// disk-only snapshot and say so).
    pub require_memory: bool,
    /// Fail when quiescing was asked for but is not possible (default false: take an
    /// unquiesced snapshot and say so in the report and the status message).
    pub require_quiesce: bool,
}

impl Default for SnapshotCreateOptions {
    fn default() -> Self {
        SnapshotCreateOptions {
            failure_deadline: DEFAULT_SNAPSHOT_DEADLINE,
            require_memory: false,
            require_quiesce: false,
        }
    }
}

/// What [`Orchestrator::create_snapshot`] did.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SnapshotReport {
    /// The snapshot as the provider reports it.
    pub info: SnapshotInfo,
    /// Whether the guest was quiesced.
    pub quiesced: bool,
    /// Whether memory state is included.
    pub memory: bool,
    /// Why quiescing or memory was not done although asked for.
    pub notes: Vec<String>,
    /// Snapshots deleted by the retention policy afterwards (provider ids).
    pub pruned: Vec<String>,
}

fn snapshotter(o: &Orchestrator) -> Result<&dyn Snapshotter> {
    if !o.provider.capabilities().snapshots {
        return Err(Error::unsupported("snapshots").with_provider(o.ptype()));
    }
    o.provider
        .snapshotter()
        .ok_or_else(|| Error::unsupported("snapshots").with_provider(o.ptype()))
}

pub(crate) fn set_phase(snap: &mut VMSnapshot, phase: SnapshotPhase, message: Option<String>) {
    let st = snap.status.get_or_insert_with(Default::default);
    st.phase = Some(phase);
    st.message = message;
    let now = now_rfc3339();
    let (creating, deleting, ready) = match phase {
        SnapshotPhase::Creating => (true, false, false),
        SnapshotPhase::Ready => (false, false, true),
        SnapshotPhase::Deleting => (false, true, false),
        _ => (false, false, false),
    };
    let reason = format!("{phase:?}");
    set_condition(
        &mut st.conditions,
        Condition::new(condition_types::CREATING, creating, reason.clone(), "").at(now.clone()),
    );
    set_condition(
        &mut st.conditions,
        Condition::new(condition_types::DELETING, deleting, reason.clone(), "").at(now.clone()),
    );
    set_condition(
        &mut st.conditions,
        Condition::new(
            condition_types::READY,
            ready,
            reason,
            st.message.clone().unwrap_or_default(),
        )
        .at(now),
    );
}

/// The provider-side snapshot name of a `VMSnapshot`: `nameHint`, else the object name.
pub fn snapshot_name(snap: &VMSnapshot) -> &str {
    snap.spec
        .name_hint
        .as_deref()
        .filter(|n| !n.is_empty())
        .unwrap_or(&snap.metadata.name)
}

/// Retention limits applied to one VM's snapshots.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetentionRules {
    /// Delete snapshots older than this.
    pub max_age: Option<Duration>,
    /// Keep at most this many snapshots (the oldest unprotected ones go first).
    pub max_count: Option<u32>,
}

impl RetentionRules {
    /// Rules with `max_age` and `max_count`.
    pub fn new(max_age: Option<Duration>, max_count: Option<u32>) -> Self {
        RetentionRules { max_age, max_count }
    }
}

/// The snapshots that `rules` delete from `snapshots` at `now`, never one in `protected`
/// (ids or names). Pure: the sweep and the create-time check both use it.
///
/// A snapshot without a creation time is never too old and is never chosen by `maxCount`
/// (which deletes the oldest dated, unprotected snapshots first).
pub fn plan_retention(
    snapshots: &[SnapshotInfo],
    rules: RetentionRules,
    now: SystemTime,
    protected: &HashSet<String>,
) -> Vec<SnapshotInfo> {
    let is_protected = |s: &SnapshotInfo| protected.contains(&s.id) || protected.contains(&s.name);
    let mut doomed: Vec<SnapshotInfo> = Vec::new();
    if let Some(age) = rules.max_age {
        for s in snapshots {
            if let Some(t) = s.created_at
                && now.duration_since(t).is_ok_and(|d| d > age)
                && !is_protected(s)
            {
                doomed.push(s.clone());
            }
        }
    }
    if let Some(max) = rules.max_count {
        let mut remaining: Vec<&SnapshotInfo> = snapshots
            .iter()
            .filter(|s| !doomed.iter().any(|d| d.id == s.id))
            .collect();
        // Oldest first; unknown times last (kept).
        remaining.sort_by_key(|s| (s.created_at.is_none(), s.created_at));
        let mut excess = remaining.len().saturating_sub(max as usize);
        for s in remaining {
            if excess == 0 {
                break;
            }
            if is_protected(s) || s.created_at.is_none() {
                continue;
            }
            doomed.push(s.clone());
            excess -= 1;
        }
    }
    doomed
}

impl Orchestrator {
    /// Creates the snapshot described by `snap` on `vm`, moving `snap.status` through
    /// `Creating` to `Ready` (or `Failed`), then applies its retention policy to the VM's
    /// snapshots (never deleting the new one, nor one a revert is using).
    pub async fn create_snapshot(
        &self,
        vm: &VmId,
        snap: &mut VMSnapshot,
        opts: &SnapshotCreateOptions,
    ) -> Result<SnapshotReport> {
        let started = Instant::now();
        let name = snap.metadata.name.clone();
        set_phase(snap, SnapshotPhase::Creating, None);
        self.events.emit(
            ObjectKind::VMSnapshot,
            &name,
            EventReason::SnapshotCreating,
            format!("Started snapshot creation of {vm}"),
        );
        let res = self.create_snapshot_inner(vm, snap, opts).await;
        metrics::snapshot(
            "create",
            self.ptype(),
            metrics::outcome_of(&res),
            started.elapsed(),
        );
        match &res {
            Ok(r) => {
                let st = snap.status.get_or_insert_with(Default::default);
                st.snapshot_id = Some(r.info.id.clone());
                st.creation_time = Some(rfc3339(
                    r.info.created_at.unwrap_or_else(|| self.clock.now()),
                ));
                let msg = if r.notes.is_empty() {
                    None
                } else {
                    Some(r.notes.join("; "))
                };
                set_phase(snap, SnapshotPhase::Ready, msg);
                self.events.emit(
                    ObjectKind::VMSnapshot,
                    &name,
                    EventReason::SnapshotReady,
                    format!(
                        "Snapshot created successfully (memory: {}, quiesced: {})",
                        r.memory, r.quiesced
                    ),
                );
            }
            Err(e) => {
                set_phase(snap, SnapshotPhase::Failed, Some(e.to_string()));
                self.events.emit(
                    ObjectKind::VMSnapshot,
                    &name,
                    EventReason::SnapshotFailed,
                    e.to_string(),
                );
            }
        }
        res
    }

    async fn create_snapshot_inner(
        &self,
        vm: &VmId,
        snap: &VMSnapshot,
        opts: &SnapshotCreateOptions,
    ) -> Result<SnapshotReport> {
        let s = snapshotter(self)?;
        let caps = self.provider.capabilities();
        let vcaps = self.provider.vm_capabilities(vm).await?;
        let running = self.provider.power_state(vm).await?.is_active();
        let mut notes = Vec::new();
        let want_memory = snap.spec.memory.unwrap_or(false);
        let can_memory = caps.memory_snapshots && vcaps.snapshot_memory && running;
        if want_memory && !can_memory {
            let why = if !running {
                "the VM is off (disk-only snapshot)"
            } else {
                "this VM cannot include memory in a snapshot"
            };
            if opts.require_memory {
                return Err(Error::unsupported("snapshot_memory")
                    .with_provider(self.ptype())
                    .with_resource(vm.to_string()));
            }
            notes.push(format!("memory not included: {why}"));
        }
        let want_quiesce = snap.spec.quiesce.unwrap_or(false);
        let can_quiesce = caps.quiesced_snapshots && vcaps.snapshot_quiesce && running;
        if want_quiesce && !can_quiesce {
            if opts.require_quiesce {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    "quiescing is not possible for this VM (no guest agent, or the VM is off)",
                )
                .with_provider(self.ptype())
                .with_operation("snapshot_quiesce")
                .with_resource(vm.to_string()));
            }
            notes
                .push("not quiesced: no guest agent / tools able to freeze the filesystems".into());
        }
        let mut so = SnapshotOptions::new(snapshot_name(snap))
            .with_memory(want_memory && can_memory)
            .with_quiesce(want_quiesce && can_quiesce);
        so.description = snap.spec.description.clone();
        // The creation runs as its own task, so that one still under way at the deadline is
        // not lost: whatever it makes is deleted when it ends (a dropped future would leave
        // a snapshot that appears after the cleanup below has looked).
        let mut create = tokio::spawn(create_with_retry(
            Arc::clone(&self.provider),
            vm.clone(),
            so.clone(),
        ));
        let created = tokio::time::timeout(bounded(opts.failure_deadline), &mut create).await;
        let created = match created {
            Ok(joined) => Ok(joined.unwrap_or_else(|e| {
                Err(Error::new(
                    ErrorKind::Internal,
                    format!("the snapshot task ended abnormally: {e}"),
                ))
            })),
            Err(elapsed) => {
                tokio::spawn(delete_when_made(
                    Arc::clone(&self.provider),
                    vm.clone(),
                    create,
                ));
                Err(elapsed)
            }
        };
        let info = match created {
            Ok(Ok(info)) => info,
            Ok(Err(e)) => {
                self.remove_partial_snapshot(s, vm, &so.name).await;
                return Err(e
                    .context(self.ptype(), "snapshot_create")
                    .with_resource(vm.to_string()));
            }
            Err(_) => {
                self.remove_partial_snapshot(s, vm, &so.name).await;
                return Err(Error::timeout(format!(
                    "the snapshot was not created within its failure deadline of {:?}",
                    opts.failure_deadline
                ))
                .with_provider(self.ptype())
                .with_operation("snapshot_create")
                .with_resource(vm.to_string()));
            }
        };
        if want_quiesce && can_quiesce && !info.quiesced {
            notes.push("not quiesced: the provider could not freeze the guest filesystems".into());
        }
        let mut report = SnapshotReport {
            quiesced: info.quiesced,
            memory: info.has_memory,
            info,
            notes,
            pruned: vec![],
        };
        if let Some(p) = &snap.spec.retention_policy {
            let rules = RetentionRules::new(p.max_age.map(|d| d.as_duration()), p.max_count);
            let mut protected = HashSet::new();
            protected.insert(report.info.id.clone());
            match self.sweep_snapshots(vm, rules, &protected).await {
                Ok(p) => report.pruned = p,
                Err(e) => report.notes.push(format!("retention not applied: {e}")),
            }
        }
        Ok(report)
    }

    async fn remove_partial_snapshot(&self, s: &dyn Snapshotter, vm: &VmId, name: &str) {
        if let Ok(list) = s.list_snapshots(vm).await {
            for snap in list.iter().filter(|x| x.name == name) {
                if let Err(e) = s
                    .delete_snapshot(vm, &snap.id, &DeleteSnapshotOptions::default())
                    .await
                {
                    tracing::warn!(vm = %vm, snapshot = %snap.id, error = %e, "could not delete a half-made snapshot");
                }
            }
        }
    }

    /// Applies `rules` to `vm`'s snapshots now: deletes what [`plan_retention`] selects,
    /// except snapshots in `protected` or in use by a revert. Returns the deleted ids.
    pub async fn sweep_snapshots(
        &self,
        vm: &VmId,
        rules: RetentionRules,
        protected: &HashSet<String>,
    ) -> Result<Vec<String>> {
        let s = snapshotter(self)?;
        let list = s.list_snapshots(vm).await?;
        let mut protected = protected.clone();
        for snap in &list {
            if self.is_snapshot_in_use(vm, &snap.id) || self.is_snapshot_in_use(vm, &snap.name) {
                protected.insert(snap.id.clone());
            }
        }
        let mut deleted = Vec::new();
        for doomed in plan_retention(&list, rules, self.clock.now(), &protected) {
            // Re-check right before deleting: a revert may have started meanwhile.
            if self.is_snapshot_in_use(vm, &doomed.id) || self.is_snapshot_in_use(vm, &doomed.name)
            {
                continue;
            }
            let started = Instant::now();
            let r = s
                .delete_snapshot(vm, &doomed.id, &DeleteSnapshotOptions::default())
                .await;
            metrics::snapshot(
                "prune",
                self.ptype(),
                metrics::outcome_of(&r),
                started.elapsed(),
            );
            match r {
                Ok(()) => {
                    self.events.emit(
                        ObjectKind::VMSnapshot,
                        &doomed.name,
                        EventReason::SnapshotPruned,
                        format!("deleted by the retention policy of {vm}"),
                    );
                    deleted.push(doomed.id);
                }
                Err(e) if e.is(ErrorKind::NotFound) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(deleted)
    }

    /// Applies the retention policies of `snapshots` (the `VMSnapshot` objects of `vm`):
    /// each one's `maxAge`, and the smallest `maxCount` among them. Deleted objects are
    /// left in phase `Deleting` with a message; their names are returned so the caller can
    /// remove them.
    pub async fn sweep_objects(
        &self,
        vm: &VmId,
        snapshots: &mut [VMSnapshot],
    ) -> Result<Vec<String>> {
        let now = self.clock.now();
        let ready: Vec<usize> = (0..snapshots.len())
            .filter(|i| {
                snapshots[*i].status.as_ref().is_some_and(|s| {
                    s.phase == Some(SnapshotPhase::Ready) && s.snapshot_id.is_some()
                })
            })
            .collect();
        let infos: Vec<SnapshotInfo> = ready
            .iter()
            .map(|i| {
                let o = &snapshots[*i];
                let st = o.status.as_ref();
                let mut info = SnapshotInfo::new(
                    st.and_then(|s| s.snapshot_id.clone()).unwrap_or_default(),
                    o.metadata.name.clone(),
                );
                info.created_at = st
                    .and_then(|s| s.creation_time.as_deref())
                    .and_then(parse_rfc3339);
                info
            })
            .collect();
        let max_count = ready
            .iter()
            .filter_map(|i| {
                snapshots[*i]
                    .spec
                    .retention_policy
                    .as_ref()
                    .and_then(|p| p.max_count)
            })
            .min();
        let mut doomed: Vec<String> = plan_retention(
            &infos,
            RetentionRules::new(None, max_count),
            now,
            &HashSet::new(),
        )
        .into_iter()
        .map(|s| s.id)
        .collect();
        for (i, info) in ready.iter().zip(&infos) {
            if let Some(age) = snapshots[*i]
                .spec
                .retention_policy
                .as_ref()
                .and_then(|p| p.max_age)
                && !plan_retention(
                    std::slice::from_ref(info),
                    RetentionRules::new(Some(age.as_duration()), None),
                    now,
                    &HashSet::new(),
                )
                .is_empty()
                && !doomed.contains(&info.id)
            {
                doomed.push(info.id.clone());
            }
        }
        let mut removed = Vec::new();
        for i in ready {
            let id = snapshots[i]
                .status
                .as_ref()
                .and_then(|s| s.snapshot_id.clone())
                .unwrap_or_default();
            if !doomed.contains(&id)
                || self.is_snapshot_in_use(vm, &id)
                || self.is_snapshot_in_use(vm, snapshot_name(&snapshots[i]))
            {
                continue;
            }
            self.delete_snapshot(vm, &mut snapshots[i]).await?;
            if let Some(st) = snapshots[i].status.as_mut() {
                st.message = Some("deleted by the retention policy".into());
            }
            self.events.emit(
                ObjectKind::VMSnapshot,
                &snapshots[i].metadata.name,
                EventReason::SnapshotPruned,
                "deleted by the retention policy",
            );
            removed.push(snapshots[i].metadata.name.clone());
        }
        Ok(removed)
    }

    /// Deletes the provider snapshot of `snap` (phase `Deleting`; a snapshot that is already
    /// gone counts as deleted). Refused while a revert uses it.
    pub async fn delete_snapshot(&self, vm: &VmId, snap: &mut VMSnapshot) -> Result<()> {
        let started = Instant::now();
        let name = snap.metadata.name.clone();
        let id = snap
            .status
            .as_ref()
            .and_then(|s| s.snapshot_id.clone())
            .unwrap_or_else(|| snapshot_name(snap).to_owned());
        if self.is_snapshot_in_use(vm, &id) || self.is_snapshot_in_use(vm, snapshot_name(snap)) {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!("snapshot {name} is in use by a revert"),
            )
            .with_provider(self.ptype())
            .with_operation("snapshot_delete")
            .with_resource(vm.to_string()));
        }
        set_phase(snap, SnapshotPhase::Deleting, None);
        self.events.emit(
            ObjectKind::VMSnapshot,
            &name,
            EventReason::SnapshotDeleting,
            format!("deleting {id} of {vm}"),
        );
        let res = match snapshotter(self) {
            Ok(s) => match s
                .delete_snapshot(vm, &id, &DeleteSnapshotOptions::default())
                .await
            {
                Err(e) if e.is(ErrorKind::NotFound) => Ok(()),
                other => other,
            },
            Err(e) => Err(e),
        };
        metrics::snapshot(
            "delete",
            self.ptype(),
            metrics::outcome_of(&res),
            started.elapsed(),
        );
        match &res {
            Ok(()) => self.events.emit(
                ObjectKind::VMSnapshot,
                &name,
                EventReason::SnapshotDeleted,
                "deleted",
            ),
            Err(e) => {
                set_phase(snap, SnapshotPhase::Failed, Some(e.to_string()));
                self.events.emit(
                    ObjectKind::VMSnapshot,
                    &name,
                    EventReason::SnapshotFailed,
                    e.to_string(),
                );
            }
        }
        res
    }

    /// Deletes `vm` (after a graceful stop) honouring `deleteOnVMDelete`: snapshots whose
    /// policy says so are deleted first and their names returned for removal. The others
    /// stay as objects: still `Ready` (with a message) where the provider declares
    /// `snapshots_outlive_vm`, else marked `Failed` ("the VM was deleted"), since the
    /// provider drops a VM's snapshots with it.
    pub async fn delete_vm(&self, vm: &VmId, snapshots: &mut [VMSnapshot]) -> Result<Vec<String>> {
        if self.provider.power_state(vm).await?.is_active() {
            self.graceful_stop(vm, self.config.stop_policy.clone())
                .await?;
        }
        let mut removed = Vec::new();
        for snap in snapshots.iter_mut() {
            let del = snap
                .spec
                .retention_policy
                .as_ref()
                .and_then(|p| p.delete_on_vm_delete)
                .unwrap_or(false);
            if del {
                self.delete_snapshot(vm, snap).await?;
                removed.push(snap.metadata.name.clone());
            }
        }
        self.provider
            .delete(vm, &DeleteOptions { delete_disks: true })
            .await?;
        let outlive = self.provider.capabilities().snapshots_outlive_vm;
        for snap in snapshots.iter_mut() {
            if removed.contains(&snap.metadata.name) {
                continue;
            }
            if outlive {
                let st = snap.status.get_or_insert_with(Default::default);
                st.message = Some(format!(
                    "the VM {vm} was deleted; this snapshot remains (deleteOnVMDelete is false)"
                ));
            } else {
                set_phase(
                    snap,
                    SnapshotPhase::Failed,
                    Some(format!(
                        "the VM {vm} was deleted; its snapshots no longer exist (deleteOnVMDelete is false)"
                    )),
                );
            }
        }
        Ok(removed)
    }

    /// Reverts `vm` to the snapshot named by `vm_obj.spec.snapshot.revertToRef` (looked up
    /// in `snapshots`): graceful stop, revert, restore the previous power state, clear the
    /// request. Does nothing without a request. The snapshot is protected from retention
    /// throughout. On failure the request is kept (to retry) and a VM that was on is
    /// started again, or the error says it could not be.
    pub async fn revert(
        &self,
        vm: &VmId,
        vm_obj: &mut VirtualMachine,
        snapshots: &[VMSnapshot],
    ) -> Result<Option<SnapshotInfo>> {
        let Some(target) = vm_obj
            .spec
            .snapshot
            .as_ref()
            .and_then(|s| s.revert_to_ref.clone())
        else {
            return Ok(None);
        };
        let started = Instant::now();
        let res = self.revert_inner(vm, &target.name, snapshots).await;
        metrics::snapshot(
            "revert",
            self.ptype(),
            metrics::outcome_of(&res),
            started.elapsed(),
        );
        match &res {
            Ok(_) => {
                if let Some(op) = vm_obj.spec.snapshot.as_mut() {
                    op.revert_to_ref = None;
                }
                self.emit_vm(
                    vm,
                    EventReason::RevertCompleted,
                    format!("reverted to {}", target.name),
                );
            }
            Err(e) => self.emit_vm(vm, EventReason::RevertFailed, e.to_string()),
        }
        res.map(Some)
    }

    async fn revert_inner(
        &self,
        vm: &VmId,
        target: &str,
        snapshots: &[VMSnapshot],
    ) -> Result<SnapshotInfo> {
        let err = |kind: ErrorKind, msg: String| {
            Error::new(kind, msg)
                .with_provider(self.ptype())
                .with_operation("snapshot_revert")
                .with_resource(vm.to_string())
        };
        let obj = snapshots
            .iter()
            .find(|s| s.metadata.name == target)
            .ok_or_else(|| {
                err(
                    ErrorKind::NotFound,
                    format!("revertToRef: no VMSnapshot named {target}"),
                )
            })?;
        let st = obj.status.as_ref();
        if st.and_then(|s| s.phase) != Some(SnapshotPhase::Ready) {
            return Err(err(
                ErrorKind::InvalidState,
                format!("revertToRef: VMSnapshot {target} is not Ready"),
            ));
        }
        let id = st
            .and_then(|s| s.snapshot_id.clone())
            .unwrap_or_else(|| snapshot_name(obj).to_owned());
        let _guard_id = self.protect_snapshot(vm, &id);
        let _guard_name = self.protect_snapshot(vm, snapshot_name(obj));
        let s = snapshotter(self)?;
        let info = s
            .list_snapshots(vm)
            .await?
            .into_iter()
            .find(|x| x.id == id || x.name == id)
            .ok_or_else(|| {
                err(
                    ErrorKind::NotFound,
                    format!("the provider has no snapshot {id} for VMSnapshot {target}"),
                )
            })?;
        self.emit_vm(
            vm,
            EventReason::RevertStarted,
            format!("reverting to {target}"),
        );
        let before = self.provider.power_state(vm).await?;
        let on = was_on(before);
        if on {
            self.graceful_stop(vm, self.config.stop_policy.clone())
                .await
                .map_err(|e| {
                    err(
                        e.kind(),
                        format!(
                            "the graceful stop before the revert failed; nothing was reverted: {}",
                            e.message()
                        ),
                    )
                })?;
        }
        if let Err(e) = s.revert_snapshot(vm, &id, &RevertOptions::default()).await {
            if on {
                return Err(match self.start_with_retry(vm).await {
                    Ok(()) => err(
                        e.kind(),
                        format!("the revert failed ({e}); the VM was started again unchanged"),
                    ),
                    Err(se) => err(
                        e.kind(),
                        format!(
                            "the revert failed ({e}) and the VM could not be started again ({se}): the VM is OFF"
                        ),
                    ),
                });
            }
            return Err(err(e.kind(), format!("the revert failed: {e}")));
        }
        let after = self.provider.power_state(vm).await?;
        if on && after.is_off() {
            self.start_with_retry(vm).await.map_err(|e| {
                err(
                    e.kind(),
                    format!("reverted, but the VM could not be started again: {e}; the VM is OFF"),
                )
            })?;
        } else if !on && after.is_active() {
            // A memory snapshot resumed the guest; the VM was off before.
            self.hard_off(vm).await.map_err(|e| {
                err(
                    e.kind(),
                    format!(
                        "reverted, but the VM (off before) could not be powered off again: {e}"
                    ),
                )
            })?;
        }
        Ok(info)
    }
}

/// Creates the snapshot `so` of `vm`, retrying retryable failures.
async fn create_with_retry(
    provider: Arc<dyn Provider>,
    vm: VmId,
    so: SnapshotOptions,
) -> Result<SnapshotInfo> {
    let s = provider
        .snapshotter()
        .ok_or_else(|| Error::unsupported("snapshots"))?;
    RetryPolicy::new(Duration::from_secs(1), 5)
        .retry(|| async { s.create_snapshot(&vm, &so).await })
        .await
}

/// Waits for a creation that outlived its deadline and deletes the snapshot it made.
async fn delete_when_made(
    provider: Arc<dyn Provider>,
    vm: VmId,
    create: tokio::task::JoinHandle<Result<SnapshotInfo>>,
) {
    let Ok(Ok(info)) = create.await else { return };
    let Some(s) = provider.snapshotter() else {
        return;
    };
    match s
        .delete_snapshot(&vm, &info.id, &DeleteSnapshotOptions::default())
        .await
    {
        Ok(()) => {
            tracing::info!(vm = %vm, snapshot = %info.id, "deleted a snapshot that was made after its failure deadline")
        }
        Err(e) if e.is(ErrorKind::NotFound) => {}
        Err(e) => {
            tracing::warn!(vm = %vm, snapshot = %info.id, error = %e, "could not delete a snapshot made after its failure deadline")
        }
    }
}
