"""The engine's own value types.

They are deliberately free of Nova: the Nova adapter translates Nova objects
into these, and the operator CLI builds them from plain libvirt domains.
Sizes are bytes, so a test can resize a 64 MiB disk without Nova's whole GiB.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import os
import re
from typing import Any, Optional

MiB = 1024 * 1024
GiB = 1024 * MiB


class DiskRole(str, enum.Enum):
    """What a file in the instance directory is, which decides its handling."""

    ROOT = 'root'            # disk: copied, may grow, never shrinks
    EPHEMERAL = 'ephemeral'  # disk.local, disk.eph*: as root
    SWAP = 'swap'            # disk.swap: not copied, recreated at new size
    CONFIG = 'config'        # disk.config: copied as is
    KERNEL = 'kernel'        # kernel / ramdisk: copied as is
    RAMDISK = 'ramdisk'


def role_for_name(name: str) -> Optional[DiskRole]:
    """Map a Nova instance-directory file name to its role."""
    if name == 'disk':
        return DiskRole.ROOT
    if name == 'disk.local' or re.fullmatch(r'disk\.eph[0-9]+', name):
        return DiskRole.EPHEMERAL
    if name == 'disk.swap':
        return DiskRole.SWAP
    if name == 'disk.config':
        return DiskRole.CONFIG
    if name == 'kernel':
        return DiskRole.KERNEL
    if name == 'ramdisk':
        return DiskRole.RAMDISK
    return None


#: ``DiskFile.format`` of a Ceph RBD image (``path``: ``<pool>/<image>``):
#: grown live only (chooser rule 1b), never copied
RBD = 'rbd'

#: Roles whose disks follow the flavor's size: grown, never shrunk.
GROWABLE = (DiskRole.ROOT, DiskRole.EPHEMERAL)


@dataclasses.dataclass(frozen=True)
class Flavor:
    """The resources a resize changes.  Disk sizes are virtual sizes."""

    vcpus: int
    memory_mib: int
    root_bytes: int
    ephemeral_bytes: int = 0
    swap_bytes: int = 0

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)

    def size_for(self, role: 'DiskRole') -> int:
        """The size this flavor asks for a root or ephemeral disk (0:
        keep it as it is)."""
        return {DiskRole.ROOT: self.root_bytes,
                DiskRole.EPHEMERAL: self.ephemeral_bytes}[role]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> 'Flavor':
        return cls(**{f.name: int(d[f.name])
                      for f in dataclasses.fields(cls) if f.name in d})


@dataclasses.dataclass
class DiskFile:
    """One file of an instance, as found on the source and sent to the dest.

    ``to_dict`` keeps the keys of Nova's own disk_info JSON (``type``,
    ``path``, ``virt_disk_size``, ``backing_file``, ``disk_size``) so the
    description reads the same to anyone who knows Nova's.
    """

    name: str
    role: DiskRole
    path: str
    format: str              # 'raw', 'qcow2', 'file' (kernel/ramdisk), RBD
    virtual_size: int
    actual_size: int
    backing_file: Optional[str] = None   # absolute path on the source
    target_dev: Optional[str] = None     # vda, vdb, ... from the domain
    #: the backing file's name in the destination's ``_base`` where it is
    #: not the source's own name (``backing.ephemeral_base_name``)
    dest_base: Optional[str] = None

    @property
    def base_name(self) -> str:
        """The backing file's name in the destination's ``_base``."""
        return self.dest_base or os.path.basename(self.backing_file or '')

    def to_dict(self) -> dict[str, Any]:
        return {'name': self.name, 'role': self.role.value,
                'path': self.path, 'type': self.format,
                'virt_disk_size': self.virtual_size,
                'disk_size': self.actual_size,
                'backing_file': self.backing_file or '',
                'target_dev': self.target_dev,
                'dest_base': self.dest_base or ''}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> 'DiskFile':
        """Parse a description from the other host: names are checked,
        since they become paths here."""
        if role_for_name(d['name']) is not DiskRole(d['role']):
            raise ValueError(f'disk name {d["name"]!r} does not fit role '
                             f'{d["role"]!r}')
        dest_base = d.get('dest_base') or None
        if dest_base is not None and (
                os.path.basename(dest_base) != dest_base or
                dest_base in ('.', '..')):
            raise ValueError(f'backing file name {dest_base!r} is not a '
                             f'plain file name')
        return cls(name=d['name'], role=DiskRole(d['role']), path=d['path'],
                   format=d['type'], virtual_size=int(d['virt_disk_size']),
                   actual_size=int(d['disk_size']),
                   backing_file=d.get('backing_file') or None,
                   target_dev=d.get('target_dev'), dest_base=dest_base)


class Topology(str, enum.Enum):
    """Where the destination is, relative to the source: decided once, in
    migrate's validation, and kept in the resize record, so that every
    later step (and recovery) asks the record instead of deciding again.

    "Same hypervisor": the destination runs on the very libvirtd that
    defines the source domain (one definition, redefined).  "Shared path":
    the destination sees our instances directory as its own (the same
    ``<uuid>`` directory name is reused after the move to ``_resize``).
    """

    SAME_HOST = 'same-host'                # same libvirtd, same instances dir
    SAME_HYPERVISOR = 'same-hypervisor'    # same libvirtd, another path
    SHARED_STORAGE = 'shared-storage'      # another host, our instances dir
    OTHER_HOST = 'other-host'              # another host, its own storage

    @classmethod
    def of(cls, same_hypervisor: bool, shared_path: bool) -> 'Topology':
        return {(True, True): cls.SAME_HOST,
                (True, False): cls.SAME_HYPERVISOR,
                (False, True): cls.SHARED_STORAGE,
                (False, False): cls.OTHER_HOST}[same_hypervisor, shared_path]

    @property
    def same_hypervisor(self) -> bool:
        return self in (Topology.SAME_HOST, Topology.SAME_HYPERVISOR)

    @property
    def shared_path(self) -> bool:
        return self in (Topology.SAME_HOST, Topology.SHARED_STORAGE)


@dataclasses.dataclass(frozen=True)
class Destination:
    """Where the instance goes.

    ``host`` None means this host.  ``instances_path`` is the dest's
    instances path (the same as ours for same-host and shared storage).
    ``same_hypervisor`` says whether the dest runs on the very libvirtd that
    defines the source domain: then there is one domain definition, which
    the resize redefines, instead of two.
    """

    host: Optional[str]
    instances_path: str
    same_hypervisor: bool

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> 'Destination':
        return cls(host=d['host'], instances_path=d['instances_path'],
                   same_hypervisor=bool(d['same_hypervisor']))


def grown_size(disk: DiskFile, flavor: Flavor) -> int:
    """What a root or ephemeral disk becomes: the flavor's size, never
    below what it is (a shrink is refused before anything starts)."""
    return max(flavor.size_for(disk.role), disk.virtual_size)


def disk_info(disks: list[DiskFile]) -> str:
    """Nova's ``disk.info`` for ``disks``: {path: format}, which Nova
    trusts over probing (kernel and ramdisk are not images)."""
    return json.dumps({d.path: d.format for d in disks
                       if d.format != 'file'})
