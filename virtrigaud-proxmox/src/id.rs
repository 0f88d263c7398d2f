//! [`VmRef`]: the `node/vmid` address of a Proxmox VM.

use std::fmt;

use virtrigaud_core::{Error, Result, VmId};

use crate::PROVIDER_TYPE;

/// A VM address: `node/vmid` (the form of a Proxmox [`VmId`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VmRef {
    /// Node name.
    pub node: String,
    /// VM id (≥ 100).
    pub vmid: u32,
}

impl VmRef {
    /// Parses `node/vmid`.
    pub fn parse(id: &VmId) -> Result<VmRef> {
        let s = id.as_str();
        let (node, vmid) = s.split_once('/').ok_or_else(|| {
            Error::invalid_spec(format!("Proxmox VM ids look like `node/vmid`, got {s:?}"))
                .with_provider(PROVIDER_TYPE)
        })?;
        let vmid: u32 = vmid.parse().map_err(|_| {
            Error::invalid_spec(format!("Proxmox VM id {s:?}: {vmid:?} is not a number"))
                .with_provider(PROVIDER_TYPE)
        })?;
        if node.is_empty() || node.contains('/') || vmid < 100 {
            return Err(Error::invalid_spec(format!(
                "Proxmox VM id {s:?} is not `node/vmid` with vmid >= 100"
            ))
            .with_provider(PROVIDER_TYPE));
        }
        Ok(VmRef {
            node: node.to_owned(),
            vmid,
        })
    }

    /// The [`VmId`] `node/vmid`.
    pub fn to_vm_id(&self) -> VmId {
        VmId::new(self.to_string())
    }
}

/// `node/vmid`, the resource name errors carry.
impl fmt::Display for VmRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.node, self.vmid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_node_slash_vmid_and_refuses_the_rest() {
        let r = VmRef::parse(&VmId::new("pve1/101")).unwrap();
        assert_eq!((r.node.as_str(), r.vmid), ("pve1", 101));
        assert_eq!(r.to_vm_id(), VmId::new("pve1/101"));
        assert_eq!(r.to_string(), "pve1/101");
        for bad in ["101", "pve1/abc", "pve1/99", "/101", "a/b/101"] {
            let e = VmRef::parse(&VmId::new(bad)).unwrap_err();
            assert_eq!(e.kind(), virtrigaud_core::ErrorKind::InvalidSpec, "{bad}");
            assert_eq!(e.provider(), PROVIDER_TYPE, "{bad}");
        }
    }
}
