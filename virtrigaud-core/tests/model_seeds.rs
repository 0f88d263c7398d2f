//! Every YAML document of the design seeds (verbatim, `tests/fixtures/seeds/`) parses into
//! typed values with the expected fields, and serialises back (YAML and JSON) to an equal
//! value.
#![cfg(feature = "yaml")]
#![allow(clippy::unwrap_used)] // test helpers

use std::fmt::Debug;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use virtrigaud_core::model::*;

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/seeds/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn parse<T: DeserializeOwned + Validate>(name: &str) -> T {
    from_yaml_str(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn round_trip<T>(value: &T)
where
    T: Serialize + DeserializeOwned + Validate + PartialEq + Debug,
{
    let yaml = to_yaml_string(value).unwrap();
    let back: T = from_yaml_str(&yaml).unwrap_or_else(|e| panic!("re-parse {e}:\n{yaml}"));
    assert_eq!(&back, value, "YAML round trip:\n{yaml}");
    let json = to_json_string(value).unwrap();
    let back: T = from_json_str(&json).unwrap_or_else(|e| panic!("re-parse {e}:\n{json}"));
    assert_eq!(&back, value, "JSON round trip:\n{json}");
}

#[test]
fn seed000_vm_offgraceful_basic() {
    let vm: VirtualMachine = parse("000_01_vm_offgraceful_basic.yaml");
    assert_eq!(vm.api_version, API_VERSION);
    assert_eq!(vm.kind, "VirtualMachine");
    assert_eq!(vm.name(), "my-vm");
    assert_eq!(vm.spec.power_state, Some(VmPowerState::OffGraceful));
    assert!(vm.spec.lifecycle.is_none());
    // Absent timeout → the documented 60 s default.
    assert_eq!(vm.spec.graceful_shutdown_timeout(), Duration::from_secs(60));
    assert_eq!(vm.spec.pre_stop_command(), None);
    round_trip(&vm);
}

#[test]
fn seed000_vm_lifecycle_hooks() {
    let vm: VirtualMachine = parse("000_02_vm_lifecycle_hooks.yaml");
    assert_eq!(vm.spec.desired_power_state(), VmPowerState::OffGraceful);
    let lifecycle = vm.spec.lifecycle.as_ref().unwrap();
    assert_eq!(
        lifecycle.graceful_shutdown_timeout,
        Some(HumanDuration::from_secs(120))
    );
    assert_eq!(
        vm.spec.graceful_shutdown_timeout(),
        Duration::from_secs(120)
    );
    let argv = vm.spec.pre_stop_command().unwrap();
    assert_eq!(argv.len(), 3);
    assert_eq!(argv[0], "/bin/bash");
    assert_eq!(argv[1], "-c");
    assert_eq!(
        argv[2],
        "# Save application state\nsystemctl stop my-application\n# Sync filesystem\nsync\n"
    );
    assert_eq!(vm.spec.post_start_command(), None);
    round_trip(&vm);
}

#[test]
fn seed003_vm_resources_and_kubectl_patch() {
    let vm: VirtualMachine = parse("003_01_vm_resources.yaml");
    assert_eq!(vm.name(), "web-server");
    let r = vm.spec.resources.as_ref().unwrap();
    assert_eq!((r.cpu, r.memory_mib), (Some(2), Some(4096)));
    assert_eq!(vm.spec.desired_power_state(), VmPowerState::On);
    round_trip(&vm);

    // The merge patch quoted in the same seed (a comment there).
    let patch: SpecPatch<VirtualMachineSpec> =
        from_json_str(r#"{"spec":{"resources":{"cpu":4,"memoryMiB":8192}}}"#).unwrap();
    let r = patch.spec.resources.as_ref().unwrap();
    assert_eq!((r.cpu, r.memory_mib), (Some(4), Some(8192)));
    round_trip(&patch);
}

#[test]
fn seed003_vm_disks_patch() {
    let patch: SpecPatch<VirtualMachineSpec> = parse("003_02_vm_disks_patch.yaml");
    let disks = &patch.spec.disks;
    assert_eq!(disks.len(), 1);
    assert_eq!(disks[0].name, "data");
    assert_eq!(disks[0].size_gib, 100);
    assert_eq!(disks[0].expand_policy, Some(ExpandPolicy::Online));
    round_trip(&patch);
}

#[test]
fn seed003_vmsnapshot() {
    let snap: VMSnapshot = parse("003_03_vmsnapshot.yaml");
    assert_eq!(snap.name(), "pre-maintenance-backup");
    assert_eq!(snap.spec.vm_ref, ObjectRef::new("web-server"));
    assert_eq!(snap.spec.name_hint.as_deref(), Some("maintenance-backup"));
    assert_eq!(snap.spec.memory, Some(true));
    assert_eq!(snap.spec.quiesce, None);
    assert_eq!(
        snap.spec.description.as_deref(),
        Some("Backup before maintenance")
    );
    let rp = snap.spec.retention_policy.as_ref().unwrap();
    // "7d" is seven 24-hour days.
    assert_eq!(
        rp.max_age.unwrap().as_duration(),
        Duration::from_secs(7 * 24 * 3600)
    );
    assert_eq!(rp.delete_on_vm_delete, Some(true));
    assert_eq!(rp.max_count, None);
    round_trip(&snap);
    // Serialises "7d" back as "7d".
    assert!(to_yaml_string(&snap).unwrap().contains("7d"));
}

#[test]
fn seed003_vm_revert_patch() {
    let patch: SpecPatch<VirtualMachineSpec> = parse("003_04_vm_revert_patch.yaml");
    let revert = patch
        .spec
        .snapshot
        .as_ref()
        .unwrap()
        .revert_to_ref
        .as_ref()
        .unwrap();
    assert_eq!(revert.name, "pre-maintenance-backup");
    assert_eq!(revert.namespace, None);
    round_trip(&patch);
}

#[test]
fn seed003_vmclone() {
    let clone: VMClone = parse("003_05_vmclone.yaml");
    assert_eq!(clone.name(), "web-server-clone");
    assert_eq!(clone.spec.source_ref.name, "web-server");
    assert_eq!(clone.spec.target.name, "web-server-test");
    assert_eq!(
        clone.spec.target.class_ref,
        Some(ObjectRef::new("test-class"))
    );
    assert_eq!(clone.spec.linked, Some(true));
    assert_eq!(clone.spec.power_on, Some(true));
    assert!(clone.spec.customization.is_none());
    round_trip(&clone);
}

/// The seed's customization fragment holds only `spec.customization`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CustomizationOnly {
    customization: CloneCustomization,
}

impl Validate for CustomizationOnly {
    fn validate_at(&self, path: &str, errors: &mut SpecErrors) {
        self.customization
            .validate_at(&path_join(path, "customization"), errors);
    }
}

#[test]
fn seed003_vmclone_customization_patch() {
    let patch: SpecPatch<CustomizationOnly> = parse("003_06_vmclone_customization_patch.yaml");
    let c = &patch.spec.customization;
    assert_eq!(c.hostname.as_deref(), Some("web-server-test"));
    assert_eq!(c.networks.len(), 1);
    let n = &c.networks[0];
    assert_eq!(n.name, "primary");
    assert_eq!(n.ip_address.as_deref(), Some("192.168.1.100"));
    assert_eq!(n.gateway.as_deref(), Some("192.168.1.1"));
    assert_eq!(n.dns, vec!["8.8.8.8".to_owned()]);
    let inline = c
        .user_data
        .as_ref()
        .and_then(|u| u.cloud_init.as_ref())
        .and_then(|ci| ci.inline.as_deref())
        .unwrap();
    assert_eq!(
        inline,
        "#cloud-config\nruncmd:\n  - echo \"Test environment\" > /etc/motd\n"
    );
    // User data routinely carries secrets: Debug shows its size, never its text.
    let shown = format!("{patch:?}");
    assert!(!shown.contains("Test environment"), "{shown}");
    assert!(shown.contains("<62 bytes>"), "{shown}");
    round_trip(&patch);
}

#[test]
fn seed003_vmset() {
    let set: VMSet = parse("003_07_vmset.yaml");
    assert_eq!(set.name(), "web-tier");
    assert_eq!(set.spec.replicas, Some(3));
    assert_eq!(set.spec.replicas(), 3);
    assert_eq!(
        set.spec
            .selector
            .match_labels
            .get("app")
            .map(String::as_str),
        Some("web-server")
    );
    let t = &set.spec.template;
    assert_eq!(
        t.metadata.labels.get("app").map(String::as_str),
        Some("web-server")
    );
    assert_eq!(t.spec.provider_ref, Some(ObjectRef::new("vsphere-prod")));
    assert_eq!(t.spec.class_ref, Some(ObjectRef::new("web-class")));
    assert_eq!(t.spec.image_ref, Some(ObjectRef::new("nginx-image")));
    let us = set.spec.update_strategy.as_ref().unwrap();
    assert_eq!(us.type_, UpdateStrategyType::RollingUpdate);
    let ru = us.rolling_update.as_ref().unwrap();
    assert_eq!(ru.max_unavailable, Some(IntOrPercent::Count(1)));
    assert_eq!(ru.max_surge, Some(IntOrPercent::Count(1)));
    assert_eq!(ru.resolve(set.spec.replicas()), (1, 1));
    round_trip(&set);
}

#[test]
fn seed003_vmplacementpolicy() {
    let p: VMPlacementPolicy = parse("003_08_vmplacementpolicy.yaml");
    assert_eq!(p.name(), "production-policy");
    let hard = p.spec.hard.as_ref().unwrap();
    assert_eq!(hard.clusters, ["prod-cluster-1", "prod-cluster-2"]);
    assert_eq!(hard.datastores, ["ssd-datastore-1", "ssd-datastore-2"]);
    assert_eq!(hard.hosts, ["esxi-01", "esxi-02", "esxi-03"]);
    assert!(hard.zones.is_empty());
    let soft = p.spec.soft.as_ref().unwrap();
    assert_eq!(soft.folders, ["/Production/WebServers"]);
    assert_eq!(soft.zones, ["zone-a", "zone-b"]);
    let aa = p.spec.anti_affinity.as_ref().unwrap();
    assert!(aa.host_anti_affinity);
    assert!(!aa.cluster_anti_affinity);
    assert!(aa.datastore_anti_affinity);
    round_trip(&p);
}

#[test]
fn seed003_vm_placementref_patch() {
    let patch: SpecPatch<VirtualMachineSpec> = parse("003_09_vm_placementref_patch.yaml");
    assert_eq!(
        patch.spec.placement_ref,
        Some(ObjectRef::new("production-policy"))
    );
    round_trip(&patch);
}

/// The seed's VMImage carries a placeholder digest (`sha256:abcd1234...`), which is not a
/// checksum: it is rejected at its path, naming the rule. Everything else in the document
/// is checked by parsing the same text with only that digest made real.
#[test]
fn seed003_vmimage() {
    let text = fixture("003_10_vmimage.yaml");
    let err = from_yaml_str::<VMImage>(&text).unwrap_err();
    assert_eq!(err.path(), Some("spec.vsphere.checksum"));
    assert!(err.to_string().contains("exactly 64 hex digits"), "{err}");
    assert!(err.to_string().contains("sha256:abcd1234..."), "{err}");

    let digest = "ab".repeat(32);
    let fixed = text.replace("sha256:abcd1234...", &format!("sha256:{digest}"));
    let img: VMImage = from_yaml_str(&fixed).unwrap();
    assert_eq!(img.name(), "ubuntu-22-04");
    let vs = img.spec.vsphere.as_ref().unwrap();
    assert_eq!(
        vs.ova_url.as_deref(),
        Some("https://releases.ubuntu.com/22.04/ubuntu-22.04-server.ova")
    );
    let sum = vs.checksum.as_ref().unwrap();
    assert_eq!(sum.algorithm(), ChecksumAlgorithm::Sha256);
    assert_eq!(sum.hex(), digest);
    let lv = img.spec.libvirt.as_ref().unwrap();
    assert_eq!(
        lv.url.as_deref(),
        Some("https://cloud-images.ubuntu.com/22.04/ubuntu-22.04-server.img")
    );
    assert_eq!(lv.format.as_deref(), Some("qcow2"));
    assert_eq!(lv.checksum, None);
    assert!(img.spec.proxmox.is_none());
    // KubeVirt (CDI) imports the libvirt disk image, never the OVA.
    let kv = img.spec.download_for("kubevirt").unwrap();
    assert_eq!(
        (kv.field, kv.format.as_deref()),
        ("libvirt.url", Some("qcow2"))
    );
    let mut ova_only = img.spec.clone();
    ova_only.libvirt = None;
    assert_eq!(ova_only.download_for("kubevirt"), None);
    let prep = img.spec.prepare.as_ref().unwrap();
    assert_eq!(prep.on_missing, Some(OnMissing::Import));
    assert_eq!(prep.validate_checksum, Some(true));
    assert_eq!(prep.timeout, Some(HumanDuration::from_secs(30 * 60)));
    assert_eq!(prep.retries, Some(3));
    let st = prep.storage.as_ref().unwrap().vsphere.as_ref().unwrap();
    assert_eq!(st.datastore.as_deref(), Some("images-datastore"));
    assert_eq!(st.folder.as_deref(), Some("/Templates"));
    assert_eq!(st.thin_provisioned, Some(true));
    round_trip(&img);
}

#[test]
fn seed003_provider_capabilities() {
    let p: ProviderResource = parse("003_11_provider_capabilities.yaml");
    assert_eq!(p.kind, "Provider");
    assert!(p.spec.is_none());
    let caps = p.capabilities().unwrap();
    assert!(caps.reconfigure_online);
    assert!(caps.disk_expansion_online);
    assert!(caps.snapshots);
    assert!(caps.memory_snapshots);
    assert!(caps.linked_clones);
    assert!(caps.image_import);
    assert_eq!(caps.supported_disk_types, ["thin", "thick"]);
    assert_eq!(caps.supported_network_types, ["VMXNET3", "E1000"]);
    round_trip(&p);
}

// Seed 004: the Wukong CRD is not part of virtrigaud; an embedder models it with the
// public building blocks (Object, Quantity, LifecycleAction, LifecycleState).

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct WukongSpec {
    cpu: u32,
    memory: Quantity,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lifecycle_action: Option<LifecycleAction>,
}

impl Resource for WukongSpec {
    const API_VERSION: &'static str = "vm.novasphere.dev/v1alpha1";
    const KIND: &'static str = "Wukong";
}

impl Validate for WukongSpec {
    fn validate_at(&self, path: &str, errors: &mut SpecErrors) {
        self.lifecycle_action
            .validate_at(&path_join(path, "lifecycleAction"), errors);
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WukongStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lifecycle_state: Option<LifecycleState>,
}

type Wukong = Object<WukongSpec, WukongStatus>;

fn wukong(name: &str) -> (Wukong, LifecycleAction) {
    let w: Wukong = parse(name);
    assert_eq!(w.api_version, "vm.novasphere.dev/v1alpha1");
    assert_eq!(w.name(), "my-vm");
    assert_eq!(w.spec.cpu, 2);
    assert_eq!(w.spec.memory.bytes(), 4 << 30);
    assert_eq!(w.spec.memory.to_string(), "4Gi");
    round_trip(&w);
    let action = w.spec.lifecycle_action.clone().unwrap();
    (w, action)
}

#[test]
fn seed004_start() {
    let (_, a) = wukong("004_01_wukong_start.yaml");
    assert_eq!(a, LifecycleAction::start());
    assert_eq!(a.action, LifecycleActionKind::Start);
    assert!(!a.force);
    assert_eq!(a.grace_period_seconds, None);
    assert!(RunStrategy::Manual.allows(a.action));
    assert!(!RunStrategy::Halted.allows(a.action));
}

#[test]
fn seed004_graceful_stop() {
    let (_, a) = wukong("004_02_wukong_graceful_stop.yaml");
    assert_eq!(a.action, LifecycleActionKind::Stop);
    assert!(!a.force);
    assert_eq!(a.grace_period_seconds, Some(60));
    assert_eq!(
        a.grace_period(DEFAULT_STOP_GRACE_PERIOD),
        Duration::from_secs(60)
    );
}

#[test]
fn seed004_force_stop() {
    let (_, a) = wukong("004_03_wukong_force_stop.yaml");
    assert_eq!(a, LifecycleAction::force_stop());
    assert_eq!(a.grace_period_seconds, None);
    assert_eq!(a.grace_period(DEFAULT_STOP_GRACE_PERIOD), Duration::ZERO);
}

#[test]
fn seed004_status_query_shape() {
    // `.status.lifecycleState.state` as queried by the seed's kubectl jsonpath.
    let mut w: Wukong = parse("004_02_wukong_graceful_stop.yaml");
    w.status = Some(
        from_json_str::<Holder>(
            r#"{"s":{"lifecycleState":{"state":"Stopped","lastAction":"stop",
                "lastActionTime":"2026-11-22T03:00:00Z"}}}"#,
        )
        .unwrap()
        .s,
    );
    let v: serde_json::Value = serde_json::from_str(&to_json_string(&w).unwrap()).unwrap();
    assert_eq!(v["status"]["lifecycleState"]["state"], "Stopped");
    assert_eq!(v["status"]["lifecycleState"]["lastAction"], "stop");
    round_trip(&w);
}

