//! Test support (feature `testkit`; **not a stable API**): fixtures for tests against a real
//! kube-apiserver serving the KubeVirt CRDs (a client, unique namespaces, VMs) and
//! [`FakeKubeVirt`], a small fake virt-controller / virt-handler / snapshot controller that
//! plays KubeVirt's part of the protocol against that apiserver (no virt-api: use
//! [`crate::PowerApi::RunStrategy`]).
//!
//! Annotations on a VM script its guest: [`GUEST_SHUTDOWN`], [`BOOT`], [`SNAPSHOT_STUCK`];
//! [`FakeKubeVirt::fail_next_clone`] makes a `VirtualMachineClone` fail after it created the
//! target VM. The apiserver serves no core `v1` API: the clients and providers made here get
//! Secrets from [`CoreSecrets`], in memory, and nodes and storage classes from
//! [`CoreCluster`]. The fake controller runs a VMI on the node its template's
//! `kubernetes.io/hostname` node selector names, else on `node-1`.
//! [`FakeCdi`] plays CDI for `DataVolume`s with an HTTP source (the importer's fetch runs in
//! the test process), and [`serve_image`] serves test images.
//! Helpers panic on failure (they are test code).
#![allow(clippy::unwrap_used, clippy::collapsible_match)]

mod cdi;
mod cluster;
mod controller;
mod secrets;
mod snapshots;

pub use cdi::{FakeCdi, Serve, serve_image};
pub use cluster::{CoreCluster, CoreClusterService, NODES, STORAGE_CLASSES};
pub use controller::{FakeKubeVirt, StopRecord};
pub use secrets::{CoreSecrets, CoreSecretsService};

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::{Value, json};
use virtrigaud_core::VmId;

use crate::types::{VirtualMachine, VirtualMachineInstance};
use crate::{KubeVirtConfig, KubeVirtProvider, PowerApi};

/// Annotation: milliseconds the guest needs to shut down after the signal, or `never`.
pub const GUEST_SHUTDOWN: &str = "virtrigaud.test/guest-shutdown-ms";
/// Annotation: milliseconds to boot.
pub const BOOT: &str = "virtrigaud.test/boot-ms";
/// Annotation on a VM: its snapshots never become ready.
pub const SNAPSHOT_STUCK: &str = "virtrigaud.test/snapshot-stuck";

/// The test apiserver's kubeconfig path (`VIRTRIGAUD_KUBECONFIG`), or a loud skip (a failure
/// under the project's test command).
pub fn kubeconfig() -> Option<String> {
    virtrigaud_core::testing::backend_env("kubevirt", "VIRTRIGAUD_KUBECONFIG")
}

/// The kube config of the kubeconfig at `path`.
pub async fn kube_config(path: &str) -> kube::Config {
    let kc = Kubeconfig::read_from(path).expect("kubeconfig");
    kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("config")
}

/// A client for the kubeconfig at `path` (core `v1` Secrets served by [`CoreSecrets`]).
pub async fn client(path: &str) -> Client {
    kube::client::ClientBuilder::try_from(kube_config(path).await)
        .expect("client")
        .with_layer(&CoreSecrets)
        .with_layer(&CoreCluster)
        .build()
}

/// Makes namespace names unique within the process.
static NEXT: AtomicU32 = AtomicU32::new(0);

/// A unique namespace name (the standalone apiserver has no Namespace API: any name works).
pub fn unique_ns(prefix: &str) -> String {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        % 1_000_000_000;
    format!("{prefix}-{}-{t}-{n}", std::process::id())
}

/// A provider over `path` in `ns` using the run-strategy power API (the test server has no virt-api).
pub async fn provider(path: &str, ns: &str) -> KubeVirtProvider {
    let cfg = KubeVirtConfig::default()
        .with_power_api(PowerApi::RunStrategy)
        .with_namespace(ns)
        .with_operation_timeout(Duration::from_secs(60))
        .with_snapshot_failure_deadline(Duration::from_secs(2));
    provider_with_config(path, cfg).await
}

