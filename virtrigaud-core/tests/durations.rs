//! No duration from input or the public API panics (issue 13, "Overflow panics").
//!
//! Parsed durations above their documented maximum ([`MAX_DURATION`] for a grace period
//! or timeout, [`MAX_RETENTION_AGE`] for a snapshot's `maxAge`) are rejected with an
//! `InvalidSpec` error naming the field. Durations given through the orchestration API
//! are never added to the clock unchecked: where the API validates (lifecycle actions, the
//! VMSet reconciler's stop grace) they are rejected, elsewhere they saturate (a timeout
//! too long for the clock means no limit, a restart backoff too long means "not before
//! long", an estimate saturates at `Duration::MAX`).
#![cfg(feature = "yaml")]
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use proptest::prelude::*;
use tokio::time::Instant;
use virtrigaud_core::model::*;
use virtrigaud_core::orchestration::image::{
    FileSink, ImagePreparer, ImageSource, ImageTarget, PrepareOptions, SourceStream,
};
use virtrigaud_core::orchestration::{
    Orchestrator, OrchestratorConfig, PlanMode, ReconfigureOptions, ResourceChange, RetentionRules,
    SnapshotCreateOptions, Supervisor, SupervisorConfig, SupervisorPhase, plan_retention,
};
use virtrigaud_core::shutdown::{ShutdownManager, ShutdownPolicy};
use virtrigaud_core::sim::{GuestBehavior, Simulator};
use virtrigaud_core::vmset::VmSetReconciler;
use virtrigaud_core::{
    Error, ErrorKind, PowerOffOptions, PowerState, Provider, ProviderCapabilities, Result,
    RevertOptions, ShutdownChannel, ShutdownRequestOptions, SnapshotInfo, SnapshotOptions,
    Snapshotter, StartOptions, VmCapabilities, VmDescription, VmId,
};

/// [`MAX_DURATION`] in whole seconds, as `gracePeriodSeconds` counts it.
const MAX_GRACE_PERIOD_SECONDS: i64 = 365 * 86_400;

const HEADER: &str = "apiVersion: infra.virtrigaud.io/v1beta1\n";

fn doc(kind: &str, spec: &str) -> String {
    format!("{HEADER}kind: {kind}\nmetadata:\n  name: x\nspec:\n{spec}")
}

