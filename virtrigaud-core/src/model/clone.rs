//! `VMClone`: a new VM from an existing one, optionally linked and customised.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::condition::Condition;
use super::meta::{API_VERSION, Object, ObjectRef, Resource};
use super::validate::{SpecErrors, Validate, index, join};

/// A `VMClone` object.
pub type VMClone = Object<VMCloneSpec, VMCloneStatus>;

/// Spec of a `VMClone`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct VMCloneSpec {
    /// The VM to clone.
    pub source_ref: ObjectRef,
    /// The VM to create.
    pub target: CloneTarget,
    /// Linked clone (shares the source's disks copy-on-write).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linked: Option<bool>,
    /// Power the clone on when done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power_on: Option<bool>,
    /// Guest customization.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customization: Option<CloneCustomization>,
}

impl Resource for VMCloneSpec {
    const API_VERSION: &'static str = API_VERSION;
    const KIND: &'static str = "VMClone";
}

impl Validate for VMCloneSpec {
    fn validate_at(&self, path: &str, errors: &mut SpecErrors) {
        self.source_ref
            .validate_at(&join(path, "sourceRef"), errors);
        self.target.validate_at(&join(path, "target"), errors);
        self.customization
            .validate_at(&join(path, "customization"), errors);
    }
}

/// `spec.target` of a clone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct CloneTarget {
    /// Name of the new VM.
    pub name: String,
    /// Namespace of the new VM (default: the clone's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Class of the new VM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_ref: Option<ObjectRef>,
    /// Placement policy of the new VM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement_ref: Option<ObjectRef>,
}

impl Validate for CloneTarget {
    fn validate_at(&self, path: &str, errors: &mut SpecErrors) {
        errors.require_name(join(path, "name"), &self.name);
        self.class_ref.validate_at(&join(path, "classRef"), errors);
        self.placement_ref
            .validate_at(&join(path, "placementRef"), errors);
    }
}

/// `spec.customization`: hostname, static networking, cloud-init.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct CloneCustomization {
    /// Guest hostname.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Per-interface settings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<CloneNetwork>,
    /// User data for the guest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data: Option<UserData>,
}

impl Validate for CloneCustomization {
    fn validate_at(&self, path: &str, errors: &mut SpecErrors) {
        if let Some(h) = &self.hostname
            && !is_hostname(h)
        {
            errors.add(
                join(path, "hostname"),
                "must be a DNS hostname (letters, digits, '-' and '.', labels of 1-63 characters)",
                h,
            );
        }
        self.networks.validate_at(&join(path, "networks"), errors);
    }
}

fn is_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// Static settings for one interface of the clone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct CloneNetwork {
    /// Interface / network name.
    pub name: String,
    /// Static IP address, optionally with a prefix length (`10.0.0.5/24`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_address: Option<String>,
    /// Default gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// DNS servers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<String>,
}

impl Validate for CloneNetwork {
    fn validate_at(&self, path: &str, errors: &mut SpecErrors) {
        errors.require_name(join(path, "name"), &self.name);
        if let Some(ip) = &self.ip_address
            && !is_ip_or_cidr(ip)
        {
            errors.add(
                join(path, "ipAddress"),
                "must be an IP address, optionally with /prefix",
                ip,
            );
        }
        if let Some(gw) = &self.gateway
            && gw.parse::<IpAddr>().is_err()
        {
            errors.add(join(path, "gateway"), "must be an IP address", gw);
        }
        let dns = join(path, "dns");
        for (i, d) in self.dns.iter().enumerate() {
            if d.parse::<IpAddr>().is_err() {
                errors.add(index(&dns, i), "must be an IP address", d);
            }
        }
    }
}

fn is_ip_or_cidr(s: &str) -> bool {
    match s.split_once('/') {
        None => s.parse::<IpAddr>().is_ok(),
        Some((ip, prefix)) => match (ip.parse::<IpAddr>(), prefix.parse::<u8>()) {
            (Ok(IpAddr::V4(_)), Ok(p)) => p <= 32,
            (Ok(IpAddr::V6(_)), Ok(p)) => p <= 128,
            _ => false,
        },
    }
}

/// `customization.userData`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct UserData {
    /// cloud-init user data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_init: Option<CloudInit>,
}

/// cloud-init user data, inline or from a secret. Its `Debug` output shows the inline
/// document's size, never its text.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct CloudInit {
    /// The document itself (`#cloud-config …`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline: Option<String>,
    /// A secret holding the document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<ObjectRef>,
}

impl std::fmt::Debug for CloudInit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloudInit")
            .field("inline", &crate::redact::Redacted(self.inline.as_deref()))
            .field("secret_ref", &self.secret_ref)
            .finish()
    }
}

/// Phase of a clone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[non_exhaustive]
pub enum ClonePhase {
    /// Not started.
    Pending,
    /// Copying.
    Cloning,
    /// Applying customization.
    Customizing,
    /// Done.
    Ready,
    /// Failed.
    Failed,
}

/// Status of a `VMClone`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct VMCloneStatus {
    /// Phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<ClonePhase>,
    /// Provider-side id of the new VM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_id: Option<String>,
    /// Human-readable detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Conditions (`Ready`, `Cloning`, `Customizing`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
