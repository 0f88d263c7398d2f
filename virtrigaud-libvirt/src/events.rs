//! Event-driven power state: libvirt's domain lifecycle and agent-lifecycle events, and the
//! mapping from libvirt states and events to [`PowerState`].

use std::collections::HashMap;
use std::os::raw::c_int;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use futures::StreamExt;
use tokio::sync::broadcast;
use virt::connect::Connect;
use virt::domain::{
    DomainPausedReason, DomainShutoffReason, DomainState, DomainStateReason, DomainStateReasonEnum,
};
use virt::enumutil::Enum;
use virt::sys;
use virtrigaud_core::provider::PowerStateStream;
use virtrigaud_core::{Error, OffReason, PauseReason, PowerState};

use crate::PROVIDER_TYPE;
use crate::ffi::{self, EventId, RawEvent, RawEventKind};

/// Registers libvirt's default event loop implementation (once per process) and starts the
/// thread that runs it. Must happen before the first `Connect::open` for events to work on that
/// connection; every connection this crate opens calls it first. Returns whether the loop runs.
pub(crate) fn ensure_event_loop() -> bool {
    static LOOP: OnceLock<bool> = OnceLock::new();
    *LOOP.get_or_init(|| {
        if let Err(e) = virt::event::event_register_default_impl() {
            tracing::warn!(error = %e, "libvirt default event loop registration failed; polling only");
            return false;
        }
        std::thread::Builder::new()
            .name("virtrigaud-libvirt-events".into())
            .spawn(|| {
                loop {
                    if let Err(e) = virt::event::event_run_default_impl() {
                        tracing::warn!(error = %e, "libvirt event loop iteration failed");
                        // A dedicated OS thread outside any runtime: back off before retrying.
                        #[allow(clippy::disallowed_methods)]
                        std::thread::sleep(std::time::Duration::from_millis(100));
                    }
                }
            })
            .is_ok()
    })
}

/// What one event means for a domain's power state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventMeaning {
    /// The domain is now in this state.
    State(PowerState),
    /// The domain was undefined (gone).
    Gone,
}

/// Maps a lifecycle event (`virDomainEventType`, detail) to a power state.
///
/// `VIR_DOMAIN_EVENT_SHUTDOWN` means the guest has begun/finished its shutdown but QEMU has
/// not stopped yet: that is [`PowerState::ShuttingDown`], never off.
pub(crate) fn lifecycle_meaning(event: i32, detail: i32) -> Option<EventMeaning> {
    let (event, detail) = (event as u32, detail as u32);
    let st = match event {
        sys::VIR_DOMAIN_EVENT_STARTED | sys::VIR_DOMAIN_EVENT_RESUMED => PowerState::Running,
        sys::VIR_DOMAIN_EVENT_SUSPENDED => match detail {
            sys::VIR_DOMAIN_EVENT_SUSPENDED_PAUSED => PowerState::Paused(PauseReason::User),
            sys::VIR_DOMAIN_EVENT_SUSPENDED_GUEST_SHUTDOWN => PowerState::ShuttingDown,
            _ => PowerState::Paused(PauseReason::Hypervisor),
        },
        sys::VIR_DOMAIN_EVENT_STOPPED => PowerState::Off(match detail {
            sys::VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN => OffReason::GuestShutdown,
            sys::VIR_DOMAIN_EVENT_STOPPED_DESTROYED => OffReason::Destroyed,
            sys::VIR_DOMAIN_EVENT_STOPPED_CRASHED => OffReason::Crashed,
            sys::VIR_DOMAIN_EVENT_STOPPED_SAVED => OffReason::Saved,
            sys::VIR_DOMAIN_EVENT_STOPPED_FAILED => OffReason::Failed,
            _ => OffReason::Unknown,
        }),
        sys::VIR_DOMAIN_EVENT_SHUTDOWN => PowerState::ShuttingDown,
        sys::VIR_DOMAIN_EVENT_PMSUSPENDED => PowerState::Paused(PauseReason::Hypervisor),
        sys::VIR_DOMAIN_EVENT_CRASHED => PowerState::Crashed,
        sys::VIR_DOMAIN_EVENT_UNDEFINED => return Some(EventMeaning::Gone),
        _ => return None,
    };
    Some(EventMeaning::State(st))
}

