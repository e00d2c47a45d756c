"""The staging directory of an overlay resize, built with real qemu-img.

Everything a resized guest opens is made here while the guest still runs;
these tests check that what is made is right *without* touching a byte of
the source instance directory, and that the renames put it in place.
"""

from __future__ import annotations

import json
import os
import subprocess
import types
import uuid as uuidlib

import pytest

from resizedriver import exception
from resizedriver import staging
from resizedriver import stepname
from resizedriver.layout import InstanceLayout
from resizedriver.model import DiskFile, DiskRole, Flavor, GiB
from resizedriver.operations import overlay
from resizedriver.qemuimg import QemuImg
from resizedriver.transport import LocalTransport
from tests.unit.conftest import DOMAIN_XML, MiB, qemu_img, sha256

NEW = Flavor(vcpus=2, memory_mib=512, root_bytes=128 * MiB,
             ephemeral_bytes=32 * MiB, swap_bytes=16 * MiB)


@pytest.fixture
def img() -> QemuImg:
    return QemuImg(LocalTransport(), 64 * GiB)


@pytest.fixture
def instance(tmp_path):
    """A Nova-style instance: disk over _base, a standalone disk.local, a
    swap, a config drive, kernel, ramdisk and disk.info; returns
    (layout, [DiskFile])."""
    layout = InstanceLayout(str(tmp_path), str(uuidlib.uuid4()))
    os.makedirs(layout.base_dir)
    os.makedirs(layout.dir)
    base = layout.base_path('0123abcd')
    qemu_img('create', '-f', 'raw', base, '64M')
    qemu_img('create', '-f', 'qcow2', '-F', 'raw', '-b', base,
             layout.path('disk'), '64M')
    qemu_img('create', '-f', 'qcow2', layout.path('disk.local'), '16M')
    qemu_img('create', '-f', 'raw', layout.path('disk.swap'), '8M')
    for name in ('disk.config', 'kernel', 'ramdisk'):
        with open(layout.path(name), 'wb') as f:
            f.write(name.encode() * 100)
    with open(layout.path('disk.info'), 'w') as f:
        json.dump({layout.path('disk'): 'qcow2'}, f)

    def disk(name, role, fmt, size, backing=None, dev=None):
        return DiskFile(name=name, role=role, path=layout.path(name),
                        format=fmt, virtual_size=size, actual_size=0,
                        backing_file=backing, target_dev=dev)
    disks = [disk('disk', DiskRole.ROOT, 'qcow2', 64 * MiB, base, 'vda'),
             disk('disk.local', DiskRole.EPHEMERAL, 'qcow2', 16 * MiB,
                  dev='vdb'),
             disk('disk.swap', DiskRole.SWAP, 'raw', 8 * MiB, dev='vdc'),
             disk('disk.config', DiskRole.CONFIG, 'raw', 300, dev='hdd'),
             disk('kernel', DiskRole.KERNEL, 'file', 600),
             disk('ramdisk', DiskRole.RAMDISK, 'file', 700)]
    return layout, disks


def _tree_digest(directory: str) -> dict[str, str]:
    return {name: sha256(os.path.join(directory, name))
            for name in sorted(os.listdir(directory))}


def test_create_overlay_names_a_backing_file_that_does_not_exist_yet(
        tmp_path, img):
    path = str(tmp_path / 'ov')
    img.create_overlay(path, '/nonexistent/dir/disk', 'qcow2', 96 * MiB)
    info = img.info(path, 'qcow2')
    assert info.virtual_size == 96 * MiB
    assert info.backing_file == '/nonexistent/dir/disk'
    assert info.backing_format == 'qcow2'