/// A provider over `path` with `cfg`, counting its requests like
/// [`KubeVirtProvider::from_kube_config`], whose client has core `v1` Secrets served by
/// [`CoreSecrets`] (the test apiserver serves only CRDs).
pub async fn provider_with_config(path: &str, cfg: KubeVirtConfig) -> KubeVirtProvider {
    let kc = kube_config(path).await;
    let url = kc.cluster_url.clone();
    let stats = crate::stats::ApiStats::default();
    let client = kube::client::ClientBuilder::try_from(kc)
        .expect("client")
        .with_layer(&CoreSecrets)
        .with_layer(&CoreCluster)
        .with_layer(&crate::stats::CountLayer(stats.clone()))
        .build();
    KubeVirtProvider::over(crate::client::Connection::new(
        client,
        cfg,
        stats,
        Some(&url),
    ))
}

/// Creates a VM with `run_strategy`, `grace` (template terminationGracePeriodSeconds) and annotations.
pub async fn create_vm(
    client: &Client,
    ns: &str,
    name: &str,
    run_strategy: &str,
    grace: Option<i64>,
    ann: &[(&str, &str)],
) -> VmId {
    let api: Api<VirtualMachine> = Api::namespaced(client.clone(), ns);
    let annotations: serde_json::Map<String, Value> = ann
        .iter()
        .map(|(k, v)| ((*k).to_owned(), json!(v)))
        .collect();
    let mut spec = json!({"domain": {"cpu": {"sockets": 1, "cores": 1, "threads": 1, "maxSockets": 4},
                                     "memory": {"guest": "1Gi", "maxGuest": "4Gi"},
                                     "devices": {"disks": [{"name": "rootdisk", "disk": {"bus": "virtio"}}]}},
                          "volumes": [{"name": "rootdisk", "containerDisk": {"image": "quay.io/containerdisks/fedora:41"}}]});
    if let Some(g) = grace {
        spec["terminationGracePeriodSeconds"] = json!(g);
    }
    let vm: VirtualMachine = serde_json::from_value(json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": name, "namespace": ns, "annotations": annotations, "labels": {"app": "virtrigaud-test"}},
        "spec": {"runStrategy": run_strategy, "template": {"metadata": {"labels": {"app": "virtrigaud-test"}}, "spec": spec}},
    }))
    .unwrap();
    api.create(&PostParams::default(), &vm)
        .await
        .expect("create VM");
    VmId::new(format!("{ns}/{name}"))
}

/// Creates `vm_name`'s instance by hand, as virt-controller and virt-handler would, and marks it
/// `Running` (for tests that run without the fake controllers).
pub async fn create_running_vmi(
    client: &Client,
    ns: &str,
    vm_name: &str,
) -> VirtualMachineInstance {
    let vms: Api<VirtualMachine> = Api::namespaced(client.clone(), ns);
    let vm = vms.get(vm_name).await.expect("VM");
    let tspec = vm
        .spec
        .template
        .as_ref()
        .and_then(|t| t.spec.clone())
        .unwrap_or_default();
    let vmi: VirtualMachineInstance = serde_json::from_value(json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
        "metadata": {"name": vm_name, "namespace": ns},
        "spec": tspec,
    }))
    .unwrap();
    let api: Api<VirtualMachineInstance> = Api::namespaced(client.clone(), ns);
    api.create(&PostParams::default(), &vmi)
        .await
        .expect("create VMI");
    let st = json!({"status": {"phase": "Running", "nodeName": "node-1",
        "conditions": [{"type": "Ready", "status": "True"}]}});
    api.patch_status(vm_name, &pp(), &Patch::Merge(st))
        .await
        .expect("VMI Running")
}

/// Merges `status` into the VM's status (as virt-controller writes it).
pub async fn set_vm_status(client: &Client, ns: &str, name: &str, status: Value) {
    let vms: Api<VirtualMachine> = Api::namespaced(client.clone(), ns);
    vms.patch_status(name, &pp(), &Patch::Merge(json!({"status": status})))
        .await
        .expect("VM status");
}

/// Patch parameters of the fake controllers and fixtures.
fn pp() -> PatchParams {
    PatchParams::default()
}
