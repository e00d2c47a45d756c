"""A Nova resize from this host (A) to host B (tools/host-b), each half
in its own nova-compute process on its own host.

``migrate_disk_and_power_off`` runs in a process on A against A's
libvirtd, ``finish_migration`` in a process inside B's namespaces against
B's libvirtd, with the disk info string handed over as the RPC would;
then confirm on A, or the revert path (``destroy`` on B, then
``finish_revert_migration`` on A).  The guest's own console on B and on A
says what it got.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
from typing import IO, Optional

import pytest

from resizedriver.host import Host
from tests.lib import guestlog, hostb, hostenv, parallel
from tests.lib.testguest import REPO
from tests.nova import compute_node, conftest
from tests.nova.test_nova_shapes import assert_disk_info_true, disks

ROOT = '/var/lib/resizedriver-tests/nova-cross-host-' + parallel.worker()
GiB = 1024 ** 3
SMALL = ('1', 1, 256, 1)
BIG = ('2', 2, 512, 2)


@pytest.fixture(scope='module')
def host_b() -> hostb.HostB:
    conftest.prepare(ROOT)
    return hostb.HostB.setup()


#: ``ssh`` and ``scp`` for Nova's own remote calls (its migrate to another
#: host)
SSH_BIN = os.path.join(os.path.dirname(__file__), 'sshbin')


class Node:
    """One compute node: each call is one nova-compute process, or with
    ``session`` one process answers them all (``close`` ends it); with a
    ``backend`` started as nova-compute starts, probed
    (``tests.nova.probed_node``)."""

    def __init__(self, name: str, options: dict, root: str = ROOT,
                 backend: Optional[str] = None, session: bool = False,
                 b: Optional[hostb.HostB] = None) -> None:
        self.name = name
        self.b = b
        self.options = options
        self.root = root
        self.backend = backend
        self.session = session
        self._proc: Optional[subprocess.Popen] = None
        self._err: Optional[IO[str]] = None

    def _start(self, **kwargs) -> subprocess.Popen:
        entry = (['tests.nova.compute_node'] if self.backend is None
                 else ['tests.nova.probed_node', self.backend])
        argv = [sys.executable, '-m', *entry, self.root, self.name,
                json.dumps(self.options)]
        if self.name == 'b':
            argv = [hostb.SCRIPT, 'run'] + argv
        env = {**os.environ, 'PYTHONPATH': REPO,
               'PATH': SSH_BIN + os.pathsep + os.environ['PATH']}
        if self.b is not None:  # Nova's own ssh to B (sshbin)
            env.update(RESIZEDRIVER_HOST_B_KEY=self.b.key,
                       RESIZEDRIVER_HOST_B_KNOWN_HOSTS=self.b.known_hosts)
        env.pop('OS_NOVA_DISABLE_EVENTLET_PATCHING', None)  # the backend's
        return subprocess.Popen(argv, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True,
                                cwd=REPO, env=env, **kwargs)

    def __call__(self, call: str, **req) -> dict:
        """Run ``call`` there with nova.conf's options."""
        req['call'] = call
        if not self.session:
            proc = self._start(stderr=subprocess.PIPE)
            out, err = proc.communicate(json.dumps(req), timeout=600)
            assert proc.returncode == 0, (
                f'{call} on {self.name} failed:\n{err[-6000:]}')
            return json.loads(out)
        if self._proc is None:
            self._err = tempfile.TemporaryFile('w+')
            self._proc = self._start(stderr=self._err)
        assert self._proc.stdin and self._proc.stdout
        self._proc.stdin.write(json.dumps(req) + '\n')
        self._proc.stdin.flush()
        ready = select.select([self._proc.stdout], [], [], 600)[0]
        line = self._proc.stdout.readline() if ready else ''
        if not line:
            raise AssertionError(f'{call} on {self.name} failed:\n'
                                 f'{self.close()[-6000:]}')
        return json.loads(line)

    def killed_after(self, operation: str, step: str, call: str,
                     **req) -> Optional[dict]:
        """``call`` in a process of its own, which SIGKILLs itself right
        after ``step`` of ``operation`` (``compute_node``'s
        ``kill_after``): None once it did, else its answer (the plan
        had no such step: ``ran`` names the ones it had)."""
        assert not self.session
        req.update(call=call, kill_after=[operation, step])
        proc = self._start(stderr=subprocess.PIPE)
        out, err = proc.communicate(json.dumps(req), timeout=600)
        # (-9: the process itself; 137: tools/host-b's shell says so)
        if proc.returncode in (-signal.SIGKILL, 128 + signal.SIGKILL):
            return None
        assert proc.returncode == 0, (
            f'{call} on {self.name} failed:\n{err[-6000:]}')
        return json.loads(out)

    def close(self) -> str:
        """End the session's process; what it wrote on stderr."""
        if self._proc is None or self._err is None:
            return ''
        proc, err, self._proc, self._err = self._proc, self._err, None, None
        assert proc.stdin
        proc.stdin.close()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        err.seek(0)
        text = err.read()
        err.close()
        return text


