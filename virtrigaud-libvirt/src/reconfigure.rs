//! Reconfigure: vCPUs and memory live within the domain's maximum, otherwise in the stored
//! configuration (`needs_power_cycle`); disks grow with `blockresize` (running) or a volume
//! resize (off).
//!
//! The request is checked by core ([`ReconfigureRequest::validate_against`]: positive sizes,
//! disks grow only) before anything changes. What stays here is libvirt's own naming: a disk
//! is named by the name the create spec gave it (kept in the domain's metadata, what
//! `describe` reports), and, for domains without that metadata, by its target (`vda`) or its
//! volume's file name. A growth the driver cannot make at all (the test driver) is refused
//! as `Unsupported` before anything changes.

use virt::domain::Domain;
use virt::storage_vol::StorageVol;
use virt::sys;
use virtrigaud_core::provider::{ReconfigureRequest, ReconfigureResult};
use virtrigaud_core::{DiskInfo, Error, ErrorKind, Result, ResultExt};

use crate::PROVIDER_TYPE;
use crate::capabilities;
use crate::connection::Session;
use crate::domain::{disk_capacity, lookup, state_of, xml_of};
use crate::domxml;
use crate::volume::{GIB, scaled};
use crate::xml::Element;

const OP: &str = "reconfigure";

/// What was done so far, and whether some of it waits for a power cycle.
#[derive(Default)]
struct Progress {
    result: ReconfigureResult,
    live_parts: usize,
    pending: bool,
}

/// One disk of the request, found in the domain.
struct TargetDisk {
    /// The requested name.
    name: String,
    /// The device target (`vda`).
    target: String,
    /// Its volume, when the source is one.
    vol: Option<StorageVol>,
    /// Its capacity in bytes, when it could be read.
    capacity: Option<u64>,
    /// The new size, GiB.
    size_gib: u64,
    /// The new size, bytes.
    bytes: u64,
}

impl TargetDisk {
    /// Whether the new size differs from the current one (an unreadable size counts as a
    /// change, so libvirt decides).
    fn grows(&self) -> bool {
        self.capacity != Some(self.bytes)
    }
}

/// Applies `ch` to the domain `name`.
pub(crate) fn reconfigure(
    s: &Session,
    name: &str,
    ch: &ReconfigureRequest,
) -> Result<ReconfigureResult> {
    ch.validate().ctx(PROVIDER_TYPE, OP, name)?;
    let dom = lookup(s, name)?;
    let running = state_of(s, &dom, name)?.is_active();
    let flags = if running {
        0
    } else {
        sys::VIR_DOMAIN_XML_INACTIVE
    };
    let x = xml_of(s, &dom, name, flags)?;
    let disks = find_disks(s, &dom, &x, name, ch, running)?;
    let current: Vec<DiskInfo> = disks
        .iter()
        .map(|d| DiskInfo::new(d.name.clone(), d.capacity.unwrap_or(0).div_ceil(GIB)))
        .collect();
    ch.validate_against(&current).ctx(PROVIDER_TYPE, OP, name)?;
    check_growth_possible(s, name, &disks).ctx(PROVIDER_TYPE, OP, name)?;
    // Checked before anything changes, like the rest of the request.
    let memory = ch
        .memory_mib
        .map(|mib| scaled(mib, 1024, "memoryMiB").map(|kib| (mib, kib)))
        .transpose()
        .ctx(PROVIDER_TYPE, OP, name)?;
    let mut p = Progress::default();
    if let Some(cpu) = ch.cpu {
        set_vcpus(s, &dom, &x, name, running, cpu, &mut p)?;
    }
    if let Some(memory) = memory {
        set_memory(s, &dom, &x, name, running, memory, &mut p)?;
    }
    for d in disks.into_iter().filter(TargetDisk::grows) {
        grow_disk(s, &dom, name, running, d, &mut p)?;
    }
    let mut res = p.result;
    res.applied_live = running && p.live_parts > 0 && !p.pending;
    res.needs_power_cycle = p.pending;
    Ok(res)
}

/// Finds each disk of `ch` among the domain's disks: by the name the create spec gave it
/// (what `describe` reports), else by its target (`vda`) or its volume's file name.
fn find_disks(
    s: &Session,
    dom: &Domain,
    x: &Element,
    name: &str,
    ch: &ReconfigureRequest,
    running: bool,
) -> Result<Vec<TargetDisk>> {
    let disks = domxml::disks(x);
    ch.disks
        .iter()
        .map(|d| {
            let found = disks
                .iter()
                .find(|c| c.name == d.name)
                .or_else(|| disks.iter().find(|c| c.is_named(&d.name)));
            let Some(disk) = found else {
                let have: Vec<&str> = disks.iter().map(|c| c.name.as_str()).collect();
                return Err(Error::invalid_spec(format!(
                    "disks.{}: the VM has no such disk (it has: {})",
                    d.name,
                    if have.is_empty() {
                        "none".to_owned()
                    } else {
                        have.join(", ")
                    }
                ))
                .with_resource(name.to_owned()));
            };
            let vol = disk
                .source
                .as_deref()
                .and_then(|p| s.api_raw(|c| c.lookup_storage_vol_by_path(p)).ok());
            let capacity = disk_capacity(s, dom, &disk.target, vol.as_ref(), running);
            Ok(TargetDisk {
                name: d.name.clone(),
                target: disk.target.clone(),
                vol,
                capacity,
                size_gib: d.size_gib,
                bytes: scaled(d.size_gib, GIB, "disks[].sizeGiB")?,
            })
        })
        .collect()
}

