//! cloud-init NoCloud documents for a clone's [`Customization`]: the `meta-data` (instance id
//! and hostname), the `network-config` (version 2) and the `user-data`, as providers that hand
//! the guest a NoCloud seed (libvirt's `cidata` image, KubeVirt's `cloudInitNoCloud` volume)
//! write them, and read back the way a test checks what a clone carries.
//!
//! The documents are JSON, which cloud-init reads as the YAML it expects, so every value is
//! quoted correctly whatever it holds.
//!
//! ```
//! use virtrigaud_core::cloudinit::NoCloudSeed;
//! use virtrigaud_core::{Customization, NetworkCustomization};
//!
//! let mut net = NetworkCustomization::default();
//! net.name = "primary".into();
//! net.ip_address = Some("192.0.2.10/24".into());
//! net.gateway = Some("192.0.2.1".into());
//! net.dns = vec!["192.0.2.53".into()];
//! let mut c = Customization::default();
//! c.hostname = Some("web-2".into());
//! c.networks = vec![net];
//!
//! let seed = NoCloudSeed::for_customization("web-2", &c, &["52:54:00:12:34:56".into()])?;
//! assert!(seed.network_config.as_deref().unwrap().contains("52:54:00:12:34:56"));
//! // What the seed says reads back as the customization it was made from.
//! assert_eq!(seed.customization()?, c);
//! # Ok::<(), virtrigaud_core::Error>(())
//! ```

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::clone::{Customization, NetworkCustomization};
use crate::error::{Error, Result};

/// The files of a NoCloud seed. `network_config` is `None` without networks to configure
/// (the guest keeps its image's default, usually DHCP).
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NoCloudSeed {
    /// `meta-data`: `instance-id` and, when one is asked for, `local-hostname`.
    pub meta_data: String,
    /// `user-data`, verbatim (an empty `#cloud-config` without any).
    pub user_data: String,
    /// `network-config`, version 2.
    pub network_config: Option<String>,
}

impl std::fmt::Debug for NoCloudSeed {
    /// User data can hold secrets: only its size is shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NoCloudSeed")
            .field("meta_data", &self.meta_data)
            .field("user_data", &crate::redact::Redacted(Some(&self.user_data)))
            .field("network_config", &self.network_config)
            .finish()
    }
}

#[derive(Serialize, Deserialize)]
struct MetaData {
    #[serde(rename = "instance-id")]
    instance_id: String,
    #[serde(rename = "local-hostname", skip_serializing_if = "Option::is_none")]
    local_hostname: Option<String>,
}

/// The `user-data` of a seed without any: cloud-init's empty config.
pub const EMPTY_USER_DATA: &str = "#cloud-config\n{}\n";

impl NoCloudSeed {
    /// The seed carrying `c` for the guest `instance_id` (a new id makes cloud-init apply it
    /// on the clone's first boot). Network `i` is matched to the NIC with MAC address
    /// `macs[i]`; without one, a single network matches the guest's first Ethernet NIC by
    /// name. A static address needs a prefix length (`192.0.2.10/24`).
    pub fn for_customization(
        instance_id: &str,
        c: &Customization,
        macs: &[String],
    ) -> Result<Self> {
        if let Some(h) = &c.hostname {
            check_hostname(h)?;
        }
        let meta = MetaData {
            instance_id: instance_id.to_owned(),
            local_hostname: c.hostname.clone(),
        };
        Ok(Self {
            meta_data: to_json(&meta)?,
            user_data: c
                .cloud_init_user_data
                .clone()
                .unwrap_or_else(|| EMPTY_USER_DATA.to_owned()),
            network_config: network_config(&c.networks, macs)?,
        })
    }

    /// A seed as read from a guest's `cidata` files (`network_config` `None` when absent).
    pub fn from_files(meta_data: &str, user_data: &str, network_config: Option<&str>) -> Self {
        Self {
            meta_data: meta_data.to_owned(),
            user_data: user_data.to_owned(),
            network_config: network_config.map(str::to_owned),
        }
    }

    /// The hostname this seed gives the guest.
    pub fn hostname(&self) -> Result<Option<String>> {
        let meta: MetaData = serde_json::from_str(&self.meta_data)
            .map_err(|e| Error::invalid_spec(format!("meta-data is not a seed of ours: {e}")))?;
        Ok(meta.local_hostname)
    }

