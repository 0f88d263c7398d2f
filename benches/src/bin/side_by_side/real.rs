//! Comparisons on real QEMU guests under libvirtd (set up by `scripts/libvirt/setup.sh`):
//! off-detection latency, virtrigaud vs 2 s polling vs `libvirt-guests` (the fleet comparison is
//! in `fleet.rs`, on the same [`Lab`]).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use virtrigaud_core::provider::{DeleteOptions, DiskCreateSpec, PowerOffOptions, VmCreateSpec};
use virtrigaud_core::shutdown::{ShutdownManager, ShutdownPolicy};
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

    /// Creates a 1-vCPU, 128 MiB guest of personality `mode` (not started).
    async fn create(&self, n: &str, mode: &str) -> Result<VmId, String> {
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

/// One shutdown measured: total (request → reported off), detection (stop event → reported
/// off), libvirt API calls.
#[derive(Debug, Clone, Default)]
pub(crate) struct Sample {
    pub total: Duration,
    pub detect: Option<Duration>,
    pub calls: Option<u64>,
}

/// Samples of the three methods.
#[derive(Debug, Clone, Default)]
pub(crate) struct Latency {
    pub event: Vec<Sample>,
    pub poll: Vec<Sample>,
    pub guests: Vec<Sample>,
    pub errors: Vec<String>,
}

/// Off-detection latency: `runs` rounds, each stopping three ACPI guests one after the other.
pub(crate) async fn latency(lab: &Lab, runs: usize) -> Result<Latency, String> {
    let names = ["lat-ev", "lat-poll", "lat-lg"];
    let mut vms = Vec::new();
    for n in names {
        vms.push(lab.create(n, "acpi").await?);
    }
    let mut out = Latency::default();
    let res = async {
        for round in 0..runs {
            lab.boot(&vms).await?;
            // Rotate the order so no method always runs first.
            for k in 0..3 {
                let m = (k + round) % 3;
                let vm = &vms[m];
                let t0 = Instant::now();
                match m {
                    0 | 1 => {
                        let (p, policy) = if m == 0 {
                            (&lab.ev, ShutdownPolicy::with_grace(Duration::from_secs(60)))
                        } else {
                            let two = Duration::from_secs(2);
                            (
                                &lab.poll,
                                ShutdownPolicy::with_grace(Duration::from_secs(60))
                                    .polling(two, two),
                            )
                        };
                        let c0 = p.api_calls();
                        let r = ShutdownManager::new(Arc::new(p.clone()) as Arc<dyn Provider>)
                            .shutdown(vm, policy)
                            .await
                            .map_err(|e| e.to_string())?;
                        let done = Instant::now();
                        let calls = p.api_calls() - c0;
                        if !matches!(
                            r.outcome,
                            virtrigaud_core::shutdown::ShutdownOutcome::Graceful { .. }
                        ) {
                            out.errors.push(format!("{vm}: {}", r.outcome));
                        }
                        // The event callback may land a moment after the poll saw Off.
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        let s = Sample {
                            total: done - t0,
                            detect: lab
                                .stop_event_after(vm, t0)
                                .map(|s| done.saturating_duration_since(s)),
                            calls: Some(calls),
                        };
                        if m == 0 {
                            out.event.push(s);
                        } else {
                            out.poll.push(s);
                        }
                    }
                    _ => {
                        let vm2 = vm.clone();
                        let lab_ref = lab;
                        let (start, end, text, _code) =
                            tokio::task::block_in_place(|| lab_ref.libvirt_guests(&[vm2], 0, 60))?;
                        if !matches!(lab.ev.power_state(vm).await, Ok(PowerState::Off(_))) {
                            out.errors
                                .push(format!("libvirt-guests left {vm} on:\n{text}"));
                        }
                        out.guests.push(Sample {
                            total: end - start,
                            detect: lab
                                .stop_event_after(vm, t0)
                                .map(|s| end.saturating_duration_since(s)),
                            calls: None,
                        });
                    }
                }
            }
            eprintln!("  latency round {}/{runs} done", round + 1);
        }
        Ok::<(), String>(())
    }
    .await;
    lab.remove(&vms).await;
    res.map(|()| out)
}
