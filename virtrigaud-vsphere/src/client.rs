//! The thin typed vim25 SOAP client: transport, session, property collector, tasks.
//!
//! Crate-private: the public API is [`crate::VsphereProvider`]; no vSphere types leak out.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use crate::config::{TlsVerification, VsphereConfig};
use crate::fault::{SoapFault, VimError};
use crate::xml::{self, Element, Xml};

/// A managed object reference (`<obj type="VirtualMachine">vm-57</obj>`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct MoRef {
    pub(crate) ty: String,
    pub(crate) value: String,
}

impl MoRef {
    pub(crate) fn new(ty: &str, value: &str) -> Self {
        MoRef {
            ty: ty.to_owned(),
            value: value.to_owned(),
        }
    }
    pub(crate) fn vm(value: &str) -> Self {
        MoRef::new("VirtualMachine", value)
    }
    /// Reads a moref from an element with a `type` attribute (or an xsi:type of
    /// `ManagedObjectReference` plus `type`).
    pub(crate) fn from_el(el: &Element) -> Option<Self> {
        let ty = el.attr("type")?;
        let v = el.text();
        if v.is_empty() {
            return None;
        }
        Some(MoRef::new(ty, v))
    }
}

/// The parts of the ServiceContent we use.
#[derive(Debug, Clone)]
pub(crate) struct ServiceContent {
    pub(crate) property_collector: MoRef,
    pub(crate) root_folder: MoRef,
    pub(crate) search_index: MoRef,
    pub(crate) session_manager: MoRef,
    pub(crate) view_manager: MoRef,
    pub(crate) api_version: String,
}

