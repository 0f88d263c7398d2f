//! virtrigaud provider for vsphere (work in progress: not yet implemented).
