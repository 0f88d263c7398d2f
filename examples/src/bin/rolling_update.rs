//! Rolling update: a 10-VM set moves from template v1 to v2 (memory doubled), with
//! `maxUnavailable` / `maxSurge`, graceful stops through the shutdown engine, a boot-time
//! readiness probe, and live progress. On the embedded simulator (the default) the VMs are
//! placed with host anti-affinity over 12 hosts; `--provider-url` runs the same rollout on any
//! provider (built with the example feature of its name, or `full`; credentials from the
//! VIRTRIGAUD_* environment).
//!
//! ```text
//! cargo run -p virtrigaud-examples --bin rolling_update            # real time, about 40 s
//! cargo run -p virtrigaud-examples --bin rolling_update -- --fast  # simulated time, instant
//! cargo run -p virtrigaud-examples --bin rolling_update -- --fast --max-unavailable 30% --max-surge 0
//! cargo run -p virtrigaud-examples --bin rolling_update -- --fast --fail-gate   # pauses
//! # three small VMs on Proxmox, removed again at the end:
//! cargo run -p virtrigaud-examples --features proxmox --bin rolling_update -- \
//!     --provider-url pve+https://pve1:8006 --replicas 3 --memory-mib 512 --disk-gib 1 --cleanup
//! ```
//!
//! In a terminal a progress bar under the timeline counts the updated VMs of each phase;
//! with the output in a file or a pipe the bar is left out.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use indicatif::ProgressBar;
use virtrigaud_core::model::{
    AntiAffinity, ImagePhase, IntOrPercent, ObjectRef, RollingUpdate, StoredImage, UpdateStrategy,
    VMImage, VMImageSpec, VMImageStatus, VMPlacementPolicySpec, VMSet, VMSetSpec, VmDisk,
    VmNetwork, VmResources,
};
use virtrigaud_core::placement::{HostInfo, Resources, SolverPlacer};
use virtrigaud_core::shutdown::ShutdownManager;
use virtrigaud_core::vmset::{Health, RolloutEvent, SET_LABEL, VmSetReconciler, probe_fn};
use virtrigaud_core::{ListOptions, Provider, VmDescription};
use virtrigaud_examples::{Backend, CurrentBar};

#[derive(Parser, Debug)]
#[command(about = "virtrigaud: rolling update of a 10-VM set (on the simulator by default)")]
struct Args {
    /// Run on a paused (simulated) clock: finishes instantly (simulator only).
    #[arg(long)]
    fast: bool,
    /// The provider: `sim://` (default), `qemu:///system`, `vsphere+https://HOST/sdk`,
    /// `pve+https://HOST:8006`, `kubevirt://?namespace=NS`, …
    #[arg(long, default_value = virtrigaud_examples::DEFAULT_PROVIDER_URL)]
    provider_url: String,
    /// The set's name (its VMs are NAME-0, NAME-1, …).
    #[arg(long, default_value = "web")]
    set_name: String,
    /// vCPUs per VM.
    #[arg(long, default_value_t = 2)]
    cpu: u32,
    /// Memory of a v1 VM, MiB (v2 doubles it).
    #[arg(long, default_value_t = 4096)]
    memory_mib: u64,
    /// Give each VM a root disk of this size (GiB).
    #[arg(long)]
    disk_gib: Option<u64>,
    /// Create the VMs from this image, already in the provider's storage (a libvirt volume,
    /// a vSphere template, a PVE volume id, a KubeVirt DataVolume or container disk).
    #[arg(long)]
    image: Option<String>,
    /// Attach each VM to this network.
    #[arg(long)]
    network: Option<String>,
    /// Place VMs with host anti-affinity from the provider's inventory (always on the
    /// simulator).
    #[arg(long)]
    anti_affinity: bool,
    /// Reconcile rounds allowed per phase (each waits at least 500 ms).
    #[arg(long, default_value_t = 200)]
    rounds: u32,
    /// Scale the set to 0 at the end (deletes its VMs).
    #[arg(long)]
    cleanup: bool,
    /// Replicas.
    #[arg(long, default_value_t = 10)]
    replicas: i32,
    /// maxUnavailable (a count or a percentage such as 25%).
    #[arg(long, default_value = "1")]
    max_unavailable: IntOrPercent,
    /// maxSurge (a count or a percentage).
    #[arg(long, default_value = "2")]
    max_surge: IntOrPercent,
    /// Make the health probe fail on the second v2 VM: the rollout pauses.
    #[arg(long)]
    fail_gate: bool,
}

