//! Property test of rolling updates: under random API failures and a restart of the
//! reconciler in the middle of a pass, a rolling update never has more than
//! `maxUnavailable` replicas unavailable nor more than `replicas + maxSurge` VMs in existence,
//! and converges. The invariants are checked against the simulator's ground truth after
//! every mutating provider call.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use proptest::prelude::*;
use virtrigaud_core::model::{
    IntOrPercent, RollingUpdate, UpdateStrategy, VMSet, VMSetSpec, VmResources,
};
use virtrigaud_core::placement::{HostInfo, Inventory, Resources, SolverPlacer};
use virtrigaud_core::shutdown::ShutdownManager;
use virtrigaud_core::sim::Simulator;
use virtrigaud_core::vmset::{SET_LABEL, TEMPLATE_HASH_LABEL, VmSetReconciler, template_hash};
use virtrigaud_core::{
    AgentStatus, DeleteOptions, ErrorKind, ListOptions, PowerOffOptions, PowerState,
    PowerStateStream, Provider, ProviderCapabilities, Result, ShutdownChannel,
    ShutdownRequestOptions, StartOptions, VmCapabilities, VmCreateSpec, VmDescription, VmId,
};

/// A simulator wrapper that checks the rollout invariants after every mutating call.
#[derive(Debug)]
struct Checked {
    sim: Simulator,
    known: Mutex<BTreeSet<VmId>>,
    bounds: Mutex<Option<(u32, u32, u32)>>,
    violations: Mutex<Vec<String>>,
}

impl Checked {
    fn check(&self, after: &str) {
        let Some((r, u, s)) = *self.bounds.lock().unwrap() else {
            return;
        };
        let known = self.known.lock().unwrap().clone();
        let mut existing = 0u32;
        let mut available = 0u32;
        for id in &known {
            let Some(labels) = self.sim.labels(id) else {
                continue;
            };
            if labels.get(SET_LABEL).map(String::as_str) != Some("web") {
                continue;
            }
            existing += 1;
            if self.sim.true_state(id) == Some(PowerState::Running) {
                available += 1;
            }
        }
        let unavailable = r.saturating_sub(available);
        if std::env::var("VMSET_DEBUG").is_ok() {
            eprintln!(
                "CHECK {:?} after {after}: existing {existing} available {available}",
                tokio::time::Instant::now()
            );
        }
        let mut v = self.violations.lock().unwrap();
        if existing > r + s {
            v.push(format!("after {after}: {existing} VMs exist > {r} + {s}"));
            if std::env::var("VMSET_DEBUG").is_ok() {
                eprintln!("VIOLATION {:?}", v.last());
            }
        }
        if unavailable > u {
            v.push(format!("after {after}: {unavailable} unavailable > {u}"));
        }
    }
}

#[async_trait]
impl Provider for Checked {
    fn provider_type(&self) -> &'static str {
        "checked-simulator"
    }
    fn capabilities(&self) -> ProviderCapabilities {
        self.sim.capabilities()
    }
    async fn vm_capabilities(&self, vm: &VmId) -> Result<VmCapabilities> {
        self.sim.vm_capabilities(vm).await
    }
    async fn power_state(&self, vm: &VmId) -> Result<PowerState> {
        self.sim.power_state(vm).await
    }
    async fn watch_power_state(&self, vm: &VmId) -> Result<Option<PowerStateStream>> {
        self.sim.watch_power_state(vm).await
    }
    async fn start(&self, vm: &VmId, opts: &StartOptions) -> Result<()> {
        let r = self.sim.start(vm, opts).await;
        self.check("start");
        r
    }
    async fn power_off(&self, vm: &VmId, opts: &PowerOffOptions) -> Result<()> {
        let r = self.sim.power_off(vm, opts).await;
        self.check("power_off");
        r
    }
    async fn probe_agent(&self, vm: &VmId) -> Result<AgentStatus> {
        self.sim.probe_agent(vm).await
    }
    async fn request_shutdown(
        &self,
        vm: &VmId,
        channel: ShutdownChannel,
        opts: &ShutdownRequestOptions,
    ) -> Result<()> {
        let r = self.sim.request_shutdown(vm, channel, opts).await;
        self.check("request_shutdown");
        r
    }
    async fn create(&self, spec: &VmCreateSpec) -> Result<VmId> {
        let r = self.sim.create(spec).await;
        if let Ok(id) = &r {
            self.known.lock().unwrap().insert(id.clone());
        }
        self.check("create");
        r
    }
    async fn delete(&self, vm: &VmId, opts: &DeleteOptions) -> Result<()> {
        let r = self.sim.delete(vm, opts).await;
        self.check("delete");
        r
    }
    async fn describe(&self, vm: &VmId) -> Result<VmDescription> {
        self.sim.describe(vm).await
    }
    async fn list_vms(&self, opts: &ListOptions) -> Result<Vec<VmDescription>> {
        self.sim.list_vms(opts).await
    }
    async fn inventory(&self) -> Result<Inventory> {
        self.sim.inventory().await
    }
}

const OPS: [&str; 7] = [
    "create",
    "delete",
    "list_vms",
    "power_off",
    "request_shutdown",
    "inventory",
    "start",
];

fn set(replicas: u32, version: u32, unavailable: IntOrPercent, surge: IntOrPercent) -> VMSet {
    let mut spec = VMSetSpec::default();
    spec.replicas = Some(i32::try_from(replicas).unwrap());
    spec.selector
        .match_labels
        .insert("app".into(), "web".into());
    spec.template
        .metadata
        .labels
        .insert("app".into(), "web".into());
    spec.template
        .metadata
        .labels
        .insert("version".into(), format!("v{version}"));
    let mut res = VmResources::default();
    res.cpu = Some(1);
    res.memory_mib = Some(1024);
    spec.template.spec.resources = Some(res);
    let mut ru = RollingUpdate::default();
    ru.max_unavailable = Some(unavailable);
    ru.max_surge = Some(surge);
    let mut us = UpdateStrategy::default();
    us.rolling_update = Some(ru);
    spec.update_strategy = Some(us);
    VMSet::new("web", spec)
}

