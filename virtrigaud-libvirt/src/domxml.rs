//! Domain XML: generated from a [`VmCreateSpec`], read back into the core model.

use std::collections::BTreeMap;

use virtrigaud_core::{Error, Result, VmCreateSpec};

use crate::config::DomainTemplate;
use crate::metadata;
use crate::xml::Element;

/// Name of the guest-agent virtio-serial port.
pub const AGENT_PORT: &str = "org.qemu.guest_agent.0";

/// A disk to attach: target device, host path, format and the create spec's name for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DiskAttach {
    pub(crate) target: String,
    pub(crate) path: String,
    pub(crate) format: String,
    /// The name the create spec gave the disk (`data`), kept in the domain's metadata.
    pub(crate) name: Option<String>,
}

/// A disk device (`device='disk'`) of a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DomDisk {
    /// The target device (`vdb`).
    pub(crate) target: String,
    /// The source file, when it is one.
    pub(crate) source: Option<String>,
    /// The driver format (`qcow2`, `raw`).
    pub(crate) format: String,
    /// The name the create spec gave it (from the metadata), else the target.
    pub(crate) name: String,
}

impl DomDisk {
    /// Whether `wanted` names this disk: its spec name, its target, or its volume's file name.
    pub(crate) fn is_named(&self, wanted: &str) -> bool {
        self.name == wanted
            || self.target == wanted
            || self
                .source
                .as_deref()
                .is_some_and(|s| s.rsplit('/').next() == Some(wanted))
    }
}

/// `vda`, `vdb`, … for index 0, 1, …
pub(crate) fn disk_target(i: usize) -> String {
    let mut n = i;
    let mut s = String::new();
    loop {
        s.insert(0, (b'a' + (n % 26) as u8) as char);
        if n < 26 {
            break;
        }
        n = n / 26 - 1;
    }
    format!("vd{s}")
}

/// Checks `spec` before anything is made: core's [`VmCreateSpec::validate`], then libvirt's
/// own rule (a domain name names volume files, so no `/`).
pub(crate) fn validate(spec: &VmCreateSpec) -> Result<()> {
    spec.validate()?;
    if spec.name.contains('/') {
        return Err(Error::invalid_spec(format!(
            "name: {:?} must not contain '/' (the name names the volume files)",
            spec.name
        )));
    }
    Ok(())
}

