"""Ceph RBD under Nova (``[libvirt] images_type = rbd``) on a real Ceph
(``tools/ceph``: one cluster that host A and host B share, as compute
hosts of one cloud do).

The chooser sends an RBD instance's resize that can be live on its host
to the ``live`` plan (no reboot, the image grown with blockResize), and
every other one Nova's own way (the ``upstream`` plan, rules 0 and 1b):
these tests prove both work on a real cluster under our driver, never
worse than Nova's, and check them on what the guest prints
and on what the cluster holds: the root disk ``<uuid>_disk`` grows with
the flavor, Nova's ``nova-resize`` snapshot exists while the resize is
pending and is gone after confirm and after revert (a leaked one would
make the next resize fail after power-off: the next resize is tested).
"""

from __future__ import annotations

import os

import pytest
from nova import exception as nova_exception

from resizedriver.host import Host
from tests.lib import ceph as test_ceph
from tests.lib import guestlog, parallel
from tests.nova import compute_node, novaenv
from tests.nova.test_nova_cross_host import Node, host_b  # noqa: F401
from tests.nova.test_nova_live import KiB, _report, roomy
from tests.nova.test_nova_resize import (BIG, BIGGER, SMALL,
                                         assert_no_resize_left, flavor,
                                         plan_of, resize, revert)

GiB = 1024 ** 3
#: Nova's snapshot of the root disk while a resize is pending
RESIZE_SNAP = 'nova-resize'


@pytest.fixture(scope='session')
def ceph() -> test_ceph.Ceph:
    return test_ceph.Ceph.setup()


@pytest.fixture
def rbd_backend(ceph, driver):
    """This process's Nova with its instance disks in the cluster."""
    options = ceph.libvirt_options()
    for name, value in options.items():
        novaenv.CONF.set_override(name, value, 'libvirt')
    yield ceph
    for name in options:
        novaenv.CONF.clear_override(name, 'libvirt')


def assert_root(ceph: test_ceph.Ceph, uuid: str, gib: int,
                snapshots: list[str]) -> None:
    """The cluster holds the root disk alone, of ``gib``, with
    ``snapshots``."""
    disk = f'{uuid}_disk'
    assert ceph.images(uuid) == [disk]
    assert ceph.size(disk) == gib * GiB
    assert ceph.snapshots(disk) == snapshots


def test_rbd_resize_same_host_revert_then_confirm_twice(rbd_backend,
                                                        make_server):
    """Nova's own resize on a real Ceph, same host: revert, then a resize
    that is confirmed, then one more (the resize after a reverted and
    after a confirmed one: no ``nova-resize`` snapshot left to trip
    over)."""
    ceph = rbd_backend
    server = make_server(flavor(SMALL))
    uuid = server.instance.uuid
    assert server.wait_boot(1).disks == {'vda': 1 * GiB}
    assert_root(ceph, uuid, 1, [])
    assert not os.path.exists(os.path.join(server.dir, 'disk'))

    mig = resize(server, flavor(BIG))
    assert plan_of(server) == 'upstream'
    resized = server.wait_boot(2)
    assert (resized.cpu_count, resized.disks) == (2, {'vda': 2 * GiB})
    assert_root(ceph, uuid, 2, [RESIZE_SNAP])

    revert(server, mig)
    # the disk rolled back to the snapshot Nova took before its boot 2
    back = server.wait_boot(2)
    assert (back.cpu_count, back.disks) == (1, {'vda': 1 * GiB})
    assert_root(ceph, uuid, 1, [])
    assert_no_resize_left(server)

    mig = resize(server, flavor(BIG))
    assert server.wait_boot(3).disks == {'vda': 2 * GiB}
    server.driver.confirm_migration(server.ctx, mig, server.instance,
                                    server.nw)
    assert_root(ceph, uuid, 2, [])
    assert_no_resize_left(server)

    mig = resize(server, flavor(BIGGER))
    grown = server.wait_boot(4)
    assert (grown.cpu_count, grown.disks) == (2, {'vda': 3 * GiB})
    server.driver.confirm_migration(server.ctx, mig, server.instance,
                                    server.nw)
    assert_root(ceph, uuid, 3, [])
    assert server.driver.get_info(server.instance).state == 1
    assert server.ping()


def test_rbd_live_resize_grows_the_disk_then_confirm(rbd_backend,
                                                     make_server):
    """Same host, a flavor with headroom that only grows: the live plan
    hot-plugs a vCPU and memory and grows the root image in the pool
    with blockResize; the guest never reboots (upstream reboots) and
    sees the larger disk; no snapshot is taken, none is left."""
    ceph = rbd_backend
    server = make_server(roomy('61', 1, 256, 1))
    uuid = server.instance.uuid
    before = server.wait_boot(1)
    assert before.disks == {'vda': 1 * GiB}

    mig = resize(server, roomy('62', 2, 512, 2))
    assert plan_of(server) == 'live'
    after = _report(server, '2 CPUs, +256 MiB, a 2 GiB disk', lambda r: (
        r.cpu_count == 2 and r.mem_kb - before.mem_kb == 256 * KiB and
        r.disks == {'vda': 2 * GiB}))
    assert after.boot == 1                         # never stopped
    assert_root(ceph, uuid, 2, [])

    server.driver.confirm_migration(server.ctx, mig, server.instance,
                                    server.nw)
    assert_no_resize_left(server)
    assert_root(ceph, uuid, 2, [])
    assert guestlog.read(os.path.join(server.dir, 'console.log')).boot == 1
    assert server.ping()


