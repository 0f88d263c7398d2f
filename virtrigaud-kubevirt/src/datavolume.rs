//! The DataVolume operations behind [`crate::DataVolumeImageSink`]: the object a fetch
//! creates, lookup, removal, and reading CDI's status as a transfer state.

use std::collections::BTreeMap;
use std::sync::Arc;

use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use virtrigaud_core::orchestration::image::{
    ImageRef, ImageTarget, RemoteSource, TransferProgress, TransferState,
};
use virtrigaud_core::{Error, ErrorKind, Result};

use crate::PROVIDER_TYPE;
use crate::client::Connection;
use crate::error::to_core_error;
use crate::image::{
    DEFAULT_IMAGE_PVC_SIZE, DataVolumeImageSink, DataVolumeTransfer, IMAGE_SIZE_ANNOTATION,
    PVC_IMAGE_PREFIX,
};
use crate::quantity::quantity_to_mib;
use crate::types::{
    DataVolume, DataVolumeSource, DataVolumeSourceHttp, DataVolumeSpec, DataVolumeStorage,
    find_condition, meta,
};

/// CDI's annotation asking for immediate binding on `WaitForFirstConsumer` storage.
const BIND_IMMEDIATE: &str = "cdi.kubevirt.io/storage.bind.immediate.requested";

const GIB: u64 = 1 << 30;

/// The DataVolume name of `target`: its name, which must be a DNS-1123 label.
fn dv_name(target: &ImageTarget) -> Result<&str> {
    let n = target.name.as_str();
    let ok = !n.is_empty()
        && n.len() <= 63
        && n.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !n.starts_with('-')
        && !n.ends_with('-');
    if ok {
        Ok(n)
    } else {
        Err(Error::invalid_spec(format!(
            "image name {n:?} is not a valid DataVolume name (metadata.name: at most 63 \
             lower-case letters, digits and '-', starting and ending with a letter or digit)"
        ))
        .context_for(PROVIDER_TYPE, "image_prepare", Some(n)))
    }
}

fn api(conn: &Connection, ns: &str) -> Api<DataVolume> {
    conn.api::<DataVolume>(ns)
}

/// The PVC size to request (see [`DataVolumeImageSink::with_size`]).
pub(crate) fn pvc_size(configured: Option<u64>, hint: Option<u64>, format: Option<&str>) -> u64 {
    if let Some(s) = configured {
        return s.max(1);
    }
    match hint {
        Some(h) => {
            let rounded = h.div_ceil(GIB).max(1).saturating_mul(GIB);
            let raw = format.is_some_and(|f| f.trim().eq_ignore_ascii_case("raw"));
            if raw {
                rounded
            } else {
                rounded.max(DEFAULT_IMAGE_PVC_SIZE)
            }
        }
        None => DEFAULT_IMAGE_PVC_SIZE,
    }
}

/// A byte count as a Kubernetes quantity (`"1Gi"` when it is whole GiB, else plain bytes).
fn quantity(bytes: u64) -> String {
    if bytes.is_multiple_of(GIB) {
        format!("{}Gi", bytes / GIB)
    } else {
        bytes.to_string()
    }
}

/// The DataVolume that fetches `source` into `name`.
pub(crate) fn datavolume_object(
    sink: &DataVolumeImageSink,
    target: &ImageTarget,
    name: &str,
    source: &RemoteSource,
) -> DataVolume {
    let size = pvc_size(sink.size, source.size_hint, target.format.as_deref());
    let mut dv = DataVolume::new(
        name,
        DataVolumeSpec {
            source: Some(DataVolumeSource {
                http: Some(DataVolumeSourceHttp {
                    url: source.url.clone(),
                    checksum: source.checksum.as_ref().map(ToString::to_string),
                    extra: Default::default(),
                }),
                extra: Default::default(),
            }),
            storage: Some(DataVolumeStorage {
                resources: Some(serde_json::json!({"requests": {"storage": quantity(size)}})),
                storage_class_name: target
                    .storage
                    .clone()
                    .or_else(|| sink.storage_class.clone()),
                extra: Default::default(),
            }),
            extra: Default::default(),
        },
    );
    dv.metadata = meta(
        name,
        &sink.conn.namespace,
        BTreeMap::from([(
            "app.kubernetes.io/managed-by".to_owned(),
            "virtrigaud".to_owned(),
        )]),
    );
    let mut ann = BTreeMap::from([(BIND_IMMEDIATE.to_owned(), "true".to_owned())]);
    if let Some(n) = source.size_hint {
        ann.insert(IMAGE_SIZE_ANNOTATION.to_owned(), n.to_string());
    }
    dv.metadata.annotations = Some(ann);
    dv
}