fn main() {
    virtrigaud_examples::init_tracing();
    let args = Args::parse();
    let runtime = match virtrigaud_examples::runtime(args.fast, &args.provider_url) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the tokio runtime: {e}");
            std::process::exit(1);
        }
    };
    let ok = runtime.block_on(run(args));
    std::process::exit(if ok { 0 } else { 1 });
}

fn web_set(args: &Args, version: &str, memory_mib: u64) -> VMSet {
    let mut spec = VMSetSpec::default();
    spec.replicas = Some(args.replicas);
    if let Some(size) = args.disk_gib {
        let mut disk = VmDisk::default();
        disk.name = "root".into();
        disk.size_gib = size;
        spec.template.spec.disks = vec![disk];
    }
    if let Some(net) = &args.network {
        let mut n = VmNetwork::default();
        n.name = "net0".into();
        n.network_ref = Some(ObjectRef::new(net.as_str()));
        spec.template.spec.networks = vec![n];
    }
    spec.template.spec.image_ref = args.image.as_ref().map(|_| ObjectRef::new(CLI_IMAGE));
    spec.selector
        .match_labels
        .insert("app".into(), "web".into());
    let labels = &mut spec.template.metadata.labels;
    labels.insert("app".into(), "web".into());
    labels.insert("version".into(), version.into());
    let mut res = VmResources::default();
    res.cpu = Some(args.cpu);
    res.memory_mib = Some(memory_mib);
    spec.template.spec.resources = Some(res);
    let mut ru = RollingUpdate::default();
    ru.max_unavailable = Some(args.max_unavailable);
    ru.max_surge = Some(args.max_surge);
    let mut strategy = UpdateStrategy::default();
    strategy.rolling_update = Some(ru);
    spec.update_strategy = Some(strategy);
    VMSet::new(args.set_name.as_str(), spec)
}

/// The `VMImage` name the template's `imageRef` uses for `--image`.
const CLI_IMAGE: &str = "cli-image";

/// A catalogue with one `VMImage`, [`CLI_IMAGE`], already prepared on `provider_type` as
/// `reference` (a volume, template or DataVolume the provider has).
fn image_catalogue(reference: &str, provider_type: &str) -> BTreeMap<String, VMImage> {
    let mut status = VMImageStatus::default();
    status.phase = Some(ImagePhase::Ready);
    status.stored = Some(StoredImage::new(provider_type, reference, 0));
    let mut image = VMImage::new(CLI_IMAGE, VMImageSpec::default());
    image.status = Some(status);
    BTreeMap::from([(CLI_IMAGE.to_owned(), image)])
}