fn int_or_percent() -> impl Strategy<Value = IntOrPercent> {
    prop_oneof![
        (0u32..4).prop_map(IntOrPercent::Count),
        (0u32..80).prop_map(IntOrPercent::Percent),
    ]
}

#[derive(Debug, Clone)]
struct Case {
    replicas: u32,
    unavailable: IntOrPercent,
    surge: IntOrPercent,
    /// (pass, operation, fatal kind?)
    faults: Vec<(u32, usize, bool)>,
    /// Restart during this pass, after this many virtual milliseconds.
    restart: Option<(u32, u64)>,
    placer: bool,
}

fn case() -> impl Strategy<Value = Case> {
    (
        1u32..8,
        int_or_percent(),
        int_or_percent(),
        proptest::collection::vec((0u32..12, 0..OPS.len(), any::<bool>()), 0..10),
        proptest::option::of((0u32..8, 0u64..8_000)),
        any::<bool>(),
    )
        .prop_map(
            |(replicas, unavailable, surge, faults, restart, placer)| Case {
                replicas,
                unavailable,
                surge,
                faults,
                restart,
                placer,
            },
        )
}

fn reconciler(p: &Arc<Checked>, placer: bool) -> VmSetReconciler {
    let provider: Arc<dyn Provider> = Arc::<Checked>::clone(p);
    let r = VmSetReconciler::new(
        Arc::clone(&provider),
        ShutdownManager::new(Arc::clone(&provider)),
    );
    if placer {
        r.placer(Arc::new(SolverPlacer::new(provider).group_label(SET_LABEL)))
    } else {
        r
    }
}

async fn run_case(c: Case) -> std::result::Result<(), TestCaseError> {
    if std::env::var("VMSET_DEBUG").is_ok() {
        eprintln!("CASE {c:?}");
    }
    let sim = Simulator::new();
    for i in 0..12 {
        sim.add_host(HostInfo::new(
            format!("host-{i}"),
            Resources::new(64, 65536),
        ));
    }
    let p = Arc::new(Checked {
        sim: sim.clone(),
        known: Mutex::new(BTreeSet::new()),
        bounds: Mutex::new(None),
        violations: Mutex::new(Vec::new()),
    });
    let v1 = set(c.replicas, 1, c.unavailable, c.surge);
    let v2 = set(c.replicas, 2, c.unavailable, c.surge);
    let interval = Duration::from_secs(1);
    let rec = reconciler(&p, c.placer);
    let s = rec.run_until_converged(&v1, interval, 50).await;
    prop_assert!(s.is_ok(), "v1 did not converge: {s:?}");

    // Roll out v2 under faults and a restart, checking the invariants on every call.
    let ru = v2
        .spec
        .update_strategy
        .clone()
        .unwrap()
        .rolling_update
        .unwrap();
    let (u, s) = ru.resolve(c.replicas);
    *p.bounds.lock().unwrap() = Some((c.replicas, u, s));
    if std::env::var("VMSET_DEBUG").is_ok() {
        let mut rx = rec.subscribe();
        tokio::spawn(async move {
            while let Ok(e) = rx.recv().await {
                eprintln!("{:?} {e:?}", tokio::time::Instant::now());
            }
        });
    }
    let mut rec = Some(rec);
    for pass in 0..12u32 {
        for (at, op, fatal) in &c.faults {
            if *at == pass {
                let kind = if *fatal {
                    ErrorKind::Internal
                } else {
                    ErrorKind::Unavailable
                };
                sim.inject_fault(OPS[*op], kind);
            }
        }
        let r = rec.take().unwrap_or_else(|| reconciler(&p, c.placer));
        if std::env::var("VMSET_DEBUG").is_ok() {
            eprintln!("PASS {pass}");
        }
        match c.restart {
            Some((at, ms)) if at == pass => {
                // The embedding process dies in the middle of the pass.
                let _ = tokio::time::timeout(Duration::from_millis(ms), r.reconcile(&v2)).await;
                drop(r);
            }
            _ => {
                let _ = r.reconcile(&v2).await;
                rec = Some(r);
            }
        }
        tokio::time::sleep(interval).await;
    }
    let r = rec.take().unwrap_or_else(|| reconciler(&p, c.placer));
    let done = r.run_until_converged(&v2, interval, 200).await;
    let violations = p.violations.lock().unwrap().clone();
    prop_assert!(violations.is_empty(), "{violations:#?}");
    prop_assert!(done.is_ok(), "v2 did not converge: {done:?}");
    let mut opts = ListOptions::default();
    opts.labels.insert(SET_LABEL.into(), "web".into());
    let vms = sim.list_vms(&opts).await.unwrap();
    let hash = template_hash(&v2.spec.template);
    prop_assert_eq!(vms.len() as u32, c.replicas);
    for vm in &vms {
        prop_assert_eq!(vm.labels.get(TEMPLATE_HASH_LABEL), Some(&hash));
        prop_assert_eq!(vm.power_state, PowerState::Running);
    }
    prop_assert_eq!(sim.vm_count() as u32, c.replicas);
    Ok(())
}

/// `PROPTEST_CASES` overrides the default number of cases.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(64)))]

    #[test]
    fn rolling_update_keeps_bounds_and_converges(c in case()) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(run_case(c))?;
    }
}
