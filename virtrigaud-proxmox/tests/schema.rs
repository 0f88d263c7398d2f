//! Every request the client builds is validated against the PVE API schema shipped with
//! fakepve (`fakepve/data/pve-api.json.gz`, PVE's apidoc; its path comes from
//! `VIRTRIGAUD_PVE_SCHEMA`, written by `scripts/proxmox/setup.sh`).
//!
//! Checked: the path template and method exist; every parameter (path and form/query) is
//! declared (the schema forbids additional properties); required parameters are present;
//! `requires` partners are present; values match their type (booleans as `0`/`1`, integers
//! within minimum/maximum), enum, length, pattern and the formats we use; property strings
//! (`net0`, `scsi0`, `memory`) use only the keys their format declares.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::collections::BTreeSet;
use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use virtrigaud_core::shutdown::{PreStopExecutor, ShutdownManager, ShutdownPolicy};
use virtrigaud_core::testing::backend_env;
use virtrigaud_core::{
    CloneOptions, Customization, DeleteSnapshotOptions, DiskResize, NetworkCustomization,
    PowerOffOptions, Provider, ReconfigureRequest, RevertOptions, ShutdownChannel,
    ShutdownRequestOptions, SnapshotOptions, StartOptions, VmCreateSpec, VmId,
};
use virtrigaud_proxmox::{ApiRequest, catalogue};
use virtrigaud_proxmox::{ProxmoxProvider, PveClient};

fn load_schema() -> Option<Value> {
    let path = backend_env("proxmox", "VIRTRIGAUD_PVE_SCHEMA")?;
    let raw = std::fs::read(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    let text = if path.ends_with(".gz") {
        let mut s = String::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_string(&mut s)
            .unwrap();
        s
    } else {
        String::from_utf8(raw).unwrap()
    };
    let v: Value = serde_json::from_str(&text).unwrap();
    Some(v["paths"].clone())
}

fn num(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn is_true(v: Option<&Value>) -> bool {
    matches!(v, Some(Value::Number(n)) if n.as_i64() == Some(1))
        || matches!(v, Some(Value::Bool(true)))
}

/// The schema of parameter `name`, including indexed ones (`net0` → `net[n]`).
fn property<'a>(props: &'a serde_json::Map<String, Value>, name: &str) -> Option<&'a Value> {
    if let Some(p) = props.get(name) {
        return Some(p);
    }
    let base = name.trim_end_matches(|c: char| c.is_ascii_digit());
    if base.len() < name.len() {
        props.get(&format!("{base}[n]"))
    } else {
        None
    }
}

fn format_ok(format: &str, value: &str) -> Result<(), String> {
    let re = |r: &str| regex::Regex::new(r).unwrap().is_match(value);
    let ok = match format {
        "pve-node" => re(r"^[a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?$"),
        "pve-configid" => re(r"^(?i)[a-z][a-z0-9_\-]+$"),
        "dns-name" => re(
            r"^([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?\.)*[a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?$",
        ),
        "pve-tag-list" => value
            .split([';', ',', ' '])
            .filter(|t| !t.is_empty())
            .all(|t| {
                regex::Regex::new(r"^(?i)[a-z0-9_][a-z0-9_\-\+\.]*$")
                    .unwrap()
                    .is_match(t)
            }),
        "pve-storage-id" => re(r"^(?i)[a-z][a-z0-9\-_.]*[a-z0-9]$"),
        "pve-bridge-id" => re(r"^[-_.\w\d]+$"),
        "pve-vmid" => value.parse::<u64>().is_ok_and(|n| n >= 100),
        "pve-qm-ipconfig" => return ipconfig_ok(value),
        // PVE's address-list; we only ever send IP addresses.
        "address-list" => value
            .split([' ', ',', ';'])
            .filter(|a| !a.is_empty())
            .all(|a| a.parse::<std::net::IpAddr>().is_ok()),
        "pve-hotplug-features" => {
            value == "0"
                || value == "1"
                || value
                    .split(',')
                    .all(|f| ["network", "disk", "cpu", "memory", "usb", "cloudinit"].contains(&f))
        }
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("value {value:?} is not a valid {format}"))
    }
}

