//! Identity on private test-driver instances: the endpoint ([`Provider::instance_id`]), the
//! incarnation of a domain's run ([`Provider::incarnation`]), and credentials kept out of
//! errors and `Debug` output.

use std::time::Duration;

use virtrigaud_core::provider::{
    PowerOffOptions, ShutdownRequestOptions, StartOptions, VmCreateSpec,
};
use virtrigaud_core::{ErrorKind, OffReason, PowerState, Provider, ShutdownChannel, VmId};
use virtrigaud_libvirt::{LibvirtConfig, LibvirtProvider};

mod common;
use common::{private, running_vm};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instance_id_is_the_uri_with_the_host_name_of_a_local_daemon() {
    let (p, dir) = private().await;
    let uri = format!("test://{}", dir.path().join("node.xml").display());
    let inv = p.inventory().await.expect("inventory");
    let host = &inv.hosts.first().expect("one host").name;
    assert!(!host.is_empty());
    // test:///path names no host: the connection's host name tells two machines apart.
    assert_eq!(p.instance_id(), format!("{uri}@{host}"));
    let (other, _other_dir) = private().await;
    assert_ne!(
        p.instance_id(),
        other.instance_id(),
        "two instances, two identities"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incarnation_is_stable_during_a_run_and_changes_with_every_start() {
    let (p, _dir) = private().await;
    let vm = running_vm(&p, "inc").await;
    let first = p
        .incarnation(&vm)
        .await
        .expect("incarnation")
        .expect("a running domain has one");
    let (uuid, id) = first.as_str().split_once('#').expect("<uuid>#<id>");
    let uuid = uuid.to_owned();
    assert!(id.parse::<u32>().is_ok(), "domain id: {first}");
    assert_eq!(uuid.len(), 36, "<uuid>#<id>: {first}");
    // Stable while it runs, paused or not.
    assert_eq!(
        p.incarnation(&vm).await.expect("again"),
        Some(first.clone())
    );
    p.pause(&vm).await.expect("pause");
    assert_eq!(
        p.incarnation(&vm).await.expect("paused"),
        Some(first.clone())
    );
    p.resume(&vm).await.expect("resume");
    // None while off, new after destroy + start.
    p.power_off(&vm, &PowerOffOptions::default())
        .await
        .expect("destroy");
    assert_eq!(p.incarnation(&vm).await.expect("off"), None);
    p.start(&vm, &StartOptions::default()).await.expect("start");
    let second = p
        .incarnation(&vm)
        .await
        .expect("incarnation")
        .expect("running again");
    assert_ne!(second, first, "a new run is a new incarnation");
    assert!(second.as_str().starts_with(&format!("{uuid}#")), "{second}");
    // A guest shutdown ends the run as well.
    p.request_shutdown(
        &vm,
        ShutdownChannel::Acpi,
        &ShutdownRequestOptions::new(1, Duration::from_secs(5)),
    )
    .await
    .expect("shutdown");
    assert_eq!(
        p.power_state(&vm).await.expect("state"),
        PowerState::Off(OffReason::GuestShutdown),
        "the test driver reports a shutdown as a guest shutdown, not a destroy"
    );
    assert_eq!(p.incarnation(&vm).await.expect("off"), None);
    // A domain never started has none; a missing one is NotFound.
    p.create(&VmCreateSpec::new("inc-off", 1, 64))
        .await
        .expect("define");
    assert_eq!(
        p.incarnation(&VmId::new("inc-off")).await.expect("defined"),
        None
    );
    assert_eq!(
        p.incarnation(&VmId::new("missing"))
            .await
            .expect_err("missing")
            .kind(),
        ErrorKind::NotFound
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_in_the_uri_stay_out_of_errors_and_debug_output() {
    let uri = "qemu+tcp://alice:hunter2@127.0.0.1:9/system?keyfile=/secret/id_rsa";
    let cfg = LibvirtConfig::new(uri);
    let err = LibvirtProvider::connect(cfg.clone())
        .await
        .expect_err("nothing listens on port 9");
    for shown in [
        format!("{cfg:?}"),
        format!("{err}"),
        format!("{err:?}"),
        virtrigaud_core::error::error_chain(&err),
    ] {
        for secret in ["alice", "hunter2", "id_rsa", "/secret"] {
            assert!(!shown.contains(secret), "{secret} leaked: {shown}");
        }
    }
    assert_eq!(err.resource(), Some("qemu+tcp://127.0.0.1:9/system"));
}
