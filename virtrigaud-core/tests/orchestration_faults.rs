//! Provider misbehaviour the simulator cannot script on its own: a cloner that leaves a
//! half-made clone or silently drops customization, and a snapshot that never finishes.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use virtrigaud_core::model::{
    CloneCustomization, ClonePhase, CloneTarget, ObjectRef, SnapshotPhase, VMClone, VMCloneSpec,
    VMSnapshot, VMSnapshotSpec,
};
use virtrigaud_core::model::{VirtualMachineStatus, condition_types, find_condition};
use virtrigaud_core::orchestration::{
    Orchestrator, PlanMode, ReconfigureOptions, ReconfigureOutcome, ResourceChange,
    SnapshotCreateOptions,
};
use virtrigaud_core::sim::{GuestBehavior, Simulator};
use virtrigaud_core::{
    CloneOptions, CloneResult, Cloner, DeleteOptions, DeleteSnapshotOptions, Error, ErrorKind,
    ListOptions, PowerOffOptions, PowerState, Provider, ProviderCapabilities, ReconfigureRequest,
    ReconfigureResult, Result, RevertOptions, ShutdownChannel, ShutdownRequestOptions,
    SnapshotInfo, SnapshotOptions, Snapshotter, StartOptions, VmCapabilities, VmDescription, VmId,
};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Misbehaviour {
    CloneLeavesHalfMade,
    CloneDropsCustomization,
    SnapshotHangs,
    UnknownLiveLimits,
}

#[derive(Debug)]
struct Bad {
    sim: Simulator,
    mode: Misbehaviour,
}

#[async_trait]
impl Provider for Bad {
    fn provider_type(&self) -> &'static str {
        "bad"
    }
    fn capabilities(&self) -> ProviderCapabilities {
        self.sim.capabilities()
    }
    async fn vm_capabilities(&self, vm: &VmId) -> Result<VmCapabilities> {
        let mut c = self.sim.vm_capabilities(vm).await?;
        if self.mode == Misbehaviour::UnknownLiveLimits {
            c.max_live_vcpus = 0;
            c.max_live_memory_mib = 0;
        }
        Ok(c)
    }
    async fn reconfigure(
        &self,
        vm: &VmId,
        change: &ReconfigureRequest,
    ) -> Result<ReconfigureResult> {
        self.sim.reconfigure(vm, change).await
    }
    async fn power_state(&self, vm: &VmId) -> Result<PowerState> {
        self.sim.power_state(vm).await
    }
    async fn start(&self, vm: &VmId, o: &StartOptions) -> Result<()> {
        self.sim.start(vm, o).await
    }
    async fn power_off(&self, vm: &VmId, o: &PowerOffOptions) -> Result<()> {
        self.sim.power_off(vm, o).await
    }
    async fn request_shutdown(
        &self,
        vm: &VmId,
        c: ShutdownChannel,
        o: &ShutdownRequestOptions,
    ) -> Result<()> {
        self.sim.request_shutdown(vm, c, o).await
    }
    async fn describe(&self, vm: &VmId) -> Result<VmDescription> {
        self.sim.describe(vm).await
    }
    async fn delete(&self, vm: &VmId, o: &DeleteOptions) -> Result<()> {
        self.sim.delete(vm, o).await
    }
    async fn list_vms(&self, o: &ListOptions) -> Result<Vec<VmDescription>> {
        self.sim.list_vms(o).await
    }
    fn snapshotter(&self) -> Option<&dyn Snapshotter> {
        Some(self)
    }
    fn cloner(&self) -> Option<&dyn Cloner> {
        Some(self)
    }
}

#[async_trait]
impl Cloner for Bad {
    async fn clone_vm(&self, source: &VmId, opts: &CloneOptions) -> Result<CloneResult> {
        let r = self.sim.clone_vm(source, opts).await?;
        match self.mode {
            Misbehaviour::CloneLeavesHalfMade => {
                self.sim.start(&r.vm, &StartOptions::default()).await?;
                Err(Error::unavailable("disk copy failed at 80%"))
            }
            Misbehaviour::CloneDropsCustomization => Ok(CloneResult::new(r.vm, r.linked, false)),
            _ => Ok(r),
        }
    }
}

#[async_trait]
impl Snapshotter for Bad {
    async fn create_snapshot(&self, vm: &VmId, opts: &SnapshotOptions) -> Result<SnapshotInfo> {
        if self.mode == Misbehaviour::SnapshotHangs {
            // The snapshot appears on the provider but the call never returns.
            let _ = self
                .sim
                .snapshotter()
                .unwrap()
                .create_snapshot(vm, opts)
                .await;
            return std::future::pending().await;
        }
        self.sim
            .snapshotter()
            .unwrap()
            .create_snapshot(vm, opts)
            .await
    }
    async fn list_snapshots(&self, vm: &VmId) -> Result<Vec<SnapshotInfo>> {
        self.sim.snapshotter().unwrap().list_snapshots(vm).await
    }
    async fn revert_snapshot(&self, vm: &VmId, s: &str, o: &RevertOptions) -> Result<()> {
        self.sim
            .snapshotter()
            .unwrap()
            .revert_snapshot(vm, s, o)
            .await
    }
    async fn delete_snapshot(&self, vm: &VmId, s: &str, o: &DeleteSnapshotOptions) -> Result<()> {
        self.sim
            .snapshotter()
            .unwrap()
            .delete_snapshot(vm, s, o)
            .await
    }
}