/// PVE's `pve-qm-ipconfig` (qemu-server's `$ipconfig_fmt`, named in the schema only):
/// `ip=<CIDRv4|dhcp|manual>`, `gw=<IPv4>` (needs `ip`), `ip6=<CIDRv6|auto|dhcp|manual>`,
/// `gw6=<IPv6>` (needs `ip6`); CIDR prefixes 8 to 32 / 128.
fn ipconfig_ok(value: &str) -> Result<(), String> {
    let cidr = |v: &str, v4: bool| -> bool {
        let Some((ip, bits)) = v.split_once('/') else {
            return false;
        };
        let max = if v4 { 32 } else { 128 };
        let bits_ok = bits.parse::<u8>().is_ok_and(|b| (8..=max).contains(&b));
        let ip_ok = if v4 {
            ip.parse::<std::net::Ipv4Addr>().is_ok()
        } else {
            ip.parse::<std::net::Ipv6Addr>().is_ok()
        };
        bits_ok && ip_ok
    };
    let mut keys = BTreeSet::new();
    for part in value.split(',') {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("ipconfig part {part:?} is not key=value"))?;
        let ok = match k {
            "ip" => ["dhcp", "manual"].contains(&v) || cidr(v, true),
            "ip6" => ["auto", "dhcp", "manual"].contains(&v) || cidr(v, false),
            "gw" => v.parse::<std::net::Ipv4Addr>().is_ok(),
            "gw6" => v.parse::<std::net::Ipv6Addr>().is_ok(),
            other => return Err(format!("ipconfig key {other:?} is not declared")),
        };
        if !ok || !keys.insert(k) {
            return Err(format!("ipconfig {k}={v:?} is not valid (or given twice)"));
        }
    }
    for (gw, ip) in [("gw", "ip"), ("gw6", "ip6")] {
        if keys.contains(gw) && !keys.contains(ip) {
            return Err(format!("ipconfig {gw} requires {ip}"));
        }
    }
    Ok(())
}

fn check_value(schema: &Value, value: &str) -> Result<(), String> {
    let ty = schema
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("string");
    match ty {
        "boolean" => {
            if value != "0" && value != "1" {
                return Err(format!("boolean sent as {value:?}; PVE's clients send 0/1"));
            }
        }
        "integer" => {
            let n: i64 = value
                .parse()
                .map_err(|_| format!("{value:?} is not an integer"))?;
            if let Some(min) = schema.get("minimum").and_then(num)
                && (n as f64) < min
            {
                return Err(format!("{n} < minimum {min}"));
            }
            if let Some(max) = schema.get("maximum").and_then(num)
                && (n as f64) > max
            {
                return Err(format!("{n} > maximum {max}"));
            }
        }
        "number" => {
            value
                .parse::<f64>()
                .map_err(|_| format!("{value:?} is not a number"))?;
        }
        "string" => {
            if let Some(max) = schema.get("maxLength").and_then(num)
                && value.chars().count() as f64 > max
            {
                return Err(format!("{value:?} longer than {max}"));
            }
            if let Some(min) = schema.get("minLength").and_then(num)
                && (value.chars().count() as f64) < min
            {
                return Err(format!("{value:?} shorter than {min}"));
            }
            if let Some(en) = schema.get("enum").and_then(Value::as_array)
                && !en.iter().any(|e| e.as_str() == Some(value))
            {
                return Err(format!("{value:?} not in enum {en:?}"));
            }
            if let Some(p) = schema.get("pattern").and_then(Value::as_str) {
                let re = regex::Regex::new(&format!("^(?:{p})$"))
                    .map_err(|e| format!("pattern {p}: {e}"))?;
                if !re.is_match(value) {
                    return Err(format!("{value:?} does not match /{p}/"));
                }
            }
            match schema.get("format") {
                Some(Value::String(f)) => format_ok(f, value)?,
                Some(Value::Object(fmt)) => check_property_string(fmt, value)?,
                _ => {}
            }
        }
        other => return Err(format!("unexpected schema type {other}")),
    }
    Ok(())
}

