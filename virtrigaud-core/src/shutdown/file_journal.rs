//! [`FileJournal`]: crash-safe leases in a directory, one small JSON file each, with an
//! interprocess lock per lease.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use sha2::{Digest, Sha256};

use super::journal::ShutdownJournal;
use super::lease::{Lease, LeaseScope};
use crate::error::{Error, ErrorKind, Result};
use crate::vm::VmId;

/// The largest lease file read; anything bigger is not a lease.
const MAX_LEASE_BYTES: u64 = 64 * 1024;
/// The longest encoded VM id kept whole in a file name (names stay far below `NAME_MAX`).
const MAX_NAME_PART: usize = 96;
const LEASE_SUFFIX: &str = ".lease.json";

/// A crash-safe journal in a directory.
///
/// - Each lease is one small JSON file, written to a temporary file, fsynced, renamed into
///   place, and the directory fsynced; removal is fsynced the same way.
/// - File names are safe for any VM id (percent-encoded, long or non-ASCII ids shortened with
///   a hash) and scoped by provider type and endpoint ([`crate::Provider::instance_id`]).
/// - While a shutdown is in flight, the journal holds an advisory lock (`flock`) on the
///   lease's `.lock` file, so two processes sharing the directory never both drive one VM:
///   the second one's [`ShutdownJournal::record`] is a permanent
///   [`crate::ErrorKind::Conflict`]. The operating system drops the lock when the process
///   dies, so a restarted process resumes the lease. The small `.lock` files are kept.
/// - A lease file that cannot be read as a lease is renamed aside (`….corrupt-<ms>`) with a
///   warning, never silently ignored.
/// - File I/O runs on tokio's blocking pool, never on the async runtime.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use std::time::{Duration, SystemTime};
/// use virtrigaud_core::shutdown::{FileJournal, Lease, LeaseScope, ShutdownJournal};
/// let dir = std::env::temp_dir().join(format!("vr-doc-journal-{}", std::process::id()));
/// let journal = FileJournal::open(&dir)?;
/// let scope = LeaseScope::new("simulator", "");
/// let now = SystemTime::now();
/// journal.record(&Lease::new(&scope, "web-1".into(), now, now + Duration::from_secs(60))).await?;
/// assert_eq!(journal.list(&scope).await?.len(), 1);
/// journal.remove(&scope, &"web-1".into()).await?;
/// assert!(journal.list(&scope).await?.is_empty());
/// # std::fs::remove_dir_all(&dir).ok();
/// # Ok::<(), virtrigaud_core::Error>(()) }).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct FileJournal {
    dir: PathBuf,
    /// Locks held by this journal, by lease file stem.
    held: Arc<Mutex<HashMap<String, File>>>,
}

impl FileJournal {
    /// Opens (creating if needed) a journal in `dir`.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| io_error("open", &dir, e))?;
        Ok(FileJournal {
            dir,
            held: Arc::default(),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&FileJournal) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || f(&this))
            .await
            .map_err(|e| Error::internal(format!("journal I/O task failed: {e}")))?
    }

    fn lease_path(&self, stem: &str) -> PathBuf {
        self.dir.join(format!("{stem}{LEASE_SUFFIX}"))
    }

    /// Takes the interprocess lock of `stem` unless this journal holds it already.
    fn lock(&self, stem: &str) -> Result<()> {
        let mut held = self
            .held
            .lock()
            .map_err(|_| Error::internal("journal lock table poisoned"))?;
        if held.contains_key(stem) {
            return Ok(());
        }
        let path = self.dir.join(format!("{stem}.lock"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| io_error("lock", &path, e))?;
        match file.try_lock() {
            Ok(()) => {
                held.insert(stem.to_owned(), file);
                Ok(())
            }
            Err(std::fs::TryLockError::WouldBlock) => Err(Error::new(
                ErrorKind::Conflict,
                "another process is driving this VM's shutdown (its journal lease is locked)",
            )
            .permanent()
            .with_operation("journal")),
            Err(std::fs::TryLockError::Error(e)) => Err(io_error("lock", &path, e)),
        }
    }

    fn unlock(&self, stem: &str) {
        if let Ok(mut held) = self.held.lock() {
            held.remove(stem);
        }
    }

    fn write_atomically(&self, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
        let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
        {
            let mut f = File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        self.sync_dir();
        Ok(())
    }

    /// Persists renames and unlinks; not every platform allows fsync on a directory.
    fn sync_dir(&self) {
        if let Ok(d) = File::open(&self.dir) {
            let _ = d.sync_all();
        }
    }

    /// Reads one lease file: `Ok(None)` if it does not exist; a file that is not a lease is
    /// renamed aside.
    fn read_lease(&self, path: &Path) -> Result<Option<Lease>> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error("read", path, e)),
        };
        let mut bytes = Vec::new();
        file.take(MAX_LEASE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| io_error("read", path, e))?;
        let parsed = if bytes.len() as u64 > MAX_LEASE_BYTES {
            Err(format!("longer than {MAX_LEASE_BYTES} bytes"))
        } else {
            serde_json::from_slice::<Lease>(&bytes).map_err(|e| e.to_string())
        };
        match parsed {
            Ok(lease) => Ok(Some(lease)),
            Err(why) => {
                self.set_aside(path, &why);
                Ok(None)
            }
        }
    }

    fn set_aside(&self, path: &Path, why: &str) {
        let ms = super::lease::to_ms(std::time::SystemTime::now());
        let aside = path.with_extension(format!("corrupt-{ms}"));
        match std::fs::rename(path, &aside) {
            Ok(()) => {
                self.sync_dir();
                tracing::warn!(
                    file = %path.display(),
                    moved_to = %aside.display(),
                    reason = why,
                    "a shutdown lease file could not be read; it was set aside and is not applied"
                );
            }
            Err(e) => tracing::warn!(
                file = %path.display(),
                reason = why,
                error = %e,
                "a shutdown lease file could not be read nor set aside"
            ),
        }
    }
}

