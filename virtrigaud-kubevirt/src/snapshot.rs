//! Snapshots (`VirtualMachineSnapshot`) and restores (`VirtualMachineRestore`).
//!
//! A snapshot is ready when KubeVirt sets `status.readyToUse`; KubeVirt marks it `Failed` when
//! `spec.failureDeadline` passes first (this provider sets the deadline from
//! [`crate::KubeVirtConfig::snapshot_failure_deadline`] and reports that as `Timeout`, after
//! deleting the failed snapshot). KubeVirt snapshots never include memory. A restore of a running
//! VM asks KubeVirt to stop it first (`targetReadinessPolicy: StopTarget`); the restore is
//! complete when `status.complete` is true, and the VM stays off unless `RevertOptions::start`.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use async_trait::async_trait;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::runtime::wait::await_condition;
use serde_json::json;
use virtrigaud_core::{
    DeleteSnapshotOptions, ErrorKind, Result, RevertOptions, SnapshotInfo, SnapshotOptions,
    Snapshotter, VmId,
};

use crate::error::{Call, err, map_kube};
use crate::id::sanitize_name;
use crate::provider::KubeVirtProvider;
use crate::state::vmi_active;
use crate::types::{
    TypedRef, VirtualMachineRestore, VirtualMachineRestoreSpec, VirtualMachineSnapshot,
    VirtualMachineSnapshotSpec, condition_true, find_condition, meta,
};

/// Label put on snapshots this provider takes (value: the VM name).
pub const VM_LABEL: &str = "virtrigaud.io/vm";
const DESCRIPTION_ANNOTATION: &str = "virtrigaud.io/description";

fn info_of(s: &VirtualMachineSnapshot) -> SnapshotInfo {
    let name = s.metadata.name.clone().unwrap_or_default();
    let mut info = SnapshotInfo::new(name.clone(), name);
    info.description = s
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(DESCRIPTION_ANNOTATION))
        .cloned();
    let st = s.status.as_ref();
    info.created_at = st
        .and_then(|st| st.creation_time.clone())
        .or_else(|| {
            s.metadata
                .creation_timestamp
                .as_ref()
                .and_then(|t| serde_json::to_value(t).ok()?.as_str().map(str::to_owned))
        })
        .and_then(|t| serde_json::from_value::<Time>(json!(t)).ok())
        .map(|t| SystemTime::from(t.0));
    info.quiesced = st.is_some_and(|st| {
        st.indications
            .iter()
            .any(|i| i == "QuiescedFilesystem" || i == "GuestAgent")
    });
    info
}

fn deadline_string(d: Duration) -> String {
    format!("{}s", d.as_secs().max(1))
}

impl KubeVirtProvider {
    async fn delete_snapshot_object(&self, ns: &str, name: &str) {
        let api = self.api::<VirtualMachineSnapshot>(ns);
        if let Err(e) = api.delete(name, &DeleteParams::default()).await {
            tracing::debug!(snapshot = name, error = %e, "could not delete snapshot");
        }
    }
}

