//! The fake snapshot, restore and clone controllers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use kube::api::{Patch, PostParams};
use kube::runtime::reflector::Store;
use serde_json::{Value, json};

use super::controller::{Ctl, ann, now};
use super::{SNAPSHOT_STUCK, pp};
use crate::state::vmi_phase;
use crate::types::*;

impl Ctl {
    pub(super) async fn reconcile_snapshot(
        &mut self,
        s: &VirtualMachineSnapshot,
        vms: &Store<VirtualMachine>,
        vmis: &HashMap<String, Arc<VirtualMachineInstance>>,
    ) {
        let name = s.name_any();
        let phase = s.status.as_ref().and_then(|st| st.phase.clone());
        if matches!(phase.as_deref(), Some("Succeeded" | "Failed"))
            || !self.snap_started.insert(name.clone())
        {
            return;
        }
        let api = self.api::<VirtualMachineSnapshot>();
        let vm = vms
            .state()
            .into_iter()
            .find(|v| v.name_any() == s.spec.source.name);
        let stuck = vm
            .as_ref()
            .is_some_and(|v| ann(v, SNAPSHOT_STUCK).is_some());
        let template = vm
            .as_ref()
            .and_then(|v| serde_json::to_value(&v.spec.template).ok())
            .unwrap_or(Value::Null);
        let online = vmis
            .get(&s.spec.source.name)
            .is_some_and(|v| vmi_phase(v) == "Running");
        let deadline = s
            .spec
            .failure_deadline
            .as_deref()
            .and_then(|d| d.trim_end_matches('s').parse::<u64>().ok())
            .unwrap_or(300);
        let store = Arc::clone(&self.snapshots);
        tokio::spawn(async move {
            let st = json!({"status": {"phase": "InProgress", "readyToUse": false,
                "conditions": [{"type": "Progressing", "status": "True"}, {"type": "Ready", "status": "False"}]}});
            let _ = api.patch_status(&name, &pp(), &Patch::Merge(st)).await;
            if stuck {
                tokio::time::sleep(Duration::from_secs(deadline)).await;
                let st = json!({"status": {"phase": "Failed", "error": {"message": "snapshot deadline exceeded", "time": now()},
                    "conditions": [{"type": "Progressing", "status": "False"}, {"type": "Failure", "status": "True", "message": "snapshot deadline exceeded"}]}});
                let _ = api.patch_status(&name, &pp(), &Patch::Merge(st)).await;
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            store.lock().unwrap().insert(name.clone(), template);
            let ind = if online {
                json!(["Online", "GuestAgent"])
            } else {
                json!([])
            };
            let st = json!({"status": {"phase": "Succeeded", "readyToUse": true, "creationTime": now(), "indications": ind,
                "conditions": [{"type": "Progressing", "status": "False"}, {"type": "Ready", "status": "True"}]}});
            let _ = api.patch_status(&name, &pp(), &Patch::Merge(st)).await;
        });
    }

    pub(super) async fn reconcile_restore(
        &mut self,
        r: &VirtualMachineRestore,
        vms: &Store<VirtualMachine>,
        vmis: &HashMap<String, Arc<VirtualMachineInstance>>,
    ) {
        if r.status.as_ref().and_then(|s| s.complete) == Some(true) {
            return;
        }
        let name = r.name_any();
        let target = r.spec.target.name.clone();
        let api = self.api::<VirtualMachineRestore>();
        let template = self
            .snapshots
            .lock()
            .unwrap()
            .get(&r.spec.virtual_machine_snapshot_name)
            .cloned();
        let Some(template) = template else {
            let st = json!({"status": {"complete": false, "conditions": [{"type": "Failure", "status": "True", "message": "snapshot content not found"}]}});
            let _ = api.patch_status(&name, &pp(), &Patch::Merge(st)).await;
            return;
        };
        if vmis.contains_key(&target) {
            if r.spec
                .extra
                .get("targetReadinessPolicy")
                .and_then(|v| v.as_str())
                == Some("StopTarget")
                && let Some(vm) = vms.state().into_iter().find(|v| v.name_any() == target)
                && vm.spec.run_strategy.as_deref() != Some("Halted")
            {
                let _ = self
                    .api::<VirtualMachine>()
                    .patch(
                        &target,
                        &pp(),
                        &Patch::Merge(json!({"spec": {"runStrategy": "Halted"}})),
                    )
                    .await;
            }
            return; // wait for the VM to stop
        }
        let p: json_patch::Patch = serde_json::from_value(
            json!([{"op": "replace", "path": "/spec/template", "value": template}]),
        )
        .unwrap();
        if self
            .api::<VirtualMachine>()
            .patch(&target, &pp(), &Patch::Json::<()>(p))
            .await
            .is_ok()
        {
            let st = json!({"status": {"complete": true, "restoreTime": now(), "conditions": [{"type": "Ready", "status": "True"}]}});
            let _ = api.patch_status(&name, &pp(), &Patch::Merge(st)).await;
        }
    }

    pub(super) async fn reconcile_clone(
        &mut self,
        c: &VirtualMachineClone,
        vms: &Store<VirtualMachine>,
    ) {
        if c.status.as_ref().and_then(|s| s.phase.as_deref()).is_some() {
            return;
        }
        let name = c.name_any();
        let api = self.api::<VirtualMachineClone>();
        // The reflector may not have seen a source created just before: ask the apiserver.
        let source = match vms
            .state()
            .into_iter()
            .find(|v| v.name_any() == c.spec.source.name)
        {
            Some(v) => Some(v),
            None => self
                .api::<VirtualMachine>()
                .get_opt(&c.spec.source.name)
                .await
                .ok()
                .flatten()
                .map(Arc::new),
        };
        let target = c
            .spec
            .target
            .as_ref()
            .map(|t| t.name.clone())
            .unwrap_or_else(|| format!("{}-clone", c.spec.source.name));
        let fail = {
            let mut faults = self.clone_faults.lock().unwrap();
            let hit = faults
                .iter()
                .position(|f| f.as_ref().is_none_or(|t| *t == target));
            hit.map(|i| faults.remove(i)).is_some()
        };
        let phase = match source {
            None => "Failed",
            Some(src) => {
                let vm: VirtualMachine = serde_json::from_value(json!({
                    "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
                    "metadata": {"name": target, "namespace": self.ns, "labels": src.metadata.labels.clone(),
                                 "annotations": src.metadata.annotations.clone()},
                    "spec": {"runStrategy": "Halted", "template": src.spec.template.clone()},
                }))
                .unwrap();
                if self
                    .api::<VirtualMachine>()
                    .create(&PostParams::default(), &vm)
                    .await
                    .is_ok()
                {
                    if fail {
                        "RestoreInProgress"
                    } else {
                        "Succeeded"
                    }
                } else {
                    "Failed"
                }
            }
        };
        let _ = api
            .patch_status(
                &name,
                &pp(),
                &Patch::Merge(json!({"status": {"phase": phase, "targetName": target}})),
            )
            .await;
        if phase == "RestoreInProgress" {
            // The armed fault: the restore into the new target fails.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let st = json!({"status": {"phase": "Failed", "conditions": [
                {"type": "Ready", "status": "False", "reason": "RestoreFailed",
                 "message": "restore into the target VM failed (injected by the fake clone controller)"},
                {"type": "Progressing", "status": "False"}]}});
            let _ = api.patch_status(&name, &pp(), &Patch::Merge(st)).await;
        }
    }
}
