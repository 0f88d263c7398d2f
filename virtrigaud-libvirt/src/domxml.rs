//! Domain XML: generated from a [`VmCreateSpec`], read back into the core model.

use std::collections::BTreeMap;

use virtrigaud_core::{Error, Result, VmCreateSpec};

use crate::config::DomainTemplate;
use crate::xml::Element;

/// Namespace of the `<metadata>` element that stores labels.
pub const METADATA_NS: &str = "https://virtrigaud.io/xmlns/libvirt/labels/1";
/// Name of the guest-agent virtio-serial port.
pub const AGENT_PORT: &str = "org.qemu.guest_agent.0";

/// A disk to attach: target device and host path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DiskAttach {
    pub(crate) target: String,
    pub(crate) path: String,
    pub(crate) format: String,
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

fn labels_element(labels: &BTreeMap<String, String>) -> Element {
    let mut l = Element::new("vr:labels").attr("xmlns:vr", METADATA_NS);
    for (k, v) in labels {
        l = l.child(
            Element::new("vr:label")
                .attr("key", k.as_str())
                .attr("value", v.as_str()),
        );
    }
    l
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
        let (dev, bus) = if tpl.machine.contains("q35") {
            ("sda", "sata")
        } else {
            ("hdc", "ide")
        };
        devices = devices.child(
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
                .child(Element::new("readonly")),
        );
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
    let dom = Element::new("domain")
        .attr("type", tpl.domain_type.as_str())
        .child(Element::new("name").text(spec.name.as_str()))
        .child(Element::new("metadata").child(labels_element(&spec.labels)))
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

/// Labels stored in the domain's `<metadata>`.
pub(crate) fn labels(dom: &Element) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Some(md) = dom.find("metadata") else {
        return out;
    };
    for l in md
        .children
        .iter()
        .filter(|c| c.name.ends_with(":labels") && c.attrs.iter().any(|(_, v)| v == METADATA_NS))
    {
        for e in &l.children {
            if let (Some(k), Some(v)) = (e.get_attr("key"), e.get_attr("value")) {
                out.insert(k.to_owned(), v.to_owned());
            }
        }
    }
    out
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

/// Disk devices (`device='disk'`) with their target and source file, if any.
pub(crate) fn disks(dom: &Element) -> Vec<(String, Option<String>, String)> {
    let Some(devs) = dom.find("devices") else {
        return Vec::new();
    };
    devs.all("disk")
        .filter(|d| d.get_attr("device").unwrap_or("disk") == "disk")
        .filter_map(|d| {
            let target = d.find("target")?.get_attr("dev")?.to_owned();
            let src = d
                .find("source")
                .and_then(|s| s.get_attr("file"))
                .map(str::to_owned);
            let fmt = d
                .find("driver")
                .and_then(|x| x.get_attr("type"))
                .unwrap_or("raw")
                .to_owned();
            Some((target, src, fmt))
        })
        .collect()
}

/// The NoCloud seed image of the domain `name`, if it has one (`<name>-cidata.iso` cdrom).
pub(crate) fn seed_of(dom: &Element, name: &str) -> Option<String> {
    let devs = dom.find("devices")?;
    devs.all("disk")
        .filter(|d| d.get_attr("device") == Some("cdrom"))
        .filter_map(|d| d.find("source")?.get_attr("file"))
        .find(|f| f.ends_with(&format!("/{name}-cidata.iso")))
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
        let disks = [DiskAttach {
            target: disk_target(0),
            path: "/p/web-1-vda.qcow2".into(),
            format: "qcow2".into(),
        }];
        let xml = domain_xml(&spec, &tpl, &disks, None).expect("xml");
        let dom = Element::parse(&xml).expect("parse");
        assert_eq!(vcpus(&dom), (2, 4));
        assert_eq!(dom.find("memory").map(size_kib), Some(1024 * 1024));
        assert_eq!(dom.find("currentMemory").map(size_kib), Some(512 * 1024));
        assert_eq!(labels(&dom).get("set").map(String::as_str), Some("a&b"));
        assert_eq!(disks_of(&dom), vec!["vda".to_string()]);
        assert_eq!(agent_channel(&dom), (true, None));
        assert_eq!(
            dom.path("os/cmdline").map(|c| c.text.as_str()),
            Some("console=ttyS0")
        );
    }

    fn disks_of(dom: &Element) -> Vec<String> {
        disks(dom).into_iter().map(|d| d.0).collect()
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
