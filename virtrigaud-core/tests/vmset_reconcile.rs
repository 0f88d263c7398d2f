//! VM set reconciler scenarios on the simulator (paused clock): scale up and down, names and
//! labels, placement with host anti-affinity, readiness gates that pause a rollout across a
//! restart and resume it, the event stream, and `Recreate`.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use virtrigaud_core::model::{
    AntiAffinity, ImagePhase, IntOrPercent, ObjectRef, RollingUpdate, StoredImage, UpdateStrategy,
    UpdateStrategyType, VMImage, VMImageSpec, VMImageStatus, VMPlacementPolicySpec, VMSet,
    VMSetSpec,
};
use virtrigaud_core::placement::{DatastoreInfo, HostInfo, Resources, SolverPlacer};
use virtrigaud_core::shutdown::ShutdownManager;
use virtrigaud_core::sim::Simulator;
use virtrigaud_core::vmset::{
    Health, RolloutEvent, SET_LABEL, TEMPLATE_HASH_LABEL, VmSetReconciler, probe_fn, template_hash,
};
use virtrigaud_core::{
    ErrorKind, ListOptions, Placement, PowerState, Provider, VmCreateSpec, VmDescription,
};

const TICK: Duration = Duration::from_secs(1);

fn web(replicas: i32, version: &str) -> VMSet {
    let mut spec = VMSetSpec::default();
    spec.replicas = Some(replicas);
    spec.template
        .metadata
        .labels
        .insert("version".into(), version.into());
    VMSet::new("web", spec)
}

fn with_rolling(mut set: VMSet, unavailable: IntOrPercent, surge: IntOrPercent) -> VMSet {
    let mut ru = RollingUpdate::default();
    ru.max_unavailable = Some(unavailable);
    ru.max_surge = Some(surge);
    let mut us = UpdateStrategy::default();
    us.rolling_update = Some(ru);
    set.spec.update_strategy = Some(us);
    set
}

async fn members(sim: &Simulator) -> Vec<VmDescription> {
    let mut opts = ListOptions::default();
    opts.labels.insert(SET_LABEL.into(), "web".into());
    sim.list_vms(&opts).await.unwrap()
}

fn reconciler(sim: &Simulator) -> VmSetReconciler {
    let p: Arc<dyn Provider> = Arc::new(sim.clone());
    VmSetReconciler::new(Arc::clone(&p), ShutdownManager::new(p))
}

#[tokio::test(start_paused = true)]
async fn scales_up_and_down_with_names_and_labels() {
    let sim = Simulator::new();
    let r = reconciler(&sim);
    let set = web(3, "v1");
    let s = r.run_until_converged(&set, TICK, 20).await.unwrap();
    assert_eq!((s.existing, s.available, s.updated), (3, 3, 3));
    let vms = members(&sim).await;
    let names: Vec<&str> = vms.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["web-1", "web-2", "web-3"]);
    let hash = template_hash(&set.spec.template);
    for v in &vms {
        assert_eq!(v.labels.get(TEMPLATE_HASH_LABEL), Some(&hash));
        assert_eq!(v.labels.get("version").map(String::as_str), Some("v1"));
        assert_eq!(v.power_state, PowerState::Running);
    }
    let s = r
        .run_until_converged(&web(5, "v1"), TICK, 20)
        .await
        .unwrap();
    assert_eq!(s.existing, 5);
    let before = sim.calls("request_shutdown");
    let s = r
        .run_until_converged(&web(2, "v1"), TICK, 40)
        .await
        .unwrap();
    assert_eq!(s.existing, 2);
    assert_eq!(members(&sim).await.len(), 2);
    // Scale-down stops VMs gracefully (ACPI through the engine), not by a hard power-off.
    assert_eq!(sim.calls("request_shutdown") - before, 3);
    assert_eq!(sim.calls("power_off"), 0);
    let s = r.reconcile(&web(2, "v1")).await.unwrap();
    assert!(s.converged);
    assert_eq!(s.actions, 0);
}

