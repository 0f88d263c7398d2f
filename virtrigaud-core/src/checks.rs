//! Shared validation of what callers hand a provider: [`VmCreateSpec::validate`] and
//! [`ReconfigureRequest::validate`] / [`ReconfigureRequest::validate_against`].
//!
//! Providers call these instead of writing their own `cpu > 0` checks, and
//! [`crate::layers::ValidateLayer`] calls them before any provider sees a request. Errors are
//! [`crate::ErrorKind::InvalidSpec`] and name the field (`cpu`, `memoryMiB`,
//! `disks.data.sizeGiB`), as the model's own validation does.

use std::collections::BTreeSet;

use crate::error::{Error, Result};
use crate::provider::{ReconfigureRequest, VmCreateSpec};
use crate::vm::DiskInfo;

fn invalid(field: impl std::fmt::Display, rule: impl std::fmt::Display) -> Error {
    Error::invalid_spec(format!("{field}: {rule}"))
}

fn at_least_one(field: &str, value: u64) -> Result<()> {
    if value == 0 {
        return Err(invalid(field, "must be at least 1"));
    }
    Ok(())
}

impl VmCreateSpec {
    /// Checks the spec before anything is created: a name, at least one vCPU and one MiB,
    /// disks with distinct names and a size, networks with a name.
    ///
    /// ```
    /// use virtrigaud_core::VmCreateSpec;
    /// assert!(VmCreateSpec::new("web-1", 2, 2048).validate().is_ok());
    /// let err = VmCreateSpec::new("web-1", 0, 2048).validate().unwrap_err();
    /// assert!(err.to_string().contains("cpu: must be at least 1"));
    /// ```
    pub fn validate(&self) -> Result<()> {
        if self.name.trim().is_empty() {
            return Err(invalid("name", "must not be empty"));
        }
        at_least_one("cpu", u64::from(self.cpu))?;
        at_least_one("memoryMiB", self.memory_mib)?;
        let mut seen = BTreeSet::new();
        for disk in &self.disks {
            if disk.name.trim().is_empty() {
                return Err(invalid("disks[].name", "must not be empty"));
            }
            if !seen.insert(disk.name.as_str()) {
                return Err(invalid(
                    format_args!("disks.{}", disk.name),
                    "appears twice",
                ));
            }
            at_least_one(&format!("disks.{}.sizeGiB", disk.name), disk.size_gib)?;
        }
        if self.networks.iter().any(|n| n.network.trim().is_empty()) {
            return Err(invalid("networks[].network", "must not be empty"));
        }
        Ok(())
    }
}

impl ReconfigureRequest {
    /// Checks the request on its own: a new vCPU count or memory size is at least 1, a disk
    /// named once, grown to at least 1 GiB.
    ///
    /// ```
    /// use virtrigaud_core::ReconfigureRequest;
    /// let mut change = ReconfigureRequest::default();
    /// change.memory_mib = Some(0);
    /// assert!(change.validate().unwrap_err().to_string().contains("memoryMiB"));
    /// ```
    pub fn validate(&self) -> Result<()> {
        if let Some(cpu) = self.cpu {
            at_least_one("cpu", u64::from(cpu))?;
        }
        if let Some(mem) = self.memory_mib {
            at_least_one("memoryMiB", mem)?;
        }
        let mut seen = BTreeSet::new();
        for disk in &self.disks {
            if !seen.insert(disk.name.as_str()) {
                return Err(invalid(
                    format_args!("disks.{}", disk.name),
                    "appears twice",
                ));
            }
            at_least_one(&format!("disks.{}.sizeGiB", disk.name), disk.size_gib)?;
        }
        Ok(())
    }

    /// [`ReconfigureRequest::validate`], then checks each disk against the VM's current
    /// disks: it must exist, and disks only grow.
    ///
    /// ```
    /// use virtrigaud_core::{DiskInfo, DiskResize, ReconfigureRequest};
    /// let mut change = ReconfigureRequest::default();
    /// change.disks.push(DiskResize::new("root", 10));
    /// let err = change.validate_against(&[DiskInfo::new("root", 20)]).unwrap_err();
    /// assert!(err.to_string().contains("disks only grow"));
    /// ```
    pub fn validate_against(&self, current: &[DiskInfo]) -> Result<()> {
        self.validate()?;
        for disk in &self.disks {
            let cur = current
                .iter()
                .find(|c| c.name == disk.name)
                .ok_or_else(|| {
                    invalid(
                        format_args!("disks.{}", disk.name),
                        "the VM has no such disk",
                    )
                })?;
            if disk.size_gib < cur.size_gib {
                return Err(invalid(
                    format_args!("disks.{}.sizeGiB", disk.name),
                    format_args!(
                        "disks only grow ({} GiB < current {} GiB)",
                        disk.size_gib, cur.size_gib
                    ),
                ));
            }
        }
        Ok(())
    }
}
