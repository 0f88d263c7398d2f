//! [`ImagePreparer`]: `VMImage` preparation — phases, checksum while streaming, retries
//! with backoff and resume, overall timeout, stall detection, progress.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use sha2::{Digest, Sha256, Sha512};
use tokio::time::Instant;

use super::remote::{RemoteFetch, RemoteSource, RemoteTransfer, TransferProgress, TransferState};
use super::sink::{ImageRef, ImageSink, ImageTarget, ImageUpload};
use super::source::ImageSource;
use crate::error::{Error, ErrorKind, Result};
use crate::layers::RetryPolicy;
use crate::model::{
    Checksum, ChecksumAlgorithm, Condition, ImagePhase, ImagePrepare, OnMissing, StoredImage,
    VMImage, condition_types, set_condition,
};
use crate::orchestration::events::{EventBus, EventReason, ObjectKind};
use crate::orchestration::metrics;
use crate::orchestration::orchestrator::{bounded, deadline_after, now_rfc3339};

/// Options of one preparation.
///
/// No duration here can overflow the clock: a timeout or delay too long to set as a timer
/// (beyond about 30 years, up to `Duration::MAX`) saturates, so `Duration::MAX` means "no
/// limit" for `timeout` and `stall_timeout`. The model's `prepare.timeout` is at most
/// [`crate::model::MAX_DURATION`] once validated.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PrepareOptions {
    /// Expected digest of the whole image.
    pub checksum: Option<Checksum>,
    /// Check `checksum` (default true; without a checksum nothing is checked).
    pub validate_checksum: bool,
    /// What to do when the image is missing (default `Import`).
    pub on_missing: OnMissing,
    /// Budget of the whole preparation, retries included (default 30 min).
    pub timeout: Duration,
    /// An attempt fails when no byte arrives for this long (default 30 s).
    pub stall_timeout: Duration,
    /// Retries after a failed attempt (default 3).
    pub retries: u32,
    /// First retry delay, doubling (default 1 s).
    pub retry_delay: Duration,
    /// Longest retry delay (default 60 s).
    pub max_retry_delay: Duration,
}

impl Default for PrepareOptions {
    fn default() -> Self {
        PrepareOptions {
            checksum: None,
            validate_checksum: true,
            on_missing: OnMissing::Import,
            timeout: Duration::from_secs(30 * 60),
            stall_timeout: Duration::from_secs(30),
            retries: 3,
            retry_delay: Duration::from_secs(1),
            max_retry_delay: Duration::from_secs(60),
        }
    }
}

impl PrepareOptions {
    /// Options from a `VMImage`'s `spec.prepare` and the source's checksum.
    pub fn from_spec(prepare: Option<&ImagePrepare>, checksum: Option<Checksum>) -> Self {
        let mut o = PrepareOptions {
            checksum,
            ..Default::default()
        };
        if let Some(p) = prepare {
            if let Some(v) = p.validate_checksum {
                o.validate_checksum = v;
            }
            if let Some(m) = p.on_missing {
                o.on_missing = m;
            }
            if let Some(t) = p.timeout {
                o.timeout = t.as_duration();
            }
            if let Some(r) = p.retries {
                o.retries = r;
            }
        }
        o
    }
}

/// Download progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Progress {
    /// Bytes of the image stored so far.
    pub bytes: u64,
    /// Size of the image, when known.
    pub total: Option<u64>,
    /// Attempt number (1 for the first).
    pub attempt: u32,
}

/// What [`ImagePreparer::prepare`] did.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PrepareReport {
    /// The stored image.
    pub image: ImageRef,
    /// Whether it was imported now (false: it was already there).
    pub imported: bool,
    /// Attempts made.
    pub attempts: u32,
    /// Attempts that resumed with `Range` instead of starting over.
    pub resumed: u32,
    /// Attempts that had to start over (the source could not resume).
    pub restarted: u32,
    /// The digest computed while streaming (lower-case hex).
    pub digest: Option<String>,
}

type ProgressFn = Arc<dyn Fn(Progress) + Send + Sync>;

/// Prepares `VMImage`s into one [`ImageSink`].
#[derive(Clone)]
pub struct ImagePreparer {
    sink: Arc<dyn ImageSink>,
    events: EventBus,
    progress: Option<ProgressFn>,
    progress_every: u64,
}

impl fmt::Debug for ImagePreparer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImagePreparer")
            .field("sink", &self.sink)
            .finish_non_exhaustive()
    }
}

enum Hasher {
    Sha256(Sha256),
    Sha512(Sha512),
}

