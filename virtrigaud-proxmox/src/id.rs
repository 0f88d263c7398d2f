//! [`VmRef`]: the `node/vmid` address of a Proxmox VM.

use std::fmt;

use virtrigaud_core::{Error, Result, ResultExt, VmId};

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
        let invalid = |why: String| Error::invalid_spec(why).with_provider(PROVIDER_TYPE);
        let (node, vmid) = s
            .split_once('/')
            .ok_or_else(|| invalid(format!("Proxmox VM ids look like `node/vmid`, got {s:?}")))?;
        let vmid: u32 = vmid
            .parse()
            .map_err(|_| invalid(format!("Proxmox VM id {s:?}: {vmid:?} is not a number")))?;
        if node.is_empty() || node.contains('/') || vmid < 100 {
            return Err(invalid(format!(
                "Proxmox VM id {s:?} is not `node/vmid` with vmid >= 100"
            )));
        }
        Ok(VmRef {
            node: node.to_owned(),
            vmid,
        })
    }

    /// [`VmRef::parse`] for the operation `op`: a bad id is an error naming the operation
    /// and the id.
    pub(crate) fn parse_for(id: &VmId, op: &'static str) -> Result<VmRef> {
        VmRef::parse(id).ctx(PROVIDER_TYPE, op, id.as_str())
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
