//! Image preparation handed to Proxmox VE: the core `ImagePreparer` downloads and verifies an
//! image from a local HTTP server, then `PveImageSink` uploads it into a fakepve storage.
//!
//! Every test works on a storage of its own (a `dir` storage created for it through the PVE
//! API, removed at the end), so faults injected on its upload path touch no other test.
//! What reached the storage is read from fakepve with a plain HTTP client, not through the
//! crate.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use virtrigaud_core::model::{Checksum, VMImage, VMImageSpec};
use virtrigaud_core::orchestration::image::{
    HttpSource, ImagePreparer, ImageSink, ImageTarget, PrepareOptions,
};
use virtrigaud_core::{ErrorKind, Provider};
use virtrigaud_proxmox::{
    ApiRequest, Method, ProxmoxProvider, PveClient, PveContent, PveImageSink,
};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// A deterministic image of `len` bytes.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

fn checksum(data: &[u8]) -> Checksum {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
        .parse()
        .unwrap()
}

/// A local HTTP server serving `data` at `/image.iso`.
async fn source(data: &[u8]) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/image.iso"))
        .respond_with(ResponseTemplate::new(200).set_body_bytes(data.to_vec()))
        .mount(&server)
        .await;
    server
}

fn options(data: &[u8]) -> PrepareOptions {
    let mut opts = PrepareOptions::default();
    opts.checksum = Some(checksum(data));
    opts.retries = 0;
    opts.timeout = Duration::from_secs(60);
    opts
}

/// A `dir` storage for one test, created through the PVE API.
struct Storage {
    id: String,
    client: PveClient,
    env: common::Env,
}

impl Storage {
    async fn new(env: &common::Env, tag: &str) -> Storage {
        let id = format!("vrimg-{}-{tag}", std::process::id());
        let client = env.client();
        let req = ApiRequest::new(Method::Post, "/storage")
            .param("storage", &id)
            .param("type", "dir")
            .param("path", format!("/mnt/{id}"))
            .param("content", "iso");
        client.send(&req).await.expect("create storage");
        Storage {
            id,
            client,
            env: env.clone(),
        }
    }

    /// The storage's content, read with a plain HTTP client: (volid, size).
    async fn content(&self) -> Vec<(String, u64)> {
        let http = reqwest::Client::builder()
            .tls_certs_only(reqwest::Certificate::from_pem_bundle(&self.env.ca_pem).unwrap())
            .build()
            .unwrap();
        let url = format!(
            "{}/api2/json/nodes/pve1/storage/{}/content",
            self.env.url, self.id
        );
        let v: Value = http
            .get(url)
            .header(
                "Authorization",
                format!(
                    "PVEAPIToken={}={}",
                    self.env.token_id, self.env.token_secret
                ),
            )
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["data"]
            .as_array()
            .unwrap_or_else(|| panic!("content listing: {v}"))
            .iter()
            .map(|e| {
                (
                    e["volid"].as_str().unwrap_or_default().to_owned(),
                    e["size"].as_u64().unwrap_or(0),
                )
            })
            .collect()
    }

