//! The graceful-shutdown engine.
//!
//! A shutdown is a pure state machine ([`machine::Machine`]) driven by a thin async loop
//! against any [`crate::Provider`]:
//!
//! 1. read the power state (off already → [`ShutdownOutcome::AlreadyOff`]);
//! 2. run the optional pre-stop hook within its budget;
//! 3. probe the guest agent (small budget) and choose one channel: agent, else ACPI;
//! 4. send the request, each call time-boxed; re-send with doubling intervals while the
//!    guest still runs (an ACPI press sent before the guest listens is lost);
//! 5. wait for "off" — pushed by the provider where it can, else polled with backoff — and
//!    report off only when the provider *reads* off, never "shutting down";
//! 6. at the deadline, power off hard; "already off" then is success.
//!
//! [`ShutdownManager`] keeps exactly one grace period per VM and journals deadlines so a
//! restarted process resumes with the time left. A journalled lease is bound to the run of
//! the VM it was written for ([`crate::Incarnation`]) and expires: a VM restarted in between
//! gets a full, fresh grace. [`fleet::FleetShutdown`] shuts many VMs
//! down in ordered groups under a concurrency cap and one overall deadline.
//!
//! The layout, top to bottom (no module uses one above it):
//!
//! - `manager.rs`: [`ShutdownManager`], its in-flight registry (one task per VM; joins) and
//!   the spawn wrapper that deregisters a finished task and publishes its report;
//! - `driver.rs`: one task — resolves the lease and the watch, builds the machine with its
//!   final deadline, then executes its commands; `context.rs`: what every task needs
//!   (provider, journal, clock, pre-stop executor, events);
//! - `machine/`: the pure machine (`mod.rs`: inputs, commands, the deadline; `phases.rs`:
//!   the transitions of each phase);
//! - `slot.rs` (what a task shares with its handles), `lease.rs`, `journal.rs`,
//!   `file_journal.rs`, `policy.rs`, `outcome.rs`, `events.rs`, `clock.rs` at the bottom.

mod clock;
mod context;
mod driver;
mod events;
mod file_journal;
pub mod fleet;
mod hooks;
mod journal;
mod lease;
pub mod machine;
mod manager;
pub mod metrics;
mod outcome;
mod policy;
mod slot;

pub use clock::{SystemClock, TokioClock, WallClock};
pub use events::{ShutdownEvent, ShutdownEventKind};
pub use file_journal::FileJournal;
pub use fleet::{FleetReport, FleetShutdown};
pub use hooks::{GuestExec, HOOK_OUTPUT_KEPT, HookOutput, PreStopExecutor, PreStopRun};
pub use journal::{MemoryJournal, NoJournal, ShutdownJournal};
pub use lease::{LEASE_EXPIRY_MARGIN, Lease, LeaseScope, StaleLease};
pub use manager::{ShutdownHandle, ShutdownManager, ShutdownManagerBuilder};
pub use outcome::{ForcedReason, ShutdownOutcome, ShutdownReport};
pub use policy::{ChannelPreference, MissingAgent, PausedGuest, PreStopHook, ShutdownPolicy};
