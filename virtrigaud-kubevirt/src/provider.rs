//! [`KubeVirtProvider`]: the struct, its constructors and getters, and the trait impls
//! ([`Provider`], [`Snapshotter`], [`Cloner`]) as thin delegations to the operation modules.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::json;
use virtrigaud_core::{
    AgentStatus, CloneOptions, CloneResult, Cloner, DeleteOptions, DeleteSnapshotOptions, Error,
    ErrorKind, Incarnation, Inventory, ListOptions, PowerOffOptions, PowerState, PowerStateStream,
    Provider, ProviderCapabilities, ReconfigureRequest, ReconfigureResult, Result, ResultExt,
    RevertOptions, ShutdownChannel, ShutdownRequestOptions, SnapshotInfo, SnapshotOptions,
    Snapshotter, StartOptions, VmCapabilities, VmCreateSpec, VmDescription, VmId,
};

use crate::PROVIDER_TYPE;
use crate::client::{Connection, Sub};
use crate::config::{ConnectOptions, KubeVirtConfig, PowerApi, RolloutStrategy};
use crate::error::to_core_error;
use crate::id::VmRef;
use crate::lifecycle::KubeVirtStatus;
use crate::stats::{ApiStats, ApiStatsSnapshot, CountLayer};
use crate::stop::StopOutcome;

/// Seconds of grace to pass on for `remaining`: rounded up, so a guest never gets less than the engine allows.
fn grace_seconds(remaining: Duration) -> i64 {
    let secs = remaining.as_secs() + u64::from(remaining.subsec_nanos() > 0);
    i64::try_from(secs).unwrap_or(i64::MAX)
}

/// The KubeVirt provider. Cheap to clone (shares one client).
///
/// VM ids are `namespace/name` (a bare `name` uses the configured namespace).
#[derive(Clone)]
pub struct KubeVirtProvider {
    conn: Arc<Connection>,
    caps: ProviderCapabilities,
}

impl fmt::Debug for KubeVirtProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubeVirtProvider")
            .field("namespace", &self.conn.namespace)
            .field("power_api", &self.conn.config.power_api)
            .finish_non_exhaustive()
    }
}

impl KubeVirtProvider {
    pub(crate) fn over(conn: Connection) -> Self {
        let caps = Self::declared_capabilities(&conn.config);
        KubeVirtProvider {
            conn: Arc::new(conn),
            caps,
        }
    }

    /// What the provider can do, decided once from its configuration.
    fn declared_capabilities(config: &KubeVirtConfig) -> ProviderCapabilities {
        let sub = config.power_api == PowerApi::Subresources;
        let mut c = ProviderCapabilities::default();
        // CPU and memory hot-plug need the LiveUpdate rollout strategy; a provider configured
        // for Stage cannot honour it (unset: read from the KubeVirt CR per VM).
        c.reconfigure_online = config.rollout_strategy != Some(RolloutStrategy::Stage);
        c.snapshots = true;
        // A VirtualMachineSnapshot freezes the guest's file systems through the guest agent
        // when one is connected (the snapshot's status says whether it did).
        c.quiesced_snapshots = true;
        // VirtualMachineSnapshot objects (and their contents) are not owned by the VM: they
        // stay Ready after it is deleted, and can still be restored from or deleted.
        c.snapshots_outlive_vm = true;
        c.full_clones = true;
        // Hostname (spec.hostname), networks (a cloudInitNoCloud volume's networkData) and
        // cloud-init user data (a Secret owned by the clone) are patched into the cloned VM
        // before it first starts.
        c.clone_customization = true;
        c.clone_user_data = true;
        c.supported_disk_types = &["dataVolume", "containerDisk"];
        c.supported_network_types = &["virtio", "e1000"];
        // A KubeVirt stop delivers one shutdown signal; the launcher picks the guest agent or ACPI.
        c.acpi_shutdown = true;
        c.agent_shutdown = false;
        c.repeatable_shutdown_signal = false;
        c.power_state_watch = true;
        c.reset = sub;
        c.reboot = sub;
        c.pause = sub;
        c.create = true;
        c.delete = true;
        c.reconfigure = true;
        c.list_vms = true;
        // KubeVirt has no API to run a program in the guest (virt-api's guest agent
        // subresources read, they do not exec): a preStop hook is refused at reconcile.
        c.guest_exec = false;
        // A VMI's phase (Failed) and printableStatus (CrashLoopBackOff) say a failure
        // apart from a clean stop (Succeeded).
        c.failure_detection = true;
        c.inventory = true;
        // VMImages are imported by CDI (a DataVolume with an HTTP source): DataVolumeImageSink.
        c.image_import = true;
        c
    }