impl Hasher {
    fn new(alg: ChecksumAlgorithm) -> Self {
        match alg {
            ChecksumAlgorithm::Sha512 => Hasher::Sha512(Sha512::new()),
            _ => Hasher::Sha256(Sha256::new()),
        }
    }
    fn update(&mut self, b: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(b),
            Hasher::Sha512(h) => h.update(b),
        }
    }
    fn finish(self) -> Vec<u8> {
        match self {
            Hasher::Sha256(h) => h.finalize().to_vec(),
            Hasher::Sha512(h) => h.finalize().to_vec(),
        }
    }
}

struct Run {
    hasher: Hasher,
    alg: ChecksumAlgorithm,
    attempts: u32,
    resumed: u32,
    restarted: u32,
    total: Option<u64>,
}

impl ImagePreparer {
    /// A preparer storing into `sink`.
    pub fn new(sink: Arc<dyn ImageSink>) -> Self {
        ImagePreparer {
            sink,
            events: EventBus::default(),
            progress: None,
            progress_every: 8 << 20,
        }
    }

    /// The sink it stores into.
    pub fn sink(&self) -> &Arc<dyn ImageSink> {
        &self.sink
    }

    /// Sends events to `bus`.
    pub fn with_events(mut self, bus: EventBus) -> Self {
        self.events = bus;
        self
    }

    /// Calls `f` with the progress every `every` bytes (and at the end of each attempt).
    pub fn on_progress(mut self, every: u64, f: impl Fn(Progress) + Send + Sync + 'static) -> Self {
        self.progress = Some(Arc::new(f));
        self.progress_every = every.max(1);
        self
    }

    /// The event bus.
    pub fn events(&self) -> &EventBus {
        &self.events
    }

    fn set_phase(&self, image: &mut VMImage, phase: ImagePhase, message: Option<String>) {
        let st = image.status.get_or_insert_with(Default::default);
        st.phase = Some(phase);
        st.message = message;
        set_condition(
            &mut st.conditions,
            Condition::new(
                condition_types::READY,
                phase == ImagePhase::Ready,
                format!("{phase:?}"),
                st.message.clone().unwrap_or_default(),
            )
            .at(now_rfc3339()),
        );
    }

    /// Prepares `image` into `target`: if it is missing and `onMissing` is `Import`, streams it
    /// from `source` into the sink, checking the checksum while streaming, retrying and
    /// resuming failed attempts, within the overall timeout. `image.status` moves through
    /// `Pending`, `Importing`, `Preparing` and `Ready` (or `Failed`). A failed preparation
    /// leaves no partial image behind.
    ///
    /// When the sink's storage fetches URLs itself ([`ImageSink::remote_fetch`]) and the
    /// source has one ([`ImageSource::url`]), nothing is streamed here: the storage is
    /// started on the URL (with the checksum when `validate_checksum`, refused with
    /// `Unsupported` where the storage cannot verify it; the source's `HEAD` length as the
    /// size hint) and polled. `timeout` bounds the whole transfer, no change of progress or
    /// attempt for `stall_timeout` fails it as a stall, and the storage's own attempt count
    /// above `retries + 1` fails it; every failure aborts the transfer, removing what it
    /// created.
    pub async fn prepare(
        &self,
        image: &mut VMImage,
        target: &ImageTarget,
        source: &dyn ImageSource,
        opts: &PrepareOptions,
    ) -> Result<PrepareReport> {
        let started = Instant::now();
        let name = image.metadata.name.clone();
        self.set_phase(image, ImagePhase::Pending, None);
        self.events.emit(
            ObjectKind::VMImage,
            &name,
            EventReason::ImagePending,
            "waiting to start",
        );
        let res = self.prepare_inner(image, target, source, opts).await;
        metrics::image_prepare(
            self.sink.provider_type(),
            metrics::outcome_of(&res),
            started.elapsed(),
        );
        match &res {
            Ok(r) => {
                let msg = if r.imported {
                    format!("imported {} bytes", r.image.size_bytes)
                } else {
                    "already present".to_owned()
                };
                self.set_phase(image, ImagePhase::Ready, Some(msg.clone()));
                let stored = StoredImage::new(
                    self.sink.provider_type(),
                    r.image.reference.clone(),
                    r.image.size_bytes,
                );
                image.status.get_or_insert_with(Default::default).stored = Some(stored);
                self.events
                    .emit(ObjectKind::VMImage, &name, EventReason::ImageReady, msg);
            }
            Err(e) => {
                self.set_phase(image, ImagePhase::Failed, Some(e.to_string()));
                image.status.get_or_insert_with(Default::default).stored = None;
                self.events.emit(
                    ObjectKind::VMImage,
                    &name,
                    EventReason::ImageFailed,
                    e.to_string(),
                );
            }
        }
        res
    }