#[derive(Debug, Deserialize)]
struct Holder {
    s: WukongStatus,
}

impl Validate for Holder {
    fn validate_at(&self, _: &str, _: &mut SpecErrors) {}
}

#[test]
fn run_strategies_parse_and_behave() {
    for (name, strategy, starts) in [
        ("Always", RunStrategy::Always, true),
        ("RerunOnFailure", RunStrategy::RerunOnFailure, true),
        ("Manual", RunStrategy::Manual, false),
        ("Halted", RunStrategy::Halted, false),
        ("Once", RunStrategy::Once, true),
    ] {
        let parsed: RunStrategy = serde_json::from_value(serde_json::json!(name)).unwrap();
        assert_eq!(parsed, strategy);
        assert_eq!(serde_json::to_value(strategy).unwrap(), name);
        assert_eq!(strategy.starts_on_create(), starts, "{name}");
    }
    assert!(RunStrategy::Always.restarts_after_stop(false));
    assert!(RunStrategy::RerunOnFailure.restarts_after_stop(true));
    assert!(!RunStrategy::RerunOnFailure.restarts_after_stop(false));
    assert!(!RunStrategy::Once.restarts_after_stop(true));
    let err = serde_json::from_value::<RunStrategy>(serde_json::json!("Sometimes")).unwrap_err();
    assert!(err.to_string().contains("RerunOnFailure"), "{err}");
}