    /// The connection (for the image sink).
    pub(crate) fn conn(&self) -> &Arc<Connection> {
        &self.conn
    }

    /// Wraps an existing kube client (request counting is then off).
    pub fn with_client(client: Client, config: KubeVirtConfig) -> Self {
        Self::over(Connection::new(client, config, ApiStats::default(), None))
    }

    /// Builds a client from a kube [`kube::Config`] (TLS as configured there; the crypto provider
    /// is rustls with aws-lc-rs, never installed process-wide) and counts its requests.
    pub fn from_kube_config(kube_config: kube::Config, config: KubeVirtConfig) -> Result<Self> {
        let stats = ApiStats::default();
        let url = kube_config.cluster_url.clone();
        let client = kube::client::ClientBuilder::try_from(kube_config)
            .map_err(|e| to_core_error(e, "connect", None))?
            .with_layer(&CountLayer(stats.clone()))
            .build();
        Ok(Self::over(Connection::new(
            client,
            config,
            stats,
            Some(&url),
        )))
    }

    /// Connects with a kubeconfig file.
    pub async fn connect(
        kubeconfig: impl AsRef<Path>,
        opts: &ConnectOptions,
        config: KubeVirtConfig,
    ) -> Result<Self> {
        let path = kubeconfig.as_ref();
        let res = path.display().to_string();
        let kc = Kubeconfig::read_from(path)
            .map_err(|e| Error::invalid_spec("cannot read kubeconfig").with_source(e))
            .ctx(PROVIDER_TYPE, "connect", &res)?;
        let kopts = KubeConfigOptions {
            context: opts.context.clone(),
            ..Default::default()
        };
        let mut kconf = kube::Config::from_custom_kubeconfig(kc, &kopts)
            .await
            .map_err(|e| Error::invalid_spec("invalid kubeconfig").with_source(e))
            .ctx(PROVIDER_TYPE, "connect", &res)?;
        if opts.insecure_skip_tls_verify {
            tracing::warn!(
                kubeconfig = %res,
                "TLS certificate verification is OFF (danger_accept_invalid_certs): the API \
                 server's identity is not checked and its credentials can be intercepted"
            );
            kconf.accept_invalid_certs = true;
        }
        Self::from_kube_config(kconf, config)
    }

    /// The kube client.
    pub fn client(&self) -> &Client {
        &self.conn.client
    }

    /// The namespace used for bare names, creation and listing.
    pub fn namespace(&self) -> &str {
        &self.conn.namespace
    }

    /// The identity [`virtrigaud_core::Provider::instance_id`] reports:
    /// `scheme://host:port[/path]/ns/<namespace>` (the API server without credentials, and the
    /// namespace bare VM names resolve in), or `/ns/<namespace>` when the API server is unknown.
    pub fn instance_identity(&self) -> String {
        format!("{}/ns/{}", self.conn.endpoint, self.conn.namespace)
    }

    /// The configuration.
    pub fn config(&self) -> &KubeVirtConfig {
        &self.conn.config
    }

    /// A copy of the request / watch-event / conflict-retry counters (richer than
    /// [`Self::api_calls`]).
    pub fn api_stats(&self) -> ApiStatsSnapshot {
        self.conn.stats.snapshot()
    }

    /// HTTP requests sent so far (0 for a provider made with [`Self::with_client`]).
    pub fn api_calls(&self) -> u64 {
        self.conn.stats.requests()
    }

    /// Parses a VM id.
    pub fn vm_ref(&self, vm: &VmId) -> Result<VmRef> {
        VmRef::parse(vm, &self.conn.namespace)
    }

    /// Reads the cluster's rollout strategy (configured, else from the KubeVirt CR, else `Stage`).
    pub async fn rollout_strategy(&self) -> RolloutStrategy {
        self.conn.rollout_strategy().await
    }

    /// The VM's lifecycle phase (core's [`virtrigaud_core::model::LifecyclePhase`]) with the
    /// KubeVirt views it derives from (printable status, VMI phase, readiness).
    ///
    /// Seed 004's lifecycle *action* has no method here: apply core's
    /// [`virtrigaud_core::model::LifecycleAction`] with
    /// [`virtrigaud_core::orchestration::Orchestrator::apply_action`] (or
    /// [`virtrigaud_core::reconcile::LifecycleReconciler`] for an object), which validates it
    /// and stops through the shutdown engine.
    pub async fn status(&self, vm: &VmId) -> Result<KubeVirtStatus> {
        let r = self.vm_ref(vm)?;
        self.conn.status(&r).await
    }

