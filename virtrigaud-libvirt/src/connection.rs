//! The plumbing under every operation.
//!
//! - [`Session`]: one open `virt::Connect` with its event registrations and close callback.
//!   [`Session::api`] is the one place a libvirt API call is made from the operation code: it
//!   counts the call with core's [`ApiCalls`] and maps its error with [`to_core_error`].
//! - [`Connection`]: what all clones of a provider share: the current session (reopened when
//!   libvirtd closes it), the blocking-pool permits, the counter and the capabilities.
//!   [`Connection::call`] runs an operation's blocking body on a live session.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Semaphore;
use virt::connect::Connect;
use virt::error::Error as VirtError;
use virtrigaud_core::layers::ApiCalls;
use virtrigaud_core::{Error, ErrorKind, ProviderCapabilities, Result};

use crate::PROVIDER_TYPE;
use crate::capabilities;
use crate::config::LibvirtConfig;
use crate::error::to_core_error;
use crate::events::{self, EventHub};
use crate::ffi;
use crate::identity;

/// One libvirt connection and its event registrations. Replaced by a new one when libvirtd
/// closes it (a restart, a keepalive timeout); calls in flight keep the old one until they end.
#[derive(Debug)]
pub(crate) struct Session {
    conn: Option<Connect>,
    hub: Option<EventHub>,
    cfg: Arc<LibvirtConfig>,
    calls: ApiCalls,
    driver: String,
    /// Set by libvirt's close callback when the connection is closed under us.
    closed: Arc<AtomicBool>,
    close_registered: bool,
    /// The endpoint identity ([`virtrigaud_core::Provider::instance_id`]), computed when the
    /// connection opened.
    instance_id: String,
}

impl Session {
    /// Opens a connection to `cfg.uri` (blocking): events when wanted, a close callback so a
    /// restarted libvirtd is noticed at once, keepalive on remote transports.
    pub(crate) fn open(cfg: Arc<LibvirtConfig>, calls: ApiCalls) -> Result<Session> {
        let uri = cfg.uri.as_str();
        virt::error::clear_error_callback();
        let loop_ok = cfg.events && events::ensure_event_loop();
        let conn = Connect::open(Some(uri))
            .map_err(|e| to_core_error(e, "connect", Some(&identity::clean_uri(uri).uri)))?;
        let driver = conn.driver_type().unwrap_or_default();
        // The URI libvirt resolved (aliases, the default URI), else the configured one.
        let resolved = conn.uri().unwrap_or_else(|_| uri.to_owned());
        let instance_id = identity::instance_id(&resolved, || conn.hostname().ok());
        let hub = if loop_ok {
            match EventHub::register(&conn) {
                Ok(h) => Some(h),
                Err(e) => {
                    tracing::warn!(error = %e, "domain events unavailable; power state is polled");
                    None
                }
            }
        } else {
            None
        };
        if !uri.starts_with("test:") && !uri.contains(":///") && loop_ok {
            // Remote connection: detect a dead peer.
            let _ = conn.set_keep_alive(5, 3);
        }
        let closed = Arc::new(AtomicBool::new(false));
        let on_close: ffi::OnClose = {
            let closed = Arc::clone(&closed);
            let relay = hub.as_ref().map(|h| Arc::clone(&h.relay));
            Arc::new(move || {
                closed.store(true, Ordering::Release);
                if let Some(relay) = &relay {
                    // Watchers fall back to reading the state, which reconnects.
                    relay.close();
                }
            })
        };
        // Only connections through libvirtd support it (not the in-process test driver).
        let close_registered = ffi::register_close(&conn, on_close).is_ok();
        Ok(Session {
            conn: Some(conn),
            hub,
            cfg,
            calls,
            driver,
            closed,
            close_registered,
            instance_id,
        })
    }

    fn conn(&self) -> &Connect {
        // Set in `open`, taken only in Drop.
        self.conn
            .as_ref()
            .unwrap_or_else(|| unreachable!("connection used after drop"))
    }

    /// One libvirt API call `f` (on the connection, or on a domain, volume or stream handle
    /// taken from it), made by `operation` on `resource`: counted, and its error mapped.
    ///
    /// Reads a domain handle answers by itself (its name, its id) are not calls and are
    /// made directly.
    pub(crate) fn api<T>(
        &self,
        operation: &'static str,
        resource: &str,
        f: impl FnOnce(&Connect) -> std::result::Result<T, VirtError>,
    ) -> Result<T> {
        self.api_raw(f)
            .map_err(|e| to_core_error(e, operation, Some(resource)))
    }

    /// One libvirt API call whose outcome the caller reads itself (a probe, a best-effort
    /// cleanup): counted like [`Session::api`], returned as it is.
    pub(crate) fn api_raw<T>(&self, f: impl FnOnce(&Connect) -> T) -> T {
        self.calls.record();
        f(self.conn())
    }

    /// The event registrations, when domain events are on.
    pub(crate) fn hub(&self) -> Option<&EventHub> {
        self.hub.as_ref()
    }

    /// The provider's settings.
    pub(crate) fn cfg(&self) -> &LibvirtConfig {
        &self.cfg
    }

    /// The libvirt driver name (`QEMU`, `TEST`, …) read when the connection opened.
    pub(crate) fn driver(&self) -> &str {
        &self.driver
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            if self.close_registered {
                ffi::unregister_close(&conn);
            }
            if let Some(hub) = &self.hub {
                hub.deregister(&conn);
                hub.relay.close();
            }
            ffi::close_quietly(conn);
        }
    }
}

