//! The aggregated `subresources.kubevirt.io` calls (virt-api), which the test apiserver cannot
//! serve, against kube's scripted tower-test service: method, path and body of every call.

use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};
use virtrigaud_core::{
    ErrorKind, PowerOffOptions, Provider, ShutdownChannel, ShutdownRequestOptions, StartOptions,
    VmId,
};
use virtrigaud_kubevirt::{KubeVirtConfig, KubeVirtProvider, PowerApi, StopOutcome};

type Seen = Vec<(Method, String, Value)>;

/// Serves GETs of the VM / VMI from fixtures and records every other call (answered with
/// `sub_status`). Returns the calls once the client is dropped.
fn scripted(
    vm: Value,
    vmi: Option<Value>,
    sub_status: u16,
) -> (KubeVirtProvider, tokio::task::JoinHandle<Seen>) {
    let (svc, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(svc, "default");
    let provider = KubeVirtProvider::with_client(
        client,
        KubeVirtConfig::default().with_power_api(PowerApi::Subresources),
    );
    let task = tokio::spawn(async move {
        let mut seen = Seen::new();
        while let Some((req, send)) = handle.next_request().await {
            let method = req.method().clone();
            let path = req.uri().path().to_owned();
            let body = req.into_body().collect_bytes().await.expect("body");
            let body: Value = if body.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&body).expect("json body")
            };
            let not_found = || json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"});
            let (code, out) = if method == Method::GET && path.ends_with("/virtualmachines/vm1") {
                (200, vm.clone())
            } else if method == Method::GET && path.ends_with("/virtualmachineinstances/vm1") {
                match &vmi {
                    Some(v) => (200, v.clone()),
                    None => (404, not_found()),
                }
            } else {
                seen.push((method, path, body));
                if sub_status == 202 {
                    (202, Value::Null)
                } else {
                    (
                        sub_status,
                        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict",
                        "code": sub_status, "message": "Operation cannot be fulfilled on virtualmachine.kubevirt.io \"vm1\": VM is already running"}),
                    )
                }
            };
            let bytes = if out.is_null() {
                Vec::new()
            } else {
                serde_json::to_vec(&out).expect("json")
            };
            send.send_response(
                Response::builder()
                    .status(StatusCode::from_u16(code).expect("code"))
                    .body(Body::from(bytes))
                    .expect("resp"),
            );
        }
        seen
    });
    (provider, task)
}

fn vm(rs: &str, printable: &str) -> Value {
    json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
           "metadata": {"name": "vm1", "namespace": "default", "resourceVersion": "10", "uid": "u-vm"},
           "spec": {"runStrategy": rs, "template": {"spec": {"domain": {"devices": {}}}}},
           "status": {"printableStatus": printable}})
}

