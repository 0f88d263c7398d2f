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

/// One broken rule, as `field: rule`.
fn invalid(field: impl std::fmt::Display, rule: impl std::fmt::Display) -> String {
    format!("{field}: {rule}")
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
        first_problem(self.problems())
    }

    /// Every rule the spec breaks, each as `field: rule`, in field order
    /// ([`VmCreateSpec::validate`] fails on the first).
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.name.trim().is_empty() {
            problems.push(invalid("name", "must not be empty"));
        }
        if self.cpu == 0 {
            problems.push(invalid("cpu", "must be at least 1"));
        }
        if self.memory_mib == 0 {
            problems.push(invalid("memoryMiB", "must be at least 1"));
        }
        let mut seen = BTreeSet::new();
        for disk in &self.disks {
            let name = &disk.name;
            if name.trim().is_empty() {
                problems.push(invalid("disks[].name", "must not be empty"));
            } else if !seen.insert(name.as_str()) {
                problems.push(invalid(format_args!("disks.{name}"), "appears twice"));
            }
            if disk.size_gib == 0 {
                problems.push(invalid(
                    format_args!("disks.{name}.sizeGiB"),
                    "must be at least 1",
                ));
            }
        }
        if self.networks.iter().any(|n| n.network.trim().is_empty()) {
            problems.push(invalid("networks[].network", "must not be empty"));
        }
        let p = &self.placement;
        for (field, part) in [
            ("placement.host", &p.host),
            ("placement.cluster", &p.cluster),
            ("placement.datastore", &p.datastore),
        ] {
            if part.as_deref().is_some_and(|v| v.trim().is_empty()) {
                problems.push(invalid(field, "must not be an empty name"));
            }
        }
        problems
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
        first_problem(self.problems(None))
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
        first_problem(self.problems(Some(current)))
    }

    /// Every rule the request breaks, each as `field: rule`, in field order; with `current`
    /// (the VM's disks) also a disk the VM lacks, a disk that would shrink, and a growth of a
    /// disk that cannot grow ([`DiskInfo::cannot_grow`]). Planners that
    /// report all problems at once use this; [`ReconfigureRequest::validate`] and
    /// [`ReconfigureRequest::validate_against`] fail on the first.
    ///
    /// ```
    /// use virtrigaud_core::{DiskInfo, DiskResize, ReconfigureRequest};
    /// let mut change = ReconfigureRequest::default();
    /// change.cpu = Some(0);
    /// change.disks.push(DiskResize::new("data", 5));
    /// let problems = change.problems(Some(&[DiskInfo::new("root", 20)]));
    /// assert_eq!(problems, ["cpu: must be at least 1", "disks.data: the VM has no such disk"]);
    ///
    /// let fixed = [DiskInfo::new("root", 1).cannot_grow("a container disk is sized by its image")];
    /// let mut grow = ReconfigureRequest::default();
    /// grow.disks.push(DiskResize::new("root", 2));
    /// assert_eq!(
    ///     grow.problems(Some(&fixed)),
    ///     ["disks.root: cannot grow: a container disk is sized by its image"]
    /// );
    /// ```
    pub fn problems(&self, current: Option<&[DiskInfo]>) -> Vec<String> {
        let mut problems = Vec::new();
        if self.cpu == Some(0) {
            problems.push(invalid("cpu", "must be at least 1"));
        }
        if self.memory_mib == Some(0) {
            problems.push(invalid("memoryMiB", "must be at least 1"));
        }
        let mut seen = BTreeSet::new();
        for disk in &self.disks {
            let name = &disk.name;
            if !seen.insert(name.as_str()) {
                problems.push(invalid(format_args!("disks.{name}"), "appears twice"));
            }
            if disk.size_gib == 0 {
                problems.push(invalid(
                    format_args!("disks.{name}.sizeGiB"),
                    "must be at least 1",
                ));
            }
            let Some(current) = current else { continue };
            match current.iter().find(|c| c.name == *name) {
                None => problems.push(invalid(
                    format_args!("disks.{name}"),
                    "the VM has no such disk",
                )),
                Some(cur) if disk.size_gib != 0 && disk.size_gib < cur.size_gib => {
                    problems.push(invalid(
                        format_args!("disks.{name}.sizeGiB"),
                        format_args!(
                            "disks only grow ({} GiB < current {} GiB)",
                            disk.size_gib, cur.size_gib
                        ),
                    ))
                }
                Some(cur) if disk.size_gib > cur.size_gib => {
                    if let Some(why) = &cur.cannot_grow {
                        problems.push(invalid(
                            format_args!("disks.{name}"),
                            format_args!("cannot grow: {why}"),
                        ))
                    }
                }
                Some(_) => {}
            }
        }
        problems
    }
}

/// `Ok` when there is no problem, else the first as an `InvalidSpec` error.
fn first_problem(problems: Vec<String>) -> Result<()> {
    match problems.into_iter().next() {
        None => Ok(()),
        Some(problem) => Err(Error::invalid_spec(problem)),
    }
}
