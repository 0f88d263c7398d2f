//! Helpers shared by the example binaries: the provider from `--provider-url` (default: the
//! embedded simulator, which each example scripts itself), the VM named by `--vm`, the tokio
//! runtime, tracing from `RUST_LOG`, durations on the command line, progress bars, and the
//! words the examples print for the library's values (never Rust's `Debug` spelling).
//!
//! Providers other than the simulator need the examples' feature of the same name
//! (`libvirt`, `vsphere`, `proxmox`, `kubevirt`, or `full`); credentials come from the
//! `VIRTRIGAUD_*` environment variables documented in the `virtrigaud` crate.

use std::fmt::Display;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use virtrigaud::{ConnectOptions, ListOptions, ProviderKind, ProviderUrl};
use virtrigaud_core::orchestration::{PlanMode, ResourceChange, SupervisorPhase};
use virtrigaud_core::sim::Simulator;
use virtrigaud_core::vmset::RemovalReason;
use virtrigaud_core::{AgentStatus, Error, Provider, VmId};

/// The default of `--provider-url`: the embedded simulator.
pub const DEFAULT_PROVIDER_URL: &str = "sim://";

/// What `--provider-url` named.
#[derive(Debug)]
pub enum Backend {
    /// The embedded simulator, for the example to script (guests, hosts, faults).
    Simulator(Simulator),
    /// A connected provider.
    Remote(Arc<dyn Provider>),
}

/// Whether `url` selects the simulator (`false` for a URL that does not parse: connecting
/// reports that).
pub fn is_simulator(url: &str) -> bool {
    ProviderUrl::parse(url).is_ok_and(|u| u.kind() == ProviderKind::Simulator)
}

/// Connects to `url` through the `virtrigaud` crate (credentials from the environment).
pub async fn backend(url: &str) -> Result<Backend, Error> {
    let parsed = ProviderUrl::parse(url)?;
    if parsed.kind() == ProviderKind::Simulator {
        return Ok(Backend::Simulator(virtrigaud::simulator(url)?));
    }
    let provider = virtrigaud::connect_parsed(&parsed, &ConnectOptions::default()).await?;
    Ok(Backend::Remote(provider))
}

/// The provider and VM an example works on: on the simulator the VM `on_simulator` makes, on
/// any other provider the one `--vm` names.
pub async fn target(
    provider_url: &str,
    vm: Option<&str>,
    on_simulator: impl FnOnce(&Simulator) -> VmId,
) -> Result<(Arc<dyn Provider>, VmId), Error> {
    match backend(provider_url).await? {
        Backend::Simulator(sim) => {
            let id = on_simulator(&sim);
            Ok((Arc::new(sim), id))
        }
        Backend::Remote(provider) => {
            let vm = vm.ok_or_else(|| {
                Error::invalid_spec("--vm: name the VM to work on (required with --provider-url)")
            })?;
            let id = resolve_vm(provider.as_ref(), vm).await?;
            Ok((provider, id))
        }
    }
}

/// The id of the VM named `name` (by its name in a listing, else `name` taken as an id:
/// `pve1/101`, `vm-42`, `namespace/name`).
pub async fn resolve_vm(provider: &dyn Provider, name: &str) -> Result<VmId, Error> {
    if let Ok(vms) = provider.list_vms(&ListOptions::default()).await
        && let Some(vm) = vms.into_iter().find(|v| v.name == name)
    {
        return Ok(vm.id);
    }
    Ok(VmId::new(name))
}

/// A current-thread runtime with every driver; with `fast` on the simulator its clock is
/// paused (simulated time). `--fast` is ignored, with a note, for real providers: their
/// network timeouts must run in real time.
pub fn runtime(fast: bool, provider_url: &str) -> std::io::Result<tokio::runtime::Runtime> {
    let paused = fast && is_simulator(provider_url);
    if fast && !paused {
        eprintln!("note: --fast applies to the simulator only; running in real time");
    }
    local_runtime(paused)
}

/// A current-thread runtime with every driver, its clock paused (simulated time) when
/// `paused`: for an example that needs no provider.
pub fn local_runtime(paused: bool) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_current_thread();
    builder.enable_all().start_paused(paused);
    builder.build()
}

/// Logs to stderr as `RUST_LOG` says (default: warnings and errors), coloured on a terminal.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only on a terminal: a log file stays plain text.
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

// ---------------------------------------------------------------------------------------------
// Durations on the command line and in output.

/// Parses a duration flag: a humantime duration (`90s`, `2m`, `1m 30s`, `500ms`) or a plain
/// integer, taken as seconds (`60`). For clap's `value_parser`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(text)
        .map_err(|e| format!("{e} (a duration such as 60s, 2m, 1m 30s, or whole seconds)"))
}

/// A duration as a person reads it: `0s`, `1.5s`, `2s`, `1m 30s`.
pub fn duration(d: Duration) -> String {
    if d < Duration::from_secs(60) {
        let s = format!("{:.1}", d.as_secs_f64());
        format!("{}s", s.strip_suffix(".0").unwrap_or(&s))
    } else {
        // Whole seconds: humantime would add the milliseconds and nanoseconds.
        humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
    }
}

/// [`duration`], or `none`.
pub fn optional_duration(d: Option<Duration>) -> String {
    d.map_or_else(|| "none".to_owned(), duration)
}

// ---------------------------------------------------------------------------------------------
// Words for the library's values.

/// The name a value has in the YAML objects (serde's spelling: `Ready`, `RerunOnFailure`),
/// for the enums of the model that have no `Display`.
pub fn serde_name<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => "?".to_owned(),
    }
}

