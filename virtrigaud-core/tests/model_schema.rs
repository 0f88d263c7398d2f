//! The JSON Schema of every seed kind (feature `schema`): each seed document of a kind
//! validates against it, verbatim; its malformed variants (a wrong type, an unknown enum
//! value, an unknown field, a bare-number duration, a placeholder checksum) do not.
#![cfg(all(feature = "schema", feature = "yaml"))]
#![allow(clippy::unwrap_used)]

use serde_json::{Value, json};
use virtrigaud_core::model::{schemas, yaml_to_value};

fn seed(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/seeds/{name}", env!("CARGO_MANIFEST_DIR"));
    yaml_to_value(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn errors(kind: &str, doc: &Value) -> Vec<String> {
    let schema = serde_json::to_value(&schemas()[kind]).unwrap();
    let v = jsonschema::validator_for(&schema).unwrap();
    v.iter_errors(doc)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

#[test]
fn every_seed_object_validates_against_its_kind_schema() {
    for (file, kind) in [
        ("000_01_vm_offgraceful_basic.yaml", "VirtualMachine"),
        ("000_02_vm_lifecycle_hooks.yaml", "VirtualMachine"),
        ("003_01_vm_resources.yaml", "VirtualMachine"),
        ("003_03_vmsnapshot.yaml", "VMSnapshot"),
        ("003_05_vmclone.yaml", "VMClone"),
        ("003_07_vmset.yaml", "VMSet"),
        ("003_08_vmplacementpolicy.yaml", "VMPlacementPolicy"),
        ("003_11_provider_capabilities.yaml", "Provider"),
    ] {
        let e = errors(kind, &seed(file));
        assert!(e.is_empty(), "{file}: {e:?}");
    }
    assert_eq!(schemas().len(), 7);
}

/// A kind, a seed file of it, and how to break it.
type Case = (&'static str, &'static str, fn(&mut Value));

#[test]
fn malformed_variants_of_the_seeds_do_not() {
    let cases: [Case; 7] = [
        ("VirtualMachine", "000_01_vm_offgraceful_basic.yaml", |d| {
            d["spec"]["powerState"] = json!("Sideways");
        }),
        ("VirtualMachine", "003_01_vm_resources.yaml", |d| {
            d["spec"]["resources"]["cpu"] = json!("two");
        }),
        ("VirtualMachine", "003_01_vm_resources.yaml", |d| {
            d["spec"]["cpus"] = json!(4);
        }),
        ("VirtualMachine", "000_02_vm_lifecycle_hooks.yaml", |d| {
            d["spec"]["lifecycle"]["gracefulShutdownTimeout"] = json!(120);
        }),
        ("VMSet", "003_07_vmset.yaml", |d| {
            d["spec"]["replicas"] = json!("three");
        }),
        ("VMSnapshot", "003_03_vmsnapshot.yaml", |d| {
            d["spec"]["retentionPolicy"]["maxAge"] = json!("a week");
        }),
        ("VMImage", "003_10_vmimage.yaml", |_| {}),
    ];
    for (kind, file, break_it) in cases {
        let mut doc = seed(file);
        break_it(&mut doc);
        assert!(
            !errors(kind, &doc).is_empty(),
            "{file} ({kind}) broken still validates"
        );
    }
    // The seed image with a real digest in place of its placeholder validates.
    let mut image = seed("003_10_vmimage.yaml");
    image["spec"]["vsphere"]["checksum"] = json!(format!("sha256:{}", "ab".repeat(32)));
    let e = errors("VMImage", &image);
    assert!(e.is_empty(), "{e:?}");
}
