"""The ``rbd`` plan's steps against a cluster in memory: what they refuse
and what they read back (the Nova tier runs them on a real Ceph)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading

import pytest

from resizedriver import chooser
from resizedriver import exception
from resizedriver.layout import RECORD_NAME
from resizedriver.model import (Destination, DiskFile, DiskRole, Flavor, MiB,
                                Topology)
from resizedriver.operations import rbd
from resizedriver.operations.migrate import MigrateDiskAndPowerOff
from resizedriver.transport import LocalTransport
from tests.unit import fakes
from tests.unit.conftest import sha256
from tests.unit.test_record import UUID, make_record

IMAGE = f'vms/{UUID}_disk'
ROOT = DiskFile('disk', DiskRole.ROOT, IMAGE, 'rbd', 8 * MiB, 0, None,
                'vda')
KERNEL = DiskFile('kernel', DiskRole.KERNEL, '/i/kernel', 'file', 3, 3)


class Cluster:
    """``RbdImages`` in memory; ``stuck`` images ignore a resize."""

    def __init__(self, stuck: bool = False) -> None:
        self.sizes = {IMAGE: 8 * MiB}
        self.snaps: dict[str, dict[str, int]] = {IMAGE: {}}
        self.stuck = stuck

    def size(self, image: str) -> int:
        return self.sizes[image]

    def resize(self, image: str, size: int) -> None:
        if not self.stuck:
            self.sizes[image] = size

    def snapshots(self, image: str) -> list[str]:
        return sorted(self.snaps[image])

    def create_snapshot(self, image: str, snap: str) -> None:
        self.snaps[image][snap] = self.sizes[image]

    def remove_snapshot(self, image: str, snap: str) -> None:
        self.snaps[image].pop(snap, None)

    def rollback(self, image: str, snap: str) -> None:
        self.sizes[image] = self.snaps[image][snap]

    def session(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()


def record():
    return dataclasses.replace(make_record(), disks=[ROOT, KERNEL],
                               new_flavor=Flavor(2, 512, 16 * MiB))


def test_a_revert_point_left_behind_is_refused():
    cluster = Cluster()
    assert rbd.refusal(cluster, [ROOT, KERNEL]) is None
    cluster.create_snapshot(IMAGE, rbd.SNAPSHOT)
    assert f'{IMAGE}@resizedriver-resize exists' in \
        rbd.refusal(cluster, [ROOT, KERNEL])


def test_grow_reads_the_size_back():
    rec, cluster = record(), Cluster()
    rbd.grow(cluster, rec)
    assert cluster.sizes[IMAGE] == 16 * MiB
    with pytest.raises(exception.ResizeDriverError, match='after a resize'):
        rbd.grow(Cluster(stuck=True), rec)


def test_a_config_drive_image_has_a_revert_point_and_keeps_its_size(
        make_env):
    """Nova's config drive in the cluster is never grown: the flavor
    sizes root and ephemeral disks only; a revert rolls it back with the
    root."""
    config = dataclasses.replace(ROOT, name='disk.config',
                                 role=DiskRole.CONFIG,
                                 path=f'{IMAGE}.config', virtual_size=MiB,
                                 target_dev='sda')
    rec, cluster = record(), Cluster()
    rec.disks.append(config)
    cluster.sizes[config.path], cluster.snaps[config.path] = MiB, {}
    for image in (IMAGE, config.path):
        cluster.create_snapshot(image, rbd.SNAPSHOT)
    rbd.check_revert_point(cluster, rec)
    rbd.grow(cluster, rec)
    assert (cluster.sizes[IMAGE], cluster.sizes[config.path]) == (
        16 * MiB, MiB)
    rbd.roll_back(make_env(), cluster, rec)
    rbd.remove_revert_point(cluster, [IMAGE, config.path], UUID)
    assert cluster.sizes[IMAGE] == 8 * MiB
    assert cluster.snapshots(config.path) == []


def test_check_revert_point_wants_it_at_the_recorded_size():
    rec, cluster = record(), Cluster()
    with pytest.raises(exception.ResizeDriverError, match='no revert'):
        rbd.check_revert_point(cluster, rec)
    cluster.create_snapshot(IMAGE, rbd.SNAPSHOT)
    rbd.check_revert_point(cluster, rec)
    cluster.sizes[IMAGE] = 12 * MiB
    with pytest.raises(exception.ResizeDriverError, match='the source saw'):
        rbd.check_revert_point(cluster, rec)


def test_roll_back_never_under_a_running_guest(make_env):
    rec, cluster = record(), Cluster()
    cluster.create_snapshot(IMAGE, rbd.SNAPSHOT)
    rbd.grow(cluster, rec)
    guest = fakes.FakeGuest(UUID, 'guest-1', '<domain/>', running=True)
    with pytest.raises(exception.ResizeDriverError, match='runs here'):
        rbd.roll_back(make_env(guest), cluster, rec)
    assert cluster.sizes[IMAGE] == 16 * MiB
    env = make_env()
    rbd.roll_back(env, cluster, rec)
    assert cluster.sizes[IMAGE] == 8 * MiB
    # run again once the revert point went: already rolled back
    rbd.remove_revert_point(cluster, [IMAGE], UUID)
    rbd.roll_back(env, cluster, rec)
    assert cluster.snapshots(IMAGE) == []


def _image(name: str, role: DiskRole, size: int) -> DiskFile:
    return dataclasses.replace(ROOT, name=name, role=role,
                               path=f'{IMAGE}.{name[5:]}', virtual_size=size)


EPHEMERAL = _image('disk.local', DiskRole.EPHEMERAL, 4 * MiB)
SWAP = _image('disk.swap', DiskRole.SWAP, 2 * MiB)


def test_ephemeral_and_swap_images_grow_as_novas_backend_grows_them():
    """The ephemeral image to the flavor's ephemeral size, the swap image
    to its swap if larger, never smaller (Nova's image backend only grows
    an image it finds)."""
    bigger = Flavor(2, 512, 16 * MiB, ephemeral_bytes=8 * MiB,
                    swap_bytes=4 * MiB)
    assert [rbd.new_size(d, bigger) for d in (ROOT, EPHEMERAL, SWAP)] == [
        16 * MiB, 8 * MiB, 4 * MiB]
    smaller_swap = dataclasses.replace(bigger, swap_bytes=MiB)
    assert rbd.new_size(SWAP, smaller_swap) == 2 * MiB
    assert rbd.new_size(KERNEL, bigger) is None


def test_a_disk_made_or_dropped_is_not_the_plans():
    """Nova's image backend makes the ephemeral disk or swap a new flavor
    adds (mkfs, mkswap); one it drops, or more than one ephemeral image,
    stays Nova's too."""
    same = Flavor(2, 512, 16 * MiB, ephemeral_bytes=8 * MiB,
                  swap_bytes=4 * MiB)
    assert rbd.unproven([ROOT, EPHEMERAL, SWAP, KERNEL], same) == []
    assert rbd.unproven([ROOT, EPHEMERAL, SWAP], dataclasses.replace(
        same, swap_bytes=0)) == ['the new flavor drops swap']
    assert rbd.unproven([ROOT], same) == [
        'the new flavor adds an ephemeral disk', 'the new flavor adds swap']
    eph1 = _image('disk.eph1', DiskRole.EPHEMERAL, 4 * MiB)
    assert rbd.unproven([ROOT, EPHEMERAL, eph1, SWAP], same) == [
        'more than one ephemeral image (disk.local, disk.eph1)']


