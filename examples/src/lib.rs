//! Helpers shared by the example binaries: choose the embedded simulator (default) or a real
//! libvirt connection (`--libvirt-uri URI --vm NAME`, feature `libvirt`).

use std::sync::Arc;

use virtrigaud_core::sim::Simulator;
use virtrigaud_core::{Error, Provider, VmId};

/// The provider and VM an example works on.
pub async fn target(
    libvirt_uri: Option<&str>,
    vm: Option<&str>,
    on_simulator: impl FnOnce(&Simulator) -> VmId,
) -> Result<(Arc<dyn Provider>, VmId), Error> {
    match libvirt_uri {
        None => {
            let sim = Simulator::new();
            let id = on_simulator(&sim);
            Ok((Arc::new(sim), id))
        }
        Some(uri) => libvirt(uri, vm).await,
    }
}

#[cfg(feature = "libvirt")]
async fn libvirt(uri: &str, vm: Option<&str>) -> Result<(Arc<dyn Provider>, VmId), Error> {
    use virtrigaud_libvirt::{LibvirtConfig, LibvirtProvider};
    let vm = vm.ok_or_else(|| Error::invalid_spec("--vm: name the domain to work on"))?;
    let provider = LibvirtProvider::connect(LibvirtConfig::new(uri)).await?;
    Ok((Arc::new(provider), VmId::new(vm)))
}

#[cfg(not(feature = "libvirt"))]
async fn libvirt(_uri: &str, _vm: Option<&str>) -> Result<(Arc<dyn Provider>, VmId), Error> {
    Err(Error::unsupported("libvirt").with_resource(
        "rebuild the examples with `--features libvirt` to use --libvirt-uri".to_string(),
    ))
}
