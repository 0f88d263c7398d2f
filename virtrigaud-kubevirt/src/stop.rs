//! Stops and their undoing (`cancel_shutdown`), over either power API.
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
use virtrigaud_core::{Error, ErrorKind, Result, ResultExt};

use crate::PROVIDER_TYPE;
use crate::armed::Armed;
use crate::client::{Connection, Sub};
use crate::config::{DEFAULT_GRACE_SECONDS, PowerApi};
use crate::id::VmRef;
use crate::state::{
    RunStrategy, run_strategy_of, stop_in_flight, vmi_active, vmi_is_final, will_start,
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

impl Connection {
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
                self.try_stop(r, &vm, vmi.as_ref(), grace, op).await.ctx(
                    PROVIDER_TYPE,
                    op,
                    &r.to_string(),
                )
            })
            .await?;
        // A stop not sent by request_shutdown (a forced one included) supersedes any record.
        self.armed_lock().remove(&r.to_string());
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
        // Within a watched stop the first attempt plans from the shared watch (caught up with
        // the stream's baseline read): every change it makes is a JSON patch whose `test`
        // pins what it planned from, so a stale view fails as a conflict and is re-read.
        let mut watched = match self.config.power_api {
            PowerApi::RunStrategy => self.shared.current(r),
            PowerApi::Subresources => None,
        };
        let from_watch = watched.is_some();
        let (mut outcome, mut armed) = self
            .retry_conflicts(|| {
                let pair = watched.take();
                async move {
                    let (vm, vmi) = match pair {
                        Some(pair) => pair,
                        None => self.read(r, op).await?,
                    };
                    self.try_stop(r, &vm, vmi.as_ref(), grace, op).await.ctx(
                        PROVIDER_TYPE,
                        op,
                        &r.to_string(),
                    )
                }
            })
            .await?;
        if from_watch && outcome == StopOutcome::AlreadyStopping {
            // "A stop is already in flight, send nothing" from a view that may lag would leave
            // the guest unasked until the hard power-off: that one decision is made again
            // from a fresh read.
            (outcome, armed) = self
                .retry_conflicts(|| async {
                    let (vm, vmi) = self.read(r, op).await?;
                    self.try_stop(r, &vm, vmi.as_ref(), grace, op).await.ctx(
                        PROVIDER_TYPE,
                        op,
                        &r.to_string(),
                    )
                })
                .await?;
        }
        if !armed.is_empty() {
            let mut map = self.armed_lock();
            match map.get_mut(&r.to_string()) {
                Some(prev) => prev.merge(armed),
                None => {
                    map.insert(r.to_string(), armed);
                }
            }
        }
        Ok(outcome)
    }

    /// One attempt of a stop: [`plan_stop`], then the subresource call or the object changes.
    async fn try_stop(
        &self,
        r: &VmRef,
        vm: &VirtualMachine,
        vmi: Option<&VirtualMachineInstance>,
        grace: Option<i64>,
        op: &'static str,
    ) -> Result<(StopOutcome, Armed)> {
        let plan = plan_stop(vm, vmi, grace)?;
        if plan.already_stopping {
            return Ok((StopOutcome::AlreadyStopping, plan.armed));
        }
        if self.config.power_api == PowerApi::Subresources {
            let body = match grace {
                Some(g) if plan.set_grace => json!({"gracePeriod": g}),
                _ => json!({}),
            };
            self.subresource(r, Sub::Stop, body, op).await?;
            let outcome = if plan.in_flight {
                StopOutcome::GraceShortened
            } else {
                StopOutcome::Requested
            };
            return Ok((outcome, plan.armed));
        }
        let outcome = self.stop_objects(r, vm, vmi, grace, &plan, op).await?;
        Ok((outcome, plan.armed))
    }

    /// Object mode: first the grace on the running VMI, then the run state.
    async fn stop_objects(
        &self,
        r: &VmRef,
        vm: &VirtualMachine,
        vmi: Option<&VirtualMachineInstance>,
        grace: Option<i64>,
        plan: &StopPlan,
        op: &'static str,
    ) -> Result<StopOutcome> {
        let res = r.to_string();
        if let (Some(v), Some(g)) = (vmi.filter(|_| plan.active), grace)
            && plan.set_grace
        {
            let ops = match plan.current {
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
        if plan.in_flight {
            return Ok(StopOutcome::GraceShortened);
        }
        match run_strategy_of(vm) {
            Some(RunStrategy::Manual | RunStrategy::RerunOnFailure) => {
                let req = plan.armed.stop_request.clone().unwrap_or(Value::Null);
                self.add_state_change_requests(r, vm, vec![req], true, op)
                    .await?;
            }
            Some(RunStrategy::Halted) => return Ok(StopOutcome::AlreadyStopping),
            _ => {
                self.patch_run_strategy(r, vm, RunStrategy::Halted, op)
                    .await?
            }
        }
        Ok(StopOutcome::Requested)
    }

    /// Undoes what our stop request changed ([`Armed`]), so that the VM keeps running:
    /// the run strategy (or `spec.running`) it had, our pending `Stop` request withdrawn, the
    /// VMI's grace period as it was. Impossible once virt-controller has begun deleting the
    /// instance (`InvalidState`). Nothing recorded for this VM (no stop sent by
    /// `request_shutdown` in this process): nothing to undo.
    pub(crate) async fn cancel_stop(&self, r: &VmRef, op: &'static str) -> Result<()> {
        let key = r.to_string();
        let Some(armed) = self.armed_lock().remove(&key) else {
            tracing::debug!(vm = %r, "cancel_shutdown: no stop of ours to undo");
            return Ok(());
        };
        let res = self
            .retry_conflicts(|| async {
                let (vm, vmi) = self.read(r, op).await?;
                self.try_cancel(r, &vm, vmi.as_ref(), &armed, op).await.ctx(
                    PROVIDER_TYPE,
                    op,
                    &r.to_string(),
                )
            })
            .await;
        if let Err(e) = &res
            && (e.is_retryable() || e.kind() == ErrorKind::Conflict)
        {
            // Not undone yet: a later cancel may still do it.
            let mut map = self.armed_lock();
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
        let Some(v) = vmi.filter(|v| !vmi_is_final(v)) else {
            return Err(Error::invalid_state(
                "the VM already stopped: the shutdown cannot be cancelled",
            ));
        };
        if armed.vmi_uid.is_some() && v.metadata.uid != armed.vmi_uid {
            tracing::debug!(vm = %r, "cancel_shutdown: a new instance runs; our stop no longer applies");
            return Ok(());
        }
        if v.metadata.deletion_timestamp.is_some() {
            return Err(deletion_begun());
        }
        // 1. The run state first: it is what makes virt-controller delete the instance.
        self.undo_run_state(r, vm, armed, op).await?;
        // 2. The grace the instance had (a shortened one would cut the next stop's grace).
        self.undo_grace(r, v, armed, op).await?;
        // virt-controller may have acted on the stop between our read and our writes.
        if self.get_vmi(r, op).await?.is_some_and(|now| {
            now.metadata.uid == v.metadata.uid && now.metadata.deletion_timestamp.is_some()
        }) {
            return Err(deletion_begun());
        }
        Ok(())
    }

    /// Puts back the run strategy (or `spec.running`) our stop set to `Halted`, and withdraws
    /// our `Stop` state-change request.
    async fn undo_run_state(
        &self,
        r: &VmRef,
        vm: &VirtualMachine,
        armed: &Armed,
        op: &'static str,
    ) -> Result<()> {
        let res = r.to_string();
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
        Ok(())
    }

    /// Puts back the instance's grace period our stop changed (if it is still ours).
    async fn undo_grace(
        &self,
        r: &VmRef,
        v: &VirtualMachineInstance,
        armed: &Armed,
        op: &'static str,
    ) -> Result<()> {
        let res = r.to_string();
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
        Ok(())
    }
}

/// `cancel_shutdown` after virt-controller began deleting the instance.
fn deletion_begun() -> Error {
    Error::invalid_state(
        "virt-controller has already begun deleting the instance: KubeVirt cannot undo \
         that, the guest is being shut down and is forced off when its grace expires",
    )
}

/// What a stop will do, decided from one read of the VM and its instance.
#[derive(Debug)]
struct StopPlan {
    /// A stop is in flight (this one can only shorten its grace).
    in_flight: bool,
    /// An instance exists that is not final.
    active: bool,
    /// The instance's `terminationGracePeriodSeconds`.
    current: Option<i64>,
    /// The requested grace is to be written.
    set_grace: bool,
    /// Nothing to send: a stop with an equal or shorter grace is in flight.
    already_stopping: bool,
    /// What the stop changes, for `cancel_shutdown`.
    armed: Armed,
}

/// Decides a stop (virt-api's rules; see the module docs on grace periods). `InvalidState`
/// when no instance runs and none is coming.
fn plan_stop(
    vm: &VirtualMachine,
    vmi: Option<&VirtualMachineInstance>,
    grace: Option<i64>,
) -> Result<StopPlan> {
    let active = vmi_active(vmi);
    let in_flight = stop_in_flight(vm, vmi);
    // No instance and none coming (virt-controller will not create one): nothing to stop.
    if !active && !will_start(vm, vmi) {
        return Err(Error::invalid_state("VM is not running"));
    }
    let mut plan = StopPlan {
        in_flight,
        active,
        current: vmi.and_then(|v| v.spec.termination_grace_period_seconds),
        set_grace: false,
        already_stopping: false,
        armed: Armed {
            vmi_uid: vmi.filter(|_| active).and_then(|v| v.metadata.uid.clone()),
            ..Armed::default()
        },
    };
    let effective = plan.current.unwrap_or(DEFAULT_GRACE_SECONDS);
    if in_flight && grace.is_none_or(|g| g >= effective) {
        // One grace period per stop: a longer (or no) grace never extends one in flight.
        plan.already_stopping = true;
        return Ok(plan);
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
    let shortened_before = plan.current.is_some_and(|c| c < template);
    plan.set_grace = match grace {
        Some(g) if in_flight || shortened_before => g < effective,
        Some(g) => plan.current != Some(g),
        None => false,
    };
    if let Some(g) = grace.filter(|_| plan.set_grace && active) {
        plan.armed.grace = Some((plan.current, g));
    }
    if !in_flight {
        // What the stop does to the run state (virt-api does the same for a `stop` PUT).
        match run_strategy_of(vm) {
            Some(RunStrategy::Manual | RunStrategy::RerunOnFailure) => {
                let uid = vmi.and_then(|v| v.metadata.uid.clone());
                plan.armed.stop_request = Some(json!({"action": "Stop", "uid": uid}));
            }
            Some(RunStrategy::Halted) => {}
            _ => {
                plan.armed.run_state = match (&vm.spec.run_strategy, vm.spec.running) {
                    (Some(cur), _) => Some(("/spec/runStrategy", json!(cur))),
                    (None, Some(running)) => Some(("/spec/running", json!(running))),
                    (None, None) => None,
                };
            }
        }
    }
    Ok(plan)
}
