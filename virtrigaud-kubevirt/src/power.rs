//! Start, stop, restart: KubeVirt's run-strategy rules, over either power API.
//!
//! The rules are virt-api's (`virtctl start/stop/restart`):
//!
//! | run strategy | start | stop | restart |
//! |---|---|---|---|
//! | `Halted` | `runStrategy: Always` | only to shorten the grace of a stop in flight | refused |
//! | `Manual` | `Start` state-change request | `Stop` request (stays `Manual`) | `Stop`+`Start` requests |
//! | `RerunOnFailure` | `Start` request (refused after `Failed`) | `Stop` request | `Stop`+`Start` requests |
//! | `Always` | refused (it runs by itself) | `runStrategy: Halted` | `Stop`+`Start` requests |
//! | `Once` | refused | `runStrategy: Halted` | refused |
//!
//! Every change is a JSON patch whose `test` operation pins the value it was computed from
//! (`/spec/runStrategy`, `/status/stateChangeRequests`, the VMI's
//! `/spec/terminationGracePeriodSeconds`, or `/metadata/resourceVersion` when the field is
//! absent); a concurrent writer makes the patch fail, and the provider re-reads and recomputes.
//!
//! ## Grace periods
//! A stop with a grace period writes it to the running VMI's `terminationGracePeriodSeconds`
//! (KubeVirt forces the guest off when it expires, counted from the first shutdown signal).
//! While a stop is in flight a grace is only ever *shortened*: a second stop with a longer grace
//! changes nothing, a shorter one (down to 0, a forced stop) wins. There is one grace period per
//! stop however many stops race. A VMI grace already below the template's counts as in flight
//! (a racing stop shortened it but its run-state change is not visible yet), so racing stops
//! can never lengthen each other's grace.

use serde_json::{Value, json};
use virtrigaud_core::{ErrorKind, Result};

use crate::error::{Call, err, map_kube};
use crate::id::VmRef;
use crate::provider::{DEFAULT_GRACE_SECONDS, KubeVirtProvider, PowerApi};
use crate::state::{
    RunStrategy, is_stop_request, stop_in_flight, vmi_active, vmi_is_final, vmi_phase, will_start,
};
use crate::types::{VirtualMachine, VirtualMachineInstance};

/// What a stop request did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StopOutcome {
    /// A new stop was requested.
    Requested,
    /// A stop was already in flight; its grace period was shortened.
    GraceShortened,
    /// A stop was already in flight with an equal or shorter grace; nothing changed.
    AlreadyStopping,
}

/// What one of our stop requests changed on the objects, so that [`KubeVirtProvider::cancel_stop`]
/// can put it back. Remembered per VM (in memory) when `request_shutdown` sends a stop.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Armed {
    /// The instance the stop was aimed at.
    pub(crate) vmi_uid: Option<String>,
    /// `spec.runStrategy` (or the legacy `spec.running`) before the stop set it to `Halted`:
    /// the JSON-pointer of the field and its old value.
    pub(crate) run_state: Option<(&'static str, Value)>,
    /// The `Stop` state-change request the stop queued (`Manual` / `RerunOnFailure`).
    pub(crate) stop_request: Option<Value>,
    /// The VMI's `terminationGracePeriodSeconds` before the stop (`None`: unset) and the one
    /// the stop set.
    pub(crate) grace: Option<(Option<i64>, i64)>,
}

impl Armed {
    fn is_empty(&self) -> bool {
        self.run_state.is_none() && self.stop_request.is_none() && self.grace.is_none()
    }
    /// Folds a later stop of the same run into this record: the first one holds the values
    /// from before any of our stops; the grace set last is the one in force.
    fn merge(&mut self, later: Armed) {
        if self.vmi_uid != later.vmi_uid {
            *self = later;
            return;
        }
        if self.run_state.is_none() {
            self.run_state = later.run_state;
        }
        if self.stop_request.is_none() {
            self.stop_request = later.stop_request;
        }
        match (&mut self.grace, later.grace) {
            (Some((_, set)), Some((_, new))) => *set = new,
            (g @ None, Some(new)) => *g = Some(new),
            _ => {}
        }
    }
}

