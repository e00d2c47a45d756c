"""The staging directory of a same-host overlay resize.

A same-host resize need not copy a byte while the guest is down: while it
still runs, ``<uuid>.staging/`` is filled with what the resized guest will
open -- a new qcow2 overlay per root/ephemeral disk whose backing file is
the disk's *future* name in ``<uuid>_resize/`` (so it is created unsafe:
that file does not exist yet), a fresh swap (unless the integration makes
its own at finish, as Nova does), hard links of the files that are only
ever read (kernel, ramdisk, a CD-ROM config drive) and a ``disk.info``
naming the final paths.  Then, with the guest off, two renames
(``<uuid>`` -> ``<uuid>_resize`` is migrate's own, then
:func:`put_in_place`) make the staged files the instance's, and the
guest boots reading its old disks through the overlays.  A config drive
the guest may write (vfat) is copied instead, just before the second
rename: the one copy in the downtime, of a small file.  The old disks
are then only backing files: opened read-only, they stay the exact
bytes a revert goes back to.  ``blockjob.pull`` later folds the chain
back to Nova's ``<uuid>/disk -> _base/...`` layout while the guest runs.

Pure file work: no libvirt.  Only ``<uuid>.staging`` is ever written or
removed here; the source files are read (hard-linked) only.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from typing import Optional, Sequence

from resizedriver import exception
from resizedriver import fileutil
from resizedriver.layout import DISK_INFO, InstanceLayout
from resizedriver.model import (GROWABLE, DiskFile, DiskRole, Flavor,
                                disk_info, grown_size)
from resizedriver.qemuimg import QemuImg
from resizedriver.sparse import PARTIAL_SUFFIX

STAGING_SUFFIX = '.staging'
#: Files the guest only reads: the staged ones are hard links -- unless
#: the guest may write them (a vfat config drive: ``copied_late``).
LINKED = (DiskRole.CONFIG, DiskRole.KERNEL, DiskRole.RAMDISK)


@dataclasses.dataclass(frozen=True)
class Fold:
    """One overlay to fold back once the guest runs: pull ``<uuid>_resize``
    into ``path`` (target ``target_dev``), leaving it backed by ``base``
    (the source disk's ``_base`` file; None: pull everything)."""

    target_dev: str
    path: str
    base: Optional[str]


@dataclasses.dataclass(frozen=True)
class Staged:
    disks: list[DiskFile]   # as they will be in <uuid>/: what define needs
    folds: list[Fold]


def staging_dir(layout: InstanceLayout) -> str:
    return layout.dir + STAGING_SUFFIX


def fresh(layout: InstanceLayout) -> str:
    """A new, empty ``<uuid>.staging`` (one a crashed staging left is
    replaced); its path."""
    remove(layout)
    sdir = staging_dir(layout)
    os.mkdir(sdir)
    return sdir


def _check(disks: list[DiskFile]) -> None:
    for disk in disks:
        if disk.role in GROWABLE and disk.format != 'qcow2':
            raise exception.UnsupportedDisk(
                f'{disk.path}: an overlay resize needs qcow2 disks, this '
                f'one is {disk.format}')
        if disk.role in GROWABLE and not disk.target_dev:
            raise exception.UnsupportedDisk(
                f'{disk.path}: not attached to the domain, cannot be '
                f'folded back live')


def build(layout: InstanceLayout, disks: list[DiskFile], new: Flavor,
          qemu_img: QemuImg, copied_late: Sequence[str] = (),
          make_swap: bool = True) -> Staged:
    """Fill ``<uuid>.staging`` for ``disks`` (the source's, as inventory
    found them) and flavor ``new``; a leftover staging dir (a build that
    crashed) is replaced.  Everything made is fsynced: once the renames
    are durable, so is what they name.  The files named in
    ``copied_late`` (the guest may write them) are left to
    :func:`put_in_place`; ``make_swap`` false: the new swap is left to
    the finish (Nova's image backend makes its own)."""
    _check(disks)
    sdir = fresh(layout)
    final: list[DiskFile] = []
    folds: list[Fold] = []
    try:
        for disk in disks:
            staged = os.path.join(sdir, disk.name)
            if disk.role in GROWABLE:
                size = grown_size(disk, new)
                qemu_img.create_overlay(staged, layout.in_resize_dir(
                    disk.name), 'qcow2', size)
                final.append(dataclasses.replace(
                    disk, virtual_size=size, actual_size=0,
                    backing_file=layout.in_resize_dir(disk.name)))
                assert disk.target_dev is not None   # _check refused it
                folds.append(Fold(disk.target_dev, disk.path,
                                  disk.backing_file))
            elif disk.role in LINKED:
                if disk.name not in copied_late:
                    os.link(disk.path, staged)
                final.append(disk)
        if new.swap_bytes and make_swap:
            final.append(_make_swap(layout, qemu_img, new.swap_bytes))
        if os.path.exists(layout.path(DISK_INFO)):
            _write_disk_info(sdir, final)
        for name in os.listdir(sdir):
            fileutil.fsync_file(os.path.join(sdir, name))
        fileutil.fsync_dir(sdir)
    except BaseException:
        remove(layout)
        raise
    return Staged(final, folds)


def _make_swap(layout: InstanceLayout, qemu_img: QemuImg,
               size: int) -> DiskFile:
    """A new, empty swap (the old one is the guest's past: not kept)."""
    path = os.path.join(staging_dir(layout), 'disk.swap')
    qemu_img.create(path, 'raw', size)
    qemu_img.transport.execute('mkswap', path)
    return DiskFile(name='disk.swap', role=DiskRole.SWAP,
                    path=layout.path('disk.swap'), format='raw',
                    virtual_size=size, actual_size=0)


def _write_disk_info(sdir: str, final: list[DiskFile]) -> None:
    """Naming the final paths, not the staging ones."""
    fileutil.write_atomic(os.path.join(sdir, DISK_INFO), disk_info(final))

def put_in_place(layout: InstanceLayout, copied: Sequence[str] = ()) \
        -> None:
    """``<uuid>.staging`` becomes ``<uuid>`` (which must be gone: moved to
    ``<uuid>_resize``).  The only work of the resize while the guest is
    down, with the rename before it -- and the copy of the files named
    in ``copied``, from ``<uuid>_resize``: what the guest may have
    written up to its power-off (a vfat config drive, 64 MiB at most
    under Nova) must be in them, and the resized guest must not write
    through a link into the revert point."""
    sdir = staging_dir(layout)
    for name in copied:
        part = os.path.join(sdir, name + PARTIAL_SUFFIX)
        shutil.copyfile(layout.in_resize_dir(name), part)
        fileutil.fsync_file(part)
        os.rename(part, os.path.join(sdir, name))
    if copied:
        fileutil.fsync_dir(sdir)
    fileutil.rename_durably(sdir, layout.dir)


def take_back(layout: InstanceLayout) -> None:
    """Undo :func:`put_in_place`.  ``<uuid>`` is the staged dir only
    while the source is in ``<uuid>_resize``: otherwise (a crash before
    the source was moved, or its move already undone) it is the source
    itself and stays."""
    if os.path.isdir(layout.resize_dir) and os.path.isdir(layout.dir) \
            and not os.path.exists(staging_dir(layout)):
        fileutil.rename_durably(layout.dir, staging_dir(layout))


def remove(layout: InstanceLayout) -> None:
    """Drop ``<uuid>.staging`` if there: only staged files and hard links
    (unlinking a link leaves the source's file as it is)."""
    sdir = staging_dir(layout)
    if os.path.lexists(sdir):
        shutil.rmtree(sdir)
        fileutil.fsync_dir(os.path.dirname(sdir))
