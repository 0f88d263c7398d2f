//! # virtrigaud-libvirt
//!
//! The libvirt/KVM provider of virtrigaud: one [`LibvirtProvider`] over any libvirt URI
//! (`qemu:///system`, `qemu+ssh://user@host/system`, `test:///default`, …) implementing the core
//! [`Provider`](virtrigaud_core::Provider), [`Snapshotter`](virtrigaud_core::Snapshotter) and
//! [`Cloner`](virtrigaud_core::Cloner) traits. VM ids are libvirt domain names.
//!
//! ## A short tour
//!
//! ```no_run
//! # async fn demo() -> virtrigaud_core::Result<()> {
//! use std::sync::Arc;
//! use virtrigaud_core::{Provider, ShutdownChannel, VmId};
//! use virtrigaud_libvirt::{LibvirtConfig, LibvirtProvider};
//!
//! let provider = LibvirtProvider::connect(
//!     LibvirtConfig::new("qemu:///system").with_storage_pool("default"),
//! )
//! .await?;
//! let vm = VmId::new("web-1");
//! println!("{}", provider.power_state(&vm).await?);
//! // One channel per call; the core shutdown engine decides re-sends and the deadline.
//! provider
//!     .request_shutdown(&vm, ShutdownChannel::Acpi, &Default::default())
//!     .await?;
//! let provider: Arc<dyn Provider> = Arc::new(provider);
//! # let _ = provider; Ok(()) }
//! ```
//!
//! * **Blocking calls off the runtime.** libvirt's API is blocking; every call runs on tokio's
//!   blocking pool behind a semaphore ([`LibvirtConfig::max_concurrency`]). libvirt's default
//!   printing of errors to stderr is switched off; errors are returned, mapped in one place
//!   to the core [`ErrorKind`](virtrigaud_core::ErrorKind)s (no domain → `NotFound`, operation
//!   invalid → `InvalidState`, RPC/system/no connection → retryable `Unavailable`, auth →
//!   `Unauthenticated`, no support → `Unsupported`, agent unresponsive / timeout → `Timeout`).
//!   Every libvirt API call the operations make is counted there too
//!   ([`LibvirtProvider::api_calls`]).
//! * **Capabilities** are computed when the connection opens (and reopens) from the driver, the
//!   event registration and the storage pool, and re-read with
//!   [`LibvirtProvider::refresh_capabilities`]; `snapshotter()` / `cloner()` follow the flags.
//! * **Validation** is core's: [`VmCreateSpec::validate`](virtrigaud_core::VmCreateSpec::validate)
//!   before create makes anything (plus libvirt's own rule: no `/` in a domain name), and
//!   [`ReconfigureRequest::validate_against`](virtrigaud_core::ReconfigureRequest::validate_against)
//!   before reconfigure changes anything (a disk is named by its target, `vda`, or its volume's
//!   file name).
//! * **Event-driven power state.** The provider registers for domain lifecycle and
//!   agent-lifecycle events (libvirt's default event loop runs on a dedicated thread) and
//!   exposes them through [`Provider::watch_power_state`](virtrigaud_core::Provider::watch_power_state);
//!   when registration fails the engine polls. States keep *shutting down*
//!   (`VIR_DOMAIN_SHUTDOWN`), *paused*, *crashed* and *off with a reason* apart.
//! * **Shutdown primitives.** `request_shutdown(Agent)` → `virDomainShutdownFlags(GUEST_AGENT)`,
//!   `request_shutdown(Acpi)` → `ACPI_POWER_BTN`; drivers that refuse mode flags (the test
//!   driver) get a plain `virDomainShutdown`. `power_off` is `destroy`. `repeatable_shutdown_signal`
//!   is declared because an ACPI press sent before the guest's `acpid` runs is lost.
//! * **Identity for the shutdown journal.** [`Provider::instance_id`](virtrigaud_core::Provider::instance_id)
//!   is the connection URI libvirt reports, without `user@` / `user:password@`, without a
//!   fragment and with only the `name`, `socket` and `root` query parameters (so no `keyfile=`);
//!   a URI that names the local daemon (no host, `localhost`, a loopback address) gets `@` and
//!   the host name libvirt reports appended (`qemu:///system@host1`), so the same URI on two
//!   machines gives two identities. The same cleaned URI is what `Debug`, errors and logs show.
//!   [`Provider::incarnation`](virtrigaud_core::Provider::incarnation) is `"<uuid>#<domain id>"`
//!   while the domain is active (libvirt numbers every start anew), `None` while it is off. Two
//!   limits: a reboot *inside* the guest keeps the QEMU process and so the incarnation; and
//!   domain ids are not persisted, so after libvirtd restarts with no domain running (a host
//!   reboot) they may start from 1 again and a later run can repeat an earlier `<uuid>#<id>`
//!   (the journal's lease expiry still bounds such a lease).
//! * **Off reasons.** `Off(Destroyed)` is reported only for a hard stop (`virDomainDestroy`,
//!   libvirt's `VIR_DOMAIN_SHUTOFF_DESTROYED`); a guest that shuts itself down (ACPI, agent, the
//!   test driver's `shutdown`) is `Off(GuestShutdown)`.
//! * **Unreadable states.** `virt` reports a failed `virDomainGetState` as an unknown state; a
//!   fresh lookup by UUID then decides: a domain that is gone is `NotFound`, an unreachable
//!   libvirtd is the lookup's (retryable) error, and a state value this crate does not know
//!   on a domain that is still defined is a retryable `Unavailable`, never `NotFound`.
//! * **Create** generates domain XML from a [`VmCreateSpec`](virtrigaud_core::VmCreateSpec)
//!   with hot-plug headroom ([`DomainTemplate`]), qcow2 volumes in the configured pool, labels
//!   in the domain `<metadata>`, and a cloud-init NoCloud seed (an ISO 9660/Joliet image
//!   labelled `cidata`, built in memory and uploaded as a volume) when user data is given.
//!   **Snapshots** are internal (with memory when running).
//!   **Clones** are linked (qcow2 overlay) or full (volume copy) with a new UUID and MACs;
//!   a **customization** (hostname, static networks matched to the clone's NICs by MAC,
//!   cloud-init user data) becomes the clone's own NoCloud seed (core's
//!   [`NoCloudSeed`](virtrigaud_core::cloudinit::NoCloudSeed), uploaded as
//!   `<clone>-cidata.iso`, on the cdrom that showed the source's seed). A failed clone
//!   undefines what it defined and deletes every volume it made.
//!   **Reconfigure** changes vCPUs/memory live within the maximum, otherwise in the
//!   configuration with `needs_power_cycle`, and grows disks (`blockresize`).
//!   **Images** prepared by core's `ImagePreparer` (downloaded, checksummed, retried,
//!   resumed) become volumes in the pool through [`VolumeImageSink`]; `image_import` is
//!   declared where libvirt can upload volumes (not in the test driver, which has no
//!   `virStorageVolUpload`).
//!   **Placement**: the connection is one host; a placement's datastore picks the storage
//!   pool, and the inventory lists every active pool with the domains whose disks are in it.
//!   **Pre-stop hooks** run inside the guest through the QEMU guest agent
//!   ([`GuestAgentPreStop`]: `guest-exec`, `guest-exec-status`; a non-zero exit is an error
//!   with the start of the program's output), within the budget the shutdown engine gives.
//!
//! ## Layout
//!
//! Top to bottom, with no import loop:
//! - `provider.rs`: [`LibvirtProvider`], its getters, and the `Provider` / `Snapshotter` /
//!   `Cloner` impls as thin delegations;
//! - one file per group of operations: `power.rs` (start, stop, pause, the shutdown and reboot
//!   signals, the agent probe, the incarnation), `create.rs` (create and delete),
//!   `reconfigure.rs`, `describe.rs` (describe, list, per-VM capabilities, inventory),
//!   `snapshot.rs`, `clone.rs`, `image.rs` ([`VolumeImageSink`]), `placement.rs` and
//!   `prestop.rs` ([`GuestAgentPreStop`]);
//! - `domain.rs` (lookup, state, XML of one domain) and `volume.rs` (the pool, qcow2 volumes,
//!   stream uploads);
//! - `connection.rs`: one libvirt connection (`Session`, whose `api` helper counts each call
//!   with core's [`ApiCalls`](virtrigaud_core::layers::ApiCalls) and maps its error) and the
//!   reconnecting handle the clones share (`Connection`: the blocking-pool permits, the
//!   capabilities);
//! - leaves: `error.rs` (`to_core_error`, the one mapping from `virt` errors), `capabilities.rs`,
//!   `events.rs` / `ffi.rs` (domain events and the close callback), `domxml.rs` / `xml.rs`,
//!   `identity.rs`, `iso.rs`, `seed.rs` (NoCloud seed images and their volumes), `config.rs`.
//!
//! ## Licensing
//!
//! This crate is MIT OR Apache-2.0. It depends on the [`virt`](https://crates.io/crates/virt)
//! crate (0.5.0), which is **LGPL-2.1** and links libvirt dynamically; `virt` pins
//! `libc = "=0.2.183"`, which constrains the `libc` version of any workspace using this crate.
//! Building needs libvirt's development files (`libvirt-dev` and `pkg-config` on Debian).
//!
//! ## Known gaps
//!
//! | capability | QEMU (and other drivers with volume upload) | test driver |
//! |---|---|---|
//! | `clone_customization`, `clone_user_data` | yes (with a storage pool) | no: no `virStorageVolUpload`, refused with `Unsupported` |
//! | cloud-init user data on create | yes | refused by the driver, nothing left behind |
//! | disk growth | yes | no (no volume resize) |
//!
//! Cloning from a snapshot returns `Unsupported`. A clone without customization keeps the
//! source's seed cdrom (it reads the source's instance id, and fails to start once the
//! source is deleted with its disks); deleting the clone never deletes the source's seed.
//!
//! ## A restarted libvirtd
//!
//! The provider registers libvirt's close callback: when libvirtd closes the connection (it
//! restarted or a keepalive timed out), every power-state stream ends at once (the engine
//! then reads the state instead) and the next call opens a new connection. Calls made while
//! the daemon is still down fail with a retryable `Unavailable` error. The in-process `test:`
//! driver has no daemon and never reconnects.
#![cfg_attr(docsrs, feature(doc_cfg))]

mod capabilities;
mod clone;
mod config;
mod connection;
mod create;
mod describe;
mod domain;
mod domxml;
mod error;
mod events;
mod ffi;
mod identity;
mod image;
mod iso;
mod metadata;
mod placement;
mod power;
mod prestop;
mod provider;
mod reconfigure;
mod seed;
mod snapshot;
mod volume;
mod xml;

pub use config::{DomainTemplate, KernelBoot, LibvirtConfig};
pub use domxml::AGENT_PORT;
pub use image::VolumeImageSink;
pub use metadata::{DISK_NAMES_NS, METADATA_NS};
pub use prestop::GuestAgentPreStop;
pub use provider::LibvirtProvider;

/// The provider type name, used in errors and metrics.
pub const PROVIDER_TYPE: &str = "libvirt";

/// The provider type name under its earlier name (kept for existing users).
pub const PROVIDER: &str = PROVIDER_TYPE;
