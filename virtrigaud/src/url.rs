//! Provider URLs: the scheme picks the provider, the query carries its settings.
//!
//! Parsing never panics and never needs a provider to be compiled in: a URL is checked in
//! full first, and only then does [`crate::connect_with`] ask whether its provider's feature
//! is enabled.

use std::fmt;
use std::path::PathBuf;

use virtrigaud_core::{Error, ErrorKind, Result};

/// The provider a URL selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProviderKind {
    /// The in-memory simulator of `virtrigaud-core` (`sim://`, `simulator://`).
    Simulator,
    /// libvirt/KVM (`qemu:///system`, `qemu+ssh://host/system`, `test:///default`, …).
    Libvirt,
    /// VMware vSphere (`vsphere+https://host/sdk`).
    Vsphere,
    /// Proxmox VE (`pve+https://host:8006`).
    Proxmox,
    /// KubeVirt (`kubevirt://?context=…`, `kubevirt:///path/to/kubeconfig`).
    KubeVirt,
}

impl ProviderKind {
    /// The provider type name (`"simulator"`, `"libvirt"`, `"vsphere"`, `"proxmox"`,
    /// `"kubevirt"`), as the providers report it.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Simulator => "simulator",
            ProviderKind::Libvirt => "libvirt",
            ProviderKind::Vsphere => "vsphere",
            ProviderKind::Proxmox => "proxmox",
            ProviderKind::KubeVirt => "kubevirt",
        }
    }

    /// The cargo feature of this crate that compiles the provider in (`None`: always there).
    pub fn feature(self) -> Option<&'static str> {
        match self {
            ProviderKind::Simulator => None,
            ProviderKind::Libvirt => Some("libvirt"),
            ProviderKind::Vsphere => Some("vsphere"),
            ProviderKind::Proxmox => Some("proxmox"),
            ProviderKind::KubeVirt => Some("kubevirt"),
        }
    }

    /// Whether this build of the crate can connect to the provider.
    pub fn is_compiled_in(self) -> bool {
        match self {
            ProviderKind::Simulator => true,
            ProviderKind::Libvirt => cfg!(feature = "libvirt"),
            ProviderKind::Vsphere => cfg!(feature = "vsphere"),
            ProviderKind::Proxmox => cfg!(feature = "proxmox"),
            ProviderKind::KubeVirt => cfg!(feature = "kubevirt"),
        }
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The query parameters virtrigaud itself defines (their values are shown by
/// [`redact_url`]; the values of all other parameters are masked).
const OWN_PARAMS: &[&str] = &[
    "vms",
    "hosts",
    "pool",
    "domain_type",
    "events",
    "datacenter",
    "datastore",
    "folder",
    "resource_pool",
    "node",
    "storage",
    "context",
    "namespace",
    "power_api",
];

/// Parameters of libvirt's own remote driver, passed through to libvirt unchanged.
const LIBVIRT_PARAMS: &[&str] = &[
    "name",
    "command",
    "socket",
    "netcat",
    "keyfile",
    "no_verify",
    "no_tty",
    "pkipath",
    "known_hosts",
    "known_hosts_verify",
    "sshauth",
    "tls_priority",
    "mode",
    "proxy",
];

/// Libvirt parameters whose value [`redact_url`] shows (never secrets).
const LIBVIRT_SHOWN: &[&str] = &["name", "socket", "mode", "no_verify"];

/// `raw` fit for logs and error messages: no user information (`user:password@`), no
/// fragment, and only the values of query parameters known to be harmless (virtrigaud's own,
/// and libvirt's `name`, `socket`, `mode`, `no_verify`); other values are shown as `***`.
///
/// ```
/// let shown = virtrigaud::redact_url("vsphere+https://admin:hunter2@vc1/sdk?datacenter=DC0&token=t0p");
/// assert_eq!(shown, "vsphere+https://vc1/sdk?datacenter=DC0&token=***");
/// ```
pub fn redact_url(raw: &str) -> String {
    let no_fragment = raw.split_once('#').map_or(raw, |(u, _)| u);
    let (base, query) = match no_fragment.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (no_fragment, None),
    };
    let mut out = match base.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = match rest.find('/') {
                Some(i) => rest.split_at(i),
                None => (rest, ""),
            };
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            format!("{scheme}://{host}{path}")
        }
        None => base.rsplit_once('@').map_or(base, |(_, h)| h).to_owned(),
    };
    if let Some(q) = query {
        let shown: Vec<String> = q
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|pair| {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                let decoded = decode_component(key);
                if value.is_empty()
                    || OWN_PARAMS.contains(&decoded.as_str())
                    || LIBVIRT_SHOWN.contains(&decoded.as_str())
                {
                    pair.to_owned()
                } else {
                    format!("{key}=***")
                }
            })
            .collect();
        if !shown.is_empty() {
            out.push('?');
            out.push_str(&shown.join("&"));
        }
    }
    out
}

