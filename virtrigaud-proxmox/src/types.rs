//! Typed answers, with lenient number and boolean parsing (PVE sends `"2048"` as often as `2048`).

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};

/// Lenient deserializers for PVE's loosely typed JSON.
pub(crate) mod lenient {
    use super::*;

    fn to_u64(v: &serde_json::Value) -> Option<u64> {
        match v {
            serde_json::Value::Number(n) => n
                .as_u64()
                .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64)),
            serde_json::Value::String(s) => {
                let s = s.trim();
                s.parse::<u64>().ok().or_else(|| {
                    s.parse::<f64>()
                        .ok()
                        .filter(|f| *f >= 0.0)
                        .map(|f| f as u64)
                })
            }
            serde_json::Value::Bool(b) => Some(u64::from(*b)),
            _ => None,
        }
    }

    fn to_bool(v: &serde_json::Value) -> Option<bool> {
        match v {
            serde_json::Value::Bool(b) => Some(*b),
            serde_json::Value::Number(n) => n.as_f64().map(|f| f != 0.0),
            serde_json::Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => Some(true),
                "0" | "false" | "no" | "off" | "" => Some(false),
                _ => None,
            },
            _ => None,
        }
    }

    /// An optional unsigned number given as a number or a string.
    pub(crate) fn opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        let v = Option::<serde_json::Value>::deserialize(d)?;
        Ok(v.as_ref().and_then(to_u64))
    }

    /// An optional signed number given as a number or a string.
    pub(crate) fn opt_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
        let v = Option::<serde_json::Value>::deserialize(d)?;
        Ok(match v {
            Some(serde_json::Value::Number(n)) => n.as_i64(),
            Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
            _ => None,
        })
    }

    /// A boolean given as `true`, `1`, `"1"`, `"true"`; missing or null is false.
    pub(crate) fn bool<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
        let v = Option::<serde_json::Value>::deserialize(d)?;
        Ok(v.as_ref().and_then(to_bool).unwrap_or(false))
    }

    /// Any scalar as a string (numbers are printed); missing or null is `""`.
    pub(crate) fn string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        Ok(opt_string(d)?.unwrap_or_default())
    }

    /// Any scalar as a string (numbers are printed).
    pub(crate) fn opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        let v = Option::<serde_json::Value>::deserialize(d)?;
        Ok(match v {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(s)) => Some(s),
            Some(other) => Some(other.to_string()),
        })
    }
}

/// `GET …/status/current`.
#[derive(Debug, Clone, Deserialize, Default)]
#[non_exhaustive]
pub struct VmStatus {
    /// `running` or `stopped` (the only two values PVE's schema allows). Empty when the
    /// answer has none; the provider reads anything else as "PVE cannot tell", never as off.
    #[serde(default, deserialize_with = "lenient::string")]
    pub status: String,
    /// The pid of the VM's QEMU process while it runs (a new process, so a new pid, for every
    /// start).
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub pid: Option<u64>,
    /// Seconds since the QEMU process started, while it runs.
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub uptime: Option<u64>,
    /// QEMU's own state: `running`, `paused`, `prelaunch`, `shutdown`, `internal-error`, …
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub qmpstatus: Option<String>,
    /// Config lock (`backup`, `migrate`, `snapshot`, `clone`, `suspended`, …).
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub lock: Option<String>,
    /// VM name.
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub name: Option<String>,
    /// Whether the guest agent is enabled in the config.
    #[serde(default, deserialize_with = "lenient::bool")]
    pub agent: bool,
    /// vCPUs.
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub cpus: Option<u64>,
    /// Memory, bytes.
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub maxmem: Option<u64>,
    /// Whether it is a template.
    #[serde(default, deserialize_with = "lenient::bool")]
    pub template: bool,
}

/// `GET …/agent/exec-status`: a program started in the guest through `agent/exec`.
///
/// PVE answers with the agent's `guest-exec-status`, `out-data` and `err-data` already
/// decoded from the agent's base64 into text.
#[derive(Debug, Clone, Deserialize, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AgentExecStatus {
    /// Whether the program has ended (the other fields are set only then).
    #[serde(default, deserialize_with = "lenient::bool")]
    pub exited: bool,
    /// Its exit code, when it exited normally.
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub exitcode: Option<i64>,
    /// The signal that ended it, when one did.
    #[serde(default, deserialize_with = "lenient::opt_i64")]
    pub signal: Option<i64>,
    /// Its standard output (as text).
    #[serde(rename = "out-data", default, deserialize_with = "lenient::opt_string")]
    pub out_data: Option<String>,
    /// Its standard error (as text).
    #[serde(rename = "err-data", default, deserialize_with = "lenient::opt_string")]
    pub err_data: Option<String>,
    /// Whether the agent cut the standard output (it keeps at most a fixed amount).
    #[serde(rename = "out-truncated", default, deserialize_with = "lenient::bool")]
    pub out_truncated: bool,
    /// Whether the agent cut the standard error.
    #[serde(rename = "err-truncated", default, deserialize_with = "lenient::bool")]
    pub err_truncated: bool,
}

