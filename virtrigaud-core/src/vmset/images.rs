//! Resolving a template's `imageRef` to a prepared `VMImage`: the provider reference a member
//! is made from.

use std::collections::BTreeMap;

use async_trait::async_trait;

use crate::error::{Error, Result};
use crate::model::{ImagePhase, VMImage};

/// Finds `VMImage` objects by name (an operator's informer store, or a fixed catalogue:
/// `BTreeMap<String, VMImage>` implements it).
#[async_trait]
pub trait ImageResolver: Send + Sync {
    /// The `VMImage` named `name`, if there is one.
    async fn image(&self, name: &str) -> Result<Option<VMImage>>;
}

#[async_trait]
impl ImageResolver for BTreeMap<String, VMImage> {
    async fn image(&self, name: &str) -> Result<Option<VMImage>> {
        Ok(self.get(name).cloned())
    }
}

/// What a member named by `image_ref` is made from on `provider_type`: the stored image's
/// reference, once the image is `Ready` there.
///
/// - No such image: `NotFound` (permanent until someone creates it).
/// - Not `Ready` yet (or `Ready` with no stored reference): retryable `InvalidState`, so the
///   set waits rather than creating members without their image.
/// - Prepared for another provider: `InvalidState` naming both.
///
/// Every message starts with the field, `template.spec.imageRef`.
///
/// ```
/// use virtrigaud_core::model::{ImagePhase, StoredImage, VMImage, VMImageSpec, VMImageStatus};
/// use virtrigaud_core::vmset::member_image;
/// let mut img = VMImage::new("ubuntu", VMImageSpec::default());
/// let err = member_image("ubuntu", Some(&img), "libvirt").unwrap_err();
/// assert!(err.is_retryable(), "not prepared yet: {err}");
/// let mut st = VMImageStatus::default();
/// st.phase = Some(ImagePhase::Ready);
/// st.stored = Some(StoredImage::new("libvirt", "/pool/ubuntu.img", 1 << 20));
/// img.status = Some(st);
/// assert_eq!(member_image("ubuntu", Some(&img), "libvirt").unwrap(), "/pool/ubuntu.img");
/// assert!(member_image("ubuntu", Some(&img), "vsphere").is_err());
/// ```
pub fn member_image(
    image_ref: &str,
    image: Option<&VMImage>,
    provider_type: &str,
) -> Result<String> {
    const FIELD: &str = "template.spec.imageRef";
    let Some(image) = image else {
        return Err(Error::not_found(format!("{FIELD}: no VMImage {image_ref}")));
    };
    let status = image.status.as_ref();
    let phase = status.and_then(|s| s.phase);
    let stored = status.and_then(|s| s.stored.as_ref());
    match (phase, stored) {
        (Some(ImagePhase::Ready), Some(s)) if s.provider == provider_type => {
            Ok(s.reference.clone())
        }
        (Some(ImagePhase::Ready), Some(s)) => Err(Error::invalid_state(format!(
            "{FIELD}: VMImage {image_ref} is prepared on {}, not on {provider_type}",
            s.provider
        ))
        .permanent()),
        (phase, _) => Err(Error::invalid_state(format!(
            "{FIELD}: VMImage {image_ref} is {}, not Ready with a stored image",
            phase.map_or_else(|| "not prepared".to_owned(), |p| format!("{p:?}"))
        ))
        .temporary()),
    }
}