fn describe(e: &RolloutEvent) -> Option<String> {
    Some(match e {
        RolloutEvent::Observed {
            replicas,
            existing,
            updated,
            available,
            ..
        } => {
            let bar: String = (0..*replicas)
                .map(|i| if i < *updated { '#' } else { '.' })
                .collect();
            format!(
                "[{bar}] updated {updated}/{replicas}, available {available}, existing {existing}"
            )
        }
        RolloutEvent::Creating { vm, placement, .. } => format!("  + {vm} at {placement}"),
        RolloutEvent::Stopping { vm, reason, .. } => format!(
            "  - {vm} stopping ({})",
            virtrigaud_examples::removal_reason(*reason)
        ),
        RolloutEvent::Deleted { vm, shutdown, .. } => format!("  - {vm} deleted after {shutdown}"),
        RolloutEvent::CreateFailed { vm, error, .. } => format!("  ! {vm}: {error}"),
        RolloutEvent::RemoveFailed { vm, error, .. } => format!("  ! {vm}: {error}"),
        RolloutEvent::PlacementFailed { reason, .. } => format!("  ! placement: {reason}"),
        RolloutEvent::Paused { vm, reason, .. } => {
            format!("  PAUSED: gate failed on {vm}: {reason}")
        }
        RolloutEvent::Resumed { .. } => "  resumed".into(),
        RolloutEvent::Converged { template_hash, .. } => format!("  converged on {template_hash}"),
        _ => return None,
    })
}

/// The bar of one phase: the set's members on template `version` out of `replicas`.
fn phase_bar(replicas: i32, version: &str) -> ProgressBar {
    let bar = virtrigaud_examples::progress_bar(
        u64::try_from(replicas).unwrap_or(0),
        &format!("[{{prefix}}] {version} [{{bar:30}}] {{pos}}/{{len}} updated, {{msg}}"),
    );
    bar.set_prefix("  0.00s");
    bar.set_message("0 available");
    bar
}

/// Prints the rollout's timeline (a line repeated is left out) and moves the current bar on
/// as a pass observes updated members.
async fn print_events(
    mut events: tokio::sync::broadcast::Receiver<RolloutEvent>,
    start: tokio::time::Instant,
    bar: CurrentBar,
) {
    let mut last = String::new();
    while let Ok(e) = events.recv().await {
        let t = start.elapsed().as_secs_f64();
        if let RolloutEvent::Observed {
            replicas,
            updated,
            available,
            ..
        } = &e
        {
            bar.update(|b| {
                b.set_length(u64::from(*replicas));
                b.set_position(u64::from(*updated));
                b.set_prefix(format!("{t:6.2}s"));
                b.set_message(format!("{available} available"));
            });
        }
        if let Some(line) = describe(&e)
            && line != last
        {
            bar.print(format!("[{t:6.2}s] {line}"));
            last = line;
        }
    }
}

