//! The engine's safety promises at their edges, on the simulator and tokio's paused clock:
//! a guest always gets the grace that belongs to this run of it, NotFound and transient
//! errors never end a shutdown early, cancelling disarms, and no input panics.
#![allow(clippy::unwrap_used, clippy::clone_on_ref_ptr)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tokio::time::{Instant, sleep};
use virtrigaud_core::shutdown::{
    FileJournal, FleetShutdown, ForcedReason, Lease, LeaseScope, MemoryJournal, ShutdownEventKind,
    ShutdownJournal, ShutdownManager, ShutdownOutcome, ShutdownPolicy, StaleLease, TokioClock,
    WallClock,
};
use virtrigaud_core::sim::{GuestBehavior, Simulator};
use virtrigaud_core::{
    AgentStatus, ErrorKind, Incarnation, PowerOffOptions, PowerState, PowerStateStream, Provider,
    ProviderCapabilities, Result, ShutdownChannel, ShutdownRequestOptions, StartOptions,
    VmCapabilities, VmDescription, VmId,
};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn epoch_clock() -> Arc<TokioClock> {
    Arc::new(TokioClock::new(
        SystemTime::UNIX_EPOCH + secs(1_700_000_000),
    ))
}

fn sim_scope() -> LeaseScope {
    LeaseScope::new("simulator", "")
}

fn journalled(
    sim: &Simulator,
    journal: Arc<dyn ShutdownJournal>,
    clock: Arc<dyn WallClock>,
) -> ShutdownManager {
    ShutdownManager::builder(Arc::new(sim.clone()))
        .journal(journal)
        .clock(clock)
        .build()
}

/// A journal in `dir`; each call opens its own, as a separate process would.
fn file_journal(dir: &tempfile::TempDir) -> Arc<dyn ShutdownJournal> {
    Arc::new(FileJournal::open(dir.path()).unwrap())
}

/// A manager over a journal in `dir`.
fn on_dir(sim: &Simulator, dir: &tempfile::TempDir, clock: Arc<dyn WallClock>) -> ShutdownManager {
    journalled(sim, file_journal(dir), clock)
}

/// Starts a shutdown, lets it run `for_` and "crashes" the process (drops the manager).
async fn crash_mid_grace(
    sim: &Simulator,
    vm: &VmId,
    journal: Arc<dyn ShutdownJournal>,
    clock: Arc<dyn WallClock>,
    grace: Duration,
    for_: Duration,
) {
    let m = journalled(sim, journal, clock);
    let _h = m.start(vm, ShutdownPolicy::with_grace(grace)).unwrap();
    sleep(for_).await;
}

/// Someone at the console power-cycles the VM: a new run.
async fn restart_by_hand(sim: &Simulator, vm: &VmId) {
    sim.power_off(vm, &PowerOffOptions::default())
        .await
        .unwrap();
    sim.start_by_hand(vm);
}

// ---------------------------------------------------------------- stale leases

#[tokio::test(start_paused = true)]
async fn a_lease_of_an_earlier_run_never_cuts_the_grace_of_a_later_one() {
    let dir = tempfile::tempdir().unwrap();
    let clock = epoch_clock();
    let sim = Simulator::new();
    let vm = sim.add_vm("db", GuestBehavior::ignores_acpi());
    crash_mid_grace(
        &sim,
        &vm,
        file_journal(&dir),
        clock.clone(),
        secs(60),
        secs(20),
    )
    .await;
    // Restarted by hand 5 s after the crash, shut down again 10 s later with a 60 s grace:
    // before the lease was bound to a run, it was powered off at once (20 s + 15 s > 30 s
    // of the old lease left... and only ever shortened), with no signal.
    sleep(secs(5)).await;
    restart_by_hand(&sim, &vm).await;
    sleep(secs(10)).await;
    let signals_before = sim.signals_received(&vm);
    let m = on_dir(&sim, &dir, clock);
    let mut events = m.subscribe();
    let start = Instant::now();
    let r = m
        .shutdown(&vm, ShutdownPolicy::with_grace(secs(60)))
        .await
        .unwrap();
    assert_eq!(start.elapsed(), secs(60), "a full, fresh grace");
    assert!(!r.resumed);
    assert!(matches!(
        r.outcome,
        ShutdownOutcome::Forced {
            reason: ForcedReason::Timeout
        }
    ));
    assert!(sim.signals_received(&vm) > signals_before, "signalled");
    let mut discarded = None;
    while let Ok(e) = events.try_recv() {
        if let ShutdownEventKind::StaleLeaseDiscarded { reason } = e.kind {
            discarded = Some(reason);
        }
    }
    assert_eq!(discarded, Some(StaleLease::OtherRun));
}