class CrossServer:
    """An instance spawned on A, to move by ``plan`` (to B; without ``b``
    it stays on A: a same-host plan).  ``root``, ``name_prefix`` and
    ``backend``: the nodes' (``Node``); ``conf``: their nova.conf's
    [DEFAULT] options."""

    def __init__(self, b: Optional[hostb.HostB], plan: str,
                 flavor: tuple = SMALL, local_bdms: bool = False,
                 root: str = ROOT, name_prefix: str = '',
                 backend: Optional[str] = None,
                 conf: Optional[dict] = None) -> None:
        self.b = b
        self.plan = plan
        options: dict = {'resizedriver': {'pre_copy': plan == 'precopy'},
                         'DEFAULT': conf or {}}
        if b is not None:
            options['resizedriver'].update(
                ssh_user='root', ssh_identity_file=b.key,
                ssh_options=b.client_options())
        if name_prefix:
            options['name_prefix'] = name_prefix
        # probed: one process a node, as one nova-compute
        self.a_node = Node('a', options, root, backend, bool(backend), b)
        self.b_node = Node('b', options, root, backend, bool(backend), b)
        self.ip, self.mac = parallel.guest_address()
        self.uuid = self.a_node('spawn', flavor=flavor, ip=self.ip,
                                mac=self.mac,
                                local_bdms=local_bdms)['uuid']
        self.a_host = Host('qemu:///system')

    def dir(self, suffix: str = '') -> str:
        return os.path.join(compute_node.INSTANCES, self.uuid + suffix)

    def console_on_a(self, boot: int) -> guestlog.GuestReport:
        return guestlog.wait_for_boot(os.path.join(self.dir(),
                                                   'console.log'), boot)

    def console_on_b(self, boot: int) -> guestlog.GuestReport:
        return guestlog.wait_for_boot(
            self.b.path(os.path.join(self.dir(), 'console.log')), boot)

    def resize(self, flavor: tuple = BIG) -> tuple[dict, dict]:
        """resize_instance on A, finish_resize on B (on A without
        ``b``); their answers."""
        dest = self.a_node if self.b is None else self.b_node
        out = self.a_node('resize_instance', uuid=self.uuid, flavor=flavor,
                          dest=dest.name)
        record = json.loads(out['disk_info'])
        assert (record['topology'], record['plan']) == (
            'same-host' if self.b is None else 'other-host', self.plan)
        return out, dest('finish_resize', uuid=self.uuid, ip=self.ip,
                         migration=out['migration'],
                         disk_info=out['disk_info'])

    def resize_to_b(self, flavor: tuple = BIG) -> int:
        """resize_instance on A, finish_resize on B; the migration id."""
        return self.resize(flavor)[0]['migration']

    def remove(self) -> None:
        nodes = [(self.a_node, self.a_host, lambda p: p)]
        if self.b is not None:
            nodes.append((self.b_node, self.b.host(), self.b.path))
        for node, host, _view in nodes:
            if host.lookup(self.uuid) is not None:
                node('destroy', uuid=self.uuid)
        # what a failed test may have left (a failed finish leaves the
        # copy on B for the revert to drop)
        for node, _host, view in nodes:
            node.close()
            for suffix in ('', '_resize'):
                shutil.rmtree(view(self.dir(suffix)), ignore_errors=True)


