"""The live plan: when the chooser takes it, and how its revert goes."""

from __future__ import annotations

import pytest

from resizedriver import chooser
from resizedriver import exception
from resizedriver import headroom
from resizedriver.headroom import Headroom
from resizedriver.model import DiskFile, DiskRole, Flavor, MiB, Topology
from resizedriver.operations import live
from tests.unit.test_headroom import XML

OLD = Flavor(vcpus=1, memory_mib=256, root_bytes=64 * MiB)
ROOMY = headroom.apply(XML, Headroom(4, 1024), 1, 256)
DISKS = [DiskFile('disk', DiskRole.ROOT, '/i/u/disk', 'qcow2', 64 * MiB,
                  MiB, '/i/_base/x', 'vda')]


def _blockers(new: Flavor, xml: str = ROOMY, running: bool = True,
              disks: list[DiskFile] = DISKS) -> list[str]:
    return live.blockers(running, xml, OLD, new, disks, True)


def test_growth_within_the_headroom_can_be_live():
    assert _blockers(Flavor(2, 512, 128 * MiB)) == []
    # a disk needs no headroom
    assert _blockers(Flavor(1, 256, 128 * MiB), xml=XML) == []


def test_a_disk_larger_than_the_new_flavor_is_no_reason_to_go_cold():
    # (a revert kept it grown): it keeps its size, nothing to grow
    assert _blockers(Flavor(2, 512, 32 * MiB)) == []
    no_device = [DiskFile('disk', DiskRole.ROOT, '/i/u/disk', 'qcow2',
                          64 * MiB, MiB, None, None)]
    assert _blockers(Flavor(2, 512, 32 * MiB), disks=no_device) == []


@pytest.mark.parametrize('new, xml, why', [
    (Flavor(5, 256, 64 * MiB), ROOMY, "beyond the domain's headroom of 4"),
    (Flavor(1, 2048, 64 * MiB), ROOMY, 'beyond the domain\'s headroom of '
                                       '1024 MiB'),
    (Flavor(1, 512, 64 * MiB), XML, 'no virtio-mem device'),
    (Flavor(1, 257, 64 * MiB), ROOMY, 'whole 2 MiB blocks'),
    (Flavor(1, 256, 64 * MiB, swap_bytes=MiB), ROOMY, 'swap changes'),
])
def test_what_stops_a_live_resize(new, xml, why):
    assert why in '; '.join(_blockers(new, xml=xml))


def test_shrinking_and_stopped_guests_and_conversions_are_not_live():
    two = headroom.apply(XML, Headroom(4, 0), 2, 256)
    assert live.blockers(True, two, Flavor(2, 256, 0), OLD, DISKS,
                         True) == ['fewer vCPUs (2 -> 1)']
    assert _blockers(Flavor(2, 512, 0), running=False) == \
        ['the guest is not running']
    raw = [DiskFile('disk', DiskRole.ROOT, '/i/u/disk', 'raw', 64 * MiB,
                    MiB, None, 'vda')]
    assert 'a conversion is a cold resize' in _blockers(
        Flavor(1, 256, 128 * MiB), disks=raw)[0]


def test_the_chooser_takes_live_first_and_says_why_not():
    choose = chooser.choose
    assert choose(Topology.SAME_HOST, DISKS, use_cow_images=True,
                  live='auto').plan == chooser.LIVE
    why_not = choose(Topology.SAME_HOST, DISKS, use_cow_images=True,
                     live='auto', live_blockers=['swap changes'])
    assert why_not.plan == chooser.OVERLAY
    assert 'not live: swap changes' in why_not.reason
    assert choose(Topology.SAME_HOST, DISKS, use_cow_images=True,
                  live='never').plan == chooser.OVERLAY
    assert choose(Topology.OTHER_HOST, DISKS, use_cow_images=True,
                  live='auto').plan == chooser.COPY
    assert choose(Topology.SAME_HOST, DISKS, use_cow_images=True,
                  live='auto', offered=(chooser.OVERLAY, chooser.COPY)
                  ).plan == chooser.OVERLAY
    with pytest.raises(exception.ResizeRefused,
                       match='not possible: swap changes'):
        choose(Topology.SAME_HOST, DISKS, use_cow_images=True,
               live='always', live_blockers=['swap changes'])
    with pytest.raises(exception.ResizeRefused, match='not this host'):
        choose(Topology.OTHER_HOST, DISKS, use_cow_images=True,
               live='always')


def test_a_revert_reboots_only_for_vcpus_that_cannot_be_unplugged():
    class Conf:
        class resizedriver:
            vcpu_hot_unplug = True
    assert not live.unplug_supported(Conf, (7, 2, 22))   # hangs there
    assert live.unplug_supported(Conf, (9, 0, 0))
    Conf.resizedriver.vcpu_hot_unplug = False
    assert not live.unplug_supported(Conf, (9, 0, 0))
    assert live.revert_mode(OLD, Flavor(2, 256, 0), False) == 'reboot'
    assert live.revert_mode(OLD, Flavor(2, 256, 0), True) == 'live'
    assert live.revert_mode(OLD, Flavor(1, 512, 0), False) == 'live'


class _Host:
    def __init__(self, guest) -> None:
        self.guest = guest

    def lookup(self, uuid):
        return self.guest


class _Guest:
    def __init__(self, live_xml: str, running: bool = True) -> None:
        self._xml = live_xml
        self.running = running

    def is_running(self) -> bool:
        return self.running

    def live_xml(self) -> str:
        return self._xml


def _record(new: Flavor, live_revert: str = 'live'):
    import types
    from resizedriver.layout import InstanceLayout
    return types.SimpleNamespace(
        uuid='11111111-2222-3333-4444-555555555555', old_flavor=OLD,
        new_flavor=new, disks=DISKS, live_revert=live_revert,
        source=InstanceLayout('/i', '11111111-2222-3333-4444-555555555555'))


def _env(guest):
    import types
    return types.SimpleNamespace(host=_Host(guest))


def _names(steps) -> list[str]:
    return [s.name for s in steps]


def test_a_revert_reboots_a_guest_that_booted_with_the_new_memory():
    """Review: a host reboot while RESIZED boots the guest with the new
    flavor's memory (Nova's hard reboot); a live revert would ask
    virtio-mem for a negative size."""
    booted_new = headroom.apply(XML, Headroom(4, 1024), 1, 512)
    steps = live.revert_steps(_env(_Guest(booted_new)),
                              _record(Flavor(1, 512, 64 * MiB)),
                              lambda: None, lambda: None)
    assert _names(steps)[0] == 'shut down resized guest'
    # booted with the old memory, plugged the new: live
    steps = live.revert_steps(_env(_Guest(ROOMY)),
                              _record(Flavor(1, 512, 64 * MiB)),
                              lambda: None, lambda: None)
    assert _names(steps)[0] == 'shrink memory'


def test_undoing_memory_of_a_guest_that_is_off_is_done():
    """Review: after a host crash mid finish the guest is off; the undo
    of 'grow memory' must not fail recovery for ever (the next boot has
    the old definition's memory anyway)."""
    live.undo_memory(_env(_Guest(ROOMY, running=False)),
                     _record(Flavor(1, 512, 64 * MiB)))