def test_rbd_live_resize_then_revert_keeps_the_grown_disk(rbd_backend,
                                                          make_server):
    """A live resize of memory and disk, reverted live: the memory goes
    back, the guest never reboots, and the grown image keeps its size,
    as the live plan keeps grown disk files (nothing shrinks a disk the
    guest may have written to)."""
    ceph = rbd_backend
    server = make_server(roomy('63', 1, 256, 1))
    uuid = server.instance.uuid
    before = server.wait_boot(1)

    mig = resize(server, roomy('64', 1, 512, 2))
    assert plan_of(server) == 'live'
    _report(server, '+256 MiB, a 2 GiB disk', lambda r: (
        r.mem_kb - before.mem_kb == 256 * KiB and
        r.disks == {'vda': 2 * GiB}))
    revert(server, mig)
    back = _report(server, 'its old memory', lambda r: r.mem_kb ==
                   before.mem_kb)
    assert (back.boot, back.cpu_count, back.disks) == (
        1, 1, {'vda': 2 * GiB})
    assert_no_resize_left(server)
    assert_root(ceph, uuid, 2, [])
    assert server.ping()


def test_a_leaked_resize_snapshot_is_refused_before_power_off(rbd_backend,
                                                              make_server):
    """A ``nova-resize`` snapshot that an earlier resize left behind (its
    confirm or revert never ran to the end): Nova's own path would power
    the guest off, migrate, and fail in finish taking the snapshot again
    (rbd's ImageExists), the instance in ERROR with its guest off.  The
    snapshot is there to see: refused before power-off."""
    ceph = rbd_backend
    server = make_server(flavor(SMALL))
    server.wait_boot(1)
    disk = f'{server.instance.uuid}_disk'
    ceph.create_snapshot(disk, RESIZE_SNAP)
    try:
        with pytest.raises(nova_exception.InstanceFaultRollback) as caught:
            server.driver.migrate_disk_and_power_off(
                server.ctx, server.instance, novaenv.CONF.my_ip,
                flavor(BIG), server.nw, None, 60, 2)
    finally:
        ceph.remove_snapshot(disk, RESIZE_SNAP)
    inner = caught.value.inner_exception
    assert isinstance(inner, nova_exception.ResizeError), inner
    assert f'{disk}@{RESIZE_SNAP}' in str(inner)
    # before power-off: the guest ran on, never rebooted
    assert server.driver.get_info(server.instance).state == 1
    assert server.wait_boot(1).cpu_count == 1
    assert_no_resize_left(server)
    assert_root(ceph, server.instance.uuid, 1, [])


def test_rbd_move_to_host_b_then_confirm(host_b, ceph):  # noqa: F811
    """Nova's own move of an RBD instance to host B: nothing is copied,
    B boots the same image from the shared cluster, grown; confirm drops
    the snapshot and A's guest; then B's guest and image are deleted."""
    options = {'resizedriver': {
        'ssh_user': 'root', 'ssh_identity_file': host_b.key,
        'ssh_options': host_b.client_options(), 'pre_copy': False},
        'libvirt': ceph.libvirt_options()}
    a = Node('a', options, b=host_b)
    b = Node('b', options, b=host_b)
    ip, mac = parallel.guest_address()
    uuid = a('spawn', flavor=SMALL, ip=ip, mac=mac)['uuid']
    here = os.path.join(compute_node.INSTANCES, uuid)
    there = host_b.path(here)
    try:
        before = guestlog.wait_for_boot(os.path.join(here, 'console.log'),
                                        1)
        assert before.disks == {'vda': 1 * GiB}
        assert_root(ceph, uuid, 1, [])
        wire = host_b.wire_bytes()

        out = a('resize_instance', uuid=uuid, flavor=BIG)
        b('finish_resize', uuid=uuid, ip=ip, migration=out['migration'],
          disk_info=out['disk_info'])
        after = guestlog.wait_for_boot(os.path.join(there, 'console.log'),
                                       2)
        assert (after.cpu_count, after.disks) == (2, {'vda': 2 * GiB})
        assert after.macs == {'eth0': mac}
        assert host_b.ping(ip.split('/')[0]), 'guest does not answer on B'
        assert_root(ceph, uuid, 2, [RESIZE_SNAP])
        # the 1 GiB disk did not cross the wire (the cluster is shared)
        assert host_b.wire_bytes() - wire < 64 * 1024 ** 2

        a('confirm_resize', uuid=uuid, migration=out['migration'])
        assert_root(ceph, uuid, 2, [])
        assert not os.path.exists(here)
        assert not os.path.exists(here + '_resize')
        assert host_b.host().lookup(uuid).is_running()

        b('destroy', uuid=uuid)
        assert ceph.images(uuid) == []
    finally:
        for node, host in ((a, Host('qemu:///system')),
                           (b, host_b.host())):
            if host.lookup(uuid) is not None:
                node('destroy', uuid=uuid)
