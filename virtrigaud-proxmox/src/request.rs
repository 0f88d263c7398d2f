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

/// Builders for every call the provider makes.
pub mod api {
    use super::{ApiRequest, Method};

    fn vm(method: Method, template: &'static str, node: &str, vmid: u32) -> ApiRequest {
        ApiRequest::new(method, template)
            .path_param("node", node)
            .path_param("vmid", vmid)
    }

    /// `POST /access/ticket`: password login (values never logged).
    pub fn ticket(username: &str, password: &str) -> ApiRequest {
        ApiRequest::new(Method::Post, "/access/ticket")
            .param("username", username)
            .param("password", password)
            .sensitive()
    }

    /// `GET /version`.
    pub fn version() -> ApiRequest {
        ApiRequest::new(Method::Get, "/version")
    }

    /// `GET /nodes`.
    pub fn nodes() -> ApiRequest {
        ApiRequest::new(Method::Get, "/nodes")
    }

    /// `GET /cluster/resources?type=vm`.
    pub fn cluster_vms() -> ApiRequest {
        ApiRequest::new(Method::Get, "/cluster/resources").param("type", "vm")
    }

    /// `GET /cluster/resources?type=storage`.
    pub fn cluster_storage() -> ApiRequest {
        ApiRequest::new(Method::Get, "/cluster/resources").param("type", "storage")
    }

    /// `GET /cluster/nextid`.
    pub fn next_id() -> ApiRequest {
        ApiRequest::new(Method::Get, "/cluster/nextid")
    }

    /// `GET /nodes/{node}/tasks/{upid}/status`.
    pub fn task_status(node: &str, upid: &str) -> ApiRequest {
        ApiRequest::new(Method::Get, "/nodes/{node}/tasks/{upid}/status")
            .path_param("node", node)
            .path_param("upid", upid)
    }

    /// `GET /nodes/{node}/tasks/{upid}/log` (the last `limit` lines from `start`).
    pub fn task_log(node: &str, upid: &str, start: u32, limit: u32) -> ApiRequest {
        ApiRequest::new(Method::Get, "/nodes/{node}/tasks/{upid}/log")
            .path_param("node", node)
            .path_param("upid", upid)
            .param("start", start)
            .param("limit", limit)
    }

    /// `GET /nodes/{node}/tasks?vmid=&source=active&typefilter=`: the VM's running tasks of a type.
    pub fn active_tasks(node: &str, vmid: u32, typefilter: &str) -> ApiRequest {
        ApiRequest::new(Method::Get, "/nodes/{node}/tasks")
            .path_param("node", node)
            .param("vmid", vmid)
            .param("source", "active")
            .param("typefilter", typefilter)
            .param("limit", 10)
    }

    /// `GET /nodes/{node}/tasks?vmid=&source=all&typefilter=&since=`: the VM's tasks of a
    /// type (running or ended) started at or after `since` (Unix time, the node's clock).
    pub fn vm_tasks_since(node: &str, vmid: u32, typefilter: &str, since: u64) -> ApiRequest {
        ApiRequest::new(Method::Get, "/nodes/{node}/tasks")
            .path_param("node", node)
            .param("vmid", vmid)
            .param("source", "all")
            .param("typefilter", typefilter)
            .param("since", since)
            .param("limit", 20)
    }

    /// `DELETE /nodes/{node}/tasks/{upid}`: stops a running task.
    pub fn task_stop(node: &str, upid: &str) -> ApiRequest {
        ApiRequest::new(Method::Delete, "/nodes/{node}/tasks/{upid}")
            .path_param("node", node)
            .path_param("upid", upid)
    }

    /// `GET /nodes/{node}/qemu/{vmid}/status/current`.
    pub fn status_current(node: &str, vmid: u32) -> ApiRequest {
        vm(
            Method::Get,
            "/nodes/{node}/qemu/{vmid}/status/current",
            node,
            vmid,
        )
    }

    /// `POST /nodes/{node}/qemu/{vmid}/status/start`.
    pub fn start(node: &str, vmid: u32) -> ApiRequest {
        vm(
            Method::Post,
            "/nodes/{node}/qemu/{vmid}/status/start",
            node,
            vmid,
        )
    }