/// The SOAP client with its session.
pub(crate) struct Client {
    http: reqwest::Client,
    url: url::Url,
    username: String,
    password: SecretString,
    pub(crate) sc: ServiceContent,
    soap_action: String,
    cookie: RwLock<Option<SecretString>>,
    login_lock: tokio::sync::Mutex<()>,
    generation: AtomicU64,
    calls: AtomicU64,
    pub(crate) wait_poll: Duration,
    request_timeout: Duration,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("url", &self.url.as_str())
            .field("username", &self.username)
            .field("api_version", &self.sc.api_version)
            .field("calls", &self.calls.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

const ENVELOPE_OPEN: &str = concat!(
    r#"<?xml version="1.0" encoding="UTF-8"?>"#,
    r#"<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" "#,
    r#"xmlns:xsd="http://www.w3.org/2001/XMLSchema" "#,
    r#"xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>"#
);
const ENVELOPE_CLOSE: &str = "</soapenv:Body></soapenv:Envelope>";

/// Normalises a user URL to the `/sdk` endpoint.
fn sdk_url(raw: &str) -> Result<url::Url, VimError> {
    let mut u = url::Url::parse(raw)
        .map_err(|e| VimError::Protocol(format!("invalid URL {raw:?}: {e}")))?;
    if !matches!(u.scheme(), "https" | "http") {
        return Err(VimError::Protocol(format!(
            "URL scheme must be https or http: {raw:?}"
        )));
    }
    if u.path() == "/" || u.path().is_empty() {
        u.set_path("/sdk");
    }
    u.set_username("").ok();
    u.set_password(None).ok();
    Ok(u)
}

/// The endpoint identity of an SDK URL: `scheme://host:port` (the port always written, the
/// host lower-cased by the URL parser), without user information, path, query or fragment.
pub(crate) fn endpoint_identity(u: &url::Url) -> String {
    let host = u.host_str().unwrap_or_default();
    match u.port_or_known_default() {
        Some(port) => format!("{}://{host}:{port}", u.scheme()),
        None => format!("{}://{host}", u.scheme()),
    }
}

fn build_http(cfg: &VsphereConfig) -> Result<reqwest::Client, VimError> {
    let mut b = reqwest::Client::builder()
        .user_agent(cfg.user_agent.clone())
        .connect_timeout(Duration::from_secs(15))
        .tls_backend_rustls();
    match &cfg.tls {
        TlsVerification::System => {}
        TlsVerification::CaPem(pem) => {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| VimError::Protocol(format!("invalid CA PEM: {e}")))?;
            if certs.is_empty() {
                return Err(VimError::Protocol(
                    "the CA PEM bundle holds no certificate".into(),
                ));
            }
            b = b.tls_certs_only(certs);
        }
        TlsVerification::DangerousAcceptInvalidCerts => {
            tracing::warn!(
                url = %cfg.url,
                "TLS certificate verification is DISABLED for this vSphere connection \
                 (TlsVerification::DangerousAcceptInvalidCerts): credentials can be intercepted"
            );
            b = b.tls_danger_accept_invalid_certs(true);
        }
    }
    b.build().map_err(VimError::Transport)
}

impl Client {
    /// Connects: reads the ServiceContent and logs in.
    pub(crate) async fn connect(cfg: &VsphereConfig) -> Result<Arc<Client>, VimError> {
        let http = build_http(cfg)?;
        let url = sdk_url(&cfg.url)?;
        let placeholder = MoRef::new("ServiceInstance", "ServiceInstance");
        let mut client = Client {
            http,
            url,
            username: cfg.username.clone(),
            password: cfg.password.clone(),
            sc: ServiceContent {
                property_collector: placeholder.clone(),
                root_folder: placeholder.clone(),
                search_index: placeholder.clone(),
                session_manager: placeholder.clone(),
                view_manager: placeholder.clone(),
                api_version: String::new(),
            },
            soap_action: "urn:vim25/6.5".to_owned(),
            cookie: RwLock::new(None),
            login_lock: tokio::sync::Mutex::new(()),
            generation: AtomicU64::new(0),
            calls: AtomicU64::new(0),
            wait_poll: cfg.wait_poll,
            request_timeout: cfg.request_timeout,
        };
        let resp = client
            .call_once("RetrieveServiceContent", &placeholder, "", None)
            .await?;
        let rv = resp
            .child("returnval")
            .ok_or_else(|| VimError::Protocol("no ServiceContent".into()))?;
        let get = |name: &str| {
            rv.child(name)
                .and_then(MoRef::from_el)
                .ok_or_else(|| VimError::Protocol(format!("ServiceContent lacks {name}")))
        };
        client.sc = ServiceContent {
            property_collector: get("propertyCollector")?,
            root_folder: get("rootFolder")?,
            search_index: get("searchIndex")?,
            session_manager: get("sessionManager")?,
            view_manager: get("viewManager")?,
            api_version: rv.text_at("about/apiVersion").unwrap_or("6.5").to_owned(),
        };
        client.soap_action = format!("urn:vim25/{}", client.sc.api_version);
        let client = Arc::new(client);
        client.login().await?;
        if let Some(every) = cfg.keepalive {
            spawn_keepalive(Arc::downgrade(&client), every);
        }
        Ok(client)
    }

    /// The endpoint identity (see [`endpoint_identity`]).
    pub(crate) fn endpoint(&self) -> String {
        endpoint_identity(&self.url)
    }

    /// SOAP calls sent so far (including logins).
    pub(crate) fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Logs in with the configured credentials.
    pub(crate) async fn login(&self) -> Result<(), VimError> {
        let _g = self.login_lock.lock().await;
        self.login_locked().await
    }

    async fn login_locked(&self) -> Result<(), VimError> {
        *self.cookie.write().unwrap_or_else(|p| p.into_inner()) = None;
        let mut body = Xml::new();
        body.el("userName", &self.username);
        // The password goes into the body only; bodies are never logged.
        body.el("password", self.password.expose_secret());
        let sm = self.sc.session_manager.clone();
        self.call_once("Login", &sm, &body.finish(), None).await?;
        self.generation.fetch_add(1, Ordering::SeqCst);
        tracing::debug!(user = %self.username, "vSphere login succeeded");
        Ok(())
    }

