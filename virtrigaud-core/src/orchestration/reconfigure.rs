//! Reconfiguration: a plan (online, graceful power cycle, impossible) computed from the
//! change and the provider's and VM's capabilities, then executed.

use std::time::Duration;

use tokio::time::Instant;

use super::events::EventReason;
use super::metrics;
use super::orchestrator::{Orchestrator, now_rfc3339, was_on};
use crate::error::{Error, Result};
use crate::model::{
    Condition, ExpandPolicy, VirtualMachineSpec, VirtualMachineStatus, VmResources,
    condition_types, set_condition,
};
use crate::provider::{DiskResize, ReconfigureRequest};
use crate::vm::{VmDescription, VmId};

/// One disk to grow.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DiskChange {
    /// Disk name.
    pub name: String,
    /// New size, GiB (disks only grow).
    pub size_gib: u64,
    /// When the growth may be applied.
    pub expand_policy: ExpandPolicy,
}

impl DiskChange {
    /// Grow `name` to `size_gib` with `policy`.
    pub fn new(name: impl Into<String>, size_gib: u64, policy: ExpandPolicy) -> Self {
        DiskChange {
            name: name.into(),
            size_gib,
            expand_policy: policy,
        }
    }
}

/// A desired change of CPU, memory and disk sizes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ResourceChange {
    /// New vCPU count.
    pub cpu: Option<u32>,
    /// New memory, MiB.
    pub memory_mib: Option<u64>,
    /// Disks to grow.
    pub disks: Vec<DiskChange>,
}

impl ResourceChange {
    /// Sets the vCPU count.
    pub fn cpu(mut self, cpu: u32) -> Self {
        self.cpu = Some(cpu);
        self
    }
    /// Sets the memory.
    pub fn memory_mib(mut self, mib: u64) -> Self {
        self.memory_mib = Some(mib);
        self
    }
    /// Adds a disk growth.
    pub fn disk(mut self, disk: DiskChange) -> Self {
        self.disks.push(disk);
        self
    }

    /// The change that brings `current` to `spec.resources` and `spec.disks` (only fields
    /// that differ; disks are matched by name).
    pub fn from_spec(spec: &VirtualMachineSpec, current: &VmDescription) -> Self {
        let mut change = ResourceChange::default();
        if let Some(r) = &spec.resources {
            change.cpu = r.cpu.filter(|c| *c != current.cpu);
            change.memory_mib = r.memory_mib.filter(|m| *m != current.memory_mib);
        }
        for d in &spec.disks {
            let cur = current.disks.iter().find(|c| c.name == d.name);
            if cur.is_none_or(|c| c.size_gib != d.size_gib) {
                change.disks.push(DiskChange::new(
                    d.name.clone(),
                    d.size_gib,
                    d.expand_policy.unwrap_or_default(),
                ));
            }
        }
        change
    }

    /// Whether nothing changes.
    pub fn is_empty(&self) -> bool {
        self.cpu.is_none() && self.memory_mib.is_none() && self.disks.is_empty()
    }
}

/// How a change will be applied.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PlanMode {
    /// Nothing to change.
    NoChange,
    /// Applied without a power cycle (live, or directly because the VM is off).
    Online,
    /// Needs a graceful stop, the change, and a start.
    GracefulPowerCycle {
        /// Upper estimate of the downtime: the stop's grace period plus the boot estimate
        /// (saturating at `Duration::MAX`).
        expected_downtime: Duration,
    },
    /// Cannot be applied.
    Impossible {
        /// Why, one line each.
        reasons: Vec<String>,
    },
}

/// The plan of a reconfiguration, with the reasons behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReconfigurePlan {
    /// How it will be applied.
    pub mode: PlanMode,
    /// Why a power cycle is needed (empty for online plans).
    pub power_cycle_reasons: Vec<String>,
    /// What will be sent to the provider.
    pub request: ReconfigureRequest,
    /// Whether the VM was on when planned.
    pub was_running: bool,
}

/// Options of [`Orchestrator::reconfigure`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ReconfigureOptions {
    /// Allow a graceful power cycle when the change cannot be applied live (default true).
    /// When false such a plan is `Impossible` (or, if the provider only says so after the
    /// apply, the change is left pending with `ReconfigurePendingPowerCycle=True`).
    pub allow_power_cycle: bool,
}

