//! Creating VMs from a [`VmCreateSpec`] (`CreateVM_Task`) and labels stored in
//! `config.extraConfig`.
//!
//! Labels are `virtrigaud.label.<key>` = value options; cloud-init user data is
//! `guestinfo.userdata` (base64) with `guestinfo.userdata.encoding` = `base64`, the keys the
//! cloud-init VMware datasource reads.

use std::collections::BTreeMap;

use virtrigaud_core::{Error, ErrorKind, Provider, Result, StartOptions, VmCreateSpec, VmId};

use crate::PROVIDER_TYPE;
use crate::client::{MoRef, Props};
use crate::config::VsphereConfig;
use crate::fault::VimError;
use crate::provider::VsphereProvider;
use crate::spec::{self, NicBacking};
use crate::xml::Element;

/// Prefix of the extraConfig keys that hold labels.
pub(crate) const LABEL_PREFIX: &str = "virtrigaud.label.";
/// extraConfig key of the cloud-init user data.
pub(crate) const USERDATA_KEY: &str = "guestinfo.userdata";
/// extraConfig key of the user data's encoding.
pub(crate) const USERDATA_ENCODING_KEY: &str = "guestinfo.userdata.encoding";
/// The guest OS identifier of created VMs.
pub(crate) const GUEST_ID: &str = "otherLinux64Guest";
/// Longest VM name vSphere accepts.
const MAX_NAME: usize = 80;
/// Longest label key / value we store.
const MAX_LABEL_KEY: usize = 253;
const MAX_LABEL_VALUE: usize = 1024;
/// Disks on the one SCSI controller (unit 7 is the controller itself).
const MAX_DISKS: usize = 15;
/// Network adapters per VM.
const MAX_NICS: usize = 10;

/// Where new VMs go when the spec does not say (from [`VsphereConfig`]).
#[derive(Debug, Default, Clone)]
pub(crate) struct CreateDefaults {
    datacenter: Option<String>,
    datastore: Option<String>,
    folder: Option<String>,
    resource_pool: Option<String>,
}

impl CreateDefaults {
    pub(crate) fn from_config(c: &VsphereConfig) -> Self {
        CreateDefaults {
            datacenter: c.default_datacenter.clone(),
            datastore: c.default_datastore.clone(),
            folder: c.default_folder.clone(),
            resource_pool: c.default_resource_pool.clone(),
        }
    }
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::invalid_spec(msg)
        .with_provider(PROVIDER_TYPE)
        .with_operation("create")
}

/// Whether `key` is a label key we can store as an extraConfig key: 1–253 characters out of
/// ASCII letters, digits, `.`, `_`, `-` and `/` (the Kubernetes label key alphabet), starting
/// and ending with a letter or digit.
pub(crate) fn label_key_ok(key: &str) -> bool {
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    !key.is_empty()
        && key.len() <= MAX_LABEL_KEY
        && edge(key.chars().next())
        && edge(key.chars().last())
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'))
}