#[test]
fn conditions_set_and_get_round_trip() {
    let mut vm: VirtualMachine = parse("000_01_vm_offgraceful_basic.yaml");
    let mut status = VirtualMachineStatus::default();
    set_condition(
        &mut status.conditions,
        Condition::new(
            condition_types::RECONFIGURE_PENDING_POWER_CYCLE,
            true,
            "OfflineChange",
            "memory change needs a power cycle",
        )
        .at("2026-11-22T03:00:00Z"),
    );
    set_condition(
        &mut status.conditions,
        Condition::new("Ready", false, "ShuttingDown", ""),
    );
    status.power_state = Some(ObservedPowerState::ShuttingDown);
    status.last_reconfigure_time = Some("2026-11-22T02:00:00Z".into());
    vm.status = Some(status);
    let st = vm.status.as_ref().unwrap();
    assert!(is_condition_true(
        &st.conditions,
        "ReconfigurePendingPowerCycle"
    ));
    assert!(!is_condition_true(&st.conditions, "Ready"));
    assert_eq!(
        find_condition(&st.conditions, "Ready").unwrap().status,
        ConditionStatus::False
    );
    round_trip(&vm);
    let json = to_json_string(&vm).unwrap();
    assert!(
        json.contains("\"lastTransitionTime\": \"2026-11-22T03:00:00Z\""),
        "{json}"
    );
    assert!(json.contains("\"powerState\": \"ShuttingDown\""), "{json}");
}

/// Seed 001 is a web-rendered copy of seed 000 whose YAML lost its indentation. Those
/// documents are not what they look like; they must be rejected with a path or a line,
/// never silently misread as a VM without a name.
#[test]
fn seed001_flattened_copies_are_rejected_not_misread() {
    let err =
        from_yaml_str::<VirtualMachine>(&fixture("001_01_vm_basic_flattened.yaml")).unwrap_err();
    assert_eq!(err.path(), Some("metadata"), "{err}");
    assert!(
        err.to_string().contains("expected struct ObjectMeta"),
        "{err}"
    );

    let err = from_yaml_str::<VirtualMachine>(&fixture("001_02_vm_lifecycle_hooks_flattened.yaml"))
        .unwrap_err();
    assert!(
        matches!(err, ParseError::Syntax { format: "YAML", .. }),
        "{err}"
    );
    assert!(err.to_string().contains("line 18"), "{err}");
}
