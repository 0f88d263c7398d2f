//! Runs the reconcilers on the stored objects, one pass at a time, printing each pass.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use serde::Serialize;
use tokio::time::Instant;
use virtrigaud_core::model::{
    Condition, ProviderResource, VMClone, VMImage, VMPlacementPolicy, VMSet, VMSnapshot,
    VirtualMachine, condition_types, find_condition,
};
use virtrigaud_core::orchestration::image::{FileSink, ImagePreparer, ImageSource, SourceStream};
use virtrigaud_core::orchestration::{Orchestrator, snapshot_name};
use virtrigaud_core::placement::{DatastoreInfo, HostInfo, Resources};
use virtrigaud_core::reconcile::{
    Action, CloneReconciler, ImageReconciler, LifecycleReconciler, PlacementPolicyReconciler,
    SnapshotReconciler, VmReconciler,
};
use virtrigaud_core::shutdown::{HookOutput, PreStopExecutor, ShutdownManager};
use virtrigaud_core::sim::Simulator;
use virtrigaud_core::vmset::{VmSetReconciler, member_image};
use virtrigaud_core::{
    DiskCreateSpec, Error, ListOptions, OffReason, PowerState, Provider, ProviderCapabilities,
    VmCreateSpec, VmId,
};
use virtrigaud_examples::Backend;

use crate::store::{Key, Kind, Store, Wukong};

/// Between two passes of a VM set.
const SET_TICK: Duration = Duration::from_secs(1);

/// What became of an object (or a file that never became one).
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Reconciled and settled; the state reached.
    Settled(String),
    /// Not reconciled, and why (not an error: the example cannot, or need not).
    Skipped(String),
    /// Nothing to reconcile; what it says.
    Info(String),
    /// The document does not parse or validate.
    Invalid(String),
    /// Reconciling failed, or did not settle.
    Failed(String),
}

impl Outcome {
    pub(crate) fn is_failure(&self) -> bool {
        matches!(self, Outcome::Failed(_))
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Settled(s) => write!(f, "settled: {s}"),
            Outcome::Skipped(s) => write!(f, "skipped: {s}"),
            Outcome::Info(s) => write!(f, "info: {s}"),
            Outcome::Invalid(s) => write!(f, "invalid: {s}"),
            Outcome::Failed(s) => write!(f, "FAILED: {s}"),
        }
    }
}

/// A pre-stop hook "run" in a simulated guest: printed, and exits 0 (the simulator has no
/// guest to run commands in).
#[derive(Debug)]
struct SimulatedHook;

#[async_trait]
impl PreStopExecutor for SimulatedHook {
    async fn exec(&self, vm: &VmId, argv: &[String]) -> virtrigaud_core::Result<HookOutput> {
        let shown: Vec<String> = argv
            .iter()
            .map(|a| match a.lines().count() {
                0 | 1 => a.clone(),
                n => format!("<{n}-line script>"),
            })
            .collect();
        println!(
            "        hook   {vm}: {} (simulated guest: exit 0)",
            shown.join(" ")
        );
        Ok(HookOutput::exited(0))
    }
}

/// The image bytes of the image step: generated in memory (no URL is fetched).
#[derive(Debug)]
struct Generated(Vec<u8>);

#[async_trait]
impl ImageSource for Generated {
    async fn open(&self, offset: u64) -> virtrigaud_core::Result<SourceStream> {
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.0.len());
        let rest = self.0[start..].to_vec();
        Ok(SourceStream::new(
            offset,
            Some(self.0.len() as u64),
            futures::stream::iter([Ok(rest.into())]).boxed(),
        ))
    }
}

/// The provider, the reconcilers and the printing.
pub(crate) struct Driver {
    provider: Arc<dyn Provider>,
    sim: Option<Simulator>,
    orch: Orchestrator,
    vms: VmReconciler,
    lifecycle: LifecycleReconciler,
    snapshots: SnapshotReconciler,
    clones: CloneReconciler,
    policies: PlacementPolicyReconciler,
    /// The image step's reconciler and the directory it stores into (simulator only).
    images: Option<(ImageReconciler, tempfile::TempDir)>,
    passes: u32,
    t0: Instant,
}

