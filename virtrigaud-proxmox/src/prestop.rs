//! [`GuestAgentPreStop`]: pre-stop hooks run inside the guest through PVE's guest-agent API
//! (`agent/exec`, then `agent/exec-status` until the program has exited), for
//! `virtrigaud_core::shutdown::ShutdownManagerBuilder::pre_stop_executor`.
//!
//! The program runs with its arguments and no shell (argv as given, one `command` array
//! element each); its exit code, signal and output come back in the shutdown report (the
//! engine treats anything but exit 0 as a failed hook and goes on with the shutdown). A VM
//! without a running agent is a retryable `Unavailable`. The shutdown engine bounds the hook
//! by its budget and the grace; a hook cut short is left running in the guest (neither PVE
//! nor qemu-guest-agent can kill it), and the shutdown goes on.

use std::time::Duration;

use async_trait::async_trait;
use virtrigaud_core::shutdown::{GuestExec, HOOK_OUTPUT_KEPT, HookOutput};
use virtrigaud_core::{Error, Result, VmId};

use crate::PROVIDER_TYPE;
use crate::client::{ApiError, PveClient};
use crate::error::{agent_error, to_core_error};
use crate::id::VmRef;
use crate::provider::ProxmoxProvider;
use crate::request::api;
use crate::types::AgentExecStatus;

const OP: &str = "pre_stop";

/// How often `agent/exec-status` is read while a hook runs (each read is one API call,
/// which PVE turns into one `guest-exec-status` to the agent).
const POLL: Duration = Duration::from_millis(250);

/// Runs pre-stop hooks inside Proxmox guests through their QEMU guest agent
/// (`POST …/agent/exec`, `GET …/agent/exec-status`).
///
/// Needs the agent enabled in the VM's config (`agent: 1`) and running in the guest, and
/// the privilege PVE checks for `agent/exec` on the VM (`VM.GuestAgent.Unrestricted` in the
/// current API, `VM.Monitor` on releases before the `VM.GuestAgent.*` privileges).
///
/// ```no_run
/// # fn demo(p: std::sync::Arc<virtrigaud_proxmox::ProxmoxProvider>) {
/// use std::sync::Arc;
/// use virtrigaud_core::shutdown::ShutdownManager;
/// use virtrigaud_proxmox::GuestAgentPreStop;
/// let manager = ShutdownManager::builder(p.clone())
///     .pre_stop_executor(Arc::new(GuestAgentPreStop::new(&p)))
///     .build();
/// # let _ = manager; }
/// ```
#[derive(Debug, Clone)]
pub struct GuestAgentPreStop {
    client: PveClient,
}

impl GuestAgentPreStop {
    /// An executor using `provider`'s client (its session and request counter).
    pub fn new(provider: &ProxmoxProvider) -> Self {
        Self::with_client(provider.client().clone())
    }

    /// An executor over `client`.
    pub fn with_client(client: PveClient) -> Self {
        GuestAgentPreStop { client }
    }
}

#[async_trait]
impl GuestExec for GuestAgentPreStop {
    async fn spawn(&self, vm: &VmId, program: &str, args: &[String]) -> Result<i64> {
        let r = VmRef::parse_for(vm, OP)?;
        let argv: Vec<String> = std::iter::once(program.to_owned())
            .chain(args.iter().cloned())
            .collect();
        spawn(&self.client, &r, &argv).await
    }

    async fn status(&self, vm: &VmId, pid: i64) -> Result<Option<HookOutput>> {
        let r = VmRef::parse_for(vm, OP)?;
        let st = exec_status(&self.client, &r, pid).await?;
        Ok(st.exited.then(|| finished(&st)))
    }

    fn poll_interval(&self) -> Duration {
        POLL
    }
}

