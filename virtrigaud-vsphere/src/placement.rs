//! Where a new VM goes ([`resolve_target`]): the datacenter and its folders, the compute
//! (a named host, cluster or compute resource, the default pool, or the datacenter's first
//! compute resource), the datastore, and the backing of each network adapter.

use virtrigaud_core::{Error, ErrorKind, Placement, Result, VmCreateSpec};

use crate::PROVIDER_TYPE;
use crate::client::Client;
use crate::config::CreateDefaults;
use crate::error::{VimError, to_core_error};
use crate::spec::{NicBacking, Target};
use crate::types::{MoRef, Props, refs};

const OP: &str = "create";

fn err(e: VimError, resource: Option<&str>) -> Error {
    to_core_error(e, OP, resource)
}

/// A datacenter's name and folders.
struct Datacenter {
    name: String,
    props: Props,
}

impl Datacenter {
    /// One of the datacenter's root folders (`vmFolder`, `hostFolder`, …).
    fn folder(&self, path: &str) -> Result<MoRef> {
        self.props
            .get(path)
            .and_then(MoRef::from_el)
            .ok_or_else(|| Error::internal(format!("datacenter {} has no {path}", self.name)))
    }
}

/// The compute side of a target: the pool, the host (when one was named) and the datastores
/// the compute resource reaches.
struct Compute {
    pool: MoRef,
    host: Option<MoRef>,
    datastores: Vec<String>,
}

/// Finds the folder, pool, host, datastore and networks of a new VM.
pub(crate) async fn resolve_target(
    c: &Client,
    d: &CreateDefaults,
    spec: &VmCreateSpec,
) -> Result<Target> {
    let dc = datacenter(c, d).await?;
    let folder = match &d.folder {
        Some(path) => by_path(c, path, "Folder").await?,
        None => dc.folder("vmFolder")?,
    };
    let compute = compute(c, d, &dc, spec).await?;
    let datastore = datastore(c, d, &dc, &compute, spec).await?;
    let nics = nics(c, &dc, spec).await?;
    Ok(Target {
        folder,
        pool: compute.pool,
        host: compute.host,
        datastore,
        nics,
    })
}

/// The configured datacenter, or the first one.
async fn datacenter(c: &Client, d: &CreateDefaults) -> Result<Datacenter> {
    let paths = [
        "name",
        "vmFolder",
        "hostFolder",
        "datastoreFolder",
        "networkFolder",
    ];
    let dcs = c
        .list_by_type("Datacenter", &paths)
        .await
        .map_err(|e| err(e, None))?;
    let dc = match &d.datacenter {
        Some(name) => dcs.into_iter().find(|(_, p)| p.str("name") == Some(name)),
        None => dcs.into_iter().next(),
    };
    let Some((_, props)) = dc else {
        return Err(Error::not_found(format!(
            "no datacenter {}",
            d.datacenter.as_deref().unwrap_or("at all")
        ))
        .context_for(PROVIDER_TYPE, OP, None));
    };
    let name = props.str("name").unwrap_or_default().to_owned();
    Ok(Datacenter { name, props })
}

/// A named host (or cluster / compute resource), the default pool, or the datacenter's
/// first compute resource.
async fn compute(
    c: &Client,
    d: &CreateDefaults,
    dc: &Datacenter,
    spec: &VmCreateSpec,
) -> Result<Compute> {
    let host_folder = dc.folder("hostFolder")?;
    if spec.placement.host.is_some() || spec.placement.cluster.is_some() {
        return placed(c, dc, &host_folder, &spec.placement).await;
    }
    if let Some(path) = &d.resource_pool {
        let pool = by_path(c, path, "ResourcePool").await?;
        let owner = c
            .retrieve(&pool, &["owner"])
            .await
            .map_err(|e| err(e, Some(path)))?;
        let datastores = match owner.get("owner").and_then(MoRef::from_el) {
            Some(cr) => refs(
                c.retrieve(&cr, &["datastore"])
                    .await
                    .map_err(|e| err(e, Some(path)))?
                    .get("datastore"),
            ),
            None => Vec::new(),
        };
        return Ok(Compute {
            pool,
            host: None,
            datastores,
        });
    }
    let crs = c
        .list_in(
            &host_folder,
            "ComputeResource",
            &["resourcePool", "datastore"],
        )
        .await
        .map_err(|e| err(e, None))?;
    crs.iter()
        .find_map(|(_, p)| {
            Some(Compute {
                pool: p.get("resourcePool").and_then(MoRef::from_el)?,
                host: None,
                datastores: refs(p.get("datastore")),
            })
        })
        .ok_or_else(|| {
            Error::not_found(format!("datacenter {} has no host or cluster", dc.name)).context_for(
                PROVIDER_TYPE,
                OP,
                None,
            )
        })
}

