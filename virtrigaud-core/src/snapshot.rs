//! The [`Snapshotter`] trait: create, list, revert and delete snapshots.

use std::time::SystemTime;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::vm::VmId;

/// Options for [`Snapshotter::create_snapshot`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct SnapshotOptions {
    /// Snapshot name (providers may add a suffix to make it unique).
    pub name: String,
    /// Free-text description.
    pub description: Option<String>,
    /// Include the memory state (running VMs only).
    pub memory: bool,
    /// Quiesce the guest filesystems first (needs the agent / tools).
    pub quiesce: bool,
}

impl SnapshotOptions {
    /// Options for a snapshot named `name`.
    pub fn new(name: impl Into<String>) -> Self {
        SnapshotOptions {
            name: name.into(),
            ..Default::default()
        }
    }
    /// Includes memory state.
    pub fn with_memory(mut self, memory: bool) -> Self {
        self.memory = memory;
        self
    }
    /// Requests quiescing.
    pub fn with_quiesce(mut self, quiesce: bool) -> Self {
        self.quiesce = quiesce;
        self
    }
    /// Sets the description.
    pub fn with_description(mut self, description: impl Into<String>) -> Self {
        self.description = Some(description.into());
        self
    }
}

/// A snapshot as the provider reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SnapshotInfo {
    /// Provider id of the snapshot (name, moref, …).
    pub id: String,
    /// Snapshot name.
    pub name: String,
    /// Description, if any.
    pub description: Option<String>,
    /// When it was taken, if the provider says.
    pub created_at: Option<SystemTime>,
    /// Whether memory state is included.
    pub has_memory: bool,
    /// Whether the guest was quiesced (false when quiescing was asked but not possible).
    pub quiesced: bool,
    /// Parent snapshot id.
    pub parent: Option<String>,
}

impl SnapshotInfo {
    /// A snapshot record with `id` and `name`.
    pub fn new(id: impl Into<String>, name: impl Into<String>) -> Self {
        SnapshotInfo {
            id: id.into(),
            name: name.into(),
            description: None,
            created_at: None,
            has_memory: false,
            quiesced: false,
            parent: None,
        }
    }
}

/// Options for [`Snapshotter::revert_snapshot`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct RevertOptions {
    /// Leave the VM running after the revert (memory snapshots resume by themselves on most
    /// providers; this starts disk-only ones).
    pub start: bool,
}

/// Options for [`Snapshotter::delete_snapshot`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct DeleteSnapshotOptions {
    /// Delete the snapshot's children too.
    pub children: bool,
}

/// Snapshot support of a provider.
#[async_trait]
pub trait Snapshotter: Send + Sync {
    /// Takes a snapshot.
    async fn create_snapshot(&self, vm: &VmId, opts: &SnapshotOptions) -> Result<SnapshotInfo>;
    /// Lists a VM's snapshots.
    async fn list_snapshots(&self, vm: &VmId) -> Result<Vec<SnapshotInfo>>;
    /// Reverts the VM to a snapshot.
    async fn revert_snapshot(&self, vm: &VmId, snapshot: &str, opts: &RevertOptions) -> Result<()>;
    /// Deletes a snapshot.
    async fn delete_snapshot(
        &self,
        vm: &VmId,
        snapshot: &str,
        opts: &DeleteSnapshotOptions,
    ) -> Result<()>;
}
