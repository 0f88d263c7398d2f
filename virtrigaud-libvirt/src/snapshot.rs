//! Snapshots: internal (qcow2) snapshots, with memory for running VMs.
//!
//! libvirt cannot take an internal snapshot of a running QEMU VM without its memory, and mixing
//! internal and external snapshots on one domain breaks deletes and reverts. This provider only
//! makes internal snapshots: with memory when the VM runs (whatever `memory` asks; the returned
//! [`SnapshotInfo::has_memory`] says so honestly), disk-only when it is off.

use std::time::{Duration, SystemTime};

use virt::domain::Domain;
use virt::domain_snapshot::DomainSnapshot;
use virt::sys;
use virtrigaud_core::snapshot::{
    DeleteSnapshotOptions, RevertOptions, SnapshotInfo, SnapshotOptions,
};
use virtrigaud_core::{Error, ErrorKind, Result};

use crate::connection::Session;
use crate::domain::{lookup, state_of};
use crate::xml::{Element, escape};

fn info_from_xml(x: &Element) -> SnapshotInfo {
    let name = x.find("name").map(|n| n.text.clone()).unwrap_or_default();
    let mut i = SnapshotInfo::new(name.clone(), name);
    i.description = x
        .find("description")
        .map(|d| d.text.clone())
        .filter(|d| !d.is_empty());
    i.created_at = x
        .find("creationTime")
        .and_then(|t| t.text.trim().parse::<u64>().ok())
        .and_then(|s| SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(s)));
    let state = x.find("state").map(|s| s.text.as_str()).unwrap_or("");
    i.has_memory = x
        .find("memory")
        .and_then(|m| m.get_attr("snapshot"))
        .map_or(matches!(state, "running" | "paused"), |m| {
            m == "internal" || m == "external"
        });
    i.parent = x.path("parent/name").map(|p| p.text.clone());
    i
}

/// The snapshot `snap` of `dom`.
fn find(
    s: &Session,
    op: &'static str,
    dom: &Domain,
    name: &str,
    snap: &str,
) -> Result<DomainSnapshot> {
    s.api(op, name, |_| Domain::lookup_snapshot_by_name(dom, snap, 0))
}

/// Takes an internal snapshot (with memory when the VM runs).
pub(crate) fn create(s: &Session, name: &str, opts: &SnapshotOptions) -> Result<SnapshotInfo> {
    if opts.name.is_empty() {
        return Err(Error::invalid_spec("snapshot name must not be empty"));
    }
    let dom = lookup(s, name)?;
    if s.api_raw(|_| Domain::lookup_snapshot_by_name(&dom, &opts.name, 0))
        .is_ok()
    {
        return Err(Error::new(
            ErrorKind::AlreadyExists,
            format!("snapshot {} exists", opts.name),
        )
        .with_resource(name.to_owned()));
    }
    let running = state_of(s, &dom, name)?.is_active();
    let mut xml = format!("<domainsnapshot><name>{}</name>", escape(&opts.name));
    if let Some(d) = &opts.description {
        xml.push_str(&format!("<description>{}</description>", escape(d)));
    }
    xml.push_str("</domainsnapshot>");
    let snap = s.api("snapshot_create", name, |_| {
        dom.create_snapshot_xml(&xml, 0)
    })?;
    let x = Element::parse(&s.api("snapshot_create", name, |_| snap.xml_desc(0))?)?;
    let mut info = info_from_xml(&x);
    info.has_memory = info.has_memory || running;
    Ok(info)
}

/// The domain's snapshots, oldest first.
pub(crate) fn list(s: &Session, name: &str) -> Result<Vec<SnapshotInfo>> {
    let dom = lookup(s, name)?;
    let snaps = s.api("snapshot_list", name, |_| dom.list_all_snapshots(0))?;
    let mut out = Vec::new();
    for snap in snaps {
        let x = Element::parse(&s.api("snapshot_list", name, |_| snap.xml_desc(0))?)?;
        out.push(info_from_xml(&x));
    }
    out.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.name.cmp(&b.name)));
    Ok(out)
}

/// Reverts to `snap` (forcing when libvirt asks for it), running afterwards when asked.
pub(crate) fn revert(s: &Session, name: &str, snap: &str, opts: &RevertOptions) -> Result<()> {
    const OP: &str = "snapshot_revert";
    let dom = lookup(s, name)?;
    let snapshot = find(s, OP, &dom, name, snap)?;
    let flags = if opts.start {
        sys::VIR_DOMAIN_SNAPSHOT_REVERT_RUNNING
    } else {
        0
    };
    match s.api(OP, name, |_| snapshot.revert(flags)) {
        Err(e) if e.message().contains("force") => s.api(OP, name, |_| {
            snapshot.revert(flags | sys::VIR_DOMAIN_SNAPSHOT_REVERT_FORCE)
        }),
        other => other,
    }
}

/// Deletes `snap` (and its children when asked).
pub(crate) fn delete(
    s: &Session,
    name: &str,
    snap: &str,
    opts: &DeleteSnapshotOptions,
) -> Result<()> {
    const OP: &str = "snapshot_delete";
    let dom = lookup(s, name)?;
    let snapshot = find(s, OP, &dom, name, snap)?;
    let flags = if opts.children {
        sys::VIR_DOMAIN_SNAPSHOT_DELETE_CHILDREN
    } else {
        0
    };
    s.api(OP, name, |_| snapshot.delete(flags))
}