#[tokio::test(start_paused = true)]
async fn a_lease_a_day_old_expires_even_without_an_incarnation() {
    let dir = tempfile::tempdir().unwrap();
    let clock = epoch_clock();
    let journal = Arc::new(FileJournal::open(dir.path()).unwrap());
    let sim = Simulator::new();
    let vm = sim.add_vm("web", GuestBehavior::ignores_acpi());
    // A lease left by a process that crashed a day ago, from a provider that cannot tell
    // runs apart (no incarnation recorded).
    let t = clock.now() - secs(86_400);
    journal
        .record(&Lease::new(&sim_scope(), vm.clone(), t, t + secs(60)))
        .await
        .unwrap();
    let m = journalled(&sim, journal.clone(), clock);
    let start = Instant::now();
    let r = m
        .shutdown(&vm, ShutdownPolicy::with_grace(secs(60)))
        .await
        .unwrap();
    assert_eq!(start.elapsed(), secs(60));
    assert!(!r.resumed);
    assert!(r.signals_sent >= 1);
    assert!(journal.list(&sim_scope()).await.unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn resume_pending_leaves_a_vm_restarted_by_hand_alone() {
    let dir = tempfile::tempdir().unwrap();
    let clock = epoch_clock();
    let sim = Simulator::new();
    let vm = sim.add_vm("app", GuestBehavior::ignores_acpi());
    crash_mid_grace(
        &sim,
        &vm,
        file_journal(&dir),
        clock.clone(),
        secs(60),
        secs(10),
    )
    .await;
    restart_by_hand(&sim, &vm).await;
    let offs = sim.effective_power_offs(&vm);
    let journal = Arc::new(FileJournal::open(dir.path()).unwrap());
    let m = journalled(&sim, journal.clone(), clock);
    let handles = m.resume_pending(ShutdownPolicy::default()).await.unwrap();
    assert!(handles.is_empty(), "nothing to resume");
    sleep(secs(120)).await;
    assert_eq!(sim.true_state(&vm), Some(PowerState::Running));
    assert_eq!(sim.effective_power_offs(&vm), offs);
    assert!(journal.list(&sim_scope()).await.unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn resume_pending_still_resumes_the_same_run_at_its_original_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let clock = epoch_clock();
    let sim = Simulator::new();
    let vm = sim.add_vm("app", GuestBehavior::ignores_acpi());
    let start = Instant::now();
    crash_mid_grace(
        &sim,
        &vm,
        file_journal(&dir),
        clock.clone(),
        secs(60),
        secs(10),
    )
    .await;
    let m = on_dir(&sim, &dir, clock);
    let handles = m.resume_pending(ShutdownPolicy::default()).await.unwrap();
    assert_eq!(handles.len(), 1);
    let r = handles.into_iter().next().unwrap().wait().await;
    assert_eq!(start.elapsed(), secs(60));
    assert!(r.resumed);
}

// ---------------------------------------------------------------- journal scope and lock

#[tokio::test(start_paused = true)]
async fn two_hosts_sharing_a_journal_never_resume_each_others_vms() {
    let dir = tempfile::tempdir().unwrap();
    let clock = epoch_clock();
    let host_a = Simulator::new();
    host_a.set_instance_id("qemu+ssh://host-a/system");
    let host_b = Simulator::new();
    host_b.set_instance_id("qemu+ssh://host-b/system");
    let vm_a = host_a.add_vm("web", GuestBehavior::ignores_acpi());
    let vm_b = host_b.add_vm("web", GuestBehavior::ignores_acpi());
    crash_mid_grace(
        &host_a,
        &vm_a,
        file_journal(&dir),
        clock.clone(),
        secs(60),
        secs(10),
    )
    .await;
    let b = on_dir(&host_b, &dir, clock.clone());
    assert!(
        b.resume_pending(ShutdownPolicy::default())
            .await
            .unwrap()
            .is_empty()
    );
    // And host B's own shutdown of its "web" gets its own full grace.
    let start = Instant::now();
    let r = b
        .shutdown(&vm_b, ShutdownPolicy::with_grace(secs(30)))
        .await
        .unwrap();
    assert_eq!(start.elapsed(), secs(30));
    assert!(!r.resumed);
    let a = on_dir(&host_a, &dir, clock);
    assert_eq!(
        a.resume_pending(ShutdownPolicy::default())
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn a_second_process_on_the_same_journal_gets_conflict_and_sends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let clock = epoch_clock();
    let sim = Simulator::new();
    let vm = sim.add_vm("db", GuestBehavior::ignores_acpi());
    // Two FileJournal instances hold separate locks, as two processes would.
    let first = on_dir(&sim, &dir, clock.clone());
    let h = first
        .start(&vm, ShutdownPolicy::with_grace(secs(60)))
        .unwrap();
    sleep(secs(1)).await;
    let signals = sim.signals_received(&vm);
    let second = on_dir(&sim, &dir, clock);
    let r = second.shutdown(&vm, ShutdownPolicy::force()).await.unwrap();
    match &r.outcome {
        ShutdownOutcome::Failed { error } => assert_eq!(error.kind(), ErrorKind::Conflict),
        other => panic!("expected a conflict, got {other}"),
    }
    assert_eq!(sim.signals_received(&vm), signals);
    assert_eq!(
        sim.effective_power_offs(&vm),
        0,
        "the force was not applied"
    );
    let r = h.wait().await;
    assert_eq!(r.elapsed, secs(60));
}

/// A journal whose every call hangs, like one on a dead NFS mount.
#[derive(Debug)]
struct HungJournal;

#[async_trait]
impl ShutdownJournal for HungJournal {
    async fn record(&self, _lease: &Lease) -> Result<()> {
        std::future::pending().await
    }
    async fn remove(&self, _scope: &LeaseScope, _vm: &VmId) -> Result<()> {
        std::future::pending().await
    }
    async fn get(&self, _scope: &LeaseScope, _vm: &VmId) -> Result<Option<Lease>> {
        std::future::pending().await
    }
    async fn list(&self, _scope: &LeaseScope) -> Result<Vec<Lease>> {
        std::future::pending().await
    }
}

#[tokio::test(start_paused = true)]
async fn a_hung_journal_delays_nothing_past_the_deadline() {
    let sim = Simulator::new();
    let vm = sim.add_vm("db", GuestBehavior::ignores_acpi());
    let m = journalled(&sim, Arc::new(HungJournal), epoch_clock());
    let start = Instant::now();
    let r = m
        .shutdown(&vm, ShutdownPolicy::with_grace(secs(30)))
        .await
        .unwrap();
    assert!(r.signals_sent >= 1, "signalled despite the journal");
    assert!(matches!(
        r.outcome,
        ShutdownOutcome::Forced {
            reason: ForcedReason::Timeout
        }
    ));
    // The hard power-off at the deadline, then the end-of-shutdown removal's 2 s budget.
    assert_eq!(r.elapsed, secs(30));
    assert!(start.elapsed() <= secs(32));
    assert!(m.resume_pending(ShutdownPolicy::default()).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn a_corrupt_lease_is_set_aside_not_silently_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let clock = epoch_clock();
    let journal = Arc::new(FileJournal::open(dir.path()).unwrap());
    let sim = Simulator::new();
    let vm = sim.add_vm("db", GuestBehavior::ignores_acpi());
    let now = clock.now();
    journal
        .record(&Lease::new(&sim_scope(), vm.clone(), now, now + secs(60)))
        .await
        .unwrap();
    journal.remove(&sim_scope(), &vm).await.unwrap();
    journal
        .record(&Lease::new(&sim_scope(), vm.clone(), now, now + secs(60)))
        .await
        .unwrap();
    let lease_file = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".lease.json"))
        .unwrap();
    // Torn, then over-long: both set aside.
    for garbage in [b"{\"provider_ty".to_vec(), vec![b' '; 100_000]] {
        std::fs::write(&lease_file, &garbage).unwrap();
        let other = FileJournal::open(dir.path()).unwrap();
        assert_eq!(other.get(&sim_scope(), &vm).await.unwrap(), None);
        assert!(!lease_file.exists(), "set aside");
    }
    let aside = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains(".corrupt-")
        })
        .count();
    assert!(aside >= 1);
}

#[tokio::test(start_paused = true)]
async fn any_vm_id_gets_a_lease_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let clock = epoch_clock();
    let sim = Simulator::new();
    let name = format!("ウェブ/サーバー {}", "ü".repeat(300));
    let vm = sim.add_vm(&name, GuestBehavior::ignores_acpi());
    let start = Instant::now();
    crash_mid_grace(
        &sim,
        &vm,
        file_journal(&dir),
        clock.clone(),
        secs(60),
        secs(10),
    )
    .await;
    let journal = Arc::new(FileJournal::open(dir.path()).unwrap());
    let leases = journal.list(&sim_scope()).await.unwrap();
    assert_eq!(leases.len(), 1);
    assert_eq!(leases[0].vm, vm);
    let m = journalled(&sim, journal, clock);
    let handles = m.resume_pending(ShutdownPolicy::default()).await.unwrap();
    let r = handles.into_iter().next().unwrap().wait().await;
    assert!(r.resumed);
    assert_eq!(start.elapsed(), secs(60));
}

