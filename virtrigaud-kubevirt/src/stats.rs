//! Request and watch-event counters (for measuring what a lifecycle operation costs).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

/// Counters shared by a provider and the HTTP layer of its client.
#[derive(Debug, Default)]
pub(crate) struct ApiStats {
    requests: AtomicU64,
    watch_requests: AtomicU64,
    watch_events: AtomicU64,
    conflict_retries: AtomicU64,
}

impl ApiStats {
    pub(crate) fn watch_event(&self) {
        self.watch_events.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn conflict_retry(&self) {
        self.conflict_retries.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn snapshot(&self) -> ApiStatsSnapshot {
        ApiStatsSnapshot {
            requests: self.requests.load(Ordering::Relaxed),
            watch_requests: self.watch_requests.load(Ordering::Relaxed),
            watch_events: self.watch_events.load(Ordering::Relaxed),
            conflict_retries: self.conflict_retries.load(Ordering::Relaxed),
        }
    }
}

/// A copy of a provider's counters; subtract two to measure one operation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ApiStatsSnapshot {
    /// HTTP requests sent (including list and watch requests). Counted only for providers whose
    /// client was built by this crate ([`crate::KubeVirtProvider::connect`] /
    /// [`crate::KubeVirtProvider::from_kube_config`]).
    pub requests: u64,
    /// Of which watch requests.
    pub watch_requests: u64,
    /// Watch events received (objects applied or deleted, including initial listings).
    pub watch_events: u64,
    /// Optimistic-concurrency conflicts (409 / failed JSON-patch `test`) answered by re-reading.
    pub conflict_retries: u64,
}

impl std::ops::Sub for ApiStatsSnapshot {
    type Output = ApiStatsSnapshot;
    fn sub(self, rhs: Self) -> Self {
        ApiStatsSnapshot {
            requests: self.requests.saturating_sub(rhs.requests),
            watch_requests: self.watch_requests.saturating_sub(rhs.watch_requests),
            watch_events: self.watch_events.saturating_sub(rhs.watch_events),
            conflict_retries: self.conflict_retries.saturating_sub(rhs.conflict_retries),
        }
    }
}

/// A tower layer counting the requests of a kube client.
#[derive(Debug, Clone)]
pub(crate) struct CountLayer(pub(crate) Arc<ApiStats>);

impl<S> tower::Layer<S> for CountLayer {
    type Service = CountService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        CountService {
            inner,
            stats: Arc::clone(&self.0),
        }
    }
}

/// The service made by [`CountLayer`].
#[derive(Debug, Clone)]
pub(crate) struct CountService<S> {
    inner: S,
    stats: Arc<ApiStats>,
}

impl<S, B> tower::Service<http::Request<B>> for CountService<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        if req
            .uri()
            .query()
            .is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"))
        {
            self.stats.watch_requests.fetch_add(1, Ordering::Relaxed);
        }
        self.inner.call(req)
    }
}
