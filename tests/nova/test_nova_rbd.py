"""Ceph RBD under Nova (``[libvirt] images_type = rbd``) on a real Ceph
(``tools/ceph``: one cluster that host A and host B share, as compute
hosts of one cloud do).

The chooser sends an RBD instance's resize that can be live on its host
to the ``live`` plan (no reboot, the image grown with blockResize), a
running guest's cold one (same host or to host B; its config drive,
ephemeral disk and swap, images in the cluster too, with it) to the
``rbd`` plan (our snapshot ``resizedriver-resize`` of each image is the
revert point, nothing is copied), and every other one Nova's own way
(the ``upstream`` plan, rules 0 and 1c; the tests of it force that way,
which our plans now take in their cases): these tests prove all three on
a real cluster under our driver, never worse than Nova's, and check them
on what the guest prints and on what the cluster holds: the root disk
``<uuid>_disk`` grows with the flavor, the revert point (ours, or Nova's
``nova-resize``) exists while the resize is pending and is gone after
confirm and after revert (a leaked one would make the next resize fail
after power-off: the next resize is tested).
"""

from __future__ import annotations

import json
import os

import pytest
from nova import exception as nova_exception
from nova.storage import rbd_utils

from resizedriver import domain_xml
from resizedriver.host import Host
from resizedriver.nova import upstream
from tests.lib import ceph as test_ceph
from tests.lib import guestlog, parallel
from tests.nova import compute_node, novaenv
from tests.nova.test_nova_cross_host import Node, host_b  # noqa: F401
from tests.nova.test_nova_live import ROOM, KiB, _report, roomy
from tests.nova.test_nova_shapes import disks
from tests.nova.test_nova_resize import (BIG, BIGGER, SMALL,
                                         assert_no_resize_left, flavor,
                                         plan_of, resize, revert)

GiB = 1024 ** 3
MiB = 1024 ** 2
#: Nova's snapshot of the root disk while a resize is pending
RESIZE_SNAP = 'nova-resize'
#: the ``rbd`` plan's (ours) while a resize is pending
REVERT_POINT = 'resizedriver-resize'


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
                snapshots: list[str], config_drive: str = '') -> None:
    """The cluster holds the root disk alone, of ``gib``, with
    ``snapshots``; with ``config_drive`` (its digest at spawn) the config
    drive Nova imported beside it too, its bytes unchanged and with the
    same snapshots (the ``rbd`` plan's revert point is of every image of
    the instance)."""
    disk = f'{uuid}_disk'
    config = [f'{disk}.config'] if config_drive else []
    assert ceph.images(uuid) == [disk] + config
    assert ceph.size(disk) == gib * GiB
    for image in [disk] + config:
        assert ceph.snapshots(image) == snapshots
    if config_drive:
        assert ceph.digest(config[0]) == config_drive


def spawned_config_drive(ceph: test_ceph.Ceph, uuid: str,
                         inst_dir: str) -> str:
    """The config drive Nova made at spawn on host A: an image in the
    cluster (no ``disk.config`` left in ``inst_dir``), which the domain
    reads; its digest."""
    assert not os.path.exists(os.path.join(inst_dir, 'disk.config'))
    host = Host('qemu:///system')
    assert_reads_config_drive(ceph, host, uuid)
    return ceph.digest(f'{uuid}_disk.config')


def assert_reads_config_drive(ceph: test_ceph.Ceph, host: Host,
                              uuid: str) -> None:
    """The domain defined on ``host`` has the config drive, from the
    cluster."""
    guest = host.lookup(uuid)
    assert guest is not None
    assert f'{ceph.pool}/{uuid}_disk.config' in \
        domain_xml.rbd_disks(guest.xml()).values()


@pytest.fixture
def config_drive(driver):
    """Nova makes a config drive for every instance spawned here."""
    novaenv.CONF.set_override('force_config_drive', True)
    yield
    novaenv.CONF.clear_override('force_config_drive')