fn decode_component(s: &str) -> String {
    url::form_urlencoded::parse(format!("k={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// An InvalidSpec error about `field` of the URL (`shown` is the redacted URL).
pub(crate) fn invalid(field: &str, shown: &str, what: impl fmt::Display) -> Error {
    Error::new(ErrorKind::InvalidSpec, format!("{field}: {what}"))
        .with_provider("virtrigaud")
        .with_operation("connect")
        .with_resource(shown.to_owned())
}

/// The decoded query of a URL, each parameter at most once.
#[derive(Default)]
struct Query {
    /// `(decoded key, decoded value, raw pair)`.
    pairs: Vec<(String, String, String)>,
}

impl Query {
    fn parse(raw: Option<&str>, shown: &str) -> Result<Query> {
        let mut q = Query::default();
        for pair in raw.into_iter().flat_map(|r| r.split('&')) {
            if pair.is_empty() {
                continue;
            }
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let key = decode_component(k);
            let value = decode_component(v);
            if key.is_empty() {
                return Err(invalid("url.query", shown, "a parameter without a name"));
            }
            if q.pairs.iter().any(|(existing, _, _)| *existing == key) {
                return Err(invalid(
                    &format!("url.query.{key}"),
                    shown,
                    "given more than once",
                ));
            }
            q.pairs.push((key, value, pair.to_owned()));
        }
        Ok(q)
    }

    /// Rejects any parameter not in `allowed` (naming the ones that are).
    fn only(&self, allowed: &[&str], provider: ProviderKind, shown: &str) -> Result<()> {
        for (key, _, _) in &self.pairs {
            if !allowed.contains(&key.as_str()) {
                let known = if allowed.is_empty() {
                    "none".to_owned()
                } else {
                    allowed.join(", ")
                };
                return Err(invalid(
                    &format!("url.query.{key}"),
                    shown,
                    format!("unknown parameter for {provider} (known: {known})"),
                ));
            }
        }
        Ok(())
    }

    /// The value of `key`, which must not be empty when given.
    fn text(&self, key: &str, shown: &str) -> Result<Option<String>> {
        match self.pairs.iter().find(|(k, _, _)| k == key) {
            None => Ok(None),
            Some((_, v, _)) if v.trim().is_empty() => Err(invalid(
                &format!("url.query.{key}"),
                shown,
                "must not be empty",
            )),
            Some((_, v, _)) => Ok(Some(v.clone())),
        }
    }

    fn count(&self, key: &str, max: usize, shown: &str) -> Result<Option<usize>> {
        let Some(v) = self.text(key, shown)? else {
            return Ok(None);
        };
        match v.parse::<usize>() {
            Ok(n) if n <= max => Ok(Some(n)),
            _ => Err(invalid(
                &format!("url.query.{key}"),
                shown,
                format!("expected a count from 0 to {max}, got {v:?}"),
            )),
        }
    }

    fn flag(&self, key: &str, shown: &str) -> Result<Option<bool>> {
        let Some(v) = self.text(key, shown)? else {
            return Ok(None);
        };
        match v.as_str() {
            "1" | "true" | "yes" | "on" => Ok(Some(true)),
            "0" | "false" | "no" | "off" => Ok(Some(false)),
            _ => Err(invalid(
                &format!("url.query.{key}"),
                shown,
                format!("expected true or false, got {v:?}"),
            )),
        }
    }
}

/// How the KubeVirt provider sends power operations (`?power_api=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(dead_code)]
pub(crate) enum KubePowerApi {
    Subresources,
    RunStrategy,
}

/// What a URL asks for, per provider. (The fields are read by the provider backends, which
/// are compiled only with their features.)
#[derive(Clone)]
#[allow(dead_code)]
pub(crate) enum Target {
    Simulator {
        vms: usize,
        hosts: usize,
    },
    Libvirt {
        /// The URI for libvirt: virtrigaud's parameters removed, libvirt's kept verbatim.
        uri: String,
        pool: Option<String>,
        domain_type: Option<String>,
        events: Option<bool>,
        /// The transport is TLS (`qemu+tls://`, or a remote `qemu://host/`).
        tls: bool,
    },
    Vsphere {
        /// `https://host[:port]/path` without user information or query.
        endpoint: String,
        username: Option<String>,
        datacenter: Option<String>,
        datastore: Option<String>,
        folder: Option<String>,
        resource_pool: Option<String>,
    },
    Proxmox {
        /// `https://host:port[/path]` without user information or query.
        endpoint: String,
        username: Option<String>,
        node: Option<String>,
        storage: Option<String>,
    },
    KubeVirt {
        kubeconfig: Option<PathBuf>,
        context: Option<String>,
        namespace: Option<String>,
        power_api: Option<KubePowerApi>,
    },
}

/// A parsed provider URL: which provider, and its settings.
///
/// `Display` and `Debug` show the URL through [`redact_url`] (never user information).
///
/// ```
/// use virtrigaud::{ProviderKind, ProviderUrl};
/// let u = ProviderUrl::parse("qemu+ssh://admin@kvm1/system?pool=images")?;
/// assert_eq!(u.kind(), ProviderKind::Libvirt);
/// assert_eq!(u.to_string(), "qemu+ssh://kvm1/system?pool=images");
/// let err = ProviderUrl::parse("qemu:///system?pool=").unwrap_err();
/// assert!(err.message().starts_with("url.query.pool:"));
/// # Ok::<(), virtrigaud::Error>(())
/// ```
#[derive(Clone)]
pub struct ProviderUrl {
    kind: ProviderKind,
    shown: String,
    pub(crate) target: Target,
}

impl fmt::Debug for ProviderUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderUrl")
            .field("kind", &self.kind)
            .field("url", &self.shown)
            .finish()
    }
}

impl fmt::Display for ProviderUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl std::str::FromStr for ProviderUrl {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        ProviderUrl::parse(s)
    }
}