fn check_property_string(fmt: &serde_json::Map<String, Value>, value: &str) -> Result<(), String> {
    let default_key = fmt
        .iter()
        .find(|(_, s)| is_true(s.get("default_key")))
        .map(|(k, _)| k.clone());
    for part in value.split(',') {
        match part.split_once('=') {
            Some((k, v)) => {
                let s = fmt
                    .get(k)
                    .ok_or_else(|| format!("property string key {k:?} is not declared"))?;
                if s.get("type").is_some() {
                    check_value(s, v).map_err(|e| format!("{k}: {e}"))?;
                }
            }
            None => {
                if fmt.get(part).is_some_and(|s| s.get("keyAlias").is_some()) {
                    continue; // `virtio` in `virtio,bridge=vmbr0`
                }
                let k = default_key
                    .as_ref()
                    .ok_or_else(|| format!("bare value {part:?} but no default key"))?;
                check_value(&fmt[k], part).map_err(|e| format!("{k}: {e}"))?;
            }
        }
    }
    Ok(())
}

fn validate(paths: &Value, req: &ApiRequest) -> Result<(), String> {
    let method = req.method.as_str();
    let entry = paths
        .get(req.template)
        .ok_or_else(|| format!("path {} is not in the PVE API", req.template))?
        .get(method)
        .ok_or_else(|| format!("{method} {} is not in the PVE API", req.template))?;
    let empty = serde_json::Map::new();
    let props = entry["parameters"]
        .get("properties")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let mut given = BTreeSet::new();
    // Path placeholders.
    for seg in req.template.split('/') {
        if let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            let (_, value) = req
                .path_params
                .iter()
                .find(|(k, _)| *k == name)
                .ok_or_else(|| format!("path parameter {name} not bound"))?;
            let schema = props
                .get(name)
                .ok_or_else(|| format!("path parameter {name} not in schema"))?;
            check_value(schema, value).map_err(|e| format!("{name}: {e}"))?;
            given.insert(name.to_owned());
        }
    }
    for (name, value) in &req.params {
        let schema =
            property(props, name).ok_or_else(|| format!("parameter {name} is not declared"))?;
        // An array is sent as PVE's clients send it: the name once per element, each element
        // checked against `items`.
        let array = schema.get("type").and_then(Value::as_str) == Some("array");
        let element = if array { &schema["items"] } else { schema };
        check_value(element, value).map_err(|e| format!("{name}: {e}"))?;
        if !given.insert(name.clone()) && !array {
            return Err(format!("parameter {name} given twice"));
        }
    }
    for (name, schema) in props {
        if !is_true(schema.get("optional")) && !name.ends_with("[n]") && !given.contains(name) {
            return Err(format!("required parameter {name} is missing"));
        }
        if given.contains(name)
            && let Some(partner) = schema.get("requires").and_then(Value::as_str)
            && !given.contains(partner)
        {
            return Err(format!("{name} requires {partner}"));
        }
    }
    Ok(())
}

fn validate_all(paths: &Value, reqs: &[ApiRequest]) -> Vec<String> {
    reqs.iter()
        .filter_map(|r| {
            validate(paths, r)
                .err()
                .map(|e| format!("{} {}: {e}", r.method, r.path()))
        })
        .collect()
}

