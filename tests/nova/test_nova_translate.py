"""Nova's objects as the engine reads them (no guest, no libvirtd): an
instance with several ephemeral disks, as Nova's API lays them out.

A server may ask for several ephemeral block devices (``--ephemeral
size=1 --ephemeral size=2``) whose sizes add up to at most the flavor's
``ephemeral_gb``; Nova names them ``disk.eph0``, ``disk.eph1``, ... and
its block device info lists each with its own size.  A new flavor has one
ephemeral size, which says nothing of how to split it: Nova's own
``finish_migration`` grows only ``disk.local`` (``_disk_size_from_
instance``) and leaves every ``disk.eph<N>`` as it is.
"""

from __future__ import annotations

from types import SimpleNamespace

from nova import block_device, objects
from nova.virt import block_device as driver_block_device

from resizedriver.model import GiB, DiskFile, DiskRole, grown_size
from resizedriver.nova import translate

objects.register_all()


def nova_flavor(ephemeral_gb: int):
    return objects.Flavor(vcpus=1, memory_mb=256, root_gb=1,
                          ephemeral_gb=ephemeral_gb, swap=0)


def block_device_info(*sizes: int) -> dict:
    """What the compute manager hands the driver for ephemeral block
    devices of ``sizes`` GiB (``driver.get_block_device_info``'s
    format)."""
    bdms = [objects.BlockDeviceMapping(**block_device.BlockDeviceDict(
        dict(block_device.create_blank_bdm(size),
             device_name=f'/dev/vd{chr(ord("b") + i)}')))
            for i, size in enumerate(sizes)]
    return {'root_device_name': '/dev/vda', 'block_device_mapping': [],
            'swap': None,
            'ephemerals': driver_block_device.convert_ephemerals(bdms)}


def ephemeral(name: str, gb: int) -> DiskFile:
    return DiskFile(name=name, role=DiskRole.EPHEMERAL, path='/i/' + name,
                    format='qcow2', virtual_size=gb * GiB, actual_size=0)


def test_several_ephemeral_disks_keep_their_sizes():
    """Flavor 3 GiB split 1 + 2, new flavor 4 GiB: neither becomes a
    4 GiB disk (7 GiB where the flavor has 4)."""
    new = translate.flavor(nova_flavor(4), block_device_info(1, 2))
    assert [grown_size(ephemeral(f'disk.eph{i}', gb), new) // GiB
            for i, gb in enumerate((1, 2))] == [1, 2]


def test_one_ephemeral_disk_grows_to_the_new_flavor():
    for info in (None, block_device_info(1)):
        new = translate.flavor(nova_flavor(2), info)
        for name in ('disk.local', 'disk.eph0'):
            assert grown_size(ephemeral(name, 1), new) == 2 * GiB


def test_an_ephemeral_shrink_is_refused_from_the_flavors():
    """As Nova's ``migrate_disk_and_power_off`` decides it: the old
    flavor's ``ephemeral_gb``, however it is split."""
    inst = SimpleNamespace(flavor=nova_flavor(3))
    assert translate.disk_down(inst, nova_flavor(2),
                               block_device_info(1, 2)) == \
        'the ephemeral disks from their 3 GiB to 2 GiB'
    assert translate.disk_down(inst, nova_flavor(3),
                               block_device_info(1, 2)) == ''
