//! What a create spec's `image` is on PVE: a template's VM id (`pve1/9000`), cloned (see
//! `from_template`), or a volume id of a storage's content, as [`crate::PveImageSink`]
//! stores them. An ISO (`local:iso/debian.iso`) becomes the VM's CD-ROM, booted first; a
//! disk image in `import` content (`local:import/debian.qcow2`) becomes its first disk
//! (`import-from`, PVE 8.2+). Anything else is refused, naming `image`.

use virtrigaud_core::{Error, Result, VmId};

use crate::id::VmRef;

/// How a VM uses its image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BootImage {
    /// A template VM, cloned.
    Template(VmRef),
    /// An ISO on the CD-ROM drive `ide2`.
    Cdrom(String),
    /// A disk image imported as the first disk.
    Import(String),
}

impl BootImage {
    /// The image a volume id names.
    pub(crate) fn parse(volid: &str) -> Result<Self> {
        if !volid.contains(':')
            && let Ok(r) = VmRef::parse(&VmId::new(volid))
        {
            return Ok(BootImage::Template(r));
        }
        let invalid = |why: &str| {
            Err(Error::invalid_spec(format!(
                "image: {volid:?} {why} (a template's node/vmid, or a PVE volume id: storage:iso/NAME.iso or storage:import/NAME.qcow2|raw|vmdk)"
            )))
        };
        let Some((storage, path)) = volid.split_once(':') else {
            return invalid("has no storage");
        };
        if storage.is_empty() || path.is_empty() || path.contains("..") {
            return invalid("is not a volume id");
        }
        match path.split_once('/') {
            Some(("iso", f)) if f.ends_with(".iso") => Ok(BootImage::Cdrom(volid.to_owned())),
            Some(("import", f))
                if [".qcow2", ".raw", ".vmdk", ".img"]
                    .iter()
                    .any(|e| f.ends_with(e)) =>
            {
                Ok(BootImage::Import(volid.to_owned()))
            }
            Some(("vztmpl", _)) => invalid("is a container template, not a VM image"),
            _ => invalid("is neither an ISO nor an importable disk image"),
        }
    }

    /// The config entries for the image, given the storage an imported disk goes to (an
    /// imported image replaces the spec's first, blank disk).
    pub(crate) fn config(&self, storage: &str) -> Vec<(String, String)> {
        match self {
            BootImage::Template(_) => Vec::new(),
            BootImage::Cdrom(v) => vec![
                ("ide2".into(), format!("{v},media=cdrom")),
                ("boot".into(), "order=ide2;scsi0".into()),
            ],
            BootImage::Import(v) => vec![
                ("scsi0".into(), format!("{storage}:0,import-from={v}")),
                ("boot".into(), "order=scsi0".into()),
            ],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isos_and_disk_images_are_told_apart_and_others_refused() {
        assert_eq!(
            BootImage::parse("local:iso/debian-12.iso").unwrap(),
            BootImage::Cdrom("local:iso/debian-12.iso".into())
        );
        assert!(matches!(
            BootImage::parse("pve1/9000").unwrap(),
            BootImage::Template(r) if r.vmid == 9000 && r.node == "pve1"
        ));
        assert_eq!(
            BootImage::parse("local:import/debian.qcow2").unwrap(),
            BootImage::Import("local:import/debian.qcow2".into())
        );
        for bad in [
            "debian.iso",
            "local:vztmpl/debian.tar.zst",
            "local:iso/debian.img",
            ":iso/x.iso",
            "local:iso/../x.iso",
            "local:backup/x.vma",
        ] {
            let e = BootImage::parse(bad).unwrap_err();
            assert!(e.to_string().contains("image:"), "{bad}: {e}");
        }
    }

    #[test]
    fn an_import_is_the_first_disk_and_an_iso_the_cdrom() {
        let c = BootImage::Import("local:import/d.qcow2".into()).config("local-lvm");
        assert_eq!(
            c[0],
            (
                "scsi0".into(),
                "local-lvm:0,import-from=local:import/d.qcow2".into()
            )
        );
        let c = BootImage::Cdrom("local:iso/d.iso".into()).config("local-lvm");
        assert_eq!(c[0], ("ide2".into(), "local:iso/d.iso,media=cdrom".into()));
    }
}
