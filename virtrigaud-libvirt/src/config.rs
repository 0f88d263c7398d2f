//! Connection and VM-creation settings.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Direct kernel boot for created VMs (`<os><kernel>/<initrd>/<cmdline>`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct KernelBoot {
    /// Kernel image path on the hypervisor host.
    pub kernel: PathBuf,
    /// Initial ramdisk path on the hypervisor host.
    pub initrd: Option<PathBuf>,
    /// Kernel command line.
    pub cmdline: String,
}

impl KernelBoot {
    /// Boots `kernel` with `initrd` and `cmdline`.
    pub fn new(
        kernel: impl Into<PathBuf>,
        initrd: Option<PathBuf>,
        cmdline: impl Into<String>,
    ) -> Self {
        KernelBoot {
            kernel: kernel.into(),
            initrd,
            cmdline: cmdline.into(),
        }
    }
}

/// How VMs are laid out when [`crate::LibvirtProvider`] creates them.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DomainTemplate {
    /// Domain type: `kvm` (default) or `qemu` (TCG, no hardware virtualisation).
    pub domain_type: String,
    /// Machine type (`pc`, `q35`).
    pub machine: String,
    /// Direct kernel boot, when set; otherwise the first disk boots.
    pub kernel_boot: Option<KernelBoot>,
    /// Serial console to this file (on the hypervisor host) instead of a pty.
    pub serial_log: Option<PathBuf>,
    /// Maximum vCPUs as a multiple of the requested vCPUs (hot-plug headroom; 1 = none).
    pub vcpu_headroom: u32,
    /// Maximum memory as a multiple of the requested memory (balloon headroom; 1 = none).
    pub memory_headroom: u32,
    /// Add a qemu-guest-agent channel.
    pub guest_agent_channel: bool,
    /// `on_reboot` action (`restart`, `destroy`).
    pub on_reboot: String,
}

impl Default for DomainTemplate {
    fn default() -> Self {
        DomainTemplate {
            domain_type: "kvm".into(),
            machine: "pc".into(),
            kernel_boot: None,
            serial_log: None,
            vcpu_headroom: 2,
            memory_headroom: 2,
            guest_agent_channel: true,
            on_reboot: "restart".into(),
        }
    }
}

/// Settings of a [`crate::LibvirtProvider`].
///
/// `Debug` shows the URI without user information and without query parameters other than
/// `name`, `socket` and `root` (so no `user:password@`, no `keyfile=`).
///
/// ```
/// use virtrigaud_libvirt::LibvirtConfig;
/// let cfg = LibvirtConfig::new("qemu+ssh://admin:s3cret@kvm1/system?keyfile=/root/.ssh/id");
/// let shown = format!("{cfg:?}");
/// assert!(shown.contains("qemu+ssh://kvm1/system"));
/// assert!(!shown.contains("s3cret") && !shown.contains("admin") && !shown.contains("keyfile"));
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct LibvirtConfig {
    /// libvirt URI: `qemu:///system`, `qemu+ssh://user@host/system`, `test:///default`, …
    pub uri: String,
    /// At most this many blocking libvirt calls run at once.
    pub max_concurrency: usize,
    /// Storage pool for new disks and clones (`None`: disks next to the source / none).
    pub storage_pool: Option<String>,
    /// Register for domain events (push power state). Falls back to polling when it fails.
    pub events: bool,
    /// Time budget of a guest-agent ping in [`virtrigaud_core::Provider::probe_agent`].
    pub agent_ping_timeout: Duration,
    /// Layout of created VMs.
    pub template: DomainTemplate,
}

impl fmt::Debug for LibvirtConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LibvirtConfig")
            .field("uri", &crate::identity::clean_uri(&self.uri).uri)
            .field("max_concurrency", &self.max_concurrency)
            .field("storage_pool", &self.storage_pool)
            .field("events", &self.events)
            .field("agent_ping_timeout", &self.agent_ping_timeout)
            .field("template", &self.template)
            .finish()
    }
}

impl LibvirtConfig {
    /// Settings for `uri` with defaults (8 concurrent calls, events on, 2 s agent ping).
    pub fn new(uri: impl Into<String>) -> Self {
        LibvirtConfig {
            uri: uri.into(),
            max_concurrency: 8,
            storage_pool: None,
            events: true,
            agent_ping_timeout: Duration::from_secs(2),
            template: DomainTemplate::default(),
        }
    }
    /// Uses `pool` for new volumes.
    pub fn with_storage_pool(mut self, pool: impl Into<String>) -> Self {
        self.storage_pool = Some(pool.into());
        self
    }
    /// Sets the VM template.
    pub fn with_template(mut self, template: DomainTemplate) -> Self {
        self.template = template;
        self
    }
    /// Turns event registration on or off.
    pub fn with_events(mut self, events: bool) -> Self {
        self.events = events;
        self
    }
}