/// A wall clock that can be stepped, as NTP or an operator would.
#[derive(Debug)]
struct SteppedClock {
    inner: TokioClock,
    back: Mutex<Duration>,
}

impl WallClock for SteppedClock {
    fn now(&self) -> SystemTime {
        self.inner.now() - *self.back.lock().unwrap()
    }
}

#[tokio::test(start_paused = true)]
async fn a_clock_stepped_back_never_stretches_a_resumed_grace_beyond_the_original() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(SteppedClock {
        inner: TokioClock::new(SystemTime::UNIX_EPOCH + secs(1_700_000_000)),
        back: Mutex::new(Duration::ZERO),
    });
    let sim = Simulator::new();
    let vm = sim.add_vm("db", GuestBehavior::ignores_acpi());
    let start = Instant::now();
    crash_mid_grace(
        &sim,
        &vm,
        file_journal(&dir),
        clock.clone(),
        secs(60),
        secs(20),
    )
    .await;
    *clock.back.lock().unwrap() = secs(3600);
    let m = on_dir(&sim, &dir, clock);
    let handles = m.resume_pending(ShutdownPolicy::default()).await.unwrap();
    let r = handles.into_iter().next().unwrap().wait().await;
    assert!(r.resumed);
    // At most the original 60 s after the restart (it was 3,640 s before the fix).
    assert!(start.elapsed() <= secs(20 + 60), "{:?}", start.elapsed());
}

