//! The placement check: seed 003's `VMSet` placed per seed 003's `VMPlacementPolicy`
//! (`hostAntiAffinity` and `datastoreAntiAffinity`) on the provider's own inventory.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures::FutureExt;
use futures::StreamExt;

use super::sets::{converge, members, scaled_to_zero, seed_set};
use super::{CheckOutcome, Fixture};
use crate::model::{VMPlacementPolicy, VMSet, from_yaml_str};
use crate::placement::{Inventory, Placement, PlacementRequest, Solver, SolverPlacer};
use crate::provider::Provider;
use crate::shutdown::{ShutdownManager, ShutdownPolicy};
use crate::vmset::{RolloutEvent, VmSetReconciler, create_spec, placement_request, template_hash};

/// Seed 003's `VMPlacementPolicy` (hard clusters, datastores and hosts; soft folders and
/// zones; host and datastore anti-affinity).
const SEED_POLICY: &str =
    include_str!("../../../tests/fixtures/seeds/003_08_vmplacementpolicy.yaml");

/// At most this many members (the spread is shown with fewer when the inventory is smaller).
const MAX_MEMBERS: usize = 3;

/// Passes given to a set that cannot be placed before the check looks at it.
const REFUSED_PASSES: u32 = 3;

/// Seed 003's VMSet with seed 003's placement policy, reconciled with a [`SolverPlacer`] over
/// the provider's own inventory. The policy's host and datastore anti-affinity are kept; its
/// hard and soft constraints name hosts, clusters and datastores the test servers do not
/// have and are dropped. The set gets as many members as the inventory can spread (at most
/// three, found by placing them with the core solver first): each is created where its
/// `Creating` event says, and a fresh inventory shows every member on its own host and on its
/// own datastores. When the inventory has room for no more, one more replica is refused: the
/// reconciler reports a placement failure and creates nothing. Skipped where the provider
/// offers no inventory.
pub async fn vm_set_spreads_per_placement_policy(
    provider: &Arc<dyn Provider>,
    fixture: &dyn Fixture,
) -> CheckOutcome {
    let caps = provider.capabilities();
    if !caps.create || !caps.delete || !caps.list_vms {
        return CheckOutcome::Skipped("needs create, delete and list_vms".into());
    }
    if !caps.inventory {
        return CheckOutcome::Skipped("the provider offers no placement inventory".into());
    }
    let mut set = attempt!(seed_set(fixture, "spread"), "seed 003's VMSet");
    let mut policy: VMPlacementPolicy =
        attempt!(from_yaml_str(SEED_POLICY), "parse seed 003's policy");
    policy.spec.hard = None;
    policy.spec.soft = None;
    let inv = attempt!(provider.inventory().await, "inventory");
    let (fits, one_more) = predicted(&set, &inv, &policy);
    if fits == 0 {
        return CheckOutcome::Failed(format!(
            "the inventory has room for no member: {} hosts, {} datastores",
            inv.hosts.len(),
            inv.datastores.len()
        ));
    }
    let shutdown = ShutdownManager::new(Arc::clone(provider));
    let reconciler = VmSetReconciler::new(Arc::clone(provider), shutdown)
        .shutdown_policy(ShutdownPolicy::with_grace(fixture.short_grace()))
        .placer(Arc::new(SolverPlacer::new(Arc::clone(provider))))
        .placement_policy(policy.spec.clone());
    let outcome = spread(provider, &reconciler, &mut set, fits, one_more).await;
    scaled_to_zero(provider, fixture, &reconciler, &mut set, outcome).await
}

/// How many members the core solver places on `inv` (at most [`MAX_MEMBERS`]), and whether
/// it refuses the one after them.
fn predicted(set: &VMSet, inv: &Inventory, policy: &VMPlacementPolicy) -> (usize, bool) {
    let hash = template_hash(&set.spec.template);
    let mut solver = Solver::new(inv);
    let mut peers: Vec<String> = Vec::new();
    for i in 1..=MAX_MEMBERS + 1 {
        let vm = format!("{}-{i}", set.name());
        let spec = create_spec(set.name(), &vm, &set.spec.template, &hash);
        let req: PlacementRequest =
            placement_request(set.name(), &spec, &peers, Some(&policy.spec));
        if solver.place(&req).is_err() {
            return (i - 1, true);
        }
        if i > MAX_MEMBERS {
            break;
        }
        peers.push(vm);
    }
    (MAX_MEMBERS, false)
}

async fn spread(
    provider: &Arc<dyn Provider>,
    reconciler: &VmSetReconciler,
    set: &mut VMSet,
    fits: usize,
    one_more: bool,
) -> CheckOutcome {
    let mut events = Box::pin(reconciler.events());
    let replicas = i32::try_from(fits).unwrap_or(i32::MAX);
    set.spec.replicas = Some(replicas);
    attempt!(
        converge(reconciler, set).await,
        format!("scale to {replicas} with the policy")
    );
    let mut placed: BTreeMap<String, Placement> = BTreeMap::new();
    while let Some(Some(e)) = events.next().now_or_never() {
        if let RolloutEvent::Creating { vm, placement, .. } = e {
            placed.insert(vm, placement);
        }
    }
    let found = attempt!(members(provider, set).await, "list_vms");
    ensure!(
        found.len() == fits,
        "{} members listed, not {fits}",
        found.len()
    );
    let inv = attempt!(provider.inventory().await, "inventory after placing");
    let mut hosts_used = BTreeSet::new();
    let mut stores_used = BTreeSet::new();
    for m in &found {
        let Some(want) = placed.get(&m.name) else {
            return CheckOutcome::Failed(format!(
                "{} was created without a Creating event",
                m.name
            ));
        };
        let on: Vec<&str> = inv
            .hosts
            .iter()
            .filter(|h| h.vms.contains(&m.name))
            .map(|h| h.name.as_str())
            .collect();
        ensure!(
            on == [want.host.as_deref().unwrap_or("?")],
            "{} was placed on host {:?}, the inventory shows it on {on:?}",
            m.name,
            want.host
        );
        ensure!(
            hosts_used.insert(on[0].to_owned()),
            "two members on host {}",
            on[0]
        );
        let stores: Vec<&str> = inv
            .datastores
            .iter()
            .filter(|d| d.vms.contains(&m.name))
            .map(|d| d.name.as_str())
            .collect();
        if let Some(ds) = &want.datastore {
            ensure!(
                stores.contains(&ds.as_str()),
                "{} was placed on datastore {ds}, the inventory shows it on {stores:?}",
                m.name
            );
        }
        for s in stores {
            ensure!(
                stores_used.insert(s.to_owned()),
                "two members on datastore {s}"
            );
        }
    }
    if !one_more {
        return CheckOutcome::Passed;
    }
    set.spec.replicas = Some(replicas + 1);
    let mut refused = None;
    for _ in 0..REFUSED_PASSES {
        let _ = reconciler.reconcile(set).await;
        while let Some(Some(e)) = events.next().now_or_never() {
            match e {
                RolloutEvent::PlacementFailed { reason, .. } => refused = Some(reason),
                RolloutEvent::Creating { vm, placement, .. } => {
                    return CheckOutcome::Failed(format!(
                        "{vm} was created at {placement} against the policy"
                    ));
                }
                _ => {}
            }
        }
    }
    let found = attempt!(members(provider, set).await, "list_vms");
    ensure!(
        found.len() == fits,
        "{} members after asking for one more than fits, not {fits}",
        found.len()
    );
    ensure!(
        refused.is_some(),
        "no PlacementFailed event for the extra member"
    );
    CheckOutcome::Passed
}
