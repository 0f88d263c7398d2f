//! Parsing entry points: YAML/JSON text → typed, validated values, with errors that name
//! the field path and the rule.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::validate::{SpecErrors, Validate};

/// Why a document could not be turned into a valid typed value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The text is not well-formed YAML/JSON.
    #[error("invalid {format} syntax: {message}")]
    Syntax {
        /// `YAML` or `JSON`.
        format: &'static str,
        /// The parser's message (with line and column when known).
        message: String,
    },
    /// A field has the wrong shape: unknown field or enum value, bad duration, malformed
    /// checksum, missing required field, wrong type…
    #[error("{}: {message}", if path.is_empty() { "<root>" } else { path.as_str() })]
    Field {
        /// Field path such as `spec.lifecycle.gracefulShutdownTimeout` (empty for the root).
        path: String,
        /// What is wrong, including the rule.
        message: String,
    },
    /// The document is well-formed but breaks validation rules.
    #[error(transparent)]
    Invalid(#[from] SpecErrors),
}

impl ParseError {
    /// The path of the (first) offending field.
    pub fn path(&self) -> Option<&str> {
        match self {
            ParseError::Syntax { .. } => None,
            ParseError::Field { path, .. } => Some(path),
            ParseError::Invalid(e) => e.errors().first().map(|e| e.path.as_str()),
        }
    }

    /// The validation errors, when the document parsed but is invalid.
    pub fn spec_errors(&self) -> Option<&SpecErrors> {
        match self {
            ParseError::Invalid(e) => Some(e),
            _ => None,
        }
    }
}

impl From<ParseError> for crate::Error {
    fn from(e: ParseError) -> Self {
        let message = e.to_string();
        crate::Error::invalid_spec(message).with_source(e)
    }
}

/// Deserialize a JSON value into `T` with path-aware errors, without validation.
pub fn from_value_unvalidated<T: DeserializeOwned>(
    value: serde_json::Value,
) -> Result<T, ParseError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        ParseError::Field {
            path,
            message: e.into_inner().to_string(),
        }
    })
}

/// Deserialize a JSON value into `T` and validate it.
pub fn from_json_value<T: DeserializeOwned + Validate>(
    value: serde_json::Value,
) -> Result<T, ParseError> {
    let v: T = from_value_unvalidated(value)?;
    v.validate()?;
    Ok(v)
}

/// Parse and validate a JSON document.
///
/// ```
/// use virtrigaud_core::model::{from_json_str, VirtualMachine};
/// let err = from_json_str::<VirtualMachine>(
///     r#"{"apiVersion":"infra.virtrigaud.io/v1beta1","kind":"VirtualMachine",
///         "metadata":{"name":"vm"},"spec":{"powerState":"Sleeping"}}"#,
/// ).unwrap_err();
/// assert_eq!(err.path(), Some("spec.powerState"));
/// assert!(err.to_string().contains("OffGraceful"));
/// ```
pub fn from_json_str<T: DeserializeOwned + Validate>(text: &str) -> Result<T, ParseError> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| ParseError::Syntax {
        format: "JSON",
        message: e.to_string(),
    })?;
    from_json_value(value)
}

/// Parse a YAML document into a JSON value (no typing, no validation).
///
/// Scalars follow the YAML 1.2 core schema: only `true`/`false` (any case form) are
/// booleans, so `powerState: On` or a network named `n` stay strings (YAML 1.1's
/// `on`/`off`/`yes`/`no`/`y`/`n` "Norway problem" does not apply).
#[cfg(feature = "yaml")]
#[cfg_attr(docsrs, doc(cfg(feature = "yaml")))]
pub fn yaml_to_value(text: &str) -> Result<serde_json::Value, ParseError> {
    let options = serde_saphyr::options! { strict_booleans: true };
    serde_saphyr::from_str_with_options(text, options).map_err(|e| ParseError::Syntax {
        format: "YAML",
        message: e.to_string(),
    })
}

/// Parse and validate a YAML document (one document; comments and block scalars welcome).
///
/// ```
/// use std::time::Duration;
/// use virtrigaud_core::model::{from_yaml_str, VirtualMachine};
/// let vm: VirtualMachine = from_yaml_str(
///     "apiVersion: infra.virtrigaud.io/v1beta1
/// kind: VirtualMachine
/// metadata:
///   name: my-vm
/// spec:
///   powerState: OffGraceful
///   lifecycle:
///     gracefulShutdownTimeout: \"120s\"
/// ",
/// ).unwrap();
/// assert_eq!(vm.spec.graceful_shutdown_timeout(), Duration::from_secs(120));
///
/// let err = from_yaml_str::<VirtualMachine>(
///     "apiVersion: infra.virtrigaud.io/v1beta1
/// kind: VirtualMachine
/// metadata: {name: my-vm}
/// spec: {lifecycle: {gracefulShutdownTimeout: 12 parsecs}}
/// ",
/// ).unwrap_err();
/// assert_eq!(err.path(), Some("spec.lifecycle.gracefulShutdownTimeout"));
/// ```
#[cfg(feature = "yaml")]
#[cfg_attr(docsrs, doc(cfg(feature = "yaml")))]
pub fn from_yaml_str<T: DeserializeOwned + Validate>(text: &str) -> Result<T, ParseError> {
    from_json_value(yaml_to_value(text)?)
}

/// Parse a YAML document into `T` with path-aware errors, without validation.
#[cfg(feature = "yaml")]
#[cfg_attr(docsrs, doc(cfg(feature = "yaml")))]
pub fn from_yaml_str_unvalidated<T: DeserializeOwned>(text: &str) -> Result<T, ParseError> {
    from_value_unvalidated(yaml_to_value(text)?)
}

/// Serialise to YAML.
#[cfg(feature = "yaml")]
#[cfg_attr(docsrs, doc(cfg(feature = "yaml")))]
pub fn to_yaml_string<T: Serialize>(value: &T) -> Result<String, crate::Error> {
    serde_saphyr::to_string(value)
        .map_err(|e| crate::Error::internal(format!("YAML serialisation failed: {e}")))
}

/// Serialise to pretty JSON.
pub fn to_json_string<T: Serialize>(value: &T) -> Result<String, crate::Error> {
    serde_json::to_string_pretty(value)
        .map_err(|e| crate::Error::internal(format!("JSON serialisation failed: {e}")))
}
