//! Graceful-shutdown engine behaviour on the simulator, on tokio's paused clock.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use tokio::time::{Instant, sleep};
use virtrigaud_core::shutdown::{
    ChannelPreference, FileJournal, FleetShutdown, ForcedReason, HookOutput, LeaseScope,
    MissingAgent, PausedGuest, PreStopExecutor, PreStopHook, ShutdownJournal, ShutdownManager,
    ShutdownOutcome, ShutdownPolicy, TokioClock,
};
use virtrigaud_core::sim::{AgentResponse, GuestBehavior, Simulator};
use virtrigaud_core::{ErrorKind, PowerState, Provider, ShutdownChannel, VmId};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn sim_scope() -> LeaseScope {
    LeaseScope::new("simulator", "")
}

fn manager(sim: &Simulator) -> ShutdownManager {
    ShutdownManager::new(Arc::new(sim.clone()))
}

#[tokio::test(start_paused = true)]
async fn ignoring_guest_is_forced_exactly_at_the_deadline() {
    for sim in [Simulator::new(), Simulator::polling_only()] {
        let vm = sim.add_vm("stubborn", GuestBehavior::ignores_acpi());
        let start = Instant::now();
        let report = manager(&sim)
            .shutdown(&vm, ShutdownPolicy::with_grace(secs(30)))
            .await
            .unwrap();
        let at = start.elapsed();
        assert!(matches!(
            report.outcome,
            ShutdownOutcome::Forced {
                reason: ForcedReason::Timeout
            }
        ));
        assert!(at >= secs(30), "forced before the deadline: {at:?}");
        assert!(
            at <= secs(30) + Duration::from_millis(1),
            "forced late: {at:?}"
        );
        assert_eq!(sim.effective_power_offs(&vm), 1);
        assert!(sim.true_state(&vm).unwrap().is_off());
    }
}

#[tokio::test(start_paused = true)]
async fn cooperative_guest_stops_gracefully_and_is_detected_at_once_with_push() {
    let sim = Simulator::new();
    let vm = sim.add_vm("web", GuestBehavior::cooperative().acpi_after(secs(7)));
    let start = Instant::now();
    let report = manager(&sim)
        .shutdown(&vm, ShutdownPolicy::with_grace(secs(60)))
        .await
        .unwrap();
    assert!(matches!(
        report.outcome,
        ShutdownOutcome::Graceful {
            channel: Some(ShutdownChannel::Acpi)
        }
    ));
    assert_eq!(
        start.elapsed(),
        secs(7),
        "push detection should be immediate"
    );
    assert_eq!(sim.effective_power_offs(&vm), 0);
}

#[tokio::test(start_paused = true)]
async fn shutting_down_is_never_reported_off() {
    let sim = Simulator::polling_only();
    let vm = sim.add_vm("slow", GuestBehavior::cooperative().acpi_after(secs(40)));
    let m = manager(&sim);
    let handle = m.start(&vm, ShutdownPolicy::with_grace(secs(120))).unwrap();
    sleep(secs(20)).await;
    assert_eq!(sim.true_state(&vm), Some(PowerState::ShuttingDown));
    assert_eq!(
        m.in_flight(),
        vec![vm.clone()],
        "still in flight while shutting down"
    );
    let report = handle.wait().await;
    assert!(matches!(report.outcome, ShutdownOutcome::Graceful { .. }));
    assert!(
        report.elapsed >= secs(40) && report.elapsed <= secs(42),
        "{:?}",
        report.elapsed
    );
}

#[tokio::test(start_paused = true)]
async fn grace_zero_kills_at_once_without_signalling() {
    let sim = Simulator::new();
    let vm = sim.add_vm("now", GuestBehavior::cooperative());
    let report = manager(&sim)
        .shutdown(&vm, ShutdownPolicy::force())
        .await
        .unwrap();
    assert!(matches!(
        report.outcome,
        ShutdownOutcome::Forced {
            reason: ForcedReason::GraceZero
        }
    ));
    assert_eq!(report.elapsed, Duration::ZERO);
    assert_eq!(sim.signals_received(&vm), 0);
}

