//! The conformance check `capabilities_tell_the_truth` catches a flag that disagrees with
//! behaviour (here: a simulator declaring less, or more, than it does).

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use virtrigaud_core::conformance::{CheckOutcome, SimFixture, capabilities_tell_the_truth};
use virtrigaud_core::sim::Simulator;

fn check_with(edit: impl FnOnce(&mut virtrigaud_core::ProviderCapabilities)) -> CheckOutcome {
    let mut caps = Simulator::default_capabilities();
    edit(&mut caps);
    let fixture = SimFixture::over(Simulator::with_capabilities(caps));
    let provider: Arc<dyn virtrigaud_core::Provider> = Arc::new(fixture.simulator());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(capabilities_tell_the_truth(&provider, &fixture))
}

#[test]
fn honest_flags_pass() {
    assert_eq!(check_with(|_| {}), CheckOutcome::Passed);
}

#[test]
fn a_flag_declared_false_for_a_working_operation_fails() {
    let CheckOutcome::Failed(why) = check_with(|c| c.reset = false) else {
        panic!("a reset that works while declared false must fail the check");
    };
    assert!(why.contains("reset is declared false"), "{why}");
}

#[test]
fn snapshot_accessor_follows_the_flag() {
    // The simulator derives snapshotter() from the flag, so turning it off stays truthful.
    assert_eq!(check_with(|c| c.snapshots = false), CheckOutcome::Passed);
}

#[test]
fn a_memory_snapshot_made_while_declared_false_fails() {
    let CheckOutcome::Failed(why) = check_with(|c| c.memory_snapshots = false) else {
        panic!("a memory snapshot made while memory_snapshots is false must fail the check");
    };
    assert!(why.contains("memory_snapshots is declared false"), "{why}");
}

#[test]
fn a_customized_clone_made_while_declared_false_fails() {
    let CheckOutcome::Failed(why) = check_with(|c| c.clone_customization = false) else {
        panic!("customizing a clone while clone_customization is false must fail the check");
    };
    assert!(
        why.contains("clone_customization is declared false"),
        "{why}"
    );
}

#[test]
fn a_linked_clone_made_while_declared_false_fails() {
    let CheckOutcome::Failed(why) = check_with(|c| c.linked_clones = false) else {
        panic!("a linked clone made while linked_clones is false must fail the check");
    };
    assert!(why.contains("linked_clones is declared false"), "{why}");
}
