//! Image preparation without a network: a generated image is streamed into a directory
//! through `FileSink` with a sha256 check while streaming, progress, and a scripted
//! connection cut that is resumed. (With the core feature `image-http`, `HttpSource`
//! downloads from a URL instead.)
//!
//! ```text
//! cargo run -p virtrigaud-examples --bin prepare_image -- --fast     # the retry wait simulated
//! cargo run -p virtrigaud-examples --bin prepare_image -- --mib 64   # real time
//! ```
//!
//! In a terminal each import shows a progress bar; with the output in a file or a pipe the
//! bar is replaced by a progress line every eighth of the image.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::Parser;
use futures::StreamExt;
use virtrigaud_core::model::{Checksum, VMImage, VMImageSpec};
use virtrigaud_core::orchestration::image::{
    FileSink, ImagePreparer, ImageSource, ImageTarget, PrepareOptions, PrepareReport, Progress,
    SourceStream,
};
use virtrigaud_core::{Error, Result};
use virtrigaud_examples::CurrentBar;

#[derive(Parser, Debug)]
#[command(about = "virtrigaud: VMImage preparation into a directory")]
struct Args {
    /// Run on a paused (simulated) clock: the wait before resuming takes no time.
    #[arg(long)]
    fast: bool,
    /// Size of the generated image, MiB.
    #[arg(long, default_value_t = 32)]
    mib: u64,
    /// Directory to store the images in, kept (default: a temporary directory, removed at
    /// the end).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
}

/// A deterministic generated image that drops the connection once, half-way.
#[derive(Debug)]
struct Generated {
    len: u64,
    cut_once: AtomicBool,
}

fn byte_at(i: u64) -> u8 {
    (i.wrapping_mul(2_654_435_761) >> 13) as u8
}

// `ImageSource` is an `async_trait`; this is what the macro would generate.
impl ImageSource for Generated {
    fn open<'a, 'b>(
        &'a self,
        offset: u64,
    ) -> Pin<Box<dyn Future<Output = Result<SourceStream>> + Send + 'b>>
    where
        'a: 'b,
        Self: 'b,
    {
        Box::pin(self.open_impl(offset))
    }
}

impl Generated {
    /// `len` bytes; with `cut_once` the first connection drops half-way.
    fn new(len: u64, cut_once: bool) -> Self {
        Generated {
            len,
            cut_once: AtomicBool::new(cut_once),
        }
    }

    async fn open_impl(&self, offset: u64) -> Result<SourceStream> {
        let len = self.len;
        let cut = if self.cut_once.swap(false, Ordering::SeqCst) {
            Some(len / 2)
        } else {
            None
        };
        let chunk = 1u64 << 20;
        let body = futures::stream::iter((offset..len).step_by(chunk as usize)).map(move |start| {
            let end = (start + chunk).min(len);
            if cut.is_some_and(|c| start >= c) {
                return Err(Error::unavailable("connection reset (scripted)"));
            }
            Ok((start..end).map(byte_at).collect::<Vec<u8>>().into())
        });
        Ok(SourceStream::new(offset, Some(len), body.boxed()))
    }
}

