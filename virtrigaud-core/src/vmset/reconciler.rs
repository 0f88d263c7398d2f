//! [`VmSetReconciler`]: one level-triggered pass at a time, all state read from the VMs.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::Stream;
use tokio::sync::broadcast;

use super::events::{RemovalReason, RolloutEvent};
use super::images::{ImageResolver, member_image};
use super::plan::{Bounds, Member, Readiness, plan};
use super::probe::{Health, HealthProbe};
use super::status::SetStatus;
use super::template::{create_spec, expects_running, placement_request, template_hash};
use super::{SET_LABEL, TEMPLATE_HASH_LABEL};
use crate::error::{Error, ErrorKind, Result};
use crate::model::{UpdateStrategyType, VMPlacementPolicySpec, VMSet};
use crate::placement::{HostAntiAffinity, Placement, Placer};
use crate::provider::{DeleteOptions, ListOptions, Provider, StartOptions, VmCreateSpec};
use crate::shutdown::{ShutdownManager, ShutdownPolicy};
use crate::vm::{PowerState, VmDescription};

/// Names tried per new member when a name is taken by a VM outside the set.
const NAME_ATTEMPTS: u32 = 3;

/// Reconciles `VMSet`s against one provider.
///
/// Each [`VmSetReconciler::reconcile`] call is one pass: list the set's VMs by the label
/// `virtrigaud.io/set=<name>`, read their template hash (`virtrigaud.io/template-hash`) and
/// readiness (power on, then the optional [`HealthProbe`]), [`plan`] and act. Nothing is kept
/// between passes except which events were already announced, so a new reconciler over the
/// same provider (after a restart of the embedding process) continues where the old one
/// stopped. Members are removed by a graceful stop through the [`ShutdownManager`], then
/// deleted.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap().block_on(async {
/// use std::{sync::Arc, time::Duration};
/// use virtrigaud_core::model::{VMSet, VMSetSpec};
/// use virtrigaud_core::shutdown::ShutdownManager;
/// use virtrigaud_core::sim::Simulator;
/// use virtrigaud_core::vmset::VmSetReconciler;
/// use virtrigaud_core::Provider;
///
/// let provider: Arc<dyn Provider> = Arc::new(Simulator::new());
/// let mut spec = VMSetSpec::default();
/// spec.replicas = Some(3);
/// let set = VMSet::new("web", spec);
/// let reconciler = VmSetReconciler::new(provider.clone(), ShutdownManager::new(provider.clone()));
/// let status = reconciler.run_until_converged(&set, Duration::from_secs(1), 10).await?;
/// assert_eq!(status.available, 3);
/// # Ok::<(), virtrigaud_core::Error>(()) }).unwrap();
/// ```
pub struct VmSetReconciler {
    provider: Arc<dyn Provider>,
    shutdown: Arc<ShutdownManager>,
    placer: Option<Arc<dyn Placer>>,
    probe: Option<Arc<dyn HealthProbe>>,
    policy: Option<VMPlacementPolicySpec>,
    images: Option<Arc<dyn ImageResolver>>,
    shutdown_policy: Option<ShutdownPolicy>,
    events: broadcast::Sender<RolloutEvent>,
    announced: Mutex<BTreeMap<String, Announced>>,
}

/// Which state changes were already announced (for event de-duplication only).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Announced {
    paused: bool,
    converged_hash: Option<String>,
}

