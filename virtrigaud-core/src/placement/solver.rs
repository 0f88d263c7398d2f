//! The deterministic placement solver: indexes an [`Inventory`] once, then places VMs one
//! after another in `O(hosts)` each (independent of how many VMs are already placed).

use std::collections::{HashMap, HashSet};

use super::explain::{RejectReason, RejectedClass, Unsatisfiable};
use super::{Inventory, PlacementDecision, PlacementRequest, Resources};

/// Score of one soft-constraint match (host, cluster, zone, folder).
const SOFT_MATCH: i64 = 1000;
/// Score of a soft datastore match.
const SOFT_DATASTORE: i64 = 500;
/// Penalty per VM of the same group already on the host (soft spread).
const SPREAD_HOST: i64 = 300;
/// Penalty per VM of the same group already in the cluster or zone (soft spread).
const SPREAD_DOMAIN: i64 = 100;
/// Examples of hosts listed per rejected class.
const EXAMPLES: usize = 3;

/// Interns names into dense ids.
#[derive(Debug, Default)]
struct Names {
    ids: HashMap<String, u32>,
    names: Vec<String>,
}

impl Names {
    fn intern(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let id = u32::try_from(self.names.len()).unwrap_or(u32::MAX);
        self.ids.insert(name.to_owned(), id);
        self.names.push(name.to_owned());
        id
    }
    fn get(&self, name: &str) -> Option<u32> {
        self.ids.get(name).copied()
    }
    fn len(&self) -> usize {
        self.names.len()
    }
    /// A mask over ids: `None` when `list` is empty (no constraint).
    fn mask(&self, list: &[String]) -> Option<Vec<bool>> {
        if list.is_empty() {
            return None;
        }
        let mut m = vec![false; self.len()];
        for n in list {
            if let Some(id) = self.get(n) {
                m[id as usize] = true;
            }
        }
        Some(m)
    }
}

#[derive(Debug)]
struct HostSlot {
    name: String,
    cluster: Option<u32>,
    zone: Option<u32>,
    folders: Vec<u32>,
    datastores: Vec<u32>,
    capacity: Resources,
    used: Resources,
}

#[derive(Debug)]
struct DsSlot {
    name: String,
    /// Free GiB; `u64::MAX` when the inventory does not report the datastore.
    free: u64,
}

/// Where a group's VMs are: dense counts for the hot path, names for explanations.
#[derive(Debug)]
struct Group {
    members: HashSet<String>,
    host_count: Vec<u32>,
    cluster_count: Vec<u32>,
    zone_count: Vec<u32>,
    ds_count: Vec<u32>,
    names: HashMap<(u8, u32), Vec<String>>,
}

const ON_HOST: u8 = 0;
const IN_CLUSTER: u8 = 1;
const ON_DS: u8 = 2;

impl Group {
    fn new(s: &Solver) -> Self {
        Group {
            members: HashSet::new(),
            host_count: vec![0; s.hosts.len()],
            cluster_count: vec![0; s.clusters.len()],
            zone_count: vec![0; s.zones.len()],
            ds_count: vec![0; s.datastores.len()],
            names: HashMap::new(),
        }
    }

    fn add(&mut self, name: &str, host: Option<&HostSlot>, host_idx: Option<u32>, ds: &[u32]) {
        if !self.members.insert(name.to_owned()) {
            return;
        }
        if let (Some(h), Some(i)) = (host, host_idx) {
            self.host_count[i as usize] += 1;
            self.names
                .entry((ON_HOST, i))
                .or_default()
                .push(name.to_owned());
            if let Some(c) = h.cluster {
                self.cluster_count[c as usize] += 1;
                self.names
                    .entry((IN_CLUSTER, c))
                    .or_default()
                    .push(name.to_owned());
            }
            if let Some(z) = h.zone {
                self.zone_count[z as usize] += 1;
            }
        }
        for &d in ds {
            self.ds_count[d as usize] += 1;
            self.names
                .entry((ON_DS, d))
                .or_default()
                .push(name.to_owned());
        }
    }
}

