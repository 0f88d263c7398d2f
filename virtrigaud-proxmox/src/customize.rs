//! Clone customization through PVE's cloud-init options, checked before anything is made.
//!
//! * **Hostname**: PVE has no hostname option; its cloud-init takes the VM `name` (a DNS
//!   name; `web-1.example.com` gives hostname `web-1` and that FQDN). So a hostname becomes
//!   the clone's `name`, also when it differs from the clone's target name.
//! * **Networks**: `ipconfigN` for the VM's `netN`: a network named `netN` is that NIC,
//!   any other name the NIC at its position in the list (the first network is `net0`). A
//!   static address needs its prefix length (`ip=192.0.2.10/24,gw=192.0.2.1`, IPv6 as
//!   `ip6`/`gw6`); no address is DHCP (`ip=dhcp`).
//! * **DNS**: PVE has one `nameserver` list per VM: the servers of all networks, in order.
//! * **Drive**: a cloud-init drive (`ideN: STORAGE:cloudinit`) unless the source already has
//!   one; PVE writes the seed onto it at start.
//! * **User data**: PVE takes it only as a `cicustom` snippet file on a storage with the
//!   `snippets` content type, and its API cannot put one there (`upload` and `download-url`
//!   take `iso`, `vztmpl` and `import`). Refused with `Unsupported` (`clone_user_data` is
//!   false).

use std::collections::BTreeSet;
use std::net::IpAddr;

use virtrigaud_core::{Customization, Error, ErrorKind, NetworkCustomization, Result};

use crate::PROVIDER_TYPE;
use crate::types::{VmConfig, is_disk_key};

const OP: &str = "clone";

/// Slots tried, in order, for the cloud-init drive (`ide2` is where PVE's GUI puts it).
const DRIVE_SLOTS: [&str; 10] = [
    "ide2", "ide0", "ide1", "ide3", "sata0", "sata1", "sata2", "sata3", "sata4", "sata5",
];

