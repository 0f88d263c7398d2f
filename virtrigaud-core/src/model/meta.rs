//! The object envelope shared by every kind: `apiVersion`, `kind`, `metadata`, `spec`, `status`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::validate::{SpecErrors, Validate, join};

/// The API version of virtrigaud's own kinds.
pub const API_VERSION: &str = "infra.virtrigaud.io/v1beta1";

/// A spec type that belongs to one kind of object.
pub trait Resource {
    /// The `apiVersion` objects of this kind carry.
    const API_VERSION: &'static str;
    /// The `kind` (e.g. `VirtualMachine`).
    const KIND: &'static str;
}

/// Object metadata: name, namespace, labels, annotations and a few server-set fields.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct ObjectMeta {
    /// Object name (required on top-level objects).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Namespace, when namespaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Server-assigned unique id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// Server-assigned generation of the spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// Opaque version for optimistic concurrency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    /// Creation time (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<String>,
    /// Finalizers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub finalizers: Vec<String>,
    /// When the object's deletion was requested (RFC 3339); reconcilers then clean up what
    /// the object made before it goes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_timestamp: Option<String>,
}

impl ObjectMeta {
    /// Metadata with just a name.
    pub fn named(name: impl Into<String>) -> Self {
        ObjectMeta {
            name: name.into(),
            ..Default::default()
        }
    }
}

/// A reference to another object by name (and optionally namespace), e.g. `providerRef`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct ObjectRef {
    /// Name of the referenced object.
    pub name: String,
    /// Namespace of the referenced object (default: the referrer's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

impl ObjectRef {
    /// A reference by name.
    pub fn new(name: impl Into<String>) -> Self {
        ObjectRef {
            name: name.into(),
            namespace: None,
        }
    }
}

impl Validate for ObjectRef {
    fn validate_at(&self, path: &str, errors: &mut SpecErrors) {
        errors.require_name(join(path, "name"), &self.name);
    }
}

/// A label selector (`matchLabels` only).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct LabelSelector {
    /// Every label here must be present with this value.
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
}

impl LabelSelector {
    /// Whether `labels` satisfy the selector (an empty selector matches everything).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k).is_some_and(|l| l == v))
    }
}

/// A whole object: `apiVersion`, `kind`, `metadata`, `spec` and optional `status`.
///
/// The per-kind aliases ([`super::VirtualMachine`], [`super::VMSnapshot`], …) fix `S` and
/// `St`. Validation checks `apiVersion`/`kind` against `S`'s [`Resource`] constants, that
/// `metadata.name` is not empty, and then the spec under the path `spec`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct Object<S, St = ()> {
    /// API group and version, e.g. `infra.virtrigaud.io/v1beta1`.
    pub api_version: String,
    /// Kind, e.g. `VirtualMachine`.
    pub kind: String,
    /// Metadata.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Desired state.
    pub spec: S,
    /// Observed state, when reported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<St>,
}

impl<S: Resource, St> Object<S, St> {
    /// A new object named `name` with `spec` and no status.
    pub fn new(name: impl Into<String>, spec: S) -> Self {
        Object {
            api_version: S::API_VERSION.to_owned(),
            kind: S::KIND.to_owned(),
            metadata: ObjectMeta::named(name),
            spec,
            status: None,
        }
    }
}

impl<S, St> Object<S, St> {
    /// The object's name.
    pub fn name(&self) -> &str {
        &self.metadata.name
    }
}

impl<S: Resource + Validate, St> Validate for Object<S, St> {
    fn validate_at(&self, path: &str, errors: &mut SpecErrors) {
        if self.api_version != S::API_VERSION {
            errors.add(
                join(path, "apiVersion"),
                format!("must be {:?}", S::API_VERSION),
                &self.api_version,
            );
        }
        if self.kind != S::KIND {
            errors.add(
                join(path, "kind"),
                format!("must be {:?}", S::KIND),
                &self.kind,
            );
        }
        errors.require_name(join(path, "metadata.name"), &self.metadata.name);
        self.spec.validate_at(&join(path, "spec"), errors);
    }
}

/// A partial document holding only `spec` (a merge-patch such as `{"spec":{"disks":[…]}}`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SpecPatch<S> {
    /// The partial spec.
    pub spec: S,
}

impl<S> SpecPatch<S> {
    /// Wrap a spec.
    pub fn new(spec: S) -> Self {
        SpecPatch { spec }
    }
}

impl<S: Validate> Validate for SpecPatch<S> {
    fn validate_at(&self, path: &str, errors: &mut SpecErrors) {
        self.spec.validate_at(&join(path, "spec"), errors);
    }
}
