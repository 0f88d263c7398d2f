//! [`LibvirtProvider`]: the [`Provider`] implementation.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use tokio::sync::Semaphore;
use virt::connect::Connect;
use virt::domain::Domain;
use virt::storage_pool::StoragePool;
use virt::storage_vol::StorageVol;
use virt::sys;
use virtrigaud_core::placement::{DatastoreInfo, HostInfo, Inventory, Resources};
use virtrigaud_core::provider::{
    DeleteOptions, ListOptions, PowerOffOptions, PowerStateStream, ReconfigureRequest,
    ReconfigureResult, ShutdownRequestOptions, StartOptions, VmCreateSpec,
};
use virtrigaud_core::{
    AgentStatus, Cloner, DiskInfo, Error, ErrorKind, Incarnation, PowerState, Provider,
    ProviderCapabilities, Result, ShutdownChannel, Snapshotter, VmCapabilities, VmDescription,
    VmId,
};

use crate::PROVIDER;
use crate::config::{DomainTemplate, LibvirtConfig};
use crate::domxml::{self, DiskAttach};
use crate::error::{is_unsupported_flags, map_err};
use crate::events::{self, EventHub};
use crate::ffi;
use crate::identity;
use crate::xml::Element;

const GIB: u64 = 1024 * 1024 * 1024;

/// Extension to attach context to `virt` results.
pub(crate) trait Ctx<T> {
    /// Maps the error of `operation` on `resource`.
    fn ctx(self, operation: &'static str, resource: &str) -> Result<T>;
}

impl<T> Ctx<T> for std::result::Result<T, virt::error::Error> {
    fn ctx(self, operation: &'static str, resource: &str) -> Result<T> {
        self.map_err(|e| map_err(e, operation, Some(resource)))
    }
}

/// One libvirt connection and its event registrations. Replaced by a new one when libvirtd
/// closes it (a restart, a keepalive timeout); calls in flight keep the old one until they end.
#[derive(Debug)]
pub(crate) struct Inner {
    conn: Option<Connect>,
    pub(crate) hub: Option<EventHub>,
    pub(crate) cfg: Arc<LibvirtConfig>,
    calls: Arc<AtomicU64>,
    driver: String,
    /// Set by libvirt's close callback when the connection is closed under us.
    closed: Arc<AtomicBool>,
    close_registered: bool,
    /// The endpoint identity ([`Provider::instance_id`]), computed when the connection opened.
    instance_id: String,
}

impl Inner {
    pub(crate) fn conn(&self) -> &Connect {
        // Set in `open_connection`, taken only in Drop.
        self.conn
            .as_ref()
            .unwrap_or_else(|| unreachable!("connection used after drop"))
    }
    pub(crate) fn count(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
    }
    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            if self.close_registered {
                ffi::unregister_close(&conn);
            }
            if let Some(hub) = &self.hub {
                hub.deregister(&conn);
                hub.shared.close();
            }
            ffi::close_quietly(conn);
        }
    }
}

