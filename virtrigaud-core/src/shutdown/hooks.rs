//! Pre-stop hooks: the caller decides how a command reaches the guest.

use std::fmt::Debug;

use async_trait::async_trait;

use crate::error::Result;
use crate::vm::VmId;

/// Runs a pre-stop hook's argv for a VM (through a guest agent exec, SSH, a local process —
/// the embedder's choice). The engine time-boxes it and continues whatever it returns.
#[async_trait]
pub trait PreStopExecutor: Send + Sync + Debug {
    /// Runs `argv` (program first, no implicit shell) for `vm`.
    async fn exec(&self, vm: &VmId, argv: &[String]) -> Result<()>;
}
