//! Instrumentation: error context, a tracing span, metrics and per-operation statistics for
//! every provider call.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use tracing::Instrument as _;

use super::call::{Call, Layer, Next};
use crate::error::Result;

/// Calls by provider type, operation and outcome (`success` or the error kind).
pub const PROVIDER_CALLS_TOTAL: &str = "virtrigaud_provider_calls_total";
/// Call duration in seconds, by provider type and operation.
pub const PROVIDER_CALL_SECONDS: &str = "virtrigaud_provider_call_seconds";

/// What [`InstrumentLayer`] adds to each call:
/// - error context: provider, operation and resource filled where the provider left them empty;
/// - a `provider_call` tracing span (`provider`, `operation`, `resource`), at debug level;
/// - [`PROVIDER_CALLS_TOTAL`] and [`PROVIDER_CALL_SECONDS`] through the `metrics` facade (no
///   recorder is installed: the embedding program chooses one);
/// - per-operation [`CallStats`] (count, failures, time), read through [`InstrumentLayer::stats`].
///
/// Time is tokio's clock, so a paused-clock test sees simulated durations.
#[derive(Debug, Clone, Default)]
pub struct InstrumentLayer {
    stats: CallStats,
}

impl InstrumentLayer {
    /// A layer with fresh statistics.
    pub fn new() -> Self {
        Self::default()
    }

    /// The statistics handle (clones share the numbers).
    pub fn stats(&self) -> CallStats {
        self.stats.clone()
    }
}

impl Layer for InstrumentLayer {
    fn call<'a, T: Send + 'a>(
        &'a self,
        call: Call<'a>,
        next: Next<'a, T>,
    ) -> BoxFuture<'a, Result<T>> {
        let span = tracing::debug_span!(
            "provider_call",
            provider = call.provider,
            operation = call.operation,
            resource = call.resource.unwrap_or(""),
        );
        Box::pin(
            async move {
                let started = tokio::time::Instant::now();
                let res = next
                    .run()
                    .await
                    .map_err(|e| e.context_for(call.provider, call.operation, call.resource));
                let elapsed = started.elapsed();
                let outcome = match &res {
                    Ok(_) => "success",
                    Err(e) => e.kind().as_str(),
                };
                metrics::counter!(PROVIDER_CALLS_TOTAL, "provider_type" => call.provider,
                    "operation" => call.operation, "outcome" => outcome)
                .increment(1);
                metrics::histogram!(PROVIDER_CALL_SECONDS, "provider_type" => call.provider,
                    "operation" => call.operation)
                .record(elapsed.as_secs_f64());
                self.stats.record(call.operation, elapsed, res.is_err());
                res
            }
            .instrument(span),
        )
    }
}

/// Numbers for one operation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct OperationStats {
    /// Calls made.
    pub calls: u64,
    /// Calls that returned an error.
    pub failures: u64,
    /// Time spent in them, in all.
    pub total: Duration,
    /// The longest call.
    pub max: Duration,
}

/// Per-operation call statistics, shared between an [`InstrumentLayer`] and its readers.
#[derive(Debug, Clone, Default)]
pub struct CallStats {
    by_op: Arc<Mutex<BTreeMap<&'static str, OperationStats>>>,
}

impl CallStats {
    fn record(&self, operation: &'static str, elapsed: Duration, failed: bool) {
        let mut map = self.by_op.lock().unwrap_or_else(|p| p.into_inner());
        let s = map.entry(operation).or_default();
        s.calls += 1;
        s.failures += u64::from(failed);
        s.total += elapsed;
        s.max = s.max.max(elapsed);
    }

    /// The numbers for `operation` (zero if never called).
    pub fn get(&self, operation: &str) -> OperationStats {
        let map = self.by_op.lock().unwrap_or_else(|p| p.into_inner());
        map.get(operation).copied().unwrap_or_default()
    }

    /// Calls of `operation`.
    pub fn calls(&self, operation: &str) -> u64 {
        self.get(operation).calls
    }

    /// Calls of every operation.
    pub fn total_calls(&self) -> u64 {
        let map = self.by_op.lock().unwrap_or_else(|p| p.into_inner());
        map.values().map(|s| s.calls).sum()
    }

    /// Every operation called so far, with its numbers.
    pub fn snapshot(&self) -> BTreeMap<&'static str, OperationStats> {
        self.by_op.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Forgets everything counted so far.
    pub fn reset(&self) {
        self.by_op.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}
