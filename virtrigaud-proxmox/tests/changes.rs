//! Reconfigure, disk names and clones against fakepve (with the launcher's hot-plug, resize
//! and clone-fault models): what is written, what PVE applies live, what waits for a power
//! cycle, what a clone carries and what a failed one leaves.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::sync::Arc;

use serde_json::{Value, json};
use virtrigaud_core::model::ExpandPolicy;
use virtrigaud_core::orchestration::{
    DiskChange, Orchestrator, PlanMode, ReconfigureOptions, ResourceChange,
};
use virtrigaud_core::{
    CloneOptions, Customization, DiskCreateSpec, DiskResize, ErrorKind, NetworkCreateSpec,
    NetworkCustomization, PowerOffOptions, Provider, ReconfigureRequest, SnapshotOptions,
    VmCreateSpec,
};

use common::customization_in;

fn change(cpu: Option<u32>, memory_mib: Option<u64>, disks: Vec<DiskResize>) -> ReconfigureRequest {
    let mut r = ReconfigureRequest::default();
    r.cpu = cpu;
    r.memory_mib = memory_mib;
    r.disks = disks;
    r
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// With `hotplug` holding cpu and memory (and NUMA on), vCPUs go in through `vcpus` and
/// memory grows live: applied, read back, nothing pending; the planner plans it online.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_plug_applies_vcpus_and_memory_live() {
    let Some(env) = common::env() else { return };
    let provider = env.provider();
    let vm = env
        .control
        .vm(
            "hotplug",
            json!({"config": {"sockets": 1, "cores": 4, "vcpus": 2, "memory": 2048, "numa": 1,
                              "hotplug": "network,disk,usb,cpu,memory",
                              "scsi0": "local-lvm:vm-1-disk-0,size=8G"}}),
        )
        .await;
    let caps = provider.vm_capabilities(&vm).await.unwrap();
    assert!(caps.cpu_hot_add && caps.memory_hot_add, "{caps:?}");
    assert_eq!(caps.max_live_vcpus, 4, "sockets x cores");
    assert_eq!(provider.describe(&vm).await.unwrap().cpu, 2, "vcpus");
    let orch = Orchestrator::new(Arc::clone(&provider) as Arc<dyn Provider>);
    let plan = orch
        .plan_reconfigure(
            &vm,
            &ResourceChange::default().cpu(4).memory_mib(4096),
            &ReconfigureOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(plan.mode, PlanMode::Online, "{plan:?}");
    let r = provider
        .reconfigure(&vm, &change(Some(4), Some(4096), vec![]))
        .await
        .unwrap();
    assert!(r.applied_live && !r.needs_power_cycle, "{r:?}");
    let d = provider.describe(&vm).await.unwrap();
    assert_eq!((d.cpu, d.memory_mib), (4, 4096));
    assert!(!d.pending_power_cycle);
    let fake = env.control.fake_vm(&vm).await;
    assert_eq!(text(&fake["config"]["vcpus"]), "4", "{fake}");
    assert_eq!(
        text(&fake["config"]["cores"]),
        "4",
        "cores untouched: {fake}"
    );
    assert_eq!(fake["pending"], json!({}), "{fake}");
    // Beyond sockets x cores: a new topology, pending until the power cycle, and the plan
    // says so.
    let plan = orch
        .plan_reconfigure(
            &vm,
            &ResourceChange::default().cpu(6),
            &ReconfigureOptions::default(),
        )
        .await
        .unwrap();
    assert!(
        matches!(plan.mode, PlanMode::GracefulPowerCycle { .. }),
        "{plan:?}"
    );
    let r = provider
        .reconfigure(&vm, &change(Some(6), None, vec![]))
        .await
        .unwrap();
    assert!(r.needs_power_cycle, "{r:?}");
    let fake = env.control.fake_vm(&vm).await;
    assert_eq!(fake["pending"]["cores"], json!("6"), "{fake}");
    assert_eq!(
        fake["pending"]["vcpus"],
        Value::Null,
        "vcpus removed: {fake}"
    );
    provider
        .power_off(&vm, &PowerOffOptions::default())
        .await
        .unwrap();
    provider.start(&vm, &Default::default()).await.unwrap();
    let d = provider.describe(&vm).await.unwrap();
    assert_eq!(d.cpu, 6);
    assert!(!d.pending_power_cycle);
    provider
        .power_off(&vm, &PowerOffOptions::default())
        .await
        .unwrap();
    provider.delete(&vm, &Default::default()).await.unwrap();
}

/// Without CPU hot-plug a running VM's CPU change is a consistent sockets/cores pair that
/// waits for the power cycle; describe reports sockets x cores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_changes_keep_sockets_and_cores_consistent() {
    let Some(env) = common::env() else { return };
    let provider = env.provider();
    let vm = env
        .control
        .vm(
            "topology",
            json!({"status": "stopped",
                   "config": {"sockets": 2, "cores": 2, "memory": 1024,
                              "scsi0": "local-lvm:vm-1-disk-0,size=8G"}}),
        )
        .await;
    let caps = provider.vm_capabilities(&vm).await.unwrap();
    assert!(!caps.cpu_hot_add && !caps.memory_hot_add, "{caps:?}");
    assert_eq!(caps.max_live_vcpus, 4);
    assert_eq!(caps.max_live_memory_mib, 1024);
    assert_eq!(provider.describe(&vm).await.unwrap().cpu, 4);
    // Divisible by the sockets: sockets kept.
    provider
        .reconfigure(&vm, &change(Some(8), None, vec![]))
        .await
        .unwrap();
    let fake = env.control.fake_vm(&vm).await;
    assert_eq!(
        (
            text(&fake["config"]["sockets"]),
            text(&fake["config"]["cores"])
        ),
        ("2".into(), "4".into()),
        "{fake}"
    );
    assert_eq!(provider.describe(&vm).await.unwrap().cpu, 8);
    // Not divisible: one socket.
    provider
        .reconfigure(&vm, &change(Some(3), None, vec![]))
        .await
        .unwrap();
    let fake = env.control.fake_vm(&vm).await;
    assert_eq!(
        (
            text(&fake["config"]["sockets"]),
            text(&fake["config"]["cores"])
        ),
        ("1".into(), "3".into()),
        "{fake}"
    );
    assert_eq!(provider.describe(&vm).await.unwrap().cpu, 3);
    provider.delete(&vm, &Default::default()).await.unwrap();
}

