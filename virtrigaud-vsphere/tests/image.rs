//! OVA imports into vcsim through `VsphereImageSink`: the core `ImagePreparer` downloads and
//! verifies an OVA from a local HTTP server, the sink imports it (CreateImportSpec,
//! ImportVApp, the NFC lease) as a template. What the import left is read back with a raw
//! second session where it matters, not only through the crate.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use virtrigaud_core::model::{Checksum, VMImage, VMImageSpec};
use virtrigaud_core::orchestration::image::{
    HttpSource, ImagePreparer, ImageSink, ImageTarget, PrepareOptions,
};
use virtrigaud_core::{ErrorKind, Provider};
use virtrigaud_vsphere::{VsphereImageSink, VsphereProvider};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use common::ova::{descriptor, ova, pattern, tar};
use common::{RawSession, provider};

fn sha256(data: &[u8]) -> String {
    format!("{:x}", Sha256::digest(data))
}

/// A local HTTP server serving `data` at `/image.ova`.
async fn serve(data: &[u8]) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/image.ova"))
        .respond_with(ResponseTemplate::new(200).set_body_bytes(data.to_vec()))
        .mount(&server)
        .await;
    server
}

fn options(data: &[u8]) -> PrepareOptions {
    let mut opts = PrepareOptions::default();
    opts.checksum = Some(
        format!("sha256:{}", sha256(data))
            .parse::<Checksum>()
            .unwrap(),
    );
    opts.retries = 0;
    opts.timeout = Duration::from_secs(120);
    opts
}

fn image(name: &str) -> VMImage {
    VMImage::new(name, VMImageSpec::default())
}

fn name(tag: &str) -> String {
    format!("vrimg-{}-{tag}", std::process::id())
}

/// The sink of these tests: vcsim's LocalDS_0 and DC0's root VM folder, staging in a
/// directory of this test.
fn sink(p: &VsphereProvider, tag: &str) -> VsphereImageSink {
    let dir = std::env::temp_dir().join(format!("vrimg-vsphere-{}-{tag}", std::process::id()));
    VsphereImageSink::new(p, dir)
        .with_datastore("LocalDS_0")
        .with_folder("DC0/vm")
}

/// Prepares `data` served over HTTP as the image `name` into `sink`.
async fn prepare(
    sink: &VsphereImageSink,
    target: &ImageTarget,
    data: &[u8],
) -> (
    virtrigaud_core::Result<virtrigaud_core::orchestration::image::PrepareReport>,
    MockServer,
) {
    let server = serve(data).await;
    let source = HttpSource::new(&format!("{}/image.ova", server.uri())).unwrap();
    let preparer = ImagePreparer::new(Arc::new(sink.clone()));
    let mut img = image(&target.name);
    let r = preparer
        .prepare(&mut img, target, &source, &options(data))
        .await;
    (r, server)
}

/// `config.template` and the extraConfig of `vm`, read with a raw session.
async fn raw_props(vm: &str) -> String {
    RawSession::login()
        .await
        .call(&format!(
            r#"<RetrievePropertiesEx xmlns="urn:vim25"><_this type="PropertyCollector">propertyCollector</_this><specSet><propSet><type>VirtualMachine</type><pathSet>config.template</pathSet><pathSet>config.extraConfig</pathSet><pathSet>name</pathSet></propSet><objectSet><obj type="VirtualMachine">{vm}</obj></objectSet></specSet><options/></RetrievePropertiesEx>"#
        ))
        .await
}

