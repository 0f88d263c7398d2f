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
//!   [`virtrigaud_core::PowerState::ShuttingDown`]). `watch_power_state` is push-based and
//!   shared: the provider (and its clones) has ONE PropertyCollector, one filter per watched
//!   VM and ONE `WaitForUpdatesEx` loop that routes each object update to that VM's
//!   subscribers, so the collectors and long polls stay at one whatever the number of
//!   concurrent shutdowns. A VM's filter is created by its first watch (`CreateFilter`; a
//!   long poll already out is cut short with `CancelWaitForUpdates` so the new filter's
//!   current values arrive at once) and destroyed with its last stream
//!   (`DestroyPropertyFilter`); the collector is created by the first watch and destroyed
//!   with the last one. A watch returns once the loop has the VM's current values (its
//!   baseline) and then yields one state per object update after it (a batched off-then-on
//!   reports both); only values the server sent are reported. After a re-login the loop
//!   rebuilds the collector and its filters and reports what changed in the gap; any other
//!   failure of the loop ends every stream with that error (the engine then polls) and the
//!   next watch builds a new collector. A deleted VM ends its streams with `NotFound`.
//!   [`VsphereProvider::method_calls`] counts requests per method (sent, in flight, peak in
//!   flight); [`VsphereProvider::watched_vms`] counts the filters. Tasks are awaited with a
//!   private collector per task (one read first, which settles tasks already done).
//!   `poweredOff` is `Off(Unknown)` whatever stopped the VM (vim25 does not say whether the
//!   guest shut down or the VM was powered off hard), so this provider never reports
//!   `Off(Destroyed)`, and the shutdown engine never takes a guest shutdown for a
//!   platform-forced one.
//! * Identity for the shutdown journal:
//!   [`virtrigaud_core::Provider::instance_id`] is the endpoint's `scheme://host:port` (the port
//!   always written, never user information, path or query), e.g. `https://vc1.example.com:443`.
//!   [`virtrigaud_core::Provider::incarnation`] is `"<config.instanceUuid>#<runtime.bootTime>"`
//!   while the VM is powered on: vSphere sets the boot time at each power-on from off and clears
//!   it at power-off. vcsim fills only `summary.runtime.bootTime` (the same runtime info), which
//!   is read when `runtime.bootTime` is absent; without either the incarnation is `None` (the
//!   engine then relies on lease expiry). A suspended VM has none; a reboot inside the guest
//!   keeps it (the VM is not powered off). vSphere keeps the boot time across suspend and
//!   resume, vcsim sets a new one.
//! * Graceful shutdown goes through VMware Tools only: `probe_agent` reads
//!   `guest.toolsRunningStatus`, `request_shutdown(Agent)` sends `ShutdownGuest`. vSphere has no
//!   ACPI-button API, so the ACPI channel is `Unsupported` and declared so in the capabilities.
//!   `power_off` on an off VM is `InvalidState` (vim25 `InvalidPowerState`).
//! * Pre-stop hooks in the guest: [`GuestOpsPreStop`] is the core's
//!   [`virtrigaud_core::shutdown::GuestExec`] (so a
//!   [`virtrigaud_core::shutdown::PreStopExecutor`]) over the vim25 guest operations, through
//!   VMware Tools, logged in to the guest OS with [`GuestCredentials`] (a user name and a
//!   [`secrecy::SecretString`] password of the guest, never logged, redacted in `Debug` and
//!   scrubbed from errors). `StartProgramInGuest` on the `GuestOperationsManager`'s
//!   `processManager` starts the hook's program; the rest of its argv becomes vSphere's one
//!   `arguments` string, each argument quoted for the POSIX shell Linux guests run it with
//!   (bare when it holds only `A-Z a-z 0-9 @ % + = : , . / _ -`, else single-quoted with `'`
//!   written `'\''`; not Windows command-line rules). `ListProcessesInGuest(pids=[pid])` is
//!   polled until the process has an `endTime`; its `exitCode` is the result. vSphere returns
//!   no program output, so [`virtrigaud_core::shutdown::HookOutput::output`] stays empty.
//!   `InvalidGuestLogin` is `Unauthenticated`, `GuestOperationsUnavailable` / Tools not
//!   running `Unavailable`, a server without guest operations (vcsim) `Unsupported`; the
//!   shutdown engine records a failed hook and shuts the guest down anyway. The
//!   capabilities declare `guest_exec` (with guest credentials, through this executor).
//! * Creating VMs: [`virtrigaud_core::Provider::create`] sends `CreateVM_Task` for an empty
//!   VM (`otherLinux64Guest`): one paravirtual SCSI controller with one disk per
//!   [`virtrigaud_core::DiskCreateSpec`] (thin unless `thick`), one vmxnet3 adapter per
//!   [`virtrigaud_core::NetworkCreateSpec`] (`e1000`/`e1000e` on request; standard networks
//!   and distributed port groups, by name), then `PowerOnVM_Task` when asked. `placement`
//!   names a host (the VM goes to that host and its compute resource's root pool) or a
//!   cluster / compute resource; otherwise the configured default pool or the datacenter's
//!   first compute resource. The datastore is the configured default or the first accessible
//!   one of that host / compute resource with room for the disks
//!   ([`VsphereConfig::with_default_datacenter`], `…_datastore`, `…_folder`,
//!   `…_resource_pool`). The spec is validated before any call (empty or over-long name,
//!   `/ \ %` in the name, 0 vCPU, memory not a positive multiple of 4 MiB, unsafe label
//!   keys → `InvalidSpec`); an unknown host, cluster or network is `NotFound`; a VM of that
//!   name in the target folder is `AlreadyExists` (checked first, since vcsim does not raise
//!   vCenter's `DuplicateName`, which maps to `AlreadyExists` too). If powering on fails
//!   the new VM is deleted again.
//! * Labels live in `config.extraConfig` as `virtrigaud.label.<key>` = value (keys: 1-253
//!   characters of `[A-Za-z0-9._/-]`, alphanumeric at both ends); cloud-init user data as
//!   `guestinfo.userdata` (base64) + `guestinfo.userdata.encoding` = `base64`, which the
//!   cloud-init VMware datasource reads; a clone's user data goes to the same keys (the
//!   clone spec's `config`), its hostname and static networks into a Linux
//!   `CustomizationSpec`. A clone whose task fails after vCenter registered the VM is
//!   deleted again. A linked clone shares the named snapshot's disks, else the source's
//!   current snapshot's, else those of one [`LINKED_CLONE_BASE`] snapshot made by the first
//!   such clone and reused by the rest (it stays on the source while clones may depend on it;
//!   a failed clone removes it when it made it). `describe` and `list_vms` return the labels, and
//!   `list_vms` filters by them (read in the same `RetrievePropertiesEx`; the filter runs
//!   client-side). So the core's VM-set reconciler ([`virtrigaud_core::vmset`]) runs on
//!   vSphere.
//! * Images: [`VsphereImageSink`] is the core's `ImageSink` for `VMImage` preparation
//!   (`image_import` is declared). The preparer's download (an OVA, `spec.vsphere.ovaURL`)
//!   is staged in a local directory and checked against the checksum before anything
//!   reaches vSphere; on commit the OVA's tar entries are read (the `.ovf` descriptor must
//!   be the first entry), the descriptor is checked (one `VirtualSystem`, every disk item
//!   backed by a file in the archive), then `OvfManager.CreateImportSpec` (its `error`s
//!   are `InvalidSpec` naming `ovfDescriptor`; thin disks unless
//!   [`VsphereImageSink::with_thin_provisioned`]`(false)`), `ResourcePool.ImportVApp` into
//!   the image folder, the `HttpNfcLease` uploads (each `fileItem` to the device URL with
//!   its `importKey`, `*` hosts replaced by the SDK host, the session cookie sent to that
//!   host only, `HttpNfcLeaseProgress` while streaming, deadlines on the lease and the
//!   uploads), `HttpNfcLeaseComplete`, the OVA's size and SHA-256 written to the VM's
//!   `extraConfig` (`virtrigaud.image.size`, `virtrigaud.image.sha256`) and
//!   `MarkAsTemplate`. `lookup` finds the template of the image's name directly in the
//!   image folder and returns its moref with the recorded size; a VM of that name that is
//!   not a template is not an image (and `begin` refuses to import over it:
//!   `AlreadyExists`); `remove` destroys the template (missing: `Ok`). A failed import
//!   aborts the lease and destroys the VM that lease created (checked by name), nothing
//!   else. Datastore, folder and resource pool come from the sink's overrides
//!   ([`VsphereImageSink::with_datastore`], `with_folder`, `with_resource_pool`), else the
//!   target's storage (`datastore[/folder]`, the folder under the datacenter's VM folder),
//!   else the provider's defaults, else the datacenter's VM folder and the first accessible
//!   datastore reached by a compute resource; one the server lacks is `NotFound` naming
//!   the field, found before any byte is downloaded.
//! * Faults become [`virtrigaud_core::Error`]s in one place; the vim25 fault is kept as the
//!   error's source ([`SoapFault`]) — `ToolsUnavailable` and `InvalidPowerState` are
//!   `InvalidState`, `InvalidLogin` is `Unauthenticated`, `TaskInProgress` is `Conflict`,
//!   `ManagedObjectNotFound` is `NotFound`.
//!
//! ## Inside
//!
//! Top to bottom, each file using only the ones below it:
//!
//! * `provider.rs`: [`VsphereProvider`] and its trait impls, each a delegation to one
//!   operation file; `guest_ops.rs`: [`GuestOpsPreStop`] (the guest-operation calls and
//!   their fault mapping);
//! * the operations: `power.rs` (state, incarnation, power-on/off, suspend, reset, the Tools
//!   channel), `watch.rs` (the shared power-state watch: one collector, one long-poll
//!   loop), `describe.rs` (`describe`, `list_vms`, `vm_capabilities`), `inventory.rs` (placement inventory, finding VMs),
//!   `reconfigure.rs`, `snapshot.rs`, `clone.rs`, `create.rs` (validation, create with its
//!   rollback, delete) with `placement.rs` (datacenter, compute, datastore and NIC steps),
//!   `image.rs` ([`VsphereImageSink`]) with `image_place.rs` (the image folder, datastore
//!   and pool; finding and destroying templates), `import.rs` (the import steps and their
//!   rollback), `nfc.rs` (the `HttpNfcLease`) and `ovf.rs` (the OVA's tar entries and the
//!   descriptor checks);
//! * shared by them: `vm_api.rs` (VM reads, calls and tasks with the error context),
//!   `spec.rs` (request bodies in XSD order), `guest_spec.rs` (the guest-operation bodies,
//!   the argv quoting, `GuestProcessInfo`), `labels.rs` (labels and user data in
//!   `extraConfig`);
//! * the SOAP plumbing: `task.rs` (run and await tasks), `collector.rs` (property reads,
//!   container views, collectors, filters and `WaitForUpdatesEx` long polls, the per-task
//!   waiter), `client.rs` (the one send point, where requests are counted:
//!   [`VsphereProvider::api_calls`], per method [`VsphereProvider::method_calls`]),
//!   `session.rs` (URL, TLS, cookie, login state);
//! * at the bottom: `types.rs` (`MoRef`, `Props`), `error.rs` ([`SoapFault`] and
//!   `to_core_error`, the one mapping to core errors), `xml.rs`, `datetime.rs`
//!   (`xsd:dateTime` values), `config.rs`.
//!
//! Core's checks run first: [`virtrigaud_core::VmCreateSpec::validate`] before a create,
//! [`virtrigaud_core::ReconfigureRequest::validate`] / `validate_against` before a
//! reconfigure; only vSphere's own rules are checked here.
//!
//! ## What this provider cannot do
//!
//! * **Failure detection** (`ProviderCapabilities::failure_detection` is `false`):
//!   `RerunOnFailure` cannot be honoured on vSphere. vim25 has no crashed power state: a guest
//!   that panicked or hung stays `poweredOn` (this provider then reports it `Running`, never
//!   off), and every stop — a clean shutdown inside the guest, `ShutdownGuest`, a hard
//!   power-off, the VMX process dying — reads as `poweredOff` (`Off(Unknown)`). Nothing else
//!   tells them apart reliably: `guest.guestHeartbeatStatus` goes red or gray just as well
//!   when VMware Tools is stopped, restarted or missing; the event log
//!   (`VmGuestShutdownEvent`, `VmPoweredOffEvent`, HA's `VmDasBeingResetEvent`) says who
//!   asked, not whether the guest failed, is only as complete as vCenter's retention and HA
//!   configuration, and cannot be exercised on vcsim. So no [`virtrigaud_core::OffReason`]
//!   `Crashed` / `Failed` and no `PowerState::Crashed` are ever reported.
//! * Program output of pre-stop hooks (vSphere's guest operations return none) and
//!   terminating a hook cut at its bound (it keeps running in the guest).
//! * ACPI shutdown (no ACPI-button API; the Tools channel only).
//!
//! ## Known gaps
//!
//! * `create` builds empty VMs; `VmCreateSpec::image` is `Unsupported` (clone a template
//!   with the [`virtrigaud_core::Cloner`] instead). No ISO/CD-ROM, no boot order, no
//!   storage-policy or datastore-cluster (Storage DRS) placement, one SCSI controller (at
//!   most 15 disks). A disk's name is sent as its device label: vcsim keeps it, vCenter
//!   is expected to relabel disks `Hard disk N` (not verified here).
//! * The duplicate-name pre-check is not atomic: on vcsim two concurrent creates of one
//!   name can both succeed (vCenter itself refuses the second with `DuplicateName`).
//! * Label keys containing `/` are stored verbatim in extraConfig keys; vcsim accepts them,
//!   real vCenter acceptance of `/` in extraConfig keys is not verified here.
//! * There is no way in the core `Provider` contract to change the labels of an existing VM,
//!   so none is offered; `list_vms` label filters read every VM's extraConfig (no
//!   server-side filter exists in vim25).
//! * Image imports: OVAs only (an `.ovf` with files beside it, a `VirtualSystemCollection`
//!   or files referenced by URL are refused); disks are sent as they are in the archive
//!   (`POST` as stream-optimised VMDK), without decompressing `ovf:compression` files or
//!   joining chunked ones. `ImportVApp` gets no host (vCenter picks one; a cluster without
//!   DRS may need one). An NFC URL naming another host (an ESXi host behind vCenter) is
//!   sent with this provider's TLS settings and without the session cookie; its
//!   `sslThumbprint` is not used. Only vcsim's lease (ready at once, uploads discarded) is
//!   exercised here; vCenter's lease timeouts and its stream-optimised-VMDK checks are not.
//!   `VMImage`'s `thinProvisioned` is not part of the core's `ImageTarget`: set it on the
//!   sink.
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
//!
//! A pre-stop hook run in the guest before it is asked to shut down:
//!
//! ```no_run
//! # async fn demo(p: virtrigaud_vsphere::VsphereProvider) -> virtrigaud_core::Result<()> {
//! use std::sync::Arc;
//! use std::time::Duration;
//! use virtrigaud_core::shutdown::{PreStopHook, ShutdownManager, ShutdownPolicy};
//! use virtrigaud_vsphere::{GuestCredentials, GuestOpsPreStop};
//!
//! let creds = GuestCredentials::new("svc-hooks", std::env::var("GUEST_PASSWORD").unwrap());
//! let manager = ShutdownManager::builder(Arc::new(p.clone()))
//!     .pre_stop_executor(Arc::new(GuestOpsPreStop::new(&p, creds)))
//!     .build();
//! let vm = p.find_vm_by_path("DC0/vm/db-1").await?;
//! let hook = PreStopHook::new(
//!     vec!["/usr/local/bin/drain".into(), "--timeout".into(), "20s".into()],
//!     Duration::from_secs(30),
//! );
//! let report = manager
//!     .shutdown(&vm, ShutdownPolicy::with_grace(Duration::from_secs(120)).pre_stop(hook))
//!     .await?;
//! println!("{}: hook {:?}", report.outcome, report.pre_stop);
//! # Ok(()) }
//! ```

/// Provider type name used in errors and metrics.
pub const PROVIDER_TYPE: &str = "vsphere";

mod client;
mod clone;
mod collector;
mod config;
mod create;
mod datetime;
mod describe;
mod drs;
mod error;
mod from_template;
mod guest_ops;
mod guest_spec;
mod image;
mod image_place;
mod import;
mod inventory;
mod labels;
mod nfc;
mod ovf;
mod placement;
mod power;
mod provider;
mod reconfigure;
mod session;
mod snapshot;
mod spec;
mod task;
mod types;
mod vm_api;
mod watch;
mod xml;

pub use client::MethodCalls;
pub use clone::LINKED_CLONE_BASE;
pub use config::{GuestCredentials, TlsVerification, VsphereConfig};
pub use error::SoapFault;
pub use guest_ops::{GUEST_OPS_POLL_INTERVAL, GuestOpsPreStop};
pub use image::VsphereImageSink;
pub use inventory::VCPU_PER_CORE;
pub use provider::VsphereProvider;
