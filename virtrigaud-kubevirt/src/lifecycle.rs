//! The KubeVirt status query ([`KubeVirtStatus`]) and the raw stop with an explicit grace
//! period.
//!
//! Seed 004's lifecycle action (`spec.lifecycleAction`: `start`, `stop` with
//! `gracePeriodSeconds`, `force`) is core's [`virtrigaud_core::model::LifecycleAction`],
//! applied by [`virtrigaud_core::orchestration::Orchestrator::apply_action`] (or, for an
//! object, [`virtrigaud_core::reconcile::LifecycleReconciler`]): it is validated there, and
//! its stop goes through the shutdown engine. This crate has no lifecycle method of its own.

use virtrigaud_core::model::LifecyclePhase;
use virtrigaud_core::orchestration::lifecycle_phase;
use virtrigaud_core::{Error, PowerState, Result, ResultExt};

use crate::PROVIDER_TYPE;
use crate::client::{Connection, derive};
use crate::id::VmRef;
use crate::state::{printable_status, vmi_phase};
use crate::stop::StopOutcome;
use crate::types::condition_true;

/// What [`crate::KubeVirtProvider::status`] found: core's lifecycle phase plus the KubeVirt
/// views it was derived from.
///
/// The phase is core's [`LifecyclePhase`] (`status.lifecycleState.state` of seed 004, mapped
/// from the power state by [`lifecycle_phase`], as
/// [`virtrigaud_core::orchestration::Orchestrator::status`] does). This type exists only for
/// what core's [`virtrigaud_core::orchestration::VmStatusReport`] cannot carry: the VM's
/// `printableStatus`, the VMI's phase, the VM's `ready` flag and whether the two KubeVirt
/// views agree.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct KubeVirtStatus {
    /// The lifecycle phase (core's; a paused VM is `Running`, see
    /// [`KubeVirtStatus::power_state`]).
    pub phase: LifecyclePhase,
    /// The power state it derives from.
    pub power_state: PowerState,
    /// The VM's `status.printableStatus`.
    pub printable_status: Option<String>,
    /// The VMI's `status.phase` (`None`: no VMI).
    pub vmi_phase: Option<String>,
    /// The VM reports ready.
    pub ready: bool,
    /// `RestartRequired`: a change waits for a power cycle.
    pub needs_power_cycle: bool,
    /// Whether the VM's printable status agrees with the power state (false while
    /// virt-controller catches up with virt-handler).
    pub consistent: bool,
}

impl Connection {
    /// The status query.
    pub(crate) async fn status(&self, r: &VmRef) -> Result<KubeVirtStatus> {
        let (vmo, vmi) = self.read(r, "status").await?;
        let power_state = derive(&vmo, vmi.as_ref(), "status", r)?;
        let printable = printable_status(&vmo).map(str::to_owned);
        let st = vmo.status.as_ref();
        Ok(KubeVirtStatus {
            phase: lifecycle_phase(power_state),
            power_state,
            consistent: consistent(printable.as_deref(), power_state),
            printable_status: printable,
            vmi_phase: vmi.as_ref().map(|v| vmi_phase(v).to_owned()),
            ready: st.and_then(|s| s.ready).unwrap_or(false),
            needs_power_cycle: st.is_some_and(|s| condition_true(&s.conditions, "RestartRequired")),
        })
    }

    /// Stops the VM with an explicit grace period (`None`: the VMI's own; negative: refused).
    pub(crate) async fn stop_with_grace(
        &self,
        r: &VmRef,
        grace_seconds: Option<i64>,
    ) -> Result<StopOutcome> {
        if grace_seconds.is_some_and(|g| g < 0) {
            return Err(Error::invalid_spec("grace period must be >= 0")).ctx(
                PROVIDER_TYPE,
                "stop",
                &r.to_string(),
            );
        }
        self.stop_vm(r, grace_seconds, "stop").await
    }
}

/// Whether the VM's printable status agrees with the power state derived from both views.
fn consistent(printable: Option<&str>, power: PowerState) -> bool {
    match (printable, power) {
        (Some("Running" | "Migrating"), PowerState::Running) => true,
        (Some("Paused"), PowerState::Paused(_)) => true,
        (Some("Stopping" | "Terminating"), PowerState::ShuttingDown) => true,
        (Some("Starting" | "Provisioning" | "WaitingForVolumeBinding"), PowerState::Starting) => {
            true
        }
        (Some(p), PowerState::Off(_)) => {
            !matches!(p, "Running" | "Starting" | "Stopping" | "Paused")
        }
        (None, PowerState::Off(_)) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtrigaud_core::{OffReason, PauseReason};

    #[test]
    fn printable_status_agrees_with_the_power_state() {
        assert!(consistent(Some("Running"), PowerState::Running));
        assert!(consistent(
            Some("Paused"),
            PowerState::Paused(PauseReason::User)
        ));
        assert!(consistent(Some("Terminating"), PowerState::ShuttingDown));
        assert!(consistent(Some("Provisioning"), PowerState::Starting));
        assert!(consistent(
            Some("Stopped"),
            PowerState::Off(OffReason::Unknown)
        ));
        assert!(consistent(None, PowerState::Off(OffReason::Unknown)));
        // virt-controller lagging behind virt-handler
        assert!(!consistent(
            Some("Running"),
            PowerState::Off(OffReason::Unknown)
        ));
        assert!(!consistent(Some("Stopped"), PowerState::Running));
        assert!(!consistent(None, PowerState::Running));
    }

    #[test]
    fn the_phase_is_cores() {
        // one mapping in the workspace: a paused VM is Running, a stopping one Stopping
        assert_eq!(
            lifecycle_phase(PowerState::Paused(PauseReason::User)),
            LifecyclePhase::Running
        );
        assert_eq!(
            lifecycle_phase(PowerState::ShuttingDown),
            LifecyclePhase::Stopping
        );
    }
}
