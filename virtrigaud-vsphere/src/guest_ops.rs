//! [`GuestOpsPreStop`]: pre-stop hooks run inside the guest through VMware Tools and the
//! vim25 guest operations (`GuestOperationsManager.processManager`:
//! `StartProgramInGuest`, then `ListProcessesInGuest` until the program has an `endTime`),
//! for `virtrigaud_core::shutdown::ShutdownManagerBuilder::pre_stop_executor`.
//!
//! The request bodies, the argv quoting and the reading of the replies are in
//! `guest_spec.rs`; this file runs the calls and maps their faults.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use secrecy::ExposeSecret;
use tokio::sync::OnceCell;
use virtrigaud_core::shutdown::{GuestExec, HookOutput};
use virtrigaud_core::{Error, ErrorKind, Result, VmId};

use crate::PROVIDER_TYPE;
use crate::client::Client;
use crate::config::GuestCredentials;
use crate::error::{SoapFault, VimError, to_core_error};
use crate::guest_spec::{self, ProcessState};
use crate::provider::VsphereProvider;
use crate::types::MoRef;
use crate::xml::Element;

const OP: &str = "pre_stop";

/// The default [`GuestExec::poll_interval`]: each poll is one `ListProcessesInGuest`, which
/// vCenter relays to the guest's Tools, so it is slower than a local agent's.
pub const GUEST_OPS_POLL_INTERVAL: Duration = Duration::from_millis(500);

/// Runs pre-stop hooks inside vSphere guests through VMware Tools (vim25 guest operations),
/// logging in to the guest OS with [`GuestCredentials`].
///
/// * The program starts with `StartProgramInGuest` (`programPath` = the hook's program,
///   `arguments` = the rest of its argv, each argument quoted for a POSIX shell: on Linux
///   guests Tools runs the command line through `/bin/bash`; an argument is left bare when
///   it holds only `A-Z a-z 0-9 @ % + = : , . / _ -`, otherwise it is single-quoted, an
///   embedded `'` written `'\''`). This quoting is for Linux guests; Windows parses command
///   lines by other rules. A program path holding `"`, `$`, `` ` `` or a control character,
///   or an argument holding a control character other than tab and newline, is
///   `InvalidSpec` before anything is sent.
/// * `ListProcessesInGuest(pids=[pid])` is polled every
///   [`GuestOpsPreStop::with_poll_interval`] ([`GUEST_OPS_POLL_INTERVAL`] by default) until
///   the process has an `endTime`; its `exitCode` is the hook's exit code (an absent one is
///   read as 0, as govmomi writes it). **vSphere returns no output** of a guest program:
///   [`HookOutput::output`] is always empty, and there is no signal either. A process the
///   guest no longer lists (forgotten after about five minutes, or the guest rebooted) is
///   `NotFound`.
/// * Faults: `InvalidGuestLogin` is `Unauthenticated` (the message never holds the
///   password); `GuestOperationsUnavailable` and `ToolsUnavailable` (Tools not running) are
///   `Unavailable`; a server without guest operations (`MethodNotFound`, as vcsim answers,
///   or no `GuestOperationsManager`) is `Unsupported`; the VM powered off is `InvalidState`;
///   other faults map as everywhere in this crate. The shutdown engine records any of them
///   in the report and goes on with the shutdown.
/// * A hook the engine cuts at its bound keeps running in the guest (it is not
///   terminated).
///
/// The password is sent only inside the guest-operation request bodies; it is never logged,
/// it is redacted in `Debug`, and it is removed from any fault message or reply text that
/// would repeat it.
///
/// ```no_run
/// # fn demo(p: virtrigaud_vsphere::VsphereProvider) {
/// use std::sync::Arc;
/// use virtrigaud_core::shutdown::ShutdownManager;
/// use virtrigaud_vsphere::{GuestCredentials, GuestOpsPreStop};
/// let creds = GuestCredentials::new("svc-hooks", std::env::var("GUEST_PASSWORD").unwrap());
/// let manager = ShutdownManager::builder(Arc::new(p.clone()))
///     .pre_stop_executor(Arc::new(GuestOpsPreStop::new(&p, creds)))
///     .build();
/// # let _ = manager; }
/// ```
#[derive(Clone)]
pub struct GuestOpsPreStop {
    client: Arc<Client>,
    credentials: GuestCredentials,
    process_manager: Arc<OnceCell<MoRef>>,
    poll_interval: Duration,
}

impl fmt::Debug for GuestOpsPreStop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuestOpsPreStop")
            .field("endpoint", &self.client.endpoint())
            .field("credentials", &self.credentials)
            .field("poll_interval", &self.poll_interval)
            .finish_non_exhaustive()
    }
}

impl GuestOpsPreStop {
    /// An executor using `provider`'s session, logging in to guests as `credentials`.
    pub fn new(provider: &VsphereProvider, credentials: GuestCredentials) -> Self {
        GuestOpsPreStop {
            client: Arc::clone(provider.client()),
            credentials,
            process_manager: Arc::new(OnceCell::new()),
            poll_interval: GUEST_OPS_POLL_INTERVAL,
        }
    }

    /// Sets how often a running hook is polled (at least 10 ms).
    pub fn with_poll_interval(mut self, every: Duration) -> Self {
        self.poll_interval = every.max(Duration::from_millis(10));
        self
    }

