//! Helpers shared by the example binaries: the provider from `--provider-url` (default: the
//! embedded simulator, which each example scripts itself), the VM named by `--vm`, the tokio
//! runtime, and tracing from `RUST_LOG`.
//!
//! Providers other than the simulator need the examples' feature of the same name
//! (`libvirt`, `vsphere`, `proxmox`, `kubevirt`, or `full`); credentials come from the
//! `VIRTRIGAUD_*` environment variables documented in the `virtrigaud` crate.

use std::sync::Arc;

use virtrigaud::{ConnectOptions, ListOptions, ProviderKind, ProviderUrl};
use virtrigaud_core::sim::Simulator;
use virtrigaud_core::{Error, Provider, VmId};

/// The default of `--provider-url`: the embedded simulator.
pub const DEFAULT_PROVIDER_URL: &str = "sim://";

/// What `--provider-url` named.
#[derive(Debug)]
pub enum Backend {
    /// The embedded simulator, for the example to script (guests, hosts, faults).
    Simulator(Simulator),
    /// A connected provider.
    Remote(Arc<dyn Provider>),
}

/// Whether `url` selects the simulator (`false` for a URL that does not parse: connecting
/// reports that).
pub fn is_simulator(url: &str) -> bool {
    ProviderUrl::parse(url).is_ok_and(|u| u.kind() == ProviderKind::Simulator)
}

/// Connects to `url` through the `virtrigaud` crate (credentials from the environment).
pub async fn backend(url: &str) -> Result<Backend, Error> {
    let parsed = ProviderUrl::parse(url)?;
    if parsed.kind() == ProviderKind::Simulator {
        return Ok(Backend::Simulator(virtrigaud::simulator(url)?));
    }
    let provider = virtrigaud::connect_parsed(&parsed, &ConnectOptions::default()).await?;
    Ok(Backend::Remote(provider))
}

/// The provider and VM an example works on: on the simulator the VM `on_simulator` makes, on
/// any other provider the one `--vm` names.
pub async fn target(
    provider_url: &str,
    vm: Option<&str>,
    on_simulator: impl FnOnce(&Simulator) -> VmId,
) -> Result<(Arc<dyn Provider>, VmId), Error> {
    match backend(provider_url).await? {
        Backend::Simulator(sim) => {
            let id = on_simulator(&sim);
            Ok((Arc::new(sim), id))
        }
        Backend::Remote(provider) => {
            let vm = vm.ok_or_else(|| {
                Error::invalid_spec("--vm: name the VM to work on (required with --provider-url)")
            })?;
            let id = resolve_vm(provider.as_ref(), vm).await?;
            Ok((provider, id))
        }
    }
}

/// The id of the VM named `name` (by its name in a listing, else `name` taken as an id:
/// `pve1/101`, `vm-42`, `namespace/name`).
pub async fn resolve_vm(provider: &dyn Provider, name: &str) -> Result<VmId, Error> {
    if let Ok(vms) = provider.list_vms(&ListOptions::default()).await
        && let Some(vm) = vms.into_iter().find(|v| v.name == name)
    {
        return Ok(vm.id);
    }
    Ok(VmId::new(name))
}

/// A current-thread runtime with every driver; with `fast` on the simulator its clock is
/// paused (simulated time). `--fast` is ignored, with a note, for real providers: their
/// network timeouts must run in real time.
pub fn runtime(fast: bool, provider_url: &str) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_current_thread();
    builder.enable_all();
    if fast {
        if is_simulator(provider_url) {
            builder.start_paused(true);
        } else {
            eprintln!("note: --fast applies to the simulator only; running in real time");
        }
    }
    builder.build()
}

/// Logs to stderr as `RUST_LOG` says (default: warnings and errors).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
