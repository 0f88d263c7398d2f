//! UPIDs and a cancellable, bounded task waiter.
//!
//! Every change in PVE runs as a task identified by a UPID
//! (`UPID:node:pid:pstart:starttime:type:id:user:`). [`TaskWaiter::wait`] polls
//! `GET /nodes/{node}/tasks/{upid}/status` (interval growing from the configured first
//! interval to the largest) until the task stops, the deadline passes or the
//! [`CancellationToken`] fires. A failed task comes back as [`ApiError::TaskFailed`] with its
//! exit status and the tail of its log. Cancelling or timing out stops the *wait* only: the
//! task keeps running on PVE.

use std::fmt;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::client::{ApiError, PveClient};
use crate::request::api;
use crate::types::{TaskLogLine, TaskStatus};

/// A parsed UPID.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Upid {
    raw: String,
    node: String,
    starttime: Option<u64>,
    task_type: String,
    id: String,
    user: String,
}

impl Upid {
    /// Parses a UPID; `None` when it is not one.
    pub fn parse(raw: &str) -> Option<Upid> {
        let raw = raw.trim();
        let mut parts = raw.split(':');
        if parts.next()? != "UPID" {
            return None;
        }
        let node = parts.next()?.to_owned();
        let _pid = parts.next()?;
        let _pstart = parts.next()?;
        let starttime = u64::from_str_radix(parts.next()?, 16).ok();
        let task_type = parts.next()?.to_owned();
        let id = parts.next()?.to_owned();
        let user = parts.next().unwrap_or("").to_owned();
        if node.is_empty() {
            return None;
        }
        Some(Upid {
            raw: raw.to_owned(),
            node,
            starttime,
            task_type,
            id,
            user,
        })
    }

    /// The UPID string.
    pub fn as_str(&self) -> &str {
        &self.raw
    }
    /// The node running the task.
    pub fn node(&self) -> &str {
        &self.node
    }
    /// Task type (`qmstart`, `qmshutdown`, `qmclone`, …).
    pub fn task_type(&self) -> &str {
        &self.task_type
    }
    /// The task's object id (the VM id for VM tasks).
    pub fn id(&self) -> &str {
        &self.id
    }
    /// Unix time the task started (the node's clock), when the UPID says.
    pub fn starttime(&self) -> Option<u64> {
        self.starttime
    }
    /// Who started it (`user@realm`, or `user@realm!token` for an API token).
    pub fn user(&self) -> &str {
        &self.user
    }
}

impl fmt::Display for Upid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

/// How a task ended successfully.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TaskOutcome {
    /// The task.
    pub upid: Upid,
    /// `OK` or `WARNINGS: n`.
    pub exitstatus: String,
    /// Status polls made.
    pub polls: u32,
}

/// Waits for tasks: bounded by a deadline, cancellable.
#[derive(Debug, Clone)]
pub struct TaskWaiter {
    client: PveClient,
    first: Duration,
    max: Duration,
    timeout: Duration,
    cancel: Option<CancellationToken>,
}

impl TaskWaiter {
    /// A waiter with the client's configured poll intervals and task timeout.
    pub fn new(client: &PveClient) -> Self {
        let cfg = client.config();
        TaskWaiter {
            client: client.clone(),
            first: cfg.task_poll,
            max: cfg.task_poll_max,
            timeout: cfg.task_timeout,
            cancel: None,
        }
    }

    /// Bounds the wait (from the call to [`TaskWaiter::wait`]).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Stops waiting when `token` is cancelled.
    pub fn cancel_on(mut self, token: CancellationToken) -> Self {
        self.cancel = Some(token);
        self
    }

    /// Waits for the task to stop. `Ok` for `OK` and `WARNINGS`; [`ApiError::TaskFailed`]
    /// (with the log tail) otherwise; [`ApiError::TaskTimeout`] / [`ApiError::Cancelled`] when
    /// the wait ends first.
    pub async fn wait(&self, upid: &Upid) -> Result<TaskOutcome, ApiError> {
        let deadline = Instant::now() + self.timeout;
        let mut interval = self.first;
        let mut polls = 0u32;
        let req = api::task_status(upid.node(), upid.as_str());
        loop {
            let status: TaskStatus = self.cancellable(upid, self.client.call(&req)).await?;
            polls += 1;
            if status.status != "running" {
                let exit = status.exitstatus.unwrap_or_else(|| "unknown".into());
                if exit == "OK" || exit.starts_with("WARNINGS") {
                    return Ok(TaskOutcome {
                        upid: upid.clone(),
                        exitstatus: exit,
                        polls,
                    });
                }
                let log = self.log_tail(upid).await;
                return Err(ApiError::TaskFailed {
                    upid: upid.to_string(),
                    task_type: upid.task_type().to_owned(),
                    exitstatus: exit,
                    log,
                });
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(ApiError::TaskTimeout {
                    upid: upid.to_string(),
                });
            }
            let sleep = interval.min(deadline - now);
            self.cancellable(upid, async {
                tokio::time::sleep(sleep).await;
                Ok(())
            })
            .await?;
            interval = (interval * 3 / 2).min(self.max);
        }
    }

    async fn cancellable<T>(
        &self,
        upid: &Upid,
        fut: impl Future<Output = Result<T, ApiError>>,
    ) -> Result<T, ApiError> {
        match &self.cancel {
            None => fut.await,
            Some(token) => tokio::select! {
                biased;
                () = token.cancelled() => Err(ApiError::Cancelled { upid: upid.to_string() }),
                r = fut => r,
            },
        }
    }

    /// The last lines of the task log, without the final `TASK ERROR` line (best effort).
    pub async fn log_tail(&self, upid: &Upid) -> Vec<String> {
        let req = api::task_log(upid.node(), upid.as_str(), 0, 500);
        match self.client.call::<Vec<TaskLogLine>>(&req).await {
            Ok(lines) => {
                let mut lines: Vec<String> = lines
                    .into_iter()
                    .map(|l| l.t)
                    .filter(|t| !t.starts_with("TASK ERROR") && !t.trim().is_empty())
                    .collect();
                let keep = lines.len().saturating_sub(8);
                lines.drain(..keep);
                lines
            }
            Err(e) => {
                tracing::debug!(%upid, error = %e, "could not read task log");
                Vec::new()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_upids() {
        let u = Upid::parse("UPID:pve1:000003E8:00001B58:6740A1B2:qmshutdown:101:root@pam!ci:");
        let u = u.unwrap_or_else(|| panic!("parse"));
        assert_eq!(u.node(), "pve1");
        assert_eq!(u.task_type(), "qmshutdown");
        assert_eq!(u.id(), "101");
        assert_eq!(u.user(), "root@pam!ci");
        assert_eq!(u.starttime(), Some(0x6740_A1B2));
        assert!(Upid::parse("nope").is_none());
        assert!(Upid::parse("UPID::1").is_none());
    }
}