@pytest.fixture
def server(request, host_b):
    """A running instance on A that moves by ``request.param``'s plan:
    ``precopy`` (the default for a running guest) or ``copy``
    (``pre_copy = false``)."""
    s = CrossServer(host_b, request.param)
    yield s
    s.remove()


def _assert_resized_on_b(s: CrossServer, before) -> None:
    after = s.console_on_b(2)
    assert after.cpu_count == 2
    assert after.mem_kb - before.mem_kb > 200 * 1024
    assert after.disks == {'vda': 2 * GiB}
    assert after.macs == {'eth0': s.mac}
    assert s.b.ping(s.ip.split('/')[0]), 'guest does not answer on B'
    assert s.b.host().lookup(s.uuid).is_running()


@pytest.mark.parametrize('server', [
    pytest.param('precopy', marks=pytest.mark.releases), 'copy'],
    indirect=True)
def test_nova_resize_to_host_b_then_confirm(server: CrossServer):
    s = server
    before = s.console_on_a(1)
    assert (before.cpu_count, before.disks) == (1, {'vda': 1 * GiB})

    migration = s.resize_to_b()
    _assert_resized_on_b(s, before)
    if s.plan == 'precopy':
        # its clean shutdown on A wrote after the pre-copy began
        assert s.console_on_b(2).shutdown_mark == '1'
        assert sorted(os.listdir(s.b.path(s.dir()))) == [
            'console.log', 'disk', 'disk.info', 'kernel', 'ramdisk']
    # A's source is untouched until confirm.
    assert os.path.isdir(s.dir('_resize'))
    assert not s.a_host.lookup(s.uuid).is_running()

    s.a_node('confirm_resize', uuid=s.uuid, migration=migration)
    assert s.a_host.lookup(s.uuid) is None
    assert not os.path.exists(s.dir()) and not os.path.exists(
        s.dir('_resize'))
    assert s.b.host().lookup(s.uuid).is_running()
    assert os.path.exists(s.b.path(s.dir()))


@pytest.mark.parametrize('server', ['precopy'], indirect=True)
def test_nova_resize_to_host_b_then_revert(server: CrossServer):
    s = server
    before = s.console_on_a(1)

    migration = s.resize_to_b()
    _assert_resized_on_b(s, before)

    s.b_node('revert_resize', uuid=s.uuid, migration=migration)
    assert s.b.host().lookup(s.uuid) is None
    assert not os.path.exists(s.b.path(s.dir()))
    s.a_node('finish_revert_resize', uuid=s.uuid, migration=migration)
    back = s.console_on_a(2)      # the untouched source had booted once
    assert (back.cpu_count, back.mem_kb, back.disks) == \
        (before.cpu_count, before.mem_kb, before.disks)
    assert back.shutdown_mark == '1'      # the bytes of its clean shutdown
    assert not os.path.exists(os.path.join(s.dir(), 'disk.top'))
    assert back.macs == {'eth0': s.mac}
    assert hostenv.ping(s.ip.split('/')[0])
    assert not os.path.exists(s.dir('_resize'))
    # Nova's init_host repeats it for instances stuck mid-revert.
    s.a_node('finish_revert_resize', uuid=s.uuid, migration=migration)
    assert s.a_host.lookup(s.uuid).is_running()


#: flavors with an ephemeral disk and swap: ... ephemeral GiB, swap MiB
SHAPED = ('51', 1, 256, 1, None, 1, 64)
SHAPED_BIG = ('52', 2, 512, 2, None, 2, 128)


@pytest.fixture(params=[('precopy', True), ('copy', False)],
                ids=['precopy-with-bdms', 'copy-flavor-only'])
def shaped_server(request, host_b):
    """A running instance on A whose flavor has an ephemeral disk and
    swap, with the block device mappings Nova's API makes for them or
    none (as in ``test_nova_shapes.py``, one each)."""
    plan, local_bdms = request.param
    s = CrossServer(host_b, plan, SHAPED, local_bdms)
    yield s
    s.remove()


