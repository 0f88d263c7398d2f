"""Run fakepve (a test double of the PVE 9 API, AGPL, never a library dependency) for virtrigaud's tests.

    python fakepve_launch.py guests.json --port 18006 --control-port 18007 --time-scale 1 \
        --token 'root@pam!ci=SECRET' --control-token TOKEN --cafile ca.pem

Always binds 127.0.0.1. Besides the PVE API (TLS, CA written to --cafile) it serves a small
plain-HTTP control API for tests on --control-port (header X-Control-Token required):

    POST /vm            {"name", "node", "status", "config", "template", "acpi", "shutdown_secs",
                         "start_secs", "stop_secs", "start_error", "agent", "agent_hangs"} -> {"vmid", "node"}
    GET  /vm/<vmid>     fake-side view: status, qmpstatus, lock, agent_requests
    POST /fault         {"method", "suffix", "status"?, "message"?, "error"?, "times"?}
    POST /unfault       {"method", "suffix"}
    POST /node          {"node", "online"}
    POST /lock          {"vmid", "secs"}   (another task holds the VM config lock)
    POST /unlock        {"vmid"}
    POST /revoke-tickets
    POST /clone-fault   {"vmid", "message"?}  (the next clone of VM vmid fails after the target exists)
    GET  /requests?since=N   {"total", "items": [[method, path, body], ...]} (secrets redacted by fakepve)
"""
import argparse
import asyncio
import itertools
import json
import re
import shutil
import tempfile

from aiohttp import web
from fakepve import FakePve, PveError, TaskError
from fakepve.certs import make_cert
from fakepve.lxc import SIZE_UNITS, format_size, split_props
from fakepve.qemu import is_cdrom, join_drive, split_drive
from fakepve.routing import split_list
from fakepve.server import GENERIC, USER, params

# qemu-server's task log line when a shutdown's forceStop kills the VM at the timeout.
FORCED_STOP_LOG = 'VM still running - terminating now with SIGTERM'
# PVE's default `hotplug` (also what `1` stands for).
HOTPLUG_DEFAULT = 'network,disk,usb'
RESIZE = '/nodes/{node}/qemu/{vmid}/resize'
SIZE = re.compile(r'^(\+)?(\d+(?:\.\d+)?)([KMGT])?$')


def hotplug_features(config):
    """The VM's hot-plug features: PVE's `hotplug` option (`0` none, `1` the default)."""
    value = str(config.get('hotplug', HOTPLUG_DEFAULT))
    if value == '0':
        return set()
    if value == '1':
        value = HOTPLUG_DEFAULT
    return set(split_list(value))


def agent_option(config, key, default):
    """One key of the VM's `agent` property string (`1`, `enabled=1,freeze-fs=0`)."""
    first, props = split_props(config.get('agent', '0'))
    if first is not None:
        props.setdefault('enabled', first)
    value = props.get(key, props.get('freeze-fs-on-backup') if key == 'freeze-fs' else None)
    return default if value is None else str(value) in ('1', 'true', 'on', 'yes')


def agent_enabled(config):
    return agent_option(config, 'enabled', False)


def memory_mib(value):
    """MiB of a `memory` value (`2048` or `current=2048`)."""
    if value is None:
        return 512
    first, props = split_props(value)
    return int(props.get('current', first or 512))