/// A KubeVirt subresource call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sub {
    Start,
    Stop,
    Restart,
    SoftReboot,
    Pause,
    Unpause,
    Reset,
}

impl Sub {
    fn path(self) -> (&'static str, &'static str) {
        match self {
            Sub::Start => ("virtualmachines", "start"),
            Sub::Stop => ("virtualmachines", "stop"),
            Sub::Restart => ("virtualmachines", "restart"),
            Sub::SoftReboot => ("virtualmachineinstances", "softreboot"),
            Sub::Pause => ("virtualmachineinstances", "pause"),
            Sub::Unpause => ("virtualmachineinstances", "unpause"),
            Sub::Reset => ("virtualmachineinstances", "reset"),
        }
    }
}

impl KubeVirtProvider {
    /// `PUT /apis/subresources.kubevirt.io/v1/namespaces/{ns}/{kind}/{name}/{verb}` with a JSON body.
    pub(crate) async fn subresource(
        &self,
        r: &VmRef,
        sub: Sub,
        body: Value,
        op: &'static str,
    ) -> Result<()> {
        let (kind, verb) = sub.path();
        let uri = format!(
            "/apis/subresources.kubevirt.io/v1/namespaces/{}/{kind}/{}/{verb}",
            r.namespace, r.name
        );
        let bytes = serde_json::to_vec(&body)
            .map_err(|e| err(ErrorKind::Internal, op, &r.to_string(), "encode").with_source(e))?;
        let req = http::Request::put(uri)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(bytes)
            .map_err(|e| err(ErrorKind::Internal, op, &r.to_string(), "request").with_source(e))?;
        self.inner
            .client
            .request_text(req)
            .await
            .map_err(|e| map_kube(e, Call::Subresource, op, &r.to_string()))?;
        Ok(())
    }

    /// Starts the VM (KubeVirt `start`). `paused` needs the subresource API.
    pub(crate) async fn start_vm(&self, r: &VmRef, paused: bool, op: &'static str) -> Result<()> {
        match self.inner.config.power_api {
            PowerApi::Subresources => {
                let body = if paused {
                    json!({"paused": true})
                } else {
                    json!({})
                };
                self.subresource(r, Sub::Start, body, op).await
            }
            PowerApi::RunStrategy => {
                if paused {
                    return Err(err(
                        ErrorKind::Unsupported,
                        op,
                        &r.to_string(),
                        "starting paused needs the subresource API",
                    ));
                }
                self.retry_conflicts(|| async {
                    let (vm, vmi) = self.read(r, op).await?;
                    self.try_start(r, &vm, vmi.as_ref(), op).await
                })
                .await
            }
        }
    }

    async fn try_start(
        &self,
        r: &VmRef,
        vm: &VirtualMachine,
        vmi: Option<&VirtualMachineInstance>,
        op: &'static str,
    ) -> Result<()> {
        let res = r.to_string();
        if let Some(v) = vmi
            && !vmi_is_final(v)
            && !matches!(vmi_phase(v), "" | "Unknown")
        {
            return Err(err(
                ErrorKind::InvalidState,
                op,
                &res,
                "VM is already running",
            ));
        }
        let rs = RunStrategy::of(vm);
        match rs {
            RunStrategy::Halted => {
                self.patch_run_strategy(r, vm, RunStrategy::Always, op)
                    .await
            }
            RunStrategy::Manual | RunStrategy::RerunOnFailure => {
                let phase = vmi.map(vmi_phase);
                if rs == RunStrategy::RerunOnFailure && phase == Some("Failed") {
                    return Err(err(
                        ErrorKind::InvalidState,
                        op,
                        &res,
                        "RerunOnFailure does not support starting a VM from the Failed state",
                    ));
                }
                let needs_restart = match (vmi, &rs) {
                    (Some(v), RunStrategy::RerunOnFailure) => vmi_phase(v) == "Succeeded",
                    (Some(v), _) => vmi_is_final(v),
                    (None, _) => false,
                };
                let mut reqs = Vec::new();
                if needs_restart && let Some(v) = vmi {
                    reqs.push(json!({"action": "Stop", "uid": v.metadata.uid}));
                }
                reqs.push(json!({"action": "Start"}));
                self.add_state_change_requests(r, vm, reqs, false, op).await
            }
            _ => Err(err(
                ErrorKind::InvalidState,
                op,
                &res,
                format!("run strategy {rs} does not support manual start requests"),
            )),
        }
    }