/// The constraints of one request, resolved to masks over interned ids.
struct Prepared<'a> {
    req: &'a PlacementRequest,
    hard_hosts: Option<Vec<bool>>,
    hard_clusters: Option<Vec<bool>>,
    hard_zones: Option<Vec<bool>>,
    hard_ds: Option<Vec<bool>>,
    soft_hosts: Option<Vec<bool>>,
    soft_clusters: Option<Vec<bool>>,
    soft_zones: Option<Vec<bool>>,
    soft_folders: Option<Vec<bool>>,
    soft_ds: Option<Vec<bool>>,
    host_aa: bool,
    cluster_aa: bool,
    ds_aa: bool,
}

fn allowed(mask: &Option<Vec<bool>>, id: Option<u32>) -> bool {
    match mask {
        None => true,
        Some(m) => id.is_some_and(|i| m[i as usize]),
    }
}

fn matches(mask: &Option<Vec<bool>>, id: Option<u32>) -> bool {
    mask.is_some() && allowed(mask, id)
}

/// A placement solver over one inventory snapshot. Pure and deterministic: every decision is
/// committed to the solver's own copy of the load, so later requests see earlier ones.
///
/// Cost: building is `O(hosts + VMs)`; each decision is `O(hosts)` plus `O(new peers)`,
/// whatever the number of VMs already placed (group membership is kept as dense counts per
/// host, cluster, zone and datastore).
#[derive(Debug)]
pub struct Solver {
    hosts: Vec<HostSlot>,
    clusters: Names,
    zones: Names,
    folders: Names,
    ds_names: Names,
    datastores: Vec<DsSlot>,
    vm_host: HashMap<String, u32>,
    vm_ds: HashMap<String, Vec<u32>>,
    groups: HashMap<String, Group>,
}

impl Solver {
    /// Indexes `inventory`. Hosts are ordered by name (ties between equal scores go to the
    /// first); a host listed twice keeps its first entry.
    pub fn new(inventory: &Inventory) -> Self {
        let mut order: Vec<usize> = (0..inventory.hosts.len()).collect();
        order.sort_by(|&a, &b| inventory.hosts[a].name.cmp(&inventory.hosts[b].name));
        order.dedup_by(|a, b| inventory.hosts[*a].name == inventory.hosts[*b].name);
        let mut ds_order: Vec<&super::DatastoreInfo> = inventory.datastores.iter().collect();
        ds_order.sort_by(|a, b| a.name.cmp(&b.name));
        let mut s = Solver {
            hosts: Vec::with_capacity(order.len()),
            clusters: Names::default(),
            zones: Names::default(),
            folders: Names::default(),
            ds_names: Names::default(),
            datastores: Vec::new(),
            vm_host: HashMap::new(),
            vm_ds: HashMap::new(),
            groups: HashMap::new(),
        };
        for d in &ds_order {
            if s.ds_names.get(&d.name).is_none() {
                s.ds_names.intern(&d.name);
                s.datastores.push(DsSlot {
                    name: d.name.clone(),
                    free: d.free_gib,
                });
            }
        }
        // Datastores a host reaches that the inventory does not report: unknown free space.
        let mut unknown: Vec<&str> = order
            .iter()
            .flat_map(|&i| inventory.hosts[i].datastores.iter().map(String::as_str))
            .filter(|n| s.ds_names.get(n).is_none())
            .collect();
        unknown.sort_unstable();
        unknown.dedup();
        for n in unknown {
            s.ds_names.intern(n);
            s.datastores.push(DsSlot {
                name: n.to_owned(),
                free: u64::MAX,
            });
        }
        for &i in &order {
            let h = &inventory.hosts[i];
            let idx = u32::try_from(s.hosts.len()).unwrap_or(u32::MAX);
            let mut datastores: Vec<u32> = h
                .datastores
                .iter()
                .filter_map(|d| s.ds_names.get(d))
                .collect();
            datastores.sort_unstable();
            datastores.dedup();
            let slot = HostSlot {
                name: h.name.clone(),
                cluster: h.cluster.as_deref().map(|c| s.clusters.intern(c)),
                zone: h.zone.as_deref().map(|z| s.zones.intern(z)),
                folders: h.folders.iter().map(|f| s.folders.intern(f)).collect(),
                datastores,
                capacity: h.capacity,
                used: h.allocated,
            };
            for vm in &h.vms {
                s.vm_host.insert(vm.clone(), idx);
            }
            s.hosts.push(slot);
        }
        for d in &ds_order {
            if let Some(id) = s.ds_names.get(&d.name) {
                for vm in &d.vms {
                    s.vm_ds.entry(vm.clone()).or_default().push(id);
                }
            }
        }
        s
    }

