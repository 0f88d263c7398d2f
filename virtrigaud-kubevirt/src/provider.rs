//! [`KubeVirtProvider`]: configuration, client plumbing, reads and watches.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::stream::{self, BoxStream};
use futures::{Stream, StreamExt, TryFutureExt};
use kube::api::{Api, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use serde_json::Value;
use virtrigaud_core::{ErrorKind, PowerState, Result, VmId};

use crate::error::{Call, err, map_kube};
use crate::id::VmRef;
use crate::power::Armed;
use crate::state::{StateError, power_state_of};
use crate::stats::{ApiStats, ApiStatsSnapshot, CountLayer};
use crate::types::{VirtualMachine, VirtualMachineInstance};

/// KubeVirt's default `terminationGracePeriodSeconds` when a VMI does not set one.
pub const DEFAULT_GRACE_SECONDS: i64 = 30;

/// How power operations reach KubeVirt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum PowerApi {
    /// KubeVirt's aggregated `subresources.kubevirt.io/v1` API (virt-api): `start`, `stop` (with
    /// `gracePeriod`), `restart`, `softreboot`, `pause`, `unpause`, `reset`. What `virtctl` uses;
    /// the default on a real KubeVirt cluster.
    #[default]
    Subresources,
    /// Direct object changes with the same rules virt-api applies: `spec.runStrategy`
    /// (JSON patch with a `test` op), `status.stateChangeRequests` for `Manual`/`RerunOnFailure`,
    /// and the VMI's `terminationGracePeriodSeconds` for a stop grace. Works against any
    /// apiserver serving the KubeVirt CRDs (no virt-api needed), but cannot pause, reset or
    /// soft-reboot.
    RunStrategy,
}

/// KubeVirt's cluster-wide `vmRolloutStrategy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RolloutStrategy {
    /// Template changes wait for the next restart (`RestartRequired`).
    Stage,
    /// CPU sockets / guest memory changes are hot-plugged into the running VMI.
    LiveUpdate,
}

/// Provider settings.
#[derive(Clone)]
#[non_exhaustive]
pub struct KubeVirtConfig {
    /// How power operations are sent.
    pub power_api: PowerApi,
    /// Namespace for bare-name VM ids, created VMs and listings (`None`: the client's default
    /// namespace, i.e. the kubeconfig context's).
    pub namespace: Option<String>,
    /// Upper bound for waits (start completion, snapshot readiness beyond its failure deadline,
    /// restores, clones, hot-plug observation).
    pub operation_timeout: Duration,
    /// `spec.failureDeadline` of snapshots this provider takes.
    pub snapshot_failure_deadline: Duration,
    /// The cluster's rollout strategy, if known (`None`: read the KubeVirt CR; `Stage` if unreadable).
    pub rollout_strategy: Option<RolloutStrategy>,
    /// How often an optimistic-concurrency conflict is answered by re-reading and retrying.
    pub conflict_retries: u32,
    /// The field manager name of this provider's writes.
    pub field_manager: String,
    /// The API server URL to identify this provider by in
    /// [`virtrigaud_core::Provider::instance_id`] (`None`: the kube config's `cluster_url`; a
    /// provider made with [`KubeVirtProvider::with_client`] cannot see it). Credentials, query
    /// and fragment are dropped.
    pub endpoint: Option<String>,
}

impl Default for KubeVirtConfig {
    fn default() -> Self {
        KubeVirtConfig {
            power_api: PowerApi::Subresources,
            namespace: None,
            operation_timeout: Duration::from_secs(300),
            snapshot_failure_deadline: Duration::from_secs(300),
            rollout_strategy: None,
            conflict_retries: 5,
            field_manager: "virtrigaud".to_owned(),
            endpoint: None,
        }
    }
}

impl fmt::Debug for KubeVirtConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The endpoint only as instance_id shows it: a URL given with credentials never prints them.
        let endpoint = self.endpoint.as_deref().map(|s| {
            s.parse::<http::Uri>()
                .map(|u| endpoint_identity(&u))
                .unwrap_or_else(|_| "<unparsable>".to_owned())
        });
        f.debug_struct("KubeVirtConfig")
            .field("power_api", &self.power_api)
            .field("namespace", &self.namespace)
            .field("operation_timeout", &self.operation_timeout)
            .field("snapshot_failure_deadline", &self.snapshot_failure_deadline)
            .field("rollout_strategy", &self.rollout_strategy)
            .field("conflict_retries", &self.conflict_retries)
            .field("field_manager", &self.field_manager)
            .field("endpoint", &endpoint)
            .finish()
    }
}

