//! The virtrigaud block in a VM's `description` (PVE's notes): what PVE has no config field
//! for, kept with the VM itself.
//!
//! ```text
//! <!-- virtrigaud
//! disk.scsi0: root
//! disk.scsi1: data
//! -->
//! ```
//!
//! An HTML comment, so PVE's notes view (Markdown) does not show it; any other text in the
//! description is kept around it. It survives a restart of this process, a clone (PVE copies
//! the description) and a rollback (PVE keeps the current description). Today it maps disk
//! slots to the disk names of the create spec. Labels are not here but in PVE tags, escaped
//! losslessly (see `labels.rs`), so that `cluster/resources` lists them and PVE's UI shows them.

use std::collections::BTreeMap;

const OPEN: &str = "<!-- virtrigaud";
const CLOSE: &str = "-->";
const DISK: &str = "disk.";

/// What the block records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Meta {
    /// Disk slot (`scsi1`) → the disk's name in the create spec (`data`).
    pub(crate) disks: BTreeMap<String, String>,
}

/// Whether `name` can be a disk name in the block: 1-63 characters `[A-Za-z0-9_.-]`.
pub(crate) fn valid_disk_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

impl Meta {
    /// The block in `description` (empty when there is none or it is malformed).
    pub(crate) fn parse(description: Option<&str>) -> Meta {
        let mut meta = Meta::default();
        let Some(body) = description.and_then(block) else {
            return meta;
        };
        for line in body.lines() {
            let Some((key, value)) = line.trim().split_once(':') else {
                continue;
            };
            if let Some(slot) = key.trim().strip_prefix(DISK) {
                let name = value.trim();
                if !slot.is_empty() && valid_disk_name(name) {
                    meta.disks.insert(slot.to_owned(), name.to_owned());
                }
            }
        }
        meta
    }

    /// Whether there is nothing to record.
    pub(crate) fn is_empty(&self) -> bool {
        self.disks.is_empty()
    }

    /// The block's text.
    pub(crate) fn render(&self) -> String {
        let mut out = String::from(OPEN);
        out.push('\n');
        for (slot, name) in &self.disks {
            out.push_str(&format!("{DISK}{slot}: {name}\n"));
        }
        out.push_str(CLOSE);
        out
    }

    /// `existing` with its block replaced by this one (or this one appended; removed when
    /// this one is empty).
    pub(crate) fn into_description(self, existing: Option<&str>) -> String {
        let existing = existing.unwrap_or("");
        let rest = match span(existing) {
            Some((start, end)) => format!("{}{}", &existing[..start], &existing[end..]),
            None => existing.to_owned(),
        };
        let rest = rest.trim_end();
        match (rest.is_empty(), self.is_empty()) {
            (_, true) => rest.to_owned(),
            (true, false) => self.render(),
            (false, false) => format!("{rest}\n\n{}", self.render()),
        }
    }

    /// The name the disk in `slot` is known by: its spec name, else the slot.
    pub(crate) fn disk_name<'a>(&'a self, slot: &'a str) -> &'a str {
        self.disks.get(slot).map_or(slot, String::as_str)
    }
}

/// Where the block is in `description`: from its opening marker to past its closing one.
fn span(description: &str) -> Option<(usize, usize)> {
    let start = description.find(OPEN)?;
    let end = description[start..].find(CLOSE)? + start + CLOSE.len();
    Some((start, end))
}

/// The text between the block's markers.
fn block(description: &str) -> Option<&str> {
    let (start, end) = span(description)?;
    Some(&description[start + OPEN.len()..end - CLOSE.len()])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(pairs: &[(&str, &str)]) -> Meta {
        Meta {
            disks: pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    #[test]
    fn the_block_round_trips_and_keeps_other_notes() {
        let m = meta(&[("scsi0", "root"), ("scsi1", "data")]);
        let d = m.clone().into_description(None);
        assert_eq!(
            d,
            "<!-- virtrigaud\ndisk.scsi0: root\ndisk.scsi1: data\n-->"
        );
        assert_eq!(Meta::parse(Some(&d)), m);
        // Notes around it stay; a new block replaces the old one.
        let notes = format!("Owner: team-a\n\n{d}\n");
        let again = meta(&[("scsi0", "boot")]).into_description(Some(&notes));
        assert_eq!(
            again,
            "Owner: team-a\n\n<!-- virtrigaud\ndisk.scsi0: boot\n-->"
        );
        assert_eq!(Meta::parse(Some(&again)).disk_name("scsi0"), "boot");
        assert_eq!(Meta::parse(Some(&again)).disk_name("scsi1"), "scsi1");
        assert_eq!(
            Meta::default().into_description(Some(&notes)),
            "Owner: team-a"
        );
    }

    #[test]
    fn malformed_blocks_and_names_are_ignored() {
        assert!(Meta::parse(None).is_empty());
        assert!(Meta::parse(Some("no block")).is_empty());
        assert!(Meta::parse(Some("<!-- virtrigaud\ndisk.scsi0: root\n")).is_empty());
        let odd = "<!-- virtrigaud\ndisk.scsi0: has space\nnonsense\ndisk.scsi1: ok\n-->";
        assert_eq!(Meta::parse(Some(odd)), meta(&[("scsi1", "ok")]));
        assert!(valid_disk_name("data-1.x_y"));
        assert!(!valid_disk_name("") && !valid_disk_name("a b") && !valid_disk_name("a:b"));
    }
}
