//! The `VMSnapshot` reconciler: a pure planner ([`plan_snapshot`]) and an executor that
//! creates, adopts or deletes the provider snapshot through the orchestrator.
//!
//! **Restart safety: claim, then make.** A snapshot is created in two passes. The first
//! checks that no snapshot of that name exists on the VM and records the claim (phase
//! `Creating`); the caller persists the status. The second creates it. A process that dies
//! after the provider made the snapshot but before its status was saved finds, on its next
//! pass, phase `Creating` and a snapshot of that name: it is this object's (the claim proved
//! the name free), so it is adopted, never made twice. A snapshot of that name that existed
//! before the claim is someone else's: the object fails with `Conflict` and nothing is
//! touched. Deletion removes only the snapshot this object recorded.

use std::time::Duration;

use super::action::Action;
use crate::error::{Error, ErrorKind, Result};
use crate::model::{SnapshotPhase, VMSnapshot, Validate};
use crate::orchestration::{
    EventReason, ObjectKind, Orchestrator, SnapshotCreateOptions, rfc3339, set_snapshot_phase,
    snapshot_name,
};
use crate::snapshot::SnapshotInfo;
use crate::vm::VmId;

/// The next step of a `VMSnapshot`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum SnapshotStep {
    /// Record the claim on the name (phase `Creating`); nothing exists of that name.
    Claim,
    /// Create the claimed snapshot.
    Create,
    /// The claimed snapshot exists (made by a pass that died before saving it): record it.
    Adopt(SnapshotInfo),
    /// Delete the snapshot this object recorded.
    Delete,
    /// A snapshot of that name exists and is not this object's: fail, touch nothing.
    Refuse,
    /// The snapshot this object recorded is gone from the provider.
    Lost,
}

/// Plans the next step of `snap` given the VM's `existing` snapshots, with its reason, or
/// `None` when the object is where it should be. Pure.
pub fn plan_snapshot(
    snap: &VMSnapshot,
    existing: &[SnapshotInfo],
) -> Option<(SnapshotStep, String)> {
    let name = snapshot_name(snap);
    let st = snap.status.as_ref();
    let phase = st.and_then(|s| s.phase);
    let recorded = st.and_then(|s| s.snapshot_id.as_deref());
    let by_name = existing.iter().find(|s| s.name == name);
    let ours = match (recorded, phase) {
        (Some(id), _) => existing.iter().find(|s| s.id == id),
        (None, Some(SnapshotPhase::Creating | SnapshotPhase::Deleting)) => by_name,
        _ => None,
    };
    if snap.metadata.deletion_timestamp.is_some() || phase == Some(SnapshotPhase::Deleting) {
        return ours.map(|s| {
            (
                SnapshotStep::Delete,
                format!("the object is being deleted; snapshot {} goes first", s.id),
            )
        });
    }
    match phase {
        None if by_name.is_some() => Some((
            SnapshotStep::Refuse,
            format!("a snapshot named {name} already exists on the VM and is not this object's"),
        )),
        None => Some((SnapshotStep::Claim, format!("snapshot {name} is asked for"))),
        Some(SnapshotPhase::Creating) => Some(match by_name {
            Some(s) => (
                SnapshotStep::Adopt(s.clone()),
                format!("snapshot {name} was made by an earlier pass ({})", s.id),
            ),
            None => (SnapshotStep::Create, format!("snapshot {name} is claimed")),
        }),
        Some(SnapshotPhase::Ready) if ours.is_none() => Some((
            SnapshotStep::Lost,
            format!(
                "snapshot {} is no longer on the provider",
                recorded.unwrap_or(name)
            ),
        )),
        _ => None,
    }
}

/// Reconciles `VMSnapshot` objects of one provider through an [`Orchestrator`].
///
/// The caller resolves `spec.vmRef` to the VM's id and persists the status after every pass
/// (see the module docs for why a claim pass comes first). After a deletion pass the
/// provider snapshot is gone and the caller may remove its finalizer.
#[derive(Debug, Clone)]
pub struct SnapshotReconciler {
    orch: Orchestrator,
    opts: SnapshotCreateOptions,
}

impl SnapshotReconciler {
    /// A reconciler over `orch`, creating with default options.
    pub fn new(orch: Orchestrator) -> Self {
        SnapshotReconciler {
            orch,
            opts: SnapshotCreateOptions::default(),
        }
    }

    /// Creates snapshots with `opts`.
    pub fn with_options(mut self, opts: SnapshotCreateOptions) -> Self {
        self.opts = opts;
        self
    }

