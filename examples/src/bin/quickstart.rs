//! Quickstart: a fleet graceful shutdown on the embedded simulator.
//!
//! Mixed guest personalities are shut down in two ordered groups (applications, then the
//! database) with a concurrency cap and one overall deadline, with live per-VM progress and a
//! final table. No hypervisor needed.
//!
//! ```text
//! cargo run -p virtrigaud-examples --bin quickstart            # real time, about 10 s
//! cargo run -p virtrigaud-examples --bin quickstart -- --fast  # simulated time, instant
//! # the same fleet shutdown on real VMs of any provider (feature of its name, or `full`):
//! cargo run -p virtrigaud-examples --features libvirt --bin quickstart -- \
//!     --provider-url qemu:///system --vm web-1 --vm db-1 --grace 2m
//! ```
//!
//! In a terminal a progress bar under the timeline counts the VMs that are off; with the
//! output in a file or a pipe the bar is left out and the timeline and the table are the same.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use indicatif::ProgressBar;
use virtrigaud_core::shutdown::{
    ChannelPreference, FleetShutdown, MissingAgent, ShutdownEvent, ShutdownEventKind,
    ShutdownManager, ShutdownOutcome, ShutdownPolicy,
};
use virtrigaud_core::sim::GuestBehavior;
use virtrigaud_core::{PowerState, Provider, VmId};
use virtrigaud_examples::Backend;

