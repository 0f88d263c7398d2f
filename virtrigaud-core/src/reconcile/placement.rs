//! The `VMPlacementPolicy` reconciler: the policy's status says who uses it and whether its
//! hard constraints can be met by the provider's inventory ([`check_policy`], pure).

use std::collections::BTreeSet;
use std::time::Duration;

use super::action::Action;
use crate::error::{Error, Result};
use crate::model::{
    Condition, PlacementConstraints, VMPlacementPolicy, Validate, condition_types, set_condition,
};
use crate::orchestration::now_rfc3339;
use crate::placement::Inventory;
use crate::provider::Provider;

/// How often a policy is checked again against an inventory that may have changed.
pub const POLICY_RECHECK: Duration = Duration::from_secs(300);

/// The hard constraints of `policy` that name nothing in `inventory`, each as
/// `spec.hard.<field>: <name>`. Empty: every named host, cluster, zone and datastore exists
/// (folders and resource pools are not in an inventory and are not checked). Pure.
pub fn check_policy(policy: &VMPlacementPolicy, inventory: &Inventory) -> Vec<String> {
    let Some(hard) = &policy.spec.hard else {
        return Vec::new();
    };
    let hosts: BTreeSet<&str> = inventory.hosts.iter().map(|h| h.name.as_str()).collect();
    let clusters: BTreeSet<&str> = inventory
        .hosts
        .iter()
        .filter_map(|h| h.cluster.as_deref())
        .collect();
    let zones: BTreeSet<&str> = inventory
        .hosts
        .iter()
        .filter_map(|h| h.zone.as_deref())
        .collect();
    let datastores: BTreeSet<&str> = inventory
        .datastores
        .iter()
        .map(|d| d.name.as_str())
        .chain(
            inventory
                .hosts
                .iter()
                .flat_map(|h| h.datastores.iter().map(String::as_str)),
        )
        .collect();
    let PlacementConstraints {
        hosts: want_hosts,
        clusters: want_clusters,
        zones: want_zones,
        datastores: want_datastores,
        ..
    } = hard;
    let mut missing = Vec::new();
    for (field, wanted, known) in [
        ("hosts", want_hosts, &hosts),
        ("clusters", want_clusters, &clusters),
        ("zones", want_zones, &zones),
        ("datastores", want_datastores, &datastores),
    ] {
        missing.extend(
            wanted
                .iter()
                .filter(|w| !known.contains(w.as_str()))
                .map(|w| format!("spec.hard.{field}: {w}")),
        );
    }
    missing
}

/// Reconciles `VMPlacementPolicy` objects against one provider's inventory.
#[derive(Debug, Clone)]
pub struct PlacementPolicyReconciler {
    provider: std::sync::Arc<dyn Provider>,
}

impl PlacementPolicyReconciler {
    /// A reconciler reading `provider`'s inventory.
    pub fn new(provider: std::sync::Arc<dyn Provider>) -> Self {
        PlacementPolicyReconciler { provider }
    }

    /// One pass: `used_by` are the VMs (and VM sets) whose spec names the policy. Writes
    /// `status.usedByVMs` and the `Ready` condition: true when every hard constraint names
    /// something that exists (`Satisfiable`), false naming each one that does not
    /// (`Unsatisfiable`), or true with `NotChecked` on a provider without an inventory.
    /// Comes back after [`POLICY_RECHECK`], since the inventory changes on its own.
    pub async fn reconcile(
        &self,
        policy: &mut VMPlacementPolicy,
        used_by: &[String],
    ) -> Result<Action> {
        let resource = policy.metadata.name.clone();
        let ctx = |e: Error| {
            e.with_operation("reconcile")
                .with_resource(resource.clone())
        };
        policy.validate().map_err(|e| ctx(Error::from(e)))?;
        let (ok, reason, message) = if self.provider.capabilities().inventory {
            let inventory = self.provider.inventory().await.map_err(ctx)?;
            let missing = check_policy(policy, &inventory);
            if missing.is_empty() {
                (
                    true,
                    "Satisfiable",
                    "every hard constraint names something that exists".to_owned(),
                )
            } else {
                (
                    false,
                    "Unsatisfiable",
                    format!("not in the inventory: {}", missing.join(", ")),
                )
            }
        } else {
            (
                true,
                "NotChecked",
                format!(
                    "the {} provider has no inventory",
                    self.provider.provider_type()
                ),
            )
        };
        let st = policy.status.get_or_insert_with(Default::default);
        let mut users: Vec<String> = used_by.to_vec();
        users.sort();
        users.dedup();
        st.used_by_vms = users;
        set_condition(
            &mut st.conditions,
            Condition::new(condition_types::READY, ok, reason, message).at(now_rfc3339()),
        );
        Ok(Action::requeue(POLICY_RECHECK))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::from_yaml_str;
    use crate::placement::{DatastoreInfo, HostInfo, Resources};

    #[test]
    fn hard_constraints_naming_nothing_are_listed_by_field() {
        let policy: VMPlacementPolicy = from_yaml_str(
            "apiVersion: infra.virtrigaud.io/v1beta1\nkind: VMPlacementPolicy\nmetadata: {name: p}\n\
             spec: {hard: {clusters: [prod], hosts: [esx-1, esx-9], datastores: [fast], zones: [a]}}\n",
        )
        .unwrap();
        let inv = Inventory {
            hosts: vec![
                HostInfo::new("esx-1", Resources::default())
                    .cluster("prod")
                    .zone("a")
                    .datastore("fast"),
            ],
            datastores: vec![DatastoreInfo::new("slow", 10)],
        };
        assert_eq!(check_policy(&policy, &inv), vec!["spec.hard.hosts: esx-9"]);
    }
}
