//! [`GuestAgentPreStop`]: pre-stop hooks run inside the guest through the QEMU guest agent
//! (`guest-exec`, then `guest-exec-status` until the program exits), for
//! `virtrigaud_core::shutdown::ShutdownManagerBuilder::pre_stop_executor`.
//!
//! The program runs with its arguments and no shell (argv as given); its exit code, signal
//! and output come back in the shutdown report (the engine treats anything but exit 0 as a
//! failed hook and goes on with the shutdown). A guest without a connected agent is
//! `Unavailable`. The shutdown engine bounds the hook by
//! its budget and the grace; a hook cut short is left running in the guest (qemu-ga has no
//! kill), and the shutdown goes on.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Value, json};
use virtrigaud_core::shutdown::{GuestExec, HookOutput};
use virtrigaud_core::{Error, ErrorKind, Result, VmId};

use crate::PROVIDER_TYPE;
use crate::connection::Connection;
use crate::domain::lookup;
use crate::provider::LibvirtProvider;

const OP: &str = "pre_stop";

/// Runs pre-stop hooks inside libvirt guests through their QEMU guest agent.
///
/// ```no_run
/// # fn demo(p: virtrigaud_libvirt::LibvirtProvider) {
/// use std::sync::Arc;
/// use virtrigaud_core::shutdown::ShutdownManager;
/// use virtrigaud_libvirt::GuestAgentPreStop;
/// let manager = ShutdownManager::builder(Arc::new(p.clone()))
///     .pre_stop_executor(Arc::new(GuestAgentPreStop::new(&p)))
///     .build();
/// # let _ = manager; }
/// ```
#[derive(Debug, Clone)]
pub struct GuestAgentPreStop {
    connection: Arc<Connection>,
}

impl GuestAgentPreStop {
    /// An executor using `provider`'s connection.
    pub fn new(provider: &LibvirtProvider) -> Self {
        GuestAgentPreStop {
            connection: provider.connection(),
        }
    }

    async fn agent(&self, vm: &VmId, command: Value) -> Result<Value> {
        let name = vm.as_str().to_owned();
        let cmd = command.to_string();
        let reply = self
            .connection
            .call(OP, move |s| {
                let dom = lookup(s, &name)?;
                s.api(OP, &name, |_| dom.qemu_agent_command(&cmd, 10, 0))
            })
            .await
            .map_err(|e| match e.kind() {
                ErrorKind::NotFound => e,
                _ => Error::unavailable(format!(
                    "the guest agent did not run the pre-stop hook: {}",
                    e.message()
                ))
                .context_for(PROVIDER_TYPE, OP, Some(vm.as_str())),
            })?;
        let v: Value = serde_json::from_str(&reply).map_err(|e| {
            Error::internal(format!("the guest agent's reply is not JSON: {e}")).context_for(
                PROVIDER_TYPE,
                OP,
                Some(vm.as_str()),
            )
        })?;
        Ok(v["return"].clone())
    }
}

#[async_trait]
impl GuestExec for GuestAgentPreStop {
    async fn spawn(&self, vm: &VmId, program: &str, args: &[String]) -> Result<i64> {
        let started = self
            .agent(
                vm,
                json!({"execute": "guest-exec",
                       "arguments": {"path": program, "arg": args, "capture-output": true}}),
            )
            .await?;
        started["pid"].as_i64().ok_or_else(|| {
            Error::internal("guest-exec returned no pid").context_for(
                PROVIDER_TYPE,
                OP,
                Some(vm.as_str()),
            )
        })
    }

    async fn status(&self, vm: &VmId, pid: i64) -> Result<Option<HookOutput>> {
        let st = self
            .agent(
                vm,
                json!({"execute": "guest-exec-status", "arguments": {"pid": pid}}),
            )
            .await?;
        Ok((st["exited"].as_bool() == Some(true)).then(|| finished(&st)))
    }
}

/// How an exited program ended, from its `guest-exec-status`.
fn finished(st: &Value) -> HookOutput {
    let output = ["out-data", "err-data"]
        .iter()
        .filter_map(|k| st[*k].as_str())
        .filter_map(|b| {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.decode(b).ok()
        })
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .collect::<String>();
    let int = |k: &str| st[k].as_i64().and_then(|c| i32::try_from(c).ok());
    let out = match (int("exitcode"), int("signal")) {
        (Some(c), _) => HookOutput::exited(c),
        (None, Some(sig)) => HookOutput::killed(sig),
        (None, None) => HookOutput::default(),
    };
    out.with_output(output)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exit_status_keeps_its_code_and_output() {
        assert!(finished(&json!({"exited": true, "exitcode": 0})).succeeded());
        let out = finished(&json!({"exited": true, "exitcode": 3, "err-data": "bm8gc3BhY2UK"}));
        assert_eq!(out.to_string(), "exited with 3: no space");
        let out = finished(&json!({"exited": true, "signal": 9}));
        assert_eq!((out.exit_code, out.signal), (None, Some(9)));
    }
}
