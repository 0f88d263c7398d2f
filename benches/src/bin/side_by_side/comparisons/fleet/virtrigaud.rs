//! One virtrigaud fleet run: `FleetShutdown` on the event-driven libvirt provider, wrapped in
//! core's layers — [`InstrumentLayer`] (per-operation [`CallStats`]) and a [`StampLayer`] that
//! stamps, per VM, the instants of the calls the forced-guest breakdown anchors on.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use virtrigaud_core::layers::{Call, CallStats, InstrumentLayer, Layer, LayerExt, Next};
use virtrigaud_core::shutdown::{
    FleetReport, FleetShutdown, ShutdownEvent, ShutdownEventKind, ShutdownManager, ShutdownOutcome,
    ShutdownPolicy,
};
use virtrigaud_core::{PowerState, Provider, VmId};

use super::types::{FleetRun, Forced, GuestRun, Personality};
use crate::lab::Lab;

/// Instants of the provider calls that matter for the breakdown, per VM.
#[derive(Debug, Clone, Default)]
struct CallTimes {
    /// The first `request_shutdown` returned (the request is delivered).
    signalled: Option<Instant>,
    /// The first `power_off` (libvirt `virDomainDestroy`) was called / returned.
    off_start: Option<Instant>,
    off_end: Option<Instant>,
}

/// A layer that stamps, per VM, when the first successful `request_shutdown` returned and when
/// the first `power_off` was issued and returned (wall clock: real guests run on real time).
/// [`CallStats`] keeps per-operation totals only, not per-VM instants, hence this layer.
#[derive(Debug, Clone, Default)]
struct StampLayer {
    calls: Arc<Mutex<HashMap<String, CallTimes>>>,
}

impl StampLayer {
    fn stamp(&self, vm: &str, f: impl FnOnce(&mut CallTimes)) {
        if let Ok(mut m) = self.calls.lock() {
            f(m.entry(vm.to_string()).or_default());
        }
    }

    fn times(&self, vm: &VmId) -> CallTimes {
        self.calls
            .lock()
            .ok()
            .and_then(|m| m.get(vm.as_str()).cloned())
            .unwrap_or_default()
    }
}

impl Layer for StampLayer {
    fn call<'a, T: Send + 'a>(
        &'a self,
        call: Call<'a>,
        next: Next<'a, T>,
    ) -> BoxFuture<'a, virtrigaud_core::Result<T>> {
        Box::pin(async move {
            let start = Instant::now();
            let r = next.run().await;
            let end = Instant::now();
            let vm = call.resource.unwrap_or("");
            match call.operation {
                "power_off" => self.stamp(vm, |c| {
                    if c.off_start.is_none() {
                        c.off_start = Some(start);
                        c.off_end = Some(end);
                    }
                }),
                "request_shutdown" if r.is_ok() => self.stamp(vm, |c| {
                    c.signalled.get_or_insert(end);
                }),
                _ => {}
            }
            r
        })
    }
}

/// Engine-relative instants (`elapsed` since that VM's shutdown started): the deadline (from
/// `Started`), the request delivered (`Signalled`), the hard power-off issue (`Forcing`) and
/// the report (`Finished`).
#[derive(Debug, Default)]
struct Ev {
    deadline: Option<Duration>,
    forcing: Option<Duration>,
    signalled: Option<Duration>,
    finished: Option<Duration>,
}

/// Everything one run observed, for [`guest_run`].
struct Observed<'a> {
    lab: &'a Lab,
    t0: Instant,
    report: FleetReport,
    stamps: StampLayer,
    events: HashMap<VmId, Ev>,
    exits: HashMap<VmId, Instant>,
}

