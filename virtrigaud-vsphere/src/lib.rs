//! # virtrigaud-vsphere
//!
//! The VMware vSphere provider of virtrigaud, speaking the vim25 **SOAP** API that every
//! vCenter and ESXi host (and govmomi's `vcsim`) serves at `/sdk`.
//!
//! ## A short tour
//!
//! * [`VsphereConfig`] holds the endpoint, the credentials (the password is a
//!   [`secrecy::SecretString`], never logged and redacted in `Debug`) and TLS settings:
//!   verification against the system roots by default, [`TlsVerification::CaPem`] to trust
//!   exactly one private CA or a saved self-signed certificate, and the explicit
//!   [`TlsVerification::DangerousAcceptInvalidCerts`] opt-in for lab servers. rustls with
//!   aws-lc-rs is used without installing a process-wide crypto provider.
//! * [`VsphereProvider::connect`] reads the ServiceContent and logs in. The session cookie is
//!   kept privately; a `NotAuthenticated` fault (expired or terminated session) triggers one
//!   re-login and a retry, and a keep-alive (`CurrentTime`) runs in the background.
//! * [`VsphereProvider`] implements [`virtrigaud_core::Provider`], [`virtrigaud_core::Snapshotter`]
//!   and [`virtrigaud_core::Cloner`]. A [`virtrigaud_core::VmId`] is the VM's managed object id
//!   (`vm-57`); find it with [`VsphereProvider::find_vm_by_path`] or
//!   [`VsphereProvider::find_vm_by_name`].
//! * Power: `runtime.powerState` plus `guest.guestState` (`shuttingDown` reads as
//!   [`virtrigaud_core::PowerState::ShuttingDown`]). `watch_power_state` is push-based: a
//!   private PropertyCollector with a filter, read with `WaitForUpdatesEx` long polls. Tasks are
//!   awaited the same way (one read when the task is already done).
//! * Graceful shutdown goes through VMware Tools only: `probe_agent` reads
//!   `guest.toolsRunningStatus`, `request_shutdown(Agent)` sends `ShutdownGuest`. vSphere has no
//!   ACPI-button API, so the ACPI channel is `Unsupported` and declared so in the capabilities.
//!   `power_off` on an off VM is `InvalidState` (vim25 `InvalidPowerState`).
//! * Faults become [`virtrigaud_core::Error`]s in one place; the vim25 fault is kept as the
//!   error's source ([`SoapFault`]) — `ToolsUnavailable` and `InvalidPowerState` are
//!   `InvalidState`, `InvalidLogin` is `Unauthenticated`, `TaskInProgress` is `Conflict`,
//!   `ManagedObjectNotFound` is `NotFound`.
//!
//! ```no_run
//! # async fn demo() -> virtrigaud_core::Result<()> {
//! use std::sync::Arc;
//! use virtrigaud_core::{Provider, ShutdownChannel, ShutdownRequestOptions};
//! use virtrigaud_vsphere::{TlsVerification, VsphereConfig, VsphereProvider};
//!
//! let pem = std::fs::read("/etc/virtrigaud/vcenter-ca.pem").expect("CA");
//! let cfg = VsphereConfig::new("https://vcenter.example.com/sdk", "svc-virtrigaud", "secret")
//!     .with_tls(TlsVerification::CaPem(pem));
//! let provider = Arc::new(VsphereProvider::connect(cfg).await?);
//! let vm = provider.find_vm_by_path("DC0/vm/web-1").await?;
//! println!("{}", provider.power_state(&vm).await?);
//! provider.request_shutdown(&vm, ShutdownChannel::Agent, &ShutdownRequestOptions::default()).await?;
//! # Ok(()) }
//! ```

mod client;
mod config;
mod create;
mod fault;
mod provider;
mod spec;
mod xml;

pub use config::{TlsVerification, VsphereConfig};
pub use fault::SoapFault;
pub(crate) use provider::PROVIDER_TYPE;
pub use provider::{VCPU_PER_CORE, VsphereProvider};
