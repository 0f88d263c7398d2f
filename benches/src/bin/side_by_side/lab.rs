//! The real backend of comparisons 1 and 2: QEMU guests under libvirtd (set up by
//! `scripts/libvirt/setup.sh`), an event-driven and a polling-only libvirt provider on them, and
//! Debian's `libvirt-guests.sh` run against them.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use virtrigaud_core::provider::{DeleteOptions, DiskCreateSpec, PowerOffOptions, VmCreateSpec};
use virtrigaud_core::{PowerState, Provider, StartOptions, VmId};
use virtrigaud_libvirt::{DomainTemplate, KernelBoot, LibvirtConfig, LibvirtProvider};

/// The real backend: an event-driven provider, a polling-only one, the guest files.
pub(crate) struct Lab {
    ev: LibvirtProvider,
    poll: LibvirtProvider,
    uri: String,
    kernel: PathBuf,
    initrd: PathBuf,
    console: PathBuf,
    domain_type: String,
    prefix: String,
    helper: PathBuf,
}

fn var(name: &str) -> Result<String, String> {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .ok_or_else(|| format!("{name} is not set (run scripts/libvirt/setup.sh, source its .env)"))
}

impl Lab {
    pub(crate) async fn connect() -> Result<Lab, String> {
        let uri = var("VIRTRIGAUD_LIBVIRT_URI")?;
        let pool = var("VIRTRIGAUD_LIBVIRT_POOL")?;
        let cfg = LibvirtConfig::new(uri.clone()).with_storage_pool(pool);
        let ev = LibvirtProvider::connect(cfg.clone())
            .await
            .map_err(|e| format!("connect {uri}: {e}"))?;
        if !ev.events_registered() {
            return Err(format!("domain events did not register on {uri}"));
        }
        let poll = LibvirtProvider::connect(cfg.with_events(false))
            .await
            .map_err(|e| format!("connect {uri}: {e}"))?;
        let helper = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../scripts/bench/libvirt-guests-run.sh");
        Ok(Lab {
            ev,
            poll,
            uri,
            kernel: var("VIRTRIGAUD_LIBVIRT_KERNEL")?.into(),
            initrd: var("VIRTRIGAUD_LIBVIRT_INITRD")?.into(),
            console: var("VIRTRIGAUD_LIBVIRT_CONSOLE_DIR")?.into(),
            domain_type: std::env::var("VIRTRIGAUD_LIBVIRT_DOMAIN_TYPE")
                .unwrap_or_else(|_| "qemu".into()),
            prefix: format!("vrbench-{}", std::process::id()),
            helper,
        })
    }

    fn console_of(&self, vm: &VmId) -> PathBuf {
        self.console.join(format!("{vm}.console.log"))
    }

    /// The guest's console output so far (empty when unreadable).
    pub(crate) fn console_text(&self, vm: &VmId) -> String {
        std::fs::read_to_string(self.console_of(vm)).unwrap_or_default()
    }

    fn ready(&self, vm: &VmId) -> bool {
        std::fs::read_to_string(self.console_of(vm)).is_ok_and(|s| s.contains("READY"))
    }

    /// The event-driven libvirt provider.
    pub(crate) fn provider(&self) -> &LibvirtProvider {
        &self.ev
    }

    /// The libvirt provider with domain events off (state reads only).
    pub(crate) fn polling_provider(&self) -> &LibvirtProvider {
        &self.poll
    }

    /// Creates a 1-vCPU, 128 MiB guest of personality `mode` (not started).
    pub(crate) async fn create(&self, n: &str, mode: &str) -> Result<VmId, String> {
        self.create_cmdline(n, &format!("vr.mode={mode}")).await
    }