class Pve(FakePve):
    """fakepve plus what PVE does and fakepve 0.5.0 lacks.

    * `overrule-shutdown` on status/stop (PVE 8.1+). Real PVE aborts the VM's running
      `qmshutdown` task (it holds the config lock) before stopping; fakepve's stop would wait
      for that lock instead. Here the shutdown task ends with 'interrupted by signal' and the
      stop proceeds, as on PVE.
    * `DELETE /nodes/{node}/tasks/{upid}` stops a running task. PVE sends the worker SIGTERM
      and returns at once; the task then ends with 'interrupted by signal' (a `qmshutdown`
      task with `forceStop` never gets to stop the VM). fakepve answers the call from the
      schema and lets the task run on. As on PVE, the task's owner may stop it; anyone else
      needs Sys.Modify on the node; stopping a task that has ended does nothing.
    * qemu-server's order on a shutdown's `forceStop`: the task log names the kill before the
      VM is off (fakepve logs it only when the task ends).
    * A new QEMU `pid` in status/current for every run of a VM, as PVE reports the pid of the
      VM's QEMU process. fakepve reports 1000 + vmid for every run.
    * Hot-plug (qemu-server's vmconfig_hotplug_pending). fakepve keeps every change to a
      running VM pending. Here, as on PVE, a `vcpus` change (or its removal: all of
      sockets x cores) is applied live when `hotplug` has `cpu` and it stays within sockets x
      cores, and a growth of `memory` when `hotplug` has `memory` and `numa` is on (PVE
      refuses memory hot-plug without NUMA). Shrinking memory stays pending (unplugging
      DIMMs depends on the guest); `cores`/`sockets` are never hot-plugged. `cpus`/`maxcpu`
      report `vcpus` when it is set, as PVE's vmstatus does.
    * The guest agent as PVE's shutdown channel (qemu-server's _do_vm_stop): with `agent`
      enabled in the config, a shutdown or reboot sends `guest-shutdown` through the agent
      (recorded in agent_requests) instead of pressing ACPI; with no agent answering it waits
      for the timeout (then forceStop or 'VM quit/powerdown failed - got timeout').
    * Snapshot quiescing (__snapshot_check_freeze_needed): a snapshot without RAM of a running
      VM whose agent is enabled (and `freeze-fs` not off) freezes the guest's filesystems
      through the agent around the snapshot (fsfreeze-freeze / fsfreeze-thaw in
      agent_requests); with no agent answering it logs qemu-server's warning 'QEMU Guest
      Agent is not running' and snapshots unfrozen.
    * `PUT /nodes/{node}/qemu/{vmid}/resize` (qemu-server's resize_vm), which fakepve only
      answers from the schema: a `resize` task that grows the volume and the drive's
      `size=` (`+N` relative or absolute, grow only, no cdrom or cloud-init drive, no qcow2
      volume while the VM has snapshots).
    * A clone fault (control `/clone-fault`): the next clone of a VM fails after the target
      exists (config written, disks allocated, lock released) and is left in place, as when
      a clone worker fails after writing the config without its own cleanup running. The
      caller has to remove it.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._overrule = {}
        self._task_stops = {}
        self._qemu_pids = {}
        self._next_qemu_pid = itertools.count(4000)
        self.clone_faults = {}
        self._pending_snapshot = None

    async def task(self, node, ttype, tid, user, body, vm=None, lock=True, log=()):
        if ttype == 'qmclone' and str(tid).isdigit() and int(tid) in self.clone_faults:
            body = self._failing_clone(body, self.clone_faults.pop(int(tid)))
        if ttype == 'qmsnapshot' and self._pending_snapshot and self._pending_snapshot[0] is vm:
            body = self._snapshot_freeze(vm, body, self._pending_snapshot[1])
        stop = asyncio.Event()
        ref = {}

        async def stoppable():
            work = asyncio.ensure_future(body())
            waiter = asyncio.ensure_future(stop.wait())
            try:
                done, _ = await asyncio.wait({work, waiter}, return_when=asyncio.FIRST_COMPLETED)
                if work in done:
                    return work.result()
                raise TaskError('interrupted by signal')
            finally:
                work.cancel()
                waiter.cancel()
                self._task_stops.pop(ref.get('upid'), None)

        upid = await super().task(node, ttype, tid, user, stoppable, vm=vm, lock=lock, log=log)
        if self.tasks.get(upid, {}).get('status') == 'running':
            ref['upid'] = upid
            self._task_stops[upid] = stop
        return upid

    async def _generic(self, request):
        match = request[GENERIC]
        if request.method == 'DELETE' and match is not None and match.template == '/nodes/{node}/tasks/{upid}':
            user = request[USER]

            async def stop_task(match, values):
                task = self.tasks.get(values['upid'])
                if task is None or task['node'] != values['node']:
                    raise PveError(400, 'Parameter verification failed.', {'upid': 'no such task'})
                if user != task['user']:
                    self.require(user, '/nodes/' + task['node'], 'Sys.Modify')
                ev = self._task_stops.get(values['upid'])
                if ev is not None:
                    ev.set()
                return None
            return web.json_response({'data': await self.answer(request, match, await params(request), user,
                                                                call=stop_task)})
        return await super()._generic(request)

    def _vm_status(self, vm, listing=False):
        data = super()._vm_status(vm, listing)
        if 'pid' in data:
            run = vm.started_at
            known = self._qemu_pids.get(vm.vmid)
            if known is None or known[0] != run:
                known = (run, next(self._next_qemu_pid))
                self._qemu_pids[vm.vmid] = known
            data['pid'] = known[1]
        return data

    async def _powerdown(self, vm, p):
        """fakepve's powerdown in qemu-server's order: with forceStop, the task log says
        FORCED_STOP_LOG *before* the VM stops (fakepve stops it first and logs when the task
        ends, so a status poll in between sees a stop with no force in the log). Ends with
        'interrupted by signal' when overruled (see _do_stop)."""
        ev = asyncio.Event()
        self._overrule[vm.vmid] = ev
        try:
            if agent_enabled(vm.config):
                return await self._agent_powerdown(vm, p, ev)
            timeout = int(p.get('timeout') or self.shutdown_default_timeout)
            graceful = vm.acpi and vm.shutdown_secs <= timeout
            await self._pause_unless(ev, vm.shutdown_secs if graceful else timeout)
            if graceful:
                vm.status = vm.qmpstatus = 'stopped'
                return None
            if str(p.get('forceStop', '0')) in ('1', 'true'):
                self._log_running_task(vm, FORCED_STOP_LOG)
                vm.status = vm.qmpstatus = 'stopped'
                return None
            raise TaskError('VM quit/powerdown failed - got timeout')
        finally:
            # Also when this coroutine is cancelled (a stopped task): the powerdown must not
            # run on and stop the VM later.
            if self._overrule.get(vm.vmid) is ev:
                del self._overrule[vm.vmid]

    async def _pause_unless(self, ev, secs):
        """pause(secs) PVE seconds; TaskError('interrupted by signal') if ev is set first."""
        if ev.is_set():
            raise TaskError('interrupted by signal')
        if not secs or not self.time_scale:
            return
        try:
            await asyncio.wait_for(ev.wait(), secs * self.time_scale)
        except asyncio.TimeoutError:
            return
        raise TaskError('interrupted by signal')

    def _log_running_task(self, vm, line, types=('qmshutdown', 'qmreboot')):
        """Appends line to the log of the VM's running task of one of `types` (shutdown or reboot)."""
        for rec in reversed(self.tasklog):
            if rec['status'] == 'running' and rec['id'] == str(vm.vmid) and rec['type'] in types:
                rec['log'].append(line)
                return

    async def _do_stop(self, vm, user, p):
        if str(p.get('overrule-shutdown', '0')) in ('1', 'true'):
            ev = self._overrule.get(vm.vmid)
            if ev is not None:
                ev.set()
                for _ in range(5):
                    await asyncio.sleep(0)
        return await super()._do_stop(vm, user, p)

    def _failing_clone(self, body, message):
        """The clone runs to its end (the target complete and unlocked), then its task fails."""
        async def failing():
            await body()
            raise TaskError('clone failed: {0}'.format(message))
        return failing

    def _routes_launcher(self):
        return [('PUT', RESIZE, self._qm_resize)]

    # ------------------------------------------------------------- hot-plug

    def _vm_usage(self, vm):
        data = super()._vm_usage(vm)
        if str(vm.config.get('vcpus', '')).isdigit():
            data['maxcpu'] = int(vm.config['vcpus'])
        return data

    async def _apply_config(self, vm, user, p):
        await super()._apply_config(vm, user, p)
        if vm.status == 'running':
            self._hotplug_pending(vm)

    def _hotplug_pending(self, vm):
        """Apply what PVE hot-plugs into a running VM; the rest stays pending."""
        features = hotplug_features(vm.config)
        maxcpus = int(vm.config.get('sockets', 1)) * int(vm.config.get('cores', 1))
        numa = str(vm.config.get('numa', '0')) in ('1', 'true')
        for key in sorted(vm.pending):
            value = vm.pending[key]
            if key == 'vcpus' and 'cpu' in features:
                live = maxcpus if value is None else int(value)
                if live > maxcpus:
                    continue
            elif key == 'memory' and 'memory' in features and numa and value is not None:
                if memory_mib(value) < memory_mib(vm.config.get('memory')):
                    continue
            else:
                continue
            del vm.pending[key]
            if value is None:
                vm.config.pop(key, None)
            else:
                vm.config[key] = value

    # ------------------------------------------------------- guest agent

    async def _agent_powerdown(self, vm, p, ev):
        """guest-shutdown through the agent; without an answering agent, the timeout."""
        timeout = int(p.get('timeout') or self.shutdown_default_timeout)
        answering = vm.agent is not None and not vm.agent_hangs
        if answering:
            vm.agent_requests.append(('shutdown', {}))
        graceful = answering and vm.shutdown_secs <= timeout
        await self._pause_unless(ev, vm.shutdown_secs if graceful else timeout)
        if graceful:
            vm.status = vm.qmpstatus = 'stopped'
            return None
        if str(p.get('forceStop', '0')) in ('1', 'true'):
            self._log_running_task(vm, FORCED_STOP_LOG)
            vm.status = vm.qmpstatus = 'stopped'
            return None
        raise TaskError('VM quit/powerdown failed - got timeout')

    def _snapshot_freeze(self, vm, body, vmstate):
        """The snapshot body with PVE's filesystem freeze around it, when PVE would freeze."""
        if vm.status != 'running' or vmstate or not agent_enabled(vm.config) \
                or not agent_option(vm.config, 'freeze-fs', True):
            return body

        async def frozen():
            if vm.agent is None or vm.agent_hangs:
                self._log_running_task(vm, "QEMU Guest Agent is not running - VM {0} qmp command 'guest-ping' "
                                           "failed - got timeout".format(vm.vmid), types=('qmsnapshot',))
                return await body()
            vm.agent_requests.append(('fsfreeze-freeze', {}))
            vm.agent_frozen = True
            try:
                return await body()
            finally:
                vm.agent_requests.append(('fsfreeze-thaw', {}))
                vm.agent_frozen = False
        return frozen

    async def _qm_snapshot(self, v, user):
        vm = self.find(v['node'], v['vmid'])
        vmstate = str(v.get('vmstate', '0')) in ('1', 'true')
        self._pending_snapshot = (vm, vmstate)
        try:
            return await super()._qm_snapshot(v, user)
        finally:
            self._pending_snapshot = None

    # -------------------------------------------------------------- resize

    async def _qm_resize(self, v, user):
        vm = self.find(v['node'], v['vmid'])
        disk, size = v['disk'], str(v['size'])

        async def body():
            self._check_lock(vm)
            digest = v.get('digest')
            if digest and digest != vm.digest():
                raise TaskError('detected modified configuration - file changed by other user? Try again.')
            if disk not in vm.config:
                raise TaskError("disk '{0}' does not exist".format(disk))
            volume, props = split_drive(vm.config[disk])
            if volume.endswith('cloudinit') or 'cloudinit' in volume.split(':')[-1]:
                raise TaskError("you can't resize a cloudinit drive")
            if is_cdrom(volume, props):
                raise TaskError("you can't resize a cdrom")
            if vm.snapshots and (volume.endswith('.qcow2') or props.get('format') == 'qcow2'):
                raise TaskError("can't resize volume: {0} if snapshot exists".format(disk))
            found = SIZE.match(size)
            if not found:
                raise TaskError("unable to parse size '{0}'".format(size))
            vol = self._qm_volume(volume)
            current = int(vol.get('size') or 0) if vol else 0
            if not current:
                m = SIZE.match(props.get('size', '0'))
                current = int(float(m.group(2)) * SIZE_UNITS.get(m.group(3) or 'G', 1)) if m else 0
            new = int(float(found.group(2)) * SIZE_UNITS.get(found.group(3), 1))
            if found.group(1):
                new += current
            if new < current:
                raise TaskError('shrinking disks is not supported')
            if new == current:
                return None
            if vol is not None:
                vol['size'] = new
            props['size'] = format_size(new)
            vm.config[disk] = join_drive(volume, props)
            return 'update VM {0}: resize --disk {1} --size {2}'.format(vm.vmid, disk, size)
        return await self.task(vm.node, 'resize', vm.vmid, user, body, vm=vm)


