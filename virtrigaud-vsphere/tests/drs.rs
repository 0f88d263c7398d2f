//! A VM set placed with host anti-affinity on vcsim: each member gets a host of its own, and
//! the members in cluster DC0_C0 are held apart by a DRS VM-VM anti-affinity rule the
//! provider makes (read back with a raw session).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use virtrigaud_core::model::{AntiAffinity, VMPlacementPolicySpec, VMSet, VMSetSpec, VmResources};
use virtrigaud_core::placement::SolverPlacer;
use virtrigaud_core::shutdown::{ShutdownManager, ShutdownPolicy};
use virtrigaud_core::vmset::{SET_LABEL, VmSetReconciler};
use virtrigaud_core::{ListOptions, Provider};

use common::{RawSession, provider};

/// The `configurationEx` of cluster DC0_C0 and its moref.
async fn cluster_config() -> (String, String) {
    let mut raw = RawSession::login().await;
    let found = raw
        .call(r#"<FindByInventoryPath xmlns="urn:vim25"><_this type="SearchIndex">SearchIndex</_this><inventoryPath>DC0/host/DC0_C0</inventoryPath></FindByInventoryPath>"#)
        .await;
    let start = found
        .find("type=\"ClusterComputeResource\">")
        .expect("cluster")
        + 30;
    let moref = found[start..start + found[start..].find('<').unwrap()].to_owned();
    let cfg = raw
        .call(&format!(
            r#"<RetrievePropertiesEx xmlns="urn:vim25"><_this type="PropertyCollector">propertyCollector</_this><specSet><propSet><type>ClusterComputeResource</type><pathSet>configurationEx</pathSet><pathSet>host</pathSet></propSet><objectSet><obj type="ClusterComputeResource">{moref}</obj></objectSet></specSet><options/></RetrievePropertiesEx>"#
        ))
        .await;
    (moref, cfg)
}

/// The `<rule>…</rule>` element named `name` in a cluster config, if any.
fn rule<'a>(cfg: &'a str, name: &str) -> Option<&'a str> {
    let at = cfg.find(&format!("<name>{name}</name>"))?;
    let start = cfg[..at].rfind("<rule")?;
    let end = at + cfg[at..].find("</rule>")?;
    Some(&cfg[start..end])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_in_a_cluster_are_held_apart_by_a_drs_rule() {
    let Some(p) = provider().await else { return };
    let p: Arc<dyn Provider> = Arc::new(p);
    let name = format!("vsc-drs-{}", std::process::id());
    let mut aa = AntiAffinity::default();
    aa.host_anti_affinity = true;
    let mut policy = VMPlacementPolicySpec::default();
    policy.anti_affinity = Some(aa);
    let reconciler = VmSetReconciler::new(Arc::clone(&p), ShutdownManager::new(Arc::clone(&p)))
        .shutdown_policy(ShutdownPolicy::with_grace(Duration::from_secs(2)))
        .placer(Arc::new(SolverPlacer::new(Arc::clone(&p))))
        .placement_policy(policy);
    let mut spec = VMSetSpec::default();
    spec.replicas = Some(3);
    let mut res = VmResources::default();
    res.cpu = Some(1);
    res.memory_mib = Some(128);
    spec.template.spec.resources = Some(res);
    let mut set = VMSet::new(name.as_str(), spec);
    reconciler
        .run_until_converged(&set, Duration::from_millis(200), 200)
        .await
        .expect("three members");

    let mut opts = ListOptions::default();
    opts.labels.insert(SET_LABEL.into(), name.clone());
    let members = p.list_vms(&opts).await.unwrap();
    assert_eq!(members.len(), 3);
    let hosts: std::collections::BTreeSet<_> = members.iter().map(|m| m.host.clone()).collect();
    assert_eq!(hosts.len(), 3, "one host each: {hosts:?}");
    let (cluster, cfg) = cluster_config().await;
    let in_cluster: Vec<_> = members
        .iter()
        .filter(|m| {
            m.host
                .as_deref()
                .is_some_and(|h| cfg.contains(&format!(">{h}<")))
        })
        .collect();
    assert!(in_cluster.len() >= 2, "{cfg}");
    let rule_name = format!("virtrigaud {SET_LABEL}={name}");
    let rule = rule(&cfg, &rule_name).unwrap_or_else(|| panic!("no rule {rule_name}: {cfg}"));
    assert!(rule.contains("ClusterAntiAffinityRuleSpec"), "{rule}");
    for m in &in_cluster {
        assert!(
            rule.contains(&format!(">{}<", m.id)),
            "{} not in {rule}",
            m.id
        );
    }

    set.spec.replicas = Some(0);
    reconciler
        .run_until_converged(&set, Duration::from_millis(200), 200)
        .await
        .expect("scale to 0");
    let key_at = rule.find("<key>").unwrap() + 5;
    let key = &rule[key_at..key_at + rule[key_at..].find('<').unwrap()];
    RawSession::login()
        .await
        .call(&format!(
            r#"<ReconfigureComputeResource_Task xmlns="urn:vim25"><_this type="ClusterComputeResource">{cluster}</_this><spec xsi:type="ClusterConfigSpecEx"><rulesSpec><operation>remove</operation><removeKey xsi:type="xsd:int">{key}</removeKey></rulesSpec></spec><modify>true</modify></ReconfigureComputeResource_Task>"#
        ))
        .await;
}
