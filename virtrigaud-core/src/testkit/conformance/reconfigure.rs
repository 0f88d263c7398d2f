//! Reconfiguration through the [`Orchestrator`]: online where declared, a graceful power
//! cycle otherwise, the power state restored, and disk growth by the spec's disk name.

use std::sync::Arc;

use super::{CheckOutcome, Fixture, SETTLE, await_state, orchestrator, with_vm};
use crate::capabilities::VmCapabilities;
use crate::error::ErrorKind;
use crate::model::{ExpandPolicy, VirtualMachineSpec, VirtualMachineStatus, from_yaml_str};
use crate::orchestration::{
    DiskChange, Orchestrator, PlanMode, ReconfigureOptions, ReconfigureOutcome, ResourceChange,
};
use crate::provider::{
    DeleteOptions, DiskCreateSpec, PowerOffOptions, Provider, StartOptions, VmCreateSpec,
};
use crate::shutdown::{ShutdownEventKind, ShutdownOutcome};
use crate::vm::{PowerState, VmDescription, VmId};

/// A change within the running VM's live limits is planned `Online`, applied without a
/// power cycle, read back, and stamps `lastReconfigureTime`. A provider that declares
/// `reconfigure_online` must offer hot-add headroom on its fixture's running VM.
pub async fn reconfigure_online_when_declared(
    provider: &Arc<dyn Provider>,
    fixture: &dyn Fixture,
) -> CheckOutcome {
    let caps = provider.capabilities();
    if !caps.reconfigure {
        return CheckOutcome::Skipped("reconfigure is declared false".into());
    }
    if !caps.reconfigure_online {
        return CheckOutcome::Skipped("reconfigure_online is declared false".into());
    }
    with_vm(fixture, async |vm: &VmId| {
        let orch = orchestrator(provider, fixture);
        let d = attempt!(provider.describe(vm).await, "describe");
        let v = attempt!(provider.vm_capabilities(vm).await, "vm_capabilities");
        let mut change = ResourceChange::default();
        if v.memory_hot_add
            && (v.max_live_memory_mib == 0 || v.max_live_memory_mib >= d.memory_mib + 128)
        {
            change.memory_mib = Some(d.memory_mib + 128);
        } else if v.cpu_hot_add && (v.max_live_vcpus == 0 || v.max_live_vcpus > d.cpu) {
            change.cpu = Some(d.cpu + 1);
        } else {
            return CheckOutcome::Failed(format!(
                "reconfigure_online is declared but the running VM offers no hot-add headroom \
                 ({} vCPUs, {} MiB; {v:?})",
                d.cpu, d.memory_mib
            ));
        }
        let opts = ReconfigureOptions::default();
        let plan = attempt!(orch.plan_reconfigure(vm, &change, &opts).await, "plan");
        ensure!(
            plan.mode == PlanMode::Online,
            "a change within the live limits ({change:?}) planned {:?}: {:?}",
            plan.mode,
            plan.power_cycle_reasons
        );
        let mut status = VirtualMachineStatus::default();
        let report = attempt!(
            orch.reconfigure(vm, &change, &opts, &mut status).await,
            "reconfigure"
        );
        ensure!(
            report.outcome == ReconfigureOutcome::Online,
            "planned online, ended {:?} ({:?})",
            report.outcome,
            report.notes
        );
        ensure!(
            status.last_reconfigure_time.is_some(),
            "lastReconfigureTime was not set"
        );
        let after = attempt!(provider.describe(vm).await, "describe after");
        ensure!(
            after.power_state == PowerState::Running,
            "an online change left the VM {}",
            after.power_state
        );
        ensure!(!after.pending_power_cycle, "applied online but pending");
        if let Some(missing) = not_applied(&change, &after) {
            return CheckOutcome::Failed(format!("applied online, but {missing}"));
        }
        CheckOutcome::Passed
    })
    .await
}

