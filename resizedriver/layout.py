"""Where an instance's files are: Nova's instance directory layout.

``<instances_path>/<uuid>/`` holds the disks, ``<uuid>_resize`` is the
source copy kept until confirm (the name Nova's own cleanup code expects),
``_base/`` holds the backing files qcow2 overlays point to.
"""

from __future__ import annotations

import dataclasses
import os
import uuid as uuidlib

from resizedriver import exception

RESIZE_SUFFIX = '_resize'
BASE_DIR = '_base'
RECORD_NAME = 'resize.json'
DISK_INFO = 'disk.info'   # Nova's {path: format} cache
#: in ``<uuid>_resize`` while the running guest still reads from it (an
#: overlay resize confirmed before its fold was done): says so in words
IN_USE_MARKER = 'STILL-READ-BY-THE-RUNNING-GUEST'


def check_uuid(value: str) -> str:
    """Return ``value`` if it is a canonical UUID; it becomes a path."""
    try:
        if isinstance(value, str) and \
                str(uuidlib.UUID(value)) == value.lower():
            return value
    except ValueError:
        pass
    raise exception.ResizeRefused(f'{value!r} is not an instance UUID')


@dataclasses.dataclass(frozen=True)
class InstanceLayout:
    instances_path: str
    uuid: str

    def __post_init__(self) -> None:
        check_uuid(self.uuid)

    @property
    def dir(self) -> str:
        return os.path.join(self.instances_path, self.uuid)

    @property
    def resize_dir(self) -> str:
        return self.dir + RESIZE_SUFFIX

    @property
    def base_dir(self) -> str:
        return os.path.join(self.instances_path, BASE_DIR)

    def path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def in_resize_dir(self, name: str) -> str:
        return os.path.join(self.resize_dir, name)

    def base_path(self, name: str) -> str:
        return os.path.join(self.base_dir, name)
