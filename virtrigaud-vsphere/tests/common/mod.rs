//! The fixture of the vSphere tests: connection settings for vcsim (from the environment
//! scripts/vsphere/setup.sh writes) or for a scripted server, model VMs, cleanup, and a raw
//! second session to act behind the provider's back.
#![allow(dead_code, unreachable_pub, missing_docs)]

pub mod fake_vc;
pub mod ova;

use std::time::Duration;

use virtrigaud_core::testing::backend_env;
use virtrigaud_core::{
    DeleteOptions, ListOptions, PowerOffOptions, PowerState, Provider, StartOptions, VmId,
};
use virtrigaud_vsphere::{TlsVerification, VsphereConfig, VsphereProvider};

/// Connection settings from the environment written by scripts/vsphere/setup.sh.
pub fn config() -> Option<VsphereConfig> {
    let url = backend_env("vsphere", "VIRTRIGAUD_VSPHERE_URL")?;
    let user = backend_env("vsphere", "VIRTRIGAUD_VSPHERE_USER")?;
    let password = backend_env("vsphere", "VIRTRIGAUD_VSPHERE_PASSWORD")?;
    let tls = match std::env::var("VIRTRIGAUD_VSPHERE_CA_FILE") {
        Ok(f) if !f.is_empty() => {
            TlsVerification::CaPem(std::fs::read(&f).expect("read VIRTRIGAUD_VSPHERE_CA_FILE"))
        }
        _ if std::env::var("VIRTRIGAUD_VSPHERE_INSECURE").is_ok_and(|v| v == "1") => {
            TlsVerification::DangerousAcceptInvalidCerts
        }
        _ => TlsVerification::System,
    };
    Some(
        VsphereConfig::new(url, user, password)
            .with_tls(tls)
            .with_wait_poll(Duration::from_secs(5))
            .with_keepalive(None),
    )
}

pub async fn provider() -> Option<VsphereProvider> {
    let cfg = config()?;
    Some(
        VsphereProvider::connect(cfg)
            .await
            .expect("connect to vcsim"),
    )
}

/// Settings for a scripted (wiremock) vCenter at `uri`: 1 s long polls, no keep-alive.
pub fn scripted_config(uri: &str) -> VsphereConfig {
    VsphereConfig::new(format!("{uri}/sdk"), "virtrigaud", "pw")
        .with_wait_poll(Duration::from_secs(1))
        .with_keepalive(None)
}

/// Powers `vm` off if needed and destroys it with its disks.
pub async fn remove(p: &VsphereProvider, vm: &VmId) {
    if !p.power_state(vm).await.expect("power_state").is_off() {
        p.power_off(vm, &PowerOffOptions::default())
            .await
            .expect("power_off");
    }
    let mut opts = DeleteOptions::default();
    opts.delete_disks = true;
    p.delete(vm, &opts).await.expect("delete");
}

/// Removes every VM named `name` (leftovers of an earlier run).
pub async fn remove_named(p: &VsphereProvider, name: &str) {
    let all = p.list_vms(&ListOptions::default()).await.expect("list");
    for v in all.into_iter().filter(|v| v.name == name) {
        remove(p, &v.id).await;
    }
}

/// The model VM `name` (DC0_H0_VMn on the standalone host, DC0_C0_RP0_VMn in the cluster),
/// powered on.
pub async fn running_vm(p: &VsphereProvider, name: &str) -> VmId {
    let vm = p
        .find_vm_by_name(name)
        .await
        .unwrap_or_else(|e| panic!("find {name}: {e}"));
    if p.power_state(&vm).await.expect("power_state").is_off() {
        p.start(&vm, &StartOptions::default()).await.expect("start");
    }
    assert_eq!(
        p.power_state(&vm).await.expect("power_state"),
        PowerState::Running
    );
    vm
}

/// A raw second session (curl-like), used to act behind the provider's back.
pub struct RawSession {
    http: reqwest::Client,
    url: String,
    cookie: String,
}

fn soap_env(body: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>{body}</soapenv:Body></soapenv:Envelope>"#
    )
}

/// An HTTP client that trusts vcsim's CA (from the environment).
fn vcsim_http() -> reqwest::Client {
    let mut b = reqwest::Client::builder();
    if let Ok(f) = std::env::var("VIRTRIGAUD_VSPHERE_CA_FILE")
        && !f.is_empty()
    {
        let certs =
            reqwest::Certificate::from_pem_bundle(&std::fs::read(f).expect("ca")).expect("pem");
        b = b.tls_certs_only(certs);
    }
    b.build().expect("client")
}

