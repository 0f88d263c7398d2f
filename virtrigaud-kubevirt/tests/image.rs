//! Image import through CDI DataVolumes against the test apiserver (`VIRTRIGAUD_KUBECONFIG`),
//! the test playing CDI (`FakeCdi`, whose importer fetches from a local HTTP server).
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use kube::Client;
use kube::ResourceExt;
use kube::api::Api;
use sha2::{Digest, Sha256};
use virtrigaud_core::model::{Checksum, ImagePhase, VMImage, VMImageSpec};
use virtrigaud_core::orchestration::image::{
    HttpSource, ImagePreparer, ImageSink, ImageTarget, PrepareOptions,
};
use virtrigaud_core::{ErrorKind, Provider};
use virtrigaud_kubevirt::types::DataVolume;
use virtrigaud_kubevirt::{DataVolumeImageSink, IMAGE_SIZE_ANNOTATION, KubeVirtProvider};

use common::*;

struct Env {
    client: Client,
    ns: String,
    provider: KubeVirtProvider,
    cdi: FakeCdi,
}

async fn env(prefix: &str) -> Option<Env> {
    let path = kubeconfig()?;
    let ns = unique_ns(prefix);
    let client = client(&path).await;
    let provider = provider(&path, &ns).await;
    let cdi = FakeCdi::start(client.clone(), &ns);
    Some(Env {
        client,
        ns,
        provider,
        cdi,
    })
}

