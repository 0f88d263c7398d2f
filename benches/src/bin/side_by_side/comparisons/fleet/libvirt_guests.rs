//! One `libvirt-guests` fleet run: Debian's `libvirt-guests.sh stop` over the fleet (it never
//! forces a guest off), with the stop instants from libvirt's own events.

use std::time::{Duration, Instant};

use virtrigaud_core::{PowerState, Provider, VmId};

use super::types::{FleetRun, GuestRun, Personality};
use crate::lab::Lab;

/// One `libvirt-guests.sh stop` run over `vms` with `PARALLEL_SHUTDOWN=par`.
pub(crate) async fn run(
    lab: &Lab,
    vms: &[VmId],
    kinds: &[Personality],
    grace: Duration,
    par: usize,
) -> Result<FleetRun, String> {
    let t0 = Instant::now();
    let vms2 = vms.to_vec();
    let (first, end, _, code) =
        tokio::task::block_in_place(|| lab.libvirt_guests(&vms2, par, grace.as_secs()))?;
    let wall = end - t0;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut guests = Vec::new();
    for (vm, &p) in vms.iter().zip(kinds) {
        let off = matches!(lab.provider().power_state(vm).await, Ok(PowerState::Off(_)));
        let stop = lab.stop_event_after(vm, t0);
        guests.push(GuestRun {
            personality: p,
            outcome: None,
            off,
            stopped: stop.map(|s| s - t0),
            // With PARALLEL_SHUTDOWN=0 a guest's request is sent only when the one before it is
            // off; its own time is not separable here (see the stop column instead).
            own: if par > 0 {
                stop.map(|s| s.saturating_duration_since(first))
            } else {
                None
            },
            reported: None,
            forced: None,
        });
    }
    Ok(FleetRun {
        method: format!("libvirt-guests PARALLEL_SHUTDOWN={par}"),
        virtrigaud: false,
        wall,
        guests,
        exit: Some(code),
        solo_destroys: Vec::new(),
        power_off_calls: None,
    })
}
