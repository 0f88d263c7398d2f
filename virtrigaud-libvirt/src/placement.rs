//! Placements on one libvirt connection: the connection is one host, and a datastore is a
//! storage pool of it.
//!
//! `placement.host` must name this host (its hostname, as the inventory reports it);
//! `placement.cluster` is refused (libvirt has no clusters); `placement.datastore` names the
//! pool the VM's volumes go to, instead of the configured one.

use virt::storage_pool::StoragePool;
use virtrigaud_core::{Error, ErrorKind, Placement, Result};

use crate::PROVIDER_TYPE;
use crate::connection::Session;
use crate::volume::pool_required;

/// This connection's host name, as the inventory reports it.
pub(crate) fn host_name(s: &Session) -> String {
    s.api_raw(|c| c.hostname())
        .unwrap_or_else(|_| "localhost".into())
}

/// Checks `placement` against this connection, before anything is made. Errors name the
/// field.
pub(crate) fn check(s: &Session, placement: &Placement, op: &'static str, vm: &str) -> Result<()> {
    let ctx = |e: Error| e.context_for(PROVIDER_TYPE, op, Some(vm));
    if let Some(c) = &placement.cluster {
        return Err(ctx(Error::invalid_spec(format!(
            "placement.cluster: a libvirt connection is one host, not cluster {c:?}"
        ))));
    }
    if let Some(h) = &placement.host {
        let me = host_name(s);
        if *h != me {
            return Err(ctx(Error::not_found(format!(
                "placement.host: this connection is host {me}, not {h}"
            ))));
        }
    }
    if placement.datastore.is_some() {
        pool_for(s, placement, op)?;
    }
    Ok(())
}

/// The pool a placement's datastore names, else the configured pool (which `op` needs).
pub(crate) fn pool_for(
    s: &Session,
    placement: &Placement,
    op: &'static str,
) -> Result<StoragePool> {
    let Some(name) = &placement.datastore else {
        return pool_required(s, op);
    };
    s.api(op, name, |c| c.lookup_storage_pool_by_name(name))
        .map_err(|e| {
            if e.is(ErrorKind::NotFound) {
                Error::not_found(format!("placement.datastore: no storage pool {name:?}"))
                    .context_for(PROVIDER_TYPE, op, Some(name))
            } else {
                e
            }
        })
}
