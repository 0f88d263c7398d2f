//! Labels and annotations this provider puts on the objects it creates.

/// Label put on snapshots (and restores, clones) this provider makes (value: the VM name).
pub const VM_LABEL: &str = "virtrigaud.io/vm";

/// Annotation holding a snapshot's description.
pub(crate) const DESCRIPTION_ANNOTATION: &str = "virtrigaud.io/description";
