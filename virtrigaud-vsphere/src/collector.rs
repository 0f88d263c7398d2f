//! The property collector: reads of one object ([`Client::retrieve`]), of every object of a
//! type under a container (a container view), inventory-path lookups, and [`Waiter`], a
//! private collector read with `WaitForUpdatesEx` long polls (the push-based watch).

use std::sync::Arc;
use std::time::Duration;

use crate::client::Client;
use crate::error::{SoapFault, VimError};
use crate::types::{Changes, MoRef, Props};
use crate::xml::{Element, Xml};

impl Client {
    /// Reads `paths` of one object. Returns `(path, value)` pairs for the paths that are set.
    pub(crate) async fn retrieve(&self, obj: &MoRef, paths: &[&str]) -> Result<Props, VimError> {
        let mut b = Xml::new();
        b.open("specSet").open("propSet").el("type", &obj.ty);
        for p in paths {
            b.el("pathSet", p);
        }
        b.close("propSet")
            .open("objectSet")
            .moref("obj", &obj.ty, &obj.value)
            .close("objectSet");
        b.close("specSet").raw("<options/>");
        let pc = self.sc.property_collector.clone();
        let resp = self.call("RetrievePropertiesEx", &pc, &b.finish()).await?;
        let objects = resp.child("returnval").and_then(|r| r.child("objects"));
        let Some(objects) = objects else {
            return Err(VimError::Fault(SoapFault::new(
                "ManagedObjectNotFound",
                format!("{} {} not found", obj.ty, obj.value),
            )));
        };
        Ok(Props::from_object(objects))
    }

    /// Names and morefs of all objects of `ty` under the root folder (container view).
    pub(crate) async fn list_by_type(
        &self,
        ty: &str,
        paths: &[&str],
    ) -> Result<Vec<(MoRef, Props)>, VimError> {
        let root = self.sc.root_folder.clone();
        self.list_in(&root, ty, paths).await
    }

    /// Morefs and properties of all objects of `ty` under `container` (recursive container view).
    pub(crate) async fn list_in(
        &self,
        container: &MoRef,
        ty: &str,
        paths: &[&str],
    ) -> Result<Vec<(MoRef, Props)>, VimError> {
        let mut b = Xml::new();
        let root = container;
        b.moref("container", &root.ty, &root.value)
            .el("type", ty)
            .el("recursive", "true");
        let vm_ = self.sc.view_manager.clone();
        let resp = self.call("CreateContainerView", &vm_, &b.finish()).await?;
        let view = resp
            .child("returnval")
            .and_then(MoRef::from_el)
            .ok_or_else(|| VimError::Protocol("CreateContainerView returned no view".into()))?;
        let out = self.collect_view(&view, ty, paths).await;
        let _ = self.call("DestroyView", &view, "").await;
        out
    }

    async fn collect_view(
        &self,
        view: &MoRef,
        ty: &str,
        paths: &[&str],
    ) -> Result<Vec<(MoRef, Props)>, VimError> {
        let mut b = Xml::new();
        b.open("specSet").open("propSet").el("type", ty);
        for p in paths {
            b.el("pathSet", p);
        }
        b.close("propSet");
        b.open("objectSet")
            .moref("obj", &view.ty, &view.value)
            .el("skip", "true");
        b.open_typed("selectSet", "TraversalSpec")
            .el("name", "view")
            .el("type", "ContainerView")
            .el("path", "view")
            .el("skip", "false")
            .close("selectSet");
        b.close("objectSet").close("specSet").raw("<options/>");
        let pc = self.sc.property_collector.clone();
        let mut resp = self.call("RetrievePropertiesEx", &pc, &b.finish()).await?;
        let mut out = Vec::new();
        while let Some(rv) = resp.child("returnval") {
            for o in rv.children_named("objects") {
                let Some(obj) = o.child("obj").and_then(MoRef::from_el) else {
                    continue;
                };
                out.push((obj, Props::from_object(o)));
            }
            let Some(token) = rv
                .text_at("token")
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
            else {
                break;
            };
            let mut b = Xml::new();
            b.el("token", &token);
            resp = self
                .call("ContinueRetrievePropertiesEx", &pc, &b.finish())
                .await?;
        }
        Ok(out)
    }

    /// `SearchIndex.FindByInventoryPath`.
    pub(crate) async fn find_by_inventory_path(
        &self,
        path: &str,
    ) -> Result<Option<MoRef>, VimError> {
        let mut b = Xml::new();
        b.el("inventoryPath", path);
        let si = self.sc.search_index.clone();
        let resp = self.call("FindByInventoryPath", &si, &b.finish()).await?;
        Ok(resp.child("returnval").and_then(MoRef::from_el))
    }

