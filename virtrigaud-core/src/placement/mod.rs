//! Placement: the inventory providers supply, the [`Placer`] trait that chooses a home for a
//! VM, and a deterministic constraint solver ([`Solver`], [`SolverPlacer`]).
//!
//! - **Hard constraints** (`VMPlacementPolicy.spec.hard`: hosts, clusters, zones, datastores)
//!   filter candidate hosts; an empty list places no constraint.
//! - **Soft constraints** (`spec.soft`: hosts, clusters, zones, folders, datastores) add to a
//!   host's score, together with a spread score (fewer VMs of the same group in the host's
//!   cluster and zone) and a balance score (free CPU and memory left after placement).
//! - **Anti-affinity** (`spec.antiAffinity`) is required, among the VMs of the same group
//!   ([`PlacementRequest::group`]: a VM set or a policy): no two on one host, cluster or
//!   datastore.
//! - **Capacity** (CPU, memory, datastore free space) is never exceeded.
//! - Ties break by host name, then datastore name: the same inventory and requests always
//!   give the same decisions.
//! - When nothing fits, [`Unsatisfiable`] explains why, per class of rejected host
//!   (`"3 hosts: anti-affinity with web-1, web-2; 2 hosts: not in hard.clusters"`). It
//!   converts into [`crate::Error`] with [`crate::ErrorKind::InvalidState`].
//!
//! ```
//! use virtrigaud_core::model::{AntiAffinity, VMPlacementPolicySpec};
//! use virtrigaud_core::placement::{HostInfo, Inventory, PlacementRequest, Resources, Solver};
//! let mut inv = Inventory::default();
//! for h in ["esx-1", "esx-2"] {
//!     inv.hosts.push(HostInfo::new(h, Resources::new(16, 65536)));
//! }
//! let mut aa = AntiAffinity::default();
//! aa.host_anti_affinity = true;
//! let mut policy = VMPlacementPolicySpec::default();
//! policy.anti_affinity = Some(aa);
//! let mut solver = Solver::new(&inv);
//! let req = |n: &str| PlacementRequest::new(n, Resources::new(2, 4096)).group("web").policy(policy.clone());
//! let a = solver.place(&req("web-1")).unwrap();
//! let b = solver.place(&req("web-2")).unwrap();
//! assert_ne!(a.host, b.host);
//! let err = solver.place(&req("web-3")).unwrap_err();
//! assert_eq!(err.to_string(), "cannot place web-3 on any of 2 hosts: 2 hosts: host anti-affinity with web-1, web-2");
//! ```
//!
//! Native rules: [`export::native_rules`] turns decisions into the rules a hypervisor can keep
//! enforcing after placement (DRS VM-VM anti-affinity, DRS VM-Host "must" rules, Storage DRS
//! VM anti-affinity); its documentation lists what cannot be exported.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::model::VMPlacementPolicySpec;

mod explain;
pub mod export;
mod placer;
mod solver;
mod target;

pub use explain::{RejectReason, RejectedClass, Unsatisfiable};
pub use placer::SolverPlacer;
pub use solver::{Solver, place_batch};
pub use target::{HostAntiAffinity, Placement};

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

    /// Whether `demand` fits into what is left of `self` after `used`.
    pub const fn fits(&self, used: Resources, demand: Resources) -> bool {
        used.cpu.saturating_add(demand.cpu) <= self.cpu
            && used.memory_mib.saturating_add(demand.memory_mib) <= self.memory_mib
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
    /// Names of VMs with disks on it (for datastore anti-affinity).
    #[serde(default)]
    pub vms: Vec<String>,
}

impl DatastoreInfo {
    /// A datastore with `free_gib` free.
    pub fn new(name: impl Into<String>, free_gib: u64) -> Self {
        DatastoreInfo {
            name: name.into(),
            free_gib,
            vms: Vec::new(),
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

    /// Sets the cluster.
    pub fn cluster(mut self, cluster: impl Into<String>) -> Self {
        self.cluster = Some(cluster.into());
        self
    }

    /// Sets the zone.
    pub fn zone(mut self, zone: impl Into<String>) -> Self {
        self.zone = Some(zone.into());
        self
    }

    /// Adds a reachable datastore.
    pub fn datastore(mut self, datastore: impl Into<String>) -> Self {
        self.datastores.push(datastore.into());
        self
    }

    /// Adds a folder.
    pub fn folder(mut self, folder: impl Into<String>) -> Self {
        self.folders.push(folder.into());
        self
    }

    /// Sets the current allocation.
    pub fn allocated(mut self, allocated: Resources) -> Self {
        self.allocated = allocated;
        self
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
    /// Names of the group's VMs that already exist (found on hosts and datastores through
    /// [`HostInfo::vms`] and [`DatastoreInfo::vms`]). VMs placed earlier by the same
    /// [`Solver`] with the same group are peers automatically.
    pub peers: Vec<String>,
    /// Hard and soft constraints and anti-affinity (a `VMPlacementPolicy` spec).
    pub policy: VMPlacementPolicySpec,
}

impl PlacementRequest {
    /// A request for `vm_name` needing `demand`, without constraints.
    pub fn new(vm_name: impl Into<String>, demand: Resources) -> Self {
        PlacementRequest {
            vm_name: vm_name.into(),
            demand,
            ..Default::default()
        }
    }

    /// Sets the disk space needed, GiB.
    pub fn disk_gib(mut self, gib: u64) -> Self {
        self.disk_gib = gib;
        self
    }

    /// Sets the anti-affinity group.
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }

    /// Sets the names of the group's existing VMs.
    pub fn peers<I: IntoIterator<Item = S>, S: Into<String>>(mut self, peers: I) -> Self {
        self.peers = peers.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the constraints.
    pub fn policy(mut self, policy: VMPlacementPolicySpec) -> Self {
        self.policy = policy;
        self
    }
}

/// Where a VM goes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PlacementDecision {
    /// The VM placed.
    pub vm_name: String,
    /// Host.
    pub host: String,
    /// Cluster of that host.
    pub cluster: Option<String>,
    /// Zone of that host.
    pub zone: Option<String>,
    /// Datastore for its disks.
    pub datastore: Option<String>,
    /// Score of the choice (higher is better).
    pub score: i64,
}

impl PlacementDecision {
    /// The decision in words, for a VM's events or status:
    /// `"host esx-2, cluster c1, datastore ssd-1 (score 412, the best that fits)"`.
    pub fn explain(&self) -> String {
        format!(
            "{} (score {}, the best that fits)",
            Placement::from(self),
            self.score
        )
    }
}

/// Chooses a home for a VM.
#[async_trait]
pub trait Placer: Send + Sync {
    /// Places one VM.
    async fn place(&self, request: &PlacementRequest) -> Result<PlacementDecision>;

    /// Places several VMs together, each seeing the earlier ones (all or nothing). The default
    /// places them one by one, which is only right for placers whose inventory already
    /// reflects earlier decisions.
    async fn place_batch(&self, requests: &[PlacementRequest]) -> Result<Vec<PlacementDecision>> {
        let mut out = Vec::with_capacity(requests.len());
        for r in requests {
            out.push(self.place(r).await?);
        }
        Ok(out)
    }
}