impl KubeVirtConfig {
    /// Sets the power API.
    pub fn with_power_api(mut self, api: PowerApi) -> Self {
        self.power_api = api;
        self
    }
    /// Sets the namespace.
    pub fn with_namespace(mut self, ns: impl Into<String>) -> Self {
        self.namespace = Some(ns.into());
        self
    }
    /// Sets the operation timeout.
    pub fn with_operation_timeout(mut self, t: Duration) -> Self {
        self.operation_timeout = t;
        self
    }
    /// Sets the snapshot failure deadline.
    pub fn with_snapshot_failure_deadline(mut self, t: Duration) -> Self {
        self.snapshot_failure_deadline = t;
        self
    }
    /// Sets the API server URL [`virtrigaud_core::Provider::instance_id`] names (see
    /// [`KubeVirtConfig::endpoint`]).
    pub fn with_endpoint(mut self, url: impl Into<String>) -> Self {
        self.endpoint = Some(url.into());
        self
    }
    /// Declares the cluster's rollout strategy.
    pub fn with_rollout_strategy(mut self, s: RolloutStrategy) -> Self {
        self.rollout_strategy = Some(s);
        self
    }
}

/// Options for [`KubeVirtProvider::connect`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ConnectOptions {
    /// Kubeconfig context (default: the current context).
    pub context: Option<String>,
    /// Skip TLS certificate verification. Off by default; an explicit, insecure opt-in.
    pub insecure_skip_tls_verify: bool,
}

pub(crate) struct Inner {
    pub(crate) client: Client,
    pub(crate) config: KubeVirtConfig,
    pub(crate) namespace: String,
    pub(crate) stats: Arc<ApiStats>,
    /// `scheme://host:port[/path]` of the API server, without credentials (`""`: unknown).
    pub(crate) endpoint: String,
    /// What our pending stop requests changed, per `namespace/name` (for `cancel_shutdown`).
    pub(crate) armed: Mutex<HashMap<String, Armed>>,
}

impl Inner {
    fn new(
        client: Client,
        config: KubeVirtConfig,
        stats: Arc<ApiStats>,
        url: Option<&http::Uri>,
    ) -> Self {
        let namespace = config
            .namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_owned());
        let endpoint = match &config.endpoint {
            Some(s) => match s.parse::<http::Uri>() {
                Ok(u) => endpoint_identity(&u),
                Err(_) => {
                    tracing::warn!(
                        "KubeVirtConfig::endpoint is not a URL; instance_id names no endpoint"
                    );
                    String::new()
                }
            },
            None => url.map(endpoint_identity).unwrap_or_default(),
        };
        Inner {
            client,
            config,
            namespace,
            stats,
            endpoint,
            armed: Mutex::default(),
        }
    }

    /// The stop records (a poisoned lock only means a panic elsewhere; the map stays usable).
    pub(crate) fn armed_lock(&self) -> MutexGuard<'_, HashMap<String, Armed>> {
        self.armed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// `scheme://host:port[/path]` of an API server URL: never its user-info (credentials), query
/// or fragment; the port is explicit (443 / 80 by default), a trailing `/` dropped.
pub(crate) fn endpoint_identity(uri: &http::Uri) -> String {
    let scheme = uri.scheme_str().unwrap_or("https").to_ascii_lowercase();
    let Some(host) = uri.host() else {
        return String::new();
    };
    let port = uri
        .port_u16()
        .unwrap_or(if scheme == "http" { 80 } else { 443 });
    let path = uri.path().trim_end_matches('/');
    format!("{scheme}://{}:{port}{path}", host.to_ascii_lowercase())
}

/// The KubeVirt provider. Cheap to clone (shares one client).
///
/// VM ids are `namespace/name` (a bare `name` uses the configured namespace).
#[derive(Clone)]
pub struct KubeVirtProvider {
    pub(crate) inner: Arc<Inner>,
}

