//! A tiny namespace-aware XML tree for SOAP replies, built on quick-xml's `NsReader`.
//!
//! vim25 replies are small; a tree keeps the typed decoding simple. Namespaces are resolved
//! for element names and for the `type` attribute of the XML Schema instance namespace, so
//! `xsi:type`, `XMLSchema-instance:type` (vcsim) or any other prefix all work.

use std::fmt::Write as _;

use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::reader::NsReader;

/// The XML Schema instance namespace (`xsi`).
pub(crate) const XSI_NS: &str = "http://www.w3.org/2001/XMLSchema-instance";
/// The SOAP 1.1 envelope namespace.
#[cfg(test)]
pub(crate) const SOAP_ENV_NS: &str = "http://schemas.xmlsoap.org/soap/envelope/";
/// The vim25 namespace.
#[cfg(test)]
pub(crate) const VIM25_NS: &str = "urn:vim25";

/// One element of a parsed document.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Element {
    /// Resolved namespace URI, if any.
    pub(crate) ns: Option<String>,
    /// Local name.
    pub(crate) name: String,
    /// Local part of a resolved `xsi:type` attribute (`VirtualMachinePowerState`, `string`).
    pub(crate) xsi_type: Option<String>,
    /// Other attributes by local name (`type` of a ManagedObjectReference).
    pub(crate) attrs: Vec<(String, String)>,
    /// Child elements in document order.
    pub(crate) children: Vec<Element>,
    /// Concatenated text content (not trimmed).
    pub(crate) text: String,
}

/// Why a document could not be parsed.
#[derive(Debug)]
pub(crate) struct XmlError(pub(crate) String);

impl std::fmt::Display for XmlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed XML: {}", self.0)
    }
}
impl std::error::Error for XmlError {}

impl Element {
    /// The first child with local name `name`.
    pub(crate) fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }
    /// All children with local name `name`.
    pub(crate) fn children_named<'a>(
        &'a self,
        name: &'a str,
    ) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }
    /// Follows a path of child names (`"info/state"`).
    pub(crate) fn path(&self, path: &str) -> Option<&Element> {
        let mut cur = self;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            cur = cur.child(part)?;
        }
        Some(cur)
    }
    /// The trimmed text of the child at `path`.
    pub(crate) fn text_at(&self, path: &str) -> Option<&str> {
        self.path(path).map(|e| e.text.trim())
    }
    /// The trimmed text of this element.
    pub(crate) fn text(&self) -> &str {
        self.text.trim()
    }
    /// An attribute by local name.
    pub(crate) fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

fn local_of(qname: &str) -> &str {
    qname.rsplit(':').next().unwrap_or(qname)
}

/// Parses a whole document and returns its root element.
pub(crate) fn parse(input: &str) -> Result<Element, XmlError> {
    let mut reader = NsReader::from_str(input);
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    let err = |e: &dyn std::fmt::Display| XmlError(e.to_string());
    loop {
        let (is_empty, start) = match reader.read_event().map_err(|e| err(&e))? {
            Event::Start(s) => (false, s),
            Event::Empty(s) => (true, s),
            Event::End(_) => {
                let done = stack
                    .pop()
                    .ok_or_else(|| XmlError("unbalanced end tag".into()))?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(done),
                    None => root = Some(done),
                }
                continue;
            }
            Event::Text(t) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&t.xml_content().map_err(|e| err(&e))?);
                }
                continue;
            }
            Event::CData(t) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&t.decode().map_err(|e| err(&e))?);
                }
                continue;
            }
            Event::GeneralRef(r) => {
                if let Some(top) = stack.last_mut() {
                    if let Some(ch) = r.resolve_char_ref().map_err(|e| err(&e))? {
                        top.text.push(ch);
                    } else {
                        let name = r.decode().map_err(|e| err(&e))?;
                        let value = quick_xml::escape::resolve_predefined_entity(&name)
                            .ok_or_else(|| XmlError(format!("unknown entity &{name};")))?;
                        top.text.push_str(value);
                    }
                }
                continue;
            }
            Event::Eof => break,
            _ => continue,
        };
        let (ns, local) = reader.resolve_element(start.name());
        let mut el = Element {
            ns: match ns {
                ResolveResult::Bound(n) => Some(String::from_utf8_lossy(n.as_ref()).into_owned()),
                _ => None,
            },
            name: String::from_utf8_lossy(local.as_ref()).into_owned(),
            ..Element::default()
        };
        for attr in start.attributes() {
            let attr = attr.map_err(|e| err(&e))?;
            let key = attr.key;
            if key.as_namespace_binding().is_some() {
                continue;
            }
            let (ans, alocal) = reader.resolve_attribute(key);
            let value = attr.unescape_value().map_err(|e| err(&e))?.into_owned();
            let alocal = String::from_utf8_lossy(alocal.as_ref()).into_owned();
            let is_xsi = matches!(ans, ResolveResult::Bound(n) if n.as_ref() == XSI_NS.as_bytes());
            if is_xsi && alocal == "type" {
                el.xsi_type = Some(local_of(&value).to_owned());
            } else if is_xsi {
                // xsi:nil and friends: not needed.
            } else {
                el.attrs.push((alocal, value));
            }
        }
        if is_empty {
            match stack.last_mut() {
                Some(parent) => parent.children.push(el),
                None => root = Some(el),
            }
        } else {
            stack.push(el);
        }
    }
    if !stack.is_empty() {
        return Err(XmlError("unexpected end of document".into()));
    }
    root.ok_or_else(|| XmlError("empty document".into()))
}

