//! `watch_power_state`: a private property collector on the VM's power paths, read with
//! `WaitForUpdatesEx` long polls. One state per object update, so a batched off-then-on
//! reports both.

use std::collections::VecDeque;
use std::sync::Arc;

use futures::StreamExt;
use virtrigaud_core::{PowerState, PowerStateStream, Result, VmId};

use crate::client::Client;
use crate::collector::Waiter;
use crate::error::to_core_error;
use crate::power::{POWER_PATHS, power_state_of};
use crate::types::{MoRef, Props};
use crate::vm_api::on_vm;

const OP: &str = "watch_power_state";

/// What the stream carries between polls.
struct Watch {
    waiter: Waiter,
    props: Props,
    last: Option<PowerState>,
    pending: VecDeque<PowerState>,
}

/// The power-state changes of `vm` after this call (callers read the current state
/// themselves). The stream ends after its first error.
pub(crate) async fn watch_power_state(c: &Arc<Client>, vm: &VmId) -> Result<PowerStateStream> {
    let moref = MoRef::vm(vm.as_str());
    let mut waiter = on_vm(c.waiter(&moref, &POWER_PATHS).await, OP, vm)?;
    // The first update carries the current values: consume it so the stream only reports
    // changes after this call.
    let mut props = Props::default();
    let first = on_vm(waiter.next().await, OP, vm)?;
    for group in first.unwrap_or_default() {
        props.apply(group);
    }
    let last = power_state_of(&props);
    let start = Watch {
        waiter,
        props,
        last,
        pending: VecDeque::new(),
    };
    let vmid = vm.clone();
    let stream = futures::stream::unfold(Some(start), move |state| {
        let vmid = vmid.clone();
        async move {
            let mut w = state?;
            loop {
                if let Some(s) = w.pending.pop_front() {
                    return Some((Ok(s), Some(w)));
                }
                match w.waiter.next().await {
                    Ok(Some(groups)) => {
                        for group in groups {
                            w.props.apply(group);
                            let now = power_state_of(&w.props);
                            if let Some(s) = now.filter(|_| now != w.last) {
                                w.last = now;
                                w.pending.push_back(s);
                            }
                        }
                    }
                    Ok(None) => continue,
                    Err(e) => {
                        let err = to_core_error(e, OP, Some(vmid.as_str()));
                        w.waiter.destroy().await;
                        return Some((Err(err), None));
                    }
                }
            }
        }
    });
    Ok(stream.boxed())
}
