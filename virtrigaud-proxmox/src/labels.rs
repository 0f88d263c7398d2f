//! Labels ↔ PVE tags.

use std::collections::BTreeMap;

/// Labels become PVE tags `key-value` (PVE tags allow `[a-z0-9_+.-]`); a tag without `-`
/// is the label `tag = ""`.
pub(crate) fn labels_to_tags(labels: &BTreeMap<String, String>) -> String {
    let clean = |s: &str| -> String {
        s.to_ascii_lowercase()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '.') {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    labels
        .iter()
        .map(|(k, v)| {
            if v.is_empty() {
                clean(k)
            } else {
                format!("{}-{}", clean(k), clean(v))
            }
        })
        .collect::<Vec<_>>()
        .join(";")
}

/// The labels a VM's `tags` encode (see [`labels_to_tags`]).
pub(crate) fn tags_to_labels(tags: Option<&str>) -> BTreeMap<String, String> {
    tags.unwrap_or("")
        .split([';', ',', ' '])
        .filter(|t| !t.is_empty())
        .map(|t| match t.split_once('-') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => (t.to_owned(), String::new()),
        })
        .collect()
}