#: what the rbd plan stages: the boot files of the instance directory
BOOT_FILES = ['disk.info', 'kernel']


def rbd_migrate(instance, make_env, dest: Destination, cluster: Cluster) \
        -> tuple[MigrateDiskAndPowerOff, fakes.FakeGuest, list]:
    """The rbd plan's migrate of ``instance`` (its root an image of
    ``cluster``, beside its kernel file) to ``dest``, as validation
    leaves it; the guest notes what the destination's staging directory
    holds when it is asked to power off."""
    guest = fakes.FakeGuest(instance.uuid, 'guest-1', instance.xml)
    env = make_env(guest)
    env.rbd = cluster
    op = MigrateDiskAndPowerOff(env, instance.uuid,
                                Flavor(2, 512, 16 * MiB), dest,
                                LocalTransport())
    op.disks = [ROOT, dataclasses.replace(KERNEL,
                                          path=instance.path('kernel'))]
    op.old_flavor, op.source_xml = Flavor(1, 256, 8 * MiB), instance.xml
    op.was_running = True
    op.topology = Topology.of(dest.same_hypervisor,
                              dest.instances_path == env.instances_path)
    op.choice = chooser.Choice(chooser.RBD_COLD, 'a test')
    staged: list = []
    power_off = guest.power_off

    def looked_at_power_off(timeout: float, retry: float) -> bool:
        sdir = op.dest_inst.dir
        if op.topology.shared_path:
            sdir += '.staging'
        staged.append(sorted(os.listdir(sdir)))
        return power_off(timeout, retry)
    guest.power_off = looked_at_power_off   # type: ignore[method-assign]
    return op, guest, staged