#[tokio::test(start_paused = true)]
async fn already_off_is_reported_as_such() {
    let sim = Simulator::new();
    let vm = sim.add_stopped_vm("off", GuestBehavior::cooperative());
    let report = manager(&sim)
        .shutdown(&vm, ShutdownPolicy::default())
        .await
        .unwrap();
    assert!(matches!(report.outcome, ShutdownOutcome::AlreadyOff));
    assert_eq!((report.signals_sent, report.power_off_calls), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn concurrent_requests_join_one_grace_and_one_signal_sequence() {
    let sim = Simulator::new();
    let vm = sim.add_vm("raced", GuestBehavior::ignores_acpi());
    let m = manager(&sim);
    let start = Instant::now();
    let a = m
        .start(
            &vm,
            ShutdownPolicy::with_grace(secs(60)).resignal_interval(None),
        )
        .unwrap();
    sleep(secs(5)).await;
    let b = m
        .start(
            &vm,
            ShutdownPolicy::with_grace(secs(90)).resignal_interval(None),
        )
        .unwrap();
    let (ra, rb) = futures::join!(a.wait(), b.wait());
    assert_eq!(
        start.elapsed(),
        secs(60),
        "the later, longer request must not lengthen the grace"
    );
    assert_eq!(ra.signals_sent, 1);
    assert_eq!(rb.signals_sent, 1);
    assert_eq!(sim.signals_received(&vm), 1, "one signal sequence");
    assert_eq!(sim.calls("power_off"), 1);
    assert_eq!(ra.outcome.as_str(), rb.outcome.as_str());
}

#[tokio::test(start_paused = true)]
async fn escalation_only_shortens() {
    let sim = Simulator::new();
    let vm = sim.add_vm("esc", GuestBehavior::ignores_acpi());
    let m = manager(&sim);
    let start = Instant::now();
    let h = m.start(&vm, ShutdownPolicy::with_grace(secs(60))).unwrap();
    sleep(secs(5)).await;
    h.shorten(secs(300)); // ignored
    sleep(secs(5)).await;
    h.shorten(secs(10)); // now deadline at t = 20 s
    let r = h.wait().await;
    assert_eq!(start.elapsed(), secs(20));
    assert!(matches!(
        r.outcome,
        ShutdownOutcome::Forced {
            reason: ForcedReason::Timeout
        }
    ));

    let vm2 = sim.add_vm("esc2", GuestBehavior::ignores_acpi());
    let start = Instant::now();
    let h = m.start(&vm2, ShutdownPolicy::with_grace(secs(60))).unwrap();
    sleep(secs(3)).await;
    // A forcing request joins: grace 0.
    let forced = m.start(&vm2, ShutdownPolicy::force()).unwrap();
    let (r1, r2) = futures::join!(h.wait(), forced.wait());
    assert_eq!(start.elapsed(), secs(3));
    assert!(matches!(
        r1.outcome,
        ShutdownOutcome::Forced {
            reason: ForcedReason::GraceZero
        }
    ));
    assert_eq!(r1.outcome.as_str(), r2.outcome.as_str());
}

#[tokio::test(start_paused = true)]
async fn restart_mid_grace_resumes_with_the_time_left() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(TokioClock::new(
        SystemTime::UNIX_EPOCH + secs(1_700_000_000),
    ));
    let sim = Simulator::new();
    let vm = sim.add_vm("db", GuestBehavior::ignores_acpi());
    let start = Instant::now();
    {
        let first = ShutdownManager::builder(Arc::new(sim.clone()))
            .journal(Arc::new(FileJournal::open(dir.path()).unwrap()))
            .clock(Arc::<TokioClock>::clone(&clock))
            .build();
        let _h = first
            .start(&vm, ShutdownPolicy::with_grace(secs(60)))
            .unwrap();
        sleep(secs(20)).await;
        // The process "crashes": the manager and its task are gone, the lease stays.
    }
    sleep(secs(10)).await;
    let journal = Arc::new(FileJournal::open(dir.path()).unwrap());
    assert_eq!(journal.list(&sim_scope()).await.unwrap().len(), 1);
    let second = ShutdownManager::builder(Arc::new(sim.clone()))
        .journal(Arc::<FileJournal>::clone(&journal))
        .clock(Arc::<TokioClock>::clone(&clock))
        .build();
    let handles = second
        .resume_pending(ShutdownPolicy::default())
        .await
        .unwrap();
    assert_eq!(handles.len(), 1);
    let report = handles.into_iter().next().unwrap().wait().await;
    assert_eq!(
        start.elapsed(),
        secs(60),
        "forced at the original deadline, not 60 s after the restart"
    );
    assert!(report.resumed);
    assert!(matches!(
        report.outcome,
        ShutdownOutcome::Forced {
            reason: ForcedReason::Timeout
        }
    ));
    assert_eq!(report.elapsed, secs(60));
    assert!(
        journal.list(&sim_scope()).await.unwrap().is_empty(),
        "lease removed at the end"
    );
    assert_eq!(sim.effective_power_offs(&vm), 1);
}

#[tokio::test(start_paused = true)]
async fn a_new_request_after_a_restart_also_keeps_the_original_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(TokioClock::new(SystemTime::UNIX_EPOCH + secs(1_000)));
    let sim = Simulator::new();
    let vm = sim.add_vm("db", GuestBehavior::ignores_acpi());
    let start = Instant::now();
    {
        let first = ShutdownManager::builder(Arc::new(sim.clone()))
            .journal(Arc::new(FileJournal::open(dir.path()).unwrap()))
            .clock(Arc::<TokioClock>::clone(&clock))
            .build();
        let _h = first
            .start(&vm, ShutdownPolicy::with_grace(secs(30)))
            .unwrap();
        sleep(secs(25)).await;
    }
    let second = ShutdownManager::builder(Arc::new(sim.clone()))
        .journal(Arc::new(FileJournal::open(dir.path()).unwrap()))
        .clock(clock)
        .build();
    let report = second
        .shutdown(&vm, ShutdownPolicy::with_grace(secs(30)))
        .await
        .unwrap();
    assert_eq!(start.elapsed(), secs(30));
    assert!(report.resumed);
}