    /// Re-logs in after `NotAuthenticated`, unless another task already did since `seen`.
    async fn relogin(&self, seen: u64) -> Result<(), VimError> {
        let _g = self.login_lock.lock().await;
        if self.generation.load(Ordering::SeqCst) != seen {
            return Ok(());
        }
        tracing::info!(user = %self.username, "vSphere session expired (NotAuthenticated); logging in again");
        self.login_locked().await
    }

    /// Logs out (best effort) and forgets the session.
    pub(crate) async fn logout(&self) -> Result<(), VimError> {
        let sm = self.sc.session_manager.clone();
        let r = self.call_once("Logout", &sm, "", None).await;
        *self.cookie.write().unwrap_or_else(|p| p.into_inner()) = None;
        r.map(|_| ())
    }

    /// Calls `method` on `this`; on `NotAuthenticated` logs in again once and retries.
    pub(crate) async fn call(
        &self,
        method: &str,
        this: &MoRef,
        body: &str,
    ) -> Result<Element, VimError> {
        self.call_timeout(method, this, body, None).await
    }

    /// Like [`Client::call`] with a longer HTTP timeout (long polls).
    pub(crate) async fn call_timeout(
        &self,
        method: &str,
        this: &MoRef,
        body: &str,
        extra: Option<Duration>,
    ) -> Result<Element, VimError> {
        let seen = self.generation.load(Ordering::SeqCst);
        match self.call_once(method, this, body, extra).await {
            Err(e) if e.fault().is_some_and(SoapFault::is_not_authenticated) => {
                self.relogin(seen).await?;
                self.call_once(method, this, body, extra).await
            }
            r => r,
        }
    }

    async fn call_once(
        &self,
        method: &str,
        this: &MoRef,
        body: &str,
        extra: Option<Duration>,
    ) -> Result<Element, VimError> {
        let mut env = String::with_capacity(ENVELOPE_OPEN.len() + body.len() + 200);
        env.push_str(ENVELOPE_OPEN);
        env.push_str(&format!(
            r#"<{method} xmlns="urn:vim25"><_this type="{}">{}</_this>"#,
            xml::esc(&this.ty),
            xml::esc(&this.value)
        ));
        env.push_str(body);
        env.push_str(&format!("</{method}>"));
        env.push_str(ENVELOPE_CLOSE);

        let mut req = self
            .http
            .post(self.url.clone())
            .header("Content-Type", "text/xml; charset=utf-8")
            .header("SOAPAction", format!("\"{}\"", self.soap_action))
            .timeout(self.request_timeout + extra.unwrap_or_default())
            .body(env);
        if let Some(c) = self
            .cookie
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            req = req.header("Cookie", c.expose_secret());
        }
        self.calls.fetch_add(1, Ordering::Relaxed);
        tracing::trace!(method, this = %this.value, "vSphere SOAP call");
        let resp = req.send().await.map_err(VimError::Transport)?;
        let status = resp.status();
        for v in resp.headers().get_all(reqwest::header::SET_COOKIE) {
            if let Ok(s) = v.to_str() {
                let pair = s.split(';').next().unwrap_or("").trim();
                if pair.starts_with("vmware_soap_session=") {
                    *self.cookie.write().unwrap_or_else(|p| p.into_inner()) =
                        Some(SecretString::from(pair.to_owned()));
                }
            }
        }
        let text = resp.text().await.map_err(VimError::Transport)?;
        let doc = match xml::parse(&text) {
            Ok(d) => d,
            Err(e) if status.is_success() => return Err(VimError::Xml(e)),
            Err(_) => return Err(VimError::Http(status.as_u16(), text)),
        };
        let body_el = doc
            .child("Body")
            .ok_or_else(|| VimError::Protocol(format!("{method}: no SOAP Body (HTTP {status})")))?;
        if let Some(f) = body_el.child("Fault") {
            return Err(VimError::Fault(SoapFault::from_soap_fault(f)));
        }
        if !status.is_success() {
            return Err(VimError::Http(status.as_u16(), text));
        }
        let resp_el = body_el
            .children
            .first()
            .cloned()
            .ok_or_else(|| VimError::Protocol(format!("{method}: empty SOAP Body")))?;
        if method == "RetrievePropertiesEx" {
            // vcsim answers an unauthenticated RetrievePropertiesEx with a NotAuthenticated
            // fault per property in missingSet instead of a SOAP fault.
            if let Some(objs) = resp_el.child("returnval") {
                for o in objs.children_named("objects") {
                    for m in o.children_named("missingSet") {
                        if let Some(f) = m.child("fault") {
                            let fault = SoapFault::from_localized(f);
                            if fault.is_not_authenticated() || fault.fault_type() == "NoPermission"
                            {
                                return Err(VimError::Fault(fault));
                            }
                        }
                    }
                }
            }
        }
        Ok(resp_el)
    }

