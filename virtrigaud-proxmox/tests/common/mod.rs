//! Shared helpers for the tests against fakepve (started by scripts/proxmox/setup.sh).
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};
use virtrigaud_core::conformance::Fixture;
use virtrigaud_core::orchestration::image::ImageSink;
use virtrigaud_core::testing::{backend_env, missing_prerequisite};
use virtrigaud_core::{CloneOptions, Customization, Error, NetworkCustomization, Result, VmId};
use virtrigaud_proxmox::{
    Auth, ProxmoxConfig, ProxmoxProvider, PveClient, PveContent, PveImageSink,
};

/// Connection info from the environment written by setup.sh.
#[derive(Clone)]
pub struct Env {
    pub url: String,
    pub token_id: String,
    pub token_secret: String,
    pub user: String,
    pub password: String,
    pub ca_pem: Vec<u8>,
    pub control: Control,
}

fn var(name: &str) -> Option<String> {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            missing_prerequisite(
                "proxmox",
                &format!("environment variable {name} is not set"),
            );
            None
        }
    }
}

pub fn env() -> Option<Env> {
    let url = backend_env("proxmox", "VIRTRIGAUD_PROXMOX_URL")?;
    let ca = var("VIRTRIGAUD_PROXMOX_CA")?;
    let ca_pem = match std::fs::read(&ca) {
        Ok(p) => p,
        Err(e) => {
            missing_prerequisite("proxmox", &format!("cannot read CA {ca}: {e}"));
            return None;
        }
    };
    Some(Env {
        url,
        token_id: var("VIRTRIGAUD_PROXMOX_TOKEN_ID")?,
        token_secret: var("VIRTRIGAUD_PROXMOX_TOKEN_SECRET")?,
        user: var("VIRTRIGAUD_PROXMOX_USER")?,
        password: var("VIRTRIGAUD_PROXMOX_PASSWORD")?,
        ca_pem,
        control: Control {
            url: var("VIRTRIGAUD_PROXMOX_CONTROL_URL")?,
            token: var("VIRTRIGAUD_PROXMOX_CONTROL_TOKEN")?,
            http: reqwest::Client::new(),
        },
    })
}

impl Env {
    pub fn token_config(&self) -> ProxmoxConfig {
        ProxmoxConfig::new(
            &self.url,
            Auth::api_token(&self.token_id, &self.token_secret),
        )
        .with_ca_pem(self.ca_pem.clone())
        .with_task_poll(Duration::from_millis(50), Duration::from_millis(500))
        .with_task_timeout(Duration::from_secs(60))
    }

    pub fn password_config(&self) -> ProxmoxConfig {
        ProxmoxConfig::new(&self.url, Auth::password(&self.user, &self.password))
            .with_ca_pem(self.ca_pem.clone())
            .with_task_poll(Duration::from_millis(50), Duration::from_millis(500))
    }

    pub fn client(&self) -> PveClient {
        PveClient::new(self.token_config()).expect("client")
    }

    pub fn provider(&self) -> Arc<ProxmoxProvider> {
        Arc::new(ProxmoxProvider::new(self.client()))
    }
}

/// The launcher's control API (fault injection, fresh guests).
#[derive(Clone)]
pub struct Control {
    pub url: String,
    pub token: String,
    pub http: reqwest::Client,
}

impl Control {
    pub async fn post(&self, path: &str, body: Value) -> Value {
        let resp = self
            .http
            .post(format!("{}{path}", self.url))
            .header("X-Control-Token", &self.token)
            .json(&body)
            .send()
            .await
            .expect("control request");
        let status = resp.status();
        let v: Value = resp.json().await.expect("control json");
        assert!(status.is_success(), "control {path}: {status} {v}");
        v
    }

    pub async fn get(&self, path: &str) -> Value {
        let resp = self
            .http
            .get(format!("{}{path}", self.url))
            .header("X-Control-Token", &self.token)
            .send()
            .await
            .expect("control request");
        resp.json().await.expect("control json")
    }

