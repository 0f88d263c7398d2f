//! [`Layered`]: a provider with a layer around every call.

use async_trait::async_trait;

use super::call::{Args, Call, Layer, Next};
use crate::capabilities::{ProviderCapabilities, VmCapabilities};
use crate::clone::{CloneOptions, CloneResult, Cloner};
use crate::error::{Error, Result};
use crate::placement::{Inventory, Placer};
use crate::provider::{
    DeleteOptions, ListOptions, PowerOffOptions, PowerStateStream, Provider, ReconfigureRequest,
    ReconfigureResult, ShutdownRequestOptions, StartOptions, VmCreateSpec,
};
use crate::snapshot::{
    DeleteSnapshotOptions, RevertOptions, SnapshotInfo, SnapshotOptions, Snapshotter,
};
use crate::vm::{AgentStatus, Incarnation, PowerState, ShutdownChannel, VmDescription, VmId};

/// `inner` with `layer` around each of its calls, including those of its
/// [`Snapshotter`] and [`Cloner`]. Capabilities, identity and the placer pass through.
#[derive(Debug)]
pub struct Layered<P, L> {
    inner: P,
    layer: L,
}

impl<P, L> Layered<P, L> {
    /// Wraps `inner` in `layer`.
    pub fn new(inner: P, layer: L) -> Self {
        Layered { inner, layer }
    }

    /// The wrapped provider.
    pub fn inner(&self) -> &P {
        &self.inner
    }

    /// The layer.
    pub fn layer_ref(&self) -> &L {
        &self.layer
    }
}

/// `provider.layer(l)`: the builder-style way to stack layers.
pub trait LayerExt: Provider + Sized {
    /// This provider with `layer` around every call.
    fn layer<L: Layer>(self, layer: L) -> Layered<Self, L> {
        Layered::new(self, layer)
    }
}

impl<P: Provider> LayerExt for P {}

impl<P: Provider, L: Layer> Layered<P, L> {
    fn on<'a>(&self, operation: &'static str, vm: &'a VmId) -> Call<'a> {
        Call::on(self.inner.provider_type(), operation, vm)
    }

    fn read<'a>(&self, operation: &'static str, vm: &'a VmId) -> Call<'a> {
        self.on(operation, vm).idempotent()
    }

    fn snap(&self) -> Result<&dyn Snapshotter> {
        self.inner.snapshotter().ok_or_else(|| {
            Error::unsupported("snapshots").with_provider(self.inner.provider_type())
        })
    }

    fn clones(&self) -> Result<&dyn Cloner> {
        self.inner
            .cloner()
            .ok_or_else(|| Error::unsupported("clones").with_provider(self.inner.provider_type()))
    }
}

