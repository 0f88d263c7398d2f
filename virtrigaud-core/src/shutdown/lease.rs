//! Shutdown leases: what a journal records of one shutdown, and the rule that decides whether
//! a recorded lease still belongs to the shutdown being asked for.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::vm::{Incarnation, ShutdownChannel, VmId};

/// How long past its deadline and force budget a lease is still honoured. A process that
/// crashed during the hard power-off and comes back within this margin finishes it; a lease
/// older than that belongs to a shutdown that is long over.
pub const LEASE_EXPIRY_MARGIN: Duration = Duration::from_secs(60);

/// Which provider endpoint a lease belongs to: the provider type and the endpoint identity
/// ([`crate::Provider::instance_id`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeaseScope {
    /// The provider type (`"libvirt"`, …).
    pub provider_type: String,
    /// The endpoint identity (`""` for a process with one endpoint of this type).
    pub instance: String,
}

impl LeaseScope {
    /// The scope of `instance` of `provider_type`.
    pub fn new(provider_type: impl Into<String>, instance: impl Into<String>) -> Self {
        LeaseScope {
            provider_type: provider_type.into(),
            instance: instance.into(),
        }
    }
    /// The scope of a provider.
    pub fn of(provider: &dyn crate::Provider) -> Self {
        LeaseScope::new(provider.provider_type(), provider.instance_id())
    }
    /// Whether `lease` belongs to this scope.
    pub fn contains(&self, lease: &Lease) -> bool {
        lease.provider_type == self.provider_type && lease.instance == self.instance
    }
}

/// One in-flight shutdown as recorded in a journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Lease {
    /// Provider type that owns the VM.
    pub provider_type: String,
    /// The provider endpoint ([`crate::Provider::instance_id`]).
    #[serde(default)]
    pub instance: String,
    /// The VM.
    pub vm: VmId,
    /// When the grace period started, milliseconds since the Unix epoch.
    pub started_at_ms: u64,
    /// When the grace period ends, milliseconds since the Unix epoch.
    pub deadline_ms: u64,
    /// The length of the grace period when it started, milliseconds: a resumed shutdown never
    /// gets more than this, whatever the wall clock did meanwhile.
    #[serde(default)]
    pub grace_ms: Option<u64>,
    /// The run of the VM the shutdown was for; a lease of another run is stale.
    #[serde(default)]
    pub incarnation: Option<Incarnation>,
    /// The channel of a request already delivered in this shutdown: a resumed shutdown does
    /// not send it again (it still re-sends on the policy's re-send interval).
    #[serde(default)]
    pub signalled: Option<ShutdownChannel>,
}

impl Lease {
    /// A lease of `vm` in `scope`, starting at `started` and ending at `deadline`.
    pub fn new(scope: &LeaseScope, vm: VmId, started: SystemTime, deadline: SystemTime) -> Self {
        let grace = deadline.duration_since(started).unwrap_or(Duration::ZERO);
        Lease {
            provider_type: scope.provider_type.clone(),
            instance: scope.instance.clone(),
            vm,
            started_at_ms: to_ms(started),
            deadline_ms: to_ms(deadline),
            grace_ms: Some(duration_ms(grace)),
            incarnation: None,
            signalled: None,
        }
    }
    /// The same lease, for the run `incarnation` of the VM.
    pub fn with_incarnation(mut self, incarnation: Option<Incarnation>) -> Self {
        self.incarnation = incarnation;
        self
    }
    /// The scope it belongs to.
    pub fn scope(&self) -> LeaseScope {
        LeaseScope::new(self.provider_type.clone(), self.instance.clone())
    }
    /// The start as a `SystemTime`.
    pub fn started_at(&self) -> SystemTime {
        from_ms(self.started_at_ms)
    }
    /// The deadline as a `SystemTime`.
    pub fn deadline(&self) -> SystemTime {
        from_ms(self.deadline_ms)
    }
    /// Moves the deadline to `left` after wall time `now`: the one place where the engine's
    /// time left (tokio's clock) becomes a wall-clock deadline.
    pub(crate) fn end_in(&mut self, now: SystemTime, left: Duration) {
        self.deadline_ms = to_ms(wall_add(now, left));
    }
    /// The original grace length, when recorded.
    pub fn grace(&self) -> Option<Duration> {
        self.grace_ms.map(Duration::from_millis)
    }

    /// Whether this lease no longer describes a shutdown of the VM's current run, at wall time
    /// `now`, for a VM whose current run is `current` (`None`: unknown), given the force
    /// budget of the hard power-off stage.
    pub fn staleness(
        &self,
        now: SystemTime,
        current: Option<&Incarnation>,
        force_budget: Duration,
    ) -> Option<StaleLease> {
        if let (Some(recorded), Some(current)) = (&self.incarnation, current)
            && recorded != current
        {
            return Some(StaleLease::OtherRun);
        }
        let honoured_until = self
            .deadline()
            .checked_add(force_budget)
            .and_then(|t| t.checked_add(LEASE_EXPIRY_MARGIN));
        match honoured_until {
            Some(until) if now > until => Some(StaleLease::Expired),
            _ => None,
        }
    }

