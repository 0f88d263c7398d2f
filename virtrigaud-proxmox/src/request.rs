//! Requests as plain values: every call the client makes is built here first.
//!
//! An [`ApiRequest`] holds the HTTP method, the schema path template
//! (`/nodes/{node}/qemu/{vmid}/status/shutdown`), the values of the path parameters and the
//! form/query parameters as PVE's own clients send them (booleans as `0`/`1`). Building a
//! request never touches the network, so tests can inspect (and validate against the PVE API
//! schema) exactly what the client would send.

use std::fmt;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// Characters escaped in a path segment (everything but unreserved characters).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// HTTP method of a PVE API call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// `GET` (parameters in the query string).
    Get,
    /// `POST` (form-encoded body).
    Post,
    /// `PUT` (form-encoded body).
    Put,
    /// `DELETE` (parameters in the query string).
    Delete,
}

impl Method {
    /// The method name as in the PVE schema (`GET`, `POST`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
        }
    }

    /// Whether PVE wants the CSRF token for this method (ticket auth only).
    pub fn needs_csrf(self) -> bool {
        !matches!(self, Method::Get)
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One PVE API call, built but not sent.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiRequest {
    /// HTTP method.
    pub method: Method,
    /// Schema path template, e.g. `/nodes/{node}/qemu/{vmid}/status/current`.
    pub template: &'static str,
    /// Values of the template's `{placeholders}`, in order of appearance.
    pub path_params: Vec<(&'static str, String)>,
    /// Form (POST/PUT) or query (GET/DELETE) parameters, as strings PVE parses.
    pub params: Vec<(String, String)>,
    /// Whether parameter values may be logged (false for logins).
    pub sensitive: bool,
}

impl fmt::Debug for ApiRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("ApiRequest");
        d.field("method", &self.method).field("path", &self.path());
        if self.sensitive {
            let names: Vec<&str> = self.params.iter().map(|(k, _)| k.as_str()).collect();
            d.field("params", &format_args!("{names:?} (values redacted)"));
        } else {
            d.field("params", &self.params);
        }
        d.finish()
    }
}

impl ApiRequest {
    /// A request for `template` with no parameters yet.
    pub fn new(method: Method, template: &'static str) -> Self {
        ApiRequest {
            method,
            template,
            path_params: Vec::new(),
            params: Vec::new(),
            sensitive: false,
        }
    }

    /// Binds a path placeholder.
    pub fn path_param(mut self, name: &'static str, value: impl ToString) -> Self {
        self.path_params.push((name, value.to_string()));
        self
    }

    /// Adds a parameter.
    pub fn param(mut self, name: impl Into<String>, value: impl ToString) -> Self {
        self.params.push((name.into(), value.to_string()));
        self
    }

    /// Adds a parameter when `value` is `Some`.
    pub fn opt_param(self, name: &str, value: Option<impl ToString>) -> Self {
        match value {
            Some(v) => self.param(name, v),
            None => self,
        }
    }

    /// Adds a PVE boolean (`1`/`0`).
    pub fn bool_param(self, name: &str, value: bool) -> Self {
        self.param(name, if value { "1" } else { "0" })
    }

    /// The value of parameter `name`, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The concrete path (relative to `/api2/json`), placeholders filled and percent-encoded.
    pub fn path(&self) -> String {
        let mut out = String::with_capacity(self.template.len() + 16);
        let mut rest = self.template;
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let Some(close) = rest[open..].find('}') else {
                break;
            };
            let name = &rest[open + 1..open + close];
            let value = self
                .path_params
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.as_str())
                .unwrap_or("");
            out.extend(utf8_percent_encode(value, SEGMENT));
            rest = &rest[open + close + 1..];
        }
        out.push_str(rest);
        out
    }

    fn sensitive(mut self) -> Self {
        self.sensitive = true;
        self
    }
}

pub mod api;

