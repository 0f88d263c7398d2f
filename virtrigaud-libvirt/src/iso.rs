//! A minimal ISO 9660 + Joliet writer for cloud-init NoCloud seeds.
//!
//! NoCloud reads `user-data` and `meta-data` from a filesystem labelled `cidata`. The image is
//! built in memory (a few KiB) and uploaded as a storage volume, so it works over remote URIs
//! too. Only a root directory with small files is supported.

const SECTOR: usize = 2048;

fn both16(v: u16) -> [u8; 4] {
    let (l, b) = (v.to_le_bytes(), v.to_be_bytes());
    [l[0], l[1], b[0], b[1]]
}

fn both32(v: u32) -> [u8; 8] {
    let (l, b) = (v.to_le_bytes(), v.to_be_bytes());
    [l[0], l[1], l[2], l[3], b[0], b[1], b[2], b[3]]
}

fn ucs2(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_be_bytes).collect()
}

/// Pads `field` with spaces (`joliet`: UCS-2 spaces).
fn padded(text: &[u8], len: usize, joliet: bool) -> Vec<u8> {
    let mut v = text.to_vec();
    v.truncate(len);
    while v.len() < len {
        if joliet && len - v.len() >= 2 {
            v.extend_from_slice(&[0, b' ']);
        } else {
            v.push(b' ');
        }
    }
    v
}

fn dir_record(name: &[u8], extent: u32, size: u32, dir: bool) -> Vec<u8> {
    let mut r = vec![0u8; 33];
    r[2..10].copy_from_slice(&both32(extent));
    r[10..18].copy_from_slice(&both32(size));
    r[18..25].copy_from_slice(&[126, 1, 1, 0, 0, 0, 0]);
    r[25] = if dir { 2 } else { 0 };
    r[28..32].copy_from_slice(&both16(1));
    r[32] = name.len() as u8;
    r.extend_from_slice(name);
    if r.len() % 2 == 1 {
        r.push(0);
    }
    r[0] = r.len() as u8;
    r
}

fn path_table(root: u32, big_endian: bool) -> Vec<u8> {
    let mut p = vec![1u8, 0];
    p.extend_from_slice(&if big_endian {
        root.to_be_bytes()
    } else {
        root.to_le_bytes()
    });
    p.extend_from_slice(&if big_endian {
        1u16.to_be_bytes()
    } else {
        1u16.to_le_bytes()
    });
    p.extend_from_slice(&[0, 0]);
    p
}

#[allow(clippy::too_many_arguments)]
fn volume_descriptor(
    kind: u8,
    label: &str,
    total: u32,
    pt_len: u32,
    l_pt: u32,
    m_pt: u32,
    root: &[u8],
    joliet: bool,
) -> Vec<u8> {
    let mut d = vec![0u8; SECTOR];
    d[0] = kind;
    d[1..6].copy_from_slice(b"CD001");
    d[6] = 1;
    let id = |s: &str| {
        if joliet {
            ucs2(s)
        } else {
            s.as_bytes().to_vec()
        }
    };
    d[8..40].copy_from_slice(&padded(&[], 32, joliet));
    d[40..72].copy_from_slice(&padded(&id(label), 32, joliet));
    d[80..88].copy_from_slice(&both32(total));
    if joliet {
        d[88..91].copy_from_slice(b"%/E");
    }
    d[120..124].copy_from_slice(&both16(1));
    d[124..128].copy_from_slice(&both16(1));
    d[128..132].copy_from_slice(&both16(SECTOR as u16));
    d[132..140].copy_from_slice(&both32(pt_len));
    d[140..144].copy_from_slice(&l_pt.to_le_bytes());
    d[148..152].copy_from_slice(&m_pt.to_be_bytes());
    d[156..190].copy_from_slice(root);
    d[190..318].copy_from_slice(&padded(&[], 128, joliet));
    d[318..446].copy_from_slice(&padded(&[], 128, joliet));
    d[446..574].copy_from_slice(&padded(&[], 128, joliet));
    d[574..702].copy_from_slice(&padded(&[], 128, joliet));
    d[702..813].copy_from_slice(&padded(&[], 111, false));
    for at in [813usize, 830, 847, 864] {
        d[at..at + 16].copy_from_slice(b"0000000000000000");
    }
    d[881] = 1;
    d
}

