//! [`CoreCluster`]: the test apiserver serves no core `v1` or `storage.k8s.io` API, so the
//! nodes and storage classes a placement inventory reads are served by this tower layer,
//! read-only, from a fixed cluster: [`NODES`] (each `Ready`, 8 CPUs and 16 GiB allocatable,
//! in its own zone) and [`STORAGE_CLASSES`] (the first is the default class). Everything
//! else goes to the real apiserver.

use std::task::{Context, Poll};

use futures::future::BoxFuture;
use http::{Method, Request, StatusCode};
use kube::client::Body;
use serde_json::{Value, json};

use super::secrets::{Resp, response};

/// The nodes (`node-1` is where the fake controller runs VMIs without a node selector).
pub const NODES: [&str; 3] = ["node-1", "node-2", "node-3"];

/// The storage classes; the first is the default.
pub const STORAGE_CLASSES: [&str; 2] = ["standard", "fast"];

/// The tower layer serving `/api/v1/nodes` and `/apis/storage.k8s.io/v1/storageclasses`
/// (see the module docs).
#[derive(Debug, Clone, Copy, Default)]
pub struct CoreCluster;

impl<S> tower::Layer<S> for CoreCluster {
    type Service = CoreClusterService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        CoreClusterService { inner }
    }
}

/// The service made by [`CoreCluster`].
#[derive(Debug)]
pub struct CoreClusterService<S> {
    inner: S,
}

impl<S> tower::Service<Request<Body>> for CoreClusterService<S>
where
    S: tower::Service<Request<Body>, Response = Resp, Error = tower::BoxError>,
    S::Future: Send + 'static,
{
    type Response = Resp;
    type Error = tower::BoxError;
    type Future = BoxFuture<'static, Result<Resp, tower::BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let list = match req.uri().path() {
            "/api/v1/nodes" => Some(nodes()),
            "/apis/storage.k8s.io/v1/storageclasses" => Some(storage_classes()),
            _ => None,
        };
        match list {
            Some(v) if req.method() == Method::GET => {
                Box::pin(async move { Ok(response(StatusCode::OK, &v)) })
            }
            Some(_) => Box::pin(async move {
                let v = json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                    "status": "Failure", "reason": "MethodNotAllowed", "code": 405,
                    "message": "the test cluster's nodes and storage classes are read-only"});
                Ok(response(StatusCode::METHOD_NOT_ALLOWED, &v))
            }),
            None => Box::pin(self.inner.call(req)),
        }
    }
}

fn nodes() -> Value {
    let items: Vec<Value> = NODES
        .iter()
        .enumerate()
        .map(|(i, n)| {
            json!({"metadata": {"name": n, "labels": {
                    "kubernetes.io/hostname": n,
                    "topology.kubernetes.io/zone": format!("zone-{}", i + 1)}},
                "spec": {},
                "status": {"allocatable": {"cpu": "8", "memory": "16Gi"},
                    "conditions": [{"type": "Ready", "status": "True"}]}})
        })
        .collect();
    json!({"kind": "NodeList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"},
        "items": items})
}

fn storage_classes() -> Value {
    let items: Vec<Value> = STORAGE_CLASSES
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let default = if i == 0 { "true" } else { "false" };
            json!({"metadata": {"name": c, "annotations": {
                    "storageclass.kubernetes.io/is-default-class": default}},
                "provisioner": "virtrigaud.test/none"})
        })
        .collect();
    json!({"kind": "StorageClassList", "apiVersion": "storage.k8s.io/v1",
        "metadata": {"resourceVersion": "1"}, "items": items})
}
