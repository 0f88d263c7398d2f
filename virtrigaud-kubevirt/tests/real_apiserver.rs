//! Provider tests against a real Kubernetes apiserver (the standalone CRD apiserver started by
//! `scripts/kubevirt/setup.sh`, `VIRTRIGAUD_KUBECONFIG`), with the test playing KubeVirt's
//! controllers (`common::FakeKubeVirt`). Real time, short budgets.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use futures::future::BoxFuture;
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;
use virtrigaud_core::conformance::{self, CheckOutcome, Fixture};
use virtrigaud_core::model::{LifecycleAction, LifecycleActionKind, LifecyclePhase, RunStrategy};
use virtrigaud_core::orchestration::Orchestrator;
use virtrigaud_core::reconcile::LifecycleReconciler;
use virtrigaud_core::shutdown::{ShutdownManager, ShutdownOutcome, ShutdownPolicy};
use virtrigaud_core::{
    ErrorKind, PowerOffOptions, PowerState, Provider, ReconfigureRequest, RevertOptions,
    SnapshotOptions, StartOptions, VmId,
};
use virtrigaud_kubevirt::types::{VirtualMachine, VirtualMachineInstance, VirtualMachineSnapshot};
use virtrigaud_kubevirt::{
    DataVolumeImageSink, KubeVirtConfig, KubeVirtProvider, PowerApi, RolloutStrategy, StopOutcome,
};

use common::*;

const SETTLE: Duration = Duration::from_secs(30);

struct Env {
    path: String,
    ns: String,
    client: Client,
    provider: KubeVirtProvider,
    ctl: FakeKubeVirt,
}

async fn env(prefix: &str, live_update: bool) -> Option<Env> {
    let path = kubeconfig()?;
    let ns = unique_ns(prefix);
    let client = client(&path).await;
    let provider = provider(&path, &ns).await;
    let ctl = FakeKubeVirt::start(client.clone(), &ns, live_update);
    Some(Env {
        path,
        ns,
        client,
        provider,
        ctl,
    })
}

impl Env {
    async fn running_vm(&self, name: &str, grace: Option<i64>, guest: &str) -> VmId {
        let vm = create_vm(
            &self.client,
            &self.ns,
            name,
            "Always",
            grace,
            &[(GUEST_SHUTDOWN, guest)],
        )
        .await;
        self.provider
            .wait_for_power_state(&vm, |s| *s == PowerState::Running, SETTLE)
            .await
            .expect("running");
        vm
    }
    fn vms(&self) -> Api<VirtualMachine> {
        Api::namespaced(self.client.clone(), &self.ns)
    }
}

// ---------------------------------------------------------------- conformance

struct KvFixture {
    env: Env,
    next: std::sync::atomic::AtomicU32,
    /// CDI for the image check's DataVolumes.
    _cdi: FakeCdi,
}