/// Generates the domain XML for `spec` (checked with [`validate`]).
pub(crate) fn domain_xml(
    spec: &VmCreateSpec,
    tpl: &DomainTemplate,
    disks: &[DiskAttach],
    seed: Option<&str>,
) -> Result<String> {
    validate(spec)?;
    let max_vcpus = spec.cpu.saturating_mul(tpl.vcpu_headroom.max(1));
    let max_mem = spec
        .memory_mib
        .saturating_mul(u64::from(tpl.memory_headroom.max(1)));
    let mut os = Element::new("os").child(
        Element::new("type")
            .attr("arch", "x86_64")
            .attr("machine", tpl.machine.as_str())
            .text("hvm"),
    );
    if let Some(kb) = &tpl.kernel_boot {
        os = os.child(Element::new("kernel").text(kb.kernel.to_string_lossy()));
        if let Some(i) = &kb.initrd {
            os = os.child(Element::new("initrd").text(i.to_string_lossy()));
        }
        os = os.child(Element::new("cmdline").text(kb.cmdline.as_str()));
    } else {
        os = os.child(Element::new("boot").attr("dev", "hd"));
    }
    let mut devices = Element::new("devices");
    for d in disks {
        devices = devices.child(
            Element::new("disk")
                .attr("type", "file")
                .attr("device", "disk")
                .child(
                    Element::new("driver")
                        .attr("name", "qemu")
                        .attr("type", d.format.as_str()),
                )
                .child(Element::new("source").attr("file", d.path.as_str()))
                .child(
                    Element::new("target")
                        .attr("dev", d.target.as_str())
                        .attr("bus", "virtio"),
                ),
        );
    }
    if let Some(iso) = seed {
        let (dev, bus) = seed_cdrom_target(&tpl.machine);
        devices = devices.child(cdrom(iso, dev, bus));
    }
    for n in &spec.networks {
        devices = devices.child(
            Element::new("interface")
                .attr("type", "network")
                .child(Element::new("source").attr("network", n.network.as_str()))
                .child(Element::new("model").attr("type", n.model.as_deref().unwrap_or("virtio"))),
        );
    }
    devices = devices.child(
        Element::new("controller")
            .attr("type", "usb")
            .attr("model", "none"),
    );
    devices = match &tpl.serial_log {
        Some(dir) => devices.child(
            Element::new("serial")
                .attr("type", "file")
                .child(
                    Element::new("source").attr(
                        "path",
                        dir.join(format!("{}.console.log", spec.name))
                            .to_string_lossy(),
                    ),
                )
                .child(Element::new("target").attr("port", "0")),
        ),
        None => devices.child(Element::new("serial").attr("type", "pty")),
    };
    if tpl.guest_agent_channel {
        devices = devices.child(
            Element::new("channel").attr("type", "unix").child(
                Element::new("target")
                    .attr("type", "virtio")
                    .attr("name", AGENT_PORT),
            ),
        );
    }
    devices = devices.child(Element::new("memballoon").attr("model", "virtio"));
    let names: BTreeMap<String, String> = disks
        .iter()
        .filter_map(|d| Some((d.target.clone(), d.name.clone()?)))
        .collect();
    let dom = Element::new("domain")
        .attr("type", tpl.domain_type.as_str())
        .child(Element::new("name").text(spec.name.as_str()))
        .child(metadata::element(&spec.labels, &names))
        .child(
            Element::new("memory")
                .attr("unit", "MiB")
                .text(max_mem.to_string()),
        )
        .child(
            Element::new("currentMemory")
                .attr("unit", "MiB")
                .text(spec.memory_mib.to_string()),
        )
        .child(
            Element::new("vcpu")
                .attr("placement", "static")
                .attr("current", spec.cpu.to_string())
                .text(max_vcpus.to_string()),
        )
        .child(os)
        .child(
            Element::new("features")
                .child(Element::new("acpi"))
                .child(Element::new("apic")),
        )
        .child(Element::new("clock").attr("offset", "utc"))
        .child(Element::new("on_poweroff").text("destroy"))
        .child(Element::new("on_reboot").text(tpl.on_reboot.as_str()))
        .child(Element::new("on_crash").text("destroy"))
        .child(devices);
    Ok(dom.to_xml())
}

/// Where a seed cdrom goes on `machine`: SATA on q35 (no IDE there), else IDE.
pub(crate) fn seed_cdrom_target(machine: &str) -> (&'static str, &'static str) {
    if machine.contains("q35") {
        ("sda", "sata")
    } else {
        ("hdc", "ide")
    }
}

/// A read-only raw cdrom showing the image `iso` at target `dev` on `bus`.
pub(crate) fn cdrom(iso: &str, dev: &str, bus: &str) -> Element {
    Element::new("disk")
        .attr("type", "file")
        .attr("device", "cdrom")
        .child(
            Element::new("driver")
                .attr("name", "qemu")
                .attr("type", "raw"),
        )
        .child(Element::new("source").attr("file", iso))
        .child(Element::new("target").attr("dev", dev).attr("bus", bus))
        .child(Element::new("readonly"))
}

/// Converts a size element (`<memory unit='KiB'>`) to KiB.
pub(crate) fn size_kib(e: &Element) -> u64 {
    let v: u64 = e.text.trim().parse().unwrap_or(0);
    let mul = match e.get_attr("unit").unwrap_or("KiB") {
        "b" | "bytes" => return v / 1024,
        "KB" => return v * 1000 / 1024,
        "k" | "KiB" => 1,
        "M" | "MiB" => 1024,
        "MB" => return v * 1_000_000 / 1024,
        "G" | "GiB" => 1024 * 1024,
        "GB" => return v * 1_000_000_000 / 1024,
        _ => 1,
    };
    v * mul
}

/// The disk devices (`device='disk'`) of `dom`, named by the metadata where it names them.
pub(crate) fn disks(dom: &Element) -> Vec<DomDisk> {
    let Some(devs) = dom.find("devices") else {
        return Vec::new();
    };
    let names = metadata::disk_names(dom);
    devs.all("disk")
        .filter(|d| d.get_attr("device").unwrap_or("disk") == "disk")
        .filter_map(|d| {
            let target = d.find("target")?.get_attr("dev")?.to_owned();
            let source = d
                .find("source")
                .and_then(|s| s.get_attr("file"))
                .map(str::to_owned);
            let format = d
                .find("driver")
                .and_then(|x| x.get_attr("type"))
                .unwrap_or("raw")
                .to_owned();
            let name = names
                .get(&target)
                .cloned()
                .unwrap_or_else(|| target.clone());
            Some(DomDisk {
                target,
                source,
                format,
                name,
            })
        })
        .collect()
}

