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
import shutil
import subprocess
import sys

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


class Node:
    """One compute node: each call is one nova-compute process."""

    def __init__(self, name: str, b: hostb.HostB, pre_copy: bool) -> None:
        self.name = name
        self.b = b
        self.pre_copy = pre_copy

    def __call__(self, call: str, **req) -> dict:
        """Run ``call`` there with nova.conf's [resizedriver] options."""
        options = {'resizedriver': {
            'ssh_user': 'root', 'ssh_identity_file': self.b.key,
            'ssh_options': self.b.client_options(),
            'pre_copy': self.pre_copy}}
        req['call'] = call
        argv = [sys.executable, '-m', 'tests.nova.compute_node', ROOT,
                self.name, json.dumps(options)]
        if self.name == 'b':
            argv = [hostb.SCRIPT, 'run'] + argv
        proc = subprocess.run(
            argv, input=json.dumps(req), capture_output=True, text=True,
            timeout=600, cwd=REPO, env={**os.environ, 'PYTHONPATH': REPO})
        assert proc.returncode == 0, (
            f'{call} on {self.name} failed:\n{proc.stderr[-6000:]}')
        return json.loads(proc.stdout.strip().splitlines()[-1])


class CrossServer:
    def __init__(self, b: hostb.HostB, plan: str, flavor: tuple = SMALL,
                 local_bdms: bool = False) -> None:
        self.b = b
        self.plan = plan
        pre_copy = plan == 'precopy'
        self.a_node = Node('a', b, pre_copy)
        self.b_node = Node('b', b, pre_copy)
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

    def resize_to_b(self, flavor: tuple = BIG) -> int:
        """resize_instance on A, finish_resize on B; the migration id."""
        out = self.a_node('resize_instance', uuid=self.uuid, flavor=flavor)
        record = json.loads(out['disk_info'])
        assert (record['topology'], record['plan']) == ('other-host',
                                                        self.plan)
        self.b_node('finish_resize', uuid=self.uuid, ip=self.ip,
                    migration=out['migration'], disk_info=out['disk_info'])
        return out['migration']

    def remove(self) -> None:
        for node, host in ((self.a_node, self.a_host),
                           (self.b_node, self.b.host())):
            if host.lookup(self.uuid) is not None:
                node('destroy', uuid=self.uuid)
        # what a failed test may have left (a failed finish leaves the
        # copy on B for the revert to drop)
        for view in (lambda p: p, self.b.path):
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
