//! Full clones through `VirtualMachineClone` (KubeVirt snapshots the source, creates the target
//! VM and restores into it), with guest customization applied to the target before it first
//! starts. Linked clones are not offered.
//!
//! A customization is checked before anything is made and applied to the target before it
//! first starts (see the `customize` module).
//!
//! A failed clone leaves nothing: a `VirtualMachineClone` that fails (or does not finish in
//! time), or a customization that cannot be applied, deletes the half-made target VM and the
//! Secret made for it before the error is returned.

use std::collections::BTreeMap;

use kube::api::{DeleteParams, PostParams, PropagationPolicy};
use kube::runtime::wait::{await_condition, conditions};
use serde_json::json;
use virtrigaud_core::{CloneOptions, CloneResult, Error, ErrorKind, Result, ResultExt};

use crate::PROVIDER_TYPE;
use crate::client::Connection;
use crate::customize::check_customization;
use crate::error::to_core_error;
use crate::id::{VmRef, is_dns_name, sanitize_name};
use crate::labels::VM_LABEL;
use crate::types::{TypedRef, VirtualMachine, VirtualMachineClone, VirtualMachineCloneSpec, meta};

const OP: &str = "clone";

impl Connection {
    /// Clones `r` into `opts.target_name` (same namespace), customizes it and starts it if asked.
    pub(crate) async fn clone_vm(&self, r: &VmRef, opts: &CloneOptions) -> Result<CloneResult> {
        let res = r.to_string();
        check_clone_options(opts).ctx(PROVIDER_TYPE, OP, &res)?;
        if !is_dns_name(&opts.target_name) {
            return Err(Error::invalid_spec("target names must be DNS-1123 names")).ctx(
                PROVIDER_TYPE,
                OP,
                &opts.target_name,
            );
        }
        self.get_vm(r, OP).await?;
        let target = VmRef {
            namespace: r.namespace.clone(),
            name: opts.target_name.clone(),
        };
        let obj = clone_object(r, &target, opts.snapshot.as_deref());
        self.run_clone(r, &target, &obj)
            .await
            .ctx(PROVIDER_TYPE, OP, &res)?;
        if let Some(node) = &opts.placement.host {
            let api = self.api::<VirtualMachine>(&target.namespace);
            let body = json!({"spec": {"template": {"spec": {
                "nodeSelector": {"kubernetes.io/hostname": node}}}}});
            let res = target.to_string();
            if let Err(e) = self.merge_patch(&api, &target.name, &body, OP, &res).await {
                self.remove_half_made(&target).await;
                return Err(e);
            }
        }
        let customization = opts.customization.as_ref().filter(|c| !c.is_empty());
        if let Some(c) = customization
            && let Err(e) = self.customize(&target, c).await
        {
            self.remove_half_made(&target).await;
            return Err(e);
        }
        if opts.power_on {
            self.start_vm(&target, false, OP).await?;
        }
        Ok(CloneResult::new(
            target.id(),
            false,
            customization.is_some(),
        ))
    }