/// The stored image's size: the annotation, else the PVC's requested size.
fn size_of(dv: &DataVolume) -> u64 {
    let annotated = dv
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(IMAGE_SIZE_ANNOTATION))
        .and_then(|v| v.trim().parse().ok());
    annotated.unwrap_or_else(|| {
        dv.spec
            .storage
            .as_ref()
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r["requests"]["storage"].as_str())
            .and_then(quantity_to_mib)
            .map_or(0, |mib| mib.saturating_mul(1 << 20))
    })
}

fn phase(dv: &DataVolume) -> &str {
    dv.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// `pvc:<namespace>/<name>`: the PVC CDI fills (named as the DataVolume), which a create
/// spec's `image` takes to clone its root disk from.
fn reference(dv: &DataVolume, ns: &str) -> String {
    format!(
        "{PVC_IMAGE_PREFIX}{ns}/{}",
        dv.metadata.name.as_deref().unwrap_or_default()
    )
}

/// `GET` the DataVolume: a `Succeeded` one is the image.
pub(crate) async fn lookup(
    sink: &DataVolumeImageSink,
    target: &ImageTarget,
) -> Result<Option<ImageRef>> {
    let name = dv_name(target)?;
    let ns = &sink.conn.namespace;
    let res = format!("{ns}/{name}");
    let dv = api(&sink.conn, ns)
        .get_opt(name)
        .await
        .map_err(|e| to_core_error(e, "image_lookup", Some(&res)))?;
    Ok(dv
        .filter(|dv| phase(dv) == "Succeeded")
        .map(|dv| ImageRef::new(reference(&dv, ns), size_of(&dv))))
}

/// `DELETE` the DataVolume (a missing one is fine).
pub(crate) async fn remove(sink: &DataVolumeImageSink, target: &ImageTarget) -> Result<()> {
    let name = dv_name(target)?;
    let ns = &sink.conn.namespace;
    delete(&sink.conn, ns, name, None, "image_remove").await
}

async fn delete(
    conn: &Connection,
    ns: &str,
    name: &str,
    uid: Option<String>,
    op: &'static str,
) -> Result<()> {
    let res = format!("{ns}/{name}");
    let mut dp = DeleteParams::background();
    if uid.is_some() {
        dp.preconditions = Some(Preconditions {
            uid,
            resource_version: None,
        });
    }
    match api(conn, ns).delete(name, &dp).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        // The UID precondition failed: the object is not the one we made; leave it.
        Err(kube::Error::Api(s)) if s.code == 409 && dp.preconditions.is_some() => {
            tracing::warn!(datavolume = %res, "not deleting a DataVolume this sink did not create");
            Ok(())
        }
        Err(e) => Err(to_core_error(e, op, Some(&res))),
    }
}

