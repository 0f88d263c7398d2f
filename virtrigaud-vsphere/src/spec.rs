//! Request bodies for CreateVM_Task, ReconfigVM_Task and CloneVM_Task (elements in XSD
//! order: vCenter's deserializer is order-sensitive), and [`Target`], where a new VM goes.

use std::net::Ipv4Addr;

use virtrigaud_core::{Customization, Error, VmCreateSpec};

use crate::labels::{USERDATA_ENCODING_KEY, USERDATA_KEY, base64};
use crate::types::MoRef;
use crate::xml::{Element, Xml, esc};

/// The guest OS identifier of created VMs.
pub(crate) const GUEST_ID: &str = "otherLinux64Guest";

/// Where a new VM goes (found by `placement.rs`).
#[derive(Debug)]
pub(crate) struct Target {
    pub(crate) folder: MoRef,
    pub(crate) pool: MoRef,
    pub(crate) host: Option<MoRef>,
    pub(crate) datastore: String,
    pub(crate) nics: Vec<NicBacking>,
}

/// XML Schema types a vim25 `xsi:type` may name (written with the `xsd:` prefix; every
/// other type is a vim25 one).
const XSD_TYPES: &[&str] = &[
    "string",
    "boolean",
    "byte",
    "short",
    "int",
    "long",
    "float",
    "double",
    "dateTime",
    "base64Binary",
    "anyURI",
    "anyType",
];

/// Serialises a parsed element back to XML (keeps `xsi:type`, `xsd:`-prefixed for the XML
/// Schema types, and plain attributes).
pub(crate) fn write_element(out: &mut String, el: &Element, name: &str) {
    out.push('<');
    out.push_str(name);
    if let Some(t) = &el.xsi_type {
        let prefix = if XSD_TYPES.contains(&t.as_str()) {
            "xsd:"
        } else {
            ""
        };
        out.push_str(&format!(" xsi:type=\"{prefix}{}\"", esc(t)));
    }
    for (k, v) in &el.attrs {
        out.push_str(&format!(" {k}=\"{}\"", esc(v)));
    }
    out.push('>');
    if el.children.is_empty() {
        out.push_str(&esc(el.text()));
    } else {
        for c in &el.children {
            write_element(out, c, &c.name);
        }
    }
    out.push_str("</");
    out.push_str(name);
    out.push('>');
}

/// A `deviceChange` entry that grows `disk` to `kib`.
pub(crate) fn grown_disk(disk: &Element, kib: u64) -> String {
    let mut d = disk.clone();
    for c in &mut d.children {
        match c.name.as_str() {
            "capacityInKB" => c.text = kib.to_string(),
            "capacityInBytes" => c.text = (kib * 1024).to_string(),
            _ => {}
        }
    }
    let mut out = String::from("<deviceChange><operation>edit</operation>");
    write_element(&mut out, &d, "device");
    out.push_str("</deviceChange>");
    out
}

/// The body of `ReconfigVM_Task`.
pub(crate) fn config_spec(
    cpu: Option<u32>,
    memory_mib: Option<u64>,
    device_changes: &[String],
) -> String {
    let mut b = Xml::new();
    b.open("spec");
    if let Some(c) = cpu {
        b.el("numCPUs", &c.to_string());
    }
    if let Some(m) = memory_mib {
        b.el("memoryMB", &m.to_string());
    }
    for d in device_changes {
        b.raw(d);
    }
    b.close("spec");
    b.finish()
}

fn prefix_to_mask(prefix: u8) -> Ipv4Addr {
    let bits: u32 = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    };
    Ipv4Addr::from(bits)
}

