//! Clones on the simulator: a linked clone with customization and power-on, then a clone
//! whose power-on fails, showing that the half-made clone is deleted.
//!
//! With `--provider-url` (and the example feature of that provider) the first clone is made
//! from a real VM (`--vm`); the scripted failure needs the simulator.
//!
//! ```text
//! cargo run -p virtrigaud-examples --bin clone_vm -- --fast          # linked clones
//! cargo run -p virtrigaud-examples --bin clone_vm -- --fast --full   # full copies
//! cargo run -p virtrigaud-examples --features libvirt --bin clone_vm -- \
//!     --provider-url qemu:///system --vm NAME
//! ```

use std::sync::Arc;

use clap::Parser;
use virtrigaud_core::ErrorKind;
use virtrigaud_core::Provider;
use virtrigaud_core::model::{
    CloneCustomization, CloneNetwork, CloneTarget, ObjectRef, VMClone, VMCloneSpec,
};
use virtrigaud_core::orchestration::Orchestrator;
use virtrigaud_core::sim::GuestBehavior;
use virtrigaud_examples::Backend;

#[derive(Parser, Debug)]
#[command(about = "virtrigaud: clones with customization on the simulator")]
struct Args {
    /// Run on a paused (simulated) clock.
    #[arg(long)]
    fast: bool,
    /// Make linked clones, sharing the source's disks (the default).
    #[arg(long, conflicts_with = "full")]
    linked: bool,
    /// Make full clones, copying the source's disks.
    #[arg(long)]
    full: bool,
    /// The provider (default: the simulator); a real one needs `--vm`.
    #[arg(long, default_value = virtrigaud_examples::DEFAULT_PROVIDER_URL)]
    provider_url: String,
    /// The VM to clone on a real provider (its name, or its id).
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

fn clone_spec(source: &str, target: &str, linked: bool) -> VMClone {
    let mut spec = VMCloneSpec::default();
    spec.source_ref = ObjectRef::new(source);
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
    let (sim, provider, src, source) =
        match virtrigaud_examples::backend(&args.provider_url).await? {
            Backend::Simulator(sim) => {
                let src = sim.add_vm("web-server", GuestBehavior::cooperative());
                let provider: Arc<dyn Provider> = Arc::new(sim.clone());
                (Some(sim), provider, src, "web-server".to_owned())
            }
            Backend::Remote(provider) => {
                let name = args.vm.clone().ok_or_else(|| {
                    virtrigaud_core::Error::invalid_spec("--vm: name the VM to clone")
                })?;
                let src = virtrigaud_examples::resolve_vm(provider.as_ref(), &name).await?;
                (None, provider, src, name)
            }
        };
    let orch = Orchestrator::new(provider);
    let mut events = orch.events().subscribe();
    tokio::spawn(async move {
        while let Ok(e) = events.recv().await {
            println!("  event  {e}");
        }
    });
    // `--linked` and `--full` exclude each other; neither: linked.
    let linked = args.linked || !args.full;
    let mut c = clone_spec(&source, &format!("{source}-test"), linked);
    let r = orch.clone_vm(&src, &mut c, None).await?;
    // Let the event printer catch up (here and below).
    tokio::task::yield_now().await;
    println!(
        "clone {}: {} clone, customized: {}, powered on: {}, phase {}\n",
        r.result.vm,
        if r.result.linked { "linked" } else { "full" },
        virtrigaud_examples::yes_no(r.result.customized),
        virtrigaud_examples::yes_no(r.powered_on),
        virtrigaud_examples::phase_name(c.status.as_ref().and_then(|s| s.phase))
    );

    let Some(sim) = sim else {
        tokio::task::yield_now().await;
        println!("(the scripted failing clone needs the simulator)");
        return Ok(());
    };
    sim.inject_fault("start", ErrorKind::Internal);
    let mut c = clone_spec(&source, "web-server-broken", linked);
    let second = orch.clone_vm(&src, &mut c, None).await;
    tokio::task::yield_now().await;
    match second {
        Ok(_) => println!("unexpected success"),
        Err(e) => println!("second clone failed as scripted: {e}"),
    }
    println!(
        "VMs on the simulator now: {} (source + first clone)",
        sim.vm_count()
    );
    Ok(())
}
