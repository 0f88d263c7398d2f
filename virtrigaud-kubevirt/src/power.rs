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

use serde_json::{Value, json};
use virtrigaud_core::{Error, ErrorKind, Result, ResultExt};

use crate::PROVIDER_TYPE;
use crate::client::{Connection, Sub};
use crate::config::PowerApi;
use crate::id::VmRef;
use crate::state::{
    RunStrategy, is_stop_request, run_strategy_name, run_strategy_of, run_strategy_value,
    vmi_is_final, vmi_phase,
};
use crate::types::{VirtualMachine, VirtualMachineInstance};

impl Connection {
    /// Starts the VM (KubeVirt `start`). `paused` needs the subresource API.
    pub(crate) async fn start_vm(&self, r: &VmRef, paused: bool, op: &'static str) -> Result<()> {
        match self.config.power_api {
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
                    return Err(Error::new(
                        ErrorKind::Unsupported,
                        "starting paused needs the subresource API",
                    ))
                    .ctx(PROVIDER_TYPE, op, &r.to_string());
                }
                self.retry_conflicts(|| async {
                    let (vm, vmi) = self.read(r, op).await?;
                    self.try_start(r, &vm, vmi.as_ref(), op).await.ctx(
                        PROVIDER_TYPE,
                        op,
                        &r.to_string(),
                    )
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
        if let Some(v) = vmi
            && !vmi_is_final(v)
            && !matches!(vmi_phase(v), "" | "Unknown")
        {
            return Err(Error::invalid_state("VM is already running"));
        }
        match run_strategy_of(vm) {
            Some(RunStrategy::Halted) => {
                self.patch_run_strategy(r, vm, RunStrategy::Always, op)
                    .await
            }
            Some(rs @ (RunStrategy::Manual | RunStrategy::RerunOnFailure)) => {
                let phase = vmi.map(vmi_phase);
                if rs == RunStrategy::RerunOnFailure && phase == Some("Failed") {
                    return Err(Error::invalid_state(
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
            _ => Err(Error::invalid_state(format!(
                "run strategy {} does not support manual start requests",
                run_strategy_name(vm)
            ))),
        }
    }

    /// Restarts the VM (KubeVirt `restart`: stop + start of the VMI). `force`: grace period 0.
    pub(crate) async fn restart_vm(&self, r: &VmRef, force: bool, op: &'static str) -> Result<()> {
        if self.config.power_api == PowerApi::Subresources {
            let body = if force {
                json!({"gracePeriodSeconds": 0})
            } else {
                json!({})
            };
            return self.subresource(r, Sub::Restart, body, op).await;
        }
        self.retry_conflicts(|| async {
            let (vm, vmi) = self.read(r, op).await?;
            self.try_restart(r, &vm, vmi.as_ref(), force, op).await.ctx(
                PROVIDER_TYPE,
                op,
                &r.to_string(),
            )
        })
        .await
    }

    /// One attempt of an object-mode restart: `Stop`+`Start` requests (a forced one first sets
    /// the running instance's grace to 0).
    async fn try_restart(
        &self,
        r: &VmRef,
        vm: &VirtualMachine,
        vmi: Option<&VirtualMachineInstance>,
        force: bool,
        op: &'static str,
    ) -> Result<()> {
        if matches!(
            run_strategy_of(vm),
            Some(RunStrategy::Halted | RunStrategy::Once)
        ) {
            return Err(Error::invalid_state(format!(
                "run strategy {} does not support manual restart requests",
                run_strategy_name(vm)
            )));
        }
        let Some(v) = vmi else {
            return Err(Error::invalid_state("VM is not running"));
        };
        if force && v.spec.termination_grace_period_seconds != Some(0) && !vmi_is_final(v) {
            let ops = json!([
                {"op": "test", "path": "/metadata/resourceVersion", "value": v.metadata.resource_version},
                {"op": "add", "path": "/spec/terminationGracePeriodSeconds", "value": 0},
            ]);
            let api = self.api::<VirtualMachineInstance>(&r.namespace);
            self.json_patch(&api, &r.name, ops, false, op, &r.to_string())
                .await?;
        }
        let reqs = vec![
            json!({"action": "Stop", "uid": v.metadata.uid}),
            json!({"action": "Start"}),
        ];
        self.add_state_change_requests(r, vm, reqs, false, op).await
    }

    /// `spec.runStrategy` (or the legacy `spec.running`) → `to`, guarded by a `test` op.
    pub(crate) async fn patch_run_strategy(
        &self,
        r: &VmRef,
        vm: &VirtualMachine,
        to: RunStrategy,
        op: &'static str,
    ) -> Result<()> {
        let ops = match (&vm.spec.run_strategy, vm.spec.running) {
            (Some(cur), _) => json!([
                {"op": "test", "path": "/spec/runStrategy", "value": cur},
                {"op": "replace", "path": "/spec/runStrategy", "value": run_strategy_value(to)},
            ]),
            (None, Some(running)) => json!([
                {"op": "test", "path": "/spec/running", "value": running},
                {"op": "replace", "path": "/spec/running", "value": to == RunStrategy::Always},
            ]),
            (None, None) => json!([
                {"op": "test", "path": "/metadata/resourceVersion", "value": vm.metadata.resource_version},
                {"op": "add", "path": "/spec/runStrategy", "value": run_strategy_value(to)},
            ]),
        };
        let api = self.api::<VirtualMachine>(&r.namespace);
        self.json_patch(&api, &r.name, ops, false, op, &r.to_string())
            .await
            .map(drop)
    }

    /// Appends state-change requests for virt-controller (`replace_all`: a stop replaces pending ones).
    pub(crate) async fn add_state_change_requests(
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
                return Err(Error::invalid_state(
                    "a start/stop request is already underway",
                ))
                .ctx(PROVIDER_TYPE, op, &res);
            }
        };
        let api = self.api::<VirtualMachine>(&r.namespace);
        self.json_patch(&api, &r.name, ops, true, op, &res)
            .await
            .map(drop)
    }
}