impl Driver {
    /// Connects to `url` (through the umbrella crate) and starts printing events.
    pub(crate) async fn connect(url: &str, passes: u32) -> Result<Driver, Error> {
        let (provider, sim): (Arc<dyn Provider>, _) =
            match virtrigaud_examples::backend(url).await? {
                Backend::Simulator(sim) => (Arc::new(sim.clone()), Some(sim)),
                Backend::Remote(p) => (p, None),
            };
        let mut manager = ShutdownManager::builder(Arc::clone(&provider));
        if sim.is_some() {
            manager = manager.pre_stop_executor(Arc::new(SimulatedHook));
        }
        let mut orch =
            Orchestrator::with_shutdown_manager(Arc::clone(&provider), Arc::new(manager.build()));
        if let Some(sim) = &sim {
            orch = orch.with_clock(sim.wall_clock());
        }
        let mut events = orch.events().subscribe();
        tokio::spawn(async move {
            while let Ok(e) = events.recv().await {
                println!("        event  {e}");
            }
        });
        let images = match &sim {
            Some(_) => {
                let dir = tempfile::tempdir().map_err(|e| {
                    Error::unavailable(format!("a temporary directory for images: {e}"))
                })?;
                let sink = Arc::new(FileSink::new(dir.path()));
                let r = ImageReconciler::new(ImagePreparer::new(sink), provider.provider_type());
                Some((r, dir))
            }
            None => None,
        };
        Ok(Driver {
            vms: VmReconciler::new(orch.clone()),
            lifecycle: LifecycleReconciler::new(orch.clone()),
            snapshots: SnapshotReconciler::new(orch.clone()),
            clones: CloneReconciler::new(orch.clone()),
            policies: PlacementPolicyReconciler::new(Arc::clone(&provider)),
            provider,
            sim,
            orch,
            images,
            passes: passes.max(1),
            t0: Instant::now(),
        })
    }

