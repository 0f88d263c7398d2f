//! Snapshots on the simulator: a quiesced snapshot with a retention policy (maxCount 2),
//! a change, then a revert through `spec.snapshot.revertToRef`.
//!
//! ```text
//! cargo run -p virtrigaud-examples --bin snapshot_revert -- --fast
//! cargo run -p virtrigaud-examples --features libvirt --bin snapshot_revert -- \
//!     --provider-url qemu:///system --vm NAME   # a real domain
//! ```

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use virtrigaud_core::model::{
    ObjectRef, RetentionPolicy, VMSnapshot, VMSnapshotSpec, VirtualMachine, VirtualMachineSpec,
    VirtualMachineStatus, VmSnapshotOperation,
};
use virtrigaud_core::orchestration::{
    Orchestrator, ReconfigureOptions, ResourceChange, SnapshotCreateOptions,
};
use virtrigaud_core::sim::{GuestBehavior, Simulator};

#[derive(Parser, Debug)]
#[command(about = "virtrigaud: snapshots, retention and revert on the simulator")]
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
    // The VM's name in the VMSnapshot / VirtualMachine objects.
    let vm_name = if virtrigaud_examples::is_simulator(&args.provider_url) {
        "db-1".to_owned()
    } else {
        args.vm.clone().unwrap_or_default()
    };
    let (provider, vm) =
        virtrigaud_examples::target(&args.provider_url, args.vm.as_deref(), |sim: &Simulator| {
            sim.add_vm("db-1", GuestBehavior::with_agent(Duration::from_secs(2)))
        })
        .await?;
    let orch = Orchestrator::new(Arc::clone(&provider));
    let mut events = orch.events().subscribe();
    tokio::spawn(async move {
        while let Ok(e) = events.recv().await {
            println!("  event  {e}");
        }
    });
    let mut snaps = Vec::new();
    for name in ["nightly-1", "nightly-2", "pre-maintenance"] {
        let mut spec = VMSnapshotSpec::default();
        spec.vm_ref = ObjectRef::new(vm_name.as_str());
        spec.quiesce = Some(true);
        spec.memory = Some(name == "pre-maintenance");
        let mut policy = RetentionPolicy::default();
        policy.max_count = Some(2);
        spec.retention_policy = Some(policy);
        let mut snap = VMSnapshot::new(name, spec);
        let r = orch
            .create_snapshot(&vm, &mut snap, &SnapshotCreateOptions::default())
            .await?;
        // Let the event printer catch up (here and below).
        tokio::task::yield_now().await;
        println!(
            "snapshot {name}: id {}, quiesced: {}, memory: {}, pruned: {}",
            r.info.id,
            virtrigaud_examples::yes_no(r.quiesced),
            virtrigaud_examples::yes_no(r.memory),
            virtrigaud_examples::list(&r.pruned)
        );
        snaps.push(snap);
    }
    let mut st = VirtualMachineStatus::default();
    orch.reconfigure(
        &vm,
        &ResourceChange::default().cpu(6),
        &ReconfigureOptions::default(),
        &mut st,
    )
    .await?;
    tokio::task::yield_now().await;
    println!(
        "after the change: {} vCPUs",
        provider.describe(&vm).await?.cpu
    );

    let mut op = VmSnapshotOperation::default();
    op.revert_to_ref = Some(ObjectRef::new("pre-maintenance"));
    let mut spec = VirtualMachineSpec::default();
    spec.snapshot = Some(op);
    let mut obj = VirtualMachine::new(vm_name.as_str(), spec);
    orch.revert(&vm, &mut obj, &snaps).await?;
    tokio::task::yield_now().await;
    let d = provider.describe(&vm).await?;
    println!(
        "after the revert: {} vCPUs, {}, revertToRef cleared: {}",
        d.cpu,
        d.power_state,
        virtrigaud_examples::yes_no(
            obj.spec
                .snapshot
                .as_ref()
                .is_some_and(|s| s.revert_to_ref.is_none())
        )
    );
    Ok(())
}
