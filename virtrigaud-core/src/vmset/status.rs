//! [`SetStatus`]: the outcome of a reconcile pass, and its `VMSet.status` form.

use crate::model::{Condition, VMSetStatus};

/// What a reconcile pass observed and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SetStatus {
    /// Desired replicas.
    pub replicas: u32,
    /// VMs in existence when observed.
    pub existing: u32,
    /// VMs on the current template when observed.
    pub updated: u32,
    /// Available VMs when observed.
    pub available: u32,
    /// Current template hash.
    pub template_hash: String,
    /// Why the rollout is paused: `(vm, reason)` of the failed gate.
    pub paused: Option<(String, String)>,
    /// Actions taken in this pass.
    pub actions: u32,
    /// Errors met in this pass (each is retried on the next pass).
    pub errors: Vec<String>,
    /// Whether the set had converged when observed (nothing to do).
    pub converged: bool,
}

impl SetStatus {
    /// The status in `VMSet.status` form, with `Available`, `Progressing` and `Paused`
    /// conditions.
    pub fn to_model(&self, generation: Option<i64>) -> VMSetStatus {
        let mut conditions = vec![Condition::new(
            "Available",
            self.available >= self.replicas,
            if self.available >= self.replicas {
                "MinimumReplicasAvailable"
            } else {
                "ReplicasUnavailable"
            },
            format!("{}/{} available", self.available, self.replicas),
        )];
        conditions.push(Condition::new(
            "Progressing",
            !self.converged && self.paused.is_none(),
            if self.converged {
                "RolloutComplete"
            } else {
                "RollingUpdate"
            },
            format!(
                "{}/{} updated, {} in existence",
                self.updated, self.replicas, self.existing
            ),
        ));
        if let Some((vm, why)) = &self.paused {
            conditions.push(Condition::new(
                "Paused",
                true,
                "ReadinessGateFailed",
                format!("{vm}: {why}"),
            ));
        }
        VMSetStatus {
            replicas: self.existing,
            ready_replicas: self.available,
            updated_replicas: self.updated,
            available_replicas: self.available,
            observed_generation: generation,
            conditions,
        }
    }
}
