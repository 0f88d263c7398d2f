//! `watch_power_state`, shared: ONE property collector per provider ([`WatchHub`]) with one
//! filter per watched VM (vim25 filters are immutable, so VMs are added and removed as
//! filters), read by ONE `WaitForUpdatesEx` loop that routes each object update to the
//! subscribers of its VM. Open long polls stay at one whatever the number of watches.
//!
//! * Subscribing creates the collector when there is none (`CreatePropertyCollector`, once),
//!   then the VM's filter (`CreateFilter`) unless the VM is watched already, and returns when
//!   the loop has the VM's first update: the current values, the subscriber's baseline. A
//!   filter created while a long poll is out is entered by `CancelWaitForUpdates` (the loop
//!   then polls again at once). A second subscriber of a watched VM starts from the values
//!   the loop holds.
//! * The loop polls with the version token. vcsim's token is always `-` and its versioned
//!   polls only carry changes of objects already entered; while filters wait for their first
//!   update there it polls from the initial version `""`, which enters the new filters only.
//! * Each object update is applied to the VM's values and yields at most one state, sent to
//!   every subscriber: one state per object update, so a batched off-then-on reports both.
//!   Only values the server sent are reported (`poweredOff` only when it says so).
//! * A stream dropped by its last subscriber destroys its VM's filter
//!   (`DestroyPropertyFilter`); the last hold gone destroys the collector
//!   (`DestroyPropertyCollector`), and the next watch creates a new one.
//! * The collector belongs to the session: after a re-login (or `ManagedObjectNotFound` /
//!   `InvalidCollectorVersion`) the loop rebuilds the collector with every filter and polls
//!   from `""`; each VM's new first update is compared with what its subscribers last got, so
//!   a change during the gap is still reported. Any other failure ends every stream with that
//!   error (the engine then polls) and drops the collector; the next watch creates another.
//! * A VM deleted while watched (`leave`, or a `missingSet` entry: filters report missing
//!   objects instead of failing the whole poll) ends its streams with `NotFound`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use virtrigaud_core::{Error, ErrorKind, PowerState, PowerStateStream, Result, VmId};

use crate::PROVIDER_TYPE;
use crate::client::Client;
use crate::collector::object_updates;
use crate::error::{SoapFault, VimError, to_core_error_shared};
use crate::power::{POWER_PATHS, power_state_of};
use crate::types::{MoRef, Props};
use crate::vm_api::on_vm;
use crate::xml::Element;

const OP: &str = "watch_power_state";

/// How often a subscriber waiting for its first update pokes the loop again
/// (`CancelWaitForUpdates`), in case its first poke reached the server before the long poll.
const REPOKE: Duration = Duration::from_secs(1);

/// The shared power-state watch of one provider (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct WatchHub {
    state: Mutex<HubState>,
    /// Held while the collector or a filter is created, and while the loop rebuilds them.
    setup: tokio::sync::Mutex<()>,
    ids: AtomicU64,
}

#[derive(Debug, Default)]
struct HubState {
    collector: Option<Shared>,
}

/// The shared collector.
#[derive(Debug)]
struct Shared {
    id: u64,
    pc: MoRef,
    /// Live streams and subscriptions under way; the collector goes with the last.
    holds: usize,
    /// Watched VMs by moref.
    vms: HashMap<String, Entry>,
    /// The loop task runs.
    looping: bool,
    /// A long poll is out.
    polling: bool,
}

/// One watched VM.
#[derive(Debug)]
struct Entry {
    filter: MoRef,
    props: Props,
    /// The state its subscribers last got (or their baseline).
    last: Option<PowerState>,
    /// The first update (the baseline) arrived.
    entered: bool,
    /// The long poll out was sent after this filter existed.
    polled: bool,
    subs: Vec<(u64, mpsc::UnboundedSender<Result<PowerState>>)>,
    /// Subscribers waiting for the baseline.
    waiting: Vec<oneshot::Sender<Result<()>>>,
}

impl Entry {
    /// Ends every stream and subscription of this VM with `err`.
    fn fail(self, err: impl Fn() -> Error) {
        for (_, tx) in self.subs {
            let _ = tx.send(Err(err()));
        }
        for w in self.waiting {
            let _ = w.send(Err(err()));
        }
    }
}

