"""The backing files a cold resize to another instances path copies
with the guest running: which the destination lacks, which it has as
its own (an ephemeral disk's, copied under a name of its own), their
copy and its undo.  A part of ``migrate.MigrateDiskAndPowerOff`` (its
``copy backing files`` step), kept apart for its one job.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Callable

from oslo_log import log as logging

from resizedriver import exception
from resizedriver.env import HostEnv
from resizedriver.layout import InstanceLayout
from resizedriver.model import Destination, DiskFile, DiskRole, Topology
from resizedriver.transport import Transport

LOG = logging.getLogger(__name__)
#: how Nova names an ephemeral disk's backing file (``ephemeral_<GB>_<fs>``)
EPHEMERAL_BASE = 'ephemeral_'
_MISSING, _SAME, _DIFFERS = 'missing', 'same', 'differs'


def ephemeral_base_name(backing: str, sha256: str) -> str:
    """The name, in another host's ``_base``, of an ephemeral disk's
    backing file when that host's file of the same name is its own.

    Nova makes ``_base/ephemeral_<GB>_<fs>`` on each host with ``mkfs``
    (another filesystem UUID, and checksums seeded from it, on every
    host), so the one a destination already has is almost never ours.
    Nova's own ``finish_migration`` (its image backend's ``cache``: the
    disk and a base of that name exist, nothing is done) then leaves the
    copied overlay over the destination's file: the guest reads its own
    writes over another host's ``mkfs`` output, a filesystem whose
    unwritten blocks (group descriptors, bitmaps, inode tables) no longer
    match its superblock.  Sending the instance the ``upstream`` way would
    do exactly that.  Ours is copied instead, as a plain file like any
    backing file the destination lacks, under a name of its own: the
    guest reads bit for bit the disk it had, and the destination's file,
    which its own instances read, is never touched.  The name is the
    content's, so the next instance from the same host reuses the copy
    (validated like any backing file) and a different file can never
    take it.  It fits none of the patterns of Nova's image cache manager
    (``ephemeral_<GB>_<7 chars>``, image hashes), which therefore neither
    counts nor removes it: no instance loses its backing file to it, and
    the copy (the ``mkfs`` output: a few MiB of a sparse file) stays once
    no instance uses it, one per source host and size at most.
    """
    return f'{os.path.basename(backing)}.{sha256[:16]}'



class BackingFiles:
    """The backing-file steps of a migrate; the attributes below are the
    migrate's own (``MigrateDiskAndPowerOff.__init__``)."""

    env: HostEnv
    inst: InstanceLayout
    dest: Destination
    dest_inst: InstanceLayout
    transport: Transport
    topology: Topology
    disks: list[DiskFile]
    backing_to_copy: list[str]
    renamed_bases: dict[str, str]
    #: one verified copy to the destination (the migrate's)
    copy: Callable[[str, str], None]

    def _backing_to_copy(self) -> list[str]:
        """Backing files the dest lacks; refuse one it has but differs,
        unless it is an ephemeral disk's (:func:`ephemeral_base_name`).
        Not swap's (Nova's ``_base/swap_<MiB>``, which ``mkswap`` makes
        different on every host): swap is made anew there, not copied."""
        needed = []
        for backing in sorted({d.backing_file for d in self.disks
                               if d.backing_file and
                               d.role is not DiskRole.SWAP}):
            name = os.path.basename(backing)
            dest_path = self.dest_inst.base_path(name)
            if self.topology.shared_path or (self.transport.host is None and
                               os.path.realpath(dest_path) ==
                               os.path.realpath(backing)):
                continue
            ours = functools.cache(functools.partial(self.env.local.sha256,
                                                     backing))
            state = self._on_dest(backing, name, ours)
            if state == _DIFFERS and self._backs_only_ephemerals(backing):
                name = ephemeral_base_name(backing, ours())
                LOG.info('%s on the destination is its own, not ours: '
                         'ours is copied there as %s', dest_path, name,
                         instance_uuid=self.inst.uuid)
                self.renamed_bases[backing] = name
                self.disks = [dataclasses.replace(d, dest_base=name)
                              if d.backing_file == backing else d
                              for d in self.disks]
                state = self._on_dest(backing, name, ours)
            if state == _DIFFERS:
                raise exception.ResizeRefused(
                    f'{self.dest_inst.base_path(name)} on the destination '
                    f'differs from our {backing}; refusing to rebase onto '
                    f'another image')
            if state == _MISSING:
                needed.append(backing)
        return needed

    def _on_dest(self, backing: str, name: str,
                 ours: Callable[[], str]) -> str:
        """Whether the destination's ``_base/<name>`` is ``backing``'s
        twin (``ours``: its sha256), missing or another file."""
        dest_path = self.dest_inst.base_path(name)
        if not self.transport.exists(dest_path):
            return _MISSING
        if (self.transport.file_size(dest_path) !=
                os.path.getsize(backing) or
                self.transport.sha256(dest_path) != ours()):
            return _DIFFERS
        return _SAME

    def _backs_only_ephemerals(self, backing: str) -> bool:
        return os.path.basename(backing).startswith(EPHEMERAL_BASE) and \
            all(d.role is DiskRole.EPHEMERAL for d in self.disks
                if d.backing_file == backing)

    def _dest_base(self, backing: str) -> str:
        """Where ``backing`` goes in the destination's ``_base``."""
        return self.dest_inst.base_path(self.renamed_bases.get(
            backing, os.path.basename(backing)))

    def copy_backing(self) -> None:
        self.transport.makedirs(self.dest_inst.base_dir)
        for backing in self.backing_to_copy:
            self.copy(backing, self._dest_base(backing))
        # the <instances>/_base entry, if mkdir -p just made it
        self.transport.sync_dir(self.dest.instances_path)

    def remove_copied_backing(self) -> None:
        """Only this instance's partial copies; never ``_base/<name>``.

        Another instance from the same image may have found the file
        missing too, and be booting from the copy by now: ``_base`` is a
        cache every instance on the destination shares, and no lock or
        reference count spans their resizes, boots and Nova's image cache.
        Leaving it is safe: only a complete copy verified against ours
        ever gets that name, backing files are immutable and named by
        content, the next resize's validation reuses it after comparing
        size and sha256, and Nova's image cache manager ages it out once
        no instance uses it.
        """
        for backing in self.backing_to_copy:
            self.transport.remove_partial(self._dest_base(backing),
                                          self.inst.uuid)
