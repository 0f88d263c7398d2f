//! The VM reads and calls every operation file needs: read properties, call a method, run a
//! task. Errors carry the operation and the VM.

use std::sync::Arc;

use virtrigaud_core::{Result, VmId};

use crate::client::Client;
use crate::error::{VimError, to_core_error};
use crate::types::{MoRef, Props};
use crate::xml::Element;

/// Maps a client result on `vm` (see [`to_core_error`]).
pub(crate) fn on_vm<T>(
    r: std::result::Result<T, VimError>,
    op: &'static str,
    vm: &VmId,
) -> Result<T> {
    r.map_err(|e| to_core_error(e, op, Some(vm.as_str())))
}

/// Reads `paths` of the VM.
pub(crate) async fn props(
    c: &Client,
    vm: &VmId,
    paths: &[&str],
    op: &'static str,
) -> Result<Props> {
    on_vm(c.retrieve(&MoRef::vm(vm.as_str()), paths).await, op, vm)
}

/// Calls `method` (no arguments, no task) on the VM.
pub(crate) async fn call(c: &Client, vm: &VmId, method: &str, op: &'static str) -> Result<()> {
    on_vm(c.call(method, &MoRef::vm(vm.as_str()), "").await, op, vm).map(|_| ())
}

/// Runs the task `method` on the VM and returns its result.
pub(crate) async fn task(
    c: &Arc<Client>,
    vm: &VmId,
    method: &str,
    body: &str,
    op: &'static str,
) -> Result<Option<Element>> {
    on_vm(
        c.run_task(method, &MoRef::vm(vm.as_str()), body).await,
        op,
        vm,
    )
}
