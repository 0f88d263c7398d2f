//! The `VMImage` reconciler: a pure planner ([`plan_image`]) and an executor that prepares
//! the image through an [`ImagePreparer`] (or removes it when the object goes).
//!
//! Restart safety comes from the preparer: it looks the image up first (a stored image is
//! not imported again) and resumes a partial upload of the same target, so a pass that died
//! mid-import is simply run again.

use super::action::Action;
use crate::error::{Error, Result};
use crate::model::{ImagePhase, VMImage, Validate};
use crate::orchestration::image::{ImagePreparer, ImageSource, ImageTarget, PrepareOptions};

/// The next step of a `VMImage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ImageStep {
    /// Import and prepare it (again, if a pass was interrupted or the stored image is gone).
    Prepare,
    /// Remove the stored image: the object is being deleted.
    Remove,
}

/// Plans the next step of `image`, with its reason, or `None` when it has settled (`Ready`
/// and still stored, `Failed`, or deleted with nothing stored). `stored` says whether the
/// sink still has the image (`None`: not looked up). Pure.
pub fn plan_image(image: &VMImage, stored: Option<bool>) -> Option<(ImageStep, String)> {
    let name = &image.metadata.name;
    if image.metadata.deletion_timestamp.is_some() {
        return (stored != Some(false)).then(|| {
            (
                ImageStep::Remove,
                format!("the object is being deleted; image {name} goes first"),
            )
        });
    }
    match image.status.as_ref().and_then(|s| s.phase) {
        Some(ImagePhase::Failed) => None,
        Some(ImagePhase::Ready) if stored != Some(false) => None,
        Some(ImagePhase::Ready) => Some((
            ImageStep::Prepare,
            format!("the stored image {name} is gone"),
        )),
        None => Some((ImageStep::Prepare, format!("image {name} is asked for"))),
        Some(p) => Some((
            ImageStep::Prepare,
            format!("image {name} was left {p:?} by an earlier pass"),
        )),
    }
}

/// Reconciles `VMImage` objects into one provider's image storage.
#[derive(Debug)]
pub struct ImageReconciler {
    preparer: ImagePreparer,
    provider_type: &'static str,
}

impl ImageReconciler {
    /// A reconciler preparing through `preparer` for a provider of `provider_type` (which
    /// picks the seed's per-provider download and target).
    pub fn new(preparer: ImagePreparer, provider_type: &'static str) -> Self {
        ImageReconciler {
            preparer,
            provider_type,
        }
    }

    /// One pass for `image`, importing from `source` (built by the caller from
    /// `image.spec.download_for(provider_type)`, e.g. an `HttpSource`) with the options of
    /// its `spec.prepare` and the download's checksum.
    pub async fn reconcile(&self, image: &mut VMImage, source: &dyn ImageSource) -> Result<Action> {
        let resource = image.metadata.name.clone();
        let ctx = |e: Error| {
            e.with_operation("reconcile")
                .with_resource(resource.clone())
        };
        image.validate().map_err(|e| ctx(Error::from(e)))?;
        let target = ImageTarget::for_image(image, self.provider_type);
        let sink = self.preparer.sink();
        let settled = image.metadata.deletion_timestamp.is_some()
            || image.status.as_ref().and_then(|s| s.phase) == Some(ImagePhase::Ready);
        let stored = if settled {
            Some(sink.lookup(&target).await.map_err(ctx)?.is_some())
        } else {
            None
        };
        let Some((step, reason)) = plan_image(image, stored) else {
            return Ok(Action::await_change());
        };
        tracing::debug!(image = %resource, ?step, %reason, "reconcile step");
        match step {
            ImageStep::Remove => sink.remove(&target).await.map_err(ctx)?,
            ImageStep::Prepare => {
                let checksum = image
                    .spec
                    .download_for(self.provider_type)
                    .and_then(|d| d.checksum);
                let opts = PrepareOptions::from_spec(image.spec.prepare.as_ref(), checksum);
                self.preparer
                    .prepare(image, &target, source, &opts)
                    .await
                    .map_err(ctx)?;
            }
        }
        Ok(Action::await_change())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::from_yaml_str;

    fn image(status: &str) -> VMImage {
        from_yaml_str(&format!(
            "apiVersion: infra.virtrigaud.io/v1beta1\nkind: VMImage\nmetadata: {{name: ubuntu}}\n\
             spec: {{libvirt: {{url: 'https://example.org/u.qcow2', format: qcow2}}}}\n{status}"
        ))
        .unwrap()
    }

    #[test]
    fn an_image_is_prepared_until_ready_and_again_when_its_copy_is_gone() {
        assert_eq!(plan_image(&image(""), None).unwrap().0, ImageStep::Prepare);
        let importing = image("status: {phase: Importing}\n");
        assert_eq!(plan_image(&importing, None).unwrap().0, ImageStep::Prepare);
        let ready = image("status: {phase: Ready}\n");
        assert!(plan_image(&ready, Some(true)).is_none());
        assert_eq!(
            plan_image(&ready, Some(false)).unwrap().0,
            ImageStep::Prepare
        );
        assert!(plan_image(&image("status: {phase: Failed}\n"), None).is_none());
        let mut going = ready.clone();
        going.metadata.deletion_timestamp = Some("2026-12-04T00:00:00Z".into());
        assert_eq!(plan_image(&going, Some(true)).unwrap().0, ImageStep::Remove);
        assert!(plan_image(&going, Some(false)).is_none());
    }
}
