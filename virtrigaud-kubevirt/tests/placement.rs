//! Placement on the KubeVirt test apiserver: the inventory is the test cluster's nodes and
//! storage classes (served by the testkit, which the CRD apiserver lacks); a VM set placed
//! with host anti-affinity gets one node per member, pinned by node selector, and keeps the
//! rule as required pod anti-affinity on each VM's template.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use kube::api::Api;
use virtrigaud_core::model::{AntiAffinity, VMPlacementPolicySpec, VMSet, VMSetSpec};
use virtrigaud_core::placement::SolverPlacer;
use virtrigaud_core::shutdown::{ShutdownManager, ShutdownPolicy};
use virtrigaud_core::vmset::{SET_LABEL, VmSetReconciler};
use virtrigaud_core::{ListOptions, Provider};
use virtrigaud_kubevirt::types::VirtualMachine;

use common::{FakeKubeVirt, NODES, STORAGE_CLASSES, client, kubeconfig, provider, unique_ns};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inventory_is_the_nodes_and_storage_classes() {
    let Some(path) = kubeconfig() else { return };
    let ns = unique_ns("inv");
    let p = provider(&path, &ns).await;
    assert!(p.capabilities().inventory);
    let inv = p.inventory().await.expect("inventory");
    let hosts: Vec<&str> = inv.hosts.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(hosts, NODES);
    assert_eq!(inv.hosts[1].zone.as_deref(), Some("zone-2"));
    assert_eq!(inv.hosts[0].capacity.cpu, 8);
    assert_eq!(inv.hosts[0].capacity.memory_mib, 16 * 1024);
    let classes: Vec<&str> = inv.datastores.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(classes, STORAGE_CLASSES);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_with_host_anti_affinity_gets_a_node_each_and_keeps_the_rule() {
    let Some(path) = kubeconfig() else { return };
    let ns = unique_ns("spread");
    let kube = client(&path).await;
    let _ctl = FakeKubeVirt::start(kube.clone(), &ns, false);
    let p: Arc<dyn Provider> = Arc::new(provider(&path, &ns).await);
    let mut aa = AntiAffinity::default();
    aa.host_anti_affinity = true;
    let mut policy = VMPlacementPolicySpec::default();
    policy.anti_affinity = Some(aa);
    let reconciler = VmSetReconciler::new(Arc::clone(&p), ShutdownManager::new(Arc::clone(&p)))
        .shutdown_policy(ShutdownPolicy::with_grace(Duration::from_secs(5)))
        .placer(Arc::new(SolverPlacer::new(Arc::clone(&p))))
        .placement_policy(policy);
    let mut spec = VMSetSpec::default();
    spec.replicas = Some(3);
    let mut set = VMSet::new("web", spec);
    reconciler
        .run_until_converged(&set, Duration::from_millis(200), 300)
        .await
        .expect("three members, one per node");

    let vms: Api<VirtualMachine> = Api::namespaced(kube.clone(), &ns);
    let mut nodes = BTreeSet::new();
    for m in p.list_vms(&ListOptions::default()).await.unwrap() {
        let vm = serde_json::to_value(vms.get(&m.name).await.unwrap()).unwrap();
        let t = &vm["spec"]["template"]["spec"];
        nodes.insert(
            t["nodeSelector"]["kubernetes.io/hostname"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
        let term =
            &t["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0];
        assert_eq!(
            term["labelSelector"]["matchLabels"][SET_LABEL], "web",
            "{vm}"
        );
        assert_eq!(term["topologyKey"], "kubernetes.io/hostname");
        assert_eq!(
            m.host.as_deref(),
            t["nodeSelector"]["kubernetes.io/hostname"].as_str()
        );
    }
    assert_eq!(nodes.len(), 3, "{nodes:?}");

    // A fourth member has no node of its own: nothing more is created.
    set.spec.replicas = Some(4);
    assert!(
        reconciler
            .run_until_converged(&set, Duration::from_millis(200), 5)
            .await
            .is_err()
    );
    assert_eq!(p.list_vms(&ListOptions::default()).await.unwrap().len(), 3);
    set.spec.replicas = Some(0);
    reconciler
        .run_until_converged(&set, Duration::from_millis(200), 300)
        .await
        .expect("scale to 0");
}
