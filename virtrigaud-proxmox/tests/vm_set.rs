//! Labels and VM sets against fakepve: labels written at create come back exactly through
//! `describe` and `list_vms` (PVE tags, escaped losslessly), listings filter on them, and a
//! set reconciled on PVE never creates duplicates, even while a node holding a member is
//! offline (the set is paused with a condition until the listing is whole again).
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use virtrigaud_core::model::{VMSet, VMSetSpec};
use virtrigaud_core::shutdown::{ShutdownManager, ShutdownPolicy};
use virtrigaud_core::vmset::{SET_LABEL, VmSetReconciler, create_spec, template_hash};
use virtrigaud_core::{
    DeleteOptions, DiskCreateSpec, ErrorKind, ListOptions, Placement, PowerOffOptions, Provider,
    VmCreateSpec, VmDescription, VmId,
};
use virtrigaud_proxmox::ProxmoxProvider;

const TICK: Duration = Duration::from_millis(100);

fn unique(name: &str) -> String {
    format!("{name}-{}", std::process::id())
}

fn set(name: &str, replicas: i32) -> VMSet {
    let mut spec = VMSetSpec::default();
    spec.replicas = Some(replicas);
    spec.template
        .metadata
        .labels
        .insert("app".into(), "Web-Server".into());
    VMSet::new(name, spec)
}

fn reconciler(p: &Arc<ProxmoxProvider>) -> VmSetReconciler {
    let p: Arc<dyn Provider> = Arc::clone(p) as Arc<dyn Provider>;
    VmSetReconciler::new(Arc::clone(&p), ShutdownManager::new(p))
        .shutdown_policy(ShutdownPolicy::with_grace(Duration::from_secs(5)))
}

async fn members(p: &ProxmoxProvider, set: &str) -> Vec<VmDescription> {
    let mut opts = ListOptions::default();
    opts.labels.insert(SET_LABEL.into(), set.into());
    p.list_vms(&opts).await.unwrap()
}

async fn remove(p: &ProxmoxProvider, vm: &VmId) {
    if p.power_state(vm).await.is_ok_and(|s| s.is_active()) {
        p.power_off(vm, &PowerOffOptions::default()).await.unwrap();
    }
    let mut opts = DeleteOptions::default();
    opts.delete_disks = true;
    p.delete(vm, &opts).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_round_trip_through_tags_and_filter_listings() {
    let Some(env) = common::env() else { return };
    let p = env.provider();
    let mut spec = VmCreateSpec::new(unique("labelled"), 1, 128);
    spec.disks = vec![DiskCreateSpec::new("root", 1)];
    for (k, v) in [
        ("virtrigaud.io/set", "web"),
        ("virtrigaud.io/template-hash", "5f3a9c"),
        ("Team", "Blue_Green"),
        ("pinned", ""),
    ] {
        spec.labels.insert(k.into(), v.into());
    }
    let vm = p.create(&spec).await.unwrap();
    assert_eq!(p.describe(&vm).await.unwrap().labels, spec.labels);
    // What PVE holds: one tag per label, each in PVE's `pve-tag` format.
    let fake = env.control.fake_vm(&vm).await;
    let tags = fake["config"]["tags"].as_str().unwrap().to_owned();
    assert!(tags.contains("vr+virtrigaud.io_2fset-web"), "{tags}");
    let pve_tag = regex::Regex::new(r"^(?i)[a-z0-9_][a-z0-9_+.-]*$").unwrap();
    assert_eq!(
        tags.split(';').filter(|t| pve_tag.is_match(t)).count(),
        4,
        "{tags}"
    );
    let mut opts = ListOptions::default();
    opts.labels.insert("Team".into(), "Blue_Green".into());
    let found = p.list_vms(&opts).await.unwrap();
    assert_eq!(found.iter().map(|v| &v.id).collect::<Vec<_>>(), [&vm]);
    assert_eq!(found[0].labels, spec.labels);
    // A near miss does not match: the encoding keeps case and punctuation apart.
    opts.labels.insert("Team".into(), "blue-green".into());
    assert!(p.list_vms(&opts).await.unwrap().is_empty());
    remove(&p, &vm).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_set_finds_its_members_and_scales_without_duplicates() {
    let Some(env) = common::env() else { return };
    let p = env.provider();
    let r = reconciler(&p);
    let name = unique("pveset");
    let s = r
        .run_until_converged(&set(&name, 3), TICK, 600)
        .await
        .unwrap();
    assert_eq!((s.existing, s.updated), (3, 3));
    let found = members(&p, &name).await;
    let mut names: Vec<String> = found.iter().map(|v| v.name.clone()).collect();
    names.sort();
    assert_eq!(
        names,
        ["1", "2", "3"].map(|n| format!("{name}-{n}")),
        "{found:?}"
    );
    let hash = template_hash(&set(&name, 3).spec.template);
    for v in &found {
        assert_eq!(v.labels.get("app").map(String::as_str), Some("Web-Server"));
        assert_eq!(
            v.labels.get("virtrigaud.io/template-hash"),
            Some(&hash),
            "{v:?}"
        );
    }
    // Passes on a converged set do nothing: the members are seen, none is made again.
    for _ in 0..3 {
        let s = r.reconcile(&set(&name, 3)).await.unwrap();
        assert!(s.converged, "{s:?}");
        assert_eq!(s.actions, 0);
    }
    assert_eq!(members(&p, &name).await.len(), 3);
    r.run_until_converged(&set(&name, 1), TICK, 600)
        .await
        .unwrap();
    assert_eq!(members(&p, &name).await.len(), 1);
    r.run_until_converged(&set(&name, 0), TICK, 600)
        .await
        .unwrap();
    assert!(members(&p, &name).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_listing_never_makes_a_set_create_duplicates() {
    let Some(env) = common::env() else { return };
    let p = env.provider();
    let r = reconciler(&p);
    let name = unique("pvepartial");
    let desired = set(&name, 2);
    // One member on pve2, made as the reconciler would make it.
    let template = &desired.spec.template;
    let mut first = create_spec(
        &name,
        &format!("{name}-1"),
        template,
        &template_hash(template),
    );
    first.placement = Placement::on_host("pve2");
    let on_pve2 = p.create(&first).await.unwrap();
    env.control
        .post("/node", json!({"node": "pve2", "online": false}))
        .await;
    // While pve2 is offline, listings are refused as partial, and passes fail without acting.
    let e = p
        .list_vms(&ListOptions::default())
        .await
        .expect_err("a listing missing a VM is refused");
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.is_retryable());
    assert!(e.message().contains("pve2"), "{e}");
    for _ in 0..3 {
        let s = r.reconcile(&desired).await.unwrap();
        assert_eq!(s.actions, 0, "{s:?}");
        let why = s.unobserved.clone().expect("paused as unobserved");
        assert!(why.contains("pve2"), "{why}");
        let status = s.to_model(None);
        assert!(
            status
                .conditions
                .iter()
                .any(|c| c.type_ == "Paused" && c.reason == "MembersUnobserved"),
            "{status:?}"
        );
    }
    env.control
        .post("/node", json!({"node": "pve2", "online": true}))
        .await;
    r.run_until_converged(&desired, TICK, 600).await.unwrap();
    let found = members(&p, &name).await;
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found.iter().any(|v| v.id == on_pve2), "{found:?}");
    let mut names: Vec<&str> = found.iter().map(|v| v.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), 2, "a name appears twice: {found:?}");
    r.run_until_converged(&set(&name, 0), TICK, 600)
        .await
        .unwrap();
    assert!(members(&p, &name).await.is_empty());
}
