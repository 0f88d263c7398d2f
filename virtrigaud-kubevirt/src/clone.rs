//! Full clones through `VirtualMachineClone` (KubeVirt snapshots the source, creates the target
//! VM and restores into it). Linked clones and guest customization are not offered.

use std::collections::BTreeMap;

use async_trait::async_trait;
use kube::api::{DeleteParams, PostParams};
use kube::runtime::wait::await_condition;
use virtrigaud_core::{CloneOptions, CloneResult, Cloner, ErrorKind, Result, VmId};

use crate::error::{Call, err, map_kube};
use crate::id::{VmRef, is_dns_name, sanitize_name};
use crate::provider::KubeVirtProvider;
use crate::snapshot::VM_LABEL;
use crate::types::{TypedRef, VirtualMachine, VirtualMachineClone, VirtualMachineCloneSpec, meta};

#[async_trait]
impl Cloner for KubeVirtProvider {
    async fn clone_vm(&self, source: &VmId, opts: &CloneOptions) -> Result<CloneResult> {
        const OP: &str = "clone";
        let r = self.vm_ref(source)?;
        let res = r.to_string();
        if opts.linked {
            return Err(err(
                ErrorKind::Unsupported,
                OP,
                &res,
                "KubeVirt has no linked clones",
            ));
        }
        if opts.customization.as_ref().is_some_and(|c| !c.is_empty()) {
            return Err(err(
                ErrorKind::Unsupported,
                OP,
                &res,
                "guest customization at clone time is not supported on KubeVirt",
            ));
        }
        if !is_dns_name(&opts.target_name) {
            return Err(err(
                ErrorKind::InvalidSpec,
                OP,
                &opts.target_name,
                "target names must be DNS-1123 names",
            ));
        }
        self.get_vm(&r, OP).await?;
        let target = VmRef {
            namespace: r.namespace.clone(),
            name: opts.target_name.clone(),
        };
        let src = match &opts.snapshot {
            Some(s) => TypedRef {
                api_group: Some("snapshot.kubevirt.io".into()),
                kind: "VirtualMachineSnapshot".into(),
                name: s.clone(),
            },
            None => TypedRef::vm(&r.name),
        };
        let name = sanitize_name(&format!("{}-clone", opts.target_name));
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
            &r.namespace,
            BTreeMap::from([(VM_LABEL.to_owned(), r.name.clone())]),
        );
        let api = self.api::<VirtualMachineClone>(&r.namespace);
        api.create(&PostParams::default(), &obj)
            .await
            .map_err(|e| map_kube(e, Call::Object, OP, &res))?;
        let done = tokio::time::timeout(
            self.inner.config.operation_timeout,
            await_condition(api.clone(), &name, |o: Option<&VirtualMachineClone>| {
                o.is_none_or(|c| {
                    matches!(
                        c.status.as_ref().and_then(|s| s.phase.as_deref()),
                        Some("Succeeded" | "Failed")
                    )
                })
            }),
        )
        .await;
        let ok = matches!(&done, Ok(Ok(Some(c))) if c.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded"));
        let _ = api.delete(&name, &DeleteParams::default()).await;
        if !ok {
            // Leave nothing behind: remove a half-made target.
            let _ = self
                .api::<VirtualMachine>(&r.namespace)
                .delete(&target.name, &DeleteParams::default())
                .await;
            return Err(match done {
                Err(_) => err(ErrorKind::Timeout, OP, &res, "clone did not finish in time"),
                Ok(Err(e)) => err(ErrorKind::Unavailable, OP, &res, "watch failed").with_source(e),
                _ => err(
                    ErrorKind::Internal,
                    OP,
                    &res,
                    "KubeVirt reported the clone as failed",
                ),
            });
        }
        if opts.power_on {
            self.start_vm(&target, false, OP).await?;
        }
        Ok(CloneResult::new(target.id(), false, false))
    }
}
