//! Snapshots: internal (qcow2) snapshots, with memory for running VMs.
//!
//! libvirt cannot take an internal snapshot of a running QEMU VM without its memory, and mixing
//! internal and external snapshots on one domain breaks deletes and reverts. This provider only
//! makes internal snapshots: with memory when the VM runs (whatever `memory` asks; the returned
//! [`SnapshotInfo::has_memory`] says so honestly), disk-only when it is off.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use virt::sys;
use virtrigaud_core::snapshot::{
    DeleteSnapshotOptions, RevertOptions, SnapshotInfo, SnapshotOptions,
};
use virtrigaud_core::{Error, ErrorKind, Result, Snapshotter, VmId};

use crate::provider::{Ctx, Inner, LibvirtProvider, lookup, state_of};
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

fn create_blocking(inner: &Inner, name: &str, opts: &SnapshotOptions) -> Result<SnapshotInfo> {
    if opts.name.is_empty() {
        return Err(Error::invalid_spec("snapshot name must not be empty"));
    }
    let dom = lookup(inner, name)?;
    inner.count();
    if virt::domain::Domain::lookup_snapshot_by_name(&dom, &opts.name, 0).is_ok() {
        return Err(Error::new(
            ErrorKind::AlreadyExists,
            format!("snapshot {} exists", opts.name),
        )
        .with_resource(name.to_owned()));
    }
    let running = state_of(inner, &dom, name)?.is_active();
    let mut xml = format!("<domainsnapshot><name>{}</name>", escape(&opts.name));
    if let Some(d) = &opts.description {
        xml.push_str(&format!("<description>{}</description>", escape(d)));
    }
    xml.push_str("</domainsnapshot>");
    inner.count();
    let snap = dom
        .create_snapshot_xml(&xml, 0)
        .ctx("snapshot_create", name)?;
    inner.count();
    let x = Element::parse(&snap.xml_desc(0).ctx("snapshot_create", name)?)?;
    let mut info = info_from_xml(&x);
    info.has_memory = info.has_memory || running;
    Ok(info)
}

fn list_blocking(inner: &Inner, name: &str) -> Result<Vec<SnapshotInfo>> {
    let dom = lookup(inner, name)?;
    inner.count();
    let snaps = dom.list_all_snapshots(0).ctx("snapshot_list", name)?;
    let mut out = Vec::new();
    for s in snaps {
        inner.count();
        let x = Element::parse(&s.xml_desc(0).ctx("snapshot_list", name)?)?;
        out.push(info_from_xml(&x));
    }
    out.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.name.cmp(&b.name)));
    Ok(out)
}

fn revert_blocking(inner: &Inner, name: &str, snap: &str, opts: &RevertOptions) -> Result<()> {
    let dom = lookup(inner, name)?;
    inner.count();
    let s = virt::domain::Domain::lookup_snapshot_by_name(&dom, snap, 0)
        .ctx("snapshot_revert", name)?;
    let flags = if opts.start {
        sys::VIR_DOMAIN_SNAPSHOT_REVERT_RUNNING
    } else {
        0
    };
    inner.count();
    match s.revert(flags).ctx("snapshot_revert", name) {
        Err(e) if e.message().contains("force") => {
            inner.count();
            s.revert(flags | sys::VIR_DOMAIN_SNAPSHOT_REVERT_FORCE)
                .ctx("snapshot_revert", name)
        }
        other => other,
    }
}

fn delete_blocking(
    inner: &Inner,
    name: &str,
    snap: &str,
    opts: &DeleteSnapshotOptions,
) -> Result<()> {
    let dom = lookup(inner, name)?;
    inner.count();
    let s = virt::domain::Domain::lookup_snapshot_by_name(&dom, snap, 0)
        .ctx("snapshot_delete", name)?;
    let flags = if opts.children {
        sys::VIR_DOMAIN_SNAPSHOT_DELETE_CHILDREN
    } else {
        0
    };
    inner.count();
    s.delete(flags).ctx("snapshot_delete", name)
}

#[async_trait]
impl Snapshotter for LibvirtProvider {
    async fn create_snapshot(&self, vm: &VmId, opts: &SnapshotOptions) -> Result<SnapshotInfo> {
        let (n, o) = (vm.to_string(), opts.clone());
        self.call("snapshot_create", move |i| create_blocking(i, &n, &o))
            .await
    }
    async fn list_snapshots(&self, vm: &VmId) -> Result<Vec<SnapshotInfo>> {
        let n = vm.to_string();
        self.call("snapshot_list", move |i| list_blocking(i, &n))
            .await
    }
    async fn revert_snapshot(&self, vm: &VmId, snapshot: &str, opts: &RevertOptions) -> Result<()> {
        let (n, s, o) = (vm.to_string(), snapshot.to_owned(), opts.clone());
        self.call("snapshot_revert", move |i| revert_blocking(i, &n, &s, &o))
            .await
    }
    async fn delete_snapshot(
        &self,
        vm: &VmId,
        snapshot: &str,
        opts: &DeleteSnapshotOptions,
    ) -> Result<()> {
        let (n, s, o) = (vm.to_string(), snapshot.to_owned(), opts.clone());
        self.call("snapshot_delete", move |i| delete_blocking(i, &n, &s, &o))
            .await
    }
}