/// Checks a create spec without talking to the server.
pub(crate) fn validate(spec: &VmCreateSpec) -> Result<()> {
    let name = spec.name.as_str();
    if name.trim().is_empty() {
        return Err(invalid("VM name is empty"));
    }
    if name.chars().count() > MAX_NAME {
        return Err(invalid(format!(
            "VM name is longer than {MAX_NAME} characters"
        )));
    }
    if name
        .chars()
        .any(|c| c.is_control() || matches!(c, '/' | '\\' | '%'))
    {
        return Err(invalid(format!(
            "VM name {name:?} contains '/', '\\\\', '%' or a control character"
        )));
    }
    if spec.cpu == 0 {
        return Err(invalid("a VM needs at least one vCPU"));
    }
    if spec.memory_mib == 0 || !spec.memory_mib.is_multiple_of(4) {
        return Err(invalid(format!(
            "memory must be a positive multiple of 4 MiB (got {})",
            spec.memory_mib
        )));
    }
    if spec
        .placement
        .as_deref()
        .is_some_and(|h| h.trim().is_empty())
    {
        return Err(invalid("placement is an empty host / cluster name"));
    }
    if spec.image.is_some() {
        return Err(Error::new(
            ErrorKind::Unsupported,
            "the vSphere provider creates empty VMs only: clone a template (Cloner) to start from an image",
        )
        .with_provider(PROVIDER_TYPE)
        .with_operation("create"));
    }
    if spec.disks.len() > MAX_DISKS {
        return Err(invalid(format!("at most {MAX_DISKS} disks")));
    }
    for d in &spec.disks {
        if d.size_gib == 0 {
            return Err(invalid(format!("disk {:?} has size 0", d.name)));
        }
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
        if n.network.trim().is_empty() {
            return Err(invalid("a network attachment has no network name"));
        }
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
    for (k, v) in &spec.labels {
        if !label_key_ok(k) {
            return Err(invalid(format!(
                "label key {k:?} is not 1-{MAX_LABEL_KEY} characters of [A-Za-z0-9._/-] starting and ending alphanumeric"
            )));
        }
        if v.len() > MAX_LABEL_VALUE || v.chars().any(char::is_control) {
            return Err(invalid(format!(
                "label {k:?}: value is longer than {MAX_LABEL_VALUE} bytes or has control characters"
            )));
        }
    }
    Ok(())
}

/// The extraConfig options of a spec: labels and user data.
pub(crate) fn extra_config(spec: &VmCreateSpec) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = spec
        .labels
        .iter()
        .map(|(k, v)| (format!("{LABEL_PREFIX}{k}"), v.clone()))
        .collect();
    if let Some(ud) = &spec.cloud_init_user_data {
        out.push((USERDATA_KEY.to_owned(), base64(ud.as_bytes())));
        out.push((USERDATA_ENCODING_KEY.to_owned(), "base64".to_owned()));
    }
    out
}