    /// Stops the VM with an optional grace period (seconds; 0 = immediately).
    pub(crate) async fn stop_vm(
        &self,
        r: &VmRef,
        grace: Option<i64>,
        op: &'static str,
    ) -> Result<StopOutcome> {
        let (outcome, _) = self
            .retry_conflicts(|| async {
                let (vm, vmi) = self.read(r, op).await?;
                self.try_stop(r, &vm, vmi.as_ref(), grace, op).await
            })
            .await?;
        // A stop not sent by request_shutdown (a forced one included) supersedes any record.
        self.inner.armed_lock().remove(&r.to_string());
        Ok(outcome)
    }

    /// [`Self::stop_vm`] for `request_shutdown`: remembers what the stop changed, for
    /// [`Self::cancel_stop`].
    pub(crate) async fn stop_vm_armed(
        &self,
        r: &VmRef,
        grace: Option<i64>,
        op: &'static str,
    ) -> Result<StopOutcome> {
        let (outcome, armed) = self
            .retry_conflicts(|| async {
                let (vm, vmi) = self.read(r, op).await?;
                self.try_stop(r, &vm, vmi.as_ref(), grace, op).await
            })
            .await?;
        if !armed.is_empty() {
            let mut map = self.inner.armed_lock();
            match map.get_mut(&r.to_string()) {
                Some(prev) => prev.merge(armed),
                None => {
                    map.insert(r.to_string(), armed);
                }
            }
        }
        Ok(outcome)
    }