// ---------------------------------------------------------------- NotFound and transient errors

#[tokio::test(start_paused = true)]
async fn a_transient_not_found_mid_shutdown_does_not_end_it() {
    for sim in [Simulator::new(), Simulator::polling_only()] {
        let vm = sim.add_vm("moving", GuestBehavior::ignores_acpi());
        let m = ShutdownManager::new(Arc::new(sim.clone()));
        let h = m.start(&vm, ShutdownPolicy::with_grace(secs(30))).unwrap();
        sleep(secs(3)).await;
        // A proxy's 404 on the next read and the next re-sent request.
        sim.inject_fault("power_state", ErrorKind::NotFound);
        sim.inject_fault("request_shutdown", ErrorKind::NotFound);
        let r = h.wait().await;
        assert!(
            matches!(
                r.outcome,
                ShutdownOutcome::Forced {
                    reason: ForcedReason::Timeout
                }
            ),
            "{}",
            r.outcome
        );
        assert_eq!(r.elapsed, secs(30));
    }
}

#[tokio::test(start_paused = true)]
async fn a_vanished_vm_is_not_counted_as_off() {
    let sim = Simulator::new();
    let gone = sim.add_vm(
        "gone",
        GuestBehavior::ignores_acpi().vanishes_after(secs(2)),
    );
    let fine = sim.add_vm("fine", GuestBehavior::cooperative());
    let m = ShutdownManager::new(Arc::new(sim.clone()));
    let report = FleetShutdown::new(&m)
        .group([gone, fine], ShutdownPolicy::with_grace(secs(30)))
        .run()
        .await;
    assert_eq!(report.counts().get("vanished"), Some(&1));
    assert!(!report.all_off());
}

