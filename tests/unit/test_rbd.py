"""The ``rbd`` plan's steps against a cluster in memory: what they refuse
and what they read back (the Nova tier runs them on a real Ceph)."""

from __future__ import annotations

import dataclasses

import pytest

from resizedriver import exception
from resizedriver.model import DiskFile, DiskRole, Flavor, MiB
from resizedriver.operations import rbd
from tests.unit import fakes
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