/// Opens a connection to `cfg.uri` (blocking): events when wanted, a close callback so a
/// restarted libvirtd is noticed at once, keepalive on remote transports.
fn open_connection(cfg: Arc<LibvirtConfig>, calls: Arc<AtomicU64>) -> Result<Inner> {
    let uri = cfg.uri.as_str();
    virt::error::clear_error_callback();
    let loop_ok = cfg.events && events::ensure_event_loop();
    let conn = Connect::open(Some(uri))
        .map_err(|e| map_err(e, "connect", Some(&identity::clean_uri(uri).uri)))?;
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
        let hub = hub.as_ref().map(|h| Arc::clone(&h.shared));
        Arc::new(move || {
            closed.store(true, Ordering::Release);
            if let Some(hub) = &hub {
                // Watchers fall back to reading the state, which reconnects.
                hub.close();
            }
        })
    };
    // Only connections through libvirtd support it (not the in-process test driver).
    let close_registered = ffi::register_close(&conn, on_close).is_ok();
    Ok(Inner {
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

/// What the clones of one provider share.
#[derive(Debug)]
pub(crate) struct Shared {
    current: Mutex<Arc<Inner>>,
    reconnecting: tokio::sync::Mutex<()>,
    sem: Arc<Semaphore>,
    cfg: Arc<LibvirtConfig>,
    calls: Arc<AtomicU64>,
    reconnects: AtomicU64,
    /// The endpoint identity of the first connection (a reconnection reaches the same one).
    instance_id: String,
}

/// A libvirt provider over one connection, reopened when libvirtd closes it. Cheap to clone.
///
/// VM ids are libvirt domain names.
#[derive(Debug, Clone)]
pub struct LibvirtProvider {
    pub(crate) shared: Arc<Shared>,
}

impl LibvirtProvider {
    /// Opens a connection to `cfg.uri` (and registers for domain events when `cfg.events`).
    ///
    /// Libvirt's own error printing to stderr is switched off (errors are returned instead).
    /// When libvirtd closes the connection (it restarted, a keepalive timed out), watchers'
    /// streams end and the next call opens a new connection; a call that fails because the
    /// daemon is still down returns a retryable [`ErrorKind::Unavailable`] error.
    pub async fn connect(cfg: LibvirtConfig) -> Result<LibvirtProvider> {
        let calls = Arc::new(AtomicU64::new(0));
        let cfg = Arc::new(cfg);
        let inner = {
            let cfg = Arc::clone(&cfg);
            let calls = Arc::clone(&calls);
            tokio::task::spawn_blocking(move || open_connection(cfg, calls))
                .await
                .map_err(|e| {
                    Error::internal(format!("connect task failed: {e}")).with_provider(PROVIDER)
                })??
        };
        let sem = Arc::new(Semaphore::new(cfg.max_concurrency.max(1)));
        let instance_id = inner.instance_id.clone();
        Ok(LibvirtProvider {
            shared: Arc::new(Shared {
                instance_id,
                current: Mutex::new(Arc::new(inner)),
                reconnecting: tokio::sync::Mutex::new(()),
                sem,
                cfg,
                calls,
                reconnects: AtomicU64::new(0),
            }),
        })
    }

    /// The connection in use (possibly closed; see [`LibvirtProvider::session`]).
    pub(crate) fn current(&self) -> Arc<Inner> {
        let guard = self
            .shared
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(&guard)
    }

    /// A live connection: the current one, or a new one if libvirtd closed it.
    pub(crate) async fn session(&self, op: &'static str) -> Result<Arc<Inner>> {
        let cur = self.current();
        if !cur.is_closed() {
            return Ok(cur);
        }
        let _one_at_a_time = self.shared.reconnecting.lock().await;
        let cur = self.current();
        if !cur.is_closed() {
            return Ok(cur);
        }
        let cfg = Arc::clone(&self.shared.cfg);
        let calls = Arc::clone(&self.shared.calls);
        let fresh = tokio::task::spawn_blocking(move || open_connection(cfg, calls))
            .await
            .map_err(|e| Error::internal(format!("reconnect task failed: {e}")))?
            .map_err(|e| {
                let e = if e.kind() == ErrorKind::Unavailable {
                    e
                } else {
                    e.temporary()
                };
                e.context(PROVIDER, op)
            })?;
        let fresh = Arc::new(fresh);
        *self
            .shared
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::clone(&fresh);
        self.shared.reconnects.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            uri = %identity::clean_uri(&self.shared.cfg.uri).uri,
            "libvirt connection reopened"
        );
        Ok(fresh)
    }

    /// The libvirt driver name (`QEMU`, `TEST`, …).
    pub fn driver(&self) -> String {
        self.current().driver.clone()
    }

    /// Whether domain events are registered (power state is pushed, not polled).
    pub fn events_registered(&self) -> bool {
        self.current().hub.is_some()
    }

    /// How many libvirt API calls this provider made so far (for measurements).
    pub fn api_calls(&self) -> u64 {
        self.shared.calls.load(Ordering::Relaxed)
    }

    /// How many times the connection was reopened after libvirtd closed it.
    pub fn reconnects(&self) -> u64 {
        self.shared.reconnects.load(Ordering::Relaxed)
    }

    /// When the last `Stopped` lifecycle event of `vm` arrived (for latency measurements).
    pub fn last_stop_event(&self, vm: &VmId) -> Option<Instant> {
        self.current()
            .hub
            .as_ref()
            .and_then(|h| h.last_stop(vm.as_str()))
    }

    /// Runs `f` on the blocking pool with bounded concurrency, on a live connection.
    pub(crate) async fn call<T, F>(&self, op: &'static str, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T> + Send + 'static,
    {
        // The permit moves into the blocking task: a caller that gives up (a timeout) does not
        // free the slot while libvirt is still working on the call.
        let permit = Arc::clone(&self.shared.sem)
            .acquire_owned()
            .await
            .map_err(|_| {
                Error::unavailable("provider is shutting down")
                    .with_provider(PROVIDER)
                    .with_operation(op)
            })?;
        let inner = self.session(op).await?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            f(&inner)
        })
        .await
        .map_err(|e| Error::internal(format!("libvirt call panicked or was cancelled: {e}")))?
        .map_err(|e| e.context(PROVIDER, op))
    }

    /// Creates a VM from `spec` with an explicit domain template (kernel boot, serial log, …)
    /// instead of the configured one.
    pub async fn create_with(&self, spec: &VmCreateSpec, tpl: &DomainTemplate) -> Result<VmId> {
        let spec = spec.clone();
        let tpl = tpl.clone();
        self.call("create", move |inner| create_blocking(inner, &spec, &tpl))
            .await
    }
}

/// Looks a domain up by name.
pub(crate) fn lookup(inner: &Inner, name: &str) -> Result<Domain> {
    inner.count();
    inner.conn().lookup_domain_by_name(name).ctx("lookup", name)
}

/// The domain's power state.
///
/// `virt` 0.5.0 hides a failed `virDomainGetState` behind an unknown state value
/// (`4294967295`), and libvirt may one day report a state this crate does not know. A fresh
/// lookup by UUID tells the two apart (see [`unreadable_state`]): only a domain that is really
/// gone is NotFound.
pub(crate) fn state_of(inner: &Inner, dom: &Domain, name: &str) -> Result<PowerState> {
    inner.count();
    let (st, reason) = dom.state().ctx("power_state", name)?;
    let raw = match st {
        virt::enumutil::Enum::Unknown(raw) => raw,
        virt::enumutil::Enum::Known(_) => 0,
    };
    match events::state_to_power(st, reason) {
        Some(state) => Ok(state),
        None => {
            inner.count();
            let still_defined = dom
                .uuid()
                .and_then(|uuid| inner.conn().lookup_domain_by_uuid(uuid))
                .map(|_| ())
                .ctx("power_state", name);
            Err(unreadable_state(name, raw, still_defined))
        }
    }
}

