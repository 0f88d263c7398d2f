//! Test support for the real-apiserver tests: a client for the test apiserver, unique
//! namespaces, VM fixtures, and a small fake virt-controller / virt-handler / snapshot
//! controller that plays KubeVirt's part of the protocol against the real apiserver.
#![allow(
    dead_code,
    unreachable_pub,
    missing_docs,
    clippy::unwrap_used,
    clippy::collapsible_match
)]

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{StreamExt, stream};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tokio::sync::watch;
use virtrigaud_core::VmId;
use virtrigaud_kubevirt::state::{RunStrategy, vmi_is_final, vmi_phase};
use virtrigaud_kubevirt::types::*;
use virtrigaud_kubevirt::{KubeVirtConfig, KubeVirtProvider, PowerApi};

/// Annotation: milliseconds the guest needs to shut down after the signal, or `never`.
pub const GUEST_SHUTDOWN: &str = "virtrigaud.test/guest-shutdown-ms";
/// Annotation: milliseconds to boot.
pub const BOOT: &str = "virtrigaud.test/boot-ms";
/// Annotation on a VM: its snapshots never become ready.
pub const SNAPSHOT_STUCK: &str = "virtrigaud.test/snapshot-stuck";

pub fn kubeconfig() -> Option<String> {
    virtrigaud_core::testing::backend_env("kubevirt", "VIRTRIGAUD_KUBECONFIG")
}

pub async fn kube_config(path: &str) -> kube::Config {
    let kc = Kubeconfig::read_from(path).expect("kubeconfig");
    kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("config")
}

pub async fn client(path: &str) -> Client {
    Client::try_from(kube_config(path).await).expect("client")
}

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
    KubeVirtProvider::from_kube_config(kube_config(path).await, cfg).expect("provider")
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

/// How one stop ended in the fake virt-handler.
#[derive(Debug, Clone)]
pub struct StopRecord {
    pub vm: String,
    /// The guest shut down by itself (true) or was forced at the grace deadline (false).
    pub graceful: bool,
    /// From the first shutdown signal to off.
    pub elapsed: Duration,
    /// The grace in force at the end (seconds).
    pub grace: i64,
}

/// The fake KubeVirt controllers for one namespace.
pub struct FakeKubeVirt {
    task: tokio::task::JoinHandle<()>,
    pub stops: Arc<Mutex<Vec<StopRecord>>>,
}

impl Drop for FakeKubeVirt {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeKubeVirt {
    pub fn stops_of(&self, vm: &str) -> Vec<StopRecord> {
        self.stops
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.vm == vm)
            .cloned()
            .collect()
    }

    /// Starts the controllers. `live_update`: the cluster uses the LiveUpdate rollout strategy.
    pub fn start(client: Client, ns: &str, live_update: bool) -> Self {
        let stops = Arc::new(Mutex::new(Vec::new()));
        let ctl = Ctl {
            client: client.clone(),
            ns: ns.to_owned(),
            live_update,
            stops: Arc::clone(&stops),
            booting: HashSet::new(),
            stopped_by_request: HashSet::new(),
            stopping: HashMap::new(),
            snapshots: Arc::new(Mutex::new(HashMap::new())),
            snap_started: HashSet::new(),
        };
        let task = tokio::spawn(ctl.run());
        FakeKubeVirt { task, stops }
    }
}

struct Ctl {
    client: Client,
    ns: String,
    live_update: bool,
    stops: Arc<Mutex<Vec<StopRecord>>>,
    booting: HashSet<String>,
    /// VMs stopped by a Stop request: like virt-controller, `RerunOnFailure` does not start
    /// them again until a Start request.
    stopped_by_request: HashSet<String>,
    stopping: HashMap<String, watch::Sender<i64>>,
    /// snapshot name → VM template captured at snapshot time
    snapshots: Arc<Mutex<HashMap<String, Value>>>,
    snap_started: HashSet<String>,
}

fn pp() -> PatchParams {
    PatchParams::default()
}

fn ann<'a>(vm: &'a VirtualMachine, key: &str) -> Option<&'a str> {
    vm.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