/// Splits `10.0.0.5/24` into address and subnet mask (no prefix: /24).
fn split_cidr(ip: &str) -> Result<(Ipv4Addr, Ipv4Addr), Error> {
    let (addr, prefix) = match ip.split_once('/') {
        Some((a, p)) => (
            a,
            p.parse::<u8>()
                .map_err(|_| Error::invalid_spec(format!("bad prefix in {ip}")))?,
        ),
        None => (ip, 24),
    };
    if prefix > 32 {
        return Err(Error::invalid_spec(format!("bad prefix in {ip}")));
    }
    let addr: Ipv4Addr = addr
        .parse()
        .map_err(|_| Error::invalid_spec(format!("bad IPv4 address {ip}")))?;
    Ok((addr, prefix_to_mask(prefix)))
}

/// A Linux `CustomizationSpec` for hostname and networks.
pub(crate) fn customization_spec(c: &Customization) -> Result<String, Error> {
    let mut b = Xml::new();
    b.open("customization");
    b.open_typed("identity", "CustomizationLinuxPrep");
    let host = c.hostname.as_deref().unwrap_or("");
    let (short, domain) = host.split_once('.').unwrap_or((host, "localdomain"));
    if short.is_empty() {
        b.raw("<hostName xsi:type=\"CustomizationVirtualMachineName\"></hostName>");
    } else {
        b.open_typed("hostName", "CustomizationFixedName")
            .el("name", short)
            .close("hostName");
    }
    b.el("domain", domain);
    b.close("identity");
    let dns: Vec<&str> = c
        .networks
        .iter()
        .flat_map(|n| n.dns.iter().map(String::as_str))
        .collect();
    b.open("globalIPSettings");
    for d in &dns {
        b.el("dnsServerList", d);
    }
    b.close("globalIPSettings");
    for n in &c.networks {
        b.open("nicSettingMap").open("adapter");
        match &n.ip_address {
            Some(ip) => {
                let (addr, mask) = split_cidr(ip)?;
                b.open_typed("ip", "CustomizationFixedIp")
                    .el("ipAddress", &addr.to_string())
                    .close("ip");
                b.el("subnetMask", &mask.to_string());
            }
            None => {
                b.raw("<ip xsi:type=\"CustomizationDhcpIpGenerator\"></ip>");
            }
        }
        if let Some(gw) = &n.gateway {
            b.el("gateway", gw);
        }
        for d in &n.dns {
            b.el("dnsServerList", d);
        }
        b.close("adapter").close("nicSettingMap");
    }
    b.close("customization");
    Ok(b.finish())
}

/// The body of `CloneVM_Task`.
pub(crate) fn clone_spec(
    folder: &MoRef,
    name: &str,
    pool: Option<&MoRef>,
    linked: bool,
    snapshot: Option<&MoRef>,
    customization: Option<&Customization>,
    power_on: bool,
) -> Result<String, Error> {
    let mut b = Xml::new();
    b.moref("folder", &folder.ty, &folder.value)
        .el("name", name)
        .open("spec")
        .open("location");
    if linked {
        b.el("diskMoveType", "createNewChildDiskBacking");
    }
    if let Some(p) = pool {
        b.moref("pool", &p.ty, &p.value);
    }
    b.close("location").el("template", "false");
    // Cloud-init user data goes where the create path puts it, the clone's guestinfo.
    if let Some(ud) = customization.and_then(|c| c.cloud_init_user_data.as_deref()) {
        b.open("config");
        for (k, v) in [
            (USERDATA_KEY, base64(ud.as_bytes())),
            (USERDATA_ENCODING_KEY, "base64".to_owned()),
        ] {
            b.open_typed("extraConfig", "OptionValue")
                .el("key", k)
                .raw(&format!(
                    "<value xsi:type=\"xsd:string\">{}</value>",
                    esc(&v)
                ))
                .close("extraConfig");
        }
        b.close("config");
    }
    if let Some(c) = customization.filter(|c| c.hostname.is_some() || !c.networks.is_empty()) {
        b.raw(&customization_spec(c)?);
    }
    b.el("powerOn", if power_on { "true" } else { "false" });
    if let Some(s) = snapshot {
        b.moref("snapshot", &s.ty, &s.value);
    }
    b.close("spec");
    Ok(b.finish())
}