#[tokio::test(start_paused = true)]
async fn cancellation_leaves_a_consistent_state() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Arc::new(FileJournal::open(dir.path()).unwrap());
    let sim = Simulator::new();
    let vm = sim.add_vm("keep", GuestBehavior::ignores_acpi());
    let m = ShutdownManager::builder(Arc::new(sim.clone()))
        .journal(Arc::<FileJournal>::clone(&journal))
        .build();
    let h = m.start(&vm, ShutdownPolicy::with_grace(secs(60))).unwrap();
    sleep(secs(10)).await;
    h.cancel();
    let r = h.wait().await;
    assert!(matches!(r.outcome, ShutdownOutcome::Cancelled));
    assert_eq!(sim.true_state(&vm), Some(PowerState::Running));
    assert_eq!(sim.calls("power_off"), 0);
    assert!(journal.list(&sim_scope()).await.unwrap().is_empty());
    assert!(m.in_flight().is_empty());
    // A later shutdown starts a fresh, full grace period.
    let start = Instant::now();
    let r = m
        .shutdown(&vm, ShutdownPolicy::with_grace(secs(15)))
        .await
        .unwrap();
    assert_eq!(start.elapsed(), secs(15));
    assert!(!r.resumed);
}

#[tokio::test(start_paused = true)]
async fn a_hanging_agent_does_not_eat_the_grace_period() {
    let sim = Simulator::new();
    let vm = sim.add_vm("hang", GuestBehavior::hanging_agent().acpi_after(secs(4)));
    let start = Instant::now();
    let r = manager(&sim)
        .shutdown(&vm, ShutdownPolicy::with_grace(secs(30)))
        .await
        .unwrap();
    assert!(matches!(
        r.outcome,
        ShutdownOutcome::Graceful {
            channel: Some(ShutdownChannel::Acpi)
        }
    ));
    // Probe budget (2 s) then ACPI, honoured after 4 s.
    assert_eq!(start.elapsed(), secs(6));
}

