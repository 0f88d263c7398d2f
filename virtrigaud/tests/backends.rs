//! `connect_with` against each real test server the environment names (scripts/<backend>/setup.sh
//! writes `/tmp/virtrigaud-state/<backend>.env`). Outside the project's test command a missing
//! server skips loudly; with `VIRTRIGAUD_REQUIRE_BACKENDS=1` it fails.
//!
//! Run with every provider compiled in: `cargo nextest run -p virtrigaud --features full`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs, dead_code)]

use std::sync::Arc;

use virtrigaud::{ConnectOptions, ListOptions, Provider};

/// Connects, then does real calls: the capabilities, a listing and the instance id.
async fn exercise(url: &str, options: ConnectOptions) -> Arc<dyn Provider> {
    let shown = virtrigaud::redact_url(url);
    let p = virtrigaud::connect_with(url, options)
        .await
        .unwrap_or_else(|e| panic!("connect {shown}: {e}"));
    let caps = p.capabilities();
    assert!(caps.list_vms, "{shown}: list_vms not declared");
    let vms = p
        .list_vms(&ListOptions::default())
        .await
        .unwrap_or_else(|e| panic!("list_vms on {shown}: {e}"));
    eprintln!(
        "{shown}: {} ({}), {} VMs",
        p.provider_type(),
        p.instance_id(),
        vms.len()
    );
    p
}

fn env(backend: &str, var: &str) -> Option<String> {
    virtrigaud_core::testing::backend_env(backend, var)
}

fn require_env(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| panic!("{var} is not set"))
}

#[cfg(feature = "libvirt")]
mod libvirt {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn libvirt_test_driver_through_a_url() {
        let p = exercise(
            "test:///default?pool=default-pool",
            ConnectOptions::new().without_env(),
        )
        .await;
        assert_eq!(p.provider_type(), "libvirt");
        // The test driver's shared instance has its `test` domain.
        let vms = p.list_vms(&ListOptions::default()).await.unwrap();
        assert!(vms.iter().any(|v| v.name == "test"), "{vms:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn libvirt_real_qemu_through_a_url() {
        let Some(uri) = env("libvirt", "VIRTRIGAUD_LIBVIRT_URI") else {
            return;
        };
        // The pool comes from VIRTRIGAUD_LIBVIRT_POOL; the URL's own parameter wins over it.
        let p = exercise(&uri, ConnectOptions::new()).await;
        assert_eq!(p.provider_type(), "libvirt");
        if let Ok(pool) = std::env::var("VIRTRIGAUD_LIBVIRT_POOL") {
            exercise(
                &format!("{uri}?pool={pool}"),
                ConnectOptions::new().without_env(),
            )
            .await;
        }
    }
}

#[cfg(feature = "vsphere")]
mod vsphere {
    use super::*;