/// `GET /nodes/{node}/tasks/{upid}/status`.
#[derive(Debug, Clone, Deserialize)]
#[non_exhaustive]
pub struct TaskStatus {
    /// `running` or `stopped`.
    pub status: String,
    /// `OK`, `WARNINGS: n` or the error message, once stopped.
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub exitstatus: Option<String>,
    /// Task type.
    #[serde(default, rename = "type")]
    pub task_type: String,
}

/// One entry of `GET /nodes/{node}/tasks`.
#[derive(Debug, Clone, Deserialize)]
#[non_exhaustive]
pub struct TaskListEntry {
    /// The UPID.
    pub upid: String,
    /// Task type.
    #[serde(default, rename = "type")]
    pub task_type: String,
    /// The exit status once finished; absent (or `running`) while the task runs.
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub status: Option<String>,
    /// Unix time the task started (the node's clock).
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub starttime: Option<u64>,
    /// Who started it (`user@realm` or `user@realm!token`).
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub user: Option<String>,
}

impl TaskListEntry {
    /// Whether the task is still running.
    pub fn is_running(&self) -> bool {
        matches!(self.status.as_deref(), None | Some("running"))
    }
}

/// One line of `GET /nodes/{node}/tasks/{upid}/log`.
#[derive(Debug, Clone, Deserialize)]
#[non_exhaustive]
pub struct TaskLogLine {
    /// Line number (from 1).
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub n: Option<u64>,
    /// Text.
    #[serde(default)]
    pub t: String,
}

/// One entry of `GET …/snapshot`.
#[derive(Debug, Clone, Deserialize)]
#[non_exhaustive]
pub struct SnapshotEntry {
    /// Snapshot name (`current` is the running state, not a snapshot).
    pub name: String,
    /// Description.
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub description: Option<String>,
    /// Parent snapshot.
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub parent: Option<String>,
    /// Unix time it was taken.
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub snaptime: Option<u64>,
    /// Whether RAM is included.
    #[serde(default, deserialize_with = "lenient::bool")]
    pub vmstate: bool,
}

/// One entry of `GET …/pending`.
#[derive(Debug, Clone, Deserialize)]
#[non_exhaustive]
pub struct PendingEntry {
    /// Config key.
    pub key: String,
    /// Current value.
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub value: Option<String>,
    /// Value after the next power cycle.
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub pending: Option<String>,
    /// The key is deleted at the next power cycle.
    #[serde(default, deserialize_with = "lenient::bool")]
    pub delete: bool,
}

impl PendingEntry {
    /// Whether this key changes at the next power cycle.
    pub fn is_pending(&self) -> bool {
        self.delete || self.pending.is_some()
    }
}

/// One VM of `GET /cluster/resources?type=vm`.
#[derive(Debug, Clone, Deserialize)]
#[non_exhaustive]
pub struct ClusterVm {
    /// VM id.
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub vmid: Option<u64>,
    /// Node.
    #[serde(default)]
    pub node: String,
    /// `qemu` or `lxc`.
    #[serde(default, rename = "type")]
    pub kind: String,
    /// Name.
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub name: Option<String>,
    /// `running`, `stopped`, `unknown` (node offline).
    #[serde(default)]
    pub status: String,
    /// Tags (`;`-separated).
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub tags: Option<String>,
    /// vCPUs.
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub maxcpu: Option<u64>,
    /// Memory, bytes.
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub maxmem: Option<u64>,
    /// Template.
    #[serde(default, deserialize_with = "lenient::bool")]
    pub template: bool,
}

/// One node of `GET /nodes`.
#[derive(Debug, Clone, Deserialize)]
#[non_exhaustive]
pub struct NodeEntry {
    /// Node name.
    pub node: String,
    /// `online` / `offline` / `unknown`.
    #[serde(default)]
    pub status: String,
    /// CPUs.
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub maxcpu: Option<u64>,
    /// Memory, bytes.
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub maxmem: Option<u64>,
    /// Used memory, bytes.
    #[serde(default, deserialize_with = "lenient::opt_u64")]
    pub mem: Option<u64>,
}

/// A VM config (`GET …/config`): every key as a string, plus the `digest`.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct VmConfig {
    /// Config keys and values (numbers printed as strings).
    pub values: BTreeMap<String, String>,
    /// The config digest for optimistic concurrency.
    pub digest: Option<String>,
}

impl<'de> Deserialize<'de> for VmConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = BTreeMap::<String, serde_json::Value>::deserialize(d)?;
        let mut values = BTreeMap::new();
        let mut digest = None;
        for (k, v) in map {
            let s = match v {
                serde_json::Value::Null => continue,
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            if k == "digest" {
                digest = Some(s);
            } else {
                values.insert(k, s);
            }
        }
        Ok(VmConfig { values, digest })
    }
}

