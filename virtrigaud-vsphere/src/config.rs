//! Connection settings for `VsphereProvider`.

use std::fmt;
use std::time::Duration;

use secrecy::SecretString;

/// How the server's TLS certificate is checked.
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum TlsVerification {
    /// Verify against the platform's trust store (the default).
    #[default]
    System,
    /// Trust exactly the certificate authorities in this PEM bundle (and nothing else). Use it
    /// for a vCenter with a private CA, or a self-signed test server whose certificate you saved.
    CaPem(Vec<u8>),
    /// **Do not verify the certificate at all.**
    ///
    /// Anyone on the network path can then read the password and every session cookie. Only for
    /// throw-away lab servers; prefer [`TlsVerification::CaPem`] with the server's certificate.
    /// A warning is logged each time a client is built with this setting.
    DangerousAcceptInvalidCerts,
}

impl fmt::Debug for TlsVerification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsVerification::System => f.write_str("System"),
            TlsVerification::CaPem(pem) => write!(f, "CaPem({} bytes)", pem.len()),
            TlsVerification::DangerousAcceptInvalidCerts => {
                f.write_str("DangerousAcceptInvalidCerts")
            }
        }
    }
}

/// Connection settings for a vCenter or ESXi host.
///
/// ```
/// use virtrigaud_vsphere::{VsphereConfig, TlsVerification};
/// let cfg = VsphereConfig::new("https://vcenter.example.com/sdk", "svc-virtrigaud", "s3cret")
///     .with_tls(TlsVerification::System);
/// assert!(!format!("{cfg:?}").contains("s3cret"));
/// let with_userinfo = VsphereConfig::new("https://u:pw@vc.example.com/sdk", "u", "pw");
/// assert!(!format!("{with_userinfo:?}").contains("pw"));
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct VsphereConfig {
    /// The SOAP endpoint, usually `https://<vcenter>/sdk` (a bare host gets `/sdk` appended).
    pub url: String,
    /// User name.
    pub username: String,
    /// Password (never logged, never in `Debug`).
    pub password: SecretString,
    /// Certificate verification.
    pub tls: TlsVerification,
    /// Timeout of one HTTP request (long-poll waits add their own wait time to it).
    pub request_timeout: Duration,
    /// How long one `WaitForUpdatesEx` long poll may wait on the server.
    pub wait_poll: Duration,
    /// Interval of the session keep-alive (`CurrentTime`); `None` disables it.
    pub keepalive: Option<Duration>,
    /// The `User-Agent` header (vCenter shows it in its session list).
    pub user_agent: String,
    /// Datacenter (name) new VMs go to; `None`: the first datacenter of the inventory.
    pub default_datacenter: Option<String>,
    /// Datastore (name) for new VMs when the spec does not decide; `None`: the first
    /// accessible datastore of the chosen host / compute resource with enough free space.
    pub default_datastore: Option<String>,
    /// VM folder (inventory path, `DC0/vm/team-a`) for new VMs; `None`: the datacenter's
    /// root VM folder.
    pub default_folder: Option<String>,
    /// Resource pool (inventory path, `DC0/host/DC0_C0/Resources`) for new VMs without a
    /// placement; `None`: the root pool of the datacenter's first compute resource.
    pub default_resource_pool: Option<String>,
}

impl fmt::Debug for VsphereConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VsphereConfig")
            .field("url", &redact_url(&self.url))
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("tls", &self.tls)
            .field("request_timeout", &self.request_timeout)
            .field("wait_poll", &self.wait_poll)
            .field("keepalive", &self.keepalive)
            .field("user_agent", &self.user_agent)
            .field("default_datacenter", &self.default_datacenter)
            .field("default_datastore", &self.default_datastore)
            .field("default_folder", &self.default_folder)
            .field("default_resource_pool", &self.default_resource_pool)
            .finish()
    }
}

/// The URL without any `user:password@` part (for Debug output).
fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut u) if !u.username().is_empty() || u.password().is_some() => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        }
        Ok(_) => raw.to_owned(),
        Err(_) => "<unparsable URL>".to_owned(),
    }
}

