//! [`SolverPlacer`]: the [`Solver`] over a provider's live inventory, as a [`Placer`].

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

use super::solver::Solver;
use super::{PlacementDecision, PlacementRequest, Placer};
use crate::error::Result;
use crate::provider::{ListOptions, Provider};

/// Places VMs with the core [`Solver`] over [`Provider::inventory`], read afresh for each
/// call (one inventory read per [`Placer::place`] or [`Placer::place_batch`]).
///
/// With [`SolverPlacer::group_label`], the group's existing VMs are also found by listing
/// the provider's VMs whose label `key` equals the request's group (added to
/// [`PlacementRequest::peers`]); without it, callers pass the peers themselves.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// use virtrigaud_core::placement::{HostInfo, PlacementRequest, Placer, Resources, SolverPlacer};
/// use virtrigaud_core::sim::Simulator;
/// let sim = Simulator::new();
/// sim.add_host(HostInfo::new("node-a", Resources::new(8, 16384)));
/// let placer = SolverPlacer::new(Arc::new(sim));
/// let d = placer.place(&PlacementRequest::new("vm-1", Resources::new(2, 2048))).await?;
/// assert_eq!(d.host, "node-a");
/// # Ok::<(), virtrigaud_core::Error>(()) }).unwrap();
/// ```
pub struct SolverPlacer {
    provider: Arc<dyn Provider>,
    group_label: Option<String>,
}

impl fmt::Debug for SolverPlacer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SolverPlacer")
            .field("provider", &self.provider.provider_type())
            .field("group_label", &self.group_label)
            .finish()
    }
}

impl SolverPlacer {
    /// A placer over `provider`'s inventory.
    pub fn new(provider: Arc<dyn Provider>) -> Self {
        SolverPlacer {
            provider,
            group_label: None,
        }
    }

    /// Finds a group's existing VMs by the label `key` (for example `virtrigaud.io/set`).
    pub fn group_label(mut self, key: impl Into<String>) -> Self {
        self.group_label = Some(key.into());
        self
    }

    async fn with_listed_peers(
        &self,
        requests: &[PlacementRequest],
    ) -> Result<Vec<PlacementRequest>> {
        let mut out = requests.to_vec();
        let Some(key) = &self.group_label else {
            return Ok(out);
        };
        let mut listed: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for r in &mut out {
            let Some(g) = r.group.clone() else { continue };
            if !listed.contains_key(&g) {
                let mut opts = ListOptions::default();
                opts.labels.insert(key.clone(), g.clone());
                let vms = self.provider.list_vms(&opts).await?;
                listed.insert(g.clone(), vms.into_iter().map(|v| v.name).collect());
            }
            if let Some(names) = listed.get(&g) {
                r.peers.extend(names.iter().cloned());
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl Placer for SolverPlacer {
    async fn place(&self, request: &PlacementRequest) -> Result<PlacementDecision> {
        let mut d = self.place_batch(std::slice::from_ref(request)).await?;
        d.pop()
            .ok_or_else(|| crate::Error::internal("the solver returned no decision"))
    }

    async fn place_batch(&self, requests: &[PlacementRequest]) -> Result<Vec<PlacementDecision>> {
        let requests = self.with_listed_peers(requests).await?;
        let inventory = self.provider.inventory().await?;
        Ok(Solver::new(&inventory).place_all(&requests)?)
    }
}
