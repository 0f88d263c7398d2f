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
    GET  /requests?since=N   {"total", "items": [[method, path, body], ...]} (secrets redacted by fakepve)
"""
import argparse
import asyncio
import itertools
import json
import shutil
import tempfile

from aiohttp import web
from fakepve import FakePve, PveError, TaskError
from fakepve.certs import make_cert
from fakepve.server import GENERIC, USER, params

# qemu-server's task log line when a shutdown's forceStop kills the VM at the timeout.
FORCED_STOP_LOG = 'VM still running - terminating now with SIGTERM'


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
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._overrule = {}
        self._task_stops = {}
        self._qemu_pids = {}
        self._next_qemu_pid = itertools.count(4000)

    async def task(self, node, ttype, tid, user, body, vm=None, lock=True, log=()):
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

    def _log_running_task(self, vm, line):
        """Appends line to the log of the VM's running shutdown or reboot task."""
        for rec in reversed(self.tasklog):
            if rec['status'] == 'running' and rec['id'] == str(vm.vmid) and rec['type'] in ('qmshutdown', 'qmreboot'):
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
