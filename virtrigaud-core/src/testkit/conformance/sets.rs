//! The VM-set check: seed 003's own `VMSet`, scaled and rolled on the provider itself.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{CheckOutcome, Fixture};
use crate::model::{VMSet, VirtualMachineSpec, from_yaml_str};
use crate::provider::{ListOptions, Provider};
use crate::shutdown::{ShutdownManager, ShutdownPolicy};
use crate::vm::{PowerState, VmDescription};
use crate::vmset::{SET_LABEL, TEMPLATE_HASH_LABEL, VmSetReconciler, template_hash};

/// Seed 003's `VMSet` (3 replicas, rolling update with `maxUnavailable: 1`, `maxSurge: 1`).
const SEED_SET: &str = include_str!("../../../tests/fixtures/seeds/003_07_vmset.yaml");

/// The members' size: the smallest VM every test server makes.
const MEMBER_SIZE: &str =
    "resources:\n  cpu: 1\n  memoryMiB: 128\ndisks:\n- name: root\n  sizeGiB: 1\n";

/// How long one phase (a scale or the roll) may take.
const PHASE_LIMIT: Duration = Duration::from_secs(240);

/// Between reconcile passes.
const TICK: Duration = Duration::from_millis(200);

/// The seed's VMSet, reconciled by [`VmSetReconciler`] on the provider: it scales 3 → 5 → 2,
/// each time converging to exactly that many members, named once each, labelled with the set
/// and the template hash (read back through `list_vms` filtered on the set label) and running;
/// then a template change rolls it, never listing more than `replicas + maxSurge` members nor
/// fewer than `replicas - maxUnavailable` running, until every member is on the new template.
/// The seed's `providerRef`, `classRef` and `imageRef` name objects the test servers do not
/// have and are dropped; members are 1 vCPU, 128 MiB and a 1 GiB disk `root`, and the
/// fixture may adapt the template ([`Fixture::adapt_set_template`]). Removed members are
/// stopped through the shutdown engine with the fixture's short grace.
pub async fn vm_set_scales_and_rolls(
    provider: &Arc<dyn Provider>,
    fixture: &dyn Fixture,
) -> CheckOutcome {
    let caps = provider.capabilities();
    if !caps.create || !caps.delete || !caps.list_vms {
        return CheckOutcome::Skipped("needs create, delete and list_vms".into());
    }
    let mut set = attempt!(seed_set(fixture, "set"), "seed 003's VMSet");
    let shutdown = ShutdownManager::new(Arc::clone(provider));
    let reconciler = VmSetReconciler::new(Arc::clone(provider), shutdown)
        .shutdown_policy(ShutdownPolicy::with_grace(fixture.short_grace()));
    let outcome = scale_and_roll(provider, &reconciler, &mut set).await;
    scaled_to_zero(provider, fixture, &reconciler, &mut set, outcome).await
}

/// Scales `set` to 0 with `reconciler` and removes whatever is left through the fixture; a
/// passed `outcome` fails when the set did not empty.
pub(super) async fn scaled_to_zero(
    provider: &Arc<dyn Provider>,
    fixture: &dyn Fixture,
    reconciler: &VmSetReconciler,
    set: &mut VMSet,
    outcome: CheckOutcome,
) -> CheckOutcome {
    set.spec.replicas = Some(0);
    let emptied = converge(reconciler, set).await;
    let left = members(provider, set).await.unwrap_or_default();
    for vm in &left {
        fixture.cleanup(&vm.id).await;
    }
    match (outcome, emptied) {
        (CheckOutcome::Passed, Err(e)) => CheckOutcome::Failed(format!("scale to 0: {e}")),
        (CheckOutcome::Passed, Ok(())) if !left.is_empty() => {
            CheckOutcome::Failed(format!("{} members left after scaling to 0", left.len()))
        }
        (outcome, _) => outcome,
    }
}

