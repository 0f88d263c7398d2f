//! [`GuestAgentPreStop`]: pre-stop hooks run inside the guest through the QEMU guest agent
//! (`guest-exec`, then `guest-exec-status` until the program exits), for
//! `virtrigaud_core::shutdown::ShutdownManagerBuilder::pre_stop_executor`.
//!
//! The program runs with its arguments and no shell (argv as given); its exit code decides:
//! 0 is success, anything else an error carrying the code and the start of its output. A
//! guest without a connected agent is `Unavailable`. The shutdown engine bounds the hook by
//! its budget and the grace; a hook cut short is left running in the guest (qemu-ga has no
//! kill), and the shutdown goes on.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};
use virtrigaud_core::shutdown::PreStopExecutor;
use virtrigaud_core::{Error, ErrorKind, Result, VmId};

use crate::PROVIDER_TYPE;
use crate::connection::Connection;
use crate::domain::lookup;
use crate::provider::LibvirtProvider;

const OP: &str = "pre_stop";

/// How often the program's status is read.
const POLL: Duration = Duration::from_millis(200);

/// Output kept in an error message, bytes.
const OUTPUT_SHOWN: usize = 512;

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
impl PreStopExecutor for GuestAgentPreStop {
    async fn exec(&self, vm: &VmId, argv: &[String]) -> Result<()> {
        let Some((path, args)) = argv.split_first() else {
            return Err(
                Error::invalid_spec("preStop.exec.command: empty").context_for(
                    PROVIDER_TYPE,
                    OP,
                    Some(vm.as_str()),
                ),
            );
        };
        let started = self
            .agent(
                vm,
                json!({"execute": "guest-exec",
                       "arguments": {"path": path, "arg": args, "capture-output": true}}),
            )
            .await?;
        let Some(pid) = started["pid"].as_i64() else {
            return Err(Error::internal("guest-exec returned no pid").context_for(
                PROVIDER_TYPE,
                OP,
                Some(vm.as_str()),
            ));
        };
        loop {
            let st = self
                .agent(
                    vm,
                    json!({"execute": "guest-exec-status", "arguments": {"pid": pid}}),
                )
                .await?;
            if st["exited"].as_bool() == Some(true) {
                return finished(vm, path, &st);
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// The outcome of an exited program from its `guest-exec-status`.
fn finished(vm: &VmId, path: &str, st: &Value) -> Result<()> {
    let code = st["exitcode"].as_i64();
    if code == Some(0) {
        return Ok(());
    }
    let output = ["out-data", "err-data"]
        .iter()
        .filter_map(|k| st[*k].as_str())
        .filter_map(|b| {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.decode(b).ok()
        })
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .collect::<Vec<_>>()
        .join("");
    let shown: String = output.chars().take(OUTPUT_SHOWN).collect();
    let why = match (code, st["signal"].as_i64()) {
        (Some(c), _) => format!("exited with {c}"),
        (None, Some(sig)) => format!("was killed by signal {sig}"),
        (None, None) => "ended without an exit code".to_owned(),
    };
    Err(Error::new(
        ErrorKind::InvalidState,
        format!("the pre-stop hook {path} {why}: {}", shown.trim()),
    )
    .context_for(PROVIDER_TYPE, OP, Some(vm.as_str())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_non_zero_exit_is_an_error_with_the_output() {
        let vm = VmId::new("web");
        assert!(finished(&vm, "/bin/true", &json!({"exited": true, "exitcode": 0})).is_ok());
        let e = finished(
            &vm,
            "/bin/sh",
            &json!({"exited": true, "exitcode": 3, "err-data": "bm8gc3BhY2UK"}),
        )
        .unwrap_err();
        assert!(e.to_string().contains("exited with 3: no space"), "{e}");
        let e = finished(&vm, "/bin/sh", &json!({"exited": true, "signal": 9})).unwrap_err();
        assert!(e.to_string().contains("signal 9"), "{e}");
    }
}
