//! vim25 tasks: call a `*_Task` method and wait for its `info.state` (one read when it is
//! already done, otherwise pushed through a private property collector).

use std::sync::Arc;

use crate::client::Client;
use crate::error::{SoapFault, VimError};
use crate::types::{MoRef, Props};
use crate::xml::Element;

impl Client {
    /// Waits for a task to finish: one read when it is already done (vcsim, fast tasks),
    /// otherwise a push-based wait on `info.state`. Returns `info.result` on success.
    pub(crate) async fn wait_task(
        self: &Arc<Self>,
        task: &MoRef,
    ) -> Result<Option<Element>, VimError> {
        let paths = ["info.state", "info.error", "info.result"];
        let props = self.retrieve(task, &paths).await?;
        if let Some(r) = task_outcome(&props) {
            return r;
        }
        let mut w = self.waiter(task, &paths).await?;
        let mut current = props;
        let out = loop {
            match w.next().await {
                Ok(Some(groups)) => {
                    groups.into_iter().for_each(|g| current.apply(g));
                    if let Some(r) = task_outcome(&current) {
                        break r;
                    }
                }
                Ok(None) => continue,
                Err(e) => break Err(e),
            }
        };
        w.destroy().await;
        out
    }

    /// Calls a `*_Task` method and waits for the task.
    pub(crate) async fn run_task(
        self: &Arc<Self>,
        method: &str,
        this: &MoRef,
        body: &str,
    ) -> Result<Option<Element>, VimError> {
        let resp = self.call(method, this, body).await?;
        let task = resp
            .child("returnval")
            .and_then(MoRef::from_el)
            .ok_or_else(|| VimError::Protocol(format!("{method} returned no task")))?;
        self.wait_task(&task).await
    }
}

/// The outcome of a finished task (`None` while it is queued or running).
fn task_outcome(props: &Props) -> Option<Result<Option<Element>, VimError>> {
    match props.str("info.state")? {
        "success" => Some(Ok(props.get("info.result").cloned())),
        "error" => {
            let f = props
                .get("info.error")
                .map(SoapFault::from_localized)
                .unwrap_or_else(|| SoapFault::new("UnknownFault", "task failed"));
            Some(Err(VimError::Fault(f)))
        }
        _ => None,
    }
}