impl WatchHub {
    fn lock(&self) -> MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The watched VMs and the open filters (one per VM) of the shared collector; for
    /// measurements.
    pub(crate) fn watched(&self) -> usize {
        self.lock().collector.as_ref().map_or(0, |s| s.vms.len())
    }

    /// Whether the shared collector exists.
    pub(crate) fn has_collector(&self) -> bool {
        self.lock().collector.is_some()
    }

    /// The shared collector if it is still `id`.
    fn current(st: &mut HubState, id: u64) -> Option<&mut Shared> {
        st.collector.as_mut().filter(|s| s.id == id)
    }

    /// Ends every stream with `e` and drops the collector `id`.
    fn fail(&self, client: &Arc<Client>, id: u64, e: &VimError) {
        let shared = {
            let mut st = self.lock();
            if st.collector.as_ref().is_some_and(|s| s.id == id) {
                st.collector.take()
            } else {
                None
            }
        };
        let Some(shared) = shared else { return };
        tracing::debug!(error = %e, vms = shared.vms.len(), "the shared power-state watch failed");
        for (vm, entry) in shared.vms {
            entry.fail(|| to_core_error_shared(e, OP, Some(&vm)));
        }
        spawn_call(client, "DestroyPropertyCollector", shared.pc);
    }

    /// Applies one `WaitForUpdatesEx` result (`initial`: polled from version `""`).
    fn route(&self, client: &Arc<Client>, id: u64, rv: Option<&Element>, initial: bool) {
        let mut st = self.lock();
        let Some(sh) = Self::current(&mut st, id) else {
            return;
        };
        sh.polling = false;
        let Some(rv) = rv else { return };
        let (updates, missing) = object_updates(rv);
        let mut gone = Vec::new();
        for u in updates {
            if u.obj.ty != "VirtualMachine" {
                continue;
            }
            let Some(e) = sh.vms.get_mut(&u.obj.value) else {
                continue;
            };
            if u.kind == "leave" {
                gone.push(u.obj.value);
                continue;
            }
            e.props.apply(u.changes);
            let now = power_state_of(&e.props);
            if !e.entered {
                e.entered = true;
                e.last = now;
                for w in e.waiting.drain(..) {
                    let _ = w.send(Ok(()));
                }
                continue;
            }
            if let Some(s) = now.filter(|_| now != e.last) {
                e.last = now;
                e.subs.retain(|(_, tx)| tx.send(Ok(s)).is_ok());
            }
        }
        gone.extend(missing.into_iter().map(|m| m.value));
        // A complete poll from "" enters every filter whose object exists (vcsim reports
        // missing objects by leaving them out).
        if initial && rv.text_at("truncated") != Some("true") {
            gone.extend(
                sh.vms
                    .iter()
                    .filter(|(_, e)| e.polled && !e.entered)
                    .map(|(vm, _)| vm.clone()),
            );
        }
        for vm in gone {
            if let Some(e) = sh.vms.remove(&vm) {
                spawn_call(client, "DestroyPropertyFilter", e.filter.clone());
                e.fail(|| {
                    to_core_error_shared(
                        &VimError::Fault(SoapFault::new(
                            "ManagedObjectNotFound",
                            format!("VirtualMachine {vm} was removed"),
                        )),
                        OP,
                        Some(&vm),
                    )
                });
            }
        }
    }

    /// Recreates the collector `id` and its filters in the current session.
    async fn rebuild(&self, client: &Arc<Client>, id: u64) -> std::result::Result<(), VimError> {
        let _setup = self.setup.lock().await;
        let vms: Vec<String> = {
            let mut st = self.lock();
            let Some(sh) = Self::current(&mut st, id) else {
                return Ok(());
            };
            sh.vms.keys().cloned().collect()
        };
        tracing::debug!(
            vms = vms.len(),
            "recreating the shared property collector after a session change"
        );
        let pc = client.create_collector().await?;
        let mut filters = Vec::with_capacity(vms.len());
        for vm in vms {
            match client
                .create_filter(&pc, &MoRef::vm(&vm), &POWER_PATHS)
                .await
            {
                Ok(f) => filters.push((vm, f)),
                Err(e) => {
                    spawn_call(client, "DestroyPropertyCollector", pc);
                    return Err(e);
                }
            }
        }
        let mut st = self.lock();
        match Self::current(&mut st, id) {
            Some(sh) => {
                sh.pc = pc;
                for (vm, f) in filters {
                    if let Some(e) = sh.vms.get_mut(&vm) {
                        e.filter = f;
                    }
                }
            }
            None => spawn_call(client, "DestroyPropertyCollector", pc),
        }
        Ok(())
    }