    /// The `GuestProcessManager` (read once from the `GuestOperationsManager`).
    async fn process_manager(&self, vm: &VmId) -> Result<MoRef> {
        self.process_manager
            .get_or_try_init(|| async {
                let unsupported = || {
                    Error::new(
                        ErrorKind::Unsupported,
                        "this vSphere server offers no guest process manager",
                    )
                    .context_for(PROVIDER_TYPE, OP, Some(vm.as_str()))
                };
                let gom = self
                    .client
                    .sc
                    .guest_operations_manager
                    .clone()
                    .ok_or_else(unsupported)?;
                let props = self
                    .client
                    .retrieve(&gom, &["processManager"])
                    .await
                    .map_err(|e| self.error(e, vm))?;
                props
                    .get("processManager")
                    .and_then(MoRef::from_el)
                    .ok_or_else(unsupported)
            })
            .await
            .cloned()
    }

    /// Calls `method` on the process manager.
    async fn call(&self, vm: &VmId, method: &str, body: &str) -> Result<Element> {
        let pm = self.process_manager(vm).await?;
        self.client
            .call(method, &pm, body)
            .await
            .map_err(|e| self.error(e, vm))
    }

    /// Maps a guest-operation failure (see the type's docs), the password scrubbed first.
    fn error(&self, e: VimError, vm: &VmId) -> Error {
        let e = scrub(e, self.credentials.password.expose_secret());
        let kind = match e.fault().map(SoapFault::fault_type) {
            Some("GuestOperationsUnavailable" | "ToolsUnavailable") => ErrorKind::Unavailable,
            Some("MethodNotFound") => ErrorKind::Unsupported,
            _ => return to_core_error(e, OP, Some(vm.as_str())),
        };
        let Some(fault) = e.fault().cloned() else {
            return to_core_error(e, OP, Some(vm.as_str()));
        };
        let what = match kind {
            ErrorKind::Unavailable => "VMware Tools in the guest cannot run programs",
            _ => "this vSphere server does not run programs in guests",
        };
        Error::new(kind, format!("{what}: {fault}"))
            .with_source(fault)
            .context_for(PROVIDER_TYPE, OP, Some(vm.as_str()))
    }

    fn internal(vm: &VmId, msg: impl Into<String>) -> Error {
        Error::internal(msg).context_for(PROVIDER_TYPE, OP, Some(vm.as_str()))
    }
}

/// `e` with every occurrence of `secret` in server-supplied text replaced.
fn scrub(e: VimError, secret: &str) -> VimError {
    if secret.is_empty() {
        return e;
    }
    let clean = |s: &str| s.replace(secret, "<redacted>");
    match e {
        VimError::Fault(f) if f.message().contains(secret) => {
            VimError::Fault(SoapFault::new(f.fault_type(), clean(f.message())))
        }
        VimError::Http(status, body) => VimError::Http(status, clean(&body)),
        VimError::Protocol(m) => VimError::Protocol(clean(&m)),
        other => other,
    }
}

#[async_trait]
impl GuestExec for GuestOpsPreStop {
    /// `StartProgramInGuest`; returns the guest pid.
    async fn spawn(&self, vm: &VmId, program: &str, args: &[String]) -> Result<i64> {
        guest_spec::validate(program, args).map_err(|m| {
            Error::invalid_spec(m).context_for(PROVIDER_TYPE, OP, Some(vm.as_str()))
        })?;
        let body = guest_spec::start_program_body(
            &MoRef::vm(vm.as_str()),
            &self.credentials,
            program,
            args,
        );
        let resp = self.call(vm, "StartProgramInGuest", &body).await?;
        let pid = guest_spec::started_pid(&resp)
            .ok_or_else(|| Self::internal(vm, "StartProgramInGuest returned no pid"))?;
        tracing::debug!(vm = %vm, program, args = args.len(), pid, "pre-stop hook started in the guest");
        Ok(pid)
    }

    /// `ListProcessesInGuest(pids=[pid])`: `None` while the process has no `endTime`.
    async fn status(&self, vm: &VmId, pid: i64) -> Result<Option<HookOutput>> {
        let body = guest_spec::list_processes_body(&MoRef::vm(vm.as_str()), &self.credentials, pid);
        let resp = self.call(vm, "ListProcessesInGuest", &body).await?;
        match guest_spec::process_state(&resp, pid) {
            ProcessState::Running => Ok(None),
            ProcessState::Exited(out) => Ok(Some(out)),
            ProcessState::Gone => Err(Error::not_found(format!(
                "the guest no longer lists process {pid} (vSphere forgets an exited program \
                 after about five minutes, and all of them when the guest reboots)"
            ))
            .context_for(PROVIDER_TYPE, OP, Some(vm.as_str()))),
        }
    }

    fn poll_interval(&self) -> Duration {
        self.poll_interval
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_scrubbed_from_server_text() {
        let f = scrub(
            VimError::Fault(SoapFault::new(
                "InvalidGuestLogin",
                "bad login hunter2 for root",
            )),
            "hunter2",
        );
        assert_eq!(
            f.fault().map(SoapFault::message),
            Some("bad login <redacted> for root")
        );
        match scrub(VimError::Http(500, "echo hunter2".into()), "hunter2") {
            VimError::Http(500, body) => assert_eq!(body, "echo <redacted>"),
            other => panic!("{other:?}"),
        }
        match scrub(VimError::Protocol("x".into()), "") {
            VimError::Protocol(m) => assert_eq!(m, "x"),
            other => panic!("{other:?}"),
        }
    }
}