    /// A fresh guest on the fake; `spec` overrides the defaults (running, ACPI honoured in 1 s).
    pub async fn vm(&self, name: &str, spec: Value) -> VmId {
        let mut body = json!({
            "name": name, "status": "running", "shutdown_secs": 1,
            "config": {"cores": 1, "memory": 512, "scsi0": "local-lvm:vm-1-disk-0,size=8G",
                       "net0": "virtio,bridge=vmbr0"},
        });
        if let (Some(b), Some(s)) = (body.as_object_mut(), spec.as_object()) {
            for (k, v) in s {
                b.insert(k.clone(), v.clone());
            }
        }
        let v = self.post("/vm", body).await;
        VmId::new(format!(
            "{}/{}",
            v["node"].as_str().unwrap_or("pve1"),
            v["vmid"]
        ))
    }

    pub async fn fault(&self, method: &str, suffix: &str, extra: Value) {
        let mut body = json!({"method": method, "suffix": suffix});
        if let (Some(b), Some(s)) = (body.as_object_mut(), extra.as_object()) {
            for (k, v) in s {
                b.insert(k.clone(), v.clone());
            }
        }
        self.post("/fault", body).await;
    }

    pub async fn unfault(&self, method: &str, suffix: &str) {
        self.post("/unfault", json!({"method": method, "suffix": suffix}))
            .await;
    }

    pub async fn fake_vm(&self, vm: &VmId) -> Value {
        let vmid = vm.as_str().split('/').nth(1).unwrap_or("0");
        self.get(&format!("/vm/{vmid}")).await
    }

    /// A stopped template (its disk a base volume), the source PVE takes linked clones from.
    pub async fn template(&self, name: &str) -> VmId {
        self.vm(
            name,
            json!({"status": "stopped", "template": true,
                   "config": {"cores": 1, "memory": 512, "template": 1,
                              "scsi0": "local-lvm:base-1-disk-0,size=8G",
                              "net0": "virtio,bridge=vmbr0"}}),
        )
        .await
    }

    /// Makes the next clone of `vm` fail after the target exists (the launcher's knob).
    pub async fn fail_next_clone(&self, vm: &VmId) {
        let (_, vmid) = split(vm);
        self.post("/clone-fault", json!({"vmid": vmid})).await;
    }

    pub async fn requests_total(&self) -> u64 {
        self.get("/requests").await["total"].as_u64().unwrap_or(0)
    }
}

/// The customization a VM's config carries, as fakepve holds it (read independently of the
/// provider): `name` as the hostname, `ipconfigN` as networks `netN`, `nameserver` on the
/// first one; `None` without a cloud-init drive (the guest would see nothing).
pub fn customization_in(config: &Value) -> Option<Customization> {
    let cfg = config.as_object()?;
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let drive = cfg.iter().any(|(k, v)| {
        ["ide", "sata", "scsi", "virtio"]
            .iter()
            .any(|p| k.starts_with(p))
            && text(v).contains("cloudinit")
    });
    if !drive {
        return None;
    }
    let mut c = Customization::default();
    c.hostname = cfg.get("name").map(text);
    for slot in 0..32 {
        let Some(v) = cfg.get(&format!("ipconfig{slot}")).map(text) else {
            continue;
        };
        let mut n = NetworkCustomization::default();
        n.name = format!("net{slot}");
        for part in v.split(',') {
            match part.split_once('=') {
                Some(("ip" | "ip6", a)) if !["dhcp", "auto", "manual"].contains(&a) => {
                    n.ip_address = Some(a.to_owned());
                }
                Some(("gw" | "gw6", g)) => n.gateway = Some(g.to_owned()),
                _ => {}
            }
        }
        c.networks.push(n);
    }
    if let (Some(ns), Some(first)) = (cfg.get("nameserver").map(text), c.networks.first_mut()) {
        first.dns = ns
            .split([' ', ',', ';'])
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
    }
    Some(c)
}

