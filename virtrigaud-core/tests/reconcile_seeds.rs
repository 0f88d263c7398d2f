//! The seed 003 objects, verbatim (`tests/fixtures/seeds/`), fed to their reconcilers on the
//! simulator (paused time): VMSnapshot, the revert patch, VMClone with its customization
//! patch, VMPlacementPolicy with the placementRef patch, VMImage. Each test also kills the
//! reconciling "process" between two passes (drops the reconciler, keeps the persisted
//! object, builds a new one) where that is where restart safety matters.
#![cfg(feature = "yaml")]
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use serde_json::Value;
use virtrigaud_core::model::{
    ClonePhase, ImagePhase, SnapshotPhase, VMClone, VMImage, VMPlacementPolicy, VMSnapshot,
    VirtualMachine, condition_types, find_condition, from_json_str, from_yaml_str,
};
use virtrigaud_core::orchestration::Orchestrator;
use virtrigaud_core::orchestration::image::{FileSink, ImagePreparer, ImageSource, SourceStream};
use virtrigaud_core::placement::{DatastoreInfo, HostInfo, Resources};
use virtrigaud_core::reconcile::{
    Action, CloneReconciler, ImageReconciler, PlacementPolicyReconciler, SnapshotReconciler,
    VmReconciler,
};
use virtrigaud_core::sim::{GuestBehavior, Simulator};
use virtrigaud_core::{ErrorKind, ListOptions, Provider, Result, VmId};

fn seed(name: &str) -> String {
    let path = format!("{}/tests/fixtures/seeds/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn yaml_value(text: &str) -> Value {
    serde_saphyr::from_str(text).unwrap()
}

/// RFC 7386 merge patch (what `kubectl patch --type merge` does).
fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

/// `base` (a seed file) with the seed patch file `patch` applied.
fn patched<T: serde::de::DeserializeOwned + virtrigaud_core::model::Validate>(
    base: &str,
    patch: &str,
) -> T {
    let mut v = yaml_value(&seed(base));
    merge(&mut v, &yaml_value(&seed(patch)));
    from_json_str(&v.to_string()).unwrap()
}

async fn snapshots_of(sim: &Simulator, vm: &VmId) -> Vec<String> {
    let list = sim.snapshotter().unwrap().list_snapshots(vm).await.unwrap();
    list.into_iter().map(|s| s.name).collect()
}

#[tokio::test(start_paused = true)]
async fn seed_003_snapshot_is_claimed_made_once_across_a_restart_and_deleted() {
    let sim = Simulator::new();
    let vm = sim.add_vm("web-server", GuestBehavior::cooperative());
    let p: Arc<dyn Provider> = Arc::new(sim.clone());
    let mut snap: VMSnapshot = from_yaml_str(&seed("003_03_vmsnapshot.yaml")).unwrap();

    // Pass 1 claims the name; nothing is made yet.
    let r = SnapshotReconciler::new(Orchestrator::new(Arc::clone(&p)));
    let a = r.reconcile(&vm, &mut snap).await.unwrap();
    assert!(matches!(a, Action::Requeue(_)), "{a:?}");
    let phase = |s: &VMSnapshot| s.status.as_ref().and_then(|s| s.phase);
    assert_eq!(phase(&snap), Some(SnapshotPhase::Creating));
    assert!(snapshots_of(&sim, &vm).await.is_empty());

    // The process dies after the provider made the snapshot but before its status was
    // saved: the persisted object still says Creating.
    let persisted = snap.clone();
    r.reconcile(&vm, &mut snap).await.unwrap();
    assert_eq!(phase(&snap), Some(SnapshotPhase::Ready));
    drop(r);
    let mut snap = persisted;
    let r = SnapshotReconciler::new(Orchestrator::new(Arc::clone(&p)));
    r.run_until_settled(&vm, &mut snap, 5).await.unwrap();
    assert_eq!(phase(&snap), Some(SnapshotPhase::Ready));
    assert_eq!(
        snapshots_of(&sim, &vm).await,
        vec!["maintenance-backup"],
        "adopted, not made twice"
    );
    let id = snap.status.as_ref().unwrap().snapshot_id.clone().unwrap();
    assert!(r.reconcile(&vm, &mut snap).await.unwrap().is_settled());

    // Another object asking for the same provider name is refused; the snapshot stays.
    let mut other: VMSnapshot = from_yaml_str(&seed("003_03_vmsnapshot.yaml")).unwrap();
    other.metadata.name = "second".into();
    let e = r.reconcile(&vm, &mut other).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict);
    assert_eq!(phase(&other), Some(SnapshotPhase::Failed));
    other.metadata.deletion_timestamp = Some("2026-12-04T00:00:00Z".into());
    assert!(r.reconcile(&vm, &mut other).await.unwrap().is_settled());
    assert_eq!(snapshots_of(&sim, &vm).await.len(), 1, "not this object's");

    // Seed 003's revert patch on the VM uses it, and is cleared when done.
    let mut web: VirtualMachine =
        patched("003_01_vm_resources.yaml", "003_04_vm_revert_patch.yaml");
    assert!(web.spec.snapshot.as_ref().unwrap().revert_to_ref.is_some());
    let vr = VmReconciler::new(Orchestrator::new(Arc::clone(&p)));
    vr.run_until_settled(&vm, &mut web, std::slice::from_ref(&snap), 10)
        .await
        .unwrap();
    assert!(
        web.spec.snapshot.unwrap().revert_to_ref.is_none(),
        "cleared"
    );

    // Deleting the object deletes the snapshot it recorded.
    snap.metadata.deletion_timestamp = Some("2026-12-04T00:00:00Z".into());
    r.run_until_settled(&vm, &mut snap, 5).await.unwrap();
    assert!(snapshots_of(&sim, &vm).await.is_empty(), "{id} deleted");
}