/// The backing of one new network adapter.
#[derive(Debug, Clone)]
pub(crate) enum NicBacking {
    /// A standard port group / network.
    Network {
        /// Adapter model (`vmxnet3`, `e1000`, `e1000e`).
        model: String,
        /// Network name.
        name: String,
        /// Network moref.
        network: MoRef,
    },
    /// A distributed port group.
    Portgroup {
        /// Adapter model.
        model: String,
        /// The switch's UUID.
        switch_uuid: String,
        /// The port group key.
        key: String,
    },
}

const CONTROLLER_KEY: i32 = -100;

/// The body of `CreateVM_Task`: a `VirtualMachineConfigSpec` (elements in XSD order), the
/// resource pool and the optional host.
pub(crate) fn create_vm_body(
    spec: &VmCreateSpec,
    target: &Target,
    extra_config: &[(String, String)],
) -> String {
    let mut b = Xml::new();
    b.open("config")
        .el("name", &spec.name)
        .el("guestId", GUEST_ID)
        .open("files")
        .el("vmPathName", &format!("[{}]", target.datastore))
        .close("files")
        .el("numCPUs", &spec.cpu.to_string())
        .el("memoryMB", &spec.memory_mib.to_string());
    if !spec.disks.is_empty() {
        b.open("deviceChange").el("operation", "add");
        b.open_typed("device", "ParaVirtualSCSIController")
            .el("key", &CONTROLLER_KEY.to_string())
            .el("busNumber", "0")
            .el("sharedBus", "noSharing")
            .close("device");
        b.close("deviceChange");
    }
    for (i, d) in spec.disks.iter().enumerate() {
        let unit = if i >= 7 { i + 1 } else { i };
        let kib = d.size_gib * 1024 * 1024;
        let thin = d.disk_type.as_deref() != Some("thick");
        b.open("deviceChange")
            .el("operation", "add")
            .el("fileOperation", "create");
        b.open_typed("device", "VirtualDisk")
            .el("key", &(-101 - i as i64).to_string())
            .open("deviceInfo")
            .el("label", &d.name)
            .el("summary", &format!("{} GiB", d.size_gib))
            .close("deviceInfo");
        b.open_typed("backing", "VirtualDiskFlatVer2BackingInfo")
            .el("fileName", &format!("[{}]", target.datastore))
            .el("diskMode", "persistent")
            .el("thinProvisioned", if thin { "true" } else { "false" })
            .close("backing");
        b.el("controllerKey", &CONTROLLER_KEY.to_string())
            .el("unitNumber", &unit.to_string())
            .el("capacityInKB", &kib.to_string())
            .el("capacityInBytes", &(kib * 1024).to_string())
            .close("device");
        b.close("deviceChange");
    }
    for (i, n) in target.nics.iter().enumerate() {
        let model = match n {
            NicBacking::Network { model, .. } | NicBacking::Portgroup { model, .. } => model,
        };
        let ty = match model.as_str() {
            "e1000" => "VirtualE1000",
            "e1000e" => "VirtualE1000e",
            _ => "VirtualVmxnet3",
        };
        b.open("deviceChange").el("operation", "add");
        b.open_typed("device", ty)
            .el("key", &(-200 - i as i64).to_string());
        match n {
            NicBacking::Network { name, network, .. } => {
                b.open_typed("backing", "VirtualEthernetCardNetworkBackingInfo")
                    .el("deviceName", name)
                    .moref("network", &network.ty, &network.value)
                    .close("backing");
            }
            NicBacking::Portgroup {
                switch_uuid, key, ..
            } => {
                b.open_typed(
                    "backing",
                    "VirtualEthernetCardDistributedVirtualPortBackingInfo",
                )
                .open("port")
                .el("switchUuid", switch_uuid)
                .el("portgroupKey", key)
                .close("port")
                .close("backing");
            }
        }
        b.open("connectable")
            .el("startConnected", "true")
            .el("allowGuestControl", "true")
            .el("connected", "false")
            .close("connectable");
        b.el("addressType", "generated").close("device");
        b.close("deviceChange");
    }
    write_extra_config(&mut b, extra_config);
    b.close("config")
        .moref("pool", &target.pool.ty, &target.pool.value);
    if let Some(h) = &target.host {
        b.moref("host", &h.ty, &h.value);
    }
    b.finish()
}