/// `agent/exec` of `argv`; the pid PVE answers.
async fn spawn(client: &PveClient, r: &VmRef, argv: &[String]) -> Result<i64> {
    let resource = r.to_string();
    let data = client
        .send(&api::agent_exec(&r.node, r.vmid, argv))
        .await
        .map_err(|e| agent_error(e, OP, Some(&resource), "run the pre-stop hook"))?;
    let pid = match &data["pid"] {
        serde_json::Value::Number(n) => n.as_i64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    pid.ok_or_else(|| {
        Error::internal(format!("agent/exec answered without a pid: {data}")).context_for(
            PROVIDER_TYPE,
            OP,
            Some(&resource),
        )
    })
}

/// `agent/exec-status` of `pid`.
async fn exec_status(client: &PveClient, r: &VmRef, pid: i64) -> Result<AgentExecStatus> {
    let resource = r.to_string();
    let req = api::agent_exec_status(&r.node, r.vmid, pid);
    match client.call::<AgentExecStatus>(&req).await {
        Ok(st) => Ok(st),
        Err(e @ ApiError::Decode(_)) => Err(to_core_error(e, OP, Some(&resource))),
        Err(e) => Err(agent_error(
            e,
            OP,
            Some(&resource),
            "follow the pre-stop hook",
        )),
    }
}

/// What a stream cut by the agent is marked with in the hook's output.
fn cut_mark(stream: &str) -> String {
    format!("[{stream} cut by the guest agent]\n")
}

/// How an exited program ended, from its `agent/exec-status`.
fn finished(st: &AgentExecStatus) -> HookOutput {
    let int = |v: Option<i64>| v.and_then(|c| i32::try_from(c).ok());
    let out = match (int(st.exitcode), int(st.signal)) {
        (Some(c), _) => HookOutput::exited(c),
        (None, Some(sig)) => HookOutput::killed(sig),
        (None, None) => HookOutput::default(),
    };
    out.with_output(output_of(st))
}

/// Standard output then standard error, at most [`HOOK_OUTPUT_KEPT`] characters. A stream
/// the agent cut ends with a mark saying so, and the marks are always kept: when both
/// streams do not fit, standard output is shortened first (standard error usually says why
/// a hook failed).
fn output_of(st: &AgentExecStatus) -> String {
    let streams = [
        (
            st.out_data.as_deref().unwrap_or(""),
            st.out_truncated,
            "stdout",
        ),
        (
            st.err_data.as_deref().unwrap_or(""),
            st.err_truncated,
            "stderr",
        ),
    ];
    // Room for each mark and the line break that may go before it.
    let reserved: usize = streams
        .iter()
        .filter(|(_, cut, _)| *cut)
        .map(|(_, _, name)| cut_mark(name).chars().count() + 1)
        .sum();
    let room = HOOK_OUTPUT_KEPT.saturating_sub(reserved);
    let [(out, out_cut, _), (err, err_cut, _)] = streams;
    let err: String = err.chars().take(room).collect();
    let out: String = out.chars().take(room - err.chars().count()).collect();
    let section = |mut text: String, cut: bool, name: &str| {
        if cut {
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str(&cut_mark(name));
        }
        text
    };
    section(out, out_cut, "stdout") + &section(err, err_cut, "stderr")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn status(v: serde_json::Value) -> AgentExecStatus {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn an_exit_status_keeps_its_code_signal_and_output() {
        let st = status(json!({"exited": 1, "exitcode": 0, "out-data": "saved\n"}));
        assert!(st.exited);
        let out = finished(&st);
        assert!(out.succeeded());
        assert_eq!(out.output, "saved\n");
        // PVE hands the agent's booleans through as JSON booleans; numbers may be strings.
        let out = finished(&status(json!({"exited": true, "exitcode": "3",
                                           "out-data": "", "err-data": "no space\n"})));
        assert_eq!(out.to_string(), "exited with 3: no space");
        let out = finished(&status(json!({"exited": true, "signal": 9})));
        assert_eq!((out.exit_code, out.signal), (None, Some(9)));
        assert_eq!(out.to_string(), "was killed by signal 9");
        let out = finished(&status(json!({"exited": true})));
        assert_eq!((out.exit_code, out.signal), (None, None));
        // Out of range for an exit code: not made up.
        let out = finished(&status(json!({"exited": true, "exitcode": 1_i64 << 40})));
        assert_eq!(out.exit_code, None);
        assert!(!status(json!({"exited": 0})).exited);
        assert!(!status(json!({})).exited);
    }

    #[test]
    fn output_the_agent_cut_is_marked_and_the_marks_survive_the_cut() {
        let st = status(json!({"exited": true, "exitcode": 0,
                               "out-data": "partial", "out-truncated": true,
                               "err-data": "warning\n"}));
        assert_eq!(
            finished(&st).output,
            "partial\n[stdout cut by the guest agent]\nwarning\n"
        );
        let long = "x".repeat(HOOK_OUTPUT_KEPT * 2);
        let st = status(json!({"exited": true, "exitcode": 1,
                               "out-data": long, "out-truncated": 1,
                               "err-data": "disk full\n", "err-truncated": true}));
        let out = finished(&st).output;
        let kept = out.chars().count();
        assert!(
            (HOOK_OUTPUT_KEPT - 2..=HOOK_OUTPUT_KEPT).contains(&kept),
            "{kept}"
        );
        assert!(
            out.ends_with(
                "x\n[stdout cut by the guest agent]\ndisk full\n[stderr cut by the guest agent]\n"
            ),
            "{}",
            &out[out.len() - 120..]
        );
        // Uncut output is kept as it is (then cut at HOOK_OUTPUT_KEPT by HookOutput).
        let st = status(json!({"exited": true, "exitcode": 0, "out-data": "a", "err-data": "b"}));
        assert_eq!(finished(&st).output, "ab");
        let huge = "é".repeat(HOOK_OUTPUT_KEPT + 5);
        let st = status(json!({"exited": true, "exitcode": 0, "err-data": huge}));
        assert_eq!(finished(&st).output.chars().count(), HOOK_OUTPUT_KEPT);
    }

    #[test]
    fn the_exec_request_sends_the_argv_as_an_array() {
        let argv = ["/bin/sh".to_owned(), "-c".into(), "echo a b".into()];
        let r = api::agent_exec("pve1", 101, &argv);
        assert_eq!(r.path(), "/nodes/pve1/qemu/101/agent/exec");
        let sent: Vec<(&str, &str)> = r
            .params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            sent,
            [
                ("command", "/bin/sh"),
                ("command", "-c"),
                ("command", "echo a b")
            ]
        );
        let r = api::agent_exec_status("pve1", 101, 1001);
        assert_eq!(r.path(), "/nodes/pve1/qemu/101/agent/exec-status");
        assert_eq!(r.get("pid"), Some("1001"));
    }
}
