//! Connection settings: endpoint, credentials, TLS trust, timeouts.

use std::fmt;
use std::time::Duration;

use secrecy::SecretString;

/// How the client authenticates.
///
/// `Debug` never shows the secret (it is a [`SecretString`]).
#[derive(Clone)]
pub enum Auth {
    /// An API token: `Authorization: PVEAPIToken=USER@REALM!TOKENID=SECRET`. No CSRF token is
    /// needed and nothing expires; a 401 is final.
    ApiToken {
        /// `user@realm!tokenid`.
        token_id: String,
        /// The token's secret (a UUID on real PVE).
        secret: SecretString,
    },
    /// Password login: `POST /access/ticket` gives a ticket (cookie `PVEAuthCookie`) and a CSRF
    /// token for writes. The client logs in lazily, renews the ticket before PVE's two-hour
    /// expiry and once more on a 401.
    Password {
        /// `user@realm`.
        username: String,
        /// The password.
        password: SecretString,
    },
}

impl Auth {
    /// API-token credentials.
    pub fn api_token(token_id: impl Into<String>, secret: impl Into<String>) -> Self {
        Auth::ApiToken {
            token_id: token_id.into(),
            secret: SecretString::from(secret.into()),
        }
    }

    /// Password credentials.
    pub fn password(username: impl Into<String>, password: impl Into<String>) -> Self {
        Auth::Password {
            username: username.into(),
            password: SecretString::from(password.into()),
        }
    }
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::ApiToken { token_id, .. } => f
                .debug_struct("ApiToken")
                .field("token_id", token_id)
                .field("secret", &"[REDACTED]")
                .finish(),
            Auth::Password { username, .. } => f
                .debug_struct("Password")
                .field("username", username)
                .field("password", &"[REDACTED]")
                .finish(),
        }
    }
}

/// How the server certificate is checked.
#[derive(Clone, Default)]
pub enum Tls {
    /// Verify against the platform's trusted roots (the default).
    #[default]
    Verify,
    /// Verify against these PEM certificates only (a self-signed PVE node, a private CA).
    TrustCaPem(Vec<u8>),
    /// **Do not verify the certificate at all.**
    ///
    /// # Warning
    /// Anyone on the network path can impersonate the server and capture the credentials
    /// (API-token secrets and passwords are sent with every request or login). Use only on
    /// a trusted lab network; prefer [`Tls::TrustCaPem`] with the node's
    /// `/etc/pve/pve-root-ca.pem`.
    DangerAcceptInvalidCerts,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tls::Verify => f.write_str("Verify"),
            Tls::TrustCaPem(pem) => write!(f, "TrustCaPem({} bytes)", pem.len()),
            Tls::DangerAcceptInvalidCerts => f.write_str("DangerAcceptInvalidCerts"),
        }
    }
}

/// Everything needed to talk to one PVE cluster.
///
/// ```
/// use virtrigaud_proxmox::{Auth, ProxmoxConfig};
/// let cfg = ProxmoxConfig::new("https://pve.example:8006", Auth::api_token("root@pam!ci", "s3cret"))
///     .with_ca_pem(b"-----BEGIN CERTIFICATE-----\n...".to_vec());
/// assert!(!format!("{cfg:?}").contains("s3cret"));
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ProxmoxConfig {
    /// Base URL, e.g. `https://pve.example:8006` (`/api2/json` is appended when missing).
    pub url: String,
    /// Credentials.
    pub auth: Auth,
    /// Certificate checking.
    pub tls: Tls,
    /// Per-request timeout (connect + answer).
    pub request_timeout: Duration,
    /// TCP/TLS connect timeout.
    pub connect_timeout: Duration,
    /// First interval between task status polls (grows to [`ProxmoxConfig::task_poll_max`]).
    pub task_poll: Duration,
    /// Largest interval between task status polls.
    pub task_poll_max: Duration,
    /// Upper bound for waiting on one task (clone, snapshot, start, …).
    pub task_timeout: Duration,
    /// Ticket auth: log in again after this age (PVE tickets live two hours).
    pub ticket_renew_after: Duration,
}

impl ProxmoxConfig {
    /// Settings for `url` with `auth`, TLS verification on and default timeouts.
    pub fn new(url: impl Into<String>, auth: Auth) -> Self {
        ProxmoxConfig {
            url: url.into(),
            auth,
            tls: Tls::Verify,
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            task_poll: Duration::from_millis(100),
            task_poll_max: Duration::from_secs(2),
            task_timeout: Duration::from_secs(600),
            ticket_renew_after: Duration::from_secs(90 * 60),
        }
    }

    /// Trusts only the given PEM certificate(s) (a self-signed node or a private CA).
    pub fn with_ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls = Tls::TrustCaPem(pem.into());
        self
    }

    /// Turns certificate verification off. See the warning on [`Tls::DangerAcceptInvalidCerts`].
    pub fn danger_accept_invalid_certs(mut self) -> Self {
        self.tls = Tls::DangerAcceptInvalidCerts;
        self
    }

    /// Sets the per-request timeout.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Sets the task poll intervals (first, largest).
    pub fn with_task_poll(mut self, first: Duration, max: Duration) -> Self {
        self.task_poll = first;
        self.task_poll_max = max.max(first);
        self
    }

    /// Sets the bound for waiting on one task.
    pub fn with_task_timeout(mut self, timeout: Duration) -> Self {
        self.task_timeout = timeout;
        self
    }

    /// The API base (`…/api2/json`, no trailing slash).
    pub(crate) fn api_base(&self) -> String {
        let base = self.url.trim_end_matches('/');
        if base.ends_with("/api2/json") {
            base.to_owned()
        } else {
            format!("{base}/api2/json")
        }
    }
}
