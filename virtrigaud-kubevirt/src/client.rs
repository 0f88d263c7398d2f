//! The wire: the kube client, typed API handles, reads, guarded patches, KubeVirt's
//! subresource calls and the conflict-retry loop. Requests are counted once, in the client's
//! HTTP stack ([`crate::stats`]).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, Resource};
use serde_json::Value;
use virtrigaud_core::layers::RetryPolicy;
use virtrigaud_core::{Error, ErrorKind, PowerState, Result, ResultExt};

use crate::PROVIDER_TYPE;
use crate::armed::Armed;
use crate::config::{KubeVirtConfig, RolloutStrategy, endpoint_identity};
use crate::error::{Call, KubeError, to_core_error};
use crate::id::VmRef;
use crate::shared::SharedWatches;
use crate::state::{StateError, power_state_of};
use crate::stats::ApiStats;
use crate::types::{KubeVirt, VirtualMachine, VirtualMachineInstance};

/// A KubeVirt subresource call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sub {
    Start,
    Stop,
    Restart,
    SoftReboot,
    Pause,
    Unpause,
    Reset,
}

impl Sub {
    fn path(self) -> (&'static str, &'static str) {
        match self {
            Sub::Start => ("virtualmachines", "start"),
            Sub::Stop => ("virtualmachines", "stop"),
            Sub::Restart => ("virtualmachines", "restart"),
            Sub::SoftReboot => ("virtualmachineinstances", "softreboot"),
            Sub::Pause => ("virtualmachineinstances", "pause"),
            Sub::Unpause => ("virtualmachineinstances", "unpause"),
            Sub::Reset => ("virtualmachineinstances", "reset"),
        }
    }
}

/// One connection to a cluster: the client, the settings, the counters and what our pending
/// stop requests changed. Every operation module works on it; the provider holds one.
pub(crate) struct Connection {
    pub(crate) client: Client,
    pub(crate) config: KubeVirtConfig,
    pub(crate) namespace: String,
    pub(crate) stats: ApiStats,
    /// `scheme://host:port[/path]` of the API server, without credentials (`""`: unknown).
    pub(crate) endpoint: String,
    /// The shared VM / VMI watches (one pair per namespace while anyone subscribes).
    pub(crate) shared: SharedWatches,
    /// What our pending stop requests changed, per `namespace/name` (for `cancel_shutdown`).
    armed: Mutex<HashMap<String, Armed>>,
}

impl Connection {
    pub(crate) fn new(
        client: Client,
        config: KubeVirtConfig,
        stats: ApiStats,
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
        Connection {
            client,
            config,
            namespace,
            stats,
            endpoint,
            shared: SharedWatches::default(),
            armed: Mutex::default(),
        }
    }

    /// The stop records (a poisoned lock only means a panic elsewhere; the map stays usable).
    pub(crate) fn armed_lock(&self) -> MutexGuard<'_, HashMap<String, Armed>> {
        self.armed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn api<K>(&self, ns: &str) -> Api<K>
    where
        K: Resource<Scope = kube::core::NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), ns)
    }

    /// Patch parameters naming our field manager.
    fn pp(&self) -> PatchParams {
        PatchParams {
            field_manager: Some(self.config.field_manager.clone()),
            ..Default::default()
        }
    }

    /// Reads the VM.
    pub(crate) async fn get_vm(&self, r: &VmRef, op: &'static str) -> Result<VirtualMachine> {
        self.api::<VirtualMachine>(&r.namespace)
            .get(&r.name)
            .await
            .map_err(|e| to_core_error(e, op, Some(&r.to_string())))
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
            .map_err(|e| to_core_error(e, op, Some(&r.to_string())))
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
            .map_err(|e| Error::internal("bad JSON patch").with_source(e))
            .ctx(PROVIDER_TYPE, op, resource)?;
        let p = Patch::Json::<()>(patch);
        let res = if status {
            api.patch_status(name, &self.pp(), &p).await
        } else {
            api.patch(name, &self.pp(), &p).await
        };
        res.map_err(|e| to_core_error(KubeError::Client(e, Call::GuardedPatch), op, Some(resource)))
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
            .map_err(|e| to_core_error(e, op, Some(resource)))
    }

    /// `PUT /apis/subresources.kubevirt.io/v1/namespaces/{ns}/{kind}/{name}/{verb}` with a JSON body.
    pub(crate) async fn subresource(
        &self,
        r: &VmRef,
        sub: Sub,
        body: Value,
        op: &'static str,
    ) -> Result<()> {
        let res = r.to_string();
        let (kind, verb) = sub.path();
        let uri = format!(
            "/apis/subresources.kubevirt.io/v1/namespaces/{}/{kind}/{}/{verb}",
            r.namespace, r.name
        );
        let bytes = serde_json::to_vec(&body)
            .map_err(|e| Error::internal("encode").with_source(e))
            .ctx(PROVIDER_TYPE, op, &res)?;
        let req = http::Request::put(uri)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(bytes)
            .map_err(|e| Error::internal("request").with_source(e))
            .ctx(PROVIDER_TYPE, op, &res)?;
        self.client
            .request_text(req)
            .await
            .map_err(|e| to_core_error(KubeError::Client(e, Call::Subresource), op, Some(&res)))?;
        Ok(())
    }

    /// Reads the cluster's rollout strategy (configured, else from the KubeVirt CR, else `Stage`).
    pub(crate) async fn rollout_strategy(&self) -> RolloutStrategy {
        if let Some(s) = self.config.rollout_strategy {
            return s;
        }
        let api: kube::Api<KubeVirt> = kube::Api::all(self.client.clone());
        match api.list(&ListParams::default()).await {
            Ok(list) => {
                let live = list.items.iter().any(|kv| {
                    kv.spec
                        .configuration
                        .as_ref()
                        .and_then(|c| c.get("vmRolloutStrategy"))
                        .and_then(|v| v.as_str())
                        == Some("LiveUpdate")
                });
                if live {
                    RolloutStrategy::LiveUpdate
                } else {
                    RolloutStrategy::Stage
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the KubeVirt CR; assuming the Stage rollout strategy");
                RolloutStrategy::Stage
            }
        }
    }

    /// Runs `f` until it does not fail with `Conflict`, at most `conflict_retries` extra times
    /// and at once (each attempt re-reads what it needs): core's [`RetryPolicy`] with no pause.
    pub(crate) async fn retry_conflicts<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        RetryPolicy::new(Duration::ZERO, self.config.conflict_retries as usize)
            .retry_if(
                |e| e.kind() == ErrorKind::Conflict,
                f,
                |e, _| {
                    self.stats.conflict_retry();
                    tracing::debug!(error = %e, "conflict: re-reading and retrying");
                },
            )
            .await
    }
}

/// Derives the power state of a VM/VMI pair.
pub(crate) fn derive(
    vm: &VirtualMachine,
    vmi: Option<&VirtualMachineInstance>,
    op: &'static str,
    r: &VmRef,
) -> Result<PowerState> {
    power_state_of(vm, vmi)
        .map_err(|StateError::UnknownPhase| {
            Error::unavailable("VMI phase is Unknown (its node is unreachable)")
        })
        .ctx(PROVIDER_TYPE, op, &r.to_string())
}
