//! Reading an OVA: the tar archive's entries ([`read_index`]), its OVF descriptor (the
//! first entry, a `.ovf` file, as the OVF specification requires) and the checks the
//! descriptor must pass before it is sent to vSphere ([`check_descriptor`]).
//!
//! The archive is read from a local (staged, verified) file in bounded steps: 512-byte
//! headers, at most [`MAX_ENTRIES`] entries, a descriptor of at most
//! [`MAX_DESCRIPTOR`] bytes. ustar, pax (`path` records) and GNU long names are understood;
//! anything else that is not a regular file is skipped. Nothing here panics on bad input:
//! every problem is an `InvalidSpec` error that says what is wrong.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use sha2::{Digest, Sha256};
use virtrigaud_core::{Error, Result};

use crate::xml::{self, Element};

/// The most entries an OVA may have.
pub(crate) const MAX_ENTRIES: usize = 10_000;
/// The largest OVF descriptor read (descriptors are a few KiB).
pub(crate) const MAX_DESCRIPTOR: u64 = 4 << 20;
/// The longest entry name (pax and GNU long names included).
const MAX_NAME: u64 = 4096;
const BLOCK: u64 = 512;

fn bad(msg: impl Into<String>) -> Error {
    Error::invalid_spec(format!("the OVA is not usable: {}", msg.into()))
}

/// One regular file of the archive: its name and where its data lies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) name: String,
    pub(crate) offset: u64,
    pub(crate) size: u64,
}

/// The archive's regular files in order, and the SHA-256 of the whole file (lower-case hex).
#[derive(Debug, Clone)]
pub(crate) struct Index {
    pub(crate) entries: Vec<Entry>,
    pub(crate) sha256: String,
    pub(crate) size: u64,
}

impl Index {
    /// The entry named `name` (an OVF `href`, relative to the archive's root).
    pub(crate) fn find(&self, name: &str) -> Option<&Entry> {
        let name = name.trim_start_matches("./");
        self.entries
            .iter()
            .find(|e| e.name.trim_start_matches("./") == name)
    }
}

/// Reads the tar headers of the file at `path` and hashes it. Blocking: run it on the
/// blocking pool.
pub(crate) fn read_index(path: &Path) -> Result<Index> {
    let io = |e: std::io::Error| Error::internal(format!("reading {}: {e}", path.display()));
    let mut f = std::fs::File::open(path).map_err(io)?;
    let size = f.metadata().map_err(io)?.len();
    let entries = entries(&mut f, size)?;
    f.seek(SeekFrom::Start(0)).map_err(io)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(Index {
        entries,
        sha256: format!("{:x}", h.finalize()),
        size,
    })
}

/// The regular files of a tar stream of `len` bytes.
fn entries<R: Read + Seek>(r: &mut R, len: u64) -> Result<Vec<Entry>> {
    let mut out = Vec::new();
    let mut pos = 0u64;
    let mut long_name: Option<String> = None;
    let mut header = [0u8; BLOCK as usize];
    loop {
        if pos + BLOCK > len {
            // Archives end with two zero blocks, but a truncated end after the last entry
            // is tolerated; a header cut short is not.
            if pos < len && out.is_empty() {
                return Err(bad("it is shorter than one tar header"));
            }
            break;
        }
        r.seek(SeekFrom::Start(pos))
            .and_then(|_| r.read_exact(&mut header))
            .map_err(|e| bad(format!("reading the tar header at byte {pos}: {e}")))?;
        if header.iter().all(|b| *b == 0) {
            break;
        }
        check_sum(&header, pos)?;
        let size = octal(&header[124..136])
            .ok_or_else(|| bad(format!("the tar header at byte {pos} has no valid size")))?;
        let data = pos + BLOCK;
        let end = data
            .checked_add(size)
            .filter(|e| *e <= len)
            .ok_or_else(|| bad(format!("the tar entry at byte {pos} runs past the end")))?;
        let kind = header[156];
        match kind {
            b'x' | b'L' => {
                if size > MAX_NAME * 4 {
                    return Err(bad(format!(
                        "the extended header at byte {pos} is too long"
                    )));
                }
                let mut buf = vec![0u8; usize::try_from(size).unwrap_or(0)];
                r.seek(SeekFrom::Start(data))
                    .and_then(|_| r.read_exact(&mut buf))
                    .map_err(|e| bad(format!("reading the extended header at {pos}: {e}")))?;
                long_name = if kind == b'L' {
                    Some(cstr(&buf))
                } else {
                    pax_path(&buf)
                };
            }
            b'0' | 0 | b'7' => {
                let name = long_name.take().unwrap_or_else(|| ustar_name(&header));
                if out.len() >= MAX_ENTRIES {
                    return Err(bad(format!("more than {MAX_ENTRIES} entries")));
                }
                out.push(Entry {
                    name,
                    offset: data,
                    size,
                });
            }
            _ => long_name = None,
        }
        pos = end.div_ceil(BLOCK) * BLOCK;
    }
    if out.is_empty() {
        return Err(bad("it holds no file (is it a tar archive?)"));
    }
    Ok(out)
}

