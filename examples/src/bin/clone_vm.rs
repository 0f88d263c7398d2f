//! Clones on the simulator: a linked clone with customization and power-on, then a clone
//! whose power-on fails, showing that the half-made clone is deleted.
//!
//! ```text
//! cargo run -p virtrigaud-examples --bin clone_vm -- --fast
//! ```

use std::sync::Arc;

use clap::Parser;
use virtrigaud_core::ErrorKind;
use virtrigaud_core::model::{
    CloneCustomization, CloneNetwork, CloneTarget, ObjectRef, VMClone, VMCloneSpec,
};
use virtrigaud_core::orchestration::Orchestrator;
use virtrigaud_core::sim::{GuestBehavior, Simulator};

#[derive(Parser, Debug)]
#[command(about = "virtrigaud: clones with customization on the simulator")]
struct Args {
    /// Run on a paused (simulated) clock.
    #[arg(long)]
    fast: bool,
    /// Make linked clones.
    #[arg(long, default_value_t = true)]
    linked: bool,
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

fn clone_spec(target: &str, linked: bool) -> VMClone {
    let mut spec = VMCloneSpec::default();
    spec.source_ref = ObjectRef::new("web-server");
    let mut t = CloneTarget::default();
    t.name = target.into();
    spec.target = t;
    spec.linked = Some(linked);
    spec.power_on = Some(true);
    let mut c = CloneCustomization::default();
    c.hostname = Some(target.into());
    let mut n = CloneNetwork::default();
    n.name = "primary".into();
    n.ip_address = Some("192.168.1.100/24".into());
    n.gateway = Some("192.168.1.1".into());
    n.dns = vec!["8.8.8.8".into()];
    c.networks = vec![n];
    spec.customization = Some(c);
    VMClone::new(format!("{target}-clone"), spec)
}

async fn run(args: Args) -> virtrigaud_core::Result<()> {
    let sim = Simulator::new();
    let src = sim.add_vm("web-server", GuestBehavior::cooperative());
    let orch = Orchestrator::new(Arc::new(sim.clone()));
    let mut events = orch.events().subscribe();
    tokio::spawn(async move {
        while let Ok(e) = events.recv().await {
            println!("  event  {e}");
        }
    });
    let mut c = clone_spec("web-server-test", args.linked);
    let r = orch.clone_vm(&src, &mut c, None).await?;
    println!(
        "clone {}: linked={} customized={} powered_on={} phase={:?}\n",
        r.result.vm,
        r.result.linked,
        r.result.customized,
        r.powered_on,
        c.status.as_ref().and_then(|s| s.phase)
    );

    sim.inject_fault("start", ErrorKind::Internal);
    let mut c = clone_spec("web-server-broken", args.linked);
    match orch.clone_vm(&src, &mut c, None).await {
        Ok(_) => println!("unexpected success"),
        Err(e) => println!("second clone failed as scripted: {e}"),
    }
    tokio::task::yield_now().await;
    println!(
        "VMs on the simulator now: {} (source + first clone)",
        sim.vm_count()
    );
    Ok(())
}