    /// `POST /nodes/{node}/qemu/{vmid}/status/stop` (hard). `overrule_shutdown` aborts a
    /// running `qmshutdown` task first (PVE 8.1+).
    pub fn stop(node: &str, vmid: u32, overrule_shutdown: bool) -> ApiRequest {
        let r = vm(
            Method::Post,
            "/nodes/{node}/qemu/{vmid}/status/stop",
            node,
            vmid,
        );
        if overrule_shutdown {
            r.bool_param("overrule-shutdown", true)
        } else {
            r
        }
    }

    /// `POST /nodes/{node}/qemu/{vmid}/status/shutdown` with PVE's own deadline.
    pub fn shutdown(
        node: &str,
        vmid: u32,
        timeout_secs: Option<u64>,
        force_stop: bool,
    ) -> ApiRequest {
        vm(
            Method::Post,
            "/nodes/{node}/qemu/{vmid}/status/shutdown",
            node,
            vmid,
        )
        .opt_param("timeout", timeout_secs)
        .bool_param("forceStop", force_stop)
    }

    /// `POST /nodes/{node}/qemu/{vmid}/status/reboot`.
    pub fn reboot(node: &str, vmid: u32, timeout_secs: Option<u64>) -> ApiRequest {
        vm(
            Method::Post,
            "/nodes/{node}/qemu/{vmid}/status/reboot",
            node,
            vmid,
        )
        .opt_param("timeout", timeout_secs)
    }

    /// `POST /nodes/{node}/qemu/{vmid}/status/reset`.
    pub fn reset(node: &str, vmid: u32) -> ApiRequest {
        vm(
            Method::Post,
            "/nodes/{node}/qemu/{vmid}/status/reset",
            node,
            vmid,
        )
    }

    /// `POST /nodes/{node}/qemu/{vmid}/status/suspend` (pause, memory resident).
    pub fn suspend(node: &str, vmid: u32) -> ApiRequest {
        vm(
            Method::Post,
            "/nodes/{node}/qemu/{vmid}/status/suspend",
            node,
            vmid,
        )
    }

    /// `POST /nodes/{node}/qemu/{vmid}/status/resume`.
    pub fn resume(node: &str, vmid: u32) -> ApiRequest {
        vm(
            Method::Post,
            "/nodes/{node}/qemu/{vmid}/status/resume",
            node,
            vmid,
        )
    }

    /// `POST /nodes/{node}/qemu/{vmid}/agent/ping`.
    pub fn agent_ping(node: &str, vmid: u32) -> ApiRequest {
        vm(
            Method::Post,
            "/nodes/{node}/qemu/{vmid}/agent/ping",
            node,
            vmid,
        )
    }

    /// `POST /nodes/{node}/qemu/{vmid}/monitor` with an HMP command (`system_powerdown`
    /// presses the ACPI power button without going through the guest agent).
    pub fn monitor(node: &str, vmid: u32, command: &str) -> ApiRequest {
        vm(
            Method::Post,
            "/nodes/{node}/qemu/{vmid}/monitor",
            node,
            vmid,
        )
        .param("command", command)
    }

    /// `GET /nodes/{node}/qemu/{vmid}/config` (current values, with `digest`).
    pub fn config(node: &str, vmid: u32) -> ApiRequest {
        vm(Method::Get, "/nodes/{node}/qemu/{vmid}/config", node, vmid)
    }

    /// `GET /nodes/{node}/qemu/{vmid}/pending`.
    pub fn pending(node: &str, vmid: u32) -> ApiRequest {
        vm(Method::Get, "/nodes/{node}/qemu/{vmid}/pending", node, vmid)
    }

    /// `PUT /nodes/{node}/qemu/{vmid}/config` (synchronous update) with a digest check.
    pub fn update_config(
        node: &str,
        vmid: u32,
        digest: Option<&str>,
        changes: &[(&str, String)],
    ) -> ApiRequest {
        let mut r = vm(Method::Put, "/nodes/{node}/qemu/{vmid}/config", node, vmid)
            .opt_param("digest", digest);
        for (k, v) in changes {
            r = r.param(*k, v);
        }
        r
    }