#[derive(Parser, Debug)]
#[command(about = "virtrigaud quickstart: a fleet graceful shutdown on the simulator")]
struct Args {
    /// Run on a paused (simulated) clock: finishes instantly.
    #[arg(long)]
    fast: bool,
    /// At most this many shutdowns at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// The provider: `sim://` (the scripted fleet), or real VMs at `qemu:///system`,
    /// `vsphere+https://HOST/sdk`, `pve+https://HOST:8006`, `kubevirt://` (needs the example
    /// feature of that provider; credentials from the VIRTRIGAUD_* environment).
    #[arg(long, alias = "libvirt-uri", default_value = virtrigaud_examples::DEFAULT_PROVIDER_URL)]
    provider_url: String,
    /// VMs to shut down on a real provider (repeatable; the last one goes last).
    #[arg(long = "vm")]
    vms: Vec<String>,
    /// Grace period for real VMs: a duration (`90s`, `2m`) or whole seconds.
    #[arg(long, default_value = "60s", value_parser = virtrigaud_examples::parse_duration)]
    grace: Duration,
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
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

async fn run(args: Args) -> bool {
    let sim = match virtrigaud_examples::backend(&args.provider_url).await {
        Ok(Backend::Simulator(sim)) => sim,
        Ok(Backend::Remote(provider)) => return run_remote(provider, &args).await,
        Err(e) => {
            eprintln!("cannot connect: {e}");
            return false;
        }
    };
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

async fn run_remote(provider: Arc<dyn Provider>, args: &Args) -> bool {
    let policy = ShutdownPolicy::with_grace(args.grace);
    let mut vms: Vec<(VmId, ShutdownPolicy)> = Vec::new();
    let mut describe = BTreeMap::new();
    for name in &args.vms {
        match virtrigaud_examples::resolve_vm(provider.as_ref(), name).await {
            Ok(id) => {
                describe.insert(id.clone(), "real VM");
                vms.push((id, policy.clone()));
            }
            Err(e) => {
                eprintln!("{name}: {e}");
                return false;
            }
        }
    }
    let Some(last) = vms.pop() else {
        eprintln!("name at least one VM with --vm");
        return false;
    };
    run_fleet(provider, vec![vms], vec![last], describe, args).await
}

async fn run_fleet(
    provider: Arc<dyn Provider>,
    first_groups: Vec<Vec<(VmId, ShutdownPolicy)>>,
    last_group: Vec<(VmId, ShutdownPolicy)>,
    describe: BTreeMap<VmId, &'static str>,
    args: &Args,
) -> bool {
    let manager = ShutdownManager::new(provider);
    let events = manager.subscribe();
    let start = tokio::time::Instant::now();
    let bar = virtrigaud_examples::progress_bar(
        describe.len() as u64,
        "[{prefix}] [{bar:30}] {pos}/{len} VMs off  {wide_msg}",
    );
    let printer = tokio::spawn(print_events(events, start, bar.clone()));

    let simulated = virtrigaud_examples::is_simulator(&args.provider_url);
    println!(
        "virtrigaud quickstart: shutting down {} {} ({} at a time), {} last\n",
        describe.len(),
        if simulated { "simulated VMs" } else { "VMs" },
        args.concurrency,
        if simulated {
            "database"
        } else {
            "the last --vm"
        },
    );
    let mut fleet = FleetShutdown::new(&manager).concurrency(args.concurrency);
    if simulated {
        fleet = fleet.deadline(secs(30.0));
    }
    for group in first_groups {
        fleet = fleet.group_with(group);
    }
    let report = fleet.group_with(last_group).run().await;
    // Let the printer drain what is left.
    tokio::task::yield_now().await;
    printer.abort();
    let done = if report.all_off() {
        "all off"
    } else {
        "some VMs are not off"
    };
    virtrigaud_examples::finish_bar(&bar, done);

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
    let counts: Vec<String> = report
        .counts()
        .iter()
        .map(|(outcome, n)| format!("{n} {}", outcome.replace('_', " ")))
        .collect();
    println!(
        "\n{} VMs in {}: {}; all off: {}",
        entries.len(),
        virtrigaud_examples::duration(report.elapsed),
        counts.join(", "),
        if report.all_off() { "yes" } else { "no" }
    );
    report.all_off()
}

/// Prints the shutdown timeline above `bar` (one line per step, a repeated power state left
/// out) and moves the bar on as VMs finish.
async fn print_events(
    mut events: tokio::sync::broadcast::Receiver<ShutdownEvent>,
    start: tokio::time::Instant,
    bar: ProgressBar,
) {
    let mut last: BTreeMap<VmId, PowerState> = BTreeMap::new();
    while let Ok(ev) = events.recv().await {
        if let ShutdownEventKind::State(s) = &ev.kind
            && last.insert(ev.vm.clone(), *s) == Some(*s)
        {
            continue;
        }
        if matches!(ev.kind, ShutdownEventKind::Finished(_)) {
            bar.inc(1);
        }
        let what = describe_event(&ev.kind);
        bar.set_message(format!("{}: {what}", ev.vm));
        let t = start.elapsed().as_secs_f64();
        bar.set_prefix(format!("{t:6.2}s"));
        virtrigaud_examples::print_above(&bar, format!("[{t:6.2}s] {:<13} {what}", ev.vm.as_str()));
    }
}

/// One step of a shutdown in words.
fn describe_event(kind: &ShutdownEventKind) -> String {
    use virtrigaud_examples::duration;
    match kind {
        ShutdownEventKind::Started { remaining, resumed } => format!(
            "{}, grace {}",
            if *resumed { "resumed" } else { "started" },
            duration(*remaining)
        ),
        ShutdownEventKind::Joined => "another request joined the shutdown".into(),
        ShutdownEventKind::StaleLeaseDiscarded { reason } => {
            format!("stale lease discarded ({reason})")
        }
        ShutdownEventKind::Disarmed { ok } => format!(
            "server-side deadline {}",
            if *ok { "disarmed" } else { "not disarmed" }
        ),
        ShutdownEventKind::Shortened { remaining } => {
            format!("deadline moved earlier: {} left", duration(*remaining))
        }
        ShutdownEventKind::PreStop { detail, .. } => format!("preStop hook: {detail}"),
        ShutdownEventKind::AgentProbed(status) => {
            format!(
                "agent probe: {}",
                virtrigaud_examples::agent_status(*status)
            )
        }
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
        _ => "another step".into(),
    }
}
