//! Clones: linked (a qcow2 overlay whose backing file is the source's disk) and full (a
//! storage-volume copy). The clone gets a new name, a new UUID and new MAC addresses (libvirt
//! generates them when the XML has none).
//!
//! **Customization** (hostname, static networks, cloud-init user data) is the clone's own
//! cloud-init NoCloud seed: the clone is defined first (so libvirt gives its NICs their MACs),
//! the seed is rendered by core's [`NoCloudSeed`] with network `i` matched to the MAC of the
//! clone's NIC `i`, uploaded as `<clone>-cidata.iso` (see [`crate::seed`]) and shown to the
//! clone on a cdrom, which replaces the cdrom that showed the source's own seed (or is added
//! on a free target), and the domain is redefined. A customization is checked before anything
//! is made (the source's NICs stand in for the clone's). It needs seed uploads, which the
//! test driver lacks: there it is refused with `Unsupported`, as the capabilities declare.
//!
//! A clone **without** customization keeps the source's cdroms as they are, a seed included
//! (the clone then reads the source's instance id). Deleting such a clone with its disks
//! leaves the source's seed alone: only a domain's own `<name>-cidata.iso` is deleted with it.
//!
//! **A failed clone leaves nothing behind**: whatever fails after the first volume was made
//! (a disk copy, the definition, the seed, the redefinition, the start) undefines the clone
//! and deletes every volume this call made, the seed included, and nothing else (a volume
//! that was in the way, say `<clone>-vdb.qcow2`, stays).

use virt::domain::Domain;
use virt::storage_pool::StoragePool;
use virt::storage_vol::StorageVol;
use virt::sys;
use virtrigaud_core::clone::{CloneOptions, CloneResult, Customization};
use virtrigaud_core::cloudinit::NoCloudSeed;
use virtrigaud_core::{Error, ErrorKind, Result, VmId};

use crate::capabilities::seed_upload_blocker;
use crate::connection::Session;
use crate::domain::{lookup, state_of, xml_of};
use crate::domxml::{cdrom, seed_cdrom_target};
use crate::volume::{create_qcow2, volume_xml};
use crate::xml::Element;
use crate::{placement, seed};

const OP: &str = "clone";