/// Creates the DataVolume fetching `source` into `target`.
pub(crate) async fn start(
    sink: &DataVolumeImageSink,
    target: &ImageTarget,
    source: &RemoteSource,
) -> Result<DataVolumeTransfer> {
    let name = dv_name(target)?;
    let ns = sink.conn.namespace.clone();
    let res = format!("{ns}/{name}");
    if source.has_credentials() {
        return Err(Error::invalid_spec(format!(
            "the image URL {} carries credentials, which a DataVolume would store in \
             spec.source.http.url; serve it without them (CDI's secretRef is not supported yet)",
            source.redacted_url()
        ))
        .context_for(PROVIDER_TYPE, "image_import", Some(&res)));
    }
    let dv = datavolume_object(sink, target, name, source);
    let created = match api(&sink.conn, &ns)
        .create(&PostParams::default(), &dv)
        .await
    {
        Ok(c) => c,
        Err(kube::Error::Api(s)) if s.code == 409 => {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!(
                    "a DataVolume {res} already exists and is not a finished import; \
                     delete it (or wait for it) before importing the image again"
                ),
            )
            .context_for(PROVIDER_TYPE, "image_import", Some(&res)));
        }
        Err(e) => return Err(to_core_error(e, "image_import", Some(&res))),
    };
    let transfer = DataVolumeTransfer {
        conn: Arc::clone(&sink.conn),
        namespace: ns,
        name: name.to_owned(),
        uid: created.metadata.uid.clone(),
    };
    let kept = created
        .spec
        .source
        .as_ref()
        .and_then(|s| s.http.as_ref())
        .and_then(|h| h.checksum.as_deref());
    if source.checksum.is_some() && kept.is_none() {
        // The server pruned the field: a CDI older than 1.62, which would not verify.
        abort(&transfer).await?;
        return Err(Error::new(
            ErrorKind::Unsupported,
            "this cluster's CDI drops spec.source.http.checksum (it needs CDI 1.62 or later), \
             so it cannot verify the image; set spec.prepare.validateChecksum to false to \
             import without verification",
        )
        .context_for(PROVIDER_TYPE, "image_import", Some(&res)));
    }
    Ok(transfer)
}

/// CDI's `"45.20%"` as thousandths.
pub(crate) fn parse_progress(p: Option<&str>) -> TransferProgress {
    let pct = p
        .and_then(|p| p.trim().strip_suffix('%'))
        .and_then(|n| n.trim().parse::<f64>().ok())
        .filter(|n| n.is_finite() && *n >= 0.0);
    match pct {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Some(n) => TransferProgress::Permille((n * 10.0).round().min(1000.0) as u32),
        None => TransferProgress::Unknown,
    }
}

/// What CDI said about the import's trouble: the `Running` condition's message when it is
/// not running, else the `Ready` condition's.
fn trouble(dv: &DataVolume) -> Option<String> {
    let st = dv.status.as_ref()?;
    find_condition(&st.conditions, "Running")
        .filter(|c| c.status != "True" && c.reason.as_deref() != Some("Completed"))
        .or_else(|| find_condition(&st.conditions, "Ready").filter(|c| c.status != "True"))
        .and_then(|c| c.message.clone())
        .filter(|m| !m.is_empty())
}

/// The transfer state of `dv` (named `reference`).
pub(crate) fn state_of(dv: &DataVolume, reference: &str) -> TransferState {
    let st = dv.status.as_ref();
    match phase(dv) {
        "Succeeded" => TransferState::Done(ImageRef::new(reference, size_of(dv))),
        "Failed" => {
            let msg = trouble(dv).unwrap_or_else(|| "the import failed".to_owned());
            let e = if msg.to_ascii_lowercase().contains("checksum") {
                Error::new(ErrorKind::InvalidSpec, format!("CDI: {msg}"))
                    .context_for(PROVIDER_TYPE, "image_verify", Some(reference))
                    .permanent()
            } else {
                Error::unavailable(format!("CDI failed the import: {msg}"))
                    .context_for(PROVIDER_TYPE, "image_download", Some(reference))
                    .persistent()
            };
            TransferState::Failed(e)
        }
        _ => {
            let restarts = st
                .and_then(|s| s.restart_count)
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(0);
            TransferState::Running {
                progress: parse_progress(st.and_then(|s| s.progress.as_deref())),
                attempts: restarts.saturating_add(1),
                message: trouble(dv),
            }
        }
    }
}

/// Reads the DataVolume the transfer created.
pub(crate) async fn poll(t: &DataVolumeTransfer) -> Result<TransferState> {
    let res = format!("{}/{}", t.namespace, t.name);
    let dv = api(&t.conn, &t.namespace)
        .get_opt(&t.name)
        .await
        .map_err(|e| to_core_error(e, "image_import", Some(&res)))?;
    Ok(match dv {
        Some(dv) if dv.metadata.uid == t.uid => state_of(&dv, &reference(&dv, &t.namespace)),
        _ => TransferState::Failed(
            Error::new(
                ErrorKind::Conflict,
                format!("the DataVolume {res} was deleted or replaced during the import"),
            )
            .context_for(PROVIDER_TYPE, "image_import", Some(&res)),
        ),
    })
}

