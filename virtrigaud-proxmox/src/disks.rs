//! A VM's disks as virtrigaud names them: by the create spec's disk name where the VM's
//! [`Meta`] block records one, else by their PVE slot (`scsi0`); with whether PVE can grow
//! them.

use virtrigaud_core::DiskInfo;

use crate::meta::Meta;
use crate::types::VmConfig;

/// One disk of a VM config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VmDisk {
    /// The PVE slot (`scsi1`).
    pub(crate) key: String,
    /// The volume (`local-lvm:vm-101-disk-1`).
    pub(crate) volume: String,
    /// Size in GiB, rounded up.
    pub(crate) size_gib: u64,
    /// The name virtrigaud knows it by (spec name or slot).
    pub(crate) name: String,
    /// Why PVE cannot grow it now, if it cannot.
    pub(crate) cannot_grow: Option<String>,
}

impl VmDisk {
    /// As core's [`DiskInfo`] (by its virtrigaud name).
    pub(crate) fn info(&self) -> DiskInfo {
        let d = DiskInfo::new(self.name.clone(), self.size_gib);
        match &self.cannot_grow {
            Some(why) => d.cannot_grow(why.clone()),
            None => d,
        }
    }

    /// Whether `name` names this disk: its virtrigaud name, its slot or its volume.
    pub(crate) fn is_named(&self, name: &str) -> bool {
        self.name == name || self.key == name || self.volume == name
    }
}

/// The disks of `cfg` (CD-ROMs and cloud-init drives are not disks).
///
/// PVE refuses to resize a qcow2 volume while the VM has snapshots (qemu-server's
/// `resize_vm`: "can't resize volume … if snapshot exists"); such disks carry that reason.
/// The config has `parent` (the current snapshot) exactly when there are snapshots.
pub(crate) fn vm_disks(cfg: &VmConfig) -> Vec<VmDisk> {
    let meta = Meta::parse(cfg.get("description"));
    let snapshots = cfg.get("parent").is_some_and(|p| !p.is_empty());
    cfg.disks()
        .into_iter()
        .filter(|(_, volume, _)| !volume.contains("cloudinit"))
        .map(|(key, volume, size_gib)| {
            let value = cfg.get(&key).unwrap_or("");
            let qcow2 = volume.ends_with(".qcow2") || value.contains("format=qcow2");
            let cannot_grow = (snapshots && qcow2).then(|| {
                format!("PVE cannot resize the qcow2 volume of {key} while the VM has snapshots")
            });
            VmDisk {
                name: meta.disk_name(&key).to_owned(),
                key,
                volume,
                size_gib,
                cannot_grow,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disks_carry_their_spec_names_and_growth() {
        let cfg: VmConfig = serde_json::from_value(serde_json::json!({
            "description": "<!-- virtrigaud\ndisk.scsi1: data\n-->",
            "scsi0": "local-lvm:vm-101-disk-0,size=8G",
            "scsi1": "local-lvm:vm-101-disk-1,size=20G",
            "virtio0": "local:101/vm-101-disk-2.qcow2,size=4G",
            "ide2": "local-lvm:vm-101-cloudinit,media=cdrom",
            "parent": "before",
        }))
        .unwrap_or_default();
        let disks = vm_disks(&cfg);
        let names: Vec<&str> = disks.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["scsi0", "data", "virtio0"]);
        assert!(disks[1].is_named("data") && disks[1].is_named("scsi1"));
        assert!(disks[0].cannot_grow.is_none());
        assert!(
            disks[2]
                .cannot_grow
                .as_deref()
                .is_some_and(|w| w.contains("snapshots"))
        );
        assert_eq!(disks[1].info(), DiskInfo::new("data", 20));
    }
}
