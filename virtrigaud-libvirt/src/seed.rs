//! cloud-init NoCloud seeds: a [`NoCloudSeed`] written as an ISO 9660/Joliet image labelled
//! `cidata` and uploaded as the raw volume `<domain>-cidata.iso` of the domain it belongs to.
//!
//! The one place a seed image is built, for create (user data) and clone (customization).
//! [`crate::domxml::seed_of`] finds a domain's own seed by that volume name, so deleting a
//! domain with its disks removes its seed and never another domain's.

use virt::storage_pool::StoragePool;
use virt::storage_vol::StorageVol;
use virtrigaud_core::Result;
use virtrigaud_core::cloudinit::NoCloudSeed;

use crate::connection::Session;
use crate::volume::{fill, volume_xml};

const OP: &str = "cloud_init_seed";

/// The volume file name of domain `name`'s seed.
pub(crate) fn volume_name(name: &str) -> String {
    format!("{name}-cidata.iso")
}

/// The seed image: `meta-data`, `user-data` and, when there is one, `network-config`.
pub(crate) fn image(seed: &NoCloudSeed) -> Vec<u8> {
    let mut files: Vec<(&str, &[u8])> = vec![
        ("meta-data", seed.meta_data.as_bytes()),
        ("user-data", seed.user_data.as_bytes()),
    ];
    if let Some(n) = &seed.network_config {
        files.push(("network-config", n.as_bytes()));
    }
    crate::iso::build("cidata", &files)
}

/// Uploads `seed` as domain `name`'s seed volume in `pool` (deleted again if the upload
/// fails). Fails with `AlreadyExists` when the volume is there already.
pub(crate) fn upload(
    s: &Session,
    pool: &StoragePool,
    name: &str,
    seed: &NoCloudSeed,
) -> Result<StorageVol> {
    let img = image(seed);
    let xml = volume_xml(&volume_name(name), img.len() as u64, "raw").to_xml();
    let vol = s.api(OP, name, |_| StorageVol::create_xml(pool, &xml, 0))?;
    fill(s, OP, name, &vol, img.len() as u64, img.as_slice(), "seed")?;
    Ok(vol)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used, clippy::field_reassign_with_default)]
    use super::*;
    use virtrigaud_core::Customization;

    #[test]
    fn network_config_is_written_only_when_there_is_one() {
        let mut c = Customization::default();
        c.hostname = Some("h".into());
        let plain = image(&NoCloudSeed::for_customization("i", &c, &[]).expect("seed"));
        let mut n = virtrigaud_core::NetworkCustomization::default();
        n.name = "lan".into();
        c.networks = vec![n];
        let net = image(&NoCloudSeed::for_customization("i", &c, &[]).expect("seed"));
        let has = |img: &[u8], name: &str| {
            let utf16: Vec<u8> = name.encode_utf16().flat_map(u16::to_be_bytes).collect();
            img.windows(utf16.len()).any(|w| w == utf16.as_slice())
        };
        assert!(has(&plain, "meta-data") && has(&plain, "user-data"));
        assert!(!has(&plain, "network-config"));
        assert!(has(&net, "network-config"));
    }
}