impl fmt::Debug for KubeVirtProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubeVirtProvider")
            .field("namespace", &self.inner.namespace)
            .field("power_api", &self.inner.config.power_api)
            .finish_non_exhaustive()
    }
}

impl KubeVirtProvider {
    /// Wraps an existing kube client (request counting is then off).
    pub fn with_client(client: Client, config: KubeVirtConfig) -> Self {
        KubeVirtProvider {
            inner: Arc::new(Inner::new(client, config, Arc::default(), None)),
        }
    }

    /// Builds a client from a kube [`kube::Config`] (TLS as configured there; the crypto provider
    /// is rustls with aws-lc-rs, never installed process-wide) and counts its requests.
    pub fn from_kube_config(kube_config: kube::Config, config: KubeVirtConfig) -> Result<Self> {
        let stats = Arc::new(ApiStats::default());
        let url = kube_config.cluster_url.clone();
        let client = kube::client::ClientBuilder::try_from(kube_config)
            .map_err(|e| map_kube(e, Call::Object, "connect", ""))?
            .with_layer(&CountLayer(Arc::clone(&stats)))
            .build();
        Ok(KubeVirtProvider {
            inner: Arc::new(Inner::new(client, config, stats, Some(&url))),
        })
    }

    /// Connects with a kubeconfig file.
    pub async fn connect(
        kubeconfig: impl AsRef<Path>,
        opts: &ConnectOptions,
        config: KubeVirtConfig,
    ) -> Result<Self> {
        let path = kubeconfig.as_ref();
        let kc = Kubeconfig::read_from(path).map_err(|e| {
            err(
                ErrorKind::InvalidSpec,
                "connect",
                &path.display().to_string(),
                "cannot read kubeconfig",
            )
            .with_source(e)
        })?;
        let kopts = KubeConfigOptions {
            context: opts.context.clone(),
            ..Default::default()
        };
        let mut kconf = kube::Config::from_custom_kubeconfig(kc, &kopts)
            .await
            .map_err(|e| {
                err(
                    ErrorKind::InvalidSpec,
                    "connect",
                    &path.display().to_string(),
                    "invalid kubeconfig",
                )
                .with_source(e)
            })?;
        if opts.insecure_skip_tls_verify {
            kconf.accept_invalid_certs = true;
        }
        Self::from_kube_config(kconf, config)
    }

    /// The kube client.
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// The namespace used for bare names, creation and listing.
    pub fn namespace(&self) -> &str {
        &self.inner.namespace
    }

    /// The identity [`virtrigaud_core::Provider::instance_id`] reports:
    /// `scheme://host:port[/path]/ns/<namespace>` (the API server without credentials, and the
    /// namespace bare VM names resolve in), or `/ns/<namespace>` when the API server is unknown.
    pub fn instance_identity(&self) -> String {
        format!("{}/ns/{}", self.inner.endpoint, self.inner.namespace)
    }

    /// The configuration.
    pub fn config(&self) -> &KubeVirtConfig {
        &self.inner.config
    }

    /// A copy of the request / watch-event counters.
    pub fn api_stats(&self) -> ApiStatsSnapshot {
        self.inner.stats.snapshot()
    }

    /// Parses a VM id.
    pub fn vm_ref(&self, vm: &VmId) -> Result<VmRef> {
        VmRef::parse(vm, &self.inner.namespace)
    }