impl ProviderUrl {
    /// Parses `raw`. Errors are [`ErrorKind::InvalidSpec`] and name the field (`url`,
    /// `url.scheme`, `url.host`, `url.query.pool`, …); they show the URL redacted.
    pub fn parse(raw: &str) -> Result<ProviderUrl> {
        let raw = raw.trim();
        let shown = redact_url(raw);
        if raw.is_empty() {
            return Err(invalid("url", &shown, "empty"));
        }
        if raw.contains('#') {
            return Err(invalid("url", &shown, "a fragment (#…) is not allowed"));
        }
        let Some((scheme, rest)) = raw.split_once("://") else {
            return Err(invalid(
                "url.scheme",
                &shown,
                "expected SCHEME://… (sim://, qemu:///system, vsphere+https://HOST/sdk, \
                 pve+https://HOST:8006, kubevirt://)",
            ));
        };
        let scheme = scheme.to_ascii_lowercase();
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q)),
            None => (rest, None),
        };
        let q = Query::parse(query, &shown)?;
        let (kind, target) = match scheme.as_str() {
            "sim" | "simulator" => (ProviderKind::Simulator, simulator(rest, &q, &shown)?),
            "vsphere" | "vsphere+https" => (ProviderKind::Vsphere, vsphere(rest, &q, &shown)?),
            "pve" | "pve+https" | "proxmox" | "proxmox+https" => {
                (ProviderKind::Proxmox, proxmox(rest, &q, &shown)?)
            }
            "kubevirt" => (ProviderKind::KubeVirt, kubevirt(rest, &q, &shown)?),
            s if is_libvirt_scheme(s) => (
                ProviderKind::Libvirt,
                libvirt(raw, s, rest, query, &q, &shown)?,
            ),
            other => {
                return Err(invalid(
                    "url.scheme",
                    &shown,
                    format!(
                        "unknown scheme {other:?} (known: sim, qemu[+ssh|+tcp|+tls|+unix|+libssh|+libssh2|+ext], \
                         test, vsphere+https, pve+https, kubevirt)"
                    ),
                ));
            }
        };
        Ok(ProviderUrl {
            kind,
            shown,
            target,
        })
    }

    /// The provider the URL selects.
    pub fn kind(&self) -> ProviderKind {
        self.kind
    }

    /// The URL as [`redact_url`] shows it.
    pub fn redacted(&self) -> &str {
        &self.shown
    }
}

