//! Pre-stop hooks: the caller decides how a command reaches the guest.
//!
//! A [`PreStopExecutor`] runs a hook's argv and says how its program ended
//! ([`HookOutput`]). Providers whose guests run programs through an agent (start, then poll
//! until it exits) implement [`GuestExec`] instead and get the executor for free, with the
//! polling loop written once here.
//!
//! **Policy.** The engine runs the hook before the guest is signalled, bounded by the hook's
//! budget and by half of the grace left when it starts, so the guest is always asked to shut
//! down with at least half its grace to go. A hook that fails (non-zero exit, no agent,
//! error) or is cut at its bound does not stop the shutdown: it goes on with the rest of the
//! grace, and the report ([`super::ShutdownReport::pre_stop`]) and the `PreStop` event say
//! why. A force, or a grace shortened to zero, cuts a running hook at once.

use std::fmt::{self, Debug};
use std::time::Duration;

use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::vm::VmId;

/// Output of a hook's program kept in a [`HookOutput`], in characters.
pub const HOOK_OUTPUT_KEPT: usize = 4096;

/// How a hook's program ended.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct HookOutput {
    /// Its exit code (`None`: killed by a signal, or the agent did not say).
    pub exit_code: Option<i32>,
    /// The signal that killed it, when the agent says.
    pub signal: Option<i32>,
    /// Its standard output then standard error, at most [`HOOK_OUTPUT_KEPT`] characters.
    pub output: String,
}

impl HookOutput {
    /// A program that exited with `code`.
    pub fn exited(code: i32) -> Self {
        HookOutput {
            exit_code: Some(code),
            ..Default::default()
        }
    }

    /// A program killed by `signal`.
    pub fn killed(signal: i32) -> Self {
        HookOutput {
            signal: Some(signal),
            ..Default::default()
        }
    }

    /// With `output` (cut to [`HOOK_OUTPUT_KEPT`] characters).
    pub fn with_output(mut self, output: impl AsRef<str>) -> Self {
        self.output = output.as_ref().chars().take(HOOK_OUTPUT_KEPT).collect();
        self
    }

    /// Whether the program exited with 0.
    pub fn succeeded(&self) -> bool {
        self.exit_code == Some(0)
    }
}

impl fmt::Display for HookOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.exit_code, self.signal) {
            (Some(c), _) => write!(f, "exited with {c}")?,
            (None, Some(s)) => write!(f, "was killed by signal {s}")?,
            (None, None) => f.write_str("ended without an exit code")?,
        }
        let out = self.output.trim();
        if !out.is_empty() {
            let shown: String = out.chars().take(200).collect();
            write!(f, ": {shown}")?;
        }
        Ok(())
    }
}

/// What became of a shutdown's pre-stop hook, in its [`super::ShutdownReport`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PreStopRun {
    /// How the program ended, when it did.
    pub output: Option<HookOutput>,
    /// Why it did not run to a clean end (no executor, no agent, cut at its bound), if so.
    pub error: Option<String>,
    /// How long the engine waited for it.
    pub elapsed: Duration,
}

impl PreStopRun {
    /// The run of a hook whose executor returned `result` after `elapsed`.
    pub fn from_result(result: &Result<HookOutput>, elapsed: Duration) -> Self {
        match result {
            Ok(o) => PreStopRun {
                output: Some(o.clone()),
                error: None,
                elapsed,
            },
            Err(e) => PreStopRun {
                output: None,
                error: Some(e.to_string()),
                elapsed,
            },
        }
    }

    /// Whether the program ran and exited with 0.
    pub fn is_ok(&self) -> bool {
        self.error.is_none() && self.output.as_ref().is_some_and(HookOutput::succeeded)
    }

    /// The program's exit code, when it exited.
    pub fn exit_code(&self) -> Option<i32> {
        self.output.as_ref().and_then(|o| o.exit_code)
    }
}

impl fmt::Display for PreStopRun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.error, &self.output) {
            (Some(e), _) => write!(f, "failed: {e}"),
            (None, Some(o)) => write!(f, "{o} after {:.1}s", self.elapsed.as_secs_f64()),
            (None, None) => f.write_str("did not run"),
        }
    }
}

