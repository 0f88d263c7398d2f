//! Credentials and TLS settings for [`crate::connect_with`], and their environment fallback.

use std::fmt;
use std::path::{Path, PathBuf};

use secrecy::SecretString;
use virtrigaud_core::{Error, ErrorKind, Result};

/// Credentials and TLS trust for [`crate::connect_with`].
///
/// Every field is optional; a field left unset is read from the environment (the
/// `VIRTRIGAUD_*` variables in the [crate documentation](crate#environment)), unless
/// [`ConnectOptions::without_env`] turns that off. Fields a provider has no use for are
/// ignored (the simulator takes none), except credentials given to a provider that takes its
/// credentials elsewhere (libvirt, KubeVirt): that is an [`ErrorKind::Unsupported`] error
/// rather than a silently unused password.
///
/// `Debug` never shows the password or the token secret.
///
/// ```
/// use virtrigaud::ConnectOptions;
/// let opts = ConnectOptions::new()
///     .with_username("svc-virtrigaud")
///     .with_password("s3cret")
///     .with_ca_file("/etc/virtrigaud/vcenter-ca.pem");
/// assert!(!format!("{opts:?}").contains("s3cret"));
/// assert!(!opts.insecure_tls); // certificate verification is on unless asked otherwise
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct ConnectOptions {
    /// User name (vSphere `user@domain`, Proxmox `user@realm`).
    pub username: Option<String>,
    /// Password (vSphere, Proxmox ticket login).
    pub password: Option<SecretString>,
    /// Proxmox API token id, `user@realm!tokenid`.
    pub token_id: Option<String>,
    /// Proxmox API token secret.
    pub token_secret: Option<SecretString>,
    /// Trust exactly the certificate authorities in this PEM bundle (vSphere, Proxmox).
    pub ca_pem: Option<Vec<u8>>,
    /// Like [`ConnectOptions::ca_pem`], read from this file at connect time.
    pub ca_file: Option<PathBuf>,
    /// **Do not verify the server's TLS certificate.** Off by default. Maps to vSphere's
    /// `TlsVerification::DangerousAcceptInvalidCerts`, Proxmox's
    /// `Tls::DangerAcceptInvalidCerts`, KubeVirt's `insecure_skip_tls_verify` and libvirt's
    /// `no_verify=1` (TLS transport). Anyone on the network path can then read the
    /// credentials; only for throw-away lab servers.
    pub insecure_tls: bool,
    /// The kubeconfig file (KubeVirt), when the URL names none.
    pub kubeconfig: Option<PathBuf>,
    /// Read unset fields from the `VIRTRIGAUD_*` environment variables (default true).
    pub use_env: bool,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            username: None,
            password: None,
            token_id: None,
            token_secret: None,
            ca_pem: None,
            ca_file: None,
            insecure_tls: false,
            kubeconfig: None,
            use_env: true,
        }
    }
}

impl fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secret = |s: &Option<SecretString>| s.as_ref().map(|_| "<redacted>");
        f.debug_struct("ConnectOptions")
            .field("username", &self.username)
            .field("password", &secret(&self.password))
            .field("token_id", &self.token_id)
            .field("token_secret", &secret(&self.token_secret))
            .field(
                "ca_pem",
                &self.ca_pem.as_ref().map(|p| format!("<{} bytes>", p.len())),
            )
            .field("ca_file", &self.ca_file)
            .field("insecure_tls", &self.insecure_tls)
            .field("kubeconfig", &self.kubeconfig)
            .field("use_env", &self.use_env)
            .finish()
    }
}

