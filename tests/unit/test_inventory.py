from __future__ import annotations

import os

import pytest

from resizedriver import exception
from resizedriver import inventory
from resizedriver.layout import InstanceLayout
from resizedriver.model import DiskFile, DiskRole, Flavor, GiB, MiB
from resizedriver.qemuimg import QemuImg
from resizedriver.transport import LocalTransport
from tests.unit.conftest import make_instance, qemu_img


@pytest.fixture
def qimg() -> QemuImg:
    return QemuImg(LocalTransport(), 64 * GiB)


def layout_of(inst) -> InstanceLayout:
    return InstanceLayout(inst.instances, inst.uuid)


def test_discover_real_layout(instance, qimg):
    disks = inventory.discover(instance.xml, layout_of(instance), qimg)
    by_name = {d.name: d for d in disks}
    # the ISO outside the instance dir and console.log are not ours
    assert sorted(by_name) == ['disk', 'disk.local', 'kernel']
    root = by_name['disk']
    assert root.role is DiskRole.ROOT
    assert root.format == 'qcow2'
    assert root.virtual_size == 8 * MiB
    assert root.path == instance.path('disk')
    assert root.target_dev == 'vda'
    assert os.path.dirname(root.backing_file) == os.path.join(
        instance.instances, '_base')
    assert os.path.isfile(root.backing_file)
    local = by_name['disk.local']
    assert (local.role, local.format, local.virtual_size, local.target_dev,
            local.backing_file) == (DiskRole.EPHEMERAL, 'raw', 4 * MiB,
                                    'vdb', None)
    assert local.actual_size < 4 * MiB        # sparse: a few blocks only
    kernel = by_name['kernel']
    assert (kernel.role, kernel.format, kernel.virtual_size,
            kernel.actual_size) == (DiskRole.KERNEL, 'file', 3000, 3000)


def test_discover_includes_swap(instances, qimg):
    inst = make_instance(instances, swap_mib=2)
    disks = inventory.discover(inst.xml, layout_of(inst), qimg)
    swap = [d for d in disks if d.role is DiskRole.SWAP]
    assert [(d.name, d.virtual_size, d.target_dev) for d in swap] == \
        [('disk.swap', 2 * MiB, 'vdc')]


def test_disk_symlink_out_of_instance_dir_is_unsafe(instance, qimg,
                                                   tmp_path):
    outside = tmp_path / 'outside.raw'
    qemu_img('create', '-f', 'raw', str(outside), '1M')
    os.unlink(instance.path('disk.local'))
    os.symlink(outside, instance.path('disk.local'))
    with pytest.raises(exception.UnsafePath):
        inventory.discover(instance.xml, layout_of(instance), qimg)


def test_kernel_symlink_out_of_instance_dir_is_unsafe(instance, qimg,
                                                     tmp_path):
    secret = tmp_path / 'secret'
    secret.write_text('x')
    os.unlink(instance.path('kernel'))
    os.symlink(secret, instance.path('kernel'))
    with pytest.raises(exception.UnsafePath):
        inventory.discover(instance.xml, layout_of(instance), qimg)


def test_backing_file_outside_base_is_unsafe(instance, qimg, tmp_path):
    other = tmp_path / 'elsewhere'
    other.mkdir()
    base = other / 'base.raw'
    qemu_img('create', '-f', 'raw', str(base), '8M')
    os.unlink(instance.path('disk'))
    qemu_img('create', '-f', 'qcow2', '-F', 'raw', '-b', str(base),
             instance.path('disk'), '8M')
    with pytest.raises(exception.UnsafePath, match='backing file'):
        inventory.discover(instance.xml, layout_of(instance), qimg)


def test_backing_file_symlinked_out_of_base_is_unsafe(instance, qimg,
                                                     tmp_path):
    real = tmp_path / 'real-base.raw'
    qemu_img('create', '-f', 'raw', str(real), '8M')
    link = os.path.join(instance.instances, '_base', 'link')
    os.symlink(real, link)
    os.unlink(instance.path('disk'))
    qemu_img('create', '-f', 'qcow2', '-F', 'raw', '-b', link,
             instance.path('disk'), '8M')
    with pytest.raises(exception.UnsafePath):
        inventory.discover(instance.xml, layout_of(instance), qimg)


def test_unknown_file_name_is_unsupported(instance, qimg):
    qemu_img('create', '-f', 'raw', instance.path('data.img'), '1M')
    xml = instance.xml.replace(f"{instance.dir}/disk.local'",
                               f"{instance.dir}/data.img'")
    with pytest.raises(exception.UnsupportedDisk, match='unknown file'):
        inventory.discover(xml, layout_of(instance), qimg)


