//! A mockall mock of [`Provider`] for interaction tests (feature `mock`).
//!
//! Use it to assert calls ("power_off called exactly once, after the deadline"); use the
//! [`crate::sim::Simulator`] for behaviour.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap().block_on(async {
//! use std::sync::Arc;
//! use virtrigaud_core::mock::MockProvider;
//! use virtrigaud_core::shutdown::{ShutdownManager, ShutdownOutcome, ShutdownPolicy};
//! use virtrigaud_core::{OffReason, PowerState, ProviderCapabilities};
//!
//! let mut mock = MockProvider::new();
//! mock.expect_provider_type().return_const("mock");
//! mock.expect_capabilities().returning(ProviderCapabilities::default);
//! mock.expect_power_state().returning(|_| Ok(PowerState::Off(OffReason::Unknown)));
//! mock.expect_power_off().never();
//! let manager = ShutdownManager::new(Arc::new(mock));
//! let report = manager.shutdown(&"vm-1".into(), ShutdownPolicy::default()).await?;
//! assert!(matches!(report.outcome, ShutdownOutcome::AlreadyOff));
//! # Ok::<(), virtrigaud_core::Error>(()) }).unwrap();
//! ```

#![allow(missing_docs)]

use async_trait::async_trait;

use crate::capabilities::{ProviderCapabilities, VmCapabilities};
use crate::error::Result;
use crate::placement::Inventory;
use crate::provider::{
    DeleteOptions, ListOptions, PowerOffOptions, PowerStateStream, Provider, ReconfigureRequest,
    ReconfigureResult, ShutdownRequestOptions, StartOptions, VmCreateSpec,
};
use crate::vm::{AgentStatus, PowerState, ShutdownChannel, VmDescription, VmId};

mockall::mock! {
    /// A mock [`Provider`].
    #[derive(Debug)]
    pub Provider {}

    #[async_trait]
    impl Provider for Provider {
        fn provider_type(&self) -> &'static str;
        fn capabilities(&self) -> ProviderCapabilities;
        async fn vm_capabilities(&self, vm: &VmId) -> Result<VmCapabilities>;
        async fn power_state(&self, vm: &VmId) -> Result<PowerState>;
        async fn watch_power_state(&self, vm: &VmId) -> Result<Option<PowerStateStream>>;
        async fn start(&self, vm: &VmId, opts: &StartOptions) -> Result<()>;
        async fn power_off(&self, vm: &VmId, opts: &PowerOffOptions) -> Result<()>;
        async fn probe_agent(&self, vm: &VmId) -> Result<AgentStatus>;
        async fn request_shutdown(
            &self,
            vm: &VmId,
            channel: ShutdownChannel,
            opts: &ShutdownRequestOptions,
        ) -> Result<()>;
        async fn reset(&self, vm: &VmId) -> Result<()>;
        async fn reboot(&self, vm: &VmId, channel: ShutdownChannel) -> Result<()>;
        async fn pause(&self, vm: &VmId) -> Result<()>;
        async fn resume(&self, vm: &VmId) -> Result<()>;
        async fn create(&self, spec: &VmCreateSpec) -> Result<VmId>;
        async fn delete(&self, vm: &VmId, opts: &DeleteOptions) -> Result<()>;
        async fn reconfigure(&self, vm: &VmId, change: &ReconfigureRequest) -> Result<ReconfigureResult>;
        async fn describe(&self, vm: &VmId) -> Result<VmDescription>;
        async fn list_vms(&self, opts: &ListOptions) -> Result<Vec<VmDescription>>;
        async fn inventory(&self) -> Result<Inventory>;
    }
}
