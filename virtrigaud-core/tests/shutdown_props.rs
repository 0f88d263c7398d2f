//! Property tests of the shutdown engine over random guest behaviour and event orderings.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use tokio::time::Instant;
use virtrigaud_core::ErrorKind;
use virtrigaud_core::shutdown::{ForcedReason, ShutdownManager, ShutdownOutcome, ShutdownPolicy};
use virtrigaud_core::sim::{AcpiResponse, AgentResponse, GuestBehavior, Simulator};

fn behavior() -> impl Strategy<Value = GuestBehavior> {
    let acpi = prop_oneof![
        (0u64..120_000).prop_map(|ms| AcpiResponse::Honours(Duration::from_millis(ms))),
        Just(AcpiResponse::Ignores),
    ];
    let agent = prop_oneof![
        Just(AgentResponse::Absent),
        (0u64..60_000).prop_map(|ms| AgentResponse::Present(Duration::from_millis(ms))),
        Just(AgentResponse::Hangs),
    ];
    let signal_error = prop_oneof![
        6 => Just(None),
        1 => Just(Some(ErrorKind::Unavailable)),
        1 => Just(Some(ErrorKind::PermissionDenied)),
    ];
    (
        acpi,
        agent,
        0u64..20_000,
        signal_error,
        0u32..3,
        prop::option::weighted(0.1, 0u64..90_000),
        any::<bool>(),
    )
        .prop_map(
            |(acpi, agent, listen_ms, signal_error, pof, vanish, visible)| {
                let mut b = GuestBehavior::cooperative()
                    .agent(agent)
                    .acpi_listen_after(Duration::from_millis(listen_ms))
                    .power_off_fails(pof);
                b.acpi = acpi;
                b.signal_error = signal_error;
                b.vanish_after_signal = vanish.map(Duration::from_millis);
                if !visible {
                    b = b.hide_shutting_down();
                }
                b
            },
        )
}

fn run_case(b: GuestBehavior, grace_ms: u64, push: bool, paused: bool, second_ms: Option<u64>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async move {
        let sim = if push {
            Simulator::new()
        } else {
            Simulator::polling_only()
        };
        let vm = sim.add_vm("p", b.clone());
        if paused {
            sim.set_paused(&vm);
        }
        let manager = ShutdownManager::new(Arc::new(sim.clone()));
        let grace = Duration::from_millis(grace_ms);
        let policy = ShutdownPolicy::with_grace(grace);
        let force_budget = policy.force_budget;
        let start = Instant::now();
        let first = manager.start(&vm, policy.clone()).unwrap();
        let mut effective_grace = grace;
        let second = match second_ms {
            Some(ms) => {
                // A racing second trigger arrives a little later with another grace.
                tokio::time::sleep(Duration::from_millis(ms % 5_000)).await;
                let g2 = Duration::from_millis(ms);
                if manager.in_flight().contains(&vm) {
                    let elapsed = start.elapsed();
                    effective_grace = effective_grace.min(elapsed + g2);
                    Some(manager.start(&vm, policy.grace(g2)).unwrap())
                } else {
                    None
                }
            }
            None => None,
        };
        let report = first.wait().await;
        let elapsed = start.elapsed();
        if let Some(second) = second {
            let r2 = second.wait().await;
            assert_eq!(
                r2.outcome.as_str(),
                report.outcome.as_str(),
                "joined requests disagree"
            );
        }

        // Always terminates by G plus the force budget.
        assert!(
            elapsed <= effective_grace + force_budget,
            "took {elapsed:?} (grace {effective_grace:?})"
        );
        // Never reports off while the simulator says running.
        if report.outcome.is_off() && !matches!(report.outcome, ShutdownOutcome::Vanished) {
            let truth = sim.true_state(&vm);
            assert!(
                truth.is_none_or(|s| s.is_off()),
                "reported {} but the VM is {truth:?}",
                report.outcome
            );
        }
        // The first sign of "off" is reported exactly for outcomes that end off, never after
        // the report's end.
        if report.outcome.is_off() && !matches!(report.outcome, ShutdownOutcome::Vanished) {
            let off = report
                .off_observed
                .expect("an off outcome says when it was seen off");
            assert!(
                off <= report.elapsed,
                "off seen at {off:?} after the end {:?}",
                report.elapsed
            );
        } else {
            assert_eq!(report.off_observed, None, "{}", report.outcome);
        }
        // At most one hard power-off takes effect.
        assert!(sim.effective_power_offs(&vm) <= 1);
        // Forced by timeout never before the deadline.
        if let ShutdownOutcome::Forced {
            reason: ForcedReason::Timeout,
        } = report.outcome
        {
            assert!(
                elapsed >= effective_grace,
                "timeout-forced at {elapsed:?} < {effective_grace:?}"
            );
        }
        // No failure with this simulator, except a lost-cause read failure (none here).
        assert!(
            !matches!(
                report.outcome,
                ShutdownOutcome::Failed { .. } | ShutdownOutcome::Cancelled
            ),
            "unexpected {}",
            report.outcome
        );
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    #[test]
    fn shutdown_invariants_hold(
        b in behavior(),
        grace_ms in prop_oneof![Just(0u64), 0u64..180_000],
        push in any::<bool>(),
        paused in prop::bool::weighted(0.1),
        second in prop::option::weighted(0.3, 0u64..120_000),
    ) {
        run_case(b, grace_ms, push, paused, second);
    }
}