impl fmt::Debug for VmSetReconciler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VmSetReconciler")
            .field("provider", &self.provider.provider_type())
            .field("placer", &self.placer.is_some())
            .field("probe", &self.probe.is_some())
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl VmSetReconciler {
    /// A reconciler over `provider`, stopping VMs through `shutdown`. Without a placer, VMs
    /// are created without a placement (the provider decides).
    pub fn new(provider: Arc<dyn Provider>, shutdown: impl Into<Arc<ShutdownManager>>) -> Self {
        let (events, _) = broadcast::channel(1024);
        VmSetReconciler {
            provider,
            shutdown: shutdown.into(),
            placer: None,
            probe: None,
            policy: None,
            images: None,
            shutdown_policy: None,
            events,
            announced: Mutex::new(BTreeMap::new()),
        }
    }

    /// Places new VMs with `placer` (for example a [`crate::placement::SolverPlacer`]).
    pub fn placer(mut self, placer: Arc<dyn Placer>) -> Self {
        self.placer = Some(placer);
        self
    }

    /// Checks running VMs with `probe` before counting them available.
    pub fn probe(mut self, probe: Arc<dyn HealthProbe>) -> Self {
        self.probe = Some(probe);
        self
    }

    /// Places new VMs under `policy` (the `VMPlacementPolicy` named by the template's
    /// `placementRef`, resolved by the embedder); the set is the anti-affinity group.
    pub fn placement_policy(mut self, policy: VMPlacementPolicySpec) -> Self {
        self.policy = Some(policy);
        self
    }

    /// Makes members from the prepared `VMImage` the template's `imageRef` names, found by
    /// `images`: the member's create spec carries that image's stored reference on this
    /// provider ([`super::member_image`]). Without a resolver, a template with an `imageRef`
    /// creates nothing and reports why: the name alone is no image.
    pub fn images(mut self, images: Arc<dyn ImageResolver>) -> Self {
        self.images = Some(images);
        self
    }

    /// Stops members with `policy` (default: the template's graceful-shutdown timeout).
    pub fn shutdown_policy(mut self, policy: ShutdownPolicy) -> Self {
        self.shutdown_policy = Some(policy);
        self
    }

    /// Subscribes to rollout events (a slow subscriber lags and loses the oldest).
    pub fn subscribe(&self) -> broadcast::Receiver<RolloutEvent> {
        self.events.subscribe()
    }

    /// Rollout events as a stream (lagged events are skipped).
    pub fn events(&self) -> impl Stream<Item = RolloutEvent> + Send + 'static {
        let rx = self.events.subscribe();
        futures::stream::unfold(rx, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(e) => return Some((e, rx)),
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
    }

    fn emit(&self, e: RolloutEvent) {
        tracing::debug!(event = ?e, "vmset");
        let _ = self.events.send(e);
    }

    fn announced(&self, set: &str, f: impl FnOnce(&mut Announced) -> bool) -> bool {
        let mut map = self.announced.lock().unwrap_or_else(|p| p.into_inner());
        f(map.entry(set.to_owned()).or_default())
    }

    /// Runs passes every `interval` until the set has converged, at most `max_passes`.
    /// A pass that fails, or that could not observe the members, is retried after `interval`.
    pub async fn run_until_converged(
        &self,
        set: &VMSet,
        interval: Duration,
        max_passes: u32,
    ) -> Result<SetStatus> {
        let mut last = None;
        for _ in 0..max_passes {
            match self.reconcile(set).await {
                Ok(s) if s.converged => return Ok(s),
                Ok(s) => last = Some(s),
                Err(_) => {}
            }
            tokio::time::sleep(interval).await;
        }
        let why = last.map_or_else(
            || "every pass failed".to_owned(),
            |s| match (s.unobserved, s.paused) {
                (Some(why), _) => format!("members unobserved: {why}"),
                (None, Some((vm, r))) => format!("paused: {vm}: {r}"),
                (None, None) => format!(
                    "{}/{} updated, {} available",
                    s.updated, s.replicas, s.available
                ),
            },
        );
        Err(
            Error::timeout(format!("not converged after {max_passes} passes ({why})"))
                .with_operation("reconcile")
                .with_resource(set.name().to_owned()),
        )
    }

    /// One pass: observe, plan, act. Returns what was observed and done.
    ///
    /// When the members cannot be observed (the listing fails, or a provider refuses it as
    /// partial because a node is offline), the pass does nothing and returns a status whose
    /// [`SetStatus::unobserved`] says why: the set is paused with a condition, never acted on
    /// from a listing that may miss members.
    ///
    /// Without an explicit [`VmSetReconciler::shutdown_policy`], members are stopped with
    /// the template's `lifecycle.gracefulShutdownTimeout`; when that is above
    /// [`crate::model::MAX_DURATION`] (a set that skipped validation) the pass does nothing
    /// and fails with `InvalidSpec` naming
    /// `spec.template.spec.lifecycle.gracefulShutdownTimeout`.
    pub async fn reconcile(&self, set: &VMSet) -> Result<SetStatus> {
        let name = set.name().to_owned();
        let template = &set.spec.template;
        let policy = match &self.shutdown_policy {
            Some(p) => p.clone(),
            None => match template
                .spec
                .checked_graceful_shutdown_timeout("spec.template.spec")
            {
                Ok(grace) => ShutdownPolicy::with_grace(grace),
                Err(errors) => {
                    let e = Error::from(errors)
                        .with_operation("reconcile")
                        .with_resource(name.clone());
                    self.emit(RolloutEvent::PassFailed {
                        set: name,
                        error: e.to_string(),
                    });
                    return Err(e);
                }
            },
        };
        let hash = template_hash(template);
        let replicas = set.spec.replicas();
        let strategy = set.spec.update_strategy.clone().unwrap_or_default();
        let (max_unavailable, max_surge) = strategy
            .rolling_update
            .clone()
            .unwrap_or_default()
            .resolve(replicas);
        let bounds = Bounds {
            replicas,
            max_unavailable,
            max_surge,
            recreate: strategy.type_ == UpdateStrategyType::Recreate,
        };
        let members = match self.observe(&name, &hash, expects_running(template)).await {
            Ok(m) => m,
            Err(e) => {
                // Acting on a failed or partial listing could create a member twice, or
                // remove the wrong one: the pass does nothing and says why.
                let why = crate::error::error_chain(&e);
                self.emit(RolloutEvent::PassFailed {
                    set: name,
                    error: why.clone(),
                });
                return Ok(SetStatus {
                    replicas,
                    template_hash: hash,
                    unobserved: Some(why),
                    ..SetStatus::default()
                });
            }
        };
        let updated = count(members.iter().filter(|m| m.current));
        let available = count(members.iter().filter(|m| m.is_available()));
        self.emit(RolloutEvent::Observed {
            set: name.clone(),
            template_hash: hash.clone(),
            replicas,
            existing: count(members.iter()),
            updated,
            available,
        });
        let p = plan(&members, bounds);
        let mut status = SetStatus {
            replicas,
            existing: count(members.iter()),
            updated,
            available,
            template_hash: hash.clone(),
            paused: p.paused.clone(),
            ..SetStatus::default()
        };
        if let Some((vm, reason)) = &p.paused {
            if self.announced(&name, |a| !std::mem::replace(&mut a.paused, true)) {
                self.emit(RolloutEvent::Paused {
                    set: name.clone(),
                    vm: vm.clone(),
                    reason: reason.clone(),
                });
            }
            return Ok(status);
        }
        if self.announced(&name, |a| std::mem::replace(&mut a.paused, false)) {
            self.emit(RolloutEvent::Resumed { set: name.clone() });
        }
        status.converged = p.is_idle()
            && updated == replicas
            && available == replicas
            && status.existing == replicas;
        if status.converged {
            if self.announced(&name, |a| {
                a.converged_hash.replace(hash.clone()) != Some(hash.clone())
            }) {
                self.emit(RolloutEvent::Converged {
                    set: name,
                    template_hash: hash,
                });
            }
            return Ok(status);
        }
        self.announced(&name, |a| a.converged_hash.take().is_some());

        for m in &p.start {
            self.emit(RolloutEvent::Starting {
                set: name.clone(),
                vm: m.name.clone(),
            });
            status.actions += 1;
            if let Err(e) = self.provider.start(&m.id, &StartOptions::default()).await
                && e.kind() != ErrorKind::InvalidState
            {
                status.errors.push(e.to_string());
            }
        }
        // A removal that failed leaves its VM in existence: create that many fewer.
        let failed = self
            .remove_all(&name, &p.remove_unavailable, &policy, &mut status)
            .await;
        let create = p.create.saturating_sub(failed);
        if create > 0 {
            let removed: BTreeSet<&str> = p
                .remove_unavailable
                .iter()
                .map(|m| m.name.as_str())
                .collect();
            let taken: BTreeSet<String> = members.iter().map(|m| m.name.clone()).collect();
            let peers: Vec<String> = members
                .iter()
                .filter(|m| !removed.contains(m.name.as_str()))
                .map(|m| m.name.clone())
                .collect();
            self.create_n(set, &hash, create, taken, peers, &mut status)
                .await;
        }
        self.remove_all(&name, &p.remove_available, &policy, &mut status)
            .await;
        Ok(status)
    }

    async fn observe(&self, set: &str, hash: &str, running: bool) -> Result<Vec<Member>> {
        let mut opts = ListOptions::default();
        opts.labels.insert(SET_LABEL.to_owned(), set.to_owned());
        let vms = self.provider.list_vms(&opts).await?;
        let checks = vms.iter().map(|vm| self.readiness(vm, running));
        let readiness = futures::future::join_all(checks).await;
        let prefix = format!("{set}-");
        Ok(vms
            .into_iter()
            .zip(readiness)
            .map(|(vm, readiness)| {
                let template_hash = vm
                    .labels
                    .get(TEMPLATE_HASH_LABEL)
                    .cloned()
                    .unwrap_or_default();
                Member {
                    index: vm.name.strip_prefix(&prefix).and_then(|n| n.parse().ok()),
                    current: template_hash == hash,
                    template_hash,
                    host: vm.host.clone(),
                    name: vm.name,
                    id: vm.id,
                    readiness,
                }
            })
            .collect())
    }

    async fn readiness(&self, vm: &VmDescription, running: bool) -> Readiness {
        if !running {
            return Readiness::Ready;
        }
        match vm.power_state {
            PowerState::Running => match &self.probe {
                None => Readiness::Ready,
                Some(p) => match p.check(vm).await {
                    Health::Ready => Readiness::Ready,
                    Health::NotReady(why) => Readiness::NotReady(why),
                    Health::Failed(why) => Readiness::Failed(why),
                },
            },
            PowerState::Off(_) => Readiness::Off,
            other => Readiness::Transitioning(other),
        }
    }

    /// Removes `members` concurrently; returns how many removals failed.
    async fn remove_all(
        &self,
        set: &str,
        members: &[Member],
        policy: &ShutdownPolicy,
        status: &mut SetStatus,
    ) -> u32 {
        let jobs = members.iter().map(|m| self.remove(set, m, policy.clone()));
        let mut failed = 0;
        for r in futures::future::join_all(jobs).await {
            status.actions += 1;
            if let Err(e) = r {
                status.errors.push(e);
                failed += 1;
            }
        }
        failed
    }

    async fn remove(
        &self,
        set: &str,
        m: &Member,
        policy: ShutdownPolicy,
    ) -> std::result::Result<(), String> {
        let reason = if m.current {
            RemovalReason::Excess
        } else {
            RemovalReason::Outdated
        };
        self.emit(RolloutEvent::Stopping {
            set: set.to_owned(),
            vm: m.name.clone(),
            reason,
        });
        let fail = |error: String| {
            self.emit(RolloutEvent::RemoveFailed {
                set: set.to_owned(),
                vm: m.name.clone(),
                error: error.clone(),
            });
            Err(error)
        };
        let report = match self.shutdown.shutdown(&m.id, policy).await {
            Ok(r) => r,
            Err(e) => return fail(e.to_string()),
        };
        // A member that can no longer be found (after the engine's confirming reads) has
        // nothing left to delete.
        if !report.outcome.is_off() && !report.outcome.is_gone() {
            return fail(format!("shutdown {}", report.outcome));
        }
        if !report.outcome.is_gone() {
            let opts = DeleteOptions { delete_disks: true };
            match self.provider.delete(&m.id, &opts).await {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return fail(e.to_string()),
            }
        }
        self.emit(RolloutEvent::Deleted {
            set: set.to_owned(),
            vm: m.name.clone(),
            shutdown: report.outcome.to_string(),
        });
        Ok(())
    }

    async fn create_n(
        &self,
        set: &VMSet,
        hash: &str,
        n: u32,
        mut taken: BTreeSet<String>,
        mut peers: Vec<String>,
        status: &mut SetStatus,
    ) {
        let name = set.name();
        let mut next = 1u32;
        for _ in 0..n {
            let mut attempts = 0;
            loop {
                while taken.contains(&format!("{name}-{next}")) {
                    next += 1;
                }
                let vm = format!("{name}-{next}");
                taken.insert(vm.clone());
                attempts += 1;
                status.actions += 1;
                match self.create_one(set, hash, &vm, &peers).await {
                    Ok(()) => {
                        peers.push(vm);
                        break;
                    }
                    Err(e) if e.kind() == ErrorKind::AlreadyExists && attempts < NAME_ATTEMPTS => {}
                    Err(e) => {
                        status.errors.push(e.to_string());
                        break;
                    }
                }
            }
        }
    }

    /// Replaces the template's `imageRef` name in `spec.image` with the stored reference of
    /// that `VMImage` on this provider.
    async fn resolve_image(&self, set: &VMSet, spec: &mut VmCreateSpec) -> Result<()> {
        let Some(r) = &set.spec.template.spec.image_ref else {
            return Ok(());
        };
        let Some(images) = &self.images else {
            return Err(Error::invalid_spec(format!(
                "template.spec.imageRef: VMImage {} cannot be resolved: the reconciler has no \
                 image resolver (VmSetReconciler::images)",
                r.name
            )));
        };
        let image = images.image(&r.name).await?;
        spec.image = Some(member_image(
            &r.name,
            image.as_ref(),
            self.provider.provider_type(),
        )?);
        Ok(())
    }

    async fn create_one(&self, set: &VMSet, hash: &str, vm: &str, peers: &[String]) -> Result<()> {
        let name = set.name().to_owned();
        let mut spec = create_spec(&name, vm, &set.spec.template, hash);
        if let Err(e) = self.resolve_image(set, &mut spec).await {
            self.emit(RolloutEvent::CreateFailed {
                set: name,
                vm: vm.to_owned(),
                error: e.to_string(),
            });
            return Err(e);
        }
        let mut reason = None;
        if let Some(placer) = &self.placer {
            let req = placement_request(&name, &spec, peers, self.policy.as_ref());
            match placer.place(&req).await {
                Ok(d) => {
                    spec.placement = Placement::from(&d);
                    reason = Some(d.explain());
                }
                Err(e) => {
                    self.emit(RolloutEvent::PlacementFailed {
                        set: name,
                        reason: e.to_string(),
                    });
                    return Err(e);
                }
            }
        }
        let host_spread = self
            .policy
            .as_ref()
            .and_then(|p| p.anti_affinity.as_ref())
            .is_some_and(|a| a.host_anti_affinity);
        if host_spread {
            spec.placement.anti_affinity = Some(HostAntiAffinity::new(SET_LABEL, name.as_str()));
        }
        self.emit(RolloutEvent::Creating {
            set: name.clone(),
            vm: vm.to_owned(),
            placement: spec.placement.clone(),
            reason,
        });
        match self.provider.create(&spec).await {
            Ok(_) => {
                self.emit(RolloutEvent::Created {
                    set: name,
                    vm: vm.to_owned(),
                });
                Ok(())
            }
            Err(e) => {
                self.emit(RolloutEvent::CreateFailed {
                    set: name,
                    vm: vm.to_owned(),
                    error: e.to_string(),
                });
                Err(e)
            }
        }
    }
}

fn count<'a>(it: impl Iterator<Item = &'a Member>) -> u32 {
    u32::try_from(it.count()).unwrap_or(u32::MAX)
}