/// One example of every request the builders in [`api`] make, with every optional
/// parameter both present and absent (used to validate the builders against the PVE API
/// schema).
pub fn catalogue() -> Vec<ApiRequest> {
    let (n, v) = ("pve1", 101);
    let upid = "UPID:pve1:000003E8:00001B58:6740A1B2:qmshutdown:101:root@pam!ci:";
    let cfg = vec![
        ("name".to_owned(), "web-1".to_owned()),
        ("cores".to_owned(), "2".to_owned()),
        ("memory".to_owned(), "2048".to_owned()),
        ("scsi0".to_owned(), "local-lvm:8".to_owned()),
        ("net0".to_owned(), "virtio,bridge=vmbr0".to_owned()),
        ("tags".to_owned(), "app-web;tier-1".to_owned()),
        (
            "description".to_owned(),
            "<!-- virtrigaud\ndisk.scsi0: root\n-->".to_owned(),
        ),
    ];
    vec![
        api::ticket("root@pam", "***"),
        api::version(),
        api::nodes(),
        api::cluster_vms(),
        api::cluster_storage(),
        api::next_id(),
        api::task_status(n, upid),
        api::task_log(n, upid, 0, 500),
        api::task_stop(n, upid),
        api::active_tasks(n, v, "qmshutdown"),
        api::vm_tasks_since(n, v, "qmstop", 1_732_289_970),
        api::status_current(n, v),
        api::start(n, v),
        api::stop(n, v, true),
        api::stop(n, v, false),
        api::shutdown(n, v, Some(30), true),
        api::shutdown(n, v, None, false),
        api::reboot(n, v, Some(30)),
        api::reboot(n, v, None),
        api::reset(n, v),
        api::suspend(n, v),
        api::resume(n, v),
        api::agent_ping(n, v),
        api::monitor(n, v, "system_powerdown"),
        // Pre-stop hooks through the agent (GuestAgentPreStop).
        api::agent_exec(
            n,
            v,
            &["/bin/sh".into(), "-c".into(), "sync; exit 0".into()],
        ),
        api::agent_exec(n, v, &["/usr/bin/true".into()]),
        api::agent_exec_status(n, v, 1234),
        api::config(n, v),
        api::pending(n, v),
        api::update_config(
            n,
            v,
            Some("0123456789abcdef0123456789abcdef01234567"),
            &[("cores", "4".into()), ("memory", "4096".into())],
        ),
        api::update_config(n, v, None, &[("description", "x".into())]),
        // CPUs as PVE hot-plugs them, or a consistent topology.
        api::update_config(n, v, None, &[("vcpus", "4".into())]),
        api::update_config(
            n,
            v,
            Some("0123456789abcdef0123456789abcdef01234567"),
            &[
                ("sockets", "1".into()),
                ("cores", "3".into()),
                ("delete", "vcpus".into()),
            ],
        ),
        // Clone customization through cloud-init.
        api::update_config(
            n,
            v,
            None,
            &[
                ("name", "web-1.example.com".into()),
                ("ipconfig0", "ip=192.0.2.10/24,gw=192.0.2.1".into()),
                ("ipconfig1", "ip6=2001:db8::10/64,gw6=2001:db8::1".into()),
                ("ipconfig2", "ip=dhcp".into()),
                ("nameserver", "192.0.2.53 2001:db8::53".into()),
                ("ide2", "local-lvm:cloudinit".into()),
            ],
        ),
        api::resize(
            n,
            v,
            "scsi0",
            "40G",
            Some("0123456789abcdef0123456789abcdef01234567"),
        ),
        api::resize(n, v, "virtio1", "+8G", None),
        api::snapshots(n, v),
        api::snapshot(n, v, "before-upgrade", Some("pre"), true),
        api::snapshot(n, v, "s1", None, false),
        api::rollback(n, v, "before-upgrade", true),
        api::rollback(n, v, "s1", false),
        api::delete_snapshot(n, v, "s1"),
        api::clone(
            n,
            v,
            202,
            "linked-1",
            false,
            Some("s1"),
            api::CloneTo {
                node: Some("pve2"),
                storage: None,
            },
        ),
        api::clone(
            n,
            v,
            202,
            "full-1",
            true,
            None,
            api::CloneTo {
                node: None,
                storage: Some("local-lvm"),
            },
        ),
        api::create(n, 203, &cfg, true),
        api::create(n, 203, &cfg[..3], false),
        api::destroy(n, v, true),
        // Image import (PveImageSink): list, upload, remove.
        api::storage_content(n, "local", "iso"),
        api::storage_content(n, "local", "import"),
        api::upload(n, "local", "iso", "base-image.iso"),
        api::upload(n, "local", "vztmpl", "debian-12.tar.zst"),
        api::upload(n, "local", "import", "base-image.qcow2"),
        api::delete_volume(n, "local", "local:iso/base-image.iso"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_is_filled_and_encoded() {
        let r = api::task_status("pve1", "UPID:pve1:0000:root@pam!ci:");
        assert_eq!(
            r.path(),
            "/nodes/pve1/tasks/UPID%3Apve1%3A0000%3Aroot%40pam%21ci%3A/status"
        );
        let r = api::shutdown("pve1", 101, Some(30), true);
        assert_eq!(r.path(), "/nodes/pve1/qemu/101/status/shutdown");
        assert_eq!(r.get("forceStop"), Some("1"));
        assert_eq!(r.get("timeout"), Some("30"));
    }

    #[test]
    fn login_values_are_not_in_debug() {
        let r = api::ticket("root@pam", "hunter2");
        let dbg = format!("{r:?}");
        assert!(!dbg.contains("hunter2"), "{dbg}");
        assert!(dbg.contains("password"));
    }
}