VM_ATTRS = ('shutdown_secs', 'start_secs', 'stop_secs', 'start_error', 'ha_state', 'agent', 'agent_hangs')


def add_guest(pve, g, vmid):
    vm = pve.add_vm(vmid, g.get('name', 'vm{0}'.format(vmid)), node=g.get('node', 'pve1'),
                    status=g.get('status', 'stopped'), qmpstatus=g.get('qmpstatus'), config=g.get('config', {}),
                    template=g.get('template', False), lock=g.get('lock'))
    vm.acpi = g.get('acpi', True)
    for key in VM_ATTRS:
        if key in g:
            setattr(vm, key, g[key])
    return vm


def control_app(pve, token):
    ids = itertools.count(100000)

    @web.middleware
    async def auth(request, handler):
        if request.headers.get('X-Control-Token') != token:
            return web.json_response({'error': 'bad control token'}, status=401)
        try:
            return await handler(request)
        except (KeyError, ValueError, TypeError) as e:
            return web.json_response({'error': repr(e)}, status=400)

    async def body(request):
        raw = await request.read()
        return json.loads(raw) if raw else {}

    async def new_vm(request):
        g = await body(request)
        vmid = next(ids)
        while pve.guest(vmid) is not None:
            vmid = next(ids)
        vm = add_guest(pve, g, vmid)
        return web.json_response({'vmid': vm.vmid, 'node': vm.node})

    async def get_vm(request):
        vm = pve.vm(int(request.match_info['vmid']))
        if vm is None:
            return web.json_response({'error': 'no such vm'}, status=404)
        return web.json_response({'vmid': vm.vmid, 'node': vm.node, 'status': vm.status, 'qmpstatus': vm.qmpstatus,
                                  'lock': vm.lock, 'config': vm.config, 'pending': vm.pending,
                                  'agent_requests': [list(r) for r in vm.agent_requests]}, dumps=lambda o: json.dumps(o, default=str))

    async def fault(request):
        b = await body(request)
        pve.fail(b['method'], b['suffix'], status=b.get('status'), message=b.get('message'), error=b.get('error'),
                 times=b.get('times'))
        return web.json_response({'ok': True})

    async def unfault(request):
        b = await body(request)
        pve.failures.pop((b['method'], b['suffix']), None)
        return web.json_response({'ok': True})

    async def node(request):
        b = await body(request)
        pve.set_node_offline(b['node'], offline=not b.get('online', False))
        return web.json_response({'ok': True})

    async def lock(request):
        b = await body(request)
        await pve.hold_config_lock(int(b['vmid']), b.get('secs'))
        return web.json_response({'ok': True})

    async def unlock(request):
        b = await body(request)
        pve.release_config_lock(int(b['vmid']))
        return web.json_response({'ok': True})

    async def revoke(request):
        pve.revoke_tickets()
        return web.json_response({'ok': True})

    async def clone_fault(request):
        b = await body(request)
        pve.clone_faults[int(b['vmid'])] = b.get('message') or 'injected fault (virtrigaud launcher)'
        return web.json_response({'ok': True})

    async def requests(request):
        since = int(request.query.get('since', '0'))
        total = len(pve.requests)
        items = [[m, p, b.decode('utf-8', 'replace') if isinstance(b, bytes) else str(b)]
                 for (m, p, b) in pve.requests[since:]]
        return web.json_response({'total': total, 'items': items})

    app = web.Application(middlewares=[auth])
    app.router.add_post('/vm', new_vm)
    app.router.add_get('/vm/{vmid}', get_vm)
    app.router.add_post('/fault', fault)
    app.router.add_post('/unfault', unfault)
    app.router.add_post('/node', node)
    app.router.add_post('/lock', lock)
    app.router.add_post('/unlock', unlock)
    app.router.add_post('/revoke-tickets', revoke)
    app.router.add_post('/clone-fault', clone_fault)
    app.router.add_get('/requests', requests)
    return app