    /// Hosts in the snapshot.
    pub fn host_count(&self) -> usize {
        self.hosts.len()
    }

    /// Places one VM and commits the decision (capacity, datastore space, group membership).
    pub fn place(
        &mut self,
        request: &PlacementRequest,
    ) -> Result<PlacementDecision, Unsatisfiable> {
        self.register_peers(request);
        let p = self.prepare(request);
        let group = request.group.as_ref().and_then(|g| self.groups.get(g));
        let mut best: Option<(i64, usize, Option<u32>)> = None;
        for (i, h) in self.hosts.iter().enumerate() {
            if let Ok((score, ds)) = self.evaluate(&p, group, i, h)
                && best.is_none_or(|(b, _, _)| score > b)
            {
                best = Some((score, i, ds));
            }
        }
        match best {
            Some((score, i, ds)) => Ok(self.commit(request, score, i, ds)),
            None => Err(self.explain(&p, group)),
        }
    }

    /// Places VMs in order and stops at the first that cannot be placed (the decisions
    /// before it stay committed in this solver).
    pub fn place_all(
        &mut self,
        requests: &[PlacementRequest],
    ) -> Result<Vec<PlacementDecision>, Unsatisfiable> {
        let mut out = Vec::with_capacity(requests.len());
        for r in requests {
            out.push(self.place(r)?);
        }
        Ok(out)
    }

    fn register_peers(&mut self, request: &PlacementRequest) {
        let Some(g) = &request.group else { return };
        if !self.groups.contains_key(g) {
            let group = Group::new(self);
            self.groups.insert(g.clone(), group);
        }
        let Some(group) = self.groups.get_mut(g) else {
            return;
        };
        for peer in &request.peers {
            if group.members.contains(peer) || *peer == request.vm_name {
                continue;
            }
            let host_idx = self.vm_host.get(peer).copied();
            let host = host_idx.map(|i| &self.hosts[i as usize]);
            let ds = self.vm_ds.get(peer).map_or(&[][..], Vec::as_slice);
            group.add(peer, host, host_idx, ds);
        }
    }

