//! The only `unsafe` code of this crate: raw `virt-sys` calls that `virt` 0.5.0 does not wrap.
//!
//! * domain event registration (`virConnectDomainEventRegisterAny` /
//!   `virConnectDomainEventDeregisterAny`) for the lifecycle and agent-lifecycle events;
//! * the connection close callback (`virConnectRegisterCloseCallback` /
//!   `virConnectUnregisterCloseCallback`), to notice at once that libvirtd went away;
//! * closing a connection without `virt`'s `Drop`, which panics when `virConnectClose` fails.
//!
//! Invariants, checked by the tests at the bottom and in `tests/`:
//! * the opaque pointer handed to libvirt is a `Box<Sink>` leaked with `Box::into_raw`; libvirt
//!   frees it exactly once through [`free_sink`] (on deregistration or connection close), or we
//!   free it ourselves when registration fails (libvirt then never saw it);
//! * callbacks run on the event-loop thread and never unwind into C (`catch_unwind`);
//! * pointers received in callbacks are only used for the duration of the callback.
#![allow(unsafe_code)]

use std::ffi::CStr;
use std::mem::ManuallyDrop;
use std::os::raw::{c_int, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr;
use std::sync::Arc;
use std::time::Instant;

use virt::connect::Connect;
use virt::sys;

/// What a domain event says, in libvirt's raw numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RawEventKind {
    /// `VIR_DOMAIN_EVENT_ID_LIFECYCLE`: (`virDomainEventType`, detail).
    Lifecycle { event: i32, detail: i32 },
    /// `VIR_DOMAIN_EVENT_ID_AGENT_LIFECYCLE`: (state 1 connected / 2 disconnected, reason).
    Agent { state: i32, reason: i32 },
}

/// One domain event as delivered by libvirt.
#[derive(Debug, Clone)]
pub(crate) struct RawEvent {
    /// When the callback ran.
    pub(crate) at: Instant,
    /// Domain name.
    pub(crate) domain: String,
    /// What happened.
    pub(crate) kind: RawEventKind,
}

/// The receiver of events; called on libvirt's event-loop thread, must not block.
pub(crate) type Sink = Arc<dyn Fn(RawEvent) + Send + Sync>;

/// Which events to register for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventId {
    Lifecycle,
    AgentLifecycle,
}

fn domain_name(dom: sys::virDomainPtr) -> String {
    if dom.is_null() {
        return String::new();
    }
    // SAFETY: `dom` is a valid domain pointer for the duration of the callback;
    // virDomainGetName returns a pointer into the domain object (not to be freed), valid as
    // long as the domain is, and we copy it out immediately.
    unsafe {
        let p = sys::virDomainGetName(dom);
        if p.is_null() {
            String::new()
        } else {
            CStr::from_ptr(p).to_string_lossy().into_owned()
        }
    }
}

fn deliver(opaque: *mut c_void, dom: sys::virDomainPtr, kind: RawEventKind) {
    if opaque.is_null() {
        return;
    }
    // SAFETY: opaque is the `Box<Sink>` we registered; libvirt keeps it alive until free_sink.
    let sink = unsafe { &*(opaque as *const Sink) };
    // Wall-clock arrival time of a hypervisor event (for latency measurements), taken on
    // libvirt's event thread: not a timer, so tokio's paused clock does not apply.
    #[allow(clippy::disallowed_methods)]
    let at = Instant::now();
    let ev = RawEvent {
        at,
        domain: domain_name(dom),
        kind,
    };
    // Never unwind into C.
    let _ = catch_unwind(AssertUnwindSafe(|| sink(ev)));
}

unsafe extern "C" fn lifecycle_cb(
    _conn: sys::virConnectPtr,
    dom: sys::virDomainPtr,
    event: c_int,
    detail: c_int,
    opaque: *mut c_void,
) -> c_int {
    deliver(opaque, dom, RawEventKind::Lifecycle { event, detail });
    0
}

unsafe extern "C" fn agent_cb(
    _conn: sys::virConnectPtr,
    dom: sys::virDomainPtr,
    state: c_int,
    reason: c_int,
    opaque: *mut c_void,
) {
    deliver(opaque, dom, RawEventKind::Agent { state, reason });
}

unsafe extern "C" fn free_sink(opaque: *mut c_void) {
    if !opaque.is_null() {
        // SAFETY: created by Box::into_raw in `register`, freed exactly once here.
        drop(unsafe { Box::from_raw(opaque as *mut Sink) });
    }
}

type LifecycleFn =
    unsafe extern "C" fn(sys::virConnectPtr, sys::virDomainPtr, c_int, c_int, *mut c_void) -> c_int;
type AgentFn =
    unsafe extern "C" fn(sys::virConnectPtr, sys::virDomainPtr, c_int, c_int, *mut c_void);
type GenericFn = unsafe extern "C" fn(sys::virConnectPtr, sys::virDomainPtr, *mut c_void);

