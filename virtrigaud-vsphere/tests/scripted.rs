//! What vcsim cannot show, against scripted HTTP replies (wiremock) built from real vcsim
//! replies (tests/fixtures/vcsim-*.xml, captured by scripts/vsphere/capture-fixtures.sh):
//! a slow guest shutdown, Tools missing (`ToolsUnavailable`), an ignored shutdown forced at
//! the deadline (and the `InvalidPowerState` race there), failed and asynchronous tasks,
//! `NotAuthenticated` → one re-login, transport failures, the linked-clone request shape.
//!
//! The scripted vCenter itself is `tests/common/fake_vc.rs`. Real time with short budgets
//! (wiremock answers on loopback); no timing assertions beyond "not before the deadline".

mod common;

use std::time::Duration;

use virtrigaud_core::shutdown::{ForcedReason, ShutdownOutcome, ShutdownPolicy};
use virtrigaud_core::{
    AgentStatus, CloneOptions, Customization, ErrorKind, NetworkCustomization, PowerOffOptions,
    PowerState, Provider, ReconfigureRequest, ShutdownChannel, ShutdownRequestOptions, VmId,
};
use virtrigaud_vsphere::{SoapFault, VsphereConfig, VsphereProvider};
use wiremock::matchers::{body_string_contains, method};
use wiremock::{Mock, MockServer, ResponseTemplate};