    /// One pass for `snap` of VM `vm`.
    pub async fn reconcile(&self, vm: &VmId, snap: &mut VMSnapshot) -> Result<Action> {
        let resource = snap_resource(vm, snap);
        let ctx = |e: Error| {
            e.with_operation("reconcile")
                .with_resource(resource.clone())
        };
        snap.validate().map_err(|e| ctx(Error::from(e)))?;
        let snapshotter = self.orch.provider().snapshotter().ok_or_else(|| {
            Error::unsupported("snapshots").with_provider(self.orch.provider().provider_type())
        });
        let existing = match snapshotter {
            Ok(s) => s.list_snapshots(vm).await,
            Err(e) => Err(e),
        }
        .map_err(ctx)?;
        let Some((step, reason)) = plan_snapshot(snap, &existing) else {
            return Ok(Action::await_change());
        };
        tracing::debug!(vm = %vm, snapshot = %snap.metadata.name, ?step, %reason, "reconcile step");
        let name = snap.metadata.name.clone();
        match step {
            SnapshotStep::Claim => {
                set_snapshot_phase(snap, SnapshotPhase::Creating, Some(reason));
                Ok(Action::requeue(Duration::ZERO))
            }
            SnapshotStep::Create => {
                self.orch.create_snapshot(vm, snap, &self.opts).await?;
                Ok(Action::await_change())
            }
            SnapshotStep::Adopt(info) => {
                let st = snap.status.get_or_insert_with(Default::default);
                st.snapshot_id = Some(info.id.clone());
                st.creation_time = info.created_at.map(rfc3339);
                set_snapshot_phase(snap, SnapshotPhase::Ready, None);
                self.emit(&name, EventReason::SnapshotReady, reason);
                Ok(Action::await_change())
            }
            SnapshotStep::Delete => {
                self.orch.delete_snapshot(vm, snap).await?;
                Ok(Action::await_change())
            }
            SnapshotStep::Refuse => {
                set_snapshot_phase(snap, SnapshotPhase::Failed, Some(reason.clone()));
                self.emit(&name, EventReason::SnapshotFailed, reason.clone());
                Err(ctx(Error::new(ErrorKind::Conflict, reason)))
            }
            SnapshotStep::Lost => {
                set_snapshot_phase(snap, SnapshotPhase::Failed, Some(reason.clone()));
                self.emit(&name, EventReason::SnapshotFailed, reason);
                Ok(Action::await_change())
            }
        }
    }

    /// Reconciles until settled, at most `max_passes` passes (then `Timeout`).
    pub async fn run_until_settled(
        &self,
        vm: &VmId,
        snap: &mut VMSnapshot,
        max_passes: u32,
    ) -> Result<()> {
        for _ in 0..max_passes {
            match self.reconcile(vm, snap).await? {
                Action::AwaitChange => return Ok(()),
                Action::Requeue(after) => tokio::time::sleep(after).await,
            }
        }
        Err(
            Error::timeout(format!("not settled after {max_passes} passes"))
                .with_operation("reconcile")
                .with_resource(snap_resource(vm, snap)),
        )
    }

    fn emit(&self, name: &str, reason: EventReason, message: String) {
        self.orch
            .events()
            .emit(ObjectKind::VMSnapshot, name, reason, message);
    }
}

fn snap_resource(vm: &VmId, snap: &VMSnapshot) -> String {
    format!("{vm}/{}", snap.metadata.name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::from_yaml_str;

    fn snap(status: &str) -> VMSnapshot {
        from_yaml_str(&format!(
            "apiVersion: infra.virtrigaud.io/v1beta1\nkind: VMSnapshot\n\
             metadata: {{name: nightly}}\nspec: {{vmRef: {{name: web}}}}\n{status}"
        ))
        .unwrap()
    }

    #[test]
    fn a_name_is_claimed_before_anything_is_made_and_someone_elses_is_refused() {
        let theirs = SnapshotInfo::new("s-1", "nightly");
        assert_eq!(
            plan_snapshot(&snap(""), &[]).unwrap().0,
            SnapshotStep::Claim
        );
        assert_eq!(
            plan_snapshot(&snap(""), std::slice::from_ref(&theirs))
                .unwrap()
                .0,
            SnapshotStep::Refuse
        );
        let claimed = snap("status: {phase: Creating}\n");
        assert_eq!(
            plan_snapshot(&claimed, &[]).unwrap().0,
            SnapshotStep::Create
        );
        assert_eq!(
            plan_snapshot(&claimed, std::slice::from_ref(&theirs))
                .unwrap()
                .0,
            SnapshotStep::Adopt(theirs.clone()),
            "after the claim, a snapshot of that name is ours"
        );
    }

    #[test]
    fn a_ready_snapshot_settles_goes_lost_and_deletes_only_what_it_recorded() {
        let ready = snap("status: {phase: Ready, snapshotId: s-1}\n");
        let other = SnapshotInfo::new("s-2", "nightly");
        assert!(plan_snapshot(&ready, &[SnapshotInfo::new("s-1", "nightly")]).is_none());
        assert_eq!(
            plan_snapshot(&ready, std::slice::from_ref(&other))
                .unwrap()
                .0,
            SnapshotStep::Lost
        );
        let mut going = ready.clone();
        going.metadata.deletion_timestamp = Some("2026-12-04T00:00:00Z".into());
        assert!(
            plan_snapshot(&going, &[other]).is_none(),
            "a same-named snapshot it did not record is left alone"
        );
        assert_eq!(
            plan_snapshot(&going, &[SnapshotInfo::new("s-1", "nightly")])
                .unwrap()
                .0,
            SnapshotStep::Delete
        );
        assert!(plan_snapshot(&snap("status: {phase: Failed}\n"), &[]).is_none());
    }
}
