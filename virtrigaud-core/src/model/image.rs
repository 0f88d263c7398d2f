//! `VMImage`: per-provider image sources and preparation (import) options.

use serde::{Deserialize, Serialize};

use super::checksum::Checksum;
use super::condition::Condition;
use super::duration::{HumanDuration, MAX_DURATION, check_at_most};
use super::meta::{API_VERSION, Object, Resource};
use super::validate::{SpecErrors, Validate, join};

/// A `VMImage` object.
pub type VMImage = Object<VMImageSpec, VMImageStatus>;

/// Spec of a `VMImage`: one source per provider type, plus preparation options.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct VMImageSpec {
    /// vSphere source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsphere: Option<VsphereImageSource>,
    /// libvirt source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub libvirt: Option<LibvirtImageSource>,
    /// Proxmox VE source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxmox: Option<ProxmoxImageSource>,
    /// Preparation options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prepare: Option<ImagePrepare>,
}

impl Resource for VMImageSpec {
    const API_VERSION: &'static str = API_VERSION;
    const KIND: &'static str = "VMImage";
}

impl Validate for VMImageSpec {
    fn validate_at(&self, path: &str, errors: &mut SpecErrors) {
        if self.vsphere.is_none() && self.libvirt.is_none() && self.proxmox.is_none() {
            errors.add_rule(
                path.to_owned(),
                "at least one image source (vsphere, libvirt or proxmox) is required",
            );
        }
        if let Some(v) = &self.vsphere
            && v.ova_url.is_none()
            && v.template_name.is_none()
        {
            errors.add_rule(
                join(path, "vsphere"),
                "one of ovaURL or templateName is required",
            );
        }
        if let Some(l) = &self.libvirt
            && l.url.is_none()
            && l.path.is_none()
        {
            errors.add_rule(join(path, "libvirt"), "one of url or path is required");
        }
        if let Some(p) = &self.proxmox
            && p.template_id.is_none()
            && p.template_name.is_none()
            && p.url.is_none()
        {
            errors.add_rule(
                join(path, "proxmox"),
                "one of templateID, templateName or url is required",
            );
        }
        self.prepare.validate_at(&join(path, "prepare"), errors);
    }
}

/// What to download for one provider, read from a `VMImage` spec
/// ([`VMImageSpec::download_for`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ImageDownload {
    /// The image's URL.
    pub url: String,
    /// Its expected checksum, if the spec gives one.
    pub checksum: Option<Checksum>,
    /// Its format (`qcow2`, `raw`, `ova`), if the spec gives one.
    pub format: Option<String>,
    /// The spec field the URL came from (`libvirt.url`, `vsphere.ovaURL`, `proxmox.url`).
    pub field: &'static str,
}

impl VMImageSpec {
    /// The download a provider of type `provider_type` (`"libvirt"`, `"vsphere"`,
    /// `"proxmox"`, …) uses: its own source's URL, checksum and format. KubeVirt has no
    /// source of its own in the model: it takes the libvirt source, else the Proxmox one
    /// (disk images CDI can import: qcow2, raw, …; never vSphere's OVA, which CDI cannot
    /// import). Any other provider type (the simulator) takes the first source with a URL,
    /// in the order libvirt, proxmox, vsphere. `None` when no usable source has a URL (a
    /// template name or a local path is not a download).
    ///
    /// ```
    /// # #[cfg(feature = "yaml")] {
    /// use virtrigaud_core::model::{from_yaml_str, VMImage};
    /// let image: VMImage = from_yaml_str(
    ///     "apiVersion: infra.virtrigaud.io/v1beta1\nkind: VMImage\nmetadata: {name: u}\n\
    ///      spec: {libvirt: {url: 'http://x/u.img', format: qcow2}}\n",
    /// ).unwrap();
    /// let d = image.spec.download_for("libvirt").unwrap();
    /// assert_eq!((d.url.as_str(), d.format.as_deref()), ("http://x/u.img", Some("qcow2")));
    /// assert_eq!(image.spec.download_for("vsphere"), None);
    /// assert_eq!(image.spec.download_for("kubevirt").unwrap().field, "libvirt.url");
    /// # }
    /// ```
    pub fn download_for(&self, provider_type: &str) -> Option<ImageDownload> {
        let libvirt = || {
            let l = self.libvirt.as_ref()?;
            Some(ImageDownload {
                url: l.url.clone()?,
                checksum: l.checksum.clone(),
                format: l.format.clone(),
                field: "libvirt.url",
            })
        };
        let proxmox = || {
            let p = self.proxmox.as_ref()?;
            Some(ImageDownload {
                url: p.url.clone()?,
                checksum: p.checksum.clone(),
                format: p.format.clone(),
                field: "proxmox.url",
            })
        };
        let vsphere = || {
            let v = self.vsphere.as_ref()?;
            Some(ImageDownload {
                url: v.ova_url.clone()?,
                checksum: v.checksum.clone(),
                format: Some("ova".to_owned()),
                field: "vsphere.ovaURL",
            })
        };
        match provider_type {
            "libvirt" => libvirt(),
            "proxmox" => proxmox(),
            "vsphere" => vsphere(),
            "kubevirt" => libvirt().or_else(proxmox),
            _ => libvirt().or_else(proxmox).or_else(vsphere),
        }
    }
}

