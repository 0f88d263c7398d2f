//! Image preparation through a server-side fetch ([`RemoteFetch`]): a scripted storage that
//! "fetches" the URL itself, under the preparer's timeout, stall, retry and checksum rules.
//! Paused tokio clock: the timeouts pass instantly.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;
use virtrigaud_core::model::{Checksum, ChecksumAlgorithm, ImagePhase, VMImage, VMImageSpec};
use virtrigaud_core::orchestration::EventReason;
use virtrigaud_core::orchestration::image::{
    ImagePreparer, ImageRef, ImageSink, ImageSource, ImageTarget, ImageUpload, PrepareOptions,
    RemoteFetch, RemoteSource, RemoteTransfer, SourceStream, TransferProgress, TransferState,
};
use virtrigaud_core::{Error, ErrorKind, Result};

/// One scripted poll answer; the last one repeats.
#[derive(Debug, Clone)]
enum Step {
    Running(TransferProgress, u32),
    /// Running, the progress growing by one byte a poll, attempt 1.
    Growing,
    /// Running, the attempt counting up by one a poll.
    Restarting,
    Done(u64),
    Fail(ErrorKind, &'static str),
}

#[derive(Debug, Default)]
struct Storage {
    /// name → (size, finished)
    objects: HashMap<String, (u64, bool)>,
    started: Vec<RemoteSource>,
    aborted: Vec<String>,
}

#[derive(Debug)]
struct ScriptedRemote {
    storage: Arc<Mutex<Storage>>,
    script: Vec<Step>,
    verifies: bool,
}

impl ScriptedRemote {
    fn new(script: Vec<Step>) -> Arc<Self> {
        Arc::new(ScriptedRemote {
            storage: Arc::default(),
            script,
            verifies: true,
        })
    }
}

#[async_trait]
impl ImageSink for ScriptedRemote {
    fn provider_type(&self) -> &'static str {
        "scripted"
    }
    async fn lookup(&self, target: &ImageTarget) -> Result<Option<ImageRef>> {
        let s = self.storage.lock().unwrap();
        Ok(s.objects
            .get(&target.name)
            .filter(|(_, done)| *done)
            .map(|(size, _)| ImageRef::new(target.name.clone(), *size)))
    }
    async fn begin(&self, _: &ImageTarget, _: Option<u64>) -> Result<Box<dyn ImageUpload>> {
        Err(Error::new(ErrorKind::Unsupported, "no streaming here"))
    }
    fn remote_fetch(&self) -> Option<&dyn RemoteFetch> {
        Some(self)
    }
}

#[async_trait]
impl RemoteFetch for ScriptedRemote {
    fn verifies(&self, _: ChecksumAlgorithm) -> bool {
        self.verifies
    }
    async fn start(
        &self,
        target: &ImageTarget,
        source: &RemoteSource,
    ) -> Result<Box<dyn RemoteTransfer>> {
        let mut s = self.storage.lock().unwrap();
        s.started.push(source.clone());
        s.objects.insert(target.name.clone(), (0, false));
        Ok(Box::new(Transfer {
            name: target.name.clone(),
            storage: Arc::clone(&self.storage),
            script: self.script.clone(),
            polls: 0,
        }))
    }
}

struct Transfer {
    name: String,
    storage: Arc<Mutex<Storage>>,
    script: Vec<Step>,
    polls: u32,
}