    async fn try_stop(
        &self,
        r: &VmRef,
        vm: &VirtualMachine,
        vmi: Option<&VirtualMachineInstance>,
        grace: Option<i64>,
        op: &'static str,
    ) -> Result<(StopOutcome, Armed)> {
        let res = r.to_string();
        let rs = RunStrategy::of(vm);
        let active = vmi_active(vmi);
        let in_flight = stop_in_flight(vm, vmi);
        // No instance and none coming (virt-controller will not create one): nothing to stop.
        if !active && !will_start(vm, vmi) {
            return Err(err(ErrorKind::InvalidState, op, &res, "VM is not running"));
        }
        let mut armed = Armed {
            vmi_uid: vmi.filter(|_| active).and_then(|v| v.metadata.uid.clone()),
            ..Armed::default()
        };
        let current = vmi.and_then(|v| v.spec.termination_grace_period_seconds);
        let effective = current.unwrap_or(DEFAULT_GRACE_SECONDS);
        if in_flight && grace.is_none_or(|g| g >= effective) {
            // One grace period per stop: a longer (or no) grace never extends one in flight.
            return Ok((StopOutcome::AlreadyStopping, armed));
        }
        // A VMI grace below the template's was shortened by a stop that may still be racing us
        // (its run-state change not visible yet): then, too, a grace may only shorten.
        let template = vm
            .spec
            .template
            .as_ref()
            .and_then(|t| t.spec.as_ref())
            .and_then(|s| s.termination_grace_period_seconds)
            .unwrap_or(DEFAULT_GRACE_SECONDS);
        let shortened_before = current.is_some_and(|c| c < template);
        let set_grace = match grace {
            Some(g) if in_flight || shortened_before => g < effective,
            Some(g) => current != Some(g),
            None => false,
        };
        if let Some(g) = grace.filter(|_| set_grace && active) {
            armed.grace = Some((current, g));
        }
        if !in_flight {
            // What the stop does to the run state (virt-api does the same for a `stop` PUT).
            match rs {
                RunStrategy::Manual | RunStrategy::RerunOnFailure => {
                    let uid = vmi.and_then(|v| v.metadata.uid.clone());
                    armed.stop_request = Some(json!({"action": "Stop", "uid": uid}));
                }
                RunStrategy::Halted => {}
                _ => {
                    armed.run_state = match (&vm.spec.run_strategy, vm.spec.running) {
                        (Some(cur), _) => Some(("/spec/runStrategy", json!(cur))),
                        (None, Some(running)) => Some(("/spec/running", json!(running))),
                        (None, None) => None,
                    };
                }
            }
        }
        if self.inner.config.power_api == PowerApi::Subresources {
            let body = match grace {
                Some(g) if set_grace => json!({"gracePeriod": g}),
                _ => json!({}),
            };
            self.subresource(r, Sub::Stop, body, op).await?;
            let outcome = if in_flight {
                StopOutcome::GraceShortened
            } else {
                StopOutcome::Requested
            };
            return Ok((outcome, armed));
        }
        // Object mode: first the grace on the running VMI, then the run state.
        if let (Some(v), Some(g)) = (vmi.filter(|_| active), grace)
            && set_grace
        {
            let ops = match current {
                Some(c) => json!([
                    {"op": "test", "path": "/spec/terminationGracePeriodSeconds", "value": c},
                    {"op": "replace", "path": "/spec/terminationGracePeriodSeconds", "value": g},
                ]),
                None => json!([
                    {"op": "test", "path": "/metadata/resourceVersion", "value": v.metadata.resource_version},
                    {"op": "add", "path": "/spec/terminationGracePeriodSeconds", "value": g},
                ]),
            };
            let api = self.api::<VirtualMachineInstance>(&r.namespace);
            self.json_patch(&api, &r.name, ops, false, op, &res).await?;
        }
        if in_flight {
            return Ok((StopOutcome::GraceShortened, armed));
        }
        match rs {
            RunStrategy::Manual | RunStrategy::RerunOnFailure => {
                let req = armed.stop_request.clone().unwrap_or(Value::Null);
                self.add_state_change_requests(r, vm, vec![req], true, op)
                    .await?;
            }
            RunStrategy::Halted => return Ok((StopOutcome::AlreadyStopping, armed)),
            _ => {
                self.patch_run_strategy(r, vm, RunStrategy::Halted, op)
                    .await?
            }
        }
        Ok((StopOutcome::Requested, armed))
    }

    /// Undoes what our stop request changed ([`Armed`]), so that the VM keeps running:
    /// the run strategy (or `spec.running`) it had, our pending `Stop` request withdrawn, the
    /// VMI's grace period as it was. Impossible once virt-controller has begun deleting the
    /// instance (`InvalidState`). Nothing recorded for this VM (no stop sent by
    /// `request_shutdown` in this process): nothing to undo.
    pub(crate) async fn cancel_stop(&self, r: &VmRef, op: &'static str) -> Result<()> {
        let key = r.to_string();
        let Some(armed) = self.inner.armed_lock().remove(&key) else {
            tracing::debug!(vm = %r, "cancel_shutdown: no stop of ours to undo");
            return Ok(());
        };
        let res = self
            .retry_conflicts(|| async {
                let (vm, vmi) = self.read(r, op).await?;
                self.try_cancel(r, &vm, vmi.as_ref(), &armed, op).await
            })
            .await;
        if let Err(e) = &res
            && (e.is_retryable() || e.kind() == ErrorKind::Conflict)
        {
            // Not undone yet: a later cancel may still do it.
            let mut map = self.inner.armed_lock();
            map.entry(key).or_insert(armed);
        }
        res
    }

