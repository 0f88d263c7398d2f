//! The fleet comparison's numbers: guest personalities and what each run measured.

use std::time::Duration;

/// How a guest reacts to the ACPI power button (`scripts/libvirt/build-guest.sh`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Personality {
    /// `vr.mode=acpi vr.delay=N`: powers off N s after the first button press (N may be 0).
    Acpi { delay_s: u32 },
    /// `vr.mode=ignore`: no button driver, ACPI is ignored; only a hard power-off stops it.
    Ignore,
}

impl Personality {
    /// The kernel command-line words that give a guest this personality.
    pub(crate) fn cmdline(self) -> String {
        match self {
            Personality::Acpi { delay_s } => format!("vr.mode=acpi vr.delay={delay_s}"),
            Personality::Ignore => "vr.mode=ignore".into(),
        }
    }

    /// The report's name for it.
    pub(crate) fn label(self) -> String {
        match self {
            Personality::Acpi { delay_s: 0 } => "ACPI at once".into(),
            Personality::Acpi { delay_s } => format!("ACPI after {delay_s} s"),
            Personality::Ignore => "ignores ACPI".into(),
        }
    }
}

/// The fleet's personalities: every other guest ignores ACPI, the others honour it at once,
/// after 2 s and after 5 s in turn (n = 6: one of each ACPI kind, three ignoring guests).
pub(crate) fn mix(n: usize) -> Vec<Personality> {
    (0..n)
        .map(|i| {
            if i % 2 == 1 {
                Personality::Ignore
            } else {
                Personality::Acpi {
                    delay_s: [0, 2, 5][(i / 2) % 3],
                }
            }
        })
        .collect()
}

/// Where a forced guest's time past its deadline went (all from the same monotonic clock).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Forced {
    /// Engine: deadline → `Forcing` event (the hard power-off is issued right after it).
    pub issue_after_deadline: Duration,
    /// Hypervisor: the `power_off` call (libvirt lookup + `virDomainDestroy`), issue → return.
    pub destroy: Duration,
    /// Destroy issued → the QEMU process exited (gone or a zombie), when watched (local host).
    pub qemu_exit: Option<Duration>,
    /// libvirt's own `Stopped` lifecycle event relative to destroy's return (ms, negative: the
    /// event came first).
    pub event_vs_destroy_ms: Option<f64>,
    /// Engine: destroy returned → outcome reported (one confirming power-state read).
    pub report_after_destroy: Duration,
    /// Deadline → outcome reported.
    pub past_deadline: Duration,
}

/// One guest in one fleet run.
#[derive(Debug, Clone)]
pub(crate) struct GuestRun {
    pub personality: Personality,
    /// virtrigaud's outcome (`None` for libvirt-guests).
    pub outcome: Option<String>,
    /// Off after the method returned.
    pub off: bool,
    /// Fleet start → libvirt's `Stopped` event of this guest.
    pub stopped: Option<Duration>,
    /// The guest's own shutdown time: its ACPI request delivered → libvirt's `Stopped` event.
    pub own: Option<Duration>,
    /// virtrigaud: fleet start → the engine reported this guest's outcome.
    pub reported: Option<Duration>,
    /// virtrigaud, forced guests: the breakdown.
    pub forced: Option<Forced>,
}

/// One fleet run.
#[derive(Debug, Clone)]
pub(crate) struct FleetRun {
    pub method: String,
    pub virtrigaud: bool,
    pub wall: Duration,
    pub guests: Vec<GuestRun>,
    /// libvirt-guests' exit status.
    pub exit: Option<i32>,
    /// libvirt-guests runs: the same `power_off` (destroy) on each guest it left running, one
    /// guest at a time (the cleanup before the next method) — the uncontended destroy time.
    pub solo_destroys: Vec<Duration>,
    /// virtrigaud runs: the `power_off` calls the engine made (the instrument layer's
    /// `CallStats`).
    pub power_off_calls: Option<u64>,
}

impl FleetRun {
    /// The guests of personality `p`.
    pub(crate) fn of(&self, p: Personality) -> impl Iterator<Item = &GuestRun> {
        self.guests.iter().filter(move |g| g.personality == p)
    }

    /// Ignoring guests forced off by virtrigaud.
    pub(crate) fn forced_count(&self) -> usize {
        self.guests.iter().filter(|g| g.forced.is_some()).count()
    }

    /// Guests still running when the method returned.
    pub(crate) fn left_running(&self) -> usize {
        self.guests.iter().filter(|g| !g.off).count()
    }

    /// ACPI guests whose virtrigaud outcome is graceful (or, for libvirt-guests, that are off).
    pub(crate) fn acpi_ok(&self) -> usize {
        self.guests
            .iter()
            .filter(|g| matches!(g.personality, Personality::Acpi { .. }))
            .filter(|g| match &g.outcome {
                Some(o) => o.starts_with("graceful") && g.off,
                None => g.off,
            })
            .count()
    }
}

/// The smoke round: one guest honouring ACPI after 1 s, one ignoring it (grace 3 s),
/// virtrigaud only.
pub(crate) fn smoke_mix() -> Vec<Personality> {
    vec![Personality::Acpi { delay_s: 1 }, Personality::Ignore]
}

/// What section 2 holds.
#[derive(Debug, Clone)]
pub(crate) struct Rows {
    /// Fleet size asked for (the section title).
    pub n: usize,
    /// Grace / `SHUTDOWN_TIMEOUT` of every method.
    pub grace: Duration,
    /// The runs; `None` when not run (no libvirt environment).
    pub runs: Option<Result<Vec<FleetRun>, String>>,
}
