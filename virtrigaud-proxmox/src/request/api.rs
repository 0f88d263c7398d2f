//! Builders for every call the provider makes.

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
pub fn shutdown(node: &str, vmid: u32, timeout_secs: Option<u64>, force_stop: bool) -> ApiRequest {
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

/// `POST /nodes/{node}/qemu/{vmid}/agent/exec`: starts `argv` (program first, no shell) in
/// the guest through its agent. PVE 8+ takes `command` as an array: one `command` form field
/// per element, in order.
pub fn agent_exec(node: &str, vmid: u32, argv: &[String]) -> ApiRequest {
    argv.iter().fold(
        vm(
            Method::Post,
            "/nodes/{node}/qemu/{vmid}/agent/exec",
            node,
            vmid,
        ),
        |r, arg| r.param("command", arg),
    )
}

/// `GET /nodes/{node}/qemu/{vmid}/agent/exec-status?pid=`: whether a program started by
/// [`agent_exec`] has exited, with its exit code and output.
pub fn agent_exec_status(node: &str, vmid: u32, pid: i64) -> ApiRequest {
    vm(
        Method::Get,
        "/nodes/{node}/qemu/{vmid}/agent/exec-status",
        node,
        vmid,
    )
    .param("pid", pid)
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
    let mut r =
        vm(Method::Put, "/nodes/{node}/qemu/{vmid}/config", node, vmid).opt_param("digest", digest);
    for (k, v) in changes {
        r = r.param(*k, v);
    }
    r
}

/// `PUT /nodes/{node}/qemu/{vmid}/resize`: `size` like `+8G` or `40G`.
pub fn resize(node: &str, vmid: u32, disk: &str, size: &str, digest: Option<&str>) -> ApiRequest {
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

/// Where a clone goes: another node (`target`) and another storage for a full clone's disks.
#[derive(Debug, Clone, Copy, Default)]
pub struct CloneTo<'a> {
    /// Target node (`None`: the source's).
    pub node: Option<&'a str>,
    /// Target storage (`None`: the source's).
    pub storage: Option<&'a str>,
}

/// `POST /nodes/{node}/qemu/{vmid}/clone`.
pub fn clone(
    node: &str,
    vmid: u32,
    newid: u32,
    name: &str,
    full: bool,
    snapname: Option<&str>,
    to: CloneTo<'_>,
) -> ApiRequest {
    vm(Method::Post, "/nodes/{node}/qemu/{vmid}/clone", node, vmid)
        .param("newid", newid)
        .param("name", name)
        .bool_param("full", full)
        .opt_param("snapname", snapname)
        .opt_param("target", to.node)
        .opt_param("storage", to.storage)
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

/// `GET /nodes/{node}/storage/{storage}/content?content=`: the volumes of one content type
/// (`iso`, `vztmpl`, `import`, …) on a storage.
pub fn storage_content(node: &str, storage: &str, content: &str) -> ApiRequest {
    ApiRequest::new(Method::Get, "/nodes/{node}/storage/{storage}/content")
        .path_param("node", node)
        .path_param("storage", storage)
        .param("content", content)
}

/// `DELETE /nodes/{node}/storage/{storage}/content/{volume}`: removes a volume (`volume` is
/// the full volume id, `local:iso/name.iso`); PVE answers with an `imgdel` task's UPID.
pub fn delete_volume(node: &str, storage: &str, volume: &str) -> ApiRequest {
    ApiRequest::new(
        Method::Delete,
        "/nodes/{node}/storage/{storage}/content/{volume}",
    )
    .path_param("node", node)
    .path_param("storage", storage)
    .path_param("volume", volume)
}

/// `POST /nodes/{node}/storage/{storage}/upload`: a file of `content` (`iso`, `vztmpl`, or
/// `import` on PVE 8.2+) named `filename`. Sent as `multipart/form-data` by
/// [`crate::PveClient`]'s upload path: every parameter becomes a text field except
/// `filename`, which names the file part; PVE answers with an `imgcopy` task's UPID.
pub fn upload(node: &str, storage: &str, content: &str, filename: &str) -> ApiRequest {
    ApiRequest::new(Method::Post, "/nodes/{node}/storage/{storage}/upload")
        .path_param("node", node)
        .path_param("storage", storage)
        .param("content", content)
        .param("filename", filename)
}
