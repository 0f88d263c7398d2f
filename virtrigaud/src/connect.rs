//! From a parsed URL and options to a connected provider.

use std::sync::Arc;

use virtrigaud_core::placement::{HostInfo, Resources};
use virtrigaud_core::sim::{GuestBehavior, Simulator};
use virtrigaud_core::{Error, ErrorKind, Provider, Result};

use crate::options::ConnectOptions;
use crate::url::{ProviderKind, ProviderUrl, Target};

/// Connects to the provider `url` names, with credentials from the environment.
///
/// Shorthand for [`connect_with`]`(url, ConnectOptions::default())`.
pub async fn connect(url: &str) -> Result<Arc<dyn Provider>> {
    connect_with(url, ConnectOptions::default()).await
}

/// Connects to the provider `url` names, with `options` (unset fields from the environment).
///
/// Errors:
/// * [`ErrorKind::InvalidSpec`] for a URL that does not parse, an unknown scheme or query
///   parameter, a password inside the URL, or missing / conflicting credentials; the message
///   starts with the field (`url.scheme: …`, `url.query.pool: …`, `options.password: …`);
/// * [`ErrorKind::Unsupported`] when the provider's cargo feature is not enabled (the message
///   names the feature), or credentials were given to a provider that takes them elsewhere;
/// * whatever the provider's own connect returns (unreachable server, bad login, …).
///
/// Errors show the URL redacted ([`crate::redact_url`]).
pub async fn connect_with(url: &str, options: ConnectOptions) -> Result<Arc<dyn Provider>> {
    let parsed = ProviderUrl::parse(url)?;
    connect_parsed(&parsed, &options).await
}

/// Connects to an already parsed URL.
pub async fn connect_parsed(
    url: &ProviderUrl,
    options: &ConnectOptions,
) -> Result<Arc<dyn Provider>> {
    let kind = url.kind();
    if !kind.is_compiled_in() {
        return Err(not_compiled_in(kind, url.redacted()));
    }
    let shown = url.redacted();
    let result: Result<Arc<dyn Provider>> = match &url.target {
        Target::Simulator { .. } => Ok(Arc::new(simulator_for(url)?)),
        #[cfg(feature = "libvirt")]
        t @ Target::Libvirt { .. } => backends::libvirt(t, options, shown).await,
        #[cfg(feature = "vsphere")]
        t @ Target::Vsphere { .. } => backends::vsphere(t, options).await,
        #[cfg(feature = "proxmox")]
        t @ Target::Proxmox { .. } => backends::proxmox(t, options).await,
        #[cfg(feature = "kubevirt")]
        t @ Target::KubeVirt { .. } => backends::kubevirt(t, options, shown).await,
        #[allow(unreachable_patterns)]
        _ => Err(Error::internal("provider not compiled in")),
    };
    let _ = options;
    result.map_err(|e| e.context_for(kind.as_str(), "connect", Some(shown)))
}

/// The error for a URL whose provider's feature is off.
fn not_compiled_in(kind: ProviderKind, shown: &str) -> Error {
    let feature = kind.feature().unwrap_or_default();
    Error::new(
        ErrorKind::Unsupported,
        format!(
            "the {kind} provider is not compiled in: enable the `{feature}` feature of the \
             virtrigaud crate (or `full`)"
        ),
    )
    .with_provider(kind.as_str())
    .with_operation("connect")
    .with_resource(shown.to_owned())
}

/// The simulator a `sim://` URL describes, for callers that script it (add VMs with guest
/// behaviours, inject faults) before handing it out as a provider.
///
/// `?hosts=N` adds hosts `host-01` … (16 vCPUs, 32 GiB each) to its placement inventory;
/// `?vms=N` adds running, cooperative VMs `vm-1` … `vm-N`.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap().block_on(async {
/// use virtrigaud::{ListOptions, Provider};
/// let sim = virtrigaud::simulator("sim://?vms=3&hosts=2")?;
/// assert_eq!(sim.list_vms(&ListOptions::default()).await?.len(), 3);
/// assert!(virtrigaud::simulator("qemu:///system").is_err());
/// # Ok::<(), virtrigaud::Error>(()) }).unwrap();
/// ```
pub fn simulator(url: &str) -> Result<Simulator> {
    simulator_for(&ProviderUrl::parse(url)?)
}

