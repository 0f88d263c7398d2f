//! Labels and cloud-init user data in `config.extraConfig`.
//!
//! Labels are `virtrigaud.label.<key>` = value options; cloud-init user data is
//! `guestinfo.userdata` (base64) with `guestinfo.userdata.encoding` = `base64`, the keys the
//! cloud-init VMware datasource reads.

use std::collections::BTreeMap;

use virtrigaud_core::VmCreateSpec;

use crate::types::Props;
use crate::xml::Element;

/// Prefix of the extraConfig keys that hold labels.
pub(crate) const LABEL_PREFIX: &str = "virtrigaud.label.";
/// extraConfig key of the cloud-init user data.
pub(crate) const USERDATA_KEY: &str = "guestinfo.userdata";
/// extraConfig key of the user data's encoding.
pub(crate) const USERDATA_ENCODING_KEY: &str = "guestinfo.userdata.encoding";
/// Longest label key / value we store.
pub(crate) const MAX_LABEL_KEY: usize = 253;
pub(crate) const MAX_LABEL_VALUE: usize = 1024;

/// Whether `key` is a label key we can store as an extraConfig key: 1–253 characters out of
/// ASCII letters, digits, `.`, `_`, `-` and `/` (the Kubernetes label key alphabet), starting
/// and ending with a letter or digit.
pub(crate) fn label_key_ok(key: &str) -> bool {
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    !key.is_empty()
        && key.len() <= MAX_LABEL_KEY
        && edge(key.chars().next())
        && edge(key.chars().last())
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'))
}

/// Whether `value` is a label value we store: at most 1024 bytes, no control characters.
pub(crate) fn label_value_ok(value: &str) -> bool {
    value.len() <= MAX_LABEL_VALUE && !value.chars().any(char::is_control)
}

/// The extraConfig options of a spec: labels and user data.
pub(crate) fn extra_config(spec: &VmCreateSpec) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = spec
        .labels
        .iter()
        .map(|(k, v)| (format!("{LABEL_PREFIX}{k}"), v.clone()))
        .collect();
    if let Some(ud) = &spec.cloud_init_user_data {
        out.push((USERDATA_KEY.to_owned(), base64(ud.as_bytes())));
        out.push((USERDATA_ENCODING_KEY.to_owned(), "base64".to_owned()));
    }
    out
}

/// Standard base64 (with padding), as cloud-init's VMware datasource decodes it.
pub(crate) fn base64(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// Labels from a `config.extraConfig` value (`ArrayOfOptionValue`).
pub(crate) fn labels_of(extra: Option<&Element>) -> BTreeMap<String, String> {
    let Some(extra) = extra else {
        return BTreeMap::new();
    };
    extra
        .children
        .iter()
        .filter_map(|o| {
            let key = o.text_at("key")?.strip_prefix(LABEL_PREFIX)?;
            Some((key.to_owned(), o.text_at("value").unwrap_or("").to_owned()))
        })
        .collect()
}

/// The label map of a property set (its `config.extraConfig`).
pub(crate) fn labels_from_props(p: &Props) -> BTreeMap<String, String> {
    labels_of(p.get("config.extraConfig"))
}

/// Whether `labels` carries every label of `want`.
pub(crate) fn has_labels(
    labels: &BTreeMap<String, String>,
    want: &BTreeMap<String, String>,
) -> bool {
    want.iter().all(|(k, v)| labels.get(k) == Some(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }
}
