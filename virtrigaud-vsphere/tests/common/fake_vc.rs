//! A scripted vCenter for one VM (wiremock), for what vcsim cannot show: replies are the
//! real vcsim ones captured in tests/fixtures/vcsim-*.xml (scripts/vsphere/capture-fixtures.sh),
//! the VM's behaviour is a guest script ([`Guest`], [`GuestOps`]). Used by tests/scripted.rs
//! and tests/guest_ops.rs.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use virtrigaud_core::Provider;
use virtrigaud_core::shutdown::ShutdownManager;
use virtrigaud_vsphere::VsphereProvider;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use super::scripted_config;

pub const VM: &str = "vm-87";

pub fn fx(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}.xml", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

pub fn ok(body: String) -> ResponseTemplate {
    ResponseTemplate::new(200)
        .insert_header("Content-Type", "text/xml; charset=utf-8")
        .set_body_string(body)
}

pub fn fault(body: String) -> ResponseTemplate {
    ResponseTemplate::new(500)
        .insert_header("Content-Type", "text/xml; charset=utf-8")
        .set_body_string(body)
}

/// A typed property value as vcsim writes it (locally declared `XMLSchema-instance` prefix).
pub fn prop(name: &str, ty: &str, val: &str) -> String {
    format!(
        r#"<propSet><name>{name}</name><val xmlns:XMLSchema-instance="http://www.w3.org/2001/XMLSchema-instance" XMLSchema-instance:type="{ty}">{val}</val></propSet>"#
    )
}

/// vcsim's RetrievePropertiesEx reply with other property sets.
pub fn props_reply(obj_ty: &str, obj: &str, props: &str) -> String {
    let base = fx("vcsim-power-on");
    let start = base.find("<objects>").expect("objects");
    let end = base.find("</objects>").expect("/objects");
    format!(
        "{}<objects><obj type=\"{obj_ty}\">{obj}</obj>{props}{}",
        &base[..start],
        &base[end..]
    )
}

/// vcsim's WaitForUpdatesEx reply carrying one modification of `changes`.
pub fn wait_reply(version: usize, obj_ty: &str, obj: &str, kind: &str, changes: &str) -> String {
    let base = fx("vcsim-wait-off");
    let start = base.find("<version>").expect("version");
    let os_start = base.find("<objectSet>").expect("objectSet");
    let os_end = base.find("</objectSet>").expect("/objectSet");
    format!(
        "{}<version>{version}</version>{}<objectSet><kind>{kind}</kind><obj type=\"{obj_ty}\">{obj}</obj>{changes}{}",
        &base[..start],
        &base[base.find("</version>").expect("/version") + "</version>".len()..os_start],
        &base[os_end..]
    )
}

pub fn change(name: &str, ty: &str, val: &str) -> String {
    format!(
        r#"<changeSet><name>{name}</name><op>assign</op><val xmlns:XMLSchema-instance="http://www.w3.org/2001/XMLSchema-instance" XMLSchema-instance:type="{ty}">{val}</val></changeSet>"#
    )
}

