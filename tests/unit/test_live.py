"""The live plan: when the chooser takes it, and how its revert goes."""

from __future__ import annotations

import dataclasses

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
def _plugged(mib: int) -> str:
    """ROOMY's live XML once its virtio-mem device plugged ``mib``."""
    from lxml import etree
    root = etree.fromstring(ROOMY.encode())
    device = root.find('./devices/memory[@model="virtio-mem"]')
    root.find('devices').replace(device, etree.fromstring(
        headroom.requested_xml(ROOMY, mib).encode()))
    return etree.tostring(root).decode()


#: a guest that plugged 256 MiB into its virtio-mem device
PLUGGED = _plugged(256)

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
    """A guest whose virtio-mem never gives memory back (it uses it)."""

    name = 'instance-live-unit'

    def __init__(self, live_xml: str, running: bool = True) -> None:
        self._xml = live_xml
        self.running = running
        self.calls: list[str] = []

    def is_running(self) -> bool:
        return self.running

    def live_xml(self) -> str:
        return self._xml

    def update_device_live(self, xml: str) -> None:
        self.calls.append('unplug')

    def power_off(self, timeout: float, retry_interval: float) -> bool:
        self.calls.append('power off')
        self.running = False
        return True

    def ensure_running(self, timeout: float) -> None:
        self.calls.append('start')
        self.running = True


def _record(new: Flavor, live_revert: str = 'live', path: str = '/i'):
    import types
    from resizedriver.layout import InstanceLayout
    return types.SimpleNamespace(
        uuid='11111111-2222-3333-4444-555555555555', old_flavor=OLD,
        new_flavor=new, disks=DISKS, live_revert=live_revert,
        source_xml='<domain>old flavor</domain>',
        source=InstanceLayout(path, '11111111-2222-3333-4444-555555555555'))


def _env(guest):
    import types
    conf = types.SimpleNamespace(resizedriver=types.SimpleNamespace(
        live_timeout=0, shutdown_timeout=1, shutdown_retry_interval=1,
        start_timeout=1))
    return types.SimpleNamespace(host=_Host(guest), conf=conf)


def _names(steps) -> list[str]:
    return [s.name for s in steps]


def test_a_revert_reboots_a_guest_that_booted_with_the_new_memory():
    """Review: a host reboot while RESIZED boots the guest with the new
    flavor's memory (Nova's hard reboot); a live revert would ask
    virtio-mem for a negative size."""
    booted_new = headroom.apply(XML, Headroom(4, 1024), 1, 512)
    rec = _record(Flavor(1, 512, 64 * MiB))
    assert live.decide_revert(_env(_Guest(booted_new)), rec) == 'reboot'
    # booted with the old memory, plugged the new: live
    assert live.decide_revert(_env(_Guest(PLUGGED)), rec) == 'live'
    assert _names(live.revert_steps(_env(None), rec, 'live', lambda: None,
                                    lambda: None))[0] == 'shrink memory'


def test_undoing_memory_of_a_guest_that_is_off_is_done():
    """Review: after a host crash mid finish the guest is off; the undo
    of 'grow memory' must not fail recovery for ever (the next boot has
    the old definition's memory anyway)."""
    live.undo_memory(_env(_Guest(ROOMY, running=False)),
                     _record(Flavor(1, 512, 64 * MiB)))




def test_a_live_revert_whose_guest_keeps_its_memory_reboots_once(
        tmp_path):
    """Issue 20 item 4: the guest uses the memory it was given, so the
    unplug never completes; the revert must not fail for good (Nova
    would put the instance in ERROR with placement already back at the
    old flavor) but reboot it once into the old flavor."""
    from resizedriver.plan import Plan
    guest = _Guest(PLUGGED)
    rec = _record(Flavor(1, 512, 64 * MiB), path=str(tmp_path))
    defined: list[bool] = []
    steps = live.revert_steps(_env(guest), rec,
                              live.decide_revert(_env(guest), rec),
                              lambda: defined.append(guest.running),
                              lambda: guest.ensure_running(1))
    Plan('finish_revert_migration', rec.uuid, steps, forward=True).run()
    assert guest.calls == ['unplug', 'power off', 'start']
    # the old definition is what boots; the define step then runs again
    assert defined == [False, True]
    assert guest.running


def test_undoing_grown_memory_the_guest_keeps_reboots_it():
    """Issue 20 item 4, in a failed finish: the undo of 'grow memory'
    cannot unplug either; the guest reboots into its old definition
    rather than leave the finish's undo incomplete."""
    guest = _Guest(PLUGGED)
    env = _env(guest)
    defined: list[tuple[str, bool]] = []
    env.host.define = lambda xml: defined.append((xml, guest.running))
    rec = _record(Flavor(1, 512, 64 * MiB))
    live.undo_memory(env, rec)
    assert guest.calls == ['unplug', 'power off', 'start']
    assert defined == [(rec.source_xml, False)]


def test_a_revert_goes_on_as_it_was_decided_when_it_began(tmp_path):
    """Issue 20 item 5: the revert's decision is in its journal when it
    begins, and the revert rebuilt from that journal (after a crash that
    left the guest off) follows it, not the guest's state.  (That it
    then ends running under Nova: tests/nova/test_nova_live.py.)"""
    from resizedriver.operations.revert import FinishRevertMigration
    guest = _Guest(headroom.apply(XML, Headroom(4, 1024), 2, 256))
    env = _env(guest)
    rec = _record(Flavor(2, 256, 64 * MiB), 'reboot', str(tmp_path))
    rec.plan, rec.to_dict = 'live', lambda: {}
    begun = FinishRevertMigration(env, rec, None, True)
    assert _names(begun.plan().steps)[0] == 'shut down resized guest'
    context = begun.journal_context()
    assert context[live.DECISION] == 'reboot'

    guest.running = False          # shut down, then the crash
    again = FinishRevertMigration(env, rec, None, True,
                                  context[live.DECISION])
    assert _names(again.plan().steps) == [
        'shut down resized guest', 'define source domain', 'start guest',
        'remove resize record']
    # re-decided from the state, it would be another revert
    assert FinishRevertMigration(env, rec, None, True).live_decision() == \
        'off'