#[test]
fn every_built_request_matches_the_pve_schema() {
    let Some(paths) = load_schema() else { return };
    let reqs = catalogue();
    let errors = validate_all(&paths, &reqs);
    assert!(
        errors.is_empty(),
        "requests that PVE would refuse:\n{}",
        errors.join("\n")
    );
    // The validator itself catches mistakes.
    let bad = ApiRequest::new(
        virtrigaud_proxmox::Method::Post,
        "/nodes/{node}/qemu/{vmid}/status/shutdown",
    )
    .path_param("node", "pve1")
    .path_param("vmid", 101)
    .param("forceStop", "true")
    .param("timeoutt", 3);
    assert!(validate(&paths, &bad).is_err());
    let missing = ApiRequest::new(
        virtrigaud_proxmox::Method::Post,
        "/nodes/{node}/qemu/{vmid}/clone",
    )
    .path_param("node", "pve1")
    .path_param("vmid", 101);
    assert!(validate(&paths, &missing).unwrap_err().contains("newid"));
    // Arrays: the name repeated, each element of the item type; scalars only once.
    let exec = ApiRequest::new(
        virtrigaud_proxmox::Method::Post,
        "/nodes/{node}/qemu/{vmid}/agent/exec",
    )
    .path_param("node", "pve1")
    .path_param("vmid", 101)
    .param("command", "/bin/true")
    .param("command", "-x");
    assert!(validate(&paths, &exec).is_ok());
    let twice = ApiRequest::new(
        virtrigaud_proxmox::Method::Get,
        "/nodes/{node}/qemu/{vmid}/agent/exec-status",
    )
    .path_param("node", "pve1")
    .path_param("vmid", 101)
    .param("pid", 1)
    .param("pid", 2);
    assert!(validate(&paths, &twice).unwrap_err().contains("twice"));
    eprintln!(
        "validated {} request shapes against the PVE schema",
        reqs.len()
    );
}

