//! [`FakeKubeVirt`]: virt-controller and virt-handler for VMs and their instances (run
//! strategies, state-change requests, guest boot and shutdown with grace periods).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{StreamExt, stream};
use kube::api::{Api, DeleteParams, Patch, PostParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tokio::sync::watch;

use super::{BOOT, GUEST_SHUTDOWN, pp};
use crate::state::{RunStrategy, run_strategy_of, vmi_is_final, vmi_phase};
use crate::types::*;

/// How one stop ended in the fake virt-handler.
#[derive(Debug, Clone)]
pub struct StopRecord {
    /// The VM name.
    pub vm: String,
    /// The guest shut down by itself (true) or was forced at the grace deadline (false).
    pub graceful: bool,
    /// From the first shutdown signal to off.
    pub elapsed: Duration,
    /// The grace in force at the end (seconds).
    pub grace: i64,
    /// When the guest was off (just before its VMI is marked final).
    pub at: tokio::time::Instant,
}

/// The fake KubeVirt controllers for one namespace (stopped when dropped).
#[derive(Debug)]
pub struct FakeKubeVirt {
    task: tokio::task::JoinHandle<()>,
    /// Every stop the fake virt-handler finished, in order.
    pub stops: Arc<Mutex<Vec<StopRecord>>>,
    /// Armed clone failures (see [`FakeKubeVirt::fail_next_clone`]).
    clone_faults: Arc<Mutex<Vec<Option<String>>>>,
}

impl Drop for FakeKubeVirt {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeKubeVirt {
    /// The stops of `vm`.
    pub fn stops_of(&self, vm: &str) -> Vec<StopRecord> {
        self.stops
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.vm == vm)
            .cloned()
            .collect()
    }

    /// Arms a restore failure: the next `VirtualMachineClone` whose target is `target` (any
    /// clone with `None`) creates the target VM, as KubeVirt's clone controller does before it
    /// restores into it, goes `RestoreInProgress` and then ends `Failed` (the target VM is left
    /// for the client to clean up, as KubeVirt leaves it).
    pub fn fail_next_clone(&self, target: Option<&str>) {
        self.clone_faults
            .lock()
            .unwrap()
            .push(target.map(str::to_owned));
    }

    /// Starts the controllers. `live_update`: the cluster uses the LiveUpdate rollout strategy.
    pub fn start(client: Client, ns: &str, live_update: bool) -> Self {
        let stops = Arc::new(Mutex::new(Vec::new()));
        let clone_faults = Arc::new(Mutex::new(Vec::new()));
        let ctl = Ctl {
            clone_faults: Arc::clone(&clone_faults),
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
        FakeKubeVirt {
            task,
            stops,
            clone_faults,
        }
    }
}

pub(super) struct Ctl {
    pub(super) client: Client,
    pub(super) ns: String,
    pub(super) live_update: bool,
    pub(super) stops: Arc<Mutex<Vec<StopRecord>>>,
    pub(super) booting: HashSet<String>,
    /// VMs stopped by a Stop request: like virt-controller, `RerunOnFailure` does not start
    /// them again until a Start request.
    pub(super) stopped_by_request: HashSet<String>,
    pub(super) stopping: HashMap<String, watch::Sender<i64>>,
    /// snapshot name → VM template captured at snapshot time
    pub(super) snapshots: Arc<Mutex<HashMap<String, Value>>>,
    pub(super) snap_started: HashSet<String>,
    /// Armed clone failures: target name, or `None` for any clone.
    pub(super) clone_faults: Arc<Mutex<Vec<Option<String>>>>,
}

pub(super) fn ann<'a>(vm: &'a VirtualMachine, key: &str) -> Option<&'a str> {
    vm.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

pub(super) fn now() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

impl Ctl {
    pub(super) fn api<K>(&self) -> Api<K>
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
        let node = serde_json::to_value(&tspec)
            .ok()
            .and_then(|v| {
                v.pointer("/nodeSelector/kubernetes.io~1hostname")
                    .and_then(|n| n.as_str())
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| "node-1".to_owned());
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
                        let st = json!({"status": {"phase": "Running", "nodeName": node,
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

    /// virt-controller for one VM: its state-change requests (or else its run strategy), its
    /// printable status, and template changes (hot-plug under LiveUpdate, or RestartRequired).
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
        if reqs.is_empty() {
            self.apply_run_strategy(vm, vmi).await;
        } else {
            self.apply_state_change_request(vm, vmi, &reqs).await;
        }
        let printable = self.printable_status(vm, vmi, deleting);
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
            let restart_required = self.hotplug(vm, vmi, deleting).await;
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

    /// Acts on the first state-change request and removes it once done.
    async fn apply_state_change_request(
        &mut self,
        vm: &VirtualMachine,
        vmi: Option<&VirtualMachineInstance>,
        reqs: &[Value],
    ) {
        let name = vm.name_any();
        let vms = self.api::<VirtualMachine>();
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
        }
    }

    /// Without requests: the run strategy decides whether an instance should exist.
    async fn apply_run_strategy(
        &mut self,
        vm: &VirtualMachine,
        vmi: Option<&VirtualMachineInstance>,
    ) {
        let name = vm.name_any();
        match run_strategy_of(vm) {
            Some(RunStrategy::Halted) => {
                if let Some(v) = vmi.filter(|v| v.metadata.deletion_timestamp.is_none()) {
                    self.delete_vmi(&v.name_any()).await;
                }
            }
            Some(RunStrategy::Always) if vmi.is_none() => self.create_vmi(vm).await,
            Some(RunStrategy::RerunOnFailure)
                if vmi.is_none() && !self.stopped_by_request.contains(&name) =>
            {
                self.create_vmi(vm).await
            }
            _ => {}
        }
    }

    /// The VM's `printableStatus` as virt-controller would write it.
    fn printable_status(
        &self,
        vm: &VirtualMachine,
        vmi: Option<&VirtualMachineInstance>,
        deleting: bool,
    ) -> &'static str {
        let name = vm.name_any();
        match vmi {
            None if run_strategy_of(vm).is_some_and(RunStrategy::starts_on_create)
                && !(run_strategy_of(vm) == Some(RunStrategy::RerunOnFailure)
                    && self.stopped_by_request.contains(&name)) =>
            {
                "Starting"
            }
            None => "Stopped",
            Some(_) if deleting => "Stopping",
            Some(v) if vmi_phase(v) == "Running" => "Running",
            Some(v) if vmi_is_final(v) => "Stopped",
            Some(_) => "Starting",
        }
    }

    /// A template change of a running VM: hot-plugged under LiveUpdate within the maxima,
    /// else `true` (RestartRequired).
    async fn hotplug(
        &self,
        vm: &VirtualMachine,
        vmi: Option<&VirtualMachineInstance>,
        deleting: bool,
    ) -> bool {
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
        restart_required
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
                at: tokio::time::Instant::now(),
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
}