/// Parse expecting an `InvalidSpec` rule error at `path` that quotes the maximum.
fn too_long<T: serde::de::DeserializeOwned + Validate + std::fmt::Debug>(text: &str, path: &str) {
    let err = from_yaml_str::<T>(text).unwrap_err();
    let errors = err
        .spec_errors()
        .unwrap_or_else(|| panic!("not a rule error: {err}"))
        .clone();
    let e = errors
        .find(path)
        .unwrap_or_else(|| panic!("no error at {path}: {errors}"));
    assert!(e.rule.contains("must be at most"), "{:?}", e.rule);
    let err: Error = err.into();
    assert_eq!(err.kind(), ErrorKind::InvalidSpec);
    assert!(err.to_string().contains(path), "{err}");
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

// ---------------------------------------------------------------------------------------
// The model: every duration field has a documented maximum.

#[test]
fn the_maxima_are_documented_values() {
    assert_eq!(MAX_DURATION, secs(365 * 86_400));
    assert_eq!(MAX_RETENTION_AGE, secs(100 * 31_557_600));
}

#[test]
fn seed004_grace_period_seconds_above_the_maximum_is_rejected() {
    let action = |g: &str| format!("action: stop\ngracePeriodSeconds: {g}\n");
    // Seed 004's value, and the largest an i64 can hold.
    let a: LifecycleAction = from_yaml_str(&action("60")).unwrap();
    assert_eq!(a.grace_period(DEFAULT_STOP_GRACE_PERIOD), secs(60));
    let max = MAX_DURATION.as_secs().to_string();
    let a: LifecycleAction = from_yaml_str(&action(&max)).unwrap();
    assert_eq!(a.grace_period(DEFAULT_STOP_GRACE_PERIOD), MAX_DURATION);
    for bad in [
        (MAX_DURATION.as_secs() + 1).to_string(),
        "9223372036854775807".to_owned(),
    ] {
        too_long::<LifecycleAction>(&action(&bad), "gracePeriodSeconds");
    }
    // Negative values stay rejected, down to i64::MIN.
    let err = from_yaml_str::<LifecycleAction>(&action("-9223372036854775808")).unwrap_err();
    assert_eq!(err.path(), Some("gracePeriodSeconds"), "{err}");
    // Beyond i64: a typed field error, not a panic.
    let err = from_yaml_str::<LifecycleAction>(&action("9223372036854775808")).unwrap_err();
    assert_eq!(err.path(), Some("gracePeriodSeconds"), "{err}");
    assert_eq!(Error::from(err).kind(), ErrorKind::InvalidSpec);
}

#[test]
fn seed000_graceful_shutdown_timeout_above_the_maximum_is_rejected() {
    let vm = |t: &str| {
        doc(
            "VirtualMachine",
            &format!(
                "  powerState: OffGraceful\n  lifecycle:\n    gracefulShutdownTimeout: \"{t}\"\n"
            ),
        )
    };
    let ok: VirtualMachine = from_yaml_str(&vm("365d")).unwrap();
    assert_eq!(ok.spec.graceful_shutdown_timeout(), MAX_DURATION);
    for bad in ["300000000000y", "365d 1s", "1y"] {
        too_long::<VirtualMachine>(&vm(bad), "spec.lifecycle.gracefulShutdownTimeout");
    }
    // Too large even for humantime: a field error with the path.
    let err = from_yaml_str::<VirtualMachine>(&vm("1000000000000y")).unwrap_err();
    assert_eq!(err.path(), Some("spec.lifecycle.gracefulShutdownTimeout"));
    assert_eq!(Error::from(err).kind(), ErrorKind::InvalidSpec);
    // The same field inside a VMSet template.
    let set = doc(
        "VMSet",
        "  template:\n    spec:\n      lifecycle:\n        gracefulShutdownTimeout: \"300000000000y\"\n",
    );
    too_long::<VMSet>(&set, "spec.template.spec.lifecycle.gracefulShutdownTimeout");
}

#[test]
fn image_timeout_and_snapshot_max_age_above_their_maxima_are_rejected() {
    let image = |t: &str| {
        doc(
            "VMImage",
            &format!(
                "  libvirt: {{url: \"https://example.test/a.img\"}}\n  prepare:\n    timeout: \"{t}\"\n"
            ),
        )
    };
    let ok: VMImage = from_yaml_str(&image("30m")).unwrap();
    assert_eq!(
        ok.spec.prepare.unwrap().timeout,
        Some(HumanDuration::from_secs(1800))
    );
    from_yaml_str::<VMImage>(&image("365d")).unwrap();
    too_long::<VMImage>(&image("366d"), "spec.prepare.timeout");
    too_long::<VMImage>(&image("300000000000y"), "spec.prepare.timeout");

    let snap = |a: &str| {
        doc(
            "VMSnapshot",
            &format!("  vmRef: {{name: web}}\n  retentionPolicy:\n    maxAge: \"{a}\"\n"),
        )
    };
    from_yaml_str::<VMSnapshot>(&snap("7d")).unwrap();
    from_yaml_str::<VMSnapshot>(&snap("100y")).unwrap();
    too_long::<VMSnapshot>(&snap("100y 1s"), "spec.retentionPolicy.maxAge");
    too_long::<VMSnapshot>(&snap("300000000000y"), "spec.retentionPolicy.maxAge");
}

/// Duration texts: valid-looking numbers with every unit (from tiny to beyond u64),
/// combinations, and arbitrary text.
fn duration_text() -> impl Strategy<Value = String> {
    let unit = prop::sample::select(vec![
        "ns", "us", "ms", "s", "sec", "m", "min", "h", "hr", "d", "days", "w", "M", "y", "years",
    ]);
    prop_oneof![
        (any::<u64>(), unit.clone()).prop_map(|(n, u)| format!("{n}{u}")),
        (0u64..1_000_000, unit.clone()).prop_map(|(n, u)| format!("{n}{u}")),
        ("[0-9]{1,30}", unit.clone()).prop_map(|(n, u)| format!("{n}{u}")),
        (any::<u32>(), unit.clone(), any::<u32>(), unit)
            .prop_map(|(a, u, b, v)| format!("{a}{u} {b}{v}")),
        "\\PC{0,24}",
        "-[0-9]{1,20}[smhd]",
    ]
}

fn grace_seconds() -> impl Strategy<Value = i64> {
    prop_oneof![
        any::<i64>(),
        Just(i64::MAX),
        Just(i64::MIN),
        -10i64..10,
        (MAX_GRACE_PERIOD_SECONDS - 3)..(MAX_GRACE_PERIOD_SECONDS + 3),
    ]
}

/// What every accepted document promises: its durations can be added to the clock.
fn usable(d: Duration) {
    assert!(d <= MAX_RETENTION_AGE, "{d:?}");
    let _ = Instant::now() + d;
    let _ = SystemTime::now() + d;
}

/// `Ok` or an `InvalidSpec` error; never a panic.
fn ok_or_invalid<T: std::fmt::Debug>(r: std::result::Result<T, ParseError>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            assert!(e.path().is_some(), "an error without a field path: {e}");
            assert_eq!(Error::from(e).kind(), ErrorKind::InvalidSpec);
            None
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_durations_parse_or_are_invalid_never_panic(text in duration_text(), grace in grace_seconds()) {
        let quoted = serde_json::to_string(&text).unwrap();

        let action = format!(r#"{{"action":"stop","gracePeriodSeconds":{grace}}}"#);
        if let Some(a) = ok_or_invalid(from_json_str::<LifecycleAction>(&action)) {
            prop_assert!((0..=MAX_GRACE_PERIOD_SECONDS).contains(&grace));
            let g = a.grace_period(DEFAULT_STOP_GRACE_PERIOD);
            prop_assert!(g <= MAX_DURATION);
            usable(g);
        } else {
            prop_assert!(!(0..=MAX_GRACE_PERIOD_SECONDS).contains(&grace));
        }

        let vm = format!(
            r#"{{"apiVersion":"infra.virtrigaud.io/v1beta1","kind":"VirtualMachine","metadata":{{"name":"x"}},
                "spec":{{"lifecycle":{{"gracefulShutdownTimeout":{quoted}}}}}}}"#
        );
        if let Some(vm) = ok_or_invalid(from_json_str::<VirtualMachine>(&vm)) {
            let t = vm.spec.graceful_shutdown_timeout();
            prop_assert!(t <= MAX_DURATION);
            usable(t);
            usable(ShutdownPolicy::with_grace(t).grace);
        }

        let set = format!(
            r#"{{"apiVersion":"infra.virtrigaud.io/v1beta1","kind":"VMSet","metadata":{{"name":"x"}},
                "spec":{{"template":{{"spec":{{"lifecycle":{{"gracefulShutdownTimeout":{quoted}}}}}}}}}}}"#
        );
        if let Some(set) = ok_or_invalid(from_json_str::<VMSet>(&set)) {
            let t = set.spec.template.spec.graceful_shutdown_timeout();
            prop_assert!(t <= MAX_DURATION);
            usable(t);
        }

        let image = format!(
            r#"{{"apiVersion":"infra.virtrigaud.io/v1beta1","kind":"VMImage","metadata":{{"name":"x"}},
                "spec":{{"libvirt":{{"url":"https://example.test/a.img"}},"prepare":{{"timeout":{quoted}}}}}}}"#
        );
        if let Some(image) = ok_or_invalid(from_json_str::<VMImage>(&image)) {
            let o = PrepareOptions::from_spec(image.spec.prepare.as_ref(), None);
            prop_assert!(o.timeout <= MAX_DURATION);
            usable(o.timeout);
        }

        let snap = format!(
            r#"{{"apiVersion":"infra.virtrigaud.io/v1beta1","kind":"VMSnapshot","metadata":{{"name":"x"}},
                "spec":{{"vmRef":{{"name":"web"}},"retentionPolicy":{{"maxAge":{quoted}}}}}}}"#
        );
        if let Some(snap) = ok_or_invalid(from_json_str::<VMSnapshot>(&snap)) {
            let age = snap.spec.retention_policy.unwrap().max_age.unwrap().as_duration();
            prop_assert!(!age.is_zero() && age <= MAX_RETENTION_AGE);
            usable(age);
            let mut info = SnapshotInfo::new("s1", "s1");
            info.created_at = Some(UNIX_EPOCH);
            let doomed = plan_retention(&[info], RetentionRules::new(Some(age), None), SystemTime::now(), &HashSet::new());
            prop_assert!(doomed.len() <= 1);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Durations through the API: each of these panicked before.

/// The longest duration that can still be added to the (paused) clock's current instant:
/// a timer at `now + edge_of_clock()` overflowed inside tokio (`deadline + 999_999 ns`).
fn edge_of_clock() -> Duration {
    let now = Instant::now();
    let fits = |d: Duration| now.checked_add(d).is_some();
    let (mut lo, mut hi) = (0u64, u64::MAX);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if fits(Duration::from_secs(mid)) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    let (mut nlo, mut nhi) = (0u32, 999_999_999u32);
    while nlo < nhi {
        let mid = nlo + (nhi - nlo).div_ceil(2);
        if fits(Duration::new(lo, mid)) {
            nlo = mid;
        } else {
            nhi = mid - 1;
        }
    }
    let d = Duration::new(lo, nlo);
    assert!(fits(d) && now.checked_add(d + Duration::from_millis(1)).is_none());
    d
}

#[tokio::test(start_paused = true)]
async fn lifecycle_action_with_an_i64_max_grace_is_invalid_spec_and_nothing_is_signalled() {
    let sim = Simulator::new();
    let vm = sim.add_vm("app", GuestBehavior::cooperative());
    let orch = Orchestrator::new(Arc::new(sim.clone()));
    let action = LifecycleAction::stop().with_grace_period_seconds(i64::MAX);
    let err = orch
        .apply_action(&vm, &action, RunStrategy::Manual)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidSpec, "{err}");
    assert!(err.to_string().contains("gracePeriodSeconds"), "{err}");
    assert_eq!(sim.calls("request_shutdown"), 0);
    assert_eq!(sim.true_state(&vm), Some(PowerState::Running));
    // The supervisor path validates the same way.
    let sup = Supervisor::spawn(
        orch.clone(),
        vm.clone(),
        RunStrategy::Manual,
        SupervisorConfig::default(),
    );
    let err = sup.action(action).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidSpec, "{err}");
    assert_eq!(sim.true_state(&vm), Some(PowerState::Running));
    sup.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn vmset_with_a_huge_template_grace_fails_the_pass_with_invalid_spec() {
    let sim = Simulator::new();
    let provider: Arc<dyn Provider> = Arc::new(sim.clone());
    let reconciler = VmSetReconciler::new(
        Arc::clone(&provider),
        ShutdownManager::new(Arc::clone(&provider)),
    );
    let mut spec = VMSetSpec::default();
    spec.replicas = Some(1);
    let mut set = VMSet::new("web", spec);
    reconciler
        .run_until_converged(&set, secs(1), 20)
        .await
        .unwrap();
    assert_eq!(sim.vm_count(), 1);
    // Scale to zero with an unvalidated (built in code) template whose grace is huge.
    set.spec.replicas = Some(0);
    let mut lifecycle = VmLifecycle::default();
    lifecycle.graceful_shutdown_timeout = Some("300000000000y".parse().unwrap());
    set.spec.template.spec.lifecycle = Some(lifecycle);
    let err = reconciler.reconcile(&set).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidSpec, "{err}");
    assert!(
        err.to_string()
            .contains("spec.template.spec.lifecycle.gracefulShutdownTimeout"),
        "{err}"
    );
    assert_eq!(sim.vm_count(), 1, "nothing removed");
    assert_eq!(sim.calls("request_shutdown"), 0);
    // An explicit shutdown policy replaces the template's grace: the set scales down.
    let reconciler = VmSetReconciler::new(
        Arc::clone(&provider),
        ShutdownManager::new(Arc::clone(&provider)),
    )
    .shutdown_policy(ShutdownPolicy::with_grace(secs(30)));
    reconciler
        .run_until_converged(&set, secs(1), 20)
        .await
        .unwrap();
    assert_eq!(sim.vm_count(), 0);
}

