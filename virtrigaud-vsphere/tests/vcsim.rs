//! Provider tests against a real vcsim over SOAP (scripts/vsphere/setup.sh starts it).
//!
//! Each test owns distinct model VMs (by name) so tests can run in parallel and re-run
//! against a warm vcsim. Real time with short budgets (vcsim answers in milliseconds).

mod common;

use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use virtrigaud_core::conformance::{self, Fixture};
use virtrigaud_core::orchestration::image::ImageSink;
use virtrigaud_core::shutdown::{ShutdownManager, ShutdownOutcome, ShutdownPolicy};
use virtrigaud_core::{
    AgentStatus, CloneOptions, Customization, ErrorKind, ListOptions, NetworkCustomization,
    OffReason, PowerOffOptions, PowerState, Provider, ShutdownChannel, ShutdownRequestOptions,
    SnapshotOptions, StartOptions, VmId,
};
use virtrigaud_vsphere::{
    SoapFault, TlsVerification, VsphereConfig, VsphereImageSink, VsphereProvider,
};

use common::{
    RawSession, config, provider, remove, remove_named, running_vm, set_guest_shutdown_delay,
    vcsim_knob,
};

struct VcsimFixture {
    provider: VsphereProvider,
    pool: Mutex<Vec<&'static str>>,
}

