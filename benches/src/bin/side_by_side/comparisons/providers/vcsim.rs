//! vSphere (vcsim): the project's vcsim main (`scripts/vsphere/vcsim-main/main.go`) has a per-VM
//! `POST /virtrigaud/guest-shutdown-delay?vm=..&ms=..` knob (`ShutdownGuest` is delivered at
//! once, the VM powers off T later). vcsim has only seven model VMs no test uses, so the engine
//! stops run first and the polling loops after them on the same VMs.

use std::sync::Arc;
use std::time::Duration;

use virtrigaud_core::{Provider, ShutdownChannel, StartOptions, VmId};

use super::backend::{Backend, BoxFut, Instance, var};
use super::types::{Count, Res};

/// The unused vcsim model VMs (the vcsim tests use DC0_H0_VM0-7 and DC0_C0_RP0_VM0-8).
const VCSIM_VMS: &[&str] = &[
    "DC0_H0_VM8",
    "DC0_H0_VM9",
    "DC0_H0_VM10",
    "DC0_H0_VM11",
    "DC0_C0_RP0_VM9",
    "DC0_C0_RP0_VM10",
    "DC0_C0_RP0_VM11",
];

/// The vcsim backend.
pub(crate) struct Vcsim {
    cfg: virtrigaud_vsphere::VsphereConfig,
    knob: String,
    http: reqwest::Client,
}

impl Vcsim {
    /// From the environment of `scripts/vsphere/setup.sh`.
    pub(crate) fn from_env() -> Res<Vcsim> {
        use virtrigaud_vsphere::{TlsVerification, VsphereConfig};
        let url = var("VIRTRIGAUD_VSPHERE_URL")?;
        let mut http = reqwest::Client::builder();
        let tls = match std::env::var("VIRTRIGAUD_VSPHERE_CA_FILE") {
            Ok(f) if !f.is_empty() => {
                let pem = std::fs::read(&f).map_err(|e| format!("read {f}: {e}"))?;
                let certs = reqwest::Certificate::from_pem_bundle(&pem)
                    .map_err(|e| format!("CA {f}: {e}"))?;
                http = http.tls_certs_only(certs);
                TlsVerification::CaPem(pem)
            }
            _ if std::env::var("VIRTRIGAUD_VSPHERE_INSECURE").is_ok_and(|v| v == "1") => {
                http = http.tls_danger_accept_invalid_certs(true);
                TlsVerification::DangerousAcceptInvalidCerts
            }
            _ => TlsVerification::System,
        };
        let cfg = VsphereConfig::new(
            url.clone(),
            var("VIRTRIGAUD_VSPHERE_USER")?,
            var("VIRTRIGAUD_VSPHERE_PASSWORD")?,
        )
        .with_tls(tls)
        .with_keepalive(None);
        let base = url.trim_end_matches('/').trim_end_matches("/sdk");
        Ok(Vcsim {
            cfg,
            knob: format!("{base}/virtrigaud/guest-shutdown-delay"),
            http: http.build().map_err(|e| format!("HTTP client: {e}"))?,
        })
    }

    /// Sets the guest shutdown delay of `vm` (the knob).
    pub(crate) async fn set_delay(&self, vm: &VmId, ms: u128) -> Res<()> {
        let resp = self
            .http
            .post(format!("{}?vm={}&ms={ms}", self.knob, vm.as_str()))
            .send()
            .await
            .map_err(|e| format!("vcsim delay knob: {e}"))?;
        let status = resp.status();
        if status.is_success() {
            // An older vcsim may answer an unknown path with something else: insist on the knob's reply.
            let body = resp.text().await.unwrap_or_default();
            if body.contains("\"ms\":") {
                return Ok(());
            }
            return Err(format!(
                "vcsim delay knob answered {body:?}: re-run scripts/vsphere/setup.sh"
            ));
        }
        if status == reqwest::StatusCode::NOT_FOUND
            || status == reqwest::StatusCode::METHOD_NOT_ALLOWED
        {
            let body = resp.text().await.unwrap_or_default();
            if !body.contains("no such VirtualMachine") {
                return Err(
                    "vcsim has no guest-shutdown-delay knob (started from an older \
                            scripts/vsphere/vcsim-main/main.go?): re-run scripts/vsphere/setup.sh"
                        .into(),
                );
            }
            return Err(format!("vcsim delay knob: {body}"));
        }
        Err(format!("vcsim delay knob: HTTP {status}"))
    }

    async fn provider(&self) -> Res<virtrigaud_vsphere::VsphereProvider> {
        virtrigaud_vsphere::VsphereProvider::connect(self.cfg.clone())
            .await
            .map_err(|e| format!("vSphere connect: {e}"))
    }
}

impl Backend for Vcsim {
    fn name(&self) -> &'static str {
        "vSphere"
    }
    fn channel(&self) -> ShutdownChannel {
        ShutdownChannel::Agent
    }
    fn slots(&self) -> Option<usize> {
        Some(VCSIM_VMS.len())
    }
    fn instance(&self) -> BoxFut<'_, Res<Instance>> {
        Box::pin(async move {
            let p = self.provider().await?;
            let c = p.clone();
            Ok(Instance {
                provider: Arc::new(p),
                count: Box::new(move || Count {
                    requests: c.api_calls(),
                    ..Count::default()
                }),
            })
        })
    }
    fn guest(&self, slot: usize, _tag: &str, t: Duration) -> BoxFut<'_, Res<VmId>> {
        Box::pin(async move {
            let name = VCSIM_VMS
                .get(slot)
                .ok_or_else(|| format!("vcsim: no free model VM for slot {slot}"))?;
            let p = self.provider().await?;
            let vm = p
                .find_vm_by_name(name)
                .await
                .map_err(|e| format!("vcsim: find {name}: {e}"))?;
            if p.power_state(&vm).await.is_ok_and(|s| s.is_off()) {
                p.start(&vm, &StartOptions::default())
                    .await
                    .map_err(|e| format!("vcsim: start {name}: {e}"))?;
            }
            self.set_delay(&vm, t.as_millis()).await?;
            let _ = p.logout().await;
            Ok(vm)
        })
    }
    fn release<'a>(&'a self, vm: &'a VmId) -> BoxFut<'a, ()> {
        Box::pin(async move {
            let _ = self.set_delay(vm, 0).await;
            if let Ok(p) = self.provider().await {
                if p.power_state(vm).await.is_ok_and(|s| s.is_off()) {
                    let _ = p.start(vm, &StartOptions::default()).await;
                }
                let _ = p.logout().await;
            }
        })
    }
}
