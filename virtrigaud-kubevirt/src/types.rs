//! The narrow subset of the KubeVirt API this crate uses, defined with kube's `CustomResource` derive.
//!
//! Only the fields the provider reads or writes are typed; every struct keeps the rest of the object
//! in an `extra` map (`#[serde(flatten)]`), so an object read and written back loses nothing. The
//! provider itself never writes whole objects back: it changes them with merge or JSON patches.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::CustomResource;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Unknown fields kept on round trips.
pub type Extra = Map<String, Value>;

/// A status condition as KubeVirt reports it (`Ready`, `RestartRequired`, `AgentConnected`, …).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Condition type.
    #[serde(rename = "type")]
    pub type_: String,
    /// `"True"`, `"False"` or `"Unknown"`.
    #[serde(default)]
    pub status: String,
    /// Machine-readable reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Human-readable message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Unknown fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// Whether `conditions` holds a condition of `type_` with status `"True"`.
pub fn condition_true(conditions: &[Condition], type_: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

/// Finds the condition of `type_`.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// `spec.template` of a VirtualMachine.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VmiTemplate {
    /// Template metadata (labels, annotations).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    /// The VMI spec the VM creates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<VmiSpec>,
    /// Unknown fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// The part of a VirtualMachineInstance spec used here (also the VM template's spec).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VmiSpec {
    /// The domain: CPU, memory, devices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<DomainSpec>,
    /// Grace period KubeVirt gives the guest before it forces the VM off (KubeVirt's default: 30 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination_grace_period_seconds: Option<i64>,
    /// Guest hostname.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Unknown fields (volumes, networks, nodeSelector, …).
    #[serde(flatten)]
    pub extra: Extra,
}

/// `domain` of a VMI spec.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DomainSpec {
    /// CPU topology.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuSpec>,
    /// Guest memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemorySpec>,
    /// Resource requests/limits (`requests.memory` when `memory.guest` is unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Value>,
    /// Devices (disks, interfaces, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devices: Option<Value>,
    /// Unknown fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `domain.cpu`: vCPUs = sockets × cores × threads; CPU hot-plug changes `sockets` up to `maxSockets`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CpuSpec {
    /// Sockets (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sockets: Option<u32>,
    /// Cores per socket (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cores: Option<u32>,
    /// Threads per core (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<u32>,
    /// Upper bound for hot-plugged sockets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_sockets: Option<u32>,
    /// Unknown fields.
    #[serde(flatten)]
    pub extra: Extra,
}

impl CpuSpec {
    /// Total vCPUs.
    pub fn vcpus(&self) -> u32 {
        self.sockets.unwrap_or(1).max(1) * self.per_socket()
    }
    /// vCPUs per socket (cores × threads).
    pub fn per_socket(&self) -> u32 {
        self.cores.unwrap_or(1).max(1) * self.threads.unwrap_or(1).max(1)
    }
}

/// `domain.memory`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MemorySpec {
    /// Memory visible to the guest (a Kubernetes quantity such as `"2Gi"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest: Option<String>,
    /// Upper bound for hot-plugged memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_guest: Option<String>,
    /// Unknown fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `kubevirt.io/v1` VirtualMachine spec (subset).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "kubevirt.io",
    version = "v1",
    kind = "VirtualMachine",
    namespaced,
    status = "VirtualMachineStatus",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineSpec {
    /// `Always`, `RerunOnFailure`, `Manual`, `Halted`, `Once` (or a newer value kept verbatim).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_strategy: Option<String>,
    /// Deprecated boolean form of the run strategy (`true` = Always, `false` = Halted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<bool>,
    /// The VMI template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<VmiTemplate>,
    /// Unknown fields (dataVolumeTemplates, instancetype, …).
    #[serde(flatten)]
    pub extra: Extra,
}