    // ---- property collector ----

    /// Reads `paths` of one object. Returns `(path, value)` pairs for the paths that are set.
    pub(crate) async fn retrieve(&self, obj: &MoRef, paths: &[&str]) -> Result<Props, VimError> {
        let mut b = Xml::new();
        b.open("specSet").open("propSet").el("type", &obj.ty);
        for p in paths {
            b.el("pathSet", p);
        }
        b.close("propSet")
            .open("objectSet")
            .moref("obj", &obj.ty, &obj.value)
            .close("objectSet");
        b.close("specSet").raw("<options/>");
        let pc = self.sc.property_collector.clone();
        let resp = self.call("RetrievePropertiesEx", &pc, &b.finish()).await?;
        let objects = resp.child("returnval").and_then(|r| r.child("objects"));
        let Some(objects) = objects else {
            return Err(VimError::Fault(SoapFault::new(
                "ManagedObjectNotFound",
                format!("{} {} not found", obj.ty, obj.value),
            )));
        };
        let mut props = Props::default();
        for ps in objects.children_named("propSet") {
            if let (Some(n), Some(v)) = (ps.text_at("name"), ps.child("val")) {
                props.0.push((n.to_owned(), v.clone()));
            }
        }
        Ok(props)
    }

    /// Names and morefs of all objects of `ty` under the root folder (container view).
    pub(crate) async fn list_by_type(
        &self,
        ty: &str,
        paths: &[&str],
    ) -> Result<Vec<(MoRef, Props)>, VimError> {
        let root = self.sc.root_folder.clone();
        self.list_in(&root, ty, paths).await
    }

    /// Morefs and properties of all objects of `ty` under `container` (recursive container view).
    pub(crate) async fn list_in(
        &self,
        container: &MoRef,
        ty: &str,
        paths: &[&str],
    ) -> Result<Vec<(MoRef, Props)>, VimError> {
        let mut b = Xml::new();
        let root = container;
        b.moref("container", &root.ty, &root.value)
            .el("type", ty)
            .el("recursive", "true");
        let vm_ = self.sc.view_manager.clone();
        let resp = self.call("CreateContainerView", &vm_, &b.finish()).await?;
        let view = resp
            .child("returnval")
            .and_then(MoRef::from_el)
            .ok_or_else(|| VimError::Protocol("CreateContainerView returned no view".into()))?;
        let out = self.collect_view(&view, ty, paths).await;
        let _ = self.call("DestroyView", &view, "").await;
        out
    }

