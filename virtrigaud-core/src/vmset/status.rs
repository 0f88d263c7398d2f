//! [`SetStatus`]: the outcome of a reconcile pass, and its `VMSet.status` form.

use crate::model::{Condition, ConditionStatus, VMSetStatus};

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
    /// Why the members could not be observed: the listing failed, or was partial (a node
    /// offline). The pass then did nothing at all, so no member is made twice or removed by
    /// mistake, and the counts above are unknown (0). The next pass tries again.
    pub unobserved: Option<String>,
}

impl SetStatus {
    /// The status in `VMSet.status` form, with `Available`, `Progressing` and `Paused`
    /// conditions.
    ///
    /// A pass that could not observe the members ([`SetStatus::unobserved`]) gives
    /// `Available` and `Progressing` the status `Unknown` and `Paused` the reason
    /// `MembersUnobserved`, with zero counts: merge them with the previous status if it is
    /// kept.
    pub fn to_model(&self, generation: Option<i64>) -> VMSetStatus {
        if let Some(why) = &self.unobserved {
            let unknown = |type_: &str| {
                Condition::new(
                    type_,
                    ConditionStatus::Unknown,
                    "MembersUnobserved",
                    "the members could not be listed",
                )
            };
            return VMSetStatus {
                observed_generation: generation,
                conditions: vec![
                    unknown("Available"),
                    unknown("Progressing"),
                    Condition::new("Paused", true, "MembersUnobserved", why.clone()),
                ],
                ..VMSetStatus::default()
            };
        }
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
