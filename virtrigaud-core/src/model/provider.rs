//! `Provider` objects: connection settings in spec, declared capabilities in status.

use serde::{Deserialize, Serialize};

use super::condition::Condition;
use super::meta::{API_VERSION, ObjectMeta, ObjectRef};
use super::validate::{SpecErrors, Validate, join};
use crate::capabilities::ProviderCapabilities;

/// A `Provider` object. Unlike other kinds, `spec` and `metadata` may be absent (the
/// seeds show a capabilities response holding only `status`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct ProviderResource {
    /// API group and version.
    pub api_version: String,
    /// Always `Provider`.
    pub kind: String,
    /// Metadata.
    #[serde(default, skip_serializing_if = "is_default_meta")]
    pub metadata: ObjectMeta,
    /// Connection settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<ProviderSpec>,
    /// Capabilities and health.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ProviderStatus>,
}

fn is_default_meta(m: &ObjectMeta) -> bool {
    *m == ObjectMeta::default()
}

impl ProviderResource {
    /// The declared capabilities, if reported.
    pub fn capabilities(&self) -> Option<&DeclaredCapabilities> {
        self.status.as_ref().and_then(|s| s.capabilities.as_ref())
    }
}

impl Validate for ProviderResource {
    fn validate_at(&self, path: &str, errors: &mut SpecErrors) {
        if self.api_version != API_VERSION {
            errors.add(
                join(path, "apiVersion"),
                format!("must be {API_VERSION:?}"),
                &self.api_version,
            );
        }
        if self.kind != "Provider" {
            errors.add(join(path, "kind"), "must be \"Provider\"", &self.kind);
        }
        self.spec.validate_at(&join(path, "spec"), errors);
    }
}

/// Connection settings of a provider.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct ProviderSpec {
    /// Provider type: `vsphere`, `libvirt`, `proxmox` or `kubevirt`.
    #[serde(rename = "type")]
    pub type_: String,
    /// Endpoint URL or URI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Secret holding credentials (never inline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_secret_ref: Option<ObjectRef>,
    /// Skip TLS verification (explicit opt-in; off by default).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_skip_verify: bool,
}

impl Validate for ProviderSpec {
    fn validate_at(&self, path: &str, errors: &mut SpecErrors) {
        if !matches!(
            self.type_.as_str(),
            "vsphere" | "libvirt" | "proxmox" | "kubevirt"
        ) {
            errors.add(
                join(path, "type"),
                "must be one of vsphere, libvirt, proxmox, kubevirt",
                &self.type_,
            );
        }
        self.credential_secret_ref
            .validate_at(&join(path, "credentialSecretRef"), errors);
    }
}

/// Status of a provider.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct ProviderStatus {
    /// Declared capabilities (`supportsReconfigureOnline`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<DeclaredCapabilities>,
    /// Whether the provider is reachable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy: Option<bool>,
    /// Conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// `status.capabilities` of a `Provider` object: the flags, and the disk and network type
/// lists as the object carries them. Dereferences to the flags.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct DeclaredCapabilities {
    /// The flags (`supportsSnapshots`, …).
    #[serde(flatten)]
    pub flags: ProviderCapabilities,
    /// Disk types the provider can create.
    #[serde(default)]
    pub supported_disk_types: Vec<String>,
    /// Network adapter types the provider can create.
    #[serde(default)]
    pub supported_network_types: Vec<String>,
}

impl std::ops::Deref for DeclaredCapabilities {
    type Target = ProviderCapabilities;
    fn deref(&self) -> &ProviderCapabilities {
        &self.flags
    }
}

impl From<ProviderCapabilities> for DeclaredCapabilities {
    fn from(flags: ProviderCapabilities) -> Self {
        let owned = |l: &[&str]| l.iter().map(|s| (*s).to_owned()).collect();
        DeclaredCapabilities {
            flags,
            supported_disk_types: owned(flags.supported_disk_types),
            supported_network_types: owned(flags.supported_network_types),
        }
    }
}