/// Standard base64 (with padding), as cloud-init's VMware datasource decodes it.
pub(crate) fn base64(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// Labels from a `config.extraConfig` value (`ArrayOfOptionValue`).
pub(crate) fn labels_of(extra: Option<&Element>) -> BTreeMap<String, String> {
    let Some(extra) = extra else {
        return BTreeMap::new();
    };
    extra
        .children
        .iter()
        .filter_map(|o| {
            let key = o.text_at("key")?.strip_prefix(LABEL_PREFIX)?;
            Some((key.to_owned(), o.text_at("value").unwrap_or("").to_owned()))
        })
        .collect()
}

/// Whether `labels` carries every label of `want`.
pub(crate) fn has_labels(
    labels: &BTreeMap<String, String>,
    want: &BTreeMap<String, String>,
) -> bool {
    want.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Where a new VM goes.
#[derive(Debug)]
pub(crate) struct Target {
    pub(crate) folder: MoRef,
    pub(crate) pool: MoRef,
    pub(crate) host: Option<MoRef>,
    pub(crate) datastore: String,
    pub(crate) nics: Vec<NicBacking>,
}

/// A hook run after `CreateVM_Task` succeeded (tests inject failures with it).
pub(crate) type AfterCreate<'a> = &'a (dyn Fn(&VmId) -> Result<()> + Sync);

impl VsphereProvider {
    fn err(&self, e: VimError, resource: Option<&str>) -> Error {
        e.into_error("create", resource)
    }

    /// Finds the folder, pool, host, datastore and networks of a new VM.
    pub(crate) async fn resolve_target(&self, spec: &VmCreateSpec) -> Result<Target> {
        let c = &self.client;
        let d = &self.defaults;
        let dcs = c
            .list_by_type(
                "Datacenter",
                &[
                    "name",
                    "vmFolder",
                    "hostFolder",
                    "datastoreFolder",
                    "networkFolder",
                ],
            )
            .await
            .map_err(|e| self.err(e, None))?;
        let dc = match &d.datacenter {
            Some(name) => dcs.iter().find(|(_, p)| p.str("name") == Some(name)),
            None => dcs.first(),
        };
        let Some((_, dc)) = dc else {
            return Err(Error::not_found(format!(
                "no datacenter {}",
                d.datacenter.as_deref().unwrap_or("at all")
            ))
            .with_provider(PROVIDER_TYPE)
            .with_operation("create"));
        };
        let dc_name = dc.str("name").unwrap_or_default().to_owned();
        let folder_of = |path: &str| {
            dc.get(path)
                .and_then(MoRef::from_el)
                .ok_or_else(|| Error::internal(format!("datacenter {dc_name} has no {path}")))
        };
        let host_folder = folder_of("hostFolder")?;
        let folder = match &d.folder {
            Some(path) => self.by_path(path, "Folder").await?,
            None => folder_of("vmFolder")?,
        };

        // Compute: a named host (or cluster / compute resource), the default pool, or the
        // datacenter's first compute resource.
        let (pool, host, ds_refs) = if let Some(place) = &spec.placement {
            let hosts = c
                .list_in(&host_folder, "HostSystem", &["name", "parent", "datastore"])
                .await
                .map_err(|e| self.err(e, Some(place)))?;
            if let Some((h, hp)) = hosts.iter().find(|(_, p)| p.str("name") == Some(place)) {
                let cr = hp.get("parent").and_then(MoRef::from_el).ok_or_else(|| {
                    Error::internal(format!("host {place} has no parent compute resource"))
                })?;
                let crp = c
                    .retrieve(&cr, &["resourcePool"])
                    .await
                    .map_err(|e| self.err(e, Some(place)))?;
                let pool = crp
                    .get("resourcePool")
                    .and_then(MoRef::from_el)
                    .ok_or_else(|| Error::internal(format!("host {place} has no resource pool")))?;
                (pool, Some(h.clone()), refs(hp.get("datastore")))
            } else {
                let crs = c
                    .list_in(
                        &host_folder,
                        "ComputeResource",
                        &["name", "resourcePool", "datastore"],
                    )
                    .await
                    .map_err(|e| self.err(e, Some(place)))?;
                let hit = crs.iter().find(|(_, p)| p.str("name") == Some(place));
                let Some((_, cp)) = hit else {
                    return Err(Error::not_found(format!(
                        "placement {place:?}: no host or cluster of that name in datacenter {dc_name}"
                    ))
                    .with_provider(PROVIDER_TYPE)
                    .with_operation("create")
                    .with_resource(place.as_str()));
                };
                let pool = cp
                    .get("resourcePool")
                    .and_then(MoRef::from_el)
                    .ok_or_else(|| Error::internal(format!("{place} has no resource pool")))?;
                (pool, None, refs(cp.get("datastore")))
            }
        } else if let Some(path) = &d.resource_pool {
            let pool = self.by_path(path, "ResourcePool").await?;
            let owner = c
                .retrieve(&pool, &["owner"])
                .await
                .map_err(|e| self.err(e, Some(path)))?;
            let ds = match owner.get("owner").and_then(MoRef::from_el) {
                Some(cr) => refs(
                    c.retrieve(&cr, &["datastore"])
                        .await
                        .map_err(|e| self.err(e, Some(path)))?
                        .get("datastore"),
                ),
                None => Vec::new(),
            };
            (pool, None, ds)
        } else {
            let crs = c
                .list_in(
                    &host_folder,
                    "ComputeResource",
                    &["resourcePool", "datastore"],
                )
                .await
                .map_err(|e| self.err(e, None))?;
            let Some((pool, ds)) = crs.iter().find_map(|(_, p)| {
                Some((
                    p.get("resourcePool").and_then(MoRef::from_el)?,
                    refs(p.get("datastore")),
                ))
            }) else {
                return Err(Error::not_found(format!(
                    "datacenter {dc_name} has no host or cluster"
                ))
                .with_provider(PROVIDER_TYPE)
                .with_operation("create"));
            };
            (pool, None, ds)
        };

        let datastore = match &d.datastore {
            Some(name) => name.clone(),
            None => {
                let need: u64 = spec.disks.iter().map(|d| d.size_gib << 30).sum();
                let all = c
                    .list_in(
                        &folder_of("datastoreFolder")?,
                        "Datastore",
                        &["name", "summary.freeSpace", "summary.accessible"],
                    )
                    .await
                    .map_err(|e| self.err(e, None))?;
                let hit = ds_refs.iter().find_map(|r| {
                    let (_, p) = all.iter().find(|(m, _)| &m.value == r)?;
                    let ok = p.bool("summary.accessible") != Some(false)
                        && p.u64("summary.freeSpace").unwrap_or(0) >= need;
                    ok.then(|| p.str("name").unwrap_or_default().to_owned())
                });
                hit.filter(|n| !n.is_empty()).ok_or_else(|| {
                    Error::new(
                        ErrorKind::InvalidState,
                        format!(
                            "no accessible datastore with {} GiB free for {}",
                            need >> 30,
                            spec.name
                        ),
                    )
                    .with_provider(PROVIDER_TYPE)
                    .with_operation("create")
                })?
            }
        };

        let mut nics = Vec::new();
        if !spec.networks.is_empty() {
            let nets = c
                .list_in(&folder_of("networkFolder")?, "Network", &["name"])
                .await
                .map_err(|e| self.err(e, None))?;
            for n in &spec.networks {
                let Some((m, _)) = nets
                    .iter()
                    .find(|(_, p)| p.str("name") == Some(n.network.as_str()))
                else {
                    return Err(Error::not_found(format!(
                        "no network {:?} in datacenter {dc_name}",
                        n.network
                    ))
                    .with_provider(PROVIDER_TYPE)
                    .with_operation("create")
                    .with_resource(n.network.as_str()));
                };
                let model = n.model.clone().unwrap_or_else(|| "vmxnet3".to_owned());
                if m.ty == "DistributedVirtualPortgroup" {
                    let pg = c
                        .retrieve(m, &["key", "config.distributedVirtualSwitch"])
                        .await
                        .map_err(|e| self.err(e, Some(&n.network)))?;
                    let dvs = pg
                        .get("config.distributedVirtualSwitch")
                        .and_then(MoRef::from_el)
                        .ok_or_else(|| Error::internal("port group without a switch"))?;
                    let sw = c
                        .retrieve(&dvs, &["uuid"])
                        .await
                        .map_err(|e| self.err(e, Some(&n.network)))?;
                    nics.push(NicBacking::Portgroup {
                        model,
                        switch_uuid: sw.str("uuid").unwrap_or_default().to_owned(),
                        key: pg.str("key").unwrap_or_default().to_owned(),
                    });
                } else {
                    nics.push(NicBacking::Network {
                        model,
                        name: n.network.clone(),
                        network: m.clone(),
                    });
                }
            }
        }
        Ok(Target {
            folder,
            pool,
            host,
            datastore,
            nics,
        })
    }

    async fn by_path(&self, path: &str, ty: &str) -> Result<MoRef> {
        let found = self
            .client
            .find_by_inventory_path(path)
            .await
            .map_err(|e| self.err(e, Some(path)))?;
        match found {
            Some(m) if m.ty == ty || (ty == "ResourcePool" && m.ty == "VirtualApp") => Ok(m),
            Some(m) => Err(invalid(format!("{path} is a {}, not a {ty}", m.ty))),
            None => Err(
                Error::not_found(format!("no {ty} at inventory path {path}"))
                    .with_provider(PROVIDER_TYPE)
                    .with_operation("create")
                    .with_resource(path),
            ),
        }
    }

    /// Whether the folder already holds a VM named `name` (vcsim does not raise
    /// `DuplicateName` itself; vCenter does, and that fault maps to `AlreadyExists` too).
    async fn name_taken(&self, folder: &MoRef, name: &str) -> Result<bool> {
        let vms = self
            .client
            .list_in(folder, "VirtualMachine", &["name", "parent"])
            .await
            .map_err(|e| self.err(e, Some(name)))?;
        Ok(vms.iter().any(|(_, p)| {
            p.str("name") == Some(name) && p.str("parent") == Some(folder.value.as_str())
        }))
    }

    /// `create` with a hook run after `CreateVM_Task` (before power-on).
    pub(crate) async fn create_with(
        &self,
        spec: &VmCreateSpec,
        after_create: Option<AfterCreate<'_>>,
    ) -> Result<VmId> {
        validate(spec)?;
        let target = self.resolve_target(spec).await?;
        if self.name_taken(&target.folder, &spec.name).await? {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!("a VM named {} already exists in that folder", spec.name),
            )
            .permanent()
            .with_provider(PROVIDER_TYPE)
            .with_operation("create")
            .with_resource(spec.name.as_str()));
        }
        let body = spec::create_vm_body(spec, &target, &extra_config(spec));
        let result = self
            .client
            .run_task("CreateVM_Task", &target.folder, &body)
            .await
            .map_err(|e| self.err(e, Some(&spec.name)))?;
        let vm = result
            .and_then(|r| MoRef::from_el(&r).or_else(|| Some(MoRef::vm(r.text()))))
            .filter(|m| !m.value.is_empty())
            .map(|m| VmId::new(m.value))
            .ok_or_else(|| {
                Error::internal("CreateVM_Task returned no VM")
                    .with_provider(PROVIDER_TYPE)
                    .with_operation("create")
            })?;
        let mut step = after_create.map_or(Ok(()), |f| f(&vm));
        if step.is_ok() && spec.power_on {
            step = self.start(&vm, &StartOptions::default()).await;
        }
        if let Err(e) = step {
            // Leave nothing behind (a VM must be off before Destroy_Task).
            let moref = MoRef::vm(vm.as_str());
            if self.power_state(&vm).await.is_ok_and(|s| !s.is_off()) {
                let _ = self.client.run_task("PowerOffVM_Task", &moref, "").await;
            }
            let cleanup = self.client.run_task("Destroy_Task", &moref, "").await;
            let note = match &cleanup {
                Ok(_) => "the new VM was deleted again".to_owned(),
                Err(c) => format!("deleting the new VM {vm} failed too: {c}"),
            };
            tracing::warn!(vm = %vm, error = %e, "create: step after CreateVM_Task failed; {note}");
            return Err(Error::new(e.kind(), format!("{} ({note})", e.message()))
                .with_source(e)
                .with_provider(PROVIDER_TYPE)
                .with_operation("create")
                .with_resource(spec.name.as_str()));
        }
        Ok(vm)
    }
}