use common::fake_vc::{
    FakeVc, Guest, VM, change, fault, fx, manager, ok, prop, props_reply, scripted, soap_method,
    task_ref, wait_reply,
};
use common::scripted_config;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_guest_shutdown_is_graceful_and_reports_shutting_down() {
    let (_s, vc, p) = scripted(Guest::Honours {
        after: Duration::from_millis(1500),
    })
    .await;
    let vm = VmId::new(VM);
    let before = p.api_calls();
    let mgr = manager(&p);
    let handle = mgr
        .start(&vm, ShutdownPolicy::with_grace(Duration::from_secs(10)))
        .expect("start");
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        p.power_state(&vm).await.expect("state"),
        PowerState::ShuttingDown
    );
    let report = handle.wait().await;
    assert!(
        matches!(
            report.outcome,
            ShutdownOutcome::Graceful {
                channel: Some(ShutdownChannel::Agent)
            }
        ),
        "{}",
        report.outcome
    );
    assert_eq!((report.signals_sent, report.power_off_calls), (1, 0));
    let calls = vc.calls();
    assert_eq!(
        calls.iter().filter(|c| *c == "ShutdownGuest").count(),
        1,
        "{calls:?}"
    );
    assert!(!calls.iter().any(|c| c == "PowerOffVM_Task"), "{calls:?}");
    // Push-based: a handful of long polls over 1.5 s, no 2-second polling loop.
    let waits = calls.iter().filter(|c| *c == "WaitForUpdatesEx").count();
    assert!(waits <= 6, "{waits} WaitForUpdatesEx calls: {calls:?}");
    eprintln!(
        "slow graceful shutdown: {} SOAP calls ({:?})",
        p.api_calls() - before - 1, // minus the power_state read of this test
        calls.iter().skip(2).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_tools_is_tools_unavailable_and_forced_at_once() {
    let (_s, vc, p) = scripted(Guest::NoTools).await;
    let vm = VmId::new(VM);
    assert_eq!(
        p.probe_agent(&vm).await.expect("probe"),
        AgentStatus::NotConnected
    );
    let caps = p.vm_capabilities(&vm).await.expect("caps");
    assert_eq!(caps.agent_connected, Some(false));
    let err = p
        .request_shutdown(
            &vm,
            ShutdownChannel::Agent,
            &ShutdownRequestOptions::default(),
        )
        .await
        .expect_err("ToolsUnavailable");
    assert_eq!(err.kind(), ErrorKind::InvalidState, "{err}");
    let f = std::error::Error::source(&err)
        .and_then(|s| s.downcast_ref::<SoapFault>())
        .expect("fault");
    assert_eq!(f.fault_type(), "ToolsUnavailable");
    assert!(f.message().contains("VMware Tools is not running"));
    let report = manager(&p)
        .shutdown(&vm, ShutdownPolicy::with_grace(Duration::from_secs(10)))
        .await
        .expect("shutdown");
    assert!(
        matches!(
            report.outcome,
            ShutdownOutcome::Forced {
                reason: ForcedReason::NoGuestTools
            }
        ),
        "{}",
        report.outcome
    );
    assert!(
        report.elapsed < Duration::from_secs(5),
        "forced without waiting out the grace"
    );
    let calls = vc.calls();
    assert_eq!(
        calls.iter().filter(|c| *c == "ShutdownGuest").count(),
        1,
        "only the direct call above: {calls:?}"
    );
    assert!(calls.iter().any(|c| c == "PowerOffVM_Task"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ignored_shutdown_is_forced_at_the_deadline() {
    let (_s, vc, p) = scripted(Guest::Ignores).await;
    let vm = VmId::new(VM);
    let grace = Duration::from_secs(2);
    let report = manager(&p)
        .shutdown(&vm, ShutdownPolicy::with_grace(grace))
        .await
        .expect("shutdown");
    assert!(
        matches!(
            report.outcome,
            ShutdownOutcome::Forced {
                reason: ForcedReason::Timeout
            }
        ),
        "{}",
        report.outcome
    );
    assert!(report.elapsed >= grace, "forced after {:?}", report.elapsed);
    assert!(report.signals_sent >= 1);
    assert!(p.power_state(&vm).await.expect("state").is_off());
    let calls = vc.calls();
    assert_eq!(
        calls.iter().filter(|c| *c == "PowerOffVM_Task").count(),
        1,
        "{calls:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_off_racing_the_guest_is_invalid_state_and_counts_as_off() {
    let (_s, _vc, p) = scripted(Guest::RacesPowerOff).await;
    let vm = VmId::new(VM);
    let report = manager(&p)
        .shutdown(&vm, ShutdownPolicy::with_grace(Duration::from_secs(1)))
        .await
        .expect("shutdown");
    // PowerOffVM_Task failed with InvalidPowerState (the guest was already off): not a failure.
    assert!(report.outcome.is_off(), "{}", report.outcome);
    let err = p
        .power_off(&vm, &PowerOffOptions::default())
        .await
        .expect_err("already off");
    assert_eq!(err.kind(), ErrorKind::InvalidState, "{err}");
}

// ---- sequence-scripted cases ----

async fn base_server() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(body_string_contains("<RetrieveServiceContent "))
        .respond_with(ok(fx("vcsim-service-content")))
        .mount(&server)
        .await;
    Mock::given(body_string_contains("<Login "))
        .respond_with(
            ok(fx("vcsim-login")).insert_header("Set-Cookie", "vmware_soap_session=\"s1\"; Path=/"),
        )
        .mount(&server)
        .await;
    server
}

fn cfg(server: &MockServer) -> VsphereConfig {
    scripted_config(&server.uri())
}

#[tokio::test]
async fn not_authenticated_relogs_in_once_then_gives_up() {
    let server = base_server().await;
    // First read: session gone. Second read (after the re-login): fine.
    Mock::given(body_string_contains("<RetrievePropertiesEx "))
        .respond_with(fault(fx("vcsim-not-authenticated")))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(body_string_contains("<RetrievePropertiesEx "))
        .respond_with(ok(fx("vcsim-power-on")))
        .with_priority(2)
        .mount(&server)
        .await;
    let p = VsphereProvider::connect(cfg(&server))
        .await
        .expect("connect");
    assert_eq!(
        p.power_state(&VmId::new(VM)).await.expect("after re-login"),
        PowerState::Running
    );
    let logins = server
        .received_requests()
        .await
        .expect("recorded")
        .iter()
        .filter(|r| String::from_utf8_lossy(&r.body).contains("<Login "))
        .count();
    assert_eq!(logins, 2, "one login at connect, one re-login");
    // A session that is refused again right after the re-login: Unauthenticated, no loop.
    server.reset().await;
    Mock::given(body_string_contains("<Login "))
        .respond_with(ok(fx("vcsim-login")))
        .mount(&server)
        .await;
    Mock::given(body_string_contains("<RetrievePropertiesEx "))
        .respond_with(fault(fx("vcsim-not-authenticated")))
        .mount(&server)
        .await;
    let err = p
        .power_state(&VmId::new(VM))
        .await
        .expect_err("still unauthenticated");
    assert_eq!(err.kind(), ErrorKind::Unauthenticated, "{err}");
    assert_eq!(
        server.received_requests().await.expect("recorded").len(),
        3,
        "read, login, read"
    );
}

#[tokio::test]
async fn invalid_login_and_transport_failures() {
    let server = MockServer::start().await;
    Mock::given(body_string_contains("<RetrieveServiceContent "))
        .respond_with(ok(fx("vcsim-service-content")))
        .mount(&server)
        .await;
    Mock::given(body_string_contains("<Login "))
        .respond_with(fault(fx("vcsim-login-invalid")))
        .mount(&server)
        .await;
    let err = VsphereProvider::connect(cfg(&server))
        .await
        .expect_err("bad login");
    assert_eq!(err.kind(), ErrorKind::Unauthenticated);
    // A proxy error page (HTML 503) is Unavailable and retryable.
    server.reset().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(503).set_body_string("<html><body>upstream down</body>"),
        )
        .mount(&server)
        .await;
    let err = VsphereProvider::connect(cfg(&server))
        .await
        .expect_err("503");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.is_retryable());
    // Nothing listening.
    let addr = *server.address();
    drop(server);
    let err = VsphereProvider::connect(VsphereConfig::new(format!("http://{addr}/sdk"), "u", "p"))
        .await
        .expect_err("refused");
    assert_eq!(err.kind(), ErrorKind::Unavailable);
}

#[tokio::test]
async fn async_task_failure_is_pushed_and_typed() {
    let server = base_server().await;
    Mock::given(body_string_contains("<RetrievePropertiesEx "))
        .and(body_string_contains("<type>VirtualMachine</type>"))
        .respond_with(ok(props_reply(
            "VirtualMachine",
            VM,
            &(prop(
                "runtime.powerState",
                "VirtualMachinePowerState",
                "poweredOff",
            ) + &prop("config.hardware.numCPU", "xsd:int", "1")
                + &prop("config.hardware.memoryMB", "xsd:int", "1024")),
        )))
        .mount(&server)
        .await;
    Mock::given(body_string_contains("<ReconfigVM_Task "))
        .respond_with(ok(task_ref("ReconfigVM_Task", "task-7")))
        .mount(&server)
        .await;
    // The task is still running when first read ...
    Mock::given(body_string_contains("<RetrievePropertiesEx "))
        .and(body_string_contains("<type>Task</type>"))
        .respond_with(ok(props_reply(
            "Task",
            "task-7",
            &prop("info.state", "TaskInfoState", "running"),
        )))
        .mount(&server)
        .await;
    Mock::given(body_string_contains("<CreatePropertyCollector "))
        .respond_with(ok(fx("vcsim-create-collector")))
        .mount(&server)
        .await;
    Mock::given(body_string_contains("<CreateFilter "))
        .respond_with(ok(fx("vcsim-create-filter")))
        .mount(&server)
        .await;
    Mock::given(body_string_contains("<DestroyPropertyCollector "))
        .respond_with(ok(fx("vcsim-destroy-collector")))
        .mount(&server)
        .await;
    // ... the first update says running, the next one (pushed later) says error.
    Mock::given(body_string_contains("<WaitForUpdatesEx "))
        .and(body_string_contains("<version></version>"))
        .respond_with(ok(wait_reply(
            1,
            "Task",
            "task-7",
            "enter",
            &change("info.state", "TaskInfoState", "running"),
        )))
        .mount(&server)
        .await;
    let err_change = change("info.state", "TaskInfoState", "error")
        + r#"<changeSet><name>info.error</name><op>assign</op><val xmlns:XMLSchema-instance="http://www.w3.org/2001/XMLSchema-instance" XMLSchema-instance:type="LocalizedMethodFault"><fault XMLSchema-instance:type="TaskInProgress"><task type="Task">task-6</task></fault><localizedMessage>Another task is already in progress.</localizedMessage></val></changeSet>"#;
    Mock::given(body_string_contains("<WaitForUpdatesEx "))
        .and(body_string_contains("<version>1</version>"))
        .respond_with(
            ok(wait_reply(2, "Task", "task-7", "modify", &err_change))
                .set_delay(Duration::from_millis(300)),
        )
        .mount(&server)
        .await;
    let p = VsphereProvider::connect(cfg(&server))
        .await
        .expect("connect");
    let mut change_req = ReconfigureRequest::default();
    change_req.cpu = Some(2);
    let err = p
        .reconfigure(&VmId::new(VM), &change_req)
        .await
        .expect_err("task failed");
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert!(err.is_retryable());
    let f = std::error::Error::source(&err)
        .and_then(|s| s.downcast_ref::<SoapFault>())
        .expect("fault");
    assert_eq!(f.fault_type(), "TaskInProgress");
    let methods: Vec<String> = server
        .received_requests()
        .await
        .expect("recorded")
        .iter()
        .map(|r| soap_method(&String::from_utf8_lossy(&r.body)))
        .collect();
    assert_eq!(
        &methods[2..],
        [
            "RetrievePropertiesEx",
            "ReconfigVM_Task",
            "RetrievePropertiesEx",
            "CreatePropertyCollector",
            "CreateFilter",
            "WaitForUpdatesEx",
            "WaitForUpdatesEx",
            "DestroyPropertyCollector"
        ]
    );
}

#[tokio::test]
async fn linked_clone_request_shape() {
    let server = base_server().await;
    Mock::given(body_string_contains("<RetrievePropertiesEx "))
        .and(body_string_contains("<pathSet>parent</pathSet>"))
        .respond_with(ok(props_reply(
            "VirtualMachine",
            VM,
            r#"<propSet><name>parent</name><val xmlns:XMLSchema-instance="http://www.w3.org/2001/XMLSchema-instance" type="Folder" XMLSchema-instance:type="ManagedObjectReference">group-v3</val></propSet><propSet><name>resourcePool</name><val xmlns:XMLSchema-instance="http://www.w3.org/2001/XMLSchema-instance" type="ResourcePool" XMLSchema-instance:type="ManagedObjectReference">resgroup-8</val></propSet><propSet><name>snapshot.currentSnapshot</name><val xmlns:XMLSchema-instance="http://www.w3.org/2001/XMLSchema-instance" type="VirtualMachineSnapshot" XMLSchema-instance:type="ManagedObjectReference">snapshot-42</val></propSet>"#,
        )))
        .mount(&server)
        .await;
    Mock::given(body_string_contains("<CloneVM_Task "))
        .respond_with(ok(task_ref("CloneVM_Task", "task-9")))
        .mount(&server)
        .await;
    Mock::given(body_string_contains("<RetrievePropertiesEx "))
        .and(body_string_contains("<type>Task</type>"))
        .respond_with(ok(props_reply(
            "Task",
            "task-9",
            &(prop("info.state", "TaskInfoState", "success")
                + r#"<propSet><name>info.result</name><val xmlns:XMLSchema-instance="http://www.w3.org/2001/XMLSchema-instance" type="VirtualMachine" XMLSchema-instance:type="ManagedObjectReference">vm-301</val></propSet>"#),
        )))
        .mount(&server)
        .await;
    let p = VsphereProvider::connect(cfg(&server))
        .await
        .expect("connect");
    let mut c = Customization::default();
    c.hostname = Some("db-1".into());
    let mut n = NetworkCustomization::default();
    n.name = "VM Network".into();
    n.ip_address = Some("192.168.10.20/26".into());
    n.gateway = Some("192.168.10.1".into());
    c.networks.push(n);
    let r = p
        .cloner()
        .expect("cloner")
        .clone_vm(
            &VmId::new(VM),
            &CloneOptions::new("db-1")
                .linked(true)
                .power_on(true)
                .with_customization(c),
        )
        .await
        .expect("clone");
    assert_eq!(r.vm, VmId::new("vm-301"));
    assert!(r.linked && r.customized);
    let reqs = server.received_requests().await.expect("recorded");
    let clone = reqs
        .iter()
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .find(|b| b.contains("<CloneVM_Task "))
        .expect("CloneVM_Task sent");
    let expect_in_order = [
        r#"<_this type="VirtualMachine">vm-87</_this>"#,
        r#"<folder type="Folder">group-v3</folder>"#,
        "<name>db-1</name>",
        "<spec><location><diskMoveType>createNewChildDiskBacking</diskMoveType>",
        r#"<pool type="ResourcePool">resgroup-8</pool></location>"#,
        "<template>false</template>",
        r#"<customization><identity xsi:type="CustomizationLinuxPrep"><hostName xsi:type="CustomizationFixedName"><name>db-1</name></hostName><domain>localdomain</domain></identity>"#,
        r#"<nicSettingMap><adapter><ip xsi:type="CustomizationFixedIp"><ipAddress>192.168.10.20</ipAddress></ip><subnetMask>255.255.255.192</subnetMask><gateway>192.168.10.1</gateway></adapter></nicSettingMap></customization>"#,
        "<powerOn>true</powerOn>",
        r#"<snapshot type="VirtualMachineSnapshot">snapshot-42</snapshot></spec>"#,
    ];
    let mut at = 0;
    for part in expect_in_order {
        let i = clone[at..]
            .find(part)
            .unwrap_or_else(|| panic!("{part} missing or out of order in {clone}"));
        at += i + part.len();
    }
    // The password is sent only in the Login body, never elsewhere.
    assert!(
        reqs.iter()
            .filter(|r| String::from_utf8_lossy(&r.body).contains("<password>pw</password>"))
            .count()
            == 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_and_guest_reboot() {
    let server = MockServer::start().await;
    let vc = FakeVc::new(Guest::Ignores);
    Mock::given(method("POST"))
        .respond_with(vc.clone())
        .mount(&server)
        .await;
    let cfg = VsphereConfig::new(format!("{}/sdk", server.uri()), "virtrigaud", "pw")
        .with_keepalive(Some(Duration::from_millis(150)));
    let p = VsphereProvider::connect(cfg).await.expect("connect");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        vc.calls().iter().filter(|c| *c == "CurrentTime").count() >= 2,
        "{:?}",
        vc.calls()
    );
    let vm = VmId::new(VM);
    p.reboot(&vm, ShutdownChannel::Agent)
        .await
        .expect("RebootGuest");
    assert_eq!(
        p.reboot(&vm, ShutdownChannel::Acpi)
            .await
            .expect_err("acpi")
            .kind(),
        ErrorKind::Unsupported
    );
    assert!(
        p.capabilities().reboot
            && p.capabilities().agent_shutdown
            && !p.capabilities().acpi_shutdown
    );
    // The keep-alive stops with the provider.
    drop(p);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let n = vc.calls().len();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(vc.calls().len(), n, "keep-alive outlived the provider");

    let (_s, _vc, p) = scripted(Guest::NoTools).await;
    let err = p
        .reboot(&vm, ShutdownChannel::Agent)
        .await
        .expect_err("no tools");
    assert_eq!(err.kind(), ErrorKind::InvalidState);
}