impl Default for ReconfigureOptions {
    fn default() -> Self {
        ReconfigureOptions {
            allow_power_cycle: true,
        }
    }
}

/// How a reconfiguration ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReconfigureOutcome {
    /// Nothing to change.
    NoChange,
    /// Applied without a power cycle.
    Online,
    /// Applied with a graceful power cycle; the VM runs again.
    PowerCycled,
    /// Stored by the provider but waiting for a power cycle that was not allowed.
    PendingPowerCycle,
}

impl ReconfigureOutcome {
    /// The metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            ReconfigureOutcome::NoChange => "no_change",
            ReconfigureOutcome::Online => "online",
            ReconfigureOutcome::PowerCycled => "power_cycle",
            ReconfigureOutcome::PendingPowerCycle => "pending_power_cycle",
        }
    }
}

/// What [`Orchestrator::reconfigure`] did.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ReconfigureReport {
    /// The plan that was executed.
    pub plan: ReconfigurePlan,
    /// How it ended.
    pub outcome: ReconfigureOutcome,
    /// Time the VM was not running (power cycles only).
    pub downtime: Option<Duration>,
    /// The provider's notes.
    pub notes: Vec<String>,
}

impl Orchestrator {
    /// Plans `change` for `vm` from the provider's and the VM's capabilities.
    pub async fn plan_reconfigure(
        &self,
        vm: &VmId,
        change: &ResourceChange,
        opts: &ReconfigureOptions,
    ) -> Result<ReconfigurePlan> {
        let desc = self.provider.describe(vm).await?;
        let was_running = was_on(desc.power_state);
        let mut request = ReconfigureRequest::default();
        let mut impossible = Vec::new();
        let mut cycle = Vec::new();
        let caps = self.provider.capabilities();
        if change.is_empty() {
            return Ok(ReconfigurePlan {
                mode: PlanMode::NoChange,
                power_cycle_reasons: vec![],
                request,
                was_running,
            });
        }
        if !caps.reconfigure {
            impossible.push(format!(
                "provider {} does not support reconfiguration",
                self.ptype()
            ));
        }
        // Core's shared rules, against the VM's disks as described.
        let asked = ReconfigureRequest {
            cpu: change.cpu,
            memory_mib: change.memory_mib,
            disks: change
                .disks
                .iter()
                .map(|d| DiskResize::new(d.name.clone(), d.size_gib))
                .collect(),
        };
        impossible.extend(asked.problems(Some(&desc.disks)));
        request.disks = asked
            .disks
            .into_iter()
            .filter(|d| {
                desc.disks
                    .iter()
                    .any(|cur| cur.name == d.name && d.size_gib > cur.size_gib)
            })
            .collect();
        request.cpu = change.cpu.filter(|c| *c != desc.cpu);
        request.memory_mib = change.memory_mib.filter(|m| *m != desc.memory_mib);
        if impossible.is_empty() && request == ReconfigureRequest::default() {
            return Ok(ReconfigurePlan {
                mode: PlanMode::NoChange,
                power_cycle_reasons: vec![],
                request,
                was_running,
            });
        }
        if was_running && impossible.is_empty() {
            let vcaps = self.provider.vm_capabilities(vm).await?;
            if let Some(cpu) = request.cpu {
                if cpu < desc.cpu {
                    cycle.push(format!(
                        "cpu: removing vCPUs ({} -> {cpu}) needs a power cycle",
                        desc.cpu
                    ));
                } else if !caps.reconfigure_online || !vcaps.cpu_hot_add {
                    cycle.push("cpu: CPU hot-add is not available for this VM".into());
                } else if vcaps.max_live_vcpus != 0 && cpu > vcaps.max_live_vcpus {
                    cycle.push(format!(
                        "cpu: {cpu} exceeds the live maximum of {} vCPUs",
                        vcaps.max_live_vcpus
                    ));
                }
            }
            if let Some(mem) = request.memory_mib {
                if mem < desc.memory_mib {
                    cycle.push(format!(
                        "memoryMiB: shrinking memory ({} -> {mem}) needs a power cycle",
                        desc.memory_mib
                    ));
                } else if !caps.reconfigure_online || !vcaps.memory_hot_add {
                    cycle.push("memoryMiB: memory hot-add is not available for this VM".into());
                } else if vcaps.max_live_memory_mib != 0 && mem > vcaps.max_live_memory_mib {
                    cycle.push(format!(
                        "memoryMiB: {mem} exceeds the live maximum of {} MiB",
                        vcaps.max_live_memory_mib
                    ));
                }
            }
            for d in &change.disks {
                if !request.disks.iter().any(|r| r.name == d.name) {
                    continue;
                }
                if d.expand_policy == ExpandPolicy::Offline {
                    cycle.push(format!(
                        "disks.{}: expandPolicy Offline grows the disk only while off",
                        d.name
                    ));
                } else if !caps.disk_expansion_online || !vcaps.disk_grow_online {
                    cycle.push(format!(
                        "disks.{}: online disk growth is not available for this VM",
                        d.name
                    ));
                }
            }
            if !cycle.is_empty() && !opts.allow_power_cycle {
                impossible.extend(cycle.iter().cloned());
                impossible.push("a power cycle is needed but was not allowed".into());
            }
        }
        let mode = if !impossible.is_empty() {
            PlanMode::Impossible {
                reasons: impossible,
            }
        } else if cycle.is_empty() {
            PlanMode::Online
        } else {
            PlanMode::GracefulPowerCycle {
                expected_downtime: self
                    .config
                    .stop_policy
                    .grace
                    .saturating_add(self.config.boot_estimate),
            }
        };
        Ok(ReconfigurePlan {
            mode,
            power_cycle_reasons: cycle,
            request,
            was_running,
        })
    }

