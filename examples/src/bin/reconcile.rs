//! The reconcilers over a directory of YAML documents: every `*.yaml` file of DIR (default:
//! the seed fixtures of `virtrigaud-core/tests/fixtures/seeds`), in file-name order, is
//! stored in an in-memory "apiserver" and the objects it touched are reconciled against the
//! provider until they settle.
//!
//! ```text
//! cargo run -p virtrigaud-examples --bin reconcile -- --fast        # the seeds, simulated clock
//! cargo run -p virtrigaud-examples --bin reconcile -- DIR --passes 50
//! cargo run -p virtrigaud-examples --features libvirt --bin reconcile -- \
//!     --provider-url qemu:///system DIR                            # real VMs, looked up by name
//! ```
//!
//! - A document with `apiVersion`/`kind` is stored under kind/name (a later document of the
//!   same kind/name replaces its spec and keeps its status). One without is an RFC 7386 merge
//!   patch, applied to the most recent object whose kind it fits (`spec.resources`,
//!   `spec.disks`, `spec.snapshot`, `spec.placementRef`: a VirtualMachine;
//!   `spec.customization`: a VMClone).
//! - A document that does not parse or validate is reported with the typed error naming the
//!   field, and skipped (the seeds' flattened `001_*` files and the placeholder checksum of
//!   `003_10` are, on purpose).
//! - On the simulator, the VMs the documents name (a VirtualMachine, a `vmRef`, a
//!   `sourceRef`, a Wukong) are created when missing, and so are the hosts and datastores a
//!   placement policy's hard constraints name; a preStop hook "runs" in the simulated guest
//!   (exit 0). On a real provider VMs are looked up by name and a missing one is reported.
//! - Reconcilers: `VmReconciler` (VirtualMachine), `SnapshotReconciler`, `CloneReconciler`,
//!   `PlacementPolicyReconciler` (usedBy: the VirtualMachines whose placementRef names it),
//!   `LifecycleReconciler` for the `spec.lifecycleAction` of seed 004's Wukong documents
//!   (RunStrategy Manual, on the VM of the same name), `VmSetReconciler` when the template's
//!   image can be resolved, `ImageReconciler` into a temporary directory on the simulator.
//! - Each pass prints one line (object, condition or phase, VM power state, simulated time)
//!   and the orchestrator's events, indented, as they happen. A summary table ends the run;
//!   the exit code is 0 when every object that parsed settled without error.
//!
//! `RUST_LOG=virtrigaud=debug` shows the reconcilers' steps on stderr.

use std::path::{Path, PathBuf};

use clap::Parser;

// The crate root's modules, next to it in `reconcile/`.
#[path = "reconcile/drive.rs"]
mod drive;
#[path = "reconcile/store.rs"]
mod store;

use drive::{Driver, Outcome};
use store::{Applied, Key, Rejected, Store};

#[derive(Parser, Debug)]
#[command(about = "virtrigaud: reconcile a directory of YAML documents (default: the seeds)")]
struct Args {
    /// Directory of `*.yaml` documents (default: virtrigaud-core's seed fixtures).
    dir: Option<PathBuf>,
    /// Run on a paused (simulated) clock: finishes instantly.
    #[arg(long)]
    fast: bool,
    /// The provider: `sim://` (default), or `qemu:///system`, `vsphere+https://HOST/sdk`,
    /// `pve+https://HOST:8006`, `kubevirt://` (needs the example feature of that provider;
    /// credentials from the VIRTRIGAUD_* environment).
    #[arg(long, alias = "libvirt-uri", default_value = virtrigaud_examples::DEFAULT_PROVIDER_URL)]
    provider_url: String,
    /// At most this many reconcile passes per object after each file.
    #[arg(long, default_value_t = 20)]
    passes: u32,
}

fn main() {
    virtrigaud_examples::init_tracing();
    let args = Args::parse();
    let rt = match virtrigaud_examples::runtime(args.fast, &args.provider_url) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the tokio runtime: {e}");
            std::process::exit(1);
        }
    };
    let ok = rt.block_on(run(args));
    std::process::exit(if ok { 0 } else { 1 });
}

