//! `GuestOpsPreStop`: pre-stop hooks through vim25 guest operations. vcsim runs no guest
//! programs (no container-backed VMs), so the runs are scripted (tests/common/fake_vc.rs,
//! replies derived from captured vcsim ones); the real vcsim checks that the process manager
//! is found and that its `MethodNotFound` reads as `Unsupported`.
//!
//! Every test also checks that the guest password appears in no log line (a subscriber
//! recording every event and span field at TRACE), no error and no `Debug` output.

mod common;

use std::fmt::Write as _;
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use virtrigaud_core::error::error_chain;
use virtrigaud_core::shutdown::{
    ForcedReason, GuestExec, PreStopExecutor, PreStopHook, ShutdownEventKind, ShutdownManager,
    ShutdownOutcome, ShutdownPolicy,
};
use virtrigaud_core::{ErrorKind, PowerOffOptions, Provider, ShutdownChannel, VmId};
use virtrigaud_vsphere::{GuestCredentials, GuestOpsPreStop, SoapFault, VsphereProvider};

use common::fake_vc::{
    FakeVc, Guest, GuestOps, VM, scripted_with, tools_unavailable_fault, vim_fault,
};

// ---- a log recorder ----

static LOG: Mutex<String> = Mutex::new(String::new());

struct Fields<'a>(&'a mut String);
impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, " {}={value:?}", field.name());
    }
}

/// Records every event and span field, at every level, into [`LOG`].
struct Recorder;
impl tracing::Subscriber for Recorder {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        let mut log = LOG.lock().expect("log");
        span.record(&mut Fields(&mut log));
        log.push('\n');
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, values: &tracing::span::Record<'_>) {
        let mut log = LOG.lock().expect("log");
        values.record(&mut Fields(&mut log));
        log.push('\n');
    }
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut log = LOG.lock().expect("log");
        let _ = write!(
            log,
            "{} {}:",
            event.metadata().level(),
            event.metadata().target()
        );
        event.record(&mut Fields(&mut log));
        log.push('\n');
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

fn record_logs() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        tracing::subscriber::set_global_default(Recorder).expect("one global subscriber");
    });
}

fn assert_not_logged(secret: &str) {
    let log = LOG.lock().expect("log");
    assert!(
        !log.contains(secret),
        "the guest password was logged:\n{log}"
    );
}

// ---- helpers ----

fn creds(password: &str) -> GuestCredentials {
    GuestCredentials::new("root", password)
}

fn argv(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| (*s).to_owned()).collect()
}

async fn fake(guest: Guest, ops: GuestOps) -> (wiremock::MockServer, FakeVc, VsphereProvider) {
    record_logs();
    scripted_with(FakeVc::new(guest).with_guest_ops(ops)).await
}

fn executor(p: &VsphereProvider, password: &str) -> GuestOpsPreStop {
    GuestOpsPreStop::new(p, creds(password)).with_poll_interval(Duration::from_millis(20))
}

fn manager_with(p: &VsphereProvider, exec: GuestOpsPreStop) -> ShutdownManager {
    let provider: Arc<dyn Provider> = Arc::new(p.clone());
    ShutdownManager::builder(provider)
        .pre_stop_executor(Arc::new(exec))
        .build()
}

/// The bodies of the requests of `method`.
fn bodies_of(vc: &FakeVc, method: &str) -> Vec<String> {
    vc.bodies()
        .into_iter()
        .filter(|(m, _)| m == method)
        .map(|(_, b)| b)
        .collect()
}

fn position(calls: &[String], method: &str) -> usize {
    calls
        .iter()
        .position(|c| c == method)
        .unwrap_or_else(|| panic!("no {method} in {calls:?}"))
}

// ---- runs ----

