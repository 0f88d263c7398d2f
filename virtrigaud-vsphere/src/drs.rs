//! The DRS rule a placement's host anti-affinity becomes: a VM-VM anti-affinity rule in the
//! new VM's cluster (`ClusterAntiAffinityRuleSpec`), named after the group
//! (`virtrigaud <label>=<value>`), holding every VM of the group in that cluster, so DRS
//! keeps the VMs apart when it moves them. vCenter wants two VMs in such a rule: the rule is
//! made with the group's second VM in the cluster and extended with every later one. A VM on
//! a standalone host has no DRS and joins no rule.

use std::sync::Arc;

use virtrigaud_core::placement::HostAntiAffinity;
use virtrigaud_core::{Error, ListOptions, Result, VmId};

use crate::PROVIDER_TYPE;
use crate::client::Client;
use crate::describe::list_vms;
use crate::error::to_core_error;
use crate::types::MoRef;
use crate::xml::{Element, Xml};

const OP: &str = "create";

/// The rule's name for `group`.
pub(crate) fn rule_name(group: &HostAntiAffinity) -> String {
    format!("virtrigaud {}={}", group.label, group.value)
}

/// Puts `vm` into its group's anti-affinity rule in its cluster (see the module docs).
pub(crate) async fn join(c: &Arc<Client>, vm: &VmId, group: &HostAntiAffinity) -> Result<()> {
    let err = |e| to_core_error(e, OP, Some(vm.as_str()));
    let Some(cluster) = cluster_of_vm(c, vm).await? else {
        return Ok(());
    };
    let mut opts = ListOptions::default();
    opts.labels.insert(group.label.clone(), group.value.clone());
    let mut members = Vec::new();
    for m in list_vms(c, &opts).await? {
        let here = match m.host.as_deref() {
            Some(h) => cluster_of_host(c, h).await?.as_ref() == Some(&cluster),
            None => false,
        };
        if here || m.id == *vm {
            members.push(m.id);
        }
    }
    if !members.contains(vm) {
        members.push(vm.clone());
    }
    members.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    members.dedup();
    if members.len() < 2 {
        return Ok(());
    }
    let name = rule_name(group);
    let config = c
        .retrieve(&cluster, &["configurationEx"])
        .await
        .map_err(err)?;
    let existing = config
        .get("configurationEx")
        .and_then(|cfg| rule_key(cfg, &name));
    let body = rule_body(&name, existing.as_deref(), &members);
    c.run_task("ReconfigureComputeResource_Task", &cluster, &body)
        .await
        .map_err(err)?;
    Ok(())
}

/// The cluster of the VM's host (`None`: a standalone host).
async fn cluster_of_vm(c: &Client, vm: &VmId) -> Result<Option<MoRef>> {
    let p = c
        .retrieve(&MoRef::vm(vm.as_str()), &["runtime.host"])
        .await
        .map_err(|e| to_core_error(e, OP, Some(vm.as_str())))?;
    match p.str("runtime.host") {
        Some(h) => cluster_of_host(c, h).await,
        None => Err(Error::invalid_state("the new VM has no host").context_for(
            PROVIDER_TYPE,
            OP,
            Some(vm.as_str()),
        )),
    }
}

/// The cluster host `host` (a moref value) belongs to, if it is in one.
async fn cluster_of_host(c: &Client, host: &str) -> Result<Option<MoRef>> {
    let p = c
        .retrieve(&MoRef::new("HostSystem", host), &["parent"])
        .await
        .map_err(|e| to_core_error(e, OP, Some(host)))?;
    Ok(p.get("parent")
        .and_then(MoRef::from_el)
        .filter(|m| m.ty == "ClusterComputeResource"))
}

/// The key of the rule named `name` in a `ClusterConfigInfoEx`.
fn rule_key(config: &Element, name: &str) -> Option<String> {
    config
        .children_named("rule")
        .find(|r| r.text_at("name") == Some(name))
        .and_then(|r| r.text_at("key"))
        .map(str::to_owned)
}

/// The `ReconfigureComputeResource_Task` body adding (or, with `key`, editing) the
/// anti-affinity rule `name` over `vms` (elements in XSD order).
fn rule_body(name: &str, key: Option<&str>, vms: &[VmId]) -> String {
    let mut b = Xml::new();
    b.open_typed("spec", "ClusterConfigSpecEx")
        .open("rulesSpec")
        .el("operation", if key.is_some() { "edit" } else { "add" })
        .open_typed("info", "ClusterAntiAffinityRuleSpec")
        .opt("key", key)
        .el("enabled", "true")
        .el("name", name)
        .el("mandatory", "true");
    for vm in vms {
        b.moref("vm", "VirtualMachine", vm.as_str());
    }
    b.close("info")
        .close("rulesSpec")
        .close("spec")
        .el("modify", "true");
    b.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_is_added_then_edited_in_xsd_order() {
        let vms = [VmId::new("vm-1"), VmId::new("vm-2")];
        let add = rule_body("virtrigaud virtrigaud.io/set=web", None, &vms);
        assert!(add.contains("<operation>add</operation>"), "{add}");
        assert!(!add.contains("<key>"), "{add}");
        let order = [
            "<enabled>",
            "<name>",
            "<mandatory>",
            "<vm type=\"VirtualMachine\">vm-1",
            "vm-2",
            "<modify>",
        ];
        let mut at = 0;
        for o in order {
            let i = add[at..]
                .find(o)
                .unwrap_or_else(|| panic!("{o} after {at}: {add}"));
            at += i;
        }
        let edit = rule_body("r", Some("7"), &vms);
        assert!(
            edit.contains("<operation>edit</operation>") && edit.contains("<key>7</key>"),
            "{edit}"
        );
    }
}
