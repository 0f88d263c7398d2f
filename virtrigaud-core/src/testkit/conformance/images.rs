//! The image check: seed 003's own `VMImage`, pointed at a local HTTP server, prepared into
//! the provider's storage through its [`ImageSink`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use super::{CheckOutcome, Fixture};
use crate::model::{Checksum, ImagePhase, VMImage, from_yaml_str};
use crate::orchestration::image::{
    HttpSource, ImagePreparer, ImageSink, ImageTarget, PrepareOptions,
};
use crate::provider::Provider;

/// Seed 003's `VMImage` (vSphere and libvirt sources, `prepare` with `onMissing: Import`,
/// `validateChecksum`, `timeout: 30m`, `retries: 3`).
const SEED_IMAGE: &str = include_str!("../../../tests/fixtures/seeds/003_10_vmimage.yaml");

/// The served image: 2 MiB and a few bytes of a fixed pattern.
const IMAGE_LEN: usize = (2 << 20) + 17;

/// How the local server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Serve {
    /// The image, whole.
    Whole,
    /// `503 Service Unavailable`, every time.
    Unavailable,
    /// Half the image, then nothing more (the connection stays open).
    Stall,
}

/// The seed's VMImage, its source URL and checksum pointed at a local HTTP server serving a
/// small raw image, is prepared into the provider's storage with the seed's `prepare`
/// options: it becomes `Ready`, the sink finds it with the served size, and a second
/// preparation finds it without downloading again. A checksum mismatch, a server answering
/// 503 through every retry, and a transfer that stalls each fail cleanly, leaving nothing in
/// the provider's storage. Skipped where `image_import` is declared false; a provider that
/// declares it needs a fixture with an [`ImageSink`] ([`Fixture::image_sink`]).
pub async fn image_import_from_the_seed(
    provider: &Arc<dyn Provider>,
    fixture: &dyn Fixture,
) -> CheckOutcome {
    if !provider.capabilities().image_import {
        return CheckOutcome::Skipped("image_import is declared false".into());
    }
    let Some(sink) = attempt!(fixture.image_sink().await, "fixture.image_sink") else {
        return CheckOutcome::Failed(
            "image_import is declared, but the fixture gives no image sink".into(),
        );
    };
    let data = Arc::new(pattern(IMAGE_LEN));
    let base = format!("vrconf-img-{}", std::process::id());
    let names = ["ok", "badsum", "unavailable", "stall"].map(|n| format!("{base}-{n}"));
    let outcome = import_and_fail_cleanly(provider.provider_type(), &sink, &data, &names).await;
    for n in &names {
        let _ = sink.remove(&ImageTarget::new(n.as_str())).await;
    }
    outcome
}

async fn import_and_fail_cleanly(
    provider_type: &str,
    sink: &Arc<dyn ImageSink>,
    data: &Arc<Vec<u8>>,
    names: &[String; 4],
) -> CheckOutcome {
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(data.as_slice())));
    let good: Checksum = attempt!(digest.parse(), "checksum");
    let wrong: Checksum = attempt!(
        format!("sha256:{}", hex::encode(Sha256::digest(b"another image"))).parse(),
        "checksum"
    );
    let preparer = ImagePreparer::new(Arc::clone(sink));

    // The image, imported once.
    let (url, hits) = attempt!(serve(Arc::clone(data), Serve::Whole).await, "serve");
    let mut image = attempt!(seed_image(&names[0], &url, &good), "the seed's VMImage");
    let Some(download) = image.spec.download_for(provider_type) else {
        return CheckOutcome::Failed(format!("the seed gives {provider_type} no download"));
    };
    ensure!(download.url == url, "download_for gave {}", download.url);
    let target = ImageTarget::for_image(&image, provider_type);
    let source = attempt!(HttpSource::new(&download.url), "HttpSource");
    let opts = options(&image, download.checksum.clone());
    let report = attempt!(
        preparer.prepare(&mut image, &target, &source, &opts).await,
        "prepare the seed's image"
    );
    let phase = image.status.as_ref().and_then(|s| s.phase);
    ensure!(
        report.imported && phase == Some(ImagePhase::Ready),
        "imported {}, phase {phase:?}",
        report.imported
    );
    ensure!(
        report.image.size_bytes == IMAGE_LEN as u64,
        "stored {} bytes, served {IMAGE_LEN}",
        report.image.size_bytes
    );
    let found = attempt!(sink.lookup(&target).await, "lookup");
    ensure!(
        found.as_ref().map(|r| r.size_bytes) == Some(IMAGE_LEN as u64),
        "lookup after the import found {found:?}"
    );
    let before = hits.load(Ordering::SeqCst);
    let again = attempt!(
        preparer.prepare(&mut image, &target, &source, &opts).await,
        "prepare again"
    );
    ensure!(
        !again.imported && hits.load(Ordering::SeqCst) == before,
        "a second preparation downloaded again"
    );

    // Three failures, each leaving nothing behind.
    let cases = [
        (&names[1], Serve::Whole, &wrong, "a checksum mismatch"),
        (
            &names[2],
            Serve::Unavailable,
            &good,
            "503 through every retry",
        ),
        (&names[3], Serve::Stall, &good, "a stalled transfer"),
    ];
    for (name, how, sum, what) in cases {
        let (url, _) = attempt!(serve(Arc::clone(data), how).await, "serve");
        let mut image = attempt!(seed_image(name, &url, sum), "the seed's VMImage");
        let target = ImageTarget::for_image(&image, provider_type);
        let source = attempt!(HttpSource::new(&url), "HttpSource");
        let mut opts = options(&image, Some(sum.clone()));
        opts.retries = opts.retries.min(2);
        let res = preparer.prepare(&mut image, &target, &source, &opts).await;
        ensure!(res.is_err(), "{what} was prepared: {res:?}");
        let phase = image.status.as_ref().and_then(|s| s.phase);
        ensure!(
            phase == Some(ImagePhase::Failed),
            "after {what} the image is {phase:?}"
        );
        let left = attempt!(sink.lookup(&target).await, "lookup");
        ensure!(left.is_none(), "{what} left {left:?} in the storage");
    }
    CheckOutcome::Passed
}

