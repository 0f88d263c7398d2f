//! The check of a VM set made from an image: seed 003's `VMSet`, its `imageRef` naming seed
//! 003's `VMImage` prepared into the provider's storage.

use std::collections::BTreeMap;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::images::{Serve, options, seed_image, serve, served_image};
use super::sets::{converge, members, scaled_to_zero, seed_set, settled};
use super::{CheckOutcome, Fixture};
use crate::model::{Checksum, ObjectRef, VMImage, VMSet};
use crate::orchestration::image::{HttpSource, ImagePreparer, ImageSink, ImageTarget};
use crate::provider::Provider;
use crate::shutdown::{ShutdownManager, ShutdownPolicy};
use crate::vmset::VmSetReconciler;

/// Members of the set.
const REPLICAS: i32 = 2;

/// Seed 003's VMSet whose template's `imageRef` names seed 003's VMImage (pointed at a local
/// HTTP server, as in [`super::image_import_from_the_seed`]). While that image is not
/// prepared the set creates no member and says why (`template.spec.imageRef`); once the
/// fixture's [`ImageSink`] holds it, the set converges to two running members made from it
/// (each provider's own way: a libvirt backing volume, a vSphere template clone, a PVE
/// CD-ROM, a KubeVirt DataVolume). The template has no disks of its own: the image brings
/// them. Skipped where `image_import` is declared false.
pub async fn vm_set_from_a_prepared_image(
    provider: &Arc<dyn Provider>,
    fixture: &dyn Fixture,
) -> CheckOutcome {
    let caps = provider.capabilities();
    if !caps.image_import {
        return CheckOutcome::Skipped("image_import is declared false".into());
    }
    if !caps.create || !caps.delete || !caps.list_vms {
        return CheckOutcome::Skipped("needs create, delete and list_vms".into());
    }
    let Some(sink) = attempt!(fixture.image_sink().await, "fixture.image_sink") else {
        return CheckOutcome::Failed(
            "image_import is declared, but the fixture gives no image sink".into(),
        );
    };
    let data = Arc::new(attempt!(
        served_image(provider.provider_type()),
        "the served image"
    ));
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(data.as_slice())));
    let checksum: Checksum = attempt!(digest.parse(), "checksum");
    let (url, _) = attempt!(serve(Arc::clone(&data), Serve::Whole).await, "serve");
    let name = format!("vrconf-setimg-{}", std::process::id());
    let image = attempt!(seed_image(&name, &url, &checksum), "the seed's VMImage");
    let target = ImageTarget::for_image(&image, provider.provider_type());
    let mut set = attempt!(seed_set(fixture, "imgset"), "seed 003's VMSet");
    set.spec.template.spec.image_ref = Some(ObjectRef::new(name.as_str()));
    set.spec.template.spec.disks.clear();
    let shutdown = ShutdownManager::new(Arc::clone(provider));
    let outcome = from_image(provider, fixture, &sink, image, &target, &mut set).await;
    let reconciler = VmSetReconciler::new(Arc::clone(provider), shutdown)
        .shutdown_policy(ShutdownPolicy::with_grace(fixture.short_grace()));
    set.spec.template.spec.image_ref = None;
    let outcome = scaled_to_zero(provider, fixture, &reconciler, &mut set, outcome).await;
    match (outcome, sink.remove(&target).await) {
        (CheckOutcome::Passed, Err(e)) => CheckOutcome::Failed(format!("removing the image: {e}")),
        (outcome, _) => outcome,
    }
}

async fn from_image(
    provider: &Arc<dyn Provider>,
    fixture: &dyn Fixture,
    sink: &Arc<dyn ImageSink>,
    mut image: VMImage,
    target: &ImageTarget,
    set: &mut VMSet,
) -> CheckOutcome {
    set.spec.replicas = Some(REPLICAS);
    let reconciler = |image: &VMImage| {
        let catalogue = BTreeMap::from([(image.metadata.name.clone(), image.clone())]);
        VmSetReconciler::new(
            Arc::clone(provider),
            ShutdownManager::new(Arc::clone(provider)),
        )
        .shutdown_policy(ShutdownPolicy::with_grace(fixture.short_grace()))
        .images(Arc::new(catalogue))
    };
    // Not prepared yet: no member, and the pass says why.
    let pass = attempt!(reconciler(&image).reconcile(set).await, "reconcile");
    ensure!(
        pass.errors
            .iter()
            .any(|e| e.contains("template.spec.imageRef")),
        "a set whose image is not prepared reported {:?}",
        pass.errors
    );
    let found = attempt!(members(provider, set).await, "list_vms");
    ensure!(
        found.is_empty(),
        "{} members were made before their image was prepared",
        found.len()
    );
    // Prepared: the set converges from it.
    let Some(download) = image.spec.download_for(provider.provider_type()) else {
        return CheckOutcome::Failed("the seed gives this provider no download".into());
    };
    let source = attempt!(HttpSource::new(&download.url), "HttpSource");
    let opts = options(&image, download.checksum.clone());
    attempt!(
        ImagePreparer::new(Arc::clone(sink))
            .prepare(&mut image, target, &source, &opts)
            .await,
        "prepare the seed's image"
    );
    let stored = image.status.as_ref().and_then(|s| s.stored.clone());
    ensure!(
        stored
            .as_ref()
            .is_some_and(|s| s.provider == provider.provider_type()),
        "the prepared image's status names {stored:?}"
    );
    attempt!(
        converge(&reconciler(&image), set).await,
        format!("scale to {REPLICAS} from the image")
    );
    let found = attempt!(members(provider, set).await, "list_vms");
    match settled(set, &found, REPLICAS) {
        Some(problem) => CheckOutcome::Failed(format!("from the image: {problem}")),
        None => CheckOutcome::Passed,
    }
}