/// The header checksum: the byte sum with the checksum field read as spaces.
fn check_sum(h: &[u8; BLOCK as usize], pos: u64) -> Result<()> {
    let want = octal(&h[148..156]);
    let sum: u64 = h
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u64::from(*b)
            }
        })
        .sum();
    if want != Some(sum) {
        return Err(bad(format!(
            "the tar header at byte {pos} has a wrong checksum (is it a tar archive?)"
        )));
    }
    Ok(())
}

/// An octal field (NUL or space terminated), or a base-256 one (high bit set).
fn octal(field: &[u8]) -> Option<u64> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        let mut v: u64 = u64::from(field[0] & 0x7f);
        for b in &field[1..] {
            v = v.checked_mul(256)?.checked_add(u64::from(*b))?;
        }
        return Some(v);
    }
    let s: String = field
        .iter()
        .take_while(|b| **b != 0)
        .map(|b| *b as char)
        .collect();
    let s = s.trim();
    if s.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(s, 8).ok()
}

fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// `prefix/name` of a ustar header (prefix only with the `ustar` magic).
fn ustar_name(h: &[u8; BLOCK as usize]) -> String {
    let name = cstr(&h[0..100]);
    let prefix = if &h[257..262] == b"ustar" {
        cstr(&h[345..500])
    } else {
        String::new()
    };
    if prefix.is_empty() {
        name
    } else {
        format!("{prefix}/{name}")
    }
}

/// The `path` record of a pax extended header (`"<len> path=<value>\n"`).
fn pax_path(b: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(b);
    text.lines().find_map(|l| {
        let (_, rec) = l.split_once(' ')?;
        rec.strip_prefix("path=").map(str::to_owned)
    })
}

/// Reads the OVF descriptor: the archive's first entry, which must be a `.ovf` file of at
/// most [`MAX_DESCRIPTOR`] bytes of UTF-8. Blocking.
pub(crate) fn read_descriptor(path: &Path, index: &Index) -> Result<(String, String)> {
    let first = index
        .entries
        .first()
        .ok_or_else(|| bad("it holds no file"))?;
    if !first.name.to_ascii_lowercase().ends_with(".ovf") {
        return Err(bad(format!(
            "its first entry is {:?}, not the OVF descriptor (a .ovf file)",
            first.name
        )));
    }
    if first.size > MAX_DESCRIPTOR {
        return Err(bad(format!(
            "the descriptor {} is {} bytes (at most {MAX_DESCRIPTOR})",
            first.name, first.size
        )));
    }
    let mut f = std::fs::File::open(path)
        .map_err(|e| Error::internal(format!("reading {}: {e}", path.display())))?;
    let mut buf = vec![0u8; usize::try_from(first.size).unwrap_or(0)];
    f.seek(SeekFrom::Start(first.offset))
        .and_then(|_| f.read_exact(&mut buf))
        .map_err(|e| bad(format!("reading the descriptor: {e}")))?;
    let text = String::from_utf8(buf)
        .map_err(|_| bad(format!("the descriptor {} is not UTF-8", first.name)))?;
    Ok((first.name.clone(), text))
}