    /// Restarts the VM (KubeVirt `restart`); `force` uses grace period 0.
    pub async fn restart(&self, vm: &VmId, force: bool) -> Result<()> {
        let r = self.vm_ref(vm)?;
        self.conn.restart_vm(&r, force, "restart").await
    }

    /// Stops the VM with an explicit grace period (seconds; `None`: the VMI's own). Returns
    /// whether a stop was requested, an in-flight one shortened, or nothing changed.
    ///
    /// A raw KubeVirt request that does not wait: it does not go through the shutdown engine
    /// (no shared grace with other stops of the VM, no wait, no force at the deadline other
    /// than KubeVirt's own). A stop that must keep the engine's guarantees goes through
    /// [`virtrigaud_core::shutdown::ShutdownManager`] or the orchestrator.
    pub async fn stop_with_grace(
        &self,
        vm: &VmId,
        grace_seconds: Option<i64>,
    ) -> Result<StopOutcome> {
        let r = self.vm_ref(vm)?;
        self.conn.stop_with_grace(&r, grace_seconds).await
    }

    /// Waits, watch-based, until the VM's power state satisfies `pred` (bounded by `timeout`).
    pub async fn wait_for_power_state(
        &self,
        vm: &VmId,
        pred: impl Fn(&PowerState) -> bool + Send,
        timeout: Duration,
    ) -> Result<PowerState> {
        let r = self.vm_ref(vm)?;
        self.conn.wait_power_state(&r, pred, timeout, "wait").await
    }

    /// `reset` / `reboot` / `pause` / `resume`: a subresource call (needs [`PowerApi::Subresources`]).
    async fn vmi_subresource(&self, vm: &VmId, sub: Sub, op: &'static str) -> Result<()> {
        let r = self.vm_ref(vm)?;
        if self.conn.config.power_api != PowerApi::Subresources {
            return Err(Error::new(
                ErrorKind::Unsupported,
                "needs the subresources.kubevirt.io API (PowerApi::Subresources)",
            ))
            .ctx(PROVIDER_TYPE, op, &r.to_string());
        }
        self.conn.subresource(&r, sub, json!({}), op).await
    }
}

