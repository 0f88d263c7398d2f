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
    /// Watch streams (kube-runtime watchers) opened so far.
    watches_opened: AtomicU64,
    /// Watch streams open now.
    open_watches: AtomicU64,
    /// The most watch streams ever open at once.
    peak_open_watches: AtomicU64,
}

impl ApiStats {
    pub(crate) fn watch_event(&self) {
        self.detail.watch_events.fetch_add(1, Ordering::Relaxed);
    }
    /// Counts one watch stream open until the guard is dropped.
    pub(crate) fn watch_opened(&self) -> OpenWatch {
        let d = &self.detail;
        d.watches_opened.fetch_add(1, Ordering::Relaxed);
        let now = d.open_watches.fetch_add(1, Ordering::Relaxed) + 1;
        d.peak_open_watches.fetch_max(now, Ordering::Relaxed);
        OpenWatch(Arc::clone(&self.detail))
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
            watches_opened: self.detail.watches_opened.load(Ordering::Relaxed),
            open_watches: self.detail.open_watches.load(Ordering::Relaxed),
            peak_open_watches: self.detail.peak_open_watches.load(Ordering::Relaxed),
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

/// One open watch stream, counted in [`ApiStats`] until dropped.
#[derive(Debug)]
pub(crate) struct OpenWatch(Arc<Detail>);

impl Drop for OpenWatch {
    fn drop(&mut self) {
        self.0.open_watches.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A copy of a provider's counters; subtract two to measure one operation (the two gauges,
/// [`ApiStatsSnapshot::open_watches`] and [`ApiStatsSnapshot::peak_open_watches`], keep the
/// later snapshot's value).
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
    /// Watch streams opened (each one is a list, then long-polling watch requests, re-listing
    /// after a desync). The provider shares them: one VM watch and one VMI watch per namespace
    /// while any power-state stream or wait of that namespace is alive.
    pub watches_opened: u64,
    /// Watch streams open now (a gauge).
    pub open_watches: u64,
    /// The most watch streams open at once since the provider was made (a gauge).
    pub peak_open_watches: u64,
}

impl std::ops::Sub for ApiStatsSnapshot {
    type Output = ApiStatsSnapshot;
    fn sub(self, rhs: Self) -> Self {
        ApiStatsSnapshot {
            requests: self.requests.saturating_sub(rhs.requests),
            watch_requests: self.watch_requests.saturating_sub(rhs.watch_requests),
            watch_events: self.watch_events.saturating_sub(rhs.watch_events),
            conflict_retries: self.conflict_retries.saturating_sub(rhs.conflict_retries),
            watches_opened: self.watches_opened.saturating_sub(rhs.watches_opened),
            open_watches: self.open_watches,
            peak_open_watches: self.peak_open_watches,
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