#[async_trait]
impl RemoteTransfer for Transfer {
    async fn poll(&mut self) -> Result<TransferState> {
        self.polls += 1;
        let i = (self.polls as usize - 1).min(self.script.len() - 1);
        Ok(match self.script[i].clone() {
            Step::Running(p, a) => TransferState::Running {
                progress: p,
                attempts: a,
                message: None,
            },
            Step::Growing => TransferState::Running {
                progress: TransferProgress::Bytes(u64::from(self.polls)),
                attempts: 1,
                message: None,
            },
            Step::Restarting => TransferState::Running {
                progress: TransferProgress::Unknown,
                attempts: self.polls,
                message: Some("expected status code 200, got 503".into()),
            },
            Step::Done(size) => {
                let mut s = self.storage.lock().unwrap();
                s.objects.insert(self.name.clone(), (size, true));
                TransferState::Done(ImageRef::new(self.name.clone(), size))
            }
            Step::Fail(kind, msg) => TransferState::Failed(Error::new(kind, msg)),
        })
    }
    fn poll_interval(&self) -> Duration {
        Duration::from_secs(1)
    }
    async fn abort(self: Box<Self>) -> Result<()> {
        let mut s = self.storage.lock().unwrap();
        s.objects.remove(&self.name);
        s.aborted.push(self.name.clone());
        Ok(())
    }
}

/// A URL source that must never be streamed from.
#[derive(Debug, Default)]
struct UrlSource {
    opens: AtomicU32,
}

#[async_trait]
impl ImageSource for UrlSource {
    async fn open(&self, _: u64) -> Result<SourceStream> {
        self.opens.fetch_add(1, Ordering::SeqCst);
        Err(Error::internal("the remote path must not stream"))
    }
    fn url(&self) -> Option<&str> {
        Some("https://user:pw@images.example/disk.raw")
    }
    async fn probe_len(&self) -> Option<u64> {
        Some(1000)
    }
}

fn sum() -> Checksum {
    format!("sha256:{}", "ab".repeat(32)).parse().unwrap()
}

fn opts() -> PrepareOptions {
    let mut o = PrepareOptions::default();
    o.checksum = Some(sum());
    o.timeout = Duration::from_secs(600);
    o.stall_timeout = Duration::from_secs(30);
    o.retries = 2;
    o
}

async fn run(
    sink: &Arc<ScriptedRemote>,
    opts: &PrepareOptions,
) -> (
    Result<virtrigaud_core::orchestration::image::PrepareReport>,
    VMImage,
    Vec<EventReason>,
) {
    let prep = ImagePreparer::new(Arc::clone(sink) as Arc<dyn ImageSink>);
    let mut events = prep.events().subscribe();
    let mut image = VMImage::new("img", VMImageSpec::default());
    let source = UrlSource::default();
    let res = prep
        .prepare(&mut image, &ImageTarget::new("img"), &source, opts)
        .await;
    assert_eq!(source.opens.load(Ordering::SeqCst), 0, "nothing streamed");
    let reasons = std::iter::from_fn(|| events.try_recv().ok())
        .map(|e| e.reason)
        .collect();
    (res, image, reasons)
}

fn phase(image: &VMImage) -> Option<ImagePhase> {
    image.status.as_ref().and_then(|s| s.phase)
}

