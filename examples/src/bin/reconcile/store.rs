//! The example's "apiserver": objects kept in memory by kind/name, as JSON values. A full
//! document is stored (replacing the spec of an object of the same kind/name and keeping its
//! status, as `kubectl apply` does); a document without `apiVersion`/`kind` is an RFC 7386
//! merge patch, applied to the most recent object whose kind it fits.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use virtrigaud_core::model::{
    API_VERSION, LifecycleAction, LifecycleState, ObjectMeta, ParseError, ProviderResource,
    SpecErrors, VMClone, VMImage, VMPlacementPolicy, VMSet, VMSnapshot, Validate, VirtualMachine,
    from_json_value, from_value_unvalidated, path_join,
};

/// The kinds the example knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Kind {
    VirtualMachine,
    VMSnapshot,
    VMClone,
    VMSet,
    VMPlacementPolicy,
    VMImage,
    Provider,
    Wukong,
}

/// The API group of seed 004's `Wukong` documents.
pub(crate) const WUKONG_API_VERSION: &str = "vm.novasphere.dev/v1alpha1";

impl Kind {
    const ALL: [Kind; 8] = [
        Kind::VirtualMachine,
        Kind::VMSnapshot,
        Kind::VMClone,
        Kind::VMSet,
        Kind::VMPlacementPolicy,
        Kind::VMImage,
        Kind::Provider,
        Kind::Wukong,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Kind::VirtualMachine => "VirtualMachine",
            Kind::VMSnapshot => "VMSnapshot",
            Kind::VMClone => "VMClone",
            Kind::VMSet => "VMSet",
            Kind::VMPlacementPolicy => "VMPlacementPolicy",
            Kind::VMImage => "VMImage",
            Kind::Provider => "Provider",
            Kind::Wukong => "Wukong",
        }
    }

    fn of(api_version: &str, kind: &str) -> Option<Kind> {
        let k = Kind::ALL.into_iter().find(|k| k.as_str() == kind)?;
        let group = if k == Kind::Wukong {
            WUKONG_API_VERSION
        } else {
            API_VERSION
        };
        (api_version == group).then_some(k)
    }

    /// `value` parsed as this kind (validated or not) and written back: the canonical form.
    fn canonical(self, value: Value, validate: bool) -> Result<Value, ParseError> {
        fn go<T: DeserializeOwned + Validate + Serialize>(
            v: Value,
            validate: bool,
        ) -> Result<Value, ParseError> {
            let t: T = if validate {
                from_json_value(v)?
            } else {
                from_value_unvalidated(v)?
            };
            Ok(serde_json::to_value(&t).unwrap_or(Value::Null))
        }
        match self {
            Kind::VirtualMachine => go::<VirtualMachine>(value, validate),
            Kind::VMSnapshot => go::<VMSnapshot>(value, validate),
            Kind::VMClone => go::<VMClone>(value, validate),
            Kind::VMSet => go::<VMSet>(value, validate),
            Kind::VMPlacementPolicy => go::<VMPlacementPolicy>(value, validate),
            Kind::VMImage => go::<VMImage>(value, validate),
            Kind::Provider => go::<ProviderResource>(value, validate),
            Kind::Wukong => go::<Wukong>(value, validate),
        }
    }
}

/// An object's kind and name (a `Provider` document may have no name).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Key {
    pub(crate) kind: Kind,
    pub(crate) name: String,
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = if self.name.is_empty() {
            "(unnamed)"
        } else {
            &self.name
        };
        write!(f, "{}/{name}", self.kind.as_str())
    }
}

/// Seed 004's `Wukong` document: another API group, carrying `spec.lifecycleAction`; the
/// rest of its spec is kept as is.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Wukong {
    pub(crate) api_version: String,
    pub(crate) kind: String,
    #[serde(default)]
    pub(crate) metadata: ObjectMeta,
    pub(crate) spec: WukongSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) status: Option<WukongStatus>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WukongSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) lifecycle_action: Option<LifecycleAction>,
    #[serde(flatten)]
    pub(crate) other: serde_json::Map<String, Value>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WukongStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) lifecycle_state: Option<LifecycleState>,
}

impl Validate for Wukong {
    fn validate_at(&self, path: &str, errors: &mut SpecErrors) {
        errors.require_name(path_join(path, "metadata.name"), &self.metadata.name);
        self.spec
            .lifecycle_action
            .validate_at(&path_join(path, "spec.lifecycleAction"), errors);
    }
}

/// What storing a document did.
#[derive(Debug)]
pub(crate) enum Applied {
    /// A full document, new or replacing the spec of `replaced`.
    Stored { key: Key, replaced: bool },
    /// A merge patch applied to this object.
    Patched { key: Key },
}

/// Why a document was not stored.
#[derive(Debug)]
pub(crate) enum Rejected {
    /// It does not parse or validate (as the kind it names, or, for a patch, once merged
    /// into `target`).
    Invalid {
        target: Option<Key>,
        error: ParseError,
    },
    /// A patch that fits no stored object, or a kind the example does not know.
    Unplaceable(String),
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejected::Invalid {
                target: Some(t),
                error,
            } => write!(f, "patched {t} is invalid: {error}"),
            Rejected::Invalid {
                target: None,
                error,
            } => write!(f, "{error}"),
            Rejected::Unplaceable(why) => f.write_str(why),
        }
    }
}