/// vcsim's InvalidPowerState fault turned into the ToolsUnavailable fault vCenter sends.
pub fn tools_unavailable_fault() -> String {
    fx("vcsim-shutdown-guest-off")
        .replace("InvalidPowerStateFault", "ToolsUnavailableFault")
        .replace(r#"xsi:type="InvalidPowerState""#, r#"xsi:type="ToolsUnavailable""#)
        .replace("<requestedState>poweredOn</requestedState><existingState>poweredOff</existingState>", "")
        .replace(
            "<faultstring></faultstring>",
            "<faultstring>Cannot complete operation because VMware Tools is not running in this virtual machine.</faultstring>",
        )
}

pub fn task_ref(method: &str, task: &str) -> String {
    fx("vcsim-power-off-task")
        .replace("PowerOffVM_TaskResponse", &format!("{method}Response"))
        .replace("task-129", task)
}

pub fn soap_method(body: &str) -> String {
    let after = body
        .split_once("<soapenv:Body><")
        .map(|(_, r)| r)
        .unwrap_or("");
    after.split([' ', '>']).next().unwrap_or("").to_owned()
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Guest {
    /// Tools running; the guest shuts down `after` the request (shuttingDown in between).
    Honours { after: Duration },
    /// Tools running; the guest ignores the request.
    Ignores,
    /// Tools not running: ShutdownGuest fails with ToolsUnavailable.
    NoTools,
    /// Tools running; the guest powers off on its own exactly when a hard power-off arrives
    /// (PowerOffVM_Task then fails with InvalidPowerState).
    RacesPowerOff,
}

/// How the guest's Tools answer guest operations (`StartProgramInGuest`,
/// `ListProcessesInGuest`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GuestOps {
    /// As vcsim: `MethodNotFound` (it runs no guest programs).
    NotImplemented,
    /// A program starts as `pid`, is listed without an `endTime` by the first
    /// `running_polls` process listings, then with one and `exitCode` = `exit`.
    Runs {
        pid: i64,
        running_polls: usize,
        exit: i32,
    },
    /// Every guest operation fails with this SOAP fault reply.
    Fails(String),
}

/// A vim25 fault reply of `ty` (vcsim's envelope, from its InvalidLogin fault).
pub fn vim_fault(ty: &str, message: &str) -> String {
    fx("vcsim-login-invalid")
        .replace("InvalidLoginFault", &format!("{ty}Fault"))
        .replace(r#"xsi:type="InvalidLogin""#, &format!(r#"xsi:type="{ty}""#))
        .replace(
            "<faultstring>Login failure</faultstring>",
            &format!("<faultstring>{message}</faultstring>"),
        )
}

/// `StartProgramInGuestResponse` returning `pid` (vcsim's envelope).
pub fn start_program_reply(pid: i64) -> String {
    fx("vcsim-shutdown-guest").replace(
        r#"<ShutdownGuestResponse xmlns="urn:vim25"></ShutdownGuestResponse>"#,
        &format!(r#"<StartProgramInGuestResponse xmlns="urn:vim25"><returnval>{pid}</returnval></StartProgramInGuestResponse>"#),
    )
}

/// `ListProcessesInGuestResponse` with one `GuestProcessInfo` (ended with `exit` when Some).
pub fn list_processes_reply(pid: i64, exit: Option<i32>) -> String {
    let end = exit
        .map(|c| format!("<endTime>2024-05-01T10:00:02Z</endTime><exitCode>{c}</exitCode>"))
        .unwrap_or_default();
    fx("vcsim-shutdown-guest").replace(
        r#"<ShutdownGuestResponse xmlns="urn:vim25"></ShutdownGuestResponse>"#,
        &format!(
            r#"<ListProcessesInGuestResponse xmlns="urn:vim25"><returnval><name>/bin/sh</name><pid>{pid}</pid><owner>root</owner><cmdLine>"/bin/sh" -c hook</cmdLine><startTime>2024-05-01T10:00:00Z</startTime>{end}</returnval></ListProcessesInGuestResponse>"#
        ),
    )
}

/// One scheduled change of the VM.
#[derive(Debug, Clone)]
pub struct Event {
    at: Instant,
    power: Option<&'static str>,
    guest_state: Option<&'static str>,
}

#[derive(Debug)]
pub struct VcState {
    guest: Guest,
    guest_ops: GuestOps,
    process_listings: usize,
    events: Vec<Event>,
    calls: Vec<String>,
    bodies: Vec<(String, String)>,
    /// Versioned `WaitForUpdatesEx` requests still to fail (with a `SystemError` fault).
    failing_waits: usize,
}

impl VcState {
    fn current(&self, now: Instant) -> (&'static str, &'static str) {
        let mut power = "poweredOn";
        let mut gs = "running";
        for e in self.events.iter().filter(|e| e.at <= now) {
            power = e.power.unwrap_or(power);
            gs = e.guest_state.unwrap_or(gs);
        }
        (power, gs)
    }
}

/// A scripted vCenter for one VM: replies are the captured vcsim ones, the VM's behaviour is
/// the guest's script.
#[derive(Clone)]
pub struct FakeVc(Arc<Mutex<VcState>>);

impl FakeVc {
    pub fn new(guest: Guest) -> Self {
        FakeVc(Arc::new(Mutex::new(VcState {
            guest,
            guest_ops: GuestOps::NotImplemented,
            process_listings: 0,
            events: Vec::new(),
            calls: Vec::new(),
            bodies: Vec::new(),
            failing_waits: 0,
        })))
    }
    /// With guest operations answered as `ops`.
    pub fn with_guest_ops(self, ops: GuestOps) -> Self {
        self.0.lock().expect("state").guest_ops = ops;
        self
    }
    pub fn calls(&self) -> Vec<String> {
        self.0.lock().expect("state").calls.clone()
    }
    /// The next `n` versioned `WaitForUpdatesEx` requests fail with a `SystemError` fault
    /// (after 200 ms).
    pub fn fail_next_waits(&self, n: usize) {
        self.0.lock().expect("state").failing_waits = n;
    }
    /// Every request as (method, whole SOAP body), in order.
    pub fn bodies(&self) -> Vec<(String, String)> {
        self.0.lock().expect("state").bodies.clone()
    }
}

pub fn tag<'a>(body: &'a str, t: &str) -> Option<&'a str> {
    let open = format!("<{t}>");
    let close = format!("</{t}>");
    body.split_once(&open)
        .and_then(|(_, r)| r.split_once(&close))
        .map(|(v, _)| v)
}

impl Respond for FakeVc {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let body = String::from_utf8_lossy(&req.body).into_owned();
        let m = soap_method(&body);
        let now = Instant::now();
        let mut st = self.0.lock().expect("state");
        st.calls.push(m.clone());
        st.bodies.push((m.clone(), body.clone()));
        let (power, gs) = st.current(now);
        match m.as_str() {
            "RetrieveServiceContent" => ok(fx("vcsim-service-content")),
            "Login" => ok(fx("vcsim-login")).insert_header(
                "Set-Cookie",
                "vmware_soap_session=\"scripted\"; Path=/; HttpOnly",
            ),
            "CreatePropertyCollector" => ok(fx("vcsim-create-collector")),
            "CreateFilter" => ok(fx("vcsim-create-filter")),
            "DestroyPropertyCollector" => ok(fx("vcsim-destroy-collector")),
            "DestroyPropertyFilter" => ok(fx("vcsim-destroy-collector").replace(
                "DestroyPropertyCollectorResponse",
                "DestroyPropertyFilterResponse",
            )),
            // Replies are scripted with delays, which cannot be cut short: the outstanding
            // long poll returns when its delay is over.
            "CancelWaitForUpdates" => ok(fx("vcsim-destroy-collector").replace(
                "DestroyPropertyCollectorResponse",
                "CancelWaitForUpdatesResponse",
            )),
            "CurrentTime" => ok(fx("vcsim-current-time")),
            "RebootGuest" => match st.guest {
                Guest::NoTools => fault(tools_unavailable_fault()),
                _ => ok(fx("vcsim-shutdown-guest")
                    .replace("ShutdownGuestResponse", "RebootGuestResponse")),
            },
            "RetrievePropertiesEx" if body.contains("<type>Task</type>") => {
                if body.contains("task-race") {
                    let mut r = fx("vcsim-task-error");
                    r = r.replace("task-129", "task-race");
                    ok(r)
                } else {
                    ok(fx("vcsim-task-success"))
                }
            }
            "RetrievePropertiesEx" if body.contains("<type>GuestOperationsManager</type>") => {
                ok(fx("vcsim-guest-process-manager"))
            }
            "StartProgramInGuest" | "ListProcessesInGuest" if power != "poweredOn" => {
                fault(fx("vcsim-shutdown-guest-off"))
            }
            "StartProgramInGuest" => match &st.guest_ops {
                GuestOps::NotImplemented => fault(fx("vcsim-start-program-not-implemented")),
                GuestOps::Runs { pid, .. } => ok(start_program_reply(*pid)),
                GuestOps::Fails(f) => fault(f.clone()),
            },
            "ListProcessesInGuest" => match st.guest_ops.clone() {
                GuestOps::NotImplemented => fault(
                    fx("vcsim-start-program-not-implemented")
                        .replace("StartProgramInGuest", "ListProcessesInGuest"),
                ),
                GuestOps::Runs {
                    pid,
                    running_polls,
                    exit,
                } => {
                    st.process_listings += 1;
                    let ended = st.process_listings > running_polls;
                    ok(list_processes_reply(pid, ended.then_some(exit)))
                }
                GuestOps::Fails(f) => fault(f),
            },
            "RetrievePropertiesEx" => {
                let mut props = String::new();
                if body.contains("<pathSet>runtime.powerState</pathSet>") {
                    props.push_str(&prop(
                        "runtime.powerState",
                        "VirtualMachinePowerState",
                        power,
                    ));
                }
                if body.contains("<pathSet>guest.guestState</pathSet>") {
                    props.push_str(&prop("guest.guestState", "xsd:string", gs));
                }
                if body.contains("<pathSet>guest.toolsRunningStatus</pathSet>") {
                    let t = if st.guest == Guest::NoTools {
                        "guestToolsNotRunning"
                    } else {
                        "guestToolsRunning"
                    };
                    props.push_str(&prop("guest.toolsRunningStatus", "xsd:string", t));
                }
                ok(props_reply("VirtualMachine", VM, &props))
            }
            "ShutdownGuest" => {
                if power != "poweredOn" {
                    return fault(fx("vcsim-shutdown-guest-off"));
                }
                match st.guest {
                    Guest::NoTools => fault(tools_unavailable_fault()),
                    Guest::Honours { after } => {
                        st.events.push(Event {
                            at: now + Duration::from_millis(100),
                            power: None,
                            guest_state: Some("shuttingDown"),
                        });
                        st.events.push(Event {
                            at: now + after,
                            power: Some("poweredOff"),
                            guest_state: Some("notRunning"),
                        });
                        ok(fx("vcsim-shutdown-guest"))
                    }
                    Guest::Ignores | Guest::RacesPowerOff => ok(fx("vcsim-shutdown-guest")),
                }
            }
            "PowerOffVM_Task" => {
                st.events.push(Event {
                    at: now,
                    power: Some("poweredOff"),
                    guest_state: Some("notRunning"),
                });
                if st.guest == Guest::RacesPowerOff {
                    // The guest got there first: the hard power-off fails.
                    ok(task_ref("PowerOffVM_Task", "task-race"))
                } else if power == "poweredOff" {
                    ok(task_ref("PowerOffVM_Task", "task-race"))
                } else {
                    ok(task_ref("PowerOffVM_Task", "task-130"))
                }
            }
            "WaitForUpdatesEx" => {
                let version = tag(&body, "version").unwrap_or("");
                let max_wait = tag(&body, "maxWaitSeconds")
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(1u64);
                if version.is_empty() {
                    let seen = st.events.iter().filter(|e| e.at <= now).count();
                    let changes = change("runtime.powerState", "VirtualMachinePowerState", power)
                        + &change("guest.guestState", "xsd:string", gs);
                    return ok(wait_reply(seen, "VirtualMachine", VM, "enter", &changes));
                }
                if st.failing_waits > 0 {
                    st.failing_waits -= 1;
                    return fault(vim_fault("SystemError", "the collector failed"))
                        .set_delay(Duration::from_millis(200));
                }
                let from: usize = version.parse().unwrap_or(0);
                let horizon = now + Duration::from_secs(max_wait);
                match st.events.get(from).cloned() {
                    Some(e) if e.at <= horizon => {
                        let mut changes = String::new();
                        if let Some(p) = e.power {
                            changes.push_str(&change(
                                "runtime.powerState",
                                "VirtualMachinePowerState",
                                p,
                            ));
                        }
                        if let Some(g) = e.guest_state {
                            changes.push_str(&change("guest.guestState", "xsd:string", g));
                        }
                        ok(wait_reply(
                            from + 1,
                            "VirtualMachine",
                            VM,
                            "modify",
                            &changes,
                        ))
                        .set_delay(e.at.saturating_duration_since(now))
                    }
                    _ => ok(fx("vcsim-wait-empty")).set_delay(Duration::from_secs(max_wait)),
                }
            }
            other => fault(
                fx("vcsim-missing-vm")
                    .replace("ManagedObjectNotFound", &format!("NotImplemented-{other}")),
            ),
        }
    }
}

pub async fn scripted(guest: Guest) -> (MockServer, FakeVc, VsphereProvider) {
    scripted_with(FakeVc::new(guest)).await
}

/// A scripted vCenter answering as `vc`.
pub async fn scripted_with(vc: FakeVc) -> (MockServer, FakeVc, VsphereProvider) {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(vc.clone())
        .mount(&server)
        .await;
    let p = VsphereProvider::connect(scripted_config(&server.uri()))
        .await
        .expect("connect to the scripted vCenter");
    (server, vc, p)
}

pub fn manager(p: &VsphereProvider) -> ShutdownManager {
    let provider: Arc<dyn Provider> = Arc::new(p.clone());
    ShutdownManager::new(provider)
}
