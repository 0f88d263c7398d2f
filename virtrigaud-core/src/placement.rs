//! Placement: the inventory providers supply and the [`Placer`] trait that chooses a home
//! for a VM.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// Capacity or load of a host, in the units the solver compares.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Resources {
    /// vCPUs.
    pub cpu: u64,
    /// Memory, MiB.
    pub memory_mib: u64,
}

impl Resources {
    /// `cpu` vCPUs and `memory_mib` MiB.
    pub const fn new(cpu: u64, memory_mib: u64) -> Self {
        Resources { cpu, memory_mib }
    }
}

/// A datastore (storage pool) with its free space.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct DatastoreInfo {
    /// Name.
    pub name: String,
    /// Free space, GiB.
    pub free_gib: u64,
}

impl DatastoreInfo {
    /// A datastore with `free_gib` free.
    pub fn new(name: impl Into<String>, free_gib: u64) -> Self {
        DatastoreInfo {
            name: name.into(),
            free_gib,
        }
    }
}

/// One host (ESXi host, libvirt host, PVE node, Kubernetes node).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct HostInfo {
    /// Host name.
    pub name: String,
    /// Cluster it belongs to.
    pub cluster: Option<String>,
    /// Zone it belongs to.
    pub zone: Option<String>,
    /// Folders available on it (vSphere), for soft folder constraints.
    #[serde(default)]
    pub folders: Vec<String>,
    /// Datastores it can reach.
    #[serde(default)]
    pub datastores: Vec<String>,
    /// Total capacity.
    pub capacity: Resources,
    /// Current allocation.
    pub allocated: Resources,
    /// Names of VMs already on it.
    #[serde(default)]
    pub vms: Vec<String>,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl HostInfo {
    /// A host with `capacity` and nothing allocated.
    pub fn new(name: impl Into<String>, capacity: Resources) -> Self {
        HostInfo {
            name: name.into(),
            cluster: None,
            zone: None,
            folders: Vec::new(),
            datastores: Vec::new(),
            capacity,
            allocated: Resources::default(),
            vms: Vec::new(),
            labels: BTreeMap::new(),
        }
    }
}

/// Everything a solver needs to know about where VMs can go.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Inventory {
    /// Hosts.
    pub hosts: Vec<HostInfo>,
    /// Datastores.
    pub datastores: Vec<DatastoreInfo>,
}

/// A request to place one VM.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PlacementRequest {
    /// VM name.
    pub vm_name: String,
    /// Resources it needs.
    pub demand: Resources,
    /// Disk space it needs, GiB.
    pub disk_gib: u64,
    /// The group (VM set or policy) whose members must be spread by anti-affinity.
    pub group: Option<String>,
}

/// Where a VM goes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PlacementDecision {
    /// Host.
    pub host: String,
    /// Cluster of that host.
    pub cluster: Option<String>,
    /// Datastore for its disks.
    pub datastore: Option<String>,
    /// Score of the choice (higher is better).
    pub score: i64,
}

/// Chooses a home for a VM.
#[async_trait]
pub trait Placer: Send + Sync {
    /// Places one VM.
    async fn place(&self, request: &PlacementRequest) -> Result<PlacementDecision>;
}