    pub(crate) fn provider_type(&self) -> &'static str {
        self.provider.provider_type()
    }

    /// The objects to reconcile after `key` was stored: itself, and the placement policies
    /// a VirtualMachine names (their `usedBy` may have changed).
    pub(crate) fn touched_by(&self, store: &Store, key: &Key) -> Vec<Key> {
        let mut keys = vec![key.clone()];
        if key.kind == Kind::VirtualMachine
            && let Some(vm) = store.get::<VirtualMachine>(key)
            && let Some(p) = vm.spec.placement_ref
        {
            let policy = Key {
                kind: Kind::VMPlacementPolicy,
                name: p.name,
            };
            if store.get::<VMPlacementPolicy>(&policy).is_some() {
                keys.push(policy);
            }
        }
        keys
    }

    /// Reconciles `key` until it settles (at most `--passes` passes).
    pub(crate) async fn reconcile(&mut self, store: &mut Store, key: &Key) -> Outcome {
        let outcome = match key.kind {
            Kind::VirtualMachine => self.vm(store, key).await,
            Kind::VMSnapshot => self.snapshot(store, key).await,
            Kind::VMClone => self.clone(store, key).await,
            Kind::VMPlacementPolicy => self.policy(store, key).await,
            Kind::VMImage => self.image(store, key).await,
            Kind::VMSet => self.set(store, key).await,
            Kind::Wukong => self.wukong(store, key).await,
            Kind::Provider => self.provider_doc(store, key),
        };
        self.drain_events().await;
        match &outcome {
            Outcome::Settled(s) => println!("  => {key} {s}"),
            Outcome::Failed(s) => println!("  => {key} FAILED: {s}"),
            Outcome::Skipped(s) => println!("  => {key} skipped: {s}"),
            Outcome::Info(s) => println!("  => {key}: {s}"),
            Outcome::Invalid(s) => println!("  => {key} invalid: {s}"),
        }
        outcome
    }

    /// Lets the event printer catch up.
    pub(crate) async fn drain_events(&self) {
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
    }

    /// One line per pass: time, object, state, the VM's power state.
    async fn pass_line(&self, key: &Key, pass: u32, state: &str, power: Option<PowerState>) {
        self.drain_events().await;
        let t = self.t0.elapsed().as_secs_f64();
        let power = power.map_or_else(String::new, |p| format!("  · power {}", show_power(p)));
        println!("  [{t:7.2}s] {key}  pass {pass}: {state}{power}");
    }

    /// The VM named `name`: looked up by name; on the simulator, created when missing.
    async fn vm_id(&self, name: &str) -> Result<VmId, String> {
        let vms = self
            .provider
            .list_vms(&ListOptions::default())
            .await
            .map_err(|e| format!("cannot list the VMs: {e}"))?;
        if let Some(vm) = vms.into_iter().find(|v| v.name == name) {
            return Ok(vm.id);
        }
        let Some(sim) = &self.sim else {
            return Err(format!(
                "no VM named {name} on the {} provider (the example creates VMs on the \
                 simulator only)",
                self.provider_type()
            ));
        };
        // The disk layout seed 003_02 expands ("data", from 50 GB); a created VM has no
        // guest agent and honours ACPI after 5 s.
        let mut spec = VmCreateSpec::new(name, 2, 2048);
        spec.disks = vec![
            DiskCreateSpec::new("root", 20),
            DiskCreateSpec::new("data", 50),
        ];
        spec.power_on = true;
        let id = sim
            .create(&spec)
            .await
            .map_err(|e| format!("cannot create VM {name} on the simulator: {e}"))?;
        println!(
            "  sim: created VM {name} (2 vCPU, 2048 MiB, disks root 20 GiB and data 50 GiB; \
             running, its guest honours ACPI after 5 s)"
        );
        Ok(id)
    }

    async fn power(&self, id: &VmId) -> Option<PowerState> {
        self.provider.power_state(id).await.ok()
    }

    fn not_settled(&self) -> Outcome {
        Outcome::Failed(format!("not settled after {} passes", self.passes))
    }

    async fn vm(&self, store: &mut Store, key: &Key) -> Outcome {
        let id = match self.vm_id(&key.name).await {
            Ok(id) => id,
            Err(e) => return Outcome::Failed(e),
        };
        let Some(mut vm) = store.get::<VirtualMachine>(key) else {
            return Outcome::Failed("not in the store".into());
        };
        let snaps: Vec<VMSnapshot> = store
            .all::<VMSnapshot>(Kind::VMSnapshot)
            .into_iter()
            .map(|(_, s)| s)
            .collect();
        let t0 = Instant::now();
        for pass in 1..=self.passes {
            let res = self.vms.reconcile(&id, &mut vm, &snaps).await;
            store.update(key, &vm);
            let ready = vm
                .status
                .as_ref()
                .and_then(|s| find_condition(&s.conditions, condition_types::READY));
            self.pass_line(key, pass, &show_condition(ready), self.power(&id).await)
                .await;
            match res {
                Err(e) => return Outcome::Failed(e.to_string()),
                Ok(Action::Requeue(after)) => tokio::time::sleep(after).await,
                Ok(Action::AwaitChange) => {
                    let now = match self.provider.describe(&id).await {
                        Ok(d) => format!(
                            "{}, {} vCPU, {} MiB",
                            show_power(d.power_state),
                            d.cpu,
                            d.memory_mib
                        ),
                        Err(e) => format!("cannot describe: {e}"),
                    };
                    let want = vm
                        .spec
                        .power_state
                        .map_or_else(String::new, |p| format!("{} → ", wire(&p)));
                    return Outcome::Settled(format!(
                        "{want}{now} ({}, {:.1}s)",
                        plural(pass, "pass", "passes"),
                        t0.elapsed().as_secs_f64()
                    ));
                }
            }
        }
        self.not_settled()
    }

    async fn snapshot(&self, store: &mut Store, key: &Key) -> Outcome {
        let Some(mut snap) = store.get::<VMSnapshot>(key) else {
            return Outcome::Failed("not in the store".into());
        };
        let id = match self.vm_id(&snap.spec.vm_ref.name).await {
            Ok(id) => id,
            Err(e) => return Outcome::Failed(format!("spec.vmRef: {e}")),
        };
        for pass in 1..=self.passes {
            let res = self.snapshots.reconcile(&id, &mut snap).await;
            store.update(key, &snap);
            let state = show_snapshot(&snap);
            self.pass_line(key, pass, &state, self.power(&id).await)
                .await;
            match res {
                Err(e) => return Outcome::Failed(e.to_string()),
                Ok(Action::Requeue(after)) => tokio::time::sleep(after).await,
                Ok(Action::AwaitChange) => {
                    let phase = snap.status.as_ref().and_then(|s| s.phase);
                    return match phase.map(|p| wire(&p)).as_deref() {
                        Some("Ready") => Outcome::Settled(state),
                        _ => Outcome::Failed(state),
                    };
                }
            }
        }
        self.not_settled()
    }

    async fn clone(&self, store: &mut Store, key: &Key) -> Outcome {
        let Some(mut clone) = store.get::<VMClone>(key) else {
            return Outcome::Failed("not in the store".into());
        };
        let source = match self.vm_id(&clone.spec.source_ref.name).await {
            Ok(id) => id,
            Err(e) => return Outcome::Failed(format!("spec.sourceRef: {e}")),
        };
        for pass in 1..=self.passes {
            // A cloud-init secretRef would be read here; the seeds' user data is inline.
            let res = self.clones.reconcile(&source, &mut clone, None).await;
            store.update(key, &clone);
            let target = clone.status.as_ref().and_then(|s| s.target_id.clone());
            let power = match &target {
                Some(t) => self.power(&VmId::new(t.as_str())).await,
                None => None,
            };
            let state = show_clone(&clone);
            self.pass_line(key, pass, &state, power).await;
            match res {
                Err(e) => return Outcome::Failed(e.to_string()),
                Ok(Action::Requeue(after)) => tokio::time::sleep(after).await,
                Ok(Action::AwaitChange) => {
                    let phase = clone.status.as_ref().and_then(|s| s.phase);
                    return match phase.map(|p| wire(&p)).as_deref() {
                        Some("Ready") => Outcome::Settled(state),
                        _ => Outcome::Failed(state),
                    };
                }
            }
        }
        self.not_settled()
    }

    async fn policy(&self, store: &mut Store, key: &Key) -> Outcome {
        let Some(mut policy) = store.get::<VMPlacementPolicy>(key) else {
            return Outcome::Failed("not in the store".into());
        };
        self.sim_inventory(&policy).await;
        let used_by: Vec<String> = store
            .all::<VirtualMachine>(Kind::VirtualMachine)
            .into_iter()
            .filter(|(_, vm)| {
                vm.spec
                    .placement_ref
                    .as_ref()
                    .is_some_and(|r| r.name == key.name)
            })
            .map(|(k, _)| k.name)
            .collect();
        // One pass: a policy is checked again on a timer (POLICY_RECHECK), not settled.
        let res = self.policies.reconcile(&mut policy, &used_by).await;
        store.update(key, &policy);
        let st = policy.status.as_ref();
        let ready = st.and_then(|s| find_condition(&s.conditions, condition_types::READY));
        let users = st
            .map(|s| s.used_by_vms.join(", "))
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| "nobody".into());
        let state = format!("{} · usedBy: {users}", show_condition(ready));
        self.pass_line(key, 1, &state, None).await;
        let short = match ready {
            Some(c) => format!("Ready={} {} · usedBy: {users}", c.is_true(), c.reason),
            None => state,
        };
        match res {
            Err(e) => Outcome::Failed(e.to_string()),
            Ok(Action::Requeue(after)) => {
                Outcome::Settled(format!("{short} (checked again in {})", humanize(after)))
            }
            Ok(Action::AwaitChange) => Outcome::Settled(short),
        }
    }

    /// On the simulator: the hosts, clusters, zones and datastores a policy's hard
    /// constraints name, so that there is an inventory to check it against.
    async fn sim_inventory(&self, policy: &VMPlacementPolicy) {
        let (Some(sim), Some(hard)) = (&self.sim, &policy.spec.hard) else {
            return;
        };
        let inv = sim.inventory().await.unwrap_or_default();
        let known: BTreeSet<&str> = inv.hosts.iter().map(|h| h.name.as_str()).collect();
        let hosts: Vec<String> = if hard.hosts.is_empty() {
            vec!["sim-host-1".into()]
        } else {
            hard.hosts.clone()
        };
        let mut added = Vec::new();
        for (i, name) in hosts.iter().enumerate() {
            if known.contains(name.as_str()) {
                continue;
            }
            let mut h = HostInfo::new(name.as_str(), Resources::new(32, 131_072));
            if !hard.clusters.is_empty() {
                h = h.cluster(hard.clusters[i % hard.clusters.len()].as_str());
            }
            if !hard.zones.is_empty() {
                h = h.zone(hard.zones[i % hard.zones.len()].as_str());
            }
            h.datastores.clone_from(&hard.datastores);
            sim.add_host(h);
            added.push(name.as_str());
        }
        if added.is_empty() {
            return;
        }
        for ds in &hard.datastores {
            if !inv.datastores.iter().any(|d| &d.name == ds) {
                sim.add_datastore(DatastoreInfo::new(ds.as_str(), 2048));
            }
        }
        let list = |v: &[String]| {
            if v.is_empty() {
                "-".to_owned()
            } else {
                v.join(", ")
            }
        };
        println!(
            "  sim: added hosts {} (clusters {}; zones {}; datastores {})",
            added.join(", "),
            list(&hard.clusters),
            list(&hard.zones),
            list(&hard.datastores)
        );
    }

    async fn image(&self, store: &mut Store, key: &Key) -> Outcome {
        let Some((reconciler, dir)) = &self.images else {
            return Outcome::Skipped(format!(
                "the image step stores into a local directory on the simulator only; the {} \
                 provider's image storage is not driven by this example (see prepare_image)",
                self.provider_type()
            ));
        };
        let Some(mut image) = store.get::<VMImage>(key) else {
            return Outcome::Failed("not in the store".into());
        };
        let Some(download) = image.spec.download_for(self.provider_type()) else {
            return Outcome::Skipped("no download for this provider".into());
        };
        if download.checksum.is_some() {
            return Outcome::Skipped(format!(
                "spec.{} names a checksum, which the example's generated bytes cannot \
                 match (no URL is fetched)",
                download.field
            ));
        }
        let source = Generated((0..(1u32 << 20)).map(|i| (i % 251) as u8).collect());
        for pass in 1..=self.passes {
            let res = reconciler.reconcile(&mut image, &source).await;
            store.update(key, &image);
            let st = image.status.as_ref();
            let phase = st
                .and_then(|s| s.phase)
                .map_or_else(|| "Pending".to_owned(), |p| wire(&p));
            let state = match st.and_then(|s| s.stored.as_ref()) {
                Some(s) => format!("{phase} ({}, {} bytes)", s.reference, s.size_bytes),
                None => phase.clone(),
            };
            self.pass_line(key, pass, &state, None).await;
            match res {
                Err(e) => return Outcome::Failed(e.to_string()),
                Ok(Action::Requeue(after)) => tokio::time::sleep(after).await,
                Ok(Action::AwaitChange) if phase == "Ready" => {
                    return Outcome::Settled(format!(
                        "{state}, from {} bytes generated in memory into {}",
                        source.0.len(),
                        dir.path().display()
                    ));
                }
                Ok(Action::AwaitChange) => return Outcome::Failed(state),
            }
        }
        self.not_settled()
    }

    async fn set(&self, store: &mut Store, key: &Key) -> Outcome {
        let Some(mut set) = store.get::<VMSet>(key) else {
            return Outcome::Failed("not in the store".into());
        };
        let images: BTreeMap<String, VMImage> = store
            .all::<VMImage>(Kind::VMImage)
            .into_iter()
            .map(|(k, i)| (k.name, i))
            .collect();
        if let Some(r) = &set.spec.template.spec.image_ref
            && let Err(e) = member_image(&r.name, images.get(&r.name), self.provider_type())
        {
            return Outcome::Skipped(format!(
                "{e}; the VmSetReconciler makes no member without its prepared image"
            ));
        }
        let r = VmSetReconciler::new(
            Arc::clone(&self.provider),
            Arc::clone(self.orch.shutdown_manager()),
        )
        .images(Arc::new(images));
        for pass in 1..=self.passes {
            let res = r.reconcile(&set).await;
            let s = match res {
                Ok(s) => s,
                Err(e) => return Outcome::Failed(e.to_string()),
            };
            set.status = Some(s.to_model(set.metadata.generation));
            store.update(key, &set);
            let mut state = format!(
                "{} existing, {} updated, {} available of {}",
                s.existing, s.updated, s.available, s.replicas
            );
            if let Some(e) = s.errors.first() {
                state.push_str(&format!(" ({e})"));
            }
            self.pass_line(key, pass, &state, None).await;
            if s.converged {
                return Outcome::Settled(state);
            }
            tokio::time::sleep(SET_TICK).await;
        }
        self.not_settled()
    }

    async fn wukong(&self, store: &mut Store, key: &Key) -> Outcome {
        let Some(mut doc) = store.get::<Wukong>(key) else {
            return Outcome::Failed("not in the store".into());
        };
        let id = match self.vm_id(&key.name).await {
            Ok(id) => id,
            Err(e) => return Outcome::Failed(e),
        };
        let mut action = doc.spec.lifecycle_action.clone();
        let asked = action.as_ref().map_or_else(
            || "no lifecycleAction".to_owned(),
            |a| {
                let mut s = wire(&a.action);
                if a.force {
                    s.push_str(" (force)");
                } else if let Some(g) = a.grace_period_seconds {
                    s.push_str(&format!(" (gracePeriodSeconds {g})"));
                }
                s
            },
        );
        let mut state = doc.status.as_ref().and_then(|s| s.lifecycle_state.clone());
        let t0 = Instant::now();
        for pass in 1..=self.passes {
            let res = self
                .lifecycle
                .reconcile(
                    &id,
                    &mut action,
                    &mut state,
                    virtrigaud_core::model::RunStrategy::Manual,
                )
                .await;
            doc.spec.lifecycle_action.clone_from(&action);
            doc.status
                .get_or_insert_with(Default::default)
                .lifecycle_state = state.clone();
            store.update(key, &doc);
            let shown = state.as_ref().map_or_else(
                || "none".to_owned(),
                |s| {
                    let last = s
                        .last_action
                        .map_or_else(String::new, |a| format!(", last action {}", wire(&a)));
                    format!("{}{last}", wire(&s.state))
                },
            );
            let line = format!("{asked} → lifecycleState {shown}");
            self.pass_line(key, pass, &line, self.power(&id).await)
                .await;
            match res {
                Err(e) => return Outcome::Failed(e.to_string()),
                Ok(Action::Requeue(after)) => tokio::time::sleep(after).await,
                Ok(Action::AwaitChange) => {
                    let failed = state.as_ref().is_some_and(|s| wire(&s.state) == "Failed");
                    let s = format!("{line} ({:.1}s)", t0.elapsed().as_secs_f64());
                    return if failed {
                        Outcome::Failed(s)
                    } else {
                        Outcome::Settled(s)
                    };
                }
            }
        }
        self.not_settled()
    }

    /// A `Provider` document: its declared capabilities, against the provider's own.
    fn provider_doc(&self, store: &Store, key: &Key) -> Outcome {
        let Some(doc) = store.get::<ProviderResource>(key) else {
            return Outcome::Failed("not in the store".into());
        };
        let Some(declared) = doc.capabilities() else {
            return Outcome::Info("declares no capabilities".into());
        };
        let ours = self.provider.capabilities();
        let differ: Vec<String> = flags(declared)
            .into_iter()
            .zip(flags(&ours))
            .filter(|((_, d), (_, o))| d != o)
            .map(|((name, d), (_, o))| format!("{name} (declared {d}, has {o})"))
            .collect();
        let on = flags(declared).iter().filter(|(_, d)| *d).count();
        Outcome::Info(if differ.is_empty() {
            format!(
                "declares {on} capabilities; the {} provider has the same",
                self.provider_type()
            )
        } else {
            format!(
                "declares {on} capabilities; the {} provider differs on {}",
                self.provider_type(),
                differ.join(", ")
            )
        })
    }
}