fn simulator_for(url: &ProviderUrl) -> Result<Simulator> {
    let Target::Simulator { vms, hosts } = url.target else {
        return Err(crate::url::invalid(
            "url.scheme",
            url.redacted(),
            format!("expected sim://, this URL selects {}", url.kind()),
        ));
    };
    let sim = Simulator::new();
    for i in 1..=hosts {
        sim.add_host(HostInfo::new(
            format!("host-{i:02}"),
            Resources::new(16, 32768),
        ));
    }
    for i in 1..=vms {
        sim.add_vm(&format!("vm-{i}"), GuestBehavior::cooperative());
    }
    debug_assert_eq!(url.kind(), ProviderKind::Simulator);
    Ok(sim)
}

#[cfg(any(
    feature = "libvirt",
    feature = "vsphere",
    feature = "proxmox",
    feature = "kubevirt"
))]
mod backends {
    use std::sync::Arc;

    use secrecy::ExposeSecret;
    use virtrigaud_core::{Error, ErrorKind, Provider, Result};

    use crate::options::{ConnectOptions, Tls, option_error};
    use crate::url::Target;

    /// Credentials given to a provider that takes them from its own configuration.
    #[allow(dead_code)]
    fn refuse_credentials(options: &ConnectOptions, provider: &str, where_: &str) -> Result<()> {
        if options.has_credentials() || options.username.is_some() {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "{provider} takes its credentials from {where_}; ConnectOptions' user \
                     name, password and token are not used"
                ),
            ));
        }
        Ok(())
    }

    #[cfg(feature = "libvirt")]
    pub(super) async fn libvirt(
        t: &Target,
        options: &ConnectOptions,
        _shown: &str,
    ) -> Result<Arc<dyn Provider>> {
        use virtrigaud_libvirt::{DomainTemplate, LibvirtConfig, LibvirtProvider};
        let Target::Libvirt {
            uri,
            pool,
            domain_type,
            events,
            tls,
        } = t
        else {
            return Err(Error::internal("not a libvirt URL"));
        };
        refuse_credentials(
            options,
            "libvirt",
            "its own configuration (SSH keys, TLS certificates, SASL auth.conf)",
        )?;
        let mut uri = uri.clone();
        if options.insecure_tls && *tls && !uri.contains("no_verify=") {
            uri.push(if uri.contains('?') { '&' } else { '?' });
            uri.push_str("no_verify=1");
        }
        let mut cfg = LibvirtConfig::new(uri);
        if let Some(pool) = pool
            .clone()
            .or_else(|| options.env("VIRTRIGAUD_LIBVIRT_POOL"))
        {
            cfg = cfg.with_storage_pool(pool);
        }
        if let Some(dt) = domain_type
            .clone()
            .or_else(|| options.env("VIRTRIGAUD_LIBVIRT_DOMAIN_TYPE"))
        {
            let mut template = DomainTemplate::default();
            template.domain_type = dt;
            cfg = cfg.with_template(template);
        }
        if let Some(events) = events {
            cfg = cfg.with_events(*events);
        }
        Ok(Arc::new(LibvirtProvider::connect(cfg).await?))
    }

    #[cfg(feature = "vsphere")]
    pub(super) async fn vsphere(t: &Target, options: &ConnectOptions) -> Result<Arc<dyn Provider>> {
        use virtrigaud_vsphere::{TlsVerification, VsphereConfig, VsphereProvider};
        let Target::Vsphere {
            endpoint,
            username,
            datacenter,
            datastore,
            folder,
            resource_pool,
        } = t
        else {
            return Err(Error::internal("not a vSphere URL"));
        };
        if options.token_id.is_some() || options.token_secret.is_some() {
            return Err(option_error(
                "options.token_secret",
                "vSphere logs in with a user name and password, not an API token",
            ));
        }
        let user = options
            .username
            .clone()
            .or_else(|| username.clone())
            .or_else(|| options.env("VIRTRIGAUD_VSPHERE_USER"))
            .ok_or_else(|| {
                option_error(
                    "options.username",
                    "vSphere needs a user name (ConnectOptions::username, user@ in the URL, \
                     or VIRTRIGAUD_VSPHERE_USER)",
                )
            })?;
        let password = match &options.password {
            Some(p) => p.expose_secret().to_owned(),
            None => options.env("VIRTRIGAUD_VSPHERE_PASSWORD").ok_or_else(|| {
                option_error(
                    "options.password",
                    "vSphere needs a password (ConnectOptions::password or \
                     VIRTRIGAUD_VSPHERE_PASSWORD)",
                )
            })?,
        };
        let tls = match options.tls("VIRTRIGAUD_VSPHERE_CA_FILE", "VIRTRIGAUD_VSPHERE_INSECURE")? {
            Tls::System => TlsVerification::System,
            Tls::CaPem(pem) => TlsVerification::CaPem(pem),
            Tls::Insecure => TlsVerification::DangerousAcceptInvalidCerts,
        };
        let mut cfg = VsphereConfig::new(endpoint.clone(), user, password).with_tls(tls);
        if let Some(v) = datacenter {
            cfg = cfg.with_default_datacenter(v.clone());
        }
        if let Some(v) = datastore {
            cfg = cfg.with_default_datastore(v.clone());
        }
        if let Some(v) = folder {
            cfg = cfg.with_default_folder(v.clone());
        }
        if let Some(v) = resource_pool {
            cfg = cfg.with_default_resource_pool(v.clone());
        }
        Ok(Arc::new(VsphereProvider::connect(cfg).await?))
    }

    #[cfg(feature = "proxmox")]
    pub(super) async fn proxmox(t: &Target, options: &ConnectOptions) -> Result<Arc<dyn Provider>> {
        use virtrigaud_proxmox::{ProviderOptions, ProxmoxConfig, ProxmoxProvider, PveClient};
        let Target::Proxmox {
            endpoint,
            username,
            node,
            storage,
        } = t
        else {
            return Err(Error::internal("not a Proxmox URL"));
        };
        let auth = proxmox_auth(options, username.as_deref())?;
        let mut cfg = ProxmoxConfig::new(endpoint.clone(), auth);
        match options.tls("VIRTRIGAUD_PROXMOX_CA", "VIRTRIGAUD_PROXMOX_INSECURE")? {
            Tls::System => {}
            Tls::CaPem(pem) => cfg = cfg.with_ca_pem(pem),
            Tls::Insecure => cfg = cfg.danger_accept_invalid_certs(),
        }
        if node.is_none() && storage.is_none() {
            return Ok(Arc::new(ProxmoxProvider::connect(cfg).await?));
        }
        let mut popts = ProviderOptions::default();
        if let Some(s) = storage {
            popts.default_storage = s.clone();
        }
        popts.default_node = node.clone();
        let client = PveClient::new(cfg).map_err(Error::from)?;
        Ok(Arc::new(ProxmoxProvider::with_options(client, popts)))
    }

    /// Explicit options first (a token, else a password), then the environment (a token,
    /// else a user and password).
    #[cfg(feature = "proxmox")]
    fn proxmox_auth(
        options: &ConnectOptions,
        url_user: Option<&str>,
    ) -> Result<virtrigaud_proxmox::Auth> {
        use virtrigaud_proxmox::Auth;
        match (&options.token_id, &options.token_secret) {
            (Some(id), Some(secret)) => {
                return Ok(Auth::api_token(id.clone(), secret.expose_secret()));
            }
            (Some(_), None) => {
                return Err(option_error(
                    "options.token_secret",
                    "an API token id needs its secret",
                ));
            }
            (None, Some(_)) => {
                return Err(option_error(
                    "options.token_id",
                    "an API token secret needs its id (user@realm!tokenid)",
                ));
            }
            (None, None) => {}
        }
        let user = || {
            options
                .username
                .clone()
                .or_else(|| url_user.map(str::to_owned))
                .or_else(|| options.env("VIRTRIGAUD_PROXMOX_USER"))
                .ok_or_else(|| {
                    option_error(
                        "options.username",
                        "a password login needs a user name (user@realm: ConnectOptions::username, \
                         user@ in the URL, or VIRTRIGAUD_PROXMOX_USER)",
                    )
                })
        };
        if let Some(p) = &options.password {
            return Ok(Auth::password(user()?, p.expose_secret()));
        }
        if let (Some(id), Some(secret)) = (
            options.env("VIRTRIGAUD_PROXMOX_TOKEN_ID"),
            options.env("VIRTRIGAUD_PROXMOX_TOKEN_SECRET"),
        ) {
            return Ok(Auth::api_token(id, secret));
        }
        if let Some(p) = options.env("VIRTRIGAUD_PROXMOX_PASSWORD") {
            return Ok(Auth::password(user()?, p));
        }
        Err(option_error(
            "options.password",
            "Proxmox needs an API token (ConnectOptions::with_api_token, or \
             VIRTRIGAUD_PROXMOX_TOKEN_ID and VIRTRIGAUD_PROXMOX_TOKEN_SECRET) or a user name and \
             password (ConnectOptions, or VIRTRIGAUD_PROXMOX_USER and VIRTRIGAUD_PROXMOX_PASSWORD)",
        ))
    }

    #[cfg(feature = "kubevirt")]
    pub(super) async fn kubevirt(
        t: &Target,
        options: &ConnectOptions,
        _shown: &str,
    ) -> Result<Arc<dyn Provider>> {
        use crate::url::KubePowerApi;
        use virtrigaud_kubevirt::{
            ConnectOptions as KubeOptions, KubeVirtConfig, KubeVirtProvider, PowerApi,
        };
        let Target::KubeVirt {
            kubeconfig,
            context,
            namespace,
            power_api,
        } = t
        else {
            return Err(Error::internal("not a KubeVirt URL"));
        };
        refuse_credentials(options, "KubeVirt", "the kubeconfig")?;
        if options.ca_pem.is_some() || options.ca_file.is_some() {
            return Err(Error::new(
                ErrorKind::Unsupported,
                "KubeVirt takes the API server's CA from the kubeconfig; ConnectOptions' CA is \
                 not used",
            ));
        }
        let path = kubeconfig
            .clone()
            .or_else(|| options.kubeconfig.clone())
            .or_else(|| options.env("VIRTRIGAUD_KUBECONFIG").map(Into::into))
            .or_else(|| {
                options
                    .env("KUBECONFIG")
                    .and_then(|v| std::env::split_paths(&v).next())
            })
            .or_else(|| {
                std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".kube/config"))
            })
            .ok_or_else(|| {
                option_error(
                    "options.kubeconfig",
                    "no kubeconfig: name one in the URL (kubevirt:///path), in \
                     ConnectOptions::kubeconfig, VIRTRIGAUD_KUBECONFIG or KUBECONFIG",
                )
            })?;
        let mut kopts = KubeOptions::default();
        kopts.context = context.clone();
        kopts.insecure_skip_tls_verify =
            options.insecure_tls || options.env_flag("VIRTRIGAUD_KUBEVIRT_INSECURE");
        let mut cfg = KubeVirtConfig::default();
        if let Some(ns) = namespace {
            cfg = cfg.with_namespace(ns.clone());
        }
        match power_api {
            Some(KubePowerApi::RunStrategy) => cfg = cfg.with_power_api(PowerApi::RunStrategy),
            Some(KubePowerApi::Subresources) => cfg = cfg.with_power_api(PowerApi::Subresources),
            None => {}
        }
        Ok(Arc::new(
            KubeVirtProvider::connect(&path, &kopts, cfg).await?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtrigaud_core::ListOptions;

    fn err_of<T>(r: Result<T>) -> Error {
        match r {
            Ok(_) => panic!("expected an error"),
            Err(e) => e,
        }
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("runtime")
            .block_on(f)
    }

    #[test]
    fn sim_urls_connect_to_a_seeded_simulator() {
        block_on(async {
            let p = connect("sim://?vms=4&hosts=3").await.expect("connect");
            assert_eq!(p.provider_type(), "simulator");
            assert_eq!(
                p.list_vms(&ListOptions::default())
                    .await
                    .expect("list")
                    .len(),
                4
            );
            let inv = p.inventory().await.expect("inventory");
            assert_eq!(inv.hosts.len(), 3);
            let p = connect("simulator://").await.expect("connect");
            assert!(
                p.list_vms(&ListOptions::default())
                    .await
                    .expect("list")
                    .is_empty()
            );
        });
    }

    #[test]
    fn providers_not_compiled_in_are_unsupported_naming_the_feature() {
        let cases = [
            ("qemu:///system", cfg!(feature = "libvirt"), "`libvirt`"),
            (
                "vsphere+https://vc1/sdk",
                cfg!(feature = "vsphere"),
                "`vsphere`",
            ),
            (
                "pve+https://pve1:8006",
                cfg!(feature = "proxmox"),
                "`proxmox`",
            ),
            (
                "kubevirt:///nonexistent",
                cfg!(feature = "kubevirt"),
                "`kubevirt`",
            ),
        ];
        for (url, compiled, feature) in cases {
            if compiled {
                continue;
            }
            let e = err_of(block_on(connect(url)));
            assert_eq!(e.kind(), ErrorKind::Unsupported, "{url}: {e}");
            assert!(e.message().contains(feature), "{url}: {e}");
        }
    }

    #[test]
    fn the_feature_error_names_the_feature() {
        for (kind, feature) in [
            (ProviderKind::Libvirt, "`libvirt`"),
            (ProviderKind::Vsphere, "`vsphere`"),
            (ProviderKind::Proxmox, "`proxmox`"),
            (ProviderKind::KubeVirt, "`kubevirt`"),
        ] {
            let e = not_compiled_in(kind, "x://");
            assert_eq!(e.kind(), ErrorKind::Unsupported);
            assert_eq!(e.provider(), kind.as_str());
            assert!(e.message().contains(feature), "{e}");
        }
    }

    #[test]
    fn the_simulator_helper_refuses_other_urls() {
        let e = err_of(simulator("qemu:///system"));
        assert_eq!(e.kind(), ErrorKind::InvalidSpec);
        assert!(e.message().starts_with("url.scheme:"), "{e}");
    }

    #[cfg(feature = "proxmox")]
    #[test]
    fn proxmox_credentials_are_required_and_never_shown() {
        let e = err_of(block_on(connect_with(
            "pve+https://pve1:8006",
            ConnectOptions::new().without_env(),
        )));
        assert_eq!(e.kind(), ErrorKind::InvalidSpec);
        assert!(e.message().starts_with("options.password:"), "{e}");
        let e = err_of(block_on(connect_with(
            "pve+https://pve1:8006",
            ConnectOptions::new()
                .without_env()
                .with_api_token("root@pam!x", "tok-s3cret")
                .with_ca_file("/nonexistent/ca.pem"),
        )));
        assert!(e.message().starts_with("options.ca_file:"), "{e}");
        assert!(!format!("{e} {e:?}").contains("tok-s3cret"));
    }

    #[cfg(feature = "vsphere")]
    #[test]
    fn vsphere_needs_a_user_and_password() {
        let e = err_of(block_on(connect_with(
            "vsphere+https://vc1/sdk",
            ConnectOptions::new().without_env().with_password("pw"),
        )));
        assert!(e.message().starts_with("options.username:"), "{e}");
        let e = err_of(block_on(connect_with(
            "vsphere+https://svc@vc1/sdk",
            ConnectOptions::new().without_env(),
        )));
        assert!(e.message().starts_with("options.password:"), "{e}");
    }

    #[cfg(feature = "libvirt")]
    #[test]
    fn libvirt_refuses_a_password_it_could_not_use() {
        let e = err_of(block_on(connect_with(
            "test:///default",
            ConnectOptions::new().with_password("pw"),
        )));
        assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    }
}