#[tokio::test(start_paused = true)]
async fn agent_is_preferred_when_connected() {
    let sim = Simulator::new();
    let vm = sim.add_vm(
        "agent",
        GuestBehavior::with_agent(secs(2)).acpi_after(secs(50)),
    );
    let r = manager(&sim)
        .shutdown(&vm, ShutdownPolicy::with_grace(secs(30)))
        .await
        .unwrap();
    assert!(matches!(
        r.outcome,
        ShutdownOutcome::Graceful {
            channel: Some(ShutdownChannel::Agent)
        }
    ));
    assert_eq!(r.elapsed, secs(2));
}

#[tokio::test(start_paused = true)]
async fn an_acpi_press_before_the_guest_listens_is_resent() {
    let sim = Simulator::new();
    let vm = sim.add_vm(
        "booting",
        GuestBehavior::cooperative()
            .acpi_after(secs(1))
            .acpi_listen_after(secs(8)),
    );
    let r = manager(&sim)
        .shutdown(&vm, ShutdownPolicy::with_grace(secs(60)))
        .await
        .unwrap();
    assert!(
        matches!(r.outcome, ShutdownOutcome::Graceful { .. }),
        "{}",
        r.outcome
    );
    assert!(r.signals_sent >= 2);
    // Presses at 0 s (lost), 5 s (lost), 15 s (heard) -> off at 16 s.
    assert_eq!(r.elapsed, secs(16));
}

#[tokio::test(start_paused = true)]
async fn missing_agent_is_handled_as_configured() {
    let sim = Simulator::new();
    let vm = sim.add_vm("noagent", GuestBehavior::cooperative());
    let m = manager(&sim);
    let only_agent = ShutdownPolicy::with_grace(secs(30)).channel(ChannelPreference::AgentOnly);

    let r = m
        .shutdown(&vm, only_agent.clone().on_missing_agent(MissingAgent::Fail))
        .await
        .unwrap();
    assert!(
        matches!(&r.outcome, ShutdownOutcome::Failed { error } if error.kind() == ErrorKind::Unsupported)
    );
    assert_eq!(
        sim.true_state(&vm),
        Some(PowerState::Running),
        "Fail leaves the VM running"
    );

    let r = m
        .shutdown(
            &vm,
            only_agent.clone().on_missing_agent(MissingAgent::PowerOff),
        )
        .await
        .unwrap();
    assert!(matches!(
        r.outcome,
        ShutdownOutcome::Forced {
            reason: ForcedReason::NoGuestTools
        }
    ));
    assert_eq!(
        r.elapsed,
        Duration::ZERO,
        "no tools: forced at once, not at the deadline"
    );

    let vm2 = sim.add_vm("noagent2", GuestBehavior::cooperative());
    let r = m
        .shutdown(
            &vm2,
            only_agent.on_missing_agent(MissingAgent::FallBackToAcpi),
        )
        .await
        .unwrap();
    assert!(matches!(
        r.outcome,
        ShutdownOutcome::Graceful {
            channel: Some(ShutdownChannel::Acpi)
        }
    ));
}

#[tokio::test(start_paused = true)]
async fn a_signal_that_cannot_be_delivered_forces_early() {
    let sim = Simulator::new();
    let vm = sim.add_vm(
        "broken",
        GuestBehavior::cooperative().signal_fails(ErrorKind::PermissionDenied),
    );
    let r = manager(&sim)
        .shutdown(&vm, ShutdownPolicy::with_grace(secs(60)))
        .await
        .unwrap();
    assert!(matches!(
        r.outcome,
        ShutdownOutcome::Forced {
            reason: ForcedReason::SignalFailed
        }
    ));
    assert!(r.elapsed < secs(5));
}