    pub(crate) fn api<K>(&self, ns: &str) -> Api<K>
    where
        K: Resource<Scope = kube::core::NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        Api::namespaced(self.inner.client.clone(), ns)
    }

    pub(crate) fn pp(&self) -> PatchParams {
        PatchParams {
            field_manager: Some(self.inner.config.field_manager.clone()),
            ..Default::default()
        }
    }

    /// Reads the VM.
    pub(crate) async fn get_vm(&self, r: &VmRef, op: &'static str) -> Result<VirtualMachine> {
        self.api::<VirtualMachine>(&r.namespace)
            .get(&r.name)
            .await
            .map_err(|e| map_kube(e, Call::Object, op, &r.to_string()))
    }

    /// Reads the VMI (absent: `None`).
    pub(crate) async fn get_vmi(
        &self,
        r: &VmRef,
        op: &'static str,
    ) -> Result<Option<VirtualMachineInstance>> {
        self.api::<VirtualMachineInstance>(&r.namespace)
            .get_opt(&r.name)
            .await
            .map_err(|e| map_kube(e, Call::Object, op, &r.to_string()))
    }

    /// Reads the VM and its VMI concurrently.
    pub(crate) async fn read(
        &self,
        r: &VmRef,
        op: &'static str,
    ) -> Result<(VirtualMachine, Option<VirtualMachineInstance>)> {
        futures::try_join!(self.get_vm(r, op), self.get_vmi(r, op))
    }

    /// Applies a JSON patch (with `test` operations) to `name`; a failed test is a `Conflict`.
    pub(crate) async fn json_patch<K>(
        &self,
        api: &Api<K>,
        name: &str,
        ops: Value,
        status: bool,
        op: &'static str,
        resource: &str,
    ) -> Result<K>
    where
        K: Clone + serde::de::DeserializeOwned + fmt::Debug,
    {
        let patch: json_patch::Patch = serde_json::from_value(ops)
            .map_err(|e| err(ErrorKind::Internal, op, resource, "bad JSON patch").with_source(e))?;
        let p = Patch::Json::<()>(patch);
        let res = if status {
            api.patch_status(name, &self.pp(), &p).await
        } else {
            api.patch(name, &self.pp(), &p).await
        };
        res.map_err(|e| map_kube(e, Call::GuardedPatch, op, resource))
    }

    /// Applies a merge patch.
    pub(crate) async fn merge_patch<K>(
        &self,
        api: &Api<K>,
        name: &str,
        body: &Value,
        op: &'static str,
        resource: &str,
    ) -> Result<K>
    where
        K: Clone + serde::de::DeserializeOwned + fmt::Debug,
    {
        api.patch(name, &self.pp(), &Patch::Merge(body))
            .await
            .map_err(|e| map_kube(e, Call::Object, op, resource))
    }

    /// Runs `f` until it does not fail with `Conflict`, at most `conflict_retries` extra times
    /// (each attempt re-reads what it needs).
    pub(crate) async fn retry_conflicts<T, F, Fut>(&self, mut f: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let mut attempt = 0;
        loop {
            match f().await {
                Err(e)
                    if e.kind() == ErrorKind::Conflict
                        && attempt < self.inner.config.conflict_retries =>
                {
                    attempt += 1;
                    self.inner.stats.conflict_retry();
                    tracing::debug!(attempt, error = %e, "conflict: re-reading and retrying");
                }
                Err(e) if e.kind() == ErrorKind::Conflict => return Err(e.persistent()),
                other => return other,
            }
        }
    }

    /// Derives the power state of a VM/VMI pair.
    pub(crate) fn derive(
        vm: &VirtualMachine,
        vmi: Option<&VirtualMachineInstance>,
        op: &'static str,
        r: &VmRef,
    ) -> Result<PowerState> {
        power_state_of(vm, vmi).map_err(|StateError::UnknownPhase| {
            err(
                ErrorKind::Unavailable,
                op,
                &r.to_string(),
                "VMI phase is Unknown (its node is unreachable)",
            )
        })
    }

    /// A stream of (VM, VMI) pairs from two watches (field selector on the name): the first item
    /// reflects the state when both initial listings completed, then one item per change.
    pub(crate) fn pair_stream(
        &self,
        r: &VmRef,
    ) -> BoxStream<'static, Result<(Option<VirtualMachine>, Option<VirtualMachineInstance>)>> {
        #[allow(clippy::large_enum_variant)] // short-lived, one per event
        enum Side {
            Vm(watcher::Event<VirtualMachine>),
            Vmi(watcher::Event<VirtualMachineInstance>),
        }
        #[derive(Default)]
        struct St {
            vm: Option<VirtualMachine>,
            vmi: Option<VirtualMachineInstance>,
            vm_buf: Option<VirtualMachine>,
            vmi_buf: Option<VirtualMachineInstance>,
            vm_ready: bool,
            vmi_ready: bool,
        }
        let wc = watcher::Config::default().fields(&format!("metadata.name={}", r.name));
        let a = watcher(self.api::<VirtualMachine>(&r.namespace), wc.clone())
            .default_backoff()
            .map(|e| e.map(Side::Vm));
        let b = watcher(self.api::<VirtualMachineInstance>(&r.namespace), wc)
            .default_backoff()
            .map(|e| e.map(Side::Vmi));
        let stats = Arc::clone(&self.inner.stats);
        let res = r.to_string();
        stream::select(a, b)
            .scan(St::default(), move |st, ev| {
                use watcher::Event as E;
                let out = match ev {
                    Err(e) => Some(Err(crate::error::map_watch(e, "watch", &res))),
                    Ok(side) => {
                        let changed = match side {
                            Side::Vm(E::Apply(o)) => {
                                stats.watch_event();
                                st.vm = Some(o);
                                true
                            }
                            Side::Vm(E::Delete(_)) => {
                                stats.watch_event();
                                st.vm = None;
                                true
                            }
                            Side::Vm(E::Init) => {
                                st.vm_buf = None;
                                false
                            }
                            Side::Vm(E::InitApply(o)) => {
                                stats.watch_event();
                                st.vm_buf = Some(o);
                                false
                            }
                            Side::Vm(E::InitDone) => {
                                st.vm = st.vm_buf.take();
                                st.vm_ready = true;
                                true
                            }
                            Side::Vmi(E::Apply(o)) => {
                                stats.watch_event();
                                st.vmi = Some(o);
                                true
                            }
                            Side::Vmi(E::Delete(_)) => {
                                stats.watch_event();
                                st.vmi = None;
                                true
                            }
                            Side::Vmi(E::Init) => {
                                st.vmi_buf = None;
                                false
                            }
                            Side::Vmi(E::InitApply(o)) => {
                                stats.watch_event();
                                st.vmi_buf = Some(o);
                                false
                            }
                            Side::Vmi(E::InitDone) => {
                                st.vmi = st.vmi_buf.take();
                                st.vmi_ready = true;
                                true
                            }
                        };
                        (changed && st.vm_ready && st.vmi_ready)
                            .then(|| Ok((st.vm.clone(), st.vmi.clone())))
                    }
                };
                futures::future::ready(Some(out))
            })
            .filter_map(futures::future::ready)
            .boxed()
    }

    /// Power states of `r` from now on (deduplicated). Yields `NotFound` and ends when the VM is deleted.
    pub(crate) fn power_state_stream(
        &self,
        r: &VmRef,
        last: Option<PowerState>,
    ) -> impl Stream<Item = Result<PowerState>> + Send + 'static {
        let pairs = self.pair_stream(r);
        let r = r.clone();
        stream::unfold((pairs, last, false), move |(mut pairs, last, done)| {
            let r = r.clone();
            async move {
                if done {
                    return None;
                }
                loop {
                    match pairs.next().await? {
                        Err(e) => {
                            tracing::debug!(error = %e, "power-state watch error (retrying with backoff)")
                        }
                        Ok((None, _)) => {
                            let e = err(
                                ErrorKind::NotFound,
                                "watch_power_state",
                                &r.to_string(),
                                "VirtualMachine deleted",
                            );
                            return Some((Err(e), (pairs, last, true)));
                        }
                        Ok((Some(vm), vmi)) => match power_state_of(&vm, vmi.as_ref()) {
                            Ok(s) if Some(s) != last => {
                                return Some((Ok(s), (pairs, Some(s), false)));
                            }
                            _ => {}
                        },
                    }
                }
            }
        })
    }

    /// Waits (watch-based, no polling) until the power state satisfies `pred`.
    pub(crate) async fn wait_power_state(
        &self,
        r: &VmRef,
        pred: impl Fn(&PowerState) -> bool,
        timeout: Duration,
        op: &'static str,
    ) -> Result<PowerState> {
        let res = r.to_string();
        let fut = async {
            let mut s = self.power_state_stream(r, None).boxed();
            while let Some(item) = s.next().await {
                let st = item?;
                if pred(&st) {
                    return Ok(st);
                }
            }
            Err(err(ErrorKind::Unavailable, op, &res, "watch ended"))
        };
        tokio::time::timeout(timeout, fut)
            .unwrap_or_else(|_| {
                Err(err(
                    ErrorKind::Timeout,
                    op,
                    &res,
                    format!("not done within {timeout:?}"),
                ))
            })
            .await
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
}