#[async_trait]
impl Provider for KubeVirtProvider {
    fn provider_type(&self) -> &'static str {
        PROVIDER_TYPE
    }

    /// `scheme://host:port[/path]/ns/<namespace>`: the API server (no credentials) and the
    /// namespace bare VM names resolve in (see [`KubeVirtProvider::instance_identity`]).
    fn instance_id(&self) -> String {
        self.instance_identity()
    }

    fn capabilities(&self) -> ProviderCapabilities {
        self.caps
    }

    async fn vm_capabilities(&self, vm: &VmId) -> Result<VmCapabilities> {
        self.conn.vm_capabilities(&self.vm_ref(vm)?).await
    }

    async fn power_state(&self, vm: &VmId) -> Result<PowerState> {
        self.conn.power_state(&self.vm_ref(vm)?).await
    }

    async fn watch_power_state(&self, vm: &VmId) -> Result<Option<PowerStateStream>> {
        let r = self.vm_ref(vm)?;
        let (_, sub) = self
            .conn
            .subscribe_power_state(&r, true, "watch_power_state")
            .await?;
        Ok(Some(sub.boxed()))
    }

    async fn start(&self, vm: &VmId, opts: &StartOptions) -> Result<()> {
        let r = self.vm_ref(vm)?;
        self.conn.start_vm(&r, opts.paused, "start").await
    }

    async fn power_off(&self, vm: &VmId, _opts: &PowerOffOptions) -> Result<()> {
        let r = self.vm_ref(vm)?;
        self.conn.stop_vm(&r, Some(0), "power_off").await.map(drop)
    }

    async fn probe_agent(&self, vm: &VmId) -> Result<AgentStatus> {
        self.conn.probe_agent(&self.vm_ref(vm)?).await
    }

    /// A graceful KubeVirt stop. The engine's remaining grace becomes the stop's `gracePeriod`
    /// (rounded up to whole seconds) — KubeVirt forces the guest off itself when it expires, so
    /// KubeVirt's deadline and the engine's agree. Without a remaining grace the VMI's own
    /// `terminationGracePeriodSeconds` applies. Only `ShutdownChannel::Acpi` is accepted: KubeVirt
    /// delivers the signal itself (through the agent when connected, else ACPI).
    async fn request_shutdown(
        &self,
        vm: &VmId,
        channel: ShutdownChannel,
        opts: &ShutdownRequestOptions,
    ) -> Result<()> {
        let r = self.vm_ref(vm)?;
        if channel != ShutdownChannel::Acpi {
            return Err(Error::new(
                ErrorKind::Unsupported,
                "KubeVirt chooses the guest channel itself; request the shutdown with ShutdownChannel::Acpi",
            ))
            .ctx(PROVIDER_TYPE, "request_shutdown", &r.to_string());
        }
        let grace = opts.remaining_grace.map(grace_seconds);
        self.conn
            .stop_vm_armed(&r, grace, "request_shutdown")
            .await
            .map(drop)
    }

    /// The UID of the VM's instance (VMI) while one exists that has not reached a final phase:
    /// virt-controller creates a new VMI, with a new UID, for every run (a restart deletes and
    /// re-creates it). `Ok(None)` without an instance or when it is `Succeeded`/`Failed`. An
    /// instance whose VirtualMachine is gone (orphaned) still has its run's identity.
    async fn incarnation(&self, vm: &VmId) -> Result<Option<Incarnation>> {
        self.conn.incarnation(&self.vm_ref(vm)?).await
    }

    /// Undoes the stop [`Provider::request_shutdown`] sent, so the VM keeps running: the run
    /// strategy it had before (`Halted` → `Always`/`Once`/…, or `spec.running`), our `Stop`
    /// state-change request withdrawn (`Manual`/`RerunOnFailure`), and the VMI's
    /// `terminationGracePeriodSeconds` as it was. Possible only until virt-controller acts on
    /// the stop: once it has begun deleting the instance, KubeVirt cannot take the deletion
    /// back (the guest gets its shutdown signal and is forced off when the grace expires), and
    /// this fails with `InvalidState`; it does too when the VM has already stopped. The record
    /// of what a request changed lives in this provider instance (not across processes); with
    /// none for this VM there is nothing to undo and this returns `Ok`.
    async fn cancel_shutdown(&self, vm: &VmId) -> Result<()> {
        let r = self.vm_ref(vm)?;
        self.conn.cancel_stop(&r, "cancel_shutdown").await
    }

    async fn reset(&self, vm: &VmId) -> Result<()> {
        self.vmi_subresource(vm, Sub::Reset, "reset").await
    }

    async fn reboot(&self, vm: &VmId, _channel: ShutdownChannel) -> Result<()> {
        self.vmi_subresource(vm, Sub::SoftReboot, "reboot").await
    }

    async fn pause(&self, vm: &VmId) -> Result<()> {
        self.vmi_subresource(vm, Sub::Pause, "pause").await
    }

    async fn resume(&self, vm: &VmId) -> Result<()> {
        self.vmi_subresource(vm, Sub::Unpause, "resume").await
    }

    async fn create(&self, spec: &VmCreateSpec) -> Result<VmId> {
        self.conn.create(spec).await
    }

    async fn delete(&self, vm: &VmId, opts: &DeleteOptions) -> Result<()> {
        self.conn.delete(&self.vm_ref(vm)?, opts).await
    }

    async fn reconfigure(
        &self,
        vm: &VmId,
        change: &ReconfigureRequest,
    ) -> Result<ReconfigureResult> {
        self.conn.reconfigure(&self.vm_ref(vm)?, change).await
    }

    async fn describe(&self, vm: &VmId) -> Result<VmDescription> {
        let r = self.vm_ref(vm)?;
        let (vmo, vmi) = self.conn.read(&r, "describe").await?;
        self.conn.describe_pair(&r, &vmo, vmi.as_ref())
    }

    async fn list_vms(&self, opts: &ListOptions) -> Result<Vec<VmDescription>> {
        self.conn.list_vms(opts).await
    }

    /// Nodes as hosts and storage classes as datastores (needs cluster-wide `list` on
    /// `nodes` and `storageclasses.storage.k8s.io`).
    async fn inventory(&self) -> Result<Inventory> {
        self.conn.inventory().await
    }

    fn snapshotter(&self) -> Option<&dyn Snapshotter> {
        self.caps.snapshots.then_some(self as &dyn Snapshotter)
    }

    fn cloner(&self) -> Option<&dyn Cloner> {
        self.caps.clones().then_some(self as &dyn Cloner)
    }
}

#[async_trait]
impl Snapshotter for KubeVirtProvider {
    async fn create_snapshot(&self, vm: &VmId, opts: &SnapshotOptions) -> Result<SnapshotInfo> {
        self.conn.create_snapshot(&self.vm_ref(vm)?, opts).await
    }

    async fn list_snapshots(&self, vm: &VmId) -> Result<Vec<SnapshotInfo>> {
        self.conn.list_snapshots(&self.vm_ref(vm)?).await
    }