/// Builds an ISO image labelled `label` whose root holds `files` (name, content). Names must
/// be short ASCII (`user-data`, `meta-data`, `network-config`).
pub(crate) fn build(label: &str, files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut files: Vec<(&str, &[u8])> = files.to_vec();
    files.sort_by(|a, b| a.0.cmp(b.0));
    // Layout: 16 PVD, 17 SVD, 18 terminator, 19-22 path tables, 23 root, 24 Joliet root, data.
    let (root_pvd, root_j) = (23u32, 24u32);
    let mut next = 25u32;
    let mut extents = Vec::new();
    for (_, data) in &files {
        extents.push(next);
        next += (data.len().div_ceil(SECTOR)).max(1) as u32;
    }
    let total = next;
    let root_rec = |extent: u32| dir_record(&[0], extent, SECTOR as u32, true);
    let mut img = vec![0u8; total as usize * SECTOR];
    let mut put = |sector: u32, bytes: &[u8]| {
        let at = sector as usize * SECTOR;
        img[at..at + bytes.len()].copy_from_slice(bytes);
    };
    put(
        16,
        &volume_descriptor(1, label, total, 10, 19, 20, &root_rec(root_pvd), false),
    );
    put(
        17,
        &volume_descriptor(2, label, total, 10, 21, 22, &root_rec(root_j), true),
    );
    let mut term = vec![0u8; 7];
    term[0] = 255;
    term[1..6].copy_from_slice(b"CD001");
    term[6] = 1;
    put(18, &term);
    put(19, &path_table(root_pvd, false));
    put(20, &path_table(root_pvd, true));
    put(21, &path_table(root_j, false));
    put(22, &path_table(root_j, true));
    for (root, joliet) in [(root_pvd, false), (root_j, true)] {
        let mut dir = dir_record(&[0], root, SECTOR as u32, true);
        dir.extend(dir_record(&[1], root, SECTOR as u32, true));
        for ((name, data), extent) in files.iter().zip(&extents) {
            let n = if joliet {
                ucs2(name)
            } else {
                // ISO 9660 level 1: d-characters, 8.3, version suffix.
                let base: String = name
                    .chars()
                    .filter(char::is_ascii_alphanumeric)
                    .map(|c| c.to_ascii_uppercase())
                    .take(8)
                    .collect();
                format!("{base}.;1").into_bytes()
            };
            dir.extend(dir_record(&n, *extent, data.len() as u32, false));
        }
        put(root, &dir);
    }
    for ((_, data), extent) in files.iter().zip(&extents) {
        put(*extent, data);
    }
    img
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_has_descriptors_label_and_file_data() {
        let img = build(
            "cidata",
            &[
                ("user-data", b"#cloud-config\n"),
                ("meta-data", b"instance-id: x\n"),
            ],
        );
        assert_eq!(img.len() % SECTOR, 0);
        assert_eq!(&img[16 * SECTOR + 1..16 * SECTOR + 6], b"CD001");
        assert_eq!(&img[16 * SECTOR + 40..16 * SECTOR + 46], b"cidata");
        assert_eq!(&img[17 * SECTOR + 88..17 * SECTOR + 91], b"%/E");
        assert_eq!(img[18 * SECTOR], 255);
        // meta-data sorts first: sector 25; user-data: sector 26.
        assert_eq!(&img[25 * SECTOR..25 * SECTOR + 12], b"instance-id:");
        assert_eq!(&img[26 * SECTOR..26 * SECTOR + 13], b"#cloud-config");
        let total = u32::from_le_bytes(
            img[16 * SECTOR + 80..16 * SECTOR + 84]
                .try_into()
                .expect("4"),
        );
        assert_eq!(total as usize * SECTOR, img.len());
    }
}
