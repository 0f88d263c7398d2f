//! Full clones through `VirtualMachineClone` (KubeVirt snapshots the source, creates the target
//! VM and restores into it). Linked clones and guest customization are not offered.

use std::collections::BTreeMap;

use kube::api::{DeleteParams, PostParams};
use kube::runtime::wait::await_condition;
use virtrigaud_core::{CloneOptions, CloneResult, Error, ErrorKind, Result, ResultExt};

use crate::PROVIDER_TYPE;
use crate::client::Connection;
use crate::error::to_core_error;
use crate::id::{VmRef, is_dns_name, sanitize_name};
use crate::labels::VM_LABEL;
use crate::types::{TypedRef, VirtualMachine, VirtualMachineClone, VirtualMachineCloneSpec, meta};

const OP: &str = "clone";

impl Connection {
    /// Clones `r` into `opts.target_name` (same namespace) and starts it if asked.
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
        if opts.power_on {
            self.start_vm(&target, false, OP).await?;
        }
        Ok(CloneResult::new(target.id(), false, false))
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
        let _ = self
            .api::<VirtualMachine>(&r.namespace)
            .delete(&target.name, &DeleteParams::default())
            .await;
        Err(match done {
            Err(_) => Error::timeout("clone did not finish in time"),
            Ok(Err(e)) => to_core_error(e, OP, Some(&res)),
            _ => Error::internal("KubeVirt reported the clone as failed"),
        })
    }
}

/// Linked clones and customization are refused.
fn check_clone_options(opts: &CloneOptions) -> Result<()> {
    if opts.linked {
        return Err(Error::new(
            ErrorKind::Unsupported,
            "KubeVirt has no linked clones",
        ));
    }
    if opts.customization.as_ref().is_some_and(|c| !c.is_empty()) {
        return Err(Error::new(
            ErrorKind::Unsupported,
            "guest customization at clone time is not supported on KubeVirt",
        ));
    }
    Ok(())
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
