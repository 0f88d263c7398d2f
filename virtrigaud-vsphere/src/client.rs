//! The vim25 SOAP client: one logged-in session and the one place requests are sent
//! ([`Client::call`]), which is also where they are counted ([`ApiCalls`]).
//!
//! Crate-private: the public API is `VsphereProvider`; no vSphere types leak out.
//! The property collector and the task waits build on this in `collector.rs` and `task.rs`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use virtrigaud_core::layers::ApiCalls;

use crate::config::VsphereConfig;
use crate::error::{SoapFault, VimError};
use crate::session::{Session, build_http, endpoint_identity, sdk_url};
use crate::types::MoRef;
use crate::xml::{self, Element};

/// The parts of the ServiceContent we use.
#[derive(Debug, Clone)]
pub(crate) struct ServiceContent {
    pub(crate) property_collector: MoRef,
    pub(crate) root_folder: MoRef,
    pub(crate) search_index: MoRef,
    pub(crate) session_manager: MoRef,
    pub(crate) view_manager: MoRef,
    /// `OvfManager` (image imports); `None` when the server has none.
    pub(crate) ovf_manager: Option<MoRef>,
    /// `GuestOperationsManager` (pre-stop hooks in the guest); `None` when the server has none.
    pub(crate) guest_operations_manager: Option<MoRef>,
    pub(crate) api_version: String,
}

impl ServiceContent {
    /// Before `RetrieveServiceContent` answered: every reference is the service instance.
    fn placeholder() -> Self {
        let si = MoRef::new("ServiceInstance", "ServiceInstance");
        ServiceContent {
            property_collector: si.clone(),
            root_folder: si.clone(),
            search_index: si.clone(),
            session_manager: si.clone(),
            view_manager: si,
            ovf_manager: None,
            guest_operations_manager: None,
            api_version: String::new(),
        }
    }

    /// Reads the `returnval` of `RetrieveServiceContent`.
    fn from_reply(resp: &Element) -> Result<Self, VimError> {
        let rv = resp
            .child("returnval")
            .ok_or_else(|| VimError::Protocol("no ServiceContent".into()))?;
        let get = |name: &str| {
            rv.child(name)
                .and_then(MoRef::from_el)
                .ok_or_else(|| VimError::Protocol(format!("ServiceContent lacks {name}")))
        };
        Ok(ServiceContent {
            property_collector: get("propertyCollector")?,
            root_folder: get("rootFolder")?,
            search_index: get("searchIndex")?,
            session_manager: get("sessionManager")?,
            view_manager: get("viewManager")?,
            ovf_manager: rv.child("ovfManager").and_then(MoRef::from_el),
            guest_operations_manager: rv.child("guestOperationsManager").and_then(MoRef::from_el),
            api_version: rv.text_at("about/apiVersion").unwrap_or("6.5").to_owned(),
        })
    }
}