impl Ctl {
    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    async fn run(mut self) {
        let (vms, w1) = reflector::store::<VirtualMachine>();
        let (vmis, w2) = reflector::store::<VirtualMachineInstance>();
        let (snaps, w3) = reflector::store::<VirtualMachineSnapshot>();
        let (restores, w4) = reflector::store::<VirtualMachineRestore>();
        let (clones, w5) = reflector::store::<VirtualMachineClone>();
        let cfg = watcher::Config::default();
        let s1 = reflector::reflector(w1, watcher(self.api::<VirtualMachine>(), cfg.clone()))
            .default_backoff()
            .map(|_| ())
            .boxed();
        let s2 = reflector::reflector(
            w2,
            watcher(self.api::<VirtualMachineInstance>(), cfg.clone()),
        )
        .default_backoff()
        .map(|_| ())
        .boxed();
        let s3 = reflector::reflector(
            w3,
            watcher(self.api::<VirtualMachineSnapshot>(), cfg.clone()),
        )
        .default_backoff()
        .map(|_| ())
        .boxed();
        let s4 = reflector::reflector(
            w4,
            watcher(self.api::<VirtualMachineRestore>(), cfg.clone()),
        )
        .default_backoff()
        .map(|_| ())
        .boxed();
        let s5 = reflector::reflector(w5, watcher(self.api::<VirtualMachineClone>(), cfg))
            .default_backoff()
            .map(|_| ())
            .boxed();
        let mut events = stream::select_all([s1, s2, s3, s4, s5]);
        while events.next().await.is_some() {
            self.reconcile(&vms, &vmis, &snaps, &restores, &clones)
                .await;
        }
    }

    async fn reconcile(
        &mut self,
        vms: &Store<VirtualMachine>,
        vmis: &Store<VirtualMachineInstance>,
        snaps: &Store<VirtualMachineSnapshot>,
        restores: &Store<VirtualMachineRestore>,
        clones: &Store<VirtualMachineClone>,
    ) {
        let vmi_by_name: HashMap<String, Arc<VirtualMachineInstance>> = vmis
            .state()
            .into_iter()
            .map(|v| (v.name_any(), v))
            .collect();
        for vm in vms.state() {
            let vmi = vmi_by_name.get(&vm.name_any()).cloned();
            self.reconcile_vm(&vm, vmi.as_deref()).await;
        }
        // virt-handler: VMIs being deleted shut down within their grace period
        for vmi in vmis.state() {
            self.reconcile_vmi_shutdown(&vmi, vms).await;
        }
        for s in snaps.state() {
            self.reconcile_snapshot(&s, vms, &vmi_by_name).await;
        }
        for r in restores.state() {
            self.reconcile_restore(&r, vms, &vmi_by_name).await;
        }
        for c in clones.state() {
            self.reconcile_clone(&c, vms).await;
        }
    }

    async fn create_vmi(&mut self, vm: &VirtualMachine) {
        let name = vm.name_any();
        let tspec = vm
            .spec
            .template
            .as_ref()
            .and_then(|t| t.spec.clone())
            .unwrap_or_default();
        let vmi: VirtualMachineInstance = serde_json::from_value(json!({
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
            "metadata": {"name": name, "namespace": self.ns, "finalizers": ["kubevirt.io/foregroundDeleteVirtualMachine"],
                         "annotations": vm.metadata.annotations.clone().unwrap_or_default()},
            "spec": tspec,
        }))
        .unwrap();
        match self
            .api::<VirtualMachineInstance>()
            .create(&PostParams::default(), &vmi)
            .await
        {
            Ok(created) => {
                let uid = created.uid().unwrap_or_default();
                if self.booting.insert(uid) {
                    let api = self.api::<VirtualMachineInstance>();
                    let boot = ann(vm, BOOT).and_then(|b| b.parse().ok()).unwrap_or(100);
                    tokio::spawn(async move {
                        let _ = api
                            .patch_status(
                                &name,
                                &pp(),
                                &Patch::Merge(json!({"status": {"phase": "Scheduling"}})),
                            )
                            .await;
                        tokio::time::sleep(Duration::from_millis(boot)).await;
                        let st = json!({"status": {"phase": "Running", "nodeName": "node-1",
                            "conditions": [{"type": "Ready", "status": "True"}, {"type": "AgentConnected", "status": "True"}]}});
                        let _ = api.patch_status(&name, &pp(), &Patch::Merge(st)).await;
                    });
                }
            }
            // the reflector may lag behind our own create
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => eprintln!("fake-kubevirt: create VMI {name}: {e}"),
        }
    }

    async fn delete_vmi(&self, name: &str) {
        let _ = self
            .api::<VirtualMachineInstance>()
            .delete(name, &DeleteParams::default())
            .await;
    }

