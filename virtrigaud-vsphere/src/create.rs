//! Creating VMs from a [`VmCreateSpec`] (`CreateVM_Task`), and deleting them.
//!
//! The spec is checked first (core's [`VmCreateSpec::validate`], then the vSphere rules
//! below), the target resolved (`placement.rs`), the name checked against the folder, then
//! `CreateVM_Task` and, when asked, `PowerOnVM_Task`. A failure after the VM exists deletes
//! it again.

use std::sync::Arc;

use virtrigaud_core::{DeleteOptions, Error, ErrorKind, Result, ResultExt, VmCreateSpec, VmId};

use crate::PROVIDER_TYPE;
use crate::client::Client;
use crate::config::CreateDefaults;
use crate::error::to_core_error;
use crate::from_template::create_from_template;
use crate::labels::{MAX_LABEL_KEY, MAX_LABEL_VALUE, extra_config, label_key_ok, label_value_ok};
use crate::placement::resolve_target;
use crate::types::MoRef;
use crate::{drs, power, spec, vm_api};

const OP: &str = "create";
/// Longest VM name vSphere accepts.
const MAX_NAME: usize = 80;
/// Disks on the one SCSI controller (unit 7 is the controller itself).
const MAX_DISKS: usize = 15;
/// Network adapters per VM.
const MAX_NICS: usize = 10;

fn invalid(msg: impl Into<String>) -> Error {
    Error::invalid_spec(msg).context_for(PROVIDER_TYPE, OP, None)
}

/// Checks a create spec without talking to the server: core's rules (a name, at least one
/// vCPU and one MiB, named disks of at least 1 GiB, named networks), then vSphere's.
pub(crate) fn validate(spec: &VmCreateSpec) -> Result<()> {
    spec.validate()
        .map_err(|e| e.context_for(PROVIDER_TYPE, OP, None))?;
    let name = spec.name.as_str();
    if name.chars().count() > MAX_NAME {
        return Err(invalid(format!("name: longer than {MAX_NAME} characters")));
    }
    if name
        .chars()
        .any(|c| c.is_control() || matches!(c, '/' | '\\' | '%'))
    {
        return Err(invalid(format!(
            "name: {name:?} contains '/', '\\\\', '%' or a control character"
        )));
    }
    if !spec.memory_mib.is_multiple_of(4) {
        return Err(invalid(format!(
            "memory must be a positive multiple of 4 MiB (got {})",
            spec.memory_mib
        )));
    }
    validate_devices(spec)?;
    for (k, v) in &spec.labels {
        if !label_key_ok(k) {
            return Err(invalid(format!(
                "label key {k:?} is not 1-{MAX_LABEL_KEY} characters of [A-Za-z0-9._/-] starting and ending alphanumeric"
            )));
        }
        if !label_value_ok(v) {
            return Err(invalid(format!(
                "labels.{k}: the value is longer than {MAX_LABEL_VALUE} bytes or has control characters"
            )));
        }
    }
    Ok(())
}

/// The disk and adapter rules: one SCSI controller (15 disks of at most 62 TiB, thin or
/// thick), at most 10 adapters of a model vSphere has.
fn validate_devices(spec: &VmCreateSpec) -> Result<()> {
    if spec.disks.len() > MAX_DISKS {
        return Err(invalid(format!("at most {MAX_DISKS} disks")));
    }
    for d in &spec.disks {
        if d.size_gib > 62 * 1024 {
            return Err(invalid(format!("disk {:?} is larger than 62 TiB", d.name)));
        }
        if !matches!(d.disk_type.as_deref(), None | Some("thin" | "thick")) {
            return Err(invalid(format!(
                "disk {:?}: type {:?} is not one of thin, thick",
                d.name,
                d.disk_type.as_deref().unwrap_or_default()
            )));
        }
    }
    if spec.networks.len() > MAX_NICS {
        return Err(invalid(format!("at most {MAX_NICS} network adapters")));
    }
    for n in &spec.networks {
        if !matches!(
            n.model.as_deref(),
            None | Some("vmxnet3" | "e1000" | "e1000e")
        ) {
            return Err(invalid(format!(
                "network {:?}: adapter model {:?} is not one of vmxnet3, e1000, e1000e",
                n.network,
                n.model.as_deref().unwrap_or_default()
            )));
        }
    }
    Ok(())
}

/// A hook run after `CreateVM_Task` succeeded (tests inject failures with it).
pub(crate) type AfterCreate<'a> = &'a (dyn Fn(&VmId) -> Result<()> + Sync);

/// Whether the folder already holds a VM named `name` (vcsim does not raise
/// `DuplicateName` itself; vCenter does, and that fault maps to `AlreadyExists` too).
pub(crate) async fn name_taken(c: &Client, folder: &MoRef, name: &str) -> Result<bool> {
    let vms = c
        .list_in(folder, "VirtualMachine", &["name", "parent"])
        .await
        .map_err(|e| to_core_error(e, OP, Some(name)))?;
    Ok(vms.iter().any(|(_, p)| {
        p.str("name") == Some(name) && p.str("parent") == Some(folder.value.as_str())
    }))
}