/// [`serde_name`] of a phase, or `none` when it has none yet.
pub fn phase_name<T: Serialize>(phase: Option<T>) -> String {
    phase.map_or_else(|| "none".to_owned(), |p| serde_name(&p))
}

/// `yes` or `no`.
pub fn yes_no(value: bool) -> &'static str {
    if value { "yes" } else { "no" }
}

/// The items joined with `, `, or `none`.
pub fn list<T: Display>(items: &[T]) -> String {
    if items.is_empty() {
        return "none".to_owned();
    }
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// What a supervisor is doing: `watching`, `backing off after 2 failed boots`, …
pub fn supervisor_phase(phase: SupervisorPhase) -> String {
    match phase {
        SupervisorPhase::Watching => "watching".to_owned(),
        SupervisorPhase::BackingOff { failed_boots } => {
            format!("backing off after {failed_boots} failed boot(s)")
        }
        SupervisorPhase::StoppedByUser => "stopped by the user (no restarts)".to_owned(),
        SupervisorPhase::GaveUp => "gave up restarting".to_owned(),
        _ => "busy".to_owned(),
    }
}

/// How a reconfiguration will be applied: `online`, `graceful power cycle (downtime up to
/// 1m 30s)`, …
pub fn plan_mode(mode: &PlanMode) -> String {
    match mode {
        PlanMode::NoChange => "nothing to change".to_owned(),
        PlanMode::Online => "online (no power cycle)".to_owned(),
        PlanMode::GracefulPowerCycle { expected_downtime } => format!(
            "graceful power cycle (downtime up to {})",
            duration(*expected_downtime)
        ),
        PlanMode::Impossible { reasons } => format!("impossible: {}", reasons.join("; ")),
        _ => "another way".to_owned(),
    }
}

/// A requested change: `cpu 4, memory 16384 MiB, disk root to 50 GiB (Online)`.
pub fn resource_change(change: &ResourceChange) -> String {
    let mut parts = Vec::new();
    if let Some(cpu) = change.cpu {
        parts.push(format!("cpu {cpu}"));
    }
    if let Some(mib) = change.memory_mib {
        parts.push(format!("memory {mib} MiB"));
    }
    for d in &change.disks {
        parts.push(format!(
            "disk {} to {} GiB ({})",
            d.name,
            d.size_gib,
            serde_name(&d.expand_policy)
        ));
    }
    if parts.is_empty() {
        return "nothing".to_owned();
    }
    parts.join(", ")
}

/// Why a set member is removed: `outdated template` or `excess replica`.
pub fn removal_reason(reason: RemovalReason) -> &'static str {
    match reason {
        RemovalReason::Outdated => "outdated template",
        RemovalReason::Excess => "excess replica",
        _ => "removed",
    }
}

/// What a probe of the guest agent found: `connected`, `not connected`, `unknown`, or
/// `no answer` (the probe failed or timed out).
pub fn agent_status(status: Option<AgentStatus>) -> &'static str {
    match status {
        None => "no answer",
        Some(AgentStatus::Connected) => "connected",
        Some(AgentStatus::NotConnected) => "not connected",
        Some(_) => "unknown",
    }
}

// ---------------------------------------------------------------------------------------------
// Progress.

/// A progress bar of `len` steps on stdout, drawn with `template` (indicatif's syntax, e.g.
/// `{bar:30} {pos}/{len} {msg}`). It hides itself when stdout is not a terminal: print what
/// must stay in the output with [`print_above`], never only through the bar.
pub fn progress_bar(len: u64, template: &str) -> ProgressBar {
    let style = ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stdout()).with_style(style)
}

/// Prints `line` to stdout above `bar` (which is redrawn below it): the line is in the output
/// whether the bar is drawn or hidden.
pub fn print_above(bar: &ProgressBar, line: impl Display) {
    bar.suspend(|| println!("{line}"));
}

/// Finishes `bar` with `message`, leaving it on the screen; the next line printed starts on
/// a line of its own, as without a bar.
pub fn finish_bar(bar: &ProgressBar, message: impl Into<std::borrow::Cow<'static, str>>) {
    bar.finish_with_message(message);
    if !bar.is_hidden() {
        // The bar leaves the cursor at the end of its line.
        println!();
    }
}

/// The progress bar of the current phase of a run, shared with the task that prints its
/// events: lines go above the bar while there is one, straight to stdout otherwise.
#[derive(Debug, Clone, Default)]
pub struct CurrentBar(Arc<Mutex<Option<ProgressBar>>>);

impl CurrentBar {
    fn slot(&self) -> MutexGuard<'_, Option<ProgressBar>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes `bar` the current bar.
    pub fn start(&self, bar: ProgressBar) {
        *self.slot() = Some(bar);
    }

    /// Finishes the current bar (see [`finish_bar`]); there is none until the next
    /// [`CurrentBar::start`].
    pub fn finish(&self, message: impl Into<std::borrow::Cow<'static, str>>) {
        if let Some(bar) = self.slot().take() {
            finish_bar(&bar, message);
        }
    }

    /// Calls `f` with the current bar, if there is one.
    pub fn update(&self, f: impl FnOnce(&ProgressBar)) {
        if let Some(bar) = self.slot().as_ref() {
            f(bar);
        }
    }

    /// Whether there is a current bar and it is drawn (stdout is a terminal).
    pub fn is_drawn(&self) -> bool {
        self.slot().as_ref().is_some_and(|b| !b.is_hidden())
    }

    /// Prints `line` above the current bar, or just prints it.
    pub fn print(&self, line: impl Display) {
        match self.slot().as_ref() {
            Some(bar) => print_above(bar, line),
            None => println!("{line}"),
        }
    }
}