/// A change the running VM cannot take live is planned as a graceful power cycle: the
/// guest is stopped gracefully (never forced), the change applied, the VM runs again, and
/// the new value reads back. A change to a VM that is off is applied directly and leaves
/// it off.
pub async fn reconfigure_power_cycles_gracefully(
    provider: &Arc<dyn Provider>,
    fixture: &dyn Fixture,
) -> CheckOutcome {
    if !provider.capabilities().reconfigure {
        return CheckOutcome::Skipped("reconfigure is declared false".into());
    }
    with_vm(fixture, async |vm: &VmId| {
        let orch = orchestrator(provider, fixture);
        let d = attempt!(provider.describe(vm).await, "describe");
        let v = attempt!(provider.vm_capabilities(vm).await, "vm_capabilities");
        let Some(change) = needs_a_power_cycle(provider, &d, &v) else {
            return CheckOutcome::Skipped(
                "no change of this VM needs a power cycle (everything is live)".into(),
            );
        };
        let opts = ReconfigureOptions::default();
        let plan = attempt!(orch.plan_reconfigure(vm, &change, &opts).await, "plan");
        ensure!(
            matches!(plan.mode, PlanMode::GracefulPowerCycle { .. }),
            "{change:?} on a running VM planned {:?}",
            plan.mode
        );
        let mut events = orch.shutdown_manager().subscribe();
        let mut status = VirtualMachineStatus::default();
        let report = attempt!(
            orch.reconfigure(vm, &change, &opts, &mut status).await,
            "reconfigure"
        );
        ensure!(
            report.outcome == ReconfigureOutcome::PowerCycled,
            "planned a power cycle, ended {:?}",
            report.outcome
        );
        let mut graceful = false;
        while let Ok(e) = events.try_recv() {
            match e.kind {
                ShutdownEventKind::Forcing(reason) if e.vm == *vm => {
                    return CheckOutcome::Failed(format!(
                        "the power cycle forced the guest off ({reason:?})"
                    ));
                }
                ShutdownEventKind::Finished(ShutdownOutcome::Graceful { .. }) if e.vm == *vm => {
                    graceful = true;
                }
                _ => {}
            }
        }
        ensure!(graceful, "no graceful stop was seen in the power cycle");
        ensure!(
            status.last_reconfigure_time.is_some(),
            "lastReconfigureTime was not set"
        );
        let state = attempt!(
            await_state(provider, vm, SETTLE, |s| *s == PowerState::Running).await,
            "waiting for running after the power cycle"
        );
        ensure!(state == PowerState::Running, "after the cycle: {state}");
        let after = attempt!(provider.describe(vm).await, "describe after");
        if let Some(missing) = not_applied(&change, &after) {
            return CheckOutcome::Failed(format!("power-cycled, but {missing}"));
        }
        // Off stays off: the same kind of change to a stopped VM is applied directly.
        attempt!(
            provider.power_off(vm, &PowerOffOptions::default()).await,
            "power_off"
        );
        attempt!(
            await_state(provider, vm, SETTLE, PowerState::is_off).await,
            "waiting for off"
        );
        let back = back_to(&change, &d);
        let mut status = VirtualMachineStatus::default();
        let report = attempt!(
            orch.reconfigure(vm, &back, &opts, &mut status).await,
            "reconfigure while off"
        );
        ensure!(
            report.outcome == ReconfigureOutcome::Online,
            "a change to an off VM ended {:?}",
            report.outcome
        );
        let after = attempt!(
            provider.describe(vm).await,
            "describe after the offline change"
        );
        ensure!(
            after.power_state.is_off(),
            "an offline change left the VM {}",
            after.power_state
        );
        if let Some(missing) = not_applied(&back, &after) {
            return CheckOutcome::Failed(format!("applied while off, but {missing}"));
        }
        CheckOutcome::Passed
    })
    .await
}

/// A change that `v` says the running VM cannot take live, preferring CPU, then memory,
/// then an offline-only disk growth.
fn needs_a_power_cycle(
    provider: &Arc<dyn Provider>,
    d: &VmDescription,
    v: &VmCapabilities,
) -> Option<ResourceChange> {
    let online = provider.capabilities().reconfigure_online;
    let change = ResourceChange::default();
    if !online || !v.cpu_hot_add {
        return Some(change.cpu(d.cpu + 1));
    }
    if v.max_live_vcpus != 0 {
        return Some(change.cpu(v.max_live_vcpus + 1));
    }
    if d.cpu >= 2 {
        return Some(change.cpu(d.cpu - 1));
    }
    if !v.memory_hot_add {
        return Some(change.memory_mib(d.memory_mib + 128));
    }
    if v.max_live_memory_mib != 0 {
        return Some(change.memory_mib(v.max_live_memory_mib + 128));
    }
    d.disks.iter().find(|x| x.cannot_grow.is_none()).map(|x| {
        change.disk(DiskChange::new(
            x.name.clone(),
            x.size_gib + 1,
            ExpandPolicy::Offline,
        ))
    })
}