    /// Pokes the loop so a long poll sent before the filter of `vm` existed returns now.
    async fn poke(&self, client: &Client, id: u64, vm: &str) {
        let pc = {
            let mut st = self.lock();
            let Some(sh) = Self::current(&mut st, id) else {
                return;
            };
            let waits = sh.vms.get(vm).is_some_and(|e| !e.entered && !e.polled);
            if !(waits && sh.polling) {
                return;
            }
            sh.pc.clone()
        };
        let _ = client.call("CancelWaitForUpdates", &pc, "").await;
    }
}

/// Sends `method` on `this` in the background (best effort).
fn spawn_call(client: &Arc<Client>, method: &'static str, this: MoRef) {
    let client = Arc::clone(client);
    if let Ok(h) = tokio::runtime::Handle::try_current() {
        h.spawn(async move {
            if let Err(e) = client.call(method, &this, "").await {
                tracing::debug!(method, error = %e, "cleanup of the shared power-state watch failed");
            }
        });
    }
}

/// The one `WaitForUpdatesEx` loop of collector `id`. Ends when no VM is watched, when the
/// collector was dropped, or after a failure (which ends every stream).
async fn run(client: Arc<Client>, hub: Arc<WatchHub>, id: u64) {
    let mut version = String::new();
    let mut generation = client.generation();
    loop {
        let (pc, from) = {
            let mut st = hub.lock();
            let Some(sh) = WatchHub::current(&mut st, id) else {
                return;
            };
            if sh.vms.is_empty() {
                sh.looping = false;
                return;
            }
            let fresh = sh.vms.values().any(|e| !e.entered);
            let from = if fresh && version == "-" {
                String::new()
            } else {
                version.clone()
            };
            sh.polling = true;
            for e in sh.vms.values_mut() {
                e.polled = true;
            }
            (sh.pc.clone(), from)
        };
        match client.wait_for_updates(&pc, &from).await {
            Ok(rv) => {
                if let Some(v) = rv.as_ref().and_then(|rv| rv.text_at("version")) {
                    v.clone_into(&mut version);
                }
                hub.route(&client, id, rv.as_ref(), from.is_empty());
            }
            // A watch was added (CancelWaitForUpdates) or the collector destroyed.
            Err(e) if e.is_fault("RequestCanceled") => {
                let mut st = hub.lock();
                if let Some(sh) = WatchHub::current(&mut st, id) {
                    sh.polling = false;
                }
            }
            Err(_) if hub.lock().collector.as_ref().is_none_or(|s| s.id != id) => return,
            Err(e)
                if client.generation() != generation
                    || e.is_fault("ManagedObjectNotFound")
                    || e.is_fault("InvalidCollectorVersion") =>
            {
                tracing::debug!(error = %e, "the shared property collector is gone");
                generation = client.generation();
                if let Err(e) = hub.rebuild(&client, id).await {
                    hub.fail(&client, id, &e);
                    return;
                }
                version.clear();
            }
            Err(e) => {
                hub.fail(&client, id, &e);
                return;
            }
        }
    }
}

/// A subscriber's share of the collector: dropping it (with its stream) removes the
/// subscriber, the VM's filter with its last one and the collector with the last hold.
struct Hold {
    hub: Arc<WatchHub>,
    client: Arc<Client>,
    collector: u64,
    vm: String,
    sub: u64,
}

impl Drop for Hold {
    fn drop(&mut self) {
        let mut cleanup = None;
        {
            let mut st = self.hub.lock();
            let Some(sh) = WatchHub::current(&mut st, self.collector) else {
                return;
            };
            if let Some(e) = sh.vms.get_mut(&self.vm) {
                e.subs.retain(|(id, _)| *id != self.sub);
                if e.subs.is_empty()
                    && let Some(e) = sh.vms.remove(&self.vm)
                {
                    cleanup = Some(("DestroyPropertyFilter", e.filter));
                }
            }
            sh.holds = sh.holds.saturating_sub(1);
            if sh.holds == 0
                && let Some(sh) = st.collector.take()
            {
                // Destroying the collector destroys its filters and ends its long poll.
                cleanup = Some(("DestroyPropertyCollector", sh.pc));
            }
        }
        if let Some((method, this)) = cleanup {
            spawn_call(&self.client, method, this);
        }
    }
}