impl Env {
    fn dvs(&self) -> Api<DataVolume> {
        Api::namespaced(self.client.clone(), &self.ns)
    }
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

fn sha256(data: &[u8]) -> Checksum {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
        .parse()
        .unwrap()
}

fn opts(checksum: Checksum) -> PrepareOptions {
    let mut o = PrepareOptions::default();
    o.checksum = Some(checksum);
    o.timeout = Duration::from_secs(60);
    o.stall_timeout = Duration::from_secs(3);
    o.retries = 1;
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imports_through_a_datavolume_and_looks_it_up() {
    let Some(env) = env("img-ok").await else {
        return;
    };
    assert!(env.provider.capabilities().image_import);
    let data = pattern((1 << 20) + 5);
    let (url, hits) = serve_image(data.clone(), Serve::Whole).await;
    let sink = Arc::new(DataVolumeImageSink::new(&env.provider).with_storage_class("fast"));
    let preparer = ImagePreparer::new(Arc::clone(&sink) as Arc<dyn ImageSink>);
    let mut image = VMImage::new("disk", VMImageSpec::default());
    let target = ImageTarget::new("disk").with_format("raw");
    let source = HttpSource::new(&url).unwrap();
    let report = preparer
        .prepare(&mut image, &target, &source, &opts(sha256(&data)))
        .await
        .unwrap();
    assert!(report.imported);
    assert_eq!(report.attempts, 1);
    assert_eq!(
        image.status.as_ref().and_then(|s| s.phase),
        Some(ImagePhase::Ready)
    );
    let reference = format!("pvc:{}/disk", env.ns);
    assert_eq!(report.image.reference, reference);
    assert_eq!(report.image.size_bytes, data.len() as u64);
    // What was asked of CDI.
    let dv = env.dvs().get("disk").await.unwrap();
    let http = dv.spec.source.as_ref().unwrap().http.as_ref().unwrap();
    assert_eq!(http.url, url);
    assert_eq!(http.checksum, Some(sha256(&data).to_string()));
    let storage = dv.spec.storage.as_ref().unwrap();
    assert_eq!(storage.storage_class_name.as_deref(), Some("fast"));
    assert_eq!(
        storage.resources.as_ref().unwrap()["requests"]["storage"],
        "1Gi"
    );
    assert_eq!(
        dv.annotations()
            .get(IMAGE_SIZE_ANNOTATION)
            .map(String::as_str),
        Some(data.len().to_string().as_str())
    );
    // Fetched once, by CDI (plus the preparer's HEAD for the size).
    assert_eq!(env.cdi.fetches.load(Ordering::SeqCst), 1);
    assert_eq!(hits.load(Ordering::SeqCst), 2);
    let found = sink.lookup(&target).await.unwrap().unwrap();
    assert_eq!(
        (found.reference.as_str(), found.size_bytes),
        (reference.as_str(), data.len() as u64)
    );
    // Present: nothing fetched again.
    let again = preparer
        .prepare(&mut image, &target, &source, &opts(sha256(&data)))
        .await
        .unwrap();
    assert!(!again.imported);
    assert_eq!(hits.load(Ordering::SeqCst), 2);
    sink.remove(&target).await.unwrap();
    assert!(sink.lookup(&target).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_checksum_leaves_no_datavolume() {
    let Some(env) = env("img-badsum").await else {
        return;
    };
    let data = pattern(300_000);
    let (url, _) = serve_image(data, Serve::Whole).await;
    let sink: Arc<dyn ImageSink> = Arc::new(DataVolumeImageSink::new(&env.provider));
    let preparer = ImagePreparer::new(Arc::clone(&sink));
    let mut image = VMImage::new("badsum", VMImageSpec::default());
    let target = ImageTarget::new("badsum");
    let source = HttpSource::new(&url).unwrap();
    let e = preparer
        .prepare(&mut image, &target, &source, &opts(sha256(b"another")))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidSpec);
    assert!(e.message().contains("checksum mismatch"), "{e}");
    assert_eq!(
        image.status.as_ref().and_then(|s| s.phase),
        Some(ImagePhase::Failed)
    );
    assert!(env.dvs().get_opt("badsum").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_errors_through_every_retry_fail_and_leave_nothing() {
    let Some(env) = env("img-503").await else {
        return;
    };
    let (url, _) = serve_image(pattern(1000), Serve::Unavailable).await;
    let sink: Arc<dyn ImageSink> = Arc::new(DataVolumeImageSink::new(&env.provider));
    let preparer = ImagePreparer::new(Arc::clone(&sink));
    let mut image = VMImage::new("flaky", VMImageSpec::default());
    let target = ImageTarget::new("flaky");
    let source = HttpSource::new(&url).unwrap();
    let e = preparer
        .prepare(&mut image, &target, &source, &opts(sha256(b"x")))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    assert!(e.message().contains("got 503"), "{e}");
    // retries: 1 allows 2 attempts; the preparer gives up on seeing the third (the fourth,
    // should a poll miss one).
    let attempts = image.status.as_ref().unwrap().attempts.unwrap();
    assert!((3..=4).contains(&attempts), "{attempts}");
    assert!(env.dvs().get_opt("flaky").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_of_a_missing_image_is_ok_and_streaming_is_unsupported() {
    let Some(env) = env("img-misc").await else {
        return;
    };
    let sink = DataVolumeImageSink::new(&env.provider);
    assert_eq!(sink.namespace(), env.ns);
    let target = ImageTarget::new("never-made");
    sink.remove(&target).await.unwrap();
    assert!(sink.lookup(&target).await.unwrap().is_none());
    let e = match sink.begin(&target, Some(10)).await {
        Ok(_) => panic!("begin must be unsupported"),
        Err(e) => e,
    };
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    assert!(e.message().contains("CDI"), "{e}");
    // A name that is no Kubernetes name is refused before anything is made.
    let e = sink
        .lookup(&ImageTarget::new("Not_A_Name"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidSpec);
    // A DataVolume that is not Succeeded is not an image.
    let dv: DataVolume = serde_json::from_value(serde_json::json!({
        "apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume",
        "metadata": {"name": "half", "namespace": env.ns},
        "spec": {"source": {"http": {"url": "http://127.0.0.1:1/x"}}},
    }))
    .unwrap();
    env.dvs().create(&Default::default(), &dv).await.unwrap();
    // (FakeCdi may start fetching it; the URL refuses connections.)
    assert!(
        sink.lookup(&ImageTarget::new("half"))
            .await
            .unwrap()
            .is_none()
    );
    sink.remove(&ImageTarget::new("half")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_in_the_url_are_refused() {
    let Some(env) = env("img-cred").await else {
        return;
    };
    let sink: Arc<dyn ImageSink> = Arc::new(DataVolumeImageSink::new(&env.provider));
    let preparer = ImagePreparer::new(Arc::clone(&sink));
    let mut image = VMImage::new("cred", VMImageSpec::default());
    let source = HttpSource::new("http://user:s3cret@127.0.0.1:1/x.raw").unwrap();
    let e = preparer
        .prepare(
            &mut image,
            &ImageTarget::new("cred"),
            &source,
            &opts(sha256(b"x")),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidSpec);
    assert!(!e.to_string().contains("s3cret"), "{e}");
    assert!(env.dvs().get_opt("cred").await.unwrap().is_none());
}

/// A CDI older than 1.62 prunes `spec.source.http.checksum` (its CRD schema has no such
/// field): the sink sees the created object without it, deletes that DataVolume (by UID) and
/// refuses, naming `validateChecksum`, rather than import unverified. Against kube's
/// scripted tower-test service.
#[tokio::test]
async fn a_cdi_that_drops_the_checksum_is_refused_and_its_datavolume_deleted() {
    use http::{Method, Request, Response};
    use kube::client::Body;
    use serde_json::{Value, json};

    let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(svc, "images");
    let provider = KubeVirtProvider::with_client(client, Default::default());
    let server = tokio::spawn(async move {
        let mut seen: Vec<(Method, String, Value)> = Vec::new();
        while let Some((req, send)) = handle.next_request().await {
            let method = req.method().clone();
            let uri = req.uri().to_string();
            let body = req.into_body().collect_bytes().await.unwrap();
            let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let (code, out) = match method {
                Method::GET => (
                    404,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"}),
                ),
                Method::POST => {
                    let mut created = body.clone();
                    created["spec"]["source"]["http"]
                        .as_object_mut()
                        .unwrap()
                        .remove("checksum");
                    created["metadata"]["uid"] = json!("uid-1");
                    (201, created)
                }
                _ => (
                    200,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
                ),
            };
            seen.push((method, uri, body));
            send.send_response(
                Response::builder()
                    .status(code)
                    .body(Body::from(serde_json::to_vec(&out).unwrap()))
                    .unwrap(),
            );
        }
        seen
    });
    let sink: Arc<dyn ImageSink> = Arc::new(DataVolumeImageSink::new(&provider));
    let preparer = ImagePreparer::new(Arc::clone(&sink));
    let mut image = VMImage::new("old", VMImageSpec::default());
    let source = HttpSource::new("http://127.0.0.1:1/old.raw").unwrap();
    let e = preparer
        .prepare(
            &mut image,
            &ImageTarget::new("old"),
            &source,
            &opts(sha256(b"x")),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    assert!(e.message().contains("validateChecksum"), "{e}");
    assert!(e.message().contains("1.62"), "{e}");
    drop((preparer, sink, provider));
    let seen = server.await.unwrap();
    let methods: Vec<&Method> = seen.iter().map(|(m, _, _)| m).collect();
    assert_eq!(methods, [&Method::GET, &Method::POST, &Method::DELETE]);
    let (_, uri, body) = &seen[2];
    assert!(
        uri.trim_end_matches('?')
            .ends_with("/namespaces/images/datavolumes/old"),
        "{uri}"
    );
    assert_eq!(body["preconditions"]["uid"], "uid-1", "{body}");
    let posted = &seen[1].2;
    assert_eq!(
        posted["metadata"]["annotations"]["cdi.kubevirt.io/storage.bind.immediate.requested"],
        "true"
    );
    assert_eq!(
        posted["spec"]["storage"]["resources"]["requests"]["storage"],
        "10Gi"
    );
}