#[tokio::test(start_paused = true)]
async fn placement_spreads_members_across_hosts_and_explains_failures() {
    let sim = Simulator::new();
    for i in 1..=4 {
        sim.add_host(HostInfo::new(format!("esx-{i}"), Resources::new(32, 65536)));
    }
    let p: Arc<dyn Provider> = Arc::new(sim.clone());
    let mut aa = AntiAffinity::default();
    aa.host_anti_affinity = true;
    let mut policy = VMPlacementPolicySpec::default();
    policy.anti_affinity = Some(aa);
    let r = VmSetReconciler::new(Arc::clone(&p), ShutdownManager::new(Arc::clone(&p)))
        .placer(Arc::new(SolverPlacer::new(p)))
        .placement_policy(policy);
    let mut events = Box::pin(r.events());
    // maxSurge 1 with 4 hosts and 3 replicas: the surge VM gets the fourth host.
    let set = with_rolling(web(3, "v1"), IntOrPercent::Count(0), IntOrPercent::Count(1));
    r.run_until_converged(&set, TICK, 20).await.unwrap();
    let v2 = with_rolling(web(3, "v2"), IntOrPercent::Count(0), IntOrPercent::Count(1));
    r.run_until_converged(&v2, TICK, 50).await.unwrap();
    let hosts: BTreeSet<String> = members(&sim)
        .await
        .into_iter()
        .map(|v| v.host.unwrap())
        .collect();
    assert_eq!(hosts.len(), 3, "one member per host");
    // Five replicas cannot fit on four hosts with host anti-affinity.
    let five = with_rolling(web(5, "v2"), IntOrPercent::Count(0), IntOrPercent::Count(1));
    let err = r.run_until_converged(&five, TICK, 5).await.unwrap_err();
    assert!(err.to_string().contains("not converged"), "{err}");
    let mut explanation = None;
    while let Some(Some(e)) = futures::FutureExt::now_or_never(events.next()) {
        if let RolloutEvent::PlacementFailed { reason, .. } = e {
            explanation = Some(reason);
        }
    }
    let explanation = explanation.unwrap();
    assert!(
        explanation.contains("4 hosts: host anti-affinity with web-"),
        "{explanation}"
    );
    assert_eq!(members(&sim).await.len(), 4);
}

#[tokio::test(start_paused = true)]
async fn datastore_anti_affinity_puts_each_member_on_its_own_datastore() {
    let sim = Simulator::new();
    // Four hosts sharing three datastores: datastore anti-affinity allows three members.
    let stores = ["ds-a", "ds-b", "ds-c"];
    for i in 1..=4 {
        let mut h = HostInfo::new(format!("esx-{i}"), Resources::new(32, 65536));
        h.datastores = stores.iter().map(|s| s.to_string()).collect();
        sim.add_host(h);
    }
    for s in stores {
        sim.add_datastore(DatastoreInfo::new(s, 500));
    }
    let p: Arc<dyn Provider> = Arc::new(sim.clone());
    let mut aa = AntiAffinity::default();
    aa.datastore_anti_affinity = true;
    let mut policy = VMPlacementPolicySpec::default();
    policy.anti_affinity = Some(aa);
    let r = VmSetReconciler::new(Arc::clone(&p), ShutdownManager::new(Arc::clone(&p)))
        .placer(Arc::new(SolverPlacer::new(Arc::clone(&p))))
        .placement_policy(policy);
    let mut events = Box::pin(r.events());
    r.run_until_converged(&web(3, "v1"), TICK, 20)
        .await
        .unwrap();
    let inv = p.inventory().await.unwrap();
    let mut used: Vec<Vec<String>> = inv.datastores.iter().map(|d| d.vms.clone()).collect();
    used.sort();
    assert_eq!(
        used,
        [["web-1"], ["web-2"], ["web-3"]],
        "one member per datastore"
    );
    // Each creation says where and why.
    let mut placed = Vec::new();
    while let Some(Some(e)) = futures::FutureExt::now_or_never(events.next()) {
        if let RolloutEvent::Creating {
            placement, reason, ..
        } = e
        {
            assert!(placement.datastore.is_some(), "{placement:?}");
            assert!(reason.unwrap().contains("score"));
            placed.push(placement);
        }
    }
    assert_eq!(placed.len(), 3);
    // A fourth cannot have a datastore of its own: nothing is created.
    let err = r
        .run_until_converged(&web(4, "v1"), TICK, 5)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not converged"), "{err}");
    assert_eq!(members(&sim).await.len(), 3);
}

#[tokio::test(start_paused = true)]
async fn the_simulator_refuses_a_placement_it_does_not_have() {
    let sim = Simulator::new();
    let mut h = HostInfo::new("esx-1", Resources::new(8, 8192));
    h.datastores = vec!["ds-a".into()];
    sim.add_host(h);
    sim.add_datastore(DatastoreInfo::new("ds-a", 100));
    sim.add_datastore(DatastoreInfo::new("ds-far", 100));
    let cases = [
        (Placement::on_host("esx-9"), "placement.host"),
        (
            Placement::on_host("esx-1").with_datastore("ds-far"),
            "placement.datastore",
        ),
        (Placement::in_cluster("c9"), "placement.cluster"),
    ];
    for (placement, field) in cases {
        let mut spec = VmCreateSpec::new("lost", 1, 512);
        spec.placement = placement;
        let err = sim.create(&spec).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        assert!(err.to_string().contains(field), "{err}");
    }
    assert!(
        sim.list_vms(&ListOptions::default())
            .await
            .unwrap()
            .is_empty()
    );
    let mut spec = VmCreateSpec::new("here", 1, 512);
    spec.placement = Placement::on_host("esx-1").with_datastore("ds-a");
    let id = sim.create(&spec).await.unwrap();
    assert_eq!(
        sim.describe(&id).await.unwrap().host.as_deref(),
        Some("esx-1")
    );
    let inv = sim.inventory().await.unwrap();
    assert_eq!(inv.datastores[0].vms, ["here"]);
}