#[tokio::test(start_paused = true)]
async fn power_off_racing_the_guest_counts_as_graceful() {
    // The guest goes off exactly when the grace ends. With push, the off event or the
    // deadline may win; polling-only, the hard power-off is sent and refused as "already off".
    for (sim, power_off_sent) in [
        (Simulator::new(), None),
        (Simulator::polling_only(), Some(1)),
    ] {
        let vm = sim.add_vm(
            "photo",
            GuestBehavior::cooperative()
                .acpi_after(secs(30))
                .hide_shutting_down(),
        );
        let r = manager(&sim)
            .shutdown(&vm, ShutdownPolicy::with_grace(secs(30)))
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
        if let Some(n) = power_off_sent {
            assert_eq!(r.power_off_calls, n, "the race path was exercised");
        }
        assert_eq!(
            sim.effective_power_offs(&vm),
            0,
            "no power-off took effect: the guest was already down"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn retryable_power_off_failure_is_retried_once_effective() {
    let sim = Simulator::new();
    let vm = sim.add_vm("flaky", GuestBehavior::ignores_acpi().power_off_fails(1));
    let r = manager(&sim)
        .shutdown(&vm, ShutdownPolicy::with_grace(secs(10)))
        .await
        .unwrap();
    assert!(matches!(
        r.outcome,
        ShutdownOutcome::Forced {
            reason: ForcedReason::Timeout
        }
    ));
    assert_eq!(r.power_off_calls, 2);
    assert_eq!(sim.effective_power_offs(&vm), 1);
}

#[tokio::test(start_paused = true)]
async fn a_vm_vanishing_mid_shutdown_is_reported() {
    let sim = Simulator::new();
    let vm = sim.add_vm(
        "ghost",
        GuestBehavior::ignores_acpi().vanishes_after(secs(3)),
    );
    let r = manager(&sim)
        .shutdown(&vm, ShutdownPolicy::with_grace(secs(30)))
        .await
        .unwrap();
    assert!(
        matches!(r.outcome, ShutdownOutcome::Vanished),
        "{}",
        r.outcome
    );
    // Gone at 3 s, believed after two more NotFound reads half a second apart; and a VM
    // that can no longer be seen is not reported off.
    assert_eq!(r.elapsed, secs(4));
    assert!(!r.outcome.is_off());
}

#[tokio::test(start_paused = true)]
async fn paused_guests_follow_the_policy() {
    let sim = Simulator::new();
    let m = manager(&sim);
    let vm = sim.add_vm("paused", GuestBehavior::cooperative().acpi_after(secs(2)));
    sim.set_paused(&vm);
    let r = m
        .shutdown(&vm, ShutdownPolicy::with_grace(secs(30)))
        .await
        .unwrap();
    assert!(
        matches!(r.outcome, ShutdownOutcome::Graceful { .. }),
        "resumed then stopped: {}",
        r.outcome
    );

    let vm = sim.add_vm("paused2", GuestBehavior::cooperative());
    sim.set_paused(&vm);
    let r = m
        .shutdown(
            &vm,
            ShutdownPolicy::with_grace(secs(30)).on_paused(PausedGuest::PowerOff),
        )
        .await
        .unwrap();
    assert!(matches!(
        r.outcome,
        ShutdownOutcome::Forced {
            reason: ForcedReason::GuestPaused
        }
    ));

    let vm = sim.add_vm("paused3", GuestBehavior::cooperative());
    sim.set_paused(&vm);
    let r = m
        .shutdown(
            &vm,
            ShutdownPolicy::with_grace(secs(30)).on_paused(PausedGuest::Fail),
        )
        .await
        .unwrap();
    assert!(
        matches!(&r.outcome, ShutdownOutcome::Failed { error } if error.kind() == ErrorKind::InvalidState)
    );
    assert!(matches!(sim.true_state(&vm), Some(PowerState::Paused(_))));
}

#[derive(Debug)]
struct RecordingHook {
    hang: bool,
    seen: std::sync::Mutex<Vec<Vec<String>>>,
}

#[async_trait]
impl PreStopExecutor for RecordingHook {
    async fn exec(&self, _vm: &VmId, argv: &[String]) -> virtrigaud_core::Result<HookOutput> {
        self.seen.lock().unwrap().push(argv.to_vec());
        if self.hang {
            std::future::pending::<()>().await;
        }
        Ok(HookOutput::exited(0).with_output("stopped app"))
    }
}

#[tokio::test(start_paused = true)]
async fn pre_stop_hook_runs_first_within_its_budget() {
    let sim = Simulator::new();
    for hang in [false, true] {
        let hook = Arc::new(RecordingHook {
            hang,
            seen: Default::default(),
        });
        let m = ShutdownManager::builder(Arc::new(sim.clone()))
            .pre_stop_executor(Arc::<RecordingHook>::clone(&hook))
            .build();
        let vm = sim.add_vm(
            &format!("hooked-{hang}"),
            GuestBehavior::cooperative().acpi_after(secs(1)),
        );
        let argv = vec![
            "/usr/bin/systemctl".to_string(),
            "stop".into(),
            "app".into(),
        ];
        let policy =
            ShutdownPolicy::with_grace(secs(30)).pre_stop(PreStopHook::new(argv.clone(), secs(10)));
        let r = m.shutdown(&vm, policy).await.unwrap();
        assert_eq!(hook.seen.lock().unwrap().as_slice(), &[argv]);
        let run = r.pre_stop.expect("the hook ran");
        assert_eq!(run.is_ok(), !hang, "{run}");
        if hang {
            assert!(run.error.unwrap().contains("pre_stop"));
        } else {
            assert_eq!(run.output.unwrap().output, "stopped app");
        }
        assert!(matches!(r.outcome, ShutdownOutcome::Graceful { .. }));
        assert_eq!(r.elapsed, if hang { secs(11) } else { secs(1) });
    }
}

#[tokio::test(start_paused = true)]
async fn an_empty_pre_stop_command_is_a_typed_error() {
    let sim = Simulator::new();
    let vm = sim.add_vm("x", GuestBehavior::cooperative());
    let err = manager(&sim)
        .shutdown(
            &vm,
            ShutdownPolicy::default().pre_stop(PreStopHook::new(vec![], secs(1))),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidSpec);
    assert!(err.to_string().contains("preStop"));
}

#[tokio::test(start_paused = true)]
async fn api_calls_are_constant_in_guest_shutdown_time_with_push() {
    let mut push = Vec::new();
    let mut poll = Vec::new();
    for guest_secs in [1, 10, 60, 120] {
        for (sim, out) in [
            (Simulator::new(), &mut push),
            (Simulator::polling_only(), &mut poll),
        ] {
            let vm = sim.add_vm(
                "v",
                GuestBehavior::cooperative().acpi_after(secs(guest_secs)),
            );
            let r = manager(&sim)
                .shutdown(&vm, ShutdownPolicy::with_grace(secs(180)))
                .await
                .unwrap();
            assert!(matches!(r.outcome, ShutdownOutcome::Graceful { .. }));
            out.push(sim.total_calls());
        }
    }
    assert!(
        push.windows(2).all(|w| w[0] == w[1]),
        "push calls vary: {push:?}"
    );
    assert!(
        poll.last() > poll.first(),
        "polling calls should grow: {poll:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn fleet_respects_groups_concurrency_and_the_overall_deadline() {
    let sim = Simulator::new();
    let web: Vec<VmId> = (0..6)
        .map(|i| {
            sim.add_vm(
                &format!("web-{i}"),
                GuestBehavior::cooperative().acpi_after(secs(5)),
            )
        })
        .collect();
    let db = sim.add_vm("db", GuestBehavior::cooperative().acpi_after(secs(5)));
    let m = manager(&sim);
    let mut events = m.subscribe();
    let start = Instant::now();
    let report = FleetShutdown::new(&m)
        .concurrency(2)
        .group(web.clone(), ShutdownPolicy::with_grace(secs(60)))
        .group([db.clone()], ShutdownPolicy::with_grace(secs(60)))
        .run()
        .await;
    assert!(report.all_off());
    // 6 web VMs, 2 at a time, 5 s each = 15 s; then the database 5 s.
    assert_eq!(start.elapsed(), secs(20));
    let mut finished_order = Vec::new();
    while let Ok(ev) = events.try_recv() {
        if let virtrigaud_core::shutdown::ShutdownEventKind::Finished(_) = ev.kind {
            finished_order.push(ev.vm);
        }
    }
    assert_eq!(finished_order.last(), Some(&db), "the database goes last");

    let stubborn: Vec<VmId> = (0..4)
        .map(|i| sim.add_vm(&format!("s-{i}"), GuestBehavior::ignores_acpi()))
        .collect();
    let start = Instant::now();
    let report = FleetShutdown::new(&m)
        .concurrency(4)
        .deadline(secs(40))
        .group(stubborn, ShutdownPolicy::with_grace(secs(300)))
        .run()
        .await;
    assert!(report.all_off());
    assert_eq!(report.counts().get("forced"), Some(&4));
    assert!(start.elapsed() <= secs(40), "{:?}", start.elapsed());
}

#[tokio::test(start_paused = true)]
async fn conformance_suite_passes_on_the_simulator() {
    use virtrigaud_core::conformance::{self, SimFixture};
    for (sim, backend) in [
        (Simulator::new(), "simulator"),
        (Simulator::polling_only(), "simulator-polling-only"),
    ] {
        let fixture = SimFixture::over(sim.clone());
        fixture.add_inventory();
        let report = conformance::run_all(Arc::new(sim), &fixture).await;
        report.assert_passed_on(backend);
        // The simulator has no image storage (image preparation is tested with FileSink in
        // tests/orchestration_image.rs); a polling-only provider has nothing to watch.
        let allowed = [
            "image_import_from_the_seed",
            "vm_set_from_a_prepared_image",
            "watch_reports_off",
        ];
        let skipped = report.skipped();
        assert!(
            skipped.iter().all(|s| allowed.contains(s))
                && skipped.len() <= 2 + usize::from(backend.contains("polling")),
            "skipped: {skipped:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn provider_is_object_safe_and_usable_as_dyn() {
    let sim = Simulator::new();
    let vm = sim.add_vm("dyn", GuestBehavior::cooperative());
    let p: Arc<dyn Provider> = Arc::new(sim);
    assert_eq!(p.provider_type(), "simulator");
    assert!(p.snapshotter().is_some() && p.cloner().is_some());
    assert_eq!(p.power_state(&vm).await.unwrap(), PowerState::Running);
}

#[tokio::test(start_paused = true)]
async fn dropping_the_manager_fails_waiters_instead_of_hanging_them() {
    let sim = Simulator::new();
    let vm = sim.add_vm("orphan", GuestBehavior::ignores_acpi());
    let m = manager(&sim);
    let handle = m.start(&vm, ShutdownPolicy::with_grace(secs(60))).unwrap();
    let joined = handle.clone();
    sleep(secs(5)).await;
    drop(m);
    let report = tokio::time::timeout(secs(1), handle.wait())
        .await
        .expect("a waiter of an abandoned shutdown must not hang");
    match report.outcome {
        ShutdownOutcome::Failed { error } => assert_eq!(error.kind(), ErrorKind::Cancelled),
        other => panic!("expected Failed(cancelled), got {other:?}"),
    }
    assert!(matches!(
        joined.wait().await.outcome,
        ShutdownOutcome::Failed { .. }
    ));
    // Nothing was forced behind the caller's back after the drop.
    sleep(secs(120)).await;
    assert_eq!(sim.effective_power_offs(&vm), 0);
    assert!(!sim.true_state(&vm).unwrap().is_off());
}

#[tokio::test(start_paused = true)]
async fn shutdown_starts_when_called_not_when_first_polled() {
    let sim = Simulator::new();
    let vm = sim.add_vm("eager", GuestBehavior::cooperative().acpi_after(secs(3)));
    let m = manager(&sim);
    let fut = m.shutdown(&vm, ShutdownPolicy::with_grace(secs(30)));
    // The shutdown runs in its own task while the caller does something else.
    sleep(secs(10)).await;
    assert!(sim.true_state(&vm).unwrap().is_off());
    let report = fut.await.unwrap();
    assert!(matches!(report.outcome, ShutdownOutcome::Graceful { .. }));
    assert!(report.elapsed <= secs(4), "{:?}", report.elapsed);
}

#[tokio::test(start_paused = true)]
async fn reports_say_when_the_vm_was_first_seen_off() {
    // Pushed: the guest stops at 7 s; the report ends after the confirming read.
    let sim = Simulator::new();
    let vm = sim.add_vm("push", GuestBehavior::cooperative().acpi_after(secs(7)));
    let r = manager(&sim)
        .shutdown(&vm, ShutdownPolicy::with_grace(secs(30)))
        .await
        .unwrap();
    let off = r.off_observed.expect("seen off");
    assert!(
        off >= secs(7) && off <= secs(7) + Duration::from_millis(1),
        "{off:?}"
    );
    assert!(off <= r.elapsed);

    // Forced at the deadline: off once the hard power-off returned.
    let vm = sim.add_vm("stubborn", GuestBehavior::ignores_acpi());
    let r = manager(&sim)
        .shutdown(&vm, ShutdownPolicy::with_grace(secs(10)))
        .await
        .unwrap();
    let off = r.off_observed.expect("seen off");
    assert!(
        off >= secs(10) && off <= r.elapsed,
        "{off:?} vs {:?}",
        r.elapsed
    );

    // Already off: at once. Cancelled: never.
    let vm = sim.add_vm("idle", GuestBehavior::cooperative());
    sim.power_off(&vm, &Default::default()).await.unwrap();
    let r = manager(&sim)
        .shutdown(&vm, ShutdownPolicy::with_grace(secs(10)))
        .await
        .unwrap();
    assert!(matches!(r.outcome, ShutdownOutcome::AlreadyOff));
    assert_eq!(r.off_observed, Some(Duration::ZERO));
    let vm = sim.add_vm("kept", GuestBehavior::ignores_acpi());
    let m = manager(&sim);
    let h = m.start(&vm, ShutdownPolicy::with_grace(secs(60))).unwrap();
    sleep(secs(2)).await;
    h.cancel();
    let r = h.wait().await;
    assert!(matches!(r.outcome, ShutdownOutcome::Cancelled));
    assert_eq!(r.off_observed, None);
}

#[tokio::test(start_paused = true)]
async fn a_graceful_stop_costs_four_provider_calls_on_the_simulator() {
    for (name, guest) in [
        (
            "agent",
            GuestBehavior::cooperative().agent(AgentResponse::Present(secs(5))),
        ),
        ("acpi", GuestBehavior::cooperative()),
    ] {
        let sim = Simulator::new();
        let vm = sim.add_vm(name, guest.acpi_after(secs(5)));
        sim.reset_calls();
        let r = manager(&sim)
            .shutdown(&vm, ShutdownPolicy::with_grace(secs(60)))
            .await
            .unwrap();
        assert!(
            matches!(r.outcome, ShutdownOutcome::Graceful { .. }),
            "{name}"
        );
        // The watch, one read that also says whether the agent answers, one signal, the
        // confirming read: the probe is folded into the first read.
        assert_eq!(sim.total_calls(), 4, "{name}: {:?}", sim.all_calls());
        assert_eq!(sim.calls("probe_agent"), 0, "{name}");
    }
}