/// Clones `source` as `opts.target_name` (linked or full), customized when
/// `opts.customization` asks for anything.
pub(crate) fn clone(s: &Session, source: &str, opts: &CloneOptions) -> Result<CloneResult> {
    let target = opts.target_name.as_str();
    if target.is_empty() || target.contains('/') {
        return Err(Error::invalid_spec(format!(
            "invalid clone name {target:?}"
        )));
    }
    let custom = opts.customization.as_ref().filter(|c| !c.is_empty());
    if custom.is_some()
        && let Some(why) = seed_upload_blocker(s.driver())
    {
        return Err(Error::new(
            ErrorKind::Unsupported,
            format!("clone customization needs a cloud-init seed volume: {why}"),
        )
        .with_resource(target.to_owned()));
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
    placement::check(s, &opts.placement, OP, target)?;
    let pool = placement::pool_for(s, &opts.placement, OP)?;
    let mut dom = xml_of(s, &src, source, sys::VIR_DOMAIN_XML_INACTIVE)?;
    if let Some(c) = custom {
        // Checked before anything is made; the clone will have the source's NICs.
        let stand_ins: Vec<String> = (0..nics(&dom))
            .map(|i| format!("52:54:00:00:00:{i:02x}"))
            .collect();
        NoCloudSeed::for_customization(target, c, &stand_ins)?;
    }
    let mut made = Made::default();
    let result = build(s, &pool, &mut dom, source, opts, custom, &mut made);
    if let Err(e) = result {
        made.roll_back(s, target);
        return Err(e);
    }
    Ok(CloneResult::new(
        VmId::new(target.to_owned()),
        opts.linked,
        custom.is_some(),
    ))
}

/// What one clone call made so far: the volumes (disks, seed) and the domain definition.
#[derive(Default)]
struct Made {
    volumes: Vec<StorageVol>,
    domain: Option<Domain>,
}

impl Made {
    /// Undefines the domain and deletes the volumes (best effort: the first error is kept).
    fn roll_back(self, s: &Session, target: &str) {
        if let Some(d) = self.domain {
            if s.api_raw(|_| d.is_active()).unwrap_or(false) {
                let _ = s.api_raw(|_| d.destroy());
            }
            if let Err(e) =
                s.api_raw(|_| d.undefine_flags(sys::VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA))
            {
                tracing::warn!(domain = target, error = %e, "could not undefine a failed clone");
            }
        }
        for v in self.volumes {
            if let Err(e) = s.api_raw(|_| v.delete(0)) {
                tracing::warn!(domain = target, error = %e, "could not delete a failed clone's volume");
            }
        }
    }
}

/// The volumes, the definition, the seed and the start of [`clone`]; everything made is
/// recorded in `made`.
fn build(
    s: &Session,
    pool: &StoragePool,
    dom: &mut Element,
    source: &str,
    opts: &CloneOptions,
    custom: Option<&Customization>,
    made: &mut Made,
) -> Result<()> {
    let target = opts.target_name.as_str();
    copy_disks(s, pool, dom, target, opts.linked, &mut made.volumes)?;
    renew_identity(dom, source, target);
    let new_dom = s.api(OP, target, |c| c.define_domain_xml(&dom.to_xml()))?;
    let new_dom = made.domain.insert(new_dom);
    if let Some(c) = custom {
        // The definition as libvirt completed it: with the UUID and the MACs it generated.
        let mut defined = xml_of(s, new_dom, target, sys::VIR_DOMAIN_XML_INACTIVE)?;
        let seed = NoCloudSeed::for_customization(target, c, &macs(&defined))?;
        let vol = seed::upload(s, pool, target, &seed)?;
        made.volumes.push(vol);
        let Some(vol) = made.volumes.last() else {
            unreachable!("just pushed")
        };
        let path = s.api(OP, target, |_| vol.path())?;
        show_seed(&mut defined, source, &path);
        s.api(OP, target, |c| c.define_domain_xml(&defined.to_xml()))?;
    }
    if opts.power_on {
        s.api(OP, target, |_| new_dom.create())?;
    }
    Ok(())
}

/// The MAC addresses of `dom`'s NICs, in order (NICs without one are skipped).
fn macs(dom: &Element) -> Vec<String> {
    dom.find("devices")
        .map(|d| {
            d.all("interface")
                .filter_map(|i| i.find("mac")?.get_attr("address"))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// How many NICs `dom` has.
fn nics(dom: &Element) -> usize {
    dom.find("devices")
        .map_or(0, |d| d.all("interface").count())
}

/// Points `dom`'s cdrom that showed `source`'s own seed at `iso`, or adds a cdrom for it on
/// a free target.
fn show_seed(dom: &mut Element, source: &str, iso: &str) {
    let own = seed::volume_name(source);
    let machine = dom
        .path("os/type")
        .and_then(|t| t.get_attr("machine"))
        .unwrap_or_default()
        .to_owned();
    if dom.find("devices").is_none() {
        dom.children.push(Element::new("devices"));
    }
    let Some(devs) = dom.find_mut("devices") else {
        unreachable!("just added")
    };
    for d in devs
        .children
        .iter_mut()
        .filter(|d| d.name == "disk" && d.get_attr("device") == Some("cdrom"))
    {
        if let Some(src) = d.find_mut("source")
            && src
                .get_attr("file")
                .is_some_and(|f| f.rsplit('/').next() == Some(own.as_str()))
        {
            src.set_attr("file", iso);
            return;
        }
    }
    let (dev, bus) = seed_cdrom_target(&machine);
    let used: Vec<String> = devs
        .all("disk")
        .filter_map(|d| d.find("target")?.get_attr("dev"))
        .map(str::to_owned)
        .collect();
    let (prefix, first) = dev.split_at(2);
    let free = (first.as_bytes()[0]..=b'z')
        .map(|l| format!("{prefix}{}", l as char))
        .find(|d| !used.contains(d))
        .unwrap_or_else(|| dev.to_owned());
    devs.children.push(cdrom(iso, &free, bus));
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

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used)]
    use super::*;

    fn cdroms(dom: &Element) -> Vec<(String, String)> {
        dom.find("devices")
            .expect("devices")
            .all("disk")
            .filter(|d| d.get_attr("device") == Some("cdrom"))
            .map(|d| {
                (
                    d.find("source")
                        .and_then(|s| s.get_attr("file"))
                        .unwrap_or_default()
                        .to_owned(),
                    d.find("target")
                        .and_then(|t| t.get_attr("dev"))
                        .unwrap_or_default()
                        .to_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn the_source_seed_cdrom_is_replaced_and_others_are_kept() {
        let xml = "<domain><name>src</name><os><type machine='pc'>hvm</type></os><devices>\
            <disk type='file' device='cdrom'><source file='/p/install.iso'/><target dev='hdc' bus='ide'/></disk>\
            <disk type='file' device='cdrom'><source file='/p/src-cidata.iso'/><target dev='hdd' bus='ide'/></disk>\
            <interface type='network'><mac address='52:54:00:aa:bb:01'/></interface>\
            <interface type='user'><mac address='52:54:00:aa:bb:02'/></interface>\
            </devices></domain>";
        let mut dom = Element::parse(xml).expect("xml");
        assert_eq!(macs(&dom), ["52:54:00:aa:bb:01", "52:54:00:aa:bb:02"]);
        show_seed(&mut dom, "src", "/p/c-cidata.iso");
        assert_eq!(
            cdroms(&dom),
            [
                ("/p/install.iso".to_owned(), "hdc".to_owned()),
                ("/p/c-cidata.iso".to_owned(), "hdd".to_owned())
            ]
        );
    }

    #[test]
    fn without_a_source_seed_the_seed_gets_a_free_target() {
        let xml = "<domain><name>src</name><os><type machine='pc-q35-7.2'>hvm</type></os><devices>\
            <disk type='file' device='cdrom'><source file='/p/other-cidata.iso'/><target dev='sda' bus='sata'/></disk>\
            </devices></domain>";
        let mut dom = Element::parse(xml).expect("xml");
        show_seed(&mut dom, "src", "/p/c-cidata.iso");
        assert_eq!(
            cdroms(&dom),
            [
                ("/p/other-cidata.iso".to_owned(), "sda".to_owned()),
                ("/p/c-cidata.iso".to_owned(), "sdb".to_owned())
            ]
        );
        let mut bare = Element::parse("<domain><name>src</name></domain>").expect("xml");
        show_seed(&mut bare, "src", "/p/c-cidata.iso");
        assert_eq!(
            cdroms(&bare),
            [("/p/c-cidata.iso".to_owned(), "hdc".to_owned())]
        );
    }
}