/// Creates the VM, running `after_create` (if any) after `CreateVM_Task`, before power-on.
pub(crate) async fn create(
    c: &Arc<Client>,
    defaults: &CreateDefaults,
    spec: &VmCreateSpec,
    after_create: Option<AfterCreate<'_>>,
) -> Result<VmId> {
    validate(spec)?;
    create_checked(c, defaults, spec, after_create)
        .await
        .ctx(PROVIDER_TYPE, OP, &spec.name)
}

async fn create_checked(
    c: &Arc<Client>,
    defaults: &CreateDefaults,
    spec: &VmCreateSpec,
    after_create: Option<AfterCreate<'_>>,
) -> Result<VmId> {
    if let Some(template) = &spec.image {
        return create_from_template(c, defaults, spec, template, after_create).await;
    }
    let target = resolve_target(c, defaults, spec).await?;
    if name_taken(c, &target.folder, &spec.name).await? {
        return Err(Error::new(
            ErrorKind::AlreadyExists,
            format!("a VM named {} already exists in that folder", spec.name),
        )
        .permanent());
    }
    let body = spec::create_vm_body(spec, &target, &extra_config(spec));
    let result = c
        .run_task("CreateVM_Task", &target.folder, &body)
        .await
        .map_err(|e| to_core_error(e, OP, Some(&spec.name)))?;
    let vm = result
        .as_ref()
        .and_then(MoRef::from_result)
        .map(|m| VmId::new(m.value))
        .ok_or_else(|| Error::internal("CreateVM_Task returned no VM"))?;
    finish(c, vm, spec, after_create).await
}

/// The steps after vCenter registered a new VM: the test hook, the DRS rule of the
/// placement's anti-affinity group, the power-on; the VM is deleted again when one fails.
pub(crate) async fn finish(
    c: &Arc<Client>,
    vm: VmId,
    spec: &VmCreateSpec,
    after_create: Option<AfterCreate<'_>>,
) -> Result<VmId> {
    let mut step = after_create.map_or(Ok(()), |f| f(&vm));
    if step.is_ok()
        && let Some(group) = &spec.placement.anti_affinity
    {
        step = drs::join(c, &vm, group).await;
    }
    if step.is_ok() && spec.power_on {
        step = power::start(c, &vm).await;
    }
    match step {
        Ok(()) => Ok(vm),
        Err(e) => Err(roll_back(c, &vm, e).await),
    }
}

/// Deletes a VM whose creation (or clone) failed after vCenter registered it (powering it off
/// first: a VM must be off before `Destroy_Task`); the error says whether that worked.
pub(crate) async fn roll_back(c: &Arc<Client>, vm: &VmId, e: Error) -> Error {
    let moref = MoRef::vm(vm.as_str());
    if power::power_state(c, vm).await.is_ok_and(|s| !s.is_off()) {
        let _ = c.run_task("PowerOffVM_Task", &moref, "").await;
    }
    let cleanup = c.run_task("Destroy_Task", &moref, "").await;
    let note = match &cleanup {
        Ok(_) => "the new VM was deleted again".to_owned(),
        Err(c) => format!("deleting the new VM {vm} failed too: {c}"),
    };
    tracing::warn!(vm = %vm, error = %e, "create: step after CreateVM_Task failed; {note}");
    Error::new(e.kind(), format!("{} ({note})", e.message())).with_source(e)
}