impl ImagePrepare {
    /// Where a provider of type `provider_type` stores the image, from `storage`: the libvirt
    /// pool, the Proxmox storage id, or the vSphere datastore (with its folder as
    /// `datastore/folder` when one is given).
    pub fn storage_for(&self, provider_type: &str) -> Option<String> {
        let s = self.storage.as_ref()?;
        match provider_type {
            "libvirt" => s.libvirt.as_ref()?.pool.clone(),
            "proxmox" => s.proxmox.as_ref()?.storage.clone(),
            "vsphere" => {
                let v = s.vsphere.as_ref()?;
                let ds = v.datastore.clone()?;
                Some(match v.folder.as_deref().map(|f| f.trim_matches('/')) {
                    Some(f) if !f.is_empty() => format!("{ds}/{f}"),
                    _ => ds,
                })
            }
            _ => None,
        }
    }
}

/// vSphere image source: an OVA to import or an existing template.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct VsphereImageSource {
    /// URL of an OVA to import.
    #[serde(default, rename = "ovaURL", skip_serializing_if = "Option::is_none")]
    pub ova_url: Option<String>,
    /// Existing template name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_name: Option<String>,
    /// Expected checksum of the download.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<Checksum>,
}

/// libvirt image source: a disk image URL or a local path.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct LibvirtImageSource {
    /// URL of the disk image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Path of an existing image on the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Disk format (`qcow2`, `raw`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// Expected checksum of the download.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<Checksum>,
}

/// Proxmox VE image source: an existing template or a disk image URL.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct ProxmoxImageSource {
    /// VMID of a template.
    #[serde(
        default,
        rename = "templateID",
        skip_serializing_if = "Option::is_none"
    )]
    pub template_id: Option<u32>,
    /// Name of a template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_name: Option<String>,
    /// URL of a disk image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Disk format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// Expected checksum of the download.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<Checksum>,
}

/// What to do when the image is missing on the provider.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[non_exhaustive]
pub enum OnMissing {
    /// Import it from the source.
    #[default]
    Import,
    /// Fail.
    Fail,
}

/// `spec.prepare`: import and preparation options.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct ImagePrepare {
    /// What to do when the image is missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_missing: Option<OnMissing>,
    /// Verify the checksum after download.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validate_checksum: Option<bool>,
    /// Time budget of the preparation. Greater than zero and at most [`MAX_DURATION`]
    /// (`"365d"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
    /// Retries after a failed attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// Where to store the imported image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<ImageStorage>,
}

impl Validate for ImagePrepare {
    fn validate_at(&self, path: &str, errors: &mut SpecErrors) {
        if let Some(t) = self.timeout {
            if t.is_zero() {
                errors.add(join(path, "timeout"), "must be greater than zero", t);
            }
            check_at_most(errors, join(path, "timeout"), t, MAX_DURATION);
        }
    }
}

/// Per-provider storage for imported images.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct ImageStorage {
    /// vSphere storage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsphere: Option<VsphereImageStorage>,
    /// libvirt storage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub libvirt: Option<LibvirtImageStorage>,
    /// Proxmox storage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxmox: Option<ProxmoxImageStorage>,
}

/// vSphere image storage.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct VsphereImageStorage {
    /// Datastore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datastore: Option<String>,
    /// Inventory folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folder: Option<String>,
    /// Thin provisioning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thin_provisioned: Option<bool>,
}

/// libvirt image storage.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct LibvirtImageStorage {
    /// Storage pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
}

/// Proxmox image storage.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct ProxmoxImageStorage {
    /// Storage id (e.g. `local-lvm`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<String>,
}

/// Phase of image preparation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[non_exhaustive]
pub enum ImagePhase {
    /// Waiting to start.
    Pending,
    /// Downloading / importing.
    Importing,
    /// Converting or otherwise processing.
    Preparing,
    /// Ready for use.
    Ready,
    /// Failed.
    Failed,
}

/// Status of a `VMImage`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct VMImageStatus {
    /// Phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<ImagePhase>,
    /// Attempts made so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    /// Human-readable detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Where the prepared image is stored, once `Ready`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored: Option<StoredImage>,
}

/// Where a prepared image is: the provider that stores it and that provider's reference (a
/// libvirt volume path, a PVE volume id, a vSphere template moref, a KubeVirt DataVolume),
/// which is what a create spec's `image` takes on that provider.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct StoredImage {
    /// Provider type (`libvirt`, `vsphere`, `proxmox`, `kubevirt`).
    pub provider: String,
    /// The provider's reference.
    pub reference: String,
    /// Size, bytes.
    pub size_bytes: u64,
}

impl StoredImage {
    /// `reference` of `size_bytes` bytes on `provider`.
    pub fn new(provider: impl Into<String>, reference: impl Into<String>, size_bytes: u64) -> Self {
        StoredImage {
            provider: provider.into(),
            reference: reference.into(),
            size_bytes,
        }
    }
}