    /// How many upload requests reached this storage since `since` (fakepve's request log).
    async fn uploads_since(&self, since: u64) -> usize {
        let log = self
            .env
            .control
            .get(&format!("/requests?since={since}"))
            .await;
        let suffix = format!("/storage/{}/upload", self.id);
        log["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i[0] == "POST" && i[1].as_str().unwrap_or("").ends_with(&suffix))
            .count()
    }

    async fn remove(self) {
        let req =
            ApiRequest::new(Method::Delete, "/storage/{storage}").path_param("storage", &self.id);
        self.client.send(&req).await.expect("remove storage");
    }
}

fn sink(
    provider: &ProxmoxProvider,
    storage: &Storage,
    staging: &std::path::Path,
) -> Arc<PveImageSink> {
    Arc::new(PveImageSink::new(
        provider,
        "pve1",
        &storage.id,
        PveContent::Iso,
        staging,
    ))
}

fn staged(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[tokio::test]
async fn an_image_is_imported_once_and_found_afterwards() {
    let Some(env) = common::env() else { return };
    let storage = Storage::new(&env, "import").await;
    let staging = tempfile::tempdir().unwrap();
    let provider = env.provider();
    assert!(provider.capabilities().image_import);
    let sink = sink(&provider, &storage, staging.path());
    let data = pattern(3 * 1024 * 1024 + 17);
    let server = source(&data).await;
    let src = HttpSource::new(&format!("{}/image.iso", server.uri())).unwrap();
    let preparer = ImagePreparer::new(Arc::clone(&sink) as Arc<dyn ImageSink>);
    let target = ImageTarget::new("base-image.iso");
    let opts = options(&data);
    let since = env.control.requests_total().await;

    let mut image = VMImage::new("base-image", VMImageSpec::default());
    let report = preparer
        .prepare(&mut image, &target, &src, &opts)
        .await
        .unwrap();
    let volid = format!("{}:iso/base-image.iso", storage.id);
    assert!(report.imported);
    assert_eq!(report.image.reference, volid);
    assert_eq!(report.image.size_bytes, data.len() as u64);
    assert_eq!(
        storage.content().await,
        vec![(volid.clone(), data.len() as u64)],
        "fakepve holds the volume with the image's size"
    );
    assert!(staged(staging.path()).is_empty(), "staging is emptied");
    assert_eq!(storage.uploads_since(since).await, 1);

    // A second preparation finds it, downloads and uploads nothing.
    let downloads = server.received_requests().await.unwrap().len();
    let mut again = VMImage::new("base-image", VMImageSpec::default());
    let report = preparer
        .prepare(&mut again, &target, &src, &opts)
        .await
        .unwrap();
    assert!(!report.imported);
    assert_eq!(report.image.reference, volid);
    assert_eq!(report.image.size_bytes, data.len() as u64);
    assert_eq!(server.received_requests().await.unwrap().len(), downloads);
    assert_eq!(storage.uploads_since(since).await, 1, "no second upload");

    sink.remove(&target).await.unwrap();
    assert!(storage.content().await.is_empty());
    assert!(sink.lookup(&target).await.unwrap().is_none());
    storage.remove().await;
}

#[tokio::test]
async fn a_checksum_mismatch_leaves_nothing_behind() {
    let Some(env) = common::env() else { return };
    let storage = Storage::new(&env, "mismatch").await;
    let staging = tempfile::tempdir().unwrap();
    let provider = env.provider();
    let sink = sink(&provider, &storage, staging.path());
    let data = pattern(512 * 1024);
    let server = source(&data).await;
    let src = HttpSource::new(&format!("{}/image.iso", server.uri())).unwrap();
    let preparer = ImagePreparer::new(Arc::clone(&sink) as Arc<dyn ImageSink>);
    let opts = options(b"something else");
    let since = env.control.requests_total().await;

    let mut image = VMImage::new("bad", VMImageSpec::default());
    let err = preparer
        .prepare(&mut image, &ImageTarget::new("bad.iso"), &src, &opts)
        .await
        .unwrap_err();
    assert!(err.message().contains("checksum"), "{err}");
    assert!(storage.content().await.is_empty(), "nothing on the storage");
    assert!(staged(staging.path()).is_empty(), "nothing staged");
    assert_eq!(
        storage.uploads_since(since).await,
        0,
        "nothing was uploaded"
    );
    storage.remove().await;
}

#[tokio::test]
async fn a_refused_upload_leaves_nothing_behind() {
    let Some(env) = common::env() else { return };
    let storage = Storage::new(&env, "refused").await;
    let staging = tempfile::tempdir().unwrap();
    let provider = env.provider();
    let sink = sink(&provider, &storage, staging.path());
    let data = pattern(256 * 1024 + 3);
    let server = source(&data).await;
    let src = HttpSource::new(&format!("{}/image.iso", server.uri())).unwrap();
    let preparer = ImagePreparer::new(Arc::clone(&sink) as Arc<dyn ImageSink>);
    let suffix = format!("/storage/{}/upload", storage.id);
    env.control
        .fault(
            "POST",
            &suffix,
            json!({"status": 500, "message": "unable to write to storage: injected"}),
        )
        .await;

    let mut image = VMImage::new("refused", VMImageSpec::default());
    let res = preparer
        .prepare(
            &mut image,
            &ImageTarget::new("refused.iso"),
            &src,
            &options(&data),
        )
        .await;
    env.control.unfault("POST", &suffix).await;
    let err = res.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Internal, "{err}");
    assert!(err.message().contains("injected"), "{err}");
    assert_eq!(err.provider(), "proxmox", "{err:?}");
    assert!(storage.content().await.is_empty(), "nothing on the storage");
    assert!(staged(staging.path()).is_empty(), "nothing staged");
    storage.remove().await;
}

/// The upload reaches the storage but waiting for its task fails: the volume is deleted.
/// Uses ticket auth (so the upload also carries the CSRF token), which makes the upload
/// task's UPID end in `:imgcopy::root@pam:` — a suffix only this test's status polls have.
#[tokio::test]
async fn a_failed_upload_task_deletes_the_volume() {
    let Some(env) = common::env() else { return };
    let storage = Storage::new(&env, "task").await;
    let staging = tempfile::tempdir().unwrap();
    let client = PveClient::new(env.password_config()).unwrap();
    let provider = ProxmoxProvider::new(client);
    let sink = sink(&provider, &storage, staging.path());
    let data = pattern(128 * 1024);
    let server = source(&data).await;
    let src = HttpSource::new(&format!("{}/image.iso", server.uri())).unwrap();
    let preparer = ImagePreparer::new(Arc::clone(&sink) as Arc<dyn ImageSink>);
    let suffix = format!(":imgcopy::{}:/status", env.user);
    env.control
        .fault(
            "GET",
            &suffix,
            json!({"status": 500, "message": "task status exploded (injected)", "times": 1}),
        )
        .await;
    let since = env.control.requests_total().await;

    let mut image = VMImage::new("task", VMImageSpec::default());
    let res = preparer
        .prepare(
            &mut image,
            &ImageTarget::new("task.iso"),
            &src,
            &options(&data),
        )
        .await;
    env.control.unfault("GET", &suffix).await;
    let err = res.unwrap_err();
    assert!(err.message().contains("exploded"), "{err}");
    assert_eq!(storage.uploads_since(since).await, 1, "the upload was sent");
    assert!(
        storage.content().await.is_empty(),
        "the uploaded volume was removed"
    );
    assert!(staged(staging.path()).is_empty(), "nothing staged");
    storage.remove().await;
}

#[tokio::test]
async fn bad_names_are_refused_before_any_download() {
    let Some(env) = common::env() else { return };
    let staging = tempfile::tempdir().unwrap();
    let provider = env.provider();
    let sink = PveImageSink::new(&provider, "pve1", "local", PveContent::Iso, staging.path());
    let data = pattern(1024);
    let server = source(&data).await;
    let src = HttpSource::new(&format!("{}/image.iso", server.uri())).unwrap();
    let sink: Arc<dyn ImageSink> = Arc::new(sink);
    let preparer = ImagePreparer::new(Arc::clone(&sink));
    for name in ["base image.iso", "../x.iso", "a\"b", ""] {
        let mut image = VMImage::new("bad-name", VMImageSpec::default());
        let err = preparer
            .prepare(&mut image, &ImageTarget::new(name), &src, &options(&data))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidSpec, "{name:?}: {err}");
        assert!(err.message().contains("`name`"), "{name:?}: {err}");
    }
    let mut t = ImageTarget::new("ok.iso");
    t.storage = Some("not/a/storage".into());
    let err = sink.lookup(&t).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidSpec);
    assert!(err.message().contains("`storage`"), "{err}");
    assert!(server.received_requests().await.unwrap().is_empty());
    assert!(staged(staging.path()).is_empty());
}