impl ConnectOptions {
    /// No explicit settings: everything from the URL and the environment.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets the user name.
    pub fn with_username(mut self, username: impl Into<String>) -> Self {
        self.username = Some(username.into());
        self
    }
    /// Sets the password.
    pub fn with_password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(SecretString::from(password.into()));
        self
    }
    /// Sets a Proxmox API token (`user@realm!tokenid` and its secret).
    pub fn with_api_token(mut self, id: impl Into<String>, secret: impl Into<String>) -> Self {
        self.token_id = Some(id.into());
        self.token_secret = Some(SecretString::from(secret.into()));
        self
    }
    /// Trusts only the CAs of this PEM bundle.
    pub fn with_ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_pem = Some(pem.into());
        self
    }
    /// Trusts only the CAs of the PEM file at `path`.
    pub fn with_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self
    }
    /// Turns certificate verification off (see the warning on
    /// [`ConnectOptions::insecure_tls`]).
    pub fn with_insecure_tls(mut self, insecure: bool) -> Self {
        self.insecure_tls = insecure;
        self
    }
    /// Uses the kubeconfig at `path` (KubeVirt).
    pub fn with_kubeconfig(mut self, path: impl Into<PathBuf>) -> Self {
        self.kubeconfig = Some(path.into());
        self
    }
    /// Ignores the `VIRTRIGAUD_*` environment variables: only the URL and these options count.
    pub fn without_env(mut self) -> Self {
        self.use_env = false;
        self
    }

    /// Whether explicit credentials (password or token) are set.
    #[allow(dead_code)]
    pub(crate) fn has_credentials(&self) -> bool {
        self.password.is_some() || self.token_secret.is_some() || self.token_id.is_some()
    }

    /// The environment variable `name` when the environment is used and it is set and non-empty.
    pub(crate) fn env(&self, name: &str) -> Option<String> {
        if !self.use_env {
            return None;
        }
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }

    /// Whether the environment flag `name` is `1`/`true`.
    pub(crate) fn env_flag(&self, name: &str) -> bool {
        self.env(name)
            .is_some_and(|v| matches!(v.as_str(), "1" | "true" | "yes"))
    }

    /// How to check the server certificate, for a provider whose CA-file variable is `ca_env`
    /// and whose insecure flag is `insecure_env`. Explicit options win over the environment;
    /// a CA and `insecure_tls` together are refused.
    #[allow(dead_code)]
    pub(crate) fn tls(&self, ca_env: &str, insecure_env: &str) -> Result<Tls> {
        let explicit_ca = match (&self.ca_pem, &self.ca_file) {
            (Some(_), Some(_)) => {
                return Err(option_error(
                    "options.ca_file",
                    "set either ca_pem or ca_file, not both",
                ));
            }
            (Some(pem), None) => Some(pem.clone()),
            (None, Some(path)) => Some(read_ca(path, "options.ca_file")?),
            (None, None) => None,
        };
        if explicit_ca.is_some() && self.insecure_tls {
            return Err(option_error(
                "options.insecure_tls",
                "a CA and insecure_tls exclude each other",
            ));
        }
        if let Some(pem) = explicit_ca {
            return Ok(Tls::CaPem(pem));
        }
        if self.insecure_tls {
            return Ok(Tls::Insecure);
        }
        if let Some(path) = self.env(ca_env) {
            return Ok(Tls::CaPem(read_ca(Path::new(&path), ca_env)?));
        }
        if self.env_flag(insecure_env) {
            return Ok(Tls::Insecure);
        }
        Ok(Tls::System)
    }
}

/// The certificate check a provider is built with.
#[allow(dead_code)]
pub(crate) enum Tls {
    System,
    CaPem(Vec<u8>),
    Insecure,
}

#[allow(dead_code)]
fn read_ca(path: &Path, field: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        option_error(
            field,
            format!("cannot read the CA bundle {}: {e}", path.display()),
        )
    })
}

/// An InvalidSpec error about a connect option or environment variable.
pub(crate) fn option_error(field: &str, what: impl fmt::Display) -> Error {
    Error::new(ErrorKind::InvalidSpec, format!("{field}: {what}"))
        .with_provider("virtrigaud")
        .with_operation("connect")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_secrets() {
        let o = ConnectOptions::new()
            .with_password("hunter2")
            .with_api_token("root@pam!ci", "tok-s3cret")
            .with_ca_pem(b"PEM".to_vec());
        let shown = format!("{o:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("tok-s3cret"),
            "{shown}"
        );
        assert!(
            shown.contains("root@pam!ci") && shown.contains("<3 bytes>"),
            "{shown}"
        );
    }

    #[test]
    fn tls_precedence() {
        let o = ConnectOptions::new().without_env();
        assert!(matches!(o.tls("X_CA", "X_INSECURE"), Ok(Tls::System)));
        let o = ConnectOptions::new().without_env().with_insecure_tls(true);
        assert!(matches!(o.tls("X_CA", "X_INSECURE"), Ok(Tls::Insecure)));
        let o = ConnectOptions::new()
            .without_env()
            .with_insecure_tls(true)
            .with_ca_pem(b"x".to_vec());
        let e = o.tls("X_CA", "X_INSECURE").err().map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("options.insecure_tls")));
        let o = ConnectOptions::new()
            .without_env()
            .with_ca_file("/nonexistent/ca.pem");
        let e = o.tls("X_CA", "X_INSECURE").err().map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("options.ca_file")));
    }
}
