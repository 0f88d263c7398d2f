//! KubeVirt VM ids: `namespace/name`.

use virtrigaud_core::{Error, Result, ResultExt, VmId};

use crate::PROVIDER_TYPE;

/// A parsed `namespace/name` VM id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VmRef {
    /// Namespace.
    pub namespace: String,
    /// VirtualMachine name (the VMI has the same name).
    pub name: String,
}

impl VmRef {
    /// Parses `namespace/name`, or a bare `name` in `default_namespace`. Both parts must be DNS-1123
    /// names (so they can never alter a request path).
    pub fn parse(id: &VmId, default_namespace: &str) -> Result<Self> {
        let s = id.as_str();
        let (ns, name) = match s.split_once('/') {
            Some((ns, name)) => (ns, name),
            None => (default_namespace, s),
        };
        for part in [ns, name] {
            if !is_dns_name(part) {
                return Err(Error::invalid_spec(
                    "a KubeVirt VM id is `namespace/name` (lowercase DNS-1123 names)",
                ))
                .ctx(PROVIDER_TYPE, "parse_vm_id", s);
            }
        }
        Ok(VmRef {
            namespace: ns.to_owned(),
            name: name.to_owned(),
        })
    }

    /// The `namespace/name` id.
    pub fn id(&self) -> VmId {
        VmId::new(format!("{}/{}", self.namespace, self.name))
    }
}

impl std::fmt::Display for VmRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Whether `s` is a DNS-1123 subdomain (what Kubernetes accepts as an object name).
pub(crate) fn is_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Turns a free-form name (a snapshot name, say) into a DNS-1123 label.
pub(crate) fn sanitize_name(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    out.truncate(63);
    let out = out.trim_matches('-').to_owned();
    if out.is_empty() {
        "snapshot".to_owned()
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_namespace_and_name() {
        let r = VmRef::parse(&VmId::new("prod/web-1"), "default").expect("ok");
        assert_eq!((r.namespace.as_str(), r.name.as_str()), ("prod", "web-1"));
        assert_eq!(r.id().as_str(), "prod/web-1");
        let r = VmRef::parse(&VmId::new("web-1"), "default").expect("ok");
        assert_eq!(r.namespace, "default");
        for bad in ["", "a/b/c", "A/b", "ns/../x", "ns/", "/x", "ns/x?y"] {
            assert!(VmRef::parse(&VmId::new(bad), "d").is_err(), "{bad}");
        }
        assert_eq!(sanitize_name("Before Upgrade_1"), "before-upgrade-1");
    }
}