/// Runs a pre-stop hook's argv for a VM (through a guest agent exec, SSH, a local process —
/// the embedder's choice). The engine time-boxes it and continues whatever it returns.
///
/// `Ok` means the program ran to its end, whatever its exit code (the engine treats a
/// non-zero code as a failed hook); `Err` means it could not be run or followed.
#[async_trait]
pub trait PreStopExecutor: Send + Sync + Debug {
    /// Runs `argv` (program first, no implicit shell) for `vm`.
    async fn exec(&self, vm: &VmId, argv: &[String]) -> Result<HookOutput>;
}

/// A guest agent that starts a program in the guest and reports on it by id: QEMU's
/// `guest-exec`/`guest-exec-status`, Proxmox's `agent/exec`/`agent/exec-status`, vSphere's
/// `StartProgramInGuest`/`ListProcessesInGuest`. Every `GuestExec` is a
/// [`PreStopExecutor`]: it starts the program and polls every
/// [`GuestExec::poll_interval`] until it has exited.
#[async_trait]
pub trait GuestExec: Send + Sync + Debug {
    /// Starts `program` with `args` in `vm`'s guest; returns its process id.
    async fn spawn(&self, vm: &VmId, program: &str, args: &[String]) -> Result<i64>;

    /// The end of process `pid`, or `None` while it runs.
    async fn status(&self, vm: &VmId, pid: i64) -> Result<Option<HookOutput>>;

    /// How often [`GuestExec::status`] is read.
    fn poll_interval(&self) -> Duration {
        Duration::from_millis(200)
    }
}

#[async_trait]
impl<T: GuestExec> PreStopExecutor for T {
    async fn exec(&self, vm: &VmId, argv: &[String]) -> Result<HookOutput> {
        let Some((program, args)) = argv.split_first() else {
            return Err(Error::invalid_spec("preStop.exec.command: empty")
                .with_operation("pre_stop")
                .with_resource(vm.to_string()));
        };
        let pid = self.spawn(vm, program, args).await?;
        loop {
            if let Some(out) = self.status(vm, pid).await? {
                return Ok(out);
            }
            tokio::time::sleep(self.poll_interval()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[derive(Debug, Default)]
    struct Agent {
        polls: Mutex<u32>,
    }

    #[async_trait]
    impl GuestExec for Agent {
        async fn spawn(&self, _vm: &VmId, program: &str, args: &[String]) -> Result<i64> {
            assert_eq!((program, args), ("/bin/sh", &["-c".to_owned()][..]));
            Ok(7)
        }
        async fn status(&self, _vm: &VmId, pid: i64) -> Result<Option<HookOutput>> {
            assert_eq!(pid, 7);
            let mut n = self.polls.lock().unwrap();
            *n += 1;
            Ok((*n == 3).then(|| HookOutput::exited(2).with_output("disk full\n")))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_guest_exec_is_polled_until_its_program_exits() {
        let agent = Agent::default();
        let vm = VmId::new("web");
        let t0 = tokio::time::Instant::now();
        let out = agent
            .exec(&vm, &["/bin/sh".into(), "-c".into()])
            .await
            .unwrap();
        assert_eq!(out.exit_code, Some(2));
        assert_eq!(out.to_string(), "exited with 2: disk full");
        assert_eq!(t0.elapsed(), Duration::from_millis(400));
        let e = agent.exec(&vm, &[]).await.unwrap_err();
        assert!(e.to_string().contains("preStop.exec.command"), "{e}");
    }

    #[test]
    fn a_run_is_ok_only_when_its_program_exited_with_zero() {
        let d = Duration::from_secs(1);
        assert!(PreStopRun::from_result(&Ok(HookOutput::exited(0)), d).is_ok());
        assert!(!PreStopRun::from_result(&Ok(HookOutput::exited(1)), d).is_ok());
        assert!(!PreStopRun::from_result(&Ok(HookOutput::killed(9)), d).is_ok());
        let r = PreStopRun::from_result(&Err(Error::unavailable("no agent")), d);
        assert!(!r.is_ok() && r.to_string().contains("no agent"), "{r}");
        let long = "x".repeat(HOOK_OUTPUT_KEPT + 10);
        assert_eq!(
            HookOutput::exited(0).with_output(long).output.len(),
            HOOK_OUTPUT_KEPT
        );
    }
}