/// Maps `virDomainGetState` (as decoded by `virt`) to a power state. `None` means a state
/// value this crate does not know: `virt` returns one (`4294967295`) instead of an error when
/// the call fails (the domain vanished, libvirtd is unreachable), and a newer libvirt may add
/// states. [`crate::domain::state_of`] tells these apart.
pub(crate) fn state_to_power(
    state: Enum<DomainState, sys::virDomainState>,
    reason: DomainStateReasonEnum,
) -> Option<PowerState> {
    let Enum::Known(state) = state else {
        return None;
    };
    Some(match state {
        DomainState::NoState => PowerState::Starting,
        DomainState::Running | DomainState::Blocked => PowerState::Running,
        DomainState::Paused => match reason {
            Enum::Known(DomainStateReason::Paused(Enum::Known(r))) => match r {
                DomainPausedReason::User => PowerState::Paused(PauseReason::User),
                DomainPausedReason::ShuttingDown => PowerState::ShuttingDown,
                DomainPausedReason::StartingUp => PowerState::Starting,
                DomainPausedReason::Crashed => PowerState::Crashed,
                DomainPausedReason::Unknown => PowerState::Paused(PauseReason::Unknown),
                _ => PowerState::Paused(PauseReason::Hypervisor),
            },
            _ => PowerState::Paused(PauseReason::Unknown),
        },
        DomainState::Shutdown => PowerState::ShuttingDown,
        DomainState::Shutoff => PowerState::Off(match reason {
            Enum::Known(DomainStateReason::Shutoff(Enum::Known(r))) => match r {
                DomainShutoffReason::Shutdown => OffReason::GuestShutdown,
                DomainShutoffReason::Destroyed => OffReason::Destroyed,
                DomainShutoffReason::Crashed => OffReason::Crashed,
                DomainShutoffReason::Saved => OffReason::Saved,
                DomainShutoffReason::Failed => OffReason::Failed,
                _ => OffReason::Unknown,
            },
            _ => OffReason::Unknown,
        }),
        DomainState::Crashed => PowerState::Crashed,
        DomainState::PMSuspended => PowerState::Paused(PauseReason::Hypervisor),
    })
}

/// Relays events from libvirt's callback thread to the watchers, and remembers each domain's
/// last agent state and stop time.
#[derive(Debug)]
pub(crate) struct EventRelay {
    /// `None` once the connection is gone: every watcher's stream has ended.
    tx: Mutex<Option<broadcast::Sender<RawEvent>>>,
    /// Last agent-lifecycle state per domain (true: connected).
    agents: Mutex<HashMap<String, bool>>,
    /// When the last `Stopped` lifecycle event of each domain arrived.
    stops: Mutex<HashMap<String, Instant>>,
}

impl EventRelay {
    fn on_event(&self, ev: RawEvent) {
        match ev.kind {
            RawEventKind::Agent { state, .. } => {
                let connected =
                    state == sys::VIR_CONNECT_DOMAIN_EVENT_AGENT_LIFECYCLE_STATE_CONNECTED as i32;
                if let Ok(mut m) = self.agents.lock() {
                    m.insert(ev.domain.clone(), connected);
                }
            }
            RawEventKind::Lifecycle { event, .. } => {
                let e = event as u32;
                if e == sys::VIR_DOMAIN_EVENT_STOPPED {
                    if let Ok(mut m) = self.stops.lock() {
                        m.insert(ev.domain.clone(), ev.at);
                    }
                    // The agent is gone with the domain.
                    if let Ok(mut m) = self.agents.lock() {
                        m.insert(ev.domain.clone(), false);
                    }
                } else if e == sys::VIR_DOMAIN_EVENT_UNDEFINED
                    && let Ok(mut m) = self.agents.lock()
                {
                    m.remove(&ev.domain);
                }
            }
        }
        if let Ok(tx) = self.tx.lock()
            && let Some(tx) = tx.as_ref()
        {
            let _ = tx.send(ev);
        }
    }

    /// Ends every watcher's stream (the connection is gone; they fall back to reading).
    pub(crate) fn close(&self) {
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
    }
}

/// The event registrations of one connection.
#[derive(Debug)]
pub(crate) struct EventHub {
    pub(crate) relay: Arc<EventRelay>,
    ids: Vec<c_int>,
}

impl EventHub {
    /// Registers lifecycle (required) and agent-lifecycle (best effort) events on `conn`.
    pub(crate) fn register(conn: &Connect) -> Result<EventHub, virt::error::Error> {
        let (tx, _) = broadcast::channel(1024);
        let relay = Arc::new(EventRelay {
            tx: Mutex::new(Some(tx)),
            agents: Mutex::new(HashMap::new()),
            stops: Mutex::new(HashMap::new()),
        });
        let s = Arc::clone(&relay);
        let sink: ffi::Sink = Arc::new(move |ev| s.on_event(ev));
        let lc = ffi::register(conn, EventId::Lifecycle, Arc::clone(&sink))?;
        let mut ids = vec![lc];
        match ffi::register(conn, EventId::AgentLifecycle, sink) {
            Ok(id) => ids.push(id),
            Err(e) => tracing::debug!(error = %e, "agent lifecycle events unavailable"),
        }
        Ok(EventHub { relay, ids })
    }

