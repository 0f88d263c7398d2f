//! virtrigaud provider for proxmox (work in progress: not yet implemented).
