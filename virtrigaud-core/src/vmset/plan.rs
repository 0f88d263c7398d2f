//! The pure planning step of a reconcile pass: from the observed members to the actions that
//! keep `maxUnavailable` and `maxSurge`.

use crate::vm::{PowerState, VmId};

/// Readiness of one member, derived from its power state and the health probe.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Readiness {
    /// Running (or off, for templates that want VMs off) and the probe says ready.
    Ready,
    /// Powered off while it should run: the power gate starts it.
    Off,
    /// Starting, shutting down, paused or crashed.
    Transitioning(PowerState),
    /// Running, but the probe says not yet.
    NotReady(String),
    /// The probe says the gate failed.
    Failed(String),
}

/// One VM of the set, as observed through its labels and power state.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Member {
    /// Provider id.
    pub id: VmId,
    /// Name (`<set>-<n>`).
    pub name: String,
    /// `n` of `<set>-<n>`, when the name has that form.
    pub index: Option<u32>,
    /// Its `virtrigaud.io/template-hash` label.
    pub template_hash: String,
    /// Whether that is the current template's hash.
    pub current: bool,
    /// Where it runs.
    pub host: Option<String>,
    /// Readiness.
    pub readiness: Readiness,
}

impl Member {
    /// Whether it counts as available.
    pub fn is_available(&self) -> bool {
        self.readiness == Readiness::Ready
    }
}

/// Bounds of one pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Desired replicas.
    pub replicas: u32,
    /// Resolved `maxUnavailable`.
    pub max_unavailable: u32,
    /// Resolved `maxSurge`.
    pub max_surge: u32,
    /// `Recreate`: remove every old VM first, whatever the availability.
    pub recreate: bool,
}

/// What one pass does, in this order: start, remove unavailable, create, remove available.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Plan {
    /// Current-template members that are off: power them on.
    pub start: Vec<Member>,
    /// Members to remove that are not available (old ones, excess ones).
    pub remove_unavailable: Vec<Member>,
    /// New members to create, if every removal of `remove_unavailable` succeeds (create one
    /// fewer per failed removal).
    pub create: u32,
    /// Available members to remove (old ones, excess ones), within the unavailability budget.
    pub remove_available: Vec<Member>,
    /// Why the rollout is paused (a failed readiness gate), if it is.
    pub paused: Option<(String, String)>,
}

impl Plan {
    /// Whether the pass does nothing.
    pub fn is_idle(&self) -> bool {
        self.start.is_empty()
            && self.remove_unavailable.is_empty()
            && self.create == 0
            && self.remove_available.is_empty()
    }
}

fn usize_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Plans one pass. Invariants, given that only the plan changes the set:
/// - VMs in existence never exceed `replicas + maxSurge` (creations fill at most that);
/// - available VMs never drop below `replicas - maxUnavailable` because of a removal (only
///   `available - (replicas - maxUnavailable)` available VMs are removed per pass, counted
///   at observation; VMs created in the pass are not counted as available yet);
/// - a failed gate on a current member pauses creations and removals.
pub fn plan(members: &[Member], b: Bounds) -> Plan {
    let mut sorted: Vec<&Member> = members.iter().collect();
    sorted.sort_by(|x, y| (x.index, &x.name).cmp(&(y.index, &y.name)));
    let r = b.replicas;
    let mut out = Plan {
        paused: sorted.iter().find_map(|m| match &m.readiness {
            Readiness::Failed(why) if m.current => Some((m.name.clone(), why.clone())),
            _ => None,
        }),
        ..Plan::default()
    };
    if out.paused.is_some() {
        return out;
    }
    let available = usize_u32(sorted.iter().filter(|m| m.is_available()).count());
    let current: Vec<&Member> = sorted.iter().copied().filter(|m| m.current).collect();
    let old: Vec<&Member> = sorted.iter().copied().filter(|m| !m.current).collect();

    // 1. Unavailable VMs that must go: old ones, and current ones beyond `replicas`
    //    (highest index first).
    out.remove_unavailable.extend(
        old.iter()
            .filter(|m| !m.is_available())
            .map(|m| (*m).clone()),
    );
    let mut excess = usize_u32(current.len()).saturating_sub(r);
    for m in current.iter().rev().filter(|m| !m.is_available()) {
        if excess == 0 {
            break;
        }
        out.remove_unavailable.push((*m).clone());
        excess -= 1;
    }
    let removed = |m: &Member, list: &[Member]| list.iter().any(|x| x.id == m.id);
    out.start = current
        .iter()
        .filter(|m| m.readiness == Readiness::Off && !removed(m, &out.remove_unavailable))
        .map(|m| (*m).clone())
        .collect();

    // 2. Create up to `replicas` current members, within `replicas + maxSurge` in total.
    let total = usize_u32(sorted.len()) - usize_u32(out.remove_unavailable.len());
    let current_left = usize_u32(
        current
            .iter()
            .filter(|m| !removed(m, &out.remove_unavailable))
            .count(),
    );
    let old_left = usize_u32(old.iter().filter(|m| m.is_available()).count());
    let room = r.saturating_add(b.max_surge).saturating_sub(total);
    out.create = room.min(r.saturating_sub(current_left));
    if b.recreate && old_left > 0 {
        out.create = 0;
    }

    // 3. Available VMs to remove, within the budget: old ones (lowest index first), then
    //    current ones beyond `replicas` (highest index first).
    let mut budget = if b.recreate {
        u32::MAX
    } else {
        available.saturating_sub(r.saturating_sub(b.max_unavailable))
    };
    for m in old.iter().filter(|m| m.is_available()) {
        if budget == 0 {
            break;
        }
        out.remove_available.push((*m).clone());
        budget -= 1;
    }
    for m in current.iter().rev().filter(|m| m.is_available()) {
        if budget == 0 || excess == 0 {
            break;
        }
        out.remove_available.push((*m).clone());
        budget -= 1;
        excess -= 1;
    }
    out
}
