//! Creating from a template on fakepve: a create spec whose `image` is a template's
//! `node/vmid` is a full clone of it onto the placement's node, with the spec's cores,
//! memory and labels (read back from the clone's config); a plain VM is no image.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use serde_json::json;
use virtrigaud_core::{
    DeleteOptions, DiskCreateSpec, ErrorKind, ListOptions, Placement, Provider, VmCreateSpec,
};

#[tokio::test]
async fn a_vm_is_a_full_clone_of_its_template_with_the_specs_size_and_labels() {
    let Some(env) = common::env() else { return };
    let provider = env.provider();
    let tmpl = env.control.template("vr-from-tmpl").await;
    let name = format!("vr-member-{}", std::process::id());
    let mut spec = VmCreateSpec::new(name.clone(), 2, 1024);
    spec.image = Some(tmpl.as_str().to_owned());
    spec.labels
        .insert("virtrigaud.io/set".into(), "from-template".into());
    spec.placement = Placement::on_host("pve1").with_datastore("local-lvm@pve1");
    let vm = provider
        .create(&spec)
        .await
        .expect("create from the template");
    assert!(vm.as_str().starts_with("pve1/"), "{vm}");
    assert_ne!(vm, tmpl);
    let fake = env.control.fake_vm(&vm).await;
    let cfg = &fake["config"];
    assert_eq!(cfg["name"], json!(name), "{fake}");
    assert_eq!(cfg["cores"].to_string().trim_matches('"'), "2", "{fake}");
    assert_eq!(
        cfg["memory"].to_string().trim_matches('"'),
        "1024",
        "{fake}"
    );
    assert!(
        cfg["scsi0"].as_str().unwrap_or("").contains("local-lvm:"),
        "the template's disk, copied: {fake}"
    );
    assert_ne!(cfg["template"].to_string().trim_matches('"'), "1", "{fake}");
    let mut opts = ListOptions::default();
    opts.labels
        .insert("virtrigaud.io/set".into(), "from-template".into());
    let listed = provider.list_vms(&opts).await.unwrap();
    assert_eq!(listed.iter().map(|v| &v.id).collect::<Vec<_>>(), [&vm]);

    // The template's disks are the VM's; a plain VM is no image.
    let mut disks = VmCreateSpec::new(format!("{name}-d"), 1, 512);
    disks.image = Some(tmpl.as_str().to_owned());
    disks.disks.push(DiskCreateSpec::new("root", 1));
    let e = provider
        .create(&disks)
        .await
        .expect_err("disks with a template");
    assert_eq!(e.kind(), ErrorKind::InvalidSpec);
    assert!(e.to_string().contains("disks:"), "{e}");
    let mut plain = VmCreateSpec::new(format!("{name}-p"), 1, 512);
    plain.image = Some(vm.as_str().to_owned());
    let e = provider.create(&plain).await.expect_err("a VM as image");
    assert!(e.to_string().contains("is a VM, not a template"), "{e}");

    let mut del = DeleteOptions::default();
    del.delete_disks = true;
    provider.delete(&vm, &del).await.expect("delete");
    provider
        .delete(&tmpl, &del)
        .await
        .expect("delete the template");
}
