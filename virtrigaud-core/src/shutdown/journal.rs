//! Restart-safe shutdown leases.
//!
//! When a shutdown starts, its lease — VM, start and deadline as wall-clock times — is
//! recorded before the guest is signalled. A process that crashes mid-grace and comes back
//! finds the lease and resumes with the time that is *left*, never a fresh grace period.

use std::collections::HashMap;
use std::fmt::Debug;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};
use crate::vm::VmId;

/// One in-flight shutdown as recorded in a journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// Provider type that owns the VM.
    pub provider_type: String,
    /// The VM.
    pub vm: VmId,
    /// When the grace period started, milliseconds since the Unix epoch.
    pub started_at_ms: u64,
    /// When the grace period ends, milliseconds since the Unix epoch.
    pub deadline_ms: u64,
}

impl Lease {
    /// A lease starting at `started` and ending at `deadline`.
    pub fn new(provider_type: &str, vm: VmId, started: SystemTime, deadline: SystemTime) -> Self {
        Lease {
            provider_type: provider_type.to_owned(),
            vm,
            started_at_ms: to_ms(started),
            deadline_ms: to_ms(deadline),
        }
    }
    /// The start as a `SystemTime`.
    pub fn started_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.started_at_ms)
    }
    /// The deadline as a `SystemTime`.
    pub fn deadline(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.deadline_ms)
    }
}

pub(crate) fn to_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Where leases are kept. Implement it over your own store (a database, a Kubernetes
/// object); [`FileJournal`] is the crash-safe default.
#[async_trait]
pub trait ShutdownJournal: Send + Sync + Debug {
    /// Records (or replaces) the lease of `lease.vm`. Must be durable when it returns.
    async fn record(&self, lease: &Lease) -> Result<()>;
    /// Removes the lease of `vm` (a missing lease is not an error).
    async fn remove(&self, provider_type: &str, vm: &VmId) -> Result<()>;
    /// The lease of `vm`, if any.
    async fn get(&self, provider_type: &str, vm: &VmId) -> Result<Option<Lease>>;
    /// Every lease of `provider_type`.
    async fn list(&self, provider_type: &str) -> Result<Vec<Lease>>;
}

/// A journal that keeps nothing: the [`super::ShutdownManager`] default.
///
/// Requests for a VM whose shutdown is in flight still join it (the manager tracks that
/// itself); only a process restart loses the deadline. Use [`FileJournal`] (or your own
/// store) to be restart-safe.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoJournal;

#[async_trait]
impl ShutdownJournal for NoJournal {
    async fn record(&self, _lease: &Lease) -> Result<()> {
        Ok(())
    }
    async fn remove(&self, _provider_type: &str, _vm: &VmId) -> Result<()> {
        Ok(())
    }
    async fn get(&self, _provider_type: &str, _vm: &VmId) -> Result<Option<Lease>> {
        Ok(None)
    }
    async fn list(&self, _provider_type: &str) -> Result<Vec<Lease>> {
        Ok(Vec::new())
    }
}

/// A journal in memory: leases outlive a [`super::ShutdownManager`] that shares it (a new
/// manager over the same journal resumes them), but not the process.
#[derive(Debug, Clone, Default)]
pub struct MemoryJournal {
    leases: Arc<Mutex<HashMap<(String, VmId), Lease>>>,
}

impl MemoryJournal {
    /// An empty journal.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl ShutdownJournal for MemoryJournal {
    async fn record(&self, lease: &Lease) -> Result<()> {
        let mut map = self.leases.lock().map_err(|_| poisoned())?;
        map.insert(
            (lease.provider_type.clone(), lease.vm.clone()),
            lease.clone(),
        );
        Ok(())
    }
    async fn remove(&self, provider_type: &str, vm: &VmId) -> Result<()> {
        let mut map = self.leases.lock().map_err(|_| poisoned())?;
        map.remove(&(provider_type.to_owned(), vm.clone()));
        Ok(())
    }
    async fn get(&self, provider_type: &str, vm: &VmId) -> Result<Option<Lease>> {
        let map = self.leases.lock().map_err(|_| poisoned())?;
        Ok(map.get(&(provider_type.to_owned(), vm.clone())).cloned())
    }
    async fn list(&self, provider_type: &str) -> Result<Vec<Lease>> {
        let map = self.leases.lock().map_err(|_| poisoned())?;
        let mut leases: Vec<Lease> = map
            .values()
            .filter(|l| l.provider_type == provider_type)
            .cloned()
            .collect();
        leases.sort_by(|a, b| a.vm.cmp(&b.vm));
        Ok(leases)
    }
}

fn poisoned() -> Error {
    Error::internal("journal lock poisoned")
}

/// A crash-safe journal in a directory: one small JSON file per lease, written to a
/// temporary file, fsynced, renamed into place, and the directory fsynced.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use std::time::{Duration, SystemTime};
/// use virtrigaud_core::shutdown::{FileJournal, Lease, ShutdownJournal};
/// let dir = std::env::temp_dir().join(format!("vr-doc-journal-{}", std::process::id()));
/// let journal = FileJournal::open(&dir)?;
/// let now = SystemTime::now();
/// journal.record(&Lease::new("simulator", "web-1".into(), now, now + Duration::from_secs(60))).await?;
/// assert_eq!(journal.list("simulator").await?.len(), 1);
/// journal.remove("simulator", &"web-1".into()).await?;
/// assert!(journal.list("simulator").await?.is_empty());
/// # std::fs::remove_dir_all(&dir).ok();
/// # Ok::<(), virtrigaud_core::Error>(()) }).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct FileJournal {
    dir: PathBuf,
}