def test_nova_resize_with_ephemeral_and_swap_to_host_b(shaped_server):
    """Reverted first (back on A), then moved again and confirmed."""
    s = shaped_server
    assert s.console_on_a(1).disks == disks(1, 1, 64)

    migration = s.resize_to_b(SHAPED_BIG)
    assert s.console_on_b(2).disks == disks(2, 2, 128)
    s.b_node('revert_resize', uuid=s.uuid, migration=migration)
    s.a_node('finish_revert_resize', uuid=s.uuid, migration=migration)
    assert s.console_on_a(2).disks == disks(1, 1, 64)
    assert not os.path.exists(s.dir('_resize'))

    migration = s.resize_to_b(SHAPED_BIG)
    assert s.console_on_b(3).disks == disks(2, 2, 128)
    s.a_node('confirm_resize', uuid=s.uuid, migration=migration)
    assert s.a_host.lookup(s.uuid) is None
    assert s.b.host().lookup(s.uuid).is_running()
    assert s.b.ping(s.ip.split('/')[0]), 'guest does not answer on B'
    assert_disk_info_true(s.b.path(s.dir()))


def _raw(run, path: str, name: str) -> str:
    """What the guest reads from ``path``, as a raw file ``name`` in
    /tmp of the host that owns ``path`` (``run`` runs a shell command
    there; -U: its guest may hold it open)."""
    raw = f'/tmp/rdtest-{name}-{parallel.worker()}.raw'
    run(f'qemu-img convert -U -O raw {path} {raw}')
    return raw


@pytest.mark.parametrize('plan', ['precopy', 'copy'])
def test_nova_resize_to_host_b_with_its_own_ephemeral_base(host_b, plan):
    """B's image cache already has ``_base/ephemeral_<GB>_<fs>`` of its
    own (an instance with that ephemeral size was spawned there): Nova's
    mkfs, so not A's bytes (another UUID).  Nova's own finish would put
    A's overlay over B's file; the move must work, the guest on B read
    exactly the ephemeral disk it had on A, and B's file stay B's.  (An
    ephemeral size no other test moves to B: B's image cache is every
    test's, this test replaces a file in it.)"""
    s = CrossServer(host_b, plan, ('53', 1, 256, 1, None, 3, 64))
    disk_local = os.path.join(s.dir(), 'disk.local')
    base = json.loads(_sh(f'qemu-img info -U --output=json {disk_local}'))[
        'backing-filename']
    b_base = s.b.path(base)
    raws = []
    try:
        if os.path.exists(b_base):
            os.unlink(b_base)
        s.b_node('ephemeral_base', name=os.path.basename(base), gb=3)
        b_own = _identity(b_base)
        assert subprocess.run(['cmp', '-s', base, b_base]).returncode == 1

        s.resize_to_b(('54', 2, 512, 2, None, 4, 128))
        assert s.console_on_b(2).disks == disks(2, 4, 128)
        raws = [_raw(_sh, os.path.join(s.dir('_resize'), 'disk.local'),
                     'on-a'),
                s.b.path(_raw(lambda cmd: s.b.run('sh', '-c', cmd),
                              disk_local, 'on-b'))]
        # B's is grown to 4 GiB, the rest of it zeros
        assert _sh(f'cmp -n {3 * GiB} {raws[0]} {raws[1]} && echo same') \
            == 'same\n'
        assert _identity(b_base) == b_own
    finally:
        s.remove()
        for path in raws:
            os.unlink(path)
        for name in os.listdir(os.path.dirname(b_base)):
            if name.startswith(os.path.basename(base)):
                os.unlink(os.path.join(os.path.dirname(b_base), name))


def _sh(cmd: str) -> str:
    return subprocess.run(['sh', '-c', cmd], check=True, capture_output=True,
                          text=True).stdout


def _identity(path: str) -> tuple[int, int, int]:
    """The file's inode, size and modification time: replaced or
    written, it changes."""
    st = os.stat(path)
    return st.st_ino, st.st_size, st.st_mtime_ns
