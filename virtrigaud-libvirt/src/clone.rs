//! Clones: linked (a qcow2 overlay whose backing file is the source's disk) and full (a
//! storage-volume copy). The clone gets a new name, a new UUID and new MAC addresses (libvirt
//! generates them when the XML has none). A failed clone leaves nothing behind.

use virt::storage_pool::StoragePool;
use virt::storage_vol::StorageVol;
use virt::sys;
use virtrigaud_core::clone::{CloneOptions, CloneResult};
use virtrigaud_core::{Error, ErrorKind, Result, VmId};

use crate::connection::Session;
use crate::domain::{lookup, state_of, xml_of};
use crate::volume::{create_qcow2, volume_xml};
use crate::xml::Element;

const OP: &str = "clone";

/// Clones `source` as `opts.target_name` (linked or full).
pub(crate) fn clone(s: &Session, source: &str, opts: &CloneOptions) -> Result<CloneResult> {
    let target = opts.target_name.as_str();
    if target.is_empty() || target.contains('/') {
        return Err(Error::invalid_spec(format!(
            "invalid clone name {target:?}"
        )));
    }
    if opts.customization.as_ref().is_some_and(|c| !c.is_empty()) {
        return Err(Error::new(
            ErrorKind::Unsupported,
            "clone customization is not implemented for libvirt",
        ));
    }
    if opts.snapshot.is_some() {
        return Err(Error::new(
            ErrorKind::Unsupported,
            "cloning from a snapshot is not implemented for libvirt",
        ));
    }
    let src = lookup(s, source)?;
    if s.api_raw(|c| c.lookup_domain_by_name(target)).is_ok() {
        return Err(
            Error::new(ErrorKind::AlreadyExists, format!("domain {target} exists"))
                .with_resource(target.to_owned()),
        );
    }
    let running = state_of(s, &src, source)?.is_active();
    if opts.linked && running {
        return Err(Error::invalid_state(
            "a linked clone needs the source off (its disk becomes a read-only backing file)",
        )
        .with_resource(source.to_owned()));
    }
    let pool_name = s
        .cfg()
        .storage_pool
        .clone()
        .ok_or_else(|| Error::invalid_spec("clones need a storage pool"))?;
    let pool = s.api(OP, &pool_name, |c| {
        c.lookup_storage_pool_by_name(&pool_name)
    })?;
    let mut dom = xml_of(s, &src, source, sys::VIR_DOMAIN_XML_INACTIVE)?;
    let mut created: Vec<StorageVol> = Vec::new();
    let result = copy_disks(s, &pool, &mut dom, target, opts.linked, &mut created).and_then(|()| {
        renew_identity(&mut dom, source, target);
        define(s, &dom, target, opts.power_on)
    });
    if result.is_err() {
        for v in created {
            let _ = s.api_raw(|_| v.delete(0));
        }
    }
    result?;
    Ok(CloneResult::new(
        VmId::new(target.to_owned()),
        opts.linked,
        false,
    ))
}

/// Gives every file-backed disk of `dom` a new qcow2 volume in `pool` named after `target`:
/// an overlay on the source disk when `linked`, else a copy. Each volume made is pushed to
/// `created`.
fn copy_disks(
    s: &Session,
    pool: &StoragePool,
    dom: &mut Element,
    target: &str,
    linked: bool,
    created: &mut Vec<StorageVol>,
) -> Result<()> {
    let Some(devs) = dom.find_mut("devices") else {
        return Ok(());
    };
    for disk in devs.children.iter_mut().filter(|c| c.name == "disk") {
        if disk.get_attr("device").unwrap_or("disk") != "disk" {
            continue;
        }
        let Some(path) = disk
            .find("source")
            .and_then(|src| src.get_attr("file"))
            .map(str::to_owned)
        else {
            continue;
        };
        let dev = disk
            .find("target")
            .and_then(|t| t.get_attr("dev"))
            .unwrap_or("disk")
            .to_owned();
        let vol_name = format!("{target}-{dev}.qcow2");
        let src_vol = s.api(OP, &path, |c| c.lookup_storage_vol_by_path(&path))?;
        let cap = s.api(OP, &path, |_| src_vol.info())?.capacity;
        let new = if linked {
            create_qcow2(s, pool, &vol_name, cap, Some(&path))?
        } else {
            let xml = volume_xml(&vol_name, cap, "qcow2").to_xml();
            s.api(OP, &vol_name, |_| {
                StorageVol::create_xml_from(pool, &xml, &src_vol, 0)
            })?
        };
        let new_path = s.api(OP, &vol_name, |_| new.path())?;
        created.push(new);
        if let Some(src) = disk.find_mut("source") {
            src.set_attr("file", new_path);
        }
        if let Some(d) = disk.find_mut("driver") {
            d.set_attr("type", "qcow2");
        }
        disk.remove_all("backingStore");
    }
    Ok(())
}

/// Renames `dom` from `source` to `target` with a new identity: no UUID and no MAC addresses
/// (libvirt generates fresh ones), and per-VM serial log files.
fn renew_identity(dom: &mut Element, source: &str, target: &str) {
    if let Some(devs) = dom.find_mut("devices") {
        for nic in devs.children.iter_mut().filter(|c| c.name == "interface") {
            nic.remove_all("mac");
            nic.remove_all("target");
        }
        for ser in devs
            .children
            .iter_mut()
            .filter(|c| c.name == "serial" || c.name == "console")
        {
            if let Some(src) = ser.find_mut("source")
                && let Some(p) = src.get_attr("path").map(str::to_owned)
            {
                src.set_attr("path", p.replace(source, target));
            }
        }
    }
    if let Some(n) = dom.find_mut("name") {
        n.text = target.to_owned();
    }
    dom.remove_all("uuid");
}

/// Defines the clone and, when `power_on`, starts it (undefining it again if that fails).
fn define(s: &Session, dom: &Element, target: &str, power_on: bool) -> Result<()> {
    let new_dom = s.api(OP, target, |c| c.define_domain_xml(&dom.to_xml()))?;
    if power_on && let Err(e) = s.api(OP, target, |_| new_dom.create()) {
        let _ = s.api_raw(|_| new_dom.undefine_flags(sys::VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA));
        return Err(e);
    }
    Ok(())
}
