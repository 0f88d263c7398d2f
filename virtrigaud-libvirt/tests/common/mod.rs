//! Helpers shared by the test-driver test files.
#![allow(dead_code, unreachable_pub, clippy::expect_used)]

use virtrigaud_core::provider::{DiskCreateSpec, VmCreateSpec};
use virtrigaud_core::{Provider, VmId};
use virtrigaud_libvirt::{LibvirtConfig, LibvirtProvider};

/// The directory pool every private instance has.
pub const POOL: &str = "vr-pool";

/// A private test-driver instance (`test:///<tmp>/node.xml`) with one directory pool, so tests
/// run in parallel without sharing state.
pub async fn private() -> (LibvirtProvider, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = dir.path().join("node.xml");
    std::fs::write(
        &node,
        format!(
            "<node><pool type='dir'><name>{POOL}</name><target><path>/vr-pool</path></target></pool></node>"
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