/// Deletes a VM with its disks (`Destroy_Task`), or only unregisters it.
pub(crate) async fn delete(c: &Arc<Client>, vm: &VmId, opts: &DeleteOptions) -> Result<()> {
    if opts.delete_disks {
        vm_api::task(c, vm, "Destroy_Task", "", "delete")
            .await
            .map(|_| ())
    } else {
        vm_api::call(c, vm, "UnregisterVM", "delete").await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{describe, inventory};
    use virtrigaud_core::{DiskCreateSpec, NetworkCreateSpec, Placement};

    #[test]
    fn validation() {
        let ok = VmCreateSpec::new("a", 1, 128);
        assert!(validate(&ok).is_ok());
        let mut bad = vec![
            VmCreateSpec::new("", 1, 128),
            VmCreateSpec::new(" ", 1, 128),
            VmCreateSpec::new("a/b", 1, 128),
            VmCreateSpec::new("a", 0, 128),
            VmCreateSpec::new("a", 1, 0),
            VmCreateSpec::new("a", 1, 130),
        ];
        let mut s = ok.clone();
        s.disks.push(DiskCreateSpec::new("d", 0));
        bad.push(s);
        let mut s = ok.clone();
        s.placement = Placement::on_host(" ");
        bad.push(s);
        let mut s = ok.clone();
        s.placement = Placement::in_cluster("C0").with_datastore("");
        bad.push(s);
        let mut s = ok.clone();
        let mut d = DiskCreateSpec::new("d", 1);
        d.disk_type = Some("qcow2".into());
        s.disks.push(d);
        bad.push(s);
        let mut s = ok.clone();
        s.networks.push(NetworkCreateSpec::new(""));
        bad.push(s);
        for k in ["", "a b", "-a", "a=", "a\n", "ä"] {
            let mut s = ok.clone();
            s.labels.insert(k.into(), "v".into());
            bad.push(s);
        }
        for s in bad {
            let err = validate(&s).expect_err("invalid");
            assert_eq!(err.kind(), ErrorKind::InvalidSpec, "{s:?}");
            assert_eq!((err.provider(), err.operation()), (PROVIDER_TYPE, OP));
        }
        let mut s = ok.clone();
        s.image = Some("tmpl".into());
        assert!(validate(&s).is_ok(), "an image is a template to clone");
        assert!(label_key_ok("virtrigaud.io/set"));
    }

    /// Connects to the vcsim of scripts/vsphere/setup.sh (None: skipped, see `backend_env`).
    /// The integration tests' fixture is `tests/common/mod.rs`; unit tests cannot reach it.
    async fn vcsim() -> Option<Arc<Client>> {
        use crate::config::{TlsVerification, VsphereConfig};
        use virtrigaud_core::testing::backend_env;
        let url = backend_env("vsphere", "VIRTRIGAUD_VSPHERE_URL")?;
        let user = backend_env("vsphere", "VIRTRIGAUD_VSPHERE_USER")?;
        let password = backend_env("vsphere", "VIRTRIGAUD_VSPHERE_PASSWORD")?;
        let tls = match std::env::var("VIRTRIGAUD_VSPHERE_CA_FILE") {
            Ok(f) if !f.is_empty() => TlsVerification::CaPem(std::fs::read(f).expect("CA file")),
            _ => TlsVerification::DangerousAcceptInvalidCerts,
        };
        let cfg = VsphereConfig::new(url, user, password)
            .with_tls(tls)
            .with_keepalive(None);
        Some(Client::connect(&cfg).await.expect("connect"))
    }

    /// A step after `CreateVM_Task` that fails (injected here: vcsim never fails a power-on
    /// of a non-template VM) deletes the new VM again, powered on or not.
    #[tokio::test]
    async fn failure_after_create_vm_task_leaves_nothing_behind() {
        let Some(c) = vcsim().await else { return };
        for power_on in [false, true] {
            let name = format!("vsc-rollback-{power_on}");
            let mut spec = VmCreateSpec::new(name.clone(), 1, 128);
            spec.disks.push(DiskCreateSpec::new("root", 1));
            spec.labels.insert("vsc".into(), "rollback".into());
            spec.power_on = power_on;
            let created = std::sync::Mutex::new(None);
            let hook = |vm: &VmId| -> Result<()> {
                *created.lock().expect("lock") = Some(vm.clone());
                Err(Error::new(ErrorKind::Unavailable, "injected failure"))
            };
            let err = create(&c, &CreateDefaults::default(), &spec, Some(&hook))
                .await
                .expect_err("injected failure");
            assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
            assert!(err.message().contains("deleted again"), "{err}");
            let vm = created.lock().expect("lock").clone().expect("hook ran");
            assert_eq!(
                describe::describe(&c, &vm).await.expect_err("gone").kind(),
                ErrorKind::NotFound
            );
            assert_eq!(
                inventory::find_vm_by_name(&c, &name)
                    .await
                    .expect_err("gone")
                    .kind(),
                ErrorKind::NotFound
            );
        }
    }

    /// The same rollback when the VM is already running (a power-on that failed late).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rollback_powers_a_running_vm_off_first() {
        let Some(c) = vcsim().await else { return };
        let mut spec = VmCreateSpec::new("vsc-rollback-running", 1, 128);
        spec.power_on = false;
        let handle = tokio::runtime::Handle::current();
        let client = Arc::clone(&c);
        let hook = move |vm: &VmId| -> Result<()> {
            // Power the VM on from the hook, then fail.
            tokio::task::block_in_place(|| handle.block_on(power::start(&client, vm)))?;
            Err(Error::new(ErrorKind::Timeout, "late failure"))
        };
        let err = create(&c, &CreateDefaults::default(), &spec, Some(&hook))
            .await
            .expect_err("injected failure");
        assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
        assert!(err.message().contains("deleted again"), "{err}");
        assert_eq!(
            inventory::find_vm_by_name(&c, "vsc-rollback-running")
                .await
                .expect_err("gone")
                .kind(),
            ErrorKind::NotFound
        );
    }
}