/// VirtualMachine status (subset).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineStatus {
    /// `Stopped`, `Starting`, `Running`, `Paused`, `Stopping`, `Terminating`, `CrashLoopBackOff`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub printable_status: Option<String>,
    /// Whether the VMI is ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<bool>,
    /// Whether a VMI exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<bool>,
    /// Conditions (`Ready`, `RestartRequired`, …).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Pending start/stop requests for virt-controller (kept verbatim for JSON-patch `test` ops).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_change_requests: Option<Vec<Value>>,
    /// The VM generation virt-controller has processed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The name of a snapshot in progress, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_in_progress: Option<String>,
    /// The name of a restore in progress, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_in_progress: Option<String>,
    /// Unknown fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `kubevirt.io/v1` VirtualMachineInstance spec (subset; the VMI shares the template's spec shape).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "kubevirt.io",
    version = "v1",
    kind = "VirtualMachineInstance",
    namespaced,
    status = "VirtualMachineInstanceStatus",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineInstanceSpec {
    /// The domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<DomainSpec>,
    /// The grace period in force for this instance (shortened by a stop with `gracePeriod`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination_grace_period_seconds: Option<i64>,
    /// Unknown fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// VirtualMachineInstance status (subset).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineInstanceStatus {
    /// `Pending`, `Scheduling`, `Scheduled`, `Running`, `Succeeded`, `Failed`, `Unknown`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Conditions (`Ready`, `Paused`, `AgentConnected`, …).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The node running the instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// Unknown fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// A reference to a KubeVirt object (`source` / `target` of snapshots, restores, clones).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TypedRef {
    /// API group (`kubevirt.io`, `snapshot.kubevirt.io`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_group: Option<String>,
    /// Kind.
    pub kind: String,
    /// Name.
    pub name: String,
}

impl TypedRef {
    /// A reference to the VirtualMachine `name`.
    pub fn vm(name: &str) -> Self {
        TypedRef {
            api_group: Some("kubevirt.io".into()),
            kind: "VirtualMachine".into(),
            name: name.into(),
        }
    }
}

/// `snapshot.kubevirt.io/v1beta1` VirtualMachineSnapshot spec (subset).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "snapshot.kubevirt.io",
    version = "v1beta1",
    kind = "VirtualMachineSnapshot",
    namespaced,
    status = "VirtualMachineSnapshotStatus",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineSnapshotSpec {
    /// The VM to snapshot.
    pub source: TypedRef,
    /// How long KubeVirt keeps trying before it marks the snapshot `Failed` (a duration such as `"5m0s"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_deadline: Option<String>,
    /// Unknown fields (deletionPolicy, …).
    #[serde(flatten)]
    pub extra: Extra,
}

/// VirtualMachineSnapshot status (subset).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineSnapshotStatus {
    /// `InProgress`, `Succeeded`, `Failed`, `Unknown`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// The snapshot can be restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_to_use: Option<bool>,
    /// When it was taken (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_time: Option<String>,
    /// `Online`, `GuestAgent`, `NoGuestAgent`, `QuiescedFilesystem`, `Paused`, …
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub indications: Vec<String>,
    /// Conditions (`Ready`, `Progressing`, `Failure`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Last error (`{"message": …, "time": …}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Value>,
    /// Unknown fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `snapshot.kubevirt.io/v1beta1` VirtualMachineRestore spec (subset).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "snapshot.kubevirt.io",
    version = "v1beta1",
    kind = "VirtualMachineRestore",
    namespaced,
    status = "VirtualMachineRestoreStatus",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineRestoreSpec {
    /// The VM to restore.
    pub target: TypedRef,
    /// The snapshot to restore from.
    pub virtual_machine_snapshot_name: String,
    /// Unknown fields (patches, targetReadinessPolicy, …).
    #[serde(flatten)]
    pub extra: Extra,
}

/// VirtualMachineRestore status (subset).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineRestoreStatus {
    /// The restore finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub complete: Option<bool>,
    /// When it finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_time: Option<String>,
    /// Conditions (`Ready`, `Progressing`, `Failure`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Unknown fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `clone.kubevirt.io/v1beta1` VirtualMachineClone spec (subset).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "clone.kubevirt.io",
    version = "v1beta1",
    kind = "VirtualMachineClone",
    namespaced,
    status = "VirtualMachineCloneStatus",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineCloneSpec {
    /// The VM (or VirtualMachineSnapshot) to clone.
    pub source: TypedRef,
    /// The VM to create.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<TypedRef>,
    /// Unknown fields (labelFilters, newMacAddresses, …).
    #[serde(flatten)]
    pub extra: Extra,
}