/// Escapes text for element content or attribute values.
pub(crate) fn esc(s: &str) -> std::borrow::Cow<'_, str> {
    quick_xml::escape::escape(s)
}

/// A small builder for request bodies.
#[derive(Debug, Default)]
pub(crate) struct Xml(pub(crate) String);

impl Xml {
    /// Starts a builder.
    pub(crate) fn new() -> Self {
        Xml(String::with_capacity(256))
    }
    /// `<name>text</name>`.
    pub(crate) fn el(&mut self, name: &str, text: &str) -> &mut Self {
        let _ = write!(self.0, "<{name}>{}</{name}>", esc(text));
        self
    }
    /// `<name>text</name>` when `text` is Some.
    pub(crate) fn opt(&mut self, name: &str, text: Option<&str>) -> &mut Self {
        if let Some(t) = text {
            self.el(name, t);
        }
        self
    }
    /// `<name type="ty">value</name>` (a managed object reference).
    pub(crate) fn moref(&mut self, name: &str, ty: &str, value: &str) -> &mut Self {
        let _ = write!(
            self.0,
            "<{name} type=\"{}\">{}</{name}>",
            esc(ty),
            esc(value)
        );
        self
    }
    /// `<name xsi:type="ty">` (open, typed).
    pub(crate) fn open_typed(&mut self, name: &str, ty: &str) -> &mut Self {
        let _ = write!(self.0, "<{name} xsi:type=\"{ty}\">");
        self
    }
    /// `<name>` (open).
    pub(crate) fn open(&mut self, name: &str) -> &mut Self {
        let _ = write!(self.0, "<{name}>");
        self
    }
    /// `</name>`.
    pub(crate) fn close(&mut self, name: &str) -> &mut Self {
        let _ = write!(self.0, "</{name}>");
        self
    }
    /// Raw, already escaped XML.
    pub(crate) fn raw(&mut self, xml: &str) -> &mut Self {
        self.0.push_str(xml);
        self
    }
    /// The built string.
    pub(crate) fn finish(&mut self) -> String {
        std::mem::take(&mut self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_locally_declared_xsi_prefix() {
        let doc = r#"<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body>
<RetrievePropertiesExResponse xmlns="urn:vim25"><returnval><objects><obj type="VirtualMachine">vm-57</obj>
<propSet><name>runtime.powerState</name><val xmlns:XMLSchema-instance="http://www.w3.org/2001/XMLSchema-instance" XMLSchema-instance:type="VirtualMachinePowerState">poweredOn</val></propSet>
<propSet><name>name</name><val xmlns:x="http://www.w3.org/2001/XMLSchema-instance" x:type="xsd:string">a &amp; b&#33;</val></propSet>
</objects></returnval></RetrievePropertiesExResponse></soapenv:Body></soapenv:Envelope>"#;
        let root = parse(doc).expect("parse");
        assert_eq!(root.ns.as_deref(), Some(SOAP_ENV_NS));
        let resp = root
            .child("Body")
            .and_then(|b| b.children.first())
            .expect("resp");
        assert_eq!(resp.ns.as_deref(), Some(VIM25_NS));
        let objs = resp.path("returnval/objects").expect("objects");
        assert_eq!(
            objs.child("obj").and_then(|o| o.attr("type")),
            Some("VirtualMachine")
        );
        let vals: Vec<_> = objs
            .children_named("propSet")
            .map(|p| p.child("val").expect("val"))
            .collect();
        assert_eq!(
            vals[0].xsi_type.as_deref(),
            Some("VirtualMachinePowerState")
        );
        assert_eq!(vals[0].text(), "poweredOn");
        assert_eq!(vals[1].xsi_type.as_deref(), Some("string"));
        assert_eq!(vals[1].text(), "a & b!");
        // An attribute named `type` in another namespace is not the xsi type.
        assert!(
            parse(r#"<a xmlns:q="urn:other" q:type="X"/>"#)
                .expect("p")
                .xsi_type
                .is_none()
        );
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse("<a><b></a>").is_err());
        assert!(parse("").is_err());
    }
}
