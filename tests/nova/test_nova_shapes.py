"""Instances whose flavor has an ephemeral disk and swap, inside Nova 34.

Most real flavors have both.  Nova's spawn makes them qcow2 overlays over
``_base/ephemeral_*`` and ``_base/swap_*`` (``use_cow_images``), named
``disk.local`` from the flavor or ``disk.eph0`` from the instance's block
device mappings (which Nova's API makes for every new server); the swap
mapping follows the flavor at finish_resize and revert.  Each test
resizes one instance up and confirms, then again and reverts, and
checks every disk the guest sees after each step: root on vda, the
ephemeral disk on vdb, swap on vdc.  The tests share out the two ways
Nova names them (each plan's code is the same for both): the overlay
plan's instance has the mappings, the live plan's has none, and of the
moves to host B (``test_nova_cross_host.py``) one each.
"""

from __future__ import annotations

import json
import os

from resizedriver.qemuimg import read_header
from tests.nova import novaenv
from tests.nova.test_nova_live import ROOM, _plan, _report
from tests.nova.test_nova_resize import (assert_no_resize_left, resize,
                                         revert)

GiB = 1024 ** 3
MiB = 1024 ** 2


def shaped(flavorid: str, vcpus: int, memory_mb: int, root_gb: int,
           ephemeral_gb: int, swap_mb: int, extra_specs=None):
    return novaenv.flavor(flavorid, vcpus, memory_mb, root_gb, extra_specs,
                          ephemeral_gb=ephemeral_gb, swap=swap_mb)


def disks(root_gb: int, ephemeral_gb: int, swap_mb: int) -> dict:
    """What the guest reports for a flavor's disks."""
    return {'vda': root_gb * GiB, 'vdb': ephemeral_gb * GiB,
            'vdc': swap_mb * MiB}


def assert_disk_info_true(directory: str) -> None:
    """``disk.info`` (which Nova trusts over probing) names every disk of
    the instance with the format its file has."""
    with open(os.path.join(directory, 'disk.info')) as f:
        info = json.load(f)
    names = {os.path.basename(p) for p in info}
    assert {'disk', 'disk.swap'} <= names, info
    for path, fmt in info.items():
        # the file as this host sees it (B's through its mount namespace)
        here = os.path.join(directory, os.path.basename(path))
        assert (read_header(here).format or 'raw') == fmt, (path, info)


def test_overlay_resize_with_ephemeral_and_swap(make_server):
    server = make_server(shaped('41', 1, 256, 1, 1, 64), local_bdms=True)
    assert server.wait_boot(1).disks == disks(1, 1, 64)

    mig = resize(server, shaped('42', 1, 256, 2, 2, 128))
    assert _plan(server) == 'overlay'
    assert server.wait_boot(2).disks == disks(2, 2, 128)
    server.driver.confirm_migration(server.ctx, mig, server.instance,
                                    server.nw)
    assert_no_resize_left(server)
    assert_disk_info_true(server.dir)
    assert server.driver.get_info(server.instance).state == 1
    assert server.ping()

    mig = resize(server, shaped('43', 1, 256, 3, 3, 96))
    assert _plan(server) == 'overlay'
    assert server.wait_boot(3).disks == disks(3, 3, 96)
    revert(server, mig)
    back = server.wait_boot(3)          # the kept copy had booted twice
    assert back.disks == disks(2, 2, 128)
    assert_no_resize_left(server)
    assert server.ping()


def test_live_resize_with_ephemeral_and_swap(make_server):
    """Root and ephemeral disks grow live, swap stays; a revert keeps the
    grown disks (the guest may have written to them)."""
    server = make_server(shaped('44', 1, 256, 1, 1, 64, ROOM))
    before = server.wait_boot(1)
    assert before.disks == disks(1, 1, 64)

    mig = resize(server, shaped('45', 1, 256, 2, 2, 64, ROOM))
    assert _plan(server) == 'live'
    _report(server, 'the grown disks', lambda r: r.disks == disks(2, 2, 64))
    server.driver.confirm_migration(server.ctx, mig, server.instance,
                                    server.nw)
    assert_no_resize_left(server)

    mig = resize(server, shaped('46', 1, 512, 2, 3, 64, ROOM))
    assert _plan(server) == 'live'
    _report(server, '+256 MiB and a 3 GiB vdb', lambda r: (
        r.mem_kb - before.mem_kb == 256 * 1024 and
        r.disks == disks(2, 3, 64)))
    revert(server, mig)
    back = _report(server, 'its old memory', lambda r:
                  r.mem_kb == before.mem_kb)
    assert back.disks == disks(2, 3, 64)
    assert back.boot == 1                       # never stopped
    assert_no_resize_left(server)
    assert server.ping()