async def serve(a):
    pve = Pve(user=a.user, password=a.password, host='127.0.0.1', port=a.port)
    pve.time_scale = a.time_scale
    pve.lock_wait = a.lock_wait
    pve.max_requests = 10 ** 7
    for tok in a.token:
        tokenid, _, secret = tok.partition('=')
        pve.apitokens[tokenid] = secret
    with open(a.guests) as fh:
        for g in json.load(fh)['guests']:
            add_guest(pve, g, g['vmid'])
    for n in a.node:
        pve.add_node(n)
    tmp = tempfile.mkdtemp(prefix='fakepve-')
    try:
        cert, key, _ = make_cert(tmp, hosts=('127.0.0.1',))
        shutil.copy(cert, a.cafile)
        await pve.start(cert, key)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    runner = web.AppRunner(control_app(pve, a.control_token))
    await runner.setup()
    await web.TCPSite(runner, '127.0.0.1', a.control_port).start()
    print('fakepve listening on {0}, control on http://127.0.0.1:{1} (ca: {2})'.format(
        pve.url, a.control_port, a.cafile), flush=True)
    await asyncio.Event().wait()


def main():
    p = argparse.ArgumentParser()
    p.add_argument('guests')
    p.add_argument('--port', type=int, default=18006)
    p.add_argument('--control-port', type=int, default=18007)
    p.add_argument('--control-token', required=True)
    p.add_argument('--user', default='root@pam')
    p.add_argument('--password', default='secret')
    p.add_argument('--time-scale', type=float, default=1.0)
    p.add_argument('--lock-wait', type=float, default=3.0, help='PVE seconds a task waits for a held config lock')
    p.add_argument('--token', action='append', default=[], help="'user@realm!id=secret'")
    p.add_argument('--node', action='append', default=[], help='extra cluster nodes')
    p.add_argument('--cafile', required=True)
    try:
        asyncio.run(serve(p.parse_args()))
    except KeyboardInterrupt:
        pass


if __name__ == '__main__':
    main()
