//! KubeVirt (a real kube-apiserver with the KubeVirt CRDs): the fake virt-handler of
//! `virtrigaud-kubevirt`'s `testkit` feature honours the VM annotation
//! `virtrigaud.test/guest-shutdown-ms` (one fake controller per guest, each in its own
//! namespace).

use std::sync::Arc;
use std::time::Duration;

use virtrigaud_core::{PowerState, ShutdownChannel, VmId};
/// The fake virt-controller / virt-handler from the KubeVirt crate's `testkit` feature.
use virtrigaud_kubevirt::testkit as kubevirt_ctl;

use super::backend::{Backend, BoxFut, Instance, SLACK, var};
use super::types::{Count, Res};

/// The kube-apiserver backend.
pub(crate) struct KubeVirt {
    kubeconfig: String,
    /// The providers' default namespace (every VM id names its own).
    ns: String,
    client: kube::Client,
    /// One fake virt-controller per guest, each in the guest's own namespace: the fake
    /// reconciles every VM of its namespace on every event, so sharing one across concurrent
    /// guests would slow every stop down by the others' traffic.
    ctls: std::sync::Mutex<Vec<kubevirt_ctl::FakeKubeVirt>>,
}

impl KubeVirt {
    /// Connects with the kubeconfig of `scripts/kubevirt/setup.sh`.
    pub(crate) async fn connect() -> Res<KubeVirt> {
        let kubeconfig = var("VIRTRIGAUD_KUBECONFIG")?;
        let kc = kube::config::Kubeconfig::read_from(&kubeconfig)
            .map_err(|e| format!("kubeconfig {kubeconfig}: {e}"))?;
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .map_err(|e| format!("kubeconfig {kubeconfig}: {e}"))?;
        let client = kube::Client::try_from(cfg).map_err(|e| format!("kube client: {e}"))?;
        Ok(KubeVirt {
            kubeconfig,
            ns: kubevirt_ctl::unique_ns("sbs-calls"),
            client,
            ctls: std::sync::Mutex::new(Vec::new()),
        })
    }

    async fn provider(&self) -> Res<virtrigaud_kubevirt::KubeVirtProvider> {
        use virtrigaud_kubevirt::{KubeVirtConfig, KubeVirtProvider, PowerApi};
        let kc = kube::config::Kubeconfig::read_from(&self.kubeconfig)
            .map_err(|e| format!("kubeconfig: {e}"))?;
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .map_err(|e| format!("kubeconfig: {e}"))?;
        // The test apiserver has no virt-api: stop/start through the run strategy.
        let pc = KubeVirtConfig::default()
            .with_power_api(PowerApi::RunStrategy)
            .with_namespace(&self.ns)
            .with_operation_timeout(Duration::from_secs(120));
        KubeVirtProvider::from_kube_config(cfg, pc).map_err(|e| format!("KubeVirt provider: {e}"))
    }
}

impl Backend for KubeVirt {
    fn name(&self) -> &'static str {
        "KubeVirt"
    }
    fn channel(&self) -> ShutdownChannel {
        ShutdownChannel::Acpi
    }
    fn slots(&self) -> Option<usize> {
        None
    }
    fn instance(&self) -> BoxFut<'_, Res<Instance>> {
        Box::pin(async move {
            let p = self.provider().await?;
            let c = p.clone();
            Ok(Instance {
                provider: Arc::new(p),
                count: Box::new(move || {
                    let s = c.api_stats();
                    Count {
                        requests: s.requests,
                        watches: Some(s.watch_requests),
                        events: Some(s.watch_events),
                    }
                }),
            })
        })
    }
    fn guest(&self, _slot: usize, tag: &str, t: Duration) -> BoxFut<'_, Res<VmId>> {
        let name = format!("calls-{tag}-{}s", t.as_secs());
        Box::pin(async move {
            let ms = t.as_millis().to_string();
            let grace = i64::try_from((t + 2 * SLACK).as_secs()).unwrap_or(i64::MAX);
            let ns = kubevirt_ctl::unique_ns("sbs-calls");
            let ctl = kubevirt_ctl::FakeKubeVirt::start(self.client.clone(), &ns, false);
            if let Ok(mut c) = self.ctls.lock() {
                c.push(ctl);
            }
            let vm = kubevirt_ctl::create_vm(
                &self.client,
                &ns,
                &name,
                "Always",
                Some(grace),
                &[(kubevirt_ctl::GUEST_SHUTDOWN, &ms)],
            )
            .await;
            self.provider()
                .await?
                .wait_for_power_state(&vm, |s| *s == PowerState::Running, SLACK)
                .await
                .map_err(|e| format!("KubeVirt guest {name} did not start: {e}"))?;
            Ok(vm)
        })
    }
    fn release<'a>(&'a self, vm: &'a VmId) -> BoxFut<'a, ()> {
        Box::pin(async move {
            use virtrigaud_kubevirt::types::VirtualMachine;
            let (ns, name) = vm.as_str().split_once('/').unwrap_or(("", ""));
            let api: kube::Api<VirtualMachine> = kube::Api::namespaced(self.client.clone(), ns);
            let _ = api.delete(name, &Default::default()).await;
        })
    }
}
