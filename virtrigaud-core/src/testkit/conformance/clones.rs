//! Clones through the [`crate::orchestration::Orchestrator`]: full and linked, with
//! customization read back from the platform, and a half-made clone leaving nothing.

use std::sync::Arc;

use super::{CheckOutcome, Fixture, SETTLE, await_state, orchestrator};
use crate::error::ErrorKind;
use crate::model::{
    CloneCustomization, CloneNetwork, ClonePhase, CloneTarget, CloudInit, ObjectRef, UserData,
    VMClone, VMCloneSpec,
};
use crate::provider::{DeleteOptions, ListOptions, PowerOffOptions, Provider};
use crate::vm::{PowerState, VmId};

/// What the customization check asks for and expects to read back.
const HOSTNAME: &str = "vrconf-host";
const ADDRESS: &str = "192.0.2.10/24";
const GATEWAY: &str = "192.0.2.1";
const DNS: &str = "192.0.2.53";
const USER_DATA: &str = "#cloud-config\nruncmd:\n  - [echo, vrconf-user-data]\n";

fn clone_object(target: &str, source: &VmId, linked: bool) -> VMClone {
    let spec = VMCloneSpec {
        source_ref: ObjectRef::new(source.as_str()),
        target: CloneTarget {
            name: target.to_owned(),
            ..Default::default()
        },
        linked: Some(linked),
        power_on: Some(false),
        ..Default::default()
    };
    VMClone::new(target, spec)
}

fn customization(user_data: bool) -> CloneCustomization {
    let net = CloneNetwork {
        name: "primary".into(),
        ip_address: Some(ADDRESS.into()),
        gateway: Some(GATEWAY.into()),
        dns: vec![DNS.into()],
    };
    CloneCustomization {
        hostname: Some(HOSTNAME.into()),
        networks: vec![net],
        user_data: user_data.then(|| UserData {
            cloud_init: Some(CloudInit {
                inline: Some(USER_DATA.into()),
                ..Default::default()
            }),
        }),
    }
}

/// Snapshot ids of `vm` (empty without snapshots), sorted.
async fn snapshot_ids(provider: &Arc<dyn Provider>, vm: &VmId) -> crate::Result<Vec<String>> {
    let Some(s) = provider.snapshotter() else {
        return Ok(vec![]);
    };
    let mut ids: Vec<String> = s
        .list_snapshots(vm)
        .await?
        .into_iter()
        .map(|x| x.id)
        .collect();
    ids.sort();
    Ok(ids)
}

/// The VM named `name`, if one exists.
async fn named(provider: &Arc<dyn Provider>, name: &str) -> crate::Result<Option<VmId>> {
    Ok(provider
        .list_vms(&ListOptions::default())
        .await?
        .into_iter()
        .find(|d| d.name == name)
        .map(|d| d.id))
}

/// Powers `vm` off if it runs.
async fn stopped(provider: &Arc<dyn Provider>, vm: &VmId) -> crate::Result<()> {
    if provider.power_state(vm).await?.is_active() {
        provider.power_off(vm, &PowerOffOptions::default()).await?;
        await_state(provider, vm, SETTLE, PowerState::is_off).await?;
    }
    Ok(())
}

/// Deletes a clone and checks that it is gone.
async fn delete_clone(provider: &Arc<dyn Provider>, vm: &VmId) -> Result<(), String> {
    stopped(provider, vm)
        .await
        .map_err(|e| format!("stopping the clone: {e}"))?;
    provider
        .delete(vm, &DeleteOptions { delete_disks: true })
        .await
        .map_err(|e| format!("deleting the clone: {e}"))?;
    match provider.power_state(vm).await {
        Err(e) if e.is(ErrorKind::NotFound) => Ok(()),
        other => Err(format!("the deleted clone still answers: {other:?}")),
    }
}

