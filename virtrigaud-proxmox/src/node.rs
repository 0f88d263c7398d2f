//! What a PVE node offers ([`NodeCapabilities`]).

use virtrigaud_core::{Error, Result};

use crate::PROVIDER_TYPE;
use crate::client::PveClient;
use crate::error::to_core_error;
use crate::request::api;
use crate::types::NodeEntry;

/// What one node offers (see [`crate::ProxmoxProvider::node_capabilities`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeCapabilities {
    /// Node name.
    pub node: String,
    /// Whether the cluster reports it online.
    pub online: bool,
    /// PVE version (`9.0.10`), cluster-wide.
    pub pve_version: String,
    /// `status/stop` knows `overrule-shutdown` (PVE 8.1+).
    pub overrule_shutdown: bool,
    /// Logical CPUs.
    pub cpus: u64,
    /// Memory, MiB.
    pub memory_mib: u64,
}

/// What one node offers: online state, PVE version, `overrule-shutdown`, capacity.
pub(crate) async fn node_capabilities(client: &PveClient, node: &str) -> Result<NodeCapabilities> {
    #[derive(serde::Deserialize)]
    struct Version {
        #[serde(default)]
        version: String,
    }
    let op = "node_capabilities";
    let v: Version = client
        .call(&api::version())
        .await
        .map_err(|e| to_core_error(e, op, Some(node)))?;
    let nodes: Vec<NodeEntry> = client
        .call(&api::nodes())
        .await
        .map_err(|e| to_core_error(e, op, Some(node)))?;
    let entry = nodes.into_iter().find(|n| n.node == node).ok_or_else(|| {
        Error::not_found(format!("no PVE node {node:?}")).context_for(PROVIDER_TYPE, op, None)
    })?;
    let mut parts = v.version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    Ok(NodeCapabilities {
        node: entry.node,
        online: entry.status == "online",
        pve_version: v.version,
        overrule_shutdown: (major, minor) >= (8, 1),
        cpus: entry.maxcpu.unwrap_or(0),
        memory_mib: entry.maxmem.unwrap_or(0) / (1024 * 1024),
    })
}