/// Calls one of the project vcsim's knobs (`path?query`, scripts/vsphere/vcsim-main/main.go):
/// its status and body.
pub async fn vcsim_knob(post: bool, path_and_query: &str) -> (u16, String) {
    let url = std::env::var("VIRTRIGAUD_VSPHERE_URL").expect("url");
    let base = url.trim_end_matches('/').trim_end_matches("/sdk");
    let http = vcsim_http();
    let target = format!("{base}{path_and_query}");
    let req = if post {
        http.post(target)
    } else {
        http.get(target)
    };
    let resp = req.send().await.expect("vcsim knob");
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

/// Sets the guest's shutdown delay with the project vcsim's knob
/// (scripts/vsphere/vcsim-main/main.go): `ShutdownGuest` is delivered, and the guest powers
/// off `ms` later; 0 removes the delay. An hour models a guest that ignores the request.
pub async fn set_guest_shutdown_delay(vm: &VmId, ms: u64) {
    let url = std::env::var("VIRTRIGAUD_VSPHERE_URL").expect("url");
    let base = url.trim_end_matches('/').trim_end_matches("/sdk");
    let resp = vcsim_http()
        .post(format!(
            "{base}/virtrigaud/guest-shutdown-delay?vm={}&ms={ms}",
            vm.as_str()
        ))
        .send()
        .await
        .expect("vcsim delay knob");
    assert!(
        resp.status().is_success(),
        "vcsim delay knob: HTTP {} (a vcsim without the knob?)",
        resp.status()
    );
}

impl RawSession {
    pub async fn login() -> RawSession {
        let url = std::env::var("VIRTRIGAUD_VSPHERE_URL").expect("url");
        let http = vcsim_http();
        let mut s = RawSession {
            http,
            url,
            cookie: String::new(),
        };
        let user = std::env::var("VIRTRIGAUD_VSPHERE_USER").expect("user");
        let pass = std::env::var("VIRTRIGAUD_VSPHERE_PASSWORD").expect("password");
        s.call(&format!(
            r#"<Login xmlns="urn:vim25"><_this type="SessionManager">SessionManager</_this><userName>{user}</userName><password>{pass}</password></Login>"#
        ))
        .await;
        assert!(!s.cookie.is_empty(), "raw login got no session cookie");
        s
    }

    pub async fn call(&mut self, body: &str) -> String {
        let mut req = self
            .http
            .post(&self.url)
            .header("Content-Type", "text/xml; charset=utf-8")
            .header("SOAPAction", "\"urn:vim25/6.5\"")
            .body(soap_env(body));
        if !self.cookie.is_empty() {
            req = req.header("Cookie", self.cookie.clone());
        }
        let resp = req.send().await.expect("raw SOAP call");
        if let Some(c) = resp.headers().get("set-cookie") {
            self.cookie = c
                .to_str()
                .expect("cookie")
                .split(';')
                .next()
                .unwrap_or("")
                .to_owned();
        }
        resp.text().await.expect("body")
    }

    /// Terminates every session whose user agent is `agent` (never our own).
    pub async fn terminate_sessions_of(&mut self, agent: &str) -> usize {
        let xml = self
            .call(r#"<RetrievePropertiesEx xmlns="urn:vim25"><_this type="PropertyCollector">propertyCollector</_this><specSet><propSet><type>SessionManager</type><pathSet>sessionList</pathSet></propSet><objectSet><obj type="SessionManager">SessionManager</obj></objectSet></specSet><options/></RetrievePropertiesEx>"#)
            .await;
        let mut keys = Vec::new();
        for chunk in xml.split("<UserSession>").skip(1) {
            let key = between(chunk, "<key>", "</key>");
            let ua = between(chunk, "<userAgent>", "</userAgent>");
            if ua == agent {
                keys.push(key.to_owned());
            }
        }
        if keys.is_empty() {
            return 0;
        }
        let ids: String = keys
            .iter()
            .map(|k| format!("<sessionId>{k}</sessionId>"))
            .collect();
        let r = self
            .call(&format!(r#"<TerminateSession xmlns="urn:vim25"><_this type="SessionManager">SessionManager</_this>{ids}</TerminateSession>"#))
            .await;
        assert!(!r.contains("Fault>"), "TerminateSession failed: {r}");
        keys.len()
    }
}

fn between<'a>(s: &'a str, a: &str, b: &str) -> &'a str {
    s.split_once(a)
        .and_then(|(_, r)| r.split_once(b))
        .map(|(v, _)| v)
        .unwrap_or("")
}
