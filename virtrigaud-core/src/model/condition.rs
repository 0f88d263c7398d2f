//! [`Condition`]s reported in status, and helpers to set and find them.

use serde::{Deserialize, Serialize};

/// Whether a condition holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum ConditionStatus {
    /// It holds.
    True,
    /// It does not hold.
    False,
    /// Not known.
    #[default]
    Unknown,
}

impl From<bool> for ConditionStatus {
    fn from(b: bool) -> Self {
        if b {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        }
    }
}

/// Well-known condition types used in the seeds.
pub mod types {
    /// The object is ready for use.
    pub const READY: &str = "Ready";
    /// The VM is being created.
    pub const PROVISIONING: &str = "Provisioning";
    /// The VM is being reconfigured.
    pub const RECONFIGURING: &str = "Reconfiguring";
    /// The VM needs a power cycle for pending changes.
    pub const RECONFIGURE_PENDING_POWER_CYCLE: &str = "ReconfigurePendingPowerCycle";
    /// A snapshot is being created.
    pub const CREATING: &str = "Creating";
    /// A snapshot is being deleted.
    pub const DELETING: &str = "Deleting";
    /// A clone is in progress.
    pub const CLONING: &str = "Cloning";
    /// Clone customization is being applied.
    pub const CUSTOMIZING: &str = "Customizing";
}

/// One status condition (Kubernetes style).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Condition {
    /// Condition type, e.g. `Ready`.
    #[serde(rename = "type")]
    pub type_: String,
    /// True, False or Unknown.
    pub status: ConditionStatus,
    /// Machine-readable reason (CamelCase).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// Human-readable message.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// When the status last changed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    /// The generation the condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

impl Condition {
    /// A condition of `type_` with `status`, `reason` and `message`.
    pub fn new(
        type_: impl Into<String>,
        status: impl Into<ConditionStatus>,
        reason: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message: message.into(),
            last_transition_time: None,
            observed_generation: None,
        }
    }

    /// Set the transition time.
    pub fn at(mut self, time: impl Into<String>) -> Self {
        self.last_transition_time = Some(time.into());
        self
    }

    /// Whether the status is True.
    pub fn is_true(&self) -> bool {
        self.status == ConditionStatus::True
    }
}

/// Set or replace the condition of the same type. When the status is unchanged, the old
/// `lastTransitionTime` is kept (the transition did not happen now). Returns whether the
/// status changed.
///
/// ```
/// use virtrigaud_core::model::{Condition, ConditionStatus, find_condition, set_condition};
/// let mut conds = Vec::new();
/// set_condition(&mut conds, Condition::new("Ready", false, "Booting", "").at("t1"));
/// assert!(!set_condition(&mut conds, Condition::new("Ready", false, "Still", "").at("t2")));
/// assert_eq!(find_condition(&conds, "Ready").unwrap().last_transition_time.as_deref(), Some("t1"));
/// assert!(set_condition(&mut conds, Condition::new("Ready", true, "Up", "").at("t3")));
/// assert_eq!(find_condition(&conds, "Ready").unwrap().status, ConditionStatus::True);
/// ```
pub fn set_condition(conditions: &mut Vec<Condition>, mut condition: Condition) -> bool {
    match conditions.iter_mut().find(|c| c.type_ == condition.type_) {
        Some(existing) => {
            let changed = existing.status != condition.status;
            if !changed && existing.last_transition_time.is_some() {
                condition.last_transition_time = existing.last_transition_time.take();
            }
            *existing = condition;
            changed
        }
        None => {
            conditions.push(condition);
            true
        }
    }
}

/// The condition of `type_`, if present.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether the condition of `type_` is present and True.
pub fn is_condition_true(conditions: &[Condition], type_: &str) -> bool {
    find_condition(conditions, type_).is_some_and(Condition::is_true)
}

/// Remove the condition of `type_`; returns whether one was removed.
pub fn remove_condition(conditions: &mut Vec<Condition>, type_: &str) -> bool {
    let before = conditions.len();
    conditions.retain(|c| c.type_ != type_);
    conditions.len() != before
}
