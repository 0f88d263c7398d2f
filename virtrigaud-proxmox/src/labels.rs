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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_round_trip_through_tags() {
        let labels: BTreeMap<String, String> = [("app", "web"), ("tier", "1"), ("pinned", "")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let tags = labels_to_tags(&labels);
        assert_eq!(tags, "app-web;pinned;tier-1");
        assert_eq!(tags_to_labels(Some(&tags)), labels);
        // PVE's other separators, and characters PVE does not allow.
        assert_eq!(tags_to_labels(Some("a-1,b c-2")).len(), 3);
        let odd = [("My Key".to_owned(), "V/1".to_owned())]
            .into_iter()
            .collect();
        assert_eq!(labels_to_tags(&odd), "my_key-v_1");
        assert!(tags_to_labels(None).is_empty());
    }
}