fn refs(el: Option<&Element>) -> Vec<String> {
    el.map(|e| e.children.iter().map(|c| c.text().to_owned()).collect())
        .unwrap_or_default()
}

/// Raw props helper for describe/list: the label map of a property set.
pub(crate) fn labels_from_props(p: &Props) -> BTreeMap<String, String> {
    labels_of(p.get("config.extraConfig"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtrigaud_core::{DiskCreateSpec, NetworkCreateSpec};

    #[test]
    fn base64_matches_rfc4648() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }

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
        s.placement = Some(" ".into());
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
            assert_eq!(
                validate(&s).expect_err("invalid").kind(),
                ErrorKind::InvalidSpec,
                "{s:?}"
            );
        }
        let mut s = ok.clone();
        s.image = Some("tmpl".into());
        assert_eq!(validate(&s).unwrap_err().kind(), ErrorKind::Unsupported);
        assert!(label_key_ok("virtrigaud.io/set"));
    }

    /// Connects to the vcsim of scripts/vsphere/setup.sh (None: skipped, see `backend_env`).
    async fn vcsim() -> Option<VsphereProvider> {
        use crate::config::TlsVerification;
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
        Some(VsphereProvider::connect(cfg).await.expect("connect"))
    }

    /// A step after `CreateVM_Task` that fails (injected here: vcsim never fails a power-on
    /// of a non-template VM) deletes the new VM again, powered on or not.
    #[tokio::test]
    async fn failure_after_create_vm_task_leaves_nothing_behind() {
        let Some(p) = vcsim().await else { return };
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
            let err = p
                .create_with(&spec, Some(&hook))
                .await
                .expect_err("injected failure");
            assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
            assert!(err.message().contains("deleted again"), "{err}");
            let vm = created.lock().expect("lock").clone().expect("hook ran");
            assert_eq!(
                p.describe(&vm).await.expect_err("gone").kind(),
                ErrorKind::NotFound
            );
            assert_eq!(
                p.find_vm_by_name(&name).await.expect_err("gone").kind(),
                ErrorKind::NotFound
            );
        }
    }

    /// The same rollback when the VM is already running (a power-on that failed late).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rollback_powers_a_running_vm_off_first() {
        let Some(p) = vcsim().await else { return };
        let mut spec = VmCreateSpec::new("vsc-rollback-running", 1, 128);
        spec.power_on = false;
        let handle = tokio::runtime::Handle::current();
        let prov = p.clone();
        let hook = move |vm: &VmId| -> Result<()> {
            let (prov, vm) = (prov.clone(), vm.clone());
            // Power the VM on from the hook, then fail.
            tokio::task::block_in_place(|| {
                handle.block_on(prov.start(&vm, &StartOptions::default()))
            })?;
            Err(Error::new(ErrorKind::Timeout, "late failure"))
        };
        let err = p
            .create_with(&spec, Some(&hook))
            .await
            .expect_err("injected failure");
        assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
        assert!(err.message().contains("deleted again"), "{err}");
        assert_eq!(
            p.find_vm_by_name("vsc-rollback-running")
                .await
                .expect_err("gone")
                .kind(),
            ErrorKind::NotFound
        );
    }
}
