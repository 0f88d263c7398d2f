//! A run-strategy supervisor on the simulator: RerunOnFailure restarts a crashed VM with
//! backoff, leaves a clean shutdown alone, and a user `stop` / `start` goes through it.
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
use virtrigaud_core::{Provider, ShutdownChannel, ShutdownRequestOptions};

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
}

fn main() {
    let args = Args::parse();
    let mut b = tokio::runtime::Builder::new_current_thread();
    b.enable_time();
    if args.fast {
        b.start_paused(true);
    }
    let rt = match b.build() {
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
    let sim = Simulator::new();
    let vm = sim.add_stopped_vm(
        "worker",
        GuestBehavior::cooperative().acpi_after(Duration::from_secs(1)),
    );
    let orch = Orchestrator::new(Arc::new(sim.clone()));
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
    tokio::time::sleep(Duration::from_secs(3)).await;
    println!(
        "[{strategy:?}] after start-up: {}",
        sim.power_state(&vm).await?
    );

    println!("[{strategy:?}] the guest shuts itself down cleanly ...");
    let _ = sim
        .request_shutdown(
            &vm,
            ShutdownChannel::Acpi,
            &ShutdownRequestOptions::default(),
        )
        .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    println!(
        "[{strategy:?}] 5 s later: {} (restarts so far: {})",
        sim.power_state(&vm).await?,
        sup.status().restarts
    );

    println!("[{strategy:?}] user action: start, then stop with gracePeriodSeconds 10");
    match sup.action(LifecycleAction::start()).await {
        Ok(s) => println!("  start -> {:?}", s.state),
        Err(e) => println!("  start refused: {e}"),
    }
    match sup
        .action(LifecycleAction::stop().with_grace_period_seconds(10))
        .await
    {
        Ok(s) => println!("  stop -> {:?}", s.state),
        Err(e) => println!("  stop failed: {e}"),
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let st = sup.status();
    println!(
        "[{strategy:?}] final: {} phase {:?} restarts {}",
        sim.power_state(&vm).await?,
        st.phase,
        st.restarts
    );
    sup.shutdown().await;
    Ok(())
}