    /// Creates the `VirtualMachineClone`, waits for its outcome and deletes it; on failure the
    /// half-made target is removed too (nothing is left behind).
    async fn run_clone(&self, r: &VmRef, target: &VmRef, obj: &VirtualMachineClone) -> Result<()> {
        let res = r.to_string();
        let name = obj.metadata.name.clone().unwrap_or_default();
        let api = self.api::<VirtualMachineClone>(&r.namespace);
        api.create(&PostParams::default(), obj)
            .await
            .map_err(|e| to_core_error(e, OP, Some(&res)))?;
        let done = tokio::time::timeout(
            self.config.operation_timeout,
            await_condition(api.clone(), &name, |o: Option<&VirtualMachineClone>| {
                o.is_none_or(|c| matches!(clone_phase(c), Some("Succeeded" | "Failed")))
            }),
        )
        .await;
        let ok = matches!(&done, Ok(Ok(Some(c))) if clone_phase(c) == Some("Succeeded"));
        let _ = api.delete(&name, &DeleteParams::default()).await;
        if ok {
            return Ok(());
        }
        self.remove_half_made(target).await;
        Err(match done {
            Err(_) => Error::timeout("clone did not finish in time"),
            Ok(Err(e)) => to_core_error(e, OP, Some(&res)),
            Ok(Ok(Some(c))) => match failure_message(&c) {
                Some(m) => Error::internal(format!("KubeVirt reported the clone as failed: {m}")),
                None => Error::internal("KubeVirt reported the clone as failed"),
            },
            Ok(Ok(None)) => {
                Error::internal("the VirtualMachineClone was deleted before it finished")
            }
        })
    }
    /// Removes a half-made clone: its Secrets, then the VM, waiting until it is gone (best
    /// effort, bounded by the operation timeout).
    async fn remove_half_made(&self, target: &VmRef) {
        let api = self.api::<VirtualMachine>(&target.namespace);
        let vm = match api.get_opt(&target.name).await {
            Ok(Some(vm)) => vm,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(vm = %target, error = %e, "cannot read the half-made clone; deleting it blind");
                let _ = api.delete(&target.name, &DeleteParams::default()).await;
                return;
            }
        };
        self.delete_owned_secrets(&vm, true).await;
        let dp = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            ..Default::default()
        };
        match api.delete(&target.name, &dp).await {
            Ok(_) => {
                if let Some(uid) = vm.metadata.uid.as_deref() {
                    let gone = tokio::time::timeout(
                        self.config.operation_timeout,
                        await_condition(api, &target.name, conditions::is_deleted(uid)),
                    )
                    .await;
                    if !matches!(gone, Ok(Ok(_))) {
                        tracing::warn!(vm = %target, "the half-made clone is not gone yet");
                    }
                }
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => tracing::warn!(vm = %target, error = %e, "cannot delete the half-made clone"),
        }
    }
}

/// Linked clones are refused; a customization is checked before anything is made.
fn check_clone_options(opts: &CloneOptions) -> Result<()> {
    if opts.linked {
        return Err(Error::new(
            ErrorKind::Unsupported,
            "KubeVirt has no linked clones",
        ));
    }
    if opts.placement.cluster.is_some() || opts.placement.datastore.is_some() {
        return Err(Error::invalid_spec(
            "placement: a KubeVirt clone is placed by host (node) only; its disks are \
             restored where the snapshot's storage class puts them, in the source's cluster",
        ));
    }
    match opts.customization.as_ref().filter(|c| !c.is_empty()) {
        Some(c) => check_customization(c),
        None => Ok(()),
    }
}

/// The `VirtualMachineClone` of `source` (or of its `snapshot`) into `target`.
fn clone_object(source: &VmRef, target: &VmRef, snapshot: Option<&str>) -> VirtualMachineClone {
    let src = match snapshot {
        Some(s) => TypedRef {
            api_group: Some("snapshot.kubevirt.io".into()),
            kind: "VirtualMachineSnapshot".into(),
            name: s.to_owned(),
        },
        None => TypedRef::vm(&source.name),
    };
    let name = sanitize_name(&format!("{}-clone", target.name));
    let mut obj = VirtualMachineClone::new(
        &name,
        VirtualMachineCloneSpec {
            source: src,
            target: Some(TypedRef::vm(&target.name)),
            extra: Default::default(),
        },
    );
    obj.metadata = meta(
        &name,
        &source.namespace,
        BTreeMap::from([(VM_LABEL.to_owned(), source.name.clone())]),
    );
    obj
}

fn clone_phase(c: &VirtualMachineClone) -> Option<&str> {
    c.status.as_ref().and_then(|s| s.phase.as_deref())
}

/// The message of a failed clone's failing condition (`Ready`/`Progressing` false, `Failure`).
fn failure_message(c: &VirtualMachineClone) -> Option<String> {
    c.status.as_ref()?.conditions.iter().find_map(|cond| {
        let failing = (cond.type_ == "Failure" && cond.status == "True")
            || (cond.type_ != "Failure" && cond.status == "False");
        failing
            .then(|| cond.message.clone())
            .flatten()
            .filter(|m| !m.is_empty())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtrigaud_core::Customization;

    #[test]
    fn linked_clones_are_unsupported_and_customization_is_checked_first() {
        let e = check_clone_options(&CloneOptions::new("t").linked(true)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unsupported);
        let mut c = Customization::default();
        c.hostname = Some("Bad_Host".into());
        let e = check_clone_options(&CloneOptions::new("t").with_customization(c)).unwrap_err();
        assert!(e.to_string().contains("customization.hostname"), "{e}");
        assert!(check_clone_options(&CloneOptions::new("t")).is_ok());
    }
}
