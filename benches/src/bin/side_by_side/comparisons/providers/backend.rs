//! What every backend provides, and the two ways a stop is driven on it: the engine and a
//! 2 s polling loop.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use virtrigaud_core::provider::ShutdownRequestOptions;
use virtrigaud_core::shutdown::{ShutdownManager, ShutdownOutcome, ShutdownPolicy};
use virtrigaud_core::{PowerState, Provider, ShutdownChannel, VmId};

use super::types::{Count, Res, Row, Stop};

/// The polling baseline's interval (virtrigaud's Go providers, seed 004's `waitForVMStopped`).
const POLL: Duration = Duration::from_secs(2);
/// Grace beyond the guest's own time: every stop here must end graceful.
pub(crate) const SLACK: Duration = Duration::from_secs(30);

/// A boxed future (the [`Backend`] trait is object-safe).
pub(crate) type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// An environment variable the backend's setup script exports.
pub(crate) fn var(name: &str) -> Res<String> {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .ok_or_else(|| format!("environment variable {name} is not set"))
}

/// A fresh provider with its own request counter.
pub(crate) struct Instance {
    pub provider: Arc<dyn Provider>,
    pub count: Box<dyn Fn() -> Count + Send + Sync>,
}

/// One backend: fresh provider instances and guests that take a given time to stop.
pub(crate) trait Backend: Send + Sync {
    /// The report's name.
    fn name(&self) -> &'static str;
    /// The channel the polling loop uses (the one the engine picks on this backend).
    fn channel(&self) -> ShutdownChannel;
    /// How many guests may be in use at once (`None`: unbounded).
    fn slots(&self) -> Option<usize>;
    /// A fresh provider instance with its own request counter.
    fn instance(&self) -> BoxFut<'_, Res<Instance>>;
    /// A running guest (slot `slot`) that honours a shutdown request after `t`.
    fn guest(&self, slot: usize, tag: &str, t: Duration) -> BoxFut<'_, Res<VmId>>;
    /// Leaves the guest as the backend's other users expect it.
    fn release<'a>(&'a self, vm: &'a VmId) -> BoxFut<'a, ()>;
}

async fn engine_stop(b: &dyn Backend, slot: usize, t: Duration) -> Res<Stop> {
    let inst = b.instance().await?;
    let vm = b.guest(slot, "e", t).await?;
    let mgr = ShutdownManager::new(Arc::clone(&inst.provider));
    let before = (inst.count)();
    let t0 = Instant::now();
    let rep = mgr
        .shutdown(&vm, ShutdownPolicy::with_grace(t + SLACK))
        .await
        .map_err(|e| format!("{} engine, guest {t:?}: {e}", b.name()));
    let elapsed = t0.elapsed();
    let count = (inst.count)() - before;
    b.release(&vm).await;
    let rep = rep?;
    let outcome = rep.outcome.to_string();
    if !matches!(rep.outcome, ShutdownOutcome::Graceful { .. }) {
        return Err(format!(
            "{} engine, guest {t:?}: not graceful: {outcome}",
            b.name()
        ));
    }
    Ok(Stop {
        count,
        elapsed,
        outcome,
    })
}

async fn poll_stop(b: &dyn Backend, slot: usize, t: Duration) -> Res<Stop> {
    // The request goes through one instance, the state reads through a second one that never
    // sent the request: a plain state read, as in the Go loop (the Proxmox provider otherwise
    // also re-reads the status of the shutdown task it started).
    let inst = b.instance().await?;
    let reader = b.instance().await?;
    let vm = b.guest(slot, "p", t).await?;
    let p = &inst.provider;
    let both = || (inst.count)() + (reader.count)();
    let before = both();
    let t0 = Instant::now();
    let res = async {
        p.request_shutdown(&vm, b.channel(), &ShutdownRequestOptions::new(1, t + SLACK))
            .await
            .map_err(|e| format!("request: {e}"))?;
        loop {
            tokio::time::sleep(POLL).await;
            if matches!(
                reader.provider.power_state(&vm).await,
                Ok(PowerState::Off(_))
            ) {
                return Ok(());
            }
            if t0.elapsed() > t + SLACK {
                return Err("still running after the grace".to_string());
            }
        }
    }
    .await;
    let elapsed = t0.elapsed();
    let count = both() - before;
    b.release(&vm).await;
    res.map_err(|e| format!("{} 2 s loop, guest {t:?}: {e}", b.name()))?;
    Ok(Stop {
        count,
        elapsed,
        outcome: "off".into(),
    })
}

/// Every guest time on one backend: all at once when the backend has guests enough, else the
/// engine stops first, then the polling loops.
pub(crate) async fn measure(b: &dyn Backend, guests: &[Duration]) -> Vec<Row> {
    let n = guests.len();
    let two_phases = b.slots().is_some_and(|s| s < 2 * n);
    let engine = futures::future::join_all(
        guests
            .iter()
            .enumerate()
            .map(|(i, &t)| engine_stop(b, i, t)),
    );
    let poll_slot = |i: usize| if two_phases { i } else { n + i };
    let poll = futures::future::join_all(
        guests
            .iter()
            .enumerate()
            .map(|(i, &t)| poll_stop(b, poll_slot(i), t)),
    );
    let (engine, poll) = if two_phases {
        let e = engine.await;
        (e, poll.await)
    } else {
        futures::future::join(engine, poll).await
    };
    guests
        .iter()
        .zip(engine.into_iter().zip(poll))
        .map(|(&guest, (engine, poll))| Row {
            guest,
            engine,
            poll,
        })
        .collect()
}
