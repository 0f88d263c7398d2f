//! `Provider::create`, labels and the VM-set reconciler against a real vcsim
//! (scripts/vsphere/setup.sh starts it).
//!
//! Every VM here is named `vsc-*` (unique to this file) and removed at the end of its test;
//! leftovers of an interrupted earlier run are removed first, so re-runs against a warm vcsim
//! work. Real time with short budgets (vcsim answers in milliseconds).

mod common;

use std::sync::Arc;
use std::time::Duration;

use virtrigaud_core::model::{ObjectRef, VMSet, VMSetSpec, VmDisk, VmNetwork, VmResources};
use virtrigaud_core::shutdown::{ShutdownManager, ShutdownPolicy};
use virtrigaud_core::vmset::{SET_LABEL, TEMPLATE_HASH_LABEL, VmSetReconciler, template_hash};
use virtrigaud_core::{
    DeleteOptions, DiskCreateSpec, ErrorKind, ListOptions, NetworkCreateSpec, Placement,
    PowerState, Provider, VmCreateSpec, VmDescription, VmId,
};
use virtrigaud_vsphere::VsphereProvider;

use common::{RawSession, config, provider, remove, remove_named};

fn by_labels(pairs: &[(&str, &str)]) -> ListOptions {
    let mut o = ListOptions::default();
    for (k, v) in pairs {
        o.labels.insert((*k).into(), (*v).into());
    }
    o
}

/// RetrievePropertiesEx of `paths` on `vm`, through a second raw session.
async fn raw_props(vm: &VmId, paths: &[&str]) -> String {
    let mut raw = RawSession::login().await;
    let path_set: String = paths
        .iter()
        .map(|p| format!("<pathSet>{p}</pathSet>"))
        .collect();
    raw.call(&format!(
        r#"<RetrievePropertiesEx xmlns="urn:vim25"><_this type="PropertyCollector">propertyCollector</_this><specSet><propSet><type>VirtualMachine</type>{path_set}</propSet><objectSet><obj type="VirtualMachine">{vm}</obj></objectSet></specSet><options/></RetrievePropertiesEx>"#
    ))
    .await
}

async fn host_moref(path: &str) -> String {
    let mut raw = RawSession::login().await;
    let xml = raw
        .call(&format!(
            r#"<FindByInventoryPath xmlns="urn:vim25"><_this type="SearchIndex">SearchIndex</_this><inventoryPath>{path}</inventoryPath></FindByInventoryPath>"#
        ))
        .await;
    let start = xml.find("type=\"HostSystem\">").expect("host moref") + 18;
    let end = start + xml[start..].find('<').expect("end");
    xml[start..end].to_owned()
}

const USER_DATA: &str = "#cloud-config\nhostname: vsc-full\nruncmd: [\"echo hi & bye\"]\n";