#[async_trait]
impl Fixture for KvFixture {
    async fn cooperative_vm(&self) -> virtrigaud_core::Result<VmId> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        eprintln!("fixture: cooperative VM coop-{n}");
        Ok(self.env.running_vm(&format!("coop-{n}"), None, "300").await)
    }
    async fn ignoring_vm(&self) -> virtrigaud_core::Result<Option<VmId>> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        eprintln!("fixture: ignoring VM ignoring-{n}");
        Ok(Some(
            self.env
                .running_vm(&format!("ignoring-{n}"), None, "never")
                .await,
        ))
    }
    fn missing_vm(&self) -> VmId {
        VmId::new(format!("{}/no-such-vm", self.env.ns))
    }
    fn graceful_grace(&self) -> Duration {
        Duration::from_secs(10)
    }
    fn short_grace(&self) -> Duration {
        Duration::from_secs(2)
    }
    async fn applied_customization(
        &self,
        vm: &VmId,
    ) -> virtrigaud_core::Result<Option<virtrigaud_core::Customization>> {
        let r = self.env.provider.vm_ref(vm)?;
        let obj = self.env.vms().get(&r.name).await.unwrap();
        let spec = serde_json::to_value(obj.spec.template.and_then(|t| t.spec)).unwrap();
        let mut c = virtrigaud_core::Customization::default();
        c.hostname = spec["hostname"].as_str().map(str::to_owned);
        let ci = spec["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .find_map(|v| v.get("cloudInitNoCloud").cloned());
        if let Some(ci) = ci {
            if let Some(nd) = ci["networkData"].as_str() {
                c.networks = virtrigaud_core::cloudinit::read_network_config(nd)?;
            }
            if let Some(name) = ci["userDataSecretRef"]["name"].as_str() {
                let secrets: Api<k8s_openapi::api::core::v1::Secret> =
                    Api::namespaced(self.env.client.clone(), &r.namespace);
                let s = secrets.get(name).await.unwrap();
                let ud = s
                    .data
                    .unwrap_or_default()
                    .remove("userdata")
                    .map(|b| String::from_utf8(b.0).unwrap());
                c.cloud_init_user_data =
                    ud.filter(|u| u != virtrigaud_core::cloudinit::EMPTY_USER_DATA);
            }
        }
        Ok(Some(c))
    }
    async fn arrange_clone_failure(
        &self,
        _source: &VmId,
    ) -> virtrigaud_core::Result<Option<virtrigaud_core::CloneOptions>> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let target = format!("vrconf-failed-{n}");
        self.env.ctl.fail_next_clone(Some(&target));
        Ok(Some(virtrigaud_core::CloneOptions::new(target)))
    }
    /// Images become CDI DataVolumes in the test namespace, fetched by the fake CDI.
    async fn image_sink(
        &self,
    ) -> virtrigaud_core::Result<Option<Arc<dyn virtrigaud_core::orchestration::image::ImageSink>>>
    {
        Ok(Some(Arc::new(DataVolumeImageSink::new(&self.env.provider))))
    }
    async fn cleanup(&self, vm: &VmId) {
        eprintln!("fixture: cleanup {vm}");
        let p = &self.env.provider;
        if p.power_off(vm, &PowerOffOptions::default()).await.is_ok() {
            let _ = p.wait_for_power_state(vm, PowerState::is_off, SETTLE).await;
        }
        let _ = p.delete(vm, &Default::default()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite() {
    // The cluster under test runs the LiveUpdate rollout strategy (the fake controller applies
    // CPU and memory hot-plug), so reconfigure_online is exercised, not skipped.
    let Some(mut env) = env("conf", true).await else {
        return;
    };
    let cfg = KubeVirtConfig::default()
        .with_power_api(PowerApi::RunStrategy)
        .with_namespace(&env.ns)
        .with_operation_timeout(Duration::from_secs(60))
        .with_snapshot_failure_deadline(Duration::from_secs(2))
        .with_rollout_strategy(RolloutStrategy::LiveUpdate);
    env.provider = provider_with_config(&env.path, cfg).await;
    let provider: Arc<dyn Provider> = Arc::new(env.provider.clone());
    let cdi = FakeCdi::start(env.client.clone(), &env.ns);
    let fixture = KvFixture {
        env,
        next: Default::default(),
        _cdi: cdi,
    };
    let report = conformance::run_all(provider, &fixture).await;
    report.assert_passed_on("kubevirt-apiserver");
    // Only what this power API honestly declares false may be skipped: reboot, reset and
    // pause need virt-api's subresources, which a CRD apiserver cannot serve
    // (capabilities_tell_the_truth checks that they answer Unsupported; tests/subresources.rs
    // covers the calls themselves).
    let skipped: Vec<_> = report
        .results
        .iter()
        .filter_map(|(name, outcome)| match outcome {
            CheckOutcome::Skipped(why) => Some((*name, why.as_str())),
            _ => None,
        })
        .collect();
    assert_eq!(
        skipped,
        [
            ("reboot_comes_back_running", "reboot is declared false"),
            ("reset_keeps_running", "reset is declared false"),
            ("pause_resume_round_trip", "pause is declared false"),
        ]
    );
}

// ---------------------------------------------------------------- lifecycle

/// An orchestrator over `p` (its own shutdown engine): seed 004's lifecycle actions are core's
/// `LifecycleAction`, applied by `Orchestrator::apply_action`.
fn orchestrator(p: &KubeVirtProvider) -> Orchestrator {
    Orchestrator::new(Arc::new(p.clone()) as Arc<dyn Provider>)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_then_graceful_stop_with_grace_period() {
    let Some(env) = env("graceful", false).await else {
        return;
    };
    let vm = create_vm(
        &env.client,
        &env.ns,
        "web",
        "Halted",
        Some(30),
        &[(GUEST_SHUTDOWN, "500")],
    )
    .await;
    let p = &env.provider;
    let orch = orchestrator(p);
    assert_eq!(
        p.power_state(&vm).await.unwrap(),
        PowerState::Off(virtrigaud_core::OffReason::Unknown)
    );
    let out = orch
        .apply_action(&vm, &LifecycleAction::start(), RunStrategy::Manual)
        .await
        .expect("start");
    assert_eq!(out.last_action, Some(LifecycleActionKind::Start));
    assert!(
        matches!(
            out.state,
            LifecyclePhase::Starting | LifecyclePhase::Running
        ),
        "{out:?}"
    );
    p.wait_for_power_state(&vm, |s| *s == PowerState::Running, SETTLE)
        .await
        .expect("running");
    assert_eq!(
        env.vms()
            .get("web")
            .await
            .unwrap()
            .spec
            .run_strategy
            .as_deref(),
        Some("Always")
    );
    // a start of a running VM only reads it (the VM and its VMI)
    let before = p.api_stats();
    let again = orch
        .apply_action(&vm, &LifecycleAction::start(), RunStrategy::Manual)
        .await
        .expect("start again");
    assert_eq!(again.state, LifecyclePhase::Running);
    assert_eq!((p.api_stats() - before).requests, 2, "nothing was sent");
    let e = p
        .start(&vm, &StartOptions::default())
        .await
        .expect_err("Always VM");
    assert_eq!(e.kind(), ErrorKind::InvalidState);

    // seed 004: stop with gracePeriodSeconds, through the engine; the guest needs 0.5 s
    let mut events = orch.events().subscribe();
    let out = orch
        .apply_action(
            &vm,
            &LifecycleAction::stop().with_grace_period_seconds(5),
            RunStrategy::Manual,
        )
        .await
        .expect("stop");
    assert_eq!(out.state, LifecyclePhase::Stopped);
    assert_eq!(out.last_action, Some(LifecycleActionKind::Stop));
    let stopped = events.try_recv().expect("a VMStopped event");
    assert_eq!(stopped.reason.as_str(), "VMStopped");
    assert!(stopped.message.contains("graceful"), "{}", stopped.message);
    let stops = env.ctl.stops_of("web");
    assert_eq!(stops.len(), 1);
    assert!(stops[0].graceful, "{stops:?}");
    assert_eq!(stops[0].grace, 5, "the stop's grace reached the VMI");
    assert_eq!(
        env.vms()
            .get("web")
            .await
            .unwrap()
            .spec
            .run_strategy
            .as_deref(),
        Some("Halted")
    );
    let st = p.status(&vm).await.unwrap();
    assert_eq!(st.phase, LifecyclePhase::Stopped);
    assert_eq!(st.vmi_phase, None);
    let again = orch
        .apply_action(&vm, &LifecycleAction::stop(), RunStrategy::Manual)
        .await
        .expect("stop again");
    assert_eq!(again.state, LifecyclePhase::Stopped);
    assert_eq!(env.ctl.stops_of("web").len(), 1, "nothing more was stopped");

    // the engine on its own, measuring API calls and watch events per graceful stop
    p.start(&vm, &StartOptions::default()).await.expect("start");
    p.wait_for_power_state(&vm, |s| *s == PowerState::Running, SETTLE)
        .await
        .expect("running");
    let manager = ShutdownManager::new(Arc::new(p.clone()) as Arc<dyn Provider>);
    let before = p.api_stats();
    let report = manager
        .shutdown(&vm, ShutdownPolicy::with_grace(Duration::from_secs(5)))
        .await
        .expect("shutdown");
    let used = p.api_stats() - before;
    assert!(
        matches!(report.outcome, ShutdownOutcome::Graceful { .. }),
        "{}",
        report.outcome
    );
    eprintln!(
        "METRIC graceful stop via engine: {} HTTP requests ({} watch requests), {} watch events, {} conflict retries, \
         {} provider calls, elapsed {:?}",
        used.requests,
        used.watch_requests,
        used.watch_events,
        used.conflict_retries,
        report.provider_calls,
        report.elapsed
    );
    let before = p.api_stats();
    p.start(&vm, &StartOptions::default()).await.expect("start");
    p.wait_for_power_state(&vm, |s| *s == PowerState::Running, SETTLE)
        .await
        .expect("running");
    let mid = p.api_stats();
    let out = orch
        .apply_action(
            &vm,
            &LifecycleAction::stop().with_grace_period_seconds(5),
            RunStrategy::Manual,
        )
        .await
        .expect("stop");
    let used = p.api_stats() - mid;
    assert_eq!(out.state, LifecyclePhase::Stopped);
    assert!(env.ctl.stops_of("web").iter().all(|s| s.graceful));
    eprintln!(
        "METRIC graceful stop via Orchestrator::apply_action: {} HTTP requests ({} watch requests), {} watch events (start+wait: {} requests)",
        used.requests,
        used.watch_requests,
        used.watch_events,
        (mid - before).requests
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_stop_uses_grace_zero() {
    let Some(env) = env("forced", false).await else {
        return;
    };
    let vm = env.running_vm("db", Some(30), "never").await;
    let orch = orchestrator(&env.provider);
    let out = orch
        .apply_action(&vm, &LifecycleAction::force_stop(), RunStrategy::Manual)
        .await
        .expect("force");
    assert_eq!(out.state, LifecyclePhase::Stopped);
    let stops = env.ctl.stops_of("db");
    assert_eq!(stops.len(), 1);
    assert!(!stops[0].graceful);
    assert_eq!(stops[0].grace, 0);
    let e = env
        .provider
        .power_off(&vm, &PowerOffOptions::default())
        .await
        .expect_err("already off");
    assert_eq!(e.kind(), ErrorKind::InvalidState);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_lifecycle_action_is_refused_before_any_request() {
    let Some(env) = env("invalid-action", false).await else {
        return;
    };
    let vm = env.running_vm("app", Some(30), "never").await;
    let p = &env.provider;
    let orch = orchestrator(p);
    let before = p.api_calls();
    for bad in [
        LifecycleAction::stop().with_grace_period_seconds(-1),
        LifecycleAction::force_stop().with_grace_period_seconds(10),
        LifecycleAction::start().with_grace_period_seconds(5),
    ] {
        let e = orch
            .apply_action(&vm, &bad, RunStrategy::Manual)
            .await
            .expect_err("invalid");
        assert_eq!(e.kind(), ErrorKind::InvalidSpec, "{e}");
        assert!(e.to_string().contains("gracePeriodSeconds"), "{e}");
    }
    // the object-level reconciler names the field's full path and leaves the action in place
    let r = LifecycleReconciler::new(orch.clone());
    let mut action = Some(LifecycleAction::stop().with_grace_period_seconds(-1));
    let mut state = None;
    let e = r
        .reconcile(&vm, &mut action, &mut state, RunStrategy::Manual)
        .await
        .expect_err("invalid");
    assert_eq!(e.kind(), ErrorKind::InvalidSpec);
    assert!(
        e.to_string()
            .contains("spec.lifecycleAction.gracePeriodSeconds"),
        "{e}"
    );
    assert!(action.is_some() && state.is_none());
    assert_eq!(p.api_calls(), before, "no request was sent");
    assert!(env.ctl.stops_of("app").is_empty());
    assert_eq!(p.power_state(&vm).await.unwrap(), PowerState::Running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_stops_shorter_grace_wins_one_grace_period() {
    let Some(env) = env("race", false).await else {
        return;
    };
    let p = &env.provider;
    // concurrent stops with 20 s and 2 s: one shutdown, forced at the 2 s deadline
    let vm = env.running_vm("a", Some(30), "never").await;
    let (x, y) = tokio::join!(
        p.stop_with_grace(&vm, Some(20)),
        p.stop_with_grace(&vm, Some(2))
    );
    let outcomes = [x.expect("stop 20"), y.expect("stop 2")];
    assert!(outcomes.contains(&StopOutcome::Requested), "{outcomes:?}");
    p.wait_for_power_state(&vm, PowerState::is_off, SETTLE)
        .await
        .expect("off");
    let stops = env.ctl.stops_of("a");
    assert_eq!(stops.len(), 1, "{stops:?}");
    assert!(!stops[0].graceful);
    assert_eq!(stops[0].grace, 2, "{stops:?}");
    assert!(stops[0].elapsed < Duration::from_secs(20), "{stops:?}");

    // in sequence: a longer grace never extends one in flight; a shorter one wins
    let vm = env.running_vm("b", Some(30), "never").await;
    assert_eq!(
        p.stop_with_grace(&vm, Some(20)).await.unwrap(),
        StopOutcome::Requested
    );
    p.wait_for_power_state(&vm, |s| *s == PowerState::ShuttingDown, SETTLE)
        .await
        .expect("stopping");
    let st = p.status(&vm).await.unwrap();
    assert_eq!(st.phase, LifecyclePhase::Stopping);
    assert_eq!(st.vmi_phase.as_deref(), Some("Running"));
    assert_eq!(
        p.stop_with_grace(&vm, Some(25)).await.unwrap(),
        StopOutcome::AlreadyStopping
    );
    assert_eq!(
        p.stop_with_grace(&vm, None).await.unwrap(),
        StopOutcome::AlreadyStopping
    );
    assert_eq!(
        p.stop_with_grace(&vm, Some(1)).await.unwrap(),
        StopOutcome::GraceShortened
    );
    let vmi: Api<VirtualMachineInstance> = Api::namespaced(env.client.clone(), &env.ns);
    if let Some(v) = vmi.get_opt("b").await.unwrap() {
        assert!(v.spec.termination_grace_period_seconds.unwrap_or(0) <= 1);
    }
    p.wait_for_power_state(&vm, PowerState::is_off, SETTLE)
        .await
        .expect("off");
    let stops = env.ctl.stops_of("b");
    assert_eq!(stops.len(), 1);
    assert_eq!(stops[0].grace, 1);
    assert!(stops[0].elapsed < Duration::from_secs(20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_run_strategy_goes_through_state_change_requests() {
    let Some(env) = env("manual", false).await else {
        return;
    };
    let p = &env.provider;
    let vm = create_vm(
        &env.client,
        &env.ns,
        "m",
        "Manual",
        None,
        &[(GUEST_SHUTDOWN, "100")],
    )
    .await;
    p.start(&vm, &StartOptions::default()).await.expect("start");
    p.wait_for_power_state(&vm, |s| *s == PowerState::Running, SETTLE)
        .await
        .expect("running");
    p.stop_with_grace(&vm, Some(3)).await.expect("stop");
    p.wait_for_power_state(&vm, PowerState::is_off, SETTLE)
        .await
        .expect("off");
    let obj = env.vms().get("m").await.unwrap();
    assert_eq!(
        obj.spec.run_strategy.as_deref(),
        Some("Manual"),
        "Manual stays Manual"
    );
    let e = p
        .stop_with_grace(&vm, Some(3))
        .await
        .expect_err("not running");
    assert_eq!(e.kind(), ErrorKind::InvalidState);
    // restart = Stop + Start requests
    p.start(&vm, &StartOptions::default()).await.expect("start");
    p.wait_for_power_state(&vm, |s| *s == PowerState::Running, SETTLE)
        .await
        .expect("running");
    p.restart(&vm, true).await.expect("restart");
    p.wait_for_power_state(&vm, |s| *s == PowerState::Running, SETTLE)
        .await
        .expect("running again");
    assert_eq!(env.ctl.stops_of("m").len(), 2);
}

/// Right after a stop the instance can be gone while virt-controller has not yet removed the
/// Stop request: a start then queues behind it (as a restart does) instead of failing, and a
/// start while a Start is pending still fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_queues_behind_an_unacknowledged_stop_request() {
    let Some(path) = kubeconfig() else {
        return;
    };
    // No fake virt-controller in this namespace: requests stay pending, deterministically.
    let ns = unique_ns("stale-stop");
    let client = client(&path).await;
    let p = provider(&path, &ns).await;
    let vm = create_vm(&client, &ns, "s", "Manual", None, &[]).await;
    let vms: Api<VirtualMachine> = Api::namespaced(client.clone(), &ns);
    vms.patch_status(
        "s",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"stateChangeRequests": [{"action": "Stop"}]}})),
    )
    .await
    .expect("a pending Stop request");
    p.start(&vm, &StartOptions::default())
        .await
        .expect("start after an unacknowledged stop");
    let actions: Vec<String> = vms
        .get("s")
        .await
        .unwrap()
        .status
        .and_then(|s| s.state_change_requests)
        .unwrap_or_default()
        .iter()
        .filter_map(|r| r.get("action").and_then(|a| a.as_str()).map(str::to_owned))
        .collect();
    assert_eq!(actions, ["Stop", "Start"]);
    let e = p
        .start(&vm, &StartOptions::default())
        .await
        .expect_err("a Start is already pending");
    assert_eq!(e.kind(), ErrorKind::InvalidState);
}

// ---------------------------------------------------------------- 409 handling

type Hook = Arc<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>;

/// Runs `hook` once, right after the first GET of `path` returns (a concurrent writer sneaking
/// in between the provider's read and its write).
#[derive(Clone)]
struct RaceLayer {
    path: String,
    fired: Arc<AtomicBool>,
    hook: Hook,
}

struct RaceService<S> {
    inner: S,
    layer: RaceLayer,
}

impl<S> tower::Layer<S> for RaceLayer {
    type Service = RaceService<S>;
    fn layer(&self, inner: S) -> RaceService<S> {
        RaceService {
            inner,
            layer: self.clone(),
        }
    }
}

impl<S, B> tower::Service<http::Request<B>> for RaceService<S>
where
    S: tower::Service<http::Request<B>>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }
    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let hit = req.method() == http::Method::GET
            && req.uri().path() == self.layer.path
            && req.uri().query().is_none();
        let fire = hit && !self.layer.fired.swap(true, Ordering::SeqCst);
        let hook = Arc::clone(&self.layer.hook);
        let fut = self.inner.call(req);
        Box::pin(async move {
            let res = fut.await;
            if fire {
                hook().await;
            }
            res
        })
    }
}

async fn racing_provider(env: &Env, name: &str, hook: Hook) -> KubeVirtProvider {
    let layer = RaceLayer {
        path: format!(
            "/apis/kubevirt.io/v1/namespaces/{}/virtualmachines/{name}",
            env.ns
        ),
        fired: Arc::default(),
        hook,
    };
    let client = kube::client::ClientBuilder::try_from(kube_config(&env.path).await)
        .unwrap()
        .with_layer(&layer)
        .build();
    let cfg = KubeVirtConfig::default()
        .with_power_api(PowerApi::RunStrategy)
        .with_namespace(&env.ns);
    KubeVirtProvider::with_client(client, cfg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicts_are_answered_by_rereading() {
    let Some(env) = env("conflict", false).await else {
        return;
    };
    // 1. JSON-patch test on spec.runStrategy fails: someone switched the VM to RerunOnFailure
    let vm = env.running_vm("c1", Some(30), "100").await;
    let vms = env.vms();
    let hook: Hook = Arc::new(move || {
        let vms = vms.clone();
        Box::pin(async move {
            vms.patch(
                "c1",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"runStrategy": "RerunOnFailure"}})),
            )
            .await
            .expect("concurrent write");
        })
    });
    let p = racing_provider(&env, "c1", hook).await;
    assert_eq!(
        p.stop_with_grace(&vm, Some(5))
            .await
            .expect("stop after re-read"),
        StopOutcome::Requested
    );
    assert_eq!(p.api_stats().conflict_retries, 1);
    env.provider
        .wait_for_power_state(&vm, PowerState::is_off, SETTLE)
        .await
        .expect("off");
    // re-read saw RerunOnFailure, so the stop went through a Stop request and kept the strategy
    assert_eq!(
        env.vms()
            .get("c1")
            .await
            .unwrap()
            .spec
            .run_strategy
            .as_deref(),
        Some("RerunOnFailure")
    );

    // 2. a merge patch pinned to a resourceVersion gets a real 409 Conflict
    let vm = create_vm(&env.client, &env.ns, "c2", "Halted", None, &[]).await;
    let vms = env.vms();
    // Let the fake virt-controller settle first: its own status write racing the provider
    // would be a second (legitimate) conflict, and this step counts exactly the hook's one.
    let settled = tokio::time::timeout(SETTLE, async {
        loop {
            let obj = vms.get("c2").await.unwrap();
            let st = obj.status.as_ref();
            if st.and_then(|s| s.printable_status.as_deref()) == Some("Stopped")
                && st.and_then(|s| s.observed_generation) == obj.metadata.generation
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        settled.is_ok(),
        "the fake virt-controller never settled on c2"
    );
    let hook: Hook = Arc::new(move || {
        let vms = vms.clone();
        Box::pin(async move {
            vms.patch(
                "c2",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {"touched": "yes"}}})),
            )
            .await
            .expect("concurrent write");
        })
    });
    let p = racing_provider(&env, "c2", hook).await;
    let mut change = ReconfigureRequest::default();
    change.cpu = Some(2);
    let res = p
        .reconfigure(&vm, &change)
        .await
        .expect("reconfigure after 409");
    assert!(!res.needs_power_cycle);
    assert_eq!(p.api_stats().conflict_retries, 1);
    let d = env.provider.describe(&vm).await.unwrap();
    assert_eq!(d.cpu, 2);
    assert_eq!(
        d.labels.get("touched").map(String::as_str),
        Some("yes"),
        "the concurrent write survived"
    );
}