#[tokio::test(start_paused = true)]
async fn the_storage_fetches_and_verifies() {
    let sink = ScriptedRemote::new(vec![
        Step::Running(TransferProgress::Unknown, 1),
        Step::Running(TransferProgress::Permille(500), 1),
        Step::Done(1000),
    ]);
    let (res, image, reasons) = run(&sink, &opts()).await;
    let r = res.unwrap();
    assert!(r.imported);
    assert_eq!((r.image.size_bytes, r.attempts), (1000, 1));
    assert_eq!(r.digest.as_deref(), Some(sum().hex()));
    assert_eq!(phase(&image), Some(ImagePhase::Ready));
    assert_eq!(
        reasons,
        [
            EventReason::ImagePending,
            EventReason::ImageImporting,
            EventReason::ImagePreparing,
            EventReason::ImageReady
        ]
    );
    {
        let s = sink.storage.lock().unwrap();
        assert_eq!(s.started.len(), 1);
        assert_eq!(
            s.started[0].checksum,
            Some(sum()),
            "the checksum went to the server"
        );
        assert_eq!(s.started[0].size_hint, Some(1000));
        assert!(s.aborted.is_empty());
    }
    // Present now: no second transfer.
    let (res, _, _) = run(&sink, &opts()).await;
    assert!(!res.unwrap().imported);
    assert_eq!(sink.storage.lock().unwrap().started.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn no_progress_for_the_stall_timeout_fails_and_removes_the_object() {
    let sink = ScriptedRemote::new(vec![
        Step::Running(TransferProgress::Unknown, 1),
        Step::Running(TransferProgress::Permille(500), 1),
    ]);
    let t0 = Instant::now();
    let (res, image, _) = run(&sink, &opts()).await;
    let e = res.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    assert!(e.message().contains("stalled"), "{e}");
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_secs(30) && took <= Duration::from_secs(33),
        "{took:?}"
    );
    assert_eq!(phase(&image), Some(ImagePhase::Failed));
    let s = sink.storage.lock().unwrap();
    assert_eq!(s.aborted, ["img"]);
    assert!(s.objects.is_empty());
}

#[tokio::test(start_paused = true)]
async fn more_server_attempts_than_retries_allow_fails() {
    let sink = ScriptedRemote::new(vec![Step::Restarting]);
    let (res, image, reasons) = run(&sink, &opts()).await;
    let e = res.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    assert!(!e.is_retryable(), "retries are exhausted: {e:?}");
    assert!(e.message().contains("after 4 attempts"), "{e}");
    assert!(e.message().contains("got 503"), "{e}");
    assert_eq!(image.status.as_ref().unwrap().attempts, Some(4));
    let retrying = reasons
        .iter()
        .filter(|r| **r == EventReason::ImageRetrying)
        .count();
    assert_eq!(retrying, 2, "{reasons:?}");
    assert_eq!(sink.storage.lock().unwrap().aborted, ["img"]);
}

#[tokio::test(start_paused = true)]
async fn the_overall_timeout_fails_and_removes_the_object() {
    let sink = ScriptedRemote::new(vec![Step::Growing]);
    let mut o = opts();
    o.timeout = Duration::from_secs(120);
    let t0 = Instant::now();
    let (res, image, _) = run(&sink, &o).await;
    let e = res.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout);
    assert!(t0.elapsed() <= Duration::from_secs(122));
    assert_eq!(phase(&image), Some(ImagePhase::Failed));
    assert_eq!(sink.storage.lock().unwrap().aborted, ["img"]);
}

#[tokio::test(start_paused = true)]
async fn a_server_failure_fails_and_removes_the_object() {
    let sink = ScriptedRemote::new(vec![
        Step::Running(TransferProgress::Bytes(10), 1),
        Step::Fail(ErrorKind::InvalidSpec, "checksum mismatch"),
    ]);
    let (res, _, _) = run(&sink, &opts()).await;
    let e = res.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidSpec);
    assert_eq!(e.operation(), "image_download");
    assert_eq!(sink.storage.lock().unwrap().aborted, ["img"]);
}

#[tokio::test(start_paused = true)]
async fn a_storage_that_cannot_verify_refuses_the_checksum() {
    let sink = Arc::new(ScriptedRemote {
        storage: Arc::default(),
        script: vec![Step::Done(1000)],
        verifies: false,
    });
    let (res, image, _) = run(&sink, &opts()).await;
    let e = res.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    assert!(e.message().contains("validateChecksum"), "{e}");
    assert_eq!(phase(&image), Some(ImagePhase::Failed));
    assert!(
        sink.storage.lock().unwrap().started.is_empty(),
        "nothing started"
    );
    // Without validation it imports, and no checksum goes to the server.
    let mut o = opts();
    o.validate_checksum = false;
    let (res, _, _) = run(&sink, &o).await;
    let r = res.unwrap();
    assert!(r.imported && r.digest.is_none());
    assert_eq!(sink.storage.lock().unwrap().started[0].checksum, None);
}