    async fn collect_view(
        &self,
        view: &MoRef,
        ty: &str,
        paths: &[&str],
    ) -> Result<Vec<(MoRef, Props)>, VimError> {
        let mut b = Xml::new();
        b.open("specSet").open("propSet").el("type", ty);
        for p in paths {
            b.el("pathSet", p);
        }
        b.close("propSet");
        b.open("objectSet")
            .moref("obj", &view.ty, &view.value)
            .el("skip", "true");
        b.open_typed("selectSet", "TraversalSpec")
            .el("name", "view")
            .el("type", "ContainerView")
            .el("path", "view")
            .el("skip", "false")
            .close("selectSet");
        b.close("objectSet").close("specSet").raw("<options/>");
        let pc = self.sc.property_collector.clone();
        let mut resp = self.call("RetrievePropertiesEx", &pc, &b.finish()).await?;
        let mut out = Vec::new();
        while let Some(rv) = resp.child("returnval") {
            for o in rv.children_named("objects") {
                let Some(obj) = o.child("obj").and_then(MoRef::from_el) else {
                    continue;
                };
                let mut props = Props::default();
                for ps in o.children_named("propSet") {
                    if let (Some(n), Some(v)) = (ps.text_at("name"), ps.child("val")) {
                        props.0.push((n.to_owned(), v.clone()));
                    }
                }
                out.push((obj, props));
            }
            let Some(token) = rv
                .text_at("token")
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
            else {
                break;
            };
            let mut b = Xml::new();
            b.el("token", &token);
            resp = self
                .call("ContinueRetrievePropertiesEx", &pc, &b.finish())
                .await?;
        }
        Ok(out)
    }

    /// `SearchIndex.FindByInventoryPath`.
    pub(crate) async fn find_by_inventory_path(
        &self,
        path: &str,
    ) -> Result<Option<MoRef>, VimError> {
        let mut b = Xml::new();
        b.el("inventoryPath", path);
        let si = self.sc.search_index.clone();
        let resp = self.call("FindByInventoryPath", &si, &b.finish()).await?;
        Ok(resp.child("returnval").and_then(MoRef::from_el))
    }

    /// `ServiceInstance.CurrentTime` (keep-alive).
    pub(crate) async fn current_time(&self) -> Result<String, VimError> {
        let si = MoRef::new("ServiceInstance", "ServiceInstance");
        let resp = self.call("CurrentTime", &si, "").await?;
        Ok(resp.text_at("returnval").unwrap_or("").to_owned())
    }

    // ---- waits ----

    /// A private property collector with one filter on `obj`'s `paths`.
    pub(crate) async fn waiter(
        self: &Arc<Self>,
        obj: &MoRef,
        paths: &[&str],
    ) -> Result<Waiter, VimError> {
        let pc = self.sc.property_collector.clone();
        let resp = self.call("CreatePropertyCollector", &pc, "").await?;
        let own = resp
            .child("returnval")
            .and_then(MoRef::from_el)
            .ok_or_else(|| VimError::Protocol("CreatePropertyCollector returned nothing".into()))?;
        let mut b = Xml::new();
        b.open("spec").open("propSet").el("type", &obj.ty);
        for p in paths {
            b.el("pathSet", p);
        }
        b.close("propSet")
            .open("objectSet")
            .moref("obj", &obj.ty, &obj.value)
            .close("objectSet");
        b.close("spec").el("partialUpdates", "false");
        if let Err(e) = self.call("CreateFilter", &own, &b.finish()).await {
            let _ = self.call("DestroyPropertyCollector", &own, "").await;
            return Err(e);
        }
        Ok(Waiter {
            client: Arc::clone(self),
            pc: Some(own),
            version: String::new(),
            obj: obj.clone(),
            paths: paths.iter().map(|p| (*p).to_owned()).collect(),
            generation: self.generation.load(Ordering::SeqCst),
        })
    }

    // ---- tasks ----

