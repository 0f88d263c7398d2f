//! [`FakeCdi`]: CDI's DataVolume controller and importer for one namespace, played by the
//! test process: a DataVolume with an HTTP source is fetched here (reqwest), with CDI's
//! status protocol (`ImportScheduled` → `ImportInProgress` with `progress` → `Succeeded`,
//! `restartCount` counting importer restarts after HTTP errors, `Failed` on a checksum
//! mismatch); a stalled body simply stops progressing. Also [`serve_image`], a tiny HTTP
//! server for the tests.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, Patch};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use sha2::{Digest, Sha256, Sha512};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use super::pp;
use crate::types::DataVolume;

/// The fake CDI for one namespace (stopped, with its imports, when dropped).
#[derive(Debug)]
pub struct FakeCdi {
    task: tokio::task::JoinHandle<()>,
    /// HTTP GETs the importer sent (every attempt counts).
    pub fetches: Arc<AtomicU32>,
}

impl Drop for FakeCdi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeCdi {
    /// Starts the controller for DataVolumes in `ns`.
    pub fn start(client: Client, ns: &str) -> Self {
        let api: Api<DataVolume> = Api::namespaced(client, ns);
        let fetches = Arc::new(AtomicU32::new(0));
        let task = tokio::spawn(run(api, Arc::clone(&fetches)));
        FakeCdi { task, fetches }
    }
}