/// The capabilities a seed-003 `Provider` document declares, by their field names.
fn flags(c: &ProviderCapabilities) -> [(&'static str, bool); 6] {
    [
        ("supportsReconfigureOnline", c.reconfigure_online),
        ("supportsDiskExpansionOnline", c.disk_expansion_online),
        ("supportsSnapshots", c.snapshots),
        ("supportsMemorySnapshots", c.memory_snapshots),
        ("supportsLinkedClones", c.linked_clones),
        ("supportsImageImport", c.image_import),
    ]
}

/// A value's name on the wire (`OffGraceful`, `Ready`, `stop`): what the documents say.
fn wire<T: Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => "?".into(),
    }
}

fn show_power(p: PowerState) -> String {
    let off = |r: OffReason| match r {
        OffReason::GuestShutdown => "Off (graceful)",
        OffReason::Destroyed => "Off (forced)",
        OffReason::Crashed => "Off (crashed)",
        OffReason::Saved => "Off (saved)",
        OffReason::Failed => "Off (failed)",
        _ => "Off",
    };
    match p {
        PowerState::Running => "On",
        PowerState::ShuttingDown => "ShuttingDown",
        PowerState::Paused(_) => "Paused",
        PowerState::Starting => "Starting",
        PowerState::Crashed => "Crashed",
        PowerState::Off(r) => off(r),
        _ => p.as_str(),
    }
    .to_owned()
}