    async fn prepare_inner(
        &self,
        image: &mut VMImage,
        target: &ImageTarget,
        source: &dyn ImageSource,
        opts: &PrepareOptions,
    ) -> Result<PrepareReport> {
        if let Some(existing) = self.sink.lookup(target).await? {
            return Ok(PrepareReport {
                image: existing,
                imported: false,
                attempts: 0,
                resumed: 0,
                restarted: 0,
                digest: None,
            });
        }
        if opts.on_missing != OnMissing::Import {
            return Err(Error::not_found(format!(
                "image {} is missing and onMissing is Fail",
                target.name
            ))
            .with_operation("image_prepare"));
        }
        let name = image.metadata.name.clone();
        self.set_phase(image, ImagePhase::Importing, None);
        self.events.emit(
            ObjectKind::VMImage,
            &name,
            EventReason::ImageImporting,
            format!("importing into {}", self.sink.provider_type()),
        );
        if let (Some(remote), Some(url)) = (self.sink.remote_fetch(), source.url()) {
            return self
                .prepare_remote(image, target, remote, url, source, opts)
                .await;
        }
        let alg = opts
            .checksum
            .as_ref()
            .map_or(ChecksumAlgorithm::Sha256, Checksum::algorithm);
        let mut run = Run {
            hasher: Hasher::new(alg),
            alg,
            attempts: 0,
            resumed: 0,
            restarted: 0,
            total: None,
        };
        let mut upload: Option<Box<dyn ImageUpload>> = None;
        let deadline = deadline_after(Instant::now(), opts.timeout);
        let res = tokio::time::timeout_at(
            deadline,
            self.import(&name, target, source, opts, &mut run, &mut upload),
        )
        .await;
        let res = match res {
            Ok(r) => r,
            Err(_) => Err(timed_out(opts)),
        };
        image.status.get_or_insert_with(Default::default).attempts = Some(run.attempts);
        let digest = match res {
            Ok(d) => d,
            Err(e) => {
                return Err(match upload.take() {
                    Some(u) => after_abort(e, u.abort().await),
                    None => e,
                });
            }
        };
        self.set_phase(image, ImagePhase::Preparing, None);
        self.events.emit(
            ObjectKind::VMImage,
            &name,
            EventReason::ImagePreparing,
            "handing the image to the provider",
        );
        let Some(u) = upload.take() else {
            return Err(Error::internal("no upload to commit"));
        };
        // Handing the image over counts against the same budget; a commit cut short leaves
        // nothing behind (the sink removes what it made of the target).
        let stored = match tokio::time::timeout_at(deadline, u.commit()).await {
            Ok(r) => r?,
            Err(_) => {
                let e = timed_out(opts);
                return Err(match self.sink.remove(target).await {
                    Ok(()) => e,
                    Err(r) if r.is(ErrorKind::Unsupported) => e,
                    Err(r) => after_abort(e, Err(r)),
                });
            }
        };
        Ok(PrepareReport {
            image: stored,
            imported: true,
            attempts: run.attempts,
            resumed: run.resumed,
            restarted: run.restarted,
            digest: Some(digest),
        })
    }

    async fn import(
        &self,
        name: &str,
        target: &ImageTarget,
        source: &dyn ImageSource,
        opts: &PrepareOptions,
        run: &mut Run,
        upload: &mut Option<Box<dyn ImageUpload>>,
    ) -> Result<String> {
        let mut u = self.sink.begin(target, None).await?;
        if u.written() > 0 {
            let h = &mut run.hasher;
            u.replay(&mut |b: &[u8]| h.update(b)).await?;
        }
        let up = upload.insert(u);
        let mut delays = RetryPolicy::new(opts.retry_delay, opts.retries as usize)
            .with_max_delay(opts.max_retry_delay)
            .delays();
        loop {
            run.attempts += 1;
            match self.attempt(source, opts, run, up.as_mut()).await {
                Ok(()) => break,
                Err(e) if e.is_retryable() => match delays.next() {
                    Some(d) => {
                        self.events.emit(
                            ObjectKind::VMImage,
                            name,
                            EventReason::ImageRetrying,
                            format!(
                                "attempt {} failed ({e}); retrying in {:.1} s from byte {}",
                                run.attempts,
                                d.as_secs_f64(),
                                up.written()
                            ),
                        );
                        tokio::time::sleep(d).await;
                    }
                    None => {
                        return Err(Error::new(
                            e.kind(),
                            format!("{} (after {} attempts)", e.message(), run.attempts),
                        )
                        .with_operation("image_download")
                        .persistent());
                    }
                },
                Err(e) => return Err(e),
            }
        }
        let hasher = std::mem::replace(&mut run.hasher, Hasher::new(run.alg));
        let digest = hasher.finish();
        let hex = hex::encode(&digest);
        if let Some(c) = &opts.checksum
            && opts.validate_checksum
            && !c.matches(&digest)
        {
            return Err(Error::new(
                ErrorKind::InvalidSpec,
                format!(
                    "checksum mismatch: expected {c}, got {}:{hex}",
                    c.algorithm().as_str()
                ),
            )
            .with_operation("image_verify")
            .permanent());
        }
        Ok(hex)
    }