fn vmi(phase: &str, grace: i64, deleting: bool) -> Value {
    let mut v = json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
           "metadata": {"name": "vm1", "namespace": "default", "resourceVersion": "11", "uid": "u-vmi"},
           "spec": {"terminationGracePeriodSeconds": grace, "domain": {"devices": {}}},
           "status": {"phase": phase}});
    if deleting {
        v["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    }
    v
}

const SUB: &str = "/apis/subresources.kubevirt.io/v1/namespaces/default";

fn id() -> VmId {
    VmId::new("default/vm1")
}

#[tokio::test]
async fn start_puts_start_with_options() {
    let (p, task) = scripted(vm("Halted", "Stopped"), None, 202);
    p.start(&id(), &StartOptions::default())
        .await
        .expect("start");
    let mut paused = StartOptions::default();
    paused.paused = true;
    p.start(&id(), &paused).await.expect("start paused");
    drop(p);
    let seen = task.await.expect("task");
    assert_eq!(
        seen,
        vec![
            (
                Method::PUT,
                format!("{SUB}/virtualmachines/vm1/start"),
                json!({})
            ),
            (
                Method::PUT,
                format!("{SUB}/virtualmachines/vm1/start"),
                json!({"paused": true})
            ),
        ]
    );
}

#[tokio::test]
async fn graceful_shutdown_puts_stop_with_remaining_grace_rounded_up() {
    let (p, task) = scripted(
        vm("Always", "Running"),
        Some(vmi("Running", 30, false)),
        202,
    );
    let opts = ShutdownRequestOptions::new(1, Duration::from_millis(7_200));
    p.request_shutdown(&id(), ShutdownChannel::Acpi, &opts)
        .await
        .expect("shutdown");
    let agent = p
        .request_shutdown(&id(), ShutdownChannel::Agent, &opts)
        .await
        .expect_err("agent channel");
    assert_eq!(agent.kind(), ErrorKind::Unsupported);
    p.power_off(&id(), &PowerOffOptions::default())
        .await
        .expect("power off");
    drop(p);
    let seen = task.await.expect("task");
    assert_eq!(
        seen,
        vec![
            (
                Method::PUT,
                format!("{SUB}/virtualmachines/vm1/stop"),
                json!({"gracePeriod": 8})
            ),
            (
                Method::PUT,
                format!("{SUB}/virtualmachines/vm1/stop"),
                json!({"gracePeriod": 0})
            ),
        ]
    );
}

#[tokio::test]
async fn in_flight_stop_is_only_shortened() {
    // A stop with grace 20 is in flight (VMI deleting, VM Stopping).
    let (p, task) = scripted(
        vm("Halted", "Stopping"),
        Some(vmi("Running", 20, true)),
        202,
    );
    assert_eq!(
        p.stop_with_grace(&id(), Some(60)).await.expect("longer"),
        StopOutcome::AlreadyStopping
    );
    assert_eq!(
        p.stop_with_grace(&id(), None).await.expect("none"),
        StopOutcome::AlreadyStopping
    );
    assert_eq!(
        p.stop_with_grace(&id(), Some(5)).await.expect("shorter"),
        StopOutcome::GraceShortened
    );
    drop(p);
    let seen = task.await.expect("task");
    assert_eq!(
        seen,
        vec![(
            Method::PUT,
            format!("{SUB}/virtualmachines/vm1/stop"),
            json!({"gracePeriod": 5})
        )]
    );
}

#[tokio::test]
async fn power_off_of_a_stopped_vm_is_invalid_state_without_a_call() {
    let (p, task) = scripted(vm("Halted", "Stopped"), None, 202);
    let e = p
        .power_off(&id(), &PowerOffOptions::default())
        .await
        .expect_err("already off");
    assert_eq!(e.kind(), ErrorKind::InvalidState);
    drop(p);
    assert!(task.await.expect("task").is_empty());
}

#[tokio::test]
async fn restart_softreboot_pause_unpause_reset_paths() {
    let (p, task) = scripted(
        vm("Always", "Running"),
        Some(vmi("Running", 30, false)),
        202,
    );
    p.restart(&id(), false).await.expect("restart");
    p.restart(&id(), true).await.expect("force restart");
    p.reboot(&id(), ShutdownChannel::Acpi)
        .await
        .expect("soft reboot");
    p.pause(&id()).await.expect("pause");
    p.resume(&id()).await.expect("unpause");
    p.reset(&id()).await.expect("reset");
    drop(p);
    let seen = task.await.expect("task");
    let expect: Vec<(Method, String, Value)> = [
        ("virtualmachines/vm1/restart", json!({})),
        (
            "virtualmachines/vm1/restart",
            json!({"gracePeriodSeconds": 0}),
        ),
        ("virtualmachineinstances/vm1/softreboot", json!({})),
        ("virtualmachineinstances/vm1/pause", json!({})),
        ("virtualmachineinstances/vm1/unpause", json!({})),
        ("virtualmachineinstances/vm1/reset", json!({})),
    ]
    .into_iter()
    .map(|(p, b)| (Method::PUT, format!("{SUB}/{p}"), b))
    .collect();
    assert_eq!(seen, expect);
}

#[tokio::test]
async fn virt_api_conflicts_are_invalid_state() {
    let (p, task) = scripted(
        vm("Always", "Running"),
        Some(vmi("Running", 30, false)),
        409,
    );
    let e = p
        .start(&id(), &StartOptions::default())
        .await
        .expect_err("already running");
    assert_eq!(e.kind(), ErrorKind::InvalidState);
    assert!(e.to_string().contains("kubevirt start default/vm1"), "{e}");
    drop(p);
    assert_eq!(task.await.expect("task").len(), 1);
}

#[tokio::test]
async fn a_racing_stop_never_lengthens_a_shortened_grace() {
    // Another stop already shortened the VMI's grace to 2 s (template: 30 s) but its run-state
    // change is not visible yet: a stop with 20 s must not send a longer grace.
    let mut v = vm("Always", "Running");
    v["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = json!(30);
    let (p, task) = scripted(v, Some(vmi("Running", 2, false)), 202);
    assert_eq!(
        p.stop_with_grace(&id(), Some(20)).await.expect("stop"),
        StopOutcome::Requested
    );
    assert_eq!(
        p.stop_with_grace(&id(), Some(1)).await.expect("stop"),
        StopOutcome::Requested
    );
    drop(p);
    let seen = task.await.expect("task");
    assert_eq!(
        seen,
        vec![
            (
                Method::PUT,
                format!("{SUB}/virtualmachines/vm1/stop"),
                json!({})
            ),
            (
                Method::PUT,
                format!("{SUB}/virtualmachines/vm1/stop"),
                json!({"gracePeriod": 1})
            ),
        ]
    );
}