/// Splits `node/vmid`.
pub fn split(vm: &VmId) -> (String, u32) {
    let (n, v) = vm.as_str().split_once('/').expect("node/vmid");
    (n.to_owned(), v.parse().expect("vmid"))
}

/// The conformance fixture: fresh guests from the control API.
pub struct PveFixture {
    pub env: Env,
    pub provider: Arc<ProxmoxProvider>,
}

#[async_trait]
impl Fixture for PveFixture {
    async fn cooperative_vm(&self) -> Result<VmId> {
        Ok(self
            .env
            .control
            // CPU hot-plug on, with a second core to add live (reconfigure_online's headroom).
            .vm(
                "conf-coop",
                json!({"shutdown_secs": 1, "config": {
                    "cores": 2, "vcpus": 1, "memory": 512, "hotplug": "network,disk,usb,cpu",
                    "scsi0": "local-lvm:vm-1-disk-0,size=8G", "net0": "virtio,bridge=vmbr0"}}),
            )
            .await)
    }

    async fn ignoring_vm(&self) -> Result<Option<VmId>> {
        Ok(Some(
            self.env
                .control
                .vm("conf-ignore", json!({"acpi": false}))
                .await,
        ))
    }

    async fn pre_stop_executor(
        &self,
    ) -> Result<Option<Arc<dyn virtrigaud_core::shutdown::PreStopExecutor>>> {
        Ok(Some(Arc::new(virtrigaud_proxmox::GuestAgentPreStop::new(
            &self.provider,
        ))))
    }

    /// A guest with the agent enabled and running; fakepve answers every `agent/exec` of
    /// a command it has no script for with exit 0.
    async fn pre_stop_vm(&self) -> Result<VmId> {
        Ok(self
            .env
            .control
            .vm(
                "conf-hook",
                json!({"shutdown_secs": 1, "agent": {},
                       "config": {"cores": 1, "memory": 512, "agent": "1"}}),
            )
            .await)
    }

    fn missing_vm(&self) -> VmId {
        VmId::new("pve1/999999")
    }

    fn graceful_grace(&self) -> Duration {
        Duration::from_secs(15)
    }

    fn short_grace(&self) -> Duration {
        Duration::from_secs(2)
    }

    async fn applied_customization(&self, vm: &VmId) -> Result<Option<Customization>> {
        let fake = self.env.control.fake_vm(vm).await;
        Ok(customization_in(&fake["config"]))
    }

    /// Prepared images become ISO volumes on pve1's `local` storage, staged in a temporary
    /// directory of this test process (fakepve's upload takes `iso` and `vztmpl` only).
    async fn image_sink(&self) -> Result<Option<Arc<dyn ImageSink>>> {
        let staging = std::env::temp_dir().join(format!(
            "virtrigaud-pve-conformance-images-{}",
            std::process::id()
        ));
        let sink = PveImageSink::new(&self.provider, "pve1", "local", PveContent::Iso, staging);
        Ok(Some(Arc::new(sink)))
    }

    async fn clone_source(&self, linked: bool) -> Result<VmId> {
        if linked {
            Ok(self.env.control.template("conf-template").await)
        } else {
            self.cooperative_vm().await
        }
    }

    async fn arrange_clone_failure(&self, source: &VmId) -> Result<Option<CloneOptions>> {
        self.env.control.fail_next_clone(source).await;
        Ok(Some(CloneOptions::new(format!(
            "vrconf-halfmade-{}",
            std::process::id()
        ))))
    }

    async fn cleanup(&self, vm: &VmId) {
        use virtrigaud_core::Provider;
        if let Ok(s) = self.provider.power_state(vm).await
            && s.is_active()
        {
            let _ = self.provider.power_off(vm, &Default::default()).await;
        }
        let _: std::result::Result<(), Error> = self.provider.delete(vm, &Default::default()).await;
    }
}