def test_disk_defined_raw_is_read_as_raw_whatever_its_header(instance, qimg):
    # The definition says raw, the file has a qcow2 header (as a guest can
    # write into its raw disk): it is guest data, handled as raw, and its
    # header's backing file is never followed (CVE-2024-32498 class).
    xml = instance.xml.replace("type='qcow2' cache='none'",
                               "type='raw' cache='none'")
    assert xml != instance.xml
    root = next(d for d in inventory.discover(xml, layout_of(instance), qimg)
                if d.name == 'disk')
    assert root.format == 'raw'
    assert root.backing_file is None
    # the file's own size (in whole sectors), not the header's claim
    size = os.path.getsize(instance.path('disk'))
    assert root.virtual_size == -(-size // 512) * 512


def test_vmdk_disk_is_unsupported(instance, qimg):
    os.unlink(instance.path('disk.local'))
    qemu_img('create', '-f', 'vmdk', instance.path('disk.local'), '1M')
    xml = instance.xml.replace(
        f"<driver name='qemu' type='raw' cache='none'/>\n      "
        f"<source file='{instance.dir}/disk.local'/>",
        f"<driver name='qemu' type='vmdk' cache='none'/>\n      "
        f"<source file='{instance.dir}/disk.local'/>")
    assert xml != instance.xml
    with pytest.raises(exception.UnsupportedDisk, match='vmdk'):
        inventory.discover(xml, layout_of(instance), qimg)


@pytest.mark.parametrize('fmt', ['vmdk', 'vdi', 'qed', 'vpc'])
def test_qemuimg_refuses_other_formats(tmp_path, qimg, fmt):
    path = tmp_path / f'img.{fmt}'
    qemu_img('create', '-f', fmt, str(path), '1M')
    with pytest.raises(exception.UnsupportedDisk, match='not supported'):
        qimg.info(str(path))


def test_qemuimg_refuses_external_data_file(tmp_path, qimg):
    path = tmp_path / 'disk'
    qemu_img('create', '-f', 'qcow2', '-o',
             f'data_file={tmp_path / "data.raw"}', str(path), '1M')
    with pytest.raises(exception.UnsupportedDisk, match='data file'):
        qimg.info(str(path))


def test_discover_refuses_external_data_file(instance, qimg, tmp_path):
    os.unlink(instance.path('disk'))
    qemu_img('create', '-f', 'qcow2', '-o',
             f'data_file={tmp_path / "data.raw"}', instance.path('disk'),
             '8M')
    with pytest.raises(exception.UnsupportedDisk, match='data file'):
        inventory.discover(instance.xml, layout_of(instance), qimg)


def test_absurd_virtual_size_is_unsupported(instance):
    small = QemuImg(LocalTransport(), max_virtual_size=4 * MiB)
    with pytest.raises(exception.UnsupportedDisk, match='out of range'):
        inventory.discover(instance.xml, layout_of(instance), small)
    # exactly at the limit is fine
    info = small.info(instance.path('disk.local'))
    assert info.virtual_size == 4 * MiB


def test_qemuimg_info_plain_images(tmp_path, qimg):
    raw = tmp_path / 'r'
    qemu_img('create', '-f', 'raw', str(raw), '3M')
    info = qimg.info(str(raw))
    assert (info.format, info.virtual_size, info.backing_file) == \
        ('raw', 3 * MiB, None)
    over = tmp_path / 'o'
    qemu_img('create', '-f', 'qcow2', '-F', 'raw', '-b', str(raw),
             str(over), '5M')
    info = qimg.info(str(over))
    assert (info.format, info.virtual_size, info.backing_file,
            info.backing_format) == ('qcow2', 5 * MiB, str(raw), 'raw')


def test_qemuimg_missing_file_is_command_failed(tmp_path, qimg):
    with pytest.raises(exception.CommandFailed):
        qimg.info(str(tmp_path / 'nope'))


def test_current_flavor(instances, qimg):
    inst = make_instance(instances, swap_mib=2, vcpus=3, memory_mib=768)
    disks = inventory.discover(inst.xml, layout_of(inst), qimg)
    assert inventory.current_flavor(inst.xml, disks) == Flavor(
        vcpus=3, memory_mib=768, root_bytes=8 * MiB,
        ephemeral_bytes=4 * MiB, swap_bytes=2 * MiB)


def test_current_flavor_without_disks(instance):
    assert inventory.current_flavor(instance.xml, []) == Flavor(
        vcpus=1, memory_mib=256, root_bytes=0)


def _disk(name, role, size):
    return DiskFile(name=name, role=role, path='/i/' + name, format='raw',
                    virtual_size=size, actual_size=0)


DISKS = [_disk('disk', DiskRole.ROOT, 10 * MiB),
         _disk('disk.local', DiskRole.EPHEMERAL, 4 * MiB),
         _disk('disk.swap', DiskRole.SWAP, 8 * MiB)]


@pytest.mark.parametrize('root,eph,swap', [
    (10 * MiB, 4 * MiB, 8 * MiB),     # same
    (0, 0, 0),                        # 0 = keep
    (20 * MiB, 5 * MiB, 1 * MiB),     # growth; swap may shrink
    (0, 6 * MiB, 0)])
def test_check_no_shrink_accepts(root, eph, swap):
    inventory.check_no_shrink(DISKS, Flavor(1, 1, root, eph, swap))


@pytest.mark.parametrize('root,eph,name', [
    (10 * MiB - 1, 0, 'disk'),
    (0, 4 * MiB - 1, 'disk.local'),
    (1 * MiB, 1 * MiB, 'disk')])
def test_check_no_shrink_refuses(root, eph, name):
    with pytest.raises(exception.DiskShrinkRefused, match=name):
        inventory.check_no_shrink(DISKS, Flavor(1, 1, root, eph))


def test_check_no_shrink_refuses_any_ephemeral():
    disks = DISKS + [_disk('disk.eph1', DiskRole.EPHEMERAL, 6 * MiB)]
    with pytest.raises(exception.DiskShrinkRefused, match='disk.eph1'):
        inventory.check_no_shrink(disks, Flavor(1, 1, 0, 5 * MiB))


def test_larger_than_asked_are_root_and_ephemeral_disks_only():
    # swap is made anew at any size, 0 asks for nothing
    assert inventory.larger_than_asked(
        DISKS, Flavor(1, 1, 10 * MiB, 0, 1 * MiB)) == []
    assert [d.name for d in inventory.larger_than_asked(
        DISKS, Flavor(1, 1, 5 * MiB, 2 * MiB))] == ['disk', 'disk.local']


def test_inside():
    assert inventory.inside('/a/b/c', '/a/b')
    assert not inventory.inside('/a/b/c/d', '/a/b')
    assert not inventory.inside('/a/b/../x', '/a/b')
    assert not inventory.inside('/a/bc/d', '/a/b')