    fn url() -> Option<String> {
        let u = env("vsphere", "VIRTRIGAUD_VSPHERE_URL")?;
        Some(format!("vsphere+{u}"))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn vsphere_with_credentials_from_the_environment() {
        let Some(url) = url() else { return };
        let p = exercise(&url, ConnectOptions::new()).await;
        assert_eq!(p.provider_type(), "vsphere");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn vsphere_with_explicit_options_only() {
        let Some(url) = url() else { return };
        let mut opts = ConnectOptions::new()
            .without_env()
            .with_username(require_env("VIRTRIGAUD_VSPHERE_USER"))
            .with_password(require_env("VIRTRIGAUD_VSPHERE_PASSWORD"));
        match std::env::var("VIRTRIGAUD_VSPHERE_CA_FILE") {
            Ok(f) if !f.is_empty() => opts = opts.with_ca_file(f),
            _ => opts = opts.with_insecure_tls(true),
        }
        let p = exercise(&format!("{url}?datacenter=DC0"), opts).await;
        assert_eq!(p.provider_type(), "vsphere");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn vsphere_certificate_is_verified_by_default() {
        let Some(url) = url() else { return };
        if std::env::var("VIRTRIGAUD_VSPHERE_CA_FILE").is_err() {
            return; // the server's certificate may then be publicly trusted
        }
        // The test server's certificate is from a private CA: without it the connection fails.
        let opts = ConnectOptions::new()
            .without_env()
            .with_username(require_env("VIRTRIGAUD_VSPHERE_USER"))
            .with_password(require_env("VIRTRIGAUD_VSPHERE_PASSWORD"));
        let password = require_env("VIRTRIGAUD_VSPHERE_PASSWORD");
        match virtrigaud::connect_with(&url, opts).await {
            Ok(_) => panic!("connected to a self-signed server without trusting its CA"),
            Err(e) => assert!(!format!("{e} {e:?}").contains(&password), "{e}"),
        }
    }
}

#[cfg(feature = "proxmox")]
mod proxmox {
    use super::*;

    fn url() -> Option<String> {
        let u = env("proxmox", "VIRTRIGAUD_PROXMOX_URL")?;
        Some(format!("pve+{u}"))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn proxmox_token_from_the_environment() {
        let Some(url) = url() else { return };
        let p = exercise(&url, ConnectOptions::new()).await;
        assert_eq!(p.provider_type(), "proxmox");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn proxmox_password_login_with_explicit_options() {
        let Some(url) = url() else { return };
        let opts = ConnectOptions::new()
            .without_env()
            .with_username(require_env("VIRTRIGAUD_PROXMOX_USER"))
            .with_password(require_env("VIRTRIGAUD_PROXMOX_PASSWORD"))
            .with_ca_file(require_env("VIRTRIGAUD_PROXMOX_CA"));
        exercise(&format!("{url}?storage=local"), opts).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn proxmox_explicit_token_and_insecure_tls() {
        let Some(url) = url() else { return };
        let opts = ConnectOptions::new()
            .without_env()
            .with_api_token(
                require_env("VIRTRIGAUD_PROXMOX_TOKEN_ID"),
                require_env("VIRTRIGAUD_PROXMOX_TOKEN_SECRET"),
            )
            .with_insecure_tls(true);
        exercise(&url, opts).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn proxmox_wrong_token_is_refused_without_showing_it() {
        let Some(url) = url() else { return };
        let opts = ConnectOptions::new()
            .without_env()
            .with_api_token(
                require_env("VIRTRIGAUD_PROXMOX_TOKEN_ID"),
                "00000000-wrong-wrong-wrong-000000000000",
            )
            .with_ca_file(require_env("VIRTRIGAUD_PROXMOX_CA"));
        // The client logs in lazily: the first call is where a bad token shows.
        let p = virtrigaud::connect_with(&url, opts).await.unwrap();
        let e = p
            .list_vms(&ListOptions::default())
            .await
            .expect_err("a wrong token must be refused");
        assert!(!format!("{e} {e:?}").contains("wrong-wrong"), "{e}");
    }
}

#[cfg(feature = "kubevirt")]
mod kubevirt {
    use super::*;

    fn namespace() -> String {
        format!("umbrella-{}", std::process::id())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn kubevirt_kubeconfig_path_in_the_url() {
        let Some(path) = env("kubevirt", "VIRTRIGAUD_KUBECONFIG") else {
            return;
        };
        let url = format!(
            "kubevirt://{path}?namespace={}&power_api=run_strategy",
            namespace()
        );
        let p = exercise(&url, ConnectOptions::new().without_env()).await;
        assert_eq!(p.provider_type(), "kubevirt");
        assert!(
            p.instance_id().ends_with(&namespace()),
            "{}",
            p.instance_id()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn kubevirt_kubeconfig_from_the_environment() {
        if env("kubevirt", "VIRTRIGAUD_KUBECONFIG").is_none() {
            return;
        }
        let url = format!(
            "kubevirt://?context=virtrigaud-test&namespace={}",
            namespace()
        );
        exercise(&url, ConnectOptions::new()).await;
    }
}