fn is_libvirt_scheme(s: &str) -> bool {
    let (driver, transport) = s.split_once('+').unwrap_or((s, ""));
    matches!(driver, "qemu" | "test")
        && matches!(
            transport,
            "" | "ssh" | "tcp" | "tls" | "unix" | "libssh" | "libssh2" | "ext"
        )
}

/// The user name of `authority` (percent-decoded); a password is refused.
fn user_of(authority: &str, shown: &str, hint: &str) -> Result<Option<String>> {
    let Some((userinfo, _)) = authority.rsplit_once('@') else {
        return Ok(None);
    };
    if userinfo.contains(':') {
        return Err(invalid(
            "url.password",
            shown,
            format!(
                "a password in the URL is refused (it would end up in logs and shell history); {hint}"
            ),
        ));
    }
    let user = decode_path(userinfo);
    Ok((!user.is_empty()).then_some(user))
}

fn decode_path(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

fn split_authority(rest: &str) -> (&str, &str) {
    match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    }
}

fn simulator(rest: &str, q: &Query, shown: &str) -> Result<Target> {
    if !rest.is_empty() && rest != "/" {
        return Err(invalid(
            "url.host",
            shown,
            "the simulator URL has no host or path (sim://?vms=3&hosts=2)",
        ));
    }
    q.only(&["vms", "hosts"], ProviderKind::Simulator, shown)?;
    Ok(Target::Simulator {
        vms: q.count("vms", 10_000, shown)?.unwrap_or(0),
        hosts: q.count("hosts", 10_000, shown)?.unwrap_or(0),
    })
}

fn libvirt(
    raw: &str,
    scheme: &str,
    rest: &str,
    query: Option<&str>,
    q: &Query,
    shown: &str,
) -> Result<Target> {
    let (authority, _path) = split_authority(rest);
    // libvirt reads user names from the URI (ssh); passwords never (it asks its auth callbacks).
    user_of(
        authority,
        shown,
        "libvirt authenticates with SSH keys, TLS certificates or SASL (auth.conf)",
    )?;
    let mut allowed: Vec<&str> = vec!["pool", "domain_type", "events"];
    allowed.extend_from_slice(LIBVIRT_PARAMS);
    q.only(&allowed, ProviderKind::Libvirt, shown)?;
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    // libvirt's own parameters, verbatim (libvirt decodes them itself).
    let kept: Vec<&str> = q
        .pairs
        .iter()
        .filter(|(k, _, _)| LIBVIRT_PARAMS.contains(&k.as_str()))
        .map(|(_, _, pair)| pair.as_str())
        .collect();
    let base = match query {
        Some(qs) => &raw[..raw.len() - qs.len() - 1],
        None => raw,
    };
    let uri = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    let transport = scheme.split_once('+').map(|(_, t)| t);
    Ok(Target::Libvirt {
        uri,
        pool: q.text("pool", shown)?,
        domain_type: q.text("domain_type", shown)?,
        events: q.flag("events", shown)?,
        tls: transport == Some("tls") || (transport.is_none() && !host.is_empty()),
    })
}

/// `https://host[:port]/path` of `rest` (`host[:port][/path]`, user information dropped) and
/// the user name it carried.
fn https_endpoint(
    rest: &str,
    default_port: Option<u16>,
    default_path: &str,
    shown: &str,
    hint: &str,
) -> Result<(String, Option<String>)> {
    let (authority, path) = split_authority(rest);
    let user = user_of(authority, shown, hint)?;
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host.is_empty() {
        return Err(invalid("url.host", shown, "missing"));
    }
    let candidate = format!("https://{host}{path}");
    let mut u = url::Url::parse(&candidate).map_err(|e| invalid("url.host", shown, e))?;
    if u.host_str().is_none_or(str::is_empty) {
        return Err(invalid("url.host", shown, "missing"));
    }
    if u.port().is_none()
        && let Some(p) = default_port
        && !host.ends_with(":443")
    {
        let _ = u.set_port(Some(p));
    }
    if u.path().is_empty() || u.path() == "/" {
        u.set_path(default_path);
    }
    let mut endpoint = u.to_string();
    if default_path.is_empty() {
        // No trailing `/` for a bare base URL.
        while endpoint.ends_with('/') {
            endpoint.pop();
        }
    }
    Ok((endpoint, user))
}

