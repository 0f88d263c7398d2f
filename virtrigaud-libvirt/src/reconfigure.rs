//! Reconfigure: vCPUs and memory live within the domain's maximum, otherwise in the stored
//! configuration (`needs_power_cycle`); disks grow with `blockresize` (running) or a volume
//! resize (off).
//!
//! The request is checked by core ([`ReconfigureRequest::validate_against`]: positive sizes,
//! disks grow only) before anything changes. What stays here is libvirt's own rule: a disk is
//! named by its target (`vda`) or its volume's file name.

use virt::domain::Domain;
use virt::storage_vol::StorageVol;
use virt::sys;
use virtrigaud_core::provider::{ReconfigureRequest, ReconfigureResult};
use virtrigaud_core::{DiskInfo, Error, ErrorKind, Result, ResultExt};

use crate::PROVIDER_TYPE;
use crate::connection::Session;
use crate::domain::{lookup, state_of, xml_of};
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
    for d in disks {
        grow_disk(s, &dom, name, running, d, &mut p)?;
    }
    let mut res = p.result;
    res.applied_live = running && p.live_parts > 0 && !p.pending;
    res.needs_power_cycle = p.pending;
    Ok(res)
}

/// Finds each disk of `ch` among the domain's disks (by target or by file name).
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
            let Some((target, src, _)) = disks.iter().find(|(t, s, _)| {
                *t == d.name
                    || s.as_deref()
                        .is_some_and(|s| s.ends_with(&format!("/{}", d.name)))
            }) else {
                return Err(Error::not_found(format!("disk {} not found", d.name))
                    .with_resource(name.to_owned()));
            };
            let live = if running {
                s.api_raw(|_| dom.block_info(target, 0))
                    .map(|b| b.capacity)
                    .ok()
            } else {
                None
            };
            let vol = src
                .as_deref()
                .and_then(|p| s.api_raw(|c| c.lookup_storage_vol_by_path(p)).ok());
            let capacity = live.or_else(|| {
                let vol = vol.as_ref()?;
                s.api_raw(|_| vol.info()).ok().map(|i| i.capacity)
            });
            Ok(TargetDisk {
                name: d.name.clone(),
                target: target.clone(),
                vol,
                capacity,
                size_gib: d.size_gib,
                bytes: scaled(d.size_gib, GIB, "disks[].sizeGiB")?,
            })
        })
        .collect()
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
    p.result
        .notes
        .push(format!("disk {} -> {} GiB", d.target, d.size_gib));
    Ok(())
}
