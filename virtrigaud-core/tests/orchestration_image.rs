//! Image preparation: phases, onMissing, checksum while streaming, retries, resume, stall,
//! timeout. The HTTP part (feature `image-http`) runs against a small HTTP/1.1 server on
//! 127.0.0.1 serving files generated at test time (one of 100 MiB), streamed from disk.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use virtrigaud_core::model::{Checksum, ImagePhase, OnMissing, VMImage, VMImageSpec};
use virtrigaud_core::orchestration::EventReason;
use virtrigaud_core::orchestration::image::{
    FileSink, ImagePreparer, ImageSource, ImageTarget, PrepareOptions, SourceStream,
};
use virtrigaud_core::{Error, ErrorKind, Result};

fn image(name: &str) -> VMImage {
    VMImage::new(name, VMImageSpec::default())
}

fn block(seed: u64, i: u64, len: usize) -> Vec<u8> {
    let mut x = seed ^ (i.wrapping_mul(0x9E37_79B9_7F4A_7C15)) ^ 0xDEAD_BEEF;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn checksum_of(data: &[u8]) -> Checksum {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
        .parse()
        .unwrap()
}

/// An in-memory source with scripted failures (no network).
#[derive(Debug)]
struct ScriptedSource {
    data: Bytes,
    range: bool,
    /// Per attempt: fail to open with this kind, or cut after N bytes.
    script: Mutex<Vec<Step>>,
    opens: AtomicU32,
}

#[derive(Debug, Clone, Copy)]
enum Step {
    OpenFails(ErrorKind),
    CutAfter(usize),
    Ok,
}

impl ScriptedSource {
    fn new(data: Vec<u8>, range: bool, script: Vec<Step>) -> Self {
        ScriptedSource {
            data: Bytes::from(data),
            range,
            script: Mutex::new(script),
            opens: AtomicU32::new(0),
        }
    }
}

#[async_trait]
impl ImageSource for ScriptedSource {
    async fn open(&self, offset: u64) -> Result<SourceStream> {
        self.opens.fetch_add(1, Ordering::SeqCst);
        let step = {
            let mut s = self.script.lock().unwrap();
            if s.is_empty() { Step::Ok } else { s.remove(0) }
        };
        let start = if self.range { offset as usize } else { 0 };
        let rest = self.data.slice(start..);
        let total = Some(self.data.len() as u64);
        let chunks: Vec<Result<Bytes>> = match step {
            Step::OpenFails(kind) => return Err(Error::new(kind, "scripted open failure")),
            Step::CutAfter(n) => {
                let n = n.min(rest.len());
                vec![
                    Ok(rest.slice(..n)),
                    Err(Error::unavailable("connection reset")),
                ]
            }
            Step::Ok => rest
                .chunks(64 * 1024)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect(),
        };
        Ok(SourceStream::new(
            start as u64,
            total,
            futures::stream::iter(chunks).boxed(),
        ))
    }
}

fn files_in(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn fast_opts(checksum: Option<Checksum>) -> PrepareOptions {
    let mut o = PrepareOptions::default();
    o.checksum = checksum;
    o.retry_delay = Duration::from_millis(20);
    o.stall_timeout = Duration::from_millis(500);
    o
}

#[tokio::test(start_paused = true)]
async fn imports_when_missing_and_reuses_when_present() {
    let dir = tempfile::tempdir().unwrap();
    let data = block(1, 0, 300_000);
    let src = ScriptedSource::new(data.clone(), true, vec![]);
    let prep = ImagePreparer::new(Arc::new(FileSink::new(dir.path())));
    let mut events = prep.events().subscribe();
    let mut img = image("ubuntu");
    let r = prep
        .prepare(
            &mut img,
            &ImageTarget::new("ubuntu"),
            &src,
            &fast_opts(Some(checksum_of(&data))),
        )
        .await
        .unwrap();
    assert!(r.imported);
    assert_eq!(r.image.size_bytes, data.len() as u64);
    assert_eq!(std::fs::read(dir.path().join("ubuntu")).unwrap(), data);
    assert_eq!(img.status.as_ref().unwrap().phase, Some(ImagePhase::Ready));
    let reasons: Vec<EventReason> = std::iter::from_fn(|| events.try_recv().ok())
        .map(|e| e.reason)
        .collect();
    assert_eq!(
        reasons,
        vec![
            EventReason::ImagePending,
            EventReason::ImageImporting,
            EventReason::ImagePreparing,
            EventReason::ImageReady
        ]
    );
    // Present: nothing downloaded.
    let mut img = image("ubuntu");
    let r = prep
        .prepare(
            &mut img,
            &ImageTarget::new("ubuntu"),
            &src,
            &fast_opts(None),
        )
        .await
        .unwrap();
    assert!(!r.imported);
    assert_eq!(src.opens.load(Ordering::SeqCst), 1);
    // Missing with onMissing: Fail.
    let mut opts = fast_opts(None);
    opts.on_missing = OnMissing::Fail;
    let mut img = image("other");
    let e = prep
        .prepare(&mut img, &ImageTarget::new("other"), &src, &opts)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert_eq!(img.status.as_ref().unwrap().phase, Some(ImagePhase::Failed));
}

#[tokio::test(start_paused = true)]
async fn resumes_after_cuts_and_restarts_when_the_source_cannot_resume() {
    let dir = tempfile::tempdir().unwrap();
    let data = block(2, 0, 1_000_000);
    let prep = ImagePreparer::new(Arc::new(FileSink::new(dir.path())));
    let src = ScriptedSource::new(
        data.clone(),
        true,
        vec![
            Step::CutAfter(300_000),
            Step::OpenFails(ErrorKind::Unavailable),
            Step::CutAfter(200_000),
        ],
    );
    let r = prep
        .prepare(
            &mut image("a"),
            &ImageTarget::new("a"),
            &src,
            &fast_opts(Some(checksum_of(&data))),
        )
        .await
        .unwrap();
    assert_eq!((r.attempts, r.resumed, r.restarted), (4, 2, 0));
    assert_eq!(std::fs::read(dir.path().join("a")).unwrap(), data);

    let src = ScriptedSource::new(data.clone(), false, vec![Step::CutAfter(300_000)]);
    let r = prep
        .prepare(
            &mut image("b"),
            &ImageTarget::new("b"),
            &src,
            &fast_opts(Some(checksum_of(&data))),
        )
        .await
        .unwrap();
    assert_eq!((r.attempts, r.resumed, r.restarted), (2, 0, 1));
    assert_eq!(std::fs::read(dir.path().join("b")).unwrap(), data);
}

#[tokio::test(start_paused = true)]
async fn failures_leave_no_partial_image() {
    let dir = tempfile::tempdir().unwrap();
    let data = block(3, 0, 500_000);
    let prep = ImagePreparer::new(Arc::new(FileSink::new(dir.path())));
    // Checksum mismatch.
    let src = ScriptedSource::new(data.clone(), true, vec![]);
    let wrong = checksum_of(b"something else");
    let mut img = image("bad");
    let e = prep
        .prepare(
            &mut img,
            &ImageTarget::new("bad"),
            &src,
            &fast_opts(Some(wrong)),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidSpec);
    assert!(e.to_string().contains("checksum mismatch"), "{e}");
    assert_eq!(img.status.as_ref().unwrap().phase, Some(ImagePhase::Failed));
    // Retries exhausted.
    let src = ScriptedSource::new(data.clone(), true, vec![Step::CutAfter(10); 10]);
    let e = prep
        .prepare(
            &mut image("flaky"),
            &ImageTarget::new("flaky"),
            &src,
            &fast_opts(None),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    assert!(!e.is_retryable());
    assert_eq!(src.opens.load(Ordering::SeqCst), 4, "1 attempt + 3 retries");
    // A permanent error is not retried.
    let src = ScriptedSource::new(data, true, vec![Step::OpenFails(ErrorKind::NotFound)]);
    prep.prepare(
        &mut image("gone"),
        &ImageTarget::new("gone"),
        &src,
        &fast_opts(None),
    )
    .await
    .unwrap_err();
    assert_eq!(src.opens.load(Ordering::SeqCst), 1);
    assert!(
        files_in(dir.path()).is_empty(),
        "{:?}",
        files_in(dir.path())
    );
}

#[cfg(feature = "image-http")]
mod http {
    use std::io::Write;
    use std::path::{Path, PathBuf};
    use std::sync::atomic::AtomicU64;

    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncSeekExt, AsyncWriteExt, BufReader};
    use tokio::net::TcpListener;
    use virtrigaud_core::orchestration::image::HttpSource;

    use super::*;

    #[derive(Debug, Clone, Copy, Default)]
    struct Mode {
        no_range: bool,
        fail_first: u32,
        cut_first_after: Option<u64>,
        stall_first_after: Option<u64>,
        stall_always: bool,
        slow: Option<(usize, u64)>,
    }

    struct Server {
        url: String,
        hits: Arc<AtomicU32>,
        ranges: Arc<Mutex<Vec<u64>>>,
    }

    async fn serve(file: PathBuf, mode: Mode) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/image.qcow2", listener.local_addr().unwrap());
        let hits = Arc::new(AtomicU32::new(0));
        let ranges = Arc::new(Mutex::new(Vec::new()));
        let (h, r) = (Arc::clone(&hits), Arc::clone(&ranges));
        tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                let n = h.fetch_add(1, Ordering::SeqCst) + 1;
                let (file, r) = (file.clone(), Arc::clone(&r));
                tokio::spawn(async move {
                    let _ = handle(sock, &file, mode, n, r).await;
                });
            }
        });
        Server { url, hits, ranges }
    }

    async fn handle(
        sock: tokio::net::TcpStream,
        file: &Path,
        mode: Mode,
        n: u32,
        ranges: Arc<Mutex<Vec<u64>>>,
    ) -> std::io::Result<()> {
        let (rd, mut wr) = sock.into_split();
        let mut rd = BufReader::new(rd);
        let mut range_start = 0u64;
        loop {
            let mut line = String::new();
            if rd.read_line(&mut line).await? == 0 || line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("range: bytes=") {
                range_start = v.trim().trim_end_matches('-').parse().unwrap_or(0);
            }
        }
        ranges.lock().unwrap().push(range_start);
        if n <= mode.fail_first {
            wr.write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").await?;
            return Ok(());
        }
        let len = tokio::fs::metadata(file).await?.len();
        let start = if mode.no_range {
            0
        } else {
            range_start.min(len)
        };
        let head = if start > 0 {
            format!(
                "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {start}-{}/{len}\r\nAccept-Ranges: bytes\r\nConnection: close\r\n\r\n",
                len - start,
                len - 1
            )
        } else {
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nAccept-Ranges: {}\r\nConnection: close\r\n\r\n",
                if mode.no_range { "none" } else { "bytes" }
            )
        };
        wr.write_all(head.as_bytes()).await?;
        let mut f = tokio::fs::File::open(file).await?;
        f.seek(std::io::SeekFrom::Start(start)).await?;
        let chunk = mode.slow.map_or(256 * 1024, |(c, _)| c);
        let mut buf = vec![0u8; chunk];
        let mut sent = 0u64;
        loop {
            let k = f.read(&mut buf).await?;
            if k == 0 {
                return Ok(());
            }
            wr.write_all(&buf[..k]).await?;
            sent += k as u64;
            if n == mode.fail_first + 1 && mode.cut_first_after.is_some_and(|c| sent >= c) {
                return Ok(()); // connection dropped mid-body
            }
            if (n == mode.fail_first + 1 || mode.stall_always)
                && mode.stall_first_after.is_some_and(|c| sent >= c)
            {
                wr.flush().await?;
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
            if let Some((_, ms)) = mode.slow {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
        }
    }

    /// Writes `mib` MiB of pseudo-random data, block by block (never all in memory).
    fn generate(dir: &Path, mib: u64) -> (PathBuf, Checksum) {
        let path = dir.join("source.img");
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        let mut h = Sha256::new();
        for i in 0..mib {
            let b = block(7, i, 1 << 20);
            h.update(&b);
            f.write_all(&b).unwrap();
        }
        f.flush().unwrap();
        (
            path,
            format!("sha256:{}", hex::encode(h.finalize()))
                .parse()
                .unwrap(),
        )
    }

    fn dirs() -> (tempfile::TempDir, tempfile::TempDir) {
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hundred_mib_download_resumes_with_range_and_reports_progress() {
        let (src_dir, out) = dirs();
        let (file, sum) = generate(src_dir.path(), 100);
        let server = serve(
            file,
            Mode {
                cut_first_after: Some(40 << 20),
                ..Default::default()
            },
        )
        .await;
        let progress = Arc::new(AtomicU64::new(0));
        let calls = Arc::new(AtomicU32::new(0));
        let (p, c) = (Arc::clone(&progress), Arc::clone(&calls));
        let prep = ImagePreparer::new(Arc::new(FileSink::new(out.path()))).on_progress(
            8 << 20,
            move |pr| {
                assert!(
                    pr.bytes >= p.load(Ordering::SeqCst),
                    "progress never goes back on a resume"
                );
                p.store(pr.bytes, Ordering::SeqCst);
                c.fetch_add(1, Ordering::SeqCst);
            },
        );
        let mut img = image("big");
        let r = prep
            .prepare(
                &mut img,
                &ImageTarget::new("big"),
                &HttpSource::new(&server.url).unwrap(),
                &fast_opts(Some(sum)),
            )
            .await
            .unwrap();
        assert_eq!(r.image.size_bytes, 100 << 20);
        assert_eq!((r.attempts, r.resumed, r.restarted), (2, 1, 0));
        assert_eq!(progress.load(Ordering::SeqCst), 100 << 20);
        assert!(
            calls.load(Ordering::SeqCst) >= 12,
            "progress reported {} times",
            calls.load(Ordering::SeqCst)
        );
        let ranges = server.ranges.lock().unwrap().clone();
        assert_eq!(ranges[0], 0);
        assert!(
            ranges[1] >= 40 << 20,
            "second request resumed at {}",
            ranges[1]
        );
        assert_eq!(files_in(out.path()), vec!["big".to_string()]);
        assert_eq!(img.status.as_ref().unwrap().phase, Some(ImagePhase::Ready));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn server_errors_then_success() {
        let (src_dir, out) = dirs();
        let (file, sum) = generate(src_dir.path(), 4);
        let server = serve(
            file,
            Mode {
                fail_first: 2,
                ..Default::default()
            },
        )
        .await;
        let prep = ImagePreparer::new(Arc::new(FileSink::new(out.path())));
        let r = prep
            .prepare(
                &mut image("img"),
                &ImageTarget::new("img"),
                &HttpSource::new(&server.url).unwrap(),
                &fast_opts(Some(sum)),
            )
            .await
            .unwrap();
        assert_eq!(r.attempts, 3);
        assert_eq!(server.hits.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn checksum_mismatch_fails_and_leaves_nothing() {
        let (src_dir, out) = dirs();
        let (file, _) = generate(src_dir.path(), 4);
        let server = serve(file, Mode::default()).await;
        let prep = ImagePreparer::new(Arc::new(FileSink::new(out.path())));
        let wrong = checksum_of(b"not the image");
        let mut img = image("img");
        let e = prep
            .prepare(
                &mut img,
                &ImageTarget::new("img"),
                &HttpSource::new(&server.url).unwrap(),
                &fast_opts(Some(wrong)),
            )
            .await
            .unwrap_err();
        assert!(e.to_string().contains("checksum mismatch"), "{e}");
        assert_eq!(
            server.hits.load(Ordering::SeqCst),
            1,
            "a mismatch is not retried"
        );
        assert!(files_in(out.path()).is_empty());
        assert_eq!(img.status.as_ref().unwrap().phase, Some(ImagePhase::Failed));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stall_is_detected_and_resumed_and_a_permanent_stall_fails() {
        let (src_dir, out) = dirs();
        let (file, sum) = generate(src_dir.path(), 4);
        let server = serve(
            file.clone(),
            Mode {
                stall_first_after: Some(1 << 20),
                ..Default::default()
            },
        )
        .await;
        let prep = ImagePreparer::new(Arc::new(FileSink::new(out.path())));
        let r = prep
            .prepare(
                &mut image("img"),
                &ImageTarget::new("img"),
                &HttpSource::new(&server.url).unwrap(),
                &fast_opts(Some(sum)),
            )
            .await
            .unwrap();
        assert_eq!((r.attempts, r.resumed), (2, 1));

        let server = serve(
            file,
            Mode {
                stall_first_after: Some(1 << 20),
                stall_always: true,
                ..Default::default()
            },
        )
        .await;
        let mut opts = fast_opts(None);
        opts.retries = 1;
        let e = prep
            .prepare(
                &mut image("stuck"),
                &ImageTarget::new("stuck"),
                &HttpSource::new(&server.url).unwrap(),
                &opts,
            )
            .await
            .unwrap_err();
        assert!(e.to_string().contains("stalled"), "{e}");
        assert_eq!(files_in(out.path()), vec!["img".to_string()]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_overall_timeout_ends_a_slow_download() {
        let (src_dir, out) = dirs();
        let (file, _) = generate(src_dir.path(), 4);
        let server = serve(
            file,
            Mode {
                slow: Some((16 * 1024, 50)),
                ..Default::default()
            },
        )
        .await;
        let prep = ImagePreparer::new(Arc::new(FileSink::new(out.path())));
        let mut opts = fast_opts(None);
        opts.timeout = Duration::from_secs(1);
        let t0 = tokio::time::Instant::now();
        let e = prep
            .prepare(
                &mut image("slow"),
                &ImageTarget::new("slow"),
                &HttpSource::new(&server.url).unwrap(),
                &opts,
            )
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
        assert!(t0.elapsed() < Duration::from_secs(10));
        assert!(files_in(out.path()).is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_server_without_range_support_restarts_from_zero() {
        let (src_dir, out) = dirs();
        let (file, sum) = generate(src_dir.path(), 4);
        let server = serve(
            file,
            Mode {
                no_range: true,
                cut_first_after: Some(1 << 20),
                ..Default::default()
            },
        )
        .await;
        let prep = ImagePreparer::new(Arc::new(FileSink::new(out.path())));
        let r = prep
            .prepare(
                &mut image("img"),
                &ImageTarget::new("img"),
                &HttpSource::new(&server.url).unwrap(),
                &fast_opts(Some(sum)),
            )
            .await
            .unwrap();
        assert_eq!((r.attempts, r.resumed, r.restarted), (2, 0, 1));
        assert_eq!(
            std::fs::metadata(out.path().join("img")).unwrap().len(),
            4 << 20
        );
    }
}

/// A sink staging in a `FileSink` whose hand-over to the "provider" never finishes, and
/// which records removals.
#[derive(Debug)]
struct HangingSink {
    staging: FileSink,
    removed: AtomicU32,
}

struct Hang;

#[async_trait]
impl virtrigaud_core::orchestration::image::Publish for Hang {
    async fn publish(
        self: Box<Self>,
        _path: &std::path::Path,
        _size: u64,
    ) -> Result<virtrigaud_core::orchestration::image::ImageRef> {
        futures::future::pending().await
    }
}

#[async_trait]
impl virtrigaud_core::orchestration::image::ImageSink for HangingSink {
    fn provider_type(&self) -> &'static str {
        "hanging"
    }
    async fn lookup(
        &self,
        _target: &ImageTarget,
    ) -> Result<Option<virtrigaud_core::orchestration::image::ImageRef>> {
        Ok(None)
    }
    async fn begin(
        &self,
        target: &ImageTarget,
        size_hint: Option<u64>,
    ) -> Result<Box<dyn virtrigaud_core::orchestration::image::ImageUpload>> {
        let staged = self.staging.begin(target, size_hint).await?;
        Ok(Box::new(
            virtrigaud_core::orchestration::image::StagedUpload::new(staged, Box::new(Hang)),
        ))
    }
    async fn remove(&self, _target: &ImageTarget) -> Result<()> {
        self.removed.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn handing_the_image_over_counts_against_the_timeout_and_leaves_nothing() {
    use virtrigaud_core::orchestration::image::ImageSink as _;
    let dir = tempfile::tempdir().unwrap();
    let sink = Arc::new(HangingSink {
        staging: FileSink::new(dir.path()),
        removed: AtomicU32::new(0),
    });
    let data = block(7, 0, 100_000);
    let src = ScriptedSource::new(data.clone(), true, vec![]);
    let prep = ImagePreparer::new(
        Arc::clone(&sink) as Arc<dyn virtrigaud_core::orchestration::image::ImageSink>
    );
    let mut opts = fast_opts(Some(checksum_of(&data)));
    opts.timeout = Duration::from_secs(60);
    let mut img = image("slow");
    let started = tokio::time::Instant::now();
    let e = prep
        .prepare(&mut img, &ImageTarget::new("slow"), &src, &opts)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    assert!(
        started.elapsed() <= Duration::from_secs(61),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        sink.removed.load(Ordering::SeqCst),
        1,
        "the partial image is removed"
    );
    assert_eq!(img.status.as_ref().unwrap().phase, Some(ImagePhase::Failed));
    assert!(
        sink.lookup(&ImageTarget::new("slow"))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        files_in(dir.path()).is_empty(),
        "staging emptied: {:?}",
        files_in(dir.path())
    );
}
