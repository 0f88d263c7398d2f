//! The platform as the fixtures see it, past the provider: a connection of its own to the
//! same libvirt, for reading what libvirt stores (a domain's XML, a volume's bytes) and for
//! arranging faults (a volume in the way of a clone). Plus a small ISO 9660 reader for the
//! NoCloud seeds read back that way.

use std::collections::BTreeMap;

use virt::connect::Connect;
use virt::storage_pool::StoragePool;
use virt::storage_vol::StorageVol;
use virt::stream::Stream;
use virtrigaud_core::cloudinit::NoCloudSeed;
use virtrigaud_core::{Customization, Error, Result};

/// A connection of the fixture's own to `uri`, whose storage pool is `pool`.
pub struct Platform {
    conn: Connect,
    pool: String,
}

fn err(what: &str, e: virt::error::Error) -> Error {
    Error::internal(format!("{what}: {e}"))
}

impl Platform {
    /// Opens `uri` (on the test driver only `test:///default` shares state with the
    /// provider's connection: every `test:///<file>` connection has its own).
    pub fn open(uri: &str, pool: &str) -> Platform {
        virt::error::clear_error_callback();
        Platform {
            conn: Connect::open(Some(uri)).expect("the fixture's own libvirt connection"),
            pool: pool.to_owned(),
        }
    }

    fn pool(&self) -> Result<StoragePool> {
        self.conn
            .lookup_storage_pool_by_name(&self.pool)
            .map_err(|e| err("pool", e))
    }

    /// The stored (inactive) XML of domain `name`.
    pub fn domain_xml(&self, name: &str) -> Result<String> {
        let dom = self
            .conn
            .lookup_domain_by_name(name)
            .map_err(|e| err(name, e))?;
        dom.xml_desc(virt::sys::VIR_DOMAIN_XML_INACTIVE)
            .map_err(|e| err(name, e))
    }

    /// The target devices (`vda`, …) of the `device='disk'` disks of domain `name`, in order.
    pub fn disk_targets(&self, name: &str) -> Result<Vec<String>> {
        Ok(elements(&self.domain_xml(name)?, "disk")
            .into_iter()
            .filter(|d| attr(d, "disk", "device").as_deref().unwrap_or("disk") == "disk")
            .filter_map(|d| attr(&d, "target", "dev"))
            .collect())
    }

    /// The source files of the cdroms of domain `name`, in order.
    pub fn cdrom_sources(&self, name: &str) -> Result<Vec<String>> {
        Ok(elements(&self.domain_xml(name)?, "disk")
            .into_iter()
            .filter(|d| attr(d, "disk", "device").as_deref() == Some("cdrom"))
            .filter_map(|d| attr(&d, "source", "file"))
            .collect())
    }

    /// The names of the pool's volumes that start with `prefix`, sorted.
    pub fn volumes(&self, prefix: &str) -> Result<Vec<String>> {
        let pool = self.pool()?;
        let _ = pool.refresh(0);
        let mut names: Vec<String> = pool
            .list_volumes()
            .map_err(|e| err("list volumes", e))?
            .into_iter()
            .filter(|n| n.starts_with(prefix))
            .collect();
        names.sort();
        Ok(names)
    }

    /// Creates a 1 MiB raw volume `name` in the pool.
    pub fn create_volume(&self, name: &str) -> Result<()> {
        let xml = format!(
            "<volume><name>{name}</name><capacity unit='bytes'>1048576</capacity>\
             <target><format type='raw'/></target></volume>"
        );
        StorageVol::create_xml(&self.pool()?, &xml, 0)
            .map(|_| ())
            .map_err(|e| err(name, e))
    }

    /// Deletes volume `name` from the pool (absent: fine).
    pub fn delete_volume(&self, name: &str) {
        if let Ok(pool) = self.pool()
            && let Ok(v) = pool.lookup_storage_vol_by_name(name)
        {
            let _ = v.delete(0);
        }
    }