#[derive(Debug)]
struct Entry {
    value: Value,
    /// When it was last stored or patched (for "the most recent object").
    seq: u64,
}

/// The objects, by kind/name.
#[derive(Debug, Default)]
pub(crate) struct Store {
    objects: BTreeMap<Key, Entry>,
    seq: u64,
}

impl Store {
    /// Stores a full document or applies a merge patch.
    pub(crate) fn apply(&mut self, doc: Value) -> Result<Applied, Rejected> {
        let api_version = doc.get("apiVersion").and_then(Value::as_str);
        let kind = doc.get("kind").and_then(Value::as_str);
        match (api_version, kind) {
            (None, None) => self.patch(&doc),
            (a, k) => {
                let (a, k) = (a.unwrap_or_default(), k.unwrap_or_default());
                let kind = Kind::of(a, k).ok_or_else(|| {
                    Rejected::Unplaceable(format!(
                        "kind \"{k}\" of \"{a}\" is not one the example reconciles"
                    ))
                })?;
                self.store(kind, doc)
            }
        }
    }

    fn store(&mut self, kind: Kind, mut doc: Value) -> Result<Applied, Rejected> {
        // Parse first, so that the error of a broken document is the typed one.
        let canonical = kind
            .canonical(doc.clone(), true)
            .map_err(|error| Rejected::Invalid {
                target: None,
                error,
            })?;
        let name = canonical
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let key = Key { kind, name };
        let replaced = match self.objects.get(&key) {
            Some(old) => {
                // The status is the controllers', not the document's: keep it.
                if doc.get("status").is_none()
                    && let (Some(st), Some(obj)) = (old.value.get("status"), doc.as_object_mut())
                {
                    obj.insert("status".into(), st.clone());
                }
                bump_generation(&mut doc, &old.value);
                true
            }
            None => {
                bump_generation(&mut doc, &Value::Null);
                false
            }
        };
        let value = kind
            .canonical(doc, true)
            .map_err(|error| Rejected::Invalid {
                target: None,
                error,
            })?;
        self.put_value(&key, value);
        Ok(Applied::Stored { key, replaced })
    }

    fn patch(&mut self, patch: &Value) -> Result<Applied, Rejected> {
        let named = patch.pointer("/metadata/name").and_then(Value::as_str);
        let mut candidates: Vec<(&Key, &Entry)> = self
            .objects
            .iter()
            .filter(|(k, _)| named.is_none_or(|n| k.name == n))
            .collect();
        candidates.sort_by_key(|(_, e)| std::cmp::Reverse(e.seq));
        // The most recent object of a kind that knows every field of the patch (every spec
        // refuses unknown fields, so `spec.customization` fits a VMClone only). A known field
        // with a wrong value still fits: the typed error is reported below.
        let fit = candidates.into_iter().find_map(|(k, e)| {
            let mut merged = e.value.clone();
            merge(&mut merged, patch);
            let fits = match k.kind.canonical(merged.clone(), false) {
                Ok(_) => true,
                Err(ParseError::Field { message, .. }) => !message.contains("unknown field"),
                Err(_) => false,
            };
            fits.then(|| (k.clone(), merged, e.value.clone()))
        });
        let Some((key, mut merged, old)) = fit else {
            let fields = patch
                .get("spec")
                .and_then(Value::as_object)
                .map(|m| {
                    m.keys()
                        .map(|k| format!("spec.{k}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            return Err(Rejected::Unplaceable(format!(
                "a merge patch ({fields}) that fits no stored object"
            )));
        };
        bump_generation(&mut merged, &old);
        let value = key
            .kind
            .canonical(merged, true)
            .map_err(|error| Rejected::Invalid {
                target: Some(key.clone()),
                error,
            })?;
        self.put_value(&key, value);
        Ok(Applied::Patched { key })
    }

    fn put_value(&mut self, key: &Key, value: Value) {
        self.seq += 1;
        let seq = self.seq;
        self.objects.insert(key.clone(), Entry { value, seq });
    }

    /// The object `key` as its type.
    pub(crate) fn get<T: DeserializeOwned>(&self, key: &Key) -> Option<T> {
        let e = self.objects.get(key)?;
        from_value_unvalidated(e.value.clone()).ok()
    }

    /// Writes back `obj` (its status, or a spec the reconciler changed), keeping its place
    /// in the "most recent" order.
    pub(crate) fn update<T: Serialize>(&mut self, key: &Key, obj: &T) {
        if let (Some(e), Ok(v)) = (self.objects.get_mut(key), serde_json::to_value(obj)) {
            e.value = v;
        }
    }

    /// Every object of `kind`, by name.
    pub(crate) fn all<T: DeserializeOwned>(&self, kind: Kind) -> Vec<(Key, T)> {
        self.objects
            .iter()
            .filter(|(k, _)| k.kind == kind)
            .filter_map(|(k, e)| Some((k.clone(), from_value_unvalidated(e.value.clone()).ok()?)))
            .collect()
    }
}

/// `metadata.generation`: 1 for a new object, one more when the spec changed.
fn bump_generation(doc: &mut Value, old: &Value) {
    let old_gen = old
        .pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let changed = old.get("spec") != doc.get("spec");
    let generation = if changed { old_gen + 1 } else { old_gen.max(1) };
    if let Some(meta) = doc.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("generation".into(), generation.into());
    }
}

/// RFC 7386 merge patch (what `kubectl patch --type merge` does).
pub(crate) fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}