    /// Plans and applies `change` to `vm`, keeping `status` (conditions
    /// `Reconfiguring` / `ReconfigurePendingPowerCycle`, `lastReconfigureTime`,
    /// `currentResources`) up to date.
    ///
    /// A VM that was running is running again at the end, or the error says exactly why not
    /// and what state it was left in.
    pub async fn reconfigure(
        &self,
        vm: &VmId,
        change: &ResourceChange,
        opts: &ReconfigureOptions,
        status: &mut VirtualMachineStatus,
    ) -> Result<ReconfigureReport> {
        let started = Instant::now();
        let res = self.reconfigure_inner(vm, change, opts, status).await;
        let outcome = match &res {
            Ok(r) => r.outcome.as_str(),
            Err(e) if e.operation() == "plan" => "impossible",
            Err(e) => e.kind().as_str(),
        };
        metrics::reconfigure(self.ptype(), outcome, started.elapsed());
        match &res {
            Ok(r) => {
                set_condition(
                    &mut status.conditions,
                    Condition::new(
                        condition_types::RECONFIGURING,
                        false,
                        "Completed",
                        r.outcome.as_str(),
                    )
                    .at(now_rfc3339()),
                );
            }
            Err(e) => {
                self.emit_vm(vm, EventReason::ReconfigureFailed, e.to_string());
                set_condition(
                    &mut status.conditions,
                    Condition::new(
                        condition_types::RECONFIGURING,
                        false,
                        "Failed",
                        e.to_string(),
                    )
                    .at(now_rfc3339()),
                );
            }
        }
        res
    }