/// Every declared kind of clone (full, linked) is made through the orchestrator, reaches
/// `Ready`, describes under its name, is deleted cleanly, and leaves the source's
/// snapshots as they were. An undeclared kind is refused with `Unsupported`, making
/// nothing.
pub async fn full_and_linked_clones(
    provider: &Arc<dyn Provider>,
    fixture: &dyn Fixture,
) -> CheckOutcome {
    let caps = provider.capabilities();
    if !caps.clones() {
        return CheckOutcome::Skipped("clones are declared false".into());
    }
    for (linked, declared) in [(false, caps.full_clones), (true, caps.linked_clones)] {
        let kind = if linked { "linked" } else { "full" };
        let source = attempt!(fixture.clone_source(linked).await, "fixture.clone_source");
        let outcome = one_clone(provider, fixture, &source, linked, declared).await;
        fixture.cleanup(&source).await;
        if let CheckOutcome::Failed(why) = outcome {
            return CheckOutcome::Failed(format!("{kind} clone: {why}"));
        }
    }
    CheckOutcome::Passed
}

async fn one_clone(
    provider: &Arc<dyn Provider>,
    fixture: &dyn Fixture,
    source: &VmId,
    linked: bool,
    declared: bool,
) -> CheckOutcome {
    let orch = orchestrator(provider, fixture);
    attempt!(stopped(provider, source).await, "stopping the source");
    let before = attempt!(snapshot_ids(provider, source).await, "source snapshots");
    let target = format!(
        "vrconf-{}-{}",
        if linked { "linked" } else { "full" },
        std::process::id()
    );
    let mut obj = clone_object(&target, source, linked);
    let res = orch.clone_vm(source, &mut obj, None).await;
    if !declared {
        ensure!(
            matches!(&res, Err(e) if e.is(ErrorKind::Unsupported)),
            "undeclared, but the clone gave {:?}",
            res.as_ref().map(|r| r.result.vm.clone())
        );
        let left = attempt!(named(provider, &target).await, "list_vms");
        ensure!(left.is_none(), "a refused clone left {left:?}");
        return CheckOutcome::Passed;
    }
    let report = attempt!(res, "clone_vm");
    let phase = obj.status.as_ref().and_then(|s| s.phase);
    let outcome = async {
        ensure!(phase == Some(ClonePhase::Ready), "phase {phase:?}");
        ensure!(
            report.result.linked == linked,
            "asked linked={linked}, got linked={}",
            report.result.linked
        );
        let d = attempt!(provider.describe(&report.result.vm).await, "describe clone");
        ensure!(
            d.name == target,
            "the clone is named {}, not {target}",
            d.name
        );
        CheckOutcome::Passed
    }
    .await;
    if let Err(why) = delete_clone(provider, &report.result.vm).await {
        return CheckOutcome::Failed(why);
    }
    if outcome != CheckOutcome::Passed {
        return outcome;
    }
    let after = attempt!(snapshot_ids(provider, source).await, "source snapshots");
    ensure!(
        after == before,
        "the source's snapshots changed from {before:?} to {after:?}"
    );
    CheckOutcome::Passed
}

/// A clone with hostname, a static network and (where `clone_user_data` is declared)
/// cloud-init user data carries them, as read back from the platform's own record by the
/// fixture. Undeclared customization is refused with `Unsupported`, making nothing.
pub async fn clone_customization_is_applied(
    provider: &Arc<dyn Provider>,
    fixture: &dyn Fixture,
) -> CheckOutcome {
    let caps = provider.capabilities();
    if !caps.clones() {
        return CheckOutcome::Skipped("clones are declared false".into());
    }
    let linked = !caps.full_clones;
    let source = attempt!(fixture.clone_source(linked).await, "fixture.clone_source");
    let outcome = customize(provider, fixture, &source, linked).await;
    fixture.cleanup(&source).await;
    outcome
}

