//! Clones: linked (a qcow2 overlay whose backing file is the source's disk) and full (a
//! storage-volume copy). The clone gets a new name, a new UUID and new MAC addresses (libvirt
//! generates them when the XML has none). A failed clone leaves nothing behind.

use async_trait::async_trait;
use virt::storage_vol::StorageVol;
use virt::sys;
use virtrigaud_core::clone::{CloneOptions, CloneResult};
use virtrigaud_core::{Cloner, Error, ErrorKind, Result, VmId};

use crate::provider::{Ctx, Inner, LibvirtProvider, create_qcow2, lookup, state_of, xml_of};
use crate::xml::Element;

fn clone_blocking(inner: &Inner, source: &str, opts: &CloneOptions) -> Result<CloneResult> {
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
    let src = lookup(inner, source)?;
    inner.count();
    if inner.conn().lookup_domain_by_name(target).is_ok() {
        return Err(
            Error::new(ErrorKind::AlreadyExists, format!("domain {target} exists"))
                .with_resource(target.to_owned()),
        );
    }
    let running = state_of(inner, &src, source)?.is_active();
    if opts.linked && running {
        return Err(Error::invalid_state(
            "a linked clone needs the source off (its disk becomes a read-only backing file)",
        )
        .with_resource(source.to_owned()));
    }
    let pool_name = inner
        .cfg
        .storage_pool
        .clone()
        .ok_or_else(|| Error::invalid_spec("clones need a storage pool"))?;
    inner.count();
    let pool = inner
        .conn()
        .lookup_storage_pool_by_name(&pool_name)
        .ctx("clone", &pool_name)?;
    let mut dom = xml_of(inner, &src, source, sys::VIR_DOMAIN_XML_INACTIVE)?;

    let mut created: Vec<StorageVol> = Vec::new();
    let result = (|| {
        // Disks.
        if let Some(devs) = dom.find_mut("devices") {
            for disk in devs.children.iter_mut().filter(|c| c.name == "disk") {
                if disk.get_attr("device").unwrap_or("disk") != "disk" {
                    continue;
                }
                let Some(path) = disk
                    .find("source")
                    .and_then(|s| s.get_attr("file"))
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
                inner.count();
                let src_vol = inner
                    .conn()
                    .lookup_storage_vol_by_path(&path)
                    .ctx("clone", &path)?;
                inner.count();
                let cap = src_vol.info().ctx("clone", &path)?.capacity;
                let new = if opts.linked {
                    create_qcow2(inner, &pool, &vol_name, cap, Some(&path))?
                } else {
                    let xml = Element::new("volume")
                        .child(Element::new("name").text(vol_name.as_str()))
                        .child(
                            Element::new("capacity")
                                .attr("unit", "bytes")
                                .text(cap.to_string()),
                        )
                        .child(
                            Element::new("target")
                                .child(Element::new("format").attr("type", "qcow2")),
                        )
                        .to_xml();
                    inner.count();
                    StorageVol::create_xml_from(&pool, &xml, &src_vol, 0).ctx("clone", &vol_name)?
                };
                inner.count();
                let new_path = new.path().ctx("clone", &vol_name)?;
                created.push(new);
                if let Some(s) = disk.find_mut("source") {
                    s.set_attr("file", new_path);
                }
                if let Some(d) = disk.find_mut("driver") {
                    d.set_attr("type", "qcow2");
                }
                disk.remove_all("backingStore");
            }
            // New MACs: drop them, libvirt generates fresh ones.
            for nic in devs.children.iter_mut().filter(|c| c.name == "interface") {
                nic.remove_all("mac");
                nic.remove_all("target");
            }
            // Per-VM serial log files.
            for ser in devs
                .children
                .iter_mut()
                .filter(|c| c.name == "serial" || c.name == "console")
            {
                if let Some(s) = ser.find_mut("source")
                    && let Some(p) = s.get_attr("path").map(str::to_owned)
                {
                    s.set_attr("path", p.replace(source, target));
                }
            }
        }
        if let Some(n) = dom.find_mut("name") {
            n.text = target.to_owned();
        }
        dom.remove_all("uuid");
        inner.count();
        let new_dom = inner
            .conn()
            .define_domain_xml(&dom.to_xml())
            .ctx("clone", target)?;
        if opts.power_on {
            inner.count();
            if let Err(e) = new_dom.create().ctx("clone", target) {
                inner.count();
                let _ = new_dom.undefine_flags(sys::VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA);
                return Err(e);
            }
        }
        Ok(CloneResult::new(
            VmId::new(target.to_owned()),
            opts.linked,
            false,
        ))
    })();
    if result.is_err() {
        for v in created {
            inner.count();
            let _ = v.delete(0);
        }
    }
    result
}

#[async_trait]
impl Cloner for LibvirtProvider {
    async fn clone_vm(&self, source: &VmId, opts: &CloneOptions) -> Result<CloneResult> {
        let (n, o) = (source.to_string(), opts.clone());
        self.call("clone", move |i| clone_blocking(i, &n, &o)).await
    }
}