fn seeds_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../virtrigaud-core/tests/fixtures/seeds")
}

/// The `*.yaml` files of `dir`, by file name.
fn yaml_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    Ok(files)
}

/// What became of one file or object, for the summary.
struct Row {
    object: String,
    outcome: Outcome,
}

async fn run(args: Args) -> bool {
    let dir = args.dir.clone().unwrap_or_else(seeds_dir);
    let dir = dir.canonicalize().unwrap_or(dir);
    let files = match yaml_files(&dir) {
        Ok(f) if !f.is_empty() => f,
        Ok(_) => {
            eprintln!("{}: no *.yaml files", dir.display());
            return false;
        }
        Err(e) => {
            eprintln!("{}: {e}", dir.display());
            return false;
        }
    };
    let mut driver = match Driver::connect(&args.provider_url, args.passes).await {
        Ok(d) => d,
        Err(e) => {
            eprintln!("cannot connect: {e}");
            return false;
        }
    };
    println!(
        "virtrigaud reconcile: {} files of {} against the {} provider{}",
        files.len(),
        dir.display(),
        driver.provider_type(),
        if args.fast { " (simulated clock)" } else { "" }
    );

    let mut store = Store::default();
    let mut rows: Vec<Row> = Vec::new();
    for path in &files {
        let file = path
            .file_name()
            .map_or_else(String::new, |f| f.to_string_lossy().into_owned());
        println!("\n{file}");
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                println!("  cannot read: {e}");
                rows.push(Row {
                    object: file,
                    outcome: Outcome::Failed(e.to_string()),
                });
                continue;
            }
        };
        let applied = virtrigaud_core::model::yaml_to_value(&text)
            .map_err(|error| Rejected::Invalid {
                target: None,
                error,
            })
            .and_then(|doc| store.apply(doc));
        let key = match applied {
            Ok(Applied::Stored { key, replaced }) => {
                let what = if replaced {
                    "replaces the spec of"
                } else {
                    "stored as"
                };
                println!("  {what} {key}");
                key
            }
            Ok(Applied::Patched { key }) => {
                println!("  merge patch applied to {key}");
                key
            }
            Err(rejected) => {
                // A YAML syntax error quotes the lines around it: indent them.
                println!(
                    "  skipped: {}",
                    rejected.to_string().replace('\n', "\n    ")
                );
                let outcome = match rejected {
                    Rejected::Invalid { .. } => Outcome::Invalid(rejected.to_string()),
                    Rejected::Unplaceable(why) => Outcome::Skipped(why),
                };
                rows.push(Row {
                    object: file,
                    outcome,
                });
                continue;
            }
        };
        for touched in driver.touched_by(&store, &key) {
            let outcome = driver.reconcile(&mut store, &touched).await;
            record(&mut rows, &touched, outcome);
        }
    }
    driver.drain_events().await;
    summary(&rows)
}

/// The latest outcome of an object replaces its earlier one (the row keeps its place).
fn record(rows: &mut Vec<Row>, key: &Key, outcome: Outcome) {
    let object = key.to_string();
    match rows.iter_mut().find(|r| r.object == object) {
        Some(row) => row.outcome = outcome,
        None => rows.push(Row { object, outcome }),
    }
}

/// Prints the table; whether every object that parsed settled without error.
fn summary(rows: &[Row]) -> bool {
    let width = rows
        .iter()
        .map(|r| r.object.len())
        .max()
        .unwrap_or(6)
        .max(6);
    println!("\n{:<width$}  outcome", "object");
    println!("{}", "-".repeat(width + 60));
    for r in rows {
        let outcome = r.outcome.to_string();
        let first = outcome.lines().next().unwrap_or_default();
        println!("{:<width$}  {first}", r.object);
    }
    let failed = rows.iter().filter(|r| r.outcome.is_failure()).count();
    let settled = rows
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Settled(_)))
        .count();
    let invalid = rows
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Invalid(_)))
        .count();
    println!(
        "\n{settled} settled, {failed} failed, {invalid} invalid documents skipped, {} other",
        rows.len() - settled - failed - invalid
    );
    failed == 0
}