def _resized_then_reverted(server, ceph: test_ceph.Ceph, plan: str,
                           snap: str, config_drive: str = '') -> None:
    """A booted-once SMALL server resized to BIG by ``plan``, with the
    revert point ``snap`` while pending, then reverted: the disk rolled
    back to it (boot 2 again, after boot 1's clean shutdown), 1 GiB
    again, no snapshot left; the ``config_drive`` (its digest) read by
    the domain throughout, unchanged."""
    uuid = server.instance.uuid
    mig = resize(server, flavor(BIG))
    assert plan_of(server) == plan
    resized = server.wait_boot(2)
    assert (resized.cpu_count, resized.disks) == (2, {'vda': 2 * GiB})
    assert_root(ceph, uuid, 2, [snap], config_drive)
    if config_drive:
        assert_reads_config_drive(ceph, Host('qemu:///system'), uuid)

    revert(server, mig)
    back = server.wait_boot(2)
    assert (back.cpu_count, back.disks, back.shutdown_mark) == (
        1, {'vda': 1 * GiB}, '1')
    assert_root(ceph, uuid, 1, [], config_drive)
    if config_drive:
        assert_reads_config_drive(ceph, Host('qemu:///system'), uuid)


@pytest.fixture
def forced_upstream(monkeypatch):
    """Nova's own path for every resize (the test hook of the chooser's
    rule 0): what the ``rbd`` plan now takes stays proven upstream."""
    monkeypatch.setattr(upstream, 'reason',
                        lambda *a, **kw: 'forced by a test')