    async fn reconfigure_inner(
        &self,
        vm: &VmId,
        change: &ResourceChange,
        opts: &ReconfigureOptions,
        status: &mut VirtualMachineStatus,
    ) -> Result<ReconfigureReport> {
        let plan = self.plan_reconfigure(vm, change, opts).await?;
        let ctx =
            |e: Error, op: &'static str| e.context(self.ptype(), op).with_resource(vm.to_string());
        match &plan.mode {
            PlanMode::NoChange => {
                return Ok(ReconfigureReport {
                    plan,
                    outcome: ReconfigureOutcome::NoChange,
                    downtime: None,
                    notes: vec![],
                });
            }
            PlanMode::Impossible { reasons } => {
                return Err(Error::invalid_spec(format!(
                    "the change cannot be applied: {}",
                    reasons.join("; ")
                ))
                .with_provider(self.ptype())
                .with_operation("plan")
                .with_resource(vm.to_string()));
            }
            _ => {}
        }
        self.emit_vm(
            vm,
            EventReason::ReconfigureStarted,
            plan.request.to_string(),
        );
        set_condition(
            &mut status.conditions,
            Condition::new(condition_types::RECONFIGURING, true, "InProgress", "")
                .at(now_rfc3339()),
        );
        let mut notes = Vec::new();
        if plan.mode == PlanMode::Online {
            let r = self
                .provider
                .reconfigure(vm, &plan.request)
                .await
                .map_err(|e| ctx(e, "reconfigure"))?;
            notes.extend(r.notes.iter().cloned());
            if !r.needs_power_cycle {
                self.finish(vm, status).await;
                self.emit_vm(
                    vm,
                    EventReason::ReconfigureCompleted,
                    "applied without a power cycle",
                );
                return Ok(ReconfigureReport {
                    plan,
                    outcome: ReconfigureOutcome::Online,
                    downtime: None,
                    notes,
                });
            }
            // The provider stored it but needs a cycle after all.
            if !opts.allow_power_cycle {
                set_condition(
                    &mut status.conditions,
                    Condition::new(
                        condition_types::RECONFIGURE_PENDING_POWER_CYCLE,
                        true,
                        "PowerCycleNotAllowed",
                        r.notes.join("; "),
                    )
                    .at(now_rfc3339()),
                );
                self.emit_vm(
                    vm,
                    EventReason::ReconfigurePending,
                    "stored; waits for a power cycle that was not allowed",
                );
                return Ok(ReconfigureReport {
                    plan,
                    outcome: ReconfigureOutcome::PendingPowerCycle,
                    downtime: None,
                    notes,
                });
            }
        }
        // Graceful power cycle: stop, apply, start.
        let reasons = if plan.power_cycle_reasons.is_empty() {
            notes.join("; ")
        } else {
            plan.power_cycle_reasons.join("; ")
        };
        set_condition(
            &mut status.conditions,
            Condition::new(
                condition_types::RECONFIGURE_PENDING_POWER_CYCLE,
                true,
                "PowerCycleRequired",
                reasons.clone(),
            )
            .at(now_rfc3339()),
        );
        self.emit_vm(
            vm,
            EventReason::ReconfigurePowerCycle,
            format!("reconfiguration requires a power cycle: {reasons}"),
        );
        let stop_started = Instant::now();
        self.graceful_stop(vm, self.config.stop_policy.clone()).await.map_err(|e| {
            Error::new(e.kind(), format!("the graceful stop before the reconfiguration failed; nothing was changed: {}", e.message()))
                .with_provider(self.ptype())
                .with_operation("reconfigure_stop")
                .with_resource(vm.to_string())
        })?;
        let applied = self.provider.reconfigure(vm, &plan.request).await;
        match applied {
            Ok(r) => notes.extend(r.notes),
            Err(e) => {
                // Put the VM back on, unchanged.
                let restart = self.start_with_retry(vm).await;
                let msg = match restart {
                    Ok(()) => format!(
                        "the change was not applied ({e}); the VM was started again unchanged"
                    ),
                    Err(se) => format!(
                        "the change was not applied ({e}) and the VM could not be started again ({se}): the VM is OFF"
                    ),
                };
                return Err(Error::new(e.kind(), msg)
                    .with_provider(self.ptype())
                    .with_operation("reconfigure")
                    .with_resource(vm.to_string()));
            }
        }
        if let Err(e) = self.start_with_retry(vm).await {
            return Err(Error::new(e.kind(), format!("the change was applied but the VM could not be started again: {e}; the VM is OFF"))
                .with_provider(self.ptype())
                .with_operation("reconfigure_start")
                .with_resource(vm.to_string()));
        }
        let downtime = stop_started.elapsed();
        self.finish(vm, status).await;
        self.emit_vm(
            vm,
            EventReason::ReconfigureCompleted,
            format!("applied with a power cycle ({} s down)", downtime.as_secs()),
        );
        Ok(ReconfigureReport {
            plan,
            outcome: ReconfigureOutcome::PowerCycled,
            downtime: Some(downtime),
            notes,
        })
    }

    async fn finish(&self, vm: &VmId, status: &mut VirtualMachineStatus) {
        crate::model::remove_condition(
            &mut status.conditions,
            condition_types::RECONFIGURE_PENDING_POWER_CYCLE,
        );
        status.last_reconfigure_time = Some(now_rfc3339());
        if let Ok(d) = self.provider.describe(vm).await {
            status.current_resources = Some(VmResources {
                cpu: Some(d.cpu),
                memory_mib: Some(d.memory_mib),
            });
        }
    }
}
