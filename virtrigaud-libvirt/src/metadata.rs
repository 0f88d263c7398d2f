//! What virtrigaud keeps in a domain's `<metadata>`: the labels, and the names the create
//! spec gave its disks (a leaf module over [`Element`]).
//!
//! ```xml
//! <metadata>
//!   <vr:labels xmlns:vr="https://virtrigaud.io/xmlns/libvirt/labels/1">
//!     <vr:label key="set" value="web"/>
//!   </vr:labels>
//!   <vrd:disks xmlns:vrd="https://virtrigaud.io/xmlns/libvirt/disks/1">
//!     <vrd:disk target="vda" name="root"/>
//!     <vrd:disk target="vdb" name="data"/>
//!   </vrd:disks>
//! </metadata>
//! ```
//!
//! Each kind has its own namespace, as libvirt wants (one element per namespace).

use std::collections::BTreeMap;

use crate::xml::Element;

/// Namespace of the `<metadata>` element that stores labels.
pub const METADATA_NS: &str = "https://virtrigaud.io/xmlns/libvirt/labels/1";

/// Namespace of the `<metadata>` element that maps disk targets (`vdb`) to the names the
/// create spec gave the disks (`data`).
pub const DISK_NAMES_NS: &str = "https://virtrigaud.io/xmlns/libvirt/disks/1";

/// The `<metadata>` element of a new domain: `labels`, and `disk_names` (target → spec name).
pub(crate) fn element(
    labels: &BTreeMap<String, String>,
    disk_names: &BTreeMap<String, String>,
) -> Element {
    let mut l = Element::new("vr:labels").attr("xmlns:vr", METADATA_NS);
    for (k, v) in labels {
        l = l.child(
            Element::new("vr:label")
                .attr("key", k.as_str())
                .attr("value", v.as_str()),
        );
    }
    let mut md = Element::new("metadata").child(l);
    if !disk_names.is_empty() {
        let mut d = Element::new("vrd:disks").attr("xmlns:vrd", DISK_NAMES_NS);
        for (target, name) in disk_names {
            d = d.child(
                Element::new("vrd:disk")
                    .attr("target", target.as_str())
                    .attr("name", name.as_str()),
            );
        }
        md = md.child(d);
    }
    md
}

/// The children of `dom`'s `<metadata>` named `*:{local}` in namespace `ns`.
fn in_namespace<'a>(dom: &'a Element, local: &'a str, ns: &'a str) -> Vec<&'a Element> {
    let Some(md) = dom.find("metadata") else {
        return Vec::new();
    };
    md.children
        .iter()
        .filter(|c| {
            c.name.rsplit(':').next() == Some(local)
                && c.attrs
                    .iter()
                    .any(|(k, v)| k.starts_with("xmlns") && v == ns)
        })
        .collect()
}

/// Labels stored in the domain's `<metadata>`.
pub(crate) fn labels(dom: &Element) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for l in in_namespace(dom, "labels", METADATA_NS) {
        for e in &l.children {
            if let (Some(k), Some(v)) = (e.get_attr("key"), e.get_attr("value")) {
                out.insert(k.to_owned(), v.to_owned());
            }
        }
    }
    out
}

/// The spec names of the domain's disks, by target (`vdb` → `data`); empty for a domain
/// made without them (by hand, or by an earlier version).
pub(crate) fn disk_names(dom: &Element) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for d in in_namespace(dom, "disks", DISK_NAMES_NS) {
        for e in &d.children {
            if let (Some(t), Some(n)) = (e.get_attr("target"), e.get_attr("name"))
                && !n.is_empty()
            {
                out.insert(t.to_owned(), n.to_owned());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_disk_names_round_trip_through_xml() {
        let want = BTreeMap::from([("set".to_string(), "a&b".to_string())]);
        let names = BTreeMap::from([
            ("vda".to_string(), "root".to_string()),
            ("vdb".to_string(), "data".to_string()),
        ]);
        let dom = Element::new("domain").child(element(&want, &names));
        let back = Element::parse(&dom.to_xml()).expect("parse");
        assert_eq!(labels(&back), want);
        assert_eq!(disk_names(&back), names);
    }

    #[test]
    fn a_domain_without_metadata_has_neither() {
        let dom = Element::parse("<domain><name>x</name></domain>").expect("parse");
        assert!(labels(&dom).is_empty());
        assert!(disk_names(&dom).is_empty());
        // Another namespace with the same local name is not ours.
        let other = Element::parse(
            "<domain><metadata><o:disks xmlns:o='urn:other'><o:disk target='vda' name='x'/>\
             </o:disks></metadata></domain>",
        )
        .expect("parse");
        assert!(disk_names(&other).is_empty());
    }
}
