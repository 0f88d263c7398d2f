//! `VMSet`: N VMs from one template, replaced by rolling update or recreate.

use serde::{Deserialize, Serialize};

use super::condition::Condition;
use super::intorpercent::IntOrPercent;
use super::meta::{API_VERSION, LabelSelector, Object, ObjectMeta, Resource};
use super::validate::{SpecErrors, Validate, join};
use super::vm::VirtualMachineSpec;

/// A `VMSet` object.
pub type VMSet = Object<VMSetSpec, VMSetStatus>;

/// Kubernetes' default `maxUnavailable` / `maxSurge` when absent.
pub const DEFAULT_ROLLING_PERCENT: IntOrPercent = IntOrPercent::Percent(25);

/// Spec of a `VMSet`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct VMSetSpec {
    /// Desired number of VMs (default 1; must not be negative).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Which VMs belong to the set; must match the template's labels.
    #[serde(default)]
    pub selector: LabelSelector,
    /// The VM template.
    pub template: VmTemplate,
    /// How VMs are replaced when the template changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_strategy: Option<UpdateStrategy>,
}

impl Resource for VMSetSpec {
    const API_VERSION: &'static str = API_VERSION;
    const KIND: &'static str = "VMSet";
}

impl VMSetSpec {
    /// Desired replicas (1 when absent, 0 when negative).
    pub fn replicas(&self) -> u32 {
        self.replicas.map_or(1, |r| u32::try_from(r).unwrap_or(0))
    }
}

impl Validate for VMSetSpec {
    fn validate_at(&self, path: &str, errors: &mut SpecErrors) {
        if let Some(r) = self.replicas
            && r < 0
        {
            errors.add(join(path, "replicas"), "must not be negative", r);
        }
        if !self.selector.matches(&self.template.metadata.labels) {
            errors.add_rule(
                join(path, "selector.matchLabels"),
                "must match spec.template.metadata.labels",
            );
        }
        self.template
            .spec
            .validate_at(&join(path, "template.spec"), errors);
        self.update_strategy
            .validate_at(&join(path, "updateStrategy"), errors);
    }
}

/// `spec.template`: metadata and spec of each VM.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct VmTemplate {
    /// Labels and annotations given to each VM.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Spec of each VM.
    #[serde(default)]
    pub spec: VirtualMachineSpec,
}

/// How a set replaces VMs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[non_exhaustive]
pub enum UpdateStrategyType {
    /// Replace a few at a time, bounded by `maxUnavailable` and `maxSurge`.
    #[default]
    RollingUpdate,
    /// Delete all old VMs, then create new ones.
    Recreate,
}

/// `spec.updateStrategy`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct UpdateStrategy {
    /// Strategy type (default `RollingUpdate`).
    #[serde(default, rename = "type")]
    pub type_: UpdateStrategyType,
    /// Rolling update bounds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolling_update: Option<RollingUpdate>,
}

impl Validate for UpdateStrategy {
    fn validate_at(&self, path: &str, errors: &mut SpecErrors) {
        if self.type_ == UpdateStrategyType::Recreate && self.rolling_update.is_some() {
            errors.add_rule(
                join(path, "rollingUpdate"),
                "must not be set when type is Recreate",
            );
        }
        self.rolling_update
            .validate_at(&join(path, "rollingUpdate"), errors);
    }
}

/// Rolling update bounds, as counts or percentages of `replicas`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct RollingUpdate {
    /// VMs that may be unavailable during the update (default 25 %, rounded down).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrPercent>,
    /// VMs that may exist above `replicas` (default 25 %, rounded up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_surge: Option<IntOrPercent>,
}

impl RollingUpdate {
    /// Resolve `(max_unavailable, max_surge)` against `replicas` as Kubernetes does:
    /// unavailable rounds down, surge rounds up, and if both come to 0, unavailable is 1
    /// so the update can progress.
    ///
    /// ```
    /// use virtrigaud_core::model::{IntOrPercent, RollingUpdate};
    /// let mut ru = RollingUpdate::default();
    /// assert_eq!(ru.resolve(10), (2, 3));
    /// ru.max_unavailable = Some(IntOrPercent::Percent(10));
    /// ru.max_surge = Some(IntOrPercent::Count(0));
    /// assert_eq!(ru.resolve(3), (1, 0));
    /// ```
    pub fn resolve(&self, replicas: u32) -> (u32, u32) {
        let unavailable = self
            .max_unavailable
            .unwrap_or(DEFAULT_ROLLING_PERCENT)
            .resolve_down(replicas);
        let surge = self
            .max_surge
            .unwrap_or(DEFAULT_ROLLING_PERCENT)
            .resolve_up(replicas);
        if unavailable == 0 && surge == 0 {
            (1, 0)
        } else {
            (unavailable, surge)
        }
    }
}

impl Validate for RollingUpdate {
    fn validate_at(&self, path: &str, errors: &mut SpecErrors) {
        let unavailable = self.max_unavailable.unwrap_or(DEFAULT_ROLLING_PERCENT);
        let surge = self.max_surge.unwrap_or(DEFAULT_ROLLING_PERCENT);
        if unavailable.is_zero() && surge.is_zero() {
            errors.add_rule(
                join(path, "maxUnavailable"),
                "maxUnavailable and maxSurge must not both be 0",
            );
        }
        // Like Kubernetes: only maxUnavailable is capped at 100 % (surge may exceed it).
        if let IntOrPercent::Percent(p) = unavailable
            && p > 100
        {
            errors.add(
                join(path, "maxUnavailable"),
                "a percentage must not exceed 100%",
                unavailable,
            );
        }
    }
}

/// Status of a `VMSet`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct VMSetStatus {
    /// VMs that exist.
    #[serde(default)]
    pub replicas: u32,
    /// VMs that are ready.
    #[serde(default)]
    pub ready_replicas: u32,
    /// VMs on the current template.
    #[serde(default)]
    pub updated_replicas: u32,
    /// VMs available to serve.
    #[serde(default)]
    pub available_replicas: u32,
    /// The spec generation this status reflects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
