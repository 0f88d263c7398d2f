//! [`Placement`]: where a provider is asked to create a VM.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::PlacementDecision;

/// Where to create a VM: a host, a cluster and a datastore, each optional (an empty placement
/// leaves the choice to the provider). Providers enforce every part they are given: a host,
/// cluster or datastore they do not have is an error naming the field (`placement.host`,
/// `placement.cluster`, `placement.datastore`), never silently ignored.
///
/// ```
/// use virtrigaud_core::Placement;
/// let p = Placement::on_host("esx-1").with_datastore("ssd-1");
/// assert_eq!(p.to_string(), "host esx-1, datastore ssd-1");
/// assert!(Placement::default().is_empty());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Placement {
    /// Host (ESXi host, libvirt host, PVE node, Kubernetes node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Cluster (vSphere compute cluster); with no host, any host of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// Datastore (vSphere datastore, libvirt storage pool, PVE storage, Kubernetes storage
    /// class) for the VM's disks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datastore: Option<String>,
    /// A standing host anti-affinity rule the VM joins, for providers that keep enforcing
    /// one after placement (KubeVirt: pod anti-affinity on the VM's template, so a
    /// rescheduled VM still avoids its peers' nodes). The host chosen above already honours
    /// it at create; providers without such a rule rely on that alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anti_affinity: Option<HostAntiAffinity>,
}

/// VMs whose label `label` has the value `value` never share a host.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub struct HostAntiAffinity {
    /// The label naming the group.
    pub label: String,
    /// Its value for this group.
    pub value: String,
}

impl HostAntiAffinity {
    /// The group of VMs labelled `label=value`.
    pub fn new(label: impl Into<String>, value: impl Into<String>) -> Self {
        HostAntiAffinity {
            label: label.into(),
            value: value.into(),
        }
    }
}

impl Placement {
    /// A placement on `host`.
    pub fn on_host(host: impl Into<String>) -> Self {
        Placement {
            host: Some(host.into()),
            ..Default::default()
        }
    }

    /// A placement in `cluster`, on any of its hosts.
    pub fn in_cluster(cluster: impl Into<String>) -> Self {
        Placement {
            cluster: Some(cluster.into()),
            ..Default::default()
        }
    }

    /// The same placement, with the disks on `datastore`.
    pub fn with_datastore(mut self, datastore: impl Into<String>) -> Self {
        self.datastore = Some(datastore.into());
        self
    }

    /// The same placement, in `cluster`.
    pub fn with_cluster(mut self, cluster: impl Into<String>) -> Self {
        self.cluster = Some(cluster.into());
        self
    }

    /// The same placement, joining the host anti-affinity group `rule`.
    pub fn with_anti_affinity(mut self, rule: HostAntiAffinity) -> Self {
        self.anti_affinity = Some(rule);
        self
    }

    /// Whether nothing is decided (no host, cluster, datastore or rule).
    pub fn is_empty(&self) -> bool {
        self.host.is_none()
            && self.cluster.is_none()
            && self.datastore.is_none()
            && self.anti_affinity.is_none()
    }
}

impl From<&PlacementDecision> for Placement {
    fn from(d: &PlacementDecision) -> Self {
        Placement {
            host: Some(d.host.clone()),
            cluster: d.cluster.clone(),
            datastore: d.datastore.clone(),
            anti_affinity: None,
        }
    }
}

impl fmt::Display for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts = [
            ("host", &self.host),
            ("cluster", &self.cluster),
            ("datastore", &self.datastore),
        ];
        let mut first = true;
        for (what, v) in parts {
            if let Some(v) = v {
                if !first {
                    f.write_str(", ")?;
                }
                write!(f, "{what} {v}")?;
                first = false;
            }
        }
        if first {
            f.write_str("anywhere")?;
        }
        Ok(())
    }
}