/// The create spec's disk names survive create (in the VM's description block): describe
/// reports `root` and `data`, reconfigure grows `data` by that name (online: PVE's resize
/// task), growth only, and a clone keeps the names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_names_from_the_spec_survive_create_and_clone() {
    let Some(env) = common::env() else { return };
    let provider = env.provider();
    let mut spec = VmCreateSpec::new("named-disks", 1, 512);
    spec.disks = vec![
        DiskCreateSpec::new("root", 4),
        DiskCreateSpec::new("data", 10),
    ];
    spec.networks = vec![NetworkCreateSpec::new("vmbr0")];
    spec.power_on = true;
    let vm = provider.create(&spec).await.unwrap();
    let d = provider.describe(&vm).await.unwrap();
    let disks: Vec<(&str, u64)> = d
        .disks
        .iter()
        .map(|x| (x.name.as_str(), x.size_gib))
        .collect();
    assert_eq!(disks, [("root", 4), ("data", 10)]);
    // The seed's patch (`name: data`, a bigger size) plans online and applies by name.
    let orch = Orchestrator::new(Arc::clone(&provider) as Arc<dyn Provider>);
    let grow = ResourceChange::default().disk(DiskChange::new("data", 20, ExpandPolicy::default()));
    let plan = orch
        .plan_reconfigure(&vm, &grow, &ReconfigureOptions::default())
        .await
        .unwrap();
    assert_eq!(plan.mode, PlanMode::Online, "{plan:?}");
    let r = provider
        .reconfigure(&vm, &change(None, None, vec![DiskResize::new("data", 20)]))
        .await
        .unwrap();
    assert!(r.applied_live && !r.needs_power_cycle, "{r:?}");
    let d = provider.describe(&vm).await.unwrap();
    assert_eq!(
        d.disks.iter().find(|x| x.name == "data").unwrap().size_gib,
        20
    );
    let fake = env.control.fake_vm(&vm).await;
    assert!(
        text(&fake["config"]["scsi1"]).contains("size=20G"),
        "{fake}"
    );
    let e = provider
        .reconfigure(&vm, &change(None, None, vec![DiskResize::new("data", 5)]))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidSpec, "{e}");
    let e = provider
        .reconfigure(&vm, &change(None, None, vec![DiskResize::new("logs", 5)]))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    // A snapshot (and its rollback) keeps the names; so does a clone.
    provider
        .snapshotter()
        .unwrap()
        .create_snapshot(&vm, &SnapshotOptions::new("named"))
        .await
        .unwrap();
    provider
        .power_off(&vm, &PowerOffOptions::default())
        .await
        .unwrap();
    let clone = provider
        .cloner()
        .unwrap()
        .clone_vm(&vm, &CloneOptions::new("named-clone"))
        .await
        .unwrap();
    let names: Vec<String> = provider
        .describe(&clone.vm)
        .await
        .unwrap()
        .disks
        .into_iter()
        .map(|x| x.name)
        .collect();
    assert_eq!(names, ["root", "data"]);
    // A bad disk name is refused before anything is made.
    let mut bad = VmCreateSpec::new("bad-disks", 1, 512);
    bad.disks = vec![DiskCreateSpec::new("my data", 4)];
    let e = provider.create(&bad).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidSpec, "{e}");
    assert!(e.message().contains("disks[0].name"), "{e}");
    for v in [&clone.vm, &vm] {
        provider.delete(v, &Default::default()).await.unwrap();
    }
}

