//! virtrigaud provider for libvirt (work in progress: not yet implemented).
