//! The simulator's snapshots and clones.

use async_trait::async_trait;
use tokio::time::Instant;

use super::{
    PROVIDER_TYPE, SimSnapshot, Simulator, begin, injected, not_found, set_power, settle_vm,
};
use crate::clone::{CloneOptions, CloneResult, Cloner};
use crate::error::{Error, ErrorKind, Result};
use crate::shutdown::WallClock;
use crate::snapshot::{
    DeleteSnapshotOptions, RevertOptions, SnapshotInfo, SnapshotOptions, Snapshotter,
};
use crate::vm::{OffReason, PowerState, VmId};

#[async_trait]
impl Snapshotter for Simulator {
    async fn create_snapshot(&self, vm: &VmId, opts: &SnapshotOptions) -> Result<SnapshotInfo> {
        let mut st = self.lock();
        begin(&mut st, "snapshot_create")?;
        settle_vm(&mut st, vm, Instant::now());
        st.next_snapshot += 1;
        let n = st.next_snapshot;
        let v = st.vms.get_mut(vm).ok_or_else(|| not_found(vm))?;
        if opts.name.is_empty() {
            return Err(
                Error::invalid_spec("snapshot name must not be empty").with_provider(PROVIDER_TYPE)
            );
        }
        if v.snapshots.iter().any(|s| s.info.name == opts.name) {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!("snapshot {} exists", opts.name),
            )
            .with_provider(PROVIDER_TYPE));
        }
        let running = v.power.is_active();
        let mut info = SnapshotInfo::new(format!("snap-{n}"), opts.name.clone());
        info.description = opts.description.clone();
        info.created_at = Some(self.inner.clock.now());
        info.has_memory = opts.memory && running;
        info.quiesced =
            opts.quiesce && running && matches!(v.behavior.agent, super::AgentResponse::Present(_));
        info.parent = v.snapshots.last().map(|s| s.info.id.clone());
        v.snapshots.push(SimSnapshot {
            info: info.clone(),
            cpu: v.cpu,
            memory_mib: v.memory_mib,
            disks: v.disks.clone(),
            power: if info.has_memory {
                PowerState::Running
            } else {
                PowerState::Off(OffReason::Unknown)
            },
        });
        Ok(info)
    }

    async fn list_snapshots(&self, vm: &VmId) -> Result<Vec<SnapshotInfo>> {
        let mut st = self.lock();
        begin(&mut st, "snapshot_list")?;
        let v = st.vms.get(vm).ok_or_else(|| not_found(vm))?;
        Ok(v.snapshots.iter().map(|s| s.info.clone()).collect())
    }

    async fn revert_snapshot(&self, vm: &VmId, snapshot: &str, opts: &RevertOptions) -> Result<()> {
        let mut st = self.lock();
        begin(&mut st, "snapshot_revert")?;
        settle_vm(&mut st, vm, Instant::now());
        let v = st.vms.get_mut(vm).ok_or_else(|| not_found(vm))?;
        let snap = v
            .snapshots
            .iter()
            .find(|s| s.info.id == snapshot || s.info.name == snapshot)
            .cloned()
            .ok_or_else(|| {
                Error::not_found(format!("no snapshot {snapshot}")).with_provider(PROVIDER_TYPE)
            })?;
        v.cpu = snap.cpu;
        v.memory_mib = snap.memory_mib;
        v.disks = snap.disks;
        v.generation += 1;
        v.off_at = None;
        v.booted_at = Instant::now();
        let power = if opts.start || snap.power.is_active() {
            PowerState::Running
        } else {
            PowerState::Off(OffReason::Unknown)
        };
        set_power(v, power);
        Ok(())
    }

    async fn delete_snapshot(
        &self,
        vm: &VmId,
        snapshot: &str,
        _opts: &DeleteSnapshotOptions,
    ) -> Result<()> {
        let mut st = self.lock();
        begin(&mut st, "snapshot_delete")?;
        let v = st.vms.get_mut(vm).ok_or_else(|| not_found(vm))?;
        let before = v.snapshots.len();
        v.snapshots
            .retain(|s| s.info.id != snapshot && s.info.name != snapshot);
        if v.snapshots.len() == before {
            return Err(
                Error::not_found(format!("no snapshot {snapshot}")).with_provider(PROVIDER_TYPE)
            );
        }
        Ok(())
    }
}

#[async_trait]
impl Cloner for Simulator {
    async fn clone_vm(&self, source: &VmId, opts: &CloneOptions) -> Result<CloneResult> {
        let (behavior, cpu, mem, disks, mut labels, (host, datastore)) = {
            let mut st = self.lock();
            begin(&mut st, "clone")?;
            let v = st.vms.get(source).ok_or_else(|| not_found(source))?;
            if opts.target_name.is_empty() {
                return Err(Error::invalid_spec("clone target name must not be empty"));
            }
            if st.vms.contains_key(&VmId::new(opts.target_name.as_str())) {
                return Err(Error::new(
                    ErrorKind::AlreadyExists,
                    format!("VM {} exists", opts.target_name),
                )
                .with_provider(PROVIDER_TYPE));
            }
            let (host, datastore) =
                Self::resolve_placement(&st, &opts.target_name, &opts.placement)?;
            let place = (host.or(v.host.clone()), datastore.or(v.datastore.clone()));
            (
                v.behavior.clone(),
                v.cpu,
                v.memory_mib,
                v.disks.clone(),
                v.labels.clone(),
                place,
            )
        };
        let customized = opts.customization.as_ref().is_some_and(|c| !c.is_empty());
        if let Some(hostname) = opts.customization.as_ref().and_then(|c| c.hostname.clone()) {
            labels.insert("virtrigaud.io/hostname".into(), hostname);
        }
        let power = if opts.power_on {
            PowerState::Running
        } else {
            PowerState::Off(OffReason::Unknown)
        };
        let id = self.insert_vm(&opts.target_name, behavior, power, cpu, mem, labels);
        let mut st = self.lock();
        if let Some(v) = st.vms.get_mut(&id) {
            v.disks = disks;
            v.host = host;
            v.datastore = datastore;
            v.customization = opts.customization.clone().filter(|c| !c.is_empty());
        }
        // A fault injected into `clone_copy` fails the clone after the copy exists; like a
        // real provider, the simulator removes the half-made clone before answering.
        if let Err(e) = injected(&mut st, "clone_copy") {
            st.vms.remove(&id);
            return Err(e);
        }
        Ok(CloneResult::new(id, opts.linked, customized))
    }
}