#[tokio::test]
async fn a_program_exiting_zero_after_two_polls_is_exit_zero() {
    let pw = "Pw-exit-zero-7f3a";
    let (_s, vc, p) = fake(
        Guest::Ignores,
        GuestOps::Runs {
            pid: 4242,
            running_polls: 1,
            exit: 0,
        },
    )
    .await;
    let exec = executor(&p, pw);
    let vm = VmId::new(VM);
    let out = exec
        .exec(
            &vm,
            &argv(&["/bin/sh", "-c", "echo it's > /tmp/x", "plain-arg"]),
        )
        .await
        .expect("the hook ran");
    assert_eq!((out.exit_code, out.signal), (Some(0), None));
    assert!(out.succeeded());
    assert_eq!(out.output, "", "vSphere returns no output");

    let starts = bodies_of(&vc, "StartProgramInGuest");
    assert_eq!(starts.len(), 1);
    let start = &starts[0];
    for part in [
        r#"<StartProgramInGuest xmlns="urn:vim25"><_this type="GuestProcessManager">guestOperationsProcessManager</_this>"#,
        r#"<vm type="VirtualMachine">vm-87</vm>"#,
        r#"<auth xsi:type="NamePasswordAuthentication"><interactiveSession>false</interactiveSession><username>root</username>"#,
        r#"<spec xsi:type="GuestProgramSpec"><programPath>/bin/sh</programPath>"#,
        // -c 'echo it'\''s > /tmp/x' plain-arg, XML-escaped.
        r#"<arguments>-c &apos;echo it&apos;\&apos;&apos;s &gt; /tmp/x&apos; plain-arg</arguments>"#,
    ] {
        assert!(start.contains(part), "{part}\nnot in\n{start}");
    }
    assert!(
        start.contains(&format!("<password>{pw}</password>")),
        "the password goes in the auth element"
    );

    let lists = bodies_of(&vc, "ListProcessesInGuest");
    assert_eq!(
        lists.len(),
        2,
        "one poll while running, one after: {lists:?}"
    );
    for l in &lists {
        assert!(
            l.contains(r#"<_this type="GuestProcessManager">guestOperationsProcessManager</_this><vm type="VirtualMachine">vm-87</vm>"#)
                && l.ends_with("</auth><pids>4242</pids></ListProcessesInGuest></soapenv:Body></soapenv:Envelope>"),
            "{l}"
        );
    }
    // The process manager is read once, then kept.
    let gom_reads = vc
        .bodies()
        .iter()
        .filter(|(m, b)| m == "RetrievePropertiesEx" && b.contains("GuestOperationsManager"))
        .count();
    assert_eq!(gom_reads, 1);

    let logged = LOG.lock().expect("log").clone();
    assert!(
        logged.contains(r#"method="StartProgramInGuest""#)
            && logged.contains("pre-stop hook started in the guest"),
        "the recorder sees the crate's log lines:\n{logged}"
    );
    let dbg = format!("{exec:?} {:?}", creds(pw));
    assert!(!dbg.contains(pw) && dbg.contains("<redacted>"), "{dbg}");
    assert_not_logged(pw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_hook_is_reported_and_the_guest_still_shuts_down_gracefully() {
    let pw = "Pw-nonzero-91bd";
    let (_s, vc, p) = fake(
        Guest::Honours {
            after: Duration::from_millis(500),
        },
        GuestOps::Runs {
            pid: 77,
            running_polls: 2,
            exit: 3,
        },
    )
    .await;
    let mgr = manager_with(&p, executor(&p, pw));
    let mut events = mgr.subscribe();
    let vm = VmId::new(VM);
    let hook = PreStopHook::new(
        argv(&["/usr/local/bin/drain", "--fast"]),
        Duration::from_secs(5),
    );
    let report = mgr
        .shutdown(
            &vm,
            ShutdownPolicy::with_grace(Duration::from_secs(10)).pre_stop(hook),
        )
        .await
        .expect("shutdown");
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
    let run = report.pre_stop.as_ref().expect("a pre-stop run");
    assert_eq!(run.exit_code(), Some(3), "{run}");
    assert!(!run.is_ok() && run.error.is_none(), "{run}");

    let calls = vc.calls();
    assert!(
        position(&calls, "StartProgramInGuest") < position(&calls, "ShutdownGuest"),
        "{calls:?}"
    );
    assert!(
        position(&calls, "ListProcessesInGuest") < position(&calls, "ShutdownGuest"),
        "the hook ended before the guest was asked: {calls:?}"
    );
    assert_eq!(
        calls
            .iter()
            .filter(|c| *c == "ListProcessesInGuest")
            .count(),
        3
    );
    assert!(!calls.iter().any(|c| c == "PowerOffVM_Task"), "{calls:?}");
    let start = &bodies_of(&vc, "StartProgramInGuest")[0];
    assert!(
        start.contains(
            "<programPath>/usr/local/bin/drain</programPath><arguments>--fast</arguments>"
        ),
        "{start}"
    );

    let mut pre_stop_event = None;
    while let Ok(e) = events.try_recv() {
        if let ShutdownEventKind::PreStop { ok, exit_code, .. } = e.kind {
            pre_stop_event = Some((ok, exit_code));
        }
    }
    assert_eq!(pre_stop_event, Some((false, Some(3))));
    assert_not_logged(pw);
}

// ---- faults ----

#[tokio::test]
async fn an_invalid_guest_login_is_unauthenticated_without_the_password() {
    let pw = "Pw-login-c0ffee";
    // A server that repeats the password in its message: it is scrubbed.
    let (_s, vc, p) = fake(
        Guest::Ignores,
        GuestOps::Fails(vim_fault(
            "InvalidGuestLogin",
            &format!("Failed to authenticate with the guest operating system using the supplied credentials ({pw})."),
        )),
    )
    .await;
    let exec = executor(&p, pw);
    let err = exec
        .exec(&VmId::new(VM), &argv(&["/bin/true"]))
        .await
        .expect_err("InvalidGuestLogin");
    assert_eq!(err.kind(), ErrorKind::Unauthenticated, "{err}");
    assert!(!err.is_retryable());
    let fault = std::error::Error::source(&err)
        .and_then(|s| s.downcast_ref::<SoapFault>())
        .expect("the vim25 fault is the source");
    assert_eq!(fault.fault_type(), "InvalidGuestLogin");
    assert!(fault.message().contains("<redacted>"), "{fault}");
    for shown in [err.to_string(), format!("{err:?}"), error_chain(&err)] {
        assert!(!shown.contains(pw), "password in {shown}");
        assert!(shown.contains("InvalidGuestLogin"), "{shown}");
    }
    assert_eq!(
        vc.calls()
            .iter()
            .filter(|c| *c == "StartProgramInGuest")
            .count(),
        1
    );
    assert_not_logged(pw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_operations_unavailable_is_unavailable_and_the_shutdown_goes_on() {
    let pw = "Pw-unavail-5e11";
    let (_s, vc, p) = fake(
        Guest::Honours {
            after: Duration::from_millis(300),
        },
        GuestOps::Fails(vim_fault(
            "GuestOperationsUnavailable",
            "The guest operations agent could not be contacted.",
        )),
    )
    .await;
    let exec = executor(&p, pw);
    let vm = VmId::new(VM);
    let err = exec
        .spawn(&vm, "/bin/true", &[])
        .await
        .expect_err("unavailable");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.is_retryable());
    assert_eq!(
        std::error::Error::source(&err)
            .and_then(|s| s.downcast_ref::<SoapFault>())
            .map(SoapFault::fault_type),
        Some("GuestOperationsUnavailable")
    );

    let report = manager_with(&p, exec)
        .shutdown(
            &vm,
            ShutdownPolicy::with_grace(Duration::from_secs(10)).pre_stop(PreStopHook::new(
                argv(&["/bin/true"]),
                Duration::from_secs(5),
            )),
        )
        .await
        .expect("shutdown");
    assert!(
        matches!(report.outcome, ShutdownOutcome::Graceful { .. }),
        "{}",
        report.outcome
    );
    let run = report.pre_stop.expect("a pre-stop run");
    assert!(!run.is_ok());
    let why = run.error.expect("why it failed");
    assert!(why.contains("unavailable") && !why.contains(pw), "{why}");
    let calls = vc.calls();
    assert!(
        position(&calls, "StartProgramInGuest") < position(&calls, "ShutdownGuest"),
        "{calls:?}"
    );
    assert_not_logged(pw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_not_running_is_unavailable_and_the_vm_is_still_stopped() {
    let pw = "Pw-notools-ab12";
    let (_s, vc, p) = fake(Guest::NoTools, GuestOps::Fails(tools_unavailable_fault())).await;
    let exec = executor(&p, pw);
    let vm = VmId::new(VM);
    let err = exec
        .exec(&vm, &argv(&["/bin/true"]))
        .await
        .expect_err("no Tools");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.to_string().contains("VMware Tools"), "{err}");

    let report = manager_with(&p, exec)
        .shutdown(
            &vm,
            ShutdownPolicy::with_grace(Duration::from_secs(10)).pre_stop(PreStopHook::new(
                argv(&["/bin/true"]),
                Duration::from_secs(5),
            )),
        )
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
    assert!(report.outcome.is_off());
    assert!(report.pre_stop.is_some_and(|r| !r.is_ok()));
    assert!(vc.calls().iter().any(|c| c == "PowerOffVM_Task"));
    assert_not_logged(pw);
}

#[tokio::test]
async fn a_powered_off_vm_is_invalid_state_and_bad_argv_is_refused_before_sending() {
    let pw = "Pw-off-d00d";
    let (_s, vc, p) = fake(
        Guest::Ignores,
        GuestOps::Runs {
            pid: 1,
            running_polls: 0,
            exit: 0,
        },
    )
    .await;
    let exec = executor(&p, pw);
    let vm = VmId::new(VM);

    let err = exec.exec(&vm, &[]).await.expect_err("empty argv");
    assert_eq!(err.kind(), ErrorKind::InvalidSpec, "{err}");
    let err = exec
        .exec(&vm, &argv(&["/opt/$HOOK"]))
        .await
        .expect_err("shell characters in the program path");
    assert_eq!(err.kind(), ErrorKind::InvalidSpec, "{err}");
    let err = exec
        .exec(&vm, &argv(&["/bin/echo", "a\rb"]))
        .await
        .expect_err("a carriage return");
    assert_eq!(err.kind(), ErrorKind::InvalidSpec, "{err}");
    assert!(
        !vc.calls().iter().any(|c| c == "StartProgramInGuest"),
        "nothing was sent"
    );

    p.power_off(&vm, &PowerOffOptions::default())
        .await
        .expect("power off");
    let err = exec
        .exec(&vm, &argv(&["/bin/true"]))
        .await
        .expect_err("powered off");
    assert_eq!(err.kind(), ErrorKind::InvalidState, "{err}");
    assert_not_logged(pw);
}

#[tokio::test]
async fn a_server_without_guest_programs_is_unsupported() {
    // vcsim's own answer (a captured MethodNotFound).
    let pw = "Pw-unsupported-77";
    let (_s, _vc, p) = fake(Guest::Ignores, GuestOps::NotImplemented).await;
    let err = executor(&p, pw)
        .exec(&VmId::new(VM), &argv(&["/bin/true"]))
        .await
        .expect_err("MethodNotFound");
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    assert!(!err.to_string().contains(pw));
    assert_not_logged(pw);
}

#[tokio::test]
async fn capabilities_declare_guest_exec_and_no_failure_detection() {
    let (_s, _vc, p) = fake(Guest::Ignores, GuestOps::NotImplemented).await;
    let c = p.capabilities();
    assert!(c.guest_exec);
    assert!(!c.failure_detection);
}

// ---- the real vcsim ----

#[tokio::test]
async fn vcsim_finds_the_process_manager_and_runs_no_programs() {
    let Some(p) = common::provider().await else {
        return;
    };
    record_logs();
    let vm = common::running_vm(&p, "DC0_H0_VM20").await;
    let pw = "Pw-vcsim-4d2c";
    let err = executor(&p, pw)
        .spawn(&vm, "/bin/true", &argv(&["x y"]))
        .await
        .expect_err("vcsim 0.24 runs no guest programs");
    // The process manager was read from the real GuestOperationsManager; vcsim then
    // answers StartProgramInGuest with MethodNotFound.
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    let fault = std::error::Error::source(&err)
        .and_then(|s| s.downcast_ref::<SoapFault>())
        .expect("fault");
    assert_eq!(fault.fault_type(), "MethodNotFound");
    assert!(fault.message().contains("StartProgramInGuest"), "{fault}");
    assert!(!format!("{err:?}").contains(pw));
    assert_not_logged(pw);
}