    fn prepare<'a>(&self, req: &'a PlacementRequest) -> Prepared<'a> {
        let hard = req.policy.hard.clone().unwrap_or_default();
        let soft = req.policy.soft.clone().unwrap_or_default();
        let aa = req.policy.anti_affinity.clone().unwrap_or_default();
        let grouped = req.group.is_some();
        let host_mask = |list: &[String]| {
            if list.is_empty() {
                return None;
            }
            let wanted: HashSet<&str> = list.iter().map(String::as_str).collect();
            Some(
                self.hosts
                    .iter()
                    .map(|h| wanted.contains(h.name.as_str()))
                    .collect::<Vec<bool>>(),
            )
        };
        Prepared {
            req,
            hard_hosts: host_mask(&hard.hosts),
            hard_clusters: self.clusters.mask(&hard.clusters),
            hard_zones: self.zones.mask(&hard.zones),
            hard_ds: self.ds_names.mask(&hard.datastores),
            soft_hosts: host_mask(&soft.hosts),
            soft_clusters: self.clusters.mask(&soft.clusters),
            soft_zones: self.zones.mask(&soft.zones),
            soft_folders: self.folders.mask(&soft.folders),
            soft_ds: self.ds_names.mask(&soft.datastores),
            host_aa: grouped && aa.host_anti_affinity,
            cluster_aa: grouped && aa.cluster_anti_affinity,
            ds_aa: grouped && aa.datastore_anti_affinity,
        }
    }

    /// Whether host `i` can take the VM: its score and datastore, or the first reason not.
    fn evaluate(
        &self,
        p: &Prepared<'_>,
        group: Option<&Group>,
        i: usize,
        h: &HostSlot,
    ) -> Result<(i64, Option<u32>), RejectReason> {
        let idx = u32::try_from(i).ok();
        if !allowed(&p.hard_hosts, idx) {
            return Err(RejectReason::NotInHardHosts);
        }
        if !allowed(&p.hard_clusters, h.cluster) {
            return Err(RejectReason::NotInHardClusters);
        }
        if !allowed(&p.hard_zones, h.zone) {
            return Err(RejectReason::NotInHardZones);
        }
        let needs_ds = p.hard_ds.is_some() || p.ds_aa;
        let ds_allowed = |d: &u32| allowed(&p.hard_ds, Some(*d));
        if (needs_ds && h.datastores.is_empty())
            || (!h.datastores.is_empty() && !h.datastores.iter().any(ds_allowed))
        {
            return Err(RejectReason::NoAllowedDatastore);
        }
        if let Some(g) = group {
            if p.host_aa && g.host_count[i] > 0 {
                return Err(RejectReason::HostAntiAffinity);
            }
            if p.cluster_aa && h.cluster.is_some_and(|c| g.cluster_count[c as usize] > 0) {
                return Err(RejectReason::ClusterAntiAffinity);
            }
        }
        let demand = p.req.demand;
        if h.used.cpu.saturating_add(demand.cpu) > h.capacity.cpu {
            return Err(RejectReason::InsufficientCpu);
        }
        if h.used.memory_mib.saturating_add(demand.memory_mib) > h.capacity.memory_mib {
            return Err(RejectReason::InsufficientMemory);
        }
        let ds = if h.datastores.is_empty() {
            None
        } else {
            Some(self.pick_datastore(p, group, h)?)
        };
        let mut score = 0i64;
        for hit in [
            matches(&p.soft_hosts, idx),
            matches(&p.soft_clusters, h.cluster),
            matches(&p.soft_zones, h.zone),
            p.soft_folders.is_some()
                && h.folders.iter().any(|f| matches(&p.soft_folders, Some(*f))),
        ] {
            if hit {
                score += SOFT_MATCH;
            }
        }
        if matches(&p.soft_ds, ds) {
            score += SOFT_DATASTORE;
        }
        if let Some(g) = group {
            score -= SPREAD_HOST * i64::from(g.host_count[i]);
            if let Some(c) = h.cluster {
                score -= SPREAD_DOMAIN * i64::from(g.cluster_count[c as usize]);
            }
            if let Some(z) = h.zone {
                score -= SPREAD_DOMAIN * i64::from(g.zone_count[z as usize]);
            }
        }
        score += free_permille(h.capacity.cpu, h.used.cpu + demand.cpu) / 10;
        score += free_permille(h.capacity.memory_mib, h.used.memory_mib + demand.memory_mib) / 10;
        Ok((score, ds))
    }

    /// The best allowed datastore of `h` with room: soft match, then most free, then name.
    fn pick_datastore(
        &self,
        p: &Prepared<'_>,
        group: Option<&Group>,
        h: &HostSlot,
    ) -> Result<u32, RejectReason> {
        let mut any_free_of_aa = false;
        let mut best: Option<(bool, u64, u32)> = None;
        for &d in &h.datastores {
            if !allowed(&p.hard_ds, Some(d)) {
                continue;
            }
            if p.ds_aa && group.is_some_and(|g| g.ds_count[d as usize] > 0) {
                continue;
            }
            any_free_of_aa = true;
            let free = self.datastores[d as usize].free;
            if free < p.req.disk_gib {
                continue;
            }
            let key = (matches(&p.soft_ds, Some(d)), free, d);
            let better = match best {
                None => true,
                Some((s, f, _)) => (key.0, key.1) > (s, f),
            };
            if better {
                best = Some(key);
            }
        }
        match best {
            Some((_, _, d)) => Ok(d),
            None if !any_free_of_aa => Err(RejectReason::DatastoreAntiAffinity),
            None => Err(RejectReason::InsufficientDisk),
        }
    }

    fn commit(
        &mut self,
        req: &PlacementRequest,
        score: i64,
        i: usize,
        ds: Option<u32>,
    ) -> PlacementDecision {
        let idx = u32::try_from(i).unwrap_or(u32::MAX);
        {
            let h = &mut self.hosts[i];
            h.used.cpu = h.used.cpu.saturating_add(req.demand.cpu);
            h.used.memory_mib = h.used.memory_mib.saturating_add(req.demand.memory_mib);
        }
        if let Some(d) = ds {
            let slot = &mut self.datastores[d as usize];
            if slot.free != u64::MAX {
                slot.free = slot.free.saturating_sub(req.disk_gib);
            }
        }
        self.vm_host.insert(req.vm_name.clone(), idx);
        let ds_list: Vec<u32> = ds.into_iter().collect();
        if !ds_list.is_empty() {
            self.vm_ds.insert(req.vm_name.clone(), ds_list.clone());
        }
        let h = &self.hosts[i];
        if let Some(g) = req.group.as_ref().and_then(|g| self.groups.get_mut(g)) {
            g.add(&req.vm_name, Some(h), Some(idx), &ds_list);
        }
        PlacementDecision {
            vm_name: req.vm_name.clone(),
            host: h.name.clone(),
            cluster: h.cluster.map(|c| self.clusters.names[c as usize].clone()),
            zone: h.zone.map(|z| self.zones.names[z as usize].clone()),
            datastore: ds.map(|d| self.datastores[d as usize].name.clone()),
            score,
        }
    }

    fn explain(&self, p: &Prepared<'_>, group: Option<&Group>) -> Unsatisfiable {
        let n = RejectReason::ALL.len();
        let mut counts = vec![0usize; n];
        let mut examples: Vec<Vec<String>> = vec![Vec::new(); n];
        let mut conflicts: Vec<Vec<String>> = vec![Vec::new(); n];
        for (i, h) in self.hosts.iter().enumerate() {
            let Err(reason) = self.evaluate(p, group, i, h) else {
                continue;
            };
            let k = reason.index();
            counts[k] += 1;
            if examples[k].len() < EXAMPLES {
                examples[k].push(h.name.clone());
            }
            if let Some(g) = group {
                let idx = u32::try_from(i).unwrap_or(u32::MAX);
                let keys: Vec<(u8, u32)> = match reason {
                    RejectReason::HostAntiAffinity => vec![(ON_HOST, idx)],
                    RejectReason::ClusterAntiAffinity => {
                        h.cluster.map(|c| (IN_CLUSTER, c)).into_iter().collect()
                    }
                    RejectReason::DatastoreAntiAffinity => {
                        h.datastores.iter().map(|&d| (ON_DS, d)).collect()
                    }
                    _ => Vec::new(),
                };
                for key in keys {
                    if let Some(names) = g.names.get(&key) {
                        conflicts[k].extend(names.iter().cloned());
                    }
                }
            }
        }
        let classes = RejectReason::ALL
            .iter()
            .filter(|r| counts[r.index()] > 0)
            .map(|&reason| {
                let k = reason.index();
                let mut c = std::mem::take(&mut conflicts[k]);
                c.sort_unstable();
                c.dedup();
                c.truncate(Unsatisfiable::MAX_NAMES);
                RejectedClass {
                    reason,
                    hosts: counts[k],
                    examples: std::mem::take(&mut examples[k]),
                    conflicts: c,
                }
            })
            .collect();
        Unsatisfiable {
            vm_name: p.req.vm_name.clone(),
            total_hosts: self.hosts.len(),
            classes,
        }
    }
}

fn free_permille(capacity: u64, used: u64) -> i64 {
    if capacity == 0 {
        return 0;
    }
    let free = capacity.saturating_sub(used);
    i64::try_from(free.saturating_mul(1000) / capacity).unwrap_or(1000)
}

/// Places `requests` in order over one `inventory` snapshot (all or nothing).
///
/// Greedy and deterministic: each VM gets the best host given the earlier ones. Each single
/// decision is exact (if any host satisfies every constraint, one is chosen), but a batch
/// can fail where a different order would succeed (bin packing is NP-hard).
pub fn place_batch(
    inventory: &Inventory,
    requests: &[PlacementRequest],
) -> Result<Vec<PlacementDecision>, Unsatisfiable> {
    Solver::new(inventory).place_all(requests)
}