/// Where a VM made from a template goes: folder, datastore, pool and host.
pub(crate) struct TemplateTarget<'a> {
    /// The folder of the new VM.
    pub(crate) folder: &'a MoRef,
    /// Its datastore.
    pub(crate) datastore: &'a MoRef,
    /// Its resource pool.
    pub(crate) pool: &'a MoRef,
    /// Its host, when the placement named one.
    pub(crate) host: Option<&'a MoRef>,
}

/// The body of `CloneVM_Task` making VM `name` from a template: a full copy relocated to
/// `to`, not a template, with `cpu` vCPUs, `memory_mib` MiB and `extra_config` (labels, user
/// data), left off (elements in XSD order).
pub(crate) fn template_clone_body(
    name: &str,
    to: &TemplateTarget<'_>,
    cpu: u32,
    memory_mib: u64,
    extra_config: &[(String, String)],
) -> String {
    let mut b = Xml::new();
    b.moref("folder", &to.folder.ty, &to.folder.value)
        .el("name", name)
        .open("spec")
        .open("location")
        .moref("datastore", &to.datastore.ty, &to.datastore.value)
        .moref("pool", &to.pool.ty, &to.pool.value);
    if let Some(h) = to.host {
        b.moref("host", &h.ty, &h.value);
    }
    b.close("location")
        .el("template", "false")
        .open("config")
        .el("numCPUs", &cpu.to_string())
        .el("memoryMB", &memory_mib.to_string());
    write_extra_config(&mut b, extra_config);
    b.close("config").el("powerOn", "false").close("spec");
    b.finish()
}

/// The body of `ReconfigVM_Task` giving a VM `cpu` vCPUs, `memory_mib` MiB and
/// `extra_config` (for a clone whose server did not apply the clone spec's config).
pub(crate) fn size_and_extra_config(
    cpu: u32,
    memory_mib: u64,
    extra_config: &[(String, String)],
) -> String {
    let mut b = Xml::new();
    b.open("spec")
        .el("numCPUs", &cpu.to_string())
        .el("memoryMB", &memory_mib.to_string());
    write_extra_config(&mut b, extra_config);
    b.close("spec");
    b.finish()
}

/// The body of `RelocateVM_Task` moving a VM to `host` in `pool`.
pub(crate) fn relocate_to_host(host: &MoRef, pool: &MoRef) -> String {
    let mut b = Xml::new();
    b.open("spec")
        .moref("pool", &pool.ty, &pool.value)
        .moref("host", &host.ty, &host.value)
        .close("spec");
    b.finish()
}