    async fn attempt(
        &self,
        source: &dyn ImageSource,
        opts: &PrepareOptions,
        run: &mut Run,
        up: &mut dyn ImageUpload,
    ) -> Result<()> {
        let stalled = |what: &str| {
            Error::unavailable(format!(
                "download stalled: no {what} for {:?}",
                opts.stall_timeout
            ))
            .with_operation("image_download")
        };
        let offset = up.written();
        let s = tokio::time::timeout(bounded(opts.stall_timeout), source.open(offset))
            .await
            .map_err(|_| stalled("response"))??;
        if s.offset != offset {
            if s.offset != 0 {
                return Err(Error::internal(format!(
                    "the source resumed at byte {} instead of {offset}",
                    s.offset
                )));
            }
            up.restart().await?;
            run.hasher = Hasher::new(run.alg);
            if offset > 0 {
                run.restarted += 1;
            }
        } else if offset > 0 {
            run.resumed += 1;
        }
        run.total = s.total_len;
        let mut body = s.body;
        let mut next_report = up.written().saturating_add(self.progress_every);
        let mut last_reported = None;
        loop {
            match tokio::time::timeout(bounded(opts.stall_timeout), body.next()).await {
                Err(_) => return Err(stalled("data")),
                Ok(None) => break,
                Ok(Some(Err(e))) => return Err(e),
                Ok(Some(Ok(chunk))) => {
                    run.hasher.update(&chunk);
                    up.write(chunk).await?;
                    if up.written() >= next_report {
                        next_report = up.written().saturating_add(self.progress_every);
                        last_reported = Some(up.written());
                        self.report(up.written(), run);
                    }
                }
            }
        }
        if last_reported != Some(up.written()) {
            self.report(up.written(), run);
        }
        if let Some(t) = run.total
            && up.written() != t
        {
            return Err(Error::unavailable(format!(
                "download ended early: {} of {t} bytes",
                up.written()
            ))
            .with_operation("image_download"));
        }
        Ok(())
    }

