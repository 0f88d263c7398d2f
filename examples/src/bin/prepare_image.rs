//! Image preparation without a network: a generated image is streamed into a directory
//! through `FileSink` with a sha256 check while streaming, progress, and a scripted
//! connection cut that is resumed. (With the core feature `image-http`, `HttpSource`
//! downloads from a URL instead.)
//!
//! ```text
//! cargo run -p virtrigaud-examples --bin prepare_image -- --mib 64
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::Parser;
use futures::StreamExt;
use virtrigaud_core::model::{Checksum, VMImage, VMImageSpec};
use virtrigaud_core::orchestration::image::{
    FileSink, ImagePreparer, ImageSource, ImageTarget, PrepareOptions, SourceStream,
};
use virtrigaud_core::{Error, Result};

#[derive(Parser, Debug)]
#[command(about = "virtrigaud: VMImage preparation into a directory")]
struct Args {
    /// Size of the generated image, MiB.
    #[arg(long, default_value_t = 32)]
    mib: u64,
    /// Directory to store the image in (default: a new temporary directory).
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
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
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

async fn run(args: Args) -> Result<()> {
    let len = args.mib << 20;
    let dir = match args.dir {
        Some(d) => d,
        None => {
            let d = std::env::temp_dir().join(format!("virtrigaud-images-{}", std::process::id()));
            std::fs::create_dir_all(&d)
                .map_err(|e| Error::internal(format!("{}: {e}", d.display())))?;
            d
        }
    };
    let preparer =
        ImagePreparer::new(Arc::new(FileSink::new(&dir))).on_progress(len / 8, move |p| {
            let pct = p.total.map_or(0.0, |t| p.bytes as f64 * 100.0 / t as f64);
            println!(
                "  progress  attempt {}  {:>6.1} MiB  {pct:>5.1}%",
                p.attempt,
                p.bytes as f64 / 1048576.0
            );
        });
    let mut events = preparer.events().subscribe();
    tokio::spawn(async move {
        while let Ok(e) = events.recv().await {
            println!("  event  {e}");
        }
    });
    // First import: no expected checksum; the digest is computed while streaming.
    let source = Generated {
        len,
        cut_once: AtomicBool::new(true),
    };
    let mut image = VMImage::new("ubuntu-22-04", VMImageSpec::default());
    let t0 = tokio::time::Instant::now();
    let r = preparer
        .prepare(
            &mut image,
            &ImageTarget::new("ubuntu-22-04"),
            &source,
            &PrepareOptions::default(),
        )
        .await?;
    tokio::task::yield_now().await;
    let digest = r.digest.clone().unwrap_or_default();
    println!(
        "ready: {} ({} bytes) in {:.2} s; attempts {}, resumed {}, sha256 {digest}\n",
        r.image.reference,
        r.image.size_bytes,
        t0.elapsed().as_secs_f64(),
        r.attempts,
        r.resumed,
    );
    // Second import of the same bytes with the published checksum: verified while streaming.
    let mut opts = PrepareOptions::default();
    opts.checksum = Some(format!("sha256:{digest}").parse().map_err(
        |e: virtrigaud_core::model::ChecksumParseError| Error::invalid_spec(e.to_string()),
    )?);
    let mut image = VMImage::new("ubuntu-copy", VMImageSpec::default());
    preparer
        .prepare(
            &mut image,
            &ImageTarget::new("ubuntu-copy"),
            &Generated {
                len,
                cut_once: AtomicBool::new(false),
            },
            &opts,
        )
        .await?;
    println!(
        "verified copy: phase {:?}\n",
        image.status.as_ref().and_then(|s| s.phase)
    );
    // A wrong checksum fails and leaves no partial file.
    let mut wrong = PrepareOptions::default();
    let zero: Checksum = format!("sha256:{}", "0".repeat(64)).parse().map_err(
        |e: virtrigaud_core::model::ChecksumParseError| Error::invalid_spec(e.to_string()),
    )?;
    wrong.checksum = Some(zero);
    let mut image = VMImage::new("tampered", VMImageSpec::default());
    if let Err(e) = preparer
        .prepare(
            &mut image,
            &ImageTarget::new("tampered"),
            &Generated {
                len,
                cut_once: AtomicBool::new(false),
            },
            &wrong,
        )
        .await
    {
        println!("tampered image rejected: {e}");
    }
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .map_err(|e| Error::internal(e.to_string()))?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    files.sort();
    println!("files in {}: {files:?}", dir.display());
    Ok(())
}
