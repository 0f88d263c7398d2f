//! The real-QEMU backend of `tests/real_qemu.rs`: a provider on the libvirtd that
//! `scripts/libvirt/setup.sh` prepared, and guests booted from its kernel and initramfs.
// Real servers run on real time.
#![allow(clippy::disallowed_methods)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use virtrigaud_core::provider::{DiskCreateSpec, VmCreateSpec};
use virtrigaud_core::testing::{backend_env, missing_prerequisite};
use virtrigaud_core::{AgentStatus, Provider, VmId};
use virtrigaud_libvirt::{DomainTemplate, KernelBoot, LibvirtConfig, LibvirtProvider};

use super::{Guests, Platform};

const BACKEND: &str = "libvirt";

/// The real backend: a provider plus the guest's kernel/initrd and console directory.
pub struct Real {
    pub p: LibvirtProvider,
    pub uri: String,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub console: PathBuf,
    pub domain_type: String,
    pub prefix: String,
    pub pool: String,
    /// The fixtures' own connection to the daemon.
    pub platform: Platform,
}

fn env(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            missing_prerequisite(
                BACKEND,
                &format!(
                    "environment variable {var} is not set (run scripts/libvirt/setup.sh and source its .env)"
                ),
            );
            None
        }
    }
}

pub async fn real(test: &str) -> Option<Real> {
    let uri = backend_env(BACKEND, "VIRTRIGAUD_LIBVIRT_URI")?;
    let kernel = PathBuf::from(env("VIRTRIGAUD_LIBVIRT_KERNEL")?);
    let initrd = PathBuf::from(env("VIRTRIGAUD_LIBVIRT_INITRD")?);
    let console = PathBuf::from(env("VIRTRIGAUD_LIBVIRT_CONSOLE_DIR")?);
    let pool = env("VIRTRIGAUD_LIBVIRT_POOL")?;
    let domain_type =
        std::env::var("VIRTRIGAUD_LIBVIRT_DOMAIN_TYPE").unwrap_or_else(|_| "qemu".into());
    for f in [&kernel, &initrd] {
        if !f.exists() {
            missing_prerequisite(BACKEND, &format!("guest file {} is missing", f.display()));
            return None;
        }
    }
    let p = match LibvirtProvider::connect(
        LibvirtConfig::new(uri.clone()).with_storage_pool(pool.clone()),
    )
    .await
    {
        Ok(p) => p,
        Err(e) => {
            missing_prerequisite(BACKEND, &format!("cannot connect to {uri}: {e}"));
            return None;
        }
    };
    assert!(
        p.events_registered(),
        "domain events must register on {uri}"
    );
    let platform = Platform::open(&uri, &pool);
    Some(Real {
        p,
        uri,
        kernel,
        initrd,
        console,
        domain_type,
        prefix: format!("vrt-{}-{test}", std::process::id()),
        platform,
        pool,
    })
}

impl Real {
    pub fn name(&self, n: &str) -> String {
        format!("{}-{n}", self.prefix)
    }

    pub fn template(&self, mode: &str, agent: bool) -> DomainTemplate {
        let mut t = DomainTemplate::default();
        t.domain_type = self.domain_type.clone();
        t.kernel_boot = Some(KernelBoot::new(
            &self.kernel,
            Some(self.initrd.clone()),
            format!(
                "console=ttyS0 panic=-1 loglevel=4 vr.mode={mode} vr.agent={}",
                u8::from(agent)
            ),
        ));
        t.serial_log = Some(self.console.clone());
        t
    }

    pub fn console_of(&self, name: &str) -> PathBuf {
        self.console.join(format!("{name}.console.log"))
    }

    /// Creates a 1-vCPU (max 2), 128 MiB (max 256) guest with a 1 GiB qcow2 disk.
    pub async fn guest(&self, n: &str, mode: &str, agent: bool, power_on: bool) -> VmId {
        let vm = self.guest_unready(n, mode, agent, power_on).await;
        if power_on {
            self.wait_console(vm.as_str(), "READY", Duration::from_secs(60))
                .await;
        }
        vm
    }