async fn no_vm_named(p: &VsphereProvider, n: &str) {
    assert_eq!(
        p.find_vm_by_name(n).await.expect_err("no VM").kind(),
        ErrorKind::NotFound,
        "a VM named {n} was left behind"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ova_becomes_a_template_and_a_second_prepare_does_not_download() {
    let Some(p) = provider().await else { return };
    let sink = sink(&p, "ok");
    let target = ImageTarget::new(name("ok")).with_format("ova");
    let _ = sink.remove(&target).await;
    let data = ova((1 << 20) + 3);
    let (report, server) = prepare(&sink, &target, &data).await;
    let report = report.expect("prepare");
    assert!(report.imported);
    assert_eq!(report.image.size_bytes, data.len() as u64);
    let vm = report.image.reference.clone();
    assert!(vm.starts_with("vm-"), "{vm}");
    let found = sink.lookup(&target).await.expect("lookup").expect("found");
    assert_eq!(
        (found.reference.as_str(), found.size_bytes),
        (vm.as_str(), data.len() as u64)
    );

    // vcsim holds a template of that name with the OVA's size and digest.
    let raw = raw_props(&vm).await;
    assert!(raw.contains(&target.name), "{raw}");
    assert!(raw.contains(">true<"), "not a template: {raw}");
    assert!(
        raw.contains("virtrigaud.image.size") && raw.contains(&data.len().to_string()),
        "{raw}"
    );
    assert!(raw.contains(&sha256(&data)), "{raw}");
    assert_eq!(
        p.find_vm_by_name(&target.name)
            .await
            .expect("by name")
            .as_str(),
        vm
    );

    // A second preparation finds it and downloads nothing.
    let hits = server.received_requests().await.unwrap().len();
    let preparer = ImagePreparer::new(Arc::new(sink.clone()));
    let source = HttpSource::new(&format!("{}/image.ova", server.uri())).unwrap();
    let again = preparer
        .prepare(&mut image(&target.name), &target, &source, &options(&data))
        .await
        .expect("prepare again");
    assert!(!again.imported);
    assert_eq!(again.image.size_bytes, data.len() as u64);
    assert_eq!(server.received_requests().await.unwrap().len(), hits);

    sink.remove(&target).await.expect("remove");
    assert!(sink.lookup(&target).await.expect("lookup").is_none());
    no_vm_named(&p, &target.name).await;
    sink.remove(&target).await.expect("remove again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_ovas_are_invalid_spec_and_leave_no_vm() {
    let Some(p) = provider().await else { return };
    let sink = sink(&p, "bad");
    let disk = pattern(4096);
    let no_system = r#"<?xml version="1.0"?><Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1"><References/></Envelope>"#;
    // vcsim refuses this device type in CreateImportSpec's `error` (OvfUnsupportedType).
    let odd_device = descriptor(
        disk.len(),
        "<Item><rasd:InstanceID>9</rasd:InstanceID><rasd:ResourceType>99</rasd:ResourceType></Item>",
    );
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("notar", pattern(5000), "tar"),
        (
            "nosys",
            tar(&[("t.ovf", no_system.as_bytes()), ("disk.vmdk", &disk)]),
            "VirtualSystem",
        ),
        (
            "nodisk",
            tar(&[("t.ovf", descriptor(disk.len(), "").as_bytes())]),
            "not in the archive",
        ),
        (
            "diskfirst",
            tar(&[
                ("disk.vmdk", &disk),
                ("t.ovf", descriptor(disk.len(), "").as_bytes()),
            ]),
            "first entry",
        ),
        (
            "oddhw",
            tar(&[("t.ovf", odd_device.as_bytes()), ("disk.vmdk", &disk)]),
            "cannot be imported",
        ),
    ];
    for (tag, data, says) in cases {
        let target = ImageTarget::new(name(tag));
        let (res, _server) = prepare(&sink, &target, &data).await;
        let err = res.expect_err(tag);
        assert_eq!(err.kind(), ErrorKind::InvalidSpec, "{tag}: {err}");
        assert!(err.message().contains(says), "{tag}: {err}");
        if tag != "notar" {
            assert!(
                err.message().contains("ovfDescriptor") || tag == "diskfirst",
                "{tag}: {err}"
            );
        }
        assert!(
            sink.lookup(&target).await.expect("lookup").is_none(),
            "{tag}"
        );
        no_vm_named(&p, &target.name).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_storage_is_not_found_naming_it_before_any_download() {
    let Some(p) = provider().await else { return };
    let data = ova(1024);
    // The sink's own datastore.
    let s = sink(&p, "nods").with_datastore("no-such-datastore");
    let target = ImageTarget::new(name("nods"));
    let (res, server) = prepare(&s, &target, &data).await;
    let err = res.expect_err("missing datastore");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(
        err.message().contains("no-such-datastore") && err.message().contains("`datastore`"),
        "{err}"
    );
    assert_eq!(server.received_requests().await.unwrap().len(), 0);
    // The target's storage (the seed's `images-datastore`, folder `/Templates`), without
    // overrides: the folder is looked up first.
    let dir = std::env::temp_dir().join(format!("vrimg-vsphere-{}-seed", std::process::id()));
    let plain = VsphereImageSink::new(&p, dir);
    let target = ImageTarget::new(name("seed")).with_storage("images-datastore/Templates");
    let (res, _server) = prepare(&plain, &target, &data).await;
    let err = res.expect_err("missing folder");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(
        err.message().contains("Templates") && err.message().contains("`storage`"),
        "{err}"
    );
    let target = ImageTarget::new(name("seed")).with_storage("images-datastore");
    let (res, _server) = prepare(&plain, &target, &data).await;
    let err = res.expect_err("missing datastore");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(
        err.message().contains("images-datastore") && err.message().contains("`storage`"),
        "{err}"
    );
    // A folder override that is not there.
    let s = sink(&p, "nofolder").with_folder("DC0/vm/no-such-folder");
    let err = s
        .lookup(&ImageTarget::new(name("nofolder")))
        .await
        .expect_err("folder");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(err.message().contains("`folder`"), "{err}");
}

#[tokio::test]
async fn removing_a_missing_image_is_ok_and_a_plain_vm_is_not_an_image() {
    let Some(p) = provider().await else { return };
    let s = sink(&p, "rm");
    s.remove(&ImageTarget::new(name("never-made")))
        .await
        .expect("remove");
    // DC0_H0_VM0 is a VM in DC0/vm, not a template: not an image, never removed.
    let vm = ImageTarget::new("DC0_H0_VM0");
    assert!(s.lookup(&vm).await.expect("lookup").is_none());
    let err = s.remove(&vm).await.expect_err("a VM");
    assert_eq!(err.kind(), ErrorKind::InvalidState, "{err}");
    p.find_vm_by_name("DC0_H0_VM0").await.expect("still there");
    let err = s.lookup(&ImageTarget::new("a/b")).await.expect_err("name");
    assert_eq!(err.kind(), ErrorKind::InvalidSpec);
    assert_eq!(s.provider_type(), p.provider_type());
}

/// A failure after `ImportVApp` (here the upload deadline, zero) aborts the lease and
/// destroys the VM the lease made; the staged OVA is gone too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_upload_destroys_the_half_made_vm() {
    let Some(p) = provider().await else { return };
    let dir = std::env::temp_dir().join(format!("vrimg-vsphere-{}-late", std::process::id()));
    let s = VsphereImageSink::new(&p, &dir)
        .with_datastore("LocalDS_0")
        .with_folder("DC0/vm")
        .with_timeouts(Duration::from_secs(30), Duration::ZERO);
    let target = ImageTarget::new(name("late"));
    let data = ova(256 << 10);
    let (res, _server) = prepare(&s, &target, &data).await;
    let err = res.expect_err("zero upload deadline");
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(err.message().contains("half-made VM"), "{err}");
    assert!(err.message().contains("was deleted"), "{err}");
    assert!(
        !err.to_string().contains("/nfc/"),
        "lease URL in the error: {err}"
    );
    no_vm_named(&p, &target.name).await;
    assert!(s.lookup(&target).await.expect("lookup").is_none());
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert!(left.is_empty(), "staged files left: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_is_created_from_an_imported_template_with_the_specs_size_labels_and_placement() {
    use virtrigaud_core::{DeleteOptions, DiskCreateSpec, Placement, PowerState, VmCreateSpec};
    let Some(p) = provider().await else { return };
    let sink = sink(&p, "tmpl");
    let target = ImageTarget::new(name("tmpl")).with_format("ova");
    let _ = sink.remove(&target).await;
    let data = ova((1 << 20) + 5);
    let (report, _server) = prepare(&sink, &target, &data).await;
    let template = report.expect("prepare").image.reference;
    let member = name("member");
    if let Ok(old) = p.find_vm_by_name(&member).await {
        let mut d = DeleteOptions::default();
        d.delete_disks = true;
        let _ = p.power_off(&old, &Default::default()).await;
        let _ = p.delete(&old, &d).await;
    }

    let mut spec = VmCreateSpec::new(member.clone(), 2, 256);
    spec.image = Some(template.clone());
    spec.labels
        .insert("virtrigaud.io/set".into(), "from-image".into());
    spec.placement = Placement::on_host("DC0_C0_H1").with_datastore("LocalDS_0");
    spec.power_on = true;
    let vm = p.create(&spec).await.expect("create from the template");
    let d = p.describe(&vm).await.expect("describe");
    assert_eq!((d.cpu, d.memory_mib), (2, 256));
    assert_eq!(d.power_state, PowerState::Running);
    assert_eq!(
        d.labels.get("virtrigaud.io/set").map(String::as_str),
        Some("from-image")
    );
    assert!(!d.disks.is_empty(), "the template's disk: {:?}", d.disks);
    let raw = raw_props(vm.as_str()).await;
    assert!(raw.contains(">false<"), "the member is a template: {raw}");
    let inv = p.inventory().await.expect("inventory");
    let host = inv
        .hosts
        .iter()
        .find(|h| h.name == "DC0_C0_H1")
        .expect("host");
    assert!(host.vms.contains(&member), "{:?}", host.vms);

    // The template's disks and adapters are the member's: asking for others is refused.
    let mut other = VmCreateSpec::new(name("member-disk"), 1, 128);
    other.image = Some(template.clone());
    other.disks.push(DiskCreateSpec::new("root", 1));
    let e = p.create(&other).await.expect_err("disks with a template");
    assert_eq!(e.kind(), ErrorKind::InvalidSpec);
    assert!(e.to_string().contains("disks:"), "{e}");
    // A plain VM is not an image.
    let mut plain = VmCreateSpec::new(name("member-plain"), 1, 128);
    plain.image = Some(vm.as_str().to_owned());
    let e = p.create(&plain).await.expect_err("a VM as image");
    assert!(e.to_string().contains("is a VM, not a template"), "{e}");

    let _ = p.power_off(&vm, &Default::default()).await;
    let mut del = DeleteOptions::default();
    del.delete_disks = true;
    p.delete(&vm, &del).await.expect("delete member");
    sink.remove(&target).await.expect("remove image");
}
