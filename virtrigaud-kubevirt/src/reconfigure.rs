//! CPU / memory changes: hot-plugged when the cluster uses the `LiveUpdate` rollout strategy,
//! otherwise staged until the next restart (KubeVirt's `RestartRequired` condition, surfaced as
//! `needs_power_cycle`).

use std::time::Duration;

use kube::runtime::wait::await_condition;
use serde_json::{Value, json};
use virtrigaud_core::{Error, ErrorKind, ReconfigureRequest, ReconfigureResult, Result, ResultExt};

use crate::PROVIDER_TYPE;
use crate::client::Connection;
use crate::config::RolloutStrategy;
use crate::id::VmRef;
use crate::quantity::{mib_to_quantity, quantity_to_mib};
use crate::state::vmi_active;
use crate::types::{CpuSpec, DomainSpec, VirtualMachine, condition_true};

/// How long to wait for virt-controller to observe a template change before reporting.
const OBSERVE_TIMEOUT: Duration = Duration::from_secs(30);

const OP: &str = "reconfigure";

impl Connection {
    /// Changes CPU / memory (disks are refused: grow their PVC / DataVolume instead).
    pub(crate) async fn reconfigure(
        &self,
        r: &VmRef,
        change: &ReconfigureRequest,
    ) -> Result<ReconfigureResult> {
        let res = r.to_string();
        if !change.disks.is_empty() {
            return Err(Error::new(
                ErrorKind::Unsupported,
                "grow disks by expanding their PVC / DataVolume",
            ))
            .ctx(PROVIDER_TYPE, OP, &res);
        }
        if change.cpu.is_none() && change.memory_mib.is_none() {
            return Ok(ReconfigureResult::default());
        }
        let rollout = self.rollout_strategy().await;
        let (updated, running, within) = self
            .retry_conflicts(|| async {
                let (vm, vmi) = self.read(r, OP).await?;
                let domain = vm
                    .spec
                    .template
                    .as_ref()
                    .and_then(|t| t.spec.as_ref())
                    .and_then(|s| s.domain.as_ref());
                let (patch_domain, within) =
                    domain_patch(domain, change).ctx(PROVIDER_TYPE, OP, &res)?;
                // Merge patch pinned to the resourceVersion read: a concurrent writer gets us a 409.
                let body = json!({
                    "metadata": {"resourceVersion": vm.metadata.resource_version},
                    "spec": {"template": {"spec": {"domain": patch_domain}}},
                });
                let api = self.api::<VirtualMachine>(&r.namespace);
                let updated = self.merge_patch(&api, &r.name, &body, OP, &res).await?;
                Ok((updated, vmi_active(vmi.as_ref()), within))
            })
            .await?;
        let mut out = ReconfigureResult::default();
        if !running {
            out.notes
                .push("VM is stopped: the change applies at the next start".into());
            return Ok(out);
        }
        self.observe_change(
            r,
            &updated,
            rollout == RolloutStrategy::LiveUpdate && within,
            out,
        )
        .await
    }

    /// Waits (watch, bounded) until virt-controller has processed the new generation, and
    /// reports whether the change went live or waits for a restart (`live_expected`: what to
    /// infer when virt-controller does not report in time).
    async fn observe_change(
        &self,
        r: &VmRef,
        updated: &VirtualMachine,
        live_expected: bool,
        mut out: ReconfigureResult,
    ) -> Result<ReconfigureResult> {
        let generation = updated.metadata.generation.unwrap_or(0);
        let api = self.api::<VirtualMachine>(&r.namespace);
        let observed = tokio::time::timeout(
            OBSERVE_TIMEOUT.min(self.config.operation_timeout),
            await_condition(api, &r.name, move |o: Option<&VirtualMachine>| {
                o.and_then(|v| v.status.as_ref())
                    .and_then(|s| s.observed_generation)
                    .is_some_and(|g| g >= generation)
            }),
        )
        .await;
        match observed {
            Ok(Ok(Some(vm))) => {
                let restart = vm
                    .status
                    .as_ref()
                    .is_some_and(|s| condition_true(&s.conditions, "RestartRequired"));
                out.needs_power_cycle = restart;
                out.applied_live = !restart;
                out.notes.push(if restart {
                    "KubeVirt reports RestartRequired: the change takes effect after a restart"
                        .into()
                } else {
                    "hot-plugged into the running VMI (LiveUpdate)".into()
                });
            }
            _ => {
                out.needs_power_cycle = !live_expected;
                out.notes.push("virt-controller did not report on the change in time; result inferred from the rollout strategy".into());
            }
        }
        Ok(out)
    }
}

/// Core's shared rules ([`ReconfigureRequest::validate`]: vCPUs and memory at least 1), then
/// KubeVirt's: vCPUs a multiple of cores × threads (CPU hot-plug adds sockets).
fn validate_reconfigure(change: &ReconfigureRequest, cpu: &CpuSpec) -> Result<()> {
    change.validate()?;
    if let Some(n) = change.cpu {
        let per = cpu.per_socket();
        if n % per != 0 {
            return Err(Error::invalid_spec(format!(
                "cpu: {n} vCPUs is not a multiple of cores × threads ({per}); CPU hot-plug adds sockets"
            )));
        }
    }
    Ok(())
}

/// The `domain` merge patch for `change`, and whether it stays within the hot-plug maxima
/// (sockets ≤ `maxSockets`, current ≤ memory ≤ `maxGuest`).
fn domain_patch(domain: Option<&DomainSpec>, change: &ReconfigureRequest) -> Result<(Value, bool)> {
    let cpu = domain.and_then(|d| d.cpu.clone()).unwrap_or_default();
    validate_reconfigure(change, &cpu)?;
    let mut patch_domain = json!({});
    let mut within = true;
    if let Some(n) = change.cpu {
        let sockets = n / cpu.per_socket();
        let max = cpu
            .max_sockets
            .unwrap_or(cpu.sockets.unwrap_or(1).max(1) * 4);
        within &= sockets <= max;
        patch_domain["cpu"] = json!({"sockets": sockets});
    }
    if let Some(m) = change.memory_mib {
        let mem = domain.and_then(|d| d.memory.as_ref());
        let cur = mem
            .and_then(|m| m.guest.as_deref())
            .and_then(quantity_to_mib)
            .unwrap_or(0);
        let max = mem
            .and_then(|m| m.max_guest.as_deref())
            .and_then(quantity_to_mib)
            .unwrap_or(cur * 4);
        within &= m <= max && m >= cur;
        patch_domain["memory"] = json!({"guest": mib_to_quantity(m)});
    }
    Ok((patch_domain, within))
}