def test_build_stages_everything_and_leaves_the_source_alone(instance, img):
    layout, disks = instance
    before = _tree_digest(layout.dir)
    staged = staging.build(layout, disks, NEW, img)
    assert _tree_digest(layout.dir) == before
    sdir = staging.staging_dir(layout)
    assert sorted(os.listdir(sdir)) == sorted(
        ['disk', 'disk.local', 'disk.swap', 'disk.config', 'kernel',
         'ramdisk', 'disk.info'])

    root = img.info(os.path.join(sdir, 'disk'), 'qcow2')
    assert root.virtual_size == 128 * MiB
    assert root.backing_file == layout.in_resize_dir('disk')
    assert root.backing_format == 'qcow2'
    eph = img.info(os.path.join(sdir, 'disk.local'), 'qcow2')
    assert eph.virtual_size == 32 * MiB
    assert eph.backing_file == layout.in_resize_dir('disk.local')

    swap = os.path.join(sdir, 'disk.swap')
    assert os.path.getsize(swap) == 16 * MiB
    with open(swap, 'rb') as f:
        f.seek(4096 - 10)
        assert f.read(10) == b'SWAPSPACE2'
    for name in ('disk.config', 'kernel', 'ramdisk'):
        assert os.path.samefile(os.path.join(sdir, name), layout.path(name))

    with open(os.path.join(sdir, 'disk.info')) as f:
        assert json.load(f) == {layout.path('disk'): 'qcow2',
                                layout.path('disk.local'): 'qcow2',
                                layout.path('disk.swap'): 'raw',
                                layout.path('disk.config'): 'raw'}

    # What define and the fold need: final paths, the folds' bases.
    by_name = {d.name: d for d in staged.disks}
    assert by_name['disk'].path == layout.path('disk')
    assert by_name['disk'].virtual_size == 128 * MiB
    assert by_name['disk.swap'].virtual_size == 16 * MiB
    assert [(f.target_dev, f.path, f.base) for f in staged.folds] == [
        ('vda', layout.path('disk'), layout.base_path('0123abcd')),
        ('vdb', layout.path('disk.local'), None)]


def test_put_in_place_reads_the_source_through_the_overlay(instance, img):
    layout, disks = instance
    subprocess.run(['qemu-io', '-f', 'qcow2', '-c', 'write -P 0x5a 1M 2M',
                    layout.path('disk')], check=True,
                   stdout=subprocess.DEVNULL)
    staging.build(layout, disks, NEW, img)
    os.rename(layout.dir, layout.resize_dir)     # migrate's move_to_resize
    staging.put_in_place(layout)
    assert not os.path.exists(staging.staging_dir(layout))
    assert img.info(layout.path('disk'), 'qcow2').backing_file == \
        layout.in_resize_dir('disk')
    # The chain opens: qemu-img compare reads both through their chains.
    qemu_img('compare', '-f', 'qcow2', '-F', 'qcow2',
             layout.in_resize_dir('disk'), layout.path('disk'))

    staging.take_back(layout)
    assert os.path.isdir(staging.staging_dir(layout))
    assert not os.path.exists(layout.dir)


def test_no_swap_in_the_new_flavor_stages_none(instance, img):
    layout, disks = instance
    staged = staging.build(
        layout, disks, Flavor(vcpus=1, memory_mib=256,
                              root_bytes=64 * MiB), img)
    assert 'disk.swap' not in os.listdir(staging.staging_dir(layout))
    assert 'disk.swap' not in {d.name for d in staged.disks}
    root = img.info(os.path.join(staging.staging_dir(layout), 'disk'),
                    'qcow2')
    assert root.virtual_size == 64 * MiB      # never smaller than it was


def test_disks_larger_than_the_new_flavor_are_staged_at_their_size(
        instance, img):
    layout, disks = instance
    staged = staging.build(layout, disks, Flavor(
        vcpus=2, memory_mib=512, root_bytes=32 * MiB,
        ephemeral_bytes=8 * MiB), img)
    sizes = {name: img.info(os.path.join(staging.staging_dir(layout), name),
                            'qcow2').virtual_size
             for name in ('disk', 'disk.local')}
    assert sizes == {'disk': 64 * MiB, 'disk.local': 16 * MiB}
    assert {d.name: d.virtual_size for d in staged.disks
            if d.name in sizes} == sizes


def test_a_swap_the_integration_makes_is_not_staged(instance, img):
    """Nova's image backend makes the new swap at finish, in the format
    its XML declares (a qcow2 under ``use_cow_images``): nothing is
    staged for it, and ``disk.info`` leaves it for Nova to name."""
    layout, disks = instance
    staged = staging.build(layout, disks, NEW, img, make_swap=False)
    sdir = staging.staging_dir(layout)
    assert 'disk.swap' not in os.listdir(sdir)
    assert 'disk.swap' not in {d.name for d in staged.disks}
    with open(os.path.join(sdir, 'disk.info')) as f:
        assert layout.path('disk.swap') not in json.load(f)