/// Why `clone_user_data` is false: PVE takes cloud-init user data only as a `cicustom`
/// snippet (a volume on a storage with the `snippets` content type), and no API call can put
/// a file there: `upload` and `download-url` take other content types only.
#[test]
fn the_api_cannot_upload_cloud_init_snippets() {
    let Some(paths) = load_schema() else { return };
    let cfg = &paths["/nodes/{node}/qemu/{vmid}/config"]["POST"]["parameters"]["properties"];
    assert_eq!(
        cfg["cicustom"]["format"], "pve-qm-cicustom",
        "{}",
        cfg["cicustom"]
    );
    let mut uploads = 0;
    for (path, methods) in paths.as_object().unwrap() {
        for (method, entry) in methods.as_object().unwrap() {
            let Some(content) = entry["parameters"]["properties"].get("content") else {
                continue;
            };
            if method != "POST" || !(path.ends_with("/upload") || path.ends_with("/download-url")) {
                continue;
            }
            uploads += 1;
            let allowed: Vec<&str> = content["enum"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(Value::as_str)
                .collect();
            assert!(
                !allowed.contains(&"snippets"),
                "{method} {path} takes snippets: {allowed:?}"
            );
        }
    }
    assert!(uploads >= 2, "no upload endpoints found");
    // And the validator knows PVE's ipconfig.
    assert!(ipconfig_ok("ip=192.0.2.10/24,gw=192.0.2.1").is_ok());
    assert!(ipconfig_ok("ip=192.0.2.10").is_err());
    assert!(ipconfig_ok("gw=192.0.2.1").is_err());
    assert!(ipconfig_ok("ip6=2001:db8::1/64,gw6=2001:db8::ff").is_ok());
}

/// Records every request the provider sends during a whole lifecycle against fakepve and
/// validates each of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_sent_in_a_lifecycle_matches_the_pve_schema() {
    let Some(paths) = load_schema() else { return };
    let Some(env) = common::env() else { return };
    let client: PveClient = env.client();
    client.record_requests();
    let provider = Arc::new(ProxmoxProvider::new(client.clone()));
    let p: &dyn Provider = &*provider;
    let vm = env.control.vm("schema-lifecycle", json!({"agent": {}, "config": {"agent": "1", "cores": 1, "memory": 512, "scsi0": "local-lvm:vm-9-disk-0,size=8G", "net0": "virtio,bridge=vmbr0"}})).await;
    p.vm_capabilities(&vm).await.unwrap();
    p.describe(&vm).await.unwrap();
    p.probe_agent(&vm).await.unwrap();
    let hook = virtrigaud_proxmox::GuestAgentPreStop::with_client(client.clone())
        .exec(&vm, &["/bin/sh".into(), "-c".into(), "sync".into()])
        .await
        .unwrap();
    assert!(hook.succeeded(), "{hook}");
    let snaps = p.snapshotter().unwrap();
    snaps
        .create_snapshot(
            &vm,
            &SnapshotOptions::new("s1")
                .with_memory(true)
                .with_description("d"),
        )
        .await
        .unwrap();
    snaps.list_snapshots(&vm).await.unwrap();
    let mut rc = ReconfigureRequest::default();
    rc.cpu = Some(2);
    rc.memory_mib = Some(1024);
    rc.disks = vec![DiskResize::new("scsi0", 10)];
    p.reconfigure(&vm, &rc).await.unwrap();
    p.pause(&vm).await.unwrap();
    p.resume(&vm).await.unwrap();
    p.reset(&vm).await.unwrap();
    p.reboot(&vm, ShutdownChannel::Agent).await.unwrap();
    let _ = p
        .request_shutdown(
            &vm,
            ShutdownChannel::Acpi,
            &ShutdownRequestOptions::new(1, Duration::from_secs(5)),
        )
        .await;
    p.request_shutdown(
        &vm,
        ShutdownChannel::Agent,
        &ShutdownRequestOptions::new(1, Duration::from_secs(5)),
    )
    .await
    .unwrap();
    p.power_off(&vm, &PowerOffOptions::default()).await.unwrap();
    let mut ro = RevertOptions::default();
    ro.start = true;
    snaps.revert_snapshot(&vm, "s1", &ro).await.unwrap();
    snaps
        .delete_snapshot(&vm, "s1", &DeleteSnapshotOptions::default())
        .await
        .unwrap();
    let mgr = ShutdownManager::new(Arc::clone(&provider) as Arc<dyn Provider>);
    mgr.shutdown(&vm, ShutdownPolicy::with_grace(Duration::from_secs(10)))
        .await
        .unwrap();
    let mut net = NetworkCustomization::default();
    net.name = "net0".into();
    net.ip_address = Some("192.0.2.10/24".into());
    net.gateway = Some("192.0.2.1".into());
    net.dns = vec!["192.0.2.53".into()];
    let mut custom = Customization::default();
    custom.hostname = Some("schema-clone".into());
    custom.networks = vec![net];
    let clone = p
        .cloner()
        .unwrap()
        .clone_vm(
            &vm,
            &CloneOptions::new("schema-clone")
                .power_on(true)
                .with_customization(custom),
        )
        .await
        .unwrap();
    assert!(clone.customized);
    p.power_off(&clone.vm, &PowerOffOptions::default())
        .await
        .unwrap();
    p.delete(&clone.vm, &Default::default()).await.unwrap();
    let mut spec = VmCreateSpec::new("schema-made", 1, 512);
    spec.disks = vec![virtrigaud_core::DiskCreateSpec::new("root", 4)];
    spec.networks = vec![virtrigaud_core::NetworkCreateSpec::new("vmbr0")];
    spec.labels.insert("app".into(), "web".into());
    let made: VmId = p.create(&spec).await.unwrap();
    p.start(&made, &StartOptions::default()).await.unwrap();
    p.list_vms(&Default::default()).await.unwrap();
    p.inventory().await.unwrap();
    provider.node_capabilities("pve1").await.unwrap();
    p.power_off(&made, &PowerOffOptions::default())
        .await
        .unwrap();
    p.delete(&made, &Default::default()).await.unwrap();
    // A password client: the login request too.
    let pw = PveClient::new(env.password_config()).unwrap();
    pw.record_requests();
    ProxmoxProvider::new(pw.clone())
        .power_state(&vm)
        .await
        .unwrap();

    let mut sent = client.take_recorded();
    sent.extend(pw.take_recorded());
    let kinds: BTreeSet<String> = sent
        .iter()
        .map(|r| format!("{} {}", r.method, r.template))
        .collect();
    let errors = validate_all(&paths, &sent);
    assert!(
        errors.is_empty(),
        "requests that PVE would refuse:\n{}",
        errors.join("\n")
    );
    eprintln!(
        "validated {} sent requests ({} kinds) against the PVE schema",
        sent.len(),
        kinds.len()
    );
    assert!(kinds.len() >= 25, "{kinds:?}");
}