    /// Like [`Real::guest`] without waiting for the guest's READY line.
    pub async fn guest_unready(&self, n: &str, mode: &str, agent: bool, power_on: bool) -> VmId {
        let name = self.name(n);
        let mut spec = VmCreateSpec::new(name, 1, 128);
        spec.disks.push(DiskCreateSpec::new("root", 1));
        spec.power_on = power_on;
        self.create_fresh(&spec, &self.template(mode, agent)).await
    }

    /// Creates `spec` laid out by `tpl` after removing an earlier VM of its name and its
    /// console log.
    pub async fn create_fresh(&self, spec: &VmCreateSpec, tpl: &DomainTemplate) -> VmId {
        self.remove(&VmId::new(spec.name.clone())).await;
        let _ = std::fs::remove_file(self.console_of(&spec.name));
        self.p.create_with(spec, tpl).await.expect("create guest")
    }

    /// A guest with disks `root` and `data` and one user-mode NIC (the daemon's networks
    /// are shared and stay untouched), booted with `cmdline_extra` on its kernel command line
    /// and running (READY) unless `off`.
    pub async fn two_disk_guest(&self, n: &str, cmdline_extra: &str, off: bool) -> VmId {
        let mut tpl = self.template("acpi", false);
        if let Some(kb) = tpl.kernel_boot.as_mut() {
            kb.cmdline.push_str(cmdline_extra);
        }
        let spec = super::two_disk_spec(&self.name(n), None, false);
        let vm = self.create_fresh(&spec, &tpl).await;
        let (uri, name) = (self.uri.clone(), vm.to_string());
        tokio::task::spawn_blocking(move || add_user_nic(&uri, &name))
            .await
            .expect("join");
        if !off {
            self.p.start(&vm, &Default::default()).await.expect("start");
            self.wait_console(vm.as_str(), "READY", Duration::from_secs(60))
                .await;
        }
        vm
    }

    pub async fn wait_console(&self, name: &str, marker: &str, limit: Duration) {
        let path = self.console_of(name);
        let t0 = Instant::now();
        loop {
            if std::fs::read_to_string(&path).is_ok_and(|s| s.contains(marker)) {
                return;
            }
            assert!(
                t0.elapsed() < limit,
                "{name}: no {marker:?} on the console ({}) after {limit:?}",
                path.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn remove(&self, vm: &VmId) {
        super::remove(&self.p, vm).await;
    }

    pub fn dyn_provider(&self) -> Arc<dyn Provider> {
        Arc::new(self.p.clone())
    }
}

/// Redefines domain `name` on `uri` with one more NIC, a user-mode (SLIRP) one.
pub fn add_user_nic(uri: &str, name: &str) {
    virt::error::clear_error_callback();
    let conn = virt::connect::Connect::open(Some(uri)).expect("connect");
    let dom = conn.lookup_domain_by_name(name).expect("domain");
    let xml = dom
        .xml_desc(virt::sys::VIR_DOMAIN_XML_INACTIVE)
        .expect("xml");
    let xml = xml.replacen(
        "</devices>",
        "<interface type='user'><model type='virtio'/></interface></devices>",
        1,
    );
    conn.define_domain_xml(&xml).expect("redefine with a NIC");
}

#[async_trait]
impl Guests for Real {
    fn provider(&self) -> &LibvirtProvider {
        &self.p
    }
    fn platform(&self) -> &Platform {
        &self.platform
    }
    /// Off: the clone checks stop their source anyway.
    async fn clone_source(&self, name: &str) -> VmId {
        self.two_disk_guest(name, "", true).await
    }
    async fn cooperative(&self, name: &str) -> VmId {
        self.guest(name, "acpi", false, true).await
    }
    async fn ignoring(&self, name: &str) -> Option<VmId> {
        Some(self.guest_unready(name, "ignore", false, true).await)
    }
    async fn with_agent(&self, name: &str) -> Option<VmId> {
        let vm = self.guest(name, "acpi", true, true).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while self.p.probe_agent(&vm).await.ok() != Some(AgentStatus::Connected) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{vm}: the guest agent never connected"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Some(vm)
    }
    fn missing(&self) -> VmId {
        VmId::new(self.name("missing"))
    }
}