#[tokio::test]
async fn create_with_disks_nic_labels_and_user_data() {
    let Some(p) = provider().await else { return };
    assert!(p.capabilities().create);
    remove_named(&p, "vsc-full").await;
    let mut spec = VmCreateSpec::new("vsc-full", 2, 256);
    spec.disks.push(DiskCreateSpec::new("root", 2));
    let mut data = DiskCreateSpec::new("data", 1);
    data.disk_type = Some("thick".into());
    spec.disks.push(data);
    spec.networks.push(NetworkCreateSpec::new("VM Network"));
    spec.labels.insert("app".into(), "web <&> \"x\"".into());
    spec.labels.insert(SET_LABEL.into(), "vsc-full-set".into());
    spec.cloud_init_user_data = Some(USER_DATA.into());
    let vm = p.create(&spec).await.expect("create");

    let d = p.describe(&vm).await.expect("describe");
    assert_eq!(d.name, "vsc-full");
    assert_eq!((d.cpu, d.memory_mib), (2, 256));
    assert!(d.power_state.is_off(), "power_on was false: {d:?}");
    let mut sizes: Vec<u64> = d.disks.iter().map(|x| x.size_gib).collect();
    sizes.sort_unstable();
    assert_eq!(sizes, [1, 2], "{d:?}");
    assert_eq!(
        d.labels, spec.labels,
        "labels round-trip through extraConfig"
    );

    let hits = p
        .list_vms(&by_labels(&[(SET_LABEL, "vsc-full-set")]))
        .await
        .expect("list by label");
    assert_eq!(
        hits.iter().map(|v| &v.id).collect::<Vec<_>>(),
        [&vm],
        "{hits:?}"
    );
    assert_eq!(hits[0].labels, spec.labels);
    let both = p
        .list_vms(&by_labels(&[
            (SET_LABEL, "vsc-full-set"),
            ("app", "web <&> \"x\""),
        ]))
        .await
        .expect("list by two labels");
    assert_eq!(both.len(), 1);
    for miss in [
        by_labels(&[(SET_LABEL, "other")]),
        by_labels(&[(SET_LABEL, "vsc-full-set"), ("app", "db")]),
        by_labels(&[("missing", "x")]),
    ] {
        let none = p.list_vms(&miss).await.expect("list");
        assert!(none.iter().all(|v| v.id != vm), "{miss:?} matched");
    }
    // Model VMs carry no labels.
    let all = p.list_vms(&ListOptions::default()).await.expect("list all");
    assert!(all.iter().any(|v| v.id == vm));
    assert!(
        all.iter()
            .filter(|v| v.id != vm && v.name.starts_with("DC0_"))
            .all(|v| v.labels.is_empty())
    );

    let raw = raw_props(
        &vm,
        &[
            "config.hardware.device",
            "config.extraConfig",
            "config.guestId",
        ],
    )
    .await;
    for needle in [
        "ParaVirtualSCSIController",
        "VirtualVmxnet3",
        "VirtualEthernetCardNetworkBackingInfo",
        "<deviceName>VM Network</deviceName>",
        "VirtualDiskFlatVer2BackingInfo",
        "<thinProvisioned>true</thinProvisioned>",
        "<thinProvisioned>false</thinProvisioned>",
        "otherLinux64Guest",
        "<key>guestinfo.userdata</key>",
        "<key>guestinfo.userdata.encoding</key>",
        "<key>virtrigaud.label.virtrigaud.io/set</key>",
        // base64 of USER_DATA
        "I2Nsb3VkLWNvbmZpZwpob3N0bmFtZTogdnNjLWZ1bGwKcnVuY21kOiBbImVjaG8gaGkgJiBieWUiXQo=",
    ] {
        assert!(raw.contains(needle), "{needle} missing from {raw}");
    }
    assert_eq!(raw.matches("VirtualDiskFlatVer2BackingInfo").count(), 2);

    let mut opts = DeleteOptions::default();
    opts.delete_disks = true;
    p.delete(&vm, &opts).await.expect("delete");
    assert_eq!(
        p.describe(&vm).await.expect_err("deleted").kind(),
        ErrorKind::NotFound
    );
    let gone = p
        .list_vms(&by_labels(&[(SET_LABEL, "vsc-full-set")]))
        .await
        .expect("list");
    assert!(gone.is_empty(), "{gone:?}");
}