    async fn reconcile_vm(&mut self, vm: &VirtualMachine, vmi: Option<&VirtualMachineInstance>) {
        let name = vm.name_any();
        let vms = self.api::<VirtualMachine>();
        let deleting = vmi.is_some_and(|v| v.metadata.deletion_timestamp.is_some());
        // state-change requests first (Manual / RerunOnFailure / restart)
        let reqs = vm
            .status
            .as_ref()
            .and_then(|s| s.state_change_requests.clone())
            .unwrap_or_default();
        if let Some(first) = reqs.first() {
            let action = first.get("action").and_then(|a| a.as_str()).unwrap_or("");
            let done = match action {
                "Stop" => {
                    if let Some(v) = vmi.filter(|v| v.metadata.deletion_timestamp.is_none()) {
                        self.delete_vmi(&v.name_any()).await;
                    }
                    vmi.is_none()
                }
                "Start" => {
                    if vmi.is_none() {
                        self.create_vmi(vm).await;
                        true
                    } else {
                        false
                    }
                }
                _ => true,
            };
            if done {
                match action {
                    "Stop" => {
                        self.stopped_by_request.insert(name.clone());
                    }
                    "Start" => {
                        self.stopped_by_request.remove(&name);
                    }
                    _ => {}
                }
                let ops = json!([{"op": "test", "path": "/status/stateChangeRequests", "value": reqs},
                                 {"op": "replace", "path": "/status/stateChangeRequests", "value": reqs[1..]}]);
                let p: json_patch::Patch = serde_json::from_value(ops).unwrap();
                let _ = vms.patch_status(&name, &pp(), &Patch::Json::<()>(p)).await;
            }
        } else {
            match RunStrategy::of(vm) {
                RunStrategy::Halted => {
                    if let Some(v) = vmi.filter(|v| v.metadata.deletion_timestamp.is_none()) {
                        self.delete_vmi(&v.name_any()).await;
                    }
                }
                RunStrategy::Always if vmi.is_none() => self.create_vmi(vm).await,
                RunStrategy::RerunOnFailure
                    if vmi.is_none() && !self.stopped_by_request.contains(&name) =>
                {
                    self.create_vmi(vm).await
                }
                _ => {}
            }
        }
        // printable status
        let printable = match vmi {
            None if RunStrategy::of(vm).runs_by_itself()
                && !(RunStrategy::of(vm) == RunStrategy::RerunOnFailure
                    && self.stopped_by_request.contains(&name)) =>
            {
                "Starting"
            }
            None => "Stopped",
            Some(_) if deleting => "Stopping",
            Some(v) if vmi_phase(v) == "Running" => "Running",
            Some(v) if vmi_is_final(v) => "Stopped",
            Some(_) => "Starting",
        };
        let mut status = json!({});
        let cur = vm.status.as_ref();
        if cur.and_then(|s| s.printable_status.as_deref()) != Some(printable) {
            status["printableStatus"] = json!(printable);
            status["ready"] = json!(printable == "Running");
            status["created"] = json!(vmi.is_some());
        }
        // hot-plug (LiveUpdate) or RestartRequired
        let generation = vm.metadata.generation.unwrap_or(0);
        if cur.and_then(|s| s.observed_generation).unwrap_or(0) < generation {
            let mut restart_required = false;
            if let Some(v) = vmi.filter(|v| vmi_phase(v) == "Running" && !deleting) {
                let want = vm
                    .spec
                    .template
                    .as_ref()
                    .and_then(|t| t.spec.as_ref())
                    .and_then(|s| s.domain.clone())
                    .unwrap_or_default();
                let have = v.spec.domain.clone().unwrap_or_default();
                let cpu_w = want.cpu.clone().unwrap_or_default();
                let cpu_h = have.cpu.clone().unwrap_or_default();
                let mem_w = want.memory.as_ref().and_then(|m| m.guest.clone());
                let mem_h = have.memory.as_ref().and_then(|m| m.guest.clone());
                let changed = cpu_w.sockets != cpu_h.sockets || mem_w != mem_h;
                if changed {
                    let within = cpu_w.sockets.unwrap_or(1)
                        <= cpu_h.max_sockets.unwrap_or(cpu_h.sockets.unwrap_or(1) * 4);
                    if self.live_update && within {
                        let patch = json!({"spec": {"domain": {"cpu": {"sockets": cpu_w.sockets}, "memory": {"guest": mem_w}}}});
                        let _ = self
                            .api::<VirtualMachineInstance>()
                            .patch(&v.name_any(), &pp(), &Patch::Merge(patch))
                            .await;
                    } else {
                        restart_required = true;
                    }
                }
            }
            let mut conds: Vec<Value> = cur
                .map(|s| {
                    s.conditions
                        .iter()
                        .filter(|c| c.type_ != "RestartRequired")
                        .map(|c| serde_json::to_value(c).unwrap())
                        .collect()
                })
                .unwrap_or_default();
            if restart_required {
                conds.push(json!({"type": "RestartRequired", "status": "True", "message": "a non-live-updatable field was changed"}));
            }
            status["conditions"] = json!(conds);
            status["observedGeneration"] = json!(generation);
        }
        if status.as_object().is_some_and(|o| !o.is_empty()) {
            let _ = vms
                .patch_status(&name, &pp(), &Patch::Merge(json!({"status": status})))
                .await;
        }
    }