    /// The customization this seed applies: the inverse of [`NoCloudSeed::for_customization`]
    /// (network names are the keys of `ethernets`).
    pub fn customization(&self) -> Result<Customization> {
        let mut c = Customization {
            hostname: self.hostname()?,
            ..Default::default()
        };
        if self.user_data != EMPTY_USER_DATA {
            c.cloud_init_user_data = Some(self.user_data.clone());
        }
        if let Some(n) = &self.network_config {
            c.networks = read_network_config(n)?;
        }
        Ok(c)
    }
}

/// A hostname cloud-init can set: 1–253 characters, labels of letters, digits and `-`.
fn check_hostname(h: &str) -> Result<()> {
    let ok = !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-')
        });
    if ok {
        Ok(())
    } else {
        Err(Error::invalid_spec(format!(
            "customization.hostname: {h:?} is not a valid hostname"
        )))
    }
}

fn to_json(v: &impl Serialize) -> Result<String> {
    serde_json::to_string_pretty(v)
        .map(|s| s + "\n")
        .map_err(|e| Error::internal(format!("encoding a cloud-init document: {e}")))
}

/// The version-2 `network-config` for `networks` (see [`NoCloudSeed::for_customization`]).
fn network_config(networks: &[NetworkCustomization], macs: &[String]) -> Result<Option<String>> {
    if networks.is_empty() {
        return Ok(None);
    }
    let mut ethernets = serde_json::Map::new();
    for (i, n) in networks.iter().enumerate() {
        let field = |what: &str| format!("customization.networks[{i}].{what}");
        let key = if n.name.is_empty() {
            format!("eth{i}")
        } else {
            n.name.clone()
        };
        let matcher = match macs.get(i) {
            Some(mac) => json!({ "macaddress": mac.to_ascii_lowercase() }),
            None if networks.len() == 1 => json!({ "name": "e*" }),
            None => {
                return Err(Error::invalid_spec(format!(
                    "{}: the clone has no NIC for this network",
                    field("name")
                )));
            }
        };
        let mut eth = serde_json::Map::new();
        eth.insert("match".into(), matcher);
        eth.insert("set-name".into(), Value::String(key.clone()));
        match &n.ip_address {
            None => {
                eth.insert("dhcp4".into(), Value::Bool(true));
            }
            Some(a) => {
                let (ip, prefix) = a.split_once('/').ok_or_else(|| {
                    Error::invalid_spec(format!(
                        "{}: {a:?} needs a prefix length (like 192.0.2.10/24)",
                        field("ipAddress")
                    ))
                })?;
                let addr: std::net::IpAddr = ip.parse().map_err(|_| {
                    Error::invalid_spec(format!(
                        "{}: {ip:?} is not an IP address",
                        field("ipAddress")
                    ))
                })?;
                let max = if addr.is_ipv4() { 32 } else { 128 };
                if !prefix.parse::<u8>().is_ok_and(|p| p <= max) {
                    return Err(Error::invalid_spec(format!(
                        "{}: prefix {prefix:?} is not 0..={max}",
                        field("ipAddress")
                    )));
                }
                eth.insert("dhcp4".into(), Value::Bool(false));
                eth.insert("addresses".into(), json!([a]));
            }
        }
        if let Some(g) = &n.gateway {
            g.parse::<std::net::IpAddr>().map_err(|_| {
                Error::invalid_spec(format!("{}: {g:?} is not an IP address", field("gateway")))
            })?;
            eth.insert("routes".into(), json!([{ "to": "default", "via": g }]));
        }
        if !n.dns.is_empty() {
            for (j, d) in n.dns.iter().enumerate() {
                d.parse::<std::net::IpAddr>().map_err(|_| {
                    Error::invalid_spec(format!(
                        "{}: {d:?} is not an IP address",
                        field(&format!("dns[{j}]"))
                    ))
                })?;
            }
            eth.insert("nameservers".into(), json!({ "addresses": n.dns }));
        }
        ethernets.insert(key, Value::Object(eth));
    }
    to_json(&json!({ "version": 2, "ethernets": ethernets })).map(Some)
}

