//! Proxmox (fakepve): the launcher's control API creates a guest with `shutdown_secs: T`.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use virtrigaud_core::{ShutdownChannel, VmId};

use super::backend::{Backend, BoxFut, Instance, var};
use super::types::{Count, Res};

/// The fakepve backend.
pub(crate) struct Pve {
    url: String,
    token_id: String,
    secret: String,
    ca: Vec<u8>,
    control: String,
    control_token: String,
    http: reqwest::Client,
}

impl Pve {
    /// From the environment of `scripts/proxmox/setup.sh`.
    pub(crate) fn from_env() -> Res<Pve> {
        let ca_file = var("VIRTRIGAUD_PROXMOX_CA")?;
        Ok(Pve {
            url: var("VIRTRIGAUD_PROXMOX_URL")?,
            token_id: var("VIRTRIGAUD_PROXMOX_TOKEN_ID")?,
            secret: var("VIRTRIGAUD_PROXMOX_TOKEN_SECRET")?,
            ca: std::fs::read(&ca_file).map_err(|e| format!("read {ca_file}: {e}"))?,
            control: var("VIRTRIGAUD_PROXMOX_CONTROL_URL")?,
            control_token: var("VIRTRIGAUD_PROXMOX_CONTROL_TOKEN")?,
            http: reqwest::Client::new(),
        })
    }
}

impl Backend for Pve {
    fn name(&self) -> &'static str {
        "Proxmox"
    }
    fn channel(&self) -> ShutdownChannel {
        ShutdownChannel::Acpi
    }
    fn slots(&self) -> Option<usize> {
        None
    }
    fn instance(&self) -> BoxFut<'_, Res<Instance>> {
        Box::pin(async move {
            use virtrigaud_proxmox::{Auth, ProxmoxConfig, ProxmoxProvider, PveClient};
            let cfg = ProxmoxConfig::new(&self.url, Auth::api_token(&self.token_id, &self.secret))
                .with_ca_pem(self.ca.clone());
            let client = PveClient::new(cfg).map_err(|e| format!("Proxmox client: {e}"))?;
            let p = Arc::new(ProxmoxProvider::new(client));
            let c = Arc::clone(&p);
            Ok(Instance {
                provider: p,
                count: Box::new(move || Count {
                    requests: c.api_calls(),
                    ..Count::default()
                }),
            })
        })
    }
    fn guest(&self, _slot: usize, tag: &str, t: Duration) -> BoxFut<'_, Res<VmId>> {
        let name = format!("sbs-calls-{tag}-{}s", t.as_secs());
        Box::pin(async move {
            let body = json!({
                "name": name, "status": "running", "shutdown_secs": t.as_secs(),
                "config": {"cores": 1, "memory": 512, "scsi0": "local-lvm:vm-1-disk-0,size=8G"},
            });
            let resp = self
                .http
                .post(format!("{}/vm", self.control))
                .header("X-Control-Token", &self.control_token)
                .json(&body)
                .send()
                .await
                .map_err(|e| format!("fakepve control: {e}"))?;
            let status = resp.status();
            let v: serde_json::Value = resp
                .json()
                .await
                .map_err(|e| format!("fakepve control: {e}"))?;
            if !status.is_success() {
                return Err(format!("fakepve control POST /vm: {status} {v}"));
            }
            Ok(VmId::new(format!(
                "{}/{}",
                v["node"].as_str().unwrap_or("pve1"),
                v["vmid"]
            )))
        })
    }
    fn release<'a>(&'a self, vm: &'a VmId) -> BoxFut<'a, ()> {
        Box::pin(async move {
            if let Ok(inst) = self.instance().await {
                let p = &inst.provider;
                if p.power_state(vm).await.is_ok_and(|s| s.is_active()) {
                    let _ = p.power_off(vm, &Default::default()).await;
                }
                let _ = p.delete(vm, &Default::default()).await;
            }
        })
    }
}