/// VirtualMachineClone status (subset).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineCloneStatus {
    /// `SnapshotInProgress`, `CreatingTargetVM`, `RestoreInProgress`, `Succeeded`, `Failed`, `Unknown`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// The VM created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_name: Option<String>,
    /// Conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Unknown fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `kubevirt.io/v1` KubeVirt (the installation CR) spec: only `configuration.vmRolloutStrategy` is read.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "kubevirt.io",
    version = "v1",
    kind = "KubeVirt",
    namespaced,
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct KubeVirtSpec {
    /// Cluster-wide configuration (`vmRolloutStrategy`: `Stage` or `LiveUpdate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configuration: Option<Value>,
    /// Unknown fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// `cdi.kubevirt.io/v1beta1` DataVolume spec (subset): CDI imports `source` into a PVC of
/// `storage`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "cdi.kubevirt.io",
    version = "v1beta1",
    kind = "DataVolume",
    namespaced,
    status = "DataVolumeStatus",
    schema = "disabled"
)]
#[serde(rename_all = "camelCase")]
pub struct DataVolumeSpec {
    /// Where the data comes from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<DataVolumeSource>,
    /// The PVC to create (size, storage class; CDI fills in the rest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<DataVolumeStorage>,
    /// Unknown fields (pvc, contentType, preallocation, …).
    #[serde(flatten)]
    pub extra: Extra,
}

/// `spec.source` of a DataVolume (only `http` is typed).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DataVolumeSource {
    /// An HTTP(S) URL the importer downloads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<DataVolumeSourceHttp>,
    /// Unknown fields (registry, s3, upload, blank, pvc, …).
    #[serde(flatten)]
    pub extra: Extra,
}

/// `spec.source.http` of a DataVolume.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DataVolumeSourceHttp {
    /// The image URL.
    pub url: String,
    /// The digest the importer verifies, `algorithm:hex` (CDI ≥ 1.62; older CDIs drop it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
    /// Unknown fields (secretRef, certConfigMap, extraHeaders, …).
    #[serde(flatten)]
    pub extra: Extra,
}

/// `spec.storage` of a DataVolume.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DataVolumeStorage {
    /// `{"requests": {"storage": "1Gi"}}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Value>,
    /// The PVC's storage class (unset: the cluster's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// Unknown fields (accessModes, volumeMode, …).
    #[serde(flatten)]
    pub extra: Extra,
}

/// DataVolume status (subset).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DataVolumeStatus {
    /// `Pending`, `ImportScheduled`, `ImportInProgress`, `Succeeded`, `Failed`, `Paused`,
    /// `WaitForFirstConsumer`, `Unknown`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// The importer's progress, `"45.20%"` (`"N/A"` when unknown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    /// Restarts of the importer pod after failed attempts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_count: Option<i32>,
    /// The PVC holding the data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim_name: Option<String>,
    /// Conditions (`Bound`, `Ready`, `Running`, with reason and message).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Unknown fields.
    #[serde(flatten)]
    pub extra: Extra,
}

/// Builds object metadata with a name, namespace and labels.
pub(crate) fn meta(name: &str, namespace: &str, labels: BTreeMap<String, String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(namespace.to_owned()),
        labels: if labels.is_empty() {
            None
        } else {
            Some(labels)
        },
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_fields_survive_a_round_trip() {
        let raw = json!({
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
            "metadata": {"name": "a", "namespace": "ns"},
            "spec": {"runStrategy": "Always", "dataVolumeTemplates": [{"x": 1}],
                     "template": {"metadata": {"labels": {"k": "v"}},
                                  "spec": {"domain": {"cpu": {"cores": 2, "model": "host"},
                                                      "devices": {"disks": []}, "firmware": {"uuid": "u"}},
                                           "volumes": [{"name": "v"}]}}},
            "status": {"printableStatus": "Running", "volumeSnapshotStatuses": [1]}
        });
        let vm: VirtualMachine = serde_json::from_value(raw.clone()).expect("parse");
        assert_eq!(vm.spec.run_strategy.as_deref(), Some("Always"));
        let cpu = vm
            .spec
            .template
            .as_ref()
            .and_then(|t| t.spec.as_ref())
            .and_then(|s| s.domain.as_ref())
            .and_then(|d| d.cpu.as_ref())
            .expect("cpu");
        assert_eq!(cpu.vcpus(), 2);
        assert_eq!(serde_json::to_value(&vm).expect("ser"), raw);
    }
}