    /// The bytes of the volume at `path`, downloaded through a libvirt stream.
    pub fn download(&self, path: &str) -> Result<Vec<u8>> {
        let vol = self
            .conn
            .lookup_storage_vol_by_path(path)
            .map_err(|e| err(path, e))?;
        let size = vol.info().map_err(|e| err(path, e))?.capacity;
        let stream = Stream::new(&self.conn, 0).map_err(|e| err("stream", e))?;
        vol.download(&stream, 0, size, 0)
            .map_err(|e| err(path, e))?;
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match stream.recv(&mut buf) {
                Ok(0) => break,
                Ok(n) if n > 0 => out.extend_from_slice(&buf[..n.unsigned_abs()]),
                Ok(_) => {
                    let _ = stream.abort();
                    return Err(Error::internal(format!("download of {path} stalled")));
                }
                Err(e) => {
                    let _ = stream.abort();
                    return Err(err(path, e));
                }
            }
        }
        stream.finish().map_err(|e| err(path, e))?;
        Ok(out)
    }

    /// Redefines domain `name` with one more device (`<disk …>…</disk>`, …).
    pub fn add_device(&self, name: &str, device: &str) -> Result<()> {
        let xml = self
            .domain_xml(name)?
            .replacen("</devices>", &format!("{device}</devices>"), 1);
        self.conn
            .define_domain_xml(&xml)
            .map(|_| ())
            .map_err(|e| err(name, e))
    }

    /// The MAC addresses of domain `name`'s NICs, in order.
    pub fn macs(&self, name: &str) -> Result<Vec<String>> {
        Ok(elements(&self.domain_xml(name)?, "interface")
            .into_iter()
            .filter_map(|i| attr(&i, "mac", "address"))
            .collect())
    }

    /// The path of the pool's volume `name`.
    pub fn volume_path(&self, name: &str) -> Result<String> {
        self.pool()?
            .lookup_storage_vol_by_name(name)
            .and_then(|v| v.path())
            .map_err(|e| err(name, e))
    }

    /// The files of the seed on domain `vm`'s cdrom (`<vm>-cidata.iso`) as libvirt stores
    /// them: the volume downloaded, its ISO 9660 root directory read.
    pub fn seed_files(&self, vm: &str) -> Result<BTreeMap<String, Vec<u8>>> {
        let own = format!("{vm}-cidata.iso");
        let sources = self.cdrom_sources(vm)?;
        let path = sources
            .iter()
            .find(|f| f.rsplit('/').next() == Some(own.as_str()))
            .ok_or_else(|| {
                Error::internal(format!("{vm} has no cdrom showing {own}: {sources:?}"))
            })?;
        iso_root_files(&self.download(path)?)
    }

    /// The customization the seed on domain `vm`'s cdrom gives the guest, as libvirt stores
    /// it ([`Platform::seed_files`] parsed as NoCloud).
    pub fn seed_customization(&self, vm: &str) -> Result<Customization> {
        let files = self.seed_files(vm)?;
        let text = |name: &str| -> Result<Option<String>> {
            files
                .get(name)
                .map(|b| {
                    String::from_utf8(b.clone())
                        .map_err(|_| Error::internal(format!("{name} is not UTF-8")))
                })
                .transpose()
        };
        let meta = text("meta-data")?
            .ok_or_else(|| Error::internal(format!("the seed has no meta-data: {files:?}")))?;
        let user = text("user-data")?.unwrap_or_default();
        let net = text("network-config")?;
        NoCloudSeed::from_files(&meta, &user, net.as_deref()).customization()
    }
}

/// The `<tag …>…</tag>` (or `<tag …/>`) elements of `xml`, as text (libvirt's XML: no
/// nesting of the same tag).
fn elements(xml: &str, tag: &str) -> Vec<String> {
    let open = format!("<{tag} ");
    let close = format!("</{tag}>");
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(at) = rest.find(&open) {
        let from = &rest[at..];
        let end = match (from.find(&close), from.find("/>")) {
            (Some(c), _) => c + close.len(),
            (None, Some(e)) => e + 2,
            (None, None) => from.len(),
        };
        out.push(from[..end].to_owned());
        rest = &from[end..];
    }
    out
}