#[tokio::test(start_paused = true)]
async fn retryable_signal_failures_are_retried_inside_the_grace() {
    let sim = Simulator::new();
    let vm = sim.add_vm("busy", GuestBehavior::cooperative().acpi_after(secs(2)));
    // "VM is locked", 503s, time-outs: five in a row used to force after the third.
    for _ in 0..5 {
        sim.inject_fault("request_shutdown", ErrorKind::Unavailable);
    }
    let r = ShutdownManager::new(Arc::new(sim.clone()))
        .shutdown(&vm, ShutdownPolicy::with_grace(secs(60)))
        .await
        .unwrap();
    assert!(
        matches!(r.outcome, ShutdownOutcome::Graceful { .. }),
        "{}",
        r.outcome
    );
    assert_eq!(sim.effective_power_offs(&vm), 0);
}

#[tokio::test(start_paused = true)]
async fn a_signal_that_keeps_failing_transiently_is_forced_only_at_the_deadline() {
    let sim = Simulator::new();
    let vm = sim.add_vm(
        "locked",
        GuestBehavior::cooperative().signal_fails(ErrorKind::Unavailable),
    );
    let r = ShutdownManager::new(Arc::new(sim.clone()))
        .shutdown(&vm, ShutdownPolicy::with_grace(secs(45)))
        .await
        .unwrap();
    assert!(
        matches!(
            r.outcome,
            ShutdownOutcome::Forced {
                reason: ForcedReason::Timeout
            }
        ),
        "{}",
        r.outcome
    );
    assert_eq!(r.elapsed, secs(45));
}

// ---------------------------------------------------------------- overflow

#[tokio::test(start_paused = true)]
async fn huge_durations_are_rejected_or_saturate_never_panic() {
    let sim = Simulator::new();
    let vm = sim.add_vm("db", GuestBehavior::ignores_acpi());
    let m = ShutdownManager::new(Arc::new(sim.clone()));
    for policy in [
        ShutdownPolicy::with_grace(Duration::MAX),
        ShutdownPolicy::with_grace(secs(9_223_372_036_854_775_807)),
        ShutdownPolicy::default().force_budget(Duration::MAX),
        ShutdownPolicy::default().resignal_interval(Some(Duration::MAX)),
        ShutdownPolicy::default().polling(Duration::MAX, Duration::MAX),
    ] {
        let err = m.start(&vm, policy).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidSpec);
        assert!(err.to_string().contains("365 days"), "{err}");
    }
    // The largest accepted values, and shortening by a huge amount, do not panic either.
    let max = ShutdownPolicy::MAX_DURATION;
    let h = m
        .start(
            &vm,
            ShutdownPolicy::with_grace(max)
                .force_budget(max)
                .resignal_interval(Some(max)),
        )
        .unwrap();
    h.shorten(Duration::MAX);
    h.shorten(secs(10));
    let r = h.wait().await;
    assert_eq!(r.elapsed, secs(10));
    let report = FleetShutdown::new(&m)
        .deadline(Duration::MAX)
        .group([vm], ShutdownPolicy::with_grace(secs(5)))
        .run()
        .await;
    assert_eq!(report.entries.len(), 1);
    let _ = TokioClock::new(SystemTime::UNIX_EPOCH + secs(u64::from(u32::MAX))).now();
}

// ---------------------------------------------------------------- a provider with edges

/// The simulator, with the edges real providers have: a stale first "shutting down" read,
/// a server-side deadline that `cancel_shutdown` disarms.
#[derive(Debug)]
struct Edgy {
    sim: Simulator,
    stale_shutting_down_reads: AtomicU32,
    disarms: AtomicU32,
    too_late_to_disarm: std::sync::atomic::AtomicBool,
}

