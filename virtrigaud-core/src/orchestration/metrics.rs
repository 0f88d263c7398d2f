//! Metrics of the orchestration flows, through the `metrics` facade (the library installs no
//! recorder).
//!
//! - `virtrigaud_vm_reconfigure_total{provider_type,outcome}` and
//!   `virtrigaud_vm_reconfigure_duration_seconds{provider_type,outcome}`
//! - `virtrigaud_vm_snapshot_total{action,provider_type,outcome}` and
//!   `virtrigaud_vm_snapshot_duration_seconds{action,provider_type,outcome}`
//! - `virtrigaud_vm_clone_total{linked,provider_type,outcome}` and
//!   `virtrigaud_vm_clone_duration_seconds{linked,provider_type,outcome}`
//! - `virtrigaud_vm_image_prepare_total{provider_type,outcome}` and
//!   `virtrigaud_vm_image_prepare_duration_seconds{provider_type,outcome}`
//! - `virtrigaud_vm_lifecycle_action_total{action,provider_type,outcome}`
//! - `virtrigaud_vm_supervisor_restarts_total{provider_type,strategy}`
//!
//! `outcome` is `success` or a failure's [`crate::ErrorKind`] name (`unavailable`, …); the
//! reconfigure outcome is `online`, `power_cycle`, `pending_power_cycle`, `no_change`,
//! `impossible` or an error kind.

use std::time::Duration;

/// Reconfigure counter.
pub const RECONFIGURE_TOTAL: &str = "virtrigaud_vm_reconfigure_total";
/// Reconfigure duration histogram.
pub const RECONFIGURE_DURATION: &str = "virtrigaud_vm_reconfigure_duration_seconds";
/// Snapshot counter.
pub const SNAPSHOT_TOTAL: &str = "virtrigaud_vm_snapshot_total";
/// Snapshot duration histogram.
pub const SNAPSHOT_DURATION: &str = "virtrigaud_vm_snapshot_duration_seconds";
/// Clone counter.
pub const CLONE_TOTAL: &str = "virtrigaud_vm_clone_total";
/// Clone duration histogram.
pub const CLONE_DURATION: &str = "virtrigaud_vm_clone_duration_seconds";
/// Image preparation counter.
pub const IMAGE_PREPARE_TOTAL: &str = "virtrigaud_vm_image_prepare_total";
/// Image preparation duration histogram.
pub const IMAGE_PREPARE_DURATION: &str = "virtrigaud_vm_image_prepare_duration_seconds";
/// Lifecycle action counter.
pub const LIFECYCLE_ACTION_TOTAL: &str = "virtrigaud_vm_lifecycle_action_total";
/// Supervisor restart counter.
pub const SUPERVISOR_RESTARTS_TOTAL: &str = "virtrigaud_vm_supervisor_restarts_total";

/// Registers descriptions and units with the installed recorder.
pub fn describe() {
    metrics::describe_counter!(RECONFIGURE_TOTAL, "VM reconfigurations, by outcome");
    metrics::describe_histogram!(
        RECONFIGURE_DURATION,
        metrics::Unit::Seconds,
        "Reconfiguration time"
    );
    metrics::describe_counter!(SNAPSHOT_TOTAL, "Snapshot operations, by action and outcome");
    metrics::describe_histogram!(
        SNAPSHOT_DURATION,
        metrics::Unit::Seconds,
        "Snapshot operation time"
    );
    metrics::describe_counter!(CLONE_TOTAL, "VM clones, by linked and outcome");
    metrics::describe_histogram!(CLONE_DURATION, metrics::Unit::Seconds, "Clone time");
    metrics::describe_counter!(IMAGE_PREPARE_TOTAL, "Image preparations, by outcome");
    metrics::describe_histogram!(
        IMAGE_PREPARE_DURATION,
        metrics::Unit::Seconds,
        "Image preparation time"
    );
    metrics::describe_counter!(
        LIFECYCLE_ACTION_TOTAL,
        "Lifecycle actions (start/stop), by outcome"
    );
    metrics::describe_counter!(
        SUPERVISOR_RESTARTS_TOTAL,
        "Restarts made by run-strategy supervisors"
    );
}

/// The outcome label of a result: `success` or the error kind.
pub(crate) fn outcome_of<T>(r: &crate::Result<T>) -> &'static str {
    match r {
        Ok(_) => "success",
        Err(e) => e.kind().as_str(),
    }
}

pub(crate) fn reconfigure(provider_type: &'static str, outcome: &'static str, elapsed: Duration) {
    metrics::counter!(RECONFIGURE_TOTAL, "provider_type" => provider_type, "outcome" => outcome)
        .increment(1);
    metrics::histogram!(RECONFIGURE_DURATION, "provider_type" => provider_type, "outcome" => outcome)
        .record(elapsed.as_secs_f64());
}

pub(crate) fn snapshot(
    action: &'static str,
    provider_type: &'static str,
    outcome: &'static str,
    elapsed: Duration,
) {
    metrics::counter!(SNAPSHOT_TOTAL, "action" => action, "provider_type" => provider_type, "outcome" => outcome)
        .increment(1);
    metrics::histogram!(SNAPSHOT_DURATION, "action" => action, "provider_type" => provider_type, "outcome" => outcome)
        .record(elapsed.as_secs_f64());
}

pub(crate) fn clone(
    linked: bool,
    provider_type: &'static str,
    outcome: &'static str,
    elapsed: Duration,
) {
    let linked = if linked { "true" } else { "false" };
    metrics::counter!(CLONE_TOTAL, "linked" => linked, "provider_type" => provider_type, "outcome" => outcome)
        .increment(1);
    metrics::histogram!(CLONE_DURATION, "linked" => linked, "provider_type" => provider_type, "outcome" => outcome)
        .record(elapsed.as_secs_f64());
}

#[allow(dead_code)]
pub(crate) fn image_prepare(provider_type: &'static str, outcome: &'static str, elapsed: Duration) {
    metrics::counter!(IMAGE_PREPARE_TOTAL, "provider_type" => provider_type, "outcome" => outcome)
        .increment(1);
    metrics::histogram!(IMAGE_PREPARE_DURATION, "provider_type" => provider_type, "outcome" => outcome)
        .record(elapsed.as_secs_f64());
}

pub(crate) fn lifecycle_action(
    action: &'static str,
    provider_type: &'static str,
    outcome: &'static str,
) {
    metrics::counter!(LIFECYCLE_ACTION_TOTAL, "action" => action, "provider_type" => provider_type, "outcome" => outcome)
        .increment(1);
}

pub(crate) fn supervisor_restart(provider_type: &'static str, strategy: &'static str) {
    metrics::counter!(SUPERVISOR_RESTARTS_TOTAL, "provider_type" => provider_type, "strategy" => strategy)
        .increment(1);
}