    /// Waits for a task to finish: one read when it is already done (vcsim, fast tasks),
    /// otherwise a push-based wait on `info.state`. Returns `info.result` on success.
    pub(crate) async fn wait_task(
        self: &Arc<Self>,
        task: &MoRef,
    ) -> Result<Option<Element>, VimError> {
        let paths = ["info.state", "info.error", "info.result"];
        let props = self.retrieve(task, &paths).await?;
        if let Some(r) = task_outcome(&props) {
            return r;
        }
        let mut w = self.waiter(task, &paths).await?;
        let mut current = props;
        let out = loop {
            match w.next().await {
                Ok(Some(groups)) => {
                    groups.into_iter().for_each(|g| current.apply(g));
                    if let Some(r) = task_outcome(&current) {
                        break r;
                    }
                }
                Ok(None) => continue,
                Err(e) => break Err(e),
            }
        };
        w.destroy().await;
        out
    }

    /// Calls a `*_Task` method and waits for the task.
    pub(crate) async fn run_task(
        self: &Arc<Self>,
        method: &str,
        this: &MoRef,
        body: &str,
    ) -> Result<Option<Element>, VimError> {
        let resp = self.call(method, this, body).await?;
        let task = resp
            .child("returnval")
            .and_then(MoRef::from_el)
            .ok_or_else(|| VimError::Protocol(format!("{method} returned no task")))?;
        self.wait_task(&task).await
    }
}

fn task_outcome(props: &Props) -> Option<Result<Option<Element>, VimError>> {
    match props.str("info.state")? {
        "success" => Some(Ok(props.get("info.result").cloned())),
        "error" => {
            let f = props
                .get("info.error")
                .map(SoapFault::from_localized)
                .unwrap_or_else(|| SoapFault::new("UnknownFault", "task failed"));
            Some(Err(VimError::Fault(f)))
        }
        _ => None,
    }
}

fn spawn_keepalive(client: Weak<Client>, every: Duration) {
    if tokio::runtime::Handle::try_current().is_err() {
        return;
    }
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let Some(c) = client.upgrade() else { return };
            if let Err(e) = c.current_time().await {
                tracing::debug!(error = %e, "vSphere keep-alive failed");
            }
        }
    });
}

/// Property values by path.
#[derive(Debug, Clone, Default)]
pub(crate) struct Props(pub(crate) Vec<(String, Element)>);

impl Props {
    pub(crate) fn get(&self, path: &str) -> Option<&Element> {
        self.0.iter().rev().find(|(n, _)| n == path).map(|(_, v)| v)
    }
    pub(crate) fn str(&self, path: &str) -> Option<&str> {
        self.get(path).map(Element::text)
    }
    pub(crate) fn bool(&self, path: &str) -> Option<bool> {
        self.str(path).map(|s| s == "true")
    }
    pub(crate) fn u64(&self, path: &str) -> Option<u64> {
        self.str(path).and_then(|s| s.parse().ok())
    }
    /// Applies changes from an update (`None` = removed).
    pub(crate) fn apply(&mut self, changes: Changes) {
        for (name, val) in changes {
            self.0.retain(|(n, _)| *n != name);
            if let Some(v) = val {
                self.0.push((name, v));
            }
        }
    }
}

/// Property changes of one object update: `(path, new value or None when removed)`.
pub(crate) type Changes = Vec<(String, Option<Element>)>;

/// A private property collector with a filter, read with `WaitForUpdatesEx`.
#[derive(Debug)]
pub(crate) struct Waiter {
    client: Arc<Client>,
    pc: Option<MoRef>,
    version: String,
    obj: MoRef,
    paths: Vec<String>,
    generation: u64,
}

