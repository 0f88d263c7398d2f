//! Validation: the [`Validate`] trait and its typed errors.
//!
//! Every rule violation is a [`SpecError`] naming the field path (in the same
//! `spec.disks[0].sizeGiB` form that serde errors use), the rule that was broken and the
//! offending value. Validation collects all violations into [`SpecErrors`] instead of
//! stopping at the first one.

use std::fmt;

/// One broken validation rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub struct SpecError {
    /// Field path, e.g. `spec.lifecycle.gracefulShutdownTimeout` or `spec.disks[0].sizeGiB`.
    pub path: String,
    /// The rule that was broken, in plain words (e.g. `must be at least 1`).
    pub rule: String,
    /// The offending value, rendered as text, when there is one.
    pub value: Option<String>,
}

impl SpecError {
    /// A new error for `path` breaking `rule`, without a value.
    pub fn new(path: impl Into<String>, rule: impl Into<String>) -> Self {
        SpecError {
            path: path.into(),
            rule: rule.into(),
            value: None,
        }
    }

    /// Attach the offending value.
    pub fn with_value(mut self, value: impl fmt::Display) -> Self {
        self.value = Some(value.to_string());
        self
    }
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = if self.path.is_empty() {
            "<root>"
        } else {
            &self.path
        };
        write!(f, "{path}: {}", self.rule)?;
        if let Some(value) = &self.value {
            write!(f, " (got {value:?})")?;
        }
        Ok(())
    }
}

/// All rule violations found in one document (never empty when returned as an error).
#[derive(Debug, Clone, Default, PartialEq, Eq, thiserror::Error)]
pub struct SpecErrors {
    errors: Vec<SpecError>,
}

impl SpecErrors {
    /// An empty collection.
    pub fn new() -> Self {
        Self::default()
    }

    /// Record a violation.
    pub fn push(&mut self, error: SpecError) {
        self.errors.push(error);
    }

    /// Record a violation of `rule` at `path` with the offending `value`.
    pub fn add(
        &mut self,
        path: impl Into<String>,
        rule: impl Into<String>,
        value: impl fmt::Display,
    ) {
        self.push(SpecError::new(path, rule).with_value(value));
    }

    /// Record a violation of `rule` at `path` without a value.
    pub fn add_rule(&mut self, path: impl Into<String>, rule: impl Into<String>) {
        self.push(SpecError::new(path, rule));
    }

    /// Record `rule` at `path` when `name` is empty (or only whitespace).
    pub fn require_name(&mut self, path: impl Into<String>, name: &str) {
        if name.trim().is_empty() {
            self.add(path, "must not be empty", name);
        }
    }

    /// Whether no violation was recorded.
    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    /// Number of violations.
    pub fn len(&self) -> usize {
        self.errors.len()
    }

    /// The violations, in the order found.
    pub fn errors(&self) -> &[SpecError] {
        &self.errors
    }

    /// The first violation at exactly `path`, if any.
    pub fn find(&self, path: &str) -> Option<&SpecError> {
        self.errors.iter().find(|e| e.path == path)
    }

    /// `Ok(())` when empty, else `Err(self)`.
    pub fn into_result(self) -> Result<(), SpecErrors> {
        if self.is_empty() { Ok(()) } else { Err(self) }
    }
}

impl fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.errors.len() {
            0 => f.write_str("no validation errors"),
            1 => write!(f, "invalid spec: {}", self.errors[0]),
            n => {
                write!(f, "invalid spec ({n} errors): ")?;
                for (i, e) in self.errors.iter().enumerate() {
                    if i > 0 {
                        f.write_str("; ")?;
                    }
                    write!(f, "{e}")?;
                }
                Ok(())
            }
        }
    }
}

impl From<SpecError> for SpecErrors {
    fn from(error: SpecError) -> Self {
        SpecErrors {
            errors: vec![error],
        }
    }
}

impl FromIterator<SpecError> for SpecErrors {
    fn from_iter<I: IntoIterator<Item = SpecError>>(iter: I) -> Self {
        SpecErrors {
            errors: iter.into_iter().collect(),
        }
    }
}

impl Extend<SpecError> for SpecErrors {
    fn extend<I: IntoIterator<Item = SpecError>>(&mut self, iter: I) {
        self.errors.extend(iter);
    }
}

impl IntoIterator for SpecErrors {
    type Item = SpecError;
    type IntoIter = std::vec::IntoIter<SpecError>;
    fn into_iter(self) -> Self::IntoIter {
        self.errors.into_iter()
    }
}

impl From<SpecErrors> for crate::Error {
    fn from(errors: SpecErrors) -> Self {
        crate::Error::invalid_spec(errors.to_string())
    }
}

/// Types whose semantic rules can be checked after deserialization.
///
/// Implementors override [`Validate::validate_at`]; callers use [`Validate::validate`].
///
/// ```
/// use virtrigaud_core::model::{LifecycleAction, Validate};
/// let action: LifecycleAction =
///     serde_json::from_str(r#"{"action":"stop","gracePeriodSeconds":-5}"#).unwrap();
/// let errors = action.validate().unwrap_err();
/// assert_eq!(errors.errors()[0].path, "gracePeriodSeconds");
/// ```
pub trait Validate {
    /// Check the rules, recording violations under `path` (empty for the document root).
    fn validate_at(&self, path: &str, errors: &mut SpecErrors);

    /// Check the rules from the document root, returning every violation.
    fn validate(&self) -> Result<(), SpecErrors> {
        let mut errors = SpecErrors::new();
        self.validate_at("", &mut errors);
        errors.into_result()
    }
}

impl<T: Validate> Validate for Option<T> {
    fn validate_at(&self, path: &str, errors: &mut SpecErrors) {
        if let Some(v) = self {
            v.validate_at(path, errors);
        }
    }
}

impl<T: Validate> Validate for Vec<T> {
    fn validate_at(&self, path: &str, errors: &mut SpecErrors) {
        for (i, v) in self.iter().enumerate() {
            v.validate_at(&index(path, i), errors);
        }
    }
}

impl Validate for () {
    fn validate_at(&self, _path: &str, _errors: &mut SpecErrors) {}
}

/// Join a field name onto a path: `join("spec", "disks")` is `spec.disks`.
pub fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_owned()
    } else {
        format!("{path}.{field}")
    }
}

/// Index into a sequence path: `index("spec.disks", 0)` is `spec.disks[0]`.
pub fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}
