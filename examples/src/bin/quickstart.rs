//! Quickstart: a fleet graceful shutdown on the embedded simulator.
//!
//! Mixed guest personalities are shut down in two ordered groups (applications, then the
//! database) with a concurrency cap and one overall deadline, with live per-VM progress and a
//! final table. No hypervisor needed.
//!
//! ```text
//! cargo run -p virtrigaud-examples --bin quickstart            # real time, about 10 s
//! cargo run -p virtrigaud-examples --bin quickstart -- --fast  # simulated time, instant
//! # the same fleet shutdown on real libvirt domains:
//! cargo run -p virtrigaud-examples --features libvirt --bin quickstart -- \
//!     --libvirt-uri qemu:///system --vm web-1 --vm db-1
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use virtrigaud_core::shutdown::{
    ChannelPreference, FleetShutdown, MissingAgent, ShutdownEventKind, ShutdownManager,
    ShutdownOutcome, ShutdownPolicy,
};
use virtrigaud_core::sim::{GuestBehavior, Simulator};
use virtrigaud_core::{PowerState, Provider, VmId};

#[derive(Parser, Debug)]
#[command(about = "virtrigaud quickstart: a fleet graceful shutdown on the simulator")]
struct Args {
    /// Run on a paused (simulated) clock: finishes instantly.
    #[arg(long)]
    fast: bool,
    /// At most this many shutdowns at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Shut down real libvirt domains at this URI instead of the simulator (feature `libvirt`).
    #[arg(long)]
    libvirt_uri: Option<String>,
    /// Domains to shut down with `--libvirt-uri` (repeatable; the last one goes last).
    #[arg(long = "vm")]
    vms: Vec<String>,
    /// Grace period for real domains, seconds.
    #[arg(long, default_value_t = 60)]
    grace: u64,
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
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

async fn run(args: Args) -> bool {
    if let Some(uri) = args.libvirt_uri.clone() {
        return run_libvirt(&uri, &args).await;
    }
    let sim = Simulator::new();
    let grace = ShutdownPolicy::with_grace(secs(6.0));
    let plan: Vec<(&str, GuestBehavior, ShutdownPolicy, &str)> = vec![
        (
            "web-1",
            GuestBehavior::cooperative().acpi_after(secs(2.0)),
            grace.clone(),
            "honours ACPI after 2 s",
        ),
        (
            "web-2",
            GuestBehavior::with_agent(secs(1.5)),
            grace.clone(),
            "guest agent, stops in 1.5 s",
        ),
        (
            "legacy-1",
            GuestBehavior::ignores_acpi(),
            grace.clone(),
            "ignores ACPI",
        ),
        (
            "appliance-1",
            GuestBehavior::cooperative(),
            grace
                .clone()
                .channel(ChannelPreference::AgentOnly)
                .on_missing_agent(MissingAgent::PowerOff),
            "no agent; policy: agent only, else power off",
        ),
        (
            "batch-1",
            GuestBehavior::cooperative(),
            ShutdownPolicy::force(),
            "grace 0",
        ),
        (
            "hung-agent-1",
            GuestBehavior::hanging_agent().acpi_after(secs(1.0)),
            grace.clone(),
            "agent hangs; ACPI works",
        ),
        (
            "booting-1",
            GuestBehavior::cooperative()
                .acpi_after(secs(1.0))
                .acpi_listen_after(secs(4.0)),
            ShutdownPolicy::with_grace(secs(9.0)).resignal_interval(Some(secs(2.5))),
            "still booting: first ACPI press is lost",
        ),
    ];
    let mut first_group = Vec::new();
    let mut describe = BTreeMap::new();
    for (name, behavior, policy, what) in plan {
        let vm = sim.add_vm(name, behavior);
        describe.insert(vm.clone(), what);
        first_group.push((vm, policy));
    }
    let off = sim.add_stopped_vm("old-1", GuestBehavior::cooperative());
    describe.insert(off.clone(), "already off");
    first_group.push((off, grace.clone()));
    let db = sim.add_vm("db-1", GuestBehavior::cooperative().acpi_after(secs(2.5)));
    describe.insert(db.clone(), "database, stopped last");

    let provider: Arc<dyn Provider> = Arc::new(sim.clone());
    let first = vec![first_group];
    run_fleet(
        provider,
        first,
        vec![(db, ShutdownPolicy::with_grace(secs(10.0)))],
        describe,
        &args,
    )
    .await
}

#[cfg(feature = "libvirt")]
async fn run_libvirt(uri: &str, args: &Args) -> bool {
    use virtrigaud_libvirt::{LibvirtConfig, LibvirtProvider};
    let provider = match LibvirtProvider::connect(LibvirtConfig::new(uri)).await {
        Ok(p) => p,
        Err(e) => {
            eprintln!("cannot connect to {uri}: {e}");
            return false;
        }
    };
    let policy = ShutdownPolicy::with_grace(Duration::from_secs(args.grace));
    let mut vms: Vec<(VmId, ShutdownPolicy)> = args
        .vms
        .iter()
        .map(|v| (VmId::new(v.as_str()), policy.clone()))
        .collect();
    let Some(last) = vms.pop() else {
        eprintln!("name at least one domain with --vm");
        return false;
    };
    let describe = args
        .vms
        .iter()
        .map(|v| (VmId::new(v.as_str()), "libvirt domain"))
        .collect();
    run_fleet(Arc::new(provider), vec![vms], vec![last], describe, args).await
}

#[cfg(not(feature = "libvirt"))]
async fn run_libvirt(_uri: &str, _args: &Args) -> bool {
    eprintln!(
        "--libvirt-uri needs the `libvirt` feature: \
         cargo run -p virtrigaud-examples --features libvirt --bin quickstart -- --libvirt-uri ..."
    );
    false
}

async fn run_fleet(
    provider: Arc<dyn Provider>,
    first_groups: Vec<Vec<(VmId, ShutdownPolicy)>>,
    last_group: Vec<(VmId, ShutdownPolicy)>,
    describe: BTreeMap<VmId, &'static str>,
    args: &Args,
) -> bool {
    let manager = ShutdownManager::new(provider);
    let mut events = manager.subscribe();
    let start = tokio::time::Instant::now();
    let printer = tokio::spawn(async move {
        let mut last: BTreeMap<VmId, PowerState> = BTreeMap::new();
        while let Ok(ev) = events.recv().await {
            if let ShutdownEventKind::State(s) = &ev.kind
                && last.insert(ev.vm.clone(), *s) == Some(*s)
            {
                continue;
            }
            let t = start.elapsed().as_secs_f64();
            let what = match ev.kind {
                ShutdownEventKind::Started { remaining, .. } => {
                    format!("started, grace {:.1}s", remaining.as_secs_f64())
                }
                ShutdownEventKind::AgentProbed(status) => format!("agent probe: {status:?}"),
                ShutdownEventKind::Signalled { channel, attempt } => {
                    format!("shutdown request #{attempt} via {channel}")
                }
                ShutdownEventKind::SignalFailed { channel, error } => {
                    format!("request via {channel} failed: {error}")
                }
                ShutdownEventKind::State(s) => format!("state: {s}"),
                ShutdownEventKind::Forcing(reason) => {
                    format!("powering off hard ({})", reason.as_str())
                }
                ShutdownEventKind::Finished(outcome) => format!("done: {outcome}"),
                other => format!("{other:?}"),
            };
            println!("[{t:6.2}s] {:<13} {what}", ev.vm.as_str());
        }
    });

    println!(
        "virtrigaud quickstart: shutting down {} simulated VMs ({} at a time), database last\n",
        describe.len(),
        args.concurrency
    );
    let mut fleet = FleetShutdown::new(&manager).concurrency(args.concurrency);
    if args.libvirt_uri.is_none() {
        fleet = fleet.deadline(secs(30.0));
    }
    for group in first_groups {
        fleet = fleet.group_with(group);
    }
    let report = fleet.group_with(last_group).run().await;
    // Let the printer drain what is left.
    tokio::task::yield_now().await;
    printer.abort();

    println!(
        "\n{:<13} {:<44} {:<26} {:<8} {:>8}",
        "VM", "personality", "outcome", "channel", "elapsed"
    );
    println!("{}", "-".repeat(103));
    let mut entries = report.entries.clone();
    entries.sort_by(|a, b| (a.group, a.vm.as_str()).cmp(&(b.group, b.vm.as_str())));
    for e in &entries {
        let what = describe.get(&e.vm).copied().unwrap_or("");
        match &e.report {
            Ok(r) => {
                let outcome = match &r.outcome {
                    ShutdownOutcome::Graceful { .. } => "graceful".to_string(),
                    other => other.to_string(),
                };
                let channel = r.channel.map_or("-".to_string(), |c| c.to_string());
                println!(
                    "{:<13} {:<44} {:<26} {:<8} {:>7.2}s",
                    e.vm.as_str(),
                    what,
                    outcome,
                    channel,
                    r.elapsed.as_secs_f64()
                );
            }
            Err(err) => println!("{:<13} {:<44} not started: {err}", e.vm.as_str(), what),
        }
    }
    println!(
        "\n{} VMs in {:.2}s: {:?}; all off: {}",
        entries.len(),
        report.elapsed.as_secs_f64(),
        report.counts(),
        report.all_off()
    );
    report.all_off()
}