    /// The server-side path: the sink's storage fetches `url` itself, under the same options.
    async fn prepare_remote(
        &self,
        image: &mut VMImage,
        target: &ImageTarget,
        remote: &dyn RemoteFetch,
        url: &str,
        source: &dyn ImageSource,
        opts: &PrepareOptions,
    ) -> Result<PrepareReport> {
        let name = image.metadata.name.clone();
        let checksum = opts.checksum.clone().filter(|_| opts.validate_checksum);
        if let Some(c) = &checksum
            && !remote.verifies(c.algorithm())
        {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "the {} storage fetches the image itself and cannot verify {} checksums; \
                     set spec.prepare.validateChecksum to false to import without verification",
                    self.sink.provider_type(),
                    c.algorithm().as_str()
                ),
            )
            .with_operation("image_prepare")
            .permanent());
        }
        let mut transfer: Option<Box<dyn RemoteTransfer>> = None;
        let mut attempts = 0u32;
        let res = tokio::time::timeout(
            bounded(opts.timeout),
            self.run_remote(
                &name,
                target,
                remote,
                RemoteSource::new(url).with_checksum(checksum.clone()),
                source,
                opts,
                &mut transfer,
                &mut attempts,
            ),
        )
        .await;
        let res = match res {
            Ok(r) => r,
            Err(_) => Err(timed_out(opts)),
        };
        image.status.get_or_insert_with(Default::default).attempts = Some(attempts);
        let stored = match res {
            Ok(stored) => stored,
            Err(e) => {
                return Err(match transfer.take() {
                    Some(t) => after_abort(e, t.abort().await),
                    None => e,
                });
            }
        };
        self.set_phase(image, ImagePhase::Preparing, None);
        self.events.emit(
            ObjectKind::VMImage,
            &name,
            EventReason::ImagePreparing,
            "the storage finished the transfer",
        );
        Ok(PrepareReport {
            image: stored,
            imported: true,
            attempts,
            resumed: 0,
            restarted: attempts.saturating_sub(1),
            digest: checksum.map(|c| c.hex().to_owned()),
        })
    }

    /// Starts the transfer (into `transfer`, so a failure can abort it) and polls it until
    /// it is done, failed, stalled or over its attempts.
    #[allow(clippy::too_many_arguments)]
    async fn run_remote(
        &self,
        name: &str,
        target: &ImageTarget,
        remote: &dyn RemoteFetch,
        rs: RemoteSource,
        source: &dyn ImageSource,
        opts: &PrepareOptions,
        transfer: &mut Option<Box<dyn RemoteTransfer>>,
        attempts: &mut u32,
    ) -> Result<ImageRef> {
        let stall = bounded(opts.stall_timeout);
        let size_hint = tokio::time::timeout(stall, source.probe_len())
            .await
            .ok()
            .flatten();
        let rs = rs.with_size_hint(size_hint);
        let t = transfer.insert(remote.start(target, &rs).await?);
        *attempts = 1;
        let max_attempts = opts.retries.saturating_add(1);
        let mut last: Option<(TransferProgress, u32)> = None;
        let mut changed = Instant::now();
        let mut last_message: Option<String> = None;
        loop {
            match t.poll().await {
                Ok(TransferState::Done(stored)) => {
                    self.report_remote(
                        TransferProgress::Bytes(stored.size_bytes),
                        Some(stored.size_bytes),
                        *attempts,
                    );
                    return Ok(stored);
                }
                Ok(TransferState::Failed(e)) => {
                    return Err(e.context(self.sink.provider_type(), "image_download"));
                }
                Ok(TransferState::Running {
                    progress,
                    attempts: a,
                    message,
                }) => {
                    let a = a.max(1);
                    if message.is_some() {
                        last_message = message;
                    }
                    let why = last_message
                        .as_deref()
                        .map(|m| format!(": {m}"))
                        .unwrap_or_default();
                    if a > max_attempts {
                        *attempts = a;
                        return Err(Error::unavailable(format!(
                            "the storage's transfer failed {} times{why} (after {a} attempts)",
                            a - 1
                        ))
                        .with_operation("image_download")
                        .persistent());
                    }
                    if a > *attempts {
                        self.events.emit(
                            ObjectKind::VMImage,
                            name,
                            EventReason::ImageRetrying,
                            format!(
                                "attempt {} failed{why}; the storage retries (attempt {a} of at most {max_attempts})",
                                a - 1
                            ),
                        );
                        *attempts = a;
                    }
                    if last != Some((progress, a)) {
                        last = Some((progress, a));
                        changed = Instant::now();
                        self.report_remote(progress, size_hint, a);
                    }
                }
                Err(e) if e.is_retryable() => {
                    tracing::debug!(error = %e, "polling the remote transfer failed; polling again");
                }
                Err(e) => return Err(e),
            }
            if changed.elapsed() >= stall {
                return Err(Error::unavailable(format!(
                    "download stalled: no progress for {:?}",
                    opts.stall_timeout
                ))
                .with_operation("image_download")
                .persistent());
            }
            tokio::time::sleep(t.poll_interval().min(stall)).await;
        }
    }

    fn report_remote(&self, progress: TransferProgress, total: Option<u64>, attempt: u32) {
        let bytes = match progress {
            TransferProgress::Bytes(b) => b,
            TransferProgress::Permille(p) => match total {
                Some(t) => t.saturating_mul(u64::from(p.min(1000))) / 1000,
                None => return,
            },
            _ => return,
        };
        if let Some(f) = &self.progress {
            f(Progress {
                bytes,
                total,
                attempt,
            });
        }
    }

    fn report(&self, bytes: u64, run: &Run) {
        if let Some(f) = &self.progress {
            f(Progress {
                bytes,
                total: run.total,
                attempt: run.attempts,
            });
        }
    }
}

/// The error of a preparation that ran out of its overall timeout.
fn timed_out(opts: &PrepareOptions) -> Error {
    Error::timeout(format!(
        "image preparation did not finish within {:?}",
        opts.timeout
    ))
    .with_operation("image_prepare")
}

/// `e`, saying so when removing the partial image (`aborted`) failed too.
fn after_abort(e: Error, aborted: Result<()>) -> Error {
    match aborted {
        Ok(()) => e,
        Err(ae) => Error::new(
            e.kind(),
            format!(
                "{}; removing the partial image also failed: {ae}",
                e.message()
            ),
        ),
    }
}