/// The compute of a `placement`: its host (that host's compute resource's root pool; a host
/// outside the placement's cluster is refused), or with no host its cluster / compute
/// resource.
async fn placed(
    c: &Client,
    dc: &Datacenter,
    host_folder: &MoRef,
    place: &Placement,
) -> Result<Compute> {
    let crs = c
        .list_in(
            host_folder,
            "ComputeResource",
            &["name", "resourcePool", "datastore"],
        )
        .await
        .map_err(|e| err(e, None))?;
    let cluster = match &place.cluster {
        Some(name) => match crs.iter().find(|(_, p)| p.str("name") == Some(name)) {
            Some(cr) => Some(cr),
            None => {
                return Err(not_in_dc("placement.cluster", "cluster", name, dc));
            }
        },
        None => None,
    };
    let Some(host) = &place.host else {
        let (_, cp) =
            cluster.ok_or_else(|| Error::internal("placement without host or cluster"))?;
        let name = place.cluster.as_deref().unwrap_or_default();
        return Ok(Compute {
            pool: root_pool(cp, name)?,
            host: None,
            datastores: refs(cp.get("datastore")),
        });
    };
    let hosts = c
        .list_in(host_folder, "HostSystem", &["name", "parent", "datastore"])
        .await
        .map_err(|e| err(e, Some(host)))?;
    let Some((h, hp)) = hosts.iter().find(|(_, p)| p.str("name") == Some(host)) else {
        return Err(not_in_dc("placement.host", "host", host, dc));
    };
    let parent = hp.get("parent").and_then(MoRef::from_el);
    let owner = crs.iter().find(|(m, _)| Some(m) == parent.as_ref());
    let Some((cr, cp)) = owner else {
        return Err(Error::internal(format!(
            "host {host} has no parent compute resource"
        )));
    };
    if let Some((want, _)) = cluster
        && want != cr
    {
        return Err(Error::invalid_spec(format!(
            "placement.host: host {host} is not in cluster {}",
            place.cluster.as_deref().unwrap_or_default()
        ))
        .context_for(PROVIDER_TYPE, OP, Some(host)));
    }
    Ok(Compute {
        pool: root_pool(cp, host)?,
        host: Some(h.clone()),
        datastores: refs(hp.get("datastore")),
    })
}

/// The root resource pool of a compute resource.
fn root_pool(cp: &Props, name: &str) -> Result<MoRef> {
    cp.get("resourcePool")
        .and_then(MoRef::from_el)
        .ok_or_else(|| Error::internal(format!("{name} has no resource pool")))
}

/// `field: no <what> <name> in datacenter <dc>`, NotFound.
fn not_in_dc(field: &str, what: &str, name: &str, dc: &Datacenter) -> Error {
    Error::not_found(format!(
        "{field}: no {what} {name:?} in datacenter {}",
        dc.name
    ))
    .context_for(PROVIDER_TYPE, OP, Some(name))
}

/// The placement's datastore (which the compute must reach), the configured one, or the
/// first accessible one of the compute with room for the disks.
async fn datastore(
    c: &Client,
    d: &CreateDefaults,
    dc: &Datacenter,
    compute: &Compute,
    spec: &VmCreateSpec,
) -> Result<String> {
    let wanted = spec.placement.datastore.as_ref();
    if let Some(name) = d.datastore.as_ref().filter(|_| wanted.is_none()) {
        return Ok(name.clone());
    }
    let need: u64 = spec.disks.iter().map(|d| d.size_gib << 30).sum();
    let all = c
        .list_in(
            &dc.folder("datastoreFolder")?,
            "Datastore",
            &["name", "summary.freeSpace", "summary.accessible"],
        )
        .await
        .map_err(|e| err(e, None))?;
    if let Some(name) = wanted {
        let reachable = compute.datastores.iter().any(|r| {
            all.iter()
                .any(|(m, p)| &m.value == r && p.str("name") == Some(name))
        });
        if !reachable {
            return Err(Error::not_found(format!(
                "placement.datastore: no datastore {name:?} reachable from the placement's compute in datacenter {}",
                dc.name
            ))
            .context_for(PROVIDER_TYPE, OP, Some(name)));
        }
        return Ok(name.clone());
    }
    let hit = compute.datastores.iter().find_map(|r| {
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
        .context_for(PROVIDER_TYPE, OP, None)
    })
}

/// The backing of each network adapter: a standard network or a distributed port group,
/// found by name in the datacenter's network folder.
async fn nics(c: &Client, dc: &Datacenter, spec: &VmCreateSpec) -> Result<Vec<NicBacking>> {
    let mut nics = Vec::new();
    if spec.networks.is_empty() {
        return Ok(nics);
    }
    let nets = c
        .list_in(&dc.folder("networkFolder")?, "Network", &["name"])
        .await
        .map_err(|e| err(e, None))?;
    for n in &spec.networks {
        let Some((m, _)) = nets
            .iter()
            .find(|(_, p)| p.str("name") == Some(n.network.as_str()))
        else {
            return Err(Error::not_found(format!(
                "no network {:?} in datacenter {}",
                n.network, dc.name
            ))
            .context_for(PROVIDER_TYPE, OP, Some(&n.network)));
        };
        let model = n.model.clone().unwrap_or_else(|| "vmxnet3".to_owned());
        if m.ty == "DistributedVirtualPortgroup" {
            let pg = c
                .retrieve(m, &["key", "config.distributedVirtualSwitch"])
                .await
                .map_err(|e| err(e, Some(&n.network)))?;
            let dvs = pg
                .get("config.distributedVirtualSwitch")
                .and_then(MoRef::from_el)
                .ok_or_else(|| Error::internal("port group without a switch"))?;
            let sw = c
                .retrieve(&dvs, &["uuid"])
                .await
                .map_err(|e| err(e, Some(&n.network)))?;
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
    Ok(nics)
}

/// The object of type `ty` at an inventory path (a vApp counts as a resource pool).
pub(crate) async fn by_path(c: &Client, path: &str, ty: &str) -> Result<MoRef> {
    let found = c
        .find_by_inventory_path(path)
        .await
        .map_err(|e| err(e, Some(path)))?;
    match found {
        Some(m) if m.ty == ty || (ty == "ResourcePool" && m.ty == "VirtualApp") => Ok(m),
        Some(m) => Err(
            Error::invalid_spec(format!("{path} is a {}, not a {ty}", m.ty)).context_for(
                PROVIDER_TYPE,
                OP,
                None,
            ),
        ),
        None => Err(
            Error::not_found(format!("no {ty} at inventory path {path}")).context_for(
                PROVIDER_TYPE,
                OP,
                Some(path),
            ),
        ),
    }
}
