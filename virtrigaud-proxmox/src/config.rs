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
/// `Debug` shows neither the credentials nor a `user:password@` part of the URL.
///
/// ```
/// use virtrigaud_proxmox::{Auth, ProxmoxConfig};
/// let cfg = ProxmoxConfig::new("https://pve.example:8006", Auth::api_token("root@pam!ci", "s3cret"))
///     .with_ca_pem(b"-----BEGIN CERTIFICATE-----\n...".to_vec());
/// assert!(!format!("{cfg:?}").contains("s3cret"));
/// ```
#[derive(Clone)]
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

impl fmt::Debug for ProxmoxConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxmoxConfig")
            .field("url", &redact_url(&self.url))
            .field("auth", &self.auth)
            .field("tls", &self.tls)
            .field("request_timeout", &self.request_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("task_poll", &self.task_poll)
            .field("task_poll_max", &self.task_poll_max)
            .field("task_timeout", &self.task_timeout)
            .field("ticket_renew_after", &self.ticket_renew_after)
            .finish()
    }
}

/// `url` without a `user:password@` part (for logs, errors and `Debug`). A URL that does not
/// parse is shown as a placeholder: it might hold credentials in a form that cannot be cut.
pub(crate) fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if !u.username().is_empty() || u.password().is_some() {
                // Cannot fail for a URL that has a host (it had credentials).
                let _ = u.set_username("");
                let _ = u.set_password(None);
            }
            u.to_string()
        }
        Err(_) => "<unparsable URL>".to_owned(),
    }
}

impl ProxmoxConfig {
    /// The identity of the endpoint: scheme, host and port of [`ProxmoxConfig::url`]
    /// (`https://pve1.example:8006`), the port always written out (`https://pve1.example`
    /// gives `https://pve1.example:443`), without credentials, path or query. Empty when the
    /// URL does not parse (then [`crate::PveClient::new`] refuses it anyway).
    ///
    /// This is what [`crate::ProxmoxProvider`] reports as
    /// [`virtrigaud_core::Provider::instance_id`].
    ///
    /// ```
    /// use virtrigaud_proxmox::{Auth, ProxmoxConfig};
    /// let cfg = ProxmoxConfig::new("https://PVE1.example:8006/api2/json", Auth::api_token("a@pam!b", "s"));
    /// assert_eq!(cfg.endpoint(), "https://pve1.example:8006");
    /// ```
    pub fn endpoint(&self) -> String {
        let Ok(u) = url::Url::parse(self.url.trim()) else {
            return String::new();
        };
        let Some(host) = u.host_str() else {
            return String::new();
        };
        match u.port_or_known_default() {
            Some(port) => format!("{}://{host}:{port}", u.scheme()),
            None => format!("{}://{host}", u.scheme()),
        }
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(url: &str) -> ProxmoxConfig {
        ProxmoxConfig::new(url, Auth::api_token("root@pam!ci", "tok-secret"))
    }

    #[test]
    fn endpoint_is_scheme_host_and_port_without_credentials() {
        assert_eq!(
            cfg("https://pve1.example:8006").endpoint(),
            "https://pve1.example:8006"
        );
        assert_eq!(
            cfg("https://pve1.example:8006/api2/json/").endpoint(),
            "https://pve1.example:8006"
        );
        let with_creds =
            cfg("https://root%40pam:hunter2@PVE1.Example:8006/api2/json?x=secretq#frag");
        let id = with_creds.endpoint();
        assert_eq!(id, "https://pve1.example:8006");
        for secret in ["hunter2", "root", "secretq", "frag", "api2"] {
            assert!(!id.contains(secret), "{id}");
        }
        // The default port is written out, so both spellings of one endpoint are equal.
        assert_eq!(
            cfg("https://pve1.example").endpoint(),
            cfg("https://pve1.example:443/").endpoint()
        );
        assert_eq!(
            cfg("https://[fd00::1]:8006").endpoint(),
            "https://[fd00::1]:8006"
        );
        assert_eq!(cfg("not a url").endpoint(), "");
        // Two nodes are two endpoints.
        assert_ne!(
            cfg("https://pve1:8006").endpoint(),
            cfg("https://pve2:8006").endpoint()
        );
    }

    #[test]
    fn debug_hides_url_credentials() {
        let c = cfg("https://root%40pam:hunter2@pve1.example:8006");
        let dbg = format!("{c:?}");
        assert!(
            !dbg.contains("hunter2") && !dbg.contains("tok-secret"),
            "{dbg}"
        );
        assert!(dbg.contains("pve1.example:8006"), "{dbg}");
        assert_eq!(redact_url("not a url, user:pw@x"), "<unparsable URL>");
    }
}
