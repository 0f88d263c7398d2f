//! Shared watches: one VM watch and one VMI watch per namespace, opened on the first
//! power-state subscription of that namespace, multiplexed to every subscriber (a stream of
//! `watch_power_state` or a wait), and closed when the last subscriber is gone. The number of
//! open watches is constant in the number of concurrent stops.
//!
//! ## Freshness
//! The watches mirror the namespace (a store of VMs and one of VMIs, replaced as a whole at
//! every (re)listing's `InitDone`). A subscriber is *anchored* to a read of its VM and VMI made
//! after it subscribed (its baseline) and hears nothing until the mirror has caught up with
//! that read: the mirror's VM is at the baseline's `resourceVersion` or later (or gone, after
//! the watch passed that version), likewise its VMI; a VMI the baseline did not have counts
//! only once it is newer than the baseline's VM (an older one may be a deleted instance the
//! watch has not caught up with). So a mirror lagging behind the baseline never pushes an
//! older state, and `Off` is never pushed before the objects say so. Resource versions are
//! compared as numbers (etcd revisions); a server whose versions are not numeric gets no
//! catch-up guard (the watch then starts from its own listing, as kube-runtime's watcher does).
//!
//! After catching up a subscriber gets the power state derived from the mirror after every
//! change of its VM or VMI, deduplicated against the last state it had (its baseline first),
//! `NotFound` when the VM is deleted (then its stream ends). Watch errors are retried with
//! kube-runtime's default backoff (the stream does not end).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll};

use futures::{Stream, StreamExt, stream};
use kube::ResourceExt;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::mpsc;
use virtrigaud_core::{Error, PowerState, Result};

use crate::PROVIDER_TYPE;
use crate::client::Connection;
use crate::id::VmRef;
use crate::state::power_state_of;
use crate::stats::ApiStats;
use crate::types::{VirtualMachine, VirtualMachineInstance};

/// The shared watches of one connection, by namespace.
#[derive(Debug, Default)]
pub(crate) struct SharedWatches {
    by_ns: Mutex<HashMap<String, Weak<NsWatch>>>,
}

/// The shared watch pair of one namespace: alive while a subscriber holds it.
#[derive(Debug)]
struct NsWatch {
    state: Arc<Mutex<NsState>>,
    task: tokio::task::AbortHandle,
}

impl Drop for NsWatch {
    fn drop(&mut self) {
        // Drops both watcher streams (and their open-watch counts).
        self.task.abort();
    }
}

/// Locks `m` (a poisoned lock only means a panic elsewhere; the state stays usable).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A resource version as a number (`None`: absent or not numeric).
fn rv_of<K: kube::Resource>(o: &K) -> Option<u64> {
    o.resource_version().and_then(|v| v.parse().ok())
}

/// One kind of object of the namespace as the watch has delivered it.
#[derive(Debug)]
struct Mirror<K> {
    objs: HashMap<String, K>,
    /// The objects of a (re)listing in progress.
    listing: Option<HashMap<String, K>>,
    /// A first listing completed.
    ready: bool,
    /// The highest resource version delivered (watch events arrive in version order).
    mark: u64,
}

impl<K> Default for Mirror<K> {
    fn default() -> Self {
        Mirror {
            objs: HashMap::new(),
            listing: None,
            ready: false,
            mark: 0,
        }
    }
}

/// What an event changed.
enum Changed {
    Nothing,
    One(String),
    All,
}

impl<K: kube::Resource> Mirror<K> {
    fn apply(&mut self, ev: watcher::Event<K>, stats: &ApiStats) -> Changed {
        use watcher::Event as E;
        match ev {
            E::Apply(o) => {
                stats.watch_event();
                self.mark = self.mark.max(rv_of(&o).unwrap_or(0));
                let name = o.name_any();
                self.objs.insert(name.clone(), o);
                Changed::One(name)
            }
            E::Delete(o) => {
                stats.watch_event();
                self.mark = self.mark.max(rv_of(&o).unwrap_or(0));
                let name = o.name_any();
                self.objs.remove(&name);
                Changed::One(name)
            }
            E::Init => {
                self.listing = Some(HashMap::new());
                Changed::Nothing
            }
            E::InitApply(o) => {
                stats.watch_event();
                self.listing.get_or_insert_default().insert(o.name_any(), o);
                Changed::Nothing
            }
            E::InitDone => {
                let objs = self.listing.take().unwrap_or_default();
                let top = objs.values().filter_map(rv_of).max().unwrap_or(0);
                self.mark = self.mark.max(top);
                self.objs = objs;
                self.ready = true;
                Changed::All
            }
        }
    }

