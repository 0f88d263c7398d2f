//! [`RolloutEvent`]: what a reconciler does, as it does it.

use crate::placement::Placement;

/// Why a member is removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RemovalReason {
    /// It runs an old template.
    Outdated,
    /// The set has more current members than `replicas`.
    Excess,
}

/// A step of a rollout, broadcast to every subscriber of the reconciler.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RolloutEvent {
    /// A pass observed the set.
    Observed {
        /// Set name.
        set: String,
        /// Current template hash.
        template_hash: String,
        /// Desired replicas.
        replicas: u32,
        /// VMs in existence.
        existing: u32,
        /// VMs on the current template.
        updated: u32,
        /// Available VMs (any template).
        available: u32,
    },
    /// A VM is being created at `placement`.
    Creating {
        /// Set name.
        set: String,
        /// VM name.
        vm: String,
        /// Where (empty when no placer decided).
        placement: Placement,
        /// Why there, as the placer explained its choice (`None` without a placer).
        reason: Option<String>,
    },
    /// A VM was created.
    Created {
        /// Set name.
        set: String,
        /// VM name.
        vm: String,
    },
    /// Creating a VM failed (retried on a later pass).
    CreateFailed {
        /// Set name.
        set: String,
        /// VM name.
        vm: String,
        /// The error.
        error: String,
    },
    /// No placement was found (the solver's explanation).
    PlacementFailed {
        /// Set name.
        set: String,
        /// Why.
        reason: String,
    },
    /// A current member that was off is being powered on (power gate).
    Starting {
        /// Set name.
        set: String,
        /// VM name.
        vm: String,
    },
    /// A member is being stopped gracefully before deletion.
    Stopping {
        /// Set name.
        set: String,
        /// VM name.
        vm: String,
        /// Why it goes.
        reason: RemovalReason,
    },
    /// A member was deleted.
    Deleted {
        /// Set name.
        set: String,
        /// VM name.
        vm: String,
        /// How its shutdown ended (`graceful (acpi)`, `forced (timeout)`, …).
        shutdown: String,
    },
    /// Stopping or deleting a member failed (retried on a later pass).
    RemoveFailed {
        /// Set name.
        set: String,
        /// VM name.
        vm: String,
        /// The error.
        error: String,
    },
    /// A readiness gate failed: the rollout is paused.
    Paused {
        /// Set name.
        set: String,
        /// The VM whose gate failed.
        vm: String,
        /// Why.
        reason: String,
    },
    /// The rollout goes on after a pause.
    Resumed {
        /// Set name.
        set: String,
    },
    /// A pass failed before acting (listing the VMs failed).
    PassFailed {
        /// Set name.
        set: String,
        /// The error.
        error: String,
    },
    /// Every member runs the current template, is available, and there are `replicas`.
    Converged {
        /// Set name.
        set: String,
        /// Template hash.
        template_hash: String,
    },
}
