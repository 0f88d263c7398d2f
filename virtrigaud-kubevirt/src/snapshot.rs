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

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::runtime::wait::await_condition;
use serde_json::json;
use virtrigaud_core::{
    DeleteSnapshotOptions, Error, ErrorKind, Result, ResultExt, RevertOptions, SnapshotInfo,
    SnapshotOptions,
};

use crate::PROVIDER_TYPE;
use crate::client::Connection;
use crate::error::to_core_error;
use crate::id::{VmRef, sanitize_name};
use crate::labels::{DESCRIPTION_ANNOTATION, VM_LABEL};
use crate::state::vmi_active;
use crate::types::{
    TypedRef, VirtualMachineRestore, VirtualMachineRestoreSpec, VirtualMachineSnapshot,
    VirtualMachineSnapshotSpec, condition_true, find_condition, meta,
};

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

/// The `VirtualMachineSnapshot` object `opts` asks for.
fn snapshot_object(
    r: &VmRef,
    name: &str,
    deadline: Duration,
    opts: &SnapshotOptions,
) -> VirtualMachineSnapshot {
    let mut snap = VirtualMachineSnapshot::new(
        name,
        VirtualMachineSnapshotSpec {
            source: TypedRef::vm(&r.name),
            failure_deadline: Some(deadline_string(deadline)),
            extra: Default::default(),
        },
    );
    snap.metadata = meta(
        name,
        &r.namespace,
        BTreeMap::from([(VM_LABEL.to_owned(), r.name.clone())]),
    );
    if let Some(d) = &opts.description {
        snap.metadata.annotations = Some(BTreeMap::from([(
            DESCRIPTION_ANNOTATION.to_owned(),
            d.clone(),
        )]));
    }
    snap
}

/// Why KubeVirt failed a snapshot (its error, else its `Failure` condition).
fn snapshot_failure(s: &VirtualMachineSnapshot) -> String {
    s.status
        .as_ref()
        .and_then(|st| {
            st.error
                .as_ref()
                .and_then(|e| e.get("message"))
                .and_then(|m| m.as_str())
                .map(str::to_owned)
                .or_else(|| {
                    find_condition(&st.conditions, "Failure").and_then(|c| c.message.clone())
                })
        })
        .unwrap_or_else(|| "snapshot failed".into())
}

/// The `VirtualMachineRestore` of `snapshot` into `r` (asking KubeVirt to stop a running VM).
fn restore_object(r: &VmRef, snapshot: &str, running: bool) -> VirtualMachineRestore {
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
    restore
}

impl Connection {
    async fn delete_snapshot_object(&self, ns: &str, name: &str) {
        let api = self.api::<VirtualMachineSnapshot>(ns);
        if let Err(e) = api.delete(name, &DeleteParams::default()).await {
            tracing::debug!(snapshot = name, error = %e, "could not delete snapshot");
        }
    }