/// A file the descriptor references (`References/File`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileRef {
    pub(crate) id: String,
    pub(crate) href: String,
}

/// Checks a descriptor before it is sent: an `Envelope` holding one `VirtualSystem` with a
/// `VirtualHardwareSection`; every hardware `Item` has a `ResourceType`; every disk item
/// (`ResourceType` 17) names a `Parent` controller and a `HostResource` that resolves to a
/// `DiskSection/Disk` whose `fileRef` is a referenced file; CD/DVD items (15) name a
/// `Parent`; every referenced file is in the archive. Returns the referenced files.
pub(crate) fn check_descriptor(text: &str, index: &Index) -> Result<Vec<FileRef>> {
    let field = "the OVF descriptor (ovfDescriptor)";
    let doc = xml::parse(text).map_err(|e| bad(format!("{field} is not XML: {e}")))?;
    if doc.name != "Envelope" {
        return Err(bad(format!(
            "{field} has root element {}, not Envelope",
            doc.name
        )));
    }
    let files: Vec<FileRef> = doc
        .child("References")
        .map(|r| {
            r.children_named("File")
                .map(|f| FileRef {
                    id: f.attr("id").unwrap_or_default().to_owned(),
                    href: f.attr("href").unwrap_or_default().to_owned(),
                })
                .collect()
        })
        .unwrap_or_default();
    for f in &files {
        if f.id.is_empty() || f.href.is_empty() {
            return Err(bad(format!("{field}: a References/File lacks id or href")));
        }
        if f.href.contains("://") {
            return Err(bad(format!(
                "{field}: File {} refers to {} outside the archive (not supported)",
                f.id, f.href
            )));
        }
        if index.find(&f.href).is_none() {
            return Err(bad(format!(
                "{field}: File {} ({}) is not in the archive",
                f.id, f.href
            )));
        }
    }
    if doc.child("VirtualSystemCollection").is_some() {
        return Err(bad(format!(
            "{field} holds a VirtualSystemCollection (a vApp); only one VirtualSystem is supported"
        )));
    }
    let vs = doc
        .child("VirtualSystem")
        .ok_or_else(|| bad(format!("{field} has no VirtualSystem")))?;
    let hw = vs.child("VirtualHardwareSection").ok_or_else(|| {
        bad(format!(
            "{field}: VirtualSystem has no VirtualHardwareSection"
        ))
    })?;
    let disks: Vec<&Element> = doc
        .child("DiskSection")
        .map(|d| d.children_named("Disk").collect())
        .unwrap_or_default();
    for item in hw.children_named("Item") {
        check_item(item, &disks, &files, field)?;
    }
    Ok(files)
}