#: the instance's own RBD root image, as the live plan records it
RBD_ROOT = DiskFile('disk', DiskRole.ROOT,
                    'vms/11111111-2222-3333-4444-555555555555_disk', 'rbd',
                    64 * MiB, 0, None, 'vda')


def test_rbd_disks_are_live_rbd_or_upstream():
    """Rules 1, 1b, 1c: an RBD instance whose resize the live plan can do
    goes live; a running guest whose images are its root, config
    drive, ephemeral disk and swap (beside its kernel and ramdisk files)
    the ``rbd`` plan, on any host; anything
    else about RBD is Nova's own (never refused for it, never copied),
    unless live resize is ``always``."""
    kernel = DiskFile('kernel', DiskRole.KERNEL, '/i/kernel', 'file', 1, 1)
    ephemeral = dataclasses.replace(RBD_ROOT, name='disk.local',
                                    role=DiskRole.EPHEMERAL)

    def choose(topology=Topology.SAME_HOST, live='auto', blockers=(),
               disks=(RBD_ROOT, kernel), running=True, offered=None,
               rbd_blockers=()):
        return chooser.choose(topology, list(disks), use_cow_images=True,
                              live=live, live_blockers=blockers,
                              running=running, pre_copy=True,
                              offered=offered or chooser.ENGINE_PLANS,
                              rbd_blockers=rbd_blockers)
    assert _blockers(Flavor(2, 512, 128 * MiB), disks=[RBD_ROOT]) == []
    assert choose().plan == chooser.LIVE
    cold = choose(blockers=['fewer vCPUs (2 -> 1)'])
    assert cold.plan == chooser.RBD_COLD
    assert cold.reason.startswith(
        'Ceph RBD disk, not live (fewer vCPUs (2 -> 1)): an RBD snapshot')
    assert choose(live='never').plan == chooser.RBD_COLD
    assert choose(Topology.OTHER_HOST).plan == chooser.RBD_COLD
    # a config drive Nova imported into the cluster goes with the root
    config = dataclasses.replace(RBD_ROOT, name='disk.config',
                                 role=DiskRole.CONFIG, target_dev='sda')
    assert choose(Topology.OTHER_HOST,
                  disks=(RBD_ROOT, config, kernel)).plan == chooser.RBD_COLD
    # and its ephemeral and swap images
    swap = dataclasses.replace(RBD_ROOT, name='disk.swap',
                               role=DiskRole.SWAP, target_dev='vdc')
    assert choose(live='never', disks=(RBD_ROOT, ephemeral, swap,
                                       kernel)).plan == chooser.RBD_COLD
    local_config = DiskFile('disk.config', DiskRole.CONFIG,
                            '/i/disk.config', 'raw', 1, 1)
    local_ephemeral = DiskFile('disk.local', DiskRole.EPHEMERAL,
                               '/i/disk.local', 'qcow2', 1, 1)
    for why, upstream in (
            ('the guest is not running',
             choose(live='never', running=False)),
            ('disk.local', choose(live='never',
                                  disks=(RBD_ROOT, local_ephemeral))),
            ('disk.config', choose(live='never',
                                   disks=(RBD_ROOT, local_config))),
            ('does not offer it', choose(
                live='never', offered=(chooser.LIVE, chooser.COPY))),
            ('new flavor adds swap', choose(
                live='never', rbd_blockers=['the new flavor adds swap']))):
        assert upstream.plan == chooser.UPSTREAM
        assert why in upstream.reason
    with pytest.raises(exception.ResizeRefused, match='not possible'):
        choose(live='always', blockers=['swap changes'])


class _Growing(_Guest):
    """A guest whose disk QEMU grows (``blockResize``)."""

    def __init__(self, size: int) -> None:
        super().__init__(ROOMY)
        self.size = size

    def block_capacity(self, dev: str) -> int:
        return self.size

    def block_resize(self, dev: str, size: int) -> None:
        self.calls.append(f'blockResize {dev} {size}')
        self.size = size


def test_an_rbd_disk_grows_live_and_is_read_back_from_the_cluster():
    guest = _Growing(64 * MiB)
    rec = _record(Flavor(1, 256, 128 * MiB))
    rec.disks = [RBD_ROOT]
    asked = []

    def cluster(disk: DiskFile) -> int:
        asked.append(disk.path)
        return 128 * MiB
    live.grow_disks(_env(guest), rec, cluster)
    assert guest.calls == [f'blockResize vda {128 * MiB}']
    assert asked == [RBD_ROOT.path]
    # the cluster did not see it: the step is not done
    with pytest.raises(exception.ResizeDriverError,
                       match=f'disk is {64 * MiB} bytes after a live '
                             f'resize to {128 * MiB}'):
        live.grow_disks(_env(guest), rec, lambda disk: 64 * MiB)


def test_a_disk_file_is_not_asked_of_the_cluster():
    guest = _Growing(64 * MiB)
    rec = _record(Flavor(1, 256, 128 * MiB))
    live.grow_disks(_env(guest), rec, lambda disk: pytest.fail(disk.path))
    assert guest.calls == [f'blockResize vda {128 * MiB}']
