//! Request and watch-event counters (for measuring what a lifecycle operation costs).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use virtrigaud_core::layers::ApiCalls;

/// Counters shared by a provider and the HTTP layer of its client (clones share them).
#[derive(Debug, Clone, Default)]
pub(crate) struct ApiStats {
    /// Every HTTP request: the total [`crate::KubeVirtProvider::api_calls`] reports.
    requests: ApiCalls,
    detail: Arc<Detail>,
}

/// The counters beyond the total.
#[derive(Debug, Default)]
struct Detail {
    watch_requests: AtomicU64,
    watch_events: AtomicU64,
    conflict_retries: AtomicU64,
}

impl ApiStats {
    pub(crate) fn watch_event(&self) {
        self.detail.watch_events.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn conflict_retry(&self) {
        self.detail.conflict_retries.fetch_add(1, Ordering::Relaxed);
    }
    /// HTTP requests sent so far.
    pub(crate) fn requests(&self) -> u64 {
        self.requests.get()
    }
    pub(crate) fn snapshot(&self) -> ApiStatsSnapshot {
        ApiStatsSnapshot {
            requests: self.requests.get(),
            watch_requests: self.detail.watch_requests.load(Ordering::Relaxed),
            watch_events: self.detail.watch_events.load(Ordering::Relaxed),
            conflict_retries: self.detail.conflict_retries.load(Ordering::Relaxed),
        }
    }
    /// Counts one HTTP request (the one place requests are counted).
    fn request(&self, watch: bool) {
        self.requests.record();
        if watch {
            self.detail.watch_requests.fetch_add(1, Ordering::Relaxed);
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
pub(crate) struct CountLayer(pub(crate) ApiStats);

impl<S> tower::Layer<S> for CountLayer {
    type Service = CountService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        CountService {
            inner,
            stats: self.0.clone(),
        }
    }
}

/// The service made by [`CountLayer`].
#[derive(Debug, Clone)]
pub(crate) struct CountService<S> {
    inner: S,
    stats: ApiStats,
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
        let watch = req
            .uri()
            .query()
            .is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"));
        self.stats.request(watch);
        self.inner.call(req)
    }
}