def test_the_boot_files_are_staged_before_the_guest_goes_down(
        instance, make_env, instances):
    """Same host: the kernel and disk.info are copied while the guest
    runs; with it down, the revert point, and two renames."""
    before = instance.hashes()
    op, guest, staged = rbd_migrate(
        instance, make_env, Destination(None, instances, True), Cluster())
    plan = op.steps()
    assert plan.step_names == [
        'stage boot files', 'write resize record', 'power off',
        'take revert point', 'move instance dir to _resize',
        'put staged dir in place']
    plan.run()
    assert staged == [BOOT_FILES]
    assert sorted(os.listdir(instance.dir)) == BOOT_FILES
    assert all(sha256(instance.path(n)) == before[n] for n in BOOT_FILES)
    assert os.path.isfile(os.path.join(instance.resize_dir, RECORD_NAME))
    assert not os.path.exists(instance.dir + '.staging')
    assert op.env.rbd.snapshots(IMAGE) == [rbd.SNAPSHOT]
    assert op.record.disks == op.disks


class FailingSnapshots(Cluster):
    """The monitors refuse new snapshots."""

    def create_snapshot(self, image: str, snap: str) -> None:
        raise exception.CommandFailed(f'{image}@{snap}: refused')


def test_another_path_gets_them_in_its_dir_and_a_failure_undoes_it(
        instance, make_env, tmp_path):
    """Another instances path (another host's): the destination's
    instance directory is made and gets the boot files while the guest
    runs, and with it down there is no copy and no rename there; a
    failure with the guest down undoes every step: the destination as it
    was, the source back and running."""
    dest = tmp_path / 'dest-instances'
    dest.mkdir()
    before = instance.hashes()
    op, guest, staged = rbd_migrate(
        instance, make_env, Destination(None, str(dest), False),
        FailingSnapshots())
    plan = op.steps()
    assert plan.step_names == [
        'create destination dir', 'stage boot files',
        'write resize record', 'power off', 'take revert point',
        'move instance dir to _resize']
    with pytest.raises(exception.ResizeFailed) as ei:
        plan.run()
    assert ei.value.step == 'take revert point'
    assert staged == [BOOT_FILES]
    assert os.listdir(dest) == []
    assert instance.hashes() == before
    assert guest.call_names == ['power_off', 'start']


def test_the_revert_point_of_every_image_is_asked_for_at_once():
    """Each snapshot waits on the monitors: two images' wait is one."""
    cluster, config = Cluster(), f'{IMAGE}.config'
    cluster.sizes[config], cluster.snaps[config] = MiB, {}
    both = threading.Barrier(2, timeout=5)

    def each(path: str) -> None:
        both.wait()             # breaks unless both are under way
        rbd.take_revert_point(cluster, path, UUID)
    rbd.at_once(each, [IMAGE, config])
    assert [cluster.snapshots(p) for p in (IMAGE, config)] == [
        [rbd.SNAPSHOT]] * 2
