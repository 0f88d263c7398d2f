//! The [`Cloner`] trait: full and linked clones with guest customization.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::placement::Placement;
use crate::vm::VmId;

/// A static network configuration applied to a clone.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct NetworkCustomization {
    /// Network / interface name.
    pub name: String,
    /// Static IP address (with or without prefix); `None` for DHCP.
    pub ip_address: Option<String>,
    /// Gateway.
    pub gateway: Option<String>,
    /// DNS servers.
    #[serde(default)]
    pub dns: Vec<String>,
}

/// Guest customization applied to a clone through the provider's native mechanism. Its
/// `Debug` output shows the user data's size, never its text.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Customization {
    /// Guest hostname.
    pub hostname: Option<String>,
    /// Network settings.
    #[serde(default)]
    pub networks: Vec<NetworkCustomization>,
    /// cloud-init user data.
    pub cloud_init_user_data: Option<String>,
}

impl std::fmt::Debug for Customization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Customization")
            .field("hostname", &self.hostname)
            .field("networks", &self.networks)
            .field(
                "cloud_init_user_data",
                &crate::redact::Redacted(self.cloud_init_user_data.as_deref()),
            )
            .finish()
    }
}

impl Customization {
    /// Whether there is nothing to customize.
    pub fn is_empty(&self) -> bool {
        self.hostname.is_none() && self.networks.is_empty() && self.cloud_init_user_data.is_none()
    }
}

/// Options for [`Cloner::clone_vm`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct CloneOptions {
    /// Name of the new VM.
    pub target_name: String,
    /// Make a linked clone (copy-on-write over the source's disks).
    pub linked: bool,
    /// Clone from this snapshot of the source (linked clones usually need one).
    pub snapshot: Option<String>,
    /// Power the clone on when done.
    pub power_on: bool,
    /// Guest customization.
    pub customization: Option<Customization>,
    /// Where to put the clone (host, cluster, datastore); empty keeps the source's.
    pub placement: Placement,
}

impl CloneOptions {
    /// Options for a clone named `target_name`.
    pub fn new(target_name: impl Into<String>) -> Self {
        CloneOptions {
            target_name: target_name.into(),
            ..Default::default()
        }
    }
    /// Makes the clone linked.
    pub fn linked(mut self, linked: bool) -> Self {
        self.linked = linked;
        self
    }
    /// Powers the clone on when done.
    pub fn power_on(mut self, power_on: bool) -> Self {
        self.power_on = power_on;
        self
    }
    /// Applies guest customization.
    pub fn with_customization(mut self, customization: Customization) -> Self {
        self.customization = Some(customization);
        self
    }
    /// Puts the clone at `placement`.
    pub fn with_placement(mut self, placement: Placement) -> Self {
        self.placement = placement;
        self
    }
}

/// What [`Cloner::clone_vm`] produced.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CloneResult {
    /// The new VM.
    pub vm: VmId,
    /// Whether it is a linked clone.
    pub linked: bool,
    /// Whether customization was applied.
    pub customized: bool,
}

impl CloneResult {
    /// A result for `vm`.
    pub fn new(vm: VmId, linked: bool, customized: bool) -> Self {
        CloneResult {
            vm,
            linked,
            customized,
        }
    }
}

/// Clone support of a provider.
///
/// A failed clone must leave nothing behind: providers delete a half-made clone before
/// returning the error.
#[async_trait]
pub trait Cloner: Send + Sync {
    /// Clones `source` into a new VM.
    async fn clone_vm(&self, source: &VmId, opts: &CloneOptions) -> Result<CloneResult>;
}