fn check_item(item: &Element, disks: &[&Element], files: &[FileRef], field: &str) -> Result<()> {
    let id = item.text_at("InstanceID").unwrap_or("?");
    let ty: u16 = item
        .text_at("ResourceType")
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| bad(format!("{field}: Item {id} has no numeric ResourceType")))?;
    let parent = || {
        item.text_at("Parent")
            .filter(|p| !p.is_empty())
            .ok_or_else(|| {
                bad(format!(
                    "{field}: Item {id} (ResourceType {ty}) has no Parent"
                ))
            })
    };
    match ty {
        15 => {
            parent()?;
        }
        17 => {
            parent()?;
            let host = item
                .text_at("HostResource")
                .filter(|h| !h.is_empty())
                .ok_or_else(|| bad(format!("{field}: disk Item {id} has no HostResource")))?;
            let disk = disks
                .iter()
                .find(|d| {
                    d.attr("diskId")
                        .is_some_and(|i| !i.is_empty() && host.ends_with(i))
                })
                .ok_or_else(|| {
                    bad(format!(
                        "{field}: disk Item {id}: HostResource {host} names no DiskSection Disk"
                    ))
                })?;
            let fref = disk.attr("fileRef").unwrap_or_default();
            if !files.iter().any(|f| f.id == fref) {
                return Err(bad(format!(
                    "{field}: disk Item {id}: Disk fileRef {fref:?} is not a References/File"
                )));
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// A ustar header for a regular file `name` of `size` bytes.
    pub(crate) fn header(name: &str, size: u64) -> [u8; 512] {
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..107].copy_from_slice(b"0000644");
        h[108..115].copy_from_slice(b"0000000");
        h[116..123].copy_from_slice(b"0000000");
        h[124..135].copy_from_slice(format!("{size:011o}").as_bytes());
        h[136..147].copy_from_slice(b"00000000000");
        h[156] = b'0';
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        h
    }

    fn tar(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (n, d) in files {
            out.extend_from_slice(&header(n, d.len() as u64));
            out.extend_from_slice(d);
            out.resize(out.len().div_ceil(512) * 512, 0);
        }
        out.resize(out.len() + 1024, 0);
        out
    }

    const OVF: &str = r#"<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData">
<References><File ovf:id="file1" ovf:href="d.vmdk" ovf:size="3"/></References>
<DiskSection><Info>d</Info><Disk ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:capacity="1"/></DiskSection>
<VirtualSystem ovf:id="x"><VirtualHardwareSection>
<Item><rasd:InstanceID>3</rasd:InstanceID><rasd:ResourceType>6</rasd:ResourceType></Item>
<Item><rasd:InstanceID>4</rasd:InstanceID><rasd:ResourceType>17</rasd:ResourceType><rasd:Parent>3</rasd:Parent><rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource></Item>
</VirtualHardwareSection></VirtualSystem></Envelope>"#;

    fn index_of(data: &[u8]) -> Result<Index> {
        let entries = entries(&mut Cursor::new(data), data.len() as u64)?;
        Ok(Index {
            entries,
            sha256: String::new(),
            size: data.len() as u64,
        })
    }

    #[test]
    fn reads_entries_and_checks_the_descriptor() {
        let data = tar(&[("x.ovf", OVF.as_bytes()), ("d.vmdk", b"abc")]);
        let idx = index_of(&data).expect("index");
        assert_eq!(idx.entries.len(), 2);
        assert_eq!(idx.entries[1].name, "d.vmdk");
        assert_eq!(idx.entries[1].size, 3);
        let d = idx.entries[1].offset as usize;
        assert_eq!(&data[d..d + 3], b"abc");
        let files = check_descriptor(OVF, &idx).expect("descriptor");
        assert_eq!(files[0].href, "d.vmdk");
    }

    #[test]
    fn bad_archives_and_descriptors_are_invalid_spec() {
        use virtrigaud_core::ErrorKind;
        assert_eq!(
            index_of(&[7u8; 2000]).expect_err("garbage").kind(),
            ErrorKind::InvalidSpec
        );
        assert!(index_of(&[0u8; 100]).is_err());
        let mut cut = tar(&[("x.ovf", OVF.as_bytes()), ("d.vmdk", b"abc")]);
        cut.truncate(600);
        assert!(index_of(&cut).is_err());
        let idx = index_of(&tar(&[("x.ovf", OVF.as_bytes())])).expect("index");
        let e = check_descriptor(OVF, &idx).expect_err("missing file");
        assert!(e.message().contains("not in the archive"), "{e}");
        let idx = index_of(&tar(&[("x.ovf", b"x"), ("d.vmdk", b"abc")])).expect("index");
        for bad in [
            "not xml <",
            "<Other/>",
            "<Envelope/>",
            &OVF.replace("<rasd:Parent>3</rasd:Parent>", ""),
            &OVF.replace("<rasd:ResourceType>6</rasd:ResourceType>", ""),
            &OVF.replace("ovf:/disk/vmdisk1", "ovf:/disk/other"),
        ] {
            let e = check_descriptor(bad, &idx).expect_err(bad);
            assert_eq!(e.kind(), ErrorKind::InvalidSpec, "{bad}");
            assert!(e.message().contains("ovfDescriptor"), "{e}");
        }
    }

    #[test]
    fn octal_fields() {
        assert_eq!(octal(b"0000644\0"), Some(0o644));
        assert_eq!(octal(b"   12 \0"), Some(0o12));
        assert_eq!(octal(b"\0\0"), Some(0));
        assert_eq!(octal(b"9\0"), None);
        assert_eq!(octal(&[0x80, 0, 0, 1, 0]), Some(256));
    }
}