    /// A private property collector with one filter on `obj`'s `paths`.
    pub(crate) async fn waiter(
        self: &Arc<Self>,
        obj: &MoRef,
        paths: &[&str],
    ) -> Result<Waiter, VimError> {
        let pc = self.sc.property_collector.clone();
        let resp = self.call("CreatePropertyCollector", &pc, "").await?;
        let own = resp
            .child("returnval")
            .and_then(MoRef::from_el)
            .ok_or_else(|| VimError::Protocol("CreatePropertyCollector returned nothing".into()))?;
        let mut b = Xml::new();
        b.open("spec").open("propSet").el("type", &obj.ty);
        for p in paths {
            b.el("pathSet", p);
        }
        b.close("propSet")
            .open("objectSet")
            .moref("obj", &obj.ty, &obj.value)
            .close("objectSet");
        b.close("spec").el("partialUpdates", "false");
        if let Err(e) = self.call("CreateFilter", &own, &b.finish()).await {
            let _ = self.call("DestroyPropertyCollector", &own, "").await;
            return Err(e);
        }
        Ok(Waiter {
            client: Arc::clone(self),
            pc: Some(own),
            version: String::new(),
            obj: obj.clone(),
            paths: paths.iter().map(|p| (*p).to_owned()).collect(),
            generation: self.generation(),
        })
    }
}

/// A private property collector with a filter, read with `WaitForUpdatesEx`.
#[derive(Debug)]
pub(crate) struct Waiter {
    client: Arc<Client>,
    pc: Option<MoRef>,
    version: String,
    obj: MoRef,
    paths: Vec<String>,
    generation: u64,
}

impl Waiter {
    /// One long poll. `Ok(None)` when nothing changed within the poll time; otherwise the
    /// changed properties, one group per object update in server order (the server may batch
    /// several updates, e.g. off then on again; the first call returns the current values).
    pub(crate) async fn next(&mut self) -> Result<Option<Vec<Changes>>, VimError> {
        let Some(pc) = self.pc.clone() else {
            return Err(VimError::Protocol("waiter destroyed".into()));
        };
        let wait = self.client.wait_poll.as_secs().max(1);
        let mut b = Xml::new();
        b.el("version", &self.version)
            .open("options")
            .el("maxWaitSeconds", &wait.to_string())
            .close("options");
        let body = b.finish();
        let r = self
            .client
            .call_timeout(
                "WaitForUpdatesEx",
                &pc,
                &body,
                Some(Duration::from_secs(wait + 5)),
            )
            .await;
        let resp = match r {
            Ok(r) => r,
            Err(e)
                if self.client.generation() != self.generation
                    || e.is_fault("ManagedObjectNotFound")
                    || e.is_fault("InvalidCollectorVersion") =>
            {
                // The session was replaced (re-login): private collectors died with it.
                // Build a new one; its first update reports the current values again.
                tracing::debug!(error = %e, "recreating the property collector after a session change");
                let paths: Vec<&str> = self.paths.iter().map(String::as_str).collect();
                let mut fresh = self.client.waiter(&self.obj, &paths).await?;
                self.pc = fresh.pc.take();
                self.version = String::new();
                self.generation = fresh.generation;
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let Some(rv) = resp.child("returnval") else {
            return Ok(None);
        };
        if let Some(v) = rv.text_at("version") {
            self.version = v.to_owned();
        }
        self.changes(rv).map(Some)
    }

    /// The change groups of a `WaitForUpdatesEx` result; a `leave` (the object was removed)
    /// is `ManagedObjectNotFound`.
    fn changes(&self, rv: &Element) -> Result<Vec<Changes>, VimError> {
        let mut changes = Vec::new();
        for fs in rv.children_named("filterSet") {
            for os in fs.children_named("objectSet") {
                if os.text_at("kind") == Some("leave") {
                    return Err(VimError::Fault(SoapFault::new(
                        "ManagedObjectNotFound",
                        format!("{} {} was removed", self.obj.ty, self.obj.value),
                    )));
                }
                let mut group = Vec::new();
                for cs in os.children_named("changeSet") {
                    let Some(name) = cs.text_at("name") else {
                        continue;
                    };
                    let val = if cs.text_at("op") == Some("remove") {
                        None
                    } else {
                        cs.child("val").cloned()
                    };
                    group.push((name.to_owned(), val));
                }
                changes.push(group);
            }
        }
        Ok(changes)
    }

    /// Destroys the private collector (best effort).
    pub(crate) async fn destroy(&mut self) {
        if let Some(pc) = self.pc.take() {
            let _ = self.client.call("DestroyPropertyCollector", &pc, "").await;
        }
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        if let Some(pc) = self.pc.take() {
            let client = Arc::clone(&self.client);
            if let Ok(h) = tokio::runtime::Handle::try_current() {
                h.spawn(async move {
                    let _ = client.call("DestroyPropertyCollector", &pc, "").await;
                });
            }
        }
    }
}
