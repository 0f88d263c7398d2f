//! What a VM config says about CPUs and hot-plug: the CPU count (sockets × cores, or `vcpus`
//! when set), the `hotplug` features, and how a new CPU count is written.
//!
//! PVE hot-plugs only `vcpus` (with `cpu` in `hotplug`, up to sockets × cores, the VM's
//! `maxcpus`) and memory growth (with `memory` in `hotplug` and `numa: 1`); a change of
//! `cores` or `sockets` waits for the next power cycle.

use crate::types::VmConfig;

/// PVE's default `hotplug` (also what `hotplug: 1` stands for).
const HOTPLUG_DEFAULT: &str = "network,disk,usb";

/// The VM's `hotplug` features and NUMA setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hotplug {
    features: Vec<String>,
    numa: bool,
}

impl Hotplug {
    /// From the config: `hotplug` absent is PVE's default, `0` none, `1` the default.
    pub(crate) fn of(cfg: &VmConfig) -> Self {
        let raw = cfg.get("hotplug").unwrap_or(HOTPLUG_DEFAULT).trim();
        let list = match raw {
            "0" => "",
            "1" => HOTPLUG_DEFAULT,
            other => other,
        };
        let features = list
            .split([',', ';', ' '])
            .map(|f| f.trim().to_ascii_lowercase())
            .filter(|f| !f.is_empty())
            .collect();
        Hotplug {
            features,
            numa: cfg.get_u64("numa") == Some(1),
        }
    }

    fn has(&self, feature: &str) -> bool {
        self.features.iter().any(|f| f == feature)
    }

    /// vCPUs can be added live (through `vcpus`).
    pub(crate) fn cpu(&self) -> bool {
        self.has("cpu")
    }

    /// Memory can grow live: `memory` in `hotplug` and NUMA on (PVE refuses memory hot-plug
    /// without NUMA).
    pub(crate) fn memory(&self) -> bool {
        self.has("memory") && self.numa
    }
}

/// The CPU topology of a config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Topology {
    /// `sockets` (default 1).
    pub(crate) sockets: u64,
    /// `cores` per socket (default 1).
    pub(crate) cores: u64,
    /// `vcpus` (the vCPUs plugged at start), when set.
    pub(crate) vcpus: Option<u64>,
}

impl Topology {
    /// From the config (`sockets`, `cores`, `vcpus`; at least 1 each).
    pub(crate) fn of(cfg: &VmConfig) -> Self {
        Topology {
            sockets: cfg.get_u64("sockets").unwrap_or(1).max(1),
            cores: cfg.get_u64("cores").unwrap_or(1).max(1),
            vcpus: cfg.get_u64("vcpus").filter(|v| *v > 0),
        }
    }

    /// sockets × cores: the most vCPUs the VM can have without a power cycle (PVE's
    /// `maxcpus`).
    pub(crate) fn max(&self) -> u64 {
        self.sockets.saturating_mul(self.cores)
    }

    /// The vCPUs the VM has: `vcpus` when set (PVE allows at most sockets × cores), else
    /// sockets × cores.
    pub(crate) fn count(&self) -> u64 {
        self.vcpus.map_or(self.max(), |v| v.min(self.max()))
    }
}

/// The config writes that give the VM `cpu` vCPUs: `(key, value)` pairs for
/// `PUT …/config`, where the key `delete` removes the listed keys.
///
/// * With CPU hot-plug and `cpu` within sockets × cores: `vcpus` only (live on a running
///   VM).
/// * Otherwise a consistent topology: `sockets` kept and `cores = cpu / sockets` when that
///   divides, else `sockets = 1` and `cores = cpu`; a `vcpus` in the config is removed, so
///   the VM then has sockets × cores = `cpu`.
pub(crate) fn cpu_changes(cfg: &VmConfig, hot: &Hotplug, cpu: u64) -> Vec<(&'static str, String)> {
    let t = Topology::of(cfg);
    if cpu == t.count() || cpu == 0 {
        return Vec::new();
    }
    if hot.cpu() && cpu <= t.max() {
        return vec![("vcpus", cpu.to_string())];
    }
    let (sockets, cores) = if cpu.is_multiple_of(t.sockets) {
        (t.sockets, cpu / t.sockets)
    } else {
        (1, cpu)
    };
    let mut out = Vec::new();
    if sockets != t.sockets {
        out.push(("sockets", sockets.to_string()));
    }
    if cores != t.cores {
        out.push(("cores", cores.to_string()));
    }
    if t.vcpus.is_some() {
        out.push(("delete", "vcpus".to_owned()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(v: serde_json::Value) -> VmConfig {
        serde_json::from_value(v).unwrap_or_default()
    }

    #[test]
    fn hotplug_features_follow_pve_defaults() {
        let none = Hotplug::of(&cfg(serde_json::json!({})));
        assert!(
            !none.cpu() && !none.memory(),
            "the default is network,disk,usb"
        );
        assert!(!Hotplug::of(&cfg(serde_json::json!({"hotplug": "1"}))).cpu());
        assert!(!Hotplug::of(&cfg(serde_json::json!({"hotplug": "0"}))).cpu());
        let both = cfg(serde_json::json!({"hotplug": "network,disk,cpu,memory", "numa": 1}));
        assert!(Hotplug::of(&both).cpu() && Hotplug::of(&both).memory());
        let no_numa = cfg(serde_json::json!({"hotplug": "cpu,memory"}));
        assert!(Hotplug::of(&no_numa).cpu());
        assert!(
            !Hotplug::of(&no_numa).memory(),
            "memory hot-plug needs NUMA"
        );
    }

    #[test]
    fn the_count_is_vcpus_or_sockets_times_cores() {
        let t = Topology::of(&cfg(serde_json::json!({"sockets": 2, "cores": 4})));
        assert_eq!((t.max(), t.count()), (8, 8));
        let t = Topology::of(&cfg(
            serde_json::json!({"sockets": 2, "cores": 4, "vcpus": 3}),
        ));
        assert_eq!((t.max(), t.count()), (8, 3));
        assert_eq!(Topology::of(&cfg(serde_json::json!({}))).count(), 1);
    }

    #[test]
    fn cpu_writes_keep_the_topology_consistent() {
        let plain = cfg(serde_json::json!({"sockets": 2, "cores": 2}));
        let none = Hotplug::of(&plain);
        // Divisible: sockets kept.
        assert_eq!(cpu_changes(&plain, &none, 8), vec![("cores", "4".into())]);
        // Not divisible: one socket.
        assert_eq!(
            cpu_changes(&plain, &none, 3),
            vec![("sockets", "1".into()), ("cores", "3".into())]
        );
        assert!(cpu_changes(&plain, &none, 4).is_empty());
        // Hot-plug within sockets × cores: vcpus only.
        let hot =
            cfg(serde_json::json!({"sockets": 1, "cores": 4, "vcpus": 2, "hotplug": "cpu,disk"}));
        let h = Hotplug::of(&hot);
        assert_eq!(cpu_changes(&hot, &h, 4), vec![("vcpus", "4".into())]);
        assert_eq!(cpu_changes(&hot, &h, 3), vec![("vcpus", "3".into())]);
        // Beyond it: a new topology, and vcpus goes.
        assert_eq!(
            cpu_changes(&hot, &h, 6),
            vec![("cores", "6".into()), ("delete", "vcpus".into())]
        );
    }
}