impl Waiter {
    /// One long poll. `Ok(None)` when nothing changed within the poll time; otherwise the
    /// changed properties, one group per object update in server order (the server may batch
    /// several updates, e.g. off then on again; the first call returns the current values).
    pub(crate) async fn next(&mut self) -> Result<Option<Vec<Changes>>, VimError> {
        let Some(pc) = self.pc.clone() else {
            return Err(VimError::Protocol("waiter destroyed".into()));
        };
        let wait = self.client.wait_poll.as_secs().max(1);
        let mut b = Xml::new();
        b.el("version", &self.version)
            .open("options")
            .el("maxWaitSeconds", &wait.to_string())
            .close("options");
        let body = b.finish();
        let r = self
            .client
            .call_timeout(
                "WaitForUpdatesEx",
                &pc,
                &body,
                Some(Duration::from_secs(wait + 5)),
            )
            .await;
        let resp = match r {
            Ok(r) => r,
            Err(e)
                if self.client.generation.load(Ordering::SeqCst) != self.generation
                    || e.is_fault("ManagedObjectNotFound")
                    || e.is_fault("InvalidCollectorVersion") =>
            {
                // The session was replaced (re-login): private collectors died with it.
                // Build a new one; its first update reports the current values again.
                tracing::debug!(error = %e, "recreating the property collector after a session change");
                let paths: Vec<&str> = self.paths.iter().map(String::as_str).collect();
                let mut fresh = self.client.waiter(&self.obj, &paths).await?;
                self.pc = fresh.pc.take();
                self.version = String::new();
                self.generation = fresh.generation;
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let Some(rv) = resp.child("returnval") else {
            return Ok(None);
        };
        if let Some(v) = rv.text_at("version") {
            self.version = v.to_owned();
        }
        let mut changes = Vec::new();
        for fs in rv.children_named("filterSet") {
            for os in fs.children_named("objectSet") {
                if os.text_at("kind") == Some("leave") {
                    return Err(VimError::Fault(SoapFault::new(
                        "ManagedObjectNotFound",
                        format!("{} {} was removed", self.obj.ty, self.obj.value),
                    )));
                }
                let mut group = Vec::new();
                for cs in os.children_named("changeSet") {
                    let Some(name) = cs.text_at("name") else {
                        continue;
                    };
                    let val = if cs.text_at("op") == Some("remove") {
                        None
                    } else {
                        cs.child("val").cloned()
                    };
                    group.push((name.to_owned(), val));
                }
                changes.push(group);
            }
        }
        Ok(Some(changes))
    }

    /// Destroys the private collector (best effort).
    pub(crate) async fn destroy(&mut self) {
        if let Some(pc) = self.pc.take() {
            let _ = self.client.call("DestroyPropertyCollector", &pc, "").await;
        }
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        if let Some(pc) = self.pc.take() {
            let client = Arc::clone(&self.client);
            if let Ok(h) = tokio::runtime::Handle::try_current() {
                h.spawn(async move {
                    let _ = client.call("DestroyPropertyCollector", &pc, "").await;
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdk_url_normalises() {
        assert_eq!(
            sdk_url("https://vc.example.com").expect("u").as_str(),
            "https://vc.example.com/sdk"
        );
        assert_eq!(
            sdk_url("https://u:p@vc.example.com/sdk")
                .expect("u")
                .as_str(),
            "https://vc.example.com/sdk"
        );
        assert!(sdk_url("ftp://x").is_err());
        assert!(sdk_url("not a url").is_err());
    }

    #[test]
    fn endpoint_identity_is_scheme_host_port_without_credentials() {
        let id = |raw: &str| endpoint_identity(&sdk_url(raw).expect("url"));
        let leaky = id("https://svc-admin:hunter2@VC1.Example.com:8443/sdk?x=hunter2#hunter2");
        assert_eq!(leaky, "https://vc1.example.com:8443");
        assert!(
            !leaky.contains("hunter2") && !leaky.contains("svc-admin"),
            "{leaky}"
        );
        // The same endpoint however it is written.
        assert_eq!(id("https://vc1.example.com"), "https://vc1.example.com:443");
        assert_eq!(
            id("https://vc1.example.com:443/sdk"),
            "https://vc1.example.com:443"
        );
        assert_eq!(id("http://[::1]:18989/sdk"), "http://[::1]:18989");
        assert_ne!(id("https://vc1.example.com"), id("https://vc2.example.com"));
    }
}
