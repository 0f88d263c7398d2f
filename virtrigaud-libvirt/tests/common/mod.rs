//! Helpers shared by the test files: private test-driver instances, VM cleanup, the one
//! conformance fixture ([`LibvirtFixture`]) the test-driver and real-QEMU suites both run, and
//! the real-QEMU backend ([`real`]), and the fixtures' own view of the platform ([`platform`]).
#![allow(dead_code, unreachable_pub, clippy::expect_used)]

pub mod platform;
pub mod real;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use virtrigaud_core::conformance::Fixture;
use virtrigaud_core::orchestration::image::ImageSink;
use virtrigaud_core::provider::{
    DeleteOptions, DiskCreateSpec, NetworkCreateSpec, PowerOffOptions, VmCreateSpec,
};
use virtrigaud_core::{CloneOptions, Customization};
use virtrigaud_core::{Provider, VmId};
use virtrigaud_libvirt::{LibvirtConfig, LibvirtProvider, VolumeImageSink};

pub use platform::Platform;

/// The URI of the test driver's shared instance: the one instance a second connection of
/// the same process sees (each `test:///<file>` connection has its own state).
pub const SHARED_TEST: &str = "test:///default";
/// The storage pool of [`SHARED_TEST`].
pub const SHARED_POOL: &str = "default-pool";

/// A provider on [`SHARED_TEST`] and the fixture's own connection to it. Tests sharing it
/// must use names of their own.
pub async fn shared() -> (LibvirtProvider, Platform) {
    let p =
        LibvirtProvider::connect(LibvirtConfig::new(SHARED_TEST).with_storage_pool(SHARED_POOL))
            .await
            .expect("connect to test:///default");
    (p, Platform::open(SHARED_TEST, SHARED_POOL))
}

/// The directory pool every private instance has.
pub const POOL: &str = "vr-pool";
/// The virtual network every private instance has.
pub const NETWORK: &str = "default";

/// A private test-driver instance (`test:///<tmp>/node.xml`) with one directory pool and one
/// network, so tests run in parallel without sharing state.
pub async fn private() -> (LibvirtProvider, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = dir.path().join("node.xml");
    std::fs::write(
        &node,
        format!(
            "<node><pool type='dir'><name>{POOL}</name><target><path>/vr-pool</path></target></pool>\
             <network><name>{NETWORK}</name><bridge name='virbr0'/><forward/>\
             <ip address='192.168.122.1' netmask='255.255.255.0'/></network></node>"
        ),
    )
    .expect("write node xml");
    let uri = format!("test://{}", node.display());
    let p = LibvirtProvider::connect(LibvirtConfig::new(uri).with_storage_pool(POOL))
        .await
        .expect("connect to the private test driver");
    (p, dir)
}

/// A running 1-vCPU, 128 MiB domain with a 1 GiB root disk.
pub async fn running_vm(p: &LibvirtProvider, name: &str) -> VmId {
    let mut spec = VmCreateSpec::new(name, 1, 128);
    spec.disks.push(DiskCreateSpec::new("root", 1));
    spec.power_on = true;
    p.create(&spec).await.expect("create")
}

/// The spec of a fixture VM: 1 vCPU, 128 MiB, disks `root` and `data` (1 GiB each), and one
/// NIC on `network` when given.
pub fn two_disk_spec(name: &str, network: Option<&str>, power_on: bool) -> VmCreateSpec {
    let mut spec = VmCreateSpec::new(name, 1, 128);
    spec.disks.push(DiskCreateSpec::new("root", 1));
    spec.disks.push(DiskCreateSpec::new("data", 1));
    spec.networks.extend(network.map(NetworkCreateSpec::new));
    spec.power_on = power_on;
    spec
}

/// Delete options that remove the VM's disks too.
pub fn with_disks() -> DeleteOptions {
    let mut o = DeleteOptions::default();
    o.delete_disks = true;
    o
}

/// Removes `vm` and its disks, whatever state it is in (best effort: errors are ignored).
pub async fn remove(p: &LibvirtProvider, vm: &VmId) {
    let _ = p.power_off(vm, &PowerOffOptions::default()).await;
    let _ = p.delete(vm, &with_disks()).await;
}

/// How a test file makes guests for [`LibvirtFixture`].
#[async_trait]
pub trait Guests: Send + Sync {
    /// The provider the guests live on.
    fn provider(&self) -> &LibvirtProvider;
    /// The fixture's own connection to the platform the provider is on.
    fn platform(&self) -> &Platform;
    /// A fresh, running guest derived from `name` that honours shutdown requests.
    async fn cooperative(&self, name: &str) -> VmId;
    /// A fresh, running guest derived from `name` that ignores them, if the backend has one.
    async fn ignoring(&self, name: &str) -> Option<VmId> {
        let _ = name;
        None
    }
    /// A fresh, running guest derived from `name` whose guest agent is connected (it runs
    /// pre-stop hooks), if the backend has one.
    async fn with_agent(&self, name: &str) -> Option<VmId> {
        let _ = name;
        None
    }
    /// A fresh VM derived from `name` to clone from: disks `root` and `data` (`vda`, `vdb`)
    /// and one NIC, off or running.
    async fn clone_source(&self, name: &str) -> VmId;
    /// An id that names no VM.
    fn missing(&self) -> VmId;
}