    /// Takes a snapshot and waits until it is ready (or failed, or past its deadline).
    pub(crate) async fn create_snapshot(
        &self,
        r: &VmRef,
        opts: &SnapshotOptions,
    ) -> Result<SnapshotInfo> {
        const OP: &str = "snapshot_create";
        let res = r.to_string();
        if opts.memory {
            return Err(Error::new(
                ErrorKind::Unsupported,
                "KubeVirt snapshots do not include memory state",
            ))
            .ctx(PROVIDER_TYPE, OP, &res);
        }
        let name = sanitize_name(&opts.name);
        let deadline = self.config.snapshot_failure_deadline;
        let snap = snapshot_object(r, &name, deadline, opts);
        // The VM must exist (KubeVirt would wait for it until the failure deadline).
        self.get_vm(r, OP).await?;
        let api = self.api::<VirtualMachineSnapshot>(&r.namespace);
        let started = Instant::now();
        let at = format!("{res}@{name}");
        api.create(&PostParams::default(), &snap)
            .await
            .map_err(|e| to_core_error(e, OP, Some(&at)))?;
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
                let msg = snapshot_failure(&s);
                self.delete_snapshot_object(&r.namespace, &name).await;
                let kind = if started.elapsed() >= deadline {
                    ErrorKind::Timeout
                } else {
                    ErrorKind::Internal
                };
                Err(Error::new(kind, format!("snapshot failed: {msg}"))).ctx(PROVIDER_TYPE, OP, &at)
            }
            Ok(Ok(None)) => Err(Error::not_found("snapshot was deleted while in progress")).ctx(
                PROVIDER_TYPE,
                OP,
                &at,
            ),
            Ok(Err(e)) => Err(to_core_error(e, OP, Some(&res))),
            Err(_) => {
                self.delete_snapshot_object(&r.namespace, &name).await;
                Err(Error::timeout("snapshot not ready by its failure deadline")).ctx(
                    PROVIDER_TYPE,
                    OP,
                    &at,
                )
            }
        }
    }

    /// The snapshots of `r`.
    pub(crate) async fn list_snapshots(&self, r: &VmRef) -> Result<Vec<SnapshotInfo>> {
        let api = self.api::<VirtualMachineSnapshot>(&r.namespace);
        let list = api
            .list(&ListParams::default())
            .await
            .map_err(|e| to_core_error(e, "snapshot_list", Some(&r.to_string())))?;
        Ok(list
            .items
            .iter()
            .filter(|s| s.spec.source.kind == "VirtualMachine" && s.spec.source.name == r.name)
            .map(info_of)
            .collect())
    }

    /// Restores `snapshot` into `r`, then starts it if asked.
    pub(crate) async fn revert_snapshot(
        &self,
        r: &VmRef,
        snapshot: &str,
        opts: &RevertOptions,
    ) -> Result<()> {
        const OP: &str = "snapshot_revert";
        let res = format!("{r}@{snapshot}");
        self.check_restorable(r, snapshot, OP, &res).await?;
        // A running VM is stopped by KubeVirt itself first (targetReadinessPolicy StopTarget).
        let running = vmi_active(self.get_vmi(r, OP).await?.as_ref());
        let restore = restore_object(r, snapshot, running);
        self.run_restore(r, &restore, OP, &res).await?;
        if opts.start {
            self.start_vm(r, false, OP).await?;
        }
        Ok(())
    }

    /// The snapshot exists, belongs to `r` and is ready to use.
    async fn check_restorable(
        &self,
        r: &VmRef,
        snapshot: &str,
        op: &'static str,
        res: &str,
    ) -> Result<()> {
        let snap = self
            .api::<VirtualMachineSnapshot>(&r.namespace)
            .get(snapshot)
            .await
            .map_err(|e| to_core_error(e, op, Some(res)))?;
        if snap.spec.source.name != r.name {
            return Err(Error::invalid_spec("the snapshot belongs to another VM")).ctx(
                PROVIDER_TYPE,
                op,
                res,
            );
        }
        if snap.status.as_ref().and_then(|s| s.ready_to_use) != Some(true) {
            return Err(Error::invalid_state("the snapshot is not ready to use")).ctx(
                PROVIDER_TYPE,
                op,
                res,
            );
        }
        Ok(())
    }

    /// Creates the restore, waits until it completes (or fails), and deletes a completed one.
    async fn run_restore(
        &self,
        r: &VmRef,
        restore: &VirtualMachineRestore,
        op: &'static str,
        res: &str,
    ) -> Result<()> {
        let name = restore.metadata.name.clone().unwrap_or_default();
        let api = self.api::<VirtualMachineRestore>(&r.namespace);
        api.create(&PostParams::default(), restore)
            .await
            .map_err(|e| to_core_error(e, op, Some(res)))?;
        let done = tokio::time::timeout(
            self.config.operation_timeout,
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
                Err(Error::internal(format!(
                    "restore failed: {}",
                    msg.unwrap_or_default()
                )))
            }
            Ok(Ok(None)) => Err(Error::not_found("restore object deleted while in progress")),
            Ok(Err(e)) => Err(to_core_error(e, op, Some(res))),
            Err(_) => Err(Error::timeout("restore did not complete in time")),
        };
        if outcome.is_ok() {
            // Completed restores are history only.
            let _ = api.delete(&name, &DeleteParams::default()).await;
        }
        outcome.ctx(PROVIDER_TYPE, op, res)
    }

    /// Deletes `snapshot` of `r` (`NotFound` for another VM's snapshot).
    pub(crate) async fn delete_snapshot(
        &self,
        r: &VmRef,
        snapshot: &str,
        _opts: &DeleteSnapshotOptions,
    ) -> Result<()> {
        const OP: &str = "snapshot_delete";
        let res = format!("{r}@{snapshot}");
        let api = self.api::<VirtualMachineSnapshot>(&r.namespace);
        let snap = api
            .get(snapshot)
            .await
            .map_err(|e| to_core_error(e, OP, Some(&res)))?;
        if snap.spec.source.name != r.name {
            return Err(Error::not_found("no such snapshot of this VM")).ctx(
                PROVIDER_TYPE,
                OP,
                &res,
            );
        }
        api.delete(snapshot, &DeleteParams::default())
            .await
            .map_err(|e| to_core_error(e, OP, Some(&res)))?;
        Ok(())
    }
}