    /// Creates a 1-vCPU, 128 MiB guest (not started) whose personality is `personality`
    /// (kernel command-line words, e.g. `vr.mode=acpi vr.delay=2`).
    pub(crate) async fn create_cmdline(&self, n: &str, personality: &str) -> Result<VmId, String> {
        let name = format!("{}-{n}", self.prefix);
        let _ = std::fs::remove_file(self.console.join(format!("{name}.console.log")));
        let mut t = DomainTemplate::default();
        t.domain_type = self.domain_type.clone();
        t.kernel_boot = Some(KernelBoot::new(
            &self.kernel,
            Some(self.initrd.clone()),
            format!("console=ttyS0 panic=-1 loglevel=4 {personality} vr.agent=0"),
        ));
        t.serial_log = Some(self.console.clone());
        let mut spec = VmCreateSpec::new(name, 1, 128);
        spec.disks.push(DiskCreateSpec::new("root", 1));
        spec.power_on = false;
        self.ev
            .create_with(&spec, &t)
            .await
            .map_err(|e| format!("create guest: {e}"))
    }

    /// Starts every guest that is not running (its console log removed first: QEMU truncates
    /// it on start anyway) and waits until each printed its READY line.
    pub(crate) async fn boot(&self, vms: &[VmId]) -> Result<(), String> {
        for vm in vms {
            let st = self.ev.power_state(vm).await.map_err(|e| e.to_string())?;
            if matches!(st, PowerState::Running) && self.ready(vm) {
                continue;
            }
            if !matches!(st, PowerState::Off(_)) {
                let _ = self.ev.power_off(vm, &PowerOffOptions::default()).await;
            }
            let _ = std::fs::remove_file(self.console_of(vm));
            self.ev
                .start(vm, &StartOptions::default())
                .await
                .map_err(|e| format!("start {vm}: {e}"))?;
        }
        let t0 = Instant::now();
        for vm in vms {
            while !self.ready(vm) {
                if t0.elapsed() > Duration::from_secs(180) {
                    return Err(format!("{vm}: not READY after 180 s"));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        // Let acpid settle after READY (its button device is opened just before).
        tokio::time::sleep(Duration::from_millis(500)).await;
        Ok(())
    }

    pub(crate) async fn remove(&self, vms: &[VmId]) {
        for vm in vms {
            let _ = self.ev.power_off(vm, &PowerOffOptions::default()).await;
            let mut o = DeleteOptions::default();
            o.delete_disks = true;
            let _ = self.ev.delete(vm, &o).await;
            let _ = std::fs::remove_file(self.console_of(vm));
        }
    }

    pub(crate) fn stop_event_after(&self, vm: &VmId, t0: Instant) -> Option<Instant> {
        self.ev.last_stop_event(vm).filter(|s| *s >= t0)
    }

    /// Runs Debian's `libvirt-guests.sh stop` restricted to `vms` (helper script); returns
    /// (time of the first "Starting shutdown" line, exit time, its output).
    pub(crate) fn libvirt_guests(
        &self,
        vms: &[VmId],
        parallel: usize,
        timeout_s: u64,
    ) -> Result<(Instant, Instant, String, i32), String> {
        let names: Vec<String> = vms.iter().map(|v| v.to_string()).collect();
        let mut child = Command::new("bash")
            .arg(&self.helper)
            .args(&names)
            .env("VR_URI", &self.uri)
            .env("VR_PARALLEL", parallel.to_string())
            .env("VR_TIMEOUT", timeout_s.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("run {}: {e}", self.helper.display()))?;
        let out = child.stdout.take().expect("stdout");
        let mut first = None;
        let mut text = String::new();
        for line in BufReader::new(out).lines() {
            let line = line.map_err(|e| e.to_string())?;
            if first.is_none() && line.contains("Starting shutdown") {
                first = Some(Instant::now());
            }
            text.push_str(&line);
            text.push('\n');
        }
        let status = child.wait().map_err(|e| e.to_string())?;
        let end = Instant::now();
        // libvirt-guests exits 1 when its SHUTDOWN_TIMEOUT expires in parallel mode: a result,
        // not a harness failure (a harness failure never gets to "Starting shutdown").
        let code = status.code().unwrap_or(-1);
        let first = first.ok_or(format!(
            "libvirt-guests helper failed ({status}), no shutdown started:\n{text}"
        ))?;
        Ok((first, end, text, code))
    }
}
