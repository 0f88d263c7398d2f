//! `VMSnapshot`: a point-in-time snapshot of a VM, with a retention policy.

use serde::{Deserialize, Serialize};

use super::condition::Condition;
use super::duration::{HumanDuration, MAX_RETENTION_AGE, check_at_most};
use super::meta::{API_VERSION, Object, ObjectRef, Resource};
use super::validate::{SpecErrors, Validate, join};

/// A `VMSnapshot` object.
pub type VMSnapshot = Object<VMSnapshotSpec, VMSnapshotStatus>;

/// Spec of a `VMSnapshot`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct VMSnapshotSpec {
    /// The VM to snapshot.
    pub vm_ref: ObjectRef,
    /// Preferred snapshot name on the provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_hint: Option<String>,
    /// Include memory state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<bool>,
    /// Quiesce guest filesystems first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiesce: Option<bool>,
    /// Free-text description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// When the snapshot is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_policy: Option<RetentionPolicy>,
}

impl Resource for VMSnapshotSpec {
    const API_VERSION: &'static str = API_VERSION;
    const KIND: &'static str = "VMSnapshot";
}

impl Validate for VMSnapshotSpec {
    fn validate_at(&self, path: &str, errors: &mut SpecErrors) {
        self.vm_ref.validate_at(&join(path, "vmRef"), errors);
        self.retention_policy
            .validate_at(&join(path, "retentionPolicy"), errors);
    }
}

/// `spec.retentionPolicy` of a snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct RetentionPolicy {
    /// Delete after this age (`"7d"` is seven 24-hour days). Greater than zero and at
    /// most [`MAX_RETENTION_AGE`] (`"100y"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<HumanDuration>,
    /// Keep at most this many snapshots of the VM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_count: Option<u32>,
    /// Delete the snapshot when its VM is deleted.
    #[serde(
        default,
        rename = "deleteOnVMDelete",
        skip_serializing_if = "Option::is_none"
    )]
    pub delete_on_vm_delete: Option<bool>,
}

impl Validate for RetentionPolicy {
    fn validate_at(&self, path: &str, errors: &mut SpecErrors) {
        if let Some(age) = self.max_age {
            if age.is_zero() {
                errors.add(join(path, "maxAge"), "must be greater than zero", age);
            }
            check_at_most(errors, join(path, "maxAge"), age, MAX_RETENTION_AGE);
        }
        if self.max_count == Some(0) {
            errors.add(join(path, "maxCount"), "must be at least 1", 0);
        }
    }
}

/// Phase of a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[non_exhaustive]
pub enum SnapshotPhase {
    /// Creation in progress.
    Creating,
    /// Available for use.
    Ready,
    /// Being removed.
    Deleting,
    /// The operation failed.
    Failed,
}

/// Status of a `VMSnapshot`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct VMSnapshotStatus {
    /// Phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<SnapshotPhase>,
    /// Provider-side snapshot id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_id: Option<String>,
    /// When it was created (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_time: Option<String>,
    /// Size in bytes, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    /// Human-readable detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Conditions (`Ready`, `Creating`, `Deleting`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