async fn customize(
    provider: &Arc<dyn Provider>,
    fixture: &dyn Fixture,
    source: &VmId,
    linked: bool,
) -> CheckOutcome {
    let caps = provider.capabilities();
    let orch = orchestrator(provider, fixture);
    attempt!(stopped(provider, source).await, "stopping the source");
    let target = format!("vrconf-custom-{}", std::process::id());
    // What is not declared is refused before anything is made.
    let refusals = [
        (!caps.clone_customization, customization(false)),
        (!caps.clone_user_data, customization(true)),
    ];
    for (undeclared, c) in refusals {
        if !undeclared {
            continue;
        }
        let mut obj = clone_object(&target, source, linked);
        obj.spec.customization = Some(c);
        let res = orch.clone_vm(source, &mut obj, None).await;
        ensure!(
            matches!(&res, Err(e) if e.is(ErrorKind::Unsupported)),
            "undeclared customization gave {:?}",
            res.as_ref().map(|r| r.result.vm.clone())
        );
        let left = attempt!(named(provider, &target).await, "list_vms");
        ensure!(left.is_none(), "a refused clone left {left:?}");
    }
    if !caps.clone_customization {
        return CheckOutcome::Passed;
    }
    let mut obj = clone_object(&target, source, linked);
    obj.spec.customization = Some(customization(caps.clone_user_data));
    let report = attempt!(orch.clone_vm(source, &mut obj, None).await, "clone_vm");
    let vm = report.result.vm.clone();
    let outcome = async {
        ensure!(
            report.result.customized,
            "the clone reports customized=false"
        );
        let Some(seen) = attempt!(
            fixture.applied_customization(&vm).await,
            "fixture.applied_customization"
        ) else {
            return CheckOutcome::Failed(
                "clone_customization is declared but the fixture cannot read it back".into(),
            );
        };
        ensure!(
            seen.hostname.as_deref() == Some(HOSTNAME),
            "hostname reads back as {:?}",
            seen.hostname
        );
        let ip = ADDRESS.split('/').next().unwrap_or(ADDRESS);
        ensure!(
            seen.networks.iter().any(|n| {
                n.ip_address.as_deref().is_some_and(|a| a.contains(ip))
                    && n.gateway.as_deref() == Some(GATEWAY)
                    && n.dns.iter().any(|d| d == DNS)
            }),
            "no network reads back as {ADDRESS} via {GATEWAY} with DNS {DNS}: {:?}",
            seen.networks
        );
        if caps.clone_user_data {
            ensure!(
                seen.cloud_init_user_data
                    .as_deref()
                    .is_some_and(|u| u.contains("vrconf-user-data")),
                "the user data does not read back"
            );
        }
        CheckOutcome::Passed
    }
    .await;
    if let Err(why) = delete_clone(provider, &vm).await {
        return CheckOutcome::Failed(why);
    }
    outcome
}

/// A clone that fails after the copy began (a fault the fixture arranges) returns an
/// error and leaves nothing: no VM of the target name, and the source's snapshots as they
/// were.
pub async fn failed_clone_leaves_nothing(
    provider: &Arc<dyn Provider>,
    fixture: &dyn Fixture,
) -> CheckOutcome {
    let caps = provider.capabilities();
    let Some(cloner) = provider.cloner().filter(|_| caps.clones()) else {
        return CheckOutcome::Skipped("clones are declared false".into());
    };
    let linked = !caps.full_clones;
    let source = attempt!(fixture.clone_source(linked).await, "fixture.clone_source");
    let outcome = async {
        attempt!(stopped(provider, &source).await, "stopping the source");
        let before = attempt!(snapshot_ids(provider, &source).await, "source snapshots");
        let Some(opts) = attempt!(
            fixture.arrange_clone_failure(&source).await,
            "fixture.arrange_clone_failure"
        ) else {
            return CheckOutcome::Skipped(
                "the backend cannot be made to fail a clone half-way".into(),
            );
        };
        let res = cloner.clone_vm(&source, &opts).await;
        if let Ok(r) = &res {
            let _ = delete_clone(provider, &r.vm).await;
            return CheckOutcome::Failed("the arranged failure did not fail the clone".into());
        }
        let left = attempt!(named(provider, &opts.target_name).await, "list_vms");
        ensure!(left.is_none(), "the failed clone left {left:?}");
        let after = attempt!(snapshot_ids(provider, &source).await, "source snapshots");
        ensure!(
            after == before,
            "the failed clone changed the source's snapshots from {before:?} to {after:?}"
        );
        attempt!(provider.describe(&source).await, "describe the source");
        CheckOutcome::Passed
    }
    .await;
    fixture.cleanup(&source).await;
    outcome
}