/// What the clones of one provider share: the session in use, reopened when libvirtd closes
/// it, the permits of the blocking pool, the call counter and the capabilities.
#[derive(Debug)]
pub(crate) struct Connection {
    current: Mutex<Arc<Session>>,
    reconnecting: tokio::sync::Mutex<()>,
    permits: Arc<Semaphore>,
    cfg: Arc<LibvirtConfig>,
    calls: ApiCalls,
    reconnects: AtomicU64,
    /// The endpoint identity of the first connection (a reconnection reaches the same one).
    instance_id: String,
    /// Computed when a session opens and by [`Connection::refresh_capabilities`].
    caps: Mutex<ProviderCapabilities>,
}

fn declared(session: &Session, driver: &str) -> ProviderCapabilities {
    capabilities::declared(
        driver,
        session.hub.is_some(),
        session.cfg.storage_pool.is_some(),
    )
}

/// Opens a session on the blocking pool.
async fn open_session(cfg: &Arc<LibvirtConfig>, calls: &ApiCalls, what: &str) -> Result<Session> {
    let (cfg, calls) = (Arc::clone(cfg), calls.clone());
    tokio::task::spawn_blocking(move || Session::open(cfg, calls))
        .await
        .map_err(|e| {
            Error::internal(format!("{what} task failed: {e}")).context_for(
                PROVIDER_TYPE,
                "connect",
                None,
            )
        })?
}

impl Connection {
    /// Opens the first session and computes the capabilities.
    pub(crate) async fn open(cfg: LibvirtConfig) -> Result<Connection> {
        let calls = ApiCalls::new();
        let cfg = Arc::new(cfg);
        let session = open_session(&cfg, &calls, "connect").await?;
        let caps = declared(&session, &session.driver);
        Ok(Connection {
            instance_id: session.instance_id.clone(),
            current: Mutex::new(Arc::new(session)),
            reconnecting: tokio::sync::Mutex::new(()),
            permits: Arc::new(Semaphore::new(cfg.max_concurrency.max(1))),
            cfg,
            calls,
            reconnects: AtomicU64::new(0),
            caps: Mutex::new(caps),
        })
    }

    /// The session in use (possibly closed; see [`Connection::session`]).
    pub(crate) fn current(&self) -> Arc<Session> {
        let guard = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(&guard)
    }

    /// A live session: the current one, or a new one if libvirtd closed it.
    pub(crate) async fn session(&self, op: &'static str) -> Result<Arc<Session>> {
        let cur = self.current();
        if !cur.is_closed() {
            return Ok(cur);
        }
        let _one_at_a_time = self.reconnecting.lock().await;
        let cur = self.current();
        if !cur.is_closed() {
            return Ok(cur);
        }
        let fresh = open_session(&self.cfg, &self.calls, "reconnect")
            .await
            .map_err(|e| {
                let e = if e.kind() == ErrorKind::Unavailable {
                    e
                } else {
                    e.temporary()
                };
                e.context_for(PROVIDER_TYPE, op, None)
            })?;
        let fresh = Arc::new(fresh);
        self.set_capabilities(declared(&fresh, &fresh.driver));
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = Arc::clone(&fresh);
        self.reconnects.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            uri = %identity::clean_uri(&self.cfg.uri).uri,
            "libvirt connection reopened"
        );
        Ok(fresh)
    }

    /// Runs `f` on the blocking pool with bounded concurrency, on a live session; errors get
    /// the provider and `op` as context.
    pub(crate) async fn call<T, F>(&self, op: &'static str, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Session) -> Result<T> + Send + 'static,
    {
        // The permit moves into the blocking task: a caller that gives up (a timeout) does not
        // free the slot while libvirt is still working on the call.
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| {
                Error::unavailable("provider is shutting down").context_for(PROVIDER_TYPE, op, None)
            })?;
        let session = self.session(op).await?;
        // The caller's span (the engine's shutdown, a layer's call span) goes with the call
        // onto the blocking thread, so libvirt's work is logged inside it.
        let span = tracing::debug_span!(parent: tracing::Span::current(), "libvirt_call", op);
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            span.in_scope(|| f(&session))
        })
        .await
        .map_err(|e| Error::internal(format!("libvirt call panicked or was cancelled: {e}")))
        .and_then(|r| r)
        .map_err(|e| e.context_for(PROVIDER_TYPE, op, None))
    }

    /// The settings the provider was made with.
    pub(crate) fn cfg(&self) -> &LibvirtConfig {
        &self.cfg
    }

    /// libvirt API calls made so far.
    pub(crate) fn api_calls(&self) -> u64 {
        self.calls.get()
    }

    /// Times the session was reopened.
    pub(crate) fn reconnects(&self) -> u64 {
        self.reconnects.load(Ordering::Relaxed)
    }

    /// The endpoint identity of the first session.
    pub(crate) fn instance_id(&self) -> &str {
        &self.instance_id
    }

    /// The capabilities computed when the session opened (or last refreshed).
    pub(crate) fn capabilities(&self) -> ProviderCapabilities {
        *self.caps.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set_capabilities(&self, caps: ProviderCapabilities) {
        *self.caps.lock().unwrap_or_else(PoisonError::into_inner) = caps;
    }

    /// Reads the driver type from libvirtd again (reconnecting if needed) and recomputes the
    /// capabilities.
    pub(crate) async fn refresh_capabilities(&self) -> Result<ProviderCapabilities> {
        const OP: &str = "refresh_capabilities";
        let caps = self
            .call(OP, |s| {
                let driver = s.api(OP, "driver", Connect::driver_type)?;
                Ok(declared(s, &driver))
            })
            .await?;
        self.set_capabilities(caps);
        Ok(caps)
    }
}