    async fn reconcile_vmi_shutdown(
        &mut self,
        vmi: &VirtualMachineInstance,
        vms: &Store<VirtualMachine>,
    ) {
        if vmi.metadata.deletion_timestamp.is_none() || vmi_is_final(vmi) {
            return;
        }
        let uid = vmi.uid().unwrap_or_default();
        let grace = vmi.spec.termination_grace_period_seconds.unwrap_or(30);
        if let Some(tx) = self.stopping.get(&uid) {
            // virt-handler: a grace in flight is only ever shortened
            let _ = tx.send(grace);
            return;
        }
        let (tx, mut rx) = watch::channel(grace);
        self.stopping.insert(uid, tx);
        let name = vmi.name_any();
        let guest = vms
            .state()
            .into_iter()
            .find(|v| v.name_any() == name)
            .and_then(|v| ann(&v, GUEST_SHUTDOWN).map(str::to_owned))
            .unwrap_or_else(|| "200".into());
        let guest_ms: Option<u64> = if guest == "never" {
            None
        } else {
            guest.parse().ok()
        };
        let api = self.api::<VirtualMachineInstance>();
        let stops = Arc::clone(&self.stops);
        tokio::spawn(async move {
            let t0 = tokio::time::Instant::now();
            let mut g = grace;
            let graceful = loop {
                let deadline = t0 + Duration::from_secs(u64::try_from(g).unwrap_or(0));
                let guest_done = async {
                    match guest_ms {
                        Some(ms) => tokio::time::sleep_until(t0 + Duration::from_millis(ms)).await,
                        None => futures::future::pending().await,
                    }
                };
                tokio::select! {
                    () = guest_done => break true,
                    () = tokio::time::sleep_until(deadline) => break false,
                    r = rx.changed() => {
                        if r.is_err() { break false; }
                        let new = *rx.borrow();
                        if new < g { g = new; }
                    }
                }
            };
            stops.lock().unwrap().push(StopRecord {
                vm: name.clone(),
                graceful,
                elapsed: t0.elapsed(),
                grace: g,
            });
            // virt-handler: a guest that shut itself down ends `Succeeded`; one killed at the
            // grace deadline (a destroyed domain with ACPI) ends `Failed`.
            let phase = if graceful { "Succeeded" } else { "Failed" };
            let _ = api
                .patch_status(
                    &name,
                    &pp(),
                    &Patch::Merge(json!({"status": {"phase": phase}})),
                )
                .await;
            let p: json_patch::Patch =
                serde_json::from_value(json!([{"op": "remove", "path": "/metadata/finalizers"}]))
                    .unwrap();
            let _ = api.patch(&name, &pp(), &Patch::Json::<()>(p)).await;
        });
    }

