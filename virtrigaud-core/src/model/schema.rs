//! JSON Schema of every seed kind (feature `schema`, through `schemars`), for kube tools,
//! CRD generation and editors.
//!
//! The schema says what serde accepts: field names, types, enum values, unknown fields
//! refused. The model's own value types are strings with a pattern (durations, quantities,
//! checksums) or an integer-or-percentage. Rules that need more than a schema (a maxSurge
//! and maxUnavailable both zero, a grace beyond [`super::MAX_DURATION`]) stay with
//! [`super::Validate`].
//!
//! ```
//! let schemas = virtrigaud_core::model::schemas();
//! let vm = &schemas["VirtualMachine"];
//! assert!(vm.get("properties").is_some());
//! ```

use std::borrow::Cow;
use std::collections::BTreeMap;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema, schema_for};

use super::{
    Checksum, HumanDuration, IntOrPercent, ProviderResource, Quantity, VMClone, VMImage,
    VMPlacementPolicy, VMSet, VMSnapshot, VirtualMachine,
};

/// The JSON Schema of each seed kind, by kind name (`VirtualMachine`, `VMSnapshot`,
/// `VMClone`, `VMSet`, `VMPlacementPolicy`, `VMImage`, `Provider`).
pub fn schemas() -> BTreeMap<&'static str, Schema> {
    BTreeMap::from([
        ("VirtualMachine", schema_for!(VirtualMachine)),
        ("VMSnapshot", schema_for!(VMSnapshot)),
        ("VMClone", schema_for!(VMClone)),
        ("VMSet", schema_for!(VMSet)),
        ("VMPlacementPolicy", schema_for!(VMPlacementPolicy)),
        ("VMImage", schema_for!(VMImage)),
        ("Provider", schema_for!(ProviderResource)),
    ])
}

fn pattern(description: &str, pattern: &str) -> Schema {
    json_schema!({"type": "string", "description": description, "pattern": pattern})
}

impl JsonSchema for HumanDuration {
    fn schema_name() -> Cow<'static, str> {
        "HumanDuration".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        pattern(
            "A duration with units: \"120s\", \"7d\", \"1h 30m\" (a bare number is refused)",
            r"^\s*([0-9]+(\.[0-9]+)?\s*[a-zA-Zµ]+\s*)+$",
        )
    }
}

impl JsonSchema for Quantity {
    fn schema_name() -> Cow<'static, str> {
        "Quantity".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        pattern(
            "A Kubernetes quantity of bytes: \"4Gi\", \"1536Mi\", \"1G\"",
            r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$",
        )
    }
}

impl JsonSchema for Checksum {
    fn schema_name() -> Cow<'static, str> {
        "Checksum".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        pattern(
            "An image digest: sha256:<64 hex> or sha512:<128 hex>",
            r"^(sha256:[0-9a-fA-F]{64}|sha512:[0-9a-fA-F]{128})$",
        )
    }
}

impl JsonSchema for IntOrPercent {
    fn schema_name() -> Cow<'static, str> {
        "IntOrPercent".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A whole number, or a percentage such as \"25%\"",
            "anyOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "pattern": r"^[0-9]+%$"}
            ]
        })
    }
}