def test_rbd_resize_same_host_revert_then_confirm_twice(rbd_backend,
                                                        forced_upstream,
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

    _resized_then_reverted(server, ceph, 'upstream', RESIZE_SNAP)
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
    """A live resize of memory and disks, reverted live: the memory goes
    back, the guest never reboots, and the grown images (root and
    ephemeral; swap as it is) keep their size, as the live plan keeps
    grown disk files (nothing shrinks a disk the guest may have written
    to; Nova's own revert keeps the ephemeral image grown too)."""
    ceph = rbd_backend
    server = make_server(flavor(('63', 1, 256, 1, ROOM, 1, 64)))
    uuid = server.instance.uuid
    before = server.wait_boot(1)

    mig = resize(server, flavor(('64', 1, 512, 2, ROOM, 2, 64)))
    assert plan_of(server) == 'live'
    _report(server, '+256 MiB, 2 GiB root and ephemeral disks', lambda r: (
        r.mem_kb - before.mem_kb == 256 * KiB and r.disks == disks(2, 2, 64)))
    revert(server, mig)
    back = _report(server, 'its old memory', lambda r: r.mem_kb ==
                   before.mem_kb)
    assert (back.boot, back.cpu_count, back.disks) == (1, 1, disks(2, 2, 64))
    assert_no_resize_left(server)
    assert_images(ceph, uuid, _eph_images(2, 2, 64), [])
    assert server.ping()


def _refused_for(server, ceph: test_ceph.Ceph, snap: str,
                 forced_upstream: bool, monkeypatch) -> None:
    """The resize is refused, naming the leaked ``snap``."""
    disk = f'{server.instance.uuid}_disk'
    ceph.create_snapshot(disk, snap)
    if forced_upstream:
        monkeypatch.setattr(upstream, 'reason',
                            lambda *a, **kw: 'forced by a test')
    try:
        with pytest.raises(nova_exception.InstanceFaultRollback) as caught:
            server.driver.migrate_disk_and_power_off(
                server.ctx, server.instance, novaenv.CONF.my_ip,
                flavor(BIG), server.nw, None, 60, 2)
    finally:
        monkeypatch.undo()
        ceph.remove_snapshot(disk, snap)
    inner = caught.value.inner_exception
    assert isinstance(inner, nova_exception.ResizeError), inner
    assert f'{disk}@{snap}' in str(inner)


def test_a_leaked_resize_snapshot_is_refused_before_power_off(rbd_backend,
                                                              make_server,
                                                              monkeypatch):
    """A ``nova-resize`` snapshot that an earlier resize left behind (its
    confirm or revert never ran to the end): Nova's own path would power
    the guest off, migrate, and fail in finish taking the snapshot again
    (rbd's ImageExists), the instance in ERROR with its guest off.  The
    snapshot is there to see: refused before power-off.  So is a revert
    point of ours left behind, for the ``rbd`` plan."""
    ceph = rbd_backend
    server = make_server(flavor(SMALL))
    server.wait_boot(1)
    _refused_for(server, ceph, RESIZE_SNAP, True, monkeypatch)
    _refused_for(server, ceph, REVERT_POINT, False, monkeypatch)
    # before power-off: the guest ran on, never rebooted
    assert server.driver.get_info(server.instance).state == 1
    assert server.wait_boot(1).cpu_count == 1
    assert_no_resize_left(server)
    assert_root(ceph, server.instance.uuid, 1, [])


def _spawned_on_a(host_b, ceph, config_drive=False,  # noqa: F811
                  flavor_spec=SMALL, local_bdms=False):
    """Nodes A and B on the cluster (Nova with ``force_config_drive``
    if ``config_drive``), and an instance of ``flavor_spec`` spawned on
    A (``local_bdms``: with the block device mappings Nova's API makes
    for its ephemeral disk and swap): the nodes, its uuid, ip and
    mac."""
    options = {'resizedriver': {
        'ssh_user': 'root', 'ssh_identity_file': host_b.key,
        'ssh_options': host_b.client_options(), 'pre_copy': False},
        'libvirt': ceph.libvirt_options(),
        'DEFAULT': {'force_config_drive': config_drive}}
    a = Node('a', options, b=host_b)
    b = Node('b', options, b=host_b)
    ip, mac = parallel.guest_address()
    return a, b, a('spawn', flavor=flavor_spec, ip=ip, mac=mac,
                   local_bdms=local_bdms)['uuid'], ip, mac


def test_rbd_move_to_host_b_then_confirm(host_b, ceph):  # noqa: F811
    """Nova's own move of an RBD instance to host B (forced: the ``rbd``
    plan now takes it): nothing is copied, B boots the same image from
    the shared cluster, grown; confirm drops the snapshot and A's guest;
    then B's guest and image are deleted."""
    a, b, uuid, ip, mac = _spawned_on_a(host_b, ceph)
    here = os.path.join(compute_node.INSTANCES, uuid)
    there = host_b.path(here)
    try:
        before = guestlog.wait_for_boot(os.path.join(here, 'console.log'),
                                        1)
        assert before.disks == {'vda': 1 * GiB}
        assert_root(ceph, uuid, 1, [])
        wire = host_b.wire_bytes()

        out = a('resize_instance', uuid=uuid, flavor=BIG, upstream=True)
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
        destroyed_everywhere(host_b, a, b, uuid)


def test_rbd_cold_resize_same_host_revert_then_confirm(rbd_backend,
                                                       config_drive,
                                                       make_server):
    """The ``rbd`` plan, same host: the guest shuts down, our snapshot is
    the revert point, the image grows in the pool, Nova's XML boots the
    new flavor; nothing is copied and Nova's ``nova-resize`` is never
    taken.  The revert gives the image back its bytes (the guest's boot
    counter on it reads as at the revert point) and its size; the resize
    after it is confirmed, leaving no snapshot.  The instance has a
    config drive (Nova imports it into the cluster as
    ``<uuid>_disk.config``): each domain reads it, its bytes unchanged,
    no snapshot of it left."""
    ceph = rbd_backend
    server = make_server(flavor(SMALL))
    uuid = server.instance.uuid
    assert server.wait_boot(1).disks == {'vda': 1 * GiB}
    config = spawned_config_drive(ceph, uuid, server.dir)

    _resized_then_reverted(server, ceph, 'rbd', REVERT_POINT, config)
    assert_no_resize_left(server)

    mig = resize(server, flavor(BIG))
    assert plan_of(server) == 'rbd'
    assert server.wait_boot(3).disks == {'vda': 2 * GiB}
    server.driver.confirm_migration(server.ctx, mig, server.instance,
                                    server.nw)
    assert_root(ceph, uuid, 2, [], config)
    assert_reads_config_drive(ceph, Host('qemu:///system'), uuid)
    assert_no_resize_left(server)
    assert server.driver.engine.journals.find(uuid) == []
    assert server.ping()


def test_rbd_cold_move_to_host_b_revert_then_confirm(host_b,  # noqa: F811
                                                     ceph):
    """The ``rbd`` plan to host B, which shares the cluster: nothing
    crosses the wire but the record, B boots the same image grown.  The
    revert stops B's guest, rolls the image back to the revert point and
    starts A's guest on it (bytes and size as before); the next move is
    confirmed: no snapshot, no guest on A, B's runs.  The instance's
    config drive, an image in the cluster too, is read by each domain,
    its bytes unchanged."""
    a, b, uuid, ip, mac = _spawned_on_a(host_b, ceph, config_drive=True)
    here = os.path.join(compute_node.INSTANCES, uuid)
    there = host_b.path(here)
    config = ''

    def to_b(boot: int) -> int:
        wire = host_b.wire_bytes()
        migration, after = _rbd_move(host_b, a, b, uuid, ip, BIG, boot)
        assert (after.cpu_count, after.disks) == (2, {'vda': 2 * GiB})
        assert host_b.ping(ip.split('/')[0]), 'guest does not answer on B'
        assert_root(ceph, uuid, 2, [REVERT_POINT], config)
        assert_reads_config_drive(ceph, host_b.host(), uuid)
        assert host_b.wire_bytes() - wire < 64 * 1024 ** 2
        return migration

    try:
        guestlog.wait_for_boot(os.path.join(here, 'console.log'), 1)
        config = spawned_config_drive(ceph, uuid, here)
        migration = to_b(2)

        b('revert_resize', uuid=uuid, migration=migration,
          destroy_disks=False)
        assert host_b.host().lookup(uuid) is None
        a('finish_revert_resize', uuid=uuid, migration=migration)
        back = guestlog.wait_for_boot(os.path.join(here, 'console.log'), 2)
        assert (back.cpu_count, back.disks, back.shutdown_mark) == (
            1, {'vda': 1 * GiB}, '1')
        assert_root(ceph, uuid, 1, [], config)
        assert_reads_config_drive(ceph, Host('qemu:///system'), uuid)
        assert not os.path.exists(here + '_resize')
        assert not os.path.exists(there)

        migration = to_b(3)
        a('confirm_resize', uuid=uuid, migration=migration)
        assert_root(ceph, uuid, 2, [], config)
        assert_reads_config_drive(ceph, host_b.host(), uuid)
        assert not os.path.exists(here)
        assert not os.path.exists(here + '_resize')
        assert Host('qemu:///system').lookup(uuid) is None
        assert host_b.host().lookup(uuid).is_running()
    finally:
        destroyed_everywhere(host_b, a, b, uuid)


def destroyed_everywhere(host_b, a, b, uuid: str) -> None:  # noqa: F811
    """A test's end: the instance's guest destroyed by its node on A and
    on host B, wherever it still is."""
    for node, host in ((a, Host('qemu:///system')), (b, host_b.host())):
        if host.lookup(uuid) is not None:
            node('destroy', uuid=uuid)


def _rbd_move(host_b, a, b, uuid: str, ip: str, spec,  # noqa: F811
              boot: int) -> tuple[int, guestlog.GuestReport]:
    """The instance moved from node ``a`` to host B's node ``b`` to the
    flavor ``spec`` by the ``rbd`` plan (its record says so): the
    migration's id and what the guest printed at boot ``boot`` on B."""
    here = os.path.join(compute_node.INSTANCES, uuid)
    out = a('resize_instance', uuid=uuid, flavor=spec)
    with open(os.path.join(here + '_resize', 'resize.json')) as f:
        assert json.load(f)['plan'] == 'rbd'
    b('finish_resize', uuid=uuid, ip=ip, migration=out['migration'],
      disk_info=out['disk_info'])
    return out['migration'], guestlog.wait_for_boot(
        os.path.join(host_b.path(here), 'console.log'), boot)


#: flavors with an ephemeral disk and swap (GiB, MiB): ... root GiB,
#: extra specs, ephemeral GiB, swap MiB
EPH = ('71', 1, 256, 1, None, 1, 64)
#: all three grown
EPH_GROWN = ('72', 2, 512, 2, None, 2, 128)
#: the root grown, ephemeral disk and swap as they are
EPH_ROOT_GROWN = ('73', 2, 512, 2, None, 1, 64)


def assert_images(ceph: test_ceph.Ceph, uuid: str, sizes: dict[str, int],
                  snapshots: list[str]) -> None:
    """The cluster holds the instance's images ``sizes`` (Nova's disk
    name -> bytes) and no other, each with ``snapshots``."""
    assert ceph.images(uuid) == sorted(f'{uuid}_{n}' for n in sizes)
    for name, size in sizes.items():
        assert ceph.size(f'{uuid}_{name}') == size, name
        assert ceph.snapshots(f'{uuid}_{name}') == snapshots, name


def _eph_images(root_gb: int, eph_gb: int, swap_mb: int,
                eph: str = 'disk.local') -> dict[str, int]:
    return {'disk': root_gb * GiB, eph: eph_gb * GiB,
            'disk.swap': swap_mb * MiB}


def _scribble(image: str) -> None:
    """What a resized guest may write to its ephemeral disk or swap
    (the test guest writes only to its root): 4 KiB over the start of
    ``image`` (the file system's superblock, the swap header)."""
    data = os.urandom(4096)
    with rbd_utils.RBDVolumeProxy(rbd_utils.RBDDriver(), image) as vol:
        vol.write(data, 0)
        assert vol.read(0, len(data)) == data


def test_rbd_cold_resize_with_ephemeral_and_swap_revert_then_confirm(
        rbd_backend, make_server):
    """The ``rbd`` plan, same host, an instance whose flavor has an
    ephemeral disk and swap (images ``disk.local`` and ``disk.swap`` in
    the pool): each image gets the revert point, the root, ephemeral
    disk and swap grow in place (as Nova's image backend grows them).
    The revert gives every image back its bytes (what the resized guest
    wrote to them is gone: upstream rolls back only the root) and its
    size; the next resize, which grows only the root, is confirmed: no
    snapshot left on any image."""
    ceph = rbd_backend
    server = make_server(flavor(EPH))
    uuid = server.instance.uuid
    assert server.wait_boot(1).disks == disks(1, 1, 64)
    assert_images(ceph, uuid, _eph_images(1, 1, 64), [])
    before = {n: ceph.digest(f'{uuid}_{n}')
              for n in ('disk.local', 'disk.swap')}

    mig = resize(server, flavor(EPH_GROWN))
    assert plan_of(server) == 'rbd'
    assert server.wait_boot(2).disks == disks(2, 2, 128)
    assert_images(ceph, uuid, _eph_images(2, 2, 128), [REVERT_POINT])
    for name in before:
        _scribble(f'{uuid}_{name}')

    revert(server, mig)
    back = server.wait_boot(2)
    assert (back.cpu_count, back.disks, back.shutdown_mark) == (
        1, disks(1, 1, 64), '1')
    assert_images(ceph, uuid, _eph_images(1, 1, 64), [])
    assert {n: ceph.digest(f'{uuid}_{n}') for n in before} == before
    assert_no_resize_left(server)

    mig = resize(server, flavor(EPH_ROOT_GROWN))
    assert plan_of(server) == 'rbd'
    assert server.wait_boot(3).disks == disks(2, 1, 64)
    server.driver.confirm_migration(server.ctx, mig, server.instance,
                                    server.nw)
    assert_images(ceph, uuid, _eph_images(2, 1, 64), [])
    assert_no_resize_left(server)
    assert server.ping()


def test_rbd_cold_move_with_ephemeral_and_swap_to_host_b(
        host_b, ceph):  # noqa: F811
    """The ``rbd`` plan to host B for an instance with an ephemeral disk
    and swap (named from its block device mappings: ``disk.eph0``):
    B boots the same images, each grown; confirm leaves no snapshot on
    any of them and no guest on A."""
    a, b, uuid, ip, _ = _spawned_on_a(host_b, ceph, flavor_spec=EPH,
                                     local_bdms=True)
    here = os.path.join(compute_node.INSTANCES, uuid)
    try:
        assert guestlog.wait_for_boot(os.path.join(here, 'console.log'),
                                      1).disks == disks(1, 1, 64)
        assert_images(ceph, uuid, _eph_images(1, 1, 64, 'disk.eph0'), [])
        migration, after = _rbd_move(host_b, a, b, uuid, ip, EPH_GROWN, 2)
        assert (after.cpu_count, after.disks) == (2, disks(2, 2, 128))
        assert_images(ceph, uuid, _eph_images(2, 2, 128, 'disk.eph0'),
                      [REVERT_POINT])

        a('confirm_resize', uuid=uuid, migration=migration)
        assert_images(ceph, uuid, _eph_images(2, 2, 128, 'disk.eph0'), [])
        assert Host('qemu:///system').lookup(uuid) is None
        assert host_b.host().lookup(uuid).is_running()
        assert host_b.ping(ip.split('/')[0]), 'guest does not answer on B'
    finally:
        destroyed_everywhere(host_b, a, b, uuid)