/// What a state read that gave no known state means, given a fresh lookup of the domain:
/// the domain is gone (the lookup says NotFound) → NotFound; the lookup failed otherwise
/// (libvirtd unreachable) → that error; the domain is still there → a retryable
/// [`ErrorKind::Unavailable`], never NotFound, which a shutdown would take as the VM's end.
pub(crate) fn unreadable_state(name: &str, raw: u32, still_defined: Result<()>) -> Error {
    match still_defined {
        Err(e) if e.kind() == ErrorKind::NotFound => {
            Error::not_found(format!("domain {name} vanished"))
                .with_resource(name.to_owned())
                .with_source(e)
        }
        Err(e) => e,
        Ok(()) => Error::unavailable(format!(
            "libvirt reported a domain state this provider does not know ({raw}) for {name}"
        ))
        .temporary()
        .with_resource(name.to_owned()),
    }
}

pub(crate) fn xml_of(inner: &Inner, dom: &Domain, name: &str, flags: u32) -> Result<Element> {
    inner.count();
    Element::parse(&dom.xml_desc(flags).ctx("xml_desc", name)?)
}

fn pool(inner: &Inner) -> Result<Option<StoragePool>> {
    match &inner.cfg.storage_pool {
        None => Ok(None),
        Some(p) => {
            inner.count();
            Ok(Some(
                inner
                    .conn()
                    .lookup_storage_pool_by_name(p)
                    .ctx("storage_pool", p)?,
            ))
        }
    }
}

pub(crate) fn pool_required(inner: &Inner, op: &'static str) -> Result<StoragePool> {
    pool(inner)?.ok_or_else(|| {
        Error::invalid_spec(
            "this operation needs a storage pool (LibvirtConfig::with_storage_pool)",
        )
        .with_operation(op)
    })
}

fn create_blocking(inner: &Inner, spec: &VmCreateSpec, tpl: &DomainTemplate) -> Result<VmId> {
    inner.count();
    if inner.conn().lookup_domain_by_name(&spec.name).is_ok() {
        return Err(Error::new(
            ErrorKind::AlreadyExists,
            format!("domain {} exists", spec.name),
        )
        .with_resource(spec.name.clone()));
    }
    let mut created: Vec<StorageVol> = Vec::new();
    let result = (|| {
        let mut attach = Vec::new();
        if !spec.disks.is_empty() || spec.image.is_some() {
            let pool = pool_required(inner, "create")?;
            // The image (a volume name in the pool or a path) becomes the backing file of vda.
            let base = match &spec.image {
                Some(img) => {
                    inner.count();
                    let v = pool
                        .lookup_storage_vol_by_name(img)
                        .or_else(|_| inner.conn().lookup_storage_vol_by_path(img))
                        .ctx("image", img)?;
                    Some(v.path().ctx("image", img)?)
                }
                None => None,
            };
            let n = spec.disks.len().max(usize::from(base.is_some()));
            for i in 0..n {
                let target = domxml::disk_target(i);
                let size = spec.disks.get(i).map(|d| d.size_gib).unwrap_or(1).max(1) * GIB;
                let name = format!("{}-{target}.qcow2", spec.name);
                let backing = if i == 0 { base.as_deref() } else { None };
                let vol = create_qcow2(inner, &pool, &name, size, backing)?;
                inner.count();
                let path = vol.path().ctx("volume", &name)?;
                created.push(vol);
                attach.push(DiskAttach {
                    target,
                    path,
                    format: "qcow2".into(),
                });
            }
        }
        let seed = match &spec.cloud_init_user_data {
            Some(ud) => {
                let pool = pool_required(inner, "create")?;
                let vol = upload_seed(inner, &pool, &spec.name, ud)?;
                inner.count();
                let path = vol.path().ctx("cloud_init_seed", &spec.name)?;
                created.push(vol);
                Some(path)
            }
            None => None,
        };
        let xml = domxml::domain_xml(spec, tpl, &attach, seed.as_deref())?;
        inner.count();
        let dom = inner
            .conn()
            .define_domain_xml(&xml)
            .ctx("define", &spec.name)?;
        if spec.power_on {
            inner.count();
            if let Err(e) = dom.create().ctx("start", &spec.name) {
                inner.count();
                let _ = dom.undefine_flags(sys::VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA);
                return Err(e);
            }
        }
        Ok(VmId::new(spec.name.clone()))
    })();
    if result.is_err() {
        for v in created {
            inner.count();
            let _ = v.delete(0);
        }
    }
    result
}

