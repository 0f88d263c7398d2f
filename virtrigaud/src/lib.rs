#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod connect;
mod options;
mod url;

pub use connect::{connect, connect_parsed, connect_with, simulator};
pub use options::ConnectOptions;
pub use secrecy::SecretString;
pub use url::{PVE_DEFAULT_PORT, ProviderKind, ProviderUrl, redact_url};

/// The core crate, `virtrigaud-core`: the traits, the model, the shutdown engine, the
/// simulator, orchestration and VM sets.
pub use virtrigaud_core as core;

pub use virtrigaud_core::{
    AgentStatus, CloneOptions, CloneResult, Cloner, DeleteOptions, Error, ErrorKind, ListOptions,
    PowerOffOptions, PowerState, Provider, ProviderCapabilities, Result, ShutdownChannel,
    ShutdownRequestOptions, SnapshotInfo, SnapshotOptions, Snapshotter, StartOptions,
    VmCapabilities, VmCreateSpec, VmDescription, VmId,
};
pub use virtrigaud_core::{model, orchestration, shutdown, sim, vmset};

/// The libvirt/KVM provider crate, `virtrigaud-libvirt` (feature `libvirt`).
#[cfg(feature = "libvirt")]
#[cfg_attr(docsrs, doc(cfg(feature = "libvirt")))]
pub use virtrigaud_libvirt as libvirt;

/// The vSphere provider crate, `virtrigaud-vsphere` (feature `vsphere`).
#[cfg(feature = "vsphere")]
#[cfg_attr(docsrs, doc(cfg(feature = "vsphere")))]
pub use virtrigaud_vsphere as vsphere;

/// The Proxmox VE provider crate, `virtrigaud-proxmox` (feature `proxmox`).
#[cfg(feature = "proxmox")]
#[cfg_attr(docsrs, doc(cfg(feature = "proxmox")))]
pub use virtrigaud_proxmox as proxmox;

/// The KubeVirt provider crate, `virtrigaud-kubevirt` (feature `kubevirt`).
#[cfg(feature = "kubevirt")]
#[cfg_attr(docsrs, doc(cfg(feature = "kubevirt")))]
pub use virtrigaud_kubevirt as kubevirt;