    /// The grace left at wall time `now`: the time to the deadline, never more than the
    /// original grace (a clock stepped back cannot stretch it).
    pub fn time_left(&self, now: SystemTime) -> Duration {
        let left = self
            .deadline()
            .duration_since(now)
            .unwrap_or(Duration::ZERO);
        match self.grace() {
            Some(grace) => left.min(grace),
            None => left,
        }
    }

    /// Time since the grace started, at wall time `now` (zero if the clock went back).
    pub fn elapsed(&self, now: SystemTime) -> Duration {
        now.duration_since(self.started_at())
            .unwrap_or(Duration::ZERO)
    }
}

/// Why a recorded lease was discarded instead of applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StaleLease {
    /// It was written during another run of the VM (the VM has restarted since).
    OtherRun,
    /// Its deadline and force budget passed long ago: that shutdown is over.
    Expired,
}

impl StaleLease {
    /// A stable snake_case name.
    pub fn as_str(&self) -> &'static str {
        match self {
            StaleLease::OtherRun => "other_run",
            StaleLease::Expired => "expired",
        }
    }
}

impl fmt::Display for StaleLease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StaleLease::OtherRun => "it was written during an earlier run of the VM",
            StaleLease::Expired => "its deadline passed long ago",
        })
    }
}

pub(crate) fn to_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Milliseconds since the epoch as a `SystemTime`, saturating at the latest time the platform
/// can represent (a hostile lease cannot make the arithmetic panic).
fn from_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH
        .checked_add(Duration::from_millis(ms))
        .unwrap_or_else(far_future)
}

/// A wall-clock time far in the future that every platform represents.
fn far_future() -> SystemTime {
    // 2^32 seconds after the epoch (the year 2106) fits even a 32-bit time_t.
    UNIX_EPOCH + Duration::from_secs(u64::from(u32::MAX))
}

/// `t + d`, saturating instead of panicking.
pub(crate) fn wall_add(t: SystemTime, d: Duration) -> SystemTime {
    t.checked_add(d).unwrap_or_else(far_future)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope() -> LeaseScope {
        LeaseScope::new("simulator", "")
    }

    #[test]
    fn a_lease_of_another_run_is_stale() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let lease = Lease::new(&scope(), "vm".into(), t0, t0 + Duration::from_secs(60))
            .with_incarnation(Some(Incarnation::new("boot-1")));
        let same = Incarnation::new("boot-1");
        let other = Incarnation::new("boot-2");
        let budget = Duration::from_secs(30);
        assert_eq!(lease.staleness(t0, Some(&same), budget), None);
        assert_eq!(lease.staleness(t0, None, budget), None);
        assert_eq!(
            lease.staleness(t0, Some(&other), budget),
            Some(StaleLease::OtherRun)
        );
    }

    #[test]
    fn a_lease_expires_after_deadline_force_budget_and_margin() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let lease = Lease::new(&scope(), "vm".into(), t0, t0 + Duration::from_secs(60));
        let budget = Duration::from_secs(30);
        let edge = t0 + Duration::from_secs(60 + 30) + LEASE_EXPIRY_MARGIN;
        assert_eq!(lease.staleness(edge, None, budget), None);
        assert_eq!(
            lease.staleness(edge + Duration::from_millis(1), None, budget),
            Some(StaleLease::Expired)
        );
        // A day later, as in a VM restarted by hand and shut down again.
        assert_eq!(
            lease.staleness(t0 + Duration::from_secs(86_400), None, budget),
            Some(StaleLease::Expired)
        );
    }

    #[test]
    fn time_left_never_exceeds_the_original_grace() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let lease = Lease::new(&scope(), "vm".into(), t0, t0 + Duration::from_secs(60));
        assert_eq!(
            lease.time_left(t0 + Duration::from_secs(20)),
            Duration::from_secs(40)
        );
        // The wall clock stepped back an hour: still at most the 60 s grace.
        assert_eq!(
            lease.time_left(t0 - Duration::from_secs(3600)),
            Duration::from_secs(60)
        );
        assert_eq!(
            lease.time_left(t0 + Duration::from_secs(61)),
            Duration::ZERO
        );
    }

    #[test]
    fn hostile_times_do_not_panic() {
        let mut lease = Lease::new(&scope(), "vm".into(), UNIX_EPOCH, UNIX_EPOCH);
        lease.deadline_ms = u64::MAX;
        lease.started_at_ms = u64::MAX;
        let now = SystemTime::now();
        let _ = lease.staleness(now, None, Duration::MAX);
        let _ = lease.time_left(now);
        let _ = lease.elapsed(now);
        let _ = wall_add(now, Duration::MAX);
    }
}