#[async_trait]
impl Snapshotter for KubeVirtProvider {
    async fn create_snapshot(&self, vm: &VmId, opts: &SnapshotOptions) -> Result<SnapshotInfo> {
        const OP: &str = "snapshot_create";
        let r = self.vm_ref(vm)?;
        let res = r.to_string();
        if opts.memory {
            return Err(err(
                ErrorKind::Unsupported,
                OP,
                &res,
                "KubeVirt snapshots do not include memory state",
            ));
        }
        let name = sanitize_name(&opts.name);
        let deadline = self.inner.config.snapshot_failure_deadline;
        let mut snap = VirtualMachineSnapshot::new(
            &name,
            VirtualMachineSnapshotSpec {
                source: TypedRef::vm(&r.name),
                failure_deadline: Some(deadline_string(deadline)),
                extra: Default::default(),
            },
        );
        snap.metadata = meta(
            &name,
            &r.namespace,
            BTreeMap::from([(VM_LABEL.to_owned(), r.name.clone())]),
        );
        if let Some(d) = &opts.description {
            snap.metadata.annotations = Some(BTreeMap::from([(
                DESCRIPTION_ANNOTATION.to_owned(),
                d.clone(),
            )]));
        }
        // The VM must exist (KubeVirt would wait for it until the failure deadline).
        self.get_vm(&r, OP).await?;
        let api = self.api::<VirtualMachineSnapshot>(&r.namespace);
        let started = Instant::now();
        api.create(&PostParams::default(), &snap)
            .await
            .map_err(|e| map_kube(e, Call::Object, OP, &format!("{res}@{name}")))?;
        let done = tokio::time::timeout(
            deadline + Duration::from_secs(30),
            await_condition(api.clone(), &name, |o: Option<&VirtualMachineSnapshot>| {
                o.is_none_or(|s| {
                    let st = s.status.as_ref();
                    st.and_then(|st| st.ready_to_use) == Some(true)
                        || st.and_then(|st| st.phase.as_deref()) == Some("Failed")
                })
            }),
        )
        .await;
        match done {
            Ok(Ok(Some(s))) if s.status.as_ref().and_then(|st| st.ready_to_use) == Some(true) => {
                let mut info = info_of(&s);
                info.name = opts.name.clone();
                Ok(info)
            }
            Ok(Ok(Some(s))) => {
                let msg = s
                    .status
                    .as_ref()
                    .and_then(|st| {
                        st.error
                            .as_ref()
                            .and_then(|e| e.get("message"))
                            .and_then(|m| m.as_str())
                            .map(str::to_owned)
                            .or_else(|| {
                                find_condition(&st.conditions, "Failure")
                                    .and_then(|c| c.message.clone())
                            })
                    })
                    .unwrap_or_else(|| "snapshot failed".into());
                self.delete_snapshot_object(&r.namespace, &name).await;
                let kind = if started.elapsed() >= deadline {
                    ErrorKind::Timeout
                } else {
                    ErrorKind::Internal
                };
                Err(err(
                    kind,
                    OP,
                    &format!("{res}@{name}"),
                    format!("snapshot failed: {msg}"),
                ))
            }
            Ok(Ok(None)) => Err(err(
                ErrorKind::NotFound,
                OP,
                &format!("{res}@{name}"),
                "snapshot was deleted while in progress",
            )),
            Ok(Err(e)) => Err(err(ErrorKind::Unavailable, OP, &res, "watch failed").with_source(e)),
            Err(_) => {
                self.delete_snapshot_object(&r.namespace, &name).await;
                Err(err(
                    ErrorKind::Timeout,
                    OP,
                    &format!("{res}@{name}"),
                    "snapshot not ready by its failure deadline",
                ))
            }
        }
    }

    async fn list_snapshots(&self, vm: &VmId) -> Result<Vec<SnapshotInfo>> {
        let r = self.vm_ref(vm)?;
        let api = self.api::<VirtualMachineSnapshot>(&r.namespace);
        let list = api
            .list(&ListParams::default())
            .await
            .map_err(|e| map_kube(e, Call::Object, "snapshot_list", &r.to_string()))?;
        Ok(list
            .items
            .iter()
            .filter(|s| s.spec.source.kind == "VirtualMachine" && s.spec.source.name == r.name)
            .map(info_of)
            .collect())
    }