/// The config of `vm` (`node/vmid`), read through the API.
async fn vm_config(client: &PveClient, vm: &str) -> Value {
    let (node, vmid) = vm.split_once('/').unwrap();
    let req = ApiRequest::new(Method::Get, "/nodes/{node}/qemu/{vmid}/config")
        .path_param("node", node)
        .path_param("vmid", vmid);
    client.send(&req).await.expect("config")
}

#[tokio::test]
async fn a_vm_is_created_from_a_prepared_iso_booted_first() {
    use virtrigaud_core::{DeleteOptions, DiskCreateSpec, VmCreateSpec};
    let Some(env) = common::env() else { return };
    let storage = Storage::new(&env, "boot").await;
    let staging = tempfile::tempdir().unwrap();
    let provider = env.provider();
    let sink = sink(&provider, &storage, staging.path());
    let data = pattern(1024 * 1024 + 3);
    let server = source(&data).await;
    let src = HttpSource::new(&format!("{}/image.iso", server.uri())).unwrap();
    let preparer = ImagePreparer::new(Arc::clone(&sink) as Arc<dyn ImageSink>);
    let target = ImageTarget::new("boot-image.iso");
    let mut image = VMImage::new("boot-image", VMImageSpec::default());
    preparer
        .prepare(&mut image, &target, &src, &options(&data))
        .await
        .unwrap();
    let stored = image.status.as_ref().unwrap().stored.clone().unwrap();
    assert_eq!(stored.provider, "proxmox");
    let volid = stored.reference;

    let name = format!("vrimg-boot-{}", std::process::id());
    let mut spec = VmCreateSpec::new(name, 1, 256);
    spec.image = Some(volid.clone());
    spec.disks.push(DiskCreateSpec::new("root", 2));
    let vm = provider.create(&spec).await.expect("create from the ISO");
    let cfg = vm_config(&env.client(), vm.as_str()).await;
    let cdrom = cfg["ide2"].as_str().unwrap_or("");
    assert!(cdrom.starts_with(&format!("{volid},media=cdrom")), "{cfg}");
    assert!(
        cfg["boot"].as_str().unwrap_or("").starts_with("order=ide2"),
        "{cfg}"
    );
    assert!(
        cfg["scsi0"].as_str().unwrap_or("").ends_with("size=2G"),
        "the blank disk: {cfg}"
    );
    let mut del = DeleteOptions::default();
    del.delete_disks = true;
    provider.delete(&vm, &del).await.expect("delete");

    // What is no VM image is refused before anything is made, naming the field.
    for bad in ["local:vztmpl/debian.tar.zst", "no-storage.iso"] {
        let mut spec = VmCreateSpec::new(format!("vrimg-bad-{}", std::process::id()), 1, 256);
        spec.image = Some(bad.into());
        let e = provider.create(&spec).await.expect_err(bad);
        assert_eq!(e.kind(), ErrorKind::InvalidSpec);
        assert!(e.to_string().contains("image:"), "{e}");
    }
    sink.remove(&target).await.unwrap();
    storage.remove().await;
}