/// The power-state changes of `vm` after this call (callers read the current state
/// themselves), through the provider's shared collector. The stream ends after its first
/// error.
pub(crate) async fn watch_power_state(
    c: &Arc<Client>,
    hub: &Arc<WatchHub>,
    vm: &VmId,
) -> Result<PowerStateStream> {
    let key = vm.as_str().to_owned();
    let (tx, rx) = mpsc::unbounded_channel();
    let (ready_tx, mut ready) = oneshot::channel();
    let sub = hub.ids.fetch_add(1, Ordering::Relaxed);
    let hold = {
        let _setup = hub.setup.lock().await;
        let existing = hub.lock().collector.as_ref().map(|s| s.id);
        let id = match existing {
            Some(id) => id,
            None => {
                let pc = on_vm(c.create_collector().await, OP, vm)?;
                let id = hub.ids.fetch_add(1, Ordering::Relaxed);
                hub.lock().collector = Some(Shared {
                    id,
                    pc,
                    holds: 0,
                    vms: HashMap::new(),
                    looping: false,
                    polling: false,
                });
                id
            }
        };
        let pc = {
            let mut st = hub.lock();
            let Some(sh) = WatchHub::current(&mut st, id) else {
                return Err(gone(vm));
            };
            sh.holds += 1;
            sh.pc.clone()
        };
        let hold = Hold {
            hub: Arc::clone(hub),
            client: Arc::clone(c),
            collector: id,
            vm: key.clone(),
            sub,
        };
        let watched = {
            let mut st = hub.lock();
            let Some(sh) = WatchHub::current(&mut st, id) else {
                return Err(gone(vm));
            };
            match sh.vms.get_mut(&key) {
                Some(e) => {
                    e.subs.push((sub, tx.clone()));
                    if e.entered {
                        let _ = ready_tx.send(Ok(()));
                    } else {
                        e.waiting.push(ready_tx);
                    }
                    None
                }
                None => Some(ready_tx),
            }
        };
        if let Some(ready_tx) = watched {
            let filter = on_vm(
                c.create_filter(&pc, &MoRef::vm(&key), &POWER_PATHS).await,
                OP,
                vm,
            )?;
            let mut st = hub.lock();
            let Some(sh) = WatchHub::current(&mut st, id) else {
                return Err(gone(vm));
            };
            sh.vms.insert(
                key.clone(),
                Entry {
                    filter,
                    props: Props::default(),
                    last: None,
                    entered: false,
                    polled: false,
                    subs: vec![(sub, tx)],
                    waiting: vec![ready_tx],
                },
            );
            if !sh.looping {
                sh.looping = true;
                tokio::spawn(run(Arc::clone(c), Arc::clone(hub), id));
            }
        }
        hold
    };
    // Wait for the baseline, poking a long poll that was sent before the filter existed.
    let limit = Instant::now() + c.wait_poll * 2 + Duration::from_secs(5);
    let baseline = loop {
        hub.poke(c, hold.collector, &key).await;
        let until = limit.min(Instant::now() + REPOKE);
        match tokio::time::timeout_at(until, &mut ready).await {
            Ok(Ok(r)) => break r,
            Ok(Err(_)) => break Err(gone(vm)),
            Err(_) if Instant::now() >= limit => {
                break Err(Error::new(
                    ErrorKind::Timeout,
                    "the shared property collector sent no first update for the VM",
                )
                .context_for(PROVIDER_TYPE, OP, Some(vm.as_str())));
            }
            Err(_) => {}
        }
    };
    baseline?;
    let stream = futures::stream::unfold(Some((rx, hold)), |state| async move {
        let (mut rx, hold) = state?;
        let item = rx.recv().await?;
        let next = item.is_ok().then_some((rx, hold));
        Some((item, next))
    });
    Ok(stream.boxed())
}

/// The shared collector went away while subscribing (its loop failed).
fn gone(vm: &VmId) -> Error {
    Error::new(
        ErrorKind::Unavailable,
        "the shared property collector failed while subscribing",
    )
    .temporary()
    .context_for(PROVIDER_TYPE, OP, Some(vm.as_str()))
}