/// An in-memory image source; `slow` makes each open take 1 ms (so a stall timer is
/// armed), `cut` ends the first attempt after 5000 bytes with a retryable error.
#[derive(Debug)]
struct Memory {
    data: Bytes,
    slow: bool,
    cut: AtomicU64,
}

#[async_trait]
impl ImageSource for Memory {
    async fn open(&self, offset: u64) -> Result<SourceStream> {
        if self.slow {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let rest = self.data.slice(usize::try_from(offset).unwrap()..);
        let mut chunks: Vec<Result<Bytes>> = rest
            .chunks(1000)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        if self.cut.swap(0, Ordering::SeqCst) == 1 {
            chunks.truncate(5);
            chunks.push(Err(Error::unavailable("connection reset")));
        }
        Ok(SourceStream::new(
            offset,
            Some(self.data.len() as u64),
            futures::stream::iter(chunks).boxed(),
        ))
    }
}

/// Prepares a 20 000-byte image; returns its stored size and the number of progress reports.
async fn prepare_with(
    opts: PrepareOptions,
    every: u64,
    slow: bool,
    cut: bool,
) -> (Result<u64>, u64) {
    let dir = tempfile::tempdir().unwrap();
    let reports = Arc::new(AtomicU64::new(0));
    let r = Arc::clone(&reports);
    let prep =
        ImagePreparer::new(Arc::new(FileSink::new(dir.path()))).on_progress(every, move |_| {
            r.fetch_add(1, Ordering::SeqCst);
        });
    let source = Memory {
        data: Bytes::from(vec![7u8; 20_000]),
        slow,
        cut: AtomicU64::new(u64::from(cut)),
    };
    let mut image = VMImage::new("img", VMImageSpec::default());
    let res = prep
        .prepare(&mut image, &ImageTarget::new("img"), &source, &opts)
        .await
        .map(|r| r.image.size_bytes);
    (res, reports.load(Ordering::SeqCst))
}

#[tokio::test(start_paused = true)]
async fn image_preparation_with_a_max_overall_timeout_has_no_limit() {
    let mut opts = PrepareOptions::default();
    opts.timeout = Duration::MAX;
    let (res, _) = prepare_with(opts, 8 << 20, true, false).await;
    assert_eq!(res.unwrap(), 20_000);
}

#[tokio::test(start_paused = true)]
async fn image_preparation_with_an_overall_timeout_at_the_edge_of_the_clock_has_no_limit() {
    let mut opts = PrepareOptions::default();
    opts.timeout = edge_of_clock();
    let (res, _) = prepare_with(opts, 8 << 20, true, false).await;
    assert_eq!(res.unwrap(), 20_000);
}

#[tokio::test(start_paused = true)]
async fn image_preparation_with_a_stall_timeout_at_the_edge_of_the_clock_has_no_limit() {
    let mut opts = PrepareOptions::default();
    opts.stall_timeout = edge_of_clock();
    let (res, _) = prepare_with(opts, 8 << 20, true, false).await;
    assert_eq!(res.unwrap(), 20_000);
}

#[tokio::test(start_paused = true)]
async fn image_progress_every_u64_max_survives_a_resumed_attempt() {
    let mut opts = PrepareOptions::default();
    opts.retry_delay = Duration::from_millis(10);
    let (res, reports) = prepare_with(opts, u64::MAX, false, true).await;
    assert_eq!(res.unwrap(), 20_000);
    assert_eq!(
        reports, 1,
        "only the end-of-attempt report of the resumed attempt"
    );
}

#[tokio::test(start_paused = true)]
async fn snapshot_failure_deadline_at_the_edge_of_the_clock_has_no_limit() {
    let sim = Simulator::new();
    let vm = sim.add_vm("db", GuestBehavior::cooperative());
    // A provider whose snapshot takes 1 ms, so the deadline's timer is armed.
    let orch = Orchestrator::new(Arc::new(OddClock {
        sim: sim.clone(),
        created_at: None,
        delay: Duration::from_millis(1),
    }));
    for (i, deadline) in [edge_of_clock(), Duration::MAX].into_iter().enumerate() {
        let mut opts = SnapshotCreateOptions::default();
        opts.failure_deadline = deadline;
        let mut spec = VMSnapshotSpec::default();
        spec.vm_ref = ObjectRef::new("db");
        let mut snap = VMSnapshot::new(format!("s{i}"), spec);
        let r = orch.create_snapshot(&vm, &mut snap, &opts).await.unwrap();
        assert!(!r.info.id.is_empty());
        assert_eq!(
            snap.status.unwrap().phase,
            Some(SnapshotPhase::Ready),
            "{deadline:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn reconfigure_plan_with_a_max_grace_saturates_the_downtime_estimate() {
    let sim = Simulator::new();
    let vm = sim.add_vm("web", GuestBehavior::cooperative());
    let mut config = OrchestratorConfig::default();
    config.stop_policy = ShutdownPolicy::with_grace(Duration::MAX);
    let orch = Orchestrator::new(Arc::new(sim.clone())).with_config(config);
    let change = ResourceChange::default().cpu(16); // beyond the live maximum
    let plan = orch
        .plan_reconfigure(&vm, &change, &ReconfigureOptions::default())
        .await
        .unwrap();
    assert_eq!(
        plan.mode,
        PlanMode::GracefulPowerCycle {
            expected_downtime: Duration::MAX
        }
    );
    // A near-limit boot estimate saturates the same way.
    let mut config = OrchestratorConfig::default();
    config.boot_estimate = Duration::MAX - secs(1);
    let orch = Orchestrator::new(Arc::new(sim.clone())).with_config(config);
    let plan = orch
        .plan_reconfigure(&vm, &change, &ReconfigureOptions::default())
        .await
        .unwrap();
    assert_eq!(
        plan.mode,
        PlanMode::GracefulPowerCycle {
            expected_downtime: Duration::MAX
        }
    );
}

#[tokio::test(start_paused = true)]
async fn supervisor_with_a_max_poll_interval_keeps_serving() {
    let sim = Simulator::new();
    let vm = sim.add_stopped_vm("w", GuestBehavior::cooperative());
    let orch = Orchestrator::new(Arc::new(sim.clone()));
    let mut config = SupervisorConfig::default();
    config.poll_interval = Duration::MAX;
    let sup = Supervisor::spawn(orch, vm.clone(), RunStrategy::Manual, config);
    tokio::time::sleep(secs(5)).await;
    // The task is alive: it applies an action and reports its state.
    sup.action(LifecycleAction::start()).await.unwrap();
    assert_eq!(sim.true_state(&vm), Some(PowerState::Running));
    assert_eq!(sup.status().phase, SupervisorPhase::Watching);
    sup.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn supervisor_with_a_max_restart_backoff_backs_off_instead_of_panicking() {
    let sim = Simulator::new();
    let vm = sim.add_vm("w", GuestBehavior::cooperative().acpi_after(secs(1)));
    let orch = Orchestrator::new(Arc::new(sim.clone()));
    let mut config = SupervisorConfig::default();
    config.restart_backoff = Duration::MAX;
    config.max_restart_backoff = Duration::MAX;
    let sup = Supervisor::spawn(orch, vm.clone(), RunStrategy::Always, config);
    tokio::time::sleep(secs(5)).await;
    // A clean stop within minUptime (60 s) is a failed boot: backoff × 2 overflowed.
    sim.request_shutdown(
        &vm,
        ShutdownChannel::Acpi,
        &ShutdownRequestOptions::default(),
    )
    .await
    .unwrap();
    tokio::time::sleep(secs(3600)).await;
    assert!(sim.true_state(&vm).unwrap().is_off(), "backing off");
    assert_eq!(
        sup.status().phase,
        SupervisorPhase::BackingOff { failed_boots: 1 }
    );
    // Still alive: a start action resets the backoff.
    sup.action(LifecycleAction::start()).await.unwrap();
    assert_eq!(sim.true_state(&vm), Some(PowerState::Running));
    sup.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// Times from a provider: a snapshot "created" outside what RFC 3339 can show.

#[derive(Debug)]
struct OddClock {
    sim: Simulator,
    /// Reported as the creation time of a new snapshot, when set.
    created_at: Option<SystemTime>,
    /// How long a snapshot takes.
    delay: Duration,
}

#[async_trait]
impl Provider for OddClock {
    fn provider_type(&self) -> &'static str {
        "odd-clock"
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
    async fn start(&self, vm: &VmId, o: &StartOptions) -> Result<()> {
        self.sim.start(vm, o).await
    }
    async fn power_off(&self, vm: &VmId, o: &PowerOffOptions) -> Result<()> {
        self.sim.power_off(vm, o).await
    }
    async fn request_shutdown(
        &self,
        vm: &VmId,
        c: ShutdownChannel,
        o: &ShutdownRequestOptions,
    ) -> Result<()> {
        self.sim.request_shutdown(vm, c, o).await
    }
    async fn describe(&self, vm: &VmId) -> Result<VmDescription> {
        self.sim.describe(vm).await
    }
    fn snapshotter(&self) -> Option<&dyn Snapshotter> {
        Some(self)
    }
}

#[async_trait]
impl Snapshotter for OddClock {
    async fn create_snapshot(&self, vm: &VmId, opts: &SnapshotOptions) -> Result<SnapshotInfo> {
        tokio::time::sleep(self.delay).await;
        let s = self.sim.snapshotter().unwrap();
        let mut info = s.create_snapshot(vm, opts).await?;
        if let Some(t) = self.created_at {
            info.created_at = Some(t);
        }
        Ok(info)
    }
    async fn list_snapshots(&self, vm: &VmId) -> Result<Vec<SnapshotInfo>> {
        self.sim.snapshotter().unwrap().list_snapshots(vm).await
    }
    async fn revert_snapshot(&self, vm: &VmId, s: &str, o: &RevertOptions) -> Result<()> {
        self.sim
            .snapshotter()
            .unwrap()
            .revert_snapshot(vm, s, o)
            .await
    }
    async fn delete_snapshot(
        &self,
        vm: &VmId,
        s: &str,
        o: &virtrigaud_core::DeleteSnapshotOptions,
    ) -> Result<()> {
        self.sim
            .snapshotter()
            .unwrap()
            .delete_snapshot(vm, s, o)
            .await
    }
}

#[tokio::test(start_paused = true)]
async fn snapshot_times_before_1970_or_after_9999_are_clamped_in_the_status() {
    let far = UNIX_EPOCH + secs(300_000 * 31_557_600); // year ~302 000
    let early = UNIX_EPOCH - secs(86_400);
    for (created_at, shown) in [
        (far, "9999-12-31T23:59:59Z"),
        (early, "1970-01-01T00:00:00Z"),
    ] {
        let sim = Simulator::new();
        let vm = sim.add_vm("db", GuestBehavior::cooperative());
        let orch = Orchestrator::new(Arc::new(OddClock {
            sim: sim.clone(),
            created_at: Some(created_at),
            delay: Duration::ZERO,
        }));
        let mut spec = VMSnapshotSpec::default();
        spec.vm_ref = ObjectRef::new("db");
        let mut snap = VMSnapshot::new("s", spec);
        orch.create_snapshot(&vm, &mut snap, &SnapshotCreateOptions::default())
            .await
            .unwrap();
        let st = snap.status.unwrap();
        assert_eq!(st.phase, Some(SnapshotPhase::Ready));
        assert_eq!(st.creation_time.as_deref(), Some(shown));
    }
}