/// Registers `sink` for `id` events of every domain on `conn`; returns the callback id.
///
/// Needs the default event loop implementation registered before `conn` was opened and a
/// thread running it (see `crate::events::ensure_event_loop`).
pub(crate) fn register(
    conn: &Connect,
    id: EventId,
    sink: Sink,
) -> Result<c_int, virt::error::Error> {
    let opaque = Box::into_raw(Box::new(sink)) as *mut c_void;
    // SAFETY: libvirt's generic callback type is cast to the event-specific signature it
    // calls for that event id (the documented C idiom VIR_DOMAIN_EVENT_CALLBACK); the
    // function signatures match libvirt's virConnectDomainEvent{Lifecycle,AgentLifecycle}Callback.
    let (event_id, cb) = unsafe {
        match id {
            EventId::Lifecycle => (
                sys::VIR_DOMAIN_EVENT_ID_LIFECYCLE as c_int,
                std::mem::transmute::<LifecycleFn, GenericFn>(lifecycle_cb as LifecycleFn),
            ),
            EventId::AgentLifecycle => (
                sys::VIR_DOMAIN_EVENT_ID_AGENT_LIFECYCLE as c_int,
                std::mem::transmute::<AgentFn, GenericFn>(agent_cb as AgentFn),
            ),
        }
    };
    // SAFETY: conn is a live connection; opaque is owned by libvirt from here on (freed via
    // free_sink) unless registration fails.
    let rc = unsafe {
        sys::virConnectDomainEventRegisterAny(
            conn.as_ptr(),
            ptr::null_mut(),
            event_id,
            Some(cb),
            opaque,
            Some(free_sink),
        )
    };
    if rc < 0 {
        let err = virt::error::Error::last_error();
        // SAFETY: registration failed, libvirt did not keep `opaque`.
        unsafe { free_sink(opaque) };
        return Err(err);
    }
    Ok(rc)
}

/// Removes a registration made by [`register`] (libvirt then frees the sink).
pub(crate) fn deregister(conn: &Connect, callback_id: c_int) {
    // SAFETY: conn is live; an unknown id only makes libvirt return an error, which we ignore.
    unsafe {
        sys::virConnectDomainEventDeregisterAny(conn.as_ptr(), callback_id);
    }
}

/// Called once (on libvirt's event-loop thread) when the connection is closed by anything but
/// us: the daemon exited or restarted, a keepalive timed out, an I/O error. Must not block.
pub(crate) type OnClose = Arc<dyn Fn() + Send + Sync>;

unsafe extern "C" fn close_cb(_conn: sys::virConnectPtr, _reason: c_int, opaque: *mut c_void) {
    if opaque.is_null() {
        return;
    }
    // SAFETY: opaque is the `Box<OnClose>` registered in `register_close`; libvirt keeps it
    // alive until free_on_close.
    let f = unsafe { &*(opaque as *const OnClose) };
    let _ = catch_unwind(AssertUnwindSafe(|| f()));
}

unsafe extern "C" fn free_on_close(opaque: *mut c_void) {
    if !opaque.is_null() {
        // SAFETY: created by Box::into_raw in `register_close`, freed exactly once here.
        drop(unsafe { Box::from_raw(opaque as *mut OnClose) });
    }
}

/// Registers `f` to run when `conn` is closed under us. Only remote connections (anything
/// through libvirtd's socket) support it; others return an error.
pub(crate) fn register_close(conn: &Connect, f: OnClose) -> Result<(), virt::error::Error> {
    let opaque = Box::into_raw(Box::new(f)) as *mut c_void;
    // SAFETY: conn is live; opaque is owned by libvirt from here on (freed via free_on_close)
    // unless registration fails.
    let rc = unsafe {
        sys::virConnectRegisterCloseCallback(
            conn.as_ptr(),
            Some(close_cb),
            opaque,
            Some(free_on_close),
        )
    };
    if rc < 0 {
        let err = virt::error::Error::last_error();
        // SAFETY: registration failed, libvirt did not keep `opaque`.
        unsafe { free_on_close(opaque) };
        return Err(err);
    }
    Ok(())
}

/// Removes the close callback registered by [`register_close`] (libvirt frees it).
pub(crate) fn unregister_close(conn: &Connect) {
    // SAFETY: conn is live; with no callback registered libvirt only returns an error.
    unsafe {
        sys::virConnectUnregisterCloseCallback(conn.as_ptr(), Some(close_cb));
    }
}

/// Closes `conn` without `virt`'s `Drop` (which panics when `virConnectClose` fails).
pub(crate) fn close_quietly(conn: Connect) {
    let conn = ManuallyDrop::new(conn);
    // SAFETY: we own this reference (it is never used or dropped again); a failed close only
    // leaks the reference.
    let rc = unsafe { sys::virConnectClose(conn.as_ptr()) };
    if rc < 0 {
        tracing::debug!("virConnectClose failed; connection reference leaked");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deliver_ignores_null_opaque_and_catches_panics() {
        deliver(
            ptr::null_mut(),
            ptr::null_mut(),
            RawEventKind::Agent {
                state: 1,
                reason: 2,
            },
        );
        let sink: Sink = Arc::new(|_ev| panic!("boom"));
        let opaque = Box::into_raw(Box::new(sink)) as *mut c_void;
        deliver(
            opaque,
            ptr::null_mut(),
            RawEventKind::Lifecycle {
                event: 5,
                detail: 0,
            },
        );
        // SAFETY: opaque came from Box::into_raw above.
        unsafe { free_sink(opaque) };
    }
}
