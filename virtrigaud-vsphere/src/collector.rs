//! The property collector: reads of one object ([`Client::retrieve`]), of every object of a
//! type under a container (a container view), inventory-path lookups, the calls of a
//! collector read with `WaitForUpdatesEx` long polls (`create_collector`, `create_filter`,
//! `wait_for_updates`, [`object_updates`]; the shared power-state watch in `watch.rs` is built
//! on them), and [`Waiter`], a private collector for one object (task waits).

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
        let own = self.create_collector().await?;
        if let Err(e) = self.create_filter(&own, obj, paths).await {
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

    /// `CreatePropertyCollector`: a collector of this session.
    pub(crate) async fn create_collector(&self) -> Result<MoRef, VimError> {
        let pc = self.sc.property_collector.clone();
        let resp = self.call("CreatePropertyCollector", &pc, "").await?;
        resp.child("returnval")
            .and_then(MoRef::from_el)
            .ok_or_else(|| VimError::Protocol("CreatePropertyCollector returned nothing".into()))
    }

    /// `CreateFilter` on `collector` for `obj`'s `paths`; missing objects are reported in the
    /// updates (`reportMissingObjectsInResults`), so one deleted object does not fail the
    /// long polls of every other filter of the collector.
    pub(crate) async fn create_filter(
        &self,
        collector: &MoRef,
        obj: &MoRef,
        paths: &[&str],
    ) -> Result<MoRef, VimError> {
        let mut b = Xml::new();
        b.open("spec").open("propSet").el("type", &obj.ty);
        for p in paths {
            b.el("pathSet", p);
        }
        b.close("propSet")
            .open("objectSet")
            .moref("obj", &obj.ty, &obj.value)
            .close("objectSet")
            .el("reportMissingObjectsInResults", "true");
        b.close("spec").el("partialUpdates", "false");
        let resp = self.call("CreateFilter", collector, &b.finish()).await?;
        resp.child("returnval")
            .and_then(MoRef::from_el)
            .ok_or_else(|| VimError::Protocol("CreateFilter returned nothing".into()))
    }

    /// One `WaitForUpdatesEx` long poll on `collector` from `version` (`""`: the initial
    /// state). `Ok(None)` when nothing changed within the poll time.
    pub(crate) async fn wait_for_updates(
        &self,
        collector: &MoRef,
        version: &str,
    ) -> Result<Option<Element>, VimError> {
        let wait = self.wait_poll.as_secs().max(1);
        let mut b = Xml::new();
        b.el("version", version)
            .open("options")
            .el("maxWaitSeconds", &wait.to_string())
            .close("options");
        let resp = self
            .call_timeout(
                "WaitForUpdatesEx",
                collector,
                &b.finish(),
                Some(Duration::from_secs(wait + 5)),
            )
            .await?;
        Ok(resp.child("returnval").cloned())
    }
}

/// One object update of a `WaitForUpdatesEx` result.
#[derive(Debug)]
pub(crate) struct ObjectUpdate {
    pub(crate) obj: MoRef,
    /// `enter`, `modify` or `leave`.
    pub(crate) kind: String,
    pub(crate) changes: Changes,
}

/// The object updates of a `WaitForUpdatesEx` result in server order, and the objects its
/// filters report missing (`missingSet`).
pub(crate) fn object_updates(rv: &Element) -> (Vec<ObjectUpdate>, Vec<MoRef>) {
    let mut updates = Vec::new();
    let mut missing = Vec::new();
    for fs in rv.children_named("filterSet") {
        for os in fs.children_named("objectSet") {
            let Some(obj) = os.child("obj").and_then(MoRef::from_el) else {
                continue;
            };
            let mut changes = Vec::new();
            for cs in os.children_named("changeSet") {
                let Some(name) = cs.text_at("name") else {
                    continue;
                };
                let val = if cs.text_at("op") == Some("remove") {
                    None
                } else {
                    cs.child("val").cloned()
                };
                changes.push((name.to_owned(), val));
            }
            updates.push(ObjectUpdate {
                obj,
                kind: os.text_at("kind").unwrap_or("modify").to_owned(),
                changes,
            });
        }
        for ms in fs.children_named("missingSet") {
            if let Some(obj) = ms.child("obj").and_then(MoRef::from_el) {
                missing.push(obj);
            }
        }
    }
    (updates, missing)
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
        let r = self.client.wait_for_updates(&pc, &self.version).await;
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
        let Some(rv) = resp else {
            return Ok(None);
        };
        if let Some(v) = rv.text_at("version") {
            self.version = v.to_owned();
        }
        self.changes(&rv).map(Some)
    }

    /// The change groups of a `WaitForUpdatesEx` result; a `leave` (the object was removed)
    /// is `ManagedObjectNotFound`.
    fn changes(&self, rv: &Element) -> Result<Vec<Changes>, VimError> {
        let (updates, _) = object_updates(rv);
        let mut changes = Vec::new();
        for u in updates {
            if u.kind == "leave" {
                return Err(VimError::Fault(SoapFault::new(
                    "ManagedObjectNotFound",
                    format!("{} {} was removed", self.obj.ty, self.obj.value),
                )));
            }
            changes.push(u.changes);
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