    async fn revert_snapshot(&self, vm: &VmId, snapshot: &str, opts: &RevertOptions) -> Result<()> {
        const OP: &str = "snapshot_revert";
        let r = self.vm_ref(vm)?;
        let res = format!("{r}@{snapshot}");
        let snaps = self.api::<VirtualMachineSnapshot>(&r.namespace);
        let snap = snaps
            .get(snapshot)
            .await
            .map_err(|e| map_kube(e, Call::Object, OP, &res))?;
        if snap.spec.source.name != r.name {
            return Err(err(
                ErrorKind::InvalidSpec,
                OP,
                &res,
                "the snapshot belongs to another VM",
            ));
        }
        if snap.status.as_ref().and_then(|s| s.ready_to_use) != Some(true) {
            return Err(err(
                ErrorKind::InvalidState,
                OP,
                &res,
                "the snapshot is not ready to use",
            ));
        }
        // A running VM is stopped by KubeVirt itself first (targetReadinessPolicy StopTarget).
        let running = vmi_active(self.get_vmi(&r, OP).await?.as_ref());
        let millis = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let name = sanitize_name(&format!(
            "{}-restore-{millis}",
            &snapshot[..snapshot.len().min(40)]
        ));
        let mut restore = VirtualMachineRestore::new(
            &name,
            VirtualMachineRestoreSpec {
                target: TypedRef::vm(&r.name),
                virtual_machine_snapshot_name: snapshot.to_owned(),
                extra: Default::default(),
            },
        );
        restore.metadata = meta(
            &name,
            &r.namespace,
            BTreeMap::from([(VM_LABEL.to_owned(), r.name.clone())]),
        );
        if running {
            restore
                .spec
                .extra
                .insert("targetReadinessPolicy".into(), json!("StopTarget"));
        }
        let api = self.api::<VirtualMachineRestore>(&r.namespace);
        api.create(&PostParams::default(), &restore)
            .await
            .map_err(|e| map_kube(e, Call::Object, OP, &res))?;
        let done = tokio::time::timeout(
            self.inner.config.operation_timeout,
            await_condition(api.clone(), &name, |o: Option<&VirtualMachineRestore>| {
                o.is_none_or(|x| {
                    let st = x.status.as_ref();
                    st.and_then(|s| s.complete) == Some(true)
                        || st.is_some_and(|s| condition_true(&s.conditions, "Failure"))
                })
            }),
        )
        .await;
        let outcome = match done {
            Ok(Ok(Some(x))) if x.status.as_ref().and_then(|s| s.complete) == Some(true) => Ok(()),
            Ok(Ok(Some(x))) => {
                let msg = x
                    .status
                    .as_ref()
                    .and_then(|s| find_condition(&s.conditions, "Failure"))
                    .and_then(|c| c.message.clone());
                Err(err(
                    ErrorKind::Internal,
                    OP,
                    &res,
                    format!("restore failed: {}", msg.unwrap_or_default()),
                ))
            }
            Ok(Ok(None)) => Err(err(
                ErrorKind::NotFound,
                OP,
                &res,
                "restore object deleted while in progress",
            )),
            Ok(Err(e)) => Err(err(ErrorKind::Unavailable, OP, &res, "watch failed").with_source(e)),
            Err(_) => Err(err(
                ErrorKind::Timeout,
                OP,
                &res,
                "restore did not complete in time",
            )),
        };
        if outcome.is_ok() {
            // Completed restores are history only.
            let _ = api.delete(&name, &DeleteParams::default()).await;
            if opts.start {
                self.start_vm(&r, false, OP).await?;
            }
        }
        outcome
    }

    async fn delete_snapshot(
        &self,
        vm: &VmId,
        snapshot: &str,
        _opts: &DeleteSnapshotOptions,
    ) -> Result<()> {
        let r = self.vm_ref(vm)?;
        let res = format!("{r}@{snapshot}");
        let api = self.api::<VirtualMachineSnapshot>(&r.namespace);
        let snap = api
            .get(snapshot)
            .await
            .map_err(|e| map_kube(e, Call::Object, "snapshot_delete", &res))?;
        if snap.spec.source.name != r.name {
            return Err(err(
                ErrorKind::NotFound,
                "snapshot_delete",
                &res,
                "no such snapshot of this VM",
            ));
        }
        api.delete(snapshot, &DeleteParams::default())
            .await
            .map_err(|e| map_kube(e, Call::Object, "snapshot_delete", &res))?;
        Ok(())
    }
}