/// `Ready (Reconciled)`, or the reason and message of a condition that is not true.
fn show_condition(c: Option<&Condition>) -> String {
    match c {
        None => "no Ready condition".into(),
        Some(c) if c.is_true() => format!("Ready ({}: {})", c.reason, c.message),
        Some(c) => format!("{} ({})", c.reason, c.message),
    }
}

fn show_snapshot(snap: &VMSnapshot) -> String {
    let st = snap.status.as_ref();
    let phase = st
        .and_then(|s| s.phase)
        .map_or_else(|| "Pending".to_owned(), |p| wire(&p));
    let mut detail = vec![snapshot_name(snap).to_owned()];
    if let Some(id) = st.and_then(|s| s.snapshot_id.as_deref()) {
        detail.push(format!("id {id}"));
    }
    let mut s = format!("{phase} ({})", detail.join(", "));
    if let Some(m) = st.and_then(|s| s.message.as_deref())
        && phase != "Ready"
    {
        s.push_str(&format!(": {m}"));
    }
    s
}

fn show_clone(clone: &VMClone) -> String {
    let st = clone.status.as_ref();
    let phase = st
        .and_then(|s| s.phase)
        .map_or_else(|| "Pending".to_owned(), |p| wire(&p));
    let mut detail = vec![format!("target {}", clone.spec.target.name)];
    if let Some(id) = st.and_then(|s| s.target_id.as_deref()) {
        detail.push(format!("id {id}"));
    }
    let mut s = format!("{phase} ({})", detail.join(", "));
    if let Some(m) = st.and_then(|s| s.message.as_deref())
        && phase != "Ready"
    {
        s.push_str(&format!(": {m}"));
    }
    s
}

fn plural(n: u32, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn humanize(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 && s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}
