//! From a `VMSet` template to provider calls: the template hash, the create spec and the
//! placement request.

use std::collections::BTreeMap;

use super::{SET_LABEL, TEMPLATE_HASH_LABEL};
use crate::model::{VMPlacementPolicySpec, VmPowerState, VmTemplate};
use crate::placement::{PlacementRequest, Resources};
use crate::provider::{DiskCreateSpec, NetworkCreateSpec, VmCreateSpec};

/// vCPUs of a VM whose template sets none.
pub const DEFAULT_CPU: u32 = 2;
/// Memory (MiB) of a VM whose template sets none.
pub const DEFAULT_MEMORY_MIB: u64 = 2048;

/// A stable hash of the template (FNV-1a 64 over its canonical JSON), as 16 hex digits.
///
/// Stable across processes and Rust versions, so a restarted reconciler recognises the VMs
/// it created. Any change of the template (labels included) changes the hash.
///
/// ```
/// use virtrigaud_core::model::VmTemplate;
/// use virtrigaud_core::vmset::template_hash;
/// let t = VmTemplate::default();
/// assert_eq!(template_hash(&t), template_hash(&t.clone()));
/// assert_eq!(template_hash(&t).len(), 16);
/// ```
pub fn template_hash(template: &VmTemplate) -> String {
    let json = serde_json::to_vec(template).unwrap_or_default();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in json {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Whether VMs of this template should run (readiness then requires power on).
pub fn expects_running(template: &VmTemplate) -> bool {
    template.spec.desired_power_state() == VmPowerState::On
}

/// The create spec for member `name` of set `set`.
pub fn create_spec(set: &str, name: &str, template: &VmTemplate, hash: &str) -> VmCreateSpec {
    let spec = &template.spec;
    let res = spec.resources.clone().unwrap_or_default();
    let mut c = VmCreateSpec::new(
        name,
        res.cpu.unwrap_or(DEFAULT_CPU),
        res.memory_mib.unwrap_or(DEFAULT_MEMORY_MIB),
    );
    c.disks = spec
        .disks
        .iter()
        .map(|d| {
            let mut disk = DiskCreateSpec::new(d.name.clone(), d.size_gib);
            disk.disk_type = d.type_.clone();
            disk
        })
        .collect();
    c.networks = spec
        .networks
        .iter()
        .map(|n| {
            NetworkCreateSpec::new(
                n.network_ref
                    .as_ref()
                    .map_or(n.name.as_str(), |r| r.name.as_str()),
            )
        })
        .collect();
    c.image = spec.image_ref.as_ref().map(|r| r.name.clone());
    c.labels = member_labels(set, template, hash);
    c.power_on = expects_running(template);
    c
}

/// The labels of a member: the template's, plus the set and template-hash labels.
pub fn member_labels(set: &str, template: &VmTemplate, hash: &str) -> BTreeMap<String, String> {
    let mut labels = template.metadata.labels.clone();
    labels.insert(SET_LABEL.to_owned(), set.to_owned());
    labels.insert(TEMPLATE_HASH_LABEL.to_owned(), hash.to_owned());
    labels
}

/// The placement request for a new member, with the set as anti-affinity group.
pub fn placement_request(
    set: &str,
    spec: &VmCreateSpec,
    peers: &[String],
    policy: Option<&VMPlacementPolicySpec>,
) -> PlacementRequest {
    let disk: u64 = spec.disks.iter().map(|d| d.size_gib).sum();
    let mut r = PlacementRequest::new(
        spec.name.clone(),
        Resources::new(u64::from(spec.cpu), spec.memory_mib),
    )
    .disk_gib(disk)
    .group(set)
    .peers(peers.iter().cloned());
    if let Some(p) = policy {
        r = r.policy(p.clone());
    }
    r
}