/// The config writes that customize a clone of a VM with config `source`, or the first
/// problem: `Unsupported` for user data, `InvalidSpec` naming the field otherwise.
/// `storage` holds the cloud-init drive when the source's first disk names none.
pub(crate) fn cloud_init_config(
    c: &Customization,
    source: &VmConfig,
    storage: &str,
    resource: &str,
) -> Result<Vec<(&'static str, String)>> {
    let fail = |kind, msg: String| {
        Err(Error::new(kind, msg).context_for(PROVIDER_TYPE, OP, Some(resource)))
    };
    if c.cloud_init_user_data.is_some() {
        return fail(
            ErrorKind::Unsupported,
            "customization.userData: PVE takes cloud-init user data only as a `cicustom` snippet on \
             a snippets storage, and its API cannot upload snippets; nothing was made"
                .into(),
        );
    }
    let mut out: Vec<(&'static str, String)> = Vec::new();
    if let Some(h) = &c.hostname {
        if let Err(why) = check_dns_name(h) {
            return fail(
                ErrorKind::InvalidSpec,
                format!("customization.hostname: {why} (got {h:?})"),
            );
        }
        out.push(("name", h.clone()));
    }
    let mut slots = BTreeSet::new();
    let mut dns: Vec<String> = Vec::new();
    for (i, n) in c.networks.iter().enumerate() {
        let slot = match nic(i, n, source) {
            Ok(s) => s,
            Err(why) => {
                return fail(
                    ErrorKind::InvalidSpec,
                    format!("customization.networks[{i}].name: {why}"),
                );
            }
        };
        if !slots.insert(slot) {
            return fail(
                ErrorKind::InvalidSpec,
                format!("customization.networks[{i}].name: net{slot} is customized twice"),
            );
        }
        match ipconfig(n) {
            Ok(v) => out.push((IPCONFIG[slot], v)),
            Err((field, why)) => {
                return fail(
                    ErrorKind::InvalidSpec,
                    format!("customization.networks[{i}].{field}: {why}"),
                );
            }
        }
        for (j, d) in n.dns.iter().enumerate() {
            if d.trim().parse::<IpAddr>().is_err() {
                return fail(
                    ErrorKind::InvalidSpec,
                    format!("customization.networks[{i}].dns[{j}]: not an IP address (got {d:?})"),
                );
            }
            if !dns.iter().any(|x| x == d.trim()) {
                dns.push(d.trim().to_owned());
            }
        }
    }
    if !dns.is_empty() {
        out.push(("nameserver", dns.join(" ")));
    }
    if !out.is_empty()
        && let Some(drive) = cloud_init_drive(source, storage)
    {
        match drive {
            Ok(d) => out.push(d),
            Err(why) => return fail(ErrorKind::InvalidState, why),
        }
    }
    Ok(out)
}

/// `ipconfig0` … `ipconfig31` (PVE's NICs are `net0` … `net31`).
const IPCONFIG: [&str; 32] = [
    "ipconfig0",
    "ipconfig1",
    "ipconfig2",
    "ipconfig3",
    "ipconfig4",
    "ipconfig5",
    "ipconfig6",
    "ipconfig7",
    "ipconfig8",
    "ipconfig9",
    "ipconfig10",
    "ipconfig11",
    "ipconfig12",
    "ipconfig13",
    "ipconfig14",
    "ipconfig15",
    "ipconfig16",
    "ipconfig17",
    "ipconfig18",
    "ipconfig19",
    "ipconfig20",
    "ipconfig21",
    "ipconfig22",
    "ipconfig23",
    "ipconfig24",
    "ipconfig25",
    "ipconfig26",
    "ipconfig27",
    "ipconfig28",
    "ipconfig29",
    "ipconfig30",
    "ipconfig31",
];

/// The NIC (`N` of `netN`) a network customizes: its `netN` name, else its position; the
/// source must have it.
fn nic(
    i: usize,
    n: &NetworkCustomization,
    source: &VmConfig,
) -> std::result::Result<usize, String> {
    let slot = n
        .name
        .strip_prefix("net")
        .and_then(|d| d.parse::<usize>().ok())
        .unwrap_or(i);
    if slot >= IPCONFIG.len() {
        return Err(format!("PVE has no net{slot} (net0 … net31)"));
    }
    if source.get(&format!("net{slot}")).is_none() {
        return Err(format!(
            "the source VM has no net{slot} for {:?} (networks are matched by a netN name, else by position)",
            n.name
        ));
    }
    Ok(slot)
}

/// PVE's `ipconfigN` value, or the field at fault and why.
fn ipconfig(n: &NetworkCustomization) -> std::result::Result<String, (&'static str, String)> {
    let Some(ip) = n.ip_address.as_deref().map(str::trim) else {
        if n.gateway.is_some() {
            return Err((
                "gateway",
                "needs a static ipAddress (DHCP brings its own gateway)".into(),
            ));
        }
        return Ok("ip=dhcp".into());
    };
    let Some((addr, prefix)) = ip.split_once('/') else {
        return Err((
            "ipAddress",
            format!("PVE's ipconfig needs the prefix length, e.g. {ip}/24 (got {ip:?})"),
        ));
    };
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| ("ipAddress", format!("not an IP address (got {ip:?})")))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    match prefix.parse::<u8>() {
        Ok(p) if (8..=max).contains(&p) => {}
        _ => {
            return Err((
                "ipAddress",
                format!("the prefix length must be 8 to {max} (got {ip:?})"),
            ));
        }
    }
    let (ip_key, gw_key) = if addr.is_ipv4() {
        ("ip", "gw")
    } else {
        ("ip6", "gw6")
    };
    let mut value = format!("{ip_key}={addr}/{prefix}");
    if let Some(gw) = n.gateway.as_deref().map(str::trim) {
        match gw.parse::<IpAddr>() {
            Ok(g) if g.is_ipv4() == addr.is_ipv4() => value.push_str(&format!(",{gw_key}={g}")),
            Ok(_) => {
                return Err((
                    "gateway",
                    format!("not of the address's family (got {gw:?})"),
                ));
            }
            Err(_) => return Err(("gateway", format!("not an IP address (got {gw:?})"))),
        }
    }
    Ok(value)
}

/// PVE's `dns-name`: dot-separated labels of 1-63 `[A-Za-z0-9-]`, not starting or ending
/// with `-`, at most 253 characters.
fn check_dns_name(name: &str) -> std::result::Result<(), &'static str> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            (1..=63).contains(&l.len())
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if ok {
        Ok(())
    } else {
        Err("PVE takes the VM name as the cloud-init hostname: it must be a DNS name")
    }
}