/// The SOAP client with its session.
pub(crate) struct Client {
    http: reqwest::Client,
    url: url::Url,
    session: Session,
    pub(crate) sc: ServiceContent,
    soap_action: String,
    calls: ApiCalls,
    by_method: MethodCounters,
    pub(crate) wait_poll: Duration,
    request_timeout: Duration,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("url", &self.url.as_str())
            .field("username", &self.session.username)
            .field("api_version", &self.sc.api_version)
            .field("calls", &self.calls.get())
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

/// The SOAP envelope of one call of `method` on `this`.
fn envelope(method: &str, this: &MoRef, body: &str) -> String {
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
    env
}

impl Client {
    /// Connects: reads the ServiceContent and logs in.
    pub(crate) async fn connect(cfg: &VsphereConfig) -> Result<Arc<Client>, VimError> {
        let mut client = Client {
            http: build_http(cfg)?,
            url: sdk_url(&cfg.url)?,
            session: Session::new(cfg),
            sc: ServiceContent::placeholder(),
            soap_action: "urn:vim25/6.5".to_owned(),
            calls: ApiCalls::new(),
            by_method: MethodCounters::default(),
            wait_poll: cfg.wait_poll,
            request_timeout: cfg.request_timeout,
        };
        let si = MoRef::new("ServiceInstance", "ServiceInstance");
        let resp = client
            .call_once("RetrieveServiceContent", &si, "", None)
            .await?;
        client.sc = ServiceContent::from_reply(&resp)?;
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

    /// The `/sdk` URL (its scheme, host and port stand in for the `*` host of NFC URLs).
    pub(crate) fn sdk_url(&self) -> &url::Url {
        &self.url
    }

    /// A plain HTTP request (not SOAP) with the crate's TLS settings and, when
    /// `with_session`, the session cookie (NFC uploads to the SDK host need it). The cookie
    /// is added here and never logged.
    pub(crate) fn http_request(
        &self,
        method: reqwest::Method,
        url: url::Url,
        with_session: bool,
    ) -> reqwest::RequestBuilder {
        let req = self.http.request(method, url);
        if with_session {
            self.session.authorize(req)
        } else {
            req
        }
    }

    /// SOAP calls sent so far (including logins).
    pub(crate) fn api_calls(&self) -> u64 {
        self.calls.get()
    }

    /// The requests of one SOAP method: sent so far, in flight now, most in flight at once.
    pub(crate) fn method_calls(&self, method: &str) -> MethodCalls {
        self.by_method.get(method)
    }

    /// Logins so far (see [`Session::generation`]).
    pub(crate) fn generation(&self) -> u64 {
        self.session.generation()
    }

    /// Logs in with the configured credentials.
    pub(crate) async fn login(&self) -> Result<(), VimError> {
        let _g = self.session.login_lock.lock().await;
        self.login_locked().await
    }

    async fn login_locked(&self) -> Result<(), VimError> {
        self.session.forget();
        let sm = self.sc.session_manager.clone();
        self.call_once("Login", &sm, &self.session.login_body(), None)
            .await?;
        self.session.logged_in();
        tracing::debug!(user = %self.session.username, "vSphere login succeeded");
        Ok(())
    }

    /// Re-logs in after `NotAuthenticated`, unless another task already did since `seen`.
    async fn relogin(&self, seen: u64) -> Result<(), VimError> {
        let _g = self.session.login_lock.lock().await;
        if self.session.generation() != seen {
            return Ok(());
        }
        tracing::info!(user = %self.session.username, "vSphere session expired (NotAuthenticated); logging in again");
        self.login_locked().await
    }

    /// Logs out (best effort) and forgets the session.
    pub(crate) async fn logout(&self) -> Result<(), VimError> {
        let sm = self.sc.session_manager.clone();
        let r = self.call_once("Logout", &sm, "", None).await;
        self.session.forget();
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
        let seen = self.session.generation();
        match self.call_once(method, this, body, extra).await {
            Err(e) if e.fault().is_some_and(SoapFault::is_not_authenticated) => {
                self.relogin(seen).await?;
                self.call_once(method, this, body, extra).await
            }
            r => r,
        }
    }

    /// The send point: every SOAP request goes through here, and is counted here.
    async fn call_once(
        &self,
        method: &str,
        this: &MoRef,
        body: &str,
        extra: Option<Duration>,
    ) -> Result<Element, VimError> {
        let req = self
            .http
            .post(self.url.clone())
            .header("Content-Type", "text/xml; charset=utf-8")
            .header("SOAPAction", format!("\"{}\"", self.soap_action))
            .timeout(self.request_timeout + extra.unwrap_or_default())
            .body(envelope(method, this, body));
        let req = self.session.authorize(req);
        self.calls.record();
        let in_flight = self.by_method.start(method);
        tracing::trace!(method, this = %this.value, "vSphere SOAP call");
        let resp = req.send().await.map_err(VimError::Transport)?;
        let status = resp.status();
        self.session.remember(resp.headers());
        let text = resp.text().await.map_err(VimError::Transport)?;
        drop(in_flight);
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
            missing_set_fault(&resp_el)?;
        }
        Ok(resp_el)
    }

    /// `ServiceInstance.CurrentTime` (keep-alive).
    pub(crate) async fn current_time(&self) -> Result<String, VimError> {
        let si = MoRef::new("ServiceInstance", "ServiceInstance");
        let resp = self.call("CurrentTime", &si, "").await?;
        Ok(resp.text_at("returnval").unwrap_or("").to_owned())
    }
}

/// The requests of one SOAP method, counted where requests are sent (see
/// [`crate::VsphereProvider::method_calls`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MethodCalls {
    /// Requests sent so far.
    pub sent: u64,
    /// Requests waiting for their reply now.
    pub in_flight: u64,
    /// The most requests of this method that waited for their reply at once.
    pub peak_in_flight: u64,
}

/// [`MethodCalls`] by method name.
#[derive(Debug, Default)]
struct MethodCounters(Arc<Mutex<HashMap<String, MethodCalls>>>);

impl MethodCounters {
    fn get(&self, method: &str) -> MethodCalls {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.get(method).copied().unwrap_or_default()
    }

    /// Counts a request of `method` as sent and in flight until the guard is dropped (also
    /// when the request future is).
    fn start(&self, method: &str) -> InFlight {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let c = map.entry(method.to_owned()).or_default();
        c.sent += 1;
        c.in_flight += 1;
        c.peak_in_flight = c.peak_in_flight.max(c.in_flight);
        InFlight {
            counters: Arc::clone(&self.0),
            method: method.to_owned(),
        }
    }
}

/// One request of a method in flight (see [`MethodCounters::start`]).
struct InFlight {
    counters: Arc<Mutex<HashMap<String, MethodCalls>>>,
    method: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut map = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = map.get_mut(&self.method) {
            c.in_flight = c.in_flight.saturating_sub(1);
        }
    }
}

/// vcsim answers an unauthenticated `RetrievePropertiesEx` with a `NotAuthenticated` fault
/// per property in `missingSet` instead of a SOAP fault: raise it (and `NoPermission`).
fn missing_set_fault(resp: &Element) -> Result<(), VimError> {
    let Some(objs) = resp.child("returnval") else {
        return Ok(());
    };
    for o in objs.children_named("objects") {
        for m in o.children_named("missingSet") {
            if let Some(f) = m.child("fault") {
                let fault = SoapFault::from_localized(f);
                if fault.is_not_authenticated() || fault.fault_type() == "NoPermission" {
                    return Err(VimError::Fault(fault));
                }
            }
        }
    }
    Ok(())
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