fn customization() -> Customization {
    let mut net = NetworkCustomization::default();
    net.name = "primary".into();
    net.ip_address = Some("192.0.2.10/24".into());
    net.gateway = Some("192.0.2.1".into());
    net.dns = vec!["192.0.2.53".into()];
    let mut c = Customization::default();
    c.hostname = Some("web-test".into());
    c.networks = vec![net];
    c
}

/// A full and a linked clone carry the hostname, address, gateway and DNS as PVE's
/// cloud-init options, with a cloud-init drive; user data is refused before anything is made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clones_carry_cloud_init_customization() {
    let Some(env) = common::env() else { return };
    let provider = env.provider();
    let cloner = provider.cloner().unwrap();
    let caps = provider.capabilities();
    assert!(caps.clone_customization && !caps.clone_user_data);
    let plain = env.control.vm("ci-src", json!({"status": "stopped"})).await;
    let tmpl = env.control.template("ci-tmpl").await;
    for (source, linked) in [(&plain, false), (&tmpl, true)] {
        let res = cloner
            .clone_vm(
                source,
                &CloneOptions::new("ci-clone")
                    .linked(linked)
                    .power_on(true)
                    .with_customization(customization()),
            )
            .await
            .unwrap();
        assert!(res.customized && res.linked == linked);
        let fake = env.control.fake_vm(&res.vm).await;
        let cfg = &fake["config"];
        assert_eq!(cfg["name"], json!("web-test"), "{fake}");
        assert_eq!(cfg["ipconfig0"], json!("ip=192.0.2.10/24,gw=192.0.2.1"));
        assert_eq!(cfg["nameserver"], json!("192.0.2.53"));
        assert_eq!(cfg["ide2"], json!("local-lvm:cloudinit"), "{fake}");
        let back = customization_in(cfg).unwrap();
        assert_eq!(back.hostname.as_deref(), Some("web-test"));
        assert_eq!(
            back.networks[0].ip_address.as_deref(),
            Some("192.0.2.10/24")
        );
        assert_eq!(back.networks[0].dns, ["192.0.2.53"]);
        assert_eq!(fake["status"], json!("running"));
        provider
            .power_off(&res.vm, &PowerOffOptions::default())
            .await
            .unwrap();
        provider.delete(&res.vm, &Default::default()).await.unwrap();
    }
    // User data: Unsupported, and no VM was made.
    let mut c = customization();
    c.cloud_init_user_data = Some("#cloud-config\nruncmd: [true]\n".into());
    let e = cloner
        .clone_vm(
            &plain,
            &CloneOptions::new("ci-userdata").with_customization(c),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    assert!(!e.to_string().contains("runcmd"), "{e}");
    // A bad address names its field, also before anything is made.
    let mut c = customization();
    c.networks[0].ip_address = Some("192.0.2.10".into());
    let e = cloner
        .clone_vm(&plain, &CloneOptions::new("ci-bad").with_customization(c))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidSpec, "{e}");
    assert!(
        e.message().contains("customization.networks[0].ipAddress"),
        "{e}"
    );
    let vms = provider.list_vms(&Default::default()).await.unwrap();
    assert!(
        !vms.iter()
            .any(|v| v.name == "ci-userdata" || v.name == "ci-bad"),
        "{vms:?}"
    );
    for v in [&plain, &tmpl] {
        provider.delete(v, &Default::default()).await.unwrap();
    }
}