/// The NoCloud seed image of the domain `name`, if it has one: a cdrom whose file is named
/// `<name>-cidata.iso`. Only the domain's own seed: a clone whose cdrom still shows its
/// source's seed (`<source>-cidata.iso`) has none.
pub(crate) fn seed_of(dom: &Element, name: &str) -> Option<String> {
    let devs = dom.find("devices")?;
    devs.all("disk")
        .filter(|d| d.get_attr("device") == Some("cdrom"))
        .filter_map(|d| d.find("source")?.get_attr("file"))
        .find(|f| f.rsplit('/').next() == Some(crate::seed::volume_name(name).as_str()))
        .map(str::to_owned)
}

/// Whether a guest-agent channel is configured, and its live state attribute if reported.
pub(crate) fn agent_channel(dom: &Element) -> (bool, Option<bool>) {
    let Some(devs) = dom.find("devices") else {
        return (false, None);
    };
    for ch in devs.all("channel") {
        if let Some(t) = ch.find("target")
            && t.get_attr("name") == Some(AGENT_PORT)
        {
            let st = t.get_attr("state").map(|s| s == "connected");
            return (true, st);
        }
    }
    (false, None)
}

/// Current and maximum vCPUs.
pub(crate) fn vcpus(dom: &Element) -> (u32, u32) {
    let Some(v) = dom.find("vcpu") else {
        return (0, 0);
    };
    let max: u32 = v.text.trim().parse().unwrap_or(0);
    let cur = v
        .get_attr("current")
        .and_then(|c| c.parse().ok())
        .unwrap_or(max);
    (cur, max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    #[allow(clippy::field_reassign_with_default)]
    fn generated_xml_has_headroom_labels_disks_and_agent() {
        let mut spec = VmCreateSpec::new("web-1", 2, 512);
        spec.labels.insert("set".into(), "a&b".into());
        let mut tpl = DomainTemplate::default();
        tpl.kernel_boot = Some(crate::config::KernelBoot::new(
            "/k",
            Some(PathBuf::from("/i")),
            "console=ttyS0",
        ));
        let disks = [
            DiskAttach {
                target: disk_target(0),
                path: "/p/web-1-vda.qcow2".into(),
                format: "qcow2".into(),
                name: Some("root".into()),
            },
            DiskAttach {
                target: disk_target(1),
                path: "/p/web-1-vdb.qcow2".into(),
                format: "qcow2".into(),
                name: None,
            },
        ];
        let xml = domain_xml(&spec, &tpl, &disks, None).expect("xml");
        let dom = Element::parse(&xml).expect("parse");
        assert_eq!(vcpus(&dom), (2, 4));
        assert_eq!(dom.find("memory").map(size_kib), Some(1024 * 1024));
        assert_eq!(dom.find("currentMemory").map(size_kib), Some(512 * 1024));
        assert_eq!(
            metadata::labels(&dom).get("set").map(String::as_str),
            Some("a&b")
        );
        // The spec's disk name where it gave one, else the target.
        assert_eq!(disks_of(&dom), vec!["root".to_string(), "vdb".to_string()]);
        let root = &super::disks(&dom)[0];
        assert_eq!(root.target, "vda");
        assert!(root.is_named("root") && root.is_named("vda") && root.is_named("web-1-vda.qcow2"));
        assert!(!root.is_named("vdb"));
        assert_eq!(agent_channel(&dom), (true, None));
        assert_eq!(
            dom.path("os/cmdline").map(|c| c.text.as_str()),
            Some("console=ttyS0")
        );
    }

    fn disks_of(dom: &Element) -> Vec<String> {
        disks(dom).into_iter().map(|d| d.name).collect()
    }

    #[test]
    fn disk_targets_and_bad_specs() {
        assert_eq!(disk_target(0), "vda");
        assert_eq!(disk_target(25), "vdz");
        assert_eq!(disk_target(26), "vdaa");
        let tpl = DomainTemplate::default();
        assert!(domain_xml(&VmCreateSpec::new("", 1, 1), &tpl, &[], None).is_err());
        assert!(domain_xml(&VmCreateSpec::new("x", 0, 1), &tpl, &[], None).is_err());
    }
}
