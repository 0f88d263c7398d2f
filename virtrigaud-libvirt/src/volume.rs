//! Storage: the configured pool and the volumes made in it (qcow2 disks, overlays).

use std::io::Read;

use virt::storage_pool::StoragePool;
use virt::storage_vol::StorageVol;
use virt::stream::Stream;
use virtrigaud_core::{Error, Result};

use crate::PROVIDER_TYPE;
use crate::connection::Session;
use crate::xml::Element;

/// Bytes in a GiB.
pub(crate) const GIB: u64 = 1024 * 1024 * 1024;

/// `value` × `unit`, or an [`InvalidSpec`](virtrigaud_core::ErrorKind::InvalidSpec) error
/// naming `field` when it does not fit in 64 bits (a size in a user's spec).
pub(crate) fn scaled(value: u64, unit: u64, field: &str) -> Result<u64> {
    value
        .checked_mul(unit)
        .ok_or_else(|| Error::invalid_spec(format!("{field}: {value} is too large")))
}

/// The configured storage pool, if any.
pub(crate) fn pool(s: &Session) -> Result<Option<StoragePool>> {
    match &s.cfg().storage_pool {
        None => Ok(None),
        Some(p) => {
            Ok(Some(s.api("storage_pool", p, |c| {
                c.lookup_storage_pool_by_name(p)
            })?))
        }
    }
}

/// The configured storage pool; `op` needs one.
pub(crate) fn pool_required(s: &Session, op: &'static str) -> Result<StoragePool> {
    pool(s)?.ok_or_else(|| {
        Error::invalid_spec(
            "this operation needs a storage pool (LibvirtConfig::with_storage_pool)",
        )
        .context_for(PROVIDER_TYPE, op, None)
    })
}

/// The XML of a volume `name` of `bytes` bytes in `format`.
pub(crate) fn volume_xml(name: &str, bytes: u64, format: &str) -> Element {
    Element::new("volume")
        .child(Element::new("name").text(name))
        .child(
            Element::new("capacity")
                .attr("unit", "bytes")
                .text(bytes.to_string()),
        )
        .child(Element::new("target").child(Element::new("format").attr("type", format)))
}

/// Creates a qcow2 volume `name` of `bytes` bytes in `pool`, an overlay on `backing` if given.
pub(crate) fn create_qcow2(
    s: &Session,
    pool: &StoragePool,
    name: &str,
    bytes: u64,
    backing: Option<&str>,
) -> Result<StorageVol> {
    let mut vol = volume_xml(name, bytes, "qcow2");
    if let Some(b) = backing {
        let fmt = backing_format(s, b);
        vol = vol.child(
            Element::new("backingStore")
                .child(Element::new("path").text(b))
                .child(Element::new("format").attr("type", fmt)),
        );
    }
    s.api("volume_create", name, |_| {
        StorageVol::create_xml(pool, &vol.to_xml(), 0)
    })
}

/// The format of the volume at `path` (`qcow2` when it cannot be read).
fn backing_format(s: &Session, path: &str) -> String {
    s.api_raw(|c| c.lookup_storage_vol_by_path(path))
        .ok()
        .and_then(|v| s.api_raw(|_| v.xml_desc(0)).ok())
        .and_then(|x| Element::parse(&x).ok())
        .and_then(|e| {
            e.path("target/format")
                .and_then(|f| f.get_attr("type"))
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "qcow2".into())
}

/// Chunk size of a volume upload stream.
const CHUNK: usize = 1 << 20;

/// Uploads `size` bytes read from `data` into the new volume `vol` through a libvirt stream
/// (which works over remote URIs too). On failure the stream is aborted and `vol` deleted.
/// `what` names the data in errors (`seed`, `staged image`).
pub(crate) fn fill(
    s: &Session,
    op: &'static str,
    name: &str,
    vol: &StorageVol,
    size: u64,
    mut data: impl Read,
    what: &str,
) -> Result<()> {
    let sent = s.api(op, name, |c| Stream::new(c, 0)).and_then(|stream| {
        let pushed = (|| {
            s.api(op, name, |_| vol.upload(&stream, 0, size, 0))?;
            let mut buf = vec![0u8; CHUNK];
            loop {
                let n = match data.read(&mut buf) {
                    Ok(0) => return Ok(()),
                    Ok(n) => n,
                    Err(e) => return Err(Error::internal(format!("reading the {what}: {e}"))),
                };
                let mut off = 0;
                while off < n {
                    match s.api(op, name, |_| stream.send(&buf[off..n]))? {
                        k if k > 0 => off += k.unsigned_abs(),
                        _ => {
                            return Err(Error::unavailable(format!(
                                "{what} upload stream stalled"
                            )));
                        }
                    }
                }
            }
        })();
        match pushed {
            Ok(()) => s.api(op, name, |_| stream.finish()),
            Err(e) => {
                let _ = s.api_raw(|_| stream.abort());
                Err(e)
            }
        }
    });
    if sent.is_err() {
        let _ = s.api_raw(|_| vol.delete(0));
    }
    sent
}
