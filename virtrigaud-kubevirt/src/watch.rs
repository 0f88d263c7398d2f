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
        #[derive(Default)]
        struct St {
            vm: Option<VirtualMachine>,
            vmi: Option<VirtualMachineInstance>,
            vm_buf: Option<VirtualMachine>,
            vmi_buf: Option<VirtualMachineInstance>,
            vm_ready: bool,
            vmi_ready: bool,
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
            .scan(St::default(), move |st, ev| {
                use watcher::Event as E;
                let out = match ev {
                    Err(e) => Some(Err(to_core_error(e, "watch", Some(&res)))),
                    Ok(side) => {
                        let changed = match side {
                            Side::Vm(E::Apply(o)) => {
                                stats.watch_event();
                                st.vm = Some(o);
                                true
                            }
                            Side::Vm(E::Delete(_)) => {
                                stats.watch_event();
                                st.vm = None;
                                true
                            }
                            Side::Vm(E::Init) => {
                                st.vm_buf = None;
                                false
                            }
                            Side::Vm(E::InitApply(o)) => {
                                stats.watch_event();
                                st.vm_buf = Some(o);
                                false
                            }
                            Side::Vm(E::InitDone) => {
                                st.vm = st.vm_buf.take();
                                st.vm_ready = true;
                                true
                            }
                            Side::Vmi(E::Apply(o)) => {
                                stats.watch_event();
                                st.vmi = Some(o);
                                true
                            }
                            Side::Vmi(E::Delete(_)) => {
                                stats.watch_event();
                                st.vmi = None;
                                true
                            }
                            Side::Vmi(E::Init) => {
                                st.vmi_buf = None;
                                false
                            }
                            Side::Vmi(E::InitApply(o)) => {
                                stats.watch_event();
                                st.vmi_buf = Some(o);
                                false
                            }
                            Side::Vmi(E::InitDone) => {
                                st.vmi = st.vmi_buf.take();
                                st.vmi_ready = true;
                                true
                            }
                        };
                        (changed && st.vm_ready && st.vmi_ready)
                            .then(|| Ok((st.vm.clone(), st.vmi.clone())))
                    }
                };
                futures::future::ready(Some(out))
            })
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