const CREDENTIALS_HINT_VSPHERE: &str =
    "pass it in ConnectOptions::password or VIRTRIGAUD_VSPHERE_PASSWORD";
const CREDENTIALS_HINT_PVE: &str = "pass it in ConnectOptions (password or API token) or \
     VIRTRIGAUD_PROXMOX_PASSWORD / VIRTRIGAUD_PROXMOX_TOKEN_SECRET";

fn vsphere(rest: &str, q: &Query, shown: &str) -> Result<Target> {
    let (endpoint, username) = https_endpoint(rest, None, "/sdk", shown, CREDENTIALS_HINT_VSPHERE)?;
    q.only(
        &["datacenter", "datastore", "folder", "resource_pool"],
        ProviderKind::Vsphere,
        shown,
    )?;
    Ok(Target::Vsphere {
        endpoint,
        username,
        datacenter: q.text("datacenter", shown)?,
        datastore: q.text("datastore", shown)?,
        folder: q.text("folder", shown)?,
        resource_pool: q.text("resource_pool", shown)?,
    })
}

/// Proxmox VE's API port, used when the URL names none.
pub const PVE_DEFAULT_PORT: u16 = 8006;

fn proxmox(rest: &str, q: &Query, shown: &str) -> Result<Target> {
    let (endpoint, username) = https_endpoint(
        rest,
        Some(PVE_DEFAULT_PORT),
        "",
        shown,
        CREDENTIALS_HINT_PVE,
    )?;
    q.only(&["node", "storage"], ProviderKind::Proxmox, shown)?;
    Ok(Target::Proxmox {
        endpoint,
        username,
        node: q.text("node", shown)?,
        storage: q.text("storage", shown)?,
    })
}

