//! Provider settings: [`KubeVirtConfig`], [`ConnectOptions`], the power API and rollout strategy.

use std::fmt;
use std::time::Duration;

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
    /// provider made with [`crate::KubeVirtProvider::with_client`] cannot see it). Credentials, query
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

/// Options for [`crate::KubeVirtProvider::connect`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ConnectOptions {
    /// Kubeconfig context (default: the current context).
    pub context: Option<String>,
    /// Skip TLS certificate verification. Off by default; an explicit, insecure opt-in.
    pub insecure_skip_tls_verify: bool,
}

impl ConnectOptions {
    /// **Do not verify the API server's TLS certificate** (the same name on every
    /// provider; sets [`ConnectOptions::insecure_skip_tls_verify`]). Logged as a warning
    /// at connect; only for throw-away lab clusters.
    pub fn danger_accept_invalid_certs(mut self) -> Self {
        self.insecure_skip_tls_verify = true;
        self
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