#[tokio::test]
async fn create_on_named_host_and_cluster_with_power_on() {
    let Some(p) = provider().await else { return };
    remove_named(&p, "vsc-host").await;
    remove_named(&p, "vsc-cluster").await;
    let mut spec = VmCreateSpec::new("vsc-host", 1, 128);
    spec.placement = Placement::on_host("DC0_C0_H1")
        .with_cluster("DC0_C0")
        .with_datastore("LocalDS_0");
    spec.power_on = true;
    spec.disks.push(DiskCreateSpec::new("root", 1));
    let vm = p.create(&spec).await.expect("create on host");
    assert_eq!(
        p.power_state(&vm).await.expect("power"),
        PowerState::Running
    );
    let d = p.describe(&vm).await.expect("describe");
    assert_eq!(
        d.host.as_deref(),
        Some(host_moref("DC0/host/DC0_C0/DC0_C0_H1").await.as_str())
    );
    remove(&p, &vm).await;

    let mut spec = VmCreateSpec::new("vsc-cluster", 1, 128);
    spec.placement = Placement::in_cluster("DC0_C0");
    let vm = p.create(&spec).await.expect("create in cluster");
    let raw = raw_props(&vm, &["resourcePool"]).await;
    let mut rawc = RawSession::login().await;
    let pool = rawc
        .call(r#"<FindByInventoryPath xmlns="urn:vim25"><_this type="SearchIndex">SearchIndex</_this><inventoryPath>DC0/host/DC0_C0/Resources</inventoryPath></FindByInventoryPath>"#)
        .await;
    let start = pool.find("type=\"ResourcePool\">").expect("pool") + 20;
    let end = start + pool[start..].find('<').expect("end");
    assert!(
        raw.contains(&format!(">{}<", &pool[start..end])),
        "VM not in the cluster's root pool: {raw}"
    );
    assert!(p.power_state(&vm).await.expect("power").is_off());
    remove(&p, &vm).await;
}

#[tokio::test]
async fn unknown_placement_or_network_is_not_found_and_leaves_nothing() {
    let Some(p) = provider().await else { return };
    let mut spec = VmCreateSpec::new("vsc-nowhere", 1, 128);
    spec.placement = Placement::on_host("no-such-host");
    let err = p.create(&spec).await.expect_err("unknown host");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(err.to_string().contains("no-such-host"), "{err}");
    assert!(err.to_string().contains("placement.host"), "{err}");
    for (placement, field) in [
        (
            Placement::in_cluster("no-such-cluster"),
            "placement.cluster",
        ),
        (
            Placement::on_host("DC0_H0").with_cluster("DC0_C0"),
            "placement.host",
        ),
        (
            Placement::on_host("DC0_C0_H1").with_datastore("no-such-ds"),
            "placement.datastore",
        ),
    ] {
        let mut spec = VmCreateSpec::new("vsc-nowhere", 1, 128);
        spec.placement = placement;
        let err = p.create(&spec).await.expect_err(field);
        assert!(err.to_string().contains(field), "{err}");
    }
    let mut spec = VmCreateSpec::new("vsc-nowhere", 1, 128);
    spec.networks.push(NetworkCreateSpec::new("no-such-net"));
    let err = p.create(&spec).await.expect_err("unknown network");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert_eq!(
        p.find_vm_by_name("vsc-nowhere")
            .await
            .expect_err("nothing created")
            .kind(),
        ErrorKind::NotFound
    );
}

#[tokio::test]
async fn duplicate_name_is_already_exists() {
    let Some(p) = provider().await else { return };
    remove_named(&p, "vsc-dup").await;
    let spec = VmCreateSpec::new("vsc-dup", 1, 128);
    let vm = p.create(&spec).await.expect("first");
    let err = p.create(&spec).await.expect_err("second");
    assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{err}");
    assert!(!err.is_retryable());
    assert_eq!(p.find_vm_by_name("vsc-dup").await.expect("one VM"), vm);
    remove(&p, &vm).await;
}

#[tokio::test]
async fn invalid_specs_are_rejected_before_any_soap_call() {
    let Some(p) = provider().await else { return };
    let ok = VmCreateSpec::new("vsc-invalid", 1, 128);
    let mut specs = vec![
        VmCreateSpec::new("", 1, 128),
        VmCreateSpec::new("vsc/invalid", 1, 128),
        VmCreateSpec::new("vsc-invalid", 0, 128),
        VmCreateSpec::new("vsc-invalid", 1, 0),
    ];
    for key in ["", "bad key", "emoji-😀", "trailing/"] {
        let mut s = ok.clone();
        s.labels.insert(key.into(), "v".into());
        specs.push(s);
    }
    let mut s = ok.clone();
    s.disks.push(DiskCreateSpec::new("zero", 0));
    specs.push(s);
    let mut s = ok.clone();
    let mut n = NetworkCreateSpec::new("VM Network");
    n.model = Some("rtl8139".into());
    s.networks.push(n);
    specs.push(s);
    let before = p.api_calls();
    for s in &specs {
        let err = p.create(s).await.expect_err("invalid");
        assert_eq!(err.kind(), ErrorKind::InvalidSpec, "{s:?}: {err}");
    }
    assert_eq!(p.api_calls(), before, "no SOAP call for invalid specs");
}

async fn members(p: &VsphereProvider, set: &str) -> Vec<VmDescription> {
    let mut v = p
        .list_vms(&by_labels(&[(SET_LABEL, set)]))
        .await
        .expect("members");
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v
}

fn vsc_set(replicas: i32) -> VMSet {
    named_set("vsc-set", replicas)
}

fn named_set(name: &str, replicas: i32) -> VMSet {
    let mut spec = VMSetSpec::default();
    spec.replicas = Some(replicas);
    let t = &mut spec.template;
    t.metadata.labels.insert("tier".into(), "web".into());
    let mut res = VmResources::default();
    res.cpu = Some(1);
    res.memory_mib = Some(128);
    t.spec.resources = Some(res);
    let mut disk = VmDisk::default();
    disk.name = "root".into();
    disk.size_gib = 1;
    t.spec.disks.push(disk);
    let mut net = VmNetwork::default();
    net.name = "eth0".into();
    net.network_ref = Some(ObjectRef::new("VM Network"));
    t.spec.networks.push(net);
    VMSet::new(name, spec)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vm_set_scales_up_and_down_on_vcsim() {
    let Some(p) = provider().await else { return };
    for v in members(&p, "vsc-set").await {
        remove(&p, &v.id).await;
    }
    let dynp: Arc<dyn Provider> = Arc::new(p.clone());
    let r = VmSetReconciler::new(Arc::clone(&dynp), ShutdownManager::new(dynp))
        .shutdown_policy(ShutdownPolicy::with_grace(Duration::from_secs(2)));
    let tick = Duration::from_millis(200);

    let set = vsc_set(3);
    let s = r
        .run_until_converged(&set, tick, 30)
        .await
        .expect("scale to 3");
    assert_eq!((s.existing, s.available, s.updated), (3, 3, 3));
    let vms = members(&p, "vsc-set").await;
    let names: Vec<&str> = vms.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["vsc-set-1", "vsc-set-2", "vsc-set-3"]);
    let hash = template_hash(&set.spec.template);
    for v in &vms {
        assert_eq!(v.labels.get(TEMPLATE_HASH_LABEL), Some(&hash));
        assert_eq!(v.labels.get("tier").map(String::as_str), Some("web"));
        assert_eq!(v.power_state, PowerState::Running, "{v:?}");
        assert_eq!((v.cpu, v.memory_mib), (1, 128));
    }

    // A template change rolls every member over to the new template.
    let mut v2 = vsc_set(3);
    v2.spec
        .template
        .metadata
        .labels
        .insert("version".into(), "v2".into());
    let s = r
        .run_until_converged(&v2, tick, 60)
        .await
        .expect("rolling update");
    assert_eq!((s.existing, s.updated), (3, 3));
    let hash2 = template_hash(&v2.spec.template);
    assert_ne!(hash, hash2);
    let vms = members(&p, "vsc-set").await;
    assert_eq!(vms.len(), 3, "{vms:?}");
    assert!(
        vms.iter()
            .all(|v| v.labels.get(TEMPLATE_HASH_LABEL) == Some(&hash2)),
        "{vms:?}"
    );

    let s = r
        .run_until_converged(&vsc_set(1), tick, 30)
        .await
        .expect("scale to 1");
    assert_eq!(s.existing, 1);
    let left = members(&p, "vsc-set").await;
    assert_eq!(left.len(), 1, "{left:?}");

    let s = r
        .run_until_converged(&vsc_set(0), tick, 30)
        .await
        .expect("scale to 0");
    assert_eq!(s.existing, 0);
    assert!(members(&p, "vsc-set").await.is_empty());
}

#[tokio::test]
async fn configured_defaults_choose_folder_pool_and_datastore() {
    let Some(cfg) = config() else { return };
    let p = VsphereProvider::connect(
        cfg.clone()
            .with_default_datacenter("DC0")
            .with_default_folder("DC0/vm")
            .with_default_resource_pool("DC0/host/DC0_H0/Resources")
            .with_default_datastore("LocalDS_0"),
    )
    .await
    .expect("connect");
    remove_named(&p, "vsc-defaults").await;
    let mut spec = VmCreateSpec::new("vsc-defaults", 1, 128);
    spec.disks.push(DiskCreateSpec::new("root", 1));
    let vm = p.create(&spec).await.expect("create with defaults");
    let raw = raw_props(&vm, &["runtime.host", "config.files.vmPathName"]).await;
    assert!(raw.contains("[LocalDS_0] vsc-defaults/"), "{raw}");
    assert!(
        raw.contains(&format!(">{}<", host_moref("DC0/host/DC0_H0/DC0_H0").await)),
        "the pool of the standalone host DC0_H0 puts the VM on DC0_H0: {raw}"
    );
    remove(&p, &vm).await;

    let wrong = VsphereProvider::connect(cfg.clone().with_default_datacenter("no-such-dc"))
        .await
        .expect("connect");
    let err = wrong.create(&spec).await.expect_err("unknown datacenter");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    let wrong = VsphereProvider::connect(cfg.with_default_resource_pool("DC0/host/nope"))
        .await
        .expect("connect");
    let err = wrong.create(&spec).await.expect_err("unknown pool");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
}

#[tokio::test]
async fn nic_on_a_distributed_port_group_and_e1000() {
    let Some(p) = provider().await else { return };
    remove_named(&p, "vsc-dvpg").await;
    let mut spec = VmCreateSpec::new("vsc-dvpg", 1, 128);
    spec.networks.push(NetworkCreateSpec::new("DC0_DVPG0"));
    let mut e1000 = NetworkCreateSpec::new("VM Network");
    e1000.model = Some("e1000".into());
    spec.networks.push(e1000);
    let vm = p.create(&spec).await.expect("create");
    let raw = raw_props(&vm, &["config.hardware.device", "network"]).await;
    for needle in [
        "VirtualEthernetCardDistributedVirtualPortBackingInfo",
        "<portgroupKey>",
        "VirtualVmxnet3",
        "VirtualE1000",
    ] {
        assert!(raw.contains(needle), "{needle} missing from {raw}");
    }
    remove(&p, &vm).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vm_set_members_spread_over_hosts_by_the_solver_placer() {
    use virtrigaud_core::model::{AntiAffinity, VMPlacementPolicySpec};
    use virtrigaud_core::placement::SolverPlacer;
    let Some(p) = provider().await else { return };
    for v in members(&p, "vsc-aa").await {
        remove(&p, &v.id).await;
    }
    let dynp: Arc<dyn Provider> = Arc::new(p.clone());
    let inv = dynp.inventory().await.expect("inventory");
    assert!(inv.hosts.len() >= 3, "vcsim has {} hosts", inv.hosts.len());
    // Three members on three hosts need three hosts with room for one (1 vCPU, 128 MiB). The
    // model VMs of `-vm 20` fill vcsim's own 2-core hosts (8 vCPUs each at VCPU_PER_CORE);
    // the project's launcher gives them 16 cores (`-host-cores`).
    let roomy: Vec<&str> = inv
        .hosts
        .iter()
        .filter(|h| {
            h.allocated.cpu < h.capacity.cpu
                && h.allocated.memory_mib + 128 <= h.capacity.memory_mib
        })
        .map(|h| h.name.as_str())
        .collect();
    assert!(
        roomy.len() >= 3,
        "only {roomy:?} have room for a member (a vcsim without -host-cores?): {:?}",
        inv.hosts
            .iter()
            .map(|h| (&h.name, h.capacity, h.allocated))
            .collect::<Vec<_>>()
    );
    let mut aa = AntiAffinity::default();
    aa.host_anti_affinity = true;
    let mut policy = VMPlacementPolicySpec::default();
    policy.anti_affinity = Some(aa);
    let r = VmSetReconciler::new(Arc::clone(&dynp), ShutdownManager::new(Arc::clone(&dynp)))
        .placer(Arc::new(
            SolverPlacer::new(Arc::clone(&dynp)).group_label(SET_LABEL),
        ))
        .placement_policy(policy)
        .shutdown_policy(ShutdownPolicy::with_grace(Duration::from_secs(2)));
    let set = named_set("vsc-aa", 3);
    let s = r
        .run_until_converged(&set, Duration::from_millis(200), 30)
        .await
        .expect("converge");
    assert_eq!(s.available, 3);
    let vms = members(&p, "vsc-aa").await;
    let on: std::collections::BTreeSet<_> = vms.iter().filter_map(|v| v.host.clone()).collect();
    assert_eq!(on.len(), 3, "one member per host: {vms:?}");
    let s = r
        .run_until_converged(&named_set("vsc-aa", 0), Duration::from_millis(200), 30)
        .await
        .expect("scale to 0");
    assert_eq!(s.existing, 0);
}