/// The seed's placeholder checksum (not a valid digest: the seed does not parse as it is).
const SEED_PLACEHOLDER_CHECKSUM: &str = "sha256:abcd1234...";

/// The seed's image named `name`, every source's URL and checksum pointed at `url` (the
/// seed's placeholder checksum replaced before parsing), the libvirt source's format `raw`
/// (what the server serves).
fn seed_image(name: &str, url: &str, checksum: &Checksum) -> crate::Result<VMImage> {
    let text = SEED_IMAGE.replace(SEED_PLACEHOLDER_CHECKSUM, &checksum.to_string());
    let mut image: VMImage = from_yaml_str(&text).map_err(crate::Error::from)?;
    image.metadata.name = name.to_owned();
    if let Some(l) = image.spec.libvirt.as_mut() {
        l.url = Some(url.to_owned());
        l.checksum = Some(checksum.clone());
        l.format = Some("raw".into());
    }
    if let Some(v) = image.spec.vsphere.as_mut() {
        v.ova_url = Some(url.to_owned());
        v.checksum = Some(checksum.clone());
    }
    let proxmox =
        serde_json::json!({"url": url, "format": "raw", "checksum": checksum.to_string()});
    image.spec.proxmox = Some(
        serde_json::from_value(proxmox)
            .map_err(|e| crate::Error::internal(format!("the Proxmox source: {e}")))?,
    );
    Ok(image)
}

/// The seed's `prepare` options, with short delays: retries 10 ms apart, a stall after 2 s.
fn options(image: &VMImage, checksum: Option<Checksum>) -> PrepareOptions {
    let mut o = PrepareOptions::from_spec(image.spec.prepare.as_ref(), checksum);
    o.retry_delay = Duration::from_millis(10);
    o.max_retry_delay = Duration::from_millis(50);
    o.stall_timeout = Duration::from_secs(2);
    o
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// Serves `data` at `http://127.0.0.1:<port>/image.raw` as `how` says; returns the URL and
/// a count of requests.
async fn serve(data: Arc<Vec<u8>>, how: Serve) -> std::io::Result<(String, Arc<AtomicU32>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/image.raw", listener.local_addr()?);
    let hits = Arc::new(AtomicU32::new(0));
    let counter = Arc::clone(&hits);
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(answer(sock, Arc::clone(&data), how));
        }
    });
    Ok((url, hits))
}

async fn answer(sock: TcpStream, data: Arc<Vec<u8>>, how: Serve) -> std::io::Result<()> {
    let (rd, mut wr) = sock.into_split();
    let mut rd = BufReader::new(rd);
    let mut from = 0usize;
    loop {
        let mut line = String::new();
        if rd.read_line(&mut line).await? == 0 || line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("range: bytes=") {
            from = v.trim().trim_end_matches('-').parse().unwrap_or(0);
        }
    }
    if how == Serve::Unavailable {
        let head =
            "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        return wr.write_all(head.as_bytes()).await;
    }
    let from = from.min(data.len());
    let head = if from > 0 {
        format!(
            "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {from}-{}/{}\r\nConnection: close\r\n\r\n",
            data.len() - from,
            data.len() - 1,
            data.len()
        )
    } else {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nAccept-Ranges: bytes\r\nConnection: close\r\n\r\n",
            data.len()
        )
    };
    wr.write_all(head.as_bytes()).await?;
    if how == Serve::Stall {
        let half = (data.len() / 2).max(from);
        wr.write_all(&data[from..half]).await?;
        wr.flush().await?;
        // Holds the connection open without sending more, until the client gives up.
        let mut rest = Vec::new();
        let _ = tokio::io::AsyncReadExt::read_to_end(&mut rd, &mut rest).await;
        return Ok(());
    }
    wr.write_all(&data[from..]).await
}
