//! A small XML tree for libvirt's domain, volume and snapshot documents.
//!
//! libvirt speaks XML; we need to read a few fields (disks, vCPUs, metadata labels) and rewrite
//! a few (clone: new name, no UUID/MACs, new disk sources). A tiny owned tree is simpler and more
//! robust than string surgery.

use quick_xml::Reader;
use quick_xml::events::Event;

use virtrigaud_core::{Error, Result};

/// An XML element: name, attributes in order, children, and text.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Element {
    /// Tag name (with prefix, if any).
    pub(crate) name: String,
    /// Attributes, in document order.
    pub(crate) attrs: Vec<(String, String)>,
    /// Child elements, in document order.
    pub(crate) children: Vec<Element>,
    /// Concatenated text content (trimmed).
    pub(crate) text: String,
}

impl Element {
    /// A new element named `name`.
    pub(crate) fn new(name: impl Into<String>) -> Self {
        Element {
            name: name.into(),
            ..Default::default()
        }
    }
    /// Builder: adds an attribute.
    pub(crate) fn attr(mut self, k: &str, v: impl Into<String>) -> Self {
        self.attrs.push((k.to_owned(), v.into()));
        self
    }
    /// Builder: sets the text.
    pub(crate) fn text(mut self, t: impl Into<String>) -> Self {
        self.text = t.into();
        self
    }
    /// Builder: adds a child.
    pub(crate) fn child(mut self, c: Element) -> Self {
        self.children.push(c);
        self
    }
    /// An attribute's value.
    pub(crate) fn get_attr(&self, k: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(a, _)| a == k)
            .map(|(_, v)| v.as_str())
    }
    /// Sets (or adds) an attribute.
    pub(crate) fn set_attr(&mut self, k: &str, v: impl Into<String>) {
        let v = v.into();
        match self.attrs.iter_mut().find(|(a, _)| a == k) {
            Some(slot) => slot.1 = v,
            None => self.attrs.push((k.to_owned(), v)),
        }
    }
    /// The first child named `name`.
    pub(crate) fn find(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }
    /// The first child named `name`, mutably.
    pub(crate) fn find_mut(&mut self, name: &str) -> Option<&mut Element> {
        self.children.iter_mut().find(|c| c.name == name)
    }
    /// The element at a `/`-separated path of child names.
    pub(crate) fn path(&self, path: &str) -> Option<&Element> {
        path.split('/').try_fold(self, |e, p| e.find(p))
    }
    /// All children named `name`.
    pub(crate) fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }
    /// Removes every child named `name`.
    pub(crate) fn remove_all(&mut self, name: &str) {
        self.children.retain(|c| c.name != name);
    }

    /// Parses a document and returns its root element.
    pub(crate) fn parse(xml: &str) -> Result<Element> {
        let mut reader = Reader::from_str(xml);
        let mut stack: Vec<Element> = Vec::new();
        let mut root: Option<Element> = None;
        let bad =
            |e: &dyn std::fmt::Display| Error::internal(format!("malformed XML from libvirt: {e}"));
        loop {
            match reader.read_event().map_err(|e| bad(&e))? {
                Event::Start(s) => stack.push(start_element(&s).map_err(|e| bad(&e))?),
                Event::Empty(s) => {
                    let el = start_element(&s).map_err(|e| bad(&e))?;
                    match stack.last_mut() {
                        Some(p) => p.children.push(el),
                        None => root = Some(el),
                    }
                }
                Event::End(_) => {
                    let mut el = stack.pop().ok_or_else(|| bad(&"unbalanced end tag"))?;
                    el.text = el.text.trim().to_owned();
                    match stack.last_mut() {
                        Some(p) => p.children.push(el),
                        None => root = Some(el),
                    }
                }
                Event::Text(t) => {
                    if let Some(p) = stack.last_mut() {
                        p.text.push_str(&t.decode().map_err(|e| bad(&e))?);
                    }
                }
                Event::CData(t) => {
                    if let Some(p) = stack.last_mut() {
                        p.text.push_str(&t.decode().map_err(|e| bad(&e))?);
                    }
                }
                Event::GeneralRef(r) => {
                    if let Some(p) = stack.last_mut() {
                        if let Some(c) = r.resolve_char_ref().map_err(|e| bad(&e))? {
                            p.text.push(c);
                        } else {
                            let name = r.decode().map_err(|e| bad(&e))?;
                            p.text.push_str(match &*name {
                                "amp" => "&",
                                "lt" => "<",
                                "gt" => ">",
                                "quot" => "\"",
                                "apos" => "'",
                                _ => "",
                            });
                        }
                    }
                }
                Event::Eof => break,
                _ => {}
            }
        }
        root.ok_or_else(|| bad(&"empty document"))
    }

    /// Serialises the element (no XML declaration).
    pub(crate) fn to_xml(&self) -> String {
        let mut out = String::new();
        self.write(&mut out, 0);
        out
    }

    fn write(&self, out: &mut String, depth: usize) {
        let pad = "  ".repeat(depth);
        out.push_str(&pad);
        out.push('<');
        out.push_str(&self.name);
        for (k, v) in &self.attrs {
            out.push_str(&format!(" {k}=\"{}\"", escape(v)));
        }
        if self.children.is_empty() && self.text.is_empty() {
            out.push_str("/>\n");
            return;
        }
        out.push('>');
        if self.children.is_empty() {
            out.push_str(&escape(&self.text));
        } else {
            out.push('\n');
            if !self.text.is_empty() {
                out.push_str(&escape(&self.text));
                out.push('\n');
            }
            for c in &self.children {
                c.write(out, depth + 1);
            }
            out.push_str(&pad);
        }
        out.push_str(&format!("</{}>\n", self.name));
    }
}

fn start_element(s: &quick_xml::events::BytesStart<'_>) -> std::result::Result<Element, String> {
    let name = String::from_utf8_lossy(s.name().as_ref()).into_owned();
    let mut el = Element::new(name);
    for a in s.attributes() {
        let a = a.map_err(|e| e.to_string())?;
        let k = String::from_utf8_lossy(a.key.as_ref()).into_owned();
        let v = a.unescape_value().map_err(|e| e.to_string())?.into_owned();
        el.attrs.push((k, v));
    }
    Ok(el)
}

/// Escapes text and attribute values.
pub(crate) fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c => o.push(c),
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_attributes_text_and_entities() {
        let x = "<domain type='qemu'><name>a&amp;b</name><devices><disk device='disk'>\
                 <source file='/x y'/></disk></devices><!-- c --></domain>";
        let d = Element::parse(x).expect("parse");
        assert_eq!(d.get_attr("type"), Some("qemu"));
        assert_eq!(d.find("name").map(|n| n.text.as_str()), Some("a&b"));
        assert_eq!(
            d.path("devices/disk/source")
                .and_then(|s| s.get_attr("file")),
            Some("/x y")
        );
        let again = Element::parse(&d.to_xml()).expect("reparse");
        assert_eq!(again, d);
    }

    #[test]
    fn malformed_xml_is_an_error_not_a_panic() {
        assert!(Element::parse("<a><b></a>").is_err());
        assert!(Element::parse("").is_err());
    }
}