    /// `PUT /nodes/{node}/qemu/{vmid}/resize`: `size` like `+8G` or `40G`.
    pub fn resize(
        node: &str,
        vmid: u32,
        disk: &str,
        size: &str,
        digest: Option<&str>,
    ) -> ApiRequest {
        vm(Method::Put, "/nodes/{node}/qemu/{vmid}/resize", node, vmid)
            .param("disk", disk)
            .param("size", size)
            .opt_param("digest", digest)
    }

    /// `GET /nodes/{node}/qemu/{vmid}/snapshot`.
    pub fn snapshots(node: &str, vmid: u32) -> ApiRequest {
        vm(
            Method::Get,
            "/nodes/{node}/qemu/{vmid}/snapshot",
            node,
            vmid,
        )
    }

    /// `POST /nodes/{node}/qemu/{vmid}/snapshot`.
    pub fn snapshot(
        node: &str,
        vmid: u32,
        name: &str,
        description: Option<&str>,
        vmstate: bool,
    ) -> ApiRequest {
        let r = vm(
            Method::Post,
            "/nodes/{node}/qemu/{vmid}/snapshot",
            node,
            vmid,
        )
        .param("snapname", name)
        .opt_param("description", description);
        if vmstate {
            r.bool_param("vmstate", true)
        } else {
            r
        }
    }

    /// `POST /nodes/{node}/qemu/{vmid}/snapshot/{snapname}/rollback`.
    pub fn rollback(node: &str, vmid: u32, name: &str, start: bool) -> ApiRequest {
        vm(
            Method::Post,
            "/nodes/{node}/qemu/{vmid}/snapshot/{snapname}/rollback",
            node,
            vmid,
        )
        .path_param("snapname", name)
        .bool_param("start", start)
    }

    /// `DELETE /nodes/{node}/qemu/{vmid}/snapshot/{snapname}`.
    pub fn delete_snapshot(node: &str, vmid: u32, name: &str) -> ApiRequest {
        vm(
            Method::Delete,
            "/nodes/{node}/qemu/{vmid}/snapshot/{snapname}",
            node,
            vmid,
        )
        .path_param("snapname", name)
    }

    /// `POST /nodes/{node}/qemu/{vmid}/clone`.
    pub fn clone(
        node: &str,
        vmid: u32,
        newid: u32,
        name: &str,
        full: bool,
        snapname: Option<&str>,
        target: Option<&str>,
    ) -> ApiRequest {
        vm(Method::Post, "/nodes/{node}/qemu/{vmid}/clone", node, vmid)
            .param("newid", newid)
            .param("name", name)
            .bool_param("full", full)
            .opt_param("snapname", snapname)
            .opt_param("target", target)
    }

    /// `POST /nodes/{node}/qemu` (create). `config` holds config keys (`cores`, `memory`,
    /// `scsi0`, `net0`, `tags`, …).
    pub fn create(node: &str, vmid: u32, config: &[(String, String)], start: bool) -> ApiRequest {
        let mut r = ApiRequest::new(Method::Post, "/nodes/{node}/qemu")
            .path_param("node", node)
            .param("vmid", vmid);
        for (k, v) in config {
            r = r.param(k.clone(), v);
        }
        if start {
            r.bool_param("start", true)
        } else {
            r
        }
    }

    /// `DELETE /nodes/{node}/qemu/{vmid}` (destroy; `purge` removes it from jobs and HA).
    pub fn destroy(node: &str, vmid: u32, purge: bool) -> ApiRequest {
        vm(Method::Delete, "/nodes/{node}/qemu/{vmid}", node, vmid)
            .bool_param("purge", purge)
            .bool_param("destroy-unreferenced-disks", true)
    }
}

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
        api::config(n, v),
        api::pending(n, v),
        api::update_config(
            n,
            v,
            Some("0123456789abcdef0123456789abcdef01234567"),
            &[("cores", "4".into()), ("memory", "4096".into())],
        ),
        api::update_config(n, v, None, &[("description", "x".into())]),
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
        api::clone(n, v, 202, "linked-1", false, Some("s1"), Some("pve2")),
        api::clone(n, v, 202, "full-1", true, None, None),
        api::create(n, 203, &cfg, true),
        api::create(n, 203, &cfg[..3], false),
        api::destroy(n, v, true),
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
