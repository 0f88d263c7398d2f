//! The machine and versions the report was measured on.

use std::process::Command;

fn cmd(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .map(|o| {
            let s = String::from_utf8_lossy(&o.stdout).into_owned()
                + &String::from_utf8_lossy(&o.stderr);
            s.lines().next().unwrap_or("").trim().to_string()
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "n/a".into())
}

/// (what, value) rows: CPU, memory, kernel, OS, toolchain, libvirt and QEMU versions.
pub(crate) fn machine() -> Vec<(String, String)> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("n/a")
        .trim()
        .to_string();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("MemTotal"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map(|kb| format!("{:.1} GiB", kb as f64 / 1024.0 / 1024.0))
        .unwrap_or_else(|| "n/a".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    let os = std::fs::read_to_string("/etc/os-release")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("PRETTY_NAME="))
        .map(|l| {
            l.trim_start_matches("PRETTY_NAME=")
                .trim_matches('"')
                .to_string()
        })
        .unwrap_or_default();
    let nproc = std::thread::available_parallelism()
        .map(|n| n.get().to_string())
        .unwrap_or_default();
    let kvm = if std::path::Path::new("/dev/kvm").exists() {
        "present"
    } else {
        "absent"
    };
    let dpkg = |p: &str| cmd("dpkg-query", &["-W", "-f=${Version}", p]);
    vec![
        ("CPU".into(), cpu),
        ("nproc".into(), nproc),
        ("memory".into(), mem),
        ("kernel".into(), kernel),
        ("OS".into(), os),
        ("/dev/kvm".into(), kvm.into()),
        ("rustc".into(), cmd("rustc", &["--version"])),
        ("virtrigaud crates".into(), env!("CARGO_PKG_VERSION").into()),
        ("libvirt (libvirt-daemon)".into(), dpkg("libvirt-daemon")),
        (
            "libvirt-guests.sh from".into(),
            cmd("dpkg", &["-S", "/usr/lib/libvirt/libvirt-guests.sh"]),
        ),
        ("QEMU".into(), cmd("qemu-system-x86_64", &["--version"])),
    ]
}