impl VmConfig {
    /// A key's value.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    /// A numeric key (`cores`, `memory`, …), read leniently (`"2048"`, `2048`, `memory=2048`).
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        let v = self.get(key)?;
        let v = v.rsplit('=').next().unwrap_or(v);
        v.trim().parse().ok()
    }

    /// Whether the guest agent is enabled (`agent: 1` or `agent: enabled=1,…`).
    pub fn agent_enabled(&self) -> bool {
        let Some(v) = self.get("agent") else {
            return false;
        };
        for part in v.split(',') {
            let (k, val) = part.split_once('=').unwrap_or(("enabled", part));
            if k.trim() == "enabled" {
                return matches!(val.trim(), "1" | "true" | "yes" | "on");
            }
        }
        false
    }

    /// Whether the agent's `freeze-fs` (alias `freeze-fs-on-backup`, `guest-fsfreeze`) is on,
    /// PVE's default: PVE then freezes the guest's filesystems for snapshots and backups.
    pub fn agent_freeze_fs(&self) -> bool {
        let Some(v) = self.get("agent") else {
            return true;
        };
        for part in v.split(',') {
            if let Some((k, val)) = part.split_once('=')
                && matches!(
                    k.trim(),
                    "freeze-fs" | "freeze-fs-on-backup" | "guest-fsfreeze"
                )
            {
                return matches!(val.trim(), "1" | "true" | "yes" | "on");
            }
        }
        true
    }

    /// Disks: (key, volume, size in GiB rounded up).
    pub fn disks(&self) -> Vec<(String, String, u64)> {
        let mut out = Vec::new();
        for (k, v) in &self.values {
            if !is_disk_key(k) || v.contains("media=cdrom") {
                continue;
            }
            let volume = v.split(',').next().unwrap_or("").to_owned();
            let size = v
                .split(',')
                .find_map(|p| p.strip_prefix("size="))
                .and_then(parse_size_gib)
                .unwrap_or(0);
            out.push((k.clone(), volume, size));
        }
        out
    }
}

/// A VM id from a JSON number or string (`/cluster/nextid` answers a string).
pub(crate) fn lenient_u32(v: &serde_json::Value) -> Option<u32> {
    match v {
        serde_json::Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Whether `key` names a disk slot (`scsi0`, `virtio3`, `sata1`, `ide0`, `efidisk0`, …).
pub(crate) fn is_disk_key(key: &str) -> bool {
    ["scsi", "virtio", "sata", "ide", "efidisk", "tpmstate"]
        .iter()
        .any(|p| {
            key.strip_prefix(p)
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
}

/// Parses a PVE size (`32G`, `512M`, `1T`, `1024K`, bytes without a unit) into GiB, rounded up.
pub(crate) fn parse_size_gib(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, unit) = match s.char_indices().last()? {
        (i, c) if c.is_ascii_alphabetic() => (&s[..i], c.to_ascii_uppercase()),
        _ => (s, 'B'),
    };
    let n: f64 = num.parse().ok()?;
    let bytes = match unit {
        'K' => n * 1024.0,
        'M' => n * 1024.0 * 1024.0,
        'G' => n * 1024.0 * 1024.0 * 1024.0,
        'T' => n * 1024.0 * 1024.0 * 1024.0 * 1024.0,
        'B' => n,
        _ => return None,
    };
    Some((bytes / (1024.0 * 1024.0 * 1024.0)).ceil() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenient_numbers_and_bools() {
        let s: VmStatus = serde_json::from_value(serde_json::json!({
            "status": "running", "qmpstatus": "paused", "agent": "1", "cpus": "2", "maxmem": 2147483648u64,
        }))
        .unwrap_or_default();
        assert!(s.agent);
        assert_eq!(s.cpus, Some(2));
        assert_eq!(s.maxmem, Some(2147483648));
        let c: Result<VmConfig, _> = serde_json::from_value(
            serde_json::json!({"memory": "2048", "cores": 2, "digest": "abc",
                "agent": "enabled=1,fstrim_cloned_disks=1", "scsi0": "local-lvm:vm-1-disk-0,size=32G"}),
        );
        let c = c.unwrap_or_default();
        assert_eq!(c.get_u64("memory"), Some(2048));
        assert_eq!(c.get_u64("cores"), Some(2));
        assert_eq!(c.digest.as_deref(), Some("abc"));
        assert!(c.agent_enabled());
        assert!(c.agent_freeze_fs());
        let off: VmConfig =
            serde_json::from_value(serde_json::json!({"agent": "1,freeze-fs-on-backup=0"}))
                .unwrap_or_default();
        assert!(off.agent_enabled() && !off.agent_freeze_fs());
        assert_eq!(
            c.disks(),
            vec![("scsi0".into(), "local-lvm:vm-1-disk-0".into(), 32)]
        );
        assert_eq!(parse_size_gib("512M"), Some(1));
        assert_eq!(parse_size_gib("1T"), Some(1024));
    }
}
