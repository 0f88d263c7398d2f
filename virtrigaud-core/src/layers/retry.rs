//! One backoff policy for every retry in virtrigaud, and the layer that retries idempotent
//! provider calls with it.

use std::future::Future;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use futures::future::BoxFuture;

use super::call::{Call, Layer, Next};
use crate::error::{Error, Result};

/// Exponential backoff (factor 2, no jitter, so paused-clock tests are exact) for calls that
/// fail with a retryable error ([`Error::is_retryable`]). The last retryable error is
/// returned marked [`Error::persistent`].
///
/// ```
/// use std::time::Duration;
/// use virtrigaud_core::layers::RetryPolicy;
/// let policy = RetryPolicy::new(Duration::from_secs(1), 3);
/// let delays: Vec<_> = policy.delays().collect();
/// assert_eq!(delays, [Duration::from_secs(1), Duration::from_secs(2), Duration::from_secs(4)]);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// The first pause.
    pub min_delay: Duration,
    /// No pause is longer.
    pub max_delay: Duration,
    /// Retries after the first attempt (0: no retry).
    pub max_retries: usize,
}

impl Default for RetryPolicy {
    /// 3 retries, 200 ms then doubling, at most 5 s apart.
    fn default() -> Self {
        RetryPolicy {
            min_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(5),
            max_retries: 3,
        }
    }
}

impl RetryPolicy {
    /// `max_retries` retries, the first after `min_delay`, pauses doubling up to 60 s.
    pub fn new(min_delay: Duration, max_retries: usize) -> Self {
        RetryPolicy {
            min_delay,
            max_delay: Duration::from_secs(60),
            max_retries,
        }
    }

    /// With pauses capped at `max_delay`.
    pub fn with_max_delay(mut self, max_delay: Duration) -> Self {
        self.max_delay = max_delay;
        self
    }

    /// The pauses between attempts, in order.
    pub fn delays(&self) -> impl Iterator<Item = Duration> + Send + use<> {
        ExponentialBuilder::default()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay.max(self.min_delay))
            .with_max_times(self.max_retries)
            .build()
    }

    /// Runs `op`, again after each pause while it fails with a retryable error.
    pub async fn retry<T, Fut>(&self, op: impl FnMut() -> Fut) -> Result<T>
    where
        Fut: Future<Output = Result<T>>,
    {
        self.retry_notify(op, |_, _| {}).await
    }

    /// [`RetryPolicy::retry`], calling `notify(error, pause)` before each pause.
    pub async fn retry_notify<T, Fut>(
        &self,
        op: impl FnMut() -> Fut,
        notify: impl FnMut(&Error, Duration),
    ) -> Result<T>
    where
        Fut: Future<Output = Result<T>>,
    {
        self.retry_if(Error::is_retryable, op, notify).await
    }

    /// Runs `op`, again after each pause while it fails with an error `when` accepts (a
    /// narrower rule than "retryable", such as "an optimistic-concurrency conflict: re-read
    /// and try again"), calling `notify(error, pause)` before each pause. The last such error
    /// is returned as [`Error::persistent`].
    pub async fn retry_if<T, Fut>(
        &self,
        mut when: impl FnMut(&Error) -> bool,
        mut op: impl FnMut() -> Fut,
        mut notify: impl FnMut(&Error, Duration),
    ) -> Result<T>
    where
        Fut: Future<Output = Result<T>>,
    {
        let mut delays = self.delays();
        loop {
            match op().await {
                Err(e) if when(&e) => match delays.next() {
                    Some(pause) => {
                        notify(&e, pause);
                        tokio::time::sleep(pause).await;
                    }
                    None => return Err(e.persistent()),
                },
                done => return done,
            }
        }
    }
}

/// Retries idempotent provider calls (reads: power state, describe, list, inventory, …) on
/// retryable errors; calls that change things run once.
#[derive(Debug, Clone, Copy, Default)]
pub struct RetryLayer {
    policy: RetryPolicy,
}

impl RetryLayer {
    /// Retries with `policy`.
    pub fn new(policy: RetryPolicy) -> Self {
        RetryLayer { policy }
    }
}

impl Layer for RetryLayer {
    fn call<'a, T: Send + 'a>(
        &'a self,
        call: Call<'a>,
        next: Next<'a, T>,
    ) -> BoxFuture<'a, Result<T>> {
        Box::pin(async move {
            if call.idempotent {
                self.policy.retry(|| next.run()).await
            } else {
                next.run().await
            }
        })
    }
}