/// One virtrigaud run over `vms` (personalities `kinds`) with grace `grace`.
pub(crate) async fn run(
    lab: &Lab,
    vms: &[VmId],
    kinds: &[Personality],
    grace: Duration,
) -> Result<FleetRun, String> {
    let stamps = StampLayer::default();
    let instrument = InstrumentLayer::new();
    let stats: CallStats = instrument.stats();
    let provider = lab
        .provider()
        .clone()
        .layer(stamps.clone())
        .layer(instrument);
    let m = ShutdownManager::new(Arc::new(provider) as Arc<dyn Provider>);
    let mut rx = m.subscribe();
    let t0 = Instant::now();
    let watchers = watch_ignoring_guests(vms, kinds, t0, grace);
    let report = FleetShutdown::new(&m)
        .concurrency(vms.len())
        .group(vms.to_vec(), ShutdownPolicy::with_grace(grace))
        .run()
        .await;
    let wall = t0.elapsed();
    let events = drain(&mut rx)?;
    // The libvirt `Stopped` event may land a moment after the report.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut exits = HashMap::new();
    for (vm, h) in watchers {
        if let Ok(Some(at)) = tokio::task::block_in_place(|| h.join()) {
            exits.insert(vm, at);
        }
    }
    let mut seen = Observed {
        lab,
        t0,
        report,
        stamps,
        events,
        exits,
    };
    let mut guests = Vec::new();
    for (vm, &p) in vms.iter().zip(kinds) {
        guests.push(guest_run(&mut seen, vm, p).await);
    }
    eprintln!("  provider calls: {:?}", stats.snapshot());
    Ok(FleetRun {
        method: "virtrigaud".into(),
        virtrigaud: true,
        wall,
        guests,
        exit: None,
        solo_destroys: Vec::new(),
        power_off_calls: Some(stats.calls("power_off")),
    })
}

/// Watches the ignoring guests' QEMU processes from shortly before their deadline, so the
/// breakdown can tell QEMU's own exit from libvirt's wait for it.
fn watch_ignoring_guests(
    vms: &[VmId],
    kinds: &[Personality],
    t0: Instant,
    grace: Duration,
) -> HashMap<VmId, std::thread::JoinHandle<Option<Instant>>> {
    vms.iter()
        .zip(kinds)
        .filter(|(_, p)| **p == Personality::Ignore)
        .filter_map(|(vm, _)| {
            let pid = qemu_pid(vm)?;
            let from = t0 + grace.saturating_sub(Duration::from_millis(300));
            let until = t0 + grace + Duration::from_secs(30);
            Some((
                vm.clone(),
                std::thread::spawn(move || watch_exit(pid, from, until)),
            ))
        })
        .collect()
}

/// The engine events received so far, per VM.
fn drain(
    rx: &mut tokio::sync::broadcast::Receiver<ShutdownEvent>,
) -> Result<HashMap<VmId, Ev>, String> {
    let mut ev: HashMap<VmId, Ev> = HashMap::new();
    loop {
        match rx.try_recv() {
            Ok(e) => {
                let x = ev.entry(e.vm.clone()).or_default();
                match e.kind {
                    ShutdownEventKind::Started { remaining, .. } => {
                        x.deadline.get_or_insert(e.elapsed + remaining);
                    }
                    ShutdownEventKind::Signalled { .. } => {
                        x.signalled.get_or_insert(e.elapsed);
                    }
                    ShutdownEventKind::Forcing(_) => {
                        x.forcing.get_or_insert(e.elapsed);
                    }
                    ShutdownEventKind::Finished(_) => x.finished = Some(e.elapsed),
                    _ => {}
                }
            }
            Err(tokio::sync::broadcast::error::TryRecvError::Lagged(k)) => {
                return Err(format!(
                    "fleet: {k} engine events lost (raise the capacity)"
                ));
            }
            Err(_) => return Ok(ev),
        }
    }
}

