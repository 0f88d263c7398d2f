//! Why a VM could not be placed: one [`RejectedClass`] per reason, with counts and names.

use std::fmt;

use crate::error::{Error, ErrorKind};

/// Why one host was rejected. Each host is rejected for the first reason that applies, in
/// the order of the variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum RejectReason {
    /// The host is not in `hard.hosts`.
    NotInHardHosts,
    /// The host's cluster is not in `hard.clusters`.
    NotInHardClusters,
    /// The host's zone is not in `hard.zones`.
    NotInHardZones,
    /// None of the host's datastores is allowed (`hard.datastores`), or the host reports no
    /// datastore while one is required (hard datastores or datastore anti-affinity).
    NoAllowedDatastore,
    /// A VM of the same group already runs on the host.
    HostAntiAffinity,
    /// A VM of the same group already runs in the host's cluster.
    ClusterAntiAffinity,
    /// Not enough free vCPUs.
    InsufficientCpu,
    /// Not enough free memory.
    InsufficientMemory,
    /// Every allowed datastore already holds a VM of the same group.
    DatastoreAntiAffinity,
    /// No allowed datastore has enough free space.
    InsufficientDisk,
}

impl RejectReason {
    /// Every reason, in evaluation order.
    pub const ALL: [RejectReason; 10] = [
        RejectReason::NotInHardHosts,
        RejectReason::NotInHardClusters,
        RejectReason::NotInHardZones,
        RejectReason::NoAllowedDatastore,
        RejectReason::HostAntiAffinity,
        RejectReason::ClusterAntiAffinity,
        RejectReason::InsufficientCpu,
        RejectReason::InsufficientMemory,
        RejectReason::DatastoreAntiAffinity,
        RejectReason::InsufficientDisk,
    ];

    /// Position in [`RejectReason::ALL`].
    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// A short phrase ("not in hard.clusters").
    pub fn describe(self) -> &'static str {
        match self {
            RejectReason::NotInHardHosts => "not in hard.hosts",
            RejectReason::NotInHardClusters => "not in hard.clusters",
            RejectReason::NotInHardZones => "not in hard.zones",
            RejectReason::NoAllowedDatastore => "no allowed datastore",
            RejectReason::HostAntiAffinity => "host anti-affinity",
            RejectReason::ClusterAntiAffinity => "cluster anti-affinity",
            RejectReason::InsufficientCpu => "insufficient cpu",
            RejectReason::InsufficientMemory => "insufficient memory",
            RejectReason::DatastoreAntiAffinity => "datastore anti-affinity",
            RejectReason::InsufficientDisk => "insufficient datastore space",
        }
    }

    /// Whether the reason names conflicting VMs.
    pub fn is_anti_affinity(self) -> bool {
        matches!(
            self,
            RejectReason::HostAntiAffinity
                | RejectReason::ClusterAntiAffinity
                | RejectReason::DatastoreAntiAffinity
        )
    }
}

/// All hosts rejected for one reason.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RejectedClass {
    /// The reason.
    pub reason: RejectReason,
    /// How many hosts.
    pub hosts: usize,
    /// The first few of them, by name.
    pub examples: Vec<String>,
    /// For anti-affinity: the group's VMs in the way (sorted, at most [`Unsatisfiable::MAX_NAMES`]).
    pub conflicts: Vec<String>,
}

impl fmt::Display for RejectedClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plural = if self.hosts == 1 { "host" } else { "hosts" };
        write!(f, "{} {plural}: {}", self.hosts, self.reason.describe())?;
        if !self.conflicts.is_empty() {
            write!(f, " with {}", self.conflicts.join(", "))?;
        }
        Ok(())
    }
}

/// No host can take the VM: every candidate host, grouped by the reason it was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub struct Unsatisfiable {
    /// The VM that could not be placed.
    pub vm_name: String,
    /// Hosts in the inventory.
    pub total_hosts: usize,
    /// One entry per reason that rejected at least one host, in [`RejectReason::ALL`] order;
    /// the host counts add up to `total_hosts`.
    pub classes: Vec<RejectedClass>,
}

impl Unsatisfiable {
    /// At most this many names are listed per class.
    pub const MAX_NAMES: usize = 8;

    /// The class for `reason`, if any host was rejected for it.
    pub fn class(&self, reason: RejectReason) -> Option<&RejectedClass> {
        self.classes.iter().find(|c| c.reason == reason)
    }
}

impl fmt::Display for Unsatisfiable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.total_hosts == 0 {
            return write!(
                f,
                "cannot place {}: the inventory has no hosts",
                self.vm_name
            );
        }
        let plural = if self.total_hosts == 1 { "" } else { "s" };
        write!(
            f,
            "cannot place {} on any of {} host{plural}: ",
            self.vm_name, self.total_hosts
        )?;
        for (i, c) in self.classes.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{c}")?;
        }
        Ok(())
    }
}

impl From<Unsatisfiable> for Error {
    fn from(u: Unsatisfiable) -> Self {
        Error::new(ErrorKind::InvalidState, u.to_string())
            .with_operation("place")
            .with_resource(u.vm_name.clone())
            .permanent()
            .with_source(u)
    }
}