#[tokio::test(start_paused = true)]
async fn seed_003_clone_with_its_customization_rolls_back_a_half_made_clone() {
    let sim = Simulator::new();
    let source = sim.add_vm("web-server", GuestBehavior::cooperative());
    let p: Arc<dyn Provider> = Arc::new(sim.clone());
    let mut clone: VMClone = patched(
        "003_05_vmclone.yaml",
        "003_06_vmclone_customization_patch.yaml",
    );
    let phase = |c: &VMClone| c.status.as_ref().and_then(|s| s.phase);
    let r = CloneReconciler::new(Orchestrator::new(Arc::clone(&p)));
    assert!(matches!(
        r.reconcile(&source, &mut clone, None).await.unwrap(),
        Action::Requeue(_)
    ));
    assert_eq!(phase(&clone), Some(ClonePhase::Cloning));
    let claimed = clone.clone();
    r.reconcile(&source, &mut clone, None).await.unwrap();
    assert_eq!(phase(&clone), Some(ClonePhase::Ready));
    let first = clone.status.as_ref().unwrap().target_id.clone().unwrap();
    assert!(
        sim.power_state(&VmId::new(&first))
            .await
            .unwrap()
            .is_active(),
        "powerOn: true"
    );

    // A restart finds the claim (status not saved after the clone): the clone it finds is
    // its own half-made one, removed and made again.
    drop(r);
    let mut clone = claimed;
    let r = CloneReconciler::new(Orchestrator::new(Arc::clone(&p)));
    for _ in 0..4 {
        if r.reconcile(&source, &mut clone, None)
            .await
            .unwrap()
            .is_settled()
        {
            break;
        }
    }
    assert_eq!(phase(&clone), Some(ClonePhase::Ready));
    let vms = sim.list_vms(&ListOptions::default()).await.unwrap();
    let named: Vec<_> = vms.iter().filter(|d| d.name == "web-server-test").collect();
    assert_eq!(named.len(), 1, "one clone: {vms:?}");

    // An object whose target name is taken by a VM it did not make is refused.
    let mut other: VMClone = from_yaml_str(&seed("003_05_vmclone.yaml")).unwrap();
    let e = r.reconcile(&source, &mut other, None).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict);
    assert_eq!(phase(&other), Some(ClonePhase::Failed));
    assert!(sim.describe(&named[0].id).await.is_ok(), "left alone");
}