impl FileJournal {
    /// Opens (creating if needed) a journal in `dir`.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| io_error("open", &dir, e))?;
        Ok(FileJournal { dir })
    }

    fn path_for(&self, provider_type: &str, vm: &VmId) -> PathBuf {
        self.dir.join(format!(
            "{}--{}.lease.json",
            encode(provider_type),
            encode(vm.as_str())
        ))
    }

    fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
        let dir = path.parent().unwrap_or_else(|| Path::new("."));
        let tmp = path.with_extension("tmp");
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = std::fs::File::open(dir) {
            // Persist the rename itself; not every platform allows fsync on a directory.
            let _ = d.sync_all();
        }
        Ok(())
    }
}

/// File-name-safe encoding of an id (percent-encoding of everything but `[A-Za-z0-9._-]`).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn io_error(op: &'static str, path: &Path, e: std::io::Error) -> Error {
    Error::new(
        ErrorKind::Internal,
        format!("journal {op} {}: {e}", path.display()),
    )
    .with_operation("journal")
    .with_source(e)
}

#[async_trait]
impl ShutdownJournal for FileJournal {
    async fn record(&self, lease: &Lease) -> Result<()> {
        let path = self.path_for(&lease.provider_type, &lease.vm);
        let bytes = serde_json::to_vec(lease).map_err(|e| Error::internal(e.to_string()))?;
        let p = path.clone();
        tokio::task::spawn_blocking(move || Self::write_atomically(&p, &bytes))
            .await
            .map_err(|e| Error::internal(format!("journal writer panicked: {e}")))?
            .map_err(|e| io_error("record", &path, e))
    }

    async fn remove(&self, provider_type: &str, vm: &VmId) -> Result<()> {
        let path = self.path_for(provider_type, vm);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error("remove", &path, e)),
        }
    }

    async fn get(&self, provider_type: &str, vm: &VmId) -> Result<Option<Lease>> {
        let path = self.path_for(provider_type, vm);
        match std::fs::read(&path) {
            Ok(bytes) => Ok(serde_json::from_slice(&bytes).ok()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error("read", &path, e)),
        }
    }

    async fn list(&self, provider_type: &str) -> Result<Vec<Lease>> {
        let prefix = format!("{}--", encode(provider_type));
        let entries = std::fs::read_dir(&self.dir).map_err(|e| io_error("list", &self.dir, e))?;
        let mut leases = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if !name.starts_with(&prefix) || !name.ends_with(".lease.json") {
                continue;
            }
            // A torn or foreign file is skipped, never fatal.
            if let Ok(bytes) = std::fs::read(entry.path())
                && let Ok(lease) = serde_json::from_slice::<Lease>(&bytes)
            {
                leases.push(lease);
            }
        }
        leases.sort_by(|a, b| a.vm.cmp(&b.vm));
        Ok(leases)
    }
}