#[async_trait]
impl<P: Provider, L: Layer> Provider for Layered<P, L> {
    fn provider_type(&self) -> &'static str {
        self.inner.provider_type()
    }

    fn capabilities(&self) -> ProviderCapabilities {
        self.inner.capabilities()
    }

    fn instance_id(&self) -> String {
        self.inner.instance_id()
    }

    async fn vm_capabilities(&self, vm: &VmId) -> Result<VmCapabilities> {
        let next = Next::new(|| self.inner.vm_capabilities(vm));
        self.layer
            .call(self.read("vm_capabilities", vm), next)
            .await
    }

    async fn power_state(&self, vm: &VmId) -> Result<PowerState> {
        let next = Next::new(|| self.inner.power_state(vm));
        self.layer.call(self.read("power_state", vm), next).await
    }

    async fn watch_power_state(&self, vm: &VmId) -> Result<Option<PowerStateStream>> {
        let next = Next::new(|| self.inner.watch_power_state(vm));
        self.layer
            .call(self.read("watch_power_state", vm), next)
            .await
    }

    async fn start(&self, vm: &VmId, opts: &StartOptions) -> Result<()> {
        let next = Next::new(|| self.inner.start(vm, opts));
        self.layer.call(self.on("start", vm), next).await
    }

    async fn power_off(&self, vm: &VmId, opts: &PowerOffOptions) -> Result<()> {
        let next = Next::new(|| self.inner.power_off(vm, opts));
        self.layer.call(self.on("power_off", vm), next).await
    }

    async fn power_state_and_agent(&self, vm: &VmId) -> Result<(PowerState, Option<AgentStatus>)> {
        let next = Next::new(|| self.inner.power_state_and_agent(vm));
        self.layer.call(self.read("power_state", vm), next).await
    }

    async fn probe_agent(&self, vm: &VmId) -> Result<AgentStatus> {
        let next = Next::new(|| self.inner.probe_agent(vm));
        self.layer.call(self.read("probe_agent", vm), next).await
    }

    async fn request_shutdown(
        &self,
        vm: &VmId,
        channel: ShutdownChannel,
        opts: &ShutdownRequestOptions,
    ) -> Result<()> {
        let next = Next::new(|| self.inner.request_shutdown(vm, channel, opts));
        self.layer.call(self.on("request_shutdown", vm), next).await
    }

    async fn incarnation(&self, vm: &VmId) -> Result<Option<Incarnation>> {
        let next = Next::new(|| self.inner.incarnation(vm));
        self.layer.call(self.read("incarnation", vm), next).await
    }

    async fn cancel_shutdown(&self, vm: &VmId) -> Result<()> {
        let next = Next::new(|| self.inner.cancel_shutdown(vm));
        self.layer.call(self.on("cancel_shutdown", vm), next).await
    }

    async fn reset(&self, vm: &VmId) -> Result<()> {
        let next = Next::new(|| self.inner.reset(vm));
        self.layer.call(self.on("reset", vm), next).await
    }

    async fn reboot(&self, vm: &VmId, channel: ShutdownChannel) -> Result<()> {
        let next = Next::new(|| self.inner.reboot(vm, channel));
        self.layer.call(self.on("reboot", vm), next).await
    }

    async fn pause(&self, vm: &VmId) -> Result<()> {
        let next = Next::new(|| self.inner.pause(vm));
        self.layer.call(self.on("pause", vm), next).await
    }

    async fn resume(&self, vm: &VmId) -> Result<()> {
        let next = Next::new(|| self.inner.resume(vm));
        self.layer.call(self.on("resume", vm), next).await
    }

    async fn create(&self, spec: &VmCreateSpec) -> Result<VmId> {
        let call = Call::new(self.provider_type(), "create", Some(spec.name.as_str()))
            .with_args(Args::Create(spec));
        let next = Next::new(|| self.inner.create(spec));
        self.layer.call(call, next).await
    }

    async fn delete(&self, vm: &VmId, opts: &DeleteOptions) -> Result<()> {
        let next = Next::new(|| self.inner.delete(vm, opts));
        self.layer.call(self.on("delete", vm), next).await
    }

    async fn reconfigure(
        &self,
        vm: &VmId,
        change: &ReconfigureRequest,
    ) -> Result<ReconfigureResult> {
        let call = self
            .on("reconfigure", vm)
            .with_args(Args::Reconfigure(change));
        let next = Next::new(|| self.inner.reconfigure(vm, change));
        self.layer.call(call, next).await
    }

    async fn describe(&self, vm: &VmId) -> Result<VmDescription> {
        let next = Next::new(|| self.inner.describe(vm));
        self.layer.call(self.read("describe", vm), next).await
    }

    async fn list_vms(&self, opts: &ListOptions) -> Result<Vec<VmDescription>> {
        let call = Call::new(self.provider_type(), "list_vms", None).idempotent();
        let next = Next::new(|| self.inner.list_vms(opts));
        self.layer.call(call, next).await
    }

    async fn inventory(&self) -> Result<Inventory> {
        let call = Call::new(self.provider_type(), "inventory", None).idempotent();
        let next = Next::new(|| self.inner.inventory());
        self.layer.call(call, next).await
    }

    fn snapshotter(&self) -> Option<&dyn Snapshotter> {
        self.inner.snapshotter().map(|_| self as &dyn Snapshotter)
    }

    fn cloner(&self) -> Option<&dyn Cloner> {
        self.inner.cloner().map(|_| self as &dyn Cloner)
    }

    fn placer(&self) -> Option<&dyn Placer> {
        self.inner.placer()
    }
}

#[async_trait]
impl<P: Provider, L: Layer> Snapshotter for Layered<P, L> {
    async fn create_snapshot(&self, vm: &VmId, opts: &SnapshotOptions) -> Result<SnapshotInfo> {
        let s = self.snap()?;
        let next = Next::new(|| s.create_snapshot(vm, opts));
        self.layer.call(self.on("create_snapshot", vm), next).await
    }

    async fn list_snapshots(&self, vm: &VmId) -> Result<Vec<SnapshotInfo>> {
        let s = self.snap()?;
        let next = Next::new(|| s.list_snapshots(vm));
        self.layer.call(self.read("list_snapshots", vm), next).await
    }

    async fn revert_snapshot(&self, vm: &VmId, snapshot: &str, opts: &RevertOptions) -> Result<()> {
        let s = self.snap()?;
        let next = Next::new(|| s.revert_snapshot(vm, snapshot, opts));
        self.layer.call(self.on("revert_snapshot", vm), next).await
    }

    async fn delete_snapshot(
        &self,
        vm: &VmId,
        snapshot: &str,
        opts: &DeleteSnapshotOptions,
    ) -> Result<()> {
        let s = self.snap()?;
        let next = Next::new(|| s.delete_snapshot(vm, snapshot, opts));
        self.layer.call(self.on("delete_snapshot", vm), next).await
    }
}

#[async_trait]
impl<P: Provider, L: Layer> Cloner for Layered<P, L> {
    async fn clone_vm(&self, source: &VmId, opts: &CloneOptions) -> Result<CloneResult> {
        let c = self.clones()?;
        let call = self.on("clone_vm", source).with_args(Args::Clone(opts));
        let next = Next::new(|| c.clone_vm(source, opts));
        self.layer.call(call, next).await
    }
}