#[tokio::test(start_paused = true)]
async fn seed_003_placement_policy_reports_what_it_cannot_meet_and_who_uses_it() {
    let sim = Simulator::new();
    for (i, cluster) in [
        (1, "prod-cluster-1"),
        (2, "prod-cluster-1"),
        (3, "prod-cluster-2"),
    ] {
        let mut h = HostInfo::new(format!("esxi-0{i}"), Resources::new(16, 32768)).cluster(cluster);
        h.datastores = vec!["ssd-datastore-1".into(), "ssd-datastore-2".into()];
        sim.add_host(h);
    }
    sim.add_datastore(DatastoreInfo::new("ssd-datastore-1", 500));
    let p: Arc<dyn Provider> = Arc::new(sim.clone());
    let mut policy: VMPlacementPolicy =
        from_yaml_str(&seed("003_08_vmplacementpolicy.yaml")).unwrap();
    let web: VirtualMachine = patched(
        "003_01_vm_resources.yaml",
        "003_09_vm_placementref_patch.yaml",
    );
    let users = [web.metadata.name.clone()];
    let r = PlacementPolicyReconciler::new(Arc::clone(&p));
    let a = r.reconcile(&mut policy, &users).await.unwrap();
    assert!(matches!(a, Action::Requeue(_)));
    let st = policy.status.as_ref().unwrap();
    assert_eq!(st.used_by_vms, vec!["web-server"]);
    let ready = find_condition(&st.conditions, condition_types::READY).unwrap();
    assert!(ready.is_true(), "{ready:?}");
    assert_eq!(ready.reason, "Satisfiable");

    // A hard constraint naming a host that is not there is reported by field.
    policy
        .spec
        .hard
        .as_mut()
        .unwrap()
        .hosts
        .push("esxi-09".into());
    r.reconcile(&mut policy, &users).await.unwrap();
    let st = policy.status.as_ref().unwrap();
    let ready = find_condition(&st.conditions, condition_types::READY).unwrap();
    assert!(!ready.is_true());
    assert_eq!(ready.reason, "Unsatisfiable");
    assert!(
        ready.message.contains("spec.hard.hosts: esxi-09"),
        "{}",
        ready.message
    );
}

/// The image's bytes, served from memory (the seed's URLs are not fetched by tests).
#[derive(Debug)]
struct Memory(Bytes);

#[async_trait]
impl ImageSource for Memory {
    async fn open(&self, offset: u64) -> Result<SourceStream> {
        let rest = self.0.slice(usize::try_from(offset).unwrap()..);
        Ok(SourceStream::new(
            offset,
            Some(self.0.len() as u64),
            futures::stream::iter([Ok(rest)]).boxed(),
        ))
    }
}

#[tokio::test]
async fn seed_003_image_is_prepared_once_again_when_gone_and_removed_with_its_object() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Arc::new(FileSink::new(dir.path()));
    let r = ImageReconciler::new(ImagePreparer::new(sink), "libvirt");
    let source = Memory(Bytes::from(vec![7u8; 64 << 10]));
    // The seed's vSphere checksum is a placeholder ("sha256:abcd1234..."): verbatim, the
    // object is refused naming the field; with a real digest in its place it is prepared.
    let text = seed("003_10_vmimage.yaml");
    let e = from_yaml_str::<VMImage>(&text).unwrap_err();
    assert_eq!(e.path(), Some("spec.vsphere.checksum"));
    let digest = format!("sha256:{}", "ab".repeat(32));
    let mut image: VMImage = from_yaml_str(&text.replace("sha256:abcd1234...", &digest)).unwrap();
    let phase = |i: &VMImage| i.status.as_ref().and_then(|s| s.phase);
    assert!(r.reconcile(&mut image, &source).await.unwrap().is_settled());
    assert_eq!(phase(&image), Some(ImagePhase::Ready));
    let file = dir.path().join("ubuntu-22-04");
    assert_eq!(std::fs::metadata(&file).unwrap().len(), 64 << 10);
    assert!(r.reconcile(&mut image, &source).await.unwrap().is_settled());

    // The stored copy disappears: the next pass prepares it again.
    std::fs::remove_file(&file).unwrap();
    r.reconcile(&mut image, &source).await.unwrap();
    assert_eq!(std::fs::metadata(&file).unwrap().len(), 64 << 10);

    // An import interrupted by a restart (status left Importing) is simply run again.
    let mut interrupted = image.clone();
    interrupted.status.as_mut().unwrap().phase = Some(ImagePhase::Importing);
    r.reconcile(&mut interrupted, &source).await.unwrap();
    assert_eq!(phase(&interrupted), Some(ImagePhase::Ready));

    image.metadata.deletion_timestamp = Some("2026-12-04T00:00:00Z".into());
    assert!(r.reconcile(&mut image, &source).await.unwrap().is_settled());
    assert!(!file.exists());
    assert!(r.reconcile(&mut image, &source).await.unwrap().is_settled());
}

#[tokio::test(start_paused = true)]
async fn a_snapshot_nobody_can_take_fails_typed() {
    let sim = Simulator::new();
    let vm = VmId::new("missing");
    let r = SnapshotReconciler::new(Orchestrator::new(Arc::new(sim.clone())));
    let mut snap: VMSnapshot = from_yaml_str(&seed("003_03_vmsnapshot.yaml")).unwrap();
    let e = r.reconcile(&vm, &mut snap).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
}