async fn scale_and_roll(
    provider: &Arc<dyn Provider>,
    reconciler: &VmSetReconciler,
    set: &mut VMSet,
) -> CheckOutcome {
    for replicas in [3, 5, 2] {
        set.spec.replicas = Some(replicas);
        attempt!(
            converge(reconciler, set).await,
            format!("scale to {replicas}")
        );
        let found = attempt!(members(provider, set).await, "list_vms");
        if let Some(problem) = settled(set, &found, replicas) {
            return CheckOutcome::Failed(format!("after scaling to {replicas}: {problem}"));
        }
    }
    set.spec
        .template
        .metadata
        .labels
        .insert("version".into(), "v2".into());
    let replicas = 2;
    let until = Instant::now() + PHASE_LIMIT;
    loop {
        let pass = reconciler.reconcile(set).await;
        let found = attempt!(members(provider, set).await, "list_vms");
        let running = found.iter().filter(|v| v.power_state.is_active()).count();
        ensure!(
            found.len() <= 3,
            "the roll listed {} members, above replicas 2 + maxSurge 1",
            found.len()
        );
        ensure!(
            running >= 1,
            "the roll left {running} members running, below replicas 2 - maxUnavailable 1"
        );
        if matches!(&pass, Ok(s) if s.converged) {
            return match settled(set, &found, replicas) {
                Some(problem) => CheckOutcome::Failed(format!("after the roll: {problem}")),
                None => CheckOutcome::Passed,
            };
        }
        if Instant::now() > until {
            return CheckOutcome::Failed(format!(
                "the roll did not converge in {PHASE_LIMIT:?}: last pass {pass:?}"
            ));
        }
        tokio::time::sleep(TICK).await;
    }
}

/// Seed 003's VMSet named `vrconf-<kind>-<pid>`, its template without the references the
/// test servers cannot resolve, members sized [`MEMBER_SIZE`], adapted by the fixture.
pub(super) fn seed_set(fixture: &dyn Fixture, kind: &str) -> crate::Result<VMSet> {
    let mut set: VMSet = from_yaml_str(SEED_SET)?;
    set.metadata.name = format!("vrconf-{kind}-{}", std::process::id());
    let size: VirtualMachineSpec = from_yaml_str(MEMBER_SIZE)?;
    let template = &mut set.spec.template.spec;
    template.provider_ref = None;
    template.class_ref = None;
    template.image_ref = None;
    template.resources = size.resources;
    template.disks = size.disks;
    fixture.adapt_set_template(&mut set.spec.template);
    Ok(set)
}

/// Reconciles until converged, within [`PHASE_LIMIT`].
pub(super) async fn converge(reconciler: &VmSetReconciler, set: &VMSet) -> crate::Result<()> {
    let passes = u32::try_from(PHASE_LIMIT.as_millis() / TICK.as_millis()).unwrap_or(u32::MAX);
    let until = Instant::now() + PHASE_LIMIT;
    tokio::time::timeout_at(until, reconciler.run_until_converged(set, TICK, passes))
        .await
        .map_err(|_| crate::Error::timeout(format!("not converged in {PHASE_LIMIT:?}")))?
        .map(|_| ())
}

/// The set's members, as `list_vms` filtered on the set label finds them.
pub(super) async fn members(
    provider: &Arc<dyn Provider>,
    set: &VMSet,
) -> crate::Result<Vec<VmDescription>> {
    let mut opts = ListOptions::default();
    opts.labels.insert(SET_LABEL.into(), set.name().to_owned());
    provider.list_vms(&opts).await
}

/// What is wrong with `found` as a converged set of `replicas` members, if anything.
pub(super) fn settled(set: &VMSet, found: &[VmDescription], replicas: i32) -> Option<String> {
    let want = usize::try_from(replicas).unwrap_or(0);
    if found.len() != want {
        let names: Vec<&str> = found.iter().map(|v| v.name.as_str()).collect();
        return Some(format!(
            "{} members listed, not {want}: {names:?}",
            found.len()
        ));
    }
    let names: BTreeSet<&str> = found.iter().map(|v| v.name.as_str()).collect();
    if names.len() != found.len() {
        return Some(format!("a member name appears twice: {names:?}"));
    }
    let hash = template_hash(&set.spec.template);
    for v in found {
        if v.labels.get(TEMPLATE_HASH_LABEL) != Some(&hash) {
            return Some(format!(
                "{} is labelled {:?}, not the template hash {hash}",
                v.name,
                v.labels.get(TEMPLATE_HASH_LABEL)
            ));
        }
        for (k, val) in &set.spec.template.metadata.labels {
            if v.labels.get(k) != Some(val) {
                return Some(format!("{} lost the template's label {k}={val}", v.name));
            }
        }
        if v.power_state != PowerState::Running {
            return Some(format!("{} is {}, not running", v.name, v.power_state));
        }
    }
    None
}