#[tokio::test(start_paused = true)]
async fn members_are_made_from_the_prepared_vmimage_their_imageref_names() {
    let sim = Simulator::new();
    let mut set = web(2, "v1");
    set.spec.template.spec.image_ref = Some(ObjectRef::new("ubuntu"));
    // Without a resolver the name alone is no image: nothing is created.
    let err = reconciler(&sim)
        .run_until_converged(&set, TICK, 3)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not converged"), "{err}");
    assert!(members(&sim).await.is_empty());
    // An image not Ready yet: the set waits.
    let mut images = BTreeMap::new();
    images.insert(
        "ubuntu".to_owned(),
        VMImage::new("ubuntu", VMImageSpec::default()),
    );
    let waiting = reconciler(&sim).images(Arc::new(images.clone()));
    let s = waiting.reconcile(&set).await.unwrap();
    assert!(
        s.errors
            .iter()
            .any(|e| e.contains("template.spec.imageRef")),
        "{:?}",
        s.errors
    );
    assert!(members(&sim).await.is_empty());
    // Ready on this provider: every member is created from its stored reference.
    let mut st = VMImageStatus::default();
    st.phase = Some(ImagePhase::Ready);
    st.stored = Some(StoredImage::new(
        "simulator",
        "pool/ubuntu-22.04.img",
        1 << 30,
    ));
    images.get_mut("ubuntu").unwrap().status = Some(st);
    let ready = reconciler(&sim).images(Arc::new(images));
    ready.run_until_converged(&set, TICK, 20).await.unwrap();
    let vms = members(&sim).await;
    assert_eq!(vms.len(), 2);
    for v in &vms {
        assert_eq!(
            sim.image_of(&v.id).as_deref(),
            Some("pool/ubuntu-22.04.img")
        );
    }
}

#[tokio::test(start_paused = true)]
async fn failed_gate_pauses_across_a_restart_and_resumes() {
    let sim = Simulator::new();
    let healthy = Arc::new(AtomicBool::new(false));
    let make = |sim: &Simulator| {
        let h = Arc::clone(&healthy);
        let probe = probe_fn(move |vm: VmDescription| {
            let h = Arc::clone(&h);
            async move {
                let v2 = vm.labels.get("version").map(String::as_str) == Some("v2");
                if v2 && !h.load(Ordering::SeqCst) {
                    Health::Failed("HTTP 503 on /healthz".into())
                } else {
                    Health::Ready
                }
            }
        });
        reconciler(sim).probe(probe)
    };
    let v1 = with_rolling(web(4, "v1"), IntOrPercent::Count(1), IntOrPercent::Count(1));
    let v2 = with_rolling(web(4, "v2"), IntOrPercent::Count(1), IntOrPercent::Count(1));
    let r = make(&sim);
    r.run_until_converged(&v1, TICK, 20).await.unwrap();
    let mut rx = r.subscribe();
    let mut paused = None;
    for _ in 0..6 {
        let s = r.reconcile(&v2).await.unwrap();
        if s.paused.is_some() {
            paused = s.paused;
            break;
        }
        tokio::time::sleep(TICK).await;
    }
    let (vm, why) = paused.expect("the rollout pauses on the failed gate");
    assert!(why.contains("503"), "{why}");
    assert!(vm.starts_with("web-"));
    let mut saw_paused = false;
    while let Ok(e) = rx.try_recv() {
        saw_paused |= matches!(e, RolloutEvent::Paused { .. });
    }
    assert!(saw_paused);
    // Nothing moves while paused; at most 1 + 1 VMs on v2's way, never below 3 available.
    let count = members(&sim).await.len();
    let s = r.reconcile(&v2).await.unwrap();
    assert_eq!(s.actions, 0);
    assert_eq!(members(&sim).await.len(), count);
    assert!(count <= 5);
    let model = s.to_model(None);
    assert!(model.conditions.iter().any(|c| c.type_ == "Paused"));

    // The embedding process restarts: the pause is derived from the VMs again.
    drop(r);
    let r = make(&sim);
    let s = r.reconcile(&v2).await.unwrap();
    assert_eq!(s.paused.as_ref().map(|p| p.0.as_str()), Some(vm.as_str()));

    // The service recovers: the rollout resumes and completes.
    healthy.store(true, Ordering::SeqCst);
    let mut rx = r.subscribe();
    let s = r.run_until_converged(&v2, TICK, 50).await.unwrap();
    assert_eq!((s.updated, s.available), (4, 4));
    let mut kinds = Vec::new();
    while let Ok(e) = rx.try_recv() {
        kinds.push(e);
    }
    assert!(
        kinds
            .iter()
            .any(|e| matches!(e, RolloutEvent::Resumed { .. }))
    );
    assert!(matches!(kinds.last(), Some(RolloutEvent::Converged { .. })));
}

