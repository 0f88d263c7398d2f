//! Placements on a PVE cluster: a node and a storage.
//!
//! A datastore in the placement inventory is a PVE storage: a shared one by its name
//! (`ceph`), a node-local one as `storage@node` (`local-lvm@pve1`), because every node's
//! `local-lvm` is a different disk. A placement's datastore may use either form; the `@node`
//! form pins the node. PVE has one cluster per API endpoint, so `placement.cluster` is
//! refused rather than ignored.

use virtrigaud_core::{Error, Placement, Result};

use crate::PROVIDER_TYPE;
use crate::client::PveClient;
use crate::error::to_core_error;
use crate::request::api;
use crate::types::NodeEntry;

/// One storage of one node, as `cluster/resources?type=storage` lists it.
#[derive(Debug, Clone, serde::Deserialize)]
pub(crate) struct Store {
    /// Storage id.
    #[serde(default)]
    pub(crate) storage: String,
    /// Node.
    #[serde(default)]
    pub(crate) node: String,
    /// Content types (`images,rootdir`).
    #[serde(default)]
    pub(crate) content: String,
    /// Shared between nodes.
    #[serde(default, deserialize_with = "crate::types::lenient::opt_u64")]
    pub(crate) shared: Option<u64>,
    /// Size, bytes.
    #[serde(default, deserialize_with = "crate::types::lenient::opt_u64")]
    pub(crate) maxdisk: Option<u64>,
    /// Used, bytes.
    #[serde(default, deserialize_with = "crate::types::lenient::opt_u64")]
    pub(crate) disk: Option<u64>,
}

impl Store {
    /// Whether every node sees the same storage.
    pub(crate) fn is_shared(&self) -> bool {
        self.shared.unwrap_or(0) != 0
    }

    /// Its name as a placement datastore: `storage` when shared, else `storage@node`.
    pub(crate) fn datastore(&self) -> String {
        if self.is_shared() {
            self.storage.clone()
        } else {
            format!("{}@{}", self.storage, self.node)
        }
    }

    /// Whether it holds VM disks.
    pub(crate) fn holds_images(&self) -> bool {
        self.content.split(',').any(|c| c == "images")
    }
}

/// Where a placement puts a VM: the node, and the storage for its disks when the placement
/// names one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Resolved {
    /// Node.
    pub(crate) node: String,
    /// Storage id, when the placement named a datastore.
    pub(crate) storage: Option<String>,
}

/// Resolves `placement` on the cluster: its host (a node that must exist and be online), or
/// the node its `storage@node` datastore pins, or else `default_node`, or else the first
/// online node. A named datastore must be a storage of that node. Errors name the field.
pub(crate) async fn resolve(
    client: &PveClient,
    placement: &Placement,
    default_node: Option<&str>,
    op: &'static str,
    resource: &str,
) -> Result<Resolved> {
    let invalid = |m: String| Error::invalid_spec(m).context_for(PROVIDER_TYPE, op, Some(resource));
    if let Some(c) = &placement.cluster {
        return Err(invalid(format!(
            "placement.cluster: a Proxmox VE endpoint is one cluster; place by host (node), not cluster {c:?}"
        )));
    }
    let (storage, pinned) = match placement.datastore.as_deref() {
        Some(d) => match d.split_once('@') {
            Some((s, n)) => (Some(s), Some(n)),
            None => (Some(d), None),
        },
        None => (None, None),
    };
    if let (Some(h), Some(n)) = (placement.host.as_deref(), pinned)
        && h != n
    {
        return Err(invalid(format!(
            "placement.datastore: {} is on node {n}, not on placement.host {h}",
            placement.datastore.as_deref().unwrap_or_default()
        )));
    }
    let wire = |e| to_core_error(e, op, Some(resource));
    let named = placement.host.as_deref().or(pinned);
    let node = match named.or(default_node) {
        Some(n) if named.is_none() => n.to_owned(),
        want => {
            let nodes: Vec<NodeEntry> = client.call(&api::nodes()).await.map_err(wire)?;
            pick(nodes, want, op, resource)?
        }
    };
    if let Some(s) = storage {
        let stores: Vec<Store> = client.call(&api::cluster_storage()).await.map_err(wire)?;
        if !stores.iter().any(|x| x.node == node && x.storage == s) {
            return Err(Error::not_found(format!(
                "placement.datastore: node {node} has no storage {s:?}"
            ))
            .context_for(PROVIDER_TYPE, op, Some(resource)));
        }
    }
    Ok(Resolved {
        node,
        storage: storage.map(str::to_owned),
    })
}

/// The node named `want` (which must be online), or the first online node.
fn pick(
    nodes: Vec<NodeEntry>,
    want: Option<&str>,
    op: &'static str,
    resource: &str,
) -> Result<String> {
    let ctx = |e: Error| e.context_for(PROVIDER_TYPE, op, Some(resource));
    match want {
        Some(w) => match nodes.into_iter().find(|n| n.node == w) {
            Some(n) if n.status == "online" => Ok(n.node),
            Some(n) => Err(ctx(Error::unavailable(format!(
                "placement.host: node {w} is {}",
                if n.status.is_empty() {
                    "not online"
                } else {
                    n.status.as_str()
                }
            )))),
            None => Err(ctx(Error::not_found(format!(
                "placement.host: no PVE node {w:?}"
            )))),
        },
        None => nodes
            .into_iter()
            .find(|n| n.status == "online")
            .map(|n| n.node)
            .ok_or_else(|| ctx(Error::unavailable("no online PVE node"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(storage: &str, node: &str, shared: u64) -> Store {
        Store {
            storage: storage.into(),
            node: node.into(),
            content: "images,rootdir".into(),
            shared: Some(shared),
            maxdisk: None,
            disk: None,
        }
    }

    #[test]
    fn local_storages_are_named_per_node_and_shared_ones_once() {
        assert_eq!(store("local-lvm", "pve1", 0).datastore(), "local-lvm@pve1");
        assert_eq!(store("ceph", "pve1", 1).datastore(), "ceph");
        assert!(store("ceph", "pve1", 1).holds_images());
    }

    fn node(name: &str, status: &str) -> NodeEntry {
        serde_json::from_value(serde_json::json!({"node": name, "status": status})).unwrap()
    }

    #[test]
    fn a_named_node_must_exist_and_be_online() {
        let nodes = || vec![node("pve1", "online"), node("pve2", "offline")];
        assert_eq!(pick(nodes(), Some("pve1"), "create", "x").unwrap(), "pve1");
        let e = pick(nodes(), Some("pve2"), "create", "x").unwrap_err();
        assert!(
            e.is_retryable() && e.to_string().contains("placement.host"),
            "{e}"
        );
        let e = pick(nodes(), Some("pve9"), "create", "x").unwrap_err();
        assert!(e.to_string().contains("no PVE node \"pve9\""), "{e}");
        assert_eq!(pick(nodes(), None, "create", "x").unwrap(), "pve1");
    }
}
