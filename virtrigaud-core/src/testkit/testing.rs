//! Helpers for tests that need a real backend.
//!
//! Outside the project's test command a missing backend skips a test with a loud message;
//! under it (`VIRTRIGAUD_REQUIRE_BACKENDS=1`) a missing prerequisite is a failure that names
//! what is missing.

/// The environment variable that turns a missing backend prerequisite into a test failure.
pub const REQUIRE_BACKENDS_ENV: &str = "VIRTRIGAUD_REQUIRE_BACKENDS";

/// Whether missing backends must fail tests (the project's test command sets this).
pub fn backends_required() -> bool {
    std::env::var(REQUIRE_BACKENDS_ENV).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Reads the environment variable `var` that points a test at a real backend.
///
/// Returns its value when set. Otherwise prints a loud skip message naming `var` and
/// `backend` and returns `None` — or, when [`backends_required`], panics with that message.
pub fn backend_env(backend: &str, var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            missing_prerequisite(backend, &format!("environment variable {var} is not set"));
            None
        }
    }
}

/// Reports a missing prerequisite: a loud skip, or a panic under the test command.
///
/// # Panics
/// When [`backends_required`] is true.
pub fn missing_prerequisite(backend: &str, what: &str) {
    let msg = format!(
        "SKIPPING real-backend test for {backend}: {what}. Run the README's test command \
         (scripts/test.sh) to set the backend up."
    );
    if backends_required() {
        panic!("{REQUIRE_BACKENDS_ENV} is set and a prerequisite is missing: {msg}");
    }
    eprintln!("\n!!!!!!!! {msg}\n");
}

/// Seed 000's "Advanced Configuration with Lifecycle Hooks" VirtualMachine, verbatim
/// (`powerState: OffGraceful`, `gracefulShutdownTimeout: "120s"`, a `/bin/bash` preStop), for
/// providers' tests of the VM reconciler and pre-stop hooks.
pub const SEED_000_LIFECYCLE_HOOKS: &str =
    include_str!("../../tests/fixtures/seeds/000_02_vm_lifecycle_hooks.yaml");