/// A clone task that fails after the target exists (the launcher's knob: PVE's own cleanup
/// did not run) leaves nothing: the provider removes the half-made VM, and the source is as
/// it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clone_failing_half_way_is_removed() {
    let Some(env) = common::env() else { return };
    let provider = env.provider();
    let src = env
        .control
        .vm("half-src", json!({"status": "stopped"}))
        .await;
    let (_, src_id) = common::split(&src);
    env.control.fail_next_clone(&src).await;
    let since = env.control.requests_total().await;
    let e = provider
        .cloner()
        .unwrap()
        .clone_vm(&src, &CloneOptions::new("half-made"))
        .await
        .unwrap_err();
    assert!(e.message().contains("clone failed"), "{e}");
    assert!(!e.message().contains("left behind"), "{e}");
    let vms = provider.list_vms(&Default::default()).await.unwrap();
    assert!(!vms.iter().any(|v| v.name == "half-made"), "{vms:?}");
    // The launcher left the target; the provider destroyed it itself.
    let sent = env.control.get(&format!("/requests?since={since}")).await;
    let items = sent["items"].as_array().unwrap();
    let clone_call = format!("/qemu/{src_id}/clone");
    let newid = items
        .iter()
        .find(|i| i[1].as_str().is_some_and(|p| p.ends_with(&clone_call)))
        .and_then(|i| i[2].as_str())
        .and_then(|b| b.split('&').find_map(|kv| kv.strip_prefix("newid=")))
        .unwrap()
        .to_owned();
    let destroyed = items.iter().any(|i| {
        i[0] == json!("DELETE")
            && i[1]
                .as_str()
                .is_some_and(|p| p.ends_with(&format!("/qemu/{newid}")))
    });
    assert!(
        destroyed,
        "the provider removed the half-made clone {newid}: {items:?}"
    );
    assert!(
        provider
            .snapshotter()
            .unwrap()
            .list_snapshots(&src)
            .await
            .unwrap()
            .is_empty()
    );
    // The next clone works.
    let ok = provider
        .cloner()
        .unwrap()
        .clone_vm(&src, &CloneOptions::new("half-made"))
        .await
        .unwrap();
    for v in [&ok.vm, &src] {
        provider.delete(v, &Default::default()).await.unwrap();
    }
}