    /// Whether the mirror's `name` is at least as new as version `need` (`None`: no guard).
    fn caught_up(&self, name: &str, need: Option<u64>) -> bool {
        let Some(need) = need else { return true };
        match self.objs.get(name) {
            Some(o) => rv_of(o).is_none_or(|v| v >= need),
            None => self.mark >= need,
        }
    }
}

/// The baseline a subscriber must be caught up with.
#[derive(Debug, Clone, Copy)]
struct Anchor {
    vm: Option<u64>,
    /// The baseline's VMI version (`Err(vm version)`: the baseline had no VMI).
    vmi: std::result::Result<Option<u64>, Option<u64>>,
}

#[derive(Debug)]
struct Subscriber {
    id: u64,
    tx: mpsc::UnboundedSender<Result<PowerState>>,
    /// The last state this subscriber had (its baseline first).
    last: Option<PowerState>,
    /// `None` until the baseline read is in.
    anchor: Option<Anchor>,
    caught_up: bool,
}

#[derive(Debug, Default)]
struct NsState {
    namespace: String,
    vms: Mirror<VirtualMachine>,
    vmis: Mirror<VirtualMachineInstance>,
    subs: HashMap<String, Vec<Subscriber>>,
    next_id: u64,
}

impl NsState {
    /// Whether the mirror of `name` is caught up with `anchor`.
    fn fresh(&self, name: &str, anchor: &Anchor) -> bool {
        if !(self.vms.ready && self.vmis.ready && self.vms.caught_up(name, anchor.vm)) {
            return false;
        }
        match anchor.vmi {
            Ok(need) => self.vmis.caught_up(name, need),
            // No VMI in the baseline: one in the mirror counts once newer than the baseline's VM.
            Err(vm) => match (self.vmis.objs.get(name), vm) {
                (None, _) | (_, None) => true,
                (Some(v), Some(vm)) => rv_of(v).is_none_or(|v| v > vm),
            },
        }
    }

    /// Pushes what changed for the subscribers of `name`.
    fn notify(&mut self, name: &str) {
        let Some(mut subs) = self.subs.remove(name) else {
            return;
        };
        subs.retain_mut(|s| self.push(name, s));
        if !subs.is_empty() {
            self.subs.insert(name.to_owned(), subs);
        }
    }

    fn notify_all(&mut self) {
        let names: Vec<String> = self.subs.keys().cloned().collect();
        for n in names {
            self.notify(&n);
        }
    }

    /// Pushes `name`'s state to `s` if it is caught up and the state changed; `false`: the
    /// subscriber is done (its VM was deleted, or its stream dropped).
    fn push(&self, name: &str, s: &mut Subscriber) -> bool {
        let Some(anchor) = s.anchor else { return true };
        if !s.caught_up {
            if !self.fresh(name, &anchor) {
                return true;
            }
            s.caught_up = true;
        }
        let Some(vm) = self.vms.objs.get(name) else {
            let e = Error::not_found("VirtualMachine deleted").context_for(
                PROVIDER_TYPE,
                "watch_power_state",
                Some(&format!("{}/{name}", self.namespace)),
            );
            let _ = s.tx.send(Err(e));
            return false;
        };
        match power_state_of(vm, self.vmis.objs.get(name)) {
            Ok(st) if Some(st) != s.last => {
                s.last = Some(st);
                s.tx.send(Ok(st)).is_ok()
            }
            _ => !s.tx.is_closed(),
        }
    }

    /// The state of `name` from the mirror, when a subscriber of it is caught up.
    fn current(&self, name: &str) -> Option<(VirtualMachine, Option<VirtualMachineInstance>)> {
        let subs = self.subs.get(name)?;
        subs.iter()
            .any(|s| s.caught_up || s.anchor.is_some_and(|a| self.fresh(name, &a)))
            .then(|| {
                let vm = self.vms.objs.get(name)?.clone();
                Some((vm, self.vmis.objs.get(name).cloned()))
            })
            .flatten()
    }
}

/// One subscriber's end: a stream of its power states; dropping it unsubscribes.
#[derive(Debug)]
pub(crate) struct Subscription {
    rx: mpsc::UnboundedReceiver<Result<PowerState>>,
    watch: Arc<NsWatch>,
    name: String,
    id: u64,
}

