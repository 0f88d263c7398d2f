//! Reconfigure a VM on the simulator: an online change, then one beyond the live limits that
//! needs a graceful power cycle, with the plan, the events and the final state.
//!
//! ```text
//! cargo run -p virtrigaud-examples --bin reconfigure            # real time (a few seconds)
//! cargo run -p virtrigaud-examples --bin reconfigure -- --fast  # simulated time, instant
//! cargo run -p virtrigaud-examples --features libvirt --bin reconfigure -- \
//!     --provider-url qemu:///system --vm NAME --disk vda           # a real domain
//! ```

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use virtrigaud_core::model::{ExpandPolicy, VirtualMachineStatus};
use virtrigaud_core::orchestration::{
    DiskChange, Orchestrator, ReconfigureOptions, ResourceChange,
};
use virtrigaud_core::sim::{GuestBehavior, Simulator};

#[derive(Parser, Debug)]
#[command(about = "virtrigaud: plan and apply a reconfiguration on the simulator")]
struct Args {
    /// Run on a paused (simulated) clock.
    #[arg(long)]
    fast: bool,
    /// The provider (default: the simulator); a real one needs the example feature of its
    /// name and `--vm` (credentials from the VIRTRIGAUD_* environment).
    #[arg(long, alias = "libvirt-uri", default_value = virtrigaud_examples::DEFAULT_PROVIDER_URL)]
    provider_url: String,
    /// The VM to use on a real provider (its name, or its id).
    #[arg(long)]
    vm: Option<String>,
    /// The disk to grow to 50 GiB in the first step (`none` to skip).
    #[arg(long, default_value = "root")]
    disk: String,
    /// vCPUs to grow to in the second step (the live maximum is 8).
    #[arg(long, default_value_t = 12)]
    cpu: u32,
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
    if let Err(e) = rt.block_on(run(args)) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> virtrigaud_core::Result<()> {
    let (provider, vm) =
        virtrigaud_examples::target(&args.provider_url, args.vm.as_deref(), |sim: &Simulator| {
            sim.add_vm(
                "web-server",
                GuestBehavior::cooperative().acpi_after(Duration::from_secs(2)),
            )
        })
        .await?;
    let orch = Orchestrator::new(Arc::clone(&provider));
    let mut events = orch.events().subscribe();
    tokio::spawn(async move {
        while let Ok(e) = events.recv().await {
            println!("  event  {e}");
        }
    });
    let opts = ReconfigureOptions::default();
    let mut status = VirtualMachineStatus::default();
    for change in [
        if args.disk == "none" {
            ResourceChange::default().cpu(4)
        } else {
            ResourceChange::default().cpu(4).disk(DiskChange::new(
                args.disk.as_str(),
                50,
                ExpandPolicy::Online,
            ))
        },
        ResourceChange::default().cpu(args.cpu).memory_mib(16384),
    ] {
        let plan = orch.plan_reconfigure(&vm, &change, &opts).await?;
        println!(
            "plan for {}:\n  mode: {}",
            virtrigaud_examples::resource_change(&change),
            virtrigaud_examples::plan_mode(&plan.mode)
        );
        for r in &plan.power_cycle_reasons {
            println!("  because {r}");
        }
        let report = orch.reconfigure(&vm, &change, &opts, &mut status).await?;
        tokio::task::yield_now().await;
        let d = provider.describe(&vm).await?;
        println!(
            "done: {} (downtime {}); now {} vCPUs, {} MiB, root {} GiB, {}\n",
            report.outcome.as_str(),
            virtrigaud_examples::optional_duration(report.downtime),
            d.cpu,
            d.memory_mib,
            d.disks.first().map_or(0, |disk| disk.size_gib),
            d.power_state
        );
    }
    println!(
        "status.lastReconfigureTime = {}",
        status.last_reconfigure_time.as_deref().unwrap_or("unset")
    );
    Ok(())
}
