//! The vim25 values every layer passes around: [`MoRef`] (a managed object reference) and
//! [`Props`] (property values by path, as the property collector returns them).

use crate::xml::Element;

/// A managed object reference (`<obj type="VirtualMachine">vm-57</obj>`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct MoRef {
    pub(crate) ty: String,
    pub(crate) value: String,
}

impl MoRef {
    pub(crate) fn new(ty: &str, value: &str) -> Self {
        MoRef {
            ty: ty.to_owned(),
            value: value.to_owned(),
        }
    }
    pub(crate) fn vm(value: &str) -> Self {
        MoRef::new("VirtualMachine", value)
    }
    /// Reads a moref from an element with a `type` attribute (or an xsi:type of
    /// `ManagedObjectReference` plus `type`).
    pub(crate) fn from_el(el: &Element) -> Option<Self> {
        let ty = el.attr("type")?;
        let v = el.text();
        if v.is_empty() {
            return None;
        }
        Some(MoRef::new(ty, v))
    }
    /// The moref a `*_Task` result names: a typed reference, or a bare VM id (`vm-57`).
    pub(crate) fn from_result(el: &Element) -> Option<Self> {
        MoRef::from_el(el)
            .or_else(|| Some(MoRef::vm(el.text())))
            .filter(|m| !m.value.is_empty())
    }
}

/// Property values by path.
#[derive(Debug, Clone, Default)]
pub(crate) struct Props(pub(crate) Vec<(String, Element)>);

impl Props {
    /// The `propSet` entries of an `ObjectContent` element.
    pub(crate) fn from_object(object: &Element) -> Self {
        let mut props = Props::default();
        for ps in object.children_named("propSet") {
            if let (Some(n), Some(v)) = (ps.text_at("name"), ps.child("val")) {
                props.0.push((n.to_owned(), v.clone()));
            }
        }
        props
    }
    pub(crate) fn get(&self, path: &str) -> Option<&Element> {
        self.0.iter().rev().find(|(n, _)| n == path).map(|(_, v)| v)
    }
    pub(crate) fn str(&self, path: &str) -> Option<&str> {
        self.get(path).map(Element::text)
    }
    pub(crate) fn bool(&self, path: &str) -> Option<bool> {
        self.str(path).map(|s| s == "true")
    }
    pub(crate) fn u64(&self, path: &str) -> Option<u64> {
        self.str(path).and_then(|s| s.parse().ok())
    }
    /// Applies changes from an update (`None` = removed).
    pub(crate) fn apply(&mut self, changes: Changes) {
        for (name, val) in changes {
            self.0.retain(|(n, _)| *n != name);
            if let Some(v) = val {
                self.0.push((name, v));
            }
        }
    }
}

/// Property changes of one object update: `(path, new value or None when removed)`.
pub(crate) type Changes = Vec<(String, Option<Element>)>;

/// The text of each child of a list-valued property (`datastore`: `[datastore-1, …]`).
pub(crate) fn refs(el: Option<&Element>) -> Vec<String> {
    el.map(|e| e.children.iter().map(|c| c.text().to_owned()).collect())
        .unwrap_or_default()
}