async fn run(api: Api<DataVolume>, fetches: Arc<AtomicU32>) {
    let mut imports = JoinSet::new();
    let mut started = HashSet::new();
    let mut events = watcher(api.clone(), watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .boxed();
    while let Some(ev) = events.next().await {
        let Ok(dv) = ev else { continue };
        let phase = dv.status.as_ref().and_then(|s| s.phase.clone());
        if matches!(phase.as_deref(), Some("Succeeded" | "Failed")) {
            continue;
        }
        let Some(uid) = dv.metadata.uid.clone() else {
            continue;
        };
        let Some(http) = dv.spec.source.as_ref().and_then(|s| s.http.clone()) else {
            continue;
        };
        if !started.insert(uid.clone()) {
            continue;
        }
        let import = Import {
            api: api.clone(),
            name: dv.name_any(),
            uid,
            url: http.url,
            checksum: http.checksum,
            fetches: Arc::clone(&fetches),
        };
        imports.spawn(import.run());
        while imports.try_join_next().is_some() {}
    }
}

struct Import {
    api: Api<DataVolume>,
    name: String,
    uid: String,
    url: String,
    checksum: Option<String>,
    fetches: Arc<AtomicU32>,
}

/// How one importer attempt ended.
enum Attempt {
    /// The body arrived whole: its digest (of the checksum's algorithm, if any).
    Fetched(Option<String>),
    /// An HTTP error: the importer pod fails and restarts.
    Error(String),
    /// The DataVolume is gone (or replaced).
    Gone,
}

enum Hasher {
    Sha256(Sha256),
    Sha512(Sha512),
}

impl Import {
    async fn status(&self, status: Value) {
        let _ = self
            .api
            .patch_status(
                &self.name,
                &pp(),
                &Patch::Merge(json!({ "status": status })),
            )
            .await;
    }

    /// Whether our DataVolume still exists.
    async fn alive(&self) -> bool {
        matches!(self.api.get_opt(&self.name).await,
            Ok(Some(dv)) if dv.metadata.uid.as_deref() == Some(self.uid.as_str()))
    }

    async fn run(self) {
        let mut restarts = 0;
        loop {
            if !self.alive().await {
                return;
            }
            self.status(
                json!({"phase": "ImportScheduled", "progress": "N/A", "restartCount": restarts,
                "claimName": self.name,
                "conditions": [{"type": "Bound", "status": "True", "reason": "Bound"},
                               {"type": "Ready", "status": "False"},
                               {"type": "Running", "status": "False", "reason": "Pending"}]}),
            )
            .await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            match self.attempt().await {
                Attempt::Gone => return,
                Attempt::Error(msg) => {
                    restarts += 1;
                    self.status(json!({"phase": "ImportInProgress", "restartCount": restarts,
                        "conditions": [{"type": "Bound", "status": "True", "reason": "Bound"},
                                       {"type": "Ready", "status": "False"},
                                       {"type": "Running", "status": "False", "reason": "Error", "message": msg}]}))
                        .await;
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                Attempt::Fetched(digest) => {
                    let expected = self.checksum.as_deref();
                    if let (Some(want), Some(got)) = (expected, digest.as_deref())
                        && !want.eq_ignore_ascii_case(got)
                    {
                        let msg = format!("checksum mismatch: expected {want}, got {got}");
                        self.status(json!({"phase": "Failed", "restartCount": restarts,
                            "conditions": [{"type": "Bound", "status": "True", "reason": "Bound"},
                                           {"type": "Ready", "status": "False", "reason": "Error", "message": msg},
                                           {"type": "Running", "status": "False", "reason": "Error", "message": msg}]}))
                            .await;
                        return;
                    }
                    self.status(json!({"phase": "Succeeded", "progress": "100.0%", "restartCount": restarts,
                        "conditions": [{"type": "Bound", "status": "True", "reason": "Bound"},
                                       {"type": "Ready", "status": "True"},
                                       {"type": "Running", "status": "False", "reason": "Completed"}]}))
                        .await;
                    return;
                }
            }
        }
    }

    async fn attempt(&self) -> Attempt {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        let resp = match reqwest::get(&self.url).await {
            Ok(r) => r,
            Err(e) => return Attempt::Error(format!("Unable to connect to http data source: {e}")),
        };
        if !resp.status().is_success() {
            return Attempt::Error(format!(
                "Unable to connect to http data source: expected status code 200, got {}",
                resp.status().as_u16()
            ));
        }
        let total = resp.content_length();
        let mut hasher = match self.checksum.as_deref().and_then(|c| c.split_once(':')) {
            Some(("sha512", _)) => Some(Hasher::Sha512(Sha512::new())),
            Some(_) => Some(Hasher::Sha256(Sha256::new())),
            None => None,
        };
        self.status(json!({"phase": "ImportInProgress", "progress": "0.00%",
            "conditions": [{"type": "Bound", "status": "True", "reason": "Bound"},
                           {"type": "Ready", "status": "False"},
                           {"type": "Running", "status": "True", "reason": "Pod is running"}]}))
            .await;
        let mut body = resp.bytes_stream();
        let mut got = 0u64;
        let mut reported = 0u64;
        loop {
            match tokio::time::timeout(Duration::from_secs(1), body.next()).await {
                // A stalled body: no progress; stop once the DataVolume is gone.
                Err(_) => {
                    if !self.alive().await {
                        return Attempt::Gone;
                    }
                }
                Ok(None) => break,
                Ok(Some(Err(e))) => {
                    return Attempt::Error(format!("error reading the http data source: {e}"));
                }
                Ok(Some(Ok(chunk))) => {
                    got += chunk.len() as u64;
                    match &mut hasher {
                        Some(Hasher::Sha256(h)) => h.update(&chunk),
                        Some(Hasher::Sha512(h)) => h.update(&chunk),
                        None => {}
                    }
                    if let Some(t) = total.filter(|t| *t > 0)
                        && got - reported >= 256 << 10
                    {
                        reported = got;
                        #[allow(clippy::cast_precision_loss)]
                        let pct = got as f64 * 100.0 / t as f64;
                        self.status(json!({"progress": format!("{pct:.2}%")})).await;
                    }
                }
            }
        }
        if total.is_some_and(|t| t != got) {
            return Attempt::Error(format!("unexpected EOF after {got} bytes"));
        }
        Attempt::Fetched(hasher.map(|h| match h {
            Hasher::Sha256(h) => format!("sha256:{}", hex::encode(h.finalize())),
            Hasher::Sha512(h) => format!("sha512:{}", hex::encode(h.finalize())),
        }))
    }
}

/// How [`serve_image`] answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serve {
    /// The bytes, whole.
    Whole,
    /// `503 Service Unavailable`, every time.
    Unavailable,
    /// Half the bytes, then nothing more (the connection stays open).
    Stall,
}

/// Serves `data` at `http://127.0.0.1:<port>/image.raw` (HTTP/1.1, `HEAD` answered with the
/// length); returns the URL and a count of requests.
pub async fn serve_image(data: Vec<u8>, how: Serve) -> (String, Arc<AtomicU32>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/image.raw", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicU32::new(0));
    let counter = Arc::clone(&hits);
    let data = Arc::new(data);
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            let data = Arc::clone(&data);
            tokio::spawn(async move {
                let (rd, mut wr) = sock.into_split();
                let mut rd = BufReader::new(rd);
                let mut first = String::new();
                if rd.read_line(&mut first).await.unwrap_or(0) == 0 {
                    return;
                }
                loop {
                    let mut line = String::new();
                    if rd.read_line(&mut line).await.unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                }
                if how == Serve::Unavailable {
                    let _ = wr
                        .write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                        .await;
                    return;
                }
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    data.len()
                );
                if wr.write_all(head.as_bytes()).await.is_err() || first.starts_with("HEAD ") {
                    return;
                }
                if how == Serve::Stall {
                    let _ = wr.write_all(&data[..data.len() / 2]).await;
                    let _ = wr.flush().await;
                    let mut rest = Vec::new();
                    let _ = tokio::io::AsyncReadExt::read_to_end(&mut rd, &mut rest).await;
                    return;
                }
                let _ = wr.write_all(&data).await;
            });
        }
    });
    (url, hits)
}