#[async_trait]
impl Fixture for VcsimFixture {
    /// A model VM, running, with CPU and memory hot-add enabled while it was off (so
    /// reconfigure_online has headroom).
    async fn cooperative_vm(&self) -> virtrigaud_core::Result<VmId> {
        let name = self
            .pool
            .lock()
            .expect("pool")
            .pop()
            .expect("the fixture ran out of model VMs");
        let vm = self.provider.find_vm_by_name(name).await?;
        if self.provider.power_state(&vm).await?.is_active() {
            self.provider
                .power_off(&vm, &PowerOffOptions::default())
                .await?;
        }
        let r = RawSession::login()
            .await
            .call(&format!(
                r#"<ReconfigVM_Task xmlns="urn:vim25"><_this type="VirtualMachine">{vm}</_this><spec><memoryHotAddEnabled>true</memoryHotAddEnabled><cpuHotAddEnabled>true</cpuHotAddEnabled></spec></ReconfigVM_Task>"#
            ))
            .await;
        assert!(r.contains("<returnval type=\"Task\">"), "{r}");
        Ok(running_vm(&self.provider, name).await)
    }
    /// A linked clone shares a snapshot's disks: the source gets one before the check looks.
    async fn clone_source(&self, linked: bool) -> virtrigaud_core::Result<VmId> {
        let vm = self.cooperative_vm().await?;
        if linked && let Some(s) = self.provider.snapshotter() {
            let mut opts = SnapshotOptions::default();
            opts.name = "vrconf-clone-base".into();
            s.create_snapshot(&vm, &opts).await?;
        }
        Ok(vm)
    }
    /// The launcher's fail-next-clone knob: the clone is registered, then its task fails.
    async fn arrange_clone_failure(
        &self,
        source: &VmId,
    ) -> virtrigaud_core::Result<Option<CloneOptions>> {
        let (status, body) =
            vcsim_knob(true, &format!("/virtrigaud/fail-next-clone?vm={source}")).await;
        assert_eq!(status, 200, "fail-next-clone: {body}");
        Ok(Some(CloneOptions::new(format!(
            "vrconf-halfmade-{}",
            std::process::id()
        ))))
    }
    /// What the clone was customized with, as vcsim holds it (the pending CustomizationSpec
    /// and the clone's guestinfo.userdata).
    async fn applied_customization(
        &self,
        vm: &VmId,
    ) -> virtrigaud_core::Result<Option<Customization>> {
        let (status, body) = vcsim_knob(false, &format!("/virtrigaud/customization?vm={vm}")).await;
        if status == 404 {
            return Ok(None);
        }
        assert_eq!(status, 200, "customization knob: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("customization JSON");
        let text = |v: &serde_json::Value| v.as_str().filter(|s| !s.is_empty()).map(String::from);
        let mut c = Customization::default();
        c.hostname = text(&v["hostname"]);
        for n in v["networks"].as_array().into_iter().flatten() {
            let mut net = NetworkCustomization::default();
            net.ip_address = text(&n["ip"]);
            net.gateway = n["gateway"]
                .as_array()
                .and_then(|g| g.first())
                .and_then(text);
            net.dns = n["dns"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(text)
                .collect();
            c.networks.push(net);
        }
        c.cloud_init_user_data = text(&v["user_data"]);
        Ok(Some(c))
    }
    /// A model VM whose guest takes an hour to honour ShutdownGuest (the vcsim knob).
    async fn ignoring_vm(&self) -> virtrigaud_core::Result<Option<VmId>> {
        let vm = self.cooperative_vm().await?;
        set_guest_shutdown_delay(&vm, 3_600_000).await;
        Ok(Some(vm))
    }
    fn missing_vm(&self) -> VmId {
        VmId::new("vm-999999")
    }
    /// Prepared OVAs become templates in DC0's root VM folder on vcsim's `LocalDS_0` (the
    /// seed's `images-datastore` and `/Templates` do not exist there), staged in a temporary
    /// directory of this test process.
    async fn image_sink(&self) -> virtrigaud_core::Result<Option<Arc<dyn ImageSink>>> {
        let staging = std::env::temp_dir().join(format!(
            "virtrigaud-vsphere-conformance-images-{}",
            std::process::id()
        ));
        let sink = VsphereImageSink::new(&self.provider, staging)
            .with_datastore("LocalDS_0")
            .with_folder("DC0/vm");
        Ok(Some(Arc::new(sink)))
    }
    fn graceful_grace(&self) -> Duration {
        Duration::from_secs(20)
    }
    fn short_grace(&self) -> Duration {
        Duration::from_secs(2)
    }
    async fn cleanup(&self, vm: &VmId) {
        // Model VMs are kept (re-runs power them on again), as cooperative guests.
        set_guest_shutdown_delay(vm, 0).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite() {
    let Some(p) = provider().await else { return };
    // DC0_C0_RP0_VM9..11 belong to the benches; 12..39 to the checks added since.
    let pool = (0..9)
        .chain(12..40)
        .map(|i| &*Box::leak(format!("DC0_C0_RP0_VM{i}").into_boxed_str()))
        .collect();
    let fixture = VcsimFixture {
        provider: p.clone(),
        pool: Mutex::new(pool),
    };
    let report = conformance::run_all(Arc::new(p), &fixture).await;
    report.assert_passed_on("vsphere-vcsim");
}

#[tokio::test]
async fn login_failure_is_unauthenticated() {
    let Some(cfg) = config() else { return };
    let mut bad = cfg.clone();
    bad.password = "definitely-wrong".to_owned().into();
    let err = VsphereProvider::connect(bad.clone())
        .await
        .expect_err("wrong password must fail");
    assert_eq!(err.kind(), ErrorKind::Unauthenticated, "{err}");
    let fault = std::error::Error::source(&err)
        .and_then(|s| s.downcast_ref::<SoapFault>())
        .expect("SoapFault source");
    assert_eq!(fault.fault_type(), "InvalidLogin");
    assert!(!format!("{err:?}").contains("definitely-wrong"));
    assert!(
        !format!("{bad:?}").contains("definitely-wrong"),
        "password in Debug"
    );
}

#[tokio::test]
async fn tls_verification_is_on_by_default() {
    let Some(cfg) = config() else { return };
    // vcsim's certificate comes from the test CA, which the system roots do not hold.
    let err = VsphereProvider::connect(cfg.with_tls(TlsVerification::System))
        .await
        .expect_err("untrusted cert");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
}

#[tokio::test]
async fn lookup_describe_and_list() {
    let Some(p) = provider().await else { return };
    let by_name = p.find_vm_by_name("DC0_H0_VM7").await.expect("by name");
    let by_path = p
        .find_vm_by_path("DC0/vm/DC0_H0_VM7")
        .await
        .expect("by path");
    assert_eq!(by_name, by_path);
    assert!(
        by_name.as_str().starts_with("vm-"),
        "VmId is the moref: {by_name}"
    );
    assert_eq!(p.vm_name(&by_name).await.expect("name"), "DC0_H0_VM7");
    let d = p.describe(&by_name).await.expect("describe");
    assert_eq!(d.name, "DC0_H0_VM7");
    assert!(d.cpu >= 1 && d.memory_mib >= 32, "{d:?}");
    assert!(!d.disks.is_empty(), "{d:?}");
    let all = p.list_vms(&ListOptions::default()).await.expect("list");
    assert!(
        all.iter().any(|v| v.id == by_name),
        "list_vms lacks {by_name}"
    );
    assert!(all.len() >= 24, "{} VMs", all.len());
    for missing in [
        p.find_vm_by_name("no-such-vm").await,
        p.find_vm_by_path("DC0/vm/no-such-vm").await,
    ] {
        assert_eq!(missing.expect_err("missing").kind(), ErrorKind::NotFound);
    }
    let err = p
        .power_state(&VmId::new("vm-999999"))
        .await
        .expect_err("missing moref");
    assert_eq!(err.kind(), ErrorKind::NotFound);
    let caps = p.vm_capabilities(&by_name).await.expect("caps");
    assert_eq!(
        caps.agent_connected,
        Some(true),
        "model VMs run Tools in our vcsim"
    );
}

#[tokio::test]
async fn power_cycle_suspend_reset_and_invalid_states() {
    let Some(p) = provider().await else { return };
    let vm = running_vm(&p, "DC0_H0_VM0").await;
    let err = p
        .start(&vm, &StartOptions::default())
        .await
        .expect_err("start a running VM");
    assert_eq!(err.kind(), ErrorKind::InvalidState, "{err}");
    p.reset(&vm).await.expect("reset");
    p.suspend(&vm).await.expect("suspend");
    assert_eq!(
        p.power_state(&vm).await.expect("state"),
        PowerState::Off(OffReason::Saved)
    );
    p.start(&vm, &StartOptions::default())
        .await
        .expect("resume from suspend");
    p.power_off(&vm, &PowerOffOptions::default())
        .await
        .expect("power off");
    assert!(p.power_state(&vm).await.expect("state").is_off());
    let err = p
        .power_off(&vm, &PowerOffOptions::default())
        .await
        .expect_err("off twice");
    assert_eq!(err.kind(), ErrorKind::InvalidState, "{err}");
    let err = p
        .request_shutdown(
            &vm,
            ShutdownChannel::Agent,
            &ShutdownRequestOptions::default(),
        )
        .await
        .expect_err("ShutdownGuest on an off VM");
    assert_eq!(err.kind(), ErrorKind::InvalidState, "{err}");
    let err = p
        .request_shutdown(
            &vm,
            ShutdownChannel::Acpi,
            &ShutdownRequestOptions::default(),
        )
        .await
        .expect_err("no ACPI channel on vSphere");
    assert_eq!(err.kind(), ErrorKind::Unsupported);
    p.start(&vm, &StartOptions::default()).await.expect("start");
    assert_eq!(
        p.probe_agent(&vm).await.expect("probe"),
        AgentStatus::Connected
    );
    p.request_shutdown(
        &vm,
        ShutdownChannel::Agent,
        &ShutdownRequestOptions::default(),
    )
    .await
    .expect("ShutdownGuest");
    assert!(
        p.power_state(&vm).await.expect("state").is_off(),
        "vcsim's ShutdownGuest is synchronous"
    );
}

#[tokio::test]
async fn watch_is_pushed_by_wait_for_updates() {
    let Some(p) = provider().await else { return };
    let vm = running_vm(&p, "DC0_H0_VM4").await;
    let mut stream = p
        .watch_power_state(&vm)
        .await
        .expect("watch")
        .expect("stream");
    let calls_before = p.api_calls();
    let waiting = tokio::spawn(async move {
        let first = stream.next().await;
        let second = stream.next().await;
        (first, second)
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    p.power_off(&vm, &PowerOffOptions::default())
        .await
        .expect("off");
    p.start(&vm, &StartOptions::default()).await.expect("on");
    let (first, second) = tokio::time::timeout(Duration::from_secs(20), waiting)
        .await
        .expect("pushed in time")
        .expect("join");
    assert!(first.expect("item").expect("ok").is_off());
    assert_eq!(second.expect("item").expect("ok"), PowerState::Running);
    // power_off + start are 2 calls each (task + one read); the watch added a few long polls,
    // not a polling loop.
    let used = p.api_calls() - calls_before;
    assert!(used <= 10, "{used} SOAP calls for two pushed transitions");
}

#[tokio::test]
async fn session_expiry_relogs_in_once() {
    let Some(cfg) = config() else { return };
    let agent = format!("virtrigaud-vsphere-test-expiry-{}", std::process::id());
    let p = VsphereProvider::connect(cfg.with_user_agent(agent.clone()))
        .await
        .expect("connect");
    let vm = running_vm(&p, "DC0_H0_VM5").await;
    let mut stream = p
        .watch_power_state(&vm)
        .await
        .expect("watch")
        .expect("stream");
    let mut raw = RawSession::login().await;
    assert_eq!(
        raw.terminate_sessions_of(&agent).await,
        1,
        "our provider's session should be listed once"
    );
    // The next call hits NotAuthenticated, logs in again and succeeds.
    assert_eq!(
        p.power_state(&vm).await.expect("after expiry"),
        PowerState::Running
    );
    // The watch rebuilt its (session-scoped) property collector and still pushes.
    p.power_off(&vm, &PowerOffOptions::default())
        .await
        .expect("off");
    let got = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(item) = stream.next().await {
            if item.expect("watch item").is_off() {
                return true;
            }
        }
        false
    })
    .await
    .expect("in time");
    assert!(got, "off was pushed after the re-login");
    // Logout behind the client's back too: the provider recovers again.
    raw.terminate_sessions_of(&agent).await;
    p.start(&vm, &StartOptions::default())
        .await
        .expect("start after second expiry");
    p.logout().await.expect("logout");
    assert_eq!(
        p.power_state(&vm).await.expect("after logout"),
        PowerState::Running
    );
}

#[tokio::test]
async fn graceful_shutdown_through_the_engine_counts_soap_calls() {
    let Some(cfg) = config() else { return };
    let p = VsphereProvider::connect(cfg).await.expect("connect");
    let vm = running_vm(&p, "DC0_H0_VM6").await;
    let provider: Arc<dyn Provider> = Arc::new(p.clone());
    let mgr = ShutdownManager::new(provider);
    let before = p.api_calls();
    let report = mgr
        .shutdown(&vm, ShutdownPolicy::with_grace(Duration::from_secs(20)))
        .await
        .expect("shutdown");
    let calls = p.api_calls() - before;
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
    assert_eq!(report.signals_sent, 1);
    assert_eq!(report.power_off_calls, 0);
    eprintln!(
        "SOAP calls for one graceful shutdown (engine + vcsim): {calls}; provider calls {}",
        report.provider_calls
    );
    assert!(calls <= 12, "{calls} SOAP calls for one graceful shutdown");
    // Issue 18's budget: one read that also gives Tools' state, one signal, the confirming
    // read, besides the (shared) watch subscription.
    assert!(
        report.provider_calls <= 4,
        "{} provider calls for one graceful stop",
        report.provider_calls
    );
    p.start(&vm, &StartOptions::default())
        .await
        .expect("start again");
}

#[tokio::test]
async fn insecure_opt_in_connects() {
    let Some(cfg) = config() else { return };
    let p = VsphereProvider::connect(cfg.with_tls(TlsVerification::DangerousAcceptInvalidCerts))
        .await
        .expect("insecure connect");
    p.find_vm_by_name("DC0_H0_VM7").await.expect("works");
    let _ = VsphereConfig::new("https://x/sdk", "u", "p");
}

#[tokio::test]
async fn inventory_lists_hosts_clusters_and_datastores_for_placement() {
    use virtrigaud_core::placement::{PlacementRequest, Placer, Resources, SolverPlacer};
    let Some(p) = provider().await else { return };
    let inv = p.inventory().await.expect("inventory");
    // vcsim's default VPX model: a cluster of 3 hosts plus one standalone host.
    assert_eq!(
        inv.hosts.len(),
        4,
        "{:?}",
        inv.hosts.iter().map(|h| &h.name).collect::<Vec<_>>()
    );
    assert_eq!(inv.hosts.iter().filter(|h| h.cluster.is_some()).count(), 3);
    assert!(
        inv.hosts
            .iter()
            .all(|h| h.capacity.cpu > 0 && h.capacity.memory_mib > 0)
    );
    assert!(inv.hosts.iter().all(|h| !h.datastores.is_empty()));
    assert!(!inv.datastores.is_empty());
    assert!(inv.hosts.iter().map(|h| h.vms.len()).sum::<usize>() > 0);

    let placer = SolverPlacer::new(Arc::new(p));
    let d = placer
        .place(&PlacementRequest::new("new-vm", Resources::new(1, 512)))
        .await
        .expect("placement");
    assert!(inv.hosts.iter().any(|h| h.name == d.host));
}

#[tokio::test]
async fn instance_id_is_the_endpoint_without_credentials() {
    let Some(cfg) = config() else { return };
    let url = url::Url::parse(&cfg.url).expect("VIRTRIGAUD_VSPHERE_URL");
    let want = format!(
        "{}://{}:{}",
        url.scheme(),
        url.host_str().expect("host"),
        url.port_or_known_default().expect("port")
    );
    let p = VsphereProvider::connect(cfg.clone())
        .await
        .expect("connect");
    assert_eq!(p.instance_id(), want);
    // The same endpoint with the credentials written into the URL: same identity, no secret.
    let password = std::env::var("VIRTRIGAUD_VSPHERE_PASSWORD").expect("password");
    let mut with_userinfo = url.clone();
    with_userinfo.set_username(&cfg.username).expect("user");
    with_userinfo.set_password(Some(&password)).expect("pw");
    let mut leaky = cfg.clone();
    leaky.url = with_userinfo.to_string();
    let q = VsphereProvider::connect(leaky).await.expect("connect");
    assert_eq!(q.instance_id(), want);
    assert!(!q.instance_id().contains(&password));
    assert!(!q.instance_id().contains(&cfg.username));
    assert!(!format!("{q:?}").contains(&password), "password in Debug");
}

#[tokio::test]
async fn incarnation_is_stable_while_on_and_changes_with_every_power_on() {
    let Some(p) = provider().await else { return };
    let name = "vsi-incarnation";
    remove_named(&p, name).await;
    let mut spec = virtrigaud_core::VmCreateSpec::new(name, 1, 128);
    spec.power_on = true;
    let vm = p.create(&spec).await.expect("create");
    let first = p
        .incarnation(&vm)
        .await
        .expect("incarnation")
        .expect("a powered-on VM has one (vcsim sets summary.runtime.bootTime)");
    let (uuid, boot) = first.as_str().split_once('#').expect("<uuid>#<bootTime>");
    assert_eq!(uuid.len(), 36, "{first}");
    assert!(boot.contains('T'), "an xsd:dateTime: {first}");
    assert_eq!(
        p.incarnation(&vm).await.expect("again"),
        Some(first.clone())
    );
    p.power_off(&vm, &PowerOffOptions::default())
        .await
        .expect("power off");
    assert_eq!(p.incarnation(&vm).await.expect("off"), None);
    // vcsim's boot time has nanoseconds; vCenter's may have seconds only.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    p.start(&vm, &StartOptions::default()).await.expect("start");
    let second = p
        .incarnation(&vm)
        .await
        .expect("incarnation")
        .expect("powered on again");
    assert_ne!(second, first, "a new power-on is a new incarnation");
    assert!(second.as_str().starts_with(&format!("{uuid}#")), "{second}");
    // A guest shutdown ends the run and never reads as a hard power-off.
    p.request_shutdown(
        &vm,
        ShutdownChannel::Agent,
        &ShutdownRequestOptions::default(),
    )
    .await
    .expect("ShutdownGuest");
    let st = p.power_state(&vm).await.expect("state");
    assert!(st.is_off(), "{st}");
    assert_ne!(st, PowerState::Off(OffReason::Destroyed));
    assert_eq!(p.incarnation(&vm).await.expect("off"), None);
    remove(&p, &vm).await;
}