fn kubevirt(rest: &str, q: &Query, shown: &str) -> Result<Target> {
    let (authority, path) = split_authority(rest);
    if !authority.is_empty() {
        return Err(invalid(
            "url.host",
            shown,
            "a KubeVirt URL names no host: the API server comes from the kubeconfig \
             (kubevirt://?context=NAME or kubevirt:///path/to/kubeconfig)",
        ));
    }
    q.only(
        &["context", "namespace", "power_api"],
        ProviderKind::KubeVirt,
        shown,
    )?;
    let power_api = match q.text("power_api", shown)?.as_deref() {
        None => None,
        Some("subresources") => Some(KubePowerApi::Subresources),
        Some("run_strategy") => Some(KubePowerApi::RunStrategy),
        Some(other) => {
            return Err(invalid(
                "url.query.power_api",
                shown,
                format!("expected subresources or run_strategy, got {other:?}"),
            ));
        }
    };
    let kubeconfig = (!path.is_empty() && path != "/").then(|| PathBuf::from(decode_path(path)));
    Ok(Target::KubeVirt {
        kubeconfig,
        context: q.text("context", shown)?,
        namespace: q.text("namespace", shown)?,
        power_api,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(raw: &str) -> Error {
        match ProviderUrl::parse(raw) {
            Ok(u) => panic!("{raw} parsed as {u:?}"),
            Err(e) => e,
        }
    }

    fn parse(raw: &str) -> ProviderUrl {
        ProviderUrl::parse(raw).unwrap_or_else(|e| panic!("{raw}: {e}"))
    }

    #[test]
    fn schemes_select_providers() {
        for (raw, kind) in [
            ("sim://", ProviderKind::Simulator),
            ("simulator://", ProviderKind::Simulator),
            ("sim://?vms=3", ProviderKind::Simulator),
            ("qemu:///system", ProviderKind::Libvirt),
            ("qemu+ssh://root@kvm1/system", ProviderKind::Libvirt),
            ("qemu+tcp://kvm1:16509/system", ProviderKind::Libvirt),
            ("test:///default", ProviderKind::Libvirt),
            ("QEMU:///session", ProviderKind::Libvirt),
            ("vsphere+https://vc1/sdk", ProviderKind::Vsphere),
            ("vsphere://vc1", ProviderKind::Vsphere),
            ("pve+https://pve1:8006", ProviderKind::Proxmox),
            ("proxmox://pve1", ProviderKind::Proxmox),
            ("kubevirt://", ProviderKind::KubeVirt),
            (
                "kubevirt://?context=kind&namespace=vms",
                ProviderKind::KubeVirt,
            ),
            ("kubevirt:///etc/kube/config", ProviderKind::KubeVirt),
        ] {
            assert_eq!(parse(raw).kind(), kind, "{raw}");
        }
    }

    #[test]
    fn unknown_schemes_and_garbage_are_invalid_spec_naming_the_field() {
        for (raw, field) in [
            ("", "url:"),
            ("   ", "url:"),
            ("qemu", "url.scheme:"),
            ("ftp://x", "url.scheme:"),
            ("xen:///system", "url.scheme:"),
            ("qemu+carrier-pigeon://x/system", "url.scheme:"),
            ("sim://host", "url.host:"),
            ("vsphere+https:///sdk", "url.host:"),
            ("pve+https://", "url.host:"),
            ("pve+https://bad host:8006", "url.host:"),
            ("pve+https://pve1:99999", "url.host:"),
            ("kubevirt://cluster1/", "url.host:"),
            ("sim://#frag", "url:"),
        ] {
            let e = err(raw);
            assert_eq!(e.kind(), ErrorKind::InvalidSpec, "{raw}");
            assert!(e.message().starts_with(field), "{raw}: {e}");
            assert_eq!(e.operation(), "connect");
        }
    }

    #[test]
    fn bad_queries_name_the_parameter() {
        for (raw, field) in [
            ("qemu:///system?pool=", "url.query.pool:"),
            ("qemu:///system?pool=a&pool=b", "url.query.pool:"),
            ("qemu:///system?pol=a", "url.query.pol:"),
            ("qemu:///system?events=maybe", "url.query.events:"),
            ("sim://?vms=lots", "url.query.vms:"),
            ("sim://?vms=-1", "url.query.vms:"),
            ("sim://?vms=100000000", "url.query.vms:"),
            ("sim://?color=blue", "url.query.color:"),
            ("vsphere+https://vc1/sdk?pool=x", "url.query.pool:"),
            ("vsphere+https://vc1/sdk?password=x", "url.query.password:"),
            ("pve+https://pve1?node=", "url.query.node:"),
            ("kubevirt://?power_api=telepathy", "url.query.power_api:"),
            ("kubevirt://?=x", "url.query:"),
        ] {
            let e = err(raw);
            assert_eq!(e.kind(), ErrorKind::InvalidSpec, "{raw}");
            assert!(e.message().starts_with(field), "{raw}: {e}");
        }
    }

    #[test]
    fn libvirt_uri_loses_only_virtrigaud_parameters() {
        let u = parse(
            "qemu+ssh://admin@kvm1/system?keyfile=/root/.ssh/id%20x&pool=images&domain_type=qemu&no_verify=1&events=off",
        );
        let Target::Libvirt {
            uri,
            pool,
            domain_type,
            events,
            tls,
        } = u.target
        else {
            panic!("not libvirt")
        };
        assert_eq!(
            uri,
            "qemu+ssh://admin@kvm1/system?keyfile=/root/.ssh/id%20x&no_verify=1"
        );
        assert_eq!(pool.as_deref(), Some("images"));
        assert_eq!(domain_type.as_deref(), Some("qemu"));
        assert_eq!(events, Some(false));
        assert!(!tls);
        let Target::Libvirt { uri, pool, tls, .. } = parse("qemu:///system?pool=vr").target else {
            panic!("not libvirt")
        };
        assert_eq!(uri, "qemu:///system");
        assert_eq!(pool.as_deref(), Some("vr"));
        assert!(!tls);
        let Target::Libvirt { tls, .. } = parse("qemu+tls://kvm1/system").target else {
            panic!("not libvirt")
        };
        assert!(tls);
        let Target::Libvirt { uri, .. } = parse("test:///default").target else {
            panic!("not libvirt")
        };
        assert_eq!(uri, "test:///default");
    }

    #[test]
    fn http_endpoints_are_normalised() {
        let Target::Vsphere {
            endpoint,
            username,
            datacenter,
            resource_pool,
            ..
        } = parse("vsphere+https://svc%40vsphere.local@VC1.example:8443?datacenter=DC0&resource_pool=DC0/host/C0/Resources").target
        else {
            panic!("not vsphere")
        };
        assert_eq!(endpoint, "https://vc1.example:8443/sdk");
        assert_eq!(username.as_deref(), Some("svc@vsphere.local"));
        assert_eq!(datacenter.as_deref(), Some("DC0"));
        assert_eq!(resource_pool.as_deref(), Some("DC0/host/C0/Resources"));
        let Target::Proxmox {
            endpoint,
            node,
            storage,
            ..
        } = parse("pve+https://pve1?node=pve2&storage=local").target
        else {
            panic!("not proxmox")
        };
        assert_eq!(endpoint, "https://pve1:8006");
        assert_eq!(node.as_deref(), Some("pve2"));
        assert_eq!(storage.as_deref(), Some("local"));
        let Target::Proxmox { endpoint, .. } = parse("pve+https://127.0.0.1:18006/").target else {
            panic!("not proxmox")
        };
        assert_eq!(endpoint, "https://127.0.0.1:18006");
        let Target::Proxmox { endpoint, .. } = parse("pve+https://[fd00::1]").target else {
            panic!("not proxmox")
        };
        assert_eq!(endpoint, "https://[fd00::1]:8006");
    }

    #[test]
    fn kubevirt_urls() {
        let Target::KubeVirt {
            kubeconfig,
            context,
            namespace,
            power_api,
        } = parse(
            "kubevirt:///tmp/my%20kube/config?context=c1&namespace=ns1&power_api=run_strategy",
        )
        .target
        else {
            panic!("not kubevirt")
        };
        assert_eq!(kubeconfig, Some(PathBuf::from("/tmp/my kube/config")));
        assert_eq!(context.as_deref(), Some("c1"));
        assert_eq!(namespace.as_deref(), Some("ns1"));
        assert_eq!(power_api, Some(KubePowerApi::RunStrategy));
        let Target::KubeVirt { kubeconfig, .. } = parse("kubevirt://").target else {
            panic!("not kubevirt")
        };
        assert_eq!(kubeconfig, None);
    }

    #[test]
    fn simulator_counts() {
        let Target::Simulator { vms, hosts } = parse("sim://?vms=3&hosts=2").target else {
            panic!("not sim")
        };
        assert_eq!((vms, hosts), (3, 2));
    }

    #[test]
    fn passwords_in_urls_are_refused_and_never_shown() {
        for raw in [
            "vsphere+https://admin:hunter2@vc1/sdk",
            "pve+https://root%40pam:hunter2@pve1:8006",
            "qemu+ssh://root:hunter2@kvm1/system",
        ] {
            let e = err(raw);
            assert_eq!(e.kind(), ErrorKind::InvalidSpec);
            assert!(e.message().starts_with("url.password:"), "{e}");
            for shown in [e.to_string(), format!("{e:?}")] {
                assert!(!shown.contains("hunter2"), "{shown}");
                assert!(
                    !shown.contains("admin") && !shown.contains("root"),
                    "{shown}"
                );
            }
        }
    }

    #[test]
    fn errors_and_debug_never_show_userinfo() {
        let raw = "vsphere+https://alice:s3cret@vc1/sdk?color=s3cret-too";
        let e = err(raw);
        let shown = format!("{e} {e:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("alice"),
            "{shown}"
        );
        let u = parse("qemu+ssh://alice@kvm1/system?keyfile=/home/alice/.ssh/key&pool=p");
        for shown in [u.to_string(), format!("{u:?}")] {
            assert!(!shown.contains("alice"), "{shown}");
            assert!(
                shown.contains("pool=p") && shown.contains("keyfile=***"),
                "{shown}"
            );
        }
    }

    #[test]
    fn redaction() {
        assert_eq!(redact_url("sim://"), "sim://");
        assert_eq!(redact_url("a:b@c"), "c");
        assert_eq!(
            redact_url("qemu+ssh://u:p@h/system?keyfile=k&name=qemu:///system#x"),
            "qemu+ssh://h/system?keyfile=***&name=qemu:///system"
        );
        assert_eq!(
            redact_url("pve+https://u:p@h:8006?token=abc&node=pve1"),
            "pve+https://h:8006?token=***&node=pve1"
        );
        // An `@` in the path is not user information; one in the authority always is.
        assert_eq!(redact_url("x://h/a@b"), "x://h/a@b");
        assert_eq!(redact_url("x://u:p:q@@h/"), "x://h/");
    }
}
