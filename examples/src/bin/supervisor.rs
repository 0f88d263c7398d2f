//! A run-strategy supervisor on the simulator: RerunOnFailure restarts a crashed VM with
//! backoff, leaves a clean shutdown alone, and a user `stop` / `start` goes through it.
//!
//! With `--provider-url` (and the example feature of that provider) it supervises a real,
//! stopped VM (`--vm`); the guest's own clean shutdown is then an ACPI request.
//!
//! ```text
//! cargo run -p virtrigaud-examples --bin supervisor -- --fast
//! cargo run -p virtrigaud-examples --bin supervisor -- --fast --strategy Always
//! ```

use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use virtrigaud_core::model::{LifecycleAction, RunStrategy};
use virtrigaud_core::orchestration::{Orchestrator, Supervisor, SupervisorConfig};
use virtrigaud_core::sim::{GuestBehavior, Simulator};
use virtrigaud_core::{ShutdownChannel, ShutdownRequestOptions};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Strategy {
    Always,
    RerunOnFailure,
    Manual,
    Halted,
    Once,
}

#[derive(Parser, Debug)]
#[command(about = "virtrigaud: a run-strategy supervisor on the simulator")]
struct Args {
    /// Run on a paused (simulated) clock.
    #[arg(long)]
    fast: bool,
    /// The run strategy to enforce.
    #[arg(long, value_enum, default_value_t = Strategy::RerunOnFailure)]
    strategy: Strategy,
    /// The provider (default: the simulator); a real one needs `--vm`.
    #[arg(long, default_value = virtrigaud_examples::DEFAULT_PROVIDER_URL)]
    provider_url: String,
    /// The VM to supervise on a real provider (its name, or its id).
    #[arg(long)]
    vm: Option<String>,
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
    let strategy = match args.strategy {
        Strategy::Always => RunStrategy::Always,
        Strategy::RerunOnFailure => RunStrategy::RerunOnFailure,
        Strategy::Manual => RunStrategy::Manual,
        Strategy::Halted => RunStrategy::Halted,
        Strategy::Once => RunStrategy::Once,
    };
    let (provider, vm) =
        virtrigaud_examples::target(&args.provider_url, args.vm.as_deref(), |sim: &Simulator| {
            sim.add_stopped_vm(
                "worker",
                GuestBehavior::cooperative().acpi_after(Duration::from_secs(1)),
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
    let mut config = SupervisorConfig::default();
    config.poll_interval = Duration::from_millis(500);
    config.restart_backoff = Duration::from_secs(1);
    config.min_uptime = Duration::from_secs(2);
    let sup = Supervisor::spawn(orch, vm.clone(), strategy, config);
    let strategy = virtrigaud_examples::serde_name(&strategy);
    tokio::time::sleep(Duration::from_secs(3)).await;
    println!(
        "[{strategy}] after start-up: {}",
        provider.power_state(&vm).await?
    );

    println!("[{strategy}] the guest shuts itself down cleanly ...");
    let _ = provider
        .request_shutdown(
            &vm,
            ShutdownChannel::Acpi,
            &ShutdownRequestOptions::default(),
        )
        .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    println!(
        "[{strategy}] 5 s later: {} (restarts so far: {})",
        provider.power_state(&vm).await?,
        sup.status().restarts
    );

    println!("[{strategy}] user action: start, then stop with gracePeriodSeconds 10");
    match sup.action(LifecycleAction::start()).await {
        Ok(s) => println!("  start -> {}", virtrigaud_examples::serde_name(&s.state)),
        Err(e) => println!("  start refused: {e}"),
    }
    match sup
        .action(LifecycleAction::stop().with_grace_period_seconds(10))
        .await
    {
        Ok(s) => println!("  stop -> {}", virtrigaud_examples::serde_name(&s.state)),
        Err(e) => println!("  stop failed: {e}"),
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let st = sup.status();
    println!(
        "[{strategy}] final: {}, supervisor {}, restarts {}",
        provider.power_state(&vm).await?,
        virtrigaud_examples::supervisor_phase(st.phase),
        st.restarts
    );
    sup.shutdown().await;
    Ok(())
}