/// The conformance fixture of a libvirt backend: guests from `G`, numbered so that no two
/// checks share one (`c0`, `c1`, … and `i0`, …), removed with their disks after each check.
pub struct LibvirtFixture<G> {
    /// Where the guests come from.
    pub guests: G,
    n: AtomicU32,
    graceful: Duration,
    short: Duration,
    /// Volumes put in the way of a clone of a source, removed with the source.
    blockers: Mutex<Vec<(VmId, String, String)>>,
}

impl<G: Guests> LibvirtFixture<G> {
    /// A fixture whose cooperative guests stop within `graceful`, with the suite's default
    /// short grace (2 s).
    pub fn new(guests: G, graceful: Duration) -> Self {
        LibvirtFixture {
            guests,
            n: AtomicU32::new(0),
            graceful,
            short: Duration::from_secs(2),
            blockers: Mutex::new(Vec::new()),
        }
    }

    /// Sets the short grace of the forced-at-deadline checks.
    pub fn with_short_grace(mut self, short: Duration) -> Self {
        self.short = short;
        self
    }

    fn next(&self) -> u32 {
        self.n.fetch_add(1, Ordering::SeqCst)
    }
}

#[async_trait]
impl<G: Guests> Fixture for LibvirtFixture<G> {
    async fn cooperative_vm(&self) -> virtrigaud_core::Result<VmId> {
        let name = format!("c{}", self.next());
        Ok(self.guests.cooperative(&name).await)
    }
    async fn ignoring_vm(&self) -> virtrigaud_core::Result<Option<VmId>> {
        let name = format!("i{}", self.next());
        Ok(self.guests.ignoring(&name).await)
    }
    fn missing_vm(&self) -> VmId {
        self.guests.missing()
    }
    fn graceful_grace(&self) -> Duration {
        self.graceful
    }
    fn short_grace(&self) -> Duration {
        self.short
    }
    async fn cleanup(&self, vm: &VmId) {
        remove(self.guests.provider(), vm).await;
        let mine: Vec<(VmId, String, String)> = {
            let mut all = self.blockers.lock().expect("blockers");
            let (mine, rest) = all.drain(..).partition(|(source, _, _)| source == vm);
            *all = rest;
            mine
        };
        let platform = self.guests.platform();
        for (_, target, blocker) in mine {
            platform.delete_volume(&blocker);
            // A failed clone leaves none of its volumes; say so loudly if one did.
            let left = platform
                .volumes(&format!("{target}-"))
                .expect("list the pool's volumes");
            for v in &left {
                eprintln!("LEAK: the failed clone {target} left volume {v}");
                platform.delete_volume(v);
            }
        }
    }

    /// The clone's seed as libvirt stores it: the volume on its cdrom, downloaded and read
    /// as ISO 9660 and NoCloud.
    async fn applied_customization(
        &self,
        vm: &VmId,
    ) -> virtrigaud_core::Result<Option<Customization>> {
        self.guests
            .platform()
            .seed_customization(vm.as_str())
            .map(Some)
    }

    /// Prepared images become volumes in the provider's pool, staged in a temporary
    /// directory of this test process.
    async fn image_sink(&self) -> virtrigaud_core::Result<Option<Arc<dyn ImageSink>>> {
        let staging = std::env::temp_dir().join(format!(
            "virtrigaud-conformance-images-{}",
            std::process::id()
        ));
        let sink = VolumeImageSink::new(self.guests.provider().clone(), staging);
        Ok(Some(Arc::new(sink)))
    }

    /// Hooks run through qemu-ga's guest-exec where the backend has guests with an agent.
    async fn pre_stop_executor(
        &self,
    ) -> virtrigaud_core::Result<Option<Arc<dyn virtrigaud_core::shutdown::PreStopExecutor>>> {
        let p = self.guests.provider();
        Ok(p.capabilities()
            .guest_exec
            .then(|| Arc::new(virtrigaud_libvirt::GuestAgentPreStop::new(p)) as _))
    }

    async fn pre_stop_vm(&self) -> virtrigaud_core::Result<VmId> {
        let name = format!("h{}", self.next());
        match self.guests.with_agent(&name).await {
            Some(vm) => Ok(vm),
            None => self.cooperative_vm().await,
        }
    }

    async fn clone_source(&self, _linked: bool) -> virtrigaud_core::Result<VmId> {
        let name = format!("s{}", self.next());
        Ok(self.guests.clone_source(&name).await)
    }

    /// A volume named like the clone's copy of the source's second disk
    /// (`<target>-vdb.qcow2`) is put in the pool: the clone copies the first disk, then
    /// libvirt refuses the second (the volume exists), so the clone must undo the first.
    async fn arrange_clone_failure(
        &self,
        source: &VmId,
    ) -> virtrigaud_core::Result<Option<CloneOptions>> {
        let platform = self.guests.platform();
        let disks = platform.disk_targets(source.as_str())?;
        let Some(second) = disks.get(1) else {
            return Err(virtrigaud_core::Error::internal(format!(
                "the clone source {source} has fewer than two disks: {disks:?}"
            )));
        };
        let target = format!("{source}-fail");
        let blocker = format!("{target}-{second}.qcow2");
        platform.delete_volume(&blocker);
        platform.create_volume(&blocker)?;
        self.blockers
            .lock()
            .expect("blockers")
            .push((source.clone(), target.clone(), blocker));
        Ok(Some(CloneOptions::new(target)))
    }
}