/// Refuses, before anything changes, a growth the driver cannot make at all.
fn check_growth_possible(s: &Session, name: &str, disks: &[TargetDisk]) -> Result<()> {
    let Some(why) = capabilities::disk_growth_blocker(s.driver()) else {
        return Ok(());
    };
    match disks.iter().find(|d| d.grows()) {
        Some(d) => Err(Error::new(
            ErrorKind::Unsupported,
            format!("disks.{}: cannot grow: {why}", d.name),
        )
        .with_resource(name.to_owned())),
        None => Ok(()),
    }
}

fn set_vcpus(
    s: &Session,
    dom: &Domain,
    x: &Element,
    name: &str,
    running: bool,
    cpu: u32,
    p: &mut Progress,
) -> Result<()> {
    let (cur, max) = domxml::vcpus(x);
    let config = sys::VIR_DOMAIN_AFFECT_CONFIG;
    if running && cpu <= max && cpu >= cur {
        s.api(OP, name, |_| {
            dom.set_vcpus_flags(cpu, sys::VIR_DOMAIN_AFFECT_LIVE)
        })?;
        s.api(OP, name, |_| dom.set_vcpus_flags(cpu, config))?;
        p.live_parts += 1;
        p.result.notes.push(format!("vCPUs {cur} -> {cpu} live"));
        return Ok(());
    }
    if cpu > max {
        s.api(OP, name, |_| {
            dom.set_vcpus_flags(cpu, config | sys::VIR_DOMAIN_VCPU_MAXIMUM)
        })?;
    }
    s.api(OP, name, |_| dom.set_vcpus_flags(cpu, config))?;
    if running {
        p.pending = true;
        p.result.notes.push(format!(
            "vCPUs -> {cpu} stored in the configuration (live {} is not possible: max {max}, live unplug unreliable)",
            if cpu < cur { "unplug" } else { "hot-add beyond maximum" }
        ));
    } else {
        p.result.notes.push(format!("vCPUs -> {cpu} (VM off)"));
    }
    Ok(())
}

fn set_memory(
    s: &Session,
    dom: &Domain,
    x: &Element,
    name: &str,
    running: bool,
    (mib, kib): (u64, u64),
    p: &mut Progress,
) -> Result<()> {
    let max_kib = x.find("memory").map(domxml::size_kib).unwrap_or(0);
    let config = sys::VIR_DOMAIN_AFFECT_CONFIG;
    if running && kib <= max_kib {
        s.api(OP, name, |_| {
            dom.set_memory_flags(kib, sys::VIR_DOMAIN_AFFECT_LIVE)
        })?;
        s.api(OP, name, |_| dom.set_memory_flags(kib, config))?;
        p.live_parts += 1;
        p.result
            .notes
            .push(format!("memory -> {mib} MiB live (balloon)"));
        return Ok(());
    }
    if kib > max_kib {
        s.api(OP, name, |_| {
            if running {
                dom.set_memory_flags(kib, config | sys::VIR_DOMAIN_MEM_MAXIMUM)
            } else {
                dom.set_max_memory(kib)
            }
        })?;
    }
    s.api(OP, name, |_| dom.set_memory_flags(kib, config))?;
    if running {
        p.pending = true;
        p.result.notes.push(format!(
            "memory -> {mib} MiB stored in the configuration (above the live maximum)"
        ));
    } else {
        p.result.notes.push(format!("memory -> {mib} MiB (VM off)"));
    }
    Ok(())
}

fn grow_disk(
    s: &Session,
    dom: &Domain,
    name: &str,
    running: bool,
    d: TargetDisk,
    p: &mut Progress,
) -> Result<()> {
    let bytes = d.bytes;
    if running {
        s.api(OP, name, |_| {
            dom.block_resize(&d.target, bytes, sys::VIR_DOMAIN_BLOCK_RESIZE_BYTES)
        })?;
        p.live_parts += 1;
    } else {
        let vol = d.vol.ok_or_else(|| {
            Error::new(
                ErrorKind::Unsupported,
                format!("disk {} is not a storage volume", d.name),
            )
        })?;
        s.api(OP, name, |_| vol.resize(bytes, 0))?;
    }
    p.result.notes.push(format!(
        "disk {} ({}) -> {} GiB{}",
        d.name,
        d.target,
        d.size_gib,
        if running { " live" } else { " (VM off)" }
    ));
    Ok(())
}