    async fn try_cancel(
        &self,
        r: &VmRef,
        vm: &VirtualMachine,
        vmi: Option<&VirtualMachineInstance>,
        armed: &Armed,
        op: &'static str,
    ) -> Result<()> {
        let res = r.to_string();
        let Some(v) = vmi.filter(|v| !vmi_is_final(v)) else {
            return Err(err(
                ErrorKind::InvalidState,
                op,
                &res,
                "the VM already stopped: the shutdown cannot be cancelled",
            ));
        };
        if armed.vmi_uid.is_some() && v.metadata.uid != armed.vmi_uid {
            tracing::debug!(vm = %r, "cancel_shutdown: a new instance runs; our stop no longer applies");
            return Ok(());
        }
        let deletion_begun = || {
            err(
                ErrorKind::InvalidState,
                op,
                &res,
                "virt-controller has already begun deleting the instance: KubeVirt cannot undo \
                 that, the guest is being shut down and is forced off when its grace expires",
            )
        };
        if v.metadata.deletion_timestamp.is_some() {
            return Err(deletion_begun());
        }
        // 1. The run state first: it is what makes virt-controller delete the instance.
        if let Some((path, before)) = &armed.run_state {
            let now_halted = match *path {
                "/spec/runStrategy" => vm.spec.run_strategy.as_deref() == Some("Halted"),
                _ => vm.spec.running == Some(false),
            };
            if now_halted {
                let halted = if *path == "/spec/runStrategy" {
                    json!("Halted")
                } else {
                    json!(false)
                };
                let ops = json!([
                    {"op": "test", "path": path, "value": halted},
                    {"op": "replace", "path": path, "value": before},
                ]);
                let api = self.api::<VirtualMachine>(&r.namespace);
                self.json_patch(&api, &r.name, ops, false, op, &res).await?;
            }
        }
        if let Some(ours) = &armed.stop_request
            && let Some(cur) = vm
                .status
                .as_ref()
                .and_then(|s| s.state_change_requests.as_ref())
            && cur.contains(ours)
        {
            let rest: Vec<Value> = cur.iter().filter(|q| *q != ours).cloned().collect();
            let ops = json!([
                {"op": "test", "path": "/status/stateChangeRequests", "value": cur},
                {"op": "replace", "path": "/status/stateChangeRequests", "value": rest},
            ]);
            let api = self.api::<VirtualMachine>(&r.namespace);
            self.json_patch(&api, &r.name, ops, true, op, &res).await?;
        }
        // 2. The grace the instance had (a shortened one would cut the next stop's grace).
        if let Some((before, set)) = armed.grace
            && v.spec.termination_grace_period_seconds == Some(set)
        {
            let ops = match before {
                Some(b) => json!([
                    {"op": "test", "path": "/spec/terminationGracePeriodSeconds", "value": set},
                    {"op": "replace", "path": "/spec/terminationGracePeriodSeconds", "value": b},
                ]),
                None => json!([
                    {"op": "test", "path": "/spec/terminationGracePeriodSeconds", "value": set},
                    {"op": "remove", "path": "/spec/terminationGracePeriodSeconds"},
                ]),
            };
            let api = self.api::<VirtualMachineInstance>(&r.namespace);
            self.json_patch(&api, &r.name, ops, false, op, &res).await?;
        }
        // virt-controller may have acted on the stop between our read and our writes.
        if self.get_vmi(r, op).await?.is_some_and(|now| {
            now.metadata.uid == v.metadata.uid && now.metadata.deletion_timestamp.is_some()
        }) {
            return Err(deletion_begun());
        }
        Ok(())
    }