impl Edgy {
    fn new(sim: &Simulator) -> Self {
        Edgy {
            sim: sim.clone(),
            stale_shutting_down_reads: AtomicU32::new(0),
            disarms: AtomicU32::new(0),
            too_late_to_disarm: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

#[async_trait]
impl Provider for Edgy {
    fn provider_type(&self) -> &'static str {
        "edgy"
    }
    fn capabilities(&self) -> ProviderCapabilities {
        let mut caps = self.sim.capabilities();
        caps.power_state_watch = false;
        caps
    }
    async fn vm_capabilities(&self, vm: &VmId) -> Result<VmCapabilities> {
        self.sim.vm_capabilities(vm).await
    }
    async fn power_state(&self, vm: &VmId) -> Result<PowerState> {
        let stale = self
            .stale_shutting_down_reads
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok();
        if stale {
            return Ok(PowerState::ShuttingDown);
        }
        self.sim.power_state(vm).await
    }
    async fn watch_power_state(&self, _vm: &VmId) -> Result<Option<PowerStateStream>> {
        Ok(None)
    }
    async fn incarnation(&self, vm: &VmId) -> Result<Option<Incarnation>> {
        self.sim.incarnation(vm).await
    }
    async fn start(&self, vm: &VmId, opts: &StartOptions) -> Result<()> {
        self.sim.start(vm, opts).await
    }
    async fn power_off(&self, vm: &VmId, opts: &PowerOffOptions) -> Result<()> {
        self.sim.power_off(vm, opts).await
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
        self.sim.request_shutdown(vm, channel, opts).await
    }
    async fn cancel_shutdown(&self, _vm: &VmId) -> Result<()> {
        self.disarms.fetch_add(1, Ordering::AcqRel);
        if self.too_late_to_disarm.load(Ordering::Acquire) {
            return Err(virtrigaud_core::Error::invalid_state(
                "the instance is already being deleted",
            ));
        }
        Ok(())
    }
    async fn describe(&self, vm: &VmId) -> Result<VmDescription> {
        self.sim.describe(vm).await
    }
}

#[tokio::test(start_paused = true)]
async fn a_stale_shutting_down_read_does_not_block_the_request() {
    let sim = Simulator::new();
    let vm = sim.add_vm("pve-100", GuestBehavior::cooperative().acpi_after(secs(2)));
    let edgy = Edgy::new(&sim);
    edgy.stale_shutting_down_reads.store(1, Ordering::Release);
    let r = ShutdownManager::new(Arc::new(edgy))
        .shutdown(&vm, ShutdownPolicy::with_grace(secs(60)))
        .await
        .unwrap();
    assert!(
        matches!(
            r.outcome,
            ShutdownOutcome::Graceful {
                channel: Some(ShutdownChannel::Acpi)
            }
        ),
        "{}",
        r.outcome
    );
    assert!(r.signals_sent >= 1);
    assert!(r.elapsed < secs(10), "{:?}", r.elapsed);
}

#[tokio::test(start_paused = true)]
async fn cancelling_after_the_request_disarms_the_server_side_deadline() {
    let sim = Simulator::new();
    let vm = sim.add_vm("keep", GuestBehavior::ignores_acpi());
    let edgy = Arc::new(Edgy::new(&sim));
    let m = ShutdownManager::new(edgy.clone());
    let h = m.start(&vm, ShutdownPolicy::with_grace(secs(60))).unwrap();
    sleep(secs(5)).await;
    h.cancel();
    let r = h.wait().await;
    assert!(matches!(r.outcome, ShutdownOutcome::Cancelled));
    assert_eq!(edgy.disarms.load(Ordering::Acquire), 1);
    assert_eq!(sim.true_state(&vm), Some(PowerState::Running));
}

#[tokio::test(start_paused = true)]
async fn one_joined_callers_cancel_detaches_only_that_caller() {
    let sim = Simulator::new();
    let vm = sim.add_vm("shared", GuestBehavior::ignores_acpi());
    let m = ShutdownManager::new(Arc::new(sim.clone()));
    let a = m.start(&vm, ShutdownPolicy::with_grace(secs(30))).unwrap();
    let b = m.start(&vm, ShutdownPolicy::with_grace(secs(30))).unwrap();
    sleep(secs(5)).await;
    a.cancel();
    let ra = a.wait().await;
    assert!(matches!(ra.outcome, ShutdownOutcome::Cancelled));
    let rb = b.wait().await;
    assert!(
        matches!(
            rb.outcome,
            ShutdownOutcome::Forced {
                reason: ForcedReason::Timeout
            }
        ),
        "the other caller's shutdown went on: {}",
        rb.outcome
    );
    // When every caller cancels, the shutdown stops.
    let vm2 = sim.add_vm("both", GuestBehavior::ignores_acpi());
    let a = m.start(&vm2, ShutdownPolicy::with_grace(secs(30))).unwrap();
    let b = m.start(&vm2, ShutdownPolicy::with_grace(secs(30))).unwrap();
    sleep(secs(5)).await;
    a.cancel();
    b.cancel();
    let rb = b.wait().await;
    assert!(matches!(rb.outcome, ShutdownOutcome::Cancelled));
    sleep(secs(60)).await;
    assert_eq!(sim.true_state(&vm2), Some(PowerState::Running));
}

#[tokio::test(start_paused = true)]
async fn a_hard_off_by_the_platform_is_reported_as_forced() {
    for sim in [Simulator::new(), Simulator::polling_only()] {
        let vm = sim.add_vm("pve-101", GuestBehavior::ignores_acpi());
        let m = ShutdownManager::new(Arc::new(sim.clone()));
        let h = m.start(&vm, ShutdownPolicy::with_grace(secs(60))).unwrap();
        sleep(secs(10)).await;
        // PVE's forceStop (or an operator) powers it off before our deadline.
        sim.power_off(&vm, &PowerOffOptions::default())
            .await
            .unwrap();
        let r = h.wait().await;
        assert!(
            matches!(
                r.outcome,
                ShutdownOutcome::Forced {
                    reason: ForcedReason::Platform
                }
            ),
            "{}",
            r.outcome
        );
        assert!(r.elapsed < secs(15));
        assert_eq!(r.power_off_calls, 0);
    }
}

#[tokio::test(start_paused = true)]
async fn a_memory_journal_binds_leases_to_runs_too() {
    let journal = Arc::new(MemoryJournal::new());
    let clock = epoch_clock();
    let sim = Simulator::new();
    let vm = sim.add_vm("db", GuestBehavior::ignores_acpi());
    crash_mid_grace(
        &sim,
        &vm,
        journal.clone(),
        clock.clone(),
        secs(60),
        secs(50),
    )
    .await;
    restart_by_hand(&sim, &vm).await;
    let m = journalled(&sim, journal, clock);
    let start = Instant::now();
    let r = m
        .shutdown(&vm, ShutdownPolicy::with_grace(secs(30)))
        .await
        .unwrap();
    assert_eq!(
        start.elapsed(),
        secs(30),
        "not the 10 s left of the old run"
    );
    assert!(!r.resumed);
}

#[tokio::test(start_paused = true)]
async fn a_resumed_shutdown_does_not_send_the_delivered_request_again() {
    let dir = tempfile::tempdir().unwrap();
    let clock = epoch_clock();
    let sim = Simulator::new();
    let vm = sim.add_vm("db", GuestBehavior::ignores_acpi());
    let start = Instant::now();
    let policy = ShutdownPolicy::with_grace(secs(60)).resignal_interval(None);
    {
        let m = on_dir(&sim, &dir, clock.clone());
        let _h = m.start(&vm, policy.clone()).unwrap();
        sleep(secs(20)).await;
    }
    assert_eq!(sim.signals_received(&vm), 1);
    let m = on_dir(&sim, &dir, clock);
    let handles = m.resume_pending(policy).await.unwrap();
    let r = handles.into_iter().next().unwrap().wait().await;
    assert!(r.resumed);
    assert_eq!(start.elapsed(), secs(60));
    assert_eq!(sim.signals_received(&vm), 1, "nothing signalled twice");
}

#[tokio::test(start_paused = true)]
async fn a_cancel_that_cannot_be_disarmed_is_reported_as_failed_not_cancelled() {
    let sim = Simulator::new();
    let vm = sim.add_vm("going", GuestBehavior::ignores_acpi());
    let edgy = Arc::new(Edgy::new(&sim));
    edgy.too_late_to_disarm.store(true, Ordering::Release);
    let m = ShutdownManager::new(edgy.clone());
    let h = m.start(&vm, ShutdownPolicy::with_grace(secs(60))).unwrap();
    sleep(secs(5)).await;
    h.cancel();
    let r = h.wait().await;
    match &r.outcome {
        ShutdownOutcome::Failed { error } => {
            assert_eq!(error.kind(), ErrorKind::InvalidState);
            assert!(error.to_string().contains("may still go down"), "{error}");
        }
        other => panic!("expected Failed, got {other}"),
    }
    assert_eq!(r.power_off_calls, 0);
}