/// Builds a NoCloud seed (ISO 9660 + Joliet, label `cidata`) and uploads it as a raw volume.
fn upload_seed(
    inner: &Inner,
    pool: &StoragePool,
    name: &str,
    user_data: &str,
) -> Result<StorageVol> {
    let meta = format!("instance-id: {name}\nlocal-hostname: {name}\n");
    let img = crate::iso::build(
        "cidata",
        &[
            ("user-data", user_data.as_bytes()),
            ("meta-data", meta.as_bytes()),
        ],
    );
    let vol_name = format!("{name}-cidata.iso");
    let xml = Element::new("volume")
        .child(Element::new("name").text(vol_name.as_str()))
        .child(
            Element::new("capacity")
                .attr("unit", "bytes")
                .text(img.len().to_string()),
        )
        .child(Element::new("target").child(Element::new("format").attr("type", "raw")))
        .to_xml();
    inner.count();
    let vol = StorageVol::create_xml(pool, &xml, 0).ctx("cloud_init_seed", name)?;
    let sent = (|| {
        inner.count();
        let stream = virt::stream::Stream::new(inner.conn(), 0).ctx("cloud_init_seed", name)?;
        inner.count();
        if let Err(e) = vol
            .upload(&stream, 0, img.len() as u64, 0)
            .ctx("cloud_init_seed", name)
        {
            let _ = stream.abort();
            return Err(e);
        }
        let mut off = 0;
        while off < img.len() {
            match stream.send(&img[off..]).ctx("cloud_init_seed", name) {
                Ok(n) if n > 0 => off += n as usize,
                Ok(_) => {
                    let _ = stream.abort();
                    return Err(Error::unavailable("seed upload stream stalled"));
                }
                Err(e) => {
                    let _ = stream.abort();
                    return Err(e);
                }
            }
        }
        stream.finish().ctx("cloud_init_seed", name)
    })();
    if let Err(e) = sent {
        inner.count();
        let _ = vol.delete(0);
        return Err(e);
    }
    Ok(vol)
}

pub(crate) fn create_qcow2(
    inner: &Inner,
    pool: &StoragePool,
    name: &str,
    bytes: u64,
    backing: Option<&str>,
) -> Result<StorageVol> {
    let mut vol = Element::new("volume")
        .child(Element::new("name").text(name))
        .child(
            Element::new("capacity")
                .attr("unit", "bytes")
                .text(bytes.to_string()),
        )
        .child(Element::new("target").child(Element::new("format").attr("type", "qcow2")));
    if let Some(b) = backing {
        let fmt = backing_format(inner, b);
        vol = vol.child(
            Element::new("backingStore")
                .child(Element::new("path").text(b))
                .child(Element::new("format").attr("type", fmt)),
        );
    }
    inner.count();
    StorageVol::create_xml(pool, &vol.to_xml(), 0).ctx("volume_create", name)
}

