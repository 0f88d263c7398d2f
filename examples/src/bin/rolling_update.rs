//! Rolling update: a 10-VM set moves from template v1 to v2 on the embedded simulator, with
//! `maxUnavailable` / `maxSurge`, host anti-affinity placement over 12 hosts, graceful stops
//! through the shutdown engine, a boot-time readiness probe, and live progress.
//!
//! ```text
//! cargo run -p virtrigaud-examples --bin rolling_update            # real time, about 40 s
//! cargo run -p virtrigaud-examples --bin rolling_update -- --fast  # simulated time, instant
//! cargo run -p virtrigaud-examples --bin rolling_update -- --fast --max-unavailable 30% --max-surge 0
//! cargo run -p virtrigaud-examples --bin rolling_update -- --fast --fail-gate   # pauses
//! ```

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use virtrigaud_core::model::{
    AntiAffinity, IntOrPercent, RollingUpdate, UpdateStrategy, VMPlacementPolicySpec, VMSet,
    VMSetSpec, VmResources,
};
use virtrigaud_core::placement::{HostInfo, Resources, SolverPlacer};
use virtrigaud_core::shutdown::ShutdownManager;
use virtrigaud_core::sim::Simulator;
use virtrigaud_core::vmset::{Health, RolloutEvent, SET_LABEL, VmSetReconciler, probe_fn};
use virtrigaud_core::{ListOptions, Provider, VmDescription};

#[derive(Parser, Debug)]
#[command(about = "virtrigaud: rolling update of a 10-VM set on the simulator")]
struct Args {
    /// Run on a paused (simulated) clock: finishes instantly.
    #[arg(long)]
    fast: bool,
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
    let args = Args::parse();
    let mut builder = tokio::runtime::Builder::new_current_thread();
    builder.enable_time();
    if args.fast {
        builder.start_paused(true);
    }
    let runtime = match builder.build() {
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
    spec.selector
        .match_labels
        .insert("app".into(), "web".into());
    let labels = &mut spec.template.metadata.labels;
    labels.insert("app".into(), "web".into());
    labels.insert("version".into(), version.into());
    let mut res = VmResources::default();
    res.cpu = Some(2);
    res.memory_mib = Some(memory_mib);
    spec.template.spec.resources = Some(res);
    let mut ru = RollingUpdate::default();
    ru.max_unavailable = Some(args.max_unavailable);
    ru.max_surge = Some(args.max_surge);
    let mut strategy = UpdateStrategy::default();
    strategy.rolling_update = Some(ru);
    spec.update_strategy = Some(strategy);
    VMSet::new("web", spec)
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
        RolloutEvent::Stopping { vm, reason, .. } => format!("  - {vm} stopping ({reason:?})"),
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

async fn run(args: Args) -> bool {
    let sim = Simulator::new();
    for i in 1..=12 {
        sim.add_host(HostInfo::new(
            format!("esx-{i:02}"),
            Resources::new(16, 32768),
        ));
    }
    let provider: Arc<dyn Provider> = Arc::new(sim.clone());
    let mut aa = AntiAffinity::default();
    aa.host_anti_affinity = true;
    let mut policy = VMPlacementPolicySpec::default();
    policy.anti_affinity = Some(aa);

    // Readiness: a VM is ready 2 s after it is first seen running (it "boots").
    let first_seen: Arc<Mutex<BTreeMap<String, tokio::time::Instant>>> = Arc::default();
    let fail_gate = args.fail_gate;
    let probe = probe_fn(move |vm: VmDescription| {
        let first_seen = Arc::clone(&first_seen);
        async move {
            let now = tokio::time::Instant::now();
            let since = *first_seen
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(vm.name.clone())
                .or_insert(now);
            let v2 = vm.labels.get("version").map(String::as_str) == Some("v2");
            if fail_gate && v2 && vm.name == "web-2" {
                Health::Failed("GET /healthz: 503".into())
            } else if now.duration_since(since) < Duration::from_secs(2) {
                Health::NotReady("booting".into())
            } else {
                Health::Ready
            }
        }
    });
    let reconciler = VmSetReconciler::new(
        Arc::clone(&provider),
        ShutdownManager::new(Arc::clone(&provider)),
    )
    .placer(Arc::new(SolverPlacer::new(Arc::clone(&provider))))
    .placement_policy(policy)
    .probe(probe);

    let start = tokio::time::Instant::now();
    let mut events = reconciler.subscribe();
    let printer = tokio::spawn(async move {
        let mut last = String::new();
        while let Ok(e) = events.recv().await {
            if let Some(line) = describe(&e)
                && line != last
            {
                println!("[{:6.2}s] {line}", start.elapsed().as_secs_f64());
                last = line;
            }
        }
    });

    let interval = Duration::from_millis(500);
    let v1 = web_set(&args, "v1", 4096);
    println!("creating web (v1, {} replicas)", args.replicas);
    if let Err(e) = reconciler.run_until_converged(&v1, interval, 100).await {
        eprintln!("v1 did not converge: {e}");
        return false;
    }
    // Let the printer catch up before the next phase.
    tokio::time::sleep(Duration::from_millis(1)).await;
    let v2 = web_set(&args, "v2", 8192);
    let (u, s) = v2
        .spec
        .update_strategy
        .as_ref()
        .and_then(|s| s.rolling_update.clone())
        .unwrap_or_default()
        .resolve(v2.spec.replicas());
    println!("\nrolling out v2 (memory 4 GiB -> 8 GiB): maxUnavailable {u}, maxSurge {s}");
    let result = reconciler.run_until_converged(&v2, interval, 200).await;
    tokio::task::yield_now().await;
    printer.abort();

    let mut opts = ListOptions::default();
    opts.labels.insert(SET_LABEL.into(), "web".into());
    let mut vms = provider.list_vms(&opts).await.unwrap_or_default();
    vms.sort_by(|a, b| (a.name.len(), &a.name).cmp(&(b.name.len(), &b.name)));
    println!(
        "\n{:<8} {:<8} {:<8} {:<10} {:>8}",
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
    match result {
        Ok(_) => {
            println!(
                "\nrollout complete in {:.1}s",
                start.elapsed().as_secs_f64()
            );
            true
        }
        Err(e) => {
            println!("\nrollout did not complete: {e}");
            fail_gate
        }
    }
}
