//! What fakepve cannot answer, against scripted HTTP replies (wiremock): a `status/current`
//! whose `status` is empty, missing, unknown, or whose `data` is not a VM status at all (a
//! proxy, an API change). PVE's schema allows only `running` and `stopped`; anything else
//! must come back as a retryable `Unavailable` naming the value, never as off, and no
//! shutdown or stop may be sent on it. And a timing fakepve answers too fast to show: the VM
//! is off while the engine's `qmstop` still runs (not yet in the task archive).
#![allow(clippy::unwrap_used, missing_docs)]

use serde_json::{Value, json};
use virtrigaud_core::{
    ErrorKind, OffReason, PowerOffOptions, PowerState, Provider, ShutdownChannel,
    ShutdownRequestOptions, VmId,
};
use virtrigaud_proxmox::{Auth, ProxmoxConfig, ProxmoxProvider, PveClient};
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, ResponseTemplate};

const STATUS: &str = "/api2/json/nodes/pve1/qemu/100/status/current";

async fn pve_answering(data: Value) -> (MockServer, ProxmoxProvider) {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(STATUS))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "data": data })))
        .mount(&server)
        .await;
    let client = PveClient::new(ProxmoxConfig::new(
        server.uri(),
        Auth::api_token("root@pam!ci", "s3cret"),
    ))
    .unwrap();
    (server, ProxmoxProvider::new(client))
}

#[tokio::test]
async fn a_status_pve_cannot_tell_is_retryable_unavailable_never_off() {
    let vm = VmId::new("pve1/100");
    let opts = ShutdownRequestOptions::new(1, std::time::Duration::from_secs(30));
    for (data, shown) in [
        (json!({}), "''"),
        (json!({"status": ""}), "''"),
        (json!({"status": "unknown", "vmid": 100}), "'unknown'"),
        (json!({"status": "paused"}), "'paused'"),
        (json!({"status": 1}), "'1'"),
        (Value::Null, "''"),
    ] {
        let (server, p) = pve_answering(data.clone()).await;
        let e = p.power_state(&vm).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unavailable, "{data}: {e}");
        assert!(e.is_retryable(), "{data}");
        assert!(
            e.message()
                .contains(&format!("PVE reported status {shown} for 100")),
            "{data}: {e}"
        );
        // The callers that act on the status refuse to act, with the same error.
        for e in [
            p.request_shutdown(&vm, ShutdownChannel::Acpi, &opts)
                .await
                .unwrap_err(),
            p.power_off(&vm, &PowerOffOptions::default())
                .await
                .unwrap_err(),
            p.incarnation(&vm).await.unwrap_err(),
            p.describe(&vm).await.unwrap_err(),
        ] {
            assert_eq!(e.kind(), ErrorKind::Unavailable, "{data}: {e}");
        }
        let sent = server.received_requests().await.unwrap();
        assert!(
            sent.iter()
                .all(|r| r.method.as_str() == "GET" && r.url.path() == STATUS),
            "{data}: only status reads may go out: {:?}",
            sent.iter()
                .map(|r| format!("{} {}", r.method, r.url.path()))
                .collect::<Vec<_>>()
        );
    }
    // Something that is not a VM status at all.
    let (_server, p) = pve_answering(json!("maintenance")).await;
    let e = p.power_state(&vm).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.is_retryable());
    // The two values PVE's schema has still read as they should.
    let (_server, p) = pve_answering(json!({"status": "stopped"})).await;
    assert_eq!(
        p.power_state(&vm).await.unwrap(),
        PowerState::Off(OffReason::Unknown)
    );
    assert_eq!(p.incarnation(&vm).await.unwrap(), None);
    let (_server, p) =
        pve_answering(json!({"status": "running", "qmpstatus": "running", "pid": 4242})).await;
    assert_eq!(p.power_state(&vm).await.unwrap(), PowerState::Running);
    assert_eq!(
        p.incarnation(&vm).await.unwrap().unwrap().as_str(),
        "pve1/100:qemu-pid:4242"
    );
    // Running without a pid: the provider cannot tell the run.
    let (_server, p) = pve_answering(json!({"status": "running"})).await;
    assert_eq!(p.incarnation(&vm).await.unwrap(), None);
}

#[tokio::test]
async fn off_while_our_hard_stop_still_runs_reads_as_a_kill_not_the_guests_stop() {
    let server = MockServer::start().await;
    let reply = |data: Value| ResponseTemplate::new(200).set_body_json(json!({ "data": data }));
    // Running for the shutdown request and the power-off's own check, stopped after.
    Mock::given(method("GET"))
        .and(path(STATUS))
        .respond_with(reply(
            json!({"status": "running", "qmpstatus": "running", "pid": 4242}),
        ))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(STATUS))
        .respond_with(reply(json!({"status": "stopped"})))
        .with_priority(2)
        .mount(&server)
        .await;
    let vm_path = "/api2/json/nodes/pve1/qemu/100/status";
    for (action, upid) in [
        (
            "shutdown",
            "UPID:pve1:000003E8:00001B58:6740A1B2:qmshutdown:100:root@pam!ci:",
        ),
        (
            "stop",
            "UPID:pve1:000003E9:00001B59:6740A1B4:qmstop:100:root@pam!ci:",
        ),
    ] {
        Mock::given(method("POST"))
            .and(path(format!("{vm_path}/{action}")))
            .respond_with(reply(json!(upid)))
            .mount(&server)
            .await;
    }
    // The hard stop's task is still running; nothing is archived yet, nothing is in any log.
    Mock::given(method("GET"))
        .and(path_regex(r"/tasks/[^/]*/status$"))
        .respond_with(reply(json!({"status": "running"})))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path_regex(r"/tasks/[^/]*/log$"))
        .respond_with(reply(json!([])))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api2/json/nodes/pve1/tasks"))
        .respond_with(reply(json!([])))
        .mount(&server)
        .await;
    let client = PveClient::new(ProxmoxConfig::new(
        server.uri(),
        Auth::api_token("root@pam!ci", "s3cret"),
    ))
    .unwrap();
    let p = std::sync::Arc::new(ProxmoxProvider::new(client));
    let vm = VmId::new("pve1/100");
    let opts = ShutdownRequestOptions::new(1, std::time::Duration::from_secs(30));
    p.request_shutdown(&vm, ShutdownChannel::Acpi, &opts)
        .await
        .unwrap();
    let stopping = {
        let (p, vm) = (std::sync::Arc::clone(&p), vm.clone());
        tokio::spawn(async move { p.power_off(&vm, &PowerOffOptions::default()).await })
    };
    // Once the stop is sent, the VM is off while its task still runs.
    loop {
        let sent = server.received_requests().await.unwrap();
        if sent.iter().any(|r| r.url.path().ends_with("/status/stop")) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(
        p.power_state(&vm).await.unwrap(),
        PowerState::Off(OffReason::Destroyed)
    );
    stopping.abort();
}