/// Deletes the DataVolume the transfer created (by UID).
pub(crate) async fn abort(t: &DataVolumeTransfer) -> Result<()> {
    delete(&t.conn, &t.namespace, &t.name, t.uid.clone(), "image_abort").await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pvc_sizes() {
        assert_eq!(pvc_size(Some(5), Some(GIB * 3), None), 5);
        assert_eq!(pvc_size(None, Some((2 << 20) + 17), Some("raw")), GIB);
        assert_eq!(pvc_size(None, Some(GIB + 1), Some("raw")), 2 * GIB);
        assert_eq!(
            pvc_size(None, Some(GIB), Some("qcow2")),
            DEFAULT_IMAGE_PVC_SIZE
        );
        assert_eq!(pvc_size(None, Some(40 * GIB), Some("qcow2")), 40 * GIB);
        assert_eq!(pvc_size(None, None, Some("raw")), DEFAULT_IMAGE_PVC_SIZE);
        assert_eq!(quantity(GIB), "1Gi");
        assert_eq!(quantity(1000), "1000");
    }

    #[test]
    fn progress() {
        assert_eq!(
            parse_progress(Some("45.20%")),
            TransferProgress::Permille(452)
        );
        assert_eq!(
            parse_progress(Some("100.0%")),
            TransferProgress::Permille(1000)
        );
        assert_eq!(parse_progress(Some("N/A")), TransferProgress::Unknown);
        assert_eq!(parse_progress(None), TransferProgress::Unknown);
    }

    fn dv(status: serde_json::Value) -> DataVolume {
        serde_json::from_value(json!({
            "apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume",
            "metadata": {"name": "img", "namespace": "ns", "annotations": {IMAGE_SIZE_ANNOTATION: "2097169"}},
            "spec": {"source": {"http": {"url": "http://x/i.raw"}},
                     "storage": {"resources": {"requests": {"storage": "1Gi"}}}},
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn cdi_status_reads_as_a_transfer_state() {
        let running = dv(
            json!({"phase": "ImportInProgress", "progress": "12.5%", "restartCount": 2,
            "conditions": [{"type": "Running", "status": "False", "reason": "Error",
                            "message": "expected status code 200, got 503"}]}),
        );
        match state_of(&running, "ns/img") {
            TransferState::Running {
                progress,
                attempts,
                message,
            } => {
                assert_eq!(progress, TransferProgress::Permille(125));
                assert_eq!(attempts, 3);
                assert_eq!(
                    message.as_deref(),
                    Some("expected status code 200, got 503")
                );
            }
            s => panic!("{s:?}"),
        }
        match state_of(
            &dv(json!({"phase": "Succeeded", "progress": "100.0%"})),
            "ns/img",
        ) {
            TransferState::Done(r) => {
                assert_eq!((r.reference.as_str(), r.size_bytes), ("ns/img", 2_097_169))
            }
            s => panic!("{s:?}"),
        }
        let failed = dv(json!({"phase": "Failed", "conditions": [
            {"type": "Running", "status": "False", "reason": "Error", "message": "checksum mismatch: expected sha256:aa, got sha256:bb"}]}));
        match state_of(&failed, "ns/img") {
            TransferState::Failed(e) => {
                assert_eq!(e.kind(), ErrorKind::InvalidSpec);
                assert!(e.message().contains("checksum mismatch"), "{e}");
            }
            s => panic!("{s:?}"),
        }
        let mut unannotated = dv(json!({"phase": "Succeeded"}));
        unannotated.metadata.annotations = None;
        assert_eq!(size_of(&unannotated), GIB);
    }

    #[test]
    fn names_must_be_kubernetes_names() {
        assert!(dv_name(&ImageTarget::new("ubuntu-22-04")).is_ok());
        for bad in ["", "Ubuntu", "a_b", "-a", "a-", &"a".repeat(64)] {
            let e = dv_name(&ImageTarget::new(bad)).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidSpec);
            assert!(e.message().contains("metadata.name"), "{e}");
        }
    }
}