/// The change that returns CPU and memory changed by `change` to `before` (a disk, which
/// only grows, grows by one more GiB).
fn back_to(change: &ResourceChange, before: &VmDescription) -> ResourceChange {
    ResourceChange {
        cpu: change.cpu.map(|_| before.cpu),
        memory_mib: change.memory_mib.map(|_| before.memory_mib),
        disks: change
            .disks
            .iter()
            .map(|x| DiskChange::new(x.name.clone(), x.size_gib + 1, ExpandPolicy::Offline))
            .collect(),
    }
}

/// What of `change` `after` does not show, if anything.
fn not_applied(change: &ResourceChange, after: &VmDescription) -> Option<String> {
    if let Some(cpu) = change.cpu
        && after.cpu != cpu
    {
        return Some(format!("describe shows {} vCPUs, not {cpu}", after.cpu));
    }
    if let Some(mem) = change.memory_mib
        && after.memory_mib != mem
    {
        return Some(format!(
            "describe shows {} MiB, not {mem}",
            after.memory_mib
        ));
    }
    for x in &change.disks {
        match after.disks.iter().find(|d| d.name == x.name) {
            None => return Some(format!("disk {} is gone from describe", x.name)),
            Some(d) if d.size_gib < x.size_gib => {
                return Some(format!(
                    "disk {} is {} GiB, not {}",
                    x.name, d.size_gib, x.size_gib
                ));
            }
            Some(_) => {}
        }
    }
    None
}

const SEED_DISK_PATCH: &str = "disks:\n- name: data\n  sizeGiB: 2\n";

/// A VM created with a disk named `data` reports it under that name; the seed-shaped patch
/// `disks: [{name: data, sizeGiB: 2}]` grows it (the VM off), a shrink is refused naming
/// the disk, and where `disk_expansion_online` is declared it grows again while running.
/// A disk the provider reports as unable to grow gets an `Impossible` plan with the reason
/// and the VM is not touched.
pub async fn disk_grows_by_its_spec_name(
    provider: &Arc<dyn Provider>,
    fixture: &dyn Fixture,
) -> CheckOutcome {
    let caps = provider.capabilities();
    if !caps.reconfigure || !caps.create || !caps.delete {
        return CheckOutcome::Skipped("needs create, reconfigure and delete".into());
    }
    let mut spec = VmCreateSpec::new(format!("vrconf-disk-{}", std::process::id()), 1, 256);
    spec.disks.push(DiskCreateSpec::new("data", 1));
    let vm = attempt!(
        provider.create(&spec).await,
        "create a VM with a disk named data"
    );
    let orch = orchestrator(provider, fixture);
    let outcome = grow_data_disk(provider, &orch, &vm).await;
    if let Ok(s) = provider.power_state(&vm).await
        && s.is_active()
    {
        let _ = provider.power_off(&vm, &PowerOffOptions::default()).await;
        let _ = await_state(provider, &vm, SETTLE, PowerState::is_off).await;
    }
    let deleted = provider
        .delete(&vm, &DeleteOptions { delete_disks: true })
        .await;
    match (outcome, deleted) {
        (CheckOutcome::Passed, Err(e)) => CheckOutcome::Failed(format!("delete: {e}")),
        (outcome, _) => outcome,
    }
}