    /// Removes the registrations.
    pub(crate) fn deregister(&self, conn: &Connect) {
        for id in &self.ids {
            ffi::deregister(conn, *id);
        }
    }

    /// The agent state the events reported for `domain`, if any.
    pub(crate) fn agent_state(&self, domain: &str) -> Option<bool> {
        self.relay
            .agents
            .lock()
            .ok()
            .and_then(|m| m.get(domain).copied())
    }

    /// When the last `Stopped` event for `domain` arrived.
    pub(crate) fn last_stop(&self, domain: &str) -> Option<Instant> {
        self.relay
            .stops
            .lock()
            .ok()
            .and_then(|m| m.get(domain).copied())
    }

    /// A stream of power states of `domain`, from events after this call. It ends when the
    /// connection is lost (at once if it already is).
    pub(crate) fn watch(&self, domain: String) -> PowerStateStream {
        let rx = match self.relay.tx.lock() {
            Ok(tx) => tx.as_ref().map(broadcast::Sender::subscribe),
            Err(_) => None,
        };
        let Some(rx) = rx else {
            return futures::stream::empty().boxed();
        };
        futures::stream::unfold((rx, domain, false), |(mut rx, domain, done)| async move {
            if done {
                return None;
            }
            loop {
                match rx.recv().await {
                    Ok(ev) if ev.domain == domain => {
                        if let RawEventKind::Lifecycle { event, detail } = ev.kind {
                            match lifecycle_meaning(event, detail) {
                                Some(EventMeaning::State(s)) => {
                                    return Some((Ok(s), (rx, domain, false)));
                                }
                                Some(EventMeaning::Gone) => {
                                    let e =
                                        Error::not_found(format!("domain {domain} was undefined"))
                                            .context_for(
                                                PROVIDER_TYPE,
                                                "watch_power_state",
                                                Some(&domain),
                                            );
                                    return Some((Err(e), (rx, domain, true)));
                                }
                                None => {}
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::debug!(lagged = n, "power-state watcher lagged behind events");
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_events_keep_shutting_down_paused_crashed_and_off_reasons_apart() {
        use sys::*;
        let m = |e: u32, d: u32| lifecycle_meaning(e as i32, d as i32);
        assert_eq!(
            m(VIR_DOMAIN_EVENT_STARTED, 0),
            Some(EventMeaning::State(PowerState::Running))
        );
        assert_eq!(
            m(VIR_DOMAIN_EVENT_SHUTDOWN, VIR_DOMAIN_EVENT_SHUTDOWN_GUEST),
            Some(EventMeaning::State(PowerState::ShuttingDown))
        );
        assert_eq!(
            m(VIR_DOMAIN_EVENT_STOPPED, VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN),
            Some(EventMeaning::State(PowerState::Off(
                OffReason::GuestShutdown
            )))
        );
        assert_eq!(
            m(VIR_DOMAIN_EVENT_STOPPED, VIR_DOMAIN_EVENT_STOPPED_DESTROYED),
            Some(EventMeaning::State(PowerState::Off(OffReason::Destroyed)))
        );
        assert_eq!(
            m(VIR_DOMAIN_EVENT_STOPPED, VIR_DOMAIN_EVENT_STOPPED_CRASHED),
            Some(EventMeaning::State(PowerState::Off(OffReason::Crashed)))
        );
        assert_eq!(
            m(
                VIR_DOMAIN_EVENT_SUSPENDED,
                VIR_DOMAIN_EVENT_SUSPENDED_PAUSED
            ),
            Some(EventMeaning::State(PowerState::Paused(PauseReason::User)))
        );
        assert_eq!(
            m(
                VIR_DOMAIN_EVENT_SUSPENDED,
                VIR_DOMAIN_EVENT_SUSPENDED_IOERROR
            ),
            Some(EventMeaning::State(PowerState::Paused(
                PauseReason::Hypervisor
            )))
        );
        assert_eq!(
            m(VIR_DOMAIN_EVENT_CRASHED, 0),
            Some(EventMeaning::State(PowerState::Crashed))
        );
        assert_eq!(m(VIR_DOMAIN_EVENT_UNDEFINED, 0), Some(EventMeaning::Gone));
        assert_eq!(m(VIR_DOMAIN_EVENT_DEFINED, 0), None);
    }

    #[test]
    fn vanished_domain_state_is_none() {
        assert_eq!(
            state_to_power(Enum::Unknown(u32::MAX), Enum::Unknown(-1)),
            None
        );
        assert_eq!(
            state_to_power(Enum::Known(DomainState::Shutdown), Enum::Unknown(0)),
            Some(PowerState::ShuttingDown)
        );
    }
}
