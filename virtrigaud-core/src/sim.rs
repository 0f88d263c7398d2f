//! In-memory hypervisor simulator (in progress).