/// The networks a version-2 `network-config` written by [`NoCloudSeed::for_customization`]
/// configures (for platforms that keep the hostname elsewhere, like KubeVirt's VM spec).
pub fn read_network_config(doc: &str) -> Result<Vec<NetworkCustomization>> {
    let bad = |e: String| Error::invalid_spec(format!("network-config is not a seed of ours: {e}"));
    let v: Value = serde_json::from_str(doc).map_err(|e| bad(e.to_string()))?;
    let eths = v
        .get("ethernets")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("no ethernets".into()))?;
    let strs = |v: Option<&Value>| -> Vec<String> {
        v.and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    Ok(eths
        .iter()
        .map(|(name, e)| NetworkCustomization {
            name: name.clone(),
            ip_address: strs(e.get("addresses")).into_iter().next(),
            gateway: e
                .get("routes")
                .and_then(Value::as_array)
                .and_then(|r| {
                    r.iter()
                        .find(|r| r.get("to").and_then(Value::as_str) == Some("default"))
                })
                .and_then(|r| r.get("via"))
                .and_then(Value::as_str)
                .map(str::to_owned),
            dns: strs(e.get("nameservers").and_then(|n| n.get("addresses"))),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(name: &str, ip: Option<&str>) -> NetworkCustomization {
        NetworkCustomization {
            name: name.into(),
            ip_address: ip.map(Into::into),
            gateway: Some("192.0.2.1".into()),
            dns: vec!["192.0.2.53".into(), "2001:db8::53".into()],
        }
    }

    #[test]
    fn round_trips_hostname_networks_and_user_data() {
        let c = Customization {
            hostname: Some("db-1.example".into()),
            networks: vec![net("lan", Some("192.0.2.10/24")), net("wan", None)],
            cloud_init_user_data: Some("#cloud-config\npackages: [nginx]\n".into()),
        };
        let macs = [
            "52:54:00:AA:00:01".to_owned(),
            "52:54:00:aa:00:02".to_owned(),
        ];
        let seed = NoCloudSeed::for_customization("i-1", &c, &macs).unwrap();
        let nc = seed.network_config.as_deref().unwrap();
        assert!(
            nc.contains("52:54:00:aa:00:01") && nc.contains("\"dhcp4\": true"),
            "{nc}"
        );
        assert_eq!(seed.customization().unwrap(), c);
        // Read back as files.
        let again = NoCloudSeed::from_files(&seed.meta_data, &seed.user_data, Some(nc));
        assert_eq!(again, seed);
    }

    #[test]
    fn no_networks_no_network_config_and_an_empty_user_data() {
        let c = Customization {
            hostname: Some("h".into()),
            ..Default::default()
        };
        let seed = NoCloudSeed::for_customization("i-2", &c, &[]).unwrap();
        assert_eq!(seed.network_config, None);
        assert_eq!(seed.user_data, EMPTY_USER_DATA);
        assert_eq!(seed.customization().unwrap(), c);
    }

    #[test]
    fn bad_input_names_the_field() {
        let bad = |c: Customization, macs: &[String], field: &str| {
            let e = NoCloudSeed::for_customization("i", &c, macs).unwrap_err();
            assert!(e.to_string().contains(field), "{e} lacks {field}");
        };
        let with = |n: NetworkCustomization| Customization {
            networks: vec![n],
            ..Default::default()
        };
        bad(
            with(net("a", Some("192.0.2.10"))),
            &[],
            "networks[0].ipAddress",
        );
        bad(
            with(net("a", Some("192.0.2.10/33"))),
            &[],
            "networks[0].ipAddress",
        );
        bad(
            with(net("a", Some("nope/24"))),
            &[],
            "networks[0].ipAddress",
        );
        let mut g = net("a", None);
        g.gateway = Some("x".into());
        bad(with(g), &[], "networks[0].gateway");
        let mut d = net("a", None);
        d.dns = vec!["192.0.2.53".into(), "dns".into()];
        bad(with(d), &[], "networks[0].dns[1]");
        let two = Customization {
            networks: vec![net("a", None), net("b", None)],
            ..Default::default()
        };
        bad(two, &["52:54:00:00:00:01".into()], "networks[1].name");
        for h in ["", "-a", "a_b", "a..b", &"x".repeat(64)] {
            let c = Customization {
                hostname: Some(h.into()),
                ..Default::default()
            };
            bad(c, &[], "customization.hostname");
        }
    }

    #[test]
    fn debug_hides_user_data() {
        let c = Customization {
            cloud_init_user_data: Some("#cloud-config\npassword: hunter2\n".into()),
            ..Default::default()
        };
        let seed = NoCloudSeed::for_customization("i", &c, &[]).unwrap();
        assert!(!format!("{seed:?}").contains("hunter2"));
    }
}
