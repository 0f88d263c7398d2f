//! Labels ↔ PVE tags, losslessly.
//!
//! PVE tags match `[a-z0-9_][a-z0-9_+.-]*` and PVE may fold their case, so a label such as
//! `virtrigaud.io/set=web` cannot be stored as it is. Each label becomes one tag
//! `vr+<key>-<value>`: bytes in `[a-z0-9.]` stay, every other byte (upper case, `/`, `-`, `_`,
//! UTF-8 …) is written `_hh` in lower-case hex. `-` never appears inside an encoded key or
//! value, so the first `-` splits them, and decoding gives back exactly the labels written.
//!
//! Tags without the `vr+` prefix (set by hand in the PVE UI, or by older versions) are read as
//! before: `key-value`, or `tag = ""`. Where both forms name one key, the encoded one wins.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// The prefix of a tag that encodes one label.
const PREFIX: &str = "vr+";

/// The PVE `tags` value for `labels`: one `vr+<key>-<value>` tag each, `;`-separated.
pub(crate) fn labels_to_tags(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{PREFIX}{}-{}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join(";")
}

/// The labels a VM's `tags` hold (see the module docs).
pub(crate) fn tags_to_labels(tags: Option<&str>) -> BTreeMap<String, String> {
    let mut ours = BTreeMap::new();
    let mut legacy = BTreeMap::new();
    for tag in tags.unwrap_or("").split([';', ',', ' ']) {
        if tag.is_empty() {
            continue;
        }
        match decode_tag(tag) {
            Some((k, v)) => {
                ours.insert(k, v);
            }
            None => {
                let (k, v) = tag.split_once('-').unwrap_or((tag, ""));
                legacy.insert(k.to_owned(), v.to_owned());
            }
        }
    }
    legacy.extend(ours);
    legacy
}

/// One label's half, escaped to `[a-z0-9._]`.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' {
            out.push(char::from(b));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "_{b:02x}");
        }
    }
    out
}

/// The label a `vr+` tag encodes; `None` for any other tag (or a malformed one).
fn decode_tag(tag: &str) -> Option<(String, String)> {
    let tag = tag.to_ascii_lowercase();
    let (k, v) = tag.strip_prefix(PREFIX)?.split_once('-')?;
    Some((decode(k)?, decode(v)?))
}

/// The inverse of [`encode`]; `None` when `s` is not something [`encode`] wrote.
fn decode(s: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(s.len());
    let mut rest = s.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        if b == b'_' {
            let hex = std::str::from_utf8(tail.get(..2)?).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &tail[2..];
        } else if b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' {
            bytes.push(b);
            rest = tail;
        } else {
            return None;
        }
    }
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// PVE's `pve-tag` format.
    fn pve_accepts(tag: &str) -> bool {
        let mut chars = tag.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '.' | '-'))
    }

    #[test]
    fn set_labels_round_trip_through_tags() {
        let l = labels(&[
            ("virtrigaud.io/set", "web"),
            ("virtrigaud.io/template-hash", "5f3a9c"),
            ("App", "Web-Blue"),
            ("pinned", ""),
        ]);
        let tags = labels_to_tags(&l);
        assert_eq!(
            tags,
            "vr+_41pp-_57eb_2d_42lue;vr+pinned-;vr+virtrigaud.io_2fset-web;\
             vr+virtrigaud.io_2ftemplate_2dhash-5f3a9c"
        );
        assert!(tags.split(';').all(pve_accepts), "{tags}");
        assert_eq!(tags_to_labels(Some(&tags)), l);
        // PVE may upper-case or re-separate the tags: the labels are unchanged.
        let folded = tags.to_ascii_uppercase().replace(';', ",");
        assert_eq!(tags_to_labels(Some(&folded)), l);
    }

    #[test]
    fn hand_written_tags_are_read_as_before_and_ours_win() {
        assert_eq!(
            tags_to_labels(Some("env-prod,pinned vr+env-test")),
            labels(&[("env", "test"), ("pinned", "")])
        );
        assert_eq!(
            tags_to_labels(Some("vr+broken_zz-1")),
            labels(&[("vr+broken_zz", "1")])
        );
        assert!(tags_to_labels(None).is_empty());
        assert!(tags_to_labels(Some("")).is_empty());
    }

    proptest! {
        #[test]
        fn any_labels_round_trip_and_fit_pve_tags(
            l in proptest::collection::btree_map(".{1,20}", ".{0,20}", 0..6)
        ) {
            let tags = labels_to_tags(&l);
            prop_assert!(tags.is_empty() || tags.split(';').all(pve_accepts), "{}", tags);
            prop_assert_eq!(tags_to_labels(Some(&tags)), l);
        }
    }
}