/// The cloud-init drive to add (`None`: the source has one), on the storage of the source's
/// first disk, else `storage`; `Err` when no IDE/SATA slot is free.
fn cloud_init_drive(
    source: &VmConfig,
    storage: &str,
) -> Option<std::result::Result<(&'static str, String), String>> {
    if source
        .values
        .iter()
        .any(|(k, v)| is_disk_key(k) && v.contains("cloudinit"))
    {
        return None;
    }
    let store = source
        .disks()
        .into_iter()
        .find_map(|(_, volume, _)| volume.split_once(':').map(|(s, _)| s.to_owned()))
        .unwrap_or_else(|| storage.to_owned());
    Some(
        DRIVE_SLOTS
            .iter()
            .find(|s| source.get(s).is_none())
            .map(|s| (*s, format!("{store}:cloudinit")))
            .ok_or_else(|| {
                "no free IDE or SATA slot on the source for a cloud-init drive".to_owned()
            }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source() -> VmConfig {
        serde_json::from_value(serde_json::json!({
            "name": "src",
            "scsi0": "fast:vm-100-disk-0,size=8G",
            "net0": "virtio=BC:24:11:00:00:01,bridge=vmbr0",
            "net1": "virtio=BC:24:11:00:00:02,bridge=vmbr1",
        }))
        .unwrap_or_default()
    }

    fn net(name: &str, ip: Option<&str>, gw: Option<&str>, dns: &[&str]) -> NetworkCustomization {
        let mut n = NetworkCustomization::default();
        n.name = name.into();
        n.ip_address = ip.map(str::to_owned);
        n.gateway = gw.map(str::to_owned);
        n.dns = dns.iter().map(|d| (*d).to_owned()).collect();
        n
    }

    fn custom(hostname: Option<&str>, networks: Vec<NetworkCustomization>) -> Customization {
        let mut c = Customization::default();
        c.hostname = hostname.map(str::to_owned);
        c.networks = networks;
        c
    }

    fn writes(c: &Customization) -> Result<Vec<(&'static str, String)>> {
        cloud_init_config(c, &source(), "local-lvm", "pve1/100")
    }

    #[test]
    fn hostname_networks_dns_and_drive() {
        let c = custom(
            Some("web-1.example.com"),
            vec![
                net(
                    "primary",
                    Some("192.0.2.10/24"),
                    Some("192.0.2.1"),
                    &["192.0.2.53", "192.0.2.54"],
                ),
                net(
                    "net1",
                    Some("2001:db8::10/64"),
                    Some("2001:db8::1"),
                    &["192.0.2.53"],
                ),
            ],
        );
        let w = writes(&c).unwrap();
        assert_eq!(
            w,
            vec![
                ("name", "web-1.example.com".to_owned()),
                ("ipconfig0", "ip=192.0.2.10/24,gw=192.0.2.1".to_owned()),
                (
                    "ipconfig1",
                    "ip6=2001:db8::10/64,gw6=2001:db8::1".to_owned()
                ),
                ("nameserver", "192.0.2.53 192.0.2.54".to_owned()),
                ("ide2", "fast:cloudinit".to_owned()),
            ]
        );
        // DHCP; an existing cloud-init drive is reused.
        let mut with_drive = source();
        with_drive
            .values
            .insert("ide0".into(), "fast:vm-100-cloudinit,media=cdrom".into());
        let dhcp = custom(None, vec![net("eth0", None, None, &[])]);
        assert_eq!(
            cloud_init_config(&dhcp, &with_drive, "local-lvm", "r").unwrap(),
            vec![("ipconfig0", "ip=dhcp".to_owned())]
        );
    }

    #[test]
    fn bad_input_names_the_field_and_user_data_is_unsupported() {
        let cases = [
            (custom(Some("bad_host"), vec![]), "customization.hostname"),
            (
                custom(None, vec![net("a", Some("192.0.2.10"), None, &[])]),
                "customization.networks[0].ipAddress",
            ),
            (
                custom(None, vec![net("a", Some("192.0.2.10/4"), None, &[])]),
                "customization.networks[0].ipAddress",
            ),
            (
                custom(None, vec![net("a", Some("x/24"), None, &[])]),
                "customization.networks[0].ipAddress",
            ),
            (
                custom(
                    None,
                    vec![net("a", Some("192.0.2.10/24"), Some("2001:db8::1"), &[])],
                ),
                "customization.networks[0].gateway",
            ),
            (
                custom(None, vec![net("a", None, Some("192.0.2.1"), &[])]),
                "customization.networks[0].gateway",
            ),
            (
                custom(None, vec![net("a", None, None, &["dns.example"])]),
                "customization.networks[0].dns[0]",
            ),
            (
                custom(None, vec![net("net5", None, None, &[])]),
                "customization.networks[0].name",
            ),
            (
                custom(
                    None,
                    vec![net("a", None, None, &[]), net("net0", None, None, &[])],
                ),
                "customization.networks[1].name",
            ),
        ];
        for (c, field) in cases {
            let e = writes(&c).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidSpec, "{field}: {e}");
            assert!(e.message().starts_with(field), "{field}: {e}");
        }
        let mut c = custom(Some("web-1"), vec![]);
        c.cloud_init_user_data = Some("#cloud-config\npassword: hunter2\n".into());
        let e = writes(&c).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }
}