/// The file stem of the lease of `vm` in `scope`.
fn stem(scope: &LeaseScope, vm: &VmId) -> String {
    format!("{}--{}", scope_prefix(scope), name_part(vm.as_str()))
}

/// The part of a file name shared by every lease of `scope`.
fn scope_prefix(scope: &LeaseScope) -> String {
    format!(
        "{}--{}",
        name_part(&scope.provider_type),
        short_hash(&scope.instance)
    )
}

/// A file-name-safe form of `s`: percent-encoding of everything but `[A-Za-z0-9._-]`, with a
/// long result cut and made unique by a hash of the whole.
fn name_part(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.len() > MAX_NAME_PART {
        // The encoding is ASCII, so any byte index is a character boundary.
        out.truncate(MAX_NAME_PART - 17);
        out.push('~');
        out.push_str(&short_hash(s));
    }
    out
}

fn short_hash(s: &str) -> String {
    let digest = Sha256::digest(s.as_bytes());
    hex::encode(&digest[..8])
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
        let lease = lease.clone();
        self.blocking(move |j| {
            let stem = stem(&lease.scope(), &lease.vm);
            j.lock(&stem)?;
            let path = j.lease_path(&stem);
            let bytes = serde_json::to_vec(&lease).map_err(|e| Error::internal(e.to_string()))?;
            j.write_atomically(&path, &bytes)
                .map_err(|e| io_error("record", &path, e))
        })
        .await
    }

    async fn remove(&self, scope: &LeaseScope, vm: &VmId) -> Result<()> {
        let stem = stem(scope, vm);
        self.blocking(move |j| {
            let path = j.lease_path(&stem);
            let result = match std::fs::remove_file(&path) {
                Ok(()) => {
                    j.sync_dir();
                    Ok(())
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(io_error("remove", &path, e)),
            };
            if result.is_ok() {
                j.unlock(&stem);
            }
            result
        })
        .await
    }

    async fn get(&self, scope: &LeaseScope, vm: &VmId) -> Result<Option<Lease>> {
        let (scope, vm) = (scope.clone(), vm.clone());
        self.blocking(move |j| {
            let lease = j.read_lease(&j.lease_path(&stem(&scope, &vm)))?;
            // A shortened name could in principle be shared: the content decides.
            Ok(lease.filter(|l| scope.contains(l) && l.vm == vm))
        })
        .await
    }

    async fn list(&self, scope: &LeaseScope) -> Result<Vec<Lease>> {
        let scope = scope.clone();
        self.blocking(move |j| {
            let prefix = format!("{}--", scope_prefix(&scope));
            let entries = std::fs::read_dir(&j.dir).map_err(|e| io_error("list", &j.dir, e))?;
            let mut leases = Vec::new();
            for entry in entries.flatten() {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if !name.starts_with(&prefix) || !name.ends_with(LEASE_SUFFIX) {
                    continue;
                }
                if let Some(lease) = j.read_lease(&entry.path())?
                    && scope.contains(&lease)
                {
                    leases.push(lease);
                }
            }
            leases.sort_by(|a, b| a.vm.cmp(&b.vm));
            Ok(leases)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_short_and_distinct_for_any_id() {
        let long = "x".repeat(5000);
        let longer = format!("{long}y");
        let a = name_part(&long);
        let b = name_part(&longer);
        assert!(a.len() <= MAX_NAME_PART && b.len() <= MAX_NAME_PART);
        assert_ne!(a, b);
        let unicode = name_part("ウェブ/サーバー 1");
        assert!(unicode.is_ascii() && unicode.len() <= MAX_NAME_PART);
        assert_eq!(name_part("web-1.prod_a"), "web-1.prod_a");
        let s1 = LeaseScope::new("libvirt", "qemu+ssh://a/system");
        let s2 = LeaseScope::new("libvirt", "qemu+ssh://b/system");
        assert_ne!(stem(&s1, &"vm".into()), stem(&s2, &"vm".into()));
    }
}
