"""Rule 0 under Nova: what resizedriver does not own takes Nova's own path
(the ``upstream`` plan), never worse than upstream.

LVM as Nova runs it (``images_type = lvm``): this machine's kernel has no
device-mapper, so lvm2 keeps real metadata on a PV (a loop device over a
sparse file) but cannot activate a logical volume.  ``lvmbin/lvcreate``
and ``lvremove``, first on the PATH of Nova's privsep daemons
(``conftest``), create and remove logical volumes with the real lvm2 and
map each one's extents with a loop device over the PV's file, as
dm-linear would; Nova's own LVM code (spawn, its checks, destroy) runs
unchanged on top, and the guest boots from the logical volume.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from nova import exception as nova_exception

from resizedriver import domain_xml
from resizedriver.nova import upstream
from tests.lib import parallel
from tests.nova import conftest, novaenv
from tests.nova.test_nova_resize import (assert_no_resize_left, flavor,
                                         resize, revert)

GiB = 1024 ** 3
MiB = 1024 ** 2
#: root_gb 0: the image's size (Nova's LVM backend makes the volume that
#: size and runs resize2fs only to grow it, which the test image, having
#: no filesystem, could not take)
LVM_SMALL, LVM_BIG = ('31', 1, 256, 0), ('32', 2, 512, 0)
LVM_ENV = dict(os.environ, LVM_SUPPRESS_FD_WARNINGS='1')


def _lvm(*argv: str) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, env=LVM_ENV)
    assert proc.returncode == 0, (argv, proc.stderr)
    return proc.stdout


@pytest.fixture
def lvm_backend():
    """A volume group of this worker's on a loop device, and Nova's
    ``images_type = lvm`` on it for the test."""
    vg = f'rdtest{parallel.worker()}vg'.replace('-', '')
    image = os.path.join(conftest.ROOT, f'{vg}.pv')
    with open(image, 'wb') as f:
        f.truncate(1 * GiB)
    pv = subprocess.run(['losetup', '-f', '--show', image], check=True,
                        capture_output=True, text=True).stdout.strip()
    conf = novaenv.CONF
    try:
        _lvm('pvcreate', '-q', pv)
        _lvm('vgcreate', '-q', vg, pv)
        for name, value in (('images_type', 'lvm'),
                            ('images_volume_group', vg),
                            ('volume_clear', 'none')):
            conf.set_override(name, value, 'libvirt')
        yield vg
    finally:
        for name in ('images_type', 'images_volume_group', 'volume_clear'):
            conf.clear_override(name, 'libvirt')
        subprocess.run(['vgremove', '-f', vg], capture_output=True,
                       env=LVM_ENV)
        subprocess.run(['losetup', '-d', pv], check=True)
        os.unlink(image)


def test_an_lvm_instance_is_refused_as_nova_refuses_it(lvm_backend,
                                                       make_server):
    """Nova refuses to resize an LVM instance, before power-off; so do
    we now (before, the engine saw no disk at all: the instance looked
    booted from volume and was resized cold, and moved to another host it
    came back re-imaged)."""
    server = make_server(flavor(LVM_SMALL))
    assert server.wait_boot(1).disks == {'vda': 64 * MiB}
    xml = server.driver._host.get_guest(server.instance).get_xml_desc()
    assert domain_xml.disks_elsewhere(xml, server.dir) == {
        'vda': f'a block disk (/dev/{lvm_backend}/'
               f'{server.instance.uuid}_disk)'}
    with pytest.raises(nova_exception.InstanceFaultRollback) as caught:
        server.driver.migrate_disk_and_power_off(
            server.ctx, server.instance, novaenv.CONF.my_ip,
            flavor(LVM_BIG), server.nw, None, 60, 2)
    inner = caught.value.inner_exception
    assert isinstance(inner, nova_exception.MigrationPreCheckError), inner
    assert 'Migration is not supported for LVM backed instances' in \
        str(inner)
    # before power-off: the guest ran on, never rebooted
    assert server.driver.get_info(server.instance).state == 1
    assert server.wait_boot(1).cpu_count == 1
    assert_no_resize_left(server)
    assert server.ping()


def test_novas_own_path_resizes_reverts_and_confirms(make_server,
                                                     monkeypatch):
    """The upstream plan end to end, on an instance that is ours but
    taken Nova's way (only the decision is forced): Nova's migrate,
    finish, revert and confirm run, the record says ``upstream`` (and
    why) so that confirm and revert follow it, and nothing of ours is
    left."""
    monkeypatch.setattr(upstream, 'reason',
                        lambda *a, **kw: 'forced by a test')
    server = make_server(flavor(('1', 1, 256, 1)))
    server.wait_boot(1)

    mig = resize(server, flavor(('2', 2, 512, 2)))
    with open(os.path.join(server.dir + '_resize', 'resize.json')) as f:
        record = json.load(f)
    # status --json and the summary line say why it went Nova's way
    assert (record['plan'], record['summary']['reason']) == (
        'upstream', 'forced by a test')
    resized = server.wait_boot(2)
    assert (resized.cpu_count, resized.disks) == (2, {'vda': 2 * GiB})

    revert(server, mig)
    back = server.wait_boot(2)          # the source copy counted 1 boot
    assert (back.cpu_count, back.disks) == (1, {'vda': 1 * GiB})
    assert_no_resize_left(server)       # the record went with it

    mig = resize(server, flavor(('2', 2, 512, 2)))
    assert server.wait_boot(3).cpu_count == 2
    server.driver.confirm_migration(server.ctx, mig, server.instance,
                                    server.nw)
    assert_no_resize_left(server)
    assert server.driver.get_info(server.instance).state == 1
    assert server.ping()