/// The engine's outcome for `vm`, as the report names it.
fn outcome(report: &FleetReport, vm: &VmId) -> Option<String> {
    let entry = report.entries.iter().find(|e| &e.vm == vm)?;
    Some(match &entry.report {
        Ok(r) => match &r.outcome {
            ShutdownOutcome::Graceful { .. } => "graceful".to_string(),
            ShutdownOutcome::Forced { reason } => format!("forced ({reason:?})"),
            o => o.to_string(),
        },
        Err(err) => format!("not started: {err}"),
    })
}

/// One guest's row: its outcome, stop and report instants, and for a forced guest the breakdown.
async fn guest_run(seen: &mut Observed<'_>, vm: &VmId, p: Personality) -> GuestRun {
    let t0 = seen.t0;
    let outcome = outcome(&seen.report, vm);
    let off = matches!(
        seen.lab.provider().power_state(vm).await,
        Ok(PowerState::Off(_))
    );
    let stop = seen.lab.stop_event_after(vm, t0);
    let calls = seen.stamps.times(vm);
    let e = seen.events.remove(vm).unwrap_or_default();
    // Anchor the engine's clock for this VM on a provider call it stamped right next to an
    // event: `Forcing` is emitted just before `power_off` is called, `Signalled` just after
    // `request_shutdown` returned.
    let started = match (calls.off_start, e.forcing, calls.signalled, e.signalled) {
        (Some(at), Some(el), _, _) | (_, _, Some(at), Some(el)) => at.checked_sub(el),
        _ => None,
    };
    let at = |d: Option<Duration>| started.zip(d).map(|(s, d)| s + d);
    let is_forced = outcome.as_deref().is_some_and(|o| o.starts_with("forced"));
    let forced = match (is_forced, at(e.deadline), at(e.finished)) {
        (true, Some(deadline), Some(fin)) => {
            breakdown(&calls, deadline, fin, seen.exits.get(vm), stop)
        }
        _ => None,
    };
    GuestRun {
        personality: p,
        outcome,
        off,
        stopped: stop.map(|s| s - t0),
        own: calls
            .signalled
            .zip(stop)
            .map(|(s, st)| st.saturating_duration_since(s)),
        reported: at(e.finished).map(|i| i.saturating_duration_since(t0)),
        forced,
    }
}

/// Where a forced guest's time past `deadline` went, up to its report at `fin`.
fn breakdown(
    calls: &CallTimes,
    deadline: Instant,
    fin: Instant,
    exit: Option<&Instant>,
    stop: Option<Instant>,
) -> Option<Forced> {
    let (os, oe) = (calls.off_start?, calls.off_end?);
    Some(Forced {
        issue_after_deadline: os.saturating_duration_since(deadline),
        destroy: oe - os,
        qemu_exit: exit.map(|x| x.saturating_duration_since(os)),
        event_vs_destroy_ms: stop.map(|s| {
            if s >= oe {
                (s - oe).as_secs_f64() * 1e3
            } else {
                -((oe - s).as_secs_f64() * 1e3)
            }
        }),
        report_after_destroy: fin.saturating_duration_since(oe),
        past_deadline: fin.saturating_duration_since(deadline),
    })
}

/// The QEMU process of `vm` on this host (libvirt's pid file), when readable.
fn qemu_pid(vm: &VmId) -> Option<u32> {
    std::fs::read_to_string(format!("/run/libvirt/qemu/{vm}.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Polls `/proc/<pid>/stat` every millisecond from `from` until the process is gone or a zombie
/// (libvirt's `kill(pid, 0)` check also sees a zombie until it is reaped); gives up at `until`.
fn watch_exit(pid: u32, from: Instant, until: Instant) -> Option<Instant> {
    std::thread::sleep(from.saturating_duration_since(Instant::now()));
    let path = format!("/proc/{pid}/stat");
    while Instant::now() < until {
        let gone = match std::fs::read_to_string(&path) {
            Err(_) => true,
            // `pid (comm) S ...`: the state follows the last `)`.
            Ok(st) => st
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        };
        if gone {
            return Some(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    None
}