#[tokio::test(start_paused = true)]
async fn event_stream_reports_a_rollout_in_order() {
    let sim = Simulator::new();
    let r = reconciler(&sim);
    r.run_until_converged(&web(2, "v1"), TICK, 20)
        .await
        .unwrap();
    let mut rx = r.subscribe();
    let v2 = with_rolling(web(2, "v2"), IntOrPercent::Count(0), IntOrPercent::Count(1));
    r.run_until_converged(&v2, TICK, 30).await.unwrap();
    let mut log = Vec::new();
    while let Ok(e) = rx.try_recv() {
        match e {
            RolloutEvent::Created { vm, .. } => log.push(format!("created {vm}")),
            RolloutEvent::Deleted { vm, shutdown, .. } => {
                log.push(format!("deleted {vm} ({shutdown})"))
            }
            RolloutEvent::Converged { .. } => log.push("converged".into()),
            _ => {}
        }
    }
    assert_eq!(
        log,
        [
            "created web-3",
            "deleted web-1 (graceful (acpi))",
            "created web-1",
            "deleted web-2 (graceful (acpi))",
            "converged"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn recreate_removes_every_old_vm_first() {
    let sim = Simulator::new();
    let r = reconciler(&sim);
    r.run_until_converged(&web(3, "v1"), TICK, 20)
        .await
        .unwrap();
    let mut v2 = web(3, "v2");
    let mut us = UpdateStrategy::default();
    us.type_ = UpdateStrategyType::Recreate;
    v2.spec.update_strategy = Some(us);
    let s = r.reconcile(&v2).await.unwrap();
    assert_eq!(s.actions, 3);
    assert!(members(&sim).await.is_empty());
    let s = r.run_until_converged(&v2, TICK, 20).await.unwrap();
    assert_eq!(s.updated, 3);
}

#[tokio::test(start_paused = true)]
async fn stopped_member_is_powered_on_by_the_power_gate() {
    let sim = Simulator::new();
    let r = reconciler(&sim);
    r.run_until_converged(&web(2, "v1"), TICK, 20)
        .await
        .unwrap();
    let vm = members(&sim).await[0].id.clone();
    sim.power_off(&vm, &Default::default()).await.unwrap();
    let s = r
        .run_until_converged(&web(2, "v1"), TICK, 20)
        .await
        .unwrap();
    assert_eq!(s.available, 2);
    assert_eq!(sim.true_state(&vm), Some(PowerState::Running));
}

#[tokio::test(start_paused = true)]
async fn an_unobservable_set_is_paused_with_a_condition_and_left_alone() {
    let sim = Simulator::new();
    let r = reconciler(&sim);
    r.run_until_converged(&web(2, "v1"), TICK, 20)
        .await
        .unwrap();
    let creates = sim.calls("create");
    // The listing fails (a provider refusing a partial listing answers Unavailable).
    sim.inject_fault("list_vms", virtrigaud_core::ErrorKind::Unavailable);
    let s = r.reconcile(&web(4, "v2")).await.unwrap();
    assert!(!s.converged);
    assert_eq!(s.actions, 0);
    let why = s.unobserved.clone().expect("unobserved");
    assert!(why.contains("unavailable"), "{why}");
    assert_eq!(
        sim.calls("create"),
        creates,
        "nothing made from a failed listing"
    );
    let status = s.to_model(Some(7));
    let paused = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Paused")
        .expect("Paused condition");
    assert_eq!(paused.reason, "MembersUnobserved");
    assert!(
        status
            .conditions
            .iter()
            .filter(|c| c.type_ != "Paused")
            .all(|c| c.status == virtrigaud_core::model::ConditionStatus::Unknown),
        "{status:?}"
    );
    // The next pass sees the members again and goes on.
    let s = r
        .run_until_converged(&web(4, "v2"), TICK, 60)
        .await
        .unwrap();
    assert_eq!((s.existing, s.updated), (4, 4));
    assert!(s.unobserved.is_none());
}
