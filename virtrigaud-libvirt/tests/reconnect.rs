//! A restarted libvirtd: watchers' streams end at once, calls while the daemon is down fail
//! with a retryable error, and the first call after it is back reopens the connection.
//!
//! Runs a private, unprivileged libvirtd (session mode as `nobody`, its own socket under a
//! temporary directory) serving libvirt's test driver through `test+unix://`, so restarting it
//! disturbs nothing else. Needs root and the libvirt daemon installed by
//! `scripts/libvirt/setup.sh` (gated on `VIRTRIGAUD_LIBVIRT_URI` like the other real tests).
#![allow(clippy::unwrap_used, clippy::expect_used)]
// Waiting for a real daemon's socket and exit: real time, short bounded polls.
#![allow(clippy::disallowed_methods)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use futures::StreamExt;
use virtrigaud_core::shutdown::{ShutdownManager, ShutdownOutcome, ShutdownPolicy};
use virtrigaud_core::testing::backend_env;
use virtrigaud_core::{ErrorKind, PowerState, Provider, VmId};
use virtrigaud_libvirt::{LibvirtConfig, LibvirtProvider};

/// A libvirtd run as `nobody` in session mode with every directory under `dir`.
struct PrivateDaemon {
    dir: PathBuf,
    child: Option<Child>,
}

impl PrivateDaemon {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("vr-reconnect-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for sub in ["run", "config", "cache"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let ok = Command::new("chown")
            .args(["-R", "nobody:nogroup"])
            .arg(&dir)
            .status()
            .unwrap()
            .success();
        assert!(ok, "chown nobody {}", dir.display());
        PrivateDaemon { dir, child: None }
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("run/libvirt/libvirt-sock")
    }

    fn uri(&self) -> String {
        format!("test+unix:///default?socket={}", self.socket().display())
    }

    fn start(&mut self) {
        let _ = std::fs::remove_file(self.socket());
        let log = std::fs::File::create(self.dir.join("libvirtd.log")).unwrap();
        // setpriv execs libvirtd itself (no intermediate process), so `child` is the daemon.
        let child = Command::new("setpriv")
            .args([
                "--reuid=nobody",
                "--regid=nogroup",
                "--clear-groups",
                "libvirtd",
            ])
            .env("HOME", &self.dir)
            .env("XDG_RUNTIME_DIR", self.dir.join("run"))
            .env("XDG_CONFIG_HOME", self.dir.join("config"))
            .env("XDG_CACHE_HOME", self.dir.join("cache"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn libvirtd (setpriv from util-linux, libvirtd from libvirt-daemon)");
        self.child = Some(child);
        wait_until(Duration::from_secs(30), || self.socket().exists())
            .unwrap_or_else(|| panic!("private libvirtd did not listen: {}", self.log()));
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let exited = wait_until(Duration::from_secs(20), || {
                child.try_wait().ok().flatten().is_some()
            });
            if exited.is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("libvirtd.log")).unwrap_or_default()
    }
}

impl Drop for PrivateDaemon {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> Option<()> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return Some(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

fn have(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|p| Path::new(&p).join(program).is_file())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_libvirtd_is_noticed_and_the_connection_reopened() {
    // Same gate as every real-libvirtd test: the backend set up by scripts/libvirt/setup.sh.
    if backend_env("libvirt", "VIRTRIGAUD_LIBVIRT_URI").is_none() {
        return;
    }
    for program in ["libvirtd", "setpriv"] {
        assert!(
            have(program),
            "{program} is required (scripts/libvirt/setup.sh installs it)"
        );
    }
    let mut daemon = PrivateDaemon::new();
    daemon.start();
    let provider = LibvirtProvider::connect(LibvirtConfig::new(daemon.uri()))
        .await
        .expect("connect through the private libvirtd");
    assert!(provider.events_registered(), "events over the daemon");
    let vm = VmId::new("test");
    assert_eq!(
        provider.power_state(&vm).await.unwrap(),
        PowerState::Running
    );
    let mut watch = provider
        .watch_power_state(&vm)
        .await
        .unwrap()
        .expect("a stream");

    // The daemon goes away: the stream ends (the engine then falls back to reading).
    daemon.stop();
    let ended = tokio::time::timeout(Duration::from_secs(15), watch.next())
        .await
        .expect("the watch must end when libvirtd goes away, not hang");
    assert!(
        ended.is_none(),
        "expected the end of the stream, got {ended:?}"
    );

    // While it is down: a clear, retryable error, not a hang or a panic.
    let err = provider.power_state(&vm).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.is_retryable(), "{err}");
    assert_eq!(provider.reconnects(), 0);

    // Back: the next call reopens the connection (the test driver starts afresh).
    daemon.start();
    assert_eq!(
        provider.power_state(&vm).await.unwrap(),
        PowerState::Running
    );
    assert_eq!(provider.reconnects(), 1);
    assert!(provider.events_registered(), "events registered again");

    // And the engine works on the new connection, event-driven again.
    let report = ShutdownManager::new(std::sync::Arc::new(provider.clone()))
        .shutdown(&vm, ShutdownPolicy::with_grace(Duration::from_secs(20)))
        .await
        .unwrap();
    assert!(
        matches!(report.outcome, ShutdownOutcome::Graceful { .. }),
        "{:?}",
        report.outcome
    );
    assert!(provider.power_state(&vm).await.unwrap().is_off());
    assert_eq!(provider.reconnects(), 1, "no reconnect without a reason");
}
