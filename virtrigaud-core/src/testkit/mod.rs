//! Test support for provider crates, behind the `testkit` feature (not part of the stable API).
//!
//! - [`conformance`]: the shared checks every provider runs against its real server.
//! - [`testing`]: environment plumbing for real-server tests (a missing backend is a loud skip,
//!   or a failure under the project's test command).
//!
//! Enable it in a provider's `[dev-dependencies]`:
//! `virtrigaud-core = { version = "…", features = ["testkit"] }`.

pub mod conformance;
pub mod testing;