/// `extraConfig` option values, string-typed.
fn write_extra_config(b: &mut Xml, extra_config: &[(String, String)]) {
    for (k, v) in extra_config {
        b.open_typed("extraConfig", "OptionValue")
            .el("key", k)
            .raw(&format!(
                "<value xsi:type=\"xsd:string\">{}</value>",
                esc(v)
            ))
            .close("extraConfig");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtrigaud_core::NetworkCustomization;

    #[test]
    fn written_elements_keep_their_types() {
        let el = crate::xml::parse(
            r#"<spec xmlns:x="http://www.w3.org/2001/XMLSchema-instance" x:type="VirtualMachineImportSpec"><configSpec><extraConfig x:type="OptionValue"><key>k</key><value x:type="xsd:string">a&amp;b</value></extraConfig></configSpec><pool type="ResourcePool">resgroup-1</pool></spec>"#,
        )
        .expect("parse");
        let mut out = String::new();
        write_element(&mut out, &el, "spec");
        assert_eq!(
            out,
            r#"<spec xsi:type="VirtualMachineImportSpec"><configSpec><extraConfig xsi:type="OptionValue"><key>k</key><value xsi:type="xsd:string">a&amp;b</value></extraConfig></configSpec><pool type="ResourcePool">resgroup-1</pool></spec>"#
        );
    }

    #[test]
    fn masks() {
        assert_eq!(prefix_to_mask(24).to_string(), "255.255.255.0");
        assert_eq!(prefix_to_mask(0).to_string(), "0.0.0.0");
        assert_eq!(prefix_to_mask(32).to_string(), "255.255.255.255");
        assert!(split_cidr("10.0.0.1/33").is_err());
        assert!(split_cidr("nope").is_err());
    }

    #[test]
    fn linked_clone_body_order() {
        let mut c = Customization::default();
        c.hostname = Some("web-1.example.com".into());
        let mut n = NetworkCustomization::default();
        n.name = "VM Network".into();
        n.ip_address = Some("10.0.0.5/24".into());
        n.gateway = Some("10.0.0.1".into());
        n.dns = vec!["10.0.0.2".into()];
        c.networks.push(n);
        let body = clone_spec(
            &MoRef::new("Folder", "group-v3"),
            "web-1",
            Some(&MoRef::new("ResourcePool", "resgroup-1")),
            true,
            Some(&MoRef::new("VirtualMachineSnapshot", "snapshot-1")),
            Some(&c),
            true,
        )
        .expect("body");
        let order = [
            "<folder",
            "<name>web-1",
            "<location>",
            "createNewChildDiskBacking",
            "<pool",
            "</location>",
            "<template>",
            "CustomizationLinuxPrep",
            "<name>web-1</name>",
            "<domain>example.com",
            "255.255.255.0",
            "<gateway>10.0.0.1",
            "<powerOn>true",
            "<snapshot type=\"VirtualMachineSnapshot\">snapshot-1",
        ];
        let mut at = 0;
        for o in order {
            let i = body[at..]
                .find(o)
                .unwrap_or_else(|| panic!("{o} missing or out of order in {body}"));
            at += i;
        }
    }

    #[test]
    fn create_vm_body_order_and_escaping() {
        use virtrigaud_core::{DiskCreateSpec, NetworkCreateSpec};
        let mut spec = VmCreateSpec::new("web-1", 2, 512);
        spec.disks.push(DiskCreateSpec::new("root", 1));
        spec.networks.push(NetworkCreateSpec::new("VM Network"));
        let target = Target {
            folder: MoRef::new("Folder", "group-v3"),
            pool: MoRef::new("ResourcePool", "resgroup-9"),
            host: Some(MoRef::new("HostSystem", "host-21")),
            datastore: "LocalDS_0".into(),
            nics: vec![NicBacking::Network {
                model: "vmxnet3".into(),
                name: "VM Network".into(),
                network: MoRef::new("Network", "network-7"),
            }],
        };
        let extra = [("virtrigaud.label.a".to_owned(), "<&>".to_owned())];
        let body = create_vm_body(&spec, &target, &extra);
        let order = [
            "<config>",
            "<name>web-1</name>",
            "<guestId>otherLinux64Guest",
            "<vmPathName>[LocalDS_0]</vmPathName>",
            "<numCPUs>2",
            "<memoryMB>512",
            "ParaVirtualSCSIController",
            "<fileOperation>create",
            "VirtualDiskFlatVer2BackingInfo",
            "<controllerKey>-100",
            "<capacityInKB>1048576",
            "VirtualVmxnet3",
            "<network type=\"Network\">network-7",
            "<connectable>",
            "<addressType>generated",
            "<extraConfig xsi:type=\"OptionValue\"><key>virtrigaud.label.a</key>",
            "&lt;&amp;&gt;",
            "</config>",
            "<pool type=\"ResourcePool\">resgroup-9",
            "<host type=\"HostSystem\">host-21",
        ];
        let mut at = 0;
        for o in order {
            let i = body[at..]
                .find(o)
                .unwrap_or_else(|| panic!("{o} missing or out of order in {body}"));
            at += i;
        }
    }
}