async fn run(args: Args) -> bool {
    let (provider, simulated): (Arc<dyn Provider>, bool) =
        match virtrigaud_examples::backend(&args.provider_url).await {
            Ok(Backend::Simulator(sim)) => {
                // The 12 hosts of the demo, unless the URL brought its own (`sim://?hosts=N`).
                if sim.inventory().await.is_ok_and(|i| i.hosts.is_empty()) {
                    for i in 1..=12 {
                        sim.add_host(HostInfo::new(
                            format!("esx-{i:02}"),
                            Resources::new(16, 32768),
                        ));
                    }
                }
                (Arc::new(sim), true)
            }
            Ok(Backend::Remote(p)) => (p, false),
            Err(e) => {
                eprintln!("cannot connect: {e}");
                return false;
            }
        };
    let mut aa = AntiAffinity::default();
    aa.host_anti_affinity = true;
    let mut policy = VMPlacementPolicySpec::default();
    policy.anti_affinity = Some(aa);

    // Readiness: a VM is ready 2 s after it is first seen running (it "boots").
    let first_seen: Arc<Mutex<BTreeMap<String, tokio::time::Instant>>> = Arc::default();
    let fail_gate = args.fail_gate;
    let gated = format!("{}-2", args.set_name);
    let probe = probe_fn(move |vm: VmDescription| {
        let gated = gated.clone();
        let first_seen = Arc::clone(&first_seen);
        async move {
            let now = tokio::time::Instant::now();
            let since = *first_seen
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(vm.name.clone())
                .or_insert(now);
            let v2 = vm.labels.get("version").map(String::as_str) == Some("v2");
            if fail_gate && v2 && vm.name == gated {
                Health::Failed("GET /healthz: 503".into())
            } else if now.duration_since(since) < Duration::from_secs(2) {
                Health::NotReady("booting".into())
            } else {
                Health::Ready
            }
        }
    });
    let mut reconciler = VmSetReconciler::new(
        Arc::clone(&provider),
        ShutdownManager::new(Arc::clone(&provider)),
    )
    .probe(probe);
    if let Some(reference) = &args.image {
        reconciler = reconciler.images(Arc::new(image_catalogue(
            reference,
            provider.provider_type(),
        )));
    }
    if simulated || args.anti_affinity {
        reconciler = reconciler
            .placer(Arc::new(SolverPlacer::new(Arc::clone(&provider))))
            .placement_policy(policy);
    }

    let start = tokio::time::Instant::now();
    let events = reconciler.subscribe();
    let bar = CurrentBar::default();
    let printer = tokio::spawn(print_events(events, start, bar.clone()));

    let interval = Duration::from_millis(500);
    let v1 = web_set(&args, "v1", args.memory_mib);
    println!(
        "creating {} (v1, {} replicas) on {}",
        args.set_name,
        args.replicas,
        virtrigaud::redact_url(&args.provider_url)
    );
    bar.start(phase_bar(args.replicas, "v1"));
    if let Err(e) = reconciler
        .run_until_converged(&v1, interval, args.rounds)
        .await
    {
        bar.finish("v1 did not converge");
        eprintln!("v1 did not converge: {e}");
        return false;
    }
    // Let the printer catch up before the next phase.
    tokio::time::sleep(Duration::from_millis(1)).await;
    bar.finish("v1 converged");
    let v2 = web_set(&args, "v2", args.memory_mib * 2);
    let (u, s) = v2
        .spec
        .update_strategy
        .as_ref()
        .and_then(|s| s.rolling_update.clone())
        .unwrap_or_default()
        .resolve(v2.spec.replicas());
    bar.start(phase_bar(args.replicas, "v2"));
    bar.print(format!(
        "\nrolling out v2 (memory {} MiB -> {} MiB): maxUnavailable {u}, maxSurge {s}",
        args.memory_mib,
        args.memory_mib * 2
    ));
    let result = reconciler
        .run_until_converged(&v2, interval, args.rounds)
        .await;
    tokio::task::yield_now().await;
    printer.abort();
    bar.finish(match &result {
        Ok(_) => "v2 converged",
        Err(_) => "v2 did not converge",
    });

    let mut opts = ListOptions::default();
    opts.labels.insert(SET_LABEL.into(), args.set_name.clone());
    let mut vms = provider.list_vms(&opts).await.unwrap_or_default();
    vms.sort_by(|a, b| (a.name.len(), &a.name).cmp(&(b.name.len(), &b.name)));
    println!(
        "\n{:<8} {:<8} {:<8} {:<10} {:>9}",
        "VM", "version", "host", "state", "memory"
    );
    for vm in &vms {
        println!(
            "{:<8} {:<8} {:<8} {:<10} {:>5} MiB",
            vm.name,
            vm.labels.get("version").map_or("-", String::as_str),
            vm.host.as_deref().unwrap_or("-"),
            vm.power_state.as_str(),
            vm.memory_mib
        );
    }
    let ok = match result {
        Ok(_) => {
            println!(
                "\nrollout complete in {}",
                virtrigaud_examples::duration(start.elapsed())
            );
            true
        }
        Err(e) => {
            println!("\nrollout did not complete: {e}");
            fail_gate
        }
    };
    if args.cleanup {
        let mut gone = v2.clone();
        gone.spec.replicas = Some(0);
        match reconciler
            .run_until_converged(&gone, interval, args.rounds)
            .await
        {
            Ok(_) => println!("cleanup: {} scaled to 0", args.set_name),
            Err(e) => {
                println!("cleanup failed: {e}");
                return false;
            }
        }
    }
    ok
}
