//! # virtrigaud-proxmox
//!
//! The [Proxmox VE](https://www.proxmox.com/) provider of virtrigaud, over the real PVE REST
//! API (`/api2/json`).
//!
//! A short tour:
//!
//! * [`ProxmoxConfig`] + [`Auth`] + [`Tls`]: where and how to connect. TLS verification is on
//!   by default; [`ProxmoxConfig::with_ca_pem`] trusts a self-signed node's CA;
//!   [`ProxmoxConfig::danger_accept_invalid_certs`] is an explicit, logged opt-out;
//!   [`PveClient::with_http_client`] sends through the embedder's own `reqwest::Client`.
//!   API tokens (`user@realm!id` + secret) or password login with tickets, CSRF and renewal.
//!   Secrets never appear in logs or `Debug` output.
//! * [`PveClient`]: a thin typed client. It sends **form-encoded** bodies (as PVE's own
//!   clients do), unwraps `{"data": …}`, parses numbers leniently and counts its requests
//!   ([`PveClient::api_calls`], [`ProxmoxProvider::api_calls`]). Its answers decode into
//!   the types [`VmStatus`], [`VmConfig`], [`TaskStatus`] and the like.
//! * [`api`]: every call is first built as an [`ApiRequest`] value (method, schema path
//!   template, parameters) that can be inspected without sending it; the test suite validates
//!   all of them ([`catalogue`]) against the PVE API schema.
//! * [`Upid`] and the [`TaskWaiter`] (bounded by a deadline, cancellable with a
//!   `CancellationToken`, the task log in the error when a task fails).
//! * [`ProxmoxProvider`]: the [`virtrigaud_core::Provider`] with snapshots
//!   ([`virtrigaud_core::Snapshotter`]) and clones ([`virtrigaud_core::Cloner`]). VM ids are
//!   `node/vmid`. Its docs explain how the engine's grace period maps onto PVE's
//!   `timeout`/`forceStop`, how a running shutdown is escalated or cancelled (the
//!   `qmshutdown` task is stopped, so its `forceStop` never fires), and how an `Off` after a
//!   request tells a guest shutdown (`GuestShutdown`) from PVE's or someone's kill
//!   (`Destroyed`).
//! * Reads: only `status: stopped` is off; an empty or unknown status is a retryable
//!   `Unavailable`, never off. A listing that would miss a matching VM (its node is offline,
//!   so PVE lists it as `unknown`) is a retryable `Unavailable` too, never a partial answer: a
//!   VM set counting its members from it would create duplicates.
//! * Labels are PVE tags, escaped losslessly (`virtrigaud.io/set=web` is the tag
//!   `vr+virtrigaud.io_2fset-web`), so `describe` and `list_vms` give back exactly the labels
//!   written at create, and listings filter on them. Hand-written tags read as `key-value`.
//! * Create refuses a spec PVE would refuse or that would lose something (no vCPU, under
//!   16 MiB, a disk of 0 GiB, duplicate disk names) with `InvalidSpec` naming the field,
//!   before any call; nothing is clamped.
//! * Identities for the shutdown journal: `instance_id` is the API endpoint
//!   (`https://pve1.example:8006`, no credentials, path or query); `incarnation` is the pid
//!   of the VM's QEMU process (new with every start), `None` while it is stopped.
//! * [`PveImageSink`]: the core's `ImageSink` for image preparation. The core's
//!   `ImagePreparer` downloads and verifies an image into a local staging directory; on
//!   commit the verified file is uploaded to a PVE storage (`POST …/storage/{storage}/upload`,
//!   `multipart/form-data` streamed from the staged file with a known length, through the
//!   [`PveClient`]'s own authentication), the `imgcopy` task is awaited and the volume
//!   (`local:iso/base.iso`) read back from the storage's content. A failed upload or task
//!   deletes what reached the storage; names PVE would rewrite are refused
//!   ([`validate_image_name`]). Content types: [`PveContent`] (`iso`, `vztmpl`, and `import`
//!   for disk images on PVE 8.2+).
//! * [`GuestAgentPreStop`]: the core's `GuestExec` (so a `PreStopExecutor`) for pre-stop
//!   hooks inside the guest, through PVE's agent API: `POST …/agent/exec` with the hook's
//!   argv as the `command` array (no shell added), then `GET …/agent/exec-status?pid=` until
//!   it has exited; its exit code or signal and its output (PVE decodes the agent's base64;
//!   a stream the agent cut is marked) land in the shutdown report. A VM without a running
//!   agent is a retryable `Unavailable`, and the shutdown goes on without the hook:
//!
//!   ```no_run
//!   # fn demo(p: std::sync::Arc<virtrigaud_proxmox::ProxmoxProvider>) {
//!   use std::sync::Arc;
//!   use virtrigaud_core::shutdown::ShutdownManager;
//!   use virtrigaud_proxmox::GuestAgentPreStop;
//!   let manager = ShutdownManager::builder(p.clone())
//!       .pre_stop_executor(Arc::new(GuestAgentPreStop::new(&p)))
//!       .build();
//!   # let _ = manager; }
//!   ```
//! * One mapping from PVE answers ([`ApiError`]) to [`virtrigaud_core::ErrorKind`]s, also
//!   available as `From<ApiError> for virtrigaud_core::Error`.
//!
//! Inside, [`ProxmoxProvider`]'s trait impls are thin: each method calls one operation file
//! (`power`, `shutdown`, `create`, `reconfigure`, `inventory`, `snapshot`, `clone`), which
//! works on the [`PveClient`] through a few shared VM reads and task calls; `image` holds
//! [`PveImageSink`] (with `multipart`, the upload body's framing), `prestop`
//! [`GuestAgentPreStop`] (over the provider's client).
//!
//! ## Capabilities
//!
//! Declared **true**, each exercised against fakepve by the conformance suite and the crate's
//! tests: create, delete, list, inventory, reconfigure (online where PVE hot-plugs: `vcpus`
//! with `cpu` in `hotplug`, memory growth with `memory` and `numa: 1`; otherwise the change
//! waits for a power cycle and says so), online disk growth (PVE's `resize` task; disks named
//! by the create spec's names, kept in a virtrigaud block in the VM's `description`),
//! snapshots with memory, quiesced snapshots (PVE freezes the guest through the agent for a
//! snapshot without RAM; the report says whether it did), full and linked clones (linked from
//! templates), clone customization (hostname as the VM name, `ipconfigN`, `nameserver`, a
//! cloud-init drive), ACPI and agent shutdown, reboot (PVE's `status/reboot` task, through
//! the channel asked for), reset, pause, image import ([`PveImageSink`]: uploads into a
//! storage as `iso`, `vztmpl` or `import`; the tests import `iso` images, the content type
//! fakepve's upload accepts), guest exec (`guest_exec`: [`GuestAgentPreStop`] runs pre-stop
//! hooks through the agent; needs `agent: 1` and qemu-guest-agent in the guest).
//!
//! Per VM ([`virtrigaud_core::Provider::vm_capabilities`]), from its config: CPU hot-add and
//! its maximum (sockets × cores), memory hot-add (its maximum is not in the config: 0),
//! quiesce (agent enabled and `freeze-fs` not off), linked-clone source (a template).
//!
//! Declared **false**, and why:
//!
//! * `clone_user_data`: PVE takes cloud-init user data only as a `cicustom` snippet file on a
//!   storage with the `snippets` content type, and its API has no way to put a file there
//!   (`upload` and `download-url` take `iso`, `vztmpl` and `import`; the schema test checks
//!   this). A clone with user data is refused with `Unsupported` before anything is made.
//! * `power_state_watch`: PVE has no push of power-state changes over its API; the engine
//!   polls `status/current`.
//! * `repeatable_shutdown_signal`: a running `qmshutdown` task holds the VM's config lock, so
//!   a second request would only queue behind it; a request while one runs adopts it.
//! * `failure_detection`: PVE cannot tell a guest that crashed or that the hypervisor failed
//!   to run from one that stopped cleanly, so `RerunOnFailure` cannot be honoured from its
//!   answers. A QEMU process that dies (a crash, the OOM killer, a killed `kvm`) leaves the VM
//!   `stopped` with no task and no reason, exactly as a guest that powers itself off:
//!   `status/current` only has `running`/`stopped`, the task list shows a task only for a
//!   stop or shutdown someone asked for (a `qmstop`/`qmshutdown` absent for both), and
//!   qmeventd, which sees how QEMU ended, writes only to the node's journal. HA's `error`
//!   state covers only HA-managed VMs and says that HA's resource manager failed on one and
//!   gave up (it waits for manual recovery), not how the guest ended; an HA-managed VM that
//!   crashes is simply started again. What the crate does tell: `guest-panicked` and `internal-error` while
//!   QEMU still runs read as [`virtrigaud_core::PowerState::Crashed`]; after our request or
//!   stop, `Off(GuestShutdown)` / `Off(Destroyed)` (see [`ProxmoxProvider`]); a VM that went
//!   off by itself reads `Off(Unknown)`, never a guessed reason.
//!
//! Also `Unsupported` (no capability flag): starting paused, deleting a snapshot with its
//! children, a reboot through ACPI of a VM whose config enables the guest agent (PVE then
//! reboots through the agent and has no ACPI reboot for it), a reboot through the agent of
//! a VM without it. An ACPI shutdown request on a VM with the agent enabled presses the
//! button through the monitor, which has no server-side deadline.
//!
//! ```no_run
//! # async fn demo() -> virtrigaud_core::Result<()> {
//! use std::sync::Arc;
//! use virtrigaud_core::{Provider, VmId};
//! use virtrigaud_proxmox::{Auth, ProxmoxConfig, ProxmoxProvider};
//!
//! let pem = std::fs::read("/etc/pve/pve-root-ca.pem").expect("CA");
//! let cfg = ProxmoxConfig::new("https://pve1.example:8006", Auth::api_token("root@pam!ci", "…"))
//!     .with_ca_pem(pem);
//! let provider: Arc<dyn Provider> = Arc::new(ProxmoxProvider::connect(cfg).await?);
//! println!("{}", provider.power_state(&VmId::new("pve1/101")).await?);
//! # Ok(()) }
//! ```

/// Provider type name used in errors and metrics.
pub const PROVIDER_TYPE: &str = "proxmox";

mod boot_image;
mod client;
mod clone;
mod config;
mod create;
mod customize;
mod disks;
mod error;
mod from_template;
mod hotplug;
mod id;
mod image;
mod inventory;
mod labels;
mod meta;
mod multipart;
mod node;
mod placement;
mod power;
mod prestop;
mod provider;
mod reboot;
mod reconfigure;
mod request;
mod shutdown;
mod snapshot;
mod task;
mod types;
mod vm_api;

pub use client::{ApiError, PveClient};
pub use config::{Auth, ProxmoxConfig, Tls};
pub use id::VmRef;
pub use image::{PveContent, PveImageSink, validate_image_name};
pub use node::NodeCapabilities;
pub use prestop::GuestAgentPreStop;
pub use provider::{ProviderOptions, ProxmoxProvider};
pub use request::{ApiRequest, Method, api, catalogue};
pub use task::{TaskOutcome, TaskWaiter, Upid};
pub use types::{
    AgentExecStatus, ClusterVm, NodeEntry, PendingEntry, SnapshotEntry, TaskListEntry, TaskLogLine,
    TaskStatus, VmConfig, VmStatus,
};
