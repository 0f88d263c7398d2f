//! Metrics emitted by the engine through the `metrics` facade (no recorder is installed by
//! the library).
//!
//! - `virtrigaud_vm_shutdown_total{provider_type,outcome}` (counter)
//! - `virtrigaud_vm_shutdown_duration_seconds{provider_type,outcome}` (histogram)
//! - `virtrigaud_vm_shutdown_forced_total{provider_type,reason}` (counter)
//! - `virtrigaud_vm_shutdown_signals_total{provider_type,channel}` (counter)

use super::outcome::{ShutdownOutcome, ShutdownReport};
use crate::vm::ShutdownChannel;

/// Name of the shutdown counter.
pub const SHUTDOWN_TOTAL: &str = "virtrigaud_vm_shutdown_total";
/// Name of the shutdown duration histogram.
pub const SHUTDOWN_DURATION: &str = "virtrigaud_vm_shutdown_duration_seconds";
/// Name of the forced-off counter.
pub const SHUTDOWN_FORCED_TOTAL: &str = "virtrigaud_vm_shutdown_forced_total";
/// Name of the shutdown-request counter.
pub const SHUTDOWN_SIGNALS_TOTAL: &str = "virtrigaud_vm_shutdown_signals_total";

/// Registers descriptions and units with the installed recorder.
pub fn describe() {
    metrics::describe_counter!(SHUTDOWN_TOTAL, "Graceful shutdowns finished, by outcome");
    metrics::describe_histogram!(
        SHUTDOWN_DURATION,
        metrics::Unit::Seconds,
        "Time from the start of the grace period to the end of the shutdown"
    );
    metrics::describe_counter!(
        SHUTDOWN_FORCED_TOTAL,
        "Shutdowns that ended in a hard power-off"
    );
    metrics::describe_counter!(
        SHUTDOWN_SIGNALS_TOTAL,
        "Shutdown requests delivered to guests"
    );
}

pub(crate) fn signal_sent(provider_type: &'static str, channel: ShutdownChannel) {
    metrics::counter!(SHUTDOWN_SIGNALS_TOTAL, "provider_type" => provider_type, "channel" => channel.as_str())
        .increment(1);
}

pub(crate) fn finished(provider_type: &'static str, report: &ShutdownReport) {
    let outcome = report.outcome.as_str();
    metrics::counter!(SHUTDOWN_TOTAL, "provider_type" => provider_type, "outcome" => outcome)
        .increment(1);
    metrics::histogram!(SHUTDOWN_DURATION, "provider_type" => provider_type, "outcome" => outcome)
        .record(report.elapsed.as_secs_f64());
    if let ShutdownOutcome::Forced { reason } = &report.outcome {
        metrics::counter!(SHUTDOWN_FORCED_TOTAL, "provider_type" => provider_type, "reason" => reason.as_str())
            .increment(1);
    }
}
