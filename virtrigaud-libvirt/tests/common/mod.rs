//! Helpers shared by the test files: private test-driver instances, VM cleanup, the one
//! conformance fixture ([`LibvirtFixture`]) the test-driver and real-QEMU suites both run, and
//! the real-QEMU backend ([`real`]).
#![allow(dead_code, unreachable_pub, clippy::expect_used)]

pub mod real;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use virtrigaud_core::conformance::Fixture;
use virtrigaud_core::provider::{
    DeleteOptions, DiskCreateSpec, NetworkCreateSpec, PowerOffOptions, VmCreateSpec,
};
use virtrigaud_core::{Provider, VmId};
use virtrigaud_libvirt::{LibvirtConfig, LibvirtProvider};

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
    /// A fresh, running guest derived from `name` that honours shutdown requests.
    async fn cooperative(&self, name: &str) -> VmId;
    /// A fresh, running guest derived from `name` that ignores them, if the backend has one.
    async fn ignoring(&self, name: &str) -> Option<VmId> {
        let _ = name;
        None
    }
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
    }
}