    async fn revert_snapshot(&self, vm: &VmId, snapshot: &str, opts: &RevertOptions) -> Result<()> {
        self.conn
            .revert_snapshot(&self.vm_ref(vm)?, snapshot, opts)
            .await
    }

    async fn delete_snapshot(
        &self,
        vm: &VmId,
        snapshot: &str,
        opts: &DeleteSnapshotOptions,
    ) -> Result<()> {
        self.conn
            .delete_snapshot(&self.vm_ref(vm)?, snapshot, opts)
            .await
    }
}

#[async_trait]
impl Cloner for KubeVirtProvider {
    async fn clone_vm(&self, source: &VmId, opts: &CloneOptions) -> Result<CloneResult> {
        self.conn.clone_vm(&self.vm_ref(source)?, opts).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtrigaud_core::Provider;

    fn provider(url: &str, config: KubeVirtConfig) -> KubeVirtProvider {
        let kc = kube::Config::new(url.parse().expect("url"));
        KubeVirtProvider::from_kube_config(kc, config).expect("provider")
    }

    #[tokio::test]
    async fn instance_id_is_the_api_server_and_namespace_without_credentials() {
        let p = provider(
            "https://127.0.0.1:6443",
            KubeVirtConfig::default().with_namespace("default"),
        );
        assert_eq!(p.instance_id(), "https://127.0.0.1:6443/ns/default");
        // user-info, query and fragment never show; the default port is explicit
        let p = provider(
            "https://admin:s3cret@API.Example.com/?token=abc",
            KubeVirtConfig::default().with_namespace("prod"),
        );
        assert_eq!(p.instance_id(), "https://api.example.com:443/ns/prod");
        assert!(!format!("{p:?}").contains("s3cret"));
        // a path prefix (a cluster behind a proxy) is part of the identity
        let a = provider(
            "https://rancher.example:8443/k8s/clusters/c-1/",
            KubeVirtConfig::default().with_namespace("prod"),
        );
        let b = provider(
            "https://rancher.example:8443/k8s/clusters/c-2",
            KubeVirtConfig::default().with_namespace("prod"),
        );
        assert_eq!(
            a.instance_id(),
            "https://rancher.example:8443/k8s/clusters/c-1/ns/prod"
        );
        assert_ne!(a.instance_id(), b.instance_id());
        // two namespaces of one cluster are two instances
        let other = provider(
            "https://127.0.0.1:6443",
            KubeVirtConfig::default().with_namespace("staging"),
        );
        assert_ne!(other.instance_id(), "https://127.0.0.1:6443/ns/default");
        assert_eq!(
            provider(
                "http://[::1]:8080",
                KubeVirtConfig::default().with_namespace("x")
            )
            .instance_id(),
            "http://[::1]:8080/ns/x"
        );
    }

    #[tokio::test]
    async fn an_explicit_endpoint_names_a_client_built_elsewhere() {
        let cfg = KubeVirtConfig::default()
            .with_namespace("default")
            .with_endpoint("https://ops:hunter2@10.1.2.3:6443/");
        assert!(!format!("{cfg:?}").contains("hunter2"));
        let (svc, _handle) = tower_test::mock::pair::<
            http::Request<kube::client::Body>,
            http::Response<kube::client::Body>,
        >();
        let p = KubeVirtProvider::with_client(Client::new(svc, "default"), cfg);
        assert_eq!(p.instance_id(), "https://10.1.2.3:6443/ns/default");
        let (svc, _handle) = tower_test::mock::pair::<
            http::Request<kube::client::Body>,
            http::Response<kube::client::Body>,
        >();
        let p = KubeVirtProvider::with_client(
            Client::new(svc, "default"),
            KubeVirtConfig::default().with_namespace("default"),
        );
        assert_eq!(p.instance_id(), "/ns/default", "no endpoint known");
    }

    #[test]
    fn grace_rounds_up() {
        assert_eq!(grace_seconds(Duration::from_millis(0)), 0);
        assert_eq!(grace_seconds(Duration::from_millis(1)), 1);
        assert_eq!(grace_seconds(Duration::from_millis(2000)), 2);
        assert_eq!(grace_seconds(Duration::from_millis(2001)), 3);
    }

    #[tokio::test]
    async fn api_calls_counts_every_request_sent() {
        // Nothing listens on port 1: the requests fail, but they were sent (and counted).
        let p = provider(
            "http://127.0.0.1:1",
            KubeVirtConfig::default().with_namespace("default"),
        );
        assert_eq!(p.api_calls(), 0);
        let e = p.power_state(&VmId::new("default/vm1")).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        assert_eq!(p.api_calls(), 2, "the VM and its VMI");
        assert_eq!(p.api_stats().requests, p.api_calls());
    }
}