def test_build_replaces_a_leftover_staging_dir(instance, img):
    layout, disks = instance
    os.makedirs(staging.staging_dir(layout))
    with open(os.path.join(staging.staging_dir(layout), 'disk'), 'w') as f:
        f.write('half-made by a crashed build')
    staging.build(layout, disks, NEW, img)
    assert img.info(os.path.join(staging.staging_dir(layout), 'disk'),
                    'qcow2').virtual_size == 128 * MiB


def test_remove_drops_the_staging_dir_only(instance, img):
    layout, disks = instance
    before = _tree_digest(layout.dir)
    staging.build(layout, disks, NEW, img)
    staging.remove(layout)
    staging.remove(layout)      # idempotent: an undo may run twice
    assert not os.path.exists(staging.staging_dir(layout))
    assert _tree_digest(layout.dir) == before


def test_raw_root_is_refused(instance, img):
    layout, disks = instance
    disks[0] = DiskFile(name='disk', role=DiskRole.ROOT,
                        path=layout.path('disk'), format='raw',
                        virtual_size=64 * MiB, actual_size=0)
    with pytest.raises(exception.UnsupportedDisk, match='qcow2'):
        staging.build(layout, disks, NEW, img)
    assert not os.path.exists(staging.staging_dir(layout))


def test_take_back_never_moves_the_source_dir(instance, img):
    """Undo after a crash before the source was moved aside (or after
    migrate's own undo moved it back): ``<uuid>`` is the source itself."""
    layout, disks = instance
    before = _tree_digest(layout.dir)
    staging.build(layout, disks, NEW, img)
    staging.remove(layout)
    staging.take_back(layout)
    assert _tree_digest(layout.dir) == before


def _vfat(layout: InstanceLayout, device: str = 'disk',
          readonly: str = '') -> str:
    """A definition attaching the config drive as Nova 34 does: with
    ``config_drive_format = vfat`` a writable disk, with iso9660 a
    CD-ROM (read-only whatever the XML says)."""
    return DOMAIN_XML.format(
        name='g', uuid=layout.uuid, memory_kib=262144, vcpus=1,
        dir=layout.dir, root_type='qcow2', swap='',
        iso=layout.path('disk.config')).replace(
            "device='cdrom'", f"device='{device}'").replace(
            '<readonly/>', readonly)


def _overlay_migrate(layout, disks, img, xml):
    """The overlay plan's migrate steps run as the plan runs them, the
    power-off left out (no guest here)."""
    op = types.SimpleNamespace(
        inst=layout, disks=disks, new_flavor=NEW, source_xml=xml,
        makes_swap=True,
        env=types.SimpleNamespace(qemu_img=lambda: img),
        write_record=lambda: None, remove_record=lambda: None,
        power_off_step=lambda: None, power_on_again=lambda: None,
        move_to_resize=lambda: os.rename(layout.dir, layout.resize_dir),
        move_back=lambda: None)
    return {s.name: s for s in overlay.migrate_steps(op)}


def test_a_config_drive_the_guest_may_write_is_copied_not_linked(
        instance, img):
    """vfat: the resized guest's writes must not reach the kept source
    (the revert point), and the copy must hold what the guest wrote up
    to its power-off, not what it held at staging."""
    layout, disks = instance
    steps = _overlay_migrate(layout, disks, img, _vfat(layout))
    steps[stepname.STAGE_OVERLAYS].do()
    with open(layout.path('disk.config'), 'r+b') as f:
        f.write(b'written while running')      # before the power-off
    for name in (stepname.WRITE_RECORD, stepname.POWER_OFF,
                 stepname.MOVE_TO_RESIZE, stepname.PUT_STAGED_IN_PLACE):
        steps[name].do()
    kept = layout.in_resize_dir('disk.config')
    assert not os.path.samefile(layout.path('disk.config'), kept)
    assert sha256(layout.path('disk.config')) == sha256(kept)
    with open(layout.path('disk.config'), 'r+b') as f:
        f.write(b'the resized guest')
    with open(kept, 'rb') as f:
        assert f.read(21) == b'written while running'


@pytest.mark.parametrize('device, readonly', [('cdrom', ''),
                                              ('disk', '<readonly/>')])
def test_a_read_only_config_drive_is_linked(instance, img, device,
                                            readonly):
    layout, disks = instance
    steps = _overlay_migrate(layout, disks, img,
                             _vfat(layout, device, readonly))
    steps[stepname.STAGE_OVERLAYS].do()
    assert os.path.samefile(
        os.path.join(staging.staging_dir(layout), 'disk.config'),
        layout.path('disk.config'))