fn main() {
    virtrigaud_examples::init_tracing();
    let args = Args::parse();
    let rt = match virtrigaud_examples::local_runtime(args.fast) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the tokio runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(run(args)) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

/// Moves the current bar on, or (bar hidden: output to a file or a pipe) prints a line.
fn show_progress(bar: &CurrentBar, p: &Progress) {
    if bar.is_drawn() {
        bar.update(|b| {
            if let Some(total) = p.total {
                b.set_length(total);
            }
            b.set_position(p.bytes);
            b.set_message(format!("attempt {}", p.attempt));
        });
        return;
    }
    let pct = p.total.map_or(0.0, |t| p.bytes as f64 * 100.0 / t as f64);
    bar.print(format!(
        "  progress  attempt {}  {:>6.1} MiB  {pct:>5.1}%",
        p.attempt,
        p.bytes as f64 / 1048576.0
    ));
}

/// Prepares `image` (stored under its own name) from `source` with a progress bar, finished
/// with what became of it.
async fn import(
    preparer: &ImagePreparer,
    bar: &CurrentBar,
    image: &mut VMImage,
    source: &dyn ImageSource,
    opts: &PrepareOptions,
) -> Result<PrepareReport> {
    let name = image.metadata.name.clone();
    bar.start(virtrigaud_examples::progress_bar(
        0,
        &format!("  {name:<13} [{{bar:30}}] {{binary_bytes:>9}}/{{binary_total_bytes}}  {{msg}}"),
    ));
    let result = preparer
        .prepare(image, &ImageTarget::new(name.as_str()), source, opts)
        .await;
    // Let the event printer catch up.
    tokio::task::yield_now().await;
    bar.finish(match &result {
        Ok(r) if r.resumed > 0 => "ready (resumed)",
        Ok(_) => "ready",
        Err(_) => "failed",
    });
    result
}

async fn run(args: Args) -> Result<()> {
    let len = args.mib << 20;
    // A temporary directory is removed when `temporary` drops, at the end of `run`.
    let (dir, temporary) = match args.dir {
        Some(d) => {
            std::fs::create_dir_all(&d)
                .map_err(|e| Error::internal(format!("{}: {e}", d.display())))?;
            (d, None)
        }
        None => {
            let t = tempfile::Builder::new()
                .prefix("virtrigaud-images-")
                .tempdir()
                .map_err(|e| Error::internal(format!("temporary directory: {e}")))?;
            (t.path().to_path_buf(), Some(t))
        }
    };
    let bar = CurrentBar::default();
    let shown = bar.clone();
    let preparer = ImagePreparer::new(Arc::new(FileSink::new(&dir)))
        .on_progress(len / 8, move |p| show_progress(&shown, &p));
    let mut events = preparer.events().subscribe();
    let printer = bar.clone();
    tokio::spawn(async move {
        while let Ok(e) = events.recv().await {
            printer.print(format!("  event  {e}"));
        }
    });
    // First import: no expected checksum; the digest is computed while streaming.
    let source = Generated::new(len, true);
    let mut image = VMImage::new("ubuntu-22-04", VMImageSpec::default());
    let t0 = tokio::time::Instant::now();
    let r = import(
        &preparer,
        &bar,
        &mut image,
        &source,
        &PrepareOptions::default(),
    )
    .await?;
    let digest = r.digest.clone().unwrap_or_default();
    println!(
        "ready: {} ({} bytes) in {}; attempts {}, resumed {}, sha256 {digest}\n",
        r.image.reference,
        r.image.size_bytes,
        virtrigaud_examples::duration(t0.elapsed()),
        r.attempts,
        r.resumed,
    );
    // Second import of the same bytes with the published checksum: verified while streaming.
    let mut opts = PrepareOptions::default();
    opts.checksum = Some(format!("sha256:{digest}").parse().map_err(
        |e: virtrigaud_core::model::ChecksumParseError| Error::invalid_spec(e.to_string()),
    )?);
    let mut image = VMImage::new("ubuntu-copy", VMImageSpec::default());
    import(
        &preparer,
        &bar,
        &mut image,
        &Generated::new(len, false),
        &opts,
    )
    .await?;
    println!(
        "verified copy: phase {}\n",
        virtrigaud_examples::phase_name(image.status.as_ref().and_then(|s| s.phase))
    );
    // A wrong checksum fails and leaves no partial file.
    let mut wrong = PrepareOptions::default();
    let zero: Checksum = format!("sha256:{}", "0".repeat(64)).parse().map_err(
        |e: virtrigaud_core::model::ChecksumParseError| Error::invalid_spec(e.to_string()),
    )?;
    wrong.checksum = Some(zero);
    let mut image = VMImage::new("tampered", VMImageSpec::default());
    if let Err(e) = import(
        &preparer,
        &bar,
        &mut image,
        &Generated::new(len, false),
        &wrong,
    )
    .await
    {
        println!("tampered image rejected: {e}\n");
    }
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .map_err(|e| Error::internal(e.to_string()))?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    files.sort();
    println!(
        "files in {}: {}{}",
        dir.display(),
        virtrigaud_examples::list(&files),
        if temporary.is_some() {
            " (a temporary directory, removed now: --dir DIR keeps them)"
        } else {
            ""
        }
    );
    Ok(())
}