    /// Restarts the VM (KubeVirt `restart`: stop + start of the VMI). `force`: grace period 0.
    pub(crate) async fn restart_vm(&self, r: &VmRef, force: bool, op: &'static str) -> Result<()> {
        if self.inner.config.power_api == PowerApi::Subresources {
            let body = if force {
                json!({"gracePeriodSeconds": 0})
            } else {
                json!({})
            };
            return self.subresource(r, Sub::Restart, body, op).await;
        }
        self.retry_conflicts(|| async {
            let (vm, vmi) = self.read(r, op).await?;
            let res = r.to_string();
            let rs = RunStrategy::of(&vm);
            if matches!(rs, RunStrategy::Halted | RunStrategy::Once) {
                return Err(err(ErrorKind::InvalidState, op, &res, format!("run strategy {rs} does not support manual restart requests")));
            }
            let Some(v) = vmi.as_ref() else {
                return Err(err(ErrorKind::InvalidState, op, &res, "VM is not running"));
            };
            if force && v.spec.termination_grace_period_seconds != Some(0) && !vmi_is_final(v) {
                let ops = json!([
                    {"op": "test", "path": "/metadata/resourceVersion", "value": v.metadata.resource_version},
                    {"op": "add", "path": "/spec/terminationGracePeriodSeconds", "value": 0},
                ]);
                let api = self.api::<VirtualMachineInstance>(&r.namespace);
                self.json_patch(&api, &r.name, ops, false, op, &res).await?;
            }
            let reqs = vec![json!({"action": "Stop", "uid": v.metadata.uid}), json!({"action": "Start"})];
            self.add_state_change_requests(r, &vm, reqs, false, op).await
        })
        .await
    }

    /// `spec.runStrategy` (or the legacy `spec.running`) → `to`, guarded by a `test` op.
    async fn patch_run_strategy(
        &self,
        r: &VmRef,
        vm: &VirtualMachine,
        to: RunStrategy,
        op: &'static str,
    ) -> Result<()> {
        let ops = match (&vm.spec.run_strategy, vm.spec.running) {
            (Some(cur), _) => json!([
                {"op": "test", "path": "/spec/runStrategy", "value": cur},
                {"op": "replace", "path": "/spec/runStrategy", "value": to.as_str()},
            ]),
            (None, Some(running)) => json!([
                {"op": "test", "path": "/spec/running", "value": running},
                {"op": "replace", "path": "/spec/running", "value": to == RunStrategy::Always},
            ]),
            (None, None) => json!([
                {"op": "test", "path": "/metadata/resourceVersion", "value": vm.metadata.resource_version},
                {"op": "add", "path": "/spec/runStrategy", "value": to.as_str()},
            ]),
        };
        let api = self.api::<VirtualMachine>(&r.namespace);
        self.json_patch(&api, &r.name, ops, false, op, &r.to_string())
            .await
            .map(drop)
    }

    /// Appends state-change requests for virt-controller (`replace_all`: a stop replaces pending ones).
    async fn add_state_change_requests(
        &self,
        r: &VmRef,
        vm: &VirtualMachine,
        reqs: Vec<Value>,
        replace_all: bool,
        op: &'static str,
    ) -> Result<()> {
        let res = r.to_string();
        let rv = &vm.metadata.resource_version;
        let ops = match vm.status.as_ref().map(|s| &s.state_change_requests) {
            None => json!([
                {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
                {"op": "add", "path": "/status", "value": {"stateChangeRequests": reqs}},
            ]),
            Some(None) => json!([
                {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
                {"op": "add", "path": "/status/stateChangeRequests", "value": reqs},
            ]),
            Some(Some(cur)) if cur.is_empty() || replace_all => json!([
                {"op": "test", "path": "/status/stateChangeRequests", "value": cur},
                {"op": "replace", "path": "/status/stateChangeRequests", "value": reqs},
            ]),
            // Only stops pending (virt-controller has not acknowledged one yet, e.g. right after
            // the instance went away) and no stop asked now: queue behind them, as a restart does.
            Some(Some(cur))
                if cur.iter().all(is_stop_request) && !reqs.iter().any(is_stop_request) =>
            {
                let mut all = cur.clone();
                all.extend(reqs);
                json!([
                    {"op": "test", "path": "/status/stateChangeRequests", "value": cur},
                    {"op": "replace", "path": "/status/stateChangeRequests", "value": all},
                ])
            }
            Some(Some(_)) => {
                return Err(err(
                    ErrorKind::InvalidState,
                    op,
                    &res,
                    "a start/stop request is already underway",
                ));
            }
        };
        let api = self.api::<VirtualMachine>(&r.namespace);
        self.json_patch(&api, &r.name, ops, true, op, &res)
            .await
            .map(drop)
    }
}
