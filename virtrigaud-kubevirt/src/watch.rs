//! Watches: the (VM, VMI) pair stream behind `watch_power_state`, and the one watch-based
//! wait for a power state.

use std::time::Duration;

use futures::stream::{self, BoxStream};
use futures::{Stream, StreamExt, TryFutureExt};
use kube::runtime::{WatchStreamExt, watcher};
use virtrigaud_core::{Error, PowerState, Result, ResultExt};

use crate::PROVIDER_TYPE;
use crate::client::Connection;
use crate::error::to_core_error;
use crate::id::VmRef;
use crate::state::power_state_of;
use crate::stats::ApiStats;
use crate::types::{VirtualMachine, VirtualMachineInstance};

impl Connection {
    /// A stream of (VM, VMI) pairs from two watches (field selector on the name): the first item
    /// reflects the state when both initial listings completed, then one item per change.
    pub(crate) fn pair_stream(
        &self,
        r: &VmRef,
    ) -> BoxStream<'static, Result<(Option<VirtualMachine>, Option<VirtualMachineInstance>)>> {
        #[allow(clippy::large_enum_variant)] // short-lived, one per event
        enum Side {
            Vm(watcher::Event<VirtualMachine>),
            Vmi(watcher::Event<VirtualMachineInstance>),
        }
        let wc = watcher::Config::default().fields(&format!("metadata.name={}", r.name));
        let a = watcher(self.api::<VirtualMachine>(&r.namespace), wc.clone())
            .default_backoff()
            .map(|e| e.map(Side::Vm));
        let b = watcher(self.api::<VirtualMachineInstance>(&r.namespace), wc)
            .default_backoff()
            .map(|e| e.map(Side::Vmi));
        let stats = self.stats.clone();
        let res = r.to_string();
        stream::select(a, b)
            .scan(
                (Mirror::default(), Mirror::default()),
                move |(vm, vmi), ev| {
                    let out = match ev {
                        Err(e) => Some(Err(to_core_error(e, "watch", Some(&res)))),
                        Ok(side) => {
                            let changed = match side {
                                Side::Vm(ev) => vm.apply(ev, &stats),
                                Side::Vmi(ev) => vmi.apply(ev, &stats),
                            };
                            (changed && vm.ready && vmi.ready)
                                .then(|| Ok((vm.current.clone(), vmi.current.clone())))
                        }
                    };
                    futures::future::ready(Some(out))
                },
            )
            .filter_map(futures::future::ready)
            .boxed()
    }

    /// Power states of `r` from now on (deduplicated). Yields `NotFound` and ends when the VM is deleted.
    pub(crate) fn power_state_stream(
        &self,
        r: &VmRef,
        last: Option<PowerState>,
    ) -> impl Stream<Item = Result<PowerState>> + Send + 'static {
        let pairs = self.pair_stream(r);
        let r = r.clone();
        stream::unfold((pairs, last, false), move |(mut pairs, last, done)| {
            let r = r.clone();
            async move {
                if done {
                    return None;
                }
                loop {
                    match pairs.next().await? {
                        Err(e) => {
                            tracing::debug!(error = %e, "power-state watch error (retrying with backoff)")
                        }
                        Ok((None, _)) => {
                            let e = Error::not_found("VirtualMachine deleted").context_for(
                                PROVIDER_TYPE,
                                "watch_power_state",
                                Some(&r.to_string()),
                            );
                            return Some((Err(e), (pairs, last, true)));
                        }
                        Ok((Some(vm), vmi)) => match power_state_of(&vm, vmi.as_ref()) {
                            Ok(s) if Some(s) != last => {
                                return Some((Ok(s), (pairs, Some(s), false)));
                            }
                            _ => {}
                        },
                    }
                }
            }
        })
    }

    /// Waits (watch-based, no polling) until the power state satisfies `pred`.
    pub(crate) async fn wait_power_state(
        &self,
        r: &VmRef,
        pred: impl Fn(&PowerState) -> bool,
        timeout: Duration,
        op: &'static str,
    ) -> Result<PowerState> {
        let res = r.to_string();
        let fut = async {
            let mut s = self.power_state_stream(r, None).boxed();
            while let Some(item) = s.next().await {
                let st = item?;
                if pred(&st) {
                    return Ok(st);
                }
            }
            Err(Error::unavailable("watch ended"))
        };
        tokio::time::timeout(timeout, fut)
            .unwrap_or_else(|_| Err(Error::timeout(format!("not done within {timeout:?}"))))
            .await
            .ctx(PROVIDER_TYPE, op, &res)
    }
}

/// One watched object as the watch has delivered it so far.
#[derive(Debug)]
struct Mirror<K> {
    /// The object now (`None`: absent).
    current: Option<K>,
    /// The object of an initial listing in progress.
    buffered: Option<K>,
    /// The first initial listing is complete.
    ready: bool,
}

impl<K> Default for Mirror<K> {
    fn default() -> Self {
        Mirror {
            current: None,
            buffered: None,
            ready: false,
        }
    }
}

impl<K> Mirror<K> {
    /// Applies one watch event; returns whether [`Mirror::current`] may have changed.
    fn apply(&mut self, ev: watcher::Event<K>, stats: &ApiStats) -> bool {
        use watcher::Event as E;
        match ev {
            E::Apply(o) => {
                stats.watch_event();
                self.current = Some(o);
                true
            }
            E::Delete(_) => {
                stats.watch_event();
                self.current = None;
                true
            }
            E::Init => {
                self.buffered = None;
                false
            }
            E::InitApply(o) => {
                stats.watch_event();
                self.buffered = Some(o);
                false
            }
            E::InitDone => {
                self.current = self.buffered.take();
                self.ready = true;
                true
            }
        }
    }
}
