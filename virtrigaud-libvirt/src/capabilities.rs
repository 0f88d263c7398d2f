//! What the provider declares it can do, from what the connection found (a leaf module).

use virtrigaud_core::ProviderCapabilities;

/// Why no disk of a domain on libvirt driver `driver` can grow, online or offline (`None`:
/// disks can grow).
pub(crate) fn disk_growth_blocker(driver: &str) -> Option<&'static str> {
    (driver == "TEST").then_some(
        "the libvirt test driver implements neither virDomainBlockResize nor virStorageVolResize",
    )
}

/// Why no NoCloud seed can be written on libvirt driver `driver` (`None`: seeds can be
/// uploaded), which is what cloud-init user data on create and clone customization need.
pub(crate) fn seed_upload_blocker(driver: &str) -> Option<&'static str> {
    (driver == "TEST").then_some(
        "the libvirt test driver implements neither virStorageVolUpload nor virStorageVolDownload",
    )
}

/// The capabilities of a provider on libvirt driver `driver` (`QEMU`, `TEST`, …), with or
/// without registered domain events and a configured storage pool.
///
/// Snapshots and clones are declared here only: `snapshotter()` / `cloner()` follow these flags.
pub(crate) fn declared(driver: &str, events: bool, storage_pool: bool) -> ProviderCapabilities {
    let test = driver == "TEST";
    let mut c = ProviderCapabilities::default();
    c.reconfigure_online = true;
    c.disk_expansion_online = disk_growth_blocker(driver).is_none();
    c.snapshots = true;
    c.memory_snapshots = true;
    c.quiesced_snapshots = false;
    c.linked_clones = storage_pool;
    c.full_clones = storage_pool;
    // A clone's customization is its own NoCloud seed, uploaded into the pool.
    c.clone_customization = storage_pool && seed_upload_blocker(driver).is_none();
    c.clone_user_data = c.clone_customization;
    // Prepared images are uploaded into the pool as volumes (`VolumeImageSink`), which
    // needs volume upload: not in the test driver.
    c.image_import = storage_pool && seed_upload_blocker(driver).is_none();
    c.supported_disk_types = &["qcow2"];
    c.supported_network_types = &["virtio", "e1000", "rtl8139"];
    c.acpi_shutdown = true;
    c.agent_shutdown = !test;
    // An ACPI press sent before the guest's acpid runs is lost: re-sending is useful.
    c.repeatable_shutdown_signal = true;
    c.power_state_watch = events;
    c.reset = true;
    c.reboot = true;
    c.pause = true;
    c.create = true;
    c.delete = true;
    c.reconfigure = true;
    c.inventory = true;
    c.list_vms = true;
    // qemu-ga guest-exec (GuestAgentPreStop); the test driver has no guest agent.
    c.guest_exec = !test;
    // Lifecycle events and state reasons say crashed/failed apart from a clean stop.
    c.failure_detection = true;
    c
}