fn setup(mode: Misbehaviour) -> (Simulator, VmId, Orchestrator) {
    let sim = Simulator::new();
    let vm = sim.add_vm("src", GuestBehavior::cooperative());
    let orch = Orchestrator::new(Arc::new(Bad {
        sim: sim.clone(),
        mode,
    }));
    (sim, vm, orch)
}

fn clone_obj(custom: bool) -> VMClone {
    let mut spec = VMCloneSpec::default();
    spec.source_ref = ObjectRef::new("src");
    let mut t = CloneTarget::default();
    t.name = "copy".into();
    spec.target = t;
    if custom {
        let mut c = CloneCustomization::default();
        c.hostname = Some("copy".into());
        spec.customization = Some(c);
    }
    VMClone::new("copy-clone", spec)
}

#[tokio::test(start_paused = true)]
async fn a_half_made_clone_left_by_the_provider_is_deleted() {
    let (sim, src, orch) = setup(Misbehaviour::CloneLeavesHalfMade);
    let mut c = clone_obj(false);
    let e = orch.clone_vm(&src, &mut c, None).await.unwrap_err();
    assert!(
        e.to_string().contains("half-made clone copy was deleted"),
        "{e}"
    );
    assert_eq!(sim.vm_count(), 1);
    assert_eq!(c.status.as_ref().unwrap().phase, Some(ClonePhase::Failed));
}

#[tokio::test(start_paused = true)]
async fn silently_dropped_customization_fails_the_clone() {
    let (sim, src, orch) = setup(Misbehaviour::CloneDropsCustomization);
    let mut c = clone_obj(true);
    let e = orch.clone_vm(&src, &mut c, None).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    assert!(
        e.to_string()
            .contains("did not apply the requested customization"),
        "{e}"
    );
    assert_eq!(sim.vm_count(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_snapshot_that_never_finishes_fails_at_its_deadline_and_is_removed() {
    let (sim, vm, orch) = setup(Misbehaviour::SnapshotHangs);
    let mut spec = VMSnapshotSpec::default();
    spec.vm_ref = ObjectRef::new("src");
    let mut s = VMSnapshot::new("stuck", spec);
    let mut opts = SnapshotCreateOptions::default();
    opts.failure_deadline = Duration::from_secs(120);
    let t0 = tokio::time::Instant::now();
    let e = orch.create_snapshot(&vm, &mut s, &opts).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout);
    assert_eq!(t0.elapsed(), Duration::from_secs(120));
    assert_eq!(
        s.status.as_ref().unwrap().phase,
        Some(SnapshotPhase::Failed)
    );
    assert!(
        sim.snapshotter()
            .unwrap()
            .list_snapshots(&vm)
            .await
            .unwrap()
            .is_empty(),
        "half-made snapshot removed"
    );
}

#[tokio::test(start_paused = true)]
async fn a_provider_that_only_finds_out_at_apply_time_still_gets_its_power_cycle() {
    let (sim, vm, orch) = setup(Misbehaviour::UnknownLiveLimits);
    let change = ResourceChange::default().cpu(16);
    let plan = orch
        .plan_reconfigure(&vm, &change, &ReconfigureOptions::default())
        .await
        .unwrap();
    assert_eq!(plan.mode, PlanMode::Online, "limits unknown: try live");
    let mut st = VirtualMachineStatus::default();
    let r = orch
        .reconfigure(&vm, &change, &ReconfigureOptions::default(), &mut st)
        .await
        .unwrap();
    assert_eq!(r.outcome, ReconfigureOutcome::PowerCycled);
    assert_eq!(sim.describe(&vm).await.unwrap().cpu, 16);
    assert_eq!(sim.true_state(&vm), Some(PowerState::Running));

    // Without permission to cycle: stored, pending, and said so.
    let mut no = ReconfigureOptions::default();
    no.allow_power_cycle = false;
    let mut st = VirtualMachineStatus::default();
    let r = orch
        .reconfigure(&vm, &ResourceChange::default().cpu(64), &no, &mut st)
        .await
        .unwrap();
    assert_eq!(r.outcome, ReconfigureOutcome::PendingPowerCycle);
    assert!(
        find_condition(
            &st.conditions,
            condition_types::RECONFIGURE_PENDING_POWER_CYCLE
        )
        .unwrap()
        .is_true()
    );
    assert!(sim.describe(&vm).await.unwrap().pending_power_cycle);
    assert_eq!(sim.true_state(&vm), Some(PowerState::Running));
}