async fn grow_data_disk(
    provider: &Arc<dyn Provider>,
    orch: &Orchestrator,
    vm: &VmId,
) -> CheckOutcome {
    let caps = provider.capabilities();
    let opts = ReconfigureOptions::default();
    let d = attempt!(provider.describe(vm).await, "describe");
    let Some(data) = d.disks.iter().find(|x| x.name == "data") else {
        let names: Vec<_> = d.disks.iter().map(|x| x.name.as_str()).collect();
        return CheckOutcome::Failed(format!(
            "the spec's disk name `data` was not kept: describe lists {names:?}"
        ));
    };
    let patch: VirtualMachineSpec = attempt!(from_yaml_str(SEED_DISK_PATCH), "parse the patch");
    let change = ResourceChange::from_spec(&patch, &d);
    ensure!(
        change.disks.len() == 1,
        "the patch became {change:?} against {:?}",
        d.disks
    );
    if let Some(why) = &data.cannot_grow {
        ensure!(
            !caps.disk_expansion_online,
            "disk_expansion_online is declared but the disk cannot grow: {why}"
        );
        let plan = attempt!(orch.plan_reconfigure(vm, &change, &opts).await, "plan");
        let PlanMode::Impossible { reasons } = &plan.mode else {
            return CheckOutcome::Failed(format!(
                "a disk that cannot grow ({why}) planned {:?}",
                plan.mode
            ));
        };
        ensure!(
            reasons.iter().any(|r| r.contains(why.as_str())),
            "the plan's reasons {reasons:?} do not say why ({why})"
        );
        let after = attempt!(provider.power_state(vm).await, "power_state");
        ensure!(
            after == d.power_state,
            "an impossible plan moved the VM from {} to {after}",
            d.power_state
        );
        return CheckOutcome::Passed;
    }
    let mut status = VirtualMachineStatus::default();
    let report = attempt!(
        orch.reconfigure(vm, &change, &opts, &mut status).await,
        "grow data to 2 GiB"
    );
    ensure!(
        report.outcome == ReconfigureOutcome::Online,
        "growing the disk of an off VM ended {:?}",
        report.outcome
    );
    let after = attempt!(provider.describe(vm).await, "describe after growing");
    if let Some(missing) = not_applied(&change, &after) {
        return CheckOutcome::Failed(format!("grown, but {missing}"));
    }
    ensure!(
        after.power_state.is_off(),
        "growing the disk of an off VM left it {}",
        after.power_state
    );
    let shrink = ResourceChange::default().disk(DiskChange::new("data", 1, ExpandPolicy::Online));
    match orch.reconfigure(vm, &shrink, &opts, &mut status).await {
        Err(e) if e.is(ErrorKind::InvalidSpec) && e.to_string().contains("disks.data") => {}
        other => {
            return CheckOutcome::Failed(format!(
                "shrinking data to 1 GiB: {other:?} (want InvalidSpec naming disks.data)"
            ));
        }
    }
    if !caps.disk_expansion_online {
        return CheckOutcome::Passed;
    }
    attempt!(provider.start(vm, &StartOptions::default()).await, "start");
    attempt!(
        await_state(provider, vm, SETTLE, |s| *s == PowerState::Running).await,
        "waiting for running"
    );
    let v = attempt!(provider.vm_capabilities(vm).await, "vm_capabilities");
    ensure!(
        v.disk_grow_online,
        "disk_expansion_online is declared but this running VM cannot grow disks online"
    );
    let live = ResourceChange::default().disk(DiskChange::new("data", 3, ExpandPolicy::Online));
    let plan = attempt!(orch.plan_reconfigure(vm, &live, &opts).await, "plan online");
    ensure!(
        plan.mode == PlanMode::Online,
        "an online growth planned {:?}: {:?}",
        plan.mode,
        plan.power_cycle_reasons
    );
    let report = attempt!(
        orch.reconfigure(vm, &live, &opts, &mut status).await,
        "grow data to 3 GiB online"
    );
    ensure!(
        report.outcome == ReconfigureOutcome::Online,
        "online growth ended {:?}",
        report.outcome
    );
    let after = attempt!(
        provider.describe(vm).await,
        "describe after the online growth"
    );
    ensure!(
        after.power_state == PowerState::Running,
        "an online growth left the VM {}",
        after.power_state
    );
    if let Some(missing) = not_applied(&live, &after) {
        return CheckOutcome::Failed(format!("grown online, but {missing}"));
    }
    CheckOutcome::Passed
}