impl VsphereConfig {
    /// Settings for `url` with a user name and password; TLS verified against the system roots.
    pub fn new(
        url: impl Into<String>,
        username: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        VsphereConfig {
            url: url.into(),
            username: username.into(),
            password: SecretString::from(password.into()),
            tls: TlsVerification::System,
            request_timeout: Duration::from_secs(60),
            wait_poll: Duration::from_secs(30),
            keepalive: Some(Duration::from_secs(300)),
            user_agent: concat!("virtrigaud-vsphere/", env!("CARGO_PKG_VERSION")).to_owned(),
            default_datacenter: None,
            default_datastore: None,
            default_folder: None,
            default_resource_pool: None,
        }
    }
    /// Sets the certificate verification.
    pub fn with_tls(mut self, tls: TlsVerification) -> Self {
        self.tls = tls;
        self
    }

    /// **Do not verify the server's TLS certificate** (the same name on every provider:
    /// [`TlsVerification::DangerousAcceptInvalidCerts`]). Logged as a warning at connect;
    /// anyone on the network path can read the credentials. Only for throw-away lab servers.
    pub fn danger_accept_invalid_certs(self) -> Self {
        self.with_tls(TlsVerification::DangerousAcceptInvalidCerts)
    }
    /// Sets the per-request timeout.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }
    /// Sets how long one `WaitForUpdatesEx` long poll waits on the server (at least 1 s).
    pub fn with_wait_poll(mut self, wait: Duration) -> Self {
        self.wait_poll = wait.max(Duration::from_secs(1));
        self
    }
    /// Sets (or disables) the session keep-alive interval.
    pub fn with_keepalive(mut self, interval: Option<Duration>) -> Self {
        self.keepalive = interval;
        self
    }
    /// Sets the `User-Agent` header.
    pub fn with_user_agent(mut self, user_agent: impl Into<String>) -> Self {
        self.user_agent = user_agent.into();
        self
    }
    /// Sets the datacenter (by name) new VMs are created in.
    pub fn with_default_datacenter(mut self, name: impl Into<String>) -> Self {
        self.default_datacenter = Some(name.into());
        self
    }
    /// Sets the datastore (by name) new VMs are created on.
    pub fn with_default_datastore(mut self, name: impl Into<String>) -> Self {
        self.default_datastore = Some(name.into());
        self
    }
    /// Sets the VM folder (inventory path) new VMs are created in.
    pub fn with_default_folder(mut self, path: impl Into<String>) -> Self {
        self.default_folder = Some(path.into());
        self
    }
    /// Sets the resource pool (inventory path) of new VMs without a placement.
    pub fn with_default_resource_pool(mut self, path: impl Into<String>) -> Self {
        self.default_resource_pool = Some(path.into());
        self
    }
}

/// Where new VMs go when the spec does not say (the `default_*` settings of
/// [`VsphereConfig`]).
#[derive(Debug, Default, Clone)]
pub(crate) struct CreateDefaults {
    pub(crate) datacenter: Option<String>,
    pub(crate) datastore: Option<String>,
    pub(crate) folder: Option<String>,
    pub(crate) resource_pool: Option<String>,
}

impl CreateDefaults {
    pub(crate) fn from_config(c: &VsphereConfig) -> Self {
        CreateDefaults {
            datacenter: c.default_datacenter.clone(),
            datastore: c.default_datastore.clone(),
            folder: c.default_folder.clone(),
            resource_pool: c.default_resource_pool.clone(),
        }
    }
}

/// The guest account that [`crate::GuestOpsPreStop`] runs pre-stop hooks as (vSphere guest
/// operations log in to the guest OS with a name and password of its own, not the vCenter
/// session's).
///
/// The password is a [`SecretString`]: it is sent only inside the `auth` element of the
/// guest-operation requests (SOAP bodies are never logged), never logged, and redacted in
/// `Debug`.
///
/// ```
/// use virtrigaud_vsphere::GuestCredentials;
/// let creds = GuestCredentials::new("root", "gu3st-s3cret");
/// assert_eq!(creds.username, "root");
/// assert!(!format!("{creds:?}").contains("gu3st-s3cret"));
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct GuestCredentials {
    /// The guest user name (`root`, `svc-hooks`, `DOMAIN\user`).
    pub username: String,
    /// The guest user's password (never logged, never in `Debug`).
    pub password: SecretString,
}

impl GuestCredentials {
    /// Credentials of the guest user `username` (a `String`, a `&str` or a [`SecretString`]
    /// for the password).
    pub fn new(username: impl Into<String>, password: impl Into<SecretString>) -> Self {
        GuestCredentials {
            username: username.into(),
            password: password.into(),
        }
    }
}

impl fmt::Debug for GuestCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuestCredentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}
