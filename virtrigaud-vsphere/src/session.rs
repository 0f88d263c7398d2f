//! The connection settings turned into what the SOAP client needs: the `/sdk` URL, the HTTP
//! client with its TLS trust, and the session (credentials, cookie, login generation).
//!
//! Nothing here sends a request: the SOAP client (`client.rs`) does, and logs in with
//! [`Session::login_body`].

use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use crate::config::{TlsVerification, VsphereConfig};
use crate::error::VimError;
use crate::xml::Xml;

/// Normalises a user URL to the `/sdk` endpoint.
pub(crate) fn sdk_url(raw: &str) -> Result<url::Url, VimError> {
    let mut u = url::Url::parse(raw)
        .map_err(|e| VimError::Protocol(format!("invalid URL {raw:?}: {e}")))?;
    if !matches!(u.scheme(), "https" | "http") {
        return Err(VimError::Protocol(format!(
            "URL scheme must be https or http: {raw:?}"
        )));
    }
    if u.path() == "/" || u.path().is_empty() {
        u.set_path("/sdk");
    }
    u.set_username("").ok();
    u.set_password(None).ok();
    Ok(u)
}

/// The endpoint identity of an SDK URL: `scheme://host:port` (the port always written, the
/// host lower-cased by the URL parser), without user information, path, query or fragment.
pub(crate) fn endpoint_identity(u: &url::Url) -> String {
    let host = u.host_str().unwrap_or_default();
    match u.port_or_known_default() {
        Some(port) => format!("{}://{host}:{port}", u.scheme()),
        None => format!("{}://{host}", u.scheme()),
    }
}

/// The HTTP client: rustls (no process-wide crypto provider), the configured trust.
pub(crate) fn build_http(cfg: &VsphereConfig) -> Result<reqwest::Client, VimError> {
    let mut b = reqwest::Client::builder()
        .user_agent(cfg.user_agent.clone())
        .connect_timeout(Duration::from_secs(15))
        .tls_backend_rustls();
    match &cfg.tls {
        TlsVerification::System => {}
        TlsVerification::CaPem(pem) => {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| VimError::Protocol(format!("invalid CA PEM: {e}")))?;
            if certs.is_empty() {
                return Err(VimError::Protocol(
                    "the CA PEM bundle holds no certificate".into(),
                ));
            }
            b = b.tls_certs_only(certs);
        }
        TlsVerification::DangerousAcceptInvalidCerts => {
            tracing::warn!(
                url = %cfg.url,
                "TLS certificate verification is DISABLED for this vSphere connection \
                 (TlsVerification::DangerousAcceptInvalidCerts): credentials can be intercepted"
            );
            b = b.tls_danger_accept_invalid_certs(true);
        }
    }
    b.build().map_err(VimError::Transport)
}

/// The login state of one client: credentials, the session cookie, and a generation that
/// grows with every login (so concurrent callers re-login once, and private property
/// collectors know their session was replaced).
pub(crate) struct Session {
    pub(crate) username: String,
    password: SecretString,
    cookie: RwLock<Option<SecretString>>,
    /// Held while logging in.
    pub(crate) login_lock: tokio::sync::Mutex<()>,
    generation: AtomicU64,
}

impl Session {
    pub(crate) fn new(cfg: &VsphereConfig) -> Self {
        Session {
            username: cfg.username.clone(),
            password: cfg.password.clone(),
            cookie: RwLock::new(None),
            login_lock: tokio::sync::Mutex::new(()),
            generation: AtomicU64::new(0),
        }
    }

    /// The body of `SessionManager.Login`. The password goes into the body only; bodies are
    /// never logged.
    pub(crate) fn login_body(&self) -> String {
        let mut body = Xml::new();
        body.el("userName", &self.username);
        body.el("password", self.password.expose_secret());
        body.finish()
    }

    /// Logins so far.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Counts a successful login.
    pub(crate) fn logged_in(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Forgets the session cookie.
    pub(crate) fn forget(&self) {
        *self.cookie.write().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Adds the session cookie (if any) to a request.
    pub(crate) fn authorize(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self
            .cookie
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            Some(c) => req.header("Cookie", c.expose_secret()),
            None => req,
        }
    }

    /// Keeps the `vmware_soap_session` cookie of a reply.
    pub(crate) fn remember(&self, headers: &reqwest::header::HeaderMap) {
        for v in headers.get_all(reqwest::header::SET_COOKIE) {
            if let Ok(s) = v.to_str() {
                let pair = s.split(';').next().unwrap_or("").trim();
                if pair.starts_with("vmware_soap_session=") {
                    *self.cookie.write().unwrap_or_else(|p| p.into_inner()) =
                        Some(SecretString::from(pair.to_owned()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdk_url_normalises() {
        assert_eq!(
            sdk_url("https://vc.example.com").expect("u").as_str(),
            "https://vc.example.com/sdk"
        );
        assert_eq!(
            sdk_url("https://u:p@vc.example.com/sdk")
                .expect("u")
                .as_str(),
            "https://vc.example.com/sdk"
        );
        assert!(sdk_url("ftp://x").is_err());
        assert!(sdk_url("not a url").is_err());
    }

    #[test]
    fn endpoint_identity_is_scheme_host_port_without_credentials() {
        let id = |raw: &str| endpoint_identity(&sdk_url(raw).expect("url"));
        let leaky = id("https://svc-admin:hunter2@VC1.Example.com:8443/sdk?x=hunter2#hunter2");
        assert_eq!(leaky, "https://vc1.example.com:8443");
        assert!(
            !leaky.contains("hunter2") && !leaky.contains("svc-admin"),
            "{leaky}"
        );
        // The same endpoint however it is written.
        assert_eq!(id("https://vc1.example.com"), "https://vc1.example.com:443");
        assert_eq!(
            id("https://vc1.example.com:443/sdk"),
            "https://vc1.example.com:443"
        );
        assert_eq!(id("http://[::1]:18989/sdk"), "http://[::1]:18989");
        assert_ne!(id("https://vc1.example.com"), id("https://vc2.example.com"));
    }
}