/// The value of attribute `name` of the first `<tag …>` in `xml`.
fn attr(xml: &str, tag: &str, name: &str) -> Option<String> {
    let at = xml.find(&format!("<{tag} "))?;
    let el = &xml[at..at + xml[at..].find('>')?];
    for q in ['\'', '"'] {
        let key = format!(" {name}={q}");
        if let Some(i) = el.find(&key) {
            let v = &el[i + key.len()..];
            return Some(v[..v.find(q)?].to_owned());
        }
    }
    None
}

const SECTOR: usize = 2048;

fn le32(b: &[u8], at: usize) -> Result<usize> {
    let s = b
        .get(at..at + 4)
        .ok_or_else(|| Error::internal(format!("ISO truncated at byte {at}")))?;
    Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]) as usize)
}

/// The files in the root directory of an ISO 9660 image, by name: the Joliet names when the
/// image has a Joliet supplementary descriptor, else the primary names lowercased without
/// their `;1` version and trailing dot.
pub fn iso_root_files(img: &[u8]) -> Result<BTreeMap<String, Vec<u8>>> {
    let bad = |why: &str| Error::internal(format!("not an ISO 9660 image: {why}"));
    let mut primary = None;
    let mut joliet = None;
    for sector in 16.. {
        let d = img
            .get(sector * SECTOR..(sector + 1) * SECTOR)
            .ok_or_else(|| bad("no descriptor set terminator"))?;
        if &d[1..6] != b"CD001" {
            return Err(bad("a volume descriptor lacks CD001"));
        }
        match d[0] {
            1 => primary = Some(sector),
            2 if d[88..90] == *b"%/" && matches!(d[90], b'@' | b'C' | b'E') => {
                joliet = Some(sector)
            }
            255 => break,
            _ => {}
        }
    }
    let (sector, is_joliet) = match (joliet, primary) {
        (Some(j), _) => (j, true),
        (None, Some(p)) => (p, false),
        (None, None) => return Err(bad("no primary volume descriptor")),
    };
    // The root directory record sits at byte 156 of the descriptor.
    let root = sector * SECTOR + 156;
    let (extent, size) = (le32(img, root + 2)?, le32(img, root + 10)?);
    let dir = img
        .get(extent * SECTOR..extent * SECTOR + size)
        .ok_or_else(|| bad("root directory out of the image"))?;
    let mut files = BTreeMap::new();
    let mut at = 0;
    while at < dir.len() {
        let len = dir[at] as usize;
        if len == 0 {
            // Records do not cross sectors: go on at the next one.
            at = (at / SECTOR + 1) * SECTOR;
            continue;
        }
        let rec = dir
            .get(at..at + len)
            .ok_or_else(|| bad("directory record out of the directory"))?;
        let flags = rec[25];
        let name_len = rec[32] as usize;
        let raw = rec
            .get(33..33 + name_len)
            .ok_or_else(|| bad("name out of its record"))?;
        at += len;
        if flags & 2 != 0 {
            continue; // `.`, `..` and subdirectories
        }
        let name = if is_joliet {
            let units: Vec<u16> = raw
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16(&units).map_err(|_| bad("a Joliet name is not UCS-2"))?
        } else {
            String::from_utf8_lossy(raw).to_ascii_lowercase()
        };
        let name = name.split(';').next().unwrap_or_default();
        let name = name.strip_suffix('.').unwrap_or(name).to_owned();
        let (fext, fsize) = (le32(rec, 2)?, le32(rec, 10)?);
        let data = img
            .get(fext * SECTOR..fext * SECTOR + fsize)
            .ok_or_else(|| bad("file data out of the image"))?;
        files.insert(name, data.to_vec());
    }
    Ok(files)
}
