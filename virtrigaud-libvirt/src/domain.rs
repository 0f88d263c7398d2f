//! Reading one domain: look it up by name, read its power state and its XML.

use virt::domain::Domain;
use virt::storage_vol::StorageVol;
use virtrigaud_core::{Error, ErrorKind, PowerState, Result};

use crate::connection::Session;
use crate::events;
use crate::xml::Element;

/// Looks a domain up by name.
pub(crate) fn lookup(s: &Session, name: &str) -> Result<Domain> {
    s.api("lookup", name, |c| c.lookup_domain_by_name(name))
}

/// The domain's power state.
///
/// `virt` 0.5.0 hides a failed `virDomainGetState` behind an unknown state value
/// (`4294967295`), and libvirt may one day report a state this crate does not know. A fresh
/// lookup by UUID tells the two apart (see [`unreadable_state`]): only a domain that is really
/// gone is NotFound.
pub(crate) fn state_of(s: &Session, dom: &Domain, name: &str) -> Result<PowerState> {
    let (st, reason) = s.api("power_state", name, |_| dom.state())?;
    let raw = match st {
        virt::enumutil::Enum::Unknown(raw) => raw,
        virt::enumutil::Enum::Known(_) => 0,
    };
    match events::state_to_power(st, reason) {
        Some(state) => Ok(state),
        None => {
            let still_defined = s.api("power_state", name, |c| {
                dom.uuid()
                    .and_then(|uuid| c.lookup_domain_by_uuid(uuid))
                    .map(|_| ())
            });
            Err(unreadable_state(name, raw, still_defined))
        }
    }
}

/// What a state read that gave no known state means, given a fresh lookup of the domain:
/// the domain is gone (the lookup says NotFound) → NotFound; the lookup failed otherwise
/// (libvirtd unreachable) → that error; the domain is still there → a retryable
/// [`ErrorKind::Unavailable`], never NotFound, which a shutdown would take as the VM's end.
pub(crate) fn unreadable_state(name: &str, raw: u32, still_defined: Result<()>) -> Error {
    match still_defined {
        Err(e) if e.kind() == ErrorKind::NotFound => {
            Error::not_found(format!("domain {name} vanished"))
                .with_resource(name.to_owned())
                .with_source(e)
        }
        Err(e) => e,
        Ok(()) => Error::unavailable(format!(
            "libvirt reported a domain state this provider does not know ({raw}) for {name}"
        ))
        .temporary()
        .with_resource(name.to_owned()),
    }
}

/// The domain's XML (`flags`: `VIR_DOMAIN_XML_INACTIVE` for the stored configuration).
pub(crate) fn xml_of(s: &Session, dom: &Domain, name: &str, flags: u32) -> Result<Element> {
    Element::parse(&s.api("xml_desc", name, |_| dom.xml_desc(flags))?)
}

/// The capacity in bytes of the disk `target` of `dom` whose volume is `vol`, if any: QEMU's
/// view of the block device while the domain runs, else the volume's, else the block
/// device's. The test driver answers block-info calls with a constant (1 TiB), so there only
/// the volume counts.
pub(crate) fn disk_capacity(
    s: &Session,
    dom: &Domain,
    target: &str,
    vol: Option<&StorageVol>,
    running: bool,
) -> Option<u64> {
    let real_block_info = s.driver() != "TEST";
    let block = || {
        real_block_info
            .then(|| s.api_raw(|_| dom.block_info(target, 0)).ok())
            .flatten()
            .map(|b| b.capacity)
    };
    let volume = || vol.and_then(|v| s.api_raw(|_| v.info()).ok().map(|i| i.capacity));
    if running {
        block().or_else(volume)
    } else {
        volume().or_else(block)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used)]
    use std::sync::Arc;

    use virtrigaud_core::layers::ApiCalls;

    use super::*;
    use crate::config::LibvirtConfig;

    #[test]
    fn an_unknown_state_of_a_defined_domain_is_retryable_not_not_found() {
        let e = unreadable_state("web-1", 9, Ok(()));
        assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
        assert!(e.is_retryable(), "{e}");
        assert_eq!(e.resource(), Some("web-1"));
        assert!(e.message().contains("(9)"), "{e}");
    }

    #[test]
    fn a_failed_lookup_keeps_its_kind() {
        let gone = unreadable_state(
            "web-1",
            u32::MAX,
            Err(Error::not_found(
                "Domain not found: no domain with matching uuid",
            )),
        );
        assert_eq!(gone.kind(), ErrorKind::NotFound, "{gone}");
        let down = unreadable_state(
            "web-1",
            u32::MAX,
            Err(Error::unavailable("Cannot write data: Broken pipe")),
        );
        assert_eq!(down.kind(), ErrorKind::Unavailable, "{down}");
        assert!(down.is_retryable());
    }

    /// On the in-process test driver: the state of a transient domain read through a handle
    /// taken before it was destroyed (it vanished) is NotFound, not Unavailable.
    #[test]
    fn a_vanished_domain_reads_as_not_found_on_the_test_driver() {
        let dir = tempfile::tempdir().expect("tempdir");
        let node = dir.path().join("node.xml");
        std::fs::write(&node, "<node/>").expect("node xml");
        let cfg =
            Arc::new(LibvirtConfig::new(format!("test://{}", node.display())).with_events(false));
        let session = Session::open(cfg, ApiCalls::new()).expect("connect");
        let dom = session
            .api("create", "transient-1", |c| {
                c.create_domain_xml(
                    "<domain type='test'><name>transient-1</name><memory>65536</memory>\
                     <os><type>hvm</type></os></domain>",
                    0,
                )
            })
            .expect("create a transient domain");
        assert_eq!(
            state_of(&session, &dom, "transient-1").expect("state"),
            PowerState::Running
        );
        dom.destroy().expect("destroy");
        let e = state_of(&session, &dom, "transient-1").expect_err("vanished");
        assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    }
}
