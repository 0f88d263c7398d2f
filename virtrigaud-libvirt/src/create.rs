//! Create and delete: domain XML from a [`VmCreateSpec`], qcow2 volumes in the pool, a
//! cloud-init NoCloud seed (see [`crate::seed`]); a failed create removes the volumes it made.

use virt::storage_vol::StorageVol;
use virt::sys;
use virtrigaud_core::cloudinit::NoCloudSeed;
use virtrigaud_core::provider::{DeleteOptions, VmCreateSpec};
use virtrigaud_core::{Customization, Error, ErrorKind, Result, ResultExt, VmId};

use crate::PROVIDER_TYPE;
use crate::config::DomainTemplate;
use crate::connection::Session;
use crate::domain::{lookup, state_of, xml_of};
use crate::domxml::{self, DiskAttach};
use crate::volume::{GIB, create_qcow2, scaled};
use crate::{placement, seed};

/// Defines (and starts, when asked) the domain of `spec` laid out by `tpl`.
pub(crate) fn create(s: &Session, spec: &VmCreateSpec, tpl: &DomainTemplate) -> Result<VmId> {
    domxml::validate(spec).ctx(PROVIDER_TYPE, "create", &spec.name)?;
    placement::check(s, &spec.placement, "create", &spec.name)?;
    if s.api_raw(|c| c.lookup_domain_by_name(&spec.name)).is_ok() {
        return Err(Error::new(
            ErrorKind::AlreadyExists,
            format!("domain {} exists", spec.name),
        )
        .with_resource(spec.name.clone()));
    }
    let mut created: Vec<StorageVol> = Vec::new();
    let result = define(s, spec, tpl, &mut created);
    if result.is_err() {
        for v in created {
            let _ = s.api_raw(|_| v.delete(0));
        }
    }
    result
}

/// The volumes, the seed and the domain of [`create`]; every volume made is pushed to `created`.
fn define(
    s: &Session,
    spec: &VmCreateSpec,
    tpl: &DomainTemplate,
    created: &mut Vec<StorageVol>,
) -> Result<VmId> {
    let mut attach = Vec::new();
    if !spec.disks.is_empty() || spec.image.is_some() {
        let pool = placement::pool_for(s, &spec.placement, "create")?;
        // The image (a volume name in the pool or a path) becomes the backing file of vda.
        let base = match &spec.image {
            Some(img) => {
                let v = s.api("image", img, |c| {
                    pool.lookup_storage_vol_by_name(img)
                        .or_else(|_| c.lookup_storage_vol_by_path(img))
                })?;
                Some(s.api("image", img, |_| v.path())?)
            }
            None => None,
        };
        let n = spec.disks.len().max(usize::from(base.is_some()));
        for i in 0..n {
            let target = domxml::disk_target(i);
            let gib = spec.disks.get(i).map(|d| d.size_gib).unwrap_or(1).max(1);
            let size = scaled(gib, GIB, "disks[].sizeGiB")?;
            let name = format!("{}-{target}.qcow2", spec.name);
            let backing = if i == 0 { base.as_deref() } else { None };
            let vol = create_qcow2(s, &pool, &name, size, backing)?;
            let path = s.api("volume", &name, |_| vol.path())?;
            created.push(vol);
            attach.push(DiskAttach {
                target,
                path,
                format: "qcow2".into(),
                name: spec.disks.get(i).map(|d| d.name.clone()),
            });
        }
    }
    let seed = match &spec.cloud_init_user_data {
        Some(ud) => {
            let pool = placement::pool_for(s, &spec.placement, "create")?;
            let vol = seed::upload(s, &pool, &spec.name, &create_seed(&spec.name, ud)?)?;
            let path = s.api("cloud_init_seed", &spec.name, |_| vol.path())?;
            created.push(vol);
            Some(path)
        }
        None => None,
    };
    let xml = domxml::domain_xml(spec, tpl, &attach, seed.as_deref())?;
    let dom = s.api("define", &spec.name, |c| c.define_domain_xml(&xml))?;
    if spec.power_on
        && let Err(e) = s.api("start", &spec.name, |_| dom.create())
    {
        let _ = s.api_raw(|_| dom.undefine_flags(sys::VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA));
        return Err(e);
    }
    Ok(VmId::new(spec.name.clone()))
}

/// The seed of a domain created with `user_data`: instance id and hostname are the domain's
/// name (no `local-hostname` when the name is no valid hostname, `web_1`), the user data
/// verbatim.
fn create_seed(name: &str, user_data: &str) -> Result<NoCloudSeed> {
    let mut c = Customization::default();
    c.cloud_init_user_data = Some(user_data.to_owned());
    c.hostname = Some(name.to_owned());
    NoCloudSeed::for_customization(name, &c, &[]).or_else(|_| {
        c.hostname = None;
        NoCloudSeed::for_customization(name, &c, &[])
    })
}

/// Undefines a domain that is off (with its snapshot metadata) and, when asked, its disks
/// and cloud-init seed.
pub(crate) fn delete(s: &Session, name: &str, opts: &DeleteOptions) -> Result<()> {
    let dom = lookup(s, name)?;
    if state_of(s, &dom, name)?.is_active() {
        return Err(
            Error::invalid_state(format!("domain {name} must be off to be deleted"))
                .with_resource(name.to_owned()),
        );
    }
    let x = xml_of(s, &dom, name, sys::VIR_DOMAIN_XML_INACTIVE)?;
    s.api("delete", name, |_| {
        dom.undefine_flags(
            sys::VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA | sys::VIR_DOMAIN_UNDEFINE_MANAGED_SAVE,
        )
    })?;
    if opts.delete_disks {
        let seed = domxml::seed_of(&x, name);
        for p in domxml::disks(&x)
            .into_iter()
            .filter_map(|d| d.source)
            .chain(seed)
        {
            if let Ok(v) = s.api_raw(|c| c.lookup_storage_vol_by_path(&p))
                && let Err(e) = s.api_raw(|_| v.delete(0))
            {
                tracing::warn!(path = %p, error = %e, "could not delete disk volume");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used)]
    use super::*;

    #[test]
    fn a_create_seed_names_the_host_after_the_domain_when_it_can() {
        let seed = create_seed("web-1", "#cloud-config\n").expect("seed");
        assert_eq!(seed.hostname().expect("meta"), Some("web-1".into()));
        assert_eq!(seed.user_data, "#cloud-config\n");
        assert_eq!(seed.network_config, None);
        let odd = create_seed("web_1", "#cloud-config\n").expect("seed");
        assert_eq!(odd.hostname().expect("meta"), None);
        assert!(odd.meta_data.contains("web_1"), "{}", odd.meta_data);
    }
}