impl Subscription {
    /// Anchors the subscription to its baseline read (`last`: the baseline's power state,
    /// `None` to have the first caught-up state pushed as well).
    pub(crate) fn anchor(
        &self,
        vm: &VirtualMachine,
        vmi: Option<&VirtualMachineInstance>,
        last: Option<PowerState>,
    ) {
        let anchor = Anchor {
            vm: rv_of(vm),
            vmi: match vmi {
                Some(v) => Ok(rv_of(v)),
                None => Err(rv_of(vm)),
            },
        };
        let mut st = lock(&self.watch.state);
        if let Some(s) = st
            .subs
            .get_mut(&self.name)
            .and_then(|v| v.iter_mut().find(|s| s.id == self.id))
        {
            s.anchor = Some(anchor);
            s.last = last;
        }
        st.notify(&self.name);
    }
}

impl Stream for Subscription {
    type Item = Result<PowerState>;
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().rx.poll_recv(cx)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut st = lock(&self.watch.state);
        if let Some(v) = st.subs.get_mut(&self.name) {
            v.retain(|s| s.id != self.id);
            if v.is_empty() {
                st.subs.remove(&self.name);
            }
        }
    }
}

impl SharedWatches {
    /// The namespace's shared watch, started if none is alive.
    fn get_or_start(&self, conn: &Connection, ns: &str) -> Arc<NsWatch> {
        let mut map = lock(&self.by_ns);
        if let Some(w) = map.get(ns).and_then(Weak::upgrade) {
            return w;
        }
        map.retain(|_, w| w.strong_count() > 0);
        let state = Arc::new(Mutex::new(NsState {
            namespace: ns.to_owned(),
            ..NsState::default()
        }));
        let task = tokio::spawn(run(
            conn.api::<VirtualMachine>(ns),
            conn.api::<VirtualMachineInstance>(ns),
            Arc::clone(&state),
            conn.stats.clone(),
        ))
        .abort_handle();
        let w = Arc::new(NsWatch { state, task });
        map.insert(ns.to_owned(), Arc::downgrade(&w));
        w
    }

    /// Subscribes to `r`'s power states; nothing is pushed before [`Subscription::anchor`].
    pub(crate) fn subscribe(&self, conn: &Connection, r: &VmRef) -> Subscription {
        let watch = self.get_or_start(conn, &r.namespace);
        let (tx, rx) = mpsc::unbounded_channel();
        let id = {
            let mut st = lock(&watch.state);
            st.next_id += 1;
            let id = st.next_id;
            st.subs.entry(r.name.clone()).or_default().push(Subscriber {
                id,
                tx,
                last: None,
                anchor: None,
                caught_up: false,
            });
            id
        };
        Subscription {
            rx,
            watch,
            name: r.name.clone(),
            id,
        }
    }

    /// `r`'s VM and VMI from the shared watch, if it is open and caught up with the baseline
    /// read of a live subscription of `r` (so no older than that read); `None`: read the wire.
    pub(crate) fn current(
        &self,
        r: &VmRef,
    ) -> Option<(VirtualMachine, Option<VirtualMachineInstance>)> {
        let w = lock(&self.by_ns)
            .get(&r.namespace)
            .and_then(Weak::upgrade)?;
        let st = lock(&w.state);
        st.current(&r.name)
    }
}

/// The watch task of one namespace: both watchers, applied to the mirror.
async fn run(
    vms: kube::Api<VirtualMachine>,
    vmis: kube::Api<VirtualMachineInstance>,
    state: Arc<Mutex<NsState>>,
    stats: ApiStats,
) {
    #[allow(clippy::large_enum_variant)] // short-lived, one per event
    enum Side {
        Vm(watcher::Event<VirtualMachine>),
        Vmi(watcher::Event<VirtualMachineInstance>),
    }
    let _vm_watch = stats.watch_opened();
    let _vmi_watch = stats.watch_opened();
    let cfg = watcher::Config::default();
    let a = watcher(vms, cfg.clone())
        .default_backoff()
        .map(|e| e.map(Side::Vm));
    let b = watcher(vmis, cfg)
        .default_backoff()
        .map(|e| e.map(Side::Vmi));
    let mut events = std::pin::pin!(stream::select(a, b));
    while let Some(ev) = events.next().await {
        let side = match ev {
            Ok(side) => side,
            Err(e) => {
                tracing::debug!(error = %e, "shared power-state watch error (retrying with backoff)");
                continue;
            }
        };
        let mut st = lock(&state);
        let changed = match side {
            Side::Vm(ev) => st.vms.apply(ev, &stats),
            Side::Vmi(ev) => st.vmis.apply(ev, &stats),
        };
        match changed {
            Changed::Nothing => {}
            Changed::One(name) => st.notify(&name),
            Changed::All => st.notify_all(),
        }
    }
}