// ---------------------------------------------------------------- snapshots, hot-plug

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_restore_flow_with_restart_required() {
    let Some(env) = env("snap", false).await else {
        return;
    };
    let p = &env.provider;
    let snapper = p.snapshotter().unwrap();
    let vm = env.running_vm("s", Some(30), "100").await;
    let snap = snapper
        .create_snapshot(
            &vm,
            &SnapshotOptions::new("Before Upgrade").with_description("pre"),
        )
        .await
        .expect("snapshot");
    assert_eq!(snap.id, "before-upgrade");
    assert_eq!(snap.name, "Before Upgrade");
    assert!(snap.created_at.is_some());
    assert_eq!(snap.description.as_deref(), Some("pre"));
    let e = snapper
        .create_snapshot(&vm, &SnapshotOptions::new("mem").with_memory(true))
        .await
        .expect_err("memory");
    assert_eq!(e.kind(), ErrorKind::Unsupported);

    // Stage rollout: a CPU change on a running VM needs a restart (RestartRequired)
    let mut change = ReconfigureRequest::default();
    change.cpu = Some(3);
    let res = p.reconfigure(&vm, &change).await.expect("reconfigure");
    assert!(res.needs_power_cycle && !res.applied_live, "{res:?}");
    let d = p.describe(&vm).await.unwrap();
    assert!(d.pending_power_cycle);
    assert_eq!(d.cpu, 3);
    assert!(p.status(&vm).await.unwrap().needs_power_cycle);

    // revert while running: KubeVirt stops the VM (StopTarget), restores, leaves it off
    snapper
        .revert_snapshot(&vm, &snap.id, &RevertOptions::default())
        .await
        .expect("revert");
    assert!(p.power_state(&vm).await.unwrap().is_off());
    let d = p.describe(&vm).await.unwrap();
    assert_eq!(d.cpu, 1, "template restored");
    let list = snapper.list_snapshots(&vm).await.unwrap();
    assert_eq!(list.len(), 1);
    snapper
        .delete_snapshot(&vm, &snap.id, &Default::default())
        .await
        .expect("delete");
    let e = snapper
        .delete_snapshot(&vm, &snap.id, &Default::default())
        .await
        .expect_err("gone");
    assert_eq!(e.kind(), ErrorKind::NotFound);

    // a snapshot that never becomes ready fails at its failure deadline (2 s here) and is removed
    let stuck = create_vm(
        &env.client,
        &env.ns,
        "stuck",
        "Halted",
        None,
        &[(SNAPSHOT_STUCK, "yes")],
    )
    .await;
    let e = snapper
        .create_snapshot(&stuck, &SnapshotOptions::new("never"))
        .await
        .expect_err("deadline");
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    let snaps: Api<VirtualMachineSnapshot> = Api::namespaced(env.client.clone(), &env.ns);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        snaps
            .get_opt("never")
            .await
            .unwrap()
            .is_none_or(|s| s.metadata.deletion_timestamp.is_some())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_and_memory_hot_plug_under_live_update() {
    let Some(env) = env("hotplug", true).await else {
        return;
    };
    let cfg = KubeVirtConfig::default()
        .with_power_api(PowerApi::RunStrategy)
        .with_namespace(&env.ns)
        .with_rollout_strategy(RolloutStrategy::LiveUpdate);
    let p = KubeVirtProvider::from_kube_config(kube_config(&env.path).await, cfg).unwrap();
    let vm = env.running_vm("h", None, "100").await;
    let caps = p.vm_capabilities(&vm).await.unwrap();
    assert!(caps.cpu_hot_add && caps.memory_hot_add);
    assert_eq!(caps.max_live_vcpus, 4);
    assert_eq!(caps.agent_connected, Some(true));
    let mut change = ReconfigureRequest::default();
    change.cpu = Some(2);
    change.memory_mib = Some(2048);
    let res = p.reconfigure(&vm, &change).await.expect("hot-plug");
    assert!(res.applied_live && !res.needs_power_cycle, "{res:?}");
    let vmi: Api<VirtualMachineInstance> = Api::namespaced(env.client.clone(), &env.ns);
    let v = vmi.get("h").await.unwrap();
    let dom = v.spec.domain.unwrap();
    assert_eq!(dom.cpu.unwrap().sockets, Some(2));
    assert_eq!(dom.memory.unwrap().guest.as_deref(), Some("2Gi"));
    // beyond maxSockets: staged, RestartRequired
    change.cpu = Some(8);
    change.memory_mib = None;
    let res = p.reconfigure(&vm, &change).await.expect("staged");
    assert!(res.needs_power_cycle, "{res:?}");
    let e = p
        .reconfigure(&vm, &{
            let mut c = ReconfigureRequest::default();
            c.disks
                .push(virtrigaud_core::DiskResize::new("rootdisk", 20));
            c
        })
        .await
        .expect_err("disks");
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    let _ = env.vms().delete("h", &DeleteParams::default()).await;

    // without a configured strategy the provider reads the KubeVirt CR
    let kvs: Api<virtrigaud_kubevirt::types::KubeVirt> =
        Api::namespaced(env.client.clone(), &env.ns);
    let kv: virtrigaud_kubevirt::types::KubeVirt = serde_json::from_value(json!({
        "apiVersion": "kubevirt.io/v1", "kind": "KubeVirt", "metadata": {"name": "kubevirt", "namespace": env.ns},
        "spec": {"configuration": {"vmRolloutStrategy": "LiveUpdate"}}}))
    .unwrap();
    kvs.create(&Default::default(), &kv)
        .await
        .expect("KubeVirt CR");
    assert_eq!(
        env.provider.rollout_strategy().await,
        RolloutStrategy::LiveUpdate
    );
    kvs.delete("kubevirt", &DeleteParams::default())
        .await
        .expect("delete CR");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_describe_list_delete() {
    let Some(env) = env("crud", false).await else {
        return;
    };
    let p = &env.provider;
    let mut spec = virtrigaud_core::VmCreateSpec::new("app-1", 2, 1536);
    spec.disks
        .push(virtrigaud_core::DiskCreateSpec::new("data", 10));
    spec.image = Some("quay.io/containerdisks/fedora:41".into());
    spec.cloud_init_user_data = Some("#cloud-config\n".into());
    spec.labels.insert("tier".into(), "web".into());
    spec.networks
        .push(virtrigaud_core::NetworkCreateSpec::new("pod"));
    spec.power_on = true;
    let vm = p.create(&spec).await.expect("create");
    assert_eq!(vm.as_str(), format!("{}/app-1", env.ns));
    let e = p.create(&spec).await.expect_err("duplicate");
    assert_eq!(e.kind(), ErrorKind::AlreadyExists);
    p.wait_for_power_state(&vm, |s| *s == PowerState::Running, SETTLE)
        .await
        .expect("running");
    let d = p.describe(&vm).await.unwrap();
    assert_eq!((d.cpu, d.memory_mib), (2, 1536));
    assert_eq!(d.host.as_deref(), Some("node-1"));
    let data = d
        .disks
        .iter()
        .find(|x| x.name == "data")
        .expect("data disk");
    assert_eq!(data.size_gib, 10);
    assert!(d.disks.iter().any(|x| x.name == "rootdisk"));
    let mut other = virtrigaud_core::VmCreateSpec::new("app-2", 1, 512);
    other.labels.insert("tier".into(), "db".into());
    p.create(&other).await.expect("create 2");
    let mut lo = virtrigaud_core::ListOptions::default();
    lo.labels.insert("tier".into(), "web".into());
    let listed = p.list_vms(&lo).await.unwrap();
    assert_eq!(
        listed.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(),
        vec!["app-1"]
    );
    assert_eq!(p.list_vms(&Default::default()).await.unwrap().len(), 2);
    let e = p
        .delete(&vm, &Default::default())
        .await
        .expect_err("running");
    assert_eq!(e.kind(), ErrorKind::InvalidState);
    p.power_off(&vm, &PowerOffOptions::default()).await.unwrap();
    p.wait_for_power_state(&vm, PowerState::is_off, SETTLE)
        .await
        .unwrap();
    let mut del = virtrigaud_core::DeleteOptions::default();
    del.delete_disks = true;
    p.delete(&vm, &del).await.expect("delete");
    assert_eq!(
        p.power_state(&vm).await.expect_err("gone").kind(),
        ErrorKind::NotFound
    );
    let bad = p
        .power_state(&VmId::new("x/Bad_Name"))
        .await
        .expect_err("bad id");
    assert_eq!(bad.kind(), ErrorKind::InvalidSpec);
}

// ---------------------------------------------------------------- clone customization

/// A customized clone keeps its user data in a Secret owned by the VM (never inline), the
/// provider's delete removes that Secret, and no `Debug` of the crate shows the user data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customized_clone_keeps_user_data_in_an_owned_secret() {
    let Some(env) = env("custom", false).await else {
        return;
    };
    let p = &env.provider;
    let src = create_vm(&env.client, &env.ns, "src", "Halted", None, &[]).await;
    let mut c = virtrigaud_core::Customization::default();
    c.hostname = Some("web-2".into());
    c.cloud_init_user_data = Some("#cloud-config\npassword: hunter2-marker\n".into());
    let opts = virtrigaud_core::CloneOptions::new("web-2").with_customization(c);
    let cloner = p.cloner().unwrap();
    let res = cloner.clone_vm(&src, &opts).await.expect("clone");
    assert!(res.customized);
    let vm = env.vms().get("web-2").await.unwrap();
    let uid = vm.metadata.uid.clone().unwrap();
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(env.client.clone(), &env.ns);
    let s = secrets
        .get("web-2-userdata")
        .await
        .expect("the user-data Secret");
    let owners = s.metadata.owner_references.clone().unwrap_or_default();
    assert!(
        owners
            .iter()
            .any(|o| o.uid == uid && o.kind == "VirtualMachine" && o.name == "web-2"),
        "{owners:?}"
    );
    let spec = serde_json::to_string(&vm.spec).unwrap();
    assert!(!spec.contains("hunter2-marker"), "user data inline: {spec}");
    let d = p.describe(&res.vm).await.unwrap();
    for shown in [
        format!("{vm:?}"),
        format!("{res:?}"),
        format!("{p:?}"),
        format!("{d:?}"),
    ] {
        assert!(!shown.contains("hunter2-marker"), "{shown}");
    }
    // a bad hostname is refused before anything is made; its error shows no user data
    let mut bad = opts.clone();
    bad.target_name = "web-3".into();
    if let Some(c) = bad.customization.as_mut() {
        c.hostname = Some("Not_A_Label".into());
    }
    let e = cloner.clone_vm(&src, &bad).await.expect_err("bad hostname");
    assert_eq!(e.kind(), ErrorKind::InvalidSpec);
    assert!(!format!("{e:?} {e}").contains("hunter2-marker"));
    assert!(env.vms().get_opt("web-3").await.unwrap().is_none());
    // delete removes the owned Secret (the test apiserver has no garbage collector)
    p.delete(&res.vm, &Default::default())
        .await
        .expect("delete");
    assert!(secrets.get_opt("web-2-userdata").await.unwrap().is_none());
}
