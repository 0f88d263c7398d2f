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
//! restarted process resumes with the time left. [`fleet::FleetShutdown`] shuts many VMs
//! down in ordered groups under a concurrency cap and one overall deadline.

mod clock;
mod driver;
mod events;
pub mod fleet;
mod hooks;
mod journal;
pub mod machine;
mod manager;
pub mod metrics;
mod outcome;
mod policy;
mod slot;

pub use clock::{SystemClock, TokioClock, WallClock};
pub use events::{ShutdownEvent, ShutdownEventKind};
pub use fleet::{FleetReport, FleetShutdown};
pub use hooks::PreStopExecutor;
pub use journal::{FileJournal, Lease, MemoryJournal, NoJournal, ShutdownJournal};
pub use manager::{ShutdownHandle, ShutdownManager, ShutdownManagerBuilder};
pub use outcome::{ForcedReason, ShutdownOutcome, ShutdownReport};
pub use policy::{ChannelPreference, MissingAgent, PausedGuest, PreStopHook, ShutdownPolicy};
