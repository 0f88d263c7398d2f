//! [`CoreSecrets`]: the test apiserver is a standalone CRD apiserver, which serves no core
//! `v1` API, so the Secrets a customized clone keeps its user data in are served by this
//! tower layer, in memory (shared by every client in the process), with the apiserver's
//! answers: `201` with uid / resourceVersion / creationTimestamp on create, `404 NotFound`,
//! `409 AlreadyExists`, a uid precondition on delete (`409 Conflict`). Everything else goes to
//! the real apiserver. There is no garbage collector (as for every object on that server).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::future::BoxFuture;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use kube::client::{Body, DynBody};
use serde_json::{Value, json};

/// `(namespace, name)` → the stored Secret.
type Store = BTreeMap<(String, String), Value>;

fn store() -> &'static Mutex<Store> {
    static STORE: OnceLock<Mutex<Store>> = OnceLock::new();
    STORE.get_or_init(Mutex::default)
}

static NEXT: AtomicU64 = AtomicU64::new(1);

/// The tower layer serving `/api/v1/namespaces/{ns}/secrets[/{name}]` (see the module docs).
#[derive(Debug, Clone, Copy, Default)]
pub struct CoreSecrets;

impl CoreSecrets {
    /// The names of the Secrets stored in `ns`, sorted.
    pub fn names(ns: &str) -> Vec<String> {
        store()
            .lock()
            .unwrap()
            .keys()
            .filter(|(n, _)| n == ns)
            .map(|(_, name)| name.clone())
            .collect()
    }
}

impl<S> tower::Layer<S> for CoreSecrets {
    type Service = CoreSecretsService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        CoreSecretsService { inner }
    }
}

/// The service made by [`CoreSecrets`].
#[derive(Debug)]
pub struct CoreSecretsService<S> {
    inner: S,
}

pub(super) type Resp = Response<Box<DynBody>>;

impl<S> tower::Service<Request<Body>> for CoreSecretsService<S>
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
        let Some((ns, name)) = secret_path(req.uri().path()) else {
            return Box::pin(self.inner.call(req));
        };
        let method = req.method().clone();
        Box::pin(async move {
            let body = req.into_body().collect_bytes().await?;
            let (code, v) = serve(&method, &ns, name.as_deref(), &body);
            Ok(response(code, &v))
        })
    }
}

/// `(namespace, Some(name))` of a Secret path, `(namespace, None)` of the collection.
fn secret_path(path: &str) -> Option<(String, Option<String>)> {
    let rest = path.strip_prefix("/api/v1/namespaces/")?;
    let mut parts = rest.split('/');
    let ns = parts.next()?.to_owned();
    if parts.next()? != "secrets" {
        return None;
    }
    let name = parts.next().map(str::to_owned);
    parts.next().is_none().then_some((ns, name))
}

pub(super) fn response(code: StatusCode, v: &Value) -> Resp {
    let body = Full::new(Bytes::from(serde_json::to_vec(v).unwrap()))
        .map_err(|never| -> tower::BoxError { match never {} });
    Response::builder()
        .status(code)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Box::new(body) as Box<DynBody>)
        .unwrap()
}

fn status(code: StatusCode, reason: &str, message: String, name: &str) -> (StatusCode, Value) {
    let v = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "details": {"name": name, "kind": "secrets"},
        "code": code.as_u16()});
    (code, v)
}

fn serve(method: &Method, ns: &str, name: Option<&str>, body: &[u8]) -> (StatusCode, Value) {
    let mut st = store().lock().unwrap();
    match (method, name) {
        (&Method::POST, None) => {
            let Ok(mut obj) = serde_json::from_slice::<Value>(body) else {
                return status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "not a Secret".into(),
                    "",
                );
            };
            let name = obj
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let key = (ns.to_owned(), name.clone());
            if st.contains_key(&key) {
                return status(
                    StatusCode::CONFLICT,
                    "AlreadyExists",
                    format!("secrets \"{name}\" already exists"),
                    &name,
                );
            }
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            obj["apiVersion"] = json!("v1");
            obj["kind"] = json!("Secret");
            obj["metadata"]["namespace"] = json!(ns);
            obj["metadata"]["uid"] = json!(format!("00000000-0000-4000-8000-{n:012}"));
            obj["metadata"]["resourceVersion"] = json!(n.to_string());
            obj["metadata"]["creationTimestamp"] = json!(super::controller::now());
            st.insert(key, obj.clone());
            (StatusCode::CREATED, obj)
        }
        (&Method::GET, None) => {
            let items: Vec<Value> = st
                .iter()
                .filter(|((n, _), _)| n == ns)
                .map(|(_, v)| v.clone())
                .collect();
            (
                StatusCode::OK,
                json!({"kind": "SecretList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": items}),
            )
        }
        (&Method::GET, Some(name)) => match st.get(&(ns.to_owned(), name.to_owned())) {
            Some(v) => (StatusCode::OK, v.clone()),
            None => not_found(name),
        },
        (&Method::DELETE, Some(name)) => {
            let key = (ns.to_owned(), name.to_owned());
            let Some(have) = st.get(&key) else {
                return not_found(name);
            };
            let want = serde_json::from_slice::<Value>(body)
                .ok()
                .and_then(|b| b.pointer("/preconditions/uid").cloned())
                .filter(|u| !u.is_null());
            if let Some(u) = want
                && have.pointer("/metadata/uid") != Some(&u)
            {
                return status(
                    StatusCode::CONFLICT,
                    "Conflict",
                    format!("Precondition failed: UID in precondition: {u}"),
                    name,
                );
            }
            let gone = st.remove(&key).unwrap();
            (StatusCode::OK, gone)
        }
        _ => status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "the fake Secret API serves create, get, list and delete".into(),
            name.unwrap_or_default(),
        ),
    }
}

fn not_found(name: &str) -> (StatusCode, Value) {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("secrets \"{name}\" not found"),
        name,
    )
}
