//! # virtrigaud-kubevirt
//!
//! The KubeVirt provider of virtrigaud, on [kube](https://docs.rs/kube) 5.
//!
//! ## A short tour
//! - [`KubeVirtProvider`] implements [`virtrigaud_core::Provider`] (plus [`virtrigaud_core::Snapshotter`]
//!   and [`virtrigaud_core::Cloner`]). VM ids are `namespace/name`.
//! - Power goes through [`PowerApi::Subresources`] (KubeVirt's `subresources.kubevirt.io` start /
//!   stop / restart / softreboot / pause / unpause / reset, what `virtctl` uses) or
//!   [`PowerApi::RunStrategy`] (the same rules applied directly to `spec.runStrategy`,
//!   `status.stateChangeRequests` and the VMI's grace period — see [`power`](crate::StopOutcome)).
//! - The power state combines the VM's `printableStatus` and the VMI's `phase` conservatively
//!   ([`state`] has the table); [`virtrigaud_core::Provider::watch_power_state`] pushes changes
//!   from the namespace's shared watches, and every wait is watch-based.
//! - Shared watches (fleet scale): one VM watch and one VMI watch per namespace, opened by the
//!   first power-state stream or wait of that namespace and closed with the last, fan out to
//!   every subscriber, so the watches open stay constant in the number of concurrent stops. A
//!   subscriber is anchored to its own baseline read (the VM's and VMI's `resourceVersion`)
//!   and hears nothing until the watch has caught up with it, so a lagging watch never pushes
//!   an older state (nor `Off` early); then it gets the deduplicated derived states, and
//!   `NotFound` when the VM is deleted. While a stream of a VM is open and caught up,
//!   [`virtrigaud_core::Provider::power_state`] answers states other than `Off` from the watch
//!   (`Off` is always read from the wire: the engine confirms a pushed `Off` with that read)
//!   and `request_shutdown` with [`PowerApi::RunStrategy`] plans from it (its JSON patches'
//!   `test` operations turn a stale view into a conflict, answered by re-reading). A graceful
//!   stop then sends 6 requests; [`KubeVirtProvider::api_stats`] counts the watch streams
//!   opened and open ([`ApiStatsSnapshot::peak_open_watches`]).
//! - Grace periods follow KubeVirt: the engine's one grace period becomes the stop's `gracePeriod`
//!   (the VMI's `terminationGracePeriodSeconds`), KubeVirt forces the guest off when it expires,
//!   a grace in flight is only ever shortened (the shorter of racing stops wins), and
//!   `power_off` is a stop with grace 0.
//! - A VM reads `Off` only when nothing will start an instance again: during a restart window
//!   (`runStrategy: Always` without an instance, `RerunOnFailure` after a failure, a pending
//!   `Start` request) it reads `Starting` ([`state::will_start`]). A stop that KubeVirt ended by
//!   force (virt-handler marks the VMI `Failed` when the grace expires) reads
//!   `Off(OffReason::Destroyed)` while the final VMI exists; a guest that shut down reads
//!   `Off(GuestShutdown)`, never `Destroyed`.
//! - Shutdown-engine identities: [`virtrigaud_core::Provider::instance_id`] is the API server
//!   without credentials plus the namespace, `https://10.0.0.1:6443/ns/prod`
//!   ([`KubeVirtProvider::instance_identity`]); [`virtrigaud_core::Provider::incarnation`] is
//!   the VMI's UID (a new VMI for every run; `None` without a non-final VMI).
//! - [`virtrigaud_core::Provider::cancel_shutdown`] undoes the stop `request_shutdown` sent
//!   (the run strategy it had, our `Stop` request, the VMI's grace) as long as virt-controller
//!   has not begun deleting the instance; after that KubeVirt cannot take the stop back and it
//!   fails with `InvalidState`.
//! - Seed 004's lifecycle action is core's [`virtrigaud_core::model::LifecycleAction`], applied
//!   by [`virtrigaud_core::orchestration::Orchestrator::apply_action`] (or
//!   [`virtrigaud_core::reconcile::LifecycleReconciler`] for an object's
//!   `spec.lifecycleAction`): validated there (an invalid one is `InvalidSpec` naming the
//!   field), its stop runs through the shutdown engine and so this provider's
//!   `request_shutdown` (the action's grace becomes KubeVirt's `gracePeriod`). A `stop`
//!   without `gracePeriodSeconds` gets core's default (30 s, KubeVirt's own default), not
//!   the VMI's `terminationGracePeriodSeconds`. [`KubeVirtProvider::status`] reports core's
//!   [`virtrigaud_core::model::LifecyclePhase`] with the KubeVirt views it derives from
//!   ([`KubeVirtStatus`]).
//! - Snapshots / restores with readiness and failure deadline, full clones with guest
//!   customization (hostname in `spec.template.spec.hostname`, networks as a
//!   `cloudInitNoCloud` volume's `networkData`, cloud-init user data in a Secret owned by the
//!   clone, never inline; `clone_customization` and `clone_user_data` are declared), CPU / memory
//!   hot-plug under the `LiveUpdate` rollout strategy (`RestartRequired` → `needs_power_cycle`).
//! - Images: [`DataVolumeImageSink`] imports `VMImage`s through CDI — a
//!   `cdi.kubevirt.io/v1beta1` `DataVolume` with an HTTP source that CDI's importer fetches
//!   in the cluster (a server-side fetch: core's preparer hands it the URL, then holds the
//!   transfer to its timeout, stall timeout and retries, and deletes the DataVolume on any
//!   failure). Checksums are verified by CDI (`spec.source.http.checksum`, CDI ≥ 1.62; on an
//!   older CDI a checksum is refused rather than skipped). `image_import` is declared. A
//!   `VMImage` has no KubeVirt source of its own: KubeVirt takes its libvirt source, else its
//!   Proxmox one.
//!   A prepared image's reference is `pvc:namespace/name` ([`PVC_IMAGE_PREFIX`]): `create`
//!   with that `image` clones the VM's root disk from the PVC (a `dataVolumeTemplates` entry
//!   with a `pvc` source, sized by CDI like its source); any other `image` is a container
//!   disk.
//! - Placement: [`virtrigaud_core::Provider::inventory`] is the schedulable `Ready` nodes
//!   (allocatable CPU and memory, zone from `topology.kubernetes.io/zone`, the namespace's
//!   VMs on each by VMI node or node selector) and the storage classes as datastores (no free
//!   space is reported for a class, so capacity never rules one out; VMs by their
//!   DataVolume templates' class). A placement's host is a `kubernetes.io/hostname` node
//!   selector, its datastore the storage class of every DataVolume the VM makes, a cluster
//!   is refused (one API endpoint is one cluster), and a host anti-affinity rule
//!   ([`virtrigaud_core::placement::HostAntiAffinity`]) becomes required pod anti-affinity
//!   on the template, so a rescheduled VM still avoids its peers' nodes.
//! - [`types`] holds the typed subset of the KubeVirt API; unknown fields are preserved, and
//!   objects are changed with merge / JSON patches (never whole-object PUTs).
//! - Layout: `provider.rs` (the struct, thin trait impls) → one file per group of operations
//!   (`power`, `stop`, `lifecycle` (the status query), `describe`, `create`, `reconfigure`,
//!   `snapshot`, `clone`, `watch`; `shared`, the namespace watches) → `client.rs` (the wire: one `Connection`; requests counted once, in the client's
//!   HTTP stack, see [`KubeVirtProvider::api_calls`]) → leaves (`state`, `types`, `error`, …).
//!
//! ## Known gaps
//! - No linked clones; snapshots never hold memory. `create` still puts its
//!   `cloud_init_user_data` inline in the VM spec (only clones use a Secret).
//! - `reconfigure` does not grow disks (that means expanding the PVC / DataVolume): `describe`
//!   marks every disk `cannot_grow`, so a growth is planned `Impossible` with that reason before
//!   anything changes, and `disk_expansion_online` is false. CPU / memory go live only under
//!   the `LiveUpdate` rollout strategy (`reconfigure_online` is false for a provider configured
//!   with `Stage`).
//! - Snapshots outlive their VM (`snapshots_outlive_vm`): `VirtualMachineSnapshot` objects
//!   are not owned by the VM, so after it is deleted they stay `Ready` and can still be
//!   deleted (the orchestrator keeps their objects Ready instead of marking them Failed).
//! - Snapshots are declared quiesced: KubeVirt freezes the guest's file systems through its
//!   agent when one is connected (`vm_capabilities().snapshot_quiesce` says whether it is).
//! - The test apiserver serves only CRDs: the testkit serves core `v1` Secrets in memory
//!   (`testkit::CoreSecrets`) and a fixed set of nodes and storage classes
//!   (`testkit::CoreCluster`), and there is no garbage collector there, so ownerReference
//!   cleanup is covered only by the provider's explicit deletes.
//! - Images: no streaming upload (CDI's upload proxy, `virtctl image-upload`, is not used),
//!   no `secretRef` for authenticated image URLs (a URL with credentials is refused), and
//!   lookup's size is the source's `Content-Length` recorded at import
//!   ([`IMAGE_SIZE_ANNOTATION`]), else the PVC's requested size (CDI reports no image size).
//! - Pause, reset and soft reboot need the subresource API ([`PowerApi::Subresources`]).
//! - No guest exec (`guest_exec` is declared false): KubeVirt has no API to run a program in
//!   the guest (virt-api's guest-agent subresources only read). A `VirtualMachine` with a
//!   `spec.lifecycle.preStop` hook is therefore refused at reconcile when it would be stopped
//!   ([`virtrigaud_core::reconcile::VmReconciler`]: `Unsupported` naming
//!   `spec.lifecycle.preStop`, `Ready` reason `PreStopUnsupported`, the VM left running),
//!   unless the reconciler is told to stop without the hook
//!   ([`virtrigaud_core::reconcile::VmReconciler::skip_unrunnable_pre_stop`]: a
//!   `PreStopFailed` Warning event, then the engine's graceful stop).
//! - What `request_shutdown` changed (for `cancel_shutdown`) is remembered in this process only.
//!
//! ```no_run
//! # async fn demo() -> virtrigaud_core::Result<()> {
//! use std::sync::Arc;
//! use virtrigaud_core::model::{LifecycleAction, RunStrategy};
//! use virtrigaud_core::orchestration::Orchestrator;
//! use virtrigaud_core::{Provider, VmId};
//! use virtrigaud_kubevirt::{ConnectOptions, KubeVirtConfig, KubeVirtProvider};
//!
//! let provider = KubeVirtProvider::connect("/etc/kubeconfig", &ConnectOptions::default(), KubeVirtConfig::default()).await?;
//! let vm = VmId::new("prod/web-1");
//! println!("{}", provider.power_state(&vm).await?);
//! println!("{:?}", provider.status(&vm).await?.printable_status);
//! // seed 004's `lifecycleAction: {action: stop, gracePeriodSeconds: 60}`, through the engine
//! let orch = Orchestrator::new(Arc::new(provider) as Arc<dyn Provider>);
//! let stop = LifecycleAction::stop().with_grace_period_seconds(60);
//! let state = orch.apply_action(&vm, &stop, RunStrategy::Manual).await?;
//! println!("{:?}", state.state);
//! # Ok(()) }
//! ```
//!
//! The library never installs a process-wide rustls crypto provider: kube is built with
//! `aws-lc-rs` only. It builds `k8s-openapi` with its `latest` Kubernetes API version.
//!
//! The `testkit` feature (off by default, not a stable API) adds the `testkit` module of test
//! support: a fake virt-controller for a real kube-apiserver, and fixtures.

mod armed;
mod client;
mod clone;
mod config;
mod create;
mod customize;
mod datavolume;
mod describe;
mod error;
mod id;
mod image;
mod inventory;
mod labels;
mod lifecycle;
mod power;
mod provider;
mod quantity;
mod reconfigure;
mod shared;
mod snapshot;
pub mod state;
mod stats;
mod stop;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod types;
mod watch;

pub use config::{
    ConnectOptions, DEFAULT_GRACE_SECONDS, KubeVirtConfig, PowerApi, RolloutStrategy,
};
pub use id::VmRef;
pub use image::{
    DEFAULT_IMAGE_PVC_SIZE, DataVolumeImageSink, IMAGE_SIZE_ANNOTATION, PVC_IMAGE_PREFIX,
};
pub use labels::VM_LABEL;
pub use lifecycle::KubeVirtStatus;
pub use provider::KubeVirtProvider;
pub use stats::ApiStatsSnapshot;
pub use stop::StopOutcome;

/// The provider type name.
pub const PROVIDER_TYPE: &str = "kubevirt";
