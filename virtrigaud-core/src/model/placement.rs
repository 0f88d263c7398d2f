//! `VMPlacementPolicy`: hard and soft placement constraints and anti-affinity.

use serde::{Deserialize, Serialize};

use super::condition::Condition;
use super::meta::{API_VERSION, Object, Resource};
use super::validate::{SpecErrors, Validate, index, join};

/// A `VMPlacementPolicy` object.
pub type VMPlacementPolicy = Object<VMPlacementPolicySpec, VMPlacementPolicyStatus>;

/// Spec of a `VMPlacementPolicy`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct VMPlacementPolicySpec {
    /// Constraints that must be satisfied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hard: Option<PlacementConstraints>,
    /// Constraints satisfied on a best-effort basis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soft: Option<PlacementConstraints>,
    /// Spread rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anti_affinity: Option<AntiAffinity>,
}

impl Resource for VMPlacementPolicySpec {
    const API_VERSION: &'static str = API_VERSION;
    const KIND: &'static str = "VMPlacementPolicy";
}

impl Validate for VMPlacementPolicySpec {
    fn validate_at(&self, path: &str, errors: &mut SpecErrors) {
        self.hard.validate_at(&join(path, "hard"), errors);
        self.soft.validate_at(&join(path, "soft"), errors);
    }
}

/// A set of allowed locations; an empty list places no constraint on that dimension.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct PlacementConstraints {
    /// Clusters.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clusters: Vec<String>,
    /// Datastores / storage pools.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub datastores: Vec<String>,
    /// Hosts / nodes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Folders (vSphere inventory paths).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub folders: Vec<String>,
    /// Resource pools.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resource_pools: Vec<String>,
    /// Zones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub zones: Vec<String>,
}

impl Validate for PlacementConstraints {
    fn validate_at(&self, path: &str, errors: &mut SpecErrors) {
        let lists: [(&str, &Vec<String>); 6] = [
            ("clusters", &self.clusters),
            ("datastores", &self.datastores),
            ("hosts", &self.hosts),
            ("folders", &self.folders),
            ("resourcePools", &self.resource_pools),
            ("zones", &self.zones),
        ];
        for (field, list) in lists {
            let p = join(path, field);
            for (i, v) in list.iter().enumerate() {
                errors.require_name(index(&p, i), v);
            }
        }
    }
}

/// Anti-affinity: spread the VMs that use the policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct AntiAffinity {
    /// Spread across hosts.
    #[serde(default)]
    pub host_anti_affinity: bool,
    /// Spread across clusters.
    #[serde(default)]
    pub cluster_anti_affinity: bool,
    /// Spread across datastores.
    #[serde(default)]
    pub datastore_anti_affinity: bool,
}

/// Status of a `VMPlacementPolicy`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct VMPlacementPolicyStatus {
    /// VMs that use the policy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub used_by_vms: Vec<String>,
    /// Conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