    async fn reconcile_snapshot(
        &mut self,
        s: &VirtualMachineSnapshot,
        vms: &Store<VirtualMachine>,
        vmis: &HashMap<String, Arc<VirtualMachineInstance>>,
    ) {
        let name = s.name_any();
        let phase = s.status.as_ref().and_then(|st| st.phase.clone());
        if matches!(phase.as_deref(), Some("Succeeded" | "Failed"))
            || !self.snap_started.insert(name.clone())
        {
            return;
        }
        let api = self.api::<VirtualMachineSnapshot>();
        let vm = vms
            .state()
            .into_iter()
            .find(|v| v.name_any() == s.spec.source.name);
        let stuck = vm
            .as_ref()
            .is_some_and(|v| ann(v, SNAPSHOT_STUCK).is_some());
        let template = vm
            .as_ref()
            .and_then(|v| serde_json::to_value(&v.spec.template).ok())
            .unwrap_or(Value::Null);
        let online = vmis
            .get(&s.spec.source.name)
            .is_some_and(|v| vmi_phase(v) == "Running");
        let deadline = s
            .spec
            .failure_deadline
            .as_deref()
            .and_then(|d| d.trim_end_matches('s').parse::<u64>().ok())
            .unwrap_or(300);
        let store = Arc::clone(&self.snapshots);
        tokio::spawn(async move {
            let st = json!({"status": {"phase": "InProgress", "readyToUse": false,
                "conditions": [{"type": "Progressing", "status": "True"}, {"type": "Ready", "status": "False"}]}});
            let _ = api.patch_status(&name, &pp(), &Patch::Merge(st)).await;
            if stuck {
                tokio::time::sleep(Duration::from_secs(deadline)).await;
                let st = json!({"status": {"phase": "Failed", "error": {"message": "snapshot deadline exceeded", "time": now()},
                    "conditions": [{"type": "Progressing", "status": "False"}, {"type": "Failure", "status": "True", "message": "snapshot deadline exceeded"}]}});
                let _ = api.patch_status(&name, &pp(), &Patch::Merge(st)).await;
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            store.lock().unwrap().insert(name.clone(), template);
            let ind = if online {
                json!(["Online", "GuestAgent"])
            } else {
                json!([])
            };
            let st = json!({"status": {"phase": "Succeeded", "readyToUse": true, "creationTime": now(), "indications": ind,
                "conditions": [{"type": "Progressing", "status": "False"}, {"type": "Ready", "status": "True"}]}});
            let _ = api.patch_status(&name, &pp(), &Patch::Merge(st)).await;
        });
    }

    async fn reconcile_restore(
        &mut self,
        r: &VirtualMachineRestore,
        vms: &Store<VirtualMachine>,
        vmis: &HashMap<String, Arc<VirtualMachineInstance>>,
    ) {
        if r.status.as_ref().and_then(|s| s.complete) == Some(true) {
            return;
        }
        let name = r.name_any();
        let target = r.spec.target.name.clone();
        let api = self.api::<VirtualMachineRestore>();
        let template = self
            .snapshots
            .lock()
            .unwrap()
            .get(&r.spec.virtual_machine_snapshot_name)
            .cloned();
        let Some(template) = template else {
            let st = json!({"status": {"complete": false, "conditions": [{"type": "Failure", "status": "True", "message": "snapshot content not found"}]}});
            let _ = api.patch_status(&name, &pp(), &Patch::Merge(st)).await;
            return;
        };
        if vmis.contains_key(&target) {
            if r.spec
                .extra
                .get("targetReadinessPolicy")
                .and_then(|v| v.as_str())
                == Some("StopTarget")
                && let Some(vm) = vms.state().into_iter().find(|v| v.name_any() == target)
                && vm.spec.run_strategy.as_deref() != Some("Halted")
            {
                let _ = self
                    .api::<VirtualMachine>()
                    .patch(
                        &target,
                        &pp(),
                        &Patch::Merge(json!({"spec": {"runStrategy": "Halted"}})),
                    )
                    .await;
            }
            return; // wait for the VM to stop
        }
        let p: json_patch::Patch = serde_json::from_value(
            json!([{"op": "replace", "path": "/spec/template", "value": template}]),
        )
        .unwrap();
        if self
            .api::<VirtualMachine>()
            .patch(&target, &pp(), &Patch::Json::<()>(p))
            .await
            .is_ok()
        {
            let st = json!({"status": {"complete": true, "restoreTime": now(), "conditions": [{"type": "Ready", "status": "True"}]}});
            let _ = api.patch_status(&name, &pp(), &Patch::Merge(st)).await;
        }
    }

    async fn reconcile_clone(&mut self, c: &VirtualMachineClone, vms: &Store<VirtualMachine>) {
        if c.status.as_ref().and_then(|s| s.phase.as_deref()).is_some() {
            return;
        }
        let name = c.name_any();
        let api = self.api::<VirtualMachineClone>();
        let source = vms
            .state()
            .into_iter()
            .find(|v| v.name_any() == c.spec.source.name);
        let target = c
            .spec
            .target
            .as_ref()
            .map(|t| t.name.clone())
            .unwrap_or_else(|| format!("{}-clone", c.spec.source.name));
        let phase = match source {
            None => "Failed",
            Some(src) => {
                let vm: VirtualMachine = serde_json::from_value(json!({
                    "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
                    "metadata": {"name": target, "namespace": self.ns, "labels": src.metadata.labels.clone(),
                                 "annotations": src.metadata.annotations.clone()},
                    "spec": {"runStrategy": "Halted", "template": src.spec.template.clone()},
                }))
                .unwrap();
                if self
                    .api::<VirtualMachine>()
                    .create(&PostParams::default(), &vm)
                    .await
                    .is_ok()
                {
                    "Succeeded"
                } else {
                    "Failed"
                }
            }
        };
        let _ = api
            .patch_status(
                &name,
                &pp(),
                &Patch::Merge(json!({"status": {"phase": phase, "targetName": target}})),
            )
            .await;
    }
}