fn backing_format(inner: &Inner, path: &str) -> String {
    inner.count();
    inner
        .conn()
        .lookup_storage_vol_by_path(path)
        .ok()
        .and_then(|v| v.xml_desc(0).ok())
        .and_then(|x| Element::parse(&x).ok())
        .and_then(|e| {
            e.path("target/format")
                .and_then(|f| f.get_attr("type"))
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "qcow2".into())
}

fn describe_blocking(inner: &Inner, dom: &Domain, name: &str) -> Result<VmDescription> {
    let state = state_of(inner, dom, name)?;
    let x = xml_of(inner, dom, name, 0)?;
    let mut d = VmDescription::new(VmId::new(name.to_owned()), name.to_owned(), state);
    d.cpu = domxml::vcpus(&x).0;
    d.memory_mib = x
        .find("currentMemory")
        .or_else(|| x.find("memory"))
        .map(domxml::size_kib)
        .unwrap_or(0)
        / 1024;
    d.labels = domxml::labels(&x);
    inner.count();
    d.host = inner.conn().hostname().ok();
    for (target, src, _fmt) in domxml::disks(&x) {
        inner.count();
        let cap = dom
            .block_info(&target, 0)
            .map(|b| b.capacity)
            .ok()
            .or_else(|| {
                let p = src.as_deref()?;
                inner
                    .conn()
                    .lookup_storage_vol_by_path(p)
                    .ok()?
                    .info()
                    .ok()
                    .map(|i| i.capacity)
            });
        d.disks
            .push(DiskInfo::new(target, cap.unwrap_or(0).div_ceil(GIB)));
    }
    if state.is_active() {
        let cfg = xml_of(inner, dom, name, sys::VIR_DOMAIN_XML_INACTIVE)?;
        let mem_cfg = cfg.find("currentMemory").map(domxml::size_kib);
        let mem_live = x.find("currentMemory").map(domxml::size_kib);
        d.pending_power_cycle = domxml::vcpus(&cfg) != domxml::vcpus(&x)
            || cfg.find("memory").map(domxml::size_kib) != x.find("memory").map(domxml::size_kib)
            || (mem_cfg != mem_live && mem_cfg > x.find("memory").map(domxml::size_kib));
    }
    Ok(d)
}

fn shutdown_or_reboot(
    inner: &Inner,
    name: &str,
    channel: ShutdownChannel,
    reboot: bool,
) -> Result<()> {
    let dom = lookup(inner, name)?;
    let op = if reboot { "reboot" } else { "request_shutdown" };
    let flag = match channel {
        ShutdownChannel::Agent => sys::VIR_DOMAIN_SHUTDOWN_GUEST_AGENT,
        ShutdownChannel::Acpi => sys::VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN,
        _ => sys::VIR_DOMAIN_SHUTDOWN_DEFAULT,
    };
    inner.count();
    let first = if reboot {
        dom.reboot(flag)
    } else {
        dom.shutdown_flags(flag)
    }
    .ctx(op, name);
    match first {
        Err(e) if is_unsupported_flags(&e) => {
            // Drivers without mode flags (the test driver): plain request.
            tracing::debug!(
                vm = name,
                "driver refuses shutdown mode flags; sending a plain request"
            );
            inner.count();
            if reboot {
                dom.reboot(0)
            } else {
                dom.shutdown()
            }
            .ctx(op, name)
        }
        // The guest agent closed its channel while we waited for QEMU's shutdown/reset event:
        // the guest is already going down (a fast guest resets before libvirt sees the event).
        Err(e)
            if channel == ShutdownChannel::Agent
                && e.message().contains("End of file from agent") =>
        {
            tracing::debug!(
                vm = name,
                "agent channel closed during {op}: request delivered"
            );
            Ok(())
        }
        other => other,
    }
}

fn probe_agent_blocking(inner: &Inner, name: &str) -> Result<AgentStatus> {
    let dom = lookup(inner, name)?;
    let st = state_of(inner, &dom, name)?;
    if st.is_off() {
        return Ok(AgentStatus::NotConnected);
    }
    let x = xml_of(inner, &dom, name, 0)?;
    let (configured, live_state) = domxml::agent_channel(&x);
    if !configured {
        return Ok(AgentStatus::NotConnected);
    }
    if let Some(ev) = inner.hub.as_ref().and_then(|h| h.agent_state(name)) {
        return Ok(if ev {
            AgentStatus::Connected
        } else {
            AgentStatus::NotConnected
        });
    }
    if let Some(connected) = live_state {
        return Ok(if connected {
            AgentStatus::Connected
        } else {
            AgentStatus::NotConnected
        });
    }
    let secs = inner.cfg.agent_ping_timeout.as_secs().clamp(1, 60) as i32;
    inner.count();
    match dom
        .qemu_agent_command(r#"{"execute":"guest-ping"}"#, secs, 0)
        .ctx("probe_agent", name)
    {
        Ok(_) => Ok(AgentStatus::Connected),
        Err(e) if e.kind() == ErrorKind::Unsupported => Ok(AgentStatus::Unknown),
        Err(e) if e.kind() == ErrorKind::NotFound => Err(e),
        Err(_) => Ok(AgentStatus::NotConnected),
    }
}

fn vm_caps_blocking(inner: &Inner, name: &str) -> Result<VmCapabilities> {
    let dom = lookup(inner, name)?;
    let st = state_of(inner, &dom, name)?;
    let x = xml_of(inner, &dom, name, 0)?;
    let mut c = VmCapabilities::default();
    let (configured, live) = domxml::agent_channel(&x);
    c.agent_configured = configured;
    c.agent_connected = if st.is_off() || !configured {
        Some(false)
    } else {
        inner
            .hub
            .as_ref()
            .and_then(|h| h.agent_state(name))
            .or(live)
    };
    let (cur, max) = domxml::vcpus(&x);
    c.cpu_hot_add = max > cur;
    c.max_live_vcpus = max;
    let max_kib = x.find("memory").map(domxml::size_kib).unwrap_or(0);
    let cur_kib = x
        .find("currentMemory")
        .map(domxml::size_kib)
        .unwrap_or(max_kib);
    c.memory_hot_add = max_kib > cur_kib
        && x.path("devices/memballoon")
            .is_some_and(|b| b.get_attr("model") != Some("none"));
    c.max_live_memory_mib = max_kib / 1024;
    let disks = domxml::disks(&x);
    c.disk_grow_online = !disks.is_empty();
    let all_qcow2 = !disks.is_empty() && disks.iter().all(|d| d.2 == "qcow2");
    c.snapshot_memory = all_qcow2 || inner.driver == "TEST";
    c.snapshot_quiesce = false;
    c.linked_clone_source = disks.iter().all(|d| d.1.is_some()) && !disks.is_empty();
    Ok(c)
}

fn reconfigure_blocking(
    inner: &Inner,
    name: &str,
    ch: &ReconfigureRequest,
) -> Result<ReconfigureResult> {
    let dom = lookup(inner, name)?;
    let running = state_of(inner, &dom, name)?.is_active();
    let mut res = ReconfigureResult::default();
    let mut live_parts = 0usize;
    let mut pending = false;
    let x = xml_of(
        inner,
        &dom,
        name,
        if running {
            0
        } else {
            sys::VIR_DOMAIN_XML_INACTIVE
        },
    )?;
    if let Some(cpu) = ch.cpu {
        if cpu == 0 {
            return Err(Error::invalid_spec("cpu must be positive"));
        }
        let (cur, max) = domxml::vcpus(&x);
        let config = sys::VIR_DOMAIN_AFFECT_CONFIG;
        if running && cpu <= max && cpu >= cur {
            inner.count();
            dom.set_vcpus_flags(cpu, sys::VIR_DOMAIN_AFFECT_LIVE)
                .ctx("reconfigure", name)?;
            inner.count();
            dom.set_vcpus_flags(cpu, config).ctx("reconfigure", name)?;
            live_parts += 1;
            res.notes.push(format!("vCPUs {cur} -> {cpu} live"));
        } else {
            if cpu > max {
                inner.count();
                dom.set_vcpus_flags(cpu, config | sys::VIR_DOMAIN_VCPU_MAXIMUM)
                    .ctx("reconfigure", name)?;
            }
            inner.count();
            dom.set_vcpus_flags(cpu, config).ctx("reconfigure", name)?;
            if running {
                pending = true;
                res.notes.push(format!(
                    "vCPUs -> {cpu} stored in the configuration (live {} is not possible: max {max}, live unplug unreliable)",
                    if cpu < cur { "unplug" } else { "hot-add beyond maximum" }
                ));
            } else {
                res.notes.push(format!("vCPUs -> {cpu} (VM off)"));
            }
        }
    }
    if let Some(mib) = ch.memory_mib {
        if mib == 0 {
            return Err(Error::invalid_spec("memory_mib must be positive"));
        }
        let kib = mib * 1024;
        let max_kib = x.find("memory").map(domxml::size_kib).unwrap_or(0);
        let config = sys::VIR_DOMAIN_AFFECT_CONFIG;
        if running && kib <= max_kib {
            inner.count();
            dom.set_memory_flags(kib, sys::VIR_DOMAIN_AFFECT_LIVE)
                .ctx("reconfigure", name)?;
            inner.count();
            dom.set_memory_flags(kib, config).ctx("reconfigure", name)?;
            live_parts += 1;
            res.notes
                .push(format!("memory -> {mib} MiB live (balloon)"));
        } else {
            if kib > max_kib {
                inner.count();
                if running {
                    dom.set_memory_flags(kib, config | sys::VIR_DOMAIN_MEM_MAXIMUM)
                        .ctx("reconfigure", name)?;
                } else {
                    dom.set_max_memory(kib).ctx("reconfigure", name)?;
                }
            }
            inner.count();
            dom.set_memory_flags(kib, config).ctx("reconfigure", name)?;
            if running {
                pending = true;
                res.notes.push(format!(
                    "memory -> {mib} MiB stored in the configuration (above the live maximum)"
                ));
            } else {
                res.notes.push(format!("memory -> {mib} MiB (VM off)"));
            }
        }
    }
    for d in &ch.disks {
        let disks = domxml::disks(&x);
        let Some((target, src, _)) = disks.iter().find(|(t, s, _)| {
            *t == d.name
                || s.as_deref()
                    .is_some_and(|s| s.ends_with(&format!("/{}", d.name)))
        }) else {
            return Err(Error::not_found(format!("disk {} not found", d.name))
                .with_resource(name.to_owned()));
        };
        let bytes = d.size_gib * GIB;
        let cur = if running {
            inner.count();
            dom.block_info(target, 0).map(|b| b.capacity).ok()
        } else {
            None
        };
        let vol = src.as_deref().and_then(|p| {
            inner.count();
            inner.conn().lookup_storage_vol_by_path(p).ok()
        });
        let cur = cur.or_else(|| vol.as_ref().and_then(|v| v.info().ok()).map(|i| i.capacity));
        if cur.is_some_and(|c| bytes < c) {
            return Err(Error::invalid_spec(format!(
                "disk {} can only grow",
                d.name
            )));
        }
        if running {
            inner.count();
            dom.block_resize(target, bytes, sys::VIR_DOMAIN_BLOCK_RESIZE_BYTES)
                .ctx("reconfigure", name)?;
            live_parts += 1;
        } else {
            let vol = vol.ok_or_else(|| {
                Error::new(
                    ErrorKind::Unsupported,
                    format!("disk {} is not a storage volume", d.name),
                )
            })?;
            inner.count();
            vol.resize(bytes, 0).ctx("reconfigure", name)?;
        }
        res.notes
            .push(format!("disk {target} -> {} GiB", d.size_gib));
    }
    res.applied_live = running && live_parts > 0 && !pending;
    res.needs_power_cycle = pending;
    Ok(res)
}

fn delete_blocking(inner: &Inner, name: &str, opts: &DeleteOptions) -> Result<()> {
    let dom = lookup(inner, name)?;
    if state_of(inner, &dom, name)?.is_active() {
        return Err(
            Error::invalid_state(format!("domain {name} must be off to be deleted"))
                .with_resource(name.to_owned()),
        );
    }
    let x = xml_of(inner, &dom, name, sys::VIR_DOMAIN_XML_INACTIVE)?;
    inner.count();
    dom.undefine_flags(
        sys::VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA | sys::VIR_DOMAIN_UNDEFINE_MANAGED_SAVE,
    )
    .ctx("delete", name)?;
    if opts.delete_disks {
        let seed = domxml::seed_of(&x, name);
        for p in domxml::disks(&x)
            .into_iter()
            .filter_map(|d| d.1)
            .chain(seed)
        {
            inner.count();
            if let Ok(v) = inner.conn().lookup_storage_vol_by_path(&p) {
                inner.count();
                if let Err(e) = v.delete(0) {
                    tracing::warn!(path = %p, error = %e, "could not delete disk volume");
                }
            }
        }
    }
    Ok(())
}

#[async_trait]
impl Provider for LibvirtProvider {
    fn provider_type(&self) -> &'static str {
        PROVIDER
    }

    fn capabilities(&self) -> ProviderCapabilities {
        let inner = self.current();
        let test = inner.driver == "TEST";
        let mut c = ProviderCapabilities::default();
        c.reconfigure_online = true;
        c.disk_expansion_online = !test;
        c.snapshots = true;
        c.memory_snapshots = true;
        c.quiesced_snapshots = false;
        c.linked_clones = inner.cfg.storage_pool.is_some();
        c.full_clones = inner.cfg.storage_pool.is_some();
        c.image_import = false;
        c.supported_disk_types = &["qcow2"];
        c.supported_network_types = &["virtio", "e1000", "rtl8139"];
        c.acpi_shutdown = true;
        c.agent_shutdown = !test;
        // An ACPI press sent before the guest's acpid runs is lost: re-sending is useful.
        c.repeatable_shutdown_signal = true;
        c.power_state_watch = inner.hub.is_some();
        c.reset = true;
        c.reboot = true;
        c.pause = true;
        c.create = true;
        c.delete = true;
        c.reconfigure = true;
        c.inventory = true;
        c.list_vms = true;
        c
    }

    async fn vm_capabilities(&self, vm: &VmId) -> Result<VmCapabilities> {
        let n = vm.to_string();
        self.call("vm_capabilities", move |i| vm_caps_blocking(i, &n))
            .await
    }

    async fn power_state(&self, vm: &VmId) -> Result<PowerState> {
        let n = vm.to_string();
        self.call("power_state", move |i| {
            let d = lookup(i, &n)?;
            state_of(i, &d, &n)
        })
        .await
    }

    /// The endpoint: the connection URI libvirt reports, without credentials or query
    /// parameters other than `name`, `socket` and `root`; for a URI naming the local daemon
    /// (`qemu:///system`) followed by `@` and the host name libvirt reports.
    fn instance_id(&self) -> String {
        self.shared.instance_id.clone()
    }

    /// `"<uuid>#<domain id>"` while the domain is active (running, paused, shutting down):
    /// libvirt gives a domain a new id every time it starts. `Ok(None)` when it is off.
    async fn incarnation(&self, vm: &VmId) -> Result<Option<Incarnation>> {
        let n = vm.to_string();
        self.call("incarnation", move |i| {
            // A fresh lookup: the id is cached in the domain handle.
            let d = lookup(i, &n)?;
            let Some(id) = d.id() else {
                return Ok(None);
            };
            i.count();
            let uuid = d.uuid_string().ctx("incarnation", &n)?;
            Ok(Some(Incarnation::new(format!("{uuid}#{id}"))))
        })
        .await
    }

    async fn watch_power_state(&self, vm: &VmId) -> Result<Option<PowerStateStream>> {
        let inner = self.session("watch_power_state").await?;
        Ok(inner.hub.as_ref().map(|h| h.watch(vm.to_string())))
    }

    async fn start(&self, vm: &VmId, opts: &StartOptions) -> Result<()> {
        let n = vm.to_string();
        let flags = if opts.paused {
            sys::VIR_DOMAIN_START_PAUSED
        } else {
            0
        };
        self.call("start", move |i| {
            let d = lookup(i, &n)?;
            i.count();
            d.create_with_flags(flags).ctx("start", &n)
        })
        .await
    }

    async fn power_off(&self, vm: &VmId, _opts: &PowerOffOptions) -> Result<()> {
        let n = vm.to_string();
        self.call("power_off", move |i| {
            let d = lookup(i, &n)?;
            i.count();
            d.destroy().ctx("power_off", &n)
        })
        .await
    }

    async fn probe_agent(&self, vm: &VmId) -> Result<AgentStatus> {
        let n = vm.to_string();
        self.call("probe_agent", move |i| probe_agent_blocking(i, &n))
            .await
    }

    async fn request_shutdown(
        &self,
        vm: &VmId,
        channel: ShutdownChannel,
        _opts: &ShutdownRequestOptions,
    ) -> Result<()> {
        let n = vm.to_string();
        self.call("request_shutdown", move |i| {
            shutdown_or_reboot(i, &n, channel, false)
        })
        .await
    }

    async fn reset(&self, vm: &VmId) -> Result<()> {
        let n = vm.to_string();
        self.call("reset", move |i| {
            let d = lookup(i, &n)?;
            i.count();
            d.reset().ctx("reset", &n)
        })
        .await
    }

    async fn reboot(&self, vm: &VmId, channel: ShutdownChannel) -> Result<()> {
        let n = vm.to_string();
        self.call("reboot", move |i| shutdown_or_reboot(i, &n, channel, true))
            .await
    }

    async fn pause(&self, vm: &VmId) -> Result<()> {
        let n = vm.to_string();
        self.call("pause", move |i| {
            let d = lookup(i, &n)?;
            i.count();
            d.suspend().ctx("pause", &n)
        })
        .await
    }

    async fn resume(&self, vm: &VmId) -> Result<()> {
        let n = vm.to_string();
        self.call("resume", move |i| {
            let d = lookup(i, &n)?;
            i.count();
            d.resume().ctx("resume", &n)
        })
        .await
    }

    async fn create(&self, spec: &VmCreateSpec) -> Result<VmId> {
        let tpl = self.shared.cfg.template.clone();
        self.create_with(spec, &tpl).await
    }

    async fn delete(&self, vm: &VmId, opts: &DeleteOptions) -> Result<()> {
        let n = vm.to_string();
        let opts = opts.clone();
        self.call("delete", move |i| delete_blocking(i, &n, &opts))
            .await
    }

    async fn reconfigure(
        &self,
        vm: &VmId,
        change: &ReconfigureRequest,
    ) -> Result<ReconfigureResult> {
        let n = vm.to_string();
        let change = change.clone();
        self.call("reconfigure", move |i| reconfigure_blocking(i, &n, &change))
            .await
    }

    async fn describe(&self, vm: &VmId) -> Result<VmDescription> {
        let n = vm.to_string();
        self.call("describe", move |i| {
            let d = lookup(i, &n)?;
            describe_blocking(i, &d, &n)
        })
        .await
    }

    async fn list_vms(&self, opts: &ListOptions) -> Result<Vec<VmDescription>> {
        let want = opts.labels.clone();
        self.call("list_vms", move |i| {
            i.count();
            let doms = i.conn().list_all_domains(0).ctx("list_vms", "")?;
            let mut out = Vec::new();
            for d in doms {
                i.count();
                let Ok(name) = d.name() else { continue };
                match describe_blocking(i, &d, &name) {
                    Ok(desc) => {
                        if want.iter().all(|(k, v)| desc.labels.get(k) == Some(v)) {
                            out.push(desc);
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
            out.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(out)
        })
        .await
    }

    /// One host (this connection's node): its CPUs and memory, the vCPUs and memory of its
    /// running domains as the allocation, and the configured storage pool as its datastore.
    async fn inventory(&self) -> Result<Inventory> {
        self.call("inventory", move |i| {
            i.count();
            let node = i.conn().node_info().ctx("inventory", "node")?;
            i.count();
            let hostname = i.conn().hostname().unwrap_or_else(|_| "localhost".into());
            let mut host = HostInfo::new(
                hostname,
                Resources::new(u64::from(node.cpus), node.memory / 1024),
            );
            i.count();
            let doms = i
                .conn()
                .list_all_domains(sys::VIR_CONNECT_LIST_DOMAINS_ACTIVE)
                .ctx("inventory", "domains")?;
            let mut alloc = Resources::default();
            for d in doms {
                i.count();
                if let (Ok(name), Ok(info)) = (d.name(), d.info()) {
                    alloc.cpu += u64::from(info.nr_virt_cpu);
                    alloc.memory_mib += info.memory / 1024;
                    host.vms.push(name);
                }
            }
            host.allocated = alloc;
            let mut inv = Inventory::default();
            if let Some(pool) = pool(i)? {
                i.count();
                let info = pool.info().ctx("inventory", "storage_pool")?;
                let name = i.cfg.storage_pool.clone().unwrap_or_default();
                host.datastores.push(name.clone());
                inv.datastores
                    .push(DatastoreInfo::new(name, info.available / GIB));
            }
            inv.hosts.push(host);
            Ok(inv)
        })
        .await
    }

    fn snapshotter(&self) -> Option<&dyn Snapshotter> {
        self.capabilities()
            .snapshots
            .then_some(self as &dyn Snapshotter)
    }

    fn cloner(&self) -> Option<&dyn Cloner> {
        self.capabilities().clones().then_some(self as &dyn Cloner)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used)]
    use super::*;

    #[test]
    fn an_unknown_state_of_a_defined_domain_is_retryable_not_not_found() {
        let e = unreadable_state("web-1", 9, Ok(()));
        assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
        assert!(e.is_retryable(), "{e}");
        assert_eq!(e.resource(), Some("web-1"));
        assert!(e.message().contains("(9)"), "{e}");
    }

    #[test]
    fn a_failed_lookup_keeps_its_kind() {
        let gone = unreadable_state(
            "web-1",
            u32::MAX,
            Err(Error::not_found(
                "Domain not found: no domain with matching uuid",
            )),
        );
        assert_eq!(gone.kind(), ErrorKind::NotFound, "{gone}");
        let down = unreadable_state(
            "web-1",
            u32::MAX,
            Err(Error::unavailable("Cannot write data: Broken pipe")),
        );
        assert_eq!(down.kind(), ErrorKind::Unavailable, "{down}");
        assert!(down.is_retryable());
    }

    /// On the in-process test driver: the state of a transient domain read through a handle
    /// taken before it was destroyed (it vanished) is NotFound, not Unavailable.
    #[test]
    fn a_vanished_domain_reads_as_not_found_on_the_test_driver() {
        let dir = tempfile::tempdir().expect("tempdir");
        let node = dir.path().join("node.xml");
        std::fs::write(&node, "<node/>").expect("node xml");
        let cfg =
            Arc::new(LibvirtConfig::new(format!("test://{}", node.display())).with_events(false));
        let inner = open_connection(cfg, Arc::new(AtomicU64::new(0))).expect("connect");
        let dom = inner
            .conn()
            .create_domain_xml(
                "<domain type='test'><name>transient-1</name><memory>65536</memory>\
                 <os><type>hvm</type></os></domain>",
                0,
            )
            .expect("create a transient domain");
        assert_eq!(
            state_of(&inner, &dom, "transient-1").expect("state"),
            PowerState::Running
        );
        dom.destroy().expect("destroy");
        let e = state_of(&inner, &dom, "transient-1").expect_err("vanished");
        assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    }
}
